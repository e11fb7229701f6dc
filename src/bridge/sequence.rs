//! Sequence numbers: how a message survives a switch between the broker and a direct
//! link, a lost envelope or a receiver's restart, neither lost nor doubled.
//!
//! Every instance numbers the envelopes it streams to each target network ([`Outbox`]),
//! and keeps each one until the receiver acknowledges it ([`super::window`]). When its
//! road to that network changes (the broker is lost and a direct link takes over, or the
//! broker comes back), or no acknowledgement comes in time, it sends the unacknowledged
//! envelopes again. The receiver remembers which numbers it has delivered per sender
//! ([`SeenWindow`]) and drops the repeats. Each envelope also tells the lowest number its
//! sender still waits on (`a`): everything below was delivered, so a receiver may forget
//! it, and a receiver that has just started knows where the sender's stream stands.
//!
//! Numbers start at the sender's start time in microseconds, so a restarted sender with
//! the same ids is not mistaken for a repeat of its previous life.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Subject;
use bytes::Bytes;

use super::window::{Kept, SendWindow};
use crate::error::Result;
use crate::events::TransportKind;

/// How long an envelope waits for those before it; past this the gap is given up on.
pub(crate) const HOLD_LIMIT: Duration = Duration::from_secs(10);

/// The most envelopes held back per sender: a sender that keeps its window has far fewer
/// unacknowledged, so more means it does not, and they go on out of order.
const MAX_HELD: usize = 4096;
use crate::message::{EnvelopeWriter, Message};

/// How many out-of-order numbers a receiver tracks per sender before it treats the
/// oldest gaps as delivered elsewhere (another instance of its network took them).
const MAX_TRACKED_GAPS: usize = 8192;

/// The envelopes streamed to one network.
#[derive(Debug)]
pub(crate) struct Outbox {
    next_seq: u64,
    /// Encodes this stream's envelopes.
    writer: EnvelopeWriter,
    /// The road this stream takes now.
    road: TransportKind,
    /// Sent through the broker while it was down: the unacknowledged envelopes go again
    /// once the peer answers through the broker.
    stale: bool,
    /// What was sent and not yet acknowledged.
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

    /// What this stream sent and has not heard acknowledged.
    pub(crate) fn window(&self) -> &SendWindow {
        &self.window
    }

    /// Takes the next `count` numbers of this stream; returns the first.
    pub(crate) fn take_seqs(&mut self, count: usize) -> u64 {
        let seq = self.next_seq;
        self.next_seq += count as u64;
        seq
    }

    /// Encodes `messages` as one envelope of this stream, numbered from `first` (taken
    /// with [`Outbox::take_seqs`]), telling the lowest number still unacknowledged.
    pub(crate) fn encode(
        &mut self,
        first: u64,
        messages: &[Message],
        reply_to: Option<&str>,
        compress_above: Option<usize>,
    ) -> Result<Bytes> {
        let floor = self.window.floor(first);
        self.writer
            .encode_batch(first, floor, messages, reply_to, compress_above)
    }

    /// Keeps an envelope just sent, numbered from `first`, until it is acknowledged.
    pub(crate) fn keep(&mut self, first: u64, count: usize, subject: Subject, payload: Bytes) {
        self.window.keep(first, count, subject, payload);
    }

    /// Every unacknowledged envelope, oldest first, to send again now.
    pub(crate) fn resend_all(&self) -> Vec<Kept> {
        self.window.resend_all()
    }
}

/// Which numbers of one sender this receiver has delivered.
#[derive(Debug, Default)]
pub(crate) struct SeenWindow {
    /// Every number up to and including this one is delivered (or given up on).
    floor: Option<u64>,
    /// Delivered numbers above the floor.
    above: BTreeSet<u64>,
}

impl SeenWindow {
    /// Records `seq`; false if it was delivered before.
    pub(crate) fn first_time(&mut self, seq: u64) -> bool {
        let Some(floor) = self.floor else {
            // The first number heard from this sender: earlier ones went elsewhere or
            // before this receiver started.
            self.floor = Some(seq);
            return true;
        };
        if seq == floor + 1 && self.above.is_empty() {
            // The common case: the next number, in order.
            self.floor = Some(seq);
            return true;
        }
        if seq <= floor || !self.above.insert(seq) {
            return false;
        }
        let mut floor = floor;
        while self.above.remove(&(floor + 1)) {
            floor += 1;
        }
        while self.above.len() > MAX_TRACKED_GAPS {
            if let Some(lowest) = self.above.pop_first() {
                floor = lowest;
            }
        }
        self.floor = Some(floor);
        true
    }

    /// Whether an envelope numbered from `first` would skip numbers not yet delivered:
    /// something before it is missing (lost, or on its way again).
    pub(crate) fn waits_before(&self, first: u64) -> bool {
        self.floor
            .is_some_and(|floor| first > floor + 1 && !self.above.contains(&first))
    }

