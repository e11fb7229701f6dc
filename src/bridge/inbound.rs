//! The dispatchers' work: taking traffic off the roads and into the local graph.
//!
//! Data for this network's actors arrives on `{network}.*.*` (queue group `{network}`);
//! outputs of remote actors come back on this instance's return subject. The dispatcher
//! asks the [`Ledger`](super::ledger::Ledger) what to do with each streamed envelope,
//! gives each new one a [`Cause`] whose completion acknowledges it as handled, and puts
//! its messages into the target's inbox, waiting while it is full, so a slow actor slows
//! its senders (they hold back once their window is full).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;

use super::Bridge;
use super::confirmed::{Begin, ReplyTo};
use super::ledger::Arrival;
use super::proxy::{Egress, Subscriber};
use super::sequence::{Held, HeldBack};
use crate::error::{Error, ErrorKind, Result};
use crate::events::TransportKind;
use crate::message::seal::Purpose;
use crate::message::{EnvelopeView, Message};
use crate::network::{Cause, Connector, Inlet, Outlet, Trace};
use crate::subject::parse_data_subject;

/// What the dispatcher remembers between messages.
#[derive(Default)]
pub(crate) struct DispatchState {
    /// Proxy outlets by return token.
    outlets: HashMap<String, Outlet>,
    /// Inlets by data subject, so the hot path needs no lock and no allocation.
    pub(super) inlets: HashMap<String, Inlet>,
    /// Envelopes held back after a gap, per sender (network, instance).
    held: HashMap<(String, String), HeldBack>,
    /// A sender with envelopes held back, to look at once the current envelope is done.
    pub(crate) release: Option<(String, String)>,
}

impl DispatchState {
    /// Holds an envelope of `sender` numbered from `first`; false when too many are.
    fn hold(&mut self, sender: (&str, &str), first: u64, envelope: impl FnOnce() -> Held) -> bool {
        let key = (sender.0.to_string(), sender.1.to_string());
        let held = self
            .held
            .entry(key.clone())
            .or_default()
            .hold(first, envelope);
        if held {
            self.release = Some(key);
        }
        held
    }

    /// Whether any envelope is held back.
    pub(crate) fn is_holding(&self) -> bool {
        self.held.values().any(|h| !h.is_empty())
    }

    /// Every sender with envelopes held back.
    pub(crate) fn holding(&self) -> Vec<(String, String)> {
        self.held
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// After an envelope of `sender`, its held envelopes are looked at again.
    fn touched(&mut self, sender: (&str, &str)) {
        if self
            .held
            .get(&(sender.0.to_string(), sender.1.to_string()))
            .is_some_and(|h| !h.is_empty())
        {
            self.release = Some((sender.0.to_string(), sender.1.to_string()));
        }
    }
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

/// The subject prefix of confirmed sends addressed to this instance alone (a retry with
/// the same id must reach the instance that saw it).
pub(crate) fn addressed_prefix(network: &str, instance: &str) -> String {
    format!("_reflow.{network}.{instance}.to")
}

/// This instance's own subjects: returned outputs (`….ret.{token}.{port}`) and confirmed
/// sends addressed to it (`….to.{actor}.{port}`), in one subscription.
pub(crate) async fn subscribe_returns(bridge: &Bridge) -> Result<async_nats::Subscriber> {
    let subject = format!("_reflow.{}.{}.*.*.*", bridge.network_id, bridge.instance_id);
    bridge.client.subscribe(subject.clone()).await.map_err(|e| {
        Error::with_source(
            ErrorKind::Broker,
            format!("cannot subscribe to {subject}"),
            e,
        )
    })
}

/// The answer a confirmed send gets when it is refused with `err`.
fn refusal(err: &Error) -> Bytes {
    crate::discovery::reply_bytes::<()>(Err(Error::new(err.kind(), err.detail())))
}

impl Bridge {
    /// What follows this instance's addressed prefix in `subject` (`{actor}.{port}`),
    /// if `subject` is addressed to it. Data subjects never begin with the control
    /// prefix, so they cost one comparison.
    pub(crate) fn addressed_rest<'s>(&self, subject: &'s str) -> Option<&'s str> {
        if !subject.starts_with(crate::subject::CONTROL_PREFIX) {
            return None;
        }
        subject
            .strip_prefix(addressed_prefix(&self.network_id, &self.instance_id).as_str())?
            .strip_prefix('.')
    }
}

/// How a streamed envelope is to be taken.
pub(crate) struct Streamed {
    pub(crate) road: TransportKind,
    /// Whether it may be held back after a gap (not when it already waited too long).
    pub(crate) may_hold: bool,
}

