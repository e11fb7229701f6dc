//! The values actors exchange, and their wire encoding.
//!
//! A [`Message`] is what flows along a connection, locally or between networks. Between
//! networks it travels inside an [`Envelope`], encoded with MessagePack (`rmp-serde`) and
//! versioned, so that a peer of another version, or a client in another language, can
//! tell what it holds. `docs/wire.md` describes the bytes.
//!
//! Cloning a message is cheap for the heavy variants (`String`, `Bytes`, `Error` share
//! their buffer), because fan-out clones a message once per connection.

mod codec;
pub(crate) mod seal;

pub(crate) use codec::{Body, EnvelopeView, EnvelopeWriter, compress_above_limit, plain_bounded};

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A value flowing between actors.
///
/// ```
/// use reflow_network::message::Message;
///
/// let m = Message::String("x".to_string().into());
/// assert_eq!(m, Message::from("x"));
/// assert_eq!(Message::from(42_i64), Message::Integer(42));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// A signal with no value (an "information packet" that carries only its arrival).
    Flow,
    /// A boolean.
    Boolean(bool),
    /// A signed integer.
    Integer(i64),
    /// A floating-point number.
    Float(f64),
    /// A UTF-8 string, shared on clone.
    String(Arc<str>),
    /// Raw bytes, shared on clone; MessagePack carries them as `bin`.
    Bytes(Bytes),
    /// Any JSON value.
    Object(serde_json::Value),
    /// A list of messages.
    Array(Vec<Message>),
    /// An error reported by an actor, carried as data so that graphs can route it.
    Error(Arc<str>),
}

impl Message {
    /// A short name of the variant, for logs and error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Flow => "flow",
            Message::Boolean(_) => "boolean",
            Message::Integer(_) => "integer",
            Message::Float(_) => "float",
            Message::String(_) => "string",
            Message::Bytes(_) => "bytes",
            Message::Object(_) => "object",
            Message::Array(_) => "array",
            Message::Error(_) => "error",
        }
    }

    /// A rough size of the encoded message, to size buffers.
    pub(crate) fn size_hint(&self) -> usize {
        match self {
            Message::String(s) | Message::Error(s) => s.len() + 5,
            Message::Bytes(b) => b.len() + 5,
            Message::Array(items) => items.iter().map(Message::size_hint).sum::<usize>() + 5,
            Message::Object(_) => 128,
            _ => 9,
        }
    }

    /// An `Error` message with `text`.
    pub fn error(text: impl Into<String>) -> Self {
        Message::Error(Arc::from(text.into()))
    }

    /// The integer inside, if this is an `Integer`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use reflow_network::Message;
    /// assert_eq!(Message::Integer(3).as_integer(), Some(3));
    /// assert_eq!(Message::from("3").as_integer(), None);
    /// ```
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Message::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The number inside as `f64`, if this is an `Integer` or a `Float`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Message::Integer(i) => Some(*i as f64),
            Message::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The text inside, if this is a `String` (or an `Error`).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Message::String(s) | Message::Error(s) => Some(s),
            _ => None,
        }
    }

    /// Converts a JSON value: `null` becomes `Flow`, numbers become `Integer` when they fit
    /// an `i64` and `Float` otherwise, arrays become `Array`, and objects stay `Object`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use reflow_network::Message;
    /// use serde_json::json;
    ///
    /// assert_eq!(Message::from_json(json!(5)), Message::Integer(5));
    /// assert_eq!(Message::from_json(json!("hi")), Message::from("hi"));
    /// let object = Message::from_json(json!({"a": 1}));
    /// assert_eq!(object.to_json(), json!({"a": 1}));
    /// ```
    pub fn from_json(value: serde_json::Value) -> Self {
        use serde_json::Value;
        match value {
            Value::Null => Message::Flow,
            Value::Bool(b) => Message::Boolean(b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Message::Integer(i),
                None => Message::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Message::String(s.into()),
            Value::Array(items) => {
                Message::Array(items.into_iter().map(Message::from_json).collect())
            }
            object @ Value::Object(_) => Message::Object(object),
        }
    }

    /// Converts to JSON: `Flow` is `null`, `Bytes` an array of numbers, `Error` an object
    /// `{"error": text}`, and a non-finite float `null` (JSON has no NaN).
    ///
    /// # Examples
    ///
    /// ```
    /// # use reflow_network::Message;
    /// assert_eq!(Message::Integer(3).to_json(), serde_json::json!(3));
    /// assert_eq!(Message::Flow.to_json(), serde_json::Value::Null);
    /// ```
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Message::Flow => Value::Null,
            Message::Boolean(b) => Value::Bool(*b),
            Message::Integer(i) => Value::from(*i),
            Message::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            Message::String(s) => Value::String(s.to_string()),
            Message::Bytes(b) => Value::Array(b.iter().map(|x| Value::from(*x)).collect()),
            Message::Object(v) => v.clone(),
            Message::Array(items) => Value::Array(items.iter().map(Message::to_json).collect()),
            Message::Error(e) => serde_json::json!({ "error": e.to_string() }),
        }
    }

    /// Encodes this message alone as MessagePack.
    pub fn to_msgpack(&self) -> Result<Vec<u8>> {
        Ok(rmp_serde::to_vec_named(self)?)
    }

    /// Decodes a message encoded by [`Message::to_msgpack`].
    pub fn from_msgpack(bytes: &[u8]) -> Result<Self> {
        Ok(rmp_serde::from_slice(bytes)?)
    }
}

