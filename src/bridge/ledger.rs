//! The inbound ledger: for every sender, what this instance has delivered and handled,
//! and the acknowledgements it owes.
//!
//! It is the one owner of receive-side delivery state. The dispatcher asks it what to do
//! with each streamed envelope ([`Ledger::arrive`]); the completion of an envelope's
//! [`Cause`](crate::network::Cause) tells it the envelope was handled
//! ([`Ledger::complete`]); the acknowledgement task takes what is owed
//! ([`Ledger::take_owed`]) and sends it.
//!
//! **Repeats.** A sender keeps every envelope until it hears it handled, and tells in
//! each envelope its *floor*: every number below it was handled by some instance of this
//! network. So a receiver need remember only the numbers at or above the floor that it
//! delivered itself. A number below the floor is a repeat; a number at or above it that
//! this instance did not deliver is new here, whatever else the instance has seen: in a
//! queue group the numbers in between belong to other instances, and one of them may
//! have died with it. Memory is bounded by the sender's window, not by a guess.
//!
//! **Two acknowledgements.** *Accepted* (`q`) says "this instance holds it": the sender
//! stops timing it out, and sends it again only if this instance dies. *Handled* (`s`)
//! says the message and everything it caused are handled: the sender forgets it. A
//! repeat of something still being handled is dropped silently (its acknowledgement
//! will come); a repeat of something handled is acknowledged again, since the first
//! acknowledgement may have been lost.
//!
//! **Order.** A receiver that is its network's only instance sees every number, so a
//! gap means a loss that is on its way again: what comes after a gap is held back
//! ([`Arrival::Hold`]) until the gap fills or the sender's floor passes it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::ranges::RangeSet;
use crate::events::TransportKind;

/// Envelopes from one sender acknowledged together, at most.
pub(crate) const ACK_EVERY: usize = 32;

/// Bytes of envelopes from one sender acknowledged together, about at most.
pub(crate) const ACK_BYTES: usize = 256 * 1024;

/// How long an acknowledgement may wait for others to go with it.
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(10);

/// Runs of delivered numbers remembered for a sender that tells no floor (a client in
/// another language that never sends again): past this, the oldest are forgotten.
const FOREIGN_RUNS: usize = 4096;

/// The notice a receiver sends to a sender: which numbers of its stream to this network
/// this instance holds (`q`) and has handled (`s`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Ack {
    /// The receiving network: the sender's stream to it is the one acknowledged.
    #[serde(rename = "n")]
    pub(crate) network: String,
    /// The receiving instance.
    #[serde(rename = "i")]
    pub(crate) instance: String,
    /// Handled: ranges of sequence numbers, first and last, each inclusive.
    #[serde(rename = "s", default)]
    pub(crate) handled: Vec<(u64, u64)>,
    /// Accepted and being handled here: ranges as above.
    #[serde(rename = "q", default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) accepted: Vec<(u64, u64)>,
}

/// What the dispatcher should do with a streamed envelope.
#[derive(Debug, PartialEq)]
pub(crate) enum Arrival {
    /// Deliver every message.
    Fresh,
    /// Deliver the messages marked true; the others were delivered here before.
    Partly(Vec<bool>),
    /// Nothing new: drop it.
    Repeat,
    /// Something before it is missing and will be sent again: hold it, unacknowledged.
    Hold,
}

/// Acknowledgements owed to one sender.
#[derive(Debug, Default)]
struct Owed {
    handled: Vec<(u64, u64)>,
    accepted: Vec<(u64, u64)>,
    envelopes: usize,
    bytes: usize,
    /// The road the latest of them came by, which the acknowledgement takes.
    road: Option<TransportKind>,
}

impl Owed {
    fn push(ranges: &mut Vec<(u64, u64)>, first: u64, last: u64) {
        match ranges.last_mut() {
            Some(range) if range.1.checked_add(1) == Some(first) => range.1 = last,
            _ => ranges.push((first, last)),
        }
    }

    /// Notes a range owed; true once enough waits to send at once.
    fn note(
        &mut self,
        handled: bool,
        first: u64,
        last: u64,
        bytes: usize,
        road: TransportKind,
    ) -> bool {
        let ranges = if handled {
            &mut self.handled
        } else {
            &mut self.accepted
        };
        Self::push(ranges, first, last);
        self.envelopes += 1;
        self.bytes += bytes;
        self.road = Some(road);
        self.envelopes >= ACK_EVERY || self.bytes >= ACK_BYTES
    }