impl Bridge {
    fn reject(&self, err: Error) -> Error {
        self.counters.rejected_in.fetch_add(1, Ordering::Relaxed);
        err
    }

    /// The cause of a streamed envelope of `sender`, numbered `first..=last`: once it is
    /// handled, the ledger owes the sender its acknowledgement.
    fn streamed_cause(
        &self,
        sender: (&str, &str),
        (first, last): (u64, u64),
        (bytes, road): (usize, TransportKind),
        redelivered: bool,
    ) -> Cause {
        let ledger = self.ledger.clone();
        let (network, instance) = (sender.0.to_string(), sender.1.to_string());
        Cause::new(redelivered, move |handled| {
            ledger.complete((&network, &instance), (first, last), (bytes, road), handled);
        })
    }

    /// The cause of a confirmed send answered at `reply`: once it is handled, the caller
    /// (and any retry with the same id) gets the answer.
    fn confirmed_cause(&self, id: Option<String>, reply: ReplyTo) -> Cause {
        let bridge = self.weak_self();
        let reply = parking_lot::Mutex::new(Some(reply));
        Cause::new(false, move |handled| {
            let Some(bridge) = bridge.upgrade() else {
                return;
            };
            let answer = if handled {
                Bytes::new()
            } else {
                crate::discovery::reply_bytes::<()>(Err(Error::new(
                    ErrorKind::Shutdown,
                    "the network shut down before the message was handled; send it again",
                )))
            };
            let mut replies: Vec<ReplyTo> = reply.lock().take().into_iter().collect();
            if let Some(id) = &id {
                replies.extend(bridge.confirmations.finish(id, handled.then_some(&answer)));
            }
            // The common case, one answer through the broker, goes at once when the
            // client has room for it; anything else, from a task of its own.
            if let [ReplyTo::Nats(subject)] = replies.as_slice()
                && bridge.try_notice(subject.clone(), answer.clone())
            {
                return;
            }
            let tracker = bridge.tracker.clone();
            tracker.spawn(async move { bridge.answer_all(replies, answer).await });
        })
    }

    /// Answers confirmed sends.
    pub(crate) async fn answer_all(&self, replies: Vec<ReplyTo>, answer: Bytes) {
        for reply in replies {
            match reply {
                ReplyTo::Nats(subject) => {
                    let sent = self
                        .publish_notice(TransportKind::Nats, "", subject, answer.clone())
                        .await;
                    if let Err(err) = sent {
                        tracing::warn!(error = %err, "could not answer a confirmed send");
                    }
                }
                ReplyTo::Direct(replier) => {
                    if let Err(err) = replier.send(Ok(answer.clone())).await {
                        tracing::debug!(error = %err, "could not answer a direct request");
                    }
                }
            }
        }
    }

    /// What to deliver of a streamed envelope (see [`Arrival`]): `None` when nothing (it
    /// is held back after a gap, or a repeat); else which of its messages are new
    /// (`None` inside: all of them). `returned` tells a returned output from data.
    fn admit(
        &self,
        envelope: &EnvelopeView<'_>,
        subject: &str,
        payload: &Bytes,
        how: &Streamed,
        returned: bool,
        state: &mut DispatchState,
    ) -> Option<Option<Vec<bool>>> {
        let count = envelope.messages.len();
        let span = (envelope.seq, envelope.seq + count.max(1) as u64 - 1);
        let sender = (&*envelope.network, &*envelope.instance);
        if let Some(epoch) = envelope.epoch
            && !self.ledger.epoch(sender, epoch)
        {
            // From a previous life of a sender that has restarted since: nobody waits
            // for it any more.
            self.counters
                .duplicates_in
                .fetch_add(count as u64, Ordering::Relaxed);
            return None;
        }
        let size = (payload.len(), how.road);
        let mut arrival = self
            .ledger
            .arrive(sender, span, envelope.acked_below, size, || {
                how.may_hold && self.alone()
            });
        if arrival == Arrival::Hold {
            if state.hold(sender, span.0, || {
                Held::new(subject, payload, how.road, returned)
            }) {
                return None;
            }
            // Too much held: it goes on out of order rather than be lost.
            arrival = self
                .ledger
                .arrive(sender, span, envelope.acked_below, size, || false);
        }
        state.touched(sender);
        match arrival {
            Arrival::Repeat => {
                self.counters
                    .duplicates_in
                    .fetch_add(count as u64, Ordering::Relaxed);
                None
            }
            Arrival::Partly(fresh) => Some(Some(fresh)),
            Arrival::Fresh | Arrival::Hold => Some(None),
        }
    }

