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
use parking_lot::RwLock;
use tokio::sync::watch;

use roster::Change;
pub(crate) use roster::Roster;
pub(crate) use watcher::run as run_watcher;

use crate::discovery::NetworkInfo;
use crate::error::{Error, ErrorKind, Result};
use crate::events::DownReason;

/// The key-value bucket that holds one entry per live instance.
pub const BUCKET: &str = "reflow_liveness";

/// How long the server keeps the marker it leaves when an entry expires. Watchers that
/// were cut off for longer still learn of the expiry, from the entry's absence.
pub const MARKER_TTL: Duration = Duration::from_secs(300);

/// The consumers the liveness stream allows, stated on the stream itself: nats-server
/// gives a stream that states none a limit of 1,000, and every live watcher holds one.
pub const MAX_CONSUMERS: i32 = 100_000;

/// The replicas of the liveness stream on a cluster.
pub const REPLICAS: usize = 3;

/// How long a graceful leave waits for the server to acknowledge the delete.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

const KV_OPERATION: &str = "KV-Operation";

/// The TTL of an entry refreshed every `heartbeat_ms`: three heartbeats, at least one
/// second, rounded up to whole seconds (the unit the `Nats-TTL` header is sent in).
pub fn entry_ttl(heartbeat_ms: u64) -> Duration {
    let ms = heartbeat_ms.saturating_mul(3).max(1_000);
    Duration::from_secs(ms.div_ceil(1_000))
}

/// The liveness bucket as one broker connection sees it, shared by every network of a
/// process that uses that connection: one roster and one watcher (one consumer on the
/// bucket's stream) however many networks there are.
pub(crate) struct Liveness {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    /// Every live instance, this process's own included.
    pub(crate) roster: RwLock<Roster>,
    /// The highest stream sequence the roster has taken in.
    applied: watch::Sender<u64>,
    /// Where entries are written: `$KV.{bucket}.`, or in another JetStream domain
    /// `$JS.{domain}.API.$KV.{bucket}.`, which that domain's servers map back to the
    /// bucket's own subjects (the subject NATS clients write a bucket in another domain
    /// at; a leaf with JetStream of its own passes no `$KV.` subject to the hub).
    put_prefix: String,
    /// The replicas a stream made here is made with (fewer where the cluster is smaller).
    replicas: usize,
    /// The replicas a stream made before is raised to.
    raise_to: usize,
    /// When the stream the roster follows was made (nanoseconds since the epoch): a
    /// stream made again numbers its messages afresh.
    created: parking_lot::Mutex<Option<i128>>,
    /// Asks the watcher to list the bucket again (after the stream was made again).
    pub(crate) relist: tokio::sync::Notify,
}