    fn is_empty(&self) -> bool {
        self.handled.is_empty() && self.accepted.is_empty()
    }
}

/// One sender's page of the ledger.
#[derive(Debug, Default)]
struct Book {
    /// The start of the sender this book is about (its stream's first number).
    epoch: Option<u64>,
    /// The highest floor the sender told: everything below was handled somewhere.
    floor: Option<u64>,
    /// Numbers at or above the floor that this instance delivered.
    delivered: RangeSet,
    /// Of those, the ones handled.
    handled: RangeSet,
    owed: Owed,
}

impl Book {
    fn raise_floor(&mut self, floor: u64) {
        if self.floor.is_some_and(|f| f >= floor) {
            return;
        }
        self.floor = Some(floor);
        self.delivered.forget_below(floor);
        self.handled.forget_below(floor);
    }

    /// Whether a number before `first`, at or above the floor, was not delivered here.
    fn gap_before(&self, first: u64) -> bool {
        match self.floor {
            Some(floor) if first > floor => !self.delivered.contains_all(floor, first - 1),
            _ => false,
        }
    }
}

/// Every sender's book, by network, then instance.
type Books = HashMap<String, HashMap<String, Book>>;

/// What is owed to one sender, ready to send.
#[derive(Debug)]
pub(crate) struct Notice {
    pub(crate) network: String,
    pub(crate) instance: String,
    pub(crate) road: TransportKind,
    pub(crate) handled: Vec<(u64, u64)>,
    pub(crate) accepted: Vec<(u64, u64)>,
}

/// The receive-side delivery state of every sender; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    books: Mutex<Books>,
    /// Something is owed.
    owed: Notify,
    /// Enough is owed to some sender to send it now.
    full: Notify,
    /// When the oldest owed acknowledgement was noted.
    since: Mutex<Option<Instant>>,
}

impl Ledger {
    /// Decides what to do with a streamed envelope of `sender` numbered `first..=last`,
    /// which tells the sender's `floor` (if it does), came by `road` and is `bytes`
    /// long. `alone` says whether this instance is its network's only one; it is asked
    /// only when the envelope follows a gap. New numbers count as delivered from now on.
    pub(crate) fn arrive(
        &self,
        sender: (&str, &str),
        (first, last): (u64, u64),
        floor: Option<u64>,
        (bytes, road): (usize, TransportKind),
        alone: impl FnOnce() -> bool,
    ) -> Arrival {
        let mut books = self.books.lock();
        let book = book_of(&mut books, sender);
        if let Some(floor) = floor {
            book.raise_floor(floor);
        }
        if book.floor.is_some_and(|f| last < f) {
            return Arrival::Repeat;
        }
        if book.delivered.contains_all(first, last) {
            if book.handled.contains_all(first, last) {
                // Its acknowledgement may have been lost: say it again.
                let full = book.owed.note(true, first, last, bytes, road);
                drop(books);
                self.notify(full);
            }
            return Arrival::Repeat;
        }
        if floor.is_some() && book.gap_before(first) && alone() {
            return Arrival::Hold;
        }
        let fresh: Vec<bool> = (first..=last)
            .map(|n| !book.delivered.contains(n))
            .collect();
        book.delivered.insert(first, last);
        if floor.is_none()
            && let Some(forgotten) = book.delivered.forget_oldest(FOREIGN_RUNS)
        {
            book.raise_floor(forgotten + 1);
        }
        let full = book.owed.note(false, first, last, bytes, road);
        drop(books);
        self.notify(full);
        if fresh.iter().all(|f| *f) {
            Arrival::Fresh
        } else {
            Arrival::Partly(fresh)
        }
    }

    /// Whether `sender` still misses something before `first` (see [`Arrival::Hold`]).
    pub(crate) fn gap_before(&self, sender: (&str, &str), first: u64) -> bool {
        self.books
            .lock()
            .get(sender.0)
            .and_then(|books| books.get(sender.1))
            .is_some_and(|book| book.gap_before(first))
    }

    /// Notes the epoch `sender` tells (the first number of its current start). A later
    /// epoch is a restarted sender, whose numbers may be lower than its previous life's:
    /// its book starts afresh. False for an earlier epoch: a straggler from a previous
    /// life, to drop.
    pub(crate) fn epoch(&self, sender: (&str, &str), epoch: u64) -> bool {
        let mut books = self.books.lock();
        let book = book_of(&mut books, sender);
        match book.epoch {
            Some(known) if epoch < known => false,
            Some(known) if epoch == known => true,
            _ => {
                if book.epoch.is_some() {
                    *book = Book::default();
                }
                book.epoch = Some(epoch);
                true
            }
        }
    }

