//! The dispatchers that take traffic off the broker and into the local graph.
//!
//! Data for this network's actors arrives on `{network}.*.*` (queue group `{network}`);
//! outputs of remote actors come back on this instance's return subject. Each dispatcher
//! is one task that handles its messages in order, so order is kept per sender and target,
//! and waits while a target's inbox is full, so a slow actor slows its senders (the
//! client's subscription buffer absorbs bursts; what it drops is counted and reported).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;

use super::Bridge;
use super::ack::{ACK_DELAY, Pending};
use super::proxy::{Egress, Subscriber};
use super::sequence::{Held, HeldBack, SeenWindow};
use crate::error::{Error, ErrorKind, Result};
use crate::events::TransportKind;
use crate::message::{EnvelopeView, Message, plain};
use crate::network::{Connector, Inlet, Outlet};
use crate::subject::parse_data_subject;

/// What the dispatcher remembers between messages.
#[derive(Default)]
pub(crate) struct DispatchState {
    /// Proxy outlets by return token.
    outlets: HashMap<String, Outlet>,
    /// Inlets by data subject, so the hot path needs no lock and no allocation.
    inlets: HashMap<String, Inlet>,
    seen: Senders,
    /// When the acknowledgements waiting must go, at the latest.
    pub(crate) ack_due: Option<Instant>,
    /// Some sender has enough waiting that its acknowledgement goes now.
    pub(crate) ack_now: bool,
    /// A sender (network, instance) with envelopes held back that may go now.
    pub(crate) release: Option<(String, String)>,
}

impl DispatchState {
    /// Notes that an envelope of `instance` of `network` was handled: its
    /// acknowledgement waits (`full` when enough waits to send it now), and, when that
    /// sender has envelopes `held` back, they are looked at next.
    fn handled(&mut self, network: &str, instance: &str, full: bool, held: bool) {
        self.ack_due
            .get_or_insert_with(|| Instant::now() + ACK_DELAY);
        self.ack_now |= full;
        if held {
            self.held_back(network, instance);
        }
    }

    /// Asks for the envelopes held back from `instance` of `network` to be looked at
    /// once the current one is handled.
    fn held_back(&mut self, network: &str, instance: &str) {
        self.release = Some((network.to_string(), instance.to_string()));
    }
}

/// What the dispatcher knows of every sender it has heard from.
#[derive(Default)]
pub(crate) struct Senders {
    /// By network, then instance.
    windows: HashMap<String, HashMap<String, Sender>>,
}

/// One sender: what it delivered, what waits to be acknowledged to it, and what arrived
/// ahead of a gap.
#[derive(Default)]
pub(crate) struct Sender {
    seen: SeenWindow,
    ack: Pending,
    held: HeldBack,
}

impl Sender {
    /// Learns the sender's floor (`acked_below`), then holds the envelope numbered from
    /// `first` if something before it is missing and this instance is its network's only
    /// one (`alone`): true when held. Only a sender that tells its floor sends again
    /// what is missing, so only its envelopes are held.
    fn hold_if_early(
        &mut self,
        first: u64,
        acked_below: Option<u64>,
        alone: impl FnOnce() -> bool,
        envelope: impl FnOnce() -> Held,
    ) -> bool {
        if let Some(floor) = acked_below {
            self.seen.raise_floor(floor);
        }
        acked_below.is_some()
            && self.seen.waits_before(first)
            && alone()
            && self.held.hold(first, envelope)
    }
}

impl Senders {
    /// The state of `instance` of `network`.
    fn sender(&mut self, network: &str, instance: &str) -> &mut Sender {
        // Look up by borrowed keys first; allocate only for a new sender. (Two lookups
        // because the borrow of the first cannot end early on the found branch.)
        if self
            .windows
            .get(network)
            .is_some_and(|instances| instances.contains_key(instance))
        {
            return self
                .windows
                .get_mut(network)
                .and_then(|instances| instances.get_mut(instance))
                .expect("present: just checked");
        }
        self.windows
            .entry(network.to_string())
            .or_default()
            .entry(instance.to_string())
            .or_default()
    }
}

