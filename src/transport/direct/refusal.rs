//! Why a link is refused or cut, as a code for programs and a sentence for people.
//!
//! Every refusal travels as a [`Frame::Refuse`] just before the sender closes, is logged
//! with the peer's address, and is counted in [`DirectStats`](super::DirectStats). The
//! sentences start with the phrases that the crate's errors use (`Authentication failed`,
//! `Refused: max connections reached`), so a log search finds both ends of a refusal.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::frame::{Frame, FrameError};
use crate::error::{Error, ErrorKind};

/// The kind of a refusal; its number is the `reason_code` of a [`Frame::Refuse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RefuseCode {
    /// The token proof was missing or wrong (1).
    AuthenticationFailed,
    /// The two ends speak different protocol versions (2).
    VersionMismatch,
    /// The listener already holds `max_connections` links (3).
    MaxConnections,
    /// A frame body could not be decoded (4).
    MalformedFrame,
    /// A length prefix announced more than the maximum frame size (5).
    FrameTooLarge,
    /// A frame arrived that the protocol does not allow at that point (6).
    UnexpectedFrame,
    /// The handshake did not finish in time (7).
    HandshakeTimeout,
    /// The peer stopped answering pings (8).
    PingTimeout,
    /// A code this build does not know, kept as received.
    Other(u16),
}

impl RefuseCode {
    /// The number carried on the wire.
    pub fn code(self) -> u16 {
        match self {
            RefuseCode::AuthenticationFailed => 1,
            RefuseCode::VersionMismatch => 2,
            RefuseCode::MaxConnections => 3,
            RefuseCode::MalformedFrame => 4,
            RefuseCode::FrameTooLarge => 5,
            RefuseCode::UnexpectedFrame => 6,
            RefuseCode::HandshakeTimeout => 7,
            RefuseCode::PingTimeout => 8,
            RefuseCode::Other(code) => code,
        }
    }

    /// The code for a number read from the wire.
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => RefuseCode::AuthenticationFailed,
            2 => RefuseCode::VersionMismatch,
            3 => RefuseCode::MaxConnections,
            4 => RefuseCode::MalformedFrame,
            5 => RefuseCode::FrameTooLarge,
            6 => RefuseCode::UnexpectedFrame,
            7 => RefuseCode::HandshakeTimeout,
            8 => RefuseCode::PingTimeout,
            other => RefuseCode::Other(other),
        }
    }

    /// The error kind a dialler reports when the peer refuses it with this code.
    pub fn error_kind(self) -> ErrorKind {
        match self {
            RefuseCode::AuthenticationFailed => ErrorKind::AuthenticationFailed,
            RefuseCode::MaxConnections => ErrorKind::MaxConnections,
            RefuseCode::FrameTooLarge => ErrorKind::PayloadTooLarge,
            RefuseCode::HandshakeTimeout | RefuseCode::PingTimeout => ErrorKind::Timeout,
            _ => ErrorKind::Protocol,
        }
    }
}

/// A refusal: its code and the sentence sent to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: RefuseCode,
    pub(crate) reason: String,
}

impl Refusal {
    fn new(code: RefuseCode, reason: String) -> Self {
        Refusal { code, reason }
    }

    pub(crate) fn authentication(why: impl fmt::Display) -> Self {
        Refusal::new(
            RefuseCode::AuthenticationFailed,
            format!("{}: {why}", ErrorKind::AuthenticationFailed.phrase()),
        )
    }

    pub(crate) fn version(ours: u16, theirs: u16) -> Self {
        Refusal::new(
            RefuseCode::VersionMismatch,
            format!(
                "protocol version mismatch: this end speaks version {ours}, the peer version {theirs}"
            ),
        )
    }

    pub(crate) fn max_connections(max: usize) -> Self {
        Refusal::new(
            RefuseCode::MaxConnections,
            format!("{} ({max})", ErrorKind::MaxConnections.phrase()),
        )
    }

    /// Too many handshakes in progress (in all, or from the caller's address): refused
    /// at once, with the code of a full listener.
    pub(crate) fn busy() -> Self {
        Refusal::new(
            RefuseCode::MaxConnections,
            format!(
                "{}: too many handshakes in progress; try again",
                ErrorKind::MaxConnections.phrase()
            ),
        )
    }

    pub(crate) fn unexpected(expected: &str, got: &Frame) -> Self {
        Refusal::new(
            RefuseCode::UnexpectedFrame,
            format!("unexpected frame: expected {expected}, got {}", got.kind()),
        )
    }

