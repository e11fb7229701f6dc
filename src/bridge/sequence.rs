//! Sequence numbers: how a message survives a switch between the broker and a direct
//! link, a lost envelope, or the loss of the instance that was handling it, neither lost
//! nor doubled.
//!
//! Every instance numbers the envelopes it streams to each target network ([`Outbox`]),
//! and keeps each one until the receiver says it is handled ([`super::window`]). Each
//! envelope tells the lowest number its sender still waits on (`a`, the floor): every
//! number below was handled by some instance of the receiving network. Receivers use it
//! to recognise repeats with bounded memory ([`super::ledger`]).
//!
//! Numbers start at the sender's start time in microseconds, so a restarted sender with
//! the same ids is not mistaken for a repeat of its previous life.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::window::{Kept, SendWindow};
use crate::error::{Error, Result};
use crate::events::TransportKind;
use crate::message::{EnvelopeView, EnvelopeWriter, Message};

/// How long an envelope waits for those before it; past this it goes on out of order.
pub(crate) const HOLD_LIMIT: Duration = Duration::from_secs(10);

/// The most envelopes held back per sender: a sender that keeps its window has far fewer
/// unhandled, so more means it does not, and they go on out of order.
const MAX_HELD: usize = 4096;

/// The envelopes streamed to one network.
#[derive(Debug)]
pub(crate) struct Outbox {
    next_seq: u64,
    /// Encodes this stream's envelopes.
    writer: EnvelopeWriter,
    /// The road this stream takes now.
    road: TransportKind,
    /// Sent through the broker while it was down: the unhandled envelopes go again
    /// once the peer answers through the broker.
    stale: bool,
    /// What was sent and not yet handled.
    window: Arc<SendWindow>,
}

impl Outbox {
    pub(crate) fn new(first_seq: u64, window: Arc<SendWindow>, writer: EnvelopeWriter) -> Self {
        Outbox {
            next_seq: first_seq,
            writer,
            road: TransportKind::Nats,
            stale: false,
            window,
        }
    }

    /// The road this stream takes now.
    pub(crate) fn road(&self) -> TransportKind {
        self.road
    }

    pub(crate) fn set_road(&mut self, road: TransportKind) {
        self.road = road;
    }

    /// Whether envelopes went to the broker while it was down and may be lost there.
    pub(crate) fn is_stale(&self) -> bool {
        self.stale
    }

    pub(crate) fn set_stale(&mut self, stale: bool) {
        self.stale = stale;
    }

    /// What this stream sent and has not heard handled.
    pub(crate) fn window(&self) -> &SendWindow {
        &self.window
    }

    /// Takes the next `count` numbers of this stream; returns the first.
    pub(crate) fn take_seqs(&mut self, count: usize) -> u64 {
        let seq = self.next_seq;
        self.next_seq += count as u64;
        seq
    }

    /// Encodes `messages` as one envelope of this stream, uncompressed, numbered from
    /// `first` (taken with [`Outbox::take_seqs`]), telling the current floor;
    /// `redelivered` when they descend from a message that may be a repeat.
    pub(crate) fn encode(
        &mut self,
        first: u64,
        messages: &[Message],
        reply_to: Option<&str>,
        redelivered: bool,
    ) -> Result<Bytes> {
        let floor = self.window.floor(first);
        self.writer
            .encode_batch(first, floor, messages, reply_to, redelivered)
    }

    /// Encodes a kept envelope numbered from `first` afresh to send again: it tells the
    /// current floor, and says it was sent before.
    pub(crate) fn reencode(&mut self, first: u64, kept: &Kept) -> Result<Bytes> {
        let view = EnvelopeView::read(&kept.plain)?;
        if view.seq != first {
            return Err(Error::encoding(format!(
                "kept envelope {} is filed as {first}",
                view.seq
            )));
        }
        let reply_to = view.reply_to.as_deref().map(str::to_string);
        let messages: Vec<Message> = view.messages.into_iter().collect();
        let floor = self.window.floor(self.next_seq);
        self.writer
            .encode_batch(first, floor, &messages, reply_to.as_deref(), true)
    }
}

/// An envelope that arrived ahead of a gap, kept until the gap fills.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) subject: String,
    pub(crate) payload: Bytes,
    pub(crate) road: TransportKind,
    /// A returned output (else data for a local actor).
    pub(crate) returned: bool,
    since: Instant,
}

impl Held {
    pub(crate) fn new(subject: &str, payload: &Bytes, road: TransportKind, returned: bool) -> Self {
        Held {
            subject: subject.to_string(),
            payload: payload.clone(),
            road,
            returned,
            since: Instant::now(),
        }
    }
}