impl From<bool> for Message {
    fn from(v: bool) -> Self {
        Message::Boolean(v)
    }
}

macro_rules! integer_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Message {
            fn from(v: $t) -> Self {
                Message::Integer(i64::from(v))
            }
        }
    )*};
}
integer_from!(i8, i16, i32, i64, u8, u16, u32);

impl From<f64> for Message {
    fn from(v: f64) -> Self {
        Message::Float(v)
    }
}

impl From<f32> for Message {
    fn from(v: f32) -> Self {
        Message::Float(f64::from(v))
    }
}

impl From<&str> for Message {
    fn from(v: &str) -> Self {
        Message::String(Arc::from(v))
    }
}

impl From<String> for Message {
    fn from(v: String) -> Self {
        Message::String(Arc::from(v))
    }
}

impl From<Arc<str>> for Message {
    fn from(v: Arc<str>) -> Self {
        Message::String(v)
    }
}

impl From<Vec<u8>> for Message {
    fn from(v: Vec<u8>) -> Self {
        Message::Bytes(Bytes::from(v))
    }
}

impl From<Bytes> for Message {
    fn from(v: Bytes) -> Self {
        Message::Bytes(v)
    }
}

impl From<Vec<Message>> for Message {
    fn from(v: Vec<Message>) -> Self {
        Message::Array(v)
    }
}

impl From<serde_json::Value> for Message {
    fn from(v: serde_json::Value) -> Self {
        Message::from_json(v)
    }
}

impl From<()> for Message {
    fn from(_: ()) -> Self {
        Message::Flow
    }
}

impl From<Message> for serde_json::Value {
    fn from(m: Message) -> Self {
        m.to_json()
    }
}

impl TryFrom<Message> for i64 {
    type Error = Error;
    fn try_from(m: Message) -> Result<i64> {
        m.as_integer()
            .ok_or_else(|| Error::encoding(format!("expected an integer, got {}", m.type_name())))
    }
}

impl TryFrom<Message> for f64 {
    type Error = Error;
    fn try_from(m: Message) -> Result<f64> {
        m.as_f64()
            .ok_or_else(|| Error::encoding(format!("expected a number, got {}", m.type_name())))
    }
}

impl TryFrom<Message> for bool {
    type Error = Error;
    fn try_from(m: Message) -> Result<bool> {
        match m {
            Message::Boolean(b) => Ok(b),
            other => Err(Error::encoding(format!(
                "expected a boolean, got {}",
                other.type_name()
            ))),
        }
    }
}

impl TryFrom<Message> for String {
    type Error = Error;
    fn try_from(m: Message) -> Result<String> {
        match m {
            Message::String(s) => Ok(s.to_string()),
            other => Err(Error::encoding(format!(
                "expected a string, got {}",
                other.type_name()
            ))),
        }
    }
}

/// The envelope version this build writes and the newest it reads.
pub const WIRE_VERSION: u8 = 1;

