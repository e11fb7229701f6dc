//! Which road traffic to a network takes: the broker while it is up, a direct link while
//! it is not, and back to the broker once the peer answers there again.
//!
//! Each stream to a network ([`Outbox`]) remembers its road. When the road changes, the
//! change is an event, and on a move to a direct link the stream's unacknowledged
//! envelopes go again, so whatever the dead broker swallowed still arrives; the receiver
//! drops what it already has. Before moving back to the broker, the direct link is
//! pinged: its pong comes after every earlier frame was handed to the peer's dispatcher,
//! and the peer answering a ping over the broker shows its subscriptions are back.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Bridge;
use super::sequence::Outbox;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{NetworkEvent, TransportKind};
use crate::message::seal::Purpose;
use crate::transport::Transport;

/// How often a failed dial to a peer's direct endpoint is tried again.
pub(crate) const REDIAL_AFTER: Duration = Duration::from_millis(200);

/// How long a stream that went to the broker while it was down waits for the peer to
/// answer there again before it goes on.
const STALE_WAIT: Duration = Duration::from_secs(5);

/// How long the check that a peer is back on the broker may take.
const BROKER_CHECK: Duration = Duration::from_millis(500);

/// What a stream does next about its road, from what is known now. The decision is
/// here, apart from the dialling and pinging it asks for, so it can be tested alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Take the broker.
    Broker,
    /// Take the direct link there is.
    Direct,
    /// The broker is back while the stream is on a direct link: stay direct until the
    /// peer answers over the broker (its subscriptions come back only after its own
    /// client reconnects), then flush the link and move back.
    TryBroker,
    /// No broker and no link: dial the peer's advertised endpoint, or wait for a road.
    Dial,
}

/// Chooses the next [`Step`] for a stream on `current`, given whether the broker is up
/// and whether a direct link to the peer is open.
pub(crate) fn next_step(current: TransportKind, broker_up: bool, linked: bool) -> Step {
    match (broker_up, linked) {
        (true, true) if current == TransportKind::Direct => Step::TryBroker,
        (true, _) => Step::Broker,
        (false, true) => Step::Direct,
        (false, false) => Step::Dial,
    }
}

/// Paces the attempts a stream makes for a road (dials, checks that a peer is back on
/// the broker) per peer network, so that one waiting for a road costs little per message.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    last: parking_lot::Mutex<std::collections::HashMap<String, Instant>>,
}

impl Pacer {
    /// Whether an attempt for `network` may run at `now`; if so, it counts as made.
    pub(crate) fn due(&self, network: &str, now: Instant) -> bool {
        let mut last = self.last.lock();
        if last
            .get(network)
            .is_some_and(|at| now.duration_since(*at) < REDIAL_AFTER)
        {
            return false;
        }
        last.insert(network.to_string(), now);
        true
    }
}

impl Bridge {
    /// The road to use for `network` now, given the road the stream took so far.
    pub(crate) async fn road_to(&self, network: &str, current: TransportKind) -> TransportKind {
        let step = next_step(current, self.broker.is_up(), self.direct.is_linked(network));
        match step {
            Step::Broker => TransportKind::Nats,
            Step::Direct => TransportKind::Direct,
            Step::TryBroker => {
                if self.due(network) && self.ping_over_broker(network).await {
                    // Its pong comes after every earlier frame reached the peer.
                    let _ = self.direct.ping(network).await;
                    TransportKind::Nats
                } else {
                    TransportKind::Direct
                }
            }
            Step::Dial if self.dial(network).await => TransportKind::Direct,
            // No other road: the stream waits for the broker (`wait_for_road`).
            Step::Dial => TransportKind::Nats,
        }
    }

    /// Whether a dial or a broker check for `network` may run now.
    fn due(&self, network: &str) -> bool {
        self.last_dial.due(network, Instant::now())
    }