    /// Whether this instance keeps a book for `instance` of `network` (it has received
    /// from it since it last forgot it).
    pub(crate) fn knows(&self, network: &str, instance: &str) -> bool {
        self.books
            .lock()
            .get(network)
            .is_some_and(|instances| instances.contains_key(instance))
    }

    /// The senders this instance keeps a book for, as `(network, instance)`.
    pub(crate) fn senders(&self) -> Vec<(String, String)> {
        self.books
            .lock()
            .iter()
            .flat_map(|(network, instances)| {
                instances.keys().map(move |i| (network.clone(), i.clone()))
            })
            .collect()
    }

    /// Forgets `instance` of `network`, which died: memory stays bounded however many
    /// senders come and go. An acknowledgement still owed to it is dropped with it.
    pub(crate) fn forget(&self, network: &str, instance: &str) {
        let mut books = self.books.lock();
        if let Some(instances) = books.get_mut(network) {
            instances.remove(instance);
            if instances.is_empty() {
                books.remove(network);
            }
        }
    }

    /// The envelope `first..=last` of `sender` is handled (`handled`), or was dropped
    /// unhandled when the network halted: then it is forgotten, so that it is delivered
    /// if it comes again, and never acknowledged.
    pub(crate) fn complete(
        &self,
        sender: (&str, &str),
        (first, last): (u64, u64),
        (bytes, road): (usize, TransportKind),
        handled: bool,
    ) {
        let mut books = self.books.lock();
        let book = book_of(&mut books, sender);
        if !handled {
            book.delivered.remove(first, last);
            return;
        }
        if book.floor.is_none_or(|f| last >= f) {
            book.handled.insert(first, last);
        }
        let full = book.owed.note(true, first, last, bytes, road);
        drop(books);
        self.notify(full);
    }

    fn notify(&self, full: bool) {
        self.since.lock().get_or_insert_with(Instant::now);
        self.owed.notify_one();
        if full {
            self.full.notify_one();
        }
    }

    /// Waits until something is owed, then until it is due: [`ACK_DELAY`] after the
    /// first, or at once when enough waits for one sender.
    pub(crate) async fn due(&self) {
        self.owed.notified().await;
        let since = (*self.since.lock()).unwrap_or_else(Instant::now);
        tokio::select! {
            _ = self.full.notified() => {}
            _ = tokio::time::sleep_until((since + ACK_DELAY).into()) => {}
        }
    }

    /// Takes everything owed, per sender.
    pub(crate) fn take_owed(&self) -> Vec<Notice> {
        *self.since.lock() = None;
        let mut books = self.books.lock();
        let mut notices = Vec::new();
        for (network, instances) in books.iter_mut() {
            for (instance, book) in instances.iter_mut() {
                if book.owed.is_empty() {
                    continue;
                }
                let owed = std::mem::take(&mut book.owed);
                if let Some(road) = owed.road {
                    notices.push(Notice {
                        network: network.clone(),
                        instance: instance.clone(),
                        road,
                        // What is handled already need not be said to be held.
                        accepted: not_within(owed.accepted, &owed.handled),
                        handled: owed.handled,
                    });
                }
            }
        }
        notices
    }
}

/// The ranges of `ranges` that lie in none of `within`, whole ranges only (an accepted
/// range partly handled is still said to be held; acknowledging it twice is harmless).
fn not_within(ranges: Vec<(u64, u64)>, within: &[(u64, u64)]) -> Vec<(u64, u64)> {
    if within.is_empty() {
        return ranges;
    }
    let mut covered = RangeSet::default();
    for &(lo, hi) in within {
        covered.insert(lo, hi);
    }
    ranges
        .into_iter()
        .filter(|&(lo, hi)| !covered.contains_all(lo, hi))
        .collect()
}