impl Liveness {
    /// Opens the bucket, creating it if missing: with [`REPLICAS`] replicas when the
    /// server is part of a cluster (one if the cluster cannot hold that many), so the
    /// loss of a node does not take liveness with it.
    ///
    /// With a `domain`, the bucket is the one in that JetStream domain (`$JS.{domain}.API`):
    /// a leaf node's networks share the hub's bucket, and so see every network of every
    /// site. What that domain runs on is not known from here, so a bucket made there is
    /// made with as many replicas as it takes, up to [`REPLICAS`].
    pub(crate) async fn open(
        client: &async_nats::Client,
        domain: Option<&str>,
        patience: Duration,
    ) -> Result<Self> {
        let prefix = api_prefix(domain);
        let js = jetstream::context::ContextBuilder::new()
            .api_prefix(prefix.clone())
            .build(client.clone());
        let clustered = client.server_info().cluster.is_some();
        let wanted = if clustered || domain.is_some() {
            REPLICAS
        } else {
            1
        };
        // A cluster that is still electing its JetStream leader, or busy, answers late
        // or not at all for a moment: tried again for a while. A single server answers
        // at once, or has no JetStream.
        let patience =
            tokio::time::Instant::now() + if clustered { patience } else { Duration::ZERO };
        // Each try waits little: a stream whose leader was lost answers again once the
        // others elect one, and a short wait tried again finds that sooner than a long one.
        let opener = if clustered {
            jetstream::context::ContextBuilder::new()
                .api_prefix(prefix)
                .timeout(OPEN_TRY)
                .build(client.clone())
        } else {
            js.clone()
        };
        let store = loop {
            match open_bucket(&opener, wanted).await {
                Ok(store) => break store,
                Err(err) if tokio::time::Instant::now() < patience => {
                    tracing::debug!(error = %err, "the liveness bucket is not ready; trying again");
                    tokio::time::sleep(OPEN_RETRY).await;
                }
                Err(err) => return Err(err),
            }
        };
        // Replicas are raised on a bucket made before only where this server's own
        // cluster says how many it can hold.
        let raise_to = if domain.is_some() { 1 } else { wanted };
        let mut stream = store.stream;
        state_limits(&js, &mut stream, raise_to).await;
        Ok(Liveness {
            client: client.clone(),
            js,
            stream,
            roster: RwLock::new(Roster::new()),
            applied: watch::channel(0).0,
            put_prefix: match domain {
                Some(_) => format!("{}.$KV.{BUCKET}.", api_prefix(domain)),
                None => format!("$KV.{BUCKET}."),
            },
            replicas: wanted,
            raise_to,
            created: parking_lot::Mutex::new(None),
            relist: tokio::sync::Notify::new(),
        })
    }

