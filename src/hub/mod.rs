//! The hub: one broker connection per process and server, shared by every network of the
//! process that uses that server with the same credentials.
//!
//! What a network costs the server is then its own subscriptions and its liveness entry;
//! what the process costs it is one connection, one liveness watcher (one consumer on
//! the bucket's stream) and one discovery responder, however many networks it runs:
//!
//! * the broker connection's events (lost, regained, slow consumer) go to every network;
//! * one [`Liveness`] roster, read by one watcher, serves every network; each event goes
//!   to every network but the one it is about, under the roster's lock, so a network that
//!   joins sees each change once: in the roster it reads, or as an event;
//! * one timer per heartbeat interval refreshes the entries of every network with that
//!   interval ([`heartbeat`]);
//! * one subscription on `_reflow.discover` answers for every network, in as few replies
//!   as the server's `max_payload` allows;
//! * one subscription on `$SRV.>` answers the NATS Services API for every network
//!   ([`services`]).
//!
//! Each network keeps its own subscriptions, queue groups, liveness entry and events; one
//! network's shutdown takes away only those, and the last one's closes the connection.
//! A network that wants a connection of its own (other credentials, or isolation) gets a
//! hub nobody else shares. Hubs are kept per tokio runtime: a connection's tasks live on
//! the runtime that made it.

mod heartbeat;
mod services;

pub(crate) use services::service_name;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use async_nats::Client;
use futures::StreamExt;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::discovery::NetworkInfo;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{EventSender, NetworkEvent};
use crate::liveness::{self, Liveness};
use crate::subject::DISCOVER_SUBJECT;
use crate::transport::nats::{self, BrokerOptions, BrokerState};

/// How long a joining network waits for the roster to take in its own entry (and so
/// everything written before it).
const CATCH_UP: Duration = Duration::from_secs(2);

/// How long closing the connection waits for the broker to take what is queued.
const GOODBYE: Duration = Duration::from_secs(2);

/// What makes two networks' connections the same one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HubKey {
    runtime: tokio::runtime::Id,
    urls: Vec<String>,
    token: Option<String>,
    auth: crate::distributed_network::NatsAuth,
    /// The JetStream domain of the liveness bucket: networks that look for liveness in
    /// different domains must not share a roster.
    domain: Option<String>,
}

type Slot = Arc<tokio::sync::Mutex<Weak<Hub>>>;

/// The shared hubs of this process, by what makes them shareable.
static HUBS: LazyLock<Mutex<HashMap<HubKey, Slot>>> = LazyLock::new(Default::default);

/// A network that uses a hub.
pub(crate) struct Member {
    /// Where its events go.
    events: EventSender,
    /// Builds its liveness entry as it should read now; set when it joins liveness.
    info: RwLock<Option<InfoFn>>,
    /// Whether it has joined liveness: it gets liveness events and answers discovery.
    joined: AtomicBool,
    /// Its heartbeat, once it beats.
    beat: heartbeat::Beat,
    /// Requests its `info` endpoint answered, for the Services API's stats.
    info_requests: std::sync::atomic::AtomicU64,
    /// Lists its actors' in-ports as Services API endpoints.
    endpoints: RwLock<Option<EndpointsFn>>,
    /// Whether it was told that joining liveness failed, and not yet that it worked.
    waiting_for_liveness: AtomicBool,
}

/// Lists a network's in-ports as Services API endpoints, with their statistics.
pub(crate) type EndpointsFn = Arc<dyn Fn() -> Vec<ServiceEndpoint> + Send + Sync>;

/// One in-port of a network as a Services API endpoint: what `nats micro info` and
/// `nats micro stats` show of it.
#[derive(Debug, Clone)]
pub(crate) struct ServiceEndpoint {
    pub(crate) name: String,
    pub(crate) subject: String,
    pub(crate) stats: crate::bridge::EndpointStats,
}

/// Builds a network's liveness entry as it should read now.
pub(crate) type InfoFn = Arc<dyn Fn() -> Option<NetworkInfo> + Send + Sync>;

impl Member {
    fn info(&self) -> Option<NetworkInfo> {
        let info = self.info.read().clone()?;
        info()
    }
}

/// The networks that use a hub, by liveness key (`{network}.{instance}`).
#[derive(Default)]
struct Members(RwLock<BTreeMap<String, Arc<Member>>>);