/// The last number of an envelope numbered from `first` holding `count` messages.
fn last_of(first: u64, count: usize) -> u64 {
    first + count.max(1) as u64 - 1
}

/// The subject prefix of this instance's return traffic.
pub(crate) fn return_prefix(network: &str, instance: &str) -> String {
    format!("_reflow.{network}.{instance}.ret")
}

pub(crate) async fn subscribe_data(bridge: &Bridge) -> Result<async_nats::Subscriber> {
    let subject = crate::subject::network_wildcard(&bridge.network_id);
    bridge
        .client
        .queue_subscribe(subject.clone(), bridge.network_id.to_string())
        .await
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Broker,
                format!("cannot subscribe to {subject}"),
                e,
            )
        })
}

pub(crate) async fn subscribe_returns(bridge: &Bridge) -> Result<async_nats::Subscriber> {
    let subject = format!(
        "{}.*.*",
        return_prefix(&bridge.network_id, &bridge.instance_id)
    );
    bridge.client.subscribe(subject.clone()).await.map_err(|e| {
        Error::with_source(
            ErrorKind::Broker,
            format!("cannot subscribe to {subject}"),
            e,
        )
    })
}

impl Bridge {
    fn reject(&self, err: Error) -> Error {
        self.counters.rejected_in.fetch_add(1, Ordering::Relaxed);
        err
    }

