//! Causes: how the network tells that a message, and everything it led to, is handled.
//!
//! A message that arrives from another network carries a [`Cause`]. Every message an
//! actor emits while handling it carries a clone of the same cause, and so on down the
//! graph; a message that leaves for another network keeps its clone until that network
//! acknowledges it as handled in turn. When the last clone is dropped (the handler of the
//! last descendant returned, and every output that left the process was acknowledged)
//! the cause's completion runs: the bridge acknowledges the original message to its
//! sender, or answers a confirmed send.
//!
//! So an acknowledgement means *handled*, never merely queued: if this process dies with
//! a message in an inbox, or with an output not yet taken by the next network, the
//! message was never acknowledged, and its sender sends it again.
//!
//! Causes are counted references, so tracking costs one atomic increment per emitted
//! message and nothing per hop inside a handler. An actor that keeps a message past its
//! `handle` call and emits it later (a batching writer, say) emits it under the cause of
//! the message it is handling then: holding is the actor's own business.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What runs once a cause is wholly handled (`true`), or once its last holder let go
/// with some descendant never handled (`false`: the network halted with it queued).
type Completion = Box<dyn FnOnce(bool) + Send + Sync>;

/// How a cause ended, for a completion that tells a failed handler from a handled one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Wholly handled (see [`Cause`]).
    pub(crate) handled: bool,
    /// Some handler of it, or of a descendant, returned an error.
    pub(crate) failed: bool,
}

/// A counted claim on the acknowledgement of one inbound message (or envelope).
#[derive(Clone)]
pub(crate) struct Cause(Arc<CauseInner>);

struct CauseInner {
    /// The message may have been handled before: it was sent again by a sender that had
    /// not heard it acknowledged, or it was emitted while handling such a message.
    redelivered: bool,
    /// Some descendant was dropped without being handled.
    abandoned: AtomicBool,
    /// Counts as handled whatever happens to its descendants: refused for good.
    refused: AtomicBool,
    /// Some handler of it or of a descendant returned an error.
    failed: AtomicBool,
    on_handled: Option<Completion>,
    /// Instead of `on_handled`: a completion that hears of failures too.
    on_outcome: Option<Box<dyn FnOnce(Outcome) + Send + Sync>>,
}

impl Drop for CauseInner {
    fn drop(&mut self) {
        let handled = *self.refused.get_mut() || !*self.abandoned.get_mut();
        if let Some(done) = self.on_handled.take() {
            done(handled);
        }
        if let Some(done) = self.on_outcome.take() {
            done(Outcome {
                handled,
                failed: *self.failed.get_mut(),
            });
        }
    }
}

impl Cause {
    /// A cause whose completion is `on_handled`.
    pub(crate) fn new(
        redelivered: bool,
        on_handled: impl FnOnce(bool) + Send + Sync + 'static,
    ) -> Self {
        Cause::made(redelivered, Some(Box::new(on_handled)), None)
    }

    fn made(
        redelivered: bool,
        on_handled: Option<Completion>,
        on_outcome: Option<Box<dyn FnOnce(Outcome) + Send + Sync>>,
    ) -> Self {
        Cause(Arc::new(CauseInner {
            redelivered,
            abandoned: AtomicBool::new(false),
            refused: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            on_handled,
            on_outcome,
        }))
    }

    /// A cause whose completion hears whether some handler failed, for deliveries that
    /// try a failing message again (a durable network's).
    pub(crate) fn with_outcome(
        redelivered: bool,
        on_outcome: impl FnOnce(Outcome) + Send + Sync + 'static,
    ) -> Self {
        Cause::made(redelivered, None, Some(Box::new(on_outcome)))
    }

    /// Notes that a message of this cause is dropped without being handled, so the
    /// cause completes as not handled and its sender sends it again.
    pub(crate) fn abandon(&self) {
        self.0.abandoned.store(true, Ordering::Release);
    }

    /// Notes that the message was refused for good (it has nowhere to go, and no other
    /// instance could take it): it completes as handled, whatever its descendants do.
    pub(crate) fn refuse(&self) {
        self.0.refused.store(true, Ordering::Release);
    }

    /// Whether the message may be a repeat of one handled before.
    pub(crate) fn redelivered(&self) -> bool {
        self.0.redelivered
    }

    /// Whether `self` and `other` are the same cause.
    pub(crate) fn same(&self, other: &Cause) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cause")
            .field("redelivered", &self.0.redelivered)
            .field("holders", &Arc::strong_count(&self.0))
            .finish()
    }
}

/// Where a message came from: the remote proxy to return its outputs to, and the cause
/// whose acknowledgement waits for it.
///
/// Each message in the graph holds its own trace. One dropped without
/// [`Trace::handled`] (a node that stopped, a handler that panicked, an inbox that could
/// not take it) leaves its cause unacknowledged, so the sender sends it again: what
/// was not explicitly handled never counts as handled.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    /// The return subject of the remote proxy whose message caused this one, if any.
    pub(crate) origin: Option<Arc<str>>,
    /// The inbound message this one descends from, if any.
    pub(crate) cause: Option<Cause>,
    /// Its message was handled.
    done: bool,
}