impl Members {
    fn all(&self) -> Vec<(String, Arc<Member>)> {
        let map = self.0.read();
        map.iter().map(|(k, m)| (k.clone(), m.clone())).collect()
    }

    /// The networks that have joined liveness.
    fn joined(&self) -> Vec<(String, Arc<Member>)> {
        let map = self.0.read();
        map.iter()
            .filter(|(_, m)| m.joined.load(Ordering::Acquire))
            .map(|(k, m)| (k.clone(), m.clone()))
            .collect()
    }

    /// Sends `event` to every network.
    fn broadcast(&self, event: NetworkEvent) {
        for member in self.0.read().values() {
            member.events.send(event.clone());
        }
    }

    /// Sends each of `events` to every network that has joined liveness, but not to the
    /// one it is about.
    fn announce(&self, events: Vec<NetworkEvent>) {
        if events.is_empty() {
            return;
        }
        let map = self.0.read();
        for event in events {
            let about = match &event {
                NetworkEvent::NetworkUp { network, instance }
                | NetworkEvent::NetworkDown {
                    network, instance, ..
                } => Some((network.as_str(), instance.as_str())),
                _ => None,
            };
            for (key, member) in map.iter() {
                let own = about.is_some_and(|(n, i)| is_key_of(key, n, i));
                if !own && member.joined.load(Ordering::Acquire) {
                    member.events.send(event.clone());
                }
            }
        }
    }
}

/// Whether `key` is `{network}.{instance}`, without building it.
fn is_key_of(key: &str, network: &str, instance: &str) -> bool {
    key.len() == network.len() + 1 + instance.len()
        && key.starts_with(network)
        && key.ends_with(instance)
        && key.as_bytes()[network.len()] == b'.'
}

/// One broker connection and what the networks that use it share.
pub(crate) struct Hub {
    key: Option<HubKey>,
    pub(crate) client: Client,
    pub(crate) state: Arc<BrokerState>,
    /// The JetStream domain of the liveness bucket; `None` is the server's own.
    domain: Option<String>,
    /// Whether the liveness bucket stopped answering while the connection is up (and
    /// the networks were told so).
    liveness_lost: AtomicBool,
    members: Arc<Members>,
    liveness: tokio::sync::OnceCell<Arc<Liveness>>,
    beats: heartbeat::Timers,
    tracker: TaskTracker,
    cancel: CancellationToken,
    closed: AtomicBool,
}

impl Hub {
    /// The hub for `options` in this runtime, connecting if there is none yet, with the
    /// network whose liveness key is `key` added to it (its events go to `events` from
    /// now on). With `own`, a hub of its own that no other network shares.
    ///
    /// With `wait` the broker must answer within the connect timeout; without it the hub
    /// may still be connecting (the direct-link mode).
    pub(crate) async fn join(
        options: &BrokerOptions,
        own: bool,
        wait: bool,
        key: &str,
        events: EventSender,
    ) -> Result<Membership> {
        let member = Arc::new(Member {
            events,
            info: RwLock::new(None),
            joined: AtomicBool::new(false),
            beat: heartbeat::Beat::default(),
            info_requests: Default::default(),
            endpoints: RwLock::new(None),
            waiting_for_liveness: AtomicBool::new(false),
        });
        if own {
            let hub = Hub::connect(options, None, wait).await?;
            hub.add(key, member.clone())?;
            return Ok(Membership::new(hub, key, member));
        }
        let hub_key = HubKey {
            runtime: tokio::runtime::Handle::current().id(),
            urls: options.urls.clone(),
            token: options.token.clone(),
            auth: options.auth.clone(),
            domain: options.jetstream_domain.clone(),
        };
        let slot = {
            let mut hubs = HUBS.lock();
            hubs.retain(|_, slot| {
                Arc::strong_count(slot) > 1 || slot.try_lock().is_ok_and(|w| w.strong_count() > 0)
            });
            hubs.entry(hub_key.clone()).or_default().clone()
        };
        let mut current = slot.lock().await;
        let hub = match current
            .upgrade()
            .filter(|h| !h.closed.load(Ordering::Acquire))
        {
            Some(hub) => {
                if wait && !hub.state.is_up() {
                    hub.wait_up(options).await?;
                }
                hub
            }
            None => {
                let mut shared = options.clone();
                shared.client_name = format!("reflow:shared:{}", std::process::id());
                let hub = Hub::connect(&shared, Some(hub_key), wait).await?;
                *current = Arc::downgrade(&hub);
                hub
            }
        };
        // Added while the slot is held, so the last network's release cannot close the
        // hub between finding it and joining it.
        hub.add(key, member.clone())?;
        Ok(Membership::new(hub, key, member))
    }

