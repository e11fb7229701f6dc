//! Sealed payloads: what proves that a sender holds the network's `auth_token`.
//!
//! A network with an auth token seals every envelope (and acknowledgement) it sends, and
//! takes only sealed ones whose seal checks out: a client that never proved the token
//! cannot put a message into its actors, whatever sender it names. The seal is an
//! HMAC-SHA256 tag, under a key derived from the token, over the payload as it would go
//! unsealed (plain or compressed). On the wire a sealed payload is a two-element
//! MessagePack array, `[tag: bin 32, payload: bin]`, which no envelope can be: an
//! envelope is a map (or, written by a general encoder, an array of all its fields).
//! See `docs/wire.md`, "Sealed payloads".

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{KeyInit, Mac};

use crate::error::{Error, ErrorKind, Result};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The first byte of a sealed payload: a MessagePack array of two.
const SEALED: u8 = 0x92;

/// Bytes of the tag.
const TAG: usize = 32;

/// The key envelopes are sealed with, derived from an auth token.
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

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key")
    }

    /// `payload`, sealed.
    pub(crate) fn seal(&self, payload: &[u8]) -> Bytes {
        let mut mac = self.mac();
        mac.update(payload);
        let tag = mac.finalize().into_bytes();
        let mut out = BytesMut::with_capacity(payload.len() + TAG + 9);
        out.put_u8(SEALED);
        // Writing into a buffer cannot fail.
        let mut writer = (&mut out).writer();
        let _ = rmp::encode::write_bin(&mut writer, &tag);
        let _ = rmp::encode::write_bin_len(&mut writer, payload.len() as u32);
        out.extend_from_slice(payload);
        out.freeze()
    }

    /// The payload inside `sealed`, if its seal checks out under this key.
    pub(crate) fn open(&self, sealed: &Bytes) -> Result<Bytes> {
        let (tag, inner) = split(sealed).ok_or_else(|| {
            Error::new(
                ErrorKind::AuthenticationFailed,
                "the payload is not sealed with this network's auth_token",
            )
        })?;
        let mut mac = self.mac();
        mac.update(&inner);
        mac.verify_slice(tag).map_err(|_| {
            Error::new(
                ErrorKind::AuthenticationFailed,
                "the payload's seal does not match this network's auth_token",
            )
        })?;
        Ok(inner)
    }
}

/// The tag and the payload of a sealed payload; `None` if `payload` is not one.
fn split(payload: &Bytes) -> Option<(&[u8], Bytes)> {
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
    let len = rmp::decode::read_bin_len(&mut rest).ok()? as usize;
    if rest.len() != len {
        return None;
    }
    let start = payload.len() - len;
    Some((tag, payload.slice(start..)))
}

/// What a receiver takes from `payload`: with a `key`, only a payload sealed under it;
/// without one, the payload as it is, or what a seal holds (unchecked: this network asked
/// for no authentication).
pub(crate) fn unseal(key: Option<&SealKey>, payload: &Bytes) -> Result<Bytes> {
    match key {
        Some(key) => key.open(payload),
        None => Ok(split(payload).map_or_else(|| payload.clone(), |(_, inner)| inner)),
    }
}

/// What a sender puts on the wire: `payload`, sealed when there is a `key`.
pub(crate) fn seal(key: Option<&SealKey>, payload: Bytes) -> Bytes {
    match key {
        Some(key) => key.seal(&payload),
        None => payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_payload_opens_only_under_its_own_key() {
        let key = SealKey::from_token("right");
        let payload = Bytes::from_static(b"\x83\xa1vsome envelope");
        let sealed = key.seal(&payload);
        assert_eq!(sealed[0], SEALED);
        assert_eq!(key.open(&sealed).unwrap(), payload);
        let wrong = SealKey::from_token("wrong").open(&sealed).unwrap_err();
        assert_eq!(wrong.kind(), ErrorKind::AuthenticationFailed);
        assert!(wrong.to_string().contains("does not match"), "{wrong}");
        let unsealed = key.open(&payload).unwrap_err();
        assert!(unsealed.to_string().contains("not sealed"), "{unsealed}");
        // A flipped bit anywhere is refused.
        for i in 0..sealed.len() {
            let mut bent = sealed.to_vec();
            bent[i] ^= 1;
            assert!(key.open(&Bytes::from(bent)).is_err(), "bit {i}");
        }
    }

    #[test]
    fn without_a_key_payloads_pass_and_seals_are_taken_off() {
        let payload = Bytes::from(vec![7u8; 70_000]);
        let sealed = SealKey::from_token("t").seal(&payload);
        assert_eq!(unseal(None, &sealed).unwrap(), payload);
        assert_eq!(unseal(None, &payload).unwrap(), payload);
        assert_eq!(seal(None, payload.clone()), payload);
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
