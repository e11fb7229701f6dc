//! The gate: the one place everything that enters a network passes before any other work.
//!
//! Streamed envelopes, confirmed sends, returned outputs, acknowledgements and control
//! requests that change something (attach, detach, connect, disconnect) all come through
//! [`Gate::admit`], through the broker or a direct link. The gate decides, in this order
//! and before anything is decompressed, decoded, counted per sender or ordered:
//!
//! 1. **the seal**, with an auth token: the payload must be sealed under this network's
//!    key for the purpose it arrived as and the subject it arrived on (see
//!    [`crate::message::seal`]), so nothing captured on one subject, network or kind of
//!    message is taken on another;
//! 2. **freshness**, with an auth token: the time under the seal must lie within
//!    [`FRESH`] (for streamed envelopes and returned outputs, [`STREAM_FRESH`]) of now,
//!    no more than [`CLOCK_SKEW`] ahead, and no earlier than this instance's start less
//!    [`CLOCK_SKEW`]: a capture replayed later, or after this instance restarted, is
//!    refused;
//! 3. **size**: a compressed payload may claim at most [`PLAIN_PER_PAYLOAD`] times the
//!    server's `max_payload` once decompressed, so a small payload cannot make this
//!    process allocate gigabytes; only then is it decompressed.
//!
//! Once an envelope is decoded, [`Gate::sealed_while_alive`] refuses one sealed by a sender
//! before the moment it was buried (seen dead in liveness): after a sender leaves, what
//! this instance remembered of its stream is let go, and the gate's tombstone stands in for
//! it, so a captured stream cannot be replayed onto a receiver that forgot it.
//!
//! The gate owns its state (the key, the tombstones, what it refused) and does no I/O:
//! every decision takes the time as an argument and is unit-tested below.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};
use crate::message::seal::{Purpose, SealKey};

/// How old a sealed confirmed send, acknowledgement or control request may be.
pub(crate) const FRESH: Duration = Duration::from_secs(60);

/// How old a sealed streamed envelope or returned output may be: longer than [`FRESH`],
/// since a stream waits in the client's buffer while a slow actor works through the
/// window before it.
pub(crate) const STREAM_FRESH: Duration = Duration::from_secs(600);

/// How far the clocks of two machines may disagree before sealed payloads are refused.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// How much larger than the server's `max_payload` a decompressed payload may be.
pub(crate) const PLAIN_PER_PAYLOAD: usize = 8;

/// The smallest bound on a decompressed payload, whatever the server announces.
const PLAIN_AT_LEAST: usize = 8 * 1024 * 1024;

/// Most senders remembered as buried.
const TOMBSTONES_AT_MOST: usize = 65_536;

/// The largest a payload may be once decompressed, for a server whose `max_payload` is
/// `max_payload`. Senders compress only what fits under it.
pub(crate) fn plain_limit(max_payload: usize) -> usize {
    max_payload
        .saturating_mul(PLAIN_PER_PAYLOAD)
        .max(PLAIN_AT_LEAST)
}

/// What the gate refused, by reason.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    /// Not sealed, or sealed with another key, subject or purpose.
    pub(crate) unauthenticated: AtomicU64,
    /// Sealed too long ago (or too far ahead), before this instance started, or before
    /// its sender was buried.
    pub(crate) stale: AtomicU64,
    /// Claiming more decompressed bytes than the bound.
    pub(crate) oversize: AtomicU64,
}

/// Why a payload was refused, for the count it goes into.
#[derive(Debug, Clone, Copy)]
enum Why {
    Unauthenticated,
    Stale,
    Oversize,
    /// Malformed: counted by the caller, which knows what it was.
    Malformed,
}

