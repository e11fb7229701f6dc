//! The bridge's hot path through the envelope encoding: the same bytes as [`Envelope`],
//! written and read with less work per message.
//!
//! * [`EnvelopeWriter`] encodes the fields that never change for one sender (version,
//!   network, instance) once, and cuts each envelope from a shared buffer chunk, so most
//!   envelopes cost no allocation of their own.
//! * [`EnvelopeView`] reads an envelope in place: the ids borrow the payload, and a
//!   `Bytes` message shares the payload's buffer instead of being copied.
//!
//! Both fall back to the general serde code for anything unusual, and unit tests check
//! that their bytes and values are exactly those of [`Envelope::encode`] and
//! [`Envelope::decode`].

use std::borrow::Cow;
use std::io::Cursor;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

use super::{COMPRESSED_MARKER, Envelope, Message, WIRE_VERSION, WireEnvelope, compress};
use crate::error::{Error, Result};

/// Bytes of one buffer chunk that envelopes are cut from.
const CHUNK: usize = 64 * 1024;

fn write_failed(e: impl std::fmt::Display) -> Error {
    Error::encoding(format!("cannot encode an envelope: {e}"))
}

/// Encodes the envelopes of one sender.
#[derive(Debug)]
pub(crate) struct EnvelopeWriter {
    /// The encoded version, network, instance (and epoch) and the key of the sequence
    /// number: what follows the map header in every envelope of this sender.
    head: Vec<u8>,
    /// Fields the head holds besides `s`.
    head_fields: u32,
    buf: BytesMut,
}

impl EnvelopeWriter {
    /// A writer for envelopes from `instance` of `network`, without an epoch.
    #[cfg(test)]
    pub(crate) fn new(network: &str, instance: &str) -> Self {
        Self::with_epoch(network, instance, None)
    }

    /// A writer whose envelopes also tell the stream's `epoch` (key `e`): the first
    /// number of this start of the sender, so a receiver tells a restarted sender's
    /// stream from its previous life's.
    pub(crate) fn with_epoch(network: &str, instance: &str, epoch: Option<u64>) -> Self {
        let mut head = Vec::with_capacity(28 + network.len() + instance.len());
        // Writing into a Vec cannot fail.
        let _ = rmp::encode::write_str(&mut head, "v");
        let _ = rmp::encode::write_uint(&mut head, u64::from(WIRE_VERSION));
        let _ = rmp::encode::write_str(&mut head, "n");
        let _ = rmp::encode::write_str(&mut head, network);
        let _ = rmp::encode::write_str(&mut head, "i");
        let _ = rmp::encode::write_str(&mut head, instance);
        if let Some(epoch) = epoch {
            let _ = rmp::encode::write_str(&mut head, "e");
            let _ = rmp::encode::write_uint(&mut head, epoch);
        }
        let _ = rmp::encode::write_str(&mut head, "s");
        EnvelopeWriter {
            head,
            head_fields: 3 + u32::from(epoch.is_some()),
            buf: BytesMut::new(),
        }
    }

    /// Encodes envelope `seq` carrying `message`, as [`Envelope::encode`] would.
    #[cfg(test)]
    pub(crate) fn encode(
        &mut self,
        seq: u64,
        acked_below: u64,
        message: &Message,
        reply_to: Option<&str>,
        compress_above: Option<usize>,
    ) -> Result<Bytes> {
        let plain = self.encode_batch(
            seq,
            acked_below,
            std::slice::from_ref(message),
            reply_to,
            false,
        )?;
        Ok(compress_above_limit(plain, compress_above))
    }

