//! The one task that takes inbound traffic off both roads and into the local graph.
//!
//! It reads three sources: this network's data subscription (`{network}.*.*`, queue group
//! `{network}`), this instance's return subscription, and the direct links. One task
//! keeps order per sender and target, and holds the per-sender sequence windows that
//! drop repeats, whichever road a message took. When more than one source has a message
//! ready, the one earlier in its sender's stream goes first: around a switch of road, a
//! sender's last direct frames and first broker messages can arrive together.
//!
//! The task waits while a target's inbox is full, so a slow actor slows its senders:
//! what it has handled is acknowledged (see [`super::ack`]), and a sender holds back
//! once its window of unhandled envelopes is full, so the client's subscription buffer
//! holds at most one window from each sender.

use std::sync::Weak;

use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Bridge;
use super::confirmed::ReplyTo;
use super::inbound::{DispatchState, Streamed, return_prefix};
use crate::events::{Direction, NetworkEvent, TransportKind};
use crate::message::EnvelopeView;
use crate::message::seal::Purpose;
use crate::subject::CONTROL_PREFIX;
use crate::transport::direct::Inbound;

/// Where an inbound message came from.
enum Item {
    Data(async_nats::Message),
    Return(async_nats::Message),
    Direct(Inbound),
}

impl Item {
    /// `(sender network, sender instance, sequence)` of a streamed envelope, to order
    /// messages that are ready at the same time. Only an envelope the gate lets in has
    /// one: nothing is decompressed or decoded before it is authenticated.
    fn order_key(&self, bridge: &Bridge) -> Option<(String, String, u64)> {
        let (subject, payload) = match self {
            Item::Data(m) | Item::Return(m) if m.reply.is_none() => {
                (m.subject.as_str(), &m.payload)
            }
            Item::Direct(Inbound::Message {
                subject, payload, ..
            }) => (subject.as_str(), payload),
            _ => return None,
        };
        let purpose = if subject.starts_with(CONTROL_PREFIX) {
            Purpose::Return
        } else {
            Purpose::Data
        };
        // Looked at, not let in: it is admitted (and a refusal counted) on delivery.
        let plain = bridge
            .gate
            .peek(purpose, subject, payload, || bridge.max_payload())?;
        EnvelopeView::read(&plain)
            .ok()
            .map(|e| (e.network.into_owned(), e.instance.into_owned(), e.seq))
    }
}

/// The sources and one message of lookahead for each.
pub(crate) struct Sources {
    pub(crate) data: async_nats::Subscriber,
    pub(crate) returns: async_nats::Subscriber,
    pub(crate) direct: mpsc::Receiver<Inbound>,
}

/// How often held-back envelopes are looked at when nothing else brings them up.
const HELD_SWEEP: std::time::Duration = std::time::Duration::from_secs(1);

/// When the dispatcher may begin, and how it is asked to wind down.
pub(crate) struct Winding {
    /// Cancelled once the local graph runs: nothing is taken before.
    pub(crate) graph_up: CancellationToken,
    /// Asks it to drain the data subscription: take no new work.
    pub(crate) drain: CancellationToken,
    /// Told once what the data subscription held is delivered.
    pub(crate) drained: tokio::sync::oneshot::Sender<()>,
    /// Stops it.
    pub(crate) stop: CancellationToken,
}