impl Refusals {
    fn count(&self, why: Why) {
        let counter = match why {
            Why::Unauthenticated => &self.unauthenticated,
            Why::Stale => &self.stale,
            Why::Oversize => &self.oversize,
            Why::Malformed => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The gate of one network instance.
#[derive(Debug)]
pub(crate) struct Gate {
    key: Option<SealKey>,
    /// When this instance started, in milliseconds since the Unix epoch.
    started_ms: u64,
    /// Senders (network, instance) buried, with when, in milliseconds.
    buried: Mutex<HashMap<(String, String), u64>>,
    refusals: Refusals,
}

impl Gate {
    /// The gate of an instance started at `started_ms` with `token` (`None`: no
    /// authentication, only the size bound).
    pub(crate) fn new(token: Option<&str>, started_ms: u64) -> Self {
        Gate {
            key: token.map(SealKey::from_token),
            started_ms,
            buried: Mutex::new(HashMap::new()),
            refusals: Refusals::default(),
        }
    }

    /// What the gate refused so far.
    pub(crate) fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// `payload` as it goes on the wire for `purpose` on `subject`: sealed now, when this
    /// network has an auth token.
    pub(crate) fn seal(&self, purpose: Purpose, subject: &str, payload: Bytes) -> Bytes {
        self.seal_at(purpose, subject, payload, crate::discovery::now_ms())
    }

    /// [`Gate::seal`] at `now_ms`.
    pub(crate) fn seal_at(
        &self,
        purpose: Purpose,
        subject: &str,
        payload: Bytes,
        now_ms: u64,
    ) -> Bytes {
        match &self.key {
            Some(key) => key.seal(purpose, subject, now_ms, &payload),
            None => payload,
        }
    }

    /// The envelope (or JSON) bytes of `payload`, which arrived as `purpose` on `subject`,
    /// if it may enter: see the module's doc for what is checked, in which order. Returns
    /// the bytes and the time they were sealed (`None` without a token). The server's
    /// `max_payload` is asked for only when the payload is compressed.
    pub(crate) fn admit(
        &self,
        purpose: Purpose,
        subject: &str,
        payload: &Bytes,
        max_payload: impl FnOnce() -> usize,
    ) -> Result<(Bytes, Option<u64>)> {
        self.admit_at(
            purpose,
            subject,
            payload,
            max_payload,
            crate::discovery::now_ms(),
        )
    }

    /// [`Gate::admit`] at `now_ms`.
    pub(crate) fn admit_at(
        &self,
        purpose: Purpose,
        subject: &str,
        payload: &Bytes,
        max_payload: impl FnOnce() -> usize,
        now_ms: u64,
    ) -> Result<(Bytes, Option<u64>)> {
        self.check(purpose, subject, payload, max_payload, now_ms)
            .map_err(|(err, why)| {
                self.refusals.count(why);
                err
            })
    }

    /// What [`Gate::admit`] lets in, without counting a refusal: for a look at a payload
    /// that is admitted (and counted) again when it is delivered.
    pub(crate) fn peek(
        &self,
        purpose: Purpose,
        subject: &str,
        payload: &Bytes,
        max_payload: impl FnOnce() -> usize,
    ) -> Option<Bytes> {
        self.check(
            purpose,
            subject,
            payload,
            max_payload,
            crate::discovery::now_ms(),
        )
        .ok()
        .map(|(plain, _)| plain)
    }

    /// The decision behind [`Gate::admit_at`]: a refusal comes with why, for its count.
    fn check(
        &self,
        purpose: Purpose,
        subject: &str,
        payload: &Bytes,
        max_payload: impl FnOnce() -> usize,
        now_ms: u64,
    ) -> std::result::Result<(Bytes, Option<u64>), (Error, Why)> {
        let (inner, sealed_at) = match &self.key {
            Some(key) => {
                let (at, inner) = key
                    .open(purpose, subject, payload)
                    .map_err(|e| (e, Why::Unauthenticated))?;
                self.fresh(purpose, at, now_ms)
                    .map_err(|e| (e, Why::Stale))?;
                (inner, Some(at))
            }
            None => (crate::message::seal::unsealed(payload), None),
        };
        if matches!(purpose, Purpose::Ack | Purpose::Control | Purpose::Stored)
            || inner.first() != Some(&crate::message::COMPRESSED_MARKER)
        {
            // JSON, or an envelope that is not compressed: nothing to bound.
            return Ok((inner, sealed_at));
        }
        let plain =
            crate::message::plain_bounded(&inner, plain_limit(max_payload())).map_err(|e| {
                let why = if e.kind() == ErrorKind::PayloadTooLarge {
                    Why::Oversize
                } else {
                    Why::Malformed
                };
                (e, why)
            })?;
        Ok((plain, sealed_at))
    }

    /// Whether a payload sealed for `purpose` at `at` is fresh at `now_ms`.
    fn fresh(&self, purpose: Purpose, at: u64, now_ms: u64) -> Result<()> {
        let window = match purpose {
            Purpose::Data | Purpose::Return => STREAM_FRESH,
            Purpose::Confirmed | Purpose::Ack | Purpose::Control => FRESH,
            // Kept in a stream for as long as the network is down: never stale here.
            Purpose::Stored => return Ok(()),
        };
        let skew = CLOCK_SKEW.as_millis() as u64;
        let stale = |why: String| {
            Err(Error::new(
                ErrorKind::AuthenticationFailed,
                format!("the {} is refused as a replay: {why}", purpose.name()),
            ))
        };
        if at > now_ms.saturating_add(skew) {
            return stale(format!(
                "it was sealed {} ms ahead of this machine's clock (clocks may differ by \
                 {CLOCK_SKEW:?} at most)",
                at - now_ms
            ));
        }
        if now_ms.saturating_sub(at) > window.as_millis() as u64 {
            return stale(format!(
                "it was sealed {} s ago, more than the {window:?} a sealed {} is good for",
                (now_ms - at) / 1000,
                purpose.name()
            ));
        }
        if at < self.started_ms.saturating_sub(skew) {
            return stale(format!(
                "it was sealed {} s before this instance started",
                (self.started_ms - at) / 1000
            ));
        }
        Ok(())
    }

    /// Refuses an envelope of `sender` sealed at `sealed_at` if the sender was buried
    /// after that: a replay of a stream this instance has let go of.
    pub(crate) fn sealed_while_alive(
        &self,
        sender: (&str, &str),
        sealed_at: Option<u64>,
    ) -> Result<()> {
        let Some(at) = sealed_at else {
            return Ok(());
        };
        let buried = self.buried.lock();
        if buried.is_empty() {
            return Ok(());
        }
        match buried.get(&(sender.0.to_string(), sender.1.to_string())) {
            Some(&when) if at <= when => {
                self.refusals.stale.fetch_add(1, Ordering::Relaxed);
                Err(Error::new(
                    ErrorKind::AuthenticationFailed,
                    format!(
                        "an envelope of instance {:?} of network {:?} sealed before that \
                         instance left is refused as a replay",
                        sender.1, sender.0
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Remembers that `sender` was buried at `now_ms`, for as long as anything it sealed
    /// before could still pass as fresh.
    pub(crate) fn bury_at(&self, sender: (&str, &str), now_ms: u64) {
        if self.key.is_none() {
            return;
        }
        let keep = (STREAM_FRESH + CLOCK_SKEW).as_millis() as u64;
        let mut buried = self.buried.lock();
        buried.retain(|_, when| now_ms.saturating_sub(*when) <= keep);
        if buried.len() >= TOMBSTONES_AT_MOST
            && let Some(oldest) = buried
                .iter()
                .min_by_key(|(_, when)| **when)
                .map(|(k, _)| k.clone())
        {
            buried.remove(&oldest);
        }
        buried.insert((sender.0.to_string(), sender.1.to_string()), now_ms);
    }

    /// What a seal of a stored message (or entry) binds: its subject and its
    /// deduplication id, so a capture stored again under another id, or on another
    /// subject, is refused, and one under the same id is dropped by JetStream while it
    /// remembers the id.
    pub(crate) fn stored_binding(subject: &str, msg_id: &str) -> String {
        format!("{subject}#{msg_id}")
    }

    /// Refuses plain JSON when this network authenticates what enters it.
    pub(crate) fn admit_plain(&self, network: &str) -> Result<()> {
        if self.key.is_none() {
            return Ok(());
        }
        self.refusals
            .unauthenticated
            .fetch_add(1, Ordering::Relaxed);
        Err(Error::new(
            ErrorKind::AuthenticationFailed,
            format!(
                "network {network:?} has an auth token and takes sealed envelopes only; \
                 plain JSON is refused"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024 * 1024;
    const T0: u64 = 1_800_000_000_000;
    const SUBJECT: &str = "recv.tally.in";

    fn sealed(purpose: Purpose, subject: &str, at: u64) -> Bytes {
        Gate::new(Some("secret"), 0).seal_at(
            purpose,
            subject,
            Bytes::from_static(b"\x81\xa1v\x01"),
            at,
        )
    }

    fn gate() -> Gate {
        Gate::new(Some("secret"), T0)
    }

    /// 980 bytes that claim 250 MB once decompressed, unsealed.
    fn bomb() -> Bytes {
        let mut bomb = vec![crate::message::COMPRESSED_MARKER];
        bomb.extend((250_000_000u32).to_le_bytes());
        bomb.extend(vec![0u8; 975]);
        Bytes::from(bomb)
    }

    #[test]
    fn a_payload_sealed_for_the_subject_and_purpose_enters() {
        let (plain, at) = gate()
            .admit_at(
                Purpose::Data,
                SUBJECT,
                &sealed(Purpose::Data, SUBJECT, T0 + 5),
                || MAX,
                T0 + 10,
            )
            .unwrap();
        assert_eq!(&plain[..], b"\x81\xa1v\x01");
        assert_eq!(at, Some(T0 + 5));
    }

    #[test]
    fn a_capture_replayed_on_another_network_or_as_another_purpose_is_refused() {
        let gate = gate();
        let captured = sealed(Purpose::Data, SUBJECT, T0 + 5);
        for (purpose, subject) in [
            (Purpose::Data, "recv2.tally.in"),
            (Purpose::Confirmed, SUBJECT),
            (Purpose::Return, SUBJECT),
        ] {
            let err = gate
                .admit_at(purpose, subject, &captured, || MAX, T0 + 10)
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::AuthenticationFailed, "{err}");
        }
        assert_eq!(gate.refusals().unauthenticated.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn an_unsealed_payload_is_refused_before_it_is_decompressed() {
        let gate = gate();
        let err = gate
            .admit_at(Purpose::Data, SUBJECT, &bomb(), || MAX, T0)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AuthenticationFailed);
        assert_eq!(gate.refusals().oversize.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn without_a_token_a_compressed_payload_claiming_too_much_is_refused_naming_both_sizes() {
        let gate = Gate::new(None, T0);
        let err = gate
            .admit_at(Purpose::Data, SUBJECT, &bomb(), || MAX, T0)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
        let text = err.to_string();
        assert!(
            text.contains("250000000") && text.contains(&plain_limit(MAX).to_string()),
            "{text}"
        );
        assert_eq!(gate.refusals().oversize.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_peek_decides_as_admit_does_and_counts_nothing() {
        // A peek looks at the clock: sealed now, for a gate started long ago.
        let gate = Gate::new(Some("secret"), 0);
        let good = sealed(Purpose::Data, SUBJECT, crate::discovery::now_ms());
        assert!(gate.peek(Purpose::Data, SUBJECT, &good, || MAX).is_some());
        assert!(
            gate.peek(Purpose::Data, "recv2.tally.in", &good, || MAX)
                .is_none()
        );
        assert!(gate.peek(Purpose::Data, SUBJECT, &bomb(), || MAX).is_none());
        let refusals = gate.refusals();
        assert_eq!(refusals.unauthenticated.load(Ordering::Relaxed), 0);
        assert_eq!(refusals.oversize.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_stored_message_is_never_stale_but_bound_to_its_subject_and_id() {
        let gate = gate();
        let binding = Gate::stored_binding("REFLOW.n.a.p", "s/i/1");
        let stored = sealed(Purpose::Stored, &binding, 1);
        let day = 24 * 3600 * 1000;
        assert!(
            gate.admit_at(Purpose::Stored, &binding, &stored, || MAX, T0 + day)
                .is_ok()
        );
        let elsewhere = Gate::stored_binding("REFLOW.n.a.p", "s/i/2");
        assert!(
            gate.admit_at(Purpose::Stored, &elsewhere, &stored, || MAX, T0)
                .is_err()
        );
        let plain = Bytes::from_static(b"\x01");
        assert!(
            gate.admit_at(Purpose::Stored, &binding, &plain, || MAX, T0)
                .is_err()
        );
    }

    #[test]
    fn a_compressed_payload_within_the_bound_is_decompressed() {
        let plain = vec![b'x'; 100_000];
        let packed = crate::message::compress_above_limit(Bytes::from(plain.clone()), Some(10));
        assert_eq!(packed[0], crate::message::COMPRESSED_MARKER);
        let gate = gate();
        let wire = gate.seal_at(Purpose::Data, SUBJECT, packed, T0 + 1);
        let (opened, _) = gate
            .admit_at(Purpose::Data, SUBJECT, &wire, || MAX, T0 + 2)
            .unwrap();
        assert_eq!(&opened[..], &plain[..]);
    }

    #[test]
    fn a_confirmed_send_is_good_for_a_minute_and_a_stream_for_ten() {
        let gate = gate();
        let minute = FRESH.as_millis() as u64;
        let confirmed = sealed(Purpose::Confirmed, SUBJECT, T0 + 1);
        assert!(
            gate.admit_at(Purpose::Confirmed, SUBJECT, &confirmed, || MAX, T0 + minute)
                .is_ok()
        );
        let later = gate
            .admit_at(
                Purpose::Confirmed,
                SUBJECT,
                &confirmed,
                || MAX,
                T0 + 10 * minute,
            )
            .unwrap_err();
        assert!(later.to_string().contains("replay"), "{later}");
        let streamed = sealed(Purpose::Data, SUBJECT, T0 + 1);
        assert!(
            gate.admit_at(Purpose::Data, SUBJECT, &streamed, || MAX, T0 + 5 * minute)
                .is_ok()
        );
        assert!(
            gate.admit_at(Purpose::Data, SUBJECT, &streamed, || MAX, T0 + 11 * minute)
                .is_err()
        );
        assert_eq!(gate.refusals().stale.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_payload_from_ahead_of_the_clock_skew_is_refused() {
        let gate = gate();
        let skew = CLOCK_SKEW.as_millis() as u64;
        let ahead = sealed(Purpose::Control, "_reflow.recv.attach", T0 + 2 * skew);
        assert!(
            gate.admit_at(
                Purpose::Control,
                "_reflow.recv.attach",
                &ahead,
                || MAX,
                T0 + skew + 1
            )
            .is_ok()
        );
        assert!(
            gate.admit_at(Purpose::Control, "_reflow.recv.attach", &ahead, || MAX, T0)
                .is_err()
        );
    }

    #[test]
    fn a_capture_from_before_this_instance_started_is_refused() {
        let skew = CLOCK_SKEW.as_millis() as u64;
        let captured = sealed(Purpose::Data, SUBJECT, T0 - skew - 1);
        let restarted = gate();
        let err = restarted
            .admit_at(Purpose::Data, SUBJECT, &captured, || MAX, T0 + 1)
            .unwrap_err();
        assert!(
            err.to_string().contains("before this instance started"),
            "{err}"
        );
        // Within the skew, a message in flight at the start still enters.
        let in_flight = sealed(Purpose::Data, SUBJECT, T0 - 10);
        assert!(
            restarted
                .admit_at(Purpose::Data, SUBJECT, &in_flight, || MAX, T0 + 1)
                .is_ok()
        );
    }

    #[test]
    fn what_a_buried_sender_sealed_before_it_was_buried_is_refused() {
        let gate = gate();
        gate.bury_at(("a", "a-1"), T0 + 100);
        assert!(
            gate.sealed_while_alive(("a", "a-1"), Some(T0 + 50))
                .is_err()
        );
        assert!(
            gate.sealed_while_alive(("a", "a-1"), Some(T0 + 100))
                .is_err()
        );
        // The same instance id started again seals later.
        assert!(
            gate.sealed_while_alive(("a", "a-1"), Some(T0 + 101))
                .is_ok()
        );
        assert!(gate.sealed_while_alive(("b", "b-1"), Some(T0 + 50)).is_ok());
        assert!(gate.sealed_while_alive(("a", "a-1"), None).is_ok());
    }

    #[test]
    fn tombstones_are_kept_as_long_as_a_capture_could_pass_and_no_longer() {
        let gate = gate();
        gate.bury_at(("a", "a-1"), T0);
        let keep = (STREAM_FRESH + CLOCK_SKEW).as_millis() as u64;
        gate.bury_at(("b", "b-1"), T0 + keep);
        assert!(gate.sealed_while_alive(("a", "a-1"), Some(T0)).is_err());
        gate.bury_at(("c", "c-1"), T0 + keep + 1);
        assert!(gate.sealed_while_alive(("a", "a-1"), Some(T0)).is_ok());
        assert!(gate.buried.lock().len() <= 2);
    }

    #[test]
    fn tombstones_are_bounded_in_number() {
        let gate = gate();
        for i in 0..TOMBSTONES_AT_MOST + 10 {
            gate.bury_at(("n", &format!("i{i}")), T0 + i as u64);
        }
        assert_eq!(gate.buried.lock().len(), TOMBSTONES_AT_MOST);
    }

    #[test]
    fn without_a_token_nothing_is_sealed_and_anything_well_formed_enters() {
        let gate = Gate::new(None, T0);
        let payload = Bytes::from_static(b"\x81\xa1v\x01");
        assert_eq!(
            gate.seal_at(Purpose::Data, SUBJECT, payload.clone(), T0),
            payload
        );
        let (plain, at) = gate
            .admit_at(Purpose::Data, SUBJECT, &payload, || MAX, T0)
            .unwrap();
        assert_eq!((plain, at), (payload, None));
        assert!(gate.admit_plain("recv").is_ok());
        assert!(super::Gate::new(Some("t"), T0).admit_plain("recv").is_err());
    }
}