/// A leading byte MessagePack never uses (`0xc1`): a payload that starts with it is an
/// LZ4-compressed (size-prepended) envelope. Any other first byte is a plain envelope.
pub const COMPRESSED_MARKER: u8 = 0xc1;

/// A message on its way between networks, with who sent it and where replies go.
///
/// Field names are one letter on the wire (see `docs/wire.md`); MessagePack carries the
/// struct as a map, so readers in other languages need no schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The envelope version ([`WIRE_VERSION`]).
    #[serde(rename = "v")]
    pub version: u8,
    /// The sending network's id.
    #[serde(rename = "n")]
    pub network: String,
    /// The sending instance's id.
    #[serde(rename = "i")]
    pub instance: String,
    /// A per-sender sequence number, increasing along each stream.
    #[serde(rename = "s")]
    pub seq: u64,
    /// The message itself.
    #[serde(rename = "m")]
    pub message: Message,
    /// Where the target's outputs for this message should go back to, as a subject prefix
    /// `{network}.{proxy}`: set by remote-actor proxies, absent for plain sends.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// The lowest number its sender still waits to hear acknowledged, on streamed
    /// envelopes: every number below it was delivered, so receivers may forget it.
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub acked_below: Option<u64>,
}

/// An envelope that borrows its parts, so the bridge's hot path encodes without copying
/// them first. It writes exactly what [`Envelope`] writes.
#[derive(Debug, Serialize)]
pub(crate) struct EnvelopeRef<'a> {
    #[serde(rename = "v")]
    pub(crate) version: u8,
    #[serde(rename = "n")]
    pub(crate) network: &'a str,
    #[serde(rename = "i")]
    pub(crate) instance: &'a str,
    #[serde(rename = "s")]
    pub(crate) seq: u64,
    #[serde(rename = "m")]
    pub(crate) message: &'a Message,
    #[serde(rename = "r", skip_serializing_if = "Option::is_none")]
    pub(crate) reply_to: Option<&'a str>,
    #[serde(rename = "a", skip_serializing_if = "Option::is_none")]
    pub(crate) acked_below: Option<u64>,
    #[serde(rename = "k", skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<&'a str>,
}

impl EnvelopeRef<'_> {
    /// See [`Envelope::encode`].
    pub(crate) fn encode(&self, compress_above: Option<usize>) -> Result<Bytes> {
        let mut plain = Vec::with_capacity(64 + self.message.size_hint());
        rmp_serde::encode::write_named(&mut plain, self)?;
        match compress_above {
            Some(limit) if plain.len() > limit => {
                Ok(compress(&plain).unwrap_or_else(|| Bytes::from(plain)))
            }
            _ => Ok(Bytes::from(plain)),
        }
    }
}

/// `plain` LZ4-compressed behind [`COMPRESSED_MARKER`], if that is shorter.
fn compress(plain: &[u8]) -> Option<Bytes> {
    let packed = lz4_flex::compress_prepend_size(plain);
    (packed.len() + 1 < plain.len()).then(|| {
        let mut out = Vec::with_capacity(packed.len() + 1);
        out.push(COMPRESSED_MARKER);
        out.extend_from_slice(&packed);
        Bytes::from(out)
    })
}

impl Envelope {
    /// A new envelope of the current version.
    pub fn new(network: &str, instance: &str, seq: u64, message: Message) -> Self {
        Envelope {
            version: WIRE_VERSION,
            network: network.to_string(),
            instance: instance.to_string(),
            seq,
            message,
            reply_to: None,
            acked_below: None,
        }
    }

    /// Encodes the envelope; when `compress_above` is `Some(n)` and the encoding is longer
    /// than `n` bytes, it is LZ4-compressed behind [`COMPRESSED_MARKER`].
    pub fn encode(&self, compress_above: Option<usize>) -> Result<Bytes> {
        EnvelopeRef {
            version: self.version,
            network: &self.network,
            instance: &self.instance,
            seq: self.seq,
            message: &self.message,
            reply_to: self.reply_to.as_deref(),
            acked_below: self.acked_below,
            key: None,
        }
        .encode(compress_above)
    }

