//! The frames of the direct link, and how they are cut out of a byte stream.
//!
//! On the wire a frame is a 4-byte big-endian length followed by that many bytes of
//! MessagePack: a map whose `"t"` key names the frame kind and whose other keys are the
//! frame's fields (`rmp_serde::to_vec_named`, so a client in another language reads it
//! without knowing Rust's field order). Byte fields travel as MessagePack `bin`.
//! `docs/wire.md` ("Direct link") describes every frame.
//!
//! [`FrameCodec`] checks the length prefix against the configured maximum *before* it
//! reserves a single byte for the body, so a peer that announces a 4 GiB frame costs four
//! bytes of memory and gets a clear refusal.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder};

use super::body::decode_body;

/// The version of the direct-link protocol this build speaks. Both ends must speak the same.
pub const PROTOCOL_VERSION: u16 = 1;

/// The largest frame body accepted unless configured otherwise: 8 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 8 * 1024 * 1024;

/// Bytes of the length prefix in front of every frame body.
pub const LENGTH_PREFIX: usize = 4;

/// One unit of the direct-link protocol.
///
/// The handshake is `Challenge` (listener), `Hello` (dialler), `Welcome` (listener); either
/// side may answer with `Refuse` instead and close. After it, both sides send `Message`,
/// `Request`/`Reply`, `Ping`/`Pong` and finally `Goodbye`.
///
/// Encoding uses serde's derive; decoding is written by hand (see `body.rs`) to read the
/// map in one pass, but accepts exactly what the derive writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "t")]
pub enum Frame {
    /// Sent by the listener as soon as it accepts a connection.
    Challenge {
        /// The listener's protocol version.
        v: u16,
        /// Random bytes the dialler must fold into its token proof.
        nonce: Bytes,
        /// The listener's network id.
        network: String,
        /// The listener's instance id.
        instance: String,
    },
    /// The dialler's answer to a [`Frame::Challenge`].
    Hello {
        /// The dialler's protocol version.
        v: u16,
        /// The dialler's network id.
        network: String,
        /// The dialler's instance id.
        instance: String,
        /// Where the dialler itself can be reached, if it listens.
        endpoint: Option<String>,
        /// HMAC-SHA256(token, challenge nonce ‖ network ‖ instance), when a token is set.
        proof: Option<Bytes>,
        /// Random bytes the listener must fold into its own proof (mutual authentication).
        nonce: Bytes,
    },
    /// The listener accepts the link.
    Welcome {
        /// The listener's network id.
        network: String,
        /// The listener's instance id.
        instance: String,
        /// Where the listener can be reached.
        endpoint: Option<String>,
        /// HMAC-SHA256(token, hello nonce ‖ network ‖ instance), when a token is set.
        proof: Option<Bytes>,
    },
    /// The sender will not go on with this connection; it closes after this frame.
    Refuse {
        /// What kind of refusal this is (see [`RefuseCode`](super::RefuseCode)).
        reason_code: u16,
        /// Why, in words.
        reason: String,
    },
    /// A streamed message on `subject`: no answer is expected.
    Message {
        /// The subject it is published on.
        subject: String,
        /// The bytes it carries.
        payload: Bytes,
    },
    /// A message that expects exactly one [`Frame::Reply`] with the same `id`.
    Request {
        /// Chosen by the sender, unique among its open requests on this link.
        id: u64,
        /// The subject it is sent on.
        subject: String,
        /// The bytes it carries.
        payload: Bytes,
    },
    /// The answer to the [`Frame::Request`] with the same `id`.
    Reply {
        /// The request's id.
        id: u64,
        /// The answer (empty when `error` is set).
        payload: Bytes,
        /// Why the request could not be answered, if it could not.
        error: Option<String>,
    },
    /// Asks the peer to answer with a [`Frame::Pong`] of the same `id`.
    Ping {
        /// Chosen by the sender.
        id: u64,
    },
    /// The answer to a [`Frame::Ping`].
    Pong {
        /// The ping's id.
        id: u64,
    },
    /// The sender is closing the link on purpose.
    Goodbye {
        /// Why, in words.
        reason: String,
    },
}

