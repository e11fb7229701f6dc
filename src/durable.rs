//! Durable networks: messages to a network that is down, restarting or scaled to zero wait
//! in a JetStream stream and arrive when it is back.
//!
//! A durable network `N` owns two streams, made when it first starts and kept while it is
//! down:
//!
//! | stream | subjects | holds |
//! |---|---|---|
//! | `REFLOW_DURABLE_{N'}` | `_reflow_durable.{N'}.{actor}.{port}`, and `….{port}.{n}` for an entry of `n` | messages for its actors, until an instance has handled them (work-queue retention) |
//! | `REFLOW_DEAD_{N'}` | `_reflow_dead.{N'}.{actor}.{port}` | messages that failed `max_deliver` times |
//!
//! `N'` is the network id as one subject token (`.` written `%2E`, `%` written `%25`), so
//! no stream's subjects overlap another's and none collides with the live data subjects.
//! Senders find a durable network by its stream, even when no instance runs. A stream
//! message is one [`Message`] in MessagePack, or one JSON value when the header
//! `Content-Type: application/json` says so; or, from a sender with a backlog, an entry:
//! the MessagePack array of up to [`ENTRY_MESSAGES`] messages, with their count as the
//! subject's last token. `Nats-Msg-Id` deduplicates it.
//!
//! The instances of `N` share one durable pull consumer, `instances`: each entry goes to
//! one of them, which hands its messages to their actor in order. Each message is handled
//! with the same meaning as everywhere (its handler returned, and what it emitted was
//! handled in turn), and the entry is acknowledged to JetStream once all are; it goes to
//! another instance if its instance dies first. A message whose handler fails is
//! delivered again, up to `max_deliver` times in all (what its entry held besides is not
//! handled twice); then it is published alone on the dead-letter subject with the error,
//! and the stream goes on.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;

/// How a durable network keeps what is sent to it.
///
/// ```
/// use std::time::Duration;
/// use reflow_network::durable::DurableOptions;
///
/// let options = DurableOptions {
///     max_age: Duration::from_secs(24 * 3600),
///     max_deliver: 3,
///     ..DurableOptions::default()
/// };
/// assert_eq!(options.replicas, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DurableOptions {
    /// How long a message waits at most (0: for ever); `max_age_ms` in files.
    #[serde(with = "millis", rename = "max_age_ms")]
    pub max_age: Duration,
    /// How many bytes the stream keeps at most (-1: no limit); a send beyond it is refused.
    pub max_bytes: i64,
    /// How many entries the stream keeps at most (-1: no limit). An entry is one message,
    /// or up to 128 of a sender's backlog stored together.
    pub max_messages: i64,
    /// Copies of the stream on a cluster (1 on a single server).
    pub replicas: usize,
    /// Deliveries of one message before it is dead-lettered (at least 1).
    pub max_deliver: i64,
    /// How long an instance may take to handle an entry (one message, or up to 128 of a
    /// backlog) before JetStream gives it to another; `ack_wait_ms` in files.
    #[serde(with = "millis", rename = "ack_wait_ms")]
    pub ack_wait: Duration,
    /// Raise [`NetworkEvent::BacklogAboveLimit`](crate::events::NetworkEvent) when more
    /// than this many messages wait (0: never).
    pub backlog_limit: u64,
}

impl Default for DurableOptions {
    fn default() -> Self {
        DurableOptions {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: -1,
            max_messages: -1,
            replicas: 1,
            max_deliver: 5,
            ack_wait: Duration::from_secs(30),
            backlog_limit: 0,
        }
    }
}