    /// Encodes `messages` as one envelope numbered `seq`, `seq + 1`, ..., telling that
    /// every number below `acked_below` was handled, uncompressed: with one message,
    /// exactly what [`Envelope::encode`] writes; with more, a batch (key `b`, an array,
    /// in place of `m`; see `docs/wire.md`). `redelivered` marks an envelope sent
    /// again (key `d`).
    pub(crate) fn encode_batch(
        &mut self,
        seq: u64,
        acked_below: u64,
        messages: &[Message],
        reply_to: Option<&str>,
        redelivered: bool,
    ) -> Result<Bytes> {
        let body: usize = messages.iter().map(|m| m.size_hint() + 8).sum();
        let room = self.head.len() + 32 + body + reply_to.map_or(0, |r| r.len() + 8);
        if self.buf.capacity() < room {
            // Envelopes cut from the old chunk keep it alive until they are dropped.
            self.buf = BytesMut::with_capacity(CHUNK.max(room));
        }
        // The head's fields, `s`, the message or batch, `a`, and what is optional.
        let fields = self.head_fields + 3 + u32::from(reply_to.is_some()) + u32::from(redelivered);
        let mut out = (&mut self.buf).writer();
        rmp::encode::write_map_len(&mut out, fields).map_err(write_failed)?;
        out.get_mut().extend_from_slice(&self.head);
        rmp::encode::write_uint(&mut out, seq).map_err(write_failed)?;
        match messages {
            [] => return Err(Error::encoding("an envelope needs at least one message")),
            [message] => {
                rmp::encode::write_str(&mut out, "m").map_err(write_failed)?;
                rmp_serde::encode::write_named(&mut out, message)?;
            }
            _ => {
                let len = u32::try_from(messages.len()).map_err(write_failed)?;
                rmp::encode::write_str(&mut out, "b").map_err(write_failed)?;
                rmp::encode::write_array_len(&mut out, len).map_err(write_failed)?;
                for message in messages {
                    rmp_serde::encode::write_named(&mut out, message)?;
                }
            }
        }
        if let Some(reply_to) = reply_to {
            rmp::encode::write_str(&mut out, "r").map_err(write_failed)?;
            rmp::encode::write_str(&mut out, reply_to).map_err(write_failed)?;
        }
        rmp::encode::write_str(&mut out, "a").map_err(write_failed)?;
        rmp::encode::write_uint(&mut out, acked_below).map_err(write_failed)?;
        if redelivered {
            rmp::encode::write_str(&mut out, "d").map_err(write_failed)?;
            rmp::encode::write_bool(&mut out, true).map_err(write_failed)?;
        }
        Ok(self.buf.split().freeze())
    }
}

/// `plain` as it goes on the wire: LZ4-compressed when `compress_above` is set, `plain`
/// is longer than it, and compression makes it shorter.
pub(crate) fn compress_above_limit(plain: Bytes, compress_above: Option<usize>) -> Bytes {
    match compress_above {
        Some(limit) if plain.len() > limit => compress(&plain).unwrap_or(plain),
        _ => plain,
    }
}

/// An envelope read in place from its payload.
#[derive(Debug, PartialEq)]
pub(crate) struct EnvelopeView<'a> {
    /// The sending network's id.
    pub(crate) network: Cow<'a, str>,
    /// The sending instance's id.
    pub(crate) instance: Cow<'a, str>,
    /// The sender's sequence number of the first message.
    pub(crate) seq: u64,
    /// The message, or the batch numbered `seq`, `seq + 1`, ...
    pub(crate) messages: Body,
    /// Where the target's outputs go back to.
    pub(crate) reply_to: Option<Cow<'a, str>>,
    /// Every number of the sender's below this one was delivered.
    pub(crate) acked_below: Option<u64>,
    /// Sent again: an earlier copy may have been handled (key `d`).
    pub(crate) redelivered: bool,
    /// The id of a confirmed send, the same on every retry of it (key `k`).
    pub(crate) key: Option<Cow<'a, str>>,
    /// The first number of this start of the sender (key `e`).
    pub(crate) epoch: Option<u64>,
}

/// What an envelope carries: one message (`m`) or a batch (`b`).
#[derive(Debug, PartialEq)]
pub(crate) enum Body {
    One(Message),
    Many(Vec<Message>),
}

impl Body {
    /// How many messages, and so sequence numbers, the envelope holds.
    pub(crate) fn len(&self) -> usize {
        match self {
            Body::One(_) => 1,
            Body::Many(messages) => messages.len(),
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::Many(Vec::new())
    }
}

impl IntoIterator for Body {
    type Item = Message;
    type IntoIter = BodyIter;

    fn into_iter(self) -> BodyIter {
        match self {
            Body::One(message) => BodyIter::One(Some(message)),
            Body::Many(messages) => BodyIter::Many(messages.into_iter()),
        }
    }
}

/// The messages of a [`Body`], in sequence order.
pub(crate) enum BodyIter {
    One(Option<Message>),
    Many(std::vec::IntoIter<Message>),
}

impl Iterator for BodyIter {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        match self {
            BodyIter::One(message) => message.take(),
            BodyIter::Many(messages) => messages.next(),
        }
    }
}

