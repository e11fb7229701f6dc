//! Acknowledgements, both ways.
//!
//! * As a receiver, this instance owes its senders acknowledgements, which the
//!   [`Ledger`](super::ledger::Ledger) collects: *accepted* as soon as the dispatcher takes
//!   an envelope, *handled* once the envelope's cause completes. [`send_owed`] sends them
//!   in one small JSON notice per sender on `_reflow.{sender network}.{sender
//!   instance}.ack`, [`ACK_DELAY`](super::ledger::ACK_DELAY) after the first, or at once
//!   when enough wait.
//! * As a sender, it applies the notices it hears to the stream's
//!   [`SendWindow`](super::window::SendWindow), from a task of its own, so an
//!   acknowledgement never waits behind data; the same task sends again what is due, and
//!   tells the windows when an instance of a receiving network dies or appears.
//!
//! Acknowledgements go back the way the data came: through the broker, or ahead of the
//! data queued on a direct link, where the link hands them straight to that task. One
//! that is lost costs a repeat, which the receiver recognises and acknowledges again.

use std::sync::Weak;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Bridge;
use super::ledger::Ack;
use super::sequence::Outbox;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{NetworkEvent, TransportKind};
use crate::message::seal::Purpose;

/// Acknowledgements from direct links waiting to be applied, at most; more are dropped
/// (what they acknowledged is sent again, and acknowledged then).
pub(crate) const DIRECT_ACKS: usize = 256;

/// How long an instance must stay gone before it is buried (see `Bridge::bury`): a
/// broker frozen for longer than a liveness TTL makes live instances' entries expire
/// when it resumes, and their next heartbeat brings them back.
const GONE_GRACE: Duration = Duration::from_secs(5);

/// How often a graceful shutdown looks again at what it waits for.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// The subject on which `instance` of `network` hears acknowledgements.
pub(crate) fn ack_subject(network: &str, instance: &str) -> String {
    format!("_reflow.{network}.{instance}.ack")
}

/// Subscribes to `subject`, this instance's acknowledgement subject.
pub(crate) async fn subscribe(bridge: &Bridge, subject: &str) -> Result<async_nats::Subscriber> {
    bridge
        .client
        .subscribe(subject.to_string())
        .await
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Broker,
                format!("cannot subscribe to {subject}"),
                e,
            )
        })
}

/// Applies the acknowledgements that come through the broker and over direct links, and
/// follows the receiving networks' instances, until cancelled.
pub(crate) async fn run(
    bridge: Weak<Bridge>,
    mut acks: async_nats::Subscriber,
    mut direct: mpsc::Receiver<Bytes>,
    mut members: mpsc::Receiver<NetworkEvent>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            message = acks.next() => {
                let Some(message) = message else { return };
                let Some(bridge) = bridge.upgrade() else { return };
                bridge.take_ack(&message.payload);
            }
            Some(payload) = direct.recv() => {
                let Some(bridge) = bridge.upgrade() else { return };
                bridge.take_ack(&payload);
            }
            Some(event) = members.recv() => {
                let Some(bridge) = bridge.upgrade() else { return };
                bridge.membership_changed(&event);
            }
        }
    }
}

/// Sends what this instance owes its senders as it falls due, until cancelled; then
/// sends what is still owed.
pub(crate) async fn send_owed(bridge: Weak<Bridge>, cancel: CancellationToken) {
    let Some(ledger) = bridge.upgrade().map(|b| b.ledger.clone()) else {
        return;
    };
    loop {
        let stop = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = ledger.due() => false,
        };
        let Some(bridge) = bridge.upgrade() else {
            return;
        };
        bridge.send_acks().await;
        if stop {
            return;
        }
    }
}

impl Bridge {
    /// Applies an acknowledgement to the stream it speaks of. With an auth token, only a
    /// sealed one: a forged acknowledgement would make a stream drop what it holds.
    fn take_ack(&self, payload: &Bytes) {
        let subject = ack_subject(&self.network_id, &self.instance_id);
        let payload = match self.admitted(Purpose::Ack, &subject, payload) {
            Ok((payload, _)) => payload,
            Err(err) => {
                self.refused("acknowledgement", &subject, &err);
                return;
            }
        };
        let ack: Ack = match serde_json::from_slice(&payload) {
            Ok(ack) => ack,
            Err(err) => {
                tracing::warn!(error = %err, "an acknowledgement that is not one was ignored");
                return;
            }
        };
        let window = self
            .streams
            .lock()
            .get(&ack.network)
            .map(|s| s.window.clone());
        if let Some(window) = window {
            window.acknowledge(&ack.instance, &ack.handled, &ack.accepted);
        }
    }

