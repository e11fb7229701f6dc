//! Acknowledgements: a receiver tells each sender which of its streamed envelopes it has
//! handled, so the sender can forget them, send more, and send again what got lost.
//!
//! * The receiver notes each envelope's numbers as its dispatcher hands the messages to
//!   their actors ([`Pending`]), and sends them back in one small JSON notice on
//!   `_reflow.{sender network}.{sender instance}.ack`: once [`ACK_EVERY`] envelopes or
//!   [`ACK_BYTES`] are waiting, or [`ACK_DELAY`] after the first, whichever is sooner.
//!   Repeats and refused envelopes are acknowledged too: they were handled.
//! * The sender applies them to the stream's [`SendWindow`](super::window::SendWindow),
//!   from a task of its own, so an acknowledgement never waits behind data. A stream whose
//!   window is full waits for room; one that hears nothing for a while sends its
//!   unacknowledged envelopes again.
//!
//! Acknowledgements go back the way the data came: through the broker, or ahead of the
//! data queued on a direct link, where the link hands them straight to that task. One
//! that is lost costs nothing but a repeat, which the receiver drops and acknowledges
//! again.

use std::sync::Weak;
use std::time::{Duration, Instant};

use async_nats::Subject;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Bridge;
use super::sequence::Outbox;
use crate::error::{Error, ErrorKind, Result};
use crate::events::TransportKind;

/// Envelopes from one sender acknowledged together, at most.
pub(crate) const ACK_EVERY: usize = 32;

/// Bytes of envelopes from one sender acknowledged together, about at most.
pub(crate) const ACK_BYTES: usize = 256 * 1024;

/// How long an acknowledgement may wait for others to go with it.
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(10);

/// Acknowledgements from direct links waiting to be applied, at most; more are dropped
/// (what they acknowledged is sent again, and acknowledged then).
pub(crate) const DIRECT_ACKS: usize = 256;

/// How often the sender looks for streams whose acknowledgements are overdue.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// The subject on which `instance` of `network` hears acknowledgements.
pub(crate) fn ack_subject(network: &str, instance: &str) -> String {
    format!("_reflow.{network}.{instance}.ack")
}

/// The notice a receiver sends: which numbers of the sender's stream to `network` it
/// has handled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Ack {
    /// The receiving network: the sender's stream to it is the one acknowledged.
    #[serde(rename = "n")]
    pub(crate) network: String,
    /// The receiving instance.
    #[serde(rename = "i")]
    pub(crate) instance: String,
    /// Ranges of sequence numbers, first and last, each inclusive.
    #[serde(rename = "s")]
    pub(crate) ranges: Vec<(u64, u64)>,
}

/// What a receiver has handled from one sender and not yet acknowledged.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    ranges: Vec<(u64, u64)>,
    envelopes: usize,
    bytes: usize,
    /// The road the latest of them came by, which the acknowledgement takes.
    road: Option<TransportKind>,
}

impl Pending {
    /// Notes that the envelope numbered `first` to `last`, of `bytes` bytes, came by
    /// `road` and was handled. True once enough waits to be sent at once.
    pub(crate) fn record(
        &mut self,
        first: u64,
        last: u64,
        bytes: usize,
        road: TransportKind,
    ) -> bool {
        match self.ranges.last_mut() {
            Some(range) if range.1.checked_add(1) == Some(first) => range.1 = last,
            _ => self.ranges.push((first, last)),
        }
        self.envelopes += 1;
        self.bytes += bytes;
        self.road = Some(road);
        self.envelopes >= ACK_EVERY || self.bytes >= ACK_BYTES
    }

    /// Whether anything waits to be acknowledged.
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges to acknowledge and the road to send them by, leaving nothing pending.
    pub(crate) fn take(&mut self) -> Option<(TransportKind, Vec<(u64, u64)>)> {
        let road = self.road.take()?;
        self.envelopes = 0;
        self.bytes = 0;
        Some((road, std::mem::take(&mut self.ranges)))
    }
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
/// sends again what waits too long for one, until cancelled.
pub(crate) async fn run(
    bridge: Weak<Bridge>,
    mut acks: async_nats::Subscriber,
    mut direct: mpsc::Receiver<Bytes>,
    cancel: CancellationToken,
) {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            _ = sweep.tick() => {
                let Some(bridge) = bridge.upgrade() else { return };
                bridge.resend_overdue().await;
            }
        }
    }
}

impl Bridge {
    /// Applies an acknowledgement to the stream it speaks of.
    fn take_ack(&self, payload: &Bytes) {
        let ack: Ack = match serde_json::from_slice(payload) {
            Ok(ack) => ack,
            Err(err) => {
                tracing::warn!(error = %err, "an acknowledgement that is not one was ignored");
                return;
            }
        };
        let window = self
            .outboxes
            .lock()
            .get(&ack.network)
            .map(|s| s.window.clone());
        if let Some(window) = window {
            window.acknowledge(&ack.ranges);
        }
    }

