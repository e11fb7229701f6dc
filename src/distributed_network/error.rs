//! The error of [`DistributedNetwork::connect_to_network`](super::DistributedNetwork::connect_to_network),
//! shaped as Reflow's guides match on it.

use std::fmt;

use crate::error::{Error, ErrorKind};

/// Why [`DistributedNetwork::connect_to_network`](super::DistributedNetwork::connect_to_network)
/// failed, with the variants Reflow's guides match on:
///
/// ```no_run
/// # use reflow_network::prelude::*;
/// use reflow_network::distributed_network::DistributedError;
///
/// # async fn example(app: DistributedNetwork) {
/// match app.connect_to_network("payments").await {
///     Ok(()) => println!("connected"),
///     Err(DistributedError::ConnectionTimeout) => eprintln!("timed out: is it up?"),
///     Err(DistributedError::AuthenticationFailed) => eprintln!("check the auth token"),
///     Err(e) => eprintln!("other error: {e}"),
/// }
/// # }
/// ```
///
/// The two unit variants carry no message, so a pattern without fields matches them.
/// Every other failure is [`DistributedError::Other`], the library's [`Error`] with its
/// kind and the message naming what was wrong. Where a timeout's or a refusal's message
/// matters (which side refused, which server did not answer), call
/// [`DistributedNetwork::connect_to`](super::DistributedNetwork::connect_to), which
/// returns the [`Error`] itself; the message is also logged at debug level.
///
/// `?` turns a `DistributedError` into an [`Error`] (of the same kind) or an
/// `anyhow::Error`.
#[derive(Debug)]
#[non_exhaustive]
pub enum DistributedError {
    /// The network did not answer in time ([`ErrorKind::Timeout`]).
    ConnectionTimeout,
    /// The peer refused this network's credentials, or this network refused the peer's
    /// ([`ErrorKind::AuthenticationFailed`]).
    AuthenticationFailed,
    /// Any other failure: the network is not running, refused the connection, has
    /// `max_connections` peers, the name is invalid, this network is shut down, ...
    Other(Error),
}

impl DistributedError {
    /// The kind of error, as [`Error::kind`] gives it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DistributedError::ConnectionTimeout => ErrorKind::Timeout,
            DistributedError::AuthenticationFailed => ErrorKind::AuthenticationFailed,
            DistributedError::Other(err) => err.kind(),
        }
    }

    /// Whether this error is of `kind`.
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind() == kind
    }
}

impl fmt::Display for DistributedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DistributedError::ConnectionTimeout => write!(
                f,
                "{}: the network did not answer in time",
                ErrorKind::Timeout
            ),
            DistributedError::AuthenticationFailed => write!(
                f,
                "{}: the peer refused this network's credentials, or this network refused \
                 the peer's",
                ErrorKind::AuthenticationFailed
            ),
            DistributedError::Other(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for DistributedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DistributedError::Other(err) => err.source(),
            _ => None,
        }
    }
}

impl From<Error> for DistributedError {
    /// A timeout or a refused credential becomes its unit variant (its message is
    /// logged at debug level); anything else stays whole in [`DistributedError::Other`].
    fn from(err: Error) -> Self {
        match err.kind() {
            ErrorKind::Timeout => {
                tracing::debug!(error = %err, "a timeout, as DistributedError::ConnectionTimeout");
                DistributedError::ConnectionTimeout
            }
            ErrorKind::AuthenticationFailed => {
                tracing::debug!(error = %err, "a refusal, as DistributedError::AuthenticationFailed");
                DistributedError::AuthenticationFailed
            }
            _ => DistributedError::Other(err),
        }
    }
}

impl From<DistributedError> for Error {
    fn from(err: DistributedError) -> Self {
        match err {
            DistributedError::Other(err) => err,
            unit => {
                let text = unit.to_string();
                let detail = text
                    .split_once(": ")
                    .map_or(text.as_str(), |(_, detail)| detail);
                Error::new(unit.kind(), detail)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_refusals_become_unit_variants_and_the_rest_stays_whole() {
        let timeout = DistributedError::from(Error::new(ErrorKind::Timeout, "no answer"));
        assert!(matches!(timeout, DistributedError::ConnectionTimeout));
        assert!(timeout.is(ErrorKind::Timeout));
        let refused = DistributedError::from(Error::new(ErrorKind::AuthenticationFailed, "no"));
        assert!(matches!(refused, DistributedError::AuthenticationFailed));
        assert!(refused.to_string().starts_with("Authentication failed: "));

        let gone = Error::new(
            ErrorKind::NetworkDisconnected,
            "no instance of \"b\" answers",
        );
        let text = gone.to_string();
        let other = DistributedError::from(gone);
        assert_eq!(other.to_string(), text);
        assert_eq!(other.kind(), ErrorKind::NetworkDisconnected);

        // Back into the library's error, with the same kind and phrase.
        let back = Error::from(timeout);
        assert_eq!(back.kind(), ErrorKind::Timeout);
        assert_eq!(
            back.to_string(),
            "Timeout: the network did not answer in time"
        );
        assert_eq!(Error::from(other).to_string(), text);
    }
}