    async fn connect(options: &BrokerOptions, key: Option<HubKey>, wait: bool) -> Result<Arc<Hub>> {
        let state = BrokerState::new();
        let members = Arc::new(Members::default());
        let sink = {
            let members = Arc::downgrade(&members);
            Arc::new(move |event: NetworkEvent| {
                if let Some(members) = members.upgrade() {
                    members.broadcast(event);
                }
            })
        };
        let client = nats::connect(options, state.clone(), sink, wait).await?;
        nats::check_server_version(&client)?;
        let hub = Arc::new(Hub {
            key,
            client,
            state,
            domain: options.jetstream_domain.clone(),
            liveness_lost: AtomicBool::new(false),
            members,
            liveness: tokio::sync::OnceCell::new(),
            beats: heartbeat::Timers::default(),
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
            closed: AtomicBool::new(false),
        });
        hub.respond(DISCOVER_SUBJECT, answer_discovery).await?;
        hub.respond(services::SUBJECT, services::answer).await?;
        Ok(hub)
    }

    /// Answers every request on `subject` with `answer`, one at a time, until the hub
    /// closes.
    async fn respond<F, Fut>(self: &Arc<Self>, subject: &'static str, answer: F) -> Result<()>
    where
        F: Fn(Arc<Hub>, async_nats::Message) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let mut requests = self.client.subscribe(subject).await.map_err(|e| {
            Error::with_source(
                ErrorKind::Broker,
                format!("cannot subscribe to {subject}"),
                e,
            )
        })?;
        let (hub, cancel) = (Arc::downgrade(self), self.cancel.clone());
        self.tracker.spawn(async move {
            loop {
                let request = tokio::select! {
                    _ = cancel.cancelled() => return,
                    request = requests.next() => request,
                };
                let (Some(request), Some(hub)) = (request, hub.upgrade()) else {
                    return;
                };
                answer(hub, request).await;
            }
        });
        Ok(())
    }

    /// Waits for a hub that is still connecting, as a first connection would.
    async fn wait_up(&self, options: &BrokerOptions) -> Result<()> {
        let mut up = self.state.up.subscribe();
        match tokio::time::timeout(nats::CONNECT_TIMEOUT, up.wait_for(|up| *up)).await {
            Ok(Ok(_)) => nats::check_server_version(&self.client),
            _ => Err(Error::new(
                ErrorKind::Timeout,
                nats::no_answer(&options.urls.join(", ")),
            )),
        }
    }

    fn add(&self, key: &str, member: Arc<Member>) -> Result<()> {
        let mut map = self.members.0.write();
        if map.contains_key(key) {
            let (network, instance) = key.rsplit_once('.').unwrap_or((key, ""));
            return Err(Error::new(
                ErrorKind::NameConflict,
                format!(
                    "instance {instance:?} of network {network:?} already runs in this \
                     process; give each instance its own instance_id"
                ),
            ));
        }
        map.insert(key.to_string(), member);
        Ok(())
    }

    /// The liveness bucket, opened and read on first use; its watcher runs until the
    /// hub closes.
    pub(crate) async fn liveness(self: &Arc<Self>, patience: Duration) -> Result<Arc<Liveness>> {
        self.liveness
            .get_or_try_init(|| async {
                let liveness =
                    Arc::new(Liveness::open(&self.client, self.domain.as_deref(), patience).await?);
                let announce: liveness::Announce = {
                    let members = Arc::downgrade(&self.members);
                    Arc::new(move |events| {
                        if let Some(members) = members.upgrade() {
                            members.announce(events);
                        }
                    })
                };
                let watch = liveness.load(&announce).await?;
                self.tracker.spawn(liveness::run_watcher(
                    liveness.clone(),
                    watch,
                    announce,
                    self.state.up.subscribe(),
                    self.cancel.clone(),
                ));
                Ok(liveness)
            })
            .await
            .cloned()
    }