    /// Tells the streams to a network that one of its instances died or appeared: what
    /// a dead one held goes again at once, and a silent stream probes a new one.
    fn membership_changed(&self, event: &NetworkEvent) {
        let (network, instance, gone) = match event {
            NetworkEvent::NetworkDown {
                network, instance, ..
            } => (network, instance.as_str(), true),
            NetworkEvent::NetworkUp { network, instance } => (network, instance.as_str(), false),
            NetworkEvent::Lagged { missed } => {
                tracing::debug!(
                    missed,
                    "missed liveness events; comparing what this instance follows with the roster"
                );
                self.sweep_members();
                return;
            }
            _ => return,
        };
        let window = self.streams.lock().get(network).map(|s| s.window.clone());
        if gone {
            // Most instances that come and go are nothing to this one: only those it
            // streams to, receives from or returns outputs to are followed.
            if window.is_some() || self.follows(network, instance) {
                self.instance_gone(network, instance);
            }
        } else {
            let returns = super::inbound::return_prefix(network, instance);
            self.gone_returns.lock().remove(&returns);
        }
        let Some(window) = window else { return };
        if gone {
            let orphaned = window.instance_gone(instance);
            if orphaned > 0 {
                tracing::info!(
                    network,
                    instance,
                    envelopes = orphaned,
                    "an instance died holding unhandled envelopes; they go again"
                );
            }
        } else {
            window.instance_appeared();
        }
    }

    /// Whether this instance receives from `instance` of `network`, or returns outputs
    /// to it.
    fn follows(&self, network: &str, instance: &str) -> bool {
        if self.ledger.knows(network, instance) {
            return true;
        }
        let prefix = format!("{}.", super::inbound::return_prefix(network, instance));
        self.egress.read().values().any(|subscribers| {
            subscribers
                .read()
                .iter()
                .any(|s| s.reply_to.starts_with(&prefix))
        })
    }

    /// After missed liveness events: treats every instance this one follows that the
    /// roster no longer holds as gone, and lets every stream's window look again.
    fn sweep_members(&self) {
        let mut followed = self.ledger.senders();
        for subscribers in self.egress.read().values() {
            for s in subscribers.read().iter() {
                // reply_to is `_reflow.{network}.{instance}.ret.{token}`.
                if let Some(rest) = s.reply_to.strip_prefix("_reflow.")
                    && let Some((network_instance, _)) = rest.rsplit_once(".ret.")
                    && let Some(instance) =
                        network_instance.strip_prefix(&format!("{}.", s.network))
                {
                    followed.push((s.network.clone(), instance.to_string()));
                }
            }
        }
        followed.sort();
        followed.dedup();
        for (network, instance) in followed {
            if !self.is_live(&network, &instance) {
                self.instance_gone(&network, &instance);
            }
        }
        let windows: Vec<(String, _)> = self
            .streams
            .lock()
            .iter()
            .map(|(network, s)| (network.clone(), s.window.clone()))
            .collect();
        for (network, window) in windows {
            for holder in window.holders() {
                if !self.is_live(&network, &holder) {
                    window.instance_gone(&holder);
                }
            }
        }
    }

