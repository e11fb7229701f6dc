//! Sealed payloads: what proves that a sender holds the network's `auth_token`, and what
//! the proof is for.
//!
//! A network with an auth token seals every envelope, acknowledgement and control request
//! it sends, and takes only sealed ones whose seal checks out: a client that never proved
//! the token cannot put a message into its actors, whatever sender it names. The seal is
//! an HMAC-SHA256 tag, under a key derived from the token, over what the payload is for
//! and the payload itself: the [`Purpose`] (data, confirmed send, returned output,
//! acknowledgement, control), the subject it is bound to (which names the target network,
//! and the actor and port or the verb), the time it was sealed, and the payload as it
//! would go unsealed (plain or compressed). So a sealed payload captured on one subject,
//! or as one kind of message, is refused on any other, and one captured long ago is
//! refused as stale (see [`crate::bridge`]'s gate).
//!
//! On the wire a sealed payload is a three-element MessagePack array,
//! `[tag: bin 32, sealed_at_ms: uint 64, payload: bin]`, which no envelope can be: an
//! envelope is a map (or, written by a general encoder, an array of at least six
//! fields). See `docs/wire.md`, "Sealed payloads".

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{KeyInit, Mac};

use crate::error::{Error, ErrorKind, Result};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The first byte of a sealed payload: a MessagePack array of three.
const SEALED: u8 = 0x93;

/// The first byte of a payload sealed by an older version: an array of two, with no
/// subject, purpose or time under the tag.
const SEALED_V1: u8 = 0x92;

/// Bytes of the tag.
const TAG: usize = 32;

/// What the MAC input opens with, so a tag of this kind is never one of another.
const DOMAIN: &[u8] = b"reflow-seal-v2\0";

/// What a sealed payload is for: part of what the seal covers, so a payload sealed for
/// one purpose is refused as any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A streamed envelope for an actor's in-port.
    Data,
    /// A confirmed send: an envelope that asks for an answer.
    Confirmed,
    /// An actor's output returned to a proxy.
    Return,
    /// An acknowledgement of streamed envelopes.
    Ack,
    /// A control request or notice (attach, detach, connect, disconnect).
    Control,
    /// A message (or entry) stored in a durable network's stream.
    Stored,
}

impl Purpose {
    fn byte(self) -> u8 {
        match self {
            Purpose::Data => 1,
            Purpose::Confirmed => 2,
            Purpose::Return => 3,
            Purpose::Ack => 4,
            Purpose::Control => 5,
            Purpose::Stored => 6,
        }
    }

    /// The purpose's name, for errors.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Purpose::Data => "streamed envelope",
            Purpose::Confirmed => "confirmed send",
            Purpose::Return => "returned output",
            Purpose::Ack => "acknowledgement",
            Purpose::Control => "control request",
            Purpose::Stored => "stored message",
        }
    }
}

/// The key payloads are sealed with, derived from an auth token.
#[derive(Clone)]
pub(crate) struct SealKey([u8; 32]);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// The key for `token`: `HMAC-SHA256(token, "reflow-seal-v1")`.
    pub(crate) fn from_token(token: &str) -> Self {
        let mut mac = HmacSha256::new_from_slice(token.as_bytes()).expect("HMAC takes any key");
        mac.update(b"reflow-seal-v1");
        SealKey(mac.finalize().into_bytes().into())
    }

    /// The MAC over what the seal binds, up to (not including) the payload.
    fn mac(&self, purpose: Purpose, subject: &str, sealed_at_ms: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(DOMAIN);
        mac.update(&[purpose.byte()]);
        mac.update(&(subject.len() as u32).to_be_bytes());
        mac.update(subject.as_bytes());
        mac.update(&sealed_at_ms.to_be_bytes());
        mac
    }

    /// `payload`, sealed for `purpose` on `subject` at `sealed_at_ms` (milliseconds
    /// since the Unix epoch).
    pub(crate) fn seal(
        &self,
        purpose: Purpose,
        subject: &str,
        sealed_at_ms: u64,
        payload: &[u8],
    ) -> Bytes {
        let mut mac = self.mac(purpose, subject, sealed_at_ms);
        mac.update(payload);
        let tag = mac.finalize().into_bytes();
        let mut out = BytesMut::with_capacity(payload.len() + TAG + 16);
        out.put_u8(SEALED);
        // Writing into a buffer cannot fail.
        let mut writer = (&mut out).writer();
        let _ = rmp::encode::write_bin(&mut writer, &tag);
        let _ = rmp::encode::write_u64(&mut writer, sealed_at_ms);
        let _ = rmp::encode::write_bin_len(&mut writer, payload.len() as u32);
        out.extend_from_slice(payload);
        out.freeze()
    }

    /// The payload inside `sealed` and when it was sealed, if its seal checks out under
    /// this key for `purpose` on `subject`.
    pub(crate) fn open(
        &self,
        purpose: Purpose,
        subject: &str,
        sealed: &Bytes,
    ) -> Result<(u64, Bytes)> {
        let Some(Sealed { tag, at, payload }) = split(sealed) else {
            let why = if sealed.first() == Some(&SEALED_V1) {
                "is sealed the way versions before 0.2 seal, which binds no subject and no \
                 time; upgrade every network that shares the auth_token"
            } else {
                "is not sealed with this network's auth_token"
            };
            return Err(Error::new(
                ErrorKind::AuthenticationFailed,
                format!("the {} {why}", purpose.name()),
            ));
        };
        let mut mac = self.mac(purpose, subject, at);
        mac.update(&payload);
        mac.verify_slice(tag).map_err(|_| {
            Error::new(
                ErrorKind::AuthenticationFailed,
                format!(
                    "the {}'s seal does not match this network's auth_token for {subject:?} \
                     (a wrong token, or a payload sealed for another subject or purpose)",
                    purpose.name()
                ),
            )
        })?;
        Ok((at, payload))
    }
}