    /// Tells every network, once, that the liveness bucket stopped answering although the
    /// connection is up (a lost connection is reported as such); says whether it is
    /// reported lost.
    fn liveness_failed(&self, why: &str) -> bool {
        if !self.state.is_up() {
            return false;
        }
        if !self.liveness_lost.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                error = why,
                domain = self.domain.as_deref().unwrap_or("(the server's own)"),
                "the liveness bucket does not answer: this process's networks will be seen \
                 to expire elsewhere, and hear of no network coming or going (on a leaf node: \
                 is its link to the hub down?)"
            );
            self.members.broadcast(NetworkEvent::LivenessLost {
                reason: why.to_string(),
            });
        }
        true
    }

    /// Tells every network that the liveness bucket answers again, once it had been
    /// reported lost, and has the watcher list it afresh: its watch missed what happened
    /// meanwhile.
    fn liveness_answered(&self, liveness: &Liveness) {
        if self.liveness_lost.swap(false, Ordering::AcqRel) {
            tracing::info!("the liveness bucket answers again");
            self.members.broadcast(NetworkEvent::LivenessRegained);
            liveness.relist.notify_one();
        }
    }

    /// Takes `member` off the hub, if it is still there as `key`.
    fn remove(&self, key: &str, member: &Arc<Member>) {
        let mut map = self.members.0.write();
        if map.get(key).is_some_and(|m| Arc::ptr_eq(m, member)) {
            map.remove(key);
        }
    }

    /// Closes the connection if no network uses it any more, after the broker has taken
    /// what is queued (at most [`GOODBYE`]).
    async fn close_if_unused(&self) {
        if !self.members.0.read().is_empty() {
            return;
        }
        let slot = self.key.as_ref().and_then(|k| HUBS.lock().get(k).cloned());
        let guard = match &slot {
            Some(slot) => Some(slot.lock().await),
            None => None,
        };
        if !self.members.0.read().is_empty() || self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        drop(guard);
        self.close().await;
    }

    async fn close(&self) {
        self.cancel.cancel();
        self.tracker.close();
        // Every task stops on the cancel; one stuck on a broker that stopped answering
        // must not hold the last network's shutdown.
        if tokio::time::timeout(GOODBYE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "the broker connection's tasks did not stop within {GOODBYE:?}; closing it anyway"
            );
        }
        let wait = if self.state.is_up() {
            GOODBYE
        } else {
            Duration::ZERO
        };
        match tokio::time::timeout(wait, self.client.drain()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::debug!(error = %err, "closing the broker connection"),
            Err(_) => tracing::debug!("the broker connection closed without a drain"),
        }
    }
}

/// One network's place on a hub.
pub(crate) struct Membership {
    pub(crate) hub: Arc<Hub>,
    key: String,
    member: Arc<Member>,
}

impl Membership {
    fn new(hub: Arc<Hub>, key: &str, member: Arc<Member>) -> Self {
        Membership {
            hub,
            key: key.to_string(),
            member,
        }
    }

    /// Joins liveness: writes this network's entry, waits until the roster holds
    /// everything written before it, reports every other live instance to it as up, and
    /// refreshes its entry every `heartbeat` from then on, with what `info` says. From
    /// then on it answers discovery and hears of instances coming and going.
    ///
    /// On a cluster, a bucket that does not answer (its stream electing a leader) is
    /// tried again for `patience`.
    ///
    /// A try that fails while the connection is up tells the network
    /// [`NetworkEvent::LivenessLost`] (once), and the try that then succeeds
    /// [`NetworkEvent::LivenessRegained`]: a network started on a leaf node cut off from
    /// the hub runs without liveness until the link is back, and hears so.
    pub(crate) async fn join_liveness(
        &self,
        heartbeat: Duration,
        info: InfoFn,
        patience: Duration,
    ) -> Result<Arc<Liveness>> {
        let joined = self.try_join_liveness(heartbeat, info, patience).await;
        let member = &self.member;
        match &joined {
            Err(err)
                if self.hub.state.is_up()
                    && !member.waiting_for_liveness.swap(true, Ordering::AcqRel) =>
            {
                member.events.send(NetworkEvent::LivenessLost {
                    reason: err.to_string(),
                });
            }
            Ok(_) if member.waiting_for_liveness.swap(false, Ordering::AcqRel) => {
                member.events.send(NetworkEvent::LivenessRegained);
            }
            _ => {}
        }
        joined
    }

