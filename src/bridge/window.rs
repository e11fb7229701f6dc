//! The send window: what a stream has sent and not yet heard handled.
//!
//! Core NATS has no flow control and no delivery guarantee: a publisher that outruns its
//! subscriber fills the subscriber's client buffer, past its bound the client drops
//! messages, and whatever is in flight when a server or a connection dies is gone. So
//! every stream to another network keeps each envelope it sent until the receiver says
//! it is *handled* ([`super::ledger`]), and holds back once `max_buffer_size` bytes (or
//! [`MAX_UNACKED`] envelopes) are unhandled. Each kept envelope also keeps the
//! [`Causes`] of its messages: the acknowledgements this network owes upstream wait
//! until the next network has handled what this one sent on.
//!
//! An envelope is in one of three states:
//!
//! * **sent**, not yet heard of. It goes again when it is *overdue*: a retransmission
//!   timeout has passed (the smoothed time until a receiver says it has an envelope,
//!   plus four deviations, at least [`RETRANSMIT_AFTER`]) *and* an envelope sent after
//!   it has been heard of, so it was overtaken: lost, not merely queued behind a slow
//!   actor. When the receiver has said nothing at all for a timeout, only the oldest goes,
//!   as a probe, at growing intervals, until the receiver answers.
//! * **accepted** by a named instance, which holds it and is handling it. However long
//!   that takes, it is not sent again, unless that instance dies (its liveness entry
//!   goes, or a new incarnation replaces it: [`SendWindow::instance_gone`]), when it goes
//!   again at once, to whichever instance is left.
//! * **handled**: forgotten, and its causes released.
//!
//! When the road changes, or the broker comes back after an outage (which may have
//! swallowed acknowledgements), everything unhandled goes again; receivers recognise what
//! they already hold. What goes again is encoded afresh: it tells the current floor and
//! is marked redelivered.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Subject;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::network::Causes;

/// The most envelopes a stream leaves unhandled, whatever their size: small envelopes
/// count against the receiver's client buffer, which holds 65,536 messages.
pub(crate) const MAX_UNACKED: usize = 4096;

/// The most envelopes from the oldest unhandled one to the newest, handled or not: what
/// a receiver must remember to recognise repeats is bounded by this.
pub(crate) const MAX_SPAN: usize = 4 * MAX_UNACKED;

/// The shortest retransmission timeout.
pub(crate) const RETRANSMIT_AFTER: Duration = Duration::from_secs(1);

/// The longest retransmission timeout, however slow acknowledgements are.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// The oldest unhandled envelope, held by a live instance, goes again after this many
/// timeouts (and at least [`MIN_HELD_PATIENCE`]) in case its acknowledgement was lost.
const HELD_PATIENCE: u32 = 8;

/// See [`HELD_PATIENCE`].
const MIN_HELD_PATIENCE: Duration = Duration::from_secs(5);

/// Probes of a silent receiver wait at most this many timeouts apart.
const MAX_PROBE_BACKOFF: u32 = 8;

/// One envelope to send again: its subject and its uncompressed bytes as first sent.
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    pub(crate) subject: Subject,
    pub(crate) plain: Bytes,
}

/// Who holds an envelope.
#[derive(Debug, Clone, PartialEq)]
enum Holder {
    /// Nobody has said so yet.
    Unheard,
    /// This instance of the receiving network accepted it.
    Instance(Arc<str>),
}

#[derive(Debug)]
struct Sent {
    /// The envelope's first sequence number, and how many it holds.
    first: u64,
    count: u64,
    kept: Kept,
    holder: Holder,
    handled: bool,
    /// Its holder died: it goes again at once.
    orphaned: bool,
    /// When it last went out, its place in the order of transmissions, and whether it
    /// went more than once (its acknowledgement then says nothing of how long one takes).
    sent_at: Instant,
    order: u64,
    resent: bool,
    /// Released once it is handled.
    causes: Causes,
}

impl Sent {
    fn bytes(&self) -> usize {
        self.kept.plain.len() + self.kept.subject.len()
    }

    fn last(&self) -> u64 {
        self.first + self.count - 1
    }

    fn within(&self, lo: u64, hi: u64) -> bool {
        self.first >= lo && self.last() <= hi
    }
}