/// The envelope bytes of `payload`: itself, or decompressed.
pub(crate) fn plain(payload: &Bytes) -> Result<Cow<'_, Bytes>> {
    match payload.first() {
        Some(&COMPRESSED_MARKER) => {
            let plain = lz4_flex::decompress_size_prepended(&payload[1..])
                .map_err(|e| Error::encoding(format!("compressed envelope is corrupt: {e}")))?;
            Ok(Cow::Owned(Bytes::from(plain)))
        }
        Some(_) => Ok(Cow::Borrowed(payload)),
        None => Err(Error::encoding("empty payload is not an envelope")),
    }
}

/// The envelope bytes of `payload`, as [`plain`], refusing a compressed payload that
/// claims more than `limit` bytes decompressed before anything is allocated for it.
pub(crate) fn plain_bounded(payload: &Bytes, limit: usize) -> Result<Bytes> {
    if payload.first() == Some(&COMPRESSED_MARKER) {
        let claimed = payload
            .get(1..5)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| Error::encoding("compressed envelope is corrupt: no size"))?;
        if claimed > limit {
            return Err(Error::new(
                crate::error::ErrorKind::PayloadTooLarge,
                format!(
                    "a compressed payload of {} bytes claims {claimed} bytes decompressed; \
                     at most {limit} are taken (8 times the server's max_payload)",
                    payload.len()
                ),
            ));
        }
    }
    Ok(plain(payload)?.into_owned())
}

impl<'a> EnvelopeView<'a> {
    /// Reads the envelope in `plain` (see [`plain`]), accepting and refusing exactly what
    /// [`Envelope::decode`] does.
    pub(crate) fn read(plain: &'a Bytes) -> Result<Self> {
        let view = match Self::read_map(plain) {
            Some(view) => view,
            // Not the layout this crate writes (an array, say): the general decoder
            // accepts every form serde does, and names what is wrong.
            None => EnvelopeView::from(WireEnvelope::decode(plain)?),
        };
        Ok(view)
    }

    /// The fast reading of the map this crate writes; `None` on anything else.
    fn read_map(plain: &'a Bytes) -> Option<Self> {
        let mut rest: &'a [u8] = plain;
        let fields = rmp::decode::read_map_len(&mut rest).ok()?;
        let (mut version, mut network, mut instance, mut seq) = (None, None, None, None);
        let (mut messages, mut reply_to, mut seen_reply) = (None, None, false);
        let mut acked_below = None;
        let (mut redelivered, mut id, mut epoch) = (None, None, None);
        for _ in 0..fields {
            let (key, after) = rmp::decode::read_str_from_slice(rest).ok()?;
            rest = after;
            // A repeated field is an error for serde; the general road reports it.
            let fresh = |field: bool| (!field).then_some(());
            match key {
                "v" => {
                    fresh(version.is_some())?;
                    version = Some(rmp::decode::read_int::<u8, _>(&mut rest).ok()?);
                }
                "n" => {
                    fresh(network.is_some())?;
                    network = Some(read_str(&mut rest)?);
                }
                "i" => {
                    fresh(instance.is_some())?;
                    instance = Some(read_str(&mut rest)?);
                }
                "s" => {
                    fresh(seq.is_some())?;
                    seq = Some(rmp::decode::read_int::<u64, _>(&mut rest).ok()?);
                }
                "m" => {
                    fresh(messages.is_some())?;
                    messages = Some(Body::One(read_message(plain, &mut rest)?));
                }
                "b" => {
                    fresh(messages.is_some())?;
                    let len = rmp::decode::read_array_len(&mut rest).ok()?;
                    if len == 0 {
                        return None;
                    }
                    let mut batch = Vec::with_capacity(len.min(4096) as usize);
                    for _ in 0..len {
                        batch.push(read_message(plain, &mut rest)?);
                    }
                    messages = Some(Body::Many(batch));
                }
                "a" => {
                    fresh(acked_below.is_some())?;
                    acked_below = Some(rmp::decode::read_int::<u64, _>(&mut rest).ok()?);
                }
                "d" => {
                    fresh(redelivered.is_some())?;
                    redelivered = Some(rmp::decode::read_bool(&mut rest).ok()?);
                }
                "k" => {
                    fresh(id.is_some())?;
                    id = Some(read_str(&mut rest)?);
                }
                "e" => {
                    fresh(epoch.is_some())?;
                    epoch = Some(rmp::decode::read_int::<u64, _>(&mut rest).ok()?);
                }
                "r" => {
                    fresh(seen_reply)?;
                    seen_reply = true;
                    if rest.first() == Some(&0xc0) {
                        rest = &rest[1..];
                    } else {
                        reply_to = Some(read_str(&mut rest)?);
                    }
                }
                _ => return None,
            }
        }
        if !rest.is_empty() || !(1..=WIRE_VERSION).contains(&version?) {
            return None;
        }
        Some(EnvelopeView {
            network: Cow::Borrowed(network?),
            instance: Cow::Borrowed(instance?),
            seq: seq?,
            messages: messages?,
            reply_to: reply_to.map(Cow::Borrowed),
            acked_below,
            redelivered: redelivered.unwrap_or(false),
            key: id.map(Cow::Borrowed),
            epoch,
        })
    }
}