    /// Hands the entry of `key` to the client, without waiting for the server: the
    /// returned future does. Entries handed over in turn reach the server in that order.
    pub(crate) async fn send_put(
        &self,
        key: &str,
        ttl: Duration,
        info: &NetworkInfo,
    ) -> Result<jetstream::context::PublishAckFuture> {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_TTL, ttl_header(ttl));
        let payload = serde_json::to_vec(info)?;
        self.send(key, headers, payload.into(), "refresh the liveness entry")
            .await
    }

    /// Deletes the entry of `key`, so watchers see its instance leave; a server that
    /// does not answer within [`LEAVE_TIMEOUT`] lets it expire instead.
    pub(crate) async fn delete(&self, key: &str) {
        let mut headers = HeaderMap::new();
        headers.insert(KV_OPERATION, "DEL");
        // The tombstone itself goes after a while, so the bucket does not fill with them.
        headers.insert(async_nats::header::NATS_MESSAGE_TTL, ttl_header(MARKER_TTL));
        let what = "delete the liveness entry";
        let deleted = tokio::time::timeout(LEAVE_TIMEOUT, async {
            let ack = self.send(key, headers, bytes::Bytes::new(), what).await?;
            self.acknowledged(key, what, ack).await
        })
        .await;
        match deleted {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "leaving: the entry will expire instead"),
            Err(_) => tracing::warn!("leaving: no answer from the server; the entry will expire"),
        }
    }

    async fn send(
        &self,
        key: &str,
        headers: HeaderMap,
        payload: bytes::Bytes,
        what: &str,
    ) -> Result<jetstream::context::PublishAckFuture> {
        self.js
            .publish_with_headers(format!("{}{key}", self.put_prefix), headers, payload)
            .await
            .map_err(|e| failed(key, what, &e))
    }

    /// Waits for the server to store what `ack` stands for (`what` on the entry of
    /// `key`); returns the stream sequence it was stored at.
    pub(crate) async fn acknowledged(
        &self,
        key: &str,
        what: &str,
        ack: jetstream::context::PublishAckFuture,
    ) -> Result<u64> {
        Ok(ack.await.map_err(|e| failed(key, what, &e))?.sequence)
    }

    /// Waits, at most `limit`, until the roster has taken in everything the stream held
    /// at `sequence`; says whether it has.
    pub(crate) async fn caught_up(&self, sequence: u64, limit: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        matches!(
            tokio::time::timeout(limit, applied.wait_for(|at| *at >= sequence)).await,
            Ok(Ok(_))
        )
    }

    /// Makes the bucket again if it is gone (deleted by hand, or lost with a server's
    /// store), so liveness heals within a heartbeat; says whether it did. The watcher
    /// then lists the new bucket afresh.
    pub(crate) async fn heal(&self) -> bool {
        use jetstream::ErrorCode;
        use jetstream::context::GetStreamErrorKind;
        // Only JetStream's own word that the stream is gone: a JetStream that does not
        // answer (a leaf cut off from the hub, a cluster without a leader) has lost
        // nothing, and a bucket made elsewhere meanwhile would split the roster.
        match self.js.get_stream(format!("KV_{BUCKET}")).await {
            Err(err)
                if matches!(err.kind(), GetStreamErrorKind::JetStream(e)
                    if e.error_code() == ErrorCode::STREAM_NOT_FOUND) => {}
            _ => return false,
        }
        match open_bucket(&self.js, self.replicas).await {
            Ok(store) => {
                let mut stream = store.stream;
                state_limits(&self.js, &mut stream, self.raise_to).await;
                tracing::warn!(
                    bucket = BUCKET,
                    "the liveness bucket was gone; made it again (every network writes its \
                     entry again at its next heartbeat)"
                );
                self.relist.notify_one();
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, "the liveness bucket is gone and could not be made again");
                false
            }
        }
    }

    /// Fails if another live process holds the entry of `key`: a second copy of a config
    /// with a fixed `instance_id`. Its entry would be overwritten by this one's, and the
    /// first to leave would delete the other's.
    ///
    /// An entry left by a process that died is not refreshed any more, and a restart with
    /// the same instance id may take its place; so an entry of another incarnation counts
    /// as live only if it is written again within one and a half of its heartbeats of its
    /// last write. That wait happens only when such an entry is there and young; one read
    /// of the stream's last message for the key each time, no consumer.
    pub(crate) async fn refuse_live_twin(&self, key: &str, incarnation: &str) -> Result<()> {
        let subject = format!("$KV.{BUCKET}.{key}");
        let last = |stream: jetstream::stream::Stream| {
            let subject = subject.clone();
            async move {
                let message = stream
                    .get_last_raw_message_by_subject(&subject)
                    .await
                    .ok()?;
                let header = |name: &str| message.headers.get(name).is_some();
                if header(KV_OPERATION) || header(async_nats::header::NATS_MARKER_REASON.as_ref()) {
                    return None;
                }
                let info: NetworkInfo = serde_json::from_slice(&message.payload).ok()?;
                let written_ns = message.time.unix_timestamp_nanos();
                Some((message.sequence, written_ns, info))
            }
        };
        let Some((sequence, written_ns, info)) = last(self.stream.clone()).await else {
            return Ok(());
        };
        if info.incarnation == incarnation {
            return Ok(());
        }
        let heartbeat = Duration::from_millis(info.heartbeat_interval_ms.max(100));
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or_default();
        let age = Duration::from_nanos(now_ns.saturating_sub(written_ns).max(0) as u64);
        let deadline = tokio::time::Instant::now() + (heartbeat * 3 / 2).saturating_sub(age);
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match last(self.stream.clone()).await {
                // Gone, or taken by this very start in the meantime: not a live twin.
                None => return Ok(()),
                Some((now, _, again)) if now != sequence => {
                    if again.incarnation == incarnation {
                        return Ok(());
                    }
                    return Err(Error::new(
                        ErrorKind::InvalidConfig,
                        format!(
                            "instance_id: network {:?} already has a live instance {:?} (another \
                             process refreshes its liveness entry, incarnation {}); give this \
                             copy another instance_id, or leave instance_id out for a random one",
                            again.network_id, again.instance_id, again.incarnation
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Records that the roster has taken in the stream up to `sequence`.
    fn took_in(&self, sequence: u64) {
        self.applied.send_if_modified(|at| {
            let newer = sequence > *at;
            if newer {
                *at = sequence;
            }
            newer
        });
    }

    /// The current content of the bucket (the latest message per key) and the stream
    /// sequence it is complete up to, plus a watch that continues from there.
    async fn listing(&self) -> Result<(Vec<(String, u64, Change)>, u64, watcher::Watch)> {
        let mut stream = self.stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| broker(format!("cannot read the state of bucket {BUCKET:?}"), e))?;
        let created = info.created.unix_timestamp_nanos();
        let listed_at = info.state.last_sequence;
        let before = self.created.lock().replace(created);
        if before.is_some_and(|before| before != created) {
            // A stream made again: its numbers start afresh, so the roster forgets the
            // old ones, and what the listing lacks is gone.
            self.roster.write().renumber();
            self.applied.send_replace(0);
        }
        let (changes, watch) = watcher::open(&stream, &self.client).await?;
        Ok((changes, listed_at, watch))
    }

    /// Reads the whole bucket into the roster, passing on the events it means, and
    /// returns the watch that continues from there.
    pub(crate) async fn load(&self, announce: &Announce) -> Result<watcher::Watch> {
        let (changes, listed_at, watch) = self.listing().await?;
        self.reconcile(changes, listed_at, announce);
        Ok(watch)
    }

    /// Brings the roster in line with a listing, passing on the events it means while
    /// the roster is locked (so that no one reading it misses or doubles one).
    fn reconcile(&self, changes: Vec<(String, u64, Change)>, listed_at: u64, announce: &Announce) {
        let mut roster = self.roster.write();
        let happened = roster.reconcile(changes, listed_at);
        announce(happened);
        drop(roster);
        self.took_in(listed_at);
    }
}

/// Where the roster's events go: the hub passes each to the networks it concerns.
pub(crate) type Announce = Arc<dyn Fn(Vec<crate::events::NetworkEvent>) + Send + Sync>;

fn failed(key: &str, what: &str, err: &dyn std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Broker,
        format!("could not {what} on $KV.{BUCKET}.{key}: {err}"),
    )
}

/// How long one try at opening the bucket on a cluster waits for JetStream.
const OPEN_TRY: Duration = Duration::from_secs(1);

/// How soon a failed open is tried again.
const OPEN_RETRY: Duration = Duration::from_millis(250);

/// Creates the bucket with `wanted` replicas (fewer, down to one, if the cluster cannot
/// hold that many), or opens it as another instance made it.
async fn open_bucket(js: &jetstream::Context, wanted: usize) -> Result<kv::Store> {
    // Most starts find it made: reading it needs only the stream's leader.
    if let Ok(store) = js.get_key_value(BUCKET).await {
        return Ok(store);
    }
    let mut replicas = wanted.max(1);
    let refused = loop {
        match create(js, replicas).await {
            Ok(store) => return Ok(store),
            Err(err) if replicas > 1 => {
                tracing::debug!(error = %err, replicas, "the liveness bucket could not be made with this many replicas; trying fewer");
                replicas -= 1;
            }
            Err(err) => break err,
        }
    };
    if let Ok(store) = js.get_key_value(BUCKET).await {
        return Ok(store);
    }
    let what = if refused.kind() == jetstream::context::CreateStreamErrorKind::TimedOut {
        format!(
            "the liveness bucket {BUCKET:?} is unavailable: JetStream did not answer in time \
             (a cluster without a JetStream leader, or a server overloaded)"
        )
    } else {
        format!(
            "cannot create the liveness bucket {BUCKET:?} (is JetStream enabled on the server?)"
        )
    };
    Err(crate::transport::limits::name_limit(Error::with_source(
        ErrorKind::Broker,
        what,
        refused,
    )))
}

/// Creates the bucket with `replicas` replicas: its stream made directly (as a
/// key-value bucket's, with one message per key, rollups, direct gets, per-message TTLs
/// and expiry markers), so that it states its consumer limit from the start and no
/// account needs the right to update streams.
async fn create(
    js: &jetstream::Context,
    replicas: usize,
) -> std::result::Result<kv::Store, jetstream::context::CreateStreamError> {
    use jetstream::stream::{Config, DiscardPolicy, StorageType};
    let config = Config {
        name: format!("KV_{BUCKET}"),
        description: Some("reflow_network: one entry per live network instance".into()),
        subjects: vec![format!("$KV.{BUCKET}.>")],
        max_messages_per_subject: 1,
        max_consumers: MAX_CONSUMERS,
        storage: StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        num_replicas: replicas,
        discard: DiscardPolicy::New,
        allow_message_ttl: true,
        subject_delete_marker_ttl: Some(MARKER_TTL),
        ..Default::default()
    };
    if let Err(err) = js.create_stream(config.clone()).await {
        // An account whose own consumer limit is lower refuses a stream that states a
        // higher one: the account's limit applies then.
        if !err.to_string().contains("consumers") {
            return Err(err);
        }
        tracing::debug!(error = %err, "the account refuses the liveness stream's consumer limit; using the account's");
        js.create_stream(Config {
            max_consumers: -1,
            ..config
        })
        .await?;
    }
    js.get_key_value(BUCKET).await.map_err(|e| {
        jetstream::context::CreateStreamError::with_source(
            jetstream::context::CreateStreamErrorKind::Response,
            e,
        )
    })
}

/// Makes the liveness stream state its own consumer limit ([`MAX_CONSUMERS`]) when it
/// states none or a lower one, and hold `replicas` replicas when it holds fewer (a
/// bucket made by an older version, by hand, or before the cluster grew). A server that
/// refuses (an account without the right to update streams, a cluster too small) keeps
/// the stream as it is, and the log says what that means.
async fn state_limits(
    js: &jetstream::Context,
    stream: &mut jetstream::stream::Stream,
    replicas: usize,
) {
    let info = match stream.info().await {
        Ok(info) => info.clone(),
        Err(err) => {
            tracing::debug!(error = %err, "could not read the liveness stream's limits");
            return;
        }
    };
    let current = info.config.max_consumers;
    let held = info.config.num_replicas;
    if current >= MAX_CONSUMERS && held >= replicas {
        return;
    }
    let mut config = info.config;
    config.max_consumers = config.max_consumers.max(MAX_CONSUMERS);
    config.num_replicas = held.max(replicas);
    let raised = config.num_replicas > held;
    if let Err(err) = js.update_stream(config).await {
        tracing::warn!(
            error = %err,
            stream = %format!("KV_{BUCKET}"),
            "could not update the liveness stream to a consumer limit of {MAX_CONSUMERS} \
             and {replicas} replicas; it stays at {current} consumers (-1 means the \
             server's default of 1,000; each process holds one) and {held} replicas",
        );
    } else if raised {
        tracing::warn!(
            stream = %format!("KV_{BUCKET}"),
            "the liveness stream had {held} replica(s) on a cluster; raised to {replicas}"
        );
    }
}

/// The JetStream API prefix of `domain`: `$JS.{domain}.API`, or the server's own
/// `$JS.API`.
fn api_prefix(domain: Option<&str>) -> String {
    match domain {
        Some(domain) => format!("$JS.{domain}.API"),
        None => "$JS.API".to_string(),
    }
}

fn ttl_header(ttl: Duration) -> async_nats::HeaderValue {
    async_nats::HeaderValue::from(ttl.as_secs().max(1))
}

fn broker(what: String, err: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::Broker, what, err)
}

/// Reads what one message of the bucket says about its key; `unchanged` tells whether a
/// payload is the very entry the key holds already (then it needs no decoding).
fn change_of(message: &async_nats::Message, unchanged: impl Fn(&[u8]) -> bool) -> Option<Change> {
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
    if unchanged(&message.payload) {
        return Some(Change::Same);
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