#[derive(Debug)]
struct State {
    /// In sequence order; the front is never handled (handled fronts are dropped at
    /// once), so it holds the lowest unhandled number.
    sent: VecDeque<Sent>,
    unacked: usize,
    unacked_bytes: usize,
    /// Transmissions so far; the order of the latest envelope heard of.
    transmissions: u64,
    heard_order: u64,
    /// When the receiver was last heard from, or the window last filled from empty.
    progress: Instant,
    /// Smoothed time until an envelope is heard of, and its mean deviation.
    smoothed: Option<Duration>,
    deviation: Duration,
    /// Probes sent since the last progress, and when the last one went.
    probes: u32,
    probed: Option<Instant>,
    /// Envelopes sent again so far.
    resent: u64,
}

impl State {
    /// The window moved at `now`: the receiver is heard from, and probing starts over.
    fn progressed(&mut self, now: Instant) {
        self.progress = now;
        self.probes = 0;
        self.probed = None;
    }

    fn sample(&mut self, took: Duration) {
        match self.smoothed {
            None => {
                self.smoothed = Some(took);
                self.deviation = took / 2;
            }
            Some(s) => {
                let delta = took.abs_diff(s);
                self.deviation = (self.deviation * 3 + delta) / 4;
                self.smoothed = Some((s * 7 + took) / 8);
            }
        }
    }