impl Frame {
    /// The frame kind as it appears in the `"t"` key.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Challenge { .. } => "Challenge",
            Frame::Hello { .. } => "Hello",
            Frame::Welcome { .. } => "Welcome",
            Frame::Refuse { .. } => "Refuse",
            Frame::Message { .. } => "Message",
            Frame::Request { .. } => "Request",
            Frame::Reply { .. } => "Reply",
            Frame::Ping { .. } => "Ping",
            Frame::Pong { .. } => "Pong",
            Frame::Goodbye { .. } => "Goodbye",
        }
    }
}

/// Why bytes from a peer could not be turned into a [`Frame`].
#[derive(Debug)]
pub enum FrameError {
    /// The length prefix announces a body larger than the limit; nothing was allocated.
    TooLarge {
        /// The announced body length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The body is not a frame; the text says what failed to decode.
    Malformed(String),
    /// Reading from or writing to the socket failed.
    Io(std::io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => write!(
                f,
                "frame of {len} bytes is larger than the maximum of {max} bytes"
            ),
            FrameError::Malformed(what) => write!(f, "malformed frame: {what}"),
            FrameError::Io(err) => write!(f, "connection failed: {err}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<std::io::Error> for FrameError {
    fn from(err: std::io::Error) -> Self {
        FrameError::Io(err)
    }
}

/// Cuts length-prefixed frames out of a byte stream and writes them back.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_size: usize,
    decoded_bytes: u64,
}

impl FrameCodec {
    /// A codec that refuses frame bodies longer than `max_frame_size` bytes.
    pub fn new(max_frame_size: usize) -> Self {
        FrameCodec {
            max_frame_size,
            decoded_bytes: 0,
        }
    }

    /// The largest body this codec accepts.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Bytes of every whole frame cut out so far, length prefixes included.
    pub fn decoded_bytes(&self) -> u64 {
        self.decoded_bytes
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(prefix) = src.get(..LENGTH_PREFIX) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(prefix.try_into().expect("four bytes")) as usize;
        if len > self.max_frame_size {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_size,
            });
        }
        if src.len() < LENGTH_PREFIX + len {
            src.reserve(LENGTH_PREFIX + len - src.len());
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX);
        let body = src.split_to(len).freeze();
        self.decoded_bytes += (LENGTH_PREFIX + len) as u64;
        decode_body(&body).map(Some).map_err(FrameError::Malformed)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode_frame(frame, dst)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode_frame(&frame, dst)
    }
}