impl From<Envelope> for EnvelopeView<'static> {
    fn from(envelope: Envelope) -> Self {
        EnvelopeView::from(WireEnvelope::from(envelope))
    }
}

impl From<WireEnvelope> for EnvelopeView<'static> {
    fn from(envelope: WireEnvelope) -> Self {
        EnvelopeView {
            network: Cow::Owned(envelope.network),
            instance: Cow::Owned(envelope.instance),
            seq: envelope.seq,
            messages: envelope.messages,
            reply_to: envelope.reply_to.map(Cow::Owned),
            acked_below: envelope.acked_below,
            redelivered: envelope.redelivered,
            key: envelope.key.map(Cow::Owned),
            epoch: envelope.epoch,
        }
    }
}

fn read_str<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    let (text, after) = rmp::decode::read_str_from_slice(*rest).ok()?;
    *rest = after;
    Some(text)
}

/// Reads the message at the front of `rest`. `{"Bytes": bin}` shares `plain`'s buffer;
/// everything else goes through serde.
fn read_message(plain: &Bytes, rest: &mut &[u8]) -> Option<Message> {
    const BYTES_VARIANT: &[u8] = b"\x81\xa5Bytes";
    if let Some(after) = rest.strip_prefix(BYTES_VARIANT)
        && matches!(after.first(), Some(0xc4..=0xc6))
    {
        let mut body = after;
        let len = rmp::decode::read_bin_len(&mut body).ok()? as usize;
        let bin = body.get(..len)?;
        *rest = &body[len..];
        return Some(Message::Bytes(plain.slice_ref(bin)));
    }
    let mut de = rmp_serde::Deserializer::new(Cursor::new(*rest));
    let message = Message::deserialize(&mut de).ok()?;
    let used = usize::try_from(de.position()).ok()?;
    *rest = &rest[used..];
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn messages() -> Vec<Message> {
        vec![
            Message::Flow,
            Message::Boolean(false),
            Message::Integer(-300),
            Message::Float(0.25),
            Message::from("text"),
            Message::Bytes(Bytes::from(vec![7u8; 300])),
            Message::Bytes(Bytes::from(vec![1u8; 70_000])),
            Message::Object(serde_json::json!({"a": [1, {"b": null}]})),
            Message::Array(vec![
                Message::Bytes(Bytes::from_static(b"x")),
                Message::Flow,
            ]),
            Message::error("boom"),
        ]
    }

    fn envelope(seq: u64, message: Message, reply_to: Option<&str>) -> Envelope {
        let mut env = Envelope::new("prod.ml", "i-1", seq, message);
        env.reply_to = reply_to.map(str::to_string);
        env
    }

    /// What the writer writes: a streamed envelope, which tells its floor.
    fn streamed(seq: u64, message: Message, reply_to: Option<&str>) -> Envelope {
        let mut env = envelope(seq, message, reply_to);
        env.acked_below = Some(seq / 2);
        env
    }

    #[test]
    fn the_writer_writes_the_bytes_envelope_encode_writes() {
        let mut writer = EnvelopeWriter::new("prod.ml", "i-1");
        for (i, message) in messages().into_iter().enumerate() {
            for seq in [0, 1, 200, 70_000, u64::MAX - i as u64] {
                for reply_to in [None, Some("_reflow.a.b.ret.7")] {
                    for limit in [None, Some(64)] {
                        let expected = streamed(seq, message.clone(), reply_to).encode(limit);
                        let written = writer.encode(seq, seq / 2, &message, reply_to, limit);
                        assert_eq!(written.unwrap(), expected.unwrap(), "{message:?} {seq}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_view_reads_what_envelope_decode_reads() {
        for message in messages() {
            for reply_to in [None, Some("_reflow.a.b.ret.7")] {
                let env = envelope(42, message.clone(), reply_to);
                for limit in [None, Some(64)] {
                    let payload = env.encode(limit).unwrap();
                    let plain = plain(&payload).unwrap();
                    let view = EnvelopeView::read(&plain).unwrap();
                    assert_eq!(view, EnvelopeView::from(env.clone()));
                }
            }
        }
    }

    #[test]
    fn a_bytes_message_shares_the_payload_buffer() {
        let payload = envelope(1, Message::Bytes(Bytes::from(vec![9u8; 64])), None)
            .encode(None)
            .unwrap();
        let view = EnvelopeView::read(&payload).unwrap();
        let Body::One(Message::Bytes(bytes)) = view.messages else {
            panic!("a bytes message");
        };
        let inside = payload.as_ptr_range();
        assert!(inside.contains(&bytes.as_ptr()));
    }

    #[test]
    fn envelopes_in_array_form_and_bad_versions_take_the_general_road() {
        let env = envelope(3, Message::Integer(1), Some("r"));
        let array = Bytes::from(rmp_serde::to_vec(&env).unwrap());
        assert_eq!(
            EnvelopeView::read(&array).unwrap(),
            EnvelopeView::from(env.clone())
        );
        let mut newer = env;
        newer.version = WIRE_VERSION + 1;
        let newer = Bytes::from(rmp_serde::to_vec_named(&newer).unwrap());
        let err = EnvelopeView::read(&newer).unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
    }

    #[test]
    fn a_batch_reads_back_as_its_messages_numbered_from_its_first() {
        let mut writer = EnvelopeWriter::new("prod.ml", "i-1");
        let batch = messages();
        for reply_to in [None, Some("_reflow.a.b.ret.7")] {
            for limit in [None, Some(64)] {
                let payload = writer
                    .encode_batch(40, 31, &batch, reply_to, false)
                    .map(|plain| compress_above_limit(plain, limit))
                    .unwrap();
                let plain = plain(&payload).unwrap();
                let view = EnvelopeView::read(&plain).unwrap();
                assert_eq!(view.seq, 40);
                assert_eq!(view.acked_below, Some(31));
                assert_eq!(view.reply_to.as_deref(), reply_to);
                assert_eq!(view.messages, Body::Many(batch.clone()));
                let all = Envelope::decode_all(&payload).unwrap();
                assert_eq!(all.len(), batch.len());
                for (k, (env, message)) in all.iter().zip(&batch).enumerate() {
                    assert_eq!(env.seq, 40 + k as u64);
                    assert_eq!(&env.message, message);
                    assert_eq!(env.reply_to.as_deref(), reply_to);
                    assert_eq!(env.acked_below, Some(31));
                    assert_eq!((&*env.network, &*env.instance), ("prod.ml", "i-1"));
                }
                let err = Envelope::decode(&payload).unwrap_err();
                assert!(err.to_string().contains("batch of 10 messages"), "{err}");
            }
        }
    }

    #[test]
    fn a_batch_of_one_is_the_plain_envelope() {
        let mut writer = EnvelopeWriter::new("prod.ml", "i-1");
        let one = writer
            .encode_batch(9, 4, &[Message::Integer(3)], None, false)
            .unwrap();
        let plain_env = streamed(9, Message::Integer(3), None).encode(None).unwrap();
        assert_eq!(one, plain_env);
        assert!(writer.encode_batch(9, 4, &[], None, false).is_err());
    }

    #[test]
    fn an_envelope_sent_again_says_so_and_a_confirmed_one_carries_its_id() {
        let mut writer = EnvelopeWriter::new("prod.ml", "i-1");
        let again = writer
            .encode_batch(
                9,
                4,
                &[Message::Integer(3), Message::Flow],
                Some("r.x"),
                true,
            )
            .unwrap();
        let view = EnvelopeView::read(&again).unwrap();
        assert!(view.redelivered);
        assert_eq!(view.messages.len(), 2);
        let general = EnvelopeView::from(WireEnvelope::decode(&again).unwrap());
        assert!(general.redelivered, "the general reader agrees");
        let first = writer
            .encode_batch(9, 4, &[Message::Flow], None, false)
            .unwrap();
        assert!(!EnvelopeView::read(&first).unwrap().redelivered);

        let confirmed = crate::message::EnvelopeRef {
            version: crate::message::WIRE_VERSION,
            network: "a",
            instance: "i",
            seq: 1,
            message: &Message::Flow,
            reply_to: None,
            acked_below: None,
            key: Some("order-17"),
        }
        .encode(None)
        .unwrap();
        let view = EnvelopeView::read(&confirmed).unwrap();
        assert_eq!(view.key.as_deref(), Some("order-17"));

        let mut writer = EnvelopeWriter::with_epoch("prod.ml", "i-1", Some(1_700_000));
        let plain = writer
            .encode_batch(9, 4, &[Message::Flow], Some("r"), true)
            .unwrap();
        let view = EnvelopeView::read(&plain).unwrap();
        assert_eq!(
            (view.epoch, view.seq, view.redelivered),
            (Some(1_700_000), 9, true)
        );
        let general = EnvelopeView::from(WireEnvelope::decode(&plain).unwrap());
        assert_eq!(general.epoch, Some(1_700_000));
    }

    #[test]
    fn envelopes_with_no_message_an_empty_batch_or_both_are_refused_by_name() {
        let head = serde_json::json!({"v": 1, "n": "a", "i": "x", "s": 1});
        let with = |extra: serde_json::Value| {
            let mut map = head.clone();
            map.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            Bytes::from(rmp_serde::to_vec_named(&map).unwrap())
        };
        let cases = [
            (serde_json::json!({}), "needs `m` or `b`"),
            (serde_json::json!({"b": []}), "batch `b` is empty"),
            (
                serde_json::json!({"m": {"Integer": 1}, "b": [{"Integer": 2}]}),
                "both `m` and `b`",
            ),
        ];
        for (extra, expected) in cases {
            let payload = with(extra);
            let err = EnvelopeView::read(&payload).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
            let err = Envelope::decode_all(&payload).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
        // The same keys in a well-formed batch read fine, through both readers.
        let good = with(serde_json::json!({"b": [{"Integer": 1}, {"Integer": 2}]}));
        assert_eq!(EnvelopeView::read(&good).unwrap().messages.len(), 2);
        assert_eq!(Envelope::decode_all(&good).unwrap()[1].seq, 2);
    }

    proptest! {
        #[test]
        fn any_batch_is_read_as_the_general_code_reads_it(
            batch in prop::collection::vec(crate::message::tests::message(), 1..6),
            seq in 0u64..u64::MAX / 2,
            reply_to in prop::option::of("[a-z._]{0,40}"),
            limit in prop::option::of(0usize..256),
        ) {
            let mut writer = EnvelopeWriter::new("prod.ml", "i-1");
            let written = compress_above_limit(writer.encode_batch(seq, seq / 2, &batch, reply_to.as_deref(), false).unwrap(), limit);
            let plain = plain(&written).unwrap();
            let view = format!("{:?}", EnvelopeView::read(&plain).unwrap());
            let general = format!("{:?}", EnvelopeView::from(WireEnvelope::decode(&written).unwrap()));
            prop_assert_eq!(view, general);
            let all = Envelope::decode_all(&written).unwrap();
            prop_assert_eq!(all.len(), batch.len());
            prop_assert_eq!(all.last().unwrap().seq, seq + batch.len() as u64 - 1);
        }

        #[test]
        fn any_envelope_is_written_and_read_as_the_general_code_does(
            message in crate::message::tests::message(),
            seq in any::<u64>(),
            reply_to in prop::option::of("[a-z._]{0,40}"),
            limit in prop::option::of(0usize..256),
        ) {
            let env = streamed(seq, message.clone(), reply_to.as_deref());
            let expected = env.encode(limit).unwrap();
            let mut writer = EnvelopeWriter::new("prod.ml", "i-1");
            let written = writer.encode(seq, seq / 2, &message, reply_to.as_deref(), limit).unwrap();
            prop_assert_eq!(&written, &expected);
            let plain = plain(&written).unwrap();
            let view = format!("{:?}", EnvelopeView::read(&plain).unwrap());
            let general = format!("{:?}", EnvelopeView::from(Envelope::decode(&expected).unwrap()));
            prop_assert_eq!(view, general);
        }

        #[test]
        fn arbitrary_bytes_read_as_envelope_decode_reads_them(
            bytes in prop::collection::vec(any::<u8>(), 0..256)
        ) {
            let payload = Bytes::from(bytes);
            let fast = plain(&payload).and_then(|p| EnvelopeView::read(&p).map(|v| format!("{v:?}")));
            let general = WireEnvelope::decode(&payload).map(|e| format!("{:?}", EnvelopeView::from(e)));
            prop_assert_eq!(fast.is_ok(), general.is_ok());
            if let (Ok(fast), Ok(general)) = (fast, general) {
                prop_assert_eq!(fast, general);
            }
        }
    }
}