impl Clone for Trace {
    /// Another message's trace: not handled yet.
    fn clone(&self) -> Self {
        Trace {
            origin: self.origin.clone(),
            cause: self.cause.clone(),
            done: false,
        }
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        if !self.done
            && let Some(cause) = &self.cause
        {
            cause.abandon();
        }
    }
}

impl Trace {
    /// A trace for a message sent by a proxy on another network.
    pub(crate) fn new(origin: Option<Arc<str>>, cause: Option<Cause>) -> Self {
        Trace {
            origin,
            cause,
            done: false,
        }
    }

    /// Lets go of the trace: its message is handled.
    pub(crate) fn handled(mut self) {
        self.done = true;
    }

    /// Lets go of the trace: its handler returned an error. That counts as handled,
    /// except for a cause made [`Cause::with_outcome`], which hears of the failure.
    pub(crate) fn failed(mut self) {
        if let Some(cause) = &self.cause {
            cause.0.failed.store(true, Ordering::Release);
        }
        self.done = true;
    }

    /// Whether the message may be a repeat of one handled before.
    pub(crate) fn redelivered(&self) -> bool {
        self.cause.as_ref().is_some_and(Cause::redelivered)
    }
}

/// Causes gathered for a batch of messages, each kept once.
///
/// Dropped, they count as abandoned (the batch never reached the next network);
/// [`Causes::release`] lets go of them as handled.
#[derive(Debug, Default)]
pub(crate) struct Causes(Vec<Cause>);

impl Drop for Causes {
    fn drop(&mut self) {
        for cause in &self.0 {
            cause.abandon();
        }
    }
}

impl Causes {
    /// Adds `cause`, unless it is the one added last (consecutive messages of one
    /// envelope share theirs).
    pub(crate) fn add(&mut self, cause: Option<&Cause>) {
        if let Some(cause) = cause
            && !self.0.last().is_some_and(|last| last.same(cause))
        {
            self.0.push(cause.clone());
        }
    }

    /// Whether any of them may be a repeat.
    pub(crate) fn redelivered(&self) -> bool {
        self.0.iter().any(Cause::redelivered)
    }

    /// Takes every cause, leaving none.
    pub(crate) fn take(&mut self) -> Causes {
        Causes(std::mem::take(&mut self.0))
    }

    /// Lets go of every cause: what they stand for is handled.
    pub(crate) fn release(mut self) {
        self.0.clear();
    }

    /// The same causes, held twice (for the parts of a batch cut to fit the broker).
    pub(crate) fn share(&self) -> Causes {
        Causes(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn completion_runs_once_when_the_last_holder_lets_go() {
        let done = Arc::new(AtomicUsize::new(0));
        let counter = done.clone();
        let cause = Cause::new(false, move |handled| {
            assert!(handled);
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let output = cause.clone();
        let mut batch = Causes::default();
        batch.add(Some(&output));
        batch.add(Some(&output));
        assert_eq!(batch.0.len(), 1, "one envelope's messages share a cause");
        drop(cause);
        drop(output);
        assert_eq!(done.load(Ordering::SeqCst), 0, "the batch still holds it");
        batch.release();
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn redelivery_is_carried_to_what_a_message_causes() {
        let first = Cause::new(true, |_| {});
        let trace = Trace::new(None, Some(first.clone()));
        assert!(trace.redelivered());
        let mut batch = Causes::default();
        batch.add(Some(&Cause::new(false, |_| {})));
        assert!(!batch.redelivered());
        batch.add(trace.cause.as_ref());
        assert!(batch.redelivered());
    }

    #[test]
    fn a_descendant_dropped_unhandled_makes_the_cause_complete_as_not_handled() {
        let outcome = Arc::new(AtomicUsize::new(0));
        let seen = outcome.clone();
        let cause = Cause::new(false, move |handled| {
            seen.store(if handled { 1 } else { 2 }, Ordering::SeqCst);
        });
        let queued = Trace::new(None, Some(cause.clone()));
        let handled = queued.clone();
        drop(cause);
        handled.handled();
        assert_eq!(outcome.load(Ordering::SeqCst), 0);
        drop(queued);
        assert_eq!(
            outcome.load(Ordering::SeqCst),
            2,
            "a trace dropped unhandled"
        );
    }

    #[test]
    fn a_refused_message_completes_as_handled_whatever_its_descendants_do() {
        let outcome = Arc::new(AtomicUsize::new(0));
        let seen = outcome.clone();
        let cause = Cause::new(false, move |handled| {
            seen.store(if handled { 1 } else { 2 }, Ordering::SeqCst);
        });
        let dropped = Trace::new(None, Some(cause.clone()));
        cause.refuse();
        drop(dropped);
        drop(cause);
        assert_eq!(outcome.load(Ordering::SeqCst), 1);
    }
}