    /// Sends what `pending` holds for `instance` of `network` back to it.
    pub(crate) async fn send_ack(&self, network: &str, instance: &str, pending: &mut Pending) {
        let Some((road, ranges)) = pending.take() else {
            return;
        };
        let ack = Ack {
            network: self.network_id.to_string(),
            instance: self.instance_id.to_string(),
            ranges,
        };
        let Ok(body) = serde_json::to_vec(&ack) else {
            return;
        };
        let subject = ack_subject(network, instance);
        let sent = match road {
            TransportKind::Nats => self
                .client
                .publish(Subject::from(subject), body.into())
                .await
                .is_ok(),
            TransportKind::Direct => self.direct.offer(network, &subject, body.into()),
        };
        if !sent {
            // The sender hears nothing, sends those envelopes again in a while, and they
            // are acknowledged then.
            tracing::debug!(network, instance, "an acknowledgement could not be sent");
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
        self.resend(road, network, kept).await
    }

    /// Waits, at most `limit`, until every peer that can still be reached has
    /// acknowledged all it was streamed, so that a graceful shutdown leaves nothing
    /// unconfirmed that could still arrive; says what is left when the time runs out.
    pub(crate) async fn await_acknowledged(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let mut waiting: Vec<(String, std::sync::Arc<super::window::SendWindow>)> = self
                .outboxes
                .lock()
                .iter()
                .filter(|(_, s)| s.window.unacked_count() > 0)
                .map(|(network, s)| (network.clone(), s.window.clone()))
                .collect();
            waiting.retain(|(network, _)| self.reachable(network));
            let Some((_, window)) = waiting.first() else {
                return;
            };
            if Instant::now() >= deadline {
                for (network, window) in &waiting {
                    tracing::warn!(
                        network,
                        "shutting down with {} envelopes to network {network:?} not yet \
                         acknowledged",
                        window.unacked_count()
                    );
                }
                return;
            }
            // Acknowledgements keep coming through the acknowledgement task; resends of
            // what is overdue keep going through its sweep.
            window
                .acknowledged_or(deadline.min(Instant::now() + SWEEP_EVERY))
                .await;
        }
    }

    /// Whether `network` can still be reached: by a direct link, or through the broker
    /// while the liveness roster shows one of its instances.
    fn reachable(&self, network: &str) -> bool {
        self.direct.is_linked(network)
            || (self.broker.is_up()
                && self
                    .liveness
                    .get()
                    .is_some_and(|liveness| liveness.roster.read().others_of(network) > 0))
    }

    /// Resends for every idle stream whose acknowledgement is overdue; a busy stream (its
    /// lock held) does so itself while it waits for room.
    async fn resend_overdue(&self) {
        let now = Instant::now();
        let overdue: Vec<(String, super::SharedOutbox)> = self
            .outboxes
            .lock()
            .iter()
            .filter(|(_, s)| s.window.retransmit_at().is_some_and(|at| at <= now))
            .map(|(network, s)| (network.clone(), s.outbox.clone()))
            .collect();
        for (network, outbox) in overdue {
            let Ok(mut outbox) = outbox.try_lock() else {
                continue;
            };
            if !is_due(&outbox) {
                continue;
            }
            let road = match self.reroute(&network, &mut outbox).await {
                // No road now: the stream resends when it gets one.
                Ok(TransportKind::Nats) if !self.broker.is_up() => continue,
                Ok(road) => road,
                Err(err) => {
                    tracing::warn!(network, error = %err, "could not choose a road to send again on");
                    continue;
                }
            };
            if let Err(err) = self.resend_due(road, &network, &mut outbox).await {
                tracing::warn!(network, error = %err, "could not send unacknowledged envelopes again");
            }
        }
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
    fn consecutive_envelopes_make_one_range_and_enough_of_them_ask_to_be_sent() {
        let mut pending = Pending::default();
        assert!(pending.is_empty());
        assert!(!pending.record(10, 12, 100, TransportKind::Nats));
        assert!(!pending.record(13, 13, 100, TransportKind::Nats));
        assert!(!pending.record(20, 20, 100, TransportKind::Direct));
        let (road, ranges) = pending.take().unwrap();
        assert_eq!(road, TransportKind::Direct, "the latest road");
        assert_eq!(ranges, [(10, 13), (20, 20)]);
        assert!(pending.is_empty() && pending.take().is_none());

        let full = (0..ACK_EVERY as u64)
            .map(|seq| pending.record(seq, seq, 10, TransportKind::Nats))
            .collect::<Vec<_>>();
        assert_eq!(full.iter().filter(|f| **f).count(), 1);
        assert!(full[ACK_EVERY - 1]);
        pending.take();
        assert!(
            pending.record(1, 1, ACK_BYTES, TransportKind::Nats),
            "by bytes"
        );
    }

    #[test]
    fn the_notice_is_small_readable_json() {
        let ack = Ack {
            network: "stats".into(),
            instance: "s-1".into(),
            ranges: vec![(5, 9)],
        };
        let json = serde_json::to_string(&ack).unwrap();
        assert_eq!(json, r#"{"n":"stats","i":"s-1","s":[[5,9]]}"#);
        assert_eq!(serde_json::from_str::<Ack>(&json).unwrap(), ack);
    }
}
