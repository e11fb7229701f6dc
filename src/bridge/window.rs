//! The send window: what a stream has sent and not yet heard acknowledged.
//!
//! Core NATS has no flow control: a publisher that outruns its subscriber fills the
//! subscriber's client buffer, and past its bound the client drops messages. So every
//! stream to another network keeps the envelopes it sent until the receiver acknowledges
//! them ([`super::ack`]), and holds back once `max_buffer_size` bytes (or
//! [`MAX_UNACKED`] envelopes) are unacknowledged. The receiver's buffer then holds at
//! most that much from each sender, whatever the rates.
//!
//! What is kept is also what a stream sends again: all of it when its road changes, and
//! what an acknowledgement is overdue for otherwise, because the broker lost it, a
//! receiver dropped it, or its acknowledgement was lost. Receivers drop what they already
//! have, so sending again is always safe; the rules below keep it rare:
//!
//! * An envelope is overdue once it has waited longer than the retransmission timeout:
//!   four times the smoothed time acknowledgements take (so a receiver working through a
//!   long backlog is not flooded with copies of it), and at least [`RETRANSMIT_AFTER`].
//! * While acknowledgements keep coming, the receiver is alive and what it skipped is
//!   lost: every overdue envelope goes again.
//! * When none has come for a timeout, the receiver may be gone, cut off or stuck behind
//!   a full inbox: only the oldest envelope goes, as a probe, at growing intervals. Once
//!   the receiver acknowledges it, the rest follows.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::Subject;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// The most envelopes a stream leaves unacknowledged, whatever their size: small
/// envelopes count against the receiver's client buffer, which holds 65,536 messages.
pub(crate) const MAX_UNACKED: usize = 4096;

/// The shortest retransmission timeout.
pub(crate) const RETRANSMIT_AFTER: Duration = Duration::from_secs(1);

/// The longest retransmission timeout, however slow acknowledgements are.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// Probes of a silent receiver wait at most this many timeouts apart.
const MAX_PROBE_BACKOFF: u32 = 8;

/// One envelope sent and kept until it is acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    pub(crate) subject: Subject,
    pub(crate) payload: Bytes,
}

#[derive(Debug)]
struct Sent {
    /// The envelope's first sequence number, and how many it holds.
    first: u64,
    count: u64,
    kept: Kept,
    acked: bool,
    /// When it last went out, and whether it went more than once (its acknowledgement
    /// then says nothing of how long one takes).
    sent_at: Instant,
    resent: bool,
}

impl Sent {
    fn bytes(&self) -> usize {
        self.kept.payload.len() + self.kept.subject.len()
    }

    fn last(&self) -> u64 {
        self.first + self.count - 1
    }

    /// Counts it as sent again at `now`, and gives what to send.
    fn send_again(&mut self, now: Instant) -> Kept {
        self.sent_at = now;
        self.resent = true;
        self.kept.clone()
    }
}

#[derive(Debug)]
struct State {
    /// In sequence order; the front is never acknowledged (acknowledged fronts are
    /// dropped at once), so it holds the lowest unacknowledged number.
    sent: VecDeque<Sent>,
    unacked: usize,
    unacked_bytes: usize,
    /// When an acknowledgement last freed something, or the window last filled from empty.
    progress: Instant,
    /// The smoothed time from sending an envelope to hearing it acknowledged.
    smoothed: Option<Duration>,
    /// Probes sent since the last progress, and when the last one went.
    probes: u32,
    probed: Option<Instant>,
}

impl State {
    /// The window moved at `now`: the receiver is heard from, and probing starts over.
    fn progressed(&mut self, now: Instant) {
        self.progress = now;
        self.probes = 0;
        self.probed = None;
    }

    fn timeout(&self) -> Duration {
        self.smoothed
            .map_or(RETRANSMIT_AFTER, |s| s * 4)
            .clamp(RETRANSMIT_AFTER, MAX_TIMEOUT)
    }

    /// When the receiver counts as silent: a timeout after the last progress.
    fn silent_from(&self) -> Instant {
        self.progress + self.timeout()
    }