impl DurableOptions {
    /// Checks the values, naming a bad one.
    pub fn validate(&self) -> Result<()> {
        if self.max_deliver < 1 {
            return Err(Error::invalid_config(
                "durable.max_deliver",
                "must be at least 1",
            ));
        }
        if self.replicas == 0 || self.replicas > 5 {
            return Err(Error::invalid_config(
                "durable.replicas",
                "must be between 1 and 5",
            ));
        }
        if self.ack_wait < Duration::from_millis(100) {
            return Err(Error::invalid_config(
                "durable.ack_wait",
                "must be at least 100 ms",
            ));
        }
        Ok(())
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// What waits for a durable network: [`DistributedNetwork::durable_backlog`](crate::distributed_network::DistributedNetwork::durable_backlog).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backlog {
    /// The durable network.
    pub network_id: String,
    /// Messages stored and not yet handled.
    pub pending: u64,
    /// How long the oldest of them has waited.
    pub oldest_age: Option<Duration>,
    /// Messages dead-lettered so far (kept in the dead-letter stream).
    pub dead_lettered: u64,
}

/// Whether a send was only stored for a durable network, or handled by its network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Delivery {
    /// The network handled it (a live network's confirmed send).
    Delivered,
    /// JetStream stored it for a durable network; it is handled when an instance takes
    /// it, now or once one runs.
    Stored,
}

/// The network id as one subject token: `.` becomes `%2E` and `%` becomes `%25`.
///
/// ```
/// assert_eq!(reflow_network::durable::network_token("prod.ml"), "prod%2Eml");
/// ```
pub fn network_token(network_id: &str) -> String {
    network_id.replace('%', "%25").replace('.', "%2E")
}

/// The name of the stream that holds what waits for `network_id`.
pub fn stream_name(network_id: &str) -> String {
    format!("REFLOW_DURABLE_{}", stream_safe(network_id))
}

/// The name of the stream that keeps `network_id`'s dead letters.
pub fn dead_stream_name(network_id: &str) -> String {
    format!("REFLOW_DEAD_{}", stream_safe(network_id))
}

/// Stream names allow no `.`, `*`, `>`, whitespace or path separators: each such
/// character (and `_`, so the mapping stays one to one) becomes `_` and its code.
fn stream_safe(network_id: &str) -> String {
    network_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_string()
            } else {
                format!("_{:x}_", c as u32)
            }
        })
        .collect()
}

/// The subject a durable message for `actor`'s `port` on `network_id` is stored under.
///
/// ```
/// use reflow_network::durable::durable_subject;
/// assert_eq!(durable_subject("prod.ml", "train", "in"), "_reflow_durable.prod%2Eml.train.in");
/// ```
pub fn durable_subject(network_id: &str, actor: &str, port: &str) -> String {
    format!(
        "_reflow_durable.{}.{actor}.{port}",
        network_token(network_id)
    )
}

/// The dead-letter subject for `actor`'s `port` on `network_id`.
pub fn dead_subject(network_id: &str, actor: &str, port: &str) -> String {
    format!("_reflow_dead.{}.{actor}.{port}", network_token(network_id))
}

/// Messages stored in one stream entry at most: a sender with a backlog stores it in
/// entries of up to this many, so the broker handles one message per entry.
pub const ENTRY_MESSAGES: usize = 128;

/// The subject of an entry of `count` (more than one) messages for `actor`'s `port` on
/// `network_id`: the durable subject with the count as one more token, so that the
/// stream's per-subject counts give the number of messages waiting.
pub(crate) fn durable_entry_subject(
    network_id: &str,
    actor: &str,
    port: &str,
    count: usize,
) -> String {
    format!("{}.{count}", durable_subject(network_id, actor, port))
}

/// The payload of an entry of several messages, from each one's MessagePack encoding
/// ([`Message::to_msgpack`]): the MessagePack array of them, in order.
pub(crate) fn entry_payload(encoded: &[Vec<u8>]) -> Vec<u8> {
    let count = encoded.len();
    let mut payload = Vec::with_capacity(3 + encoded.iter().map(Vec::len).sum::<usize>());
    if count < 16 {
        payload.push(0x90 | count as u8);
    } else {
        payload.push(0xdc);
        payload.extend_from_slice(&(count as u16).to_be_bytes());
    }
    for message in encoded {
        payload.extend_from_slice(message);
    }
    payload
}