/// The parts of a sealed payload.
struct Sealed<'a> {
    tag: &'a [u8],
    at: u64,
    payload: Bytes,
}

/// The parts of `payload`; `None` if it is not sealed.
fn split(payload: &Bytes) -> Option<Sealed<'_>> {
    let mut rest: &[u8] = payload;
    if rest.first() != Some(&SEALED) {
        return None;
    }
    rest = &rest[1..];
    let tag_len = rmp::decode::read_bin_len(&mut rest).ok()? as usize;
    if tag_len != TAG || rest.len() < TAG {
        return None;
    }
    let (tag, mut rest) = rest.split_at(TAG);
    let at = rmp::decode::read_int::<u64, _>(&mut rest).ok()?;
    let len = rmp::decode::read_bin_len(&mut rest).ok()? as usize;
    if rest.len() != len {
        return None;
    }
    let start = payload.len() - len;
    Some(Sealed {
        tag,
        at,
        payload: payload.slice(start..),
    })
}

/// What a payload holds with its seal taken off unchecked: for a network that asked for
/// no authentication, and for tools that only show traffic.
pub(crate) fn unsealed(payload: &Bytes) -> Bytes {
    split(payload).map_or_else(|| payload.clone(), |sealed| sealed.payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBJECT: &str = "recv.tally.in";

    #[test]
    fn a_sealed_payload_opens_only_under_its_own_key_subject_and_purpose() {
        let key = SealKey::from_token("right");
        let payload = Bytes::from_static(b"\x83\xa1vsome envelope");
        let sealed = key.seal(Purpose::Data, SUBJECT, 1_234, &payload);
        assert_eq!(sealed[0], SEALED);
        assert_eq!(
            key.open(Purpose::Data, SUBJECT, &sealed).unwrap(),
            (1_234, payload.clone())
        );
        let wrong = SealKey::from_token("wrong")
            .open(Purpose::Data, SUBJECT, &sealed)
            .unwrap_err();
        assert_eq!(wrong.kind(), ErrorKind::AuthenticationFailed);
        assert!(wrong.to_string().contains("does not match"), "{wrong}");
        let elsewhere = key
            .open(Purpose::Data, "recv2.tally.in", &sealed)
            .unwrap_err();
        assert!(
            elsewhere.to_string().contains("another subject"),
            "{elsewhere}"
        );
        let as_confirmed = key.open(Purpose::Confirmed, SUBJECT, &sealed).unwrap_err();
        assert_eq!(as_confirmed.kind(), ErrorKind::AuthenticationFailed);
        let unsealed = key.open(Purpose::Data, SUBJECT, &payload).unwrap_err();
        assert!(unsealed.to_string().contains("not sealed"), "{unsealed}");
        // A flipped bit anywhere is refused: in the tag, the time or the payload.
        for i in 0..sealed.len() {
            let mut bent = sealed.to_vec();
            bent[i] ^= 1;
            assert!(
                key.open(Purpose::Data, SUBJECT, &Bytes::from(bent))
                    .is_err(),
                "bit {i}"
            );
        }
    }

    #[test]
    fn a_payload_sealed_the_old_way_is_refused_naming_the_upgrade() {
        let mut old = vec![SEALED_V1, 0xc4, 32];
        old.extend([0u8; 32]);
        old.extend([0xc4, 1, 7]);
        let err = SealKey::from_token("t")
            .open(Purpose::Data, SUBJECT, &Bytes::from(old))
            .unwrap_err();
        assert!(err.to_string().contains("upgrade"), "{err}");
    }

    #[test]
    fn unsealed_takes_a_seal_off_and_leaves_anything_else() {
        let payload = Bytes::from(vec![7u8; 70_000]);
        let sealed = SealKey::from_token("t").seal(Purpose::Return, SUBJECT, 9, &payload);
        assert_eq!(unsealed(&sealed), payload);
        assert_eq!(unsealed(&payload), payload);
    }

    #[test]
    fn an_envelope_is_never_taken_for_a_seal() {
        let envelope = crate::message::Envelope {
            version: crate::message::WIRE_VERSION,
            network: "a".into(),
            instance: "i".into(),
            seq: 1,
            message: crate::message::Message::Integer(1),
            reply_to: None,
            acked_below: None,
        }
        .encode(None)
        .unwrap();
        assert!(split(&envelope).is_none());
    }
}
