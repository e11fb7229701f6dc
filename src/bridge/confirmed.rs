//! Confirmed sends on the receiving side: answered once handled, and at most once per id.
//!
//! A confirmed send is a NATS request (or a direct-link request) whose envelope may carry
//! an id (`k`). Its answer waits until the message, and everything it caused, is handled
//! ([`crate::network::Cause`]), so "confirmed" never means merely queued. A caller whose
//! request timed out does not know whether it was handled; it may send it again with the
//! same id. This instance remembers the ids it has seen for [`REMEMBER_FOR`] (at most
//! [`REMEMBER_AT_MOST`] of them): a retry of one still being handled waits for the same
//! outcome, and a retry of one handled gets the answer the first got, and is not
//! delivered again.
//!
//! Ids are remembered per instance, so every try of an id is addressed to the same
//! instance (`Bridge::instance_for`); only if that instance dies can a retry reach
//! another, which has not seen the id.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::transport::direct::Replier;

/// How long an answered id is remembered.
pub(crate) const REMEMBER_FOR: Duration = Duration::from_secs(300);

/// The most answered ids remembered; the oldest are forgotten first.
pub(crate) const REMEMBER_AT_MOST: usize = 65_536;

/// Where an answer goes.
pub(crate) enum ReplyTo {
    /// A NATS reply subject.
    Nats(async_nats::Subject),
    /// A request over a direct link.
    Direct(Replier),
}

/// What a confirmed send with an id found.
pub(crate) enum Begin {
    /// A new one: deliver it, and answer `reply` once handled.
    New(ReplyTo),
    /// The same id is being handled: its answer goes to this caller too.
    Joined,
    /// The same id was answered: answer `reply` with that, without delivering again.
    Answered(ReplyTo, Bytes),
}

enum Entry {
    Handling(Vec<ReplyTo>),
    Answered(Bytes),
}

/// The ids of recent confirmed sends and their outcomes.
#[derive(Default)]
pub(crate) struct Confirmations {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    by_id: HashMap<String, Entry>,
    /// Answered ids, oldest first, with when they were answered.
    answered: VecDeque<(Instant, String)>,
}

impl State {
    fn forget_old(&mut self, now: Instant) {
        while let Some((at, id)) = self.answered.front() {
            if now.duration_since(*at) < REMEMBER_FOR && self.answered.len() <= REMEMBER_AT_MOST {
                break;
            }
            if matches!(self.by_id.get(id), Some(Entry::Answered(_))) {
                self.by_id.remove(id);
            }
            self.answered.pop_front();
        }
    }
}

impl Confirmations {
    /// Looks `id` up for a send to be answered at `reply`.
    pub(crate) fn begin(&self, id: &str, reply: ReplyTo) -> Begin {
        let mut state = self.state.lock();
        state.forget_old(Instant::now());
        match state.by_id.get_mut(id) {
            Some(Entry::Handling(waiting)) => {
                waiting.push(reply);
                Begin::Joined
            }
            Some(Entry::Answered(answer)) => Begin::Answered(reply, answer.clone()),
            None => {
                state
                    .by_id
                    .insert(id.to_string(), Entry::Handling(Vec::new()));
                Begin::New(reply)
            }
        }
    }

    /// `id` has its outcome, `answer` (`None`: it was dropped unhandled, and is
    /// forgotten so that a retry is delivered). Returns the retries waiting for it.
    pub(crate) fn finish(&self, id: &str, answer: Option<&Bytes>) -> Vec<ReplyTo> {
        let mut state = self.state.lock();
        let waiting = match state.by_id.remove(id) {
            Some(Entry::Handling(waiting)) => waiting,
            _ => Vec::new(),
        };
        if let Some(answer) = answer {
            let now = Instant::now();
            state
                .by_id
                .insert(id.to_string(), Entry::Answered(answer.clone()));
            state.answered.push_back((now, id.to_string()));
            state.forget_old(now);
        }
        waiting
    }

    /// How many ids are remembered.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.state.lock().by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nats() -> ReplyTo {
        ReplyTo::Nats(async_nats::Subject::from("_INBOX.x"))
    }

    #[test]
    fn a_retry_joins_one_being_handled_and_gets_the_answer_of_one_handled() {
        let confirmations = Confirmations::default();
        assert!(matches!(confirmations.begin("k1", nats()), Begin::New(_)));
        assert!(matches!(confirmations.begin("k1", nats()), Begin::Joined));
        let waiting = confirmations.finish("k1", Some(&Bytes::new()));
        assert_eq!(waiting.len(), 1, "the retry hears the outcome too");
        match confirmations.begin("k1", nats()) {
            Begin::Answered(_, answer) => assert!(answer.is_empty()),
            _ => panic!("a handled id is answered, not delivered again"),
        }
    }

    #[test]
    fn an_id_dropped_unhandled_is_forgotten_so_a_retry_is_delivered() {
        let confirmations = Confirmations::default();
        assert!(matches!(confirmations.begin("k", nats()), Begin::New(_)));
        confirmations.finish("k", None);
        assert!(matches!(confirmations.begin("k", nats()), Begin::New(_)));
    }

    #[test]
    fn memory_is_bounded_by_count() {
        let confirmations = Confirmations::default();
        for n in 0..REMEMBER_AT_MOST + 100 {
            let id = n.to_string();
            confirmations.begin(&id, nats());
            confirmations.finish(&id, Some(&Bytes::new()));
        }
        assert!(confirmations.remembered() <= REMEMBER_AT_MOST);
    }
}
