//! Sequence numbers: how a message survives a switch between the broker and a direct
//! link, neither lost nor doubled.
//!
//! Every instance numbers the envelopes it streams to each target network ([`Outbox`]),
//! and keeps the most recent ones, up to `max_buffer_size` bytes. When its road to that
//! network changes (the broker is lost and a direct link takes over, or the broker comes
//! back), it sends the kept envelopes again over the new road: whatever the dead broker
//! swallowed arrives that way. The receiver remembers which numbers it has delivered per
//! sender ([`SeenWindow`]) and drops the repeats.
//!
//! Numbers start at the sender's start time in microseconds, so a restarted sender with
//! the same ids is not mistaken for a repeat of its previous life.

use std::collections::{BTreeSet, VecDeque};

use async_nats::Subject;
use bytes::Bytes;

use crate::error::Result;
use crate::events::TransportKind;
use crate::message::{EnvelopeWriter, Message};

/// How many out-of-order numbers a receiver tracks per sender before it treats the
/// oldest gaps as delivered elsewhere (another instance of its network took them).
const MAX_TRACKED_GAPS: usize = 8192;

/// The envelopes recently streamed to one network.
#[derive(Debug)]
pub(crate) struct Outbox {
    next_seq: u64,
    /// Encodes this stream's envelopes.
    writer: EnvelopeWriter,
    /// The road this stream takes now.
    road: TransportKind,
    /// Sent through the broker while it was down: the kept tail goes again once the
    /// peer answers through the broker.
    stale: bool,
    kept: VecDeque<Kept>,
    kept_bytes: usize,
    max_bytes: usize,
}

/// One envelope kept for sending again.
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    pub(crate) subject: Subject,
    pub(crate) payload: Bytes,
}

impl Outbox {
    pub(crate) fn new(first_seq: u64, max_bytes: usize, writer: EnvelopeWriter) -> Self {
        Outbox {
            next_seq: first_seq,
            writer,
            road: TransportKind::Nats,
            stale: false,
            kept: VecDeque::new(),
            kept_bytes: 0,
            max_bytes,
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

    /// Takes the next `count` numbers of this stream; returns the first.
    pub(crate) fn take_seqs(&mut self, count: usize) -> u64 {
        let seq = self.next_seq;
        self.next_seq += count as u64;
        seq
    }

    /// Encodes `messages` as one envelope of this stream, numbered from `first` (taken
    /// with [`Outbox::take_seqs`]).
    pub(crate) fn encode(
        &mut self,
        first: u64,
        messages: &[Message],
        reply_to: Option<&str>,
        compress_above: Option<usize>,
    ) -> Result<Bytes> {
        self.writer
            .encode_batch(first, messages, reply_to, compress_above)
    }

    /// Keeps an envelope that was just sent, forgetting the oldest beyond the byte bound.
    pub(crate) fn keep(&mut self, subject: Subject, payload: Bytes) {
        self.kept_bytes += payload.len() + subject.len();
        self.kept.push_back(Kept { subject, payload });
        while self.kept_bytes > self.max_bytes && self.kept.len() > 1 {
            if let Some(old) = self.kept.pop_front() {
                self.kept_bytes -= old.payload.len() + old.subject.len();
            }
        }
    }

    /// The kept envelopes, oldest first.
    pub(crate) fn kept(&self) -> Vec<Kept> {
        self.kept.iter().cloned().collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.len()
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
    fn outbox_numbers_in_order_and_keeps_a_bounded_tail() {
        let mut outbox = Outbox::new(7, 100, EnvelopeWriter::new("n", "i"));
        assert_eq!(outbox.take_seqs(1), 7);
        assert_eq!(outbox.take_seqs(3), 8);
        assert_eq!(outbox.take_seqs(1), 11);
        for i in 0..50u8 {
            outbox.keep(Subject::from("a.b.c"), Bytes::from(vec![i; 10]));
        }
        // 15 bytes each: at most 6 fit in 100.
        assert_eq!(outbox.len(), 6);
        assert_eq!(outbox.kept()[0].payload[0], 44);
        assert_eq!(outbox.kept()[5].payload[0], 49);
    }
}
