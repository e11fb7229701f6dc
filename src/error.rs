//! One error type for the whole library.
//!
//! Every fallible call returns [`Error`]: a small [`ErrorKind`] that callers match on, a
//! message that names the value that was wrong (and, where possible, what to do), and an
//! optional source. The kind's phrase always leads the message, so code written against
//! the seed guide, which matches on text such as `"Address already in use"` or
//! `"Network not connected"`, keeps working.

use std::fmt;

/// What went wrong, in a form callers can match on.
///
/// Each kind has a fixed phrase ([`ErrorKind::phrase`]) that starts the error's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A configuration value is invalid; the message names the field and the value.
    InvalidConfig,
    /// A network, actor or port name is not allowed; the message names it.
    InvalidName,
    /// The operation needs a connection to a network that this one has not made.
    NetworkNotConnected,
    /// The peer network is gone, or nobody answers on its subjects.
    NetworkDisconnected,
    /// No actor (or node, or component) of that name exists where it was looked for.
    ActorNotFound,
    /// The actor exists but cannot take messages now (stopped, or its network is shutting down).
    ActorNotAvailable,
    /// A name is already taken and the chosen strategy does not resolve it.
    NameConflict,
    /// No answer came within the allowed time.
    Timeout,
    /// The peer refused our credentials, or we refused theirs.
    AuthenticationFailed,
    /// The peer (or this network) already has `max_connections` connections.
    MaxConnections,
    /// Binding the direct-link listener failed; the message keeps the operating system's words.
    Bind,
    /// The NATS broker could not be reached or refused an operation.
    Broker,
    /// The NATS server is too old for what this library needs.
    ServerVersion,
    /// A message is larger than the transport allows.
    PayloadTooLarge,
    /// A peer sent something that does not follow the wire protocol.
    Protocol,
    /// A value could not be encoded or decoded.
    Encoding,
    /// A port name is not declared by the actor.
    PortNotFound,
    /// The network or bridge is shut down, or shutting down.
    Shutdown,
    /// Finding, provisioning or running a local `nats-server` failed.
    LocalServer,
    /// An input/output error not covered by a more specific kind.
    Io,
    /// An actor's handler reported a failure.
    Actor,
    /// The NATS server refused because one of its limits is reached; the message names
    /// the limit and the server setting that raises it.
    ServerLimit,
}

impl ErrorKind {
    /// The fixed phrase that leads every message of this kind.
    pub fn phrase(self) -> &'static str {
        match self {
            ErrorKind::InvalidConfig => "Invalid configuration",
            ErrorKind::InvalidName => "Invalid name",
            ErrorKind::NetworkNotConnected => "Network not connected",
            ErrorKind::NetworkDisconnected => "Network disconnected",
            ErrorKind::ActorNotFound => "Actor not found",
            ErrorKind::ActorNotAvailable => "Actor not available",
            ErrorKind::NameConflict => "Name conflict",
            ErrorKind::Timeout => "Timeout",
            ErrorKind::AuthenticationFailed => "Authentication failed",
            ErrorKind::MaxConnections => "Refused: max connections reached",
            ErrorKind::Bind => "Bind failed",
            ErrorKind::Broker => "Broker error",
            ErrorKind::ServerVersion => "NATS server too old",
            ErrorKind::PayloadTooLarge => "Payload too large",
            ErrorKind::Protocol => "Protocol error",
            ErrorKind::Encoding => "Encoding error",
            ErrorKind::PortNotFound => "Port not found",
            ErrorKind::Shutdown => "Shut down",
            ErrorKind::LocalServer => "Local nats-server",
            ErrorKind::Io => "I/O error",
            ErrorKind::Actor => "Actor failed",
            ErrorKind::ServerLimit => "NATS server limit reached",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.phrase())
    }
}

/// The error of every fallible call in this library.
///
/// Its `Display` is `"{phrase}: {detail}"`, where the phrase is fixed per [`ErrorKind`]
/// and the detail names what was wrong.
///
/// ```
/// use reflow_network::{Error, ErrorKind};
///
/// let err = Error::new(ErrorKind::ActorNotFound, "no actor 'sum' on network 'math'");
/// assert_eq!(err.kind(), ErrorKind::ActorNotFound);
/// assert_eq!(err.to_string(), "Actor not found: no actor 'sum' on network 'math'");
/// ```
pub struct Error {
    kind: ErrorKind,
    detail: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// The result type of this library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` whose detail says what was wrong.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Error {
            kind,
            detail: detail.into(),
            source: None,
        }
    }

    /// An error of `kind` caused by `source`; the source's text is appended to the detail.
    pub fn with_source(
        kind: ErrorKind,
        detail: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let detail = format!("{}: {}", detail.into(), source);
        Error::quoting_source(kind, detail, source)
    }

    /// Like [`Error::with_source`], for a `detail` that already quotes the source's words.
    pub(crate) fn quoting_source(
        kind: ErrorKind,
        detail: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            kind,
            detail: detail.into(),
            source: Some(Box::new(source)),
        }
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The detail after the kind's phrase.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Whether this error is of `kind`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// use reflow_network::ErrorKind;
    ///
    /// match app.send_to_remote_actor("math", "double", "in", Message::Integer(1)).await {
    ///     Ok(()) => {}
    ///     Err(err) if err.is(ErrorKind::NetworkDisconnected) => eprintln!("math is down: {err}"),
    ///     Err(err) => return Err(err),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind == kind
    }

    pub(crate) fn invalid_config(field: &str, why: impl fmt::Display) -> Self {
        Error::new(ErrorKind::InvalidConfig, format!("{field}: {why}"))
    }

    #[allow(dead_code)] // used by the bridge's confirmed sends
    pub(crate) fn timeout(what: impl fmt::Display, after: std::time::Duration) -> Self {
        Error::new(
            ErrorKind::Timeout,
            format!("{what}: no answer within {after:?}"),
        )
    }

    pub(crate) fn encoding(what: impl fmt::Display) -> Self {
        Error::new(ErrorKind::Encoding, what.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            f.write_str(self.kind.phrase())
        } else {
            write!(f, "{}: {}", self.kind.phrase(), self.detail)
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.to_string())
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::with_source(ErrorKind::Io, "I/O failed", err)
    }
}

impl From<rmp_serde::encode::Error> for Error {
    fn from(err: rmp_serde::encode::Error) -> Self {
        Error::with_source(ErrorKind::Encoding, "MessagePack encoding failed", err)
    }
}

impl From<rmp_serde::decode::Error> for Error {
    fn from(err: rmp_serde::decode::Error) -> Self {
        Error::with_source(ErrorKind::Encoding, "MessagePack decoding failed", err)
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::with_source(ErrorKind::Encoding, "JSON failed", err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_starts_with_the_kind_phrase() {
        let err = Error::new(
            ErrorKind::NetworkNotConnected,
            "call connect_to_network first",
        );
        assert_eq!(
            err.to_string(),
            "Network not connected: call connect_to_network first"
        );
    }

    #[test]
    fn io_source_keeps_the_operating_system_words() {
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let err = Error::with_source(ErrorKind::Bind, "cannot listen on 127.0.0.1:8080", io);
        assert!(err.to_string().contains("127.0.0.1:8080"));
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn converts_into_anyhow_and_keeps_the_text() {
        let err = Error::new(ErrorKind::NameConflict, "'sum' is taken");
        let any: anyhow::Error = err.into();
        assert!(any.to_string().contains("Name conflict"));
    }
}
