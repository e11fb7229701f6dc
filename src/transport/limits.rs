//! The NATS server's limits, recognised in its refusals and named with the setting that
//! raises each, so that a user who hits one learns what to change rather than what broke.

use crate::error::{Error, ErrorKind};

/// A server limit: the words the server (or its JetStream API) refuses with, and what to
/// tell the user.
struct Limit {
    /// Lower-case words the refusal contains.
    says: &'static str,
    /// What is exhausted.
    what: &'static str,
    /// The setting that raises it.
    raise: &'static str,
}

const LIMITS: &[Limit] = &[
    Limit {
        says: "maximum consumers limit reached",
        what: "the consumers a stream (or the account) may hold (JetStream error 10026)",
        raise: "raise max_consumers on the stream (the liveness stream states 100,000), or \
                max_consumers in the account's jetstream limits",
    },
    Limit {
        says: "maximum consumers exceeded",
        what: "the consumers the account may hold",
        raise: "raise max_consumers in the account's jetstream limits",
    },
    Limit {
        says: "maximum number of streams reached",
        what: "the streams the account may hold (JetStream error 10027)",
        raise: "raise max_streams in the account's jetstream limits",
    },
    Limit {
        says: "insufficient resources",
        what: "JetStream storage (JetStream error 10023)",
        raise: "raise max_memory_store / max_file_store in the server's jetstream block, \
                or max_mem / max_file in the account's jetstream limits",
    },
    Limit {
        says: "maximum connections exceeded",
        what: "the connections the server (or account) accepts",
        raise: "raise max_connections in the server config (or in the account's limits); \
                the networks of one process share one connection",
    },
    Limit {
        says: "maximum account active connections exceeded",
        what: "the connections the account accepts",
        raise: "raise max_connections in the account's limits",
    },
    Limit {
        says: "maximum subscriptions exceeded",
        what: "the subscriptions a connection (or account) may hold",
        raise: "raise max_subscriptions for the user or account in the server config; each \
                live network holds about ten",
    },
    Limit {
        says: "maximum payload exceeded",
        what: "the largest message the server takes",
        raise: "raise max_payload in the server config",
    },
];

/// Returns `err` as a [`ErrorKind::ServerLimit`] that names the limit and the setting
/// that raises it, if its words (or its source's) are a server limit's refusal; as it is
/// otherwise.
pub(crate) fn name_limit(err: Error) -> Error {
    match recognise(&full_text(&err)) {
        Some(limit) => Error::new(
            ErrorKind::ServerLimit,
            format!(
                "{}: the NATS server refused because {} is reached; {}",
                err.detail(),
                limit.what,
                limit.raise
            ),
        ),
        None => err,
    }
}

/// The error's words and its sources'.
fn full_text(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn recognise(text: &str) -> Option<&'static Limit> {
    let text = text.to_ascii_lowercase();
    LIMITS.iter().find(|limit| text.contains(limit.says))
}

/// The limit `text` (a server's `-ERR` or a JetStream error) speaks of, as a sentence
/// for a log line: what is exhausted and what raises it.
pub(crate) fn describe(text: &str) -> Option<String> {
    recognise(text).map(|limit| format!("{} is reached; {}", limit.what, limit.raise))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_limit_and_the_setting() {
        let err = Error::new(
            ErrorKind::Broker,
            "cannot watch bucket \"reflow_liveness\": JetStream error: maximum consumers \
             limit reached (code 400, error code 10026)",
        );
        let named = name_limit(err);
        assert_eq!(named.kind(), ErrorKind::ServerLimit);
        let text = named.to_string();
        assert!(text.starts_with("NATS server limit reached: cannot watch bucket"));
        assert!(text.contains("max_consumers"), "{text}");
    }

    #[test]
    fn other_errors_pass_unchanged() {
        let err = Error::new(ErrorKind::Broker, "connection refused");
        assert_eq!(name_limit(err).kind(), ErrorKind::Broker);
        assert!(describe("'Maximum Connections Exceeded'").is_some());
        assert!(describe("authorization violation").is_none());
    }
}
