//! Liveness: each instance keeps an entry fresh in the JetStream key-value bucket
//! [`BUCKET`], and every instance watches the bucket to learn who is live.
//!
//! The entry's key is `{network}.{instance}` and its value the instance's
//! [`NetworkInfo`] as JSON. Every heartbeat rewrites it with a per-message TTL
//! ([`entry_ttl`]: three heartbeats, at least a second). When a process dies the server
//! removes the entry once the TTL passes and leaves a marker (`Nats-Marker-Reason:
//! MaxAge`), which every watcher turns into [`NetworkEvent::NetworkDown`] with
//! [`DownReason::Expired`]; a graceful shutdown deletes the entry at once
//! ([`DownReason::Left`]). The bucket keeps one message per key, so a restarted process's
//! first put replaces its predecessor's entry, and the old TTL no longer applies to
//! anything.
//!
//! [`NetworkEvent::NetworkDown`]: crate::events::NetworkEvent::NetworkDown
//! [`DownReason::Expired`]: crate::events::DownReason::Expired
//! [`DownReason::Left`]: crate::events::DownReason::Left

mod roster;
mod watcher;

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv};
use parking_lot::{Mutex, RwLock};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use roster::Change;
pub(crate) use roster::Roster;
pub(crate) use watcher::run as run_watcher;

use crate::discovery::NetworkInfo;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{DownReason, EventSender};

/// The key-value bucket that holds one entry per live instance.
pub const BUCKET: &str = "reflow_liveness";

/// How long the server keeps the marker it leaves when an entry expires. Watchers that
/// were cut off for longer still learn of the expiry, from the entry's absence.
pub const MARKER_TTL: Duration = Duration::from_secs(300);

/// The consumers the liveness stream allows, stated on the stream itself: nats-server
/// gives a stream that states none a limit of 1,000, and every live watcher holds one.
pub const MAX_CONSUMERS: i32 = 100_000;

/// How long a graceful leave waits for the server to acknowledge the delete.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

const KV_OPERATION: &str = "KV-Operation";

/// The TTL of an entry refreshed every `heartbeat_ms`: three heartbeats, at least one
/// second, rounded up to whole seconds (the unit the `Nats-TTL` header is sent in).
pub fn entry_ttl(heartbeat_ms: u64) -> Duration {
    let ms = heartbeat_ms.saturating_mul(3).max(1_000);
    Duration::from_secs(ms.div_ceil(1_000))
}

/// One instance's handle on the liveness bucket.
pub(crate) struct Liveness {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    subject: String,
    ttl: Duration,
    pub(crate) roster: Arc<RwLock<Roster>>,
    stop_heartbeat: CancellationToken,
    heartbeat: Mutex<Option<JoinHandle<()>>>,
}

impl Liveness {
    /// Opens the bucket, creating it if missing, for the instance whose key is `key`.
    pub(crate) async fn open(
        client: &async_nats::Client,
        key: String,
        heartbeat_ms: u64,
        cancel: &CancellationToken,
    ) -> Result<Self> {
        let js = jetstream::new(client.clone());
        let store = match js
            .create_key_value(kv::Config {
                bucket: BUCKET.to_string(),
                description: "reflow_network: one entry per live network instance".into(),
                history: 1,
                limit_markers: Some(MARKER_TTL),
                ..Default::default()
            })
            .await
        {
            Ok(store) => store,
            // Another instance may have made it with other settings; use it as it is.
            Err(create) => js.get_key_value(BUCKET).await.map_err(|_| {
                Error::with_source(
                    ErrorKind::Broker,
                    format!("cannot create the liveness bucket {BUCKET:?} (is JetStream enabled on the server?)"),
                    create,
                )
            })?,
        };
        let mut stream = store.stream;
        state_limits(&js, &mut stream).await;
        Ok(Liveness {
            client: client.clone(),
            js,
            stream,
            subject: format!("$KV.{BUCKET}.{key}"),
            ttl: entry_ttl(heartbeat_ms),
            roster: Arc::new(RwLock::new(Roster::new(key))),
            stop_heartbeat: cancel.child_token(),
            heartbeat: Mutex::new(None),
        })
    }