    /// Decodes an envelope, compressed or not, and refuses versions newer than this build.
    ///
    /// A payload that holds a batch of several messages (see `docs/wire.md`) is refused
    /// with an error that says so; [`Envelope::decode_all`] reads both kinds.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut all = Self::decode_all(bytes)?;
        match all.len() {
            1 => Ok(all.remove(0)),
            n => Err(Error::encoding(format!(
                "the payload is a batch of {n} messages; read it with Envelope::decode_all"
            ))),
        }
    }

    /// Decodes a payload into its envelopes: one, or one per message of a batch, each
    /// with its own sequence number (the batch's first, then counting up).
    pub fn decode_all(bytes: &[u8]) -> Result<Vec<Self>> {
        let wire = WireEnvelope::decode(bytes)?;
        let reply_to = wire.reply_to;
        let acked_below = wire.acked_below;
        Ok(wire
            .messages
            .into_iter()
            .zip(wire.seq..)
            .map(|(message, seq)| Envelope {
                version: wire.version,
                network: wire.network.clone(),
                instance: wire.instance.clone(),
                seq,
                message,
                reply_to: reply_to.clone(),
                acked_below,
            })
            .collect())
    }
}

/// The envelope as it is on the wire, one message or a batch; what the general decoder
/// reads.
#[derive(Debug, Deserialize)]
pub(crate) struct WireEnvelope {
    #[serde(rename = "v")]
    pub(crate) version: u8,
    #[serde(rename = "n")]
    pub(crate) network: String,
    #[serde(rename = "i")]
    pub(crate) instance: String,
    #[serde(rename = "s")]
    pub(crate) seq: u64,
    #[serde(rename = "m", default)]
    message: Option<Message>,
    // `r` before `b`: an envelope serde wrote as an array ([v, n, i, s, m, r]) reads too.
    #[serde(rename = "r", default)]
    pub(crate) reply_to: Option<String>,
    #[serde(rename = "b", default)]
    batch: Option<Vec<Message>>,
    #[serde(rename = "a", default)]
    pub(crate) acked_below: Option<u64>,
    #[serde(rename = "d", default)]
    pub(crate) redelivered: bool,
    #[serde(rename = "k", default)]
    pub(crate) key: Option<String>,
    #[serde(rename = "e", default)]
    pub(crate) epoch: Option<u64>,
    #[serde(skip)]
    pub(crate) messages: Body,
}

impl WireEnvelope {
    /// Decodes a payload, compressed or not: refuses versions newer than this build, and
    /// anything but exactly one of `m` and a non-empty `b`.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let mut envelope: WireEnvelope = match bytes.first() {
            Some(&COMPRESSED_MARKER) => {
                let plain = lz4_flex::decompress_size_prepended(&bytes[1..])
                    .map_err(|e| Error::encoding(format!("compressed envelope is corrupt: {e}")))?;
                rmp_serde::from_slice(&plain)?
            }
            Some(_) => rmp_serde::from_slice(bytes)?,
            None => return Err(Error::encoding("empty payload is not an envelope")),
        };
        if envelope.version > WIRE_VERSION || envelope.version == 0 {
            return Err(Error::encoding(format!(
                "envelope version {} is not supported (this build reads 1 to {WIRE_VERSION})",
                envelope.version
            )));
        }
        envelope.messages = match (envelope.message.take(), envelope.batch.take()) {
            (Some(message), None) => Body::One(message),
            (None, Some(batch)) if !batch.is_empty() => Body::Many(batch),
            (None, Some(_)) => return Err(Error::encoding("the envelope's batch `b` is empty")),
            (None, None) => {
                return Err(Error::encoding(
                    "the envelope holds no message: it needs `m` or `b`",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(Error::encoding(
                    "the envelope holds both `m` and `b`; it may hold one",
                ));
            }
        };
        Ok(envelope)
    }
}