    pub(crate) fn handshake_timeout(after: Duration) -> Self {
        Refusal::new(
            RefuseCode::HandshakeTimeout,
            format!("handshake timeout: no Hello within {after:?}"),
        )
    }

    pub(crate) fn ping_timeout(after: Duration) -> Self {
        Refusal::new(
            RefuseCode::PingTimeout,
            format!("ping timeout: the peer stopped answering pings (nothing heard for {after:?})"),
        )
    }

    /// The refusal for bytes that could not be read as a frame; `None` for I/O failures,
    /// which leave nobody to tell.
    pub(crate) fn for_frame_error(err: &FrameError) -> Option<Self> {
        match err {
            FrameError::TooLarge { .. } => {
                Some(Refusal::new(RefuseCode::FrameTooLarge, err.to_string()))
            }
            FrameError::Malformed(_) => {
                Some(Refusal::new(RefuseCode::MalformedFrame, err.to_string()))
            }
            FrameError::Io(_) => None,
        }
    }

    /// The frame that carries this refusal.
    pub(crate) fn to_frame(&self) -> Frame {
        Frame::Refuse {
            reason_code: self.code.code(),
            reason: self.reason.clone(),
        }
    }

    /// A refusal for a peer that sent something that is a frame but not a valid one.
    pub(crate) fn malformed(what: impl fmt::Display) -> Self {
        Refusal::new(
            RefuseCode::MalformedFrame,
            format!("malformed frame: {what}"),
        )
    }

    /// The error this end reports for this refusal; `context` says who refused whom.
    pub(crate) fn to_error(&self, context: &str) -> Error {
        Refusal::into_error(self.code.code(), &self.reason, context)
    }

    /// The error for a refusal with `code` and `reason`, after `context` (for example
    /// `"10.0.0.2:7000 refused the link"`).
    ///
    /// The kind's phrase leads the message; when the reason already starts with it, it is
    /// not said twice.
    pub(crate) fn into_error(code: u16, reason: &str, context: &str) -> Error {
        let kind = RefuseCode::from_code(code).error_kind();
        match reason.strip_prefix(kind.phrase()) {
            Some(rest) => match rest.strip_prefix(": ") {
                Some(why) => Error::new(kind, format!("{context}: {why}")),
                None => Error::new(kind, format!("{context}{rest}")),
            },
            None => Error::new(kind, format!("{context}: {reason}")),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_survive_the_wire_and_unknown_ones_are_kept() {
        for code in 1..=8 {
            assert_eq!(RefuseCode::from_code(code).code(), code);
        }
        assert_eq!(RefuseCode::from_code(77), RefuseCode::Other(77));
    }

    #[test]
    fn each_refusal_names_what_was_wrong() {
        assert_eq!(
            Refusal::max_connections(4).reason,
            "Refused: max connections reached (4)"
        );
        let version = Refusal::version(1, 9).reason;
        assert!(
            version.contains("version 1") && version.contains("version 9"),
            "{version}"
        );
        assert_eq!(
            Refusal::authentication("token proof does not match").reason,
            "Authentication failed: token proof does not match"
        );
        let unexpected = Refusal::unexpected("Hello", &Frame::Ping { id: 1 }).reason;
        assert_eq!(unexpected, "unexpected frame: expected Hello, got Ping");
        let too_large = Refusal::for_frame_error(&FrameError::TooLarge { len: 10, max: 5 })
            .unwrap()
            .reason;
        assert!(too_large.contains("10 bytes") && too_large.contains("5 bytes"));
        assert!(
            Refusal::ping_timeout(Duration::from_secs(3))
                .reason
                .contains("ping timeout")
        );
    }

    #[test]
    fn a_refusal_becomes_an_error_of_the_matching_kind_without_repeating_its_phrase() {
        let refusal = Refusal::authentication("token proof does not match");
        let err = refusal.to_error("127.0.0.1:9 refused the link");
        assert_eq!(err.kind(), ErrorKind::AuthenticationFailed);
        assert_eq!(
            err.to_string(),
            "Authentication failed: 127.0.0.1:9 refused the link: token proof does not match"
        );

        let refusal = Refusal::max_connections(1);
        let err = refusal.to_error("h:1 refused the link");
        assert_eq!(err.kind(), ErrorKind::MaxConnections);
        assert_eq!(
            err.to_string(),
            "Refused: max connections reached: h:1 refused the link (1)"
        );

        let err = Refusal::into_error(2, "protocol version mismatch", "h:1 refused the link");
        assert_eq!(err.kind(), ErrorKind::Protocol);
    }
}