/// The envelopes of one sender held back, by first number.
///
/// A receiver that is its network's only instance sees every number of a sender's stream
/// to it, so a gap means something was lost and is on its way again: the sender keeps it
/// until acknowledged, and sends it again soon. What came after waits here meanwhile,
/// unacknowledged, so the sender's stream is delivered in order. Where other instances
/// share the work, gaps are theirs and nothing is held.
#[derive(Debug, Default)]
pub(crate) struct HeldBack {
    by_first: BTreeMap<u64, Held>,
}

impl HeldBack {
    /// Holds the envelope numbered from `first`; false, holding nothing, when full.
    /// A copy of one already held (sent again meanwhile) keeps its place and its wait.
    pub(crate) fn hold(&mut self, first: u64, envelope: impl FnOnce() -> Held) -> bool {
        if self.by_first.contains_key(&first) {
            return true;
        }
        if self.by_first.len() >= MAX_HELD {
            return false;
        }
        self.by_first.insert(first, envelope());
        true
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_first.is_empty()
    }

    /// Takes the first held envelope if it may go now: nothing before it is missing any
    /// more (`waits` says whether something is), or it has waited longer than
    /// [`HOLD_LIMIT`]. Returns its first number, the envelope, and whether it gave up.
    pub(crate) fn next_due(
        &mut self,
        waits: impl Fn(u64) -> bool,
        now: Instant,
    ) -> Option<(u64, Held, bool)> {
        let entry = self.by_first.first_entry()?;
        let first = *entry.key();
        let expired = now.duration_since(entry.get().since) > HOLD_LIMIT;
        if waits(first) && !expired {
            return None;
        }
        Some((first, entry.remove(), expired))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Causes;
    use async_nats::Subject;

    #[test]
    fn an_envelope_after_a_gap_waits_and_goes_once_the_gap_fills() {
        let mut held = HeldBack::default();
        let payload = Bytes::from_static(b"x");
        let envelope = || Held::new("B.t.in", &payload, TransportKind::Nats, false);
        assert!(held.hold(13, envelope));
        assert!(held.hold(12, envelope));
        let now = Instant::now();
        let mut missing = vec![11u64];
        let waits = |missing: &Vec<u64>, first: u64| missing.iter().any(|m| *m < first);
        assert!(held.next_due(|f| waits(&missing, f), now).is_none());
        missing.clear();
        let (first, _, gave_up) = held.next_due(|f| waits(&missing, f), now).unwrap();
        assert_eq!((first, gave_up), (12, false));
        assert_eq!(held.next_due(|f| waits(&missing, f), now).unwrap().0, 13);
        assert!(held.is_empty());

        missing.push(19);
        assert!(held.hold(20, envelope));
        let later = now + HOLD_LIMIT + Duration::from_millis(1);
        let (first, _, gave_up) = held.next_due(|f| waits(&missing, f), later).unwrap();
        assert_eq!(
            (first, gave_up),
            (20, true),
            "a gap is not waited on for ever"
        );
    }

    #[test]
    fn outbox_numbers_in_order_and_sends_again_with_a_fresh_floor() {
        let window = Arc::new(SendWindow::new(1 << 20));
        let mut outbox = Outbox::new(7, window.clone(), EnvelopeWriter::new("n", "i"));
        assert_eq!(outbox.take_seqs(1), 7);
        assert_eq!(outbox.take_seqs(3), 8);
        let plain = outbox
            .encode(7, &[Message::Integer(1)], Some("r.x"), false)
            .unwrap();
        let view = EnvelopeView::read(&plain).unwrap();
        assert_eq!((view.acked_below, view.redelivered), (Some(7), false));
        let kept = Kept {
            subject: Subject::from("a.b.c"),
            plain,
        };
        window.keep(7, 1, kept.clone(), Causes::default());
        let batch = outbox
            .encode(
                8,
                &[Message::Flow, Message::Flow, Message::Flow],
                None,
                false,
            )
            .unwrap();
        window.keep(
            8,
            3,
            Kept {
                subject: Subject::from("a.b.c"),
                plain: batch,
            },
            Causes::default(),
        );
        window.acknowledge("b", &[(7, 7)], &[]);
        let again = outbox.reencode(7, &kept).unwrap();
        let view = EnvelopeView::read(&again).unwrap();
        assert_eq!(view.acked_below, Some(8), "the floor as it is now");
        assert!(view.redelivered);
        assert_eq!(view.reply_to.as_deref(), Some("r.x"));
        assert_eq!(view.messages.len(), 1);
        assert!(
            outbox.reencode(8, &kept).is_err(),
            "filed under the wrong number"
        );
    }
}
