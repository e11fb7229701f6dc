//! Reading a frame body: one pass over the MessagePack map, straight into a [`Frame`].
//!
//! Serde's derive for an internally tagged enum first copies the whole map into a generic
//! tree, because the tag may come last; on the hot path that tree cost more than the rest
//! of the receive path together. Here every key a frame may carry has a slot in one flat
//! struct, the map is read into it in a single pass, whatever the key order, and the `"t"`
//! key then says which slots must be filled. Unknown keys are skipped, so a newer peer may
//! add fields. Large payloads are cut out of the received buffer without a copy.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

use super::frame::Frame;

/// Payloads up to this size are copied out of the read buffer; larger ones share it.
/// Sharing saves a copy but keeps the buffer alive while the payload lives, which is only
/// worth it when the payload is a good part of that buffer.
const COPY_BELOW: usize = 4096;

/// Every field any frame kind has, each optional; `t` names the kind.
#[derive(serde::Deserialize)]
struct RawFrame<'a> {
    #[serde(borrow)]
    t: Cow<'a, str>,
    v: Option<u16>,
    id: Option<u64>,
    reason_code: Option<u16>,
    network: Option<String>,
    instance: Option<String>,
    endpoint: Option<String>,
    subject: Option<String>,
    reason: Option<String>,
    error: Option<String>,
    #[serde(borrow)]
    nonce: Option<RawBytes<'a>>,
    #[serde(borrow)]
    proof: Option<RawBytes<'a>>,
    #[serde(borrow)]
    payload: Option<RawBytes<'a>>,
}

/// A byte field: borrowed from the input when the decoder allows it.
enum RawBytes<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl<'de: 'a, 'a> Deserialize<'de> for RawBytes<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;

        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = RawBytes<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes (MessagePack bin)")
            }

            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(RawBytes::Borrowed(v))
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(RawBytes::Owned(v.to_vec()))
            }

            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                Ok(RawBytes::Owned(v))
            }

            /// Some encoders write byte strings as arrays of small integers; take those too.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                Ok(RawBytes::Owned(bytes))
            }
        }

        deserializer.deserialize_bytes(BytesVisitor)
    }
}

impl RawBytes<'_> {
    /// The bytes as [`Bytes`], sharing `body` when they lie inside it and are large.
    fn into_bytes(self, body: Option<&Bytes>) -> Bytes {
        match (self, body) {
            (RawBytes::Borrowed(slice), Some(body)) if slice.len() >= COPY_BELOW => {
                body.slice_ref(slice)
            }
            (RawBytes::Borrowed(slice), _) => Bytes::copy_from_slice(slice),
            (RawBytes::Owned(vec), _) => Bytes::from(vec),
        }
    }
}

/// A field the frame kind requires was absent.
fn need<T>(value: Option<T>, kind: &str, field: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("{kind} frame has no '{field}'"))
}

impl RawFrame<'_> {
    fn into_frame(self, body: Option<&Bytes>) -> Result<Frame, String> {
        let kind = &*self.t;
        let bytes = |field: Option<RawBytes<'_>>, name: &str| {
            need(field, kind, name).map(|raw| raw.into_bytes(body))
        };
        let frame = match kind {
            "Challenge" => Frame::Challenge {
                v: need(self.v, kind, "v")?,
                nonce: bytes(self.nonce, "nonce")?,
                network: need(self.network, kind, "network")?,
                instance: need(self.instance, kind, "instance")?,
            },
            "Hello" => Frame::Hello {
                v: need(self.v, kind, "v")?,
                network: need(self.network, kind, "network")?,
                instance: need(self.instance, kind, "instance")?,
                endpoint: self.endpoint,
                proof: self.proof.map(|raw| raw.into_bytes(body)),
                nonce: bytes(self.nonce, "nonce")?,
            },
            "Welcome" => Frame::Welcome {
                network: need(self.network, kind, "network")?,
                instance: need(self.instance, kind, "instance")?,
                endpoint: self.endpoint,
                proof: self.proof.map(|raw| raw.into_bytes(body)),
            },
            "Refuse" => Frame::Refuse {
                reason_code: need(self.reason_code, kind, "reason_code")?,
                reason: need(self.reason, kind, "reason")?,
            },
            "Message" => Frame::Message {
                subject: need(self.subject, kind, "subject")?,
                payload: bytes(self.payload, "payload")?,
            },
            "Request" => Frame::Request {
                id: need(self.id, kind, "id")?,
                subject: need(self.subject, kind, "subject")?,
                payload: bytes(self.payload, "payload")?,
            },
            "Reply" => Frame::Reply {
                id: need(self.id, kind, "id")?,
                payload: self
                    .payload
                    .map_or_else(Bytes::new, |raw| raw.into_bytes(body)),
                error: self.error,
            },
            "Ping" => Frame::Ping {
                id: need(self.id, kind, "id")?,
            },
            "Pong" => Frame::Pong {
                id: need(self.id, kind, "id")?,
            },
            "Goodbye" => Frame::Goodbye {
                reason: need(self.reason, kind, "reason")?,
            },
            other => return Err(format!("unknown frame kind {other:?}")),
        };
        Ok(frame)
    }
}

