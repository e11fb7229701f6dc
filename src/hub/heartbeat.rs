//! Heartbeats: one timer per heartbeat interval refreshes the liveness entries of every
//! network of the hub with that interval, sending them all and then waiting for the
//! server's acknowledgements together.
//!
//! A network's entry is handed to the connection under its [`Beat`]'s lock, and so is
//! its delete when it leaves: a refresh can never land after the delete and bring a
//! leaving network back.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;

use super::Hub;
use crate::discovery::NetworkInfo;
use crate::error::Result;
use crate::liveness::Liveness;

/// One network's heartbeat: the entry's TTL while it beats (under the lock that orders
/// its refreshes and its delete), and the interval it beats at (0 when it does not).
#[derive(Default)]
pub(crate) struct Beat {
    ttl: tokio::sync::Mutex<Option<Duration>>,
    interval_ms: AtomicU64,
}

impl Beat {
    /// Writes the first entry, to live for `ttl`, and beats every `interval` from then
    /// on; returns the stream sequence of the first entry.
    pub(crate) async fn start(
        &self,
        liveness: &Liveness,
        key: &str,
        interval: Duration,
        ttl: Duration,
        info: &NetworkInfo,
    ) -> Result<u64> {
        let ack = {
            let mut beating = self.ttl.lock().await;
            let ack = liveness.send_put(key, ttl, info).await?;
            *beating = Some(ttl);
            self.interval_ms
                .store(interval.as_millis() as u64, Ordering::Release);
            ack
        };
        liveness
            .acknowledged(key, "write the liveness entry", ack)
            .await
    }

    /// Stops beating and deletes the entry.
    pub(crate) async fn stop_and_delete(&self, liveness: &Liveness, key: &str) {
        let mut beating = self.ttl.lock().await;
        self.interval_ms.store(0, Ordering::Release);
        if beating.take().is_some() {
            liveness.delete(key).await;
        }
    }

    /// Stops beating and leaves the entry to expire.
    pub(crate) async fn pause(&self) {
        let mut beating = self.ttl.lock().await;
        self.interval_ms.store(0, Ordering::Release);
        beating.take();
    }

    fn beats_at(&self, interval: Duration) -> bool {
        self.interval_ms.load(Ordering::Acquire) == interval.as_millis() as u64
    }

    /// Hands a refresh to the connection, if the network beats every `interval`.
    async fn refresh(
        &self,
        liveness: &Liveness,
        key: &str,
        interval: Duration,
        info: &NetworkInfo,
    ) -> Option<Result<async_nats::jetstream::context::PublishAckFuture>> {
        if !self.beats_at(interval) {
            return None;
        }
        let beating = self.ttl.lock().await;
        let ttl = (*beating)?;
        Some(liveness.send_put(key, ttl, info).await)
    }
}

/// The running timers, by interval.
#[derive(Default)]
pub(crate) struct Timers(Mutex<HashSet<Duration>>);

impl Timers {
    /// Starts the timer of `interval` unless it runs.
    pub(crate) fn ensure(&self, hub: &Arc<Hub>, interval: Duration) {
        if !self.0.lock().insert(interval) {
            return;
        }
        hub.tracker
            .spawn(run(Arc::downgrade(hub), interval, hub.cancel.clone()));
    }
}

/// Refreshes, every `interval`, the entries of the hub's networks that beat at it; ends
/// when none does any more.
async fn run(hub: Weak<Hub>, interval: Duration, cancel: tokio_util::sync::CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and a joining network has just written its entry.
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let Some(hub) = hub.upgrade() else { return };
        let Some(liveness) = hub.liveness.get().cloned() else {
            continue;
        };
        let mut pending = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        let sending = async {
            for (key, member) in hub.members.all() {
                let Some(info) = member.info() else { continue };
                match member.beat.refresh(&liveness, &key, interval, &info).await {
                    None => {}
                    Some(Ok(ack)) => pending.push((key, ack)),
                    Some(Err(err)) => failures.push(err.to_string()),
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sending => {}
        }
        let sent = pending.len();
        let mut acks: FuturesUnordered<_> = pending
            .into_iter()
            .map(|(key, ack)| {
                let liveness = &liveness;
                async move {
                    liveness
                        .acknowledged(&key, "refresh the liveness entry", ack)
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .collect();
        if sent == 0 && failures.is_empty() {
            // Checked under the timers' lock: a network that starts beating at this
            // interval after this check starts a timer of its own.
            let mut timers = hub.beats.0.lock();
            let beating = hub
                .members
                .0
                .read()
                .values()
                .any(|m| m.beat.beats_at(interval));
            if !beating {
                timers.remove(&interval);
                return;
            }
        }
        // A refresh can wait out the ack timeout on a broker that stopped answering;
        // shutting down does not wait for it.
        let mut stored = 0;
        let settled = async {
            while let Some(ack) = acks.next().await {
                match ack {
                    Ok(_) => stored += 1,
                    Err(err) => failures.push(err),
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = settled => {}
        }
        if stored > 0 {
            hub.liveness_answered(&liveness);
        }
        if let Some(first) = failures.first() {
            // A bucket that stopped answering altogether is reported once, as lost (and
            // its return as well); a partial failure is logged each time.
            if stored == 0 && hub.liveness_failed(first) {
                tracing::debug!(error = %first, "liveness refresh failed again");
            } else {
                tracing::warn!(
                    failed = failures.len(),
                    of = sent,
                    error = %first,
                    "liveness refresh failed; retrying at the next heartbeat"
                );
            }
            // The bucket may be gone (deleted, or lost with a server's store): made
            // again, it takes the next refresh.
            liveness.heal().await;
        }
    }
}