/// The messages of an entry made by [`entry_payload`].
pub(crate) fn decode_entry(payload: &[u8]) -> Result<Vec<Message>> {
    Ok(rmp_serde::from_slice(payload)?)
}

/// `(actor, port, count)` of a durable subject of `network_id`: `count` is 1 for the
/// plain subject of one message, and the entry's count for an entry of several.
pub(crate) fn parse_durable_subject<'s>(
    network_id: &str,
    subject: &'s str,
) -> Option<(&'s str, &'s str, usize)> {
    let prefix = format!("_reflow_durable.{}.", network_token(network_id));
    let rest = subject.strip_prefix(prefix.as_str())?;
    let mut tokens = rest.split('.');
    let actor = tokens.next().filter(|t| !t.is_empty())?;
    let port = tokens.next().filter(|t| !t.is_empty())?;
    let count = match tokens.next() {
        None => 1,
        Some(count) => count
            .parse()
            .ok()
            .filter(|n| (2..=ENTRY_MESSAGES).contains(n))?,
    };
    tokens.next().is_none().then_some((actor, port, count))
}

/// The error for a durable stream that cannot be made or read.
pub(crate) fn stream_error(what: &str, network_id: &str, err: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Broker,
        format!("durable network {network_id:?}: could not {what}: {err}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_networks_apart_and_subjects_parse_back() {
        assert_ne!(stream_name("a.b"), stream_name("a_b"));
        assert_ne!(stream_name("a.b"), stream_name("a-b"));
        assert!(!stream_name("prod.ml").contains('.'));
        assert_eq!(network_token("50%.x"), "50%25%2Ex");
        let subject = durable_subject("prod.ml", "train", "in");
        assert_eq!(
            parse_durable_subject("prod.ml", &subject),
            Some(("train", "in", 1))
        );
        let entry = durable_entry_subject("prod.ml", "train", "in", 128);
        assert_eq!(entry, "_reflow_durable.prod%2Eml.train.in.128");
        assert_eq!(
            parse_durable_subject("prod.ml", &entry),
            Some(("train", "in", 128))
        );
        for bad in [
            "train.in.1",
            "train.in.129",
            "train.in.x",
            "train.in.2.3",
            "train",
        ] {
            let subject = format!("_reflow_durable.prod%2Eml.{bad}");
            assert_eq!(parse_durable_subject("prod.ml", &subject), None, "{bad}");
        }
        assert_eq!(parse_durable_subject("prod", &subject), None);
        assert_eq!(dead_subject("n", "a", "p"), "_reflow_dead.n.a.p");
    }

    #[test]
    fn an_entry_is_the_messagepack_array_of_its_messages() {
        for count in [2, 15, 16, 128] {
            let messages: Vec<Message> = (0..count)
                .map(|i| match i % 3 {
                    0 => Message::Integer(i),
                    1 => Message::String(format!("m{i}").into()),
                    _ => Message::Bytes(vec![i as u8; 40].into()),
                })
                .collect();
            let encoded: Vec<Vec<u8>> = messages.iter().map(|m| m.to_msgpack().unwrap()).collect();
            assert_eq!(decode_entry(&entry_payload(&encoded)).unwrap(), messages);
        }
    }

    #[test]
    fn bad_options_are_named() {
        for (options, field) in [
            (
                DurableOptions {
                    max_deliver: 0,
                    ..Default::default()
                },
                "max_deliver",
            ),
            (
                DurableOptions {
                    replicas: 0,
                    ..Default::default()
                },
                "replicas",
            ),
            (
                DurableOptions {
                    ack_wait: Duration::from_millis(1),
                    ..Default::default()
                },
                "ack_wait",
            ),
        ] {
            let err = options.validate().unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
        }
        DurableOptions::default().validate().unwrap();
    }
}