    /// `instance` of `network` went down. If it is still gone [`GONE_GRACE`] later (not
    /// back under a new incarnation, nor back after a broker freeze made its entry
    /// expire while it lived), it is buried: see [`Bridge::bury`].
    fn instance_gone(&self, network: &str, instance: &str) {
        let me = self.weak_self();
        let (network, instance) = (network.to_string(), instance.to_string());
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(GONE_GRACE) => {}
            }
            if let Some(bridge) = me.upgrade()
                && !bridge.is_live(&network, &instance)
            {
                bridge.bury(&network, &instance);
            }
        });
    }

    /// A new subscriber to an actor's outputs, `instance` of `network`, that liveness
    /// does not know: buried if it is still unknown [`GONE_GRACE`] from now, so that a
    /// subscriber that never lived (a fake attach) or died meanwhile is dropped and what
    /// was streamed to it is given up, instead of holding the actor back for ever.
    /// Without liveness (not joined yet) nobody is buried.
    pub(super) fn bury_unless_live(&self, network: &str, instance: &str) {
        if self.liveness.get().is_some() && !self.is_live(network, instance) {
            self.instance_gone(network, instance);
        }
    }

    /// Whether the liveness roster holds `instance` of `network` now.
    fn is_live(&self, network: &str, instance: &str) -> bool {
        self.liveness.get().is_some_and(|liveness| {
            liveness
                .roster
                .read()
                .contains(&format!("{network}.{instance}"))
        })
    }

    /// Lets go of an instance that died: what this instance remembers of its streams
    /// (a sender that comes back tells its floor again, so memory stays bounded however
    /// many come and go), and the outputs returned to its proxies, which can reach no
    /// one: the stream gives them up, counted as refused, so a caller that died never
    /// stalls the actor it called, and its proxies are detached.
    fn bury(&self, network: &str, instance: &str) {
        self.ledger.forget(network, instance);
        self.gate
            .bury_at((network, instance), crate::discovery::now_ms());
        let returns = super::inbound::return_prefix(network, instance);
        let prefix = format!("{returns}.");
        {
            let now = Instant::now();
            let mut gone = self.gone_returns.lock();
            gone.retain(|_, at| now.duration_since(*at) < super::GONE_REMEMBERED);
            gone.insert(returns, now);
        }
        self.detach_prefix(&prefix);
        let window = self.streams.lock().get(network).map(|s| s.window.clone());
        if let Some(window) = window {
            let given_up = window.give_up_on(&prefix);
            if given_up > 0 {
                tracing::info!(
                    network,
                    instance,
                    envelopes = given_up,
                    "outputs returned to an instance that died were given up"
                );
            }
        }
    }

    /// Whether `subject` returns outputs to an instance that died.
    pub(crate) fn returns_to_the_dead(&self, subject: &str) -> bool {
        let gone = self.gone_returns.lock();
        !gone.is_empty()
            && subject
                .rsplitn(3, '.')
                .nth(2)
                .is_some_and(|prefix| gone.contains_key(prefix))
    }

    /// Gives up what the stream to `network` still holds for instances that died.
    pub(crate) fn give_up_on_the_dead(&self, network: &str, outbox: &Outbox) {
        let mine = format!("_reflow.{network}.");
        let prefixes: Vec<String> = self
            .gone_returns
            .lock()
            .keys()
            .filter(|p| p.starts_with(&mine))
            .map(|p| format!("{p}."))
            .collect();
        for prefix in prefixes {
            outbox.window().give_up_on(&prefix);
        }
    }

    /// Sends every acknowledgement owed now.
    pub(crate) async fn send_acks(&self) {
        for notice in self.ledger.take_owed() {
            let ack = Ack {
                network: self.network_id.to_string(),
                instance: self.instance_id.to_string(),
                handled: notice.handled,
                accepted: notice.accepted,
            };
            let Ok(body) = serde_json::to_vec(&ack) else {
                continue;
            };
            let subject = ack_subject(&notice.network, &notice.instance);
            let sent = self
                .publish_notice(
                    notice.road,
                    &notice.network,
                    subject.clone().into(),
                    self.gate.seal(Purpose::Ack, &subject, body.into()),
                )
                .await
                .is_ok();
            if !sent {
                // The sender hears nothing, sends those envelopes again in a while, and
                // they are acknowledged then.
                tracing::debug!(
                    network = notice.network,
                    "an acknowledgement could not be sent"
                );
            }
        }
    }

    /// Waits until `outbox` may send another envelope, sending its unacknowledged ones
    /// again whenever an acknowledgement is overdue.
    pub(crate) async fn wait_for_room(&self, network: &str, outbox: &mut Outbox) -> Result<()> {
        while !outbox.window().has_room() {
            let at = outbox
                .window()
                .retransmit_at()
                .unwrap_or_else(|| Instant::now() + super::window::RETRANSMIT_AFTER);
            tokio::select! {
                _ = outbox.window().freed_or(at) => {}
                _ = self.cancel.cancelled() => {
                    return Err(Error::new(
                        ErrorKind::Shutdown,
                        format!(
                            "shut down while waiting for network {network:?} to acknowledge \
                             what it was sent"
                        ),
                    ));
                }
            }
            if !is_due(outbox) {
                continue;
            }
            let mut road = self.reroute(network, outbox).await?;
            if road == TransportKind::Nats && !self.broker.is_up() {
                // Nothing can go again with no road; wait for one rather than look again
                // and again.
                road = self.wait_for_road(network, outbox).await?;
            }
            self.resend_due(road, network, outbox).await?;
        }
        Ok(())
    }

    /// Sends on `road` what of `outbox` is due to go again (see [`super::window`]).
    async fn resend_due(
        &self,
        road: TransportKind,
        network: &str,
        outbox: &mut Outbox,
    ) -> Result<()> {
        let now = Instant::now();
        let silent = outbox.window().silent_for(now);
        let kept = outbox.window().due(now);
        if kept.is_empty() {
            return Ok(());
        }
        match silent {
            Some(silent) => tracing::warn!(
                network,
                waiting = outbox.window().unacked_count(),
                "network {network:?} has acknowledged nothing for {silent:.1?}; its oldest \
                 unacknowledged envelope goes again to ask (the stream holds back once its \
                 window is full)"
            ),
            None => tracing::debug!(
                network,
                envelopes = kept.len(),
                "no acknowledgement in time; sending again"
            ),
        }
        self.resend(road, network, outbox, kept).await
    }

    /// Waits, at most `limit`, until every peer that can still be reached has
    /// acknowledged all it was streamed, so that a graceful shutdown leaves nothing
    /// unconfirmed that could still arrive; says what is left when the time runs out.
    pub(crate) async fn await_acknowledged(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let mut waiting: Vec<(String, super::stream::StreamHandle)> = self
                .streams
                .lock()
                .iter()
                .filter(|(_, s)| !s.is_idle())
                .map(|(network, s)| (network.clone(), s.clone()))
                .collect();
            waiting.retain(|(network, _)| self.reachable(network));
            let Some((_, stream)) = waiting.first() else {
                return;
            };
            if Instant::now() >= deadline {
                for (network, stream) in &waiting {
                    tracing::warn!(
                        network,
                        "shutting down with {} envelopes to network {network:?} not yet \
                         acknowledged and {} batches not yet sent",
                        stream.window.unacked_count(),
                        stream.queued()
                    );
                }
                return;
            }
            // Acknowledgements keep coming through the acknowledgement task; resends of
            // what is overdue keep going through its sweep.
            stream
                .window
                .acknowledged_or(deadline.min(Instant::now() + SWEEP_EVERY))
                .await;
        }
    }

    /// Whether `network` can still be reached: by a direct link, or through the broker
    /// while the liveness roster shows one of its instances.
    fn reachable(&self, network: &str) -> bool {
        self.direct.is_linked(network)
            || (self.broker.is_up()
                && self.liveness.get().is_some_and(|liveness| {
                    liveness
                        .roster
                        .read()
                        .others_of(network, self.liveness_key())
                        > 0
                }))
    }

    /// Sends again what of `outbox` is due, on the road it should take now (none while
    /// the broker is down and no direct link reaches the peer: the stream sends again
    /// when it gets one).
    pub(crate) async fn resend_if_due(&self, network: &str, outbox: &mut Outbox) -> Result<()> {
        if !is_due(outbox) {
            return Ok(());
        }
        let road = self.reroute(network, outbox).await?;
        if road == TransportKind::Nats && !self.broker.is_up() {
            return Ok(());
        }
        self.resend_due(road, network, outbox).await
    }
}

/// Whether something of `outbox` is due to go again now.
fn is_due(outbox: &Outbox) -> bool {
    outbox
        .window()
        .retransmit_at()
        .is_some_and(|at| at <= Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notice_is_small_readable_json_and_old_notices_still_read() {
        let ack = Ack {
            network: "stats".into(),
            instance: "s-1".into(),
            handled: vec![(5, 9)],
            accepted: vec![(10, 12)],
        };
        let json = serde_json::to_string(&ack).unwrap();
        assert_eq!(json, r#"{"n":"stats","i":"s-1","s":[[5,9]],"q":[[10,12]]}"#);
        assert_eq!(serde_json::from_str::<Ack>(&json).unwrap(), ack);
        let old: Ack = serde_json::from_str(r#"{"n":"stats","i":"s-1","s":[[5,9]]}"#).unwrap();
        assert!(old.accepted.is_empty());
    }
}