impl From<Envelope> for WireEnvelope {
    fn from(envelope: Envelope) -> Self {
        WireEnvelope {
            version: envelope.version,
            network: envelope.network,
            instance: envelope.instance,
            seq: envelope.seq,
            message: None,
            batch: None,
            reply_to: envelope.reply_to,
            acked_below: envelope.acked_below,
            redelivered: false,
            key: None,
            epoch: None,
            messages: Body::One(envelope.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn same(a: &Message, b: &Message) -> bool {
        match (a, b) {
            (Message::Float(x), Message::Float(y)) => x.to_bits() == y.to_bits(),
            (Message::Array(xs), Message::Array(ys)) => {
                xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same(x, y))
            }
            _ => a == b,
        }
    }

    fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            ".{0,12}".prop_map(serde_json::Value::from),
        ]
    }

    fn json() -> impl Strategy<Value = serde_json::Value> {
        json_leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Any message, for property tests here and in `codec`.
    pub(super) fn message() -> impl Strategy<Value = Message> {
        let leaf = prop_oneof![
            Just(Message::Flow),
            any::<bool>().prop_map(Message::Boolean),
            any::<i64>().prop_map(Message::Integer),
            any::<f64>().prop_map(Message::Float),
            ".{0,32}".prop_map(Message::from),
            prop::collection::vec(any::<u8>(), 0..64).prop_map(Message::from),
            json().prop_map(Message::Object),
            ".{0,16}".prop_map(Message::error),
        ];
        leaf.prop_recursive(3, 32, 5, |inner| {
            prop::collection::vec(inner, 0..5).prop_map(Message::Array)
        })
    }

    proptest! {
        #[test]
        fn any_message_round_trips_through_msgpack(m in message()) {
            let back = Message::from_msgpack(&m.to_msgpack().unwrap()).unwrap();
            prop_assert!(same(&m, &back), "{m:?} != {back:?}");
        }

        #[test]
        fn any_envelope_round_trips_compressed_or_not(m in message(), seq in any::<u64>(), limit in prop::option::of(0usize..256)) {
            let env = Envelope::new("prod.ml", "i-1", seq, m);
            let back = Envelope::decode(&env.encode(limit).unwrap()).unwrap();
            prop_assert!(same(&env.message, &back.message));
            prop_assert_eq!(back.seq, seq);
            prop_assert_eq!(back.network, "prod.ml");
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_envelope_decoder(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = Envelope::decode(&bytes);
        }
    }

    #[test]
    fn every_variant_round_trips() {
        let all = vec![
            Message::Flow,
            Message::Boolean(true),
            Message::Integer(-7),
            Message::Float(1.5),
            Message::String("x".to_string().into()),
            Message::Bytes(Bytes::from_static(b"\x00\xff")),
            Message::Object(serde_json::json!({"a": [1, 2, {"b": null}]})),
            Message::Array(vec![Message::Integer(1), Message::from("two")]),
            Message::error("boom"),
        ];
        for m in all {
            assert_eq!(Message::from_msgpack(&m.to_msgpack().unwrap()).unwrap(), m);
        }
    }

    #[test]
    fn large_envelopes_are_compressed_when_asked() {
        let big = Message::from("a".repeat(10_000));
        let env = Envelope::new("n", "i", 1, big);
        let packed = env.encode(Some(1024)).unwrap();
        assert_eq!(packed[0], COMPRESSED_MARKER);
        assert!(packed.len() < 1_000);
        assert_eq!(Envelope::decode(&packed).unwrap(), env);
        assert_ne!(env.encode(None).unwrap()[0], COMPRESSED_MARKER);
    }

    #[test]
    fn newer_envelope_versions_are_refused_with_the_version() {
        let mut env = Envelope::new("n", "i", 1, Message::Flow);
        env.version = WIRE_VERSION + 1;
        let err = Envelope::decode(&rmp_serde::to_vec_named(&env).unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("version {}", WIRE_VERSION + 1))
        );
    }

    #[test]
    fn json_conversion_keeps_the_shape() {
        let v = serde_json::json!({"k": [1, 2.5, "s", null, true]});
        assert_eq!(Message::from(v.clone()), Message::Object(v.clone()));
        let arr = Message::from_json(serde_json::json!([1, 2.5, "s", null, true]));
        assert_eq!(
            arr,
            Message::Array(vec![
                Message::Integer(1),
                Message::Float(2.5),
                Message::from("s"),
                Message::Flow,
                Message::Boolean(true)
            ])
        );
        assert_eq!(arr.to_json(), serde_json::json!([1, 2.5, "s", null, true]));
    }
}