    fn timeout(&self) -> Duration {
        self.smoothed
            .map_or(RETRANSMIT_AFTER, |s| s + self.deviation * 4)
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

    fn overtaken(&self, sent: &Sent) -> bool {
        !sent.handled && sent.holder == Holder::Unheard && sent.order < self.heard_order
    }

    /// When `sent` is due to go again without probing, if ever. `oldest` says whether it
    /// is the oldest unhandled envelope: held that long by an instance that is alive, it
    /// goes again now and then, in case the acknowledgement that it was handled was lost
    /// (the instance says so again, or drops the copy if it is still handling it).
    fn due_at(&self, sent: &Sent, timeout: Duration, oldest: bool) -> Option<Instant> {
        if sent.handled {
            None
        } else if sent.orphaned {
            Some(sent.sent_at)
        } else if self.overtaken(sent) {
            Some(sent.sent_at + timeout)
        } else if oldest && sent.holder != Holder::Unheard {
            Some(sent.sent_at + (timeout * HELD_PATIENCE).max(MIN_HELD_PATIENCE))
        } else {
            None
        }
    }

    /// The index of the oldest unhandled envelope.
    fn oldest(&self) -> Option<usize> {
        self.sent.iter().position(|s| !s.handled)
    }

    /// Counts the envelope at `index` as sent again at `now`, and gives what to send.
    fn send_again(&mut self, index: usize, now: Instant) -> Kept {
        self.transmissions += 1;
        self.resent += 1;
        let order = self.transmissions;
        let sent = &mut self.sent[index];
        sent.sent_at = now;
        sent.order = order;
        sent.resent = true;
        sent.orphaned = false;
        sent.kept.clone()
    }
}

/// The unhandled envelopes of one stream, shared by the stream (which adds to it) and
/// the task that applies acknowledgements (which frees it).
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
                transmissions: 0,
                heard_order: 0,
                progress: Instant::now(),
                smoothed: None,
                deviation: Duration::ZERO,
                probes: 0,
                probed: None,
                resent: 0,
            }),
            freed: Notify::new(),
            max_bytes,
        }
    }

    /// Keeps an envelope about to be sent, numbered `first` to `first + count - 1`,
    /// with the causes of its messages. Kept before it is sent, so that an
    /// acknowledgement that comes back at once finds it.
    pub(crate) fn keep(&self, first: u64, count: usize, kept: Kept, causes: Causes) {
        let now = Instant::now();
        let mut state = self.state.lock();
        if state.unacked == 0 {
            state.progressed(now);
        }
        state.transmissions += 1;
        let sent = Sent {
            first,
            count: count.max(1) as u64,
            kept,
            holder: Holder::Unheard,
            handled: false,
            orphaned: false,
            sent_at: now,
            order: state.transmissions,
            resent: false,
            causes,
        };
        state.unacked += 1;
        state.unacked_bytes += sent.bytes();
        state.sent.push_back(sent);
    }

    /// Whether another envelope may go: always when nothing is unhandled (however large
    /// it is), else while every bound leaves room.
    pub(crate) fn has_room(&self) -> bool {
        let state = self.state.lock();
        state.unacked == 0
            || (state.unacked_bytes < self.max_bytes
                && state.unacked < MAX_UNACKED
                && state.sent.len() < MAX_SPAN)
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

    /// Applies an acknowledgement from `instance`: the envelopes whose numbers lie wholly
    /// in one of `accepted` are held there; those wholly in one of `handled` are done.
    /// Returns how many were newly handled; their causes are released after the window's
    /// lock is let go, since releasing one may acknowledge upstream.
    pub(crate) fn acknowledge(
        &self,
        instance: &str,
        handled: &[(u64, u64)],
        accepted: &[(u64, u64)],
    ) -> usize {
        let now = Instant::now();
        let mut released = Vec::new();
        let mut state = self.state.lock();
        let mut heard = false;
        let mut newly = 0;
        let holder: Option<Arc<str>> = (!accepted.is_empty()).then(|| instance.into());
        for (ranges, done) in [(accepted, false), (handled, true)] {
            for &(lo, hi) in ranges {
                let start = state.sent.partition_point(|s| s.first < lo);
                for i in start..state.sent.len() {
                    let sent = &state.sent[i];
                    if sent.first > hi {
                        break;
                    }
                    if sent.handled || !sent.within(lo, hi) {
                        continue;
                    }
                    let first_heard = sent.holder == Holder::Unheard;
                    let (took, order, bytes) = (
                        (first_heard && !sent.resent).then(|| now - sent.sent_at),
                        sent.order,
                        sent.bytes(),
                    );
                    if let Some(took) = took {
                        state.sample(took);
                    }
                    state.heard_order = state.heard_order.max(order);
                    heard = true;
                    let sent = &mut state.sent[i];
                    sent.orphaned = false;
                    if done {
                        sent.handled = true;
                        released.push(sent.causes.take());
                        state.unacked -= 1;
                        state.unacked_bytes -= bytes;
                        newly += 1;
                    } else if let Some(holder) = &holder {
                        sent.holder = Holder::Instance(holder.clone());
                    }
                }
            }
        }
        while state.sent.front().is_some_and(|s| s.handled) {
            state.sent.pop_front();
        }
        if heard {
            state.progressed(now);
        }
        drop(state);
        if newly > 0 {
            self.freed.notify_waiters();
        }
        for causes in released {
            causes.release();
        }
        newly
    }

    /// The instances that hold unhandled envelopes of this window.
    pub(crate) fn holders(&self) -> Vec<Arc<str>> {
        let state = self.state.lock();
        let mut holders: Vec<Arc<str>> = Vec::new();
        for sent in state.sent.iter().filter(|s| !s.handled) {
            if let Holder::Instance(i) = &sent.holder
                && !holders.contains(i)
            {
                holders.push(i.clone());
            }
        }
        holders
    }

    /// `instance` of the receiving network is gone: what it held and had not handled
    /// goes again at once.
    pub(crate) fn instance_gone(&self, instance: &str) -> usize {
        let mut state = self.state.lock();
        let mut orphaned = 0;
        for sent in state.sent.iter_mut() {
            if !sent.handled && matches!(&sent.holder, Holder::Instance(i) if &**i == instance) {
                sent.holder = Holder::Unheard;
                sent.orphaned = true;
                orphaned += 1;
            }
        }
        orphaned
    }

    /// Gives up on the unhandled envelopes whose subjects start with `prefix`: outputs
    /// returned to an instance that died, which no other instance could take. They count
    /// as handled (refused), so their causes are released and the window makes room.
    /// Returns how many.
    pub(crate) fn give_up_on(&self, prefix: &str) -> usize {
        let mut released = Vec::new();
        let mut state = self.state.lock();
        let mut count = 0;
        for i in 0..state.sent.len() {
            let sent = &state.sent[i];
            if sent.handled || !sent.kept.subject.starts_with(prefix) {
                continue;
            }
            let bytes = sent.bytes();
            let sent = &mut state.sent[i];
            sent.handled = true;
            released.push(sent.causes.take());
            state.unacked -= 1;
            state.unacked_bytes -= bytes;
            count += 1;
        }
        while state.sent.front().is_some_and(|s| s.handled) {
            state.sent.pop_front();
        }
        drop(state);
        if count > 0 {
            self.freed.notify_waiters();
        }
        for causes in released {
            causes.release();
        }
        count
    }

    /// An instance of the receiving network appeared: a silent stream probes it at once
    /// rather than at its backed-off interval.
    pub(crate) fn instance_appeared(&self) {
        let mut state = self.state.lock();
        if state.probed.is_some() {
            state.probes = 0;
            state.probed = Some(Instant::now() - state.timeout());
        }
    }

    /// The lowest unhandled number, or `next` when everything is handled: every number
    /// below it has been handled somewhere.
    pub(crate) fn floor(&self, next: u64) -> u64 {
        self.state.lock().sent.front().map_or(next, |s| s.first)
    }

    /// Every unhandled envelope, oldest first, to send again now (on a new road, or
    /// after the broker came back).
    pub(crate) fn resend_all(&self) -> Vec<(u64, Kept)> {
        let now = Instant::now();
        let mut state = self.state.lock();
        (0..state.sent.len())
            .filter(|&i| !state.sent[i].handled)
            .collect::<Vec<_>>()
            .into_iter()
            .map(|i| (state.sent[i].first, state.send_again(i, now)))
            .collect()
    }

    /// How long the receiver has said nothing, once that is longer than a timeout and
    /// something waits.
    pub(crate) fn silent_for(&self, now: Instant) -> Option<Duration> {
        let state = self.state.lock();
        (state.unacked > 0 && now >= state.silent_from()).then(|| now - state.progress)
    }

    /// How many envelopes wait to be handled.
    pub(crate) fn unacked_count(&self) -> usize {
        self.state.lock().unacked
    }

    /// How many envelopes went again so far.
    pub(crate) fn resent_count(&self) -> u64 {
        self.state.lock().resent
    }

    /// When something is next due to go again, if anything waits.
    pub(crate) fn retransmit_at(&self) -> Option<Instant> {
        let state = self.state.lock();
        if state.unacked == 0 {
            return None;
        }
        let timeout = state.timeout();
        let oldest = state.oldest();
        let overdue = state
            .sent
            .iter()
            .enumerate()
            .filter_map(|(i, s)| state.due_at(s, timeout, Some(i) == oldest))
            .min();
        let probe = state.probe_at();
        Some(overdue.map_or(probe, |at| at.min(probe)))
    }

    /// What is due to go again by `now`, oldest first, with its first number (see the
    /// module's rules); each envelope returned counts as sent now.
    pub(crate) fn due(&self, now: Instant) -> Vec<(u64, Kept)> {
        let mut state = self.state.lock();
        if state.unacked == 0 {
            return Vec::new();
        }
        let timeout = state.timeout();
        let oldest = state.oldest();
        let due: Vec<usize> = (0..state.sent.len())
            .filter(|&i| {
                state
                    .due_at(&state.sent[i], timeout, Some(i) == oldest)
                    .is_some_and(|at| at <= now)
            })
            .collect();
        if !due.is_empty() {
            return due
                .into_iter()
                .map(|i| (state.sent[i].first, state.send_again(i, now)))
                .collect();
        }
        if now < state.probe_at() {
            return Vec::new();
        }
        // Silent: ask with the oldest unhandled envelope (its holder may have lost our
        // acknowledgement, and a receiver that is alone holds later ones back until it is
        // handled), and, when someone holds that one, with the oldest nobody said they
        // hold too.
        let oldest = state.sent.iter().position(|s| !s.handled);
        let unheard = state
            .sent
            .iter()
            .position(|s| !s.handled && s.holder == Holder::Unheard);
        let probes: Vec<usize> = match (oldest, unheard) {
            (Some(oldest), Some(unheard)) if oldest != unheard => vec![oldest, unheard],
            (Some(oldest), _) => vec![oldest],
            (None, _) => return Vec::new(),
        };
        state.probes += 1;
        state.probed = Some(now);
        probes
            .into_iter()
            .map(|i| (state.sent[i].first, state.send_again(i, now)))
            .collect()
    }
}

#[cfg(test)]
mod tests;