    /// When the next probe of a silent receiver is due.
    fn probe_at(&self) -> Instant {
        match self.probed {
            None => self.silent_from(),
            Some(at) => at + self.timeout() * (1 << self.probes.min(3)).min(MAX_PROBE_BACKOFF),
        }
    }

    /// The unacknowledged envelopes that `pick` chooses, oldest first, each counted as
    /// sent again at `now`.
    fn send_again(&mut self, now: Instant, pick: impl Fn(&Sent) -> bool) -> Vec<Kept> {
        self.sent
            .iter_mut()
            .filter(|s| !s.acked && pick(s))
            .map(|s| s.send_again(now))
            .collect()
    }

    fn oldest_send(&self) -> Option<Instant> {
        self.sent
            .iter()
            .filter(|s| !s.acked)
            .map(|s| s.sent_at)
            .min()
    }
}

/// The unacknowledged envelopes of one stream, shared by the stream (which adds to it)
/// and the task that applies acknowledgements (which frees it).
#[derive(Debug)]
pub(crate) struct SendWindow {
    state: Mutex<State>,
    /// Woken when an acknowledgement frees room.
    freed: Notify,
    max_bytes: usize,
}

impl SendWindow {
    pub(crate) fn new(max_bytes: usize) -> Self {
        SendWindow {
            state: Mutex::new(State {
                sent: VecDeque::new(),
                unacked: 0,
                unacked_bytes: 0,
                progress: Instant::now(),
                smoothed: None,
                probes: 0,
                probed: None,
            }),
            freed: Notify::new(),
            max_bytes,
        }
    }

    /// Keeps an envelope just sent, numbered `first` to `first + count - 1`.
    pub(crate) fn keep(&self, first: u64, count: usize, subject: Subject, payload: Bytes) {
        let now = Instant::now();
        let mut state = self.state.lock();
        if state.unacked == 0 {
            state.progressed(now);
        }
        let sent = Sent {
            first,
            count: count.max(1) as u64,
            kept: Kept { subject, payload },
            acked: false,
            sent_at: now,
            resent: false,
        };
        state.unacked += 1;
        state.unacked_bytes += sent.bytes();
        state.sent.push_back(sent);
    }

    /// Whether another envelope may go: always when nothing is unacknowledged (however
    /// large it is), else while both bounds leave room.
    pub(crate) fn has_room(&self) -> bool {
        let state = self.state.lock();
        state.unacked == 0 || (state.unacked_bytes < self.max_bytes && state.unacked < MAX_UNACKED)
    }

    /// Waits until an acknowledgement frees room, or `deadline` passes.
    pub(crate) async fn freed_or(&self, deadline: Instant) {
        self.acknowledged_unless(Self::has_room, deadline).await;
    }

    /// Waits until an acknowledgement frees something, or `deadline` passes; at once
    /// when nothing waits for one.
    pub(crate) async fn acknowledged_or(&self, deadline: Instant) {
        self.acknowledged_unless(|w| w.unacked_count() == 0, deadline)
            .await;
    }