    /// Writes this instance's entry with its TTL and waits for the server to store it.
    pub(crate) async fn put(&self, info: &NetworkInfo) -> Result<()> {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_TTL, ttl_header(self.ttl));
        let payload = serde_json::to_vec(info)?;
        self.publish(headers, payload.into(), "refresh the liveness entry")
            .await
    }

    /// Refreshes the entry every `interval` until [`Liveness::leave`] or the bridge stops.
    /// A failed refresh is logged and retried at the next tick.
    pub(crate) fn spawn_heartbeat<F>(
        self: &Arc<Self>,
        tracker: &tokio_util::task::TaskTracker,
        interval: Duration,
        mut info: F,
    ) where
        F: FnMut() -> Option<NetworkInfo> + Send + 'static,
    {
        let me = self.clone();
        let stop = self.stop_heartbeat.clone();
        let handle = tracker.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate, and start() has just written the entry.
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let Some(info) = info() else { break };
                // A refresh can wait out the ack timeout on a broker that stopped
                // answering; leaving does not wait for it.
                let refreshed = tokio::select! {
                    _ = stop.cancelled() => break,
                    refreshed = me.put(&info) => refreshed,
                };
                if let Err(err) = refreshed {
                    tracing::warn!(error = %err, "heartbeat failed; retrying at the next one");
                }
            }
        });
        *self.heartbeat.lock() = Some(handle);
    }

    /// Stops the heartbeat and deletes the entry, so watchers see this instance leave.
    pub(crate) async fn leave(&self) {
        self.stop_heartbeat.cancel();
        let handle = self.heartbeat.lock().take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
        let mut headers = HeaderMap::new();
        headers.insert(KV_OPERATION, "DEL");
        // The tombstone itself goes after a while, so the bucket does not fill with them.
        headers.insert(async_nats::header::NATS_MESSAGE_TTL, ttl_header(MARKER_TTL));
        let deleted = tokio::time::timeout(
            LEAVE_TIMEOUT,
            self.publish(headers, bytes::Bytes::new(), "delete the liveness entry"),
        )
        .await;
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "leaving: the entry will expire instead"),
            Err(_) => tracing::warn!("leaving: no answer from the server; the entry will expire"),
        }
    }

    async fn publish(&self, headers: HeaderMap, payload: bytes::Bytes, what: &str) -> Result<()> {
        let failed = |e: &dyn std::fmt::Display| {
            Error::new(
                ErrorKind::Broker,
                format!("could not {what} on {}: {e}", self.subject),
            )
        };
        let ack = self
            .js
            .publish_with_headers(self.subject.clone(), headers, payload)
            .await
            .map_err(|e| failed(&e))?;
        ack.await.map_err(|e| failed(&e))?;
        Ok(())
    }

    /// The current content of the bucket (the latest message per key) and the stream
    /// sequence it is complete up to, plus a watch that continues from there.
    async fn listing(&self) -> Result<(Vec<(String, u64, Change)>, u64, watcher::Watch)> {
        let mut stream = self.stream.clone();
        let listed_at = stream
            .info()
            .await
            .map_err(|e| broker(format!("cannot read the state of bucket {BUCKET:?}"), e))?
            .state
            .last_sequence;
        let (changes, watch) = watcher::open(&stream, &self.client).await?;
        Ok((changes, listed_at, watch))
    }

    /// Reads the whole bucket into the roster, reporting every live instance as up, and
    /// returns the watch that continues from there.
    pub(crate) async fn load(&self, events: &EventSender) -> Result<watcher::Watch> {
        let (changes, listed_at, watch) = self.listing().await?;
        let happened = self.roster.write().reconcile(changes, listed_at);
        happened.into_iter().for_each(|e| events.send(e));
        Ok(watch)
    }
}

/// Makes the liveness stream state its own consumer limit ([`MAX_CONSUMERS`]) when it
/// states none or a lower one (a bucket made by an older version, or by hand). A server
/// that refuses (an account without the right to update streams) keeps its limit, and
/// the log says what that means.
async fn state_limits(js: &jetstream::Context, stream: &mut jetstream::stream::Stream) {
    let info = match stream.info().await {
        Ok(info) => info.clone(),
        Err(err) => {
            tracing::debug!(error = %err, "could not read the liveness stream's limits");
            return;
        }
    };
    let current = info.config.max_consumers;
    if current >= MAX_CONSUMERS {
        return;
    }
    let mut config = info.config;
    config.max_consumers = MAX_CONSUMERS;
    if let Err(err) = js.update_stream(config).await {
        tracing::warn!(
            error = %err,
            stream = %format!("KV_{BUCKET}"),
            "could not raise the liveness stream's consumer limit to {MAX_CONSUMERS}; it \
             stays at {} (-1 means the server's default of 1,000), and each live network \
             holds one",
            current
        );
    }
}

fn ttl_header(ttl: Duration) -> async_nats::HeaderValue {
    async_nats::HeaderValue::from(ttl.as_secs().max(1))
}

fn broker(what: String, err: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::Broker, what, err)
}

/// Reads what one message of the bucket says about its key.
fn change_of(message: &async_nats::Message) -> Option<Change> {
    let headers = message.headers.as_ref();
    let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
    match header(KV_OPERATION) {
        Some("DEL") => return Some(Change::Gone(DownReason::Left)),
        Some("PURGE") => return Some(Change::Gone(DownReason::Expired)),
        _ => {}
    }
    if header(async_nats::header::NATS_MARKER_REASON.as_ref()).is_some() {
        return Some(Change::Gone(DownReason::Expired));
    }
    match serde_json::from_slice::<NetworkInfo>(&message.payload) {
        Ok(info) => Some(Change::Put(Box::new(info))),
        Err(err) => {
            tracing::debug!(subject = %message.subject, error = %err, "ignoring an unreadable liveness entry");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ttl_is_three_heartbeats_at_least_a_second_in_whole_seconds() {
        assert_eq!(entry_ttl(1_000), Duration::from_secs(3));
        assert_eq!(entry_ttl(100), Duration::from_secs(1));
        assert_eq!(entry_ttl(500), Duration::from_secs(2));
        assert_eq!(entry_ttl(5_000), Duration::from_secs(15));
    }
}