    /// Takes one inbound data envelope: a streamed one (`reply` is `None`), delivered
    /// once per sequence number and acknowledged to its sender once handled; or a
    /// confirmed one, answered at `reply` once handled (or at once, when refused).
    pub(crate) async fn deliver_data(
        &self,
        subject: &str,
        payload: &Bytes,
        reply: Option<ReplyTo>,
        how: Streamed,
        state: &mut DispatchState,
    ) -> Result<()> {
        let result = self
            .deliver_data_or_refuse(subject, payload, reply, how, state)
            .await;
        match result {
            Ok(()) => Ok(()),
            Err((err, Some(reply))) => {
                self.answer_all(vec![reply], refusal(&err)).await;
                Err(err)
            }
            Err((err, None)) => Err(err),
        }
    }

    async fn deliver_data_or_refuse(
        &self,
        subject: &str,
        payload: &Bytes,
        reply: Option<ReplyTo>,
        how: Streamed,
        state: &mut DispatchState,
    ) -> std::result::Result<(), (Error, Option<ReplyTo>)> {
        // A confirmed send addressed to this instance alone names the actor and port
        // after its prefix.
        let plain_subject;
        let subject = match self.addressed_rest(subject) {
            Some(rest) => {
                plain_subject = format!("{}.{rest}", self.network_id);
                plain_subject.as_str()
            }
            None => subject,
        };
        let Some((actor, port)) = parse_data_subject(&self.network_id, subject) else {
            return Err((
                self.reject(Error::new(
                    ErrorKind::Protocol,
                    format!("{subject:?} is not a data subject of this network"),
                )),
                reply,
            ));
        };
        let purpose = if reply.is_some() {
            Purpose::Confirmed
        } else {
            Purpose::Data
        };
        let (plain, sealed_at) = match self.admitted(purpose, subject, payload) {
            Ok(admitted) => admitted,
            Err(err) => return Err((self.reject(err), reply)),
        };
        let envelope = match EnvelopeView::read(&plain) {
            Ok(envelope) => envelope,
            Err(err) => return Err((self.reject(err), reply)),
        };
        if let Err(err) = self
            .gate
            .sealed_while_alive((&envelope.network, &envelope.instance), sealed_at)
        {
            return Err((self.reject(err), reply));
        }
        let (first, count) = (envelope.seq, envelope.messages.len());
        let last = first + count.max(1) as u64 - 1;
        let sender = (&*envelope.network, &*envelope.instance);
        // A confirmed send: its id, and where to answer it.
        let mut confirmed = None;
        let mut fresh = None;
        match reply {
            Some(reply) => {
                // An id is the caller's: scoped by its network and the target, so two
                // callers (or one caller's two targets) never share one.
                let id = envelope
                    .key
                    .as_deref()
                    .map(|k| format!("{}\u{1f}{subject}\u{1f}{k}", envelope.network));
                let reply = match &id {
                    None => reply,
                    Some(id) => match self.confirmations.begin(id, reply) {
                        Begin::New(reply) => reply,
                        Begin::Joined => return Ok(()),
                        Begin::Answered(reply, answer) => {
                            self.counters.duplicates_in.fetch_add(1, Ordering::Relaxed);
                            self.answer_all(vec![reply], answer).await;
                            return Ok(());
                        }
                    },
                };
                confirmed = Some((id, reply));
            }
            None => match self.admit(&envelope, subject, payload, &how, false, state) {
                Some(admitted) => fresh = admitted,
                None => return Ok(()),
            },
        }
        // Where the message goes. A refusal is the outcome: a streamed envelope is
        // acknowledged as handled (sending it again would not help), a confirmed send
        // is answered with the error.
        let target = self
            .attach_origin(actor, &envelope.network, envelope.reply_to.as_deref())
            .and_then(|origin| {
                let inlet = self.inlet(subject, actor, port, &mut state.inlets)?;
                Ok((origin, inlet.clone()))
            });
        let (origin, inlet) = match target {
            Ok(target) => target,
            Err(err) => {
                self.reject_rest(&err, count - 1);
                let err = self.reject(err);
                return match confirmed {
                    Some((id, reply)) => {
                        if let Some(id) = id {
                            let answer = refusal(&err);
                            let waiting = self.confirmations.finish(&id, Some(&answer));
                            self.answer_all(waiting, answer).await;
                        }
                        Err((err, Some(reply)))
                    }
                    None => {
                        self.ledger.complete(
                            sender,
                            (first, last),
                            (payload.len(), how.road),
                            true,
                        );
                        Err((err, None))
                    }
                };
            }
        };
        let cause = match confirmed {
            Some((id, reply)) => self.confirmed_cause(id, reply),
            None => self.streamed_cause(
                sender,
                (first, last),
                (payload.len(), how.road),
                envelope.redelivered,
            ),
        };
        let mut delivered = 0;
        for (index, message) in envelope.messages.into_iter().enumerate() {
            if fresh.as_ref().is_some_and(|fresh| !fresh[index]) {
                self.counters.duplicates_in.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let trace = Trace::new(origin.clone(), Some(cause.clone()));
            if let Err(err) = inlet.send_from(message, trace).await {
                // The node may have been removed; look it up afresh next time. Its
                // trace, dropped unhandled, leaves the cause unacknowledged.
                state.inlets.remove(subject);
                self.counters
                    .messages_in
                    .fetch_add(delivered, Ordering::Relaxed);
                self.reject_rest(&err, count - index - 1);
                return Err((self.reject(err), None));
            }
            delivered += 1;
        }
        self.counters
            .messages_in
            .fetch_add(delivered, Ordering::Relaxed);
        Ok(())
    }

    /// Emits a returned output on its proxy's out-port, once per sequence number; it is
    /// acknowledged to its sender once what it caused here is handled.
    pub(crate) async fn deliver_return(
        &self,
        subject: &str,
        payload: &Bytes,
        how: Streamed,
        state: &mut DispatchState,
    ) -> Result<()> {
        let prefix = return_prefix(&self.network_id, &self.instance_id);
        let (token, port) = subject
            .strip_prefix(prefix.as_str())
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|r| r.split_once('.'))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Protocol,
                    format!("{subject:?} is not a return subject"),
                )
            })?;
        let (plain, sealed_at) = self
            .admitted(Purpose::Return, subject, payload)
            .map_err(|e| self.reject(e))?;
        let envelope = EnvelopeView::read(&plain)?;
        self.gate
            .sealed_while_alive((&envelope.network, &envelope.instance), sealed_at)
            .map_err(|e| self.reject(e))?;
        let (first, count) = (envelope.seq, envelope.messages.len());
        let last = first + count.max(1) as u64 - 1;
        let sender = (&*envelope.network, &*envelope.instance);
        let Some(fresh) = self.admit(&envelope, subject, payload, &how, true, state) else {
            return Ok(());
        };
        let cause = self.streamed_cause(
            sender,
            (first, last),
            (payload.len(), how.road),
            envelope.redelivered,
        );
        for (index, message) in envelope.messages.into_iter().enumerate() {
            if fresh.as_ref().is_some_and(|fresh| !fresh[index]) {
                self.counters.duplicates_in.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let trace = Trace::new(None, Some(cause.clone()));
            if let Err(err) = self
                .emit_return(token, port, message, trace, &mut state.outlets)
                .await
            {
                // A return that cannot be emitted (the proxy is gone, or this network is
                // shutting down) is refused: no other instance could take it, so it
                // counts as handled.
                cause.refuse();
                return Err(err);
            }
        }
        Ok(())
    }

    /// Delivers the envelopes of `sender` held back that may go now, in order: those
    /// whose gap has filled, and those that waited too long for it.
    pub(crate) async fn release_held(&self, sender: &(String, String), state: &mut DispatchState) {
        loop {
            let Some(held) = state.held.get_mut(sender) else {
                return;
            };
            let next = held.next_due(
                |first| self.ledger.gap_before((&sender.0, &sender.1), first),
                Instant::now(),
            );
            let Some((first, envelope, gave_up)) = next else {
                return;
            };
            if held.is_empty() {
                state.held.remove(sender);
            }
            if gave_up {
                tracing::warn!(
                    network = sender.0,
                    instance = sender.1,
                    "what came before envelope {first} did not arrive in time; delivering on"
                );
            }
            let how = Streamed {
                road: envelope.road,
                may_hold: !gave_up,
            };
            let result = if envelope.returned {
                self.deliver_return(&envelope.subject, &envelope.payload, how, state)
                    .await
            } else {
                self.deliver_data(&envelope.subject, &envelope.payload, None, how, state)
                    .await
            };
            if let Err(err) = result {
                self.refused("held envelope", &envelope.subject, &err);
            }
        }
    }

    /// Logs a refused inbound message (`what`, on `subject`): at most one line per
    /// [`crate::throttle::PERIOD`], saying how many were held back, with the subject and
    /// the error clipped (both may come from anyone who can publish).
    pub(crate) fn refused(&self, what: &str, subject: &str, err: &Error) {
        if let Some(held_back) = self.refusal_log.allow() {
            tracing::warn!(
                subject = %crate::throttle::clip(subject),
                error = %crate::throttle::clip(&err.to_string()),
                held_back,
                "{what} refused (refusals are counted in rejected_in; one line per {:?})",
                crate::throttle::PERIOD
            );
        }
    }

    /// Counts a refused message and the `left` after it in its envelope, which share its
    /// fate.
    fn reject_rest(&self, _err: &Error, left: usize) {
        self.counters
            .rejected_in
            .fetch_add(left as u64, Ordering::Relaxed);
    }

    /// The inlet for `subject` (`actor`'s in-port `port`), looked up once and kept.
    pub(super) fn inlet<'s>(
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

    pub(super) fn no_actor(&self, actor: &str) -> Error {
        Error::new(
            ErrorKind::ActorNotFound,
            format!("no actor {actor:?} on network {:?}", &*self.network_id),
        )
    }

    /// Where `actor`'s outputs for a message that names `reply_to` go back to, if it
    /// names one (see [`Bridge::attach`]).
    fn attach_origin(
        &self,
        actor: &str,
        network: &str,
        reply_to: Option<&str>,
    ) -> Result<Option<Arc<str>>> {
        reply_to
            .map(|reply_to| self.attach(actor, network, reply_to))
            .transpose()
    }

    /// Makes `actor`'s outputs go back to `reply_to` (a proxy on `network`), and returns
    /// the shared copy of `reply_to` that messages from that proxy carry as their origin.
    pub(crate) fn attach(&self, actor: &str, network: &str, reply_to: &str) -> Result<Arc<str>> {
        let Some(instance) = crate::subject::return_subject_instance(network, reply_to) else {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "outputs may go back only to a return subject of the network that asks \
                     (_reflow.{}.<instance>.ret.<token>), not to {:?}",
                    crate::throttle::clip(network),
                    crate::throttle::clip(reply_to)
                ),
            ));
        };
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
            drop(list);
            drop(egress);
            self.bury_unless_live(network, instance);
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
        drop(local);
        drop(egress);
        self.bury_unless_live(network, instance);
        Ok(shared)
    }

    /// Whether `actor` has an egress that no longer fits it: the node was removed and made
    /// again (its connections to the egress went with the old node), or its out-ports
    /// changed.
    pub(super) fn egress_outdated(&self, actor: &str) -> bool {
        if !self.egress.read().contains_key(actor) {
            return false;
        }
        let local = self.local.read();
        let egress_id = format!("_egress:{actor}");
        let (Some(node), Some(egress)) = (local.node(actor), local.node(&egress_id)) else {
            return true;
        };
        node.outports != egress.inports
            || !node.outports.iter().all(|port| {
                local.connections().iter().any(|c| {
                    c.from.actor == actor && c.from.port == *port && c.to.actor == egress_id
                })
            })
    }

    /// Makes `actor`'s egress again for the node as it is now, keeping its subscribers.
    pub(super) fn rebuild_egress(&self, actor: &str) -> Result<()> {
        let Some(subscribers) = self.egress.write().remove(actor) else {
            return Ok(());
        };
        let egress_id = format!("_egress:{actor}");
        {
            let mut local = self.local.write();
            if local.node(&egress_id).is_some() {
                local.remove_node(&egress_id)?;
            }
        }
        let list: Vec<Subscriber> = subscribers.read().clone();
        for subscriber in list {
            self.attach(actor, &subscriber.network, &subscriber.reply_to)?;
        }
        Ok(())
    }

    /// Stops returning `actor`'s outputs to `reply_to`.
    pub(crate) fn detach(&self, actor: &str, reply_to: &str) {
        if let Some(subscribers) = self.egress.read().get(actor) {
            subscribers.write().retain(|s| &*s.reply_to != reply_to);
        }
    }

    /// Stops returning outputs to the proxies whose return subjects start with `prefix`
    /// (those of one instance that died). A message that names one of them again
    /// attaches it again.
    pub(crate) fn detach_prefix(&self, prefix: &str) {
        for subscribers in self.egress.read().values() {
            subscribers
                .write()
                .retain(|s| !s.reply_to.starts_with(prefix));
        }
    }

    /// Stops returning outputs to any proxy on `network`.
    pub(crate) fn detach_network(&self, network: &str) {
        for subscribers in self.egress.read().values() {
            subscribers.write().retain(|s| s.network != network);
        }
    }

    /// Emits one returned output on the out-port `port` of the proxy with `token`.
    async fn emit_return(
        &self,
        token: &str,
        port: &str,
        message: Message,
        trace: Trace,
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
        match outlet.emit_from(port, message, trace).await {
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