/// Decodes one frame body received as `body`.
pub(crate) fn decode_body(body: &Bytes) -> Result<Frame, String> {
    let raw: RawFrame<'_> = rmp_serde::from_slice(body).map_err(|err| err.to_string())?;
    raw.into_frame(Some(body))
}

impl<'de> Deserialize<'de> for Frame {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RawFrame::deserialize(deserializer)?
            .into_frame(None)
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: serde_json::Value) -> Bytes {
        Bytes::from(rmp_serde::to_vec_named(&value).unwrap())
    }

    #[test]
    fn keys_may_come_in_any_order_and_unknown_ones_are_skipped() {
        let frame = decode_body(&body(json!({"id": 5, "extra": [1, 2], "t": "Ping"}))).unwrap();
        assert_eq!(frame, Frame::Ping { id: 5 });
    }

    #[test]
    fn a_missing_field_or_an_unknown_kind_is_named() {
        let err = decode_body(&body(json!({"t": "Message", "subject": "a"}))).unwrap_err();
        assert_eq!(err, "Message frame has no 'payload'");
        let err = decode_body(&body(json!({"t": "Shout"}))).unwrap_err();
        assert_eq!(err, "unknown frame kind \"Shout\"");
        assert!(
            decode_body(&body(json!({"id": 1})))
                .unwrap_err()
                .contains("`t`")
        );
    }

    #[test]
    fn byte_fields_may_also_be_arrays_and_a_reply_may_omit_its_payload() {
        let frame = decode_body(&body(
            json!({"t": "Message", "subject": "s", "payload": [1, 2]}),
        ));
        assert_eq!(
            frame.unwrap(),
            Frame::Message {
                subject: "s".into(),
                payload: Bytes::from_static(&[1, 2]),
            }
        );
        let frame = decode_body(&body(json!({"t": "Reply", "id": 3, "error": "no"}))).unwrap();
        assert_eq!(
            frame,
            Frame::Reply {
                id: 3,
                payload: Bytes::new(),
                error: Some("no".into()),
            }
        );
    }

    #[test]
    fn a_large_payload_shares_the_received_buffer() {
        let frame = Frame::Message {
            subject: "s".into(),
            payload: Bytes::from(vec![7; COPY_BELOW]),
        };
        let encoded = Bytes::from(rmp_serde::to_vec_named(&frame).unwrap());
        let Frame::Message { payload, .. } = decode_body(&encoded).unwrap() else {
            panic!("a message");
        };
        let inside = encoded.as_ptr_range();
        assert!(inside.contains(&payload.as_ptr()), "no copy was made");
    }

    #[test]
    fn the_serde_impl_reads_what_the_codec_reads() {
        let frame = Frame::Hello {
            v: 1,
            network: "n".into(),
            instance: "i".into(),
            endpoint: None,
            proof: Some(Bytes::from_static(&[1; 32])),
            nonce: Bytes::from_static(&[2; 32]),
        };
        let encoded = rmp_serde::to_vec_named(&frame).unwrap();
        assert_eq!(rmp_serde::from_slice::<Frame>(&encoded).unwrap(), frame);
    }
}