    /// Learns from the sender that every number below `below` has been delivered
    /// somewhere (here, or at another instance of this network): they need no tracking,
    /// and any that comes again is a repeat. A receiver that has just started learns
    /// where the sender's stream stands, so what the sender sends again is not mistaken
    /// for old news.
    pub(crate) fn raise_floor(&mut self, below: u64) {
        let Some(at_least) = below.checked_sub(1) else {
            return;
        };
        let mut floor = self.floor.map_or(at_least, |f| f.max(at_least));
        self.above = self.above.split_off(&(floor + 1));
        while self.above.remove(&(floor + 1)) {
            floor += 1;
        }
        self.floor = Some(floor);
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
    pub(crate) fn hold(&mut self, first: u64, envelope: impl FnOnce() -> Held) -> bool {
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

    #[test]
    fn repeats_are_dropped_in_and_out_of_order() {
        let mut seen = SeenWindow::default();
        assert!(seen.first_time(100));
        assert!(seen.first_time(101));
        assert!(!seen.first_time(101));
        assert!(seen.first_time(103));
        assert!(!seen.first_time(100));
        assert!(seen.first_time(102));
        assert!(!seen.first_time(103));
        assert!(seen.first_time(104));
    }

    #[test]
    fn gaps_taken_by_other_instances_do_not_grow_memory() {
        let mut seen = SeenWindow::default();
        for seq in (0..100_000u64).step_by(3) {
            assert!(seen.first_time(seq));
        }
        assert!(seen.above.len() <= MAX_TRACKED_GAPS);
        assert!(!seen.first_time(99_999));
    }

    #[test]
    fn a_raised_floor_forgets_gaps_and_tells_a_new_receiver_where_the_stream_is() {
        let mut seen = SeenWindow::default();
        seen.raise_floor(500);
        assert!(seen.first_time(503), "sent after the floor: new");
        assert!(seen.first_time(500), "sent again from the floor: new here");
        assert!(
            !seen.first_time(499),
            "below the floor: delivered elsewhere"
        );
        seen.raise_floor(502);
        assert!(seen.above.len() == 1 && seen.floor == Some(501), "{seen:?}");
        assert!(!seen.first_time(501));
        assert!(seen.first_time(502));
        assert_eq!(seen.floor, Some(503), "502 closed the gap up to 503");
        seen.raise_floor(10);
        assert_eq!(seen.floor, Some(503), "a floor never goes down");
    }

    #[test]
    fn an_envelope_after_a_gap_waits_and_goes_once_the_gap_fills() {
        let mut seen = SeenWindow::default();
        let mut held = HeldBack::default();
        assert!(seen.first_time(10));
        assert!(!seen.waits_before(11), "the next number");
        assert!(seen.waits_before(13), "11 and 12 are missing");
        let payload = Bytes::from_static(b"x");
        let envelope = || Held::new("B.t.in", &payload, TransportKind::Nats, false);
        assert!(held.hold(13, envelope));
        assert!(held.hold(12, envelope));
        let now = Instant::now();
        assert!(held.next_due(|f| seen.waits_before(f), now).is_none());
        assert!(seen.first_time(11));
        let (first, _, gave_up) = held.next_due(|f| seen.waits_before(f), now).unwrap();
        assert_eq!((first, gave_up), (12, false));
        assert!(seen.first_time(12));
        assert_eq!(held.next_due(|f| seen.waits_before(f), now).unwrap().0, 13);
        assert!(held.is_empty());

        assert!(held.hold(20, envelope));
        let later = now + HOLD_LIMIT + Duration::from_millis(1);
        let (first, _, gave_up) = held.next_due(|f| seen.waits_before(f), later).unwrap();
        assert_eq!(
            (first, gave_up),
            (20, true),
            "a gap is not waited on for ever"
        );
    }

    #[test]
    fn outbox_numbers_in_order_and_keeps_what_is_unacknowledged() {
        let window = Arc::new(SendWindow::new(1 << 20));
        let mut outbox = Outbox::new(7, window.clone(), EnvelopeWriter::new("n", "i"));
        assert_eq!(outbox.take_seqs(1), 7);
        assert_eq!(outbox.take_seqs(3), 8);
        assert_eq!(outbox.take_seqs(1), 11);
        for (i, first) in [(0u8, 7), (1, 8), (2, 11)] {
            outbox.keep(first, 1, Subject::from("a.b.c"), Bytes::from(vec![i; 10]));
        }
        window.acknowledge(&[(8, 8)]);
        let kept: Vec<u8> = outbox.resend_all().iter().map(|k| k.payload[0]).collect();
        assert_eq!(kept, [0, 2]);
        let payload = outbox.encode(12, &[Message::Flow], None, None).unwrap();
        let view = crate::message::EnvelopeView::read(&payload).unwrap();
        assert_eq!(
            view.acked_below,
            Some(7),
            "the oldest unacknowledged number"
        );
    }
}