/// Appends `frame`, length prefix included, to `dst`.
///
/// The body is written in place behind a placeholder prefix, which is then filled in, so a
/// batch of frames costs no allocation beyond `dst` growing.
pub fn encode_frame(frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
    let start = dst.len();
    dst.put_u32(0);
    let mut writer = dst.writer();
    if let Err(err) = rmp_serde::encode::write_named(&mut writer, frame) {
        dst.truncate(start);
        return Err(FrameError::Malformed(format!(
            "{} frame could not be encoded: {err}",
            frame.kind()
        )));
    }
    let len = dst.len() - start - LENGTH_PREFIX;
    let len = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        len,
        max: u32::MAX as usize,
    })?;
    dst[start..start + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// One frame, length prefix included, as bytes.
pub fn encode_to_bytes(frame: &Frame) -> Result<Bytes, FrameError> {
    let mut buf = BytesMut::with_capacity(64);
    encode_frame(frame, &mut buf)?;
    Ok(buf.freeze())
}

/// Decodes every whole frame in `data` with the default limit, stopping at the first error
/// or at an incomplete tail, and returns how many frames it read.
///
/// This is the entry point of the `frame_decode` fuzz target: whatever `data` holds, it
/// must neither panic nor allocate more than the limit allows.
pub fn decode_frames_for_fuzzing(data: &[u8]) -> usize {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::from(data);
    let mut frames = 0;
    while let Ok(Some(_)) = codec.decode(&mut buf) {
        frames += 1;
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<Frame>, FrameError> {
        let mut codec = FrameCodec::new(max);
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(&mut buf)? {
            frames.push(frame);
        }
        Ok(frames)
    }

    fn sample_frames() -> Vec<Frame> {
        vec![
            Frame::Challenge {
                v: PROTOCOL_VERSION,
                nonce: Bytes::from_static(&[1, 2, 3]),
                network: "prod.ml".into(),
                instance: "i-1".into(),
            },
            Frame::Hello {
                v: PROTOCOL_VERSION,
                network: "edge".into(),
                instance: "e-7".into(),
                endpoint: Some("10.0.0.2:7000".into()),
                proof: Some(Bytes::from_static(&[9; 32])),
                nonce: Bytes::from_static(&[4; 32]),
            },
            Frame::Welcome {
                network: "prod.ml".into(),
                instance: "i-1".into(),
                endpoint: None,
                proof: None,
            },
            Frame::Refuse {
                reason_code: 3,
                reason: "Refused: max connections reached (1)".into(),
            },
            Frame::Message {
                subject: "edge.sum.in".into(),
                payload: Bytes::from_static(b"payload"),
            },
            Frame::Request {
                id: u64::MAX,
                subject: "edge.sum.in".into(),
                payload: Bytes::new(),
            },
            Frame::Reply {
                id: 7,
                payload: Bytes::new(),
                error: Some("no such actor".into()),
            },
            Frame::Ping { id: 1 },
            Frame::Pong { id: 1 },
            Frame::Goodbye {
                reason: "shutting down".into(),
            },
        ]
    }

    #[test]
    fn every_frame_kind_survives_a_round_trip_in_one_stream() {
        let mut buf = BytesMut::new();
        for frame in sample_frames() {
            encode_frame(&frame, &mut buf).unwrap();
        }
        assert_eq!(
            decode_all(&buf, DEFAULT_MAX_FRAME_SIZE).unwrap(),
            sample_frames()
        );
    }

    #[test]
    fn a_body_is_a_named_map_with_its_kind_under_t_and_bytes_as_bin() {
        let bytes = encode_to_bytes(&Frame::Message {
            subject: "a.b.c".into(),
            payload: Bytes::from_static(&[0xff, 0x00]),
        })
        .unwrap();
        let body = &bytes[LENGTH_PREFIX..];
        assert_eq!(
            u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize,
            body.len()
        );
        // fixmap of 3 entries, then fixstr "t", fixstr "Message".
        assert_eq!(body[0], 0x83);
        assert_eq!(&body[1..3], &[0xa1, b't']);
        assert_eq!(&body[3..11], b"\xa7Message");
        // The payload is `bin 8` (0xc4) of length 2, never an array of integers.
        assert!(body.windows(4).any(|w| w == [0xc4, 2, 0xff, 0x00]));
    }

    /// The two examples in `docs/wire.md`, byte for byte.
    #[test]
    fn the_documented_examples_encode_to_the_documented_bytes() {
        let hex = |frame: &Frame| {
            let bytes = encode_to_bytes(frame).unwrap();
            bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            hex(&Frame::Ping { id: 1 }),
            "00 00 00 0c 82 a1 74 a4 50 69 6e 67 a2 69 64 01"
        );
        let message = Frame::Message {
            subject: "a.b.c".into(),
            payload: Bytes::from_static(b"hi"),
        };
        assert_eq!(
            hex(&message),
            "00 00 00 25 83 a1 74 a7 4d 65 73 73 61 67 65 a7 73 75 62 6a 65 63 74 \
             a5 61 2e 62 2e 63 a7 70 61 79 6c 6f 61 64 c4 02 68 69"
        );
    }

    #[test]
    fn an_oversize_prefix_is_refused_before_the_body_arrives() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            FrameError::TooLarge {
                len: 0xffff_ffff,
                max: 1024
            }
        ));
        assert_eq!(
            err.to_string(),
            "frame of 4294967295 bytes is larger than the maximum of 1024 bytes"
        );
        assert!(buf.capacity() < 1024, "nothing reserved for the body");
    }

    #[test]
    fn a_partial_frame_waits_for_more_bytes() {
        let whole = encode_to_bytes(&Frame::Ping { id: 42 }).unwrap();
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        for (i, byte) in whole.iter().enumerate() {
            buf.put_u8(*byte);
            let got = codec.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == whole.len() - 1);
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn a_malformed_body_names_what_failed_to_decode() {
        let err = decode_all(&[0, 0, 0, 2, 0xc1, 0xc1], 64).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)));
        assert!(err.to_string().starts_with("malformed frame: "), "{err}");

        let unknown = rmp_serde::to_vec_named(&serde_json::json!({"t": "Shout"})).unwrap();
        let mut framed = (unknown.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&unknown);
        let err = decode_all(&framed, 64).unwrap_err();
        assert!(err.to_string().contains("Shout"), "{err}");
    }

    #[test]
    fn the_fuzz_entry_point_counts_whole_frames() {
        let mut buf = BytesMut::new();
        for frame in sample_frames() {
            encode_frame(&frame, &mut buf).unwrap();
        }
        buf.extend_from_slice(&[0, 0]);
        assert_eq!(decode_frames_for_fuzzing(&buf), sample_frames().len());
    }

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..48).prop_map(Bytes::from)
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let text = || ".{0,24}";
        prop_oneof![
            (any::<u16>(), arb_bytes(), text(), text()).prop_map(
                |(v, nonce, network, instance)| {
                    Frame::Challenge {
                        v,
                        nonce,
                        network,
                        instance,
                    }
                }
            ),
            (
                any::<u16>(),
                text(),
                text(),
                proptest::option::of(text()),
                proptest::option::of(arb_bytes()),
                arb_bytes()
            )
                .prop_map(|(v, network, instance, endpoint, proof, nonce)| {
                    Frame::Hello {
                        v,
                        network,
                        instance,
                        endpoint,
                        proof,
                        nonce,
                    }
                }),
            (
                text(),
                text(),
                proptest::option::of(text()),
                proptest::option::of(arb_bytes())
            )
                .prop_map(|(network, instance, endpoint, proof)| Frame::Welcome {
                    network,
                    instance,
                    endpoint,
                    proof
                }),
            (any::<u16>(), text()).prop_map(|(reason_code, reason)| Frame::Refuse {
                reason_code,
                reason
            }),
            (text(), arb_bytes())
                .prop_map(|(subject, payload)| Frame::Message { subject, payload }),
            (any::<u64>(), text(), arb_bytes()).prop_map(|(id, subject, payload)| Frame::Request {
                id,
                subject,
                payload
            }),
            (any::<u64>(), arb_bytes(), proptest::option::of(text()))
                .prop_map(|(id, payload, error)| Frame::Reply { id, payload, error }),
            any::<u64>().prop_map(|id| Frame::Ping { id }),
            any::<u64>().prop_map(|id| Frame::Pong { id }),
            text().prop_map(|reason| Frame::Goodbye { reason }),
        ]
    }

    /// Arbitrary bytes, half of them behind a length prefix that fits, so that the body
    /// decoder is exercised and not only the prefix check.
    fn arb_stream() -> impl Strategy<Value = Vec<u8>> {
        let body = proptest::collection::vec(any::<u8>(), 0..40);
        prop_oneof![
            body.clone(),
            body.prop_map(|body| {
                let mut framed = (body.len() as u32).to_be_bytes().to_vec();
                framed.extend_from_slice(&body);
                framed
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 100_000, ..ProptestConfig::default() })]

        #[test]
        fn the_decoder_never_panics_on_arbitrary_bytes(bytes in arb_stream()) {
            let _ = decode_all(&bytes, 1024);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_frames_survive_a_round_trip(frames in proptest::collection::vec(arb_frame(), 1..4)) {
            let mut buf = BytesMut::new();
            for frame in &frames {
                encode_frame(frame, &mut buf).unwrap();
            }
            prop_assert_eq!(decode_all(&buf, DEFAULT_MAX_FRAME_SIZE).unwrap(), frames);
        }
    }
}