fn book_of<'b>(books: &'b mut Books, (network, instance): (&str, &str)) -> &'b mut Book {
    // Look up by borrowed keys first; allocate only for a new sender. (Two lookups
    // because the borrow of the first cannot end early on the found branch.)
    if books.get(network).is_some_and(|b| b.contains_key(instance)) {
        return books
            .get_mut(network)
            .and_then(|b| b.get_mut(instance))
            .expect("present: just checked");
    }
    books
        .entry(network.to_string())
        .or_default()
        .entry(instance.to_string())
        .or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NATS: TransportKind = TransportKind::Nats;
    const A: (&str, &str) = ("A", "a-1");

    fn arrive(ledger: &Ledger, first: u64, last: u64, floor: u64, alone: bool) -> Arrival {
        ledger.arrive(A, (first, last), Some(floor), (10, NATS), || alone)
    }

    #[test]
    fn a_number_another_instance_never_acknowledged_is_delivered_here() {
        // The other instance took 100..=199 and died; this one saw 200..=299.
        let ledger = Ledger::default();
        for n in 200..300 {
            assert_eq!(arrive(&ledger, n, n, 100, false), Arrival::Fresh);
        }
        // The sender sends 100..=199 again: all new here, even below what it first saw.
        for n in 100..200 {
            assert_eq!(arrive(&ledger, n, n, 100, false), Arrival::Fresh, "{n}");
        }
        assert_eq!(arrive(&ledger, 150, 150, 100, false), Arrival::Repeat);
        assert_eq!(
            arrive(&ledger, 99, 99, 100, false),
            Arrival::Repeat,
            "below the floor"
        );
    }

    #[test]
    fn a_repeat_is_acknowledged_again_only_once_handled() {
        let ledger = Ledger::default();
        assert_eq!(arrive(&ledger, 5, 7, 5, true), Arrival::Fresh);
        ledger.take_owed();
        assert_eq!(arrive(&ledger, 5, 7, 5, true), Arrival::Repeat);
        assert!(
            ledger.take_owed().is_empty(),
            "still being handled: nothing to say"
        );
        ledger.complete(A, (5, 7), (10, NATS), true);
        let owed = ledger.take_owed();
        assert_eq!(owed[0].handled, [(5, 7)]);

        assert_eq!(arrive(&ledger, 5, 7, 5, true), Arrival::Repeat);
        assert_eq!(ledger.take_owed()[0].handled, [(5, 7)], "said again");
    }

    #[test]
    fn what_is_handled_before_the_acknowledgement_goes_is_not_also_said_to_be_held() {
        let ledger = Ledger::default();
        arrive(&ledger, 1, 1, 1, false);
        arrive(&ledger, 2, 2, 1, false);
        ledger.complete(A, (1, 1), (10, NATS), true);
        let owed = ledger.take_owed();
        assert_eq!(owed[0].handled, [(1, 1)]);
        assert_eq!(
            owed[0].accepted,
            [(1, 2)],
            "a range partly handled is still held"
        );
        arrive(&ledger, 3, 3, 1, false);
        ledger.complete(A, (3, 3), (10, NATS), true);
        let owed = ledger.take_owed();
        assert_eq!(
            (owed[0].handled.as_slice(), owed[0].accepted.as_slice()),
            (&[(3, 3)][..], &[][..])
        );
    }

    #[test]
    fn what_comes_after_a_gap_waits_when_alone_until_the_gap_fills_or_the_floor_passes() {
        let ledger = Ledger::default();
        assert_eq!(arrive(&ledger, 10, 10, 10, true), Arrival::Fresh);
        assert_eq!(arrive(&ledger, 12, 12, 10, true), Arrival::Hold);
        assert_eq!(
            arrive(&ledger, 12, 12, 10, false),
            Arrival::Fresh,
            "not alone: the gap is another's"
        );
        assert_eq!(arrive(&ledger, 14, 14, 10, true), Arrival::Hold);
        assert!(ledger.gap_before(A, 14));
        assert_eq!(
            arrive(&ledger, 13, 13, 11, true),
            Arrival::Hold,
            "11 is still missing"
        );
        assert_eq!(
            arrive(&ledger, 13, 13, 12, true),
            Arrival::Fresh,
            "the floor passed 11"
        );
        assert!(!ledger.gap_before(A, 14));
    }

    #[test]
    fn an_abandoned_envelope_is_delivered_again_and_never_acknowledged() {
        let ledger = Ledger::default();
        assert_eq!(arrive(&ledger, 1, 4, 1, true), Arrival::Fresh);
        ledger.take_owed();
        ledger.complete(A, (1, 4), (10, NATS), false);
        assert!(ledger.take_owed().is_empty());
        assert_eq!(arrive(&ledger, 1, 4, 1, true), Arrival::Fresh);
    }

    #[test]
    fn a_restarted_sender_whose_numbers_are_lower_starts_afresh() {
        let ledger = Ledger::default();
        assert!(ledger.epoch(A, 1_000));
        assert_eq!(arrive(&ledger, 5_000, 5_000, 5_000, true), Arrival::Fresh);
        // Restarted: a later start, but numbers below what its previous life sent.
        assert!(ledger.epoch(A, 2_000));
        assert_eq!(arrive(&ledger, 2_000, 2_000, 2_000, true), Arrival::Fresh);
        assert!(!ledger.epoch(A, 1_000), "a straggler of the previous life");
        assert!(ledger.epoch(A, 2_000));
        assert_eq!(arrive(&ledger, 2_000, 2_000, 2_000, true), Arrival::Repeat);
    }

    #[test]
    fn a_sender_that_died_is_forgotten_and_starts_afresh_if_it_comes_back() {
        let ledger = Ledger::default();
        assert_eq!(arrive(&ledger, 5, 5, 5, false), Arrival::Fresh);
        ledger.forget("A", "a-1");
        assert!(ledger.books.lock().is_empty());
        assert_eq!(arrive(&ledger, 9, 9, 9, false), Arrival::Fresh);
    }

    #[test]
    fn a_sender_without_a_floor_is_deduplicated_within_bounded_memory() {
        let ledger = Ledger::default();
        for n in (0..3 * FOREIGN_RUNS as u64).map(|n| n * 2) {
            assert_eq!(
                ledger.arrive(A, (n, n), None, (1, NATS), || true),
                Arrival::Fresh
            );
        }
        assert_eq!(
            ledger.arrive(A, (4, 4), None, (1, NATS), || true),
            Arrival::Repeat
        );
        assert!(ledger.books.lock()["A"]["a-1"].delivered.runs() <= FOREIGN_RUNS);
    }

    proptest! {
        /// Two instances of a network share a sender's stream through a queue group; the
        /// broker loses, repeats and reorders envelopes, and one instance may die. As
        /// long as the sender sends again what it has not heard handled, every number is
        /// delivered, and a live instance never delivers one number twice.
        #[test]
        fn every_number_is_delivered_whatever_the_broker_and_a_crash_do(
            routes in prop::collection::vec((0usize..2, 0u8..8), 1..120),
            crash_at in 0usize..200,
        ) {
            let total = 60u64;
            let instances = [Ledger::default(), Ledger::default()];
            let mut alive = [true, true];
            let mut delivered_by = [vec![0u32; total as usize], vec![0u32; total as usize]];
            // The sender: which numbers it has heard handled.
            let mut acked = vec![false; total as usize];
            let mut step = 0usize;
            let mut route = routes.iter().cycle();
            // Rounds: send everything unacknowledged (a resend), until all is acknowledged.
            for round in 0..50 {
                if acked.iter().all(|a| *a) { break; }
                let floor = acked.iter().position(|a| !a).unwrap() as u64;
                for n in 0..total {
                    if acked[n as usize] { continue; }
                    let (to, fate) = *route.next().unwrap();
                    // The broker misbehaves for a while, then delivers.
                    let fate = if round < 5 { fate } else { 7 };
                    step += 1;
                    if step == crash_at { alive[1] = false; }
                    let to = if alive[to] { to } else { 0 };
                    if fate == 0 { continue; } // lost by the broker
                    let copies = if fate == 1 { 2 } else { 1 };
                    for _ in 0..copies {
                        match instances[to].arrive(A, (n, n), Some(floor), (1, NATS), || !alive[1] || to == 1 && !alive[0]) {
                            Arrival::Fresh => {
                                delivered_by[to][n as usize] += 1;
                                if alive[to] {
                                    instances[to].complete(A, (n, n), (1, NATS), true);
                                }
                            }
                            Arrival::Partly(_) => prop_assert!(false, "single numbers never split"),
                            Arrival::Repeat | Arrival::Hold => {}
                        }
                    }
                }
                for (i, ledger) in instances.iter().enumerate() {
                    for notice in ledger.take_owed() {
                        if !alive[i] { continue; } // its acknowledgements die with it
                        for (lo, hi) in notice.handled {
                            for n in lo..=hi { acked[n as usize] = true; }
                        }
                    }
                }
            }
            prop_assert!(acked.iter().all(|a| *a), "some number was never handled");
            for (n, (here, there)) in delivered_by[0].iter().zip(&delivered_by[1]).enumerate() {
                prop_assert!(*here <= 1, "instance 0 delivered {} twice", n);
                prop_assert!(here + there >= 1);
            }
        }
    }
}
