//! The task that runs one node: start, handle each message from the inbox, stop.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::routing::{Delivery, Shared};
use crate::actor::{Actor, ActorContext};

/// Messages taken from the inbox at once. Taking them together frees their slots
/// together, so a producer waiting on a full inbox is woken once per batch rather than
/// once per message.
const BATCH: usize = 64;

/// Runs a node until its halt token fires or its inbox closes.
///
/// The handler runs inside the same `select!` as the halt token, so a handler blocked on
/// a full downstream inbox still stops when the network halts.
pub(crate) async fn run(
    mut actor: Box<dyn Actor>,
    mut ctx: ActorContext,
    mut inbox: mpsc::Receiver<Delivery>,
    halt: CancellationToken,
    shared: Arc<Shared>,
) {
    let node = ctx.node_id().to_string();
    tokio::select! {
        biased;
        _ = halt.cancelled() => return,
        result = actor.start(&mut ctx) => {
            if let Err(err) = result {
                shared.handler_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %node, error = %err, "actor start failed");
            }
        }
    }
    let mut batch = Vec::with_capacity(BATCH);
    'run: loop {
        let received = tokio::select! {
            biased;
            _ = halt.cancelled() => break,
            received = inbox.recv_many(&mut batch, BATCH) => received,
        };
        if received == 0 {
            break;
        }
        let mut deliveries = batch.drain(..);
        while let Some(delivery) = deliveries.next() {
            ctx.set_trace(delivery.trace);
            ctx.set_more_queued(deliveries.len() > 0 || !inbox.is_empty());
            let result = if halt.is_cancelled() {
                None
            } else {
                handle_unless_halted(
                    &mut *actor,
                    &mut ctx,
                    &halt,
                    &delivery.port,
                    delivery.message,
                )
                .await
            };
            // The message is handled (or, halted, never will be): what it caused holds
            // its own claim on the cause.
            let trace = ctx.take_trace();
            match &result {
                Some(Ok(())) => trace.handled(),
                Some(Err(_)) => trace.failed(),
                None => drop(trace),
            }
            shared.handled_one();
            let Some(result) = result else {
                // Taken from the inbox but never to be handled: release their count. Their
                // traces, dropped unhandled, leave them unacknowledged, so their senders
                // send them again.
                deliveries.for_each(|_| shared.handled_one());
                break 'run;
            };
            if let Err(err) = result {
                shared.handler_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %node, port = %delivery.port, error = %err, "actor failed to handle a message");
            }
        }
    }
    // Messages still queued will never be handled; release their count so that nothing
    // waits on them.
    inbox.close();
    while inbox.try_recv().is_ok() {
        shared.handled_one();
    }
    if let Err(err) = actor.stop(&mut ctx).await {
        tracing::warn!(node = %node, error = %err, "actor stop failed");
    }
}

/// Runs the handler for one message, or stops it when the node halts. Most handlers
/// finish at their first poll; only one that has to wait (on a full downstream inbox, a
/// timer, a transport) is raced against the halt token, so the common case does not
/// register with the token and unregister again for every message.
async fn handle_unless_halted(
    actor: &mut dyn Actor,
    ctx: &mut ActorContext,
    halt: &CancellationToken,
    port: &str,
    message: crate::message::Message,
) -> Option<crate::error::Result<()>> {
    let mut handling = std::pin::pin!(actor.handle(ctx, port, message));
    if let std::task::Poll::Ready(result) = futures::poll!(handling.as_mut()) {
        return Some(result);
    }
    tokio::select! {
        biased;
        _ = halt.cancelled() => None,
        result = handling => Some(result),
    }
}