    /// Puts the messages of one inbound envelope into its actor's in-port, in order.
    /// Streamed envelopes (those without a reply) are checked against the sender's
    /// sequence, so a message sent again after a switch of road is delivered once, and
    /// acknowledged to the sender, which came by `road`.
    pub(crate) async fn deliver_data(
        &self,
        subject: &str,
        payload: &Bytes,
        confirmed: bool,
        road: TransportKind,
        state: &mut DispatchState,
    ) -> Result<()> {
        let Some((actor, port)) = parse_data_subject(&self.network_id, subject) else {
            return Err(self.reject(Error::new(
                ErrorKind::Protocol,
                format!("{subject:?} is not a data subject of this network"),
            )));
        };
        let plain = plain(payload).map_err(|e| self.reject(e))?;
        let envelope = EnvelopeView::read(&plain).map_err(|e| self.reject(e))?;
        let (first, count) = (envelope.seq, envelope.messages.len());
        let mut left = count;
        let (mut origin, mut inlet) = (None, None);
        let mut sender =
            (!confirmed).then(|| state.seen.sender(&envelope.network, &envelope.instance));
        if let Some(sender) = sender.as_mut()
            && sender.hold_if_early(
                first,
                envelope.acked_below,
                || self.alone(),
                || Held::new(subject, payload, road, false),
            )
        {
            state.held_back(&envelope.network, &envelope.instance);
            return Ok(());
        }
        let mut delivered = 0;
        let result = async {
            for (message, seq) in envelope.messages.into_iter().zip(first..) {
                left -= 1;
                if let Some(sender) = sender.as_mut()
                    && !sender.seen.first_time(seq)
                {
                    self.counters.duplicates_in.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let inlet = match &inlet {
                    Some(inlet) => inlet,
                    None => {
                        if let Some(reply_to) = &envelope.reply_to {
                            origin = Some(
                                self.attach(actor, &envelope.network, reply_to)
                                    .map_err(|e| self.reject_rest(e, left))?,
                            );
                        }
                        let found = self
                            .inlet(subject, actor, port, &mut state.inlets)
                            .map_err(|e| self.reject_rest(e, left))?;
                        inlet.insert(found.clone())
                    }
                };
                if let Err(err) = inlet.send_from(message, origin.clone()).await {
                    // The node may have been removed; look it up afresh next time.
                    state.inlets.remove(subject);
                    return Err(self.reject_rest(err, left));
                }
                delivered += 1;
            }
            Ok(())
        }
        .await;
        self.counters
            .messages_in
            .fetch_add(delivered, Ordering::Relaxed);
        if let Some(sender) = sender {
            // Handled, delivered or refused: either way the sender need not send it again.
            let full = sender
                .ack
                .record(first, last_of(first, count), payload.len(), road);
            let held = !sender.held.is_empty();
            state.handled(&envelope.network, &envelope.instance, full, held);
        }
        result
    }

    /// Counts a refused message and the `left` after it in its envelope, which share its
    /// fate.
    fn reject_rest(&self, err: Error, left: usize) -> Error {
        self.counters
            .rejected_in
            .fetch_add(left as u64, Ordering::Relaxed);
        self.reject(err)
    }

    /// The inlet for `subject` (`actor`'s in-port `port`), looked up once and kept.
    fn inlet<'s>(
        &self,
        subject: &str,
        actor: &str,
        port: &str,
        inlets: &'s mut HashMap<String, Inlet>,
    ) -> Result<&'s Inlet> {
        if !inlets.contains_key(subject) {
            // Proxies and the bridge's own nodes are not for other networks to feed.
            if actor.starts_with('_') || self.registry.lock().contains(actor) {
                return Err(self.no_actor(actor));
            }
            let inlet = self
                .local
                .read()
                .inlet(actor, port)
                .map_err(|e| match e.kind() {
                    ErrorKind::ActorNotFound => self.no_actor(actor),
                    _ => e,
                })?;
            inlets.insert(subject.to_string(), inlet);
        }
        Ok(&inlets[subject])
    }

    fn no_actor(&self, actor: &str) -> Error {
        Error::new(
            ErrorKind::ActorNotFound,
            format!("no actor {actor:?} on network {:?}", &*self.network_id),
        )
    }

    /// Makes `actor`'s outputs go back to `reply_to` (a proxy on `network`), and returns
    /// the shared copy of `reply_to` that messages from that proxy carry as their origin.
    pub(crate) fn attach(&self, actor: &str, network: &str, reply_to: &str) -> Result<Arc<str>> {
        if let Some(subscribers) = self.egress.read().get(actor)
            && let Some(known) = subscribers.read().iter().find(|s| &*s.reply_to == reply_to)
        {
            return Ok(known.reply_to.clone());
        }
        if actor.starts_with('_') || self.registry.lock().contains(actor) {
            return Err(self.no_actor(actor));
        }
        let subscriber = Subscriber {
            network: network.to_string(),
            reply_to: reply_to.into(),
        };
        let shared = subscriber.reply_to.clone();
        let mut egress = self.egress.write();
        if let Some(subscribers) = egress.get(actor) {
            let mut list = subscribers.write();
            match list.iter().find(|s| s.reply_to == shared) {
                Some(known) => return Ok(known.reply_to.clone()),
                None => list.push(subscriber),
            }
            return Ok(shared);
        }
        let mut local = self.local.write();
        let outports = local
            .node(actor)
            .filter(|_| local.has_actor(actor))
            .map(|info| info.outports.clone())
            .ok_or_else(|| self.no_actor(actor))?;
        let subscribers = Arc::new(parking_lot::RwLock::new(vec![subscriber]));
        let node_id = format!("_egress:{actor}");
        let actor_impl = Egress {
            bridge: self.weak_self(),
            actor: actor.into(),
            outports: outports.clone(),
            subscribers: subscribers.clone(),
        };
        local.add_bridge_node(
            &node_id,
            "egress",
            Box::new(actor_impl),
            Default::default(),
            true,
        )?;
        for port in &outports {
            local.add_connection(Connector::new(actor, port, &node_id, port))?;
        }
        egress.insert(actor.to_string(), subscribers);
        Ok(shared)
    }

    /// Stops returning `actor`'s outputs to `reply_to`.
    pub(crate) fn detach(&self, actor: &str, reply_to: &str) {
        if let Some(subscribers) = self.egress.read().get(actor) {
            subscribers.write().retain(|s| &*s.reply_to != reply_to);
        }
    }

    /// Stops returning outputs to any proxy on `network`.
    pub(crate) fn detach_network(&self, network: &str) {
        for subscribers in self.egress.read().values() {
            subscribers.write().retain(|s| s.network != network);
        }
    }

    /// Emits a returned output on its proxy's out-port, once per sequence number, and
    /// acknowledges it to its sender, which came by `road`.
    pub(crate) async fn deliver_return(
        &self,
        subject: &str,
        payload: &Bytes,
        road: TransportKind,
        state: &mut DispatchState,
    ) -> Result<()> {
        let prefix = super::inbound::return_prefix(&self.network_id, &self.instance_id);
        let rest = subject
            .strip_prefix(prefix.as_str())
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|r| r.split_once('.'))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Protocol,
                    format!("{subject:?} is not a return subject"),
                )
            })?;
        let (token, port) = rest;
        let plain = plain(payload)?;
        let envelope = EnvelopeView::read(&plain)?;
        let (first, count) = (envelope.seq, envelope.messages.len());
        let sender = state.seen.sender(&envelope.network, &envelope.instance);
        if sender.hold_if_early(
            first,
            envelope.acked_below,
            || self.alone(),
            || Held::new(subject, payload, road, true),
        ) {
            state.held_back(&envelope.network, &envelope.instance);
            return Ok(());
        }
        let mut result = Ok(());
        for (message, seq) in envelope.messages.into_iter().zip(first..) {
            if !sender.seen.first_time(seq) {
                self.counters.duplicates_in.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            result = self
                .emit_return(token, port, message, &mut state.outlets)
                .await;
            if result.is_err() {
                break;
            }
        }
        let full = sender
            .ack
            .record(first, last_of(first, count), payload.len(), road);
        let held = !sender.held.is_empty();
        state.handled(&envelope.network, &envelope.instance, full, held);
        result
    }

    /// Delivers the envelopes of `instance` of `network` held back that may go now, in
    /// order: those whose gap has filled, and those that waited too long for it.
    pub(crate) async fn release_held(
        &self,
        network: &str,
        instance: &str,
        state: &mut DispatchState,
    ) {
        loop {
            let Sender { seen, held, .. } = state.seen.sender(network, instance);
            let Some((first, envelope, gave_up)) =
                held.next_due(|first| seen.waits_before(first), Instant::now())
            else {
                return;
            };
            if gave_up {
                tracing::warn!(
                    network,
                    instance,
                    "what came before envelope {first} did not arrive in time; delivering on"
                );
                seen.raise_floor(first);
            }
            let result = if envelope.returned {
                self.deliver_return(&envelope.subject, &envelope.payload, envelope.road, state)
                    .await
            } else {
                self.deliver_data(
                    &envelope.subject,
                    &envelope.payload,
                    false,
                    envelope.road,
                    state,
                )
                .await
            };
            if let Err(err) = result {
                tracing::warn!(subject = envelope.subject, error = %err, "held envelope refused");
            }
        }
    }

    /// Sends every acknowledgement that waits.
    pub(crate) async fn flush_acks(&self, state: &mut DispatchState) {
        state.ack_due = None;
        state.ack_now = false;
        for (network, instances) in &mut state.seen.windows {
            for (instance, sender) in instances {
                if !sender.ack.is_empty() {
                    self.send_ack(network, instance, &mut sender.ack).await;
                }
            }
        }
    }

    /// Emits one returned output on the out-port `port` of the proxy with `token`.
    async fn emit_return(
        &self,
        token: &str,
        port: &str,
        message: Message,
        outlets: &mut HashMap<String, Outlet>,
    ) -> Result<()> {
        let outlet = match outlets.get(token) {
            Some(outlet) => outlet.clone(),
            None => {
                let alias = self
                    .registry
                    .lock()
                    .alias_of_token(token)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::ActorNotFound,
                            format!("no proxy for return token {token:?} (unregistered?)"),
                        )
                    })?;
                let outlet = self.local.read().outlet(&alias)?;
                outlets.insert(token.to_string(), outlet.clone());
                outlet
            }
        };
        match outlet.emit(port, message).await {
            Ok(()) => {
                self.counters.returns_in.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                outlets.remove(token);
                Err(err)
            }
        }
    }
}