    /// Waits for the next acknowledgement that frees something, or `deadline`; at once
    /// when `done` already holds. The wait is registered before `done` is looked at, so
    /// an acknowledgement in between is not missed.
    async fn acknowledged_unless(&self, done: impl Fn(&Self) -> bool, deadline: Instant) {
        let freed = self.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        if done(self) {
            return;
        }
        tokio::select! {
            _ = freed => {}
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
    }

    /// Marks every envelope whose numbers lie wholly in one of `ranges` (first, last) as
    /// delivered; returns how many were newly acknowledged.
    pub(crate) fn acknowledge(&self, ranges: &[(u64, u64)]) -> usize {
        let now = Instant::now();
        let mut state = self.state.lock();
        let mut newly = 0;
        for &(lo, hi) in ranges {
            let start = state.sent.partition_point(|s| s.first < lo);
            for i in start..state.sent.len() {
                let sent = &state.sent[i];
                if sent.first > hi {
                    break;
                }
                if sent.acked || sent.last() > hi {
                    continue;
                }
                let (bytes, took) = (sent.bytes(), (!sent.resent).then(|| now - sent.sent_at));
                state.sent[i].acked = true;
                state.unacked -= 1;
                state.unacked_bytes -= bytes;
                newly += 1;
                if let Some(took) = took {
                    state.smoothed = Some(match state.smoothed {
                        None => took,
                        Some(s) => (s * 7 + took) / 8,
                    });
                }
            }
        }
        while state.sent.front().is_some_and(|s| s.acked) {
            state.sent.pop_front();
        }
        if newly > 0 {
            state.progressed(now);
            drop(state);
            self.freed.notify_waiters();
        }
        newly
    }

    /// The lowest unacknowledged number, or `next` when everything is acknowledged:
    /// every number below it has been delivered somewhere.
    pub(crate) fn floor(&self, next: u64) -> u64 {
        self.state.lock().sent.front().map_or(next, |s| s.first)
    }

    /// Every unacknowledged envelope, oldest first, to send again now (on a new road).
    pub(crate) fn resend_all(&self) -> Vec<Kept> {
        self.state.lock().send_again(Instant::now(), |_| true)
    }

    /// How long the receiver has acknowledged nothing, once that is longer than a
    /// timeout and something waits.
    pub(crate) fn silent_for(&self, now: Instant) -> Option<Duration> {
        let state = self.state.lock();
        (state.unacked > 0 && now >= state.silent_from()).then(|| now - state.progress)
    }

    /// How many envelopes wait for an acknowledgement.
    pub(crate) fn unacked_count(&self) -> usize {
        self.state.lock().unacked
    }

    /// When something is next due to go again, if anything waits.
    pub(crate) fn retransmit_at(&self) -> Option<Instant> {
        let state = self.state.lock();
        let oldest = state.oldest_send()?;
        let silent = state.silent_from();
        let overdue = oldest + state.timeout();
        Some(if overdue < silent {
            overdue
        } else {
            state.probe_at()
        })
    }

    /// What is due to go again by `now`, oldest first (see the module's rules); each
    /// envelope returned counts as sent now.
    pub(crate) fn due(&self, now: Instant) -> Vec<Kept> {
        let mut state = self.state.lock();
        if state.unacked == 0 {
            return Vec::new();
        }
        let timeout = state.timeout();
        if now < state.silent_from() {
            return state.send_again(now, |s| now.duration_since(s.sent_at) >= timeout);
        }
        if now < state.probe_at() {
            return Vec::new();
        }
        state.probes += 1;
        state.probed = Some(now);
        state
            .sent
            .iter_mut()
            .find(|s| !s.acked)
            .map(|oldest| oldest.send_again(now))
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window_with(max_bytes: usize, envelopes: &[(u64, usize)]) -> SendWindow {
        let window = SendWindow::new(max_bytes);
        for &(first, count) in envelopes {
            window.keep(
                first,
                count,
                Subject::from("a.b.c"),
                Bytes::from(vec![first as u8; 5]),
            );
        }
        window
    }

    fn firsts(kept: &[Kept]) -> Vec<u8> {
        kept.iter().map(|k| k.payload[0]).collect()
    }

    #[test]
    fn acknowledged_envelopes_free_room_in_any_order() {
        // 10 bytes each (5 of payload, 5 of subject): two fit under 25, three do not.
        let window = window_with(25, &[(10, 1), (11, 3), (14, 1)]);
        assert!(!window.has_room());
        assert_eq!(window.floor(15), 10);
        assert_eq!(window.acknowledge(&[(11, 14)]), 2);
        assert!(window.has_room());
        assert_eq!(window.floor(15), 10, "the oldest is still unacknowledged");
        assert_eq!(window.unacked_count(), 1);
        assert_eq!(window.acknowledge(&[(10, 10)]), 1);
        assert_eq!(
            window.floor(15),
            15,
            "all acknowledged: the floor is the next number"
        );
        assert_eq!(window.unacked_count(), 0);
        assert!(
            window.retransmit_at().is_none(),
            "nothing left to send again"
        );
    }

    #[test]
    fn a_range_covering_part_of_a_batch_does_not_acknowledge_it() {
        let window = window_with(1 << 20, &[(20, 4)]);
        assert_eq!(window.acknowledge(&[(20, 22)]), 0);
        assert_eq!(window.acknowledge(&[(20, 22), (23, 23)]), 0);
        assert_eq!(window.acknowledge(&[(19, 30)]), 1);
        assert_eq!(
            window.acknowledge(&[(19, 30)]),
            0,
            "a repeat changes nothing"
        );
    }

    #[test]
    fn one_envelope_always_fits_and_the_count_bound_holds_for_small_ones() {
        let window = SendWindow::new(1);
        assert!(window.has_room());
        window.keep(1, 1, Subject::from("a.b.c"), Bytes::from(vec![0u8; 100]));
        assert!(!window.has_room());

        let window = SendWindow::new(usize::MAX);
        for seq in 0..MAX_UNACKED as u64 {
            assert!(window.has_room());
            window.keep(seq, 1, Subject::from("a"), Bytes::new());
        }
        assert!(!window.has_room());
    }

    /// Moves everything the window remembers `by` into the past.
    fn age(window: &SendWindow, by: Duration) {
        let mut state = window.state.lock();
        state.progress -= by;
        state.probed = state.probed.map(|at| at - by);
        for sent in &mut state.sent {
            sent.sent_at -= by;
        }
    }

    #[test]
    fn while_acknowledgements_come_every_overdue_envelope_goes_again() {
        let start = Instant::now();
        let window = window_with(1 << 20, &[(1, 1), (2, 1)]);
        assert!(window.due(start).is_empty(), "nothing is overdue yet");
        assert!(window.retransmit_at().unwrap() - start >= RETRANSMIT_AFTER);
        // The receiver skipped 1 and 2, sent a second ago, and acknowledges 3 at once:
        // it is alive, so both go again now.
        age(&window, Duration::from_millis(1100));
        window.keep(3, 1, Subject::from("a.b.c"), Bytes::from(vec![3u8; 5]));
        window.acknowledge(&[(3, 3)]);
        let now = Instant::now();
        assert!(window.retransmit_at().unwrap() <= now);
        assert_eq!(firsts(&window.due(now)), [1, 2]);
        assert!(window.due(now).is_empty(), "they count as just sent");
    }

    #[test]
    fn a_silent_receiver_gets_only_the_oldest_at_growing_intervals_then_the_rest() {
        let window = window_with(1 << 20, &[(1, 1), (2, 1), (3, 1)]);
        age(&window, Duration::from_millis(1100));
        let now = Instant::now();
        // Overdue and silent: a probe, not the whole window.
        assert_eq!(firsts(&window.due(now)), [1]);
        let next = window.retransmit_at().unwrap();
        assert!(next - now >= RETRANSMIT_AFTER * 2, "{:?}", next - now);
        assert!(window.due(now).is_empty());
        age(&window, RETRANSMIT_AFTER * 2);
        let now = Instant::now();
        assert_eq!(firsts(&window.due(now)), [1]);
        let next = window.retransmit_at().unwrap();
        assert!(next - now >= RETRANSMIT_AFTER * 4, "{:?}", next - now);
        // The receiver answers the probe: it is back, and the others are long overdue.
        window.acknowledge(&[(1, 1)]);
        let now = Instant::now();
        assert!(window.retransmit_at().unwrap() <= now, "due at once");
        assert_eq!(firsts(&window.due(now)), [2, 3]);
    }

    #[test]
    fn slow_acknowledgements_stretch_the_timeout() {
        let window = window_with(1 << 20, &[(1, 1)]);
        age(&window, Duration::from_secs(2));
        window.acknowledge(&[(1, 1)]);
        window.keep(2, 1, Subject::from("a"), Bytes::from_static(b"x"));
        let sent = Instant::now();
        let at = window.retransmit_at().unwrap();
        // One acknowledgement that took 2 s: the timeout is four times that.
        assert!(at - sent >= Duration::from_secs(7), "{:?}", at - sent);
        assert!(window.resend_all().len() == 1);
    }
}