    /// With the broker down and no direct link to `network`, a stream waits here rather
    /// than pile its messages into the client's reconnect buffer, where a second failure
    /// would lose them unseen. It goes on when the broker is back (after its
    /// unacknowledged envelopes go again) or a direct link opens.
    pub(crate) async fn wait_for_road(
        &self,
        network: &str,
        outbox: &mut Outbox,
    ) -> Result<TransportKind> {
        let mut up = self.broker.up.subscribe();
        tracing::debug!(network, "no road to the peer; the stream waits");
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => {
                    return Err(Error::new(
                        ErrorKind::Shutdown,
                        format!("shut down while waiting for a road to network {network:?}"),
                    ));
                }
                _ = up.wait_for(|up| *up) => {}
                _ = tokio::time::sleep(REDIAL_AFTER) => {}
            }
            let road = self.reroute(network, outbox).await?;
            if road == TransportKind::Direct || self.broker.is_up() {
                return Ok(road);
            }
        }
    }

    /// Waits, at most [`STALE_WAIT`], for `network` to answer through the broker; the
    /// stream holds meanwhile, so that nothing newer overtakes its unacknowledged
    /// envelopes.
    async fn peer_back_on_broker(&self, network: &str) -> bool {
        let deadline = Instant::now() + STALE_WAIT;
        loop {
            if self.ping_over_broker(network).await {
                return true;
            }
            if Instant::now() >= deadline || !self.broker.is_up() {
                return false;
            }
            tokio::time::sleep(REDIAL_AFTER).await;
        }
    }

    async fn ping_over_broker(&self, network: &str) -> bool {
        let body = serde_json::json!({ "actor": null }).to_string();
        self.nats
            .request(
                network,
                &crate::subject::control_subject(network, "ping"),
                Bytes::from(body),
                BROKER_CHECK,
            )
            .await
            .is_ok()
    }

    /// Tries to open a direct link to `network` at an endpoint it advertised.
    async fn dial(&self, network: &str) -> bool {
        if !self.due(network) {
            return false;
        }
        let Some(endpoint) = self.known_endpoint(network) else {
            return false;
        };
        match self.direct.connect(&endpoint).await {
            Ok(peer) if peer.network == network => true,
            Ok(peer) => {
                tracing::warn!(endpoint, expected = network, found = %peer.network, "direct endpoint belongs to another network");
                false
            }
            Err(err) => {
                tracing::debug!(endpoint, error = %err, "direct dial failed");
                false
            }
        }
    }

    /// A direct endpoint `network` advertised: in its connect handshake, else in its
    /// liveness entry.
    pub(crate) fn known_endpoint(&self, network: &str) -> Option<String> {
        if let Some(endpoint) = self.peers.lock().endpoint_of(network) {
            return Some(endpoint);
        }
        self.live_instances()
            .into_iter()
            .filter(|info| info.network_id == network)
            .find_map(|info| info.endpoints.direct)
    }

    /// Publishes a notice (an acknowledgement, an answer, a control notice): small,
    /// unnumbered and not kept. Through the broker; or on a direct link to `network`, ahead
    /// of the data queued there, and only if that costs no wait (a notice that could not
    /// go is covered by what its receiver does when it is missing: a sender sends again,
    /// a requester times out). Every bridge publish that is not a stream's goes here.
    pub(crate) async fn publish_notice(
        &self,
        road: TransportKind,
        network: &str,
        subject: async_nats::Subject,
        payload: Bytes,
    ) -> Result<()> {
        match road {
            TransportKind::Nats => self.nats.publish(network, &subject, payload).await,
            TransportKind::Direct if self.direct.offer(network, &subject, payload) => Ok(()),
            TransportKind::Direct => Err(Error::new(
                ErrorKind::NetworkDisconnected,
                format!("no room on a direct link to network {network:?} for {subject}"),
            )),
        }
    }

    /// Publishes a notice through the broker if the client takes it at once, from code
    /// that cannot wait (a cause's completion); false when it would have had to.
    pub(crate) fn try_notice(&self, subject: async_nats::Subject, payload: Bytes) -> bool {
        futures::FutureExt::now_or_never(self.client.publish(subject, payload))
            .is_some_and(|sent| sent.is_ok())
    }

    /// Sends on the chosen road.
    pub(crate) async fn send_on(
        &self,
        road: TransportKind,
        network: &str,
        subject: &async_nats::Subject,
        payload: Bytes,
    ) -> Result<()> {
        match road {
            TransportKind::Nats => self.nats.publish(network, subject, payload).await,
            TransportKind::Direct => self.direct.publish(network, subject, payload).await,
        }
    }

    /// Moves `outbox` to the road it should take now; on a move to a direct link, sends
    /// its unacknowledged envelopes again.
    ///
    /// A stream that stays on the broker while it is down goes into the client's
    /// reconnect buffer, and what the dead server swallowed, or what reached the new one
    /// before the peer subscribed again, is gone. So such a stream is marked stale, and
    /// once the peer answers through the broker again its unacknowledged envelopes go
    /// again there.
    pub(crate) async fn reroute(
        &self,
        network: &str,
        outbox: &mut Outbox,
    ) -> Result<TransportKind> {
        let from = outbox.road();
        let to = self.road_to(network, from).await;
        if to == TransportKind::Nats {
            if !self.broker.is_up() {
                outbox.set_stale(true);
            } else if outbox.is_stale() {
                outbox.set_stale(false);
                if self.peer_back_on_broker(network).await {
                    tracing::info!(
                        network,
                        "the peer is back on the broker; sending the unacknowledged envelopes again"
                    );
                    self.resend_kept(to, network, outbox).await?;
                } else {
                    tracing::warn!(
                        network,
                        "the peer did not answer through the broker after it came back; what the outage swallowed goes again once its acknowledgement is overdue"
                    );
                }
            }
        }
        if to == from {
            return Ok(to);
        }
        tracing::info!(network, ?from, ?to, "traffic switches road");
        outbox.set_road(to);
        self.peers.lock().set_transport(network, to);
        self.events.send(NetworkEvent::TransportSwitched {
            network: network.to_string(),
            from,
            to,
        });
        if to == TransportKind::Direct {
            outbox.set_stale(false);
            self.resend_kept(to, network, outbox).await?;
        }
        Ok(to)
    }

    /// Sends `outbox`'s unhandled envelopes again on `road`, oldest first.
    async fn resend_kept(
        &self,
        road: TransportKind,
        network: &str,
        outbox: &mut Outbox,
    ) -> Result<()> {
        let kept = outbox.window().resend_all();
        self.resend(road, network, outbox, kept).await
    }

    /// Sends `kept` envelopes again on `road`, oldest first, each encoded afresh (the
    /// current floor, marked redelivered).
    pub(crate) async fn resend(
        &self,
        road: TransportKind,
        network: &str,
        outbox: &mut Outbox,
        kept: Vec<(u64, super::window::Kept)>,
    ) -> Result<()> {
        for (first, kept) in kept {
            let plain = match outbox.reencode(first, &kept) {
                Ok(plain) => plain,
                Err(err) => {
                    tracing::error!(network, first, error = %err, "a kept envelope could not be encoded again");
                    continue;
                }
            };
            let purpose = if kept.subject.starts_with(crate::subject::CONTROL_PREFIX) {
                Purpose::Return
            } else {
                Purpose::Data
            };
            let payload = self.wire(purpose, &kept.subject, plain);
            if let Err(err) = self.send_on(road, network, &kept.subject, payload).await {
                // Still kept: it goes again at its next turn. A failed resend never costs
                // the batch that triggered it.
                tracing::debug!(network, first, error = %err, "sending again failed; it stays kept");
                self.note_send_error(network, &err);
                return Ok(());
            }
            self.counters.resent.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Moves `outbox` to the road it should take now: run when the broker is lost or
    /// regained, so that idle streams move (and send their unhandled envelopes again)
    /// too. True when the stream is where it should be: on the broker while it is up, and
    /// while it is down, on a direct link wherever the peer has advertised one.
    pub(crate) async fn settle_road(&self, network: &str, outbox: &mut Outbox) -> bool {
        let road = match self.reroute(network, outbox).await {
            Ok(road) => road,
            Err(err) => {
                tracing::warn!(network, error = %err, "could not move traffic to another road");
                return false;
            }
        };
        let wanted = if self.broker.is_up() {
            TransportKind::Nats
        } else if self.direct.is_linked(network) || self.known_endpoint(network).is_some() {
            TransportKind::Direct
        } else {
            road
        };
        road == wanted && !outbox.is_stale()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_while_it_is_up_a_link_while_it_is_not_and_back_only_via_a_check() {
        use TransportKind::{Direct, Nats};
        assert_eq!(next_step(Nats, true, false), Step::Broker);
        assert_eq!(
            next_step(Nats, true, true),
            Step::Broker,
            "a link is no reason to leave"
        );
        assert_eq!(next_step(Direct, true, true), Step::TryBroker);
        assert_eq!(
            next_step(Direct, true, false),
            Step::Broker,
            "the link is gone"
        );
        assert_eq!(next_step(Nats, false, true), Step::Direct);
        assert_eq!(next_step(Direct, false, true), Step::Direct);
        assert_eq!(next_step(Nats, false, false), Step::Dial);
        assert_eq!(next_step(Direct, false, false), Step::Dial);
    }

    #[test]
    fn attempts_for_a_road_are_paced_per_network() {
        let pacer = Pacer::default();
        let now = Instant::now();
        assert!(pacer.due("B", now));
        assert!(!pacer.due("B", now + REDIAL_AFTER / 2));
        assert!(pacer.due("C", now), "another network has its own pace");
        assert!(pacer.due("B", now + REDIAL_AFTER));
    }
}
