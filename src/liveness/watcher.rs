//! The watcher: turns the bucket's changes into up and down events.
//!
//! It reads the bucket through an ordered consumer that first delivers the latest message
//! of every key (the listing) and then every change. A watch misses what happens while
//! the client is cut off from the server, so the watcher also takes a fresh listing,
//! and reconciles the roster against it, after every reconnect and when its watch ends;
//! each listing comes with a fresh watch that continues from it. A watch that loses its
//! place (a gap, missed idle heartbeats) is mended by the client itself, so no timer
//! lists the bucket again: nothing creates a consumer while all is well.
//! A watch is one ephemeral consumer on the bucket's stream; the watcher deletes the one
//! it replaces, and its own when it stops, rather than leave them to the server's
//! inactivity timeout: so a live watcher costs the server one consumer.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, push};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::roster::Change;
use super::{Announce, BUCKET, Liveness, broker, change_of};
use crate::error::{Error, Result};

/// A live feed of the bucket's changes, and the name of the consumer behind it.
pub(crate) struct Watch {
    name: String,
    feed: push::Ordered,
}

/// How long reading a listing may take.
const LISTING_TIMEOUT: Duration = Duration::from_secs(5);

/// How soon after a reconnect the bucket is listed again (JetStream may need a moment).
const AFTER_RECONNECT: Duration = Duration::from_millis(100);

/// How soon a failed listing is tried again.
const RETRY: Duration = Duration::from_millis(500);

/// Opens a watch over the whole bucket and reads its listing: the latest message of
/// every key, as `(key, revision, change)`.
pub(super) async fn open(
    stream: &async_nats::jetstream::stream::Stream,
    client: &async_nats::Client,
) -> Result<(Vec<(String, u64, Change)>, Watch)> {
    let prefix = format!("$KV.{BUCKET}.");
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            description: Some("reflow liveness watcher".into()),
            filter_subject: format!("{prefix}>"),
            replay_policy: ReplayPolicy::Instant,
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| {
            crate::transport::limits::name_limit(broker(
                format!("cannot watch bucket {BUCKET:?}"),
                e,
            ))
        })?;
    let mut left = consumer.cached_info().num_pending;
    let name = consumer.cached_info().name.clone();
    let mut watch = consumer
        .messages()
        .await
        .map_err(|e| broker(format!("cannot watch bucket {BUCKET:?}"), e))?;
    let deadline = Instant::now() + LISTING_TIMEOUT;
    let mut changes = Vec::with_capacity(left as usize);
    while left > 0 {
        let message = match tokio::time::timeout_at(deadline, watch.next()).await {
            Err(_) => {
                return Err(Error::timeout(
                    format!("listing bucket {BUCKET:?} ({left} entries unread)"),
                    LISTING_TIMEOUT,
                ));
            }
            Ok(None) => return Err(Error::new(crate::ErrorKind::Broker, "the watch ended")),
            Ok(Some(Err(err))) => {
                tracing::debug!(error = %err, "liveness listing hiccup");
                continue;
            }
            Ok(Some(Ok(message))) => message,
        };
        if let Ok(info) = message.info() {
            left = info.pending;
        }
        changes.extend(read(&prefix, &message, |_, _| false));
    }
    Ok((changes, Watch { name, feed: watch }))
}

/// Deletes the consumer behind a watch that is no longer read, waiting at most `limit`
/// (a server that does not answer takes it away itself after a while).
async fn retire(liveness: &Liveness, watch: Watch, limit: Duration) {
    drop(watch.feed);
    let deleted = tokio::time::timeout(limit, liveness.stream.delete_consumer(&watch.name)).await;
    if !matches!(deleted, Ok(Ok(_))) {
        tracing::debug!(
            consumer = watch.name,
            "an old liveness watch is left to expire"
        );
    }
}

/// How long retiring a watch may take at shutdown.
const RETIRE_AT_SHUTDOWN: Duration = Duration::from_secs(1);

/// What one delivered message says: `(key, revision, change)`; `unchanged(key,
/// payload)` tells whether the payload is the entry the key holds already.
fn read(
    prefix: &str,
    message: &async_nats::jetstream::Message,
    unchanged: impl Fn(&str, &[u8]) -> bool,
) -> Option<(String, u64, Change)> {
    let revision = message.info().ok()?.stream_sequence;
    let key = message.subject.strip_prefix(prefix)?;
    let change = change_of(&message.message, |payload| unchanged(key, payload))?;
    Some((key.to_string(), revision, change))
}

/// Applies one change the watch delivered, passing on the events it means while the
/// roster is locked.
fn take_in(
    liveness: &Liveness,
    prefix: &str,
    message: &async_nats::jetstream::Message,
    announce: &Announce,
) {
    let mut roster = liveness.roster.write();
    if let Some((key, revision, change)) = read(prefix, message, |key, raw| roster.holds(key, raw))
    {
        let raw = match change {
            Change::Put(_) => bytes::Bytes::copy_from_slice(&message.payload),
            _ => bytes::Bytes::new(),
        };
        let happened = roster.apply_raw(&key, revision, change, raw);
        announce(happened);
        drop(roster);
        liveness.took_in(revision);
    }
}

/// Applies the bucket's changes to the roster until `cancel`, reconciling after every
/// reconnect (`broker_up` turning true) and when the watch ends; `announce` gets the events
/// each change means.
pub(crate) async fn run(
    liveness: Arc<Liveness>,
    watch: Watch,
    announce: Announce,
    mut broker_up: watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    let prefix = format!("$KV.{BUCKET}.");
    let mut watch = Some(watch);
    let mut relist_at: Option<Instant> = None;
    let mut broker_open = true;
    loop {
        let next = async {
            match watch.as_mut() {
                Some(watch) => watch.feed.next().await,
                None => std::future::pending().await,
            }
        };
        let relist = async {
            match relist_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            message = next => match message {
                Some(Ok(message)) => take_in(&liveness, &prefix, &message, &announce),
                Some(Err(err)) => tracing::debug!(error = %err, "liveness watch hiccup"),
                None => {
                    tracing::debug!("liveness watch ended; listing again");
                    if let Some(old) = watch.take() {
                        retire(&liveness, old, LISTING_TIMEOUT).await;
                    }
                    relist_at = Some(Instant::now() + RETRY);
                }
            },
            changed = broker_up.changed(), if broker_open => {
                if changed.is_err() {
                    broker_open = false;
                } else if *broker_up.borrow_and_update() {
                    relist_at = Some(Instant::now() + AFTER_RECONNECT);
                }
            }
            _ = liveness.relist.notified() => relist_at = Some(Instant::now()),
            _ = relist => {
                relist_at = None;
                // A listing can wait out a request timeout on a broker that stopped
                // answering; shutting down does not wait for it.
                let listed = tokio::select! {
                    _ = cancel.cancelled() => break,
                    listed = liveness.listing() => listed,
                };
                match listed {
                    Ok((changes, listed_at, fresh)) => {
                        liveness.reconcile(changes, listed_at, &announce);
                        if let Some(old) = watch.replace(fresh) {
                            retire(&liveness, old, LISTING_TIMEOUT).await;
                        }
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "liveness listing failed; retrying");
                        relist_at = Some(Instant::now() + RETRY);
                    }
                }
            }
        }
    }
    if let Some(watch) = watch
        && *broker_up.borrow()
    {
        retire(&liveness, watch, RETIRE_AT_SHUTDOWN).await;
    }
}
