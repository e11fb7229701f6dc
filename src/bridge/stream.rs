//! The outgoing stream to one peer network, owned by one task.
//!
//! Everything this network streams to a peer (a proxy's batches, an actor's outputs
//! returned to a proxy there) goes through a bounded queue to that peer's task, which
//! alone numbers, encodes, keeps and sends; order comes from the queue. The same task
//! sends again what its [`SendWindow`] says is due, moves the stream between the broker
//! and a direct link as the broker comes and goes, and waits for a road while there is
//! none, holding back only its own queue and, through it, its producers. Streams to other
//! peers carry on meanwhile.
//!
//! Acknowledgements reach the stream's window directly, from the acknowledgement task
//! ([`super::ack`]), never through the queue, so one never waits behind data.

use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::Subject;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Bridge;
use super::sequence::Outbox;
use super::window::SendWindow;
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::network::Causes;

/// Batches waiting in one stream's queue, at most; a producer waits beyond that. Small:
/// what waits here is memory on top of the window, and a few batches are enough to
/// keep the task busy while a proxy gathers the next.
pub(crate) const QUEUE: usize = 4;

/// How often a stream looks for envelopes due to go again, and for a better road.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// One batch for a stream: messages for one subject, in order.
pub(crate) struct Submit {
    pub(crate) subject: Subject,
    pub(crate) messages: Vec<Message>,
    /// Where the target actor's outputs come back to, for a proxy's messages.
    pub(crate) reply_to: Option<Arc<str>>,
    /// Released once the peer has handled the messages.
    pub(crate) causes: Causes,
    /// Outputs returned to a proxy on the peer (else data for one of its actors).
    pub(crate) returned: bool,
}

/// The handle producers and the acknowledgement task hold on one stream.
#[derive(Clone)]
pub(crate) struct StreamHandle {
    queue: mpsc::Sender<Submit>,
    /// What the stream sent and has not heard handled.
    pub(crate) window: Arc<SendWindow>,
    /// Batches submitted and not yet sent.
    queued: Arc<AtomicUsize>,
}

impl StreamHandle {
    /// Queues a batch, waiting while the queue is full (the stream waits for room in its
    /// window, or for a road).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if cancelled while waiting, the batch was not queued (its causes are
    /// left unacknowledged).
    pub(crate) async fn submit(&self, submit: Submit) -> Result<()> {
        // Counted while it waits for room, so that a shutdown waits for it too; the count
        // goes back down if the wait is cancelled or the stream is gone.
        struct Waiting<'a>(&'a AtomicUsize, bool);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                if !self.1 {
                    self.0.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        let mut waiting = Waiting(&self.queued, false);
        if self.queue.send(submit).await.is_err() {
            return Err(Error::new(
                ErrorKind::Shutdown,
                "the distributed network has shut down",
            ));
        }
        // Queued: the task counts it down once it is sent.
        waiting.1 = true;
        Ok(())
    }

    /// Whether nothing waits in the queue and everything sent was handled.
    pub(crate) fn is_idle(&self) -> bool {
        self.queued.load(Ordering::Acquire) == 0 && self.window.unacked_count() == 0
    }

    /// Batches queued and not yet sent.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// Starts the stream to `network`, its task tracked and stopped by the bridge.
pub(crate) fn start(
    bridge: &Bridge,
    network: &str,
    outbox: Outbox,
    window: Arc<SendWindow>,
) -> StreamHandle {
    let (queue, submits) = mpsc::channel(QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    bridge.tracker.spawn(run(
        bridge.weak_self(),
        network.to_string(),
        outbox,
        submits,
        queued.clone(),
        bridge.cancel.clone(),
    ));
    StreamHandle {
        queue,
        window,
        queued,
    }
}

/// What the task does next.
enum Work {
    Submit(Submit),
    Roads,
    Sweep,
}

async fn run(
    bridge: Weak<Bridge>,
    network: String,
    mut outbox: Outbox,
    mut submits: mpsc::Receiver<Submit>,
    queued: Arc<AtomicUsize>,
    cancel: CancellationToken,
) {
    let Some(mut up) = bridge.upgrade().map(|b| b.broker.up.subscribe()) else {
        return;
    };
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the stream is on the road it should take; until it is, every sweep looks
    // again (a peer's client reconnects some time after ours, and a direct endpoint may
    // refuse the first dial).
    let mut settled = true;
    loop {
        let work = tokio::select! {
            _ = cancel.cancelled() => return,
            submit = submits.recv() => match submit {
                Some(submit) => Work::Submit(submit),
                None => return,
            },
            changed = up.changed() => {
                if changed.is_err() {
                    return;
                }
                Work::Roads
            }
            _ = sweep.tick() => Work::Sweep,
        };
        let Some(bridge) = bridge.upgrade() else {
            return;
        };
        match work {
            Work::Submit(submit) => {
                let result = bridge.send_submit(&network, &mut outbox, submit).await;
                queued.fetch_sub(1, Ordering::AcqRel);
                if let Err(err) = result {
                    tracing::warn!(network, error = %err, "a streamed batch was not sent");
                }
            }
            Work::Roads => settled = bridge.settle_road(&network, &mut outbox).await,
            Work::Sweep => {
                bridge.give_up_on_the_dead(&network, &outbox);
                if !settled {
                    settled = bridge.settle_road(&network, &mut outbox).await;
                }
                if let Err(err) = bridge.resend_if_due(&network, &mut outbox).await {
                    tracing::warn!(network, error = %err, "could not send unacknowledged envelopes again");
                }
            }
        }
    }
}