/// Delivers until asked to drain; then delivers what the data subscription still holds
/// and says so, and goes on taking returned outputs and acknowledgements over direct
/// links (what this network streamed out is acknowledged only once what came back of it
/// is taken) until stopped.
pub(crate) async fn run(bridge: Weak<Bridge>, mut sources: Sources, winding: Winding) {
    let Winding {
        graph_up,
        drain,
        drained,
        stop,
    } = winding;
    // Until the graph runs, its actors have no inboxes: what arrives waits in the
    // subscriptions.
    tokio::select! {
        _ = graph_up.cancelled() => {}
        _ = stop.cancelled() => return,
    }
    let mut drained = Some(drained);
    let mut state = DispatchState::default();
    let mut slots: [Option<Item>; 3] = [None, None, None];
    let mut open = [true, true, true];
    // How long a drain may wait for the broker is bounded by the caller
    // (`Bridge::drain_inbound`, `drain_timeout_ms`).
    let mut draining = false;
    // Envelopes held back after a gap are looked at whenever their sender sends again,
    // and at least this often, so that those of a sender that went quiet (or died) are
    // still delivered once they have waited their limit.
    let mut next_sweep = tokio::time::Instant::now() + HELD_SWEEP;
    loop {
        if tokio::time::Instant::now() >= next_sweep {
            next_sweep = tokio::time::Instant::now() + HELD_SWEEP;
            if let Some(bridge) = bridge.upgrade() {
                for sender in state.holding() {
                    bridge.release_held(&sender, &mut state).await;
                }
            }
        }
        fill_ready(&mut sources, &mut slots, &mut open);
        if draining && !open[0] && slots[0].is_none() {
            // Drained: what had arrived by now through the broker is delivered.
            if let Some(drained) = drained.take() {
                let _ = drained.send(());
            }
        }
        if slots.iter().all(Option::is_none) {
            if !open.iter().any(|o| *o) {
                break;
            }
            let holding = state.is_holding();
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(next_sweep), if holding => {}
                m = sources.data.next(), if open[0] => match m {
                    Some(m) => slots[0] = Some(Item::Data(m)),
                    None => open[0] = false,
                },
                m = sources.returns.next(), if open[1] => match m {
                    Some(m) => slots[1] = Some(Item::Return(m)),
                    None => open[1] = false,
                },
                i = sources.direct.recv(), if open[2] => match i {
                    Some(i) => slots[2] = Some(Item::Direct(i)),
                    None => open[2] = false,
                },
                _ = drain.cancelled(), if !draining => {
                    draining = true;
                    let broker_up = bridge.upgrade().is_some_and(|b| b.broker.is_up());
                    if !broker_up {
                        // Nothing more can come through a broker that is not there.
                        open[0] = false;
                        continue;
                    }
                    if let Err(err) = sources.data.drain().await {
                        tracing::debug!(error = %err, "draining the data subscription");
                        open[0] = false;
                    }
                }
            }
            continue;
        }
        let Some(bridge) = bridge.upgrade() else {
            break;
        };
        let next = pick(&mut slots, &bridge);
        bridge.handle(next, &mut state).await;
        while let Some(sender) = state.release.take() {
            bridge.release_held(&sender, &mut state).await;
        }
    }
}