    async fn try_join_liveness(
        &self,
        heartbeat: Duration,
        info: InfoFn,
        patience: Duration,
    ) -> Result<Arc<Liveness>> {
        let (hub, key, member) = (&self.hub, self.key.as_str(), &self.member);
        let liveness = hub.liveness(patience).await?;
        let heartbeat = heartbeat.max(Duration::from_millis(100));
        let ttl = liveness::entry_ttl(heartbeat.as_millis() as u64);
        *member.info.write() = Some(info);
        let entry = member.info().ok_or_else(|| {
            Error::new(ErrorKind::Shutdown, format!("{key} stopped while starting"))
        })?;
        liveness.refuse_live_twin(key, &entry.incarnation).await?;
        let sequence = member
            .beat
            .start(&liveness, key, heartbeat, ttl, &entry)
            .await?;
        if !liveness.caught_up(sequence, CATCH_UP).await {
            tracing::debug!(
                key,
                "the liveness roster is behind; going on with what it holds"
            );
        }
        {
            let roster = liveness.roster.read();
            for info in roster.infos() {
                if !is_key_of(key, &info.network_id, &info.instance_id) {
                    member.events.send(NetworkEvent::NetworkUp {
                        network: info.network_id,
                        instance: info.instance_id,
                    });
                }
            }
            member.joined.store(true, Ordering::Release);
        }
        hub.beats.ensure(hub, heartbeat);
        Ok(liveness)
    }

    /// Stops the heartbeat and deletes the entry, so every watcher sees this network
    /// leave.
    pub(crate) async fn leave_liveness(&self) {
        if let Some(liveness) = self.hub.liveness.get() {
            self.member.beat.stop_and_delete(liveness, &self.key).await;
        }
    }

    /// Leaves liveness while the network goes on running: deletes the entry, stops the
    /// heartbeat, and stops answering discovery and hearing of other instances, until
    /// [`Membership::join_liveness`] again.
    pub(crate) async fn withdraw(&self) {
        self.member.joined.store(false, Ordering::Release);
        self.leave_liveness().await;
    }

    /// Stops refreshing the entry, which expires after its TTL; the network still answers
    /// discovery.
    pub(crate) async fn stop_refreshing(&self) {
        self.member.beat.pause().await;
    }

    /// Sets what lists this network's in-ports to the Services API.
    pub(crate) fn set_endpoints(&self, endpoints: EndpointsFn) {
        *self.member.endpoints.write() = Some(endpoints);
    }

    /// Counts a request this network's `info` endpoint answered.
    pub(crate) fn served_info(&self) {
        self.member
            .info_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Leaves the hub; the last network to leave closes the connection.
    pub(crate) async fn release(&self) {
        self.hub.remove(&self.key, &self.member);
        self.hub.close_if_unused().await;
    }

    /// Leaves the hub at once, for a network dropped without a shutdown: its heartbeat
    /// stops with the next tick and its entry expires.
    pub(crate) fn forget(&self) {
        self.hub.remove(&self.key, &self.member);
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Answers a discovery request for every network of the hub that has joined liveness:
/// their entries, in as few replies as `max_payload` allows.
async fn answer_discovery(hub: Arc<Hub>, request: async_nats::Message) {
    let Some(reply) = request.reply else { return };
    let infos: Vec<NetworkInfo> = hub
        .members
        .joined()
        .into_iter()
        .filter_map(|(_, m)| m.info())
        .collect();
    let max = match hub.client.server_info().max_payload {
        0 => 1024 * 1024,
        max => max,
    };
    for body in crate::discovery::discovery_replies(infos, max) {
        if let Err(err) = hub.client.publish(reply.clone(), body).await {
            tracing::debug!(error = %err, "could not answer a discovery request");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_recognised_without_building_them() {
        assert!(is_key_of("prod.ml.w1", "prod.ml", "w1"));
        assert!(!is_key_of("prod.ml.w1", "prod", "ml.w1x"));
        assert!(!is_key_of("prod.ml.w1", "prod.m", "lw1"));
        assert!(!is_key_of("a.b", "a", "c"));
    }
}