/// Moves every message that is ready now into its empty slot, without waiting.
fn fill_ready(sources: &mut Sources, slots: &mut [Option<Item>; 3], open: &mut [bool; 3]) {
    if slots[0].is_none() && open[0] {
        match sources.data.next().now_or_never() {
            Some(Some(m)) => slots[0] = Some(Item::Data(m)),
            Some(None) => open[0] = false,
            None => {}
        }
    }
    if slots[1].is_none() && open[1] {
        match sources.returns.next().now_or_never() {
            Some(Some(m)) => slots[1] = Some(Item::Return(m)),
            Some(None) => open[1] = false,
            None => {}
        }
    }
    if slots[2].is_none() && open[2] {
        match sources.direct.try_recv() {
            Ok(i) => slots[2] = Some(Item::Direct(i)),
            Err(mpsc::error::TryRecvError::Disconnected) => open[2] = false,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
    }
}

/// Takes the message to handle next: the first filled slot, unless another slot holds an
/// earlier message of the same sender.
fn pick(slots: &mut [Option<Item>; 3], bridge: &Bridge) -> Item {
    let mut filled = (0..3).filter(|i| slots[*i].is_some());
    let first = filled.next().expect("a filled slot");
    let mut best = first;
    let rest: Vec<usize> = filled.collect();
    if !rest.is_empty() {
        // Two roads at once, around a switch: rare enough to decode the keys again.
        let mut best_key = slots[best].as_ref().and_then(|i| i.order_key(bridge));
        for i in rest {
            let key = slots[i].as_ref().and_then(|i| i.order_key(bridge));
            if let (Some((net, inst, seq)), Some((bnet, binst, bseq))) = (&key, &best_key)
                && net == bnet
                && inst == binst
                && seq < bseq
            {
                best = i;
                best_key = key;
            }
        }
    }
    slots[best].take().expect("picked a filled slot")
}

impl Bridge {
    async fn handle(&self, item: Item, state: &mut DispatchState) {
        let streamed = |road| Streamed {
            road,
            may_hold: true,
        };
        let addressed = |m: &async_nats::Message| self.addressed_rest(&m.subject).is_some();
        match item {
            Item::Data(message) => self.take_data(message, state).await,
            // A confirmed send addressed to this instance alone, on its own subscription.
            Item::Return(message) if addressed(&message) => self.take_data(message, state).await,
            Item::Return(message) => {
                if let Err(err) = self
                    .deliver_return(
                        &message.subject,
                        &message.payload,
                        streamed(TransportKind::Nats),
                        state,
                    )
                    .await
                {
                    self.refused("returned output", &message.subject, &err);
                }
            }
            Item::Direct(inbound) => self.handle_direct(inbound, state).await,
        }
    }

    /// Data for one of this network's actors through the broker: streamed, or confirmed
    /// (answered at the message's reply subject).
    async fn take_data(&self, message: async_nats::Message, state: &mut DispatchState) {
        if super::plain::is_plain_json(message.headers.as_ref()) {
            let result = self
                .deliver_plain(&message.subject, &message.payload, message.reply, state)
                .await;
            if let Err(err) = result {
                self.refused("plain JSON message", &message.subject, &err);
            }
            return;
        }
        let reply = message.reply.map(ReplyTo::Nats);
        let confirmed = reply.is_some();
        let how = Streamed {
            road: TransportKind::Nats,
            may_hold: true,
        };
        let result = self
            .deliver_data(&message.subject, &message.payload, reply, how, state)
            .await;
        if let Err(err) = result
            && !confirmed
        {
            self.refused("inbound message", &message.subject, &err);
        }
    }

    async fn handle_direct(&self, inbound: Inbound, state: &mut DispatchState) {
        let returns = return_prefix(&self.network_id, &self.instance_id);
        let how = Streamed {
            road: TransportKind::Direct,
            may_hold: true,
        };
        match inbound {
            Inbound::Message {
                subject, payload, ..
            } => {
                let result = if subject.starts_with(&returns) {
                    self.deliver_return(&subject, &payload, how, state).await
                } else {
                    self.deliver_data(&subject, &payload, None, how, state)
                        .await
                };
                if let Err(err) = result {
                    self.refused("inbound direct message", &subject, &err);
                }
            }
            Inbound::Request {
                subject,
                payload,
                reply,
                ..
            } => {
                if subject.starts_with(CONTROL_PREFIX) {
                    let answer = self.answer_control(&subject, &payload).unwrap_or_default();
                    if let Err(err) = reply.send(Ok(answer)).await {
                        tracing::debug!(error = %err, "could not answer a direct request");
                    }
                } else {
                    // Answered once handled, or at once when refused.
                    let _ = self
                        .deliver_data(&subject, &payload, Some(ReplyTo::Direct(reply)), how, state)
                        .await;
                }
            }
            Inbound::PeerUp(peer) => {
                if peer.inbound {
                    self.peers.lock().add(
                        Direction::Inbound,
                        &peer.network,
                        &peer.instance,
                        peer.endpoint.clone(),
                        TransportKind::Direct,
                    );
                    self.events.send(NetworkEvent::PeerConnected {
                        network: peer.network.clone(),
                        instance: peer.instance.clone(),
                        direction: Direction::Inbound,
                        transport: TransportKind::Direct,
                    });
                }
            }
            Inbound::PeerDown { peer, reason } => {
                let removed = self.peers.lock().remove_direct(&peer.network);
                if removed {
                    self.events.send(NetworkEvent::PeerDisconnected {
                        network: peer.network.clone(),
                        reason: format!("direct link closed: {reason}"),
                    });
                }
            }
        }
    }
}
