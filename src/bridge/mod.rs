//! The bridge: routing between the local graph and the broker.
//!
//! Data flows one way out and the same way back in:
//!
//! * out: a [`proxy::RemoteProxy`] node (or a confirmed send) encodes an envelope and
//!   publishes it on `{network}.{actor}.{port}`;
//! * in: every instance subscribes to `{network}.*.*` in queue group `{network}`; each
//!   payload passes the [`gate`] first (seal, purpose, subject, freshness, size), then the
//!   [`inbound`] dispatcher decodes the envelope and puts the message into the actor's
//!   in-port, waiting while its bounded inbox is full;
//! * back: an actor used through proxies gets an [`proxy::Egress`] node that publishes its
//!   outputs to `_reflow.{caller}.{instance}.ret.{token}.{port}`, where the caller's
//!   dispatcher emits them on the proxy's out-port.
//!
//! Control requests (ping, actor listing, connect, attach, discovery) are answered by
//! [`control`]; [`discover`] builds this instance's `NetworkInfo` and gathers everyone
//! else's; the hub (`crate::hub`) answers the NATS Services API for it. The liveness
//! entry and watcher ([`crate::liveness`]) start and stop with the bridge.

mod ack;
mod confirmed;
mod control;
mod discover;
mod dispatch;
mod durable;
mod durable_out;
mod gate;
mod inbound;
mod ledger;
mod mount;
mod peers;
mod plain;
#[cfg(test)]
mod protocol_tests;
pub(crate) mod proxy;
mod ranges;
pub(crate) mod registry;
mod remote;
mod road;
mod sequence;
mod stream;
mod window;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_nats::Client;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use ledger::Ledger;
pub use mount::SubgraphMountConfig;
pub(crate) use peers::Peers;
pub(crate) use plain::EndpointStats;
use proxy::Subscribers;
use registry::Registry;
use sequence::Outbox;
use window::{Kept, SendWindow};

use crate::discovery::Profile;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{EventSender, TransportKind};
use crate::hub::Membership;
use crate::liveness::Liveness;
use crate::message::seal::Purpose;
use crate::message::{EnvelopeWriter, Message};
use crate::network::{Causes, Network};
use crate::subject::control_subject;
use crate::transport::Transport;
use crate::transport::direct::{DirectTransport, Inbound};
use crate::transport::nats::{BrokerState, NatsTransport};
use tokio::sync::mpsc;

/// How long `start()` tries to open the liveness bucket on a cluster before it goes on
/// without, joining liveness in the background.
const LIVENESS_AT_START: Duration = Duration::from_secs(3);

/// How often a network that started without liveness tries to join it again.
const LIVENESS_RETRY: Duration = Duration::from_secs(1);

/// How long the return prefix of an instance that died is remembered.
const GONE_REMEMBERED: Duration = Duration::from_secs(60);

/// How long shutdown waits for the bridge's tasks to stop once cancelled.
const TASKS_GOODBYE: Duration = Duration::from_secs(5);

/// How long shutdown waits for the broker to take the last messages and close.
const BROKER_GOODBYE: Duration = Duration::from_secs(2);

/// Counters of the bridge's traffic, for monitoring.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BridgeStats {
    /// Envelopes published towards other networks (streamed and confirmed).
    pub messages_out: u64,
    /// Envelopes delivered into local actors from other networks.
    pub messages_in: u64,
    /// Outputs returned to proxies of other networks.
    pub returns_out: u64,
    /// Outputs of remote actors that came back to local proxies.
    pub returns_in: u64,
    /// Inbound envelopes refused: undecodable, or for an unknown actor or port.
    pub rejected_in: u64,
    /// Inbound envelopes dropped as repeats (sent again after a switch of road).
    pub duplicates_in: u64,
    /// Messages the NATS client dropped because a subscription's buffer was full.
    pub slow_consumer_drops: u64,
    /// Envelopes streamed to other networks and not yet acknowledged by them.
    pub unacknowledged: u64,
    /// Envelopes streamed again: because the road changed, or no acknowledgement came in
    /// time (the broker or a slow receiver lost them, or the acknowledgement was lost).
    pub resent: u64,
    /// Envelopes, acknowledgements and changing control requests the gate refused: not
    /// sealed with this network's auth token for the subject and purpose they arrived
    /// as (their senders never proved it), or sealed too long ago (replays); also
    /// counted in `rejected_in` when they were envelopes.
    pub unauthenticated_in: u64,
}

#[derive(Debug, Default)]
struct Counters {
    messages_out: AtomicU64,
    messages_in: AtomicU64,
    returns_out: AtomicU64,
    returns_in: AtomicU64,
    rejected_in: AtomicU64,
    duplicates_in: AtomicU64,
    resent: AtomicU64,
}

/// What the bridge needs of the network's configuration, and no more: the facade builds
/// it, so the bridge does not depend on the facade.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) network_id: String,
    pub(crate) instance_id: String,
    /// The secret peers prove in the connect handshake.
    pub(crate) auth_token: Option<String>,
    pub(crate) max_connections: usize,
    pub(crate) heartbeat_interval_ms: u64,
    /// The broker's URLs, for the endpoint this instance advertises.
    pub(crate) nats_urls: Vec<String>,
    pub(crate) local_network_config: crate::network::NetworkConfig,
    /// Set for a durable network: how its streams keep what is sent to it.
    pub(crate) durable: Option<crate::durable::DurableOptions>,
}

/// What the facade hands the bridge to start with.
pub(crate) struct Parts {
    pub(crate) config: Settings,
    pub(crate) local: Arc<RwLock<Network>>,
    /// This network's place on the broker connection it shares with the process's
    /// other networks.
    pub(crate) hub: Membership,
    pub(crate) events: EventSender,
    pub(crate) profile: Arc<RwLock<Profile>>,
    pub(crate) direct: DirectTransport,
    pub(crate) direct_inbound: mpsc::Receiver<Inbound>,
    /// Cancelled by the facade once the local graph runs: until then the dispatcher takes
    /// nothing off its subscriptions (they hold what arrives), so a message that comes
    /// while the network starts finds its actor instead of being refused.
    pub(crate) graph_up: CancellationToken,
}

/// The running core of a distributed network.
pub(crate) struct Bridge {
    me: Weak<Bridge>,
    pub(crate) network_id: Arc<str>,
    pub(crate) instance_id: Arc<str>,
    pub(crate) config: Settings,
    pub(crate) local: Arc<RwLock<Network>>,
    /// The broker connection and what this process's networks share of it.
    pub(crate) hub: Membership,
    pub(crate) client: Client,
    pub(crate) nats: NatsTransport,
    /// Direct links to other networks (listening only when `bind_port` is set).
    pub(crate) direct: DirectTransport,
    /// When each network's direct endpoint was last dialled, to pace retries.
    last_dial: road::Pacer,
    pub(crate) broker: Arc<BrokerState>,
    pub(crate) events: EventSender,
    pub(crate) registry: Mutex<Registry>,
    pub(crate) peers: Mutex<Peers>,
    /// Local actor id to the proxies attached to it.
    pub(crate) egress: RwLock<HashMap<String, Subscribers>>,
    pub(crate) accepting: AtomicBool,
    pub(crate) compress_above: Option<usize>,
    pub(crate) request_timeout: Duration,
    /// Capabilities and tags, shared with the facade that sets them.
    pub(crate) profile: Arc<RwLock<Profile>>,
    /// This start of the instance: start time and a random part.
    pub(crate) incarnation: String,
    pub(crate) started_at_ms: u64,
    /// The liveness bucket (the hub's), once the broker has been reached.
    pub(crate) liveness: OnceLock<Arc<Liveness>>,
    /// This instance's key in the bucket.
    liveness_key: String,
    counters: Counters,
    /// What plain JSON clients did with each in-port, for the Services API.
    plain_stats: plain::PlainStats,
    /// The last error a send to each network met, for `get_bridge_status`.
    last_errors: Mutex<HashMap<String, String>>,
    /// Remote networks mounted as subgraphs, by mount point.
    mounts: mount::Mounts,
    /// Durable networks this one sends to, found by their streams.
    durable_peers: Mutex<HashMap<String, durable::DurablePeer>>,
    /// Stream sequences of this durable network's messages handled here.
    durable_handled: durable::Handled,
    /// Numbers this sender's durable messages, for their deduplication ids.
    durable_seq: AtomicU64,
    /// The publisher of each durable network this one sends to.
    durable_outlets: Mutex<HashMap<String, Arc<durable_out::Outlet>>>,
    /// Keeps the log of refused inbound messages to a line per period.
    refusal_log: crate::throttle::Throttle,
    /// What everything that enters this network passes first; with an auth token, what
    /// everything it sends is sealed with.
    pub(crate) gate: gate::Gate,
    /// What this instance delivered and handled of every sender, and what it owes them.
    pub(crate) ledger: Arc<Ledger>,
    /// Recent confirmed sends by id, so that a retry is not delivered twice.
    pub(crate) confirmations: confirmed::Confirmations,
    confirmed_seq: AtomicU64,
    /// Streams to other networks, by network id.
    pub(crate) streams: Mutex<HashMap<String, stream::StreamHandle>>,
    /// Return prefixes of instances that died and have not come back, with when they
    /// died: outputs for them are given up rather than sent. Kept for
    /// [`GONE_REMEMBERED`], long enough for what was already on its way to them.
    gone_returns: Mutex<HashMap<String, Instant>>,
    /// The first number of every stream: this instance's start in microseconds.
    first_seq: u64,
    tracker: TaskTracker,
    /// Stops the control and return tasks.
    cancel: CancellationToken,
    /// Asks the data dispatcher to drain its subscription.
    drain: CancellationToken,
    /// Told when the dispatcher has drained the data subscription.
    drained: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    /// Stops the task that sends acknowledgements, after it sent what is owed.
    acks_done: CancellationToken,
    data_done: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Bridge {
    /// Subscribes to this network's subjects, writes the liveness entry, reads the
    /// liveness bucket (so the picture of live networks is complete when this returns)
    /// and starts the dispatchers, the heartbeat and the watcher.
    pub(crate) async fn start(parts: Parts) -> Result<Arc<Self>> {
        let Parts {
            config,
            local,
            hub,
            events,
            profile,
            direct,
            direct_inbound,
            graph_up,
        } = parts;
        let client = hub.hub.client.clone();
        let broker = hub.hub.state.clone();
        let net = config.local_network_config.clone();
        let cancel = CancellationToken::new();
        let key = format!("{}.{}", config.network_id, config.instance_id);
        let heartbeat = Duration::from_millis(config.heartbeat_interval_ms);
        let started_at_ms = crate::discovery::now_ms();
        let gate = gate::Gate::new(config.auth_token.as_deref(), started_at_ms);
        let bridge = Arc::new_cyclic(|me| Bridge {
            me: me.clone(),
            network_id: config.network_id.as_str().into(),
            instance_id: config.instance_id.as_str().into(),
            compress_above: net.enable_compression.then_some(net.compression_threshold),
            request_timeout: Duration::from_millis(net.request_timeout_ms),
            profile,
            incarnation: crate::discovery::incarnation(started_at_ms),
            started_at_ms,
            liveness: OnceLock::new(),
            liveness_key: key,
            config,
            local,
            hub,
            nats: NatsTransport {
                client: client.clone(),
            },
            client,
            direct,
            last_dial: road::Pacer::default(),
            broker,
            events,
            registry: Mutex::new(Registry::default()),
            peers: Mutex::new(Peers::default()),
            egress: RwLock::new(HashMap::new()),
            accepting: AtomicBool::new(true),
            counters: Counters::default(),
            plain_stats: Default::default(),
            last_errors: Mutex::new(HashMap::new()),
            mounts: Default::default(),
            durable_peers: Mutex::new(HashMap::new()),
            durable_handled: Default::default(),
            durable_seq: AtomicU64::new(0),
            durable_outlets: Mutex::new(HashMap::new()),
            refusal_log: Default::default(),
            gate,
            ledger: Arc::new(Ledger::default()),
            confirmations: confirmed::Confirmations::default(),
            confirmed_seq: AtomicU64::new(0),
            streams: Mutex::new(HashMap::new()),
            gone_returns: Mutex::new(Default::default()),
            first_seq: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(1),
            tracker: TaskTracker::new(),
            cancel,
            drain: CancellationToken::new(),
            drained: Mutex::new(None),
            acks_done: CancellationToken::new(),
            data_done: Mutex::new(None),
        });
        let data = inbound::subscribe_data(&bridge).await?;
        let returns = inbound::subscribe_returns(&bridge).await?;
        let control = control::subscribe(&bridge).await?;
        let ack_subject = ack::ack_subject(&bridge.network_id, &bridge.instance_id);
        let acks = ack::subscribe(&bridge, &ack_subject).await?;
        let sources = dispatch::Sources {
            data,
            returns,
            direct: direct_inbound,
        };
        let (drained, drained_rx) = tokio::sync::oneshot::channel();
        *bridge.drained.lock() = Some(drained_rx);
        let handle = tokio::spawn(dispatch::run(
            Arc::downgrade(&bridge),
            sources,
            dispatch::Winding {
                graph_up,
                drain: bridge.drain.clone(),
                drained,
                stop: bridge.cancel.clone(),
            },
        ));
        *bridge.data_done.lock() = Some(handle);
        bridge.tracker.spawn(control::run(
            Arc::downgrade(&bridge),
            control,
            bridge.cancel.clone(),
        ));
        // Acknowledgements over direct links skip the dispatcher too: one stuck behind
        // data it cannot deliver could wait for the very room it would free.
        let (direct_acks, direct_acks_rx) = mpsc::channel(ack::DIRECT_ACKS);
        bridge.direct.route_notices(ack_subject, direct_acks);
        bridge.tracker.spawn(ack::run(
            Arc::downgrade(&bridge),
            acks,
            direct_acks_rx,
            bridge.events.members(),
            bridge.cancel.clone(),
        ));
        bridge.tracker.spawn(ack::send_owed(
            Arc::downgrade(&bridge),
            bridge.acks_done.clone(),
        ));
        if bridge.broker.is_up() {
            bridge.join_broker(heartbeat).await?;
        } else {
            // Direct links work at once; liveness and discovery start with the broker.
            let me = bridge.weak_self();
            let mut up = bridge.broker.up.subscribe();
            let cancel = bridge.cancel.clone();
            bridge.tracker.spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = up.wait_for(|up| *up) => {}
                }
                if let Some(bridge) = me.upgrade()
                    && let Err(err) = bridge.join_broker(heartbeat).await
                {
                    tracing::warn!(error = %err, "could not join the broker's liveness bucket");
                }
            });
        }
        Ok(bridge)
    }

    /// What needs the broker: registering subscriptions for sure, and the liveness entry
    /// (through the hub, whose watcher, heartbeat timer, discovery and Services API
    /// responders serve every network of the process).
    async fn join_broker(self: &Arc<Self>, heartbeat: Duration) -> Result<()> {
        self.client.flush().await.map_err(|e| {
            Error::with_source(ErrorKind::Broker, "could not register subscriptions", e)
        })?;
        crate::transport::nats::check_server_version(&self.client)?;
        if let Some(options) = &self.config.durable {
            self.start_durable(options).await?;
        }
        let me = self.weak_self();
        self.hub.set_endpoints(Arc::new(move || {
            me.upgrade()
                .map(|b| b.service_endpoints())
                .unwrap_or_default()
        }));
        let me = self.weak_self();
        let info: crate::hub::InfoFn = Arc::new(move || me.upgrade().map(|b| b.network_info()));
        // On a cluster, bounded as a whole: while its liveness stream elects a leader,
        // every step can wait for one.
        let joining = self
            .hub
            .join_liveness(heartbeat, info.clone(), LIVENESS_AT_START);
        let joined = if self.client.server_info().cluster.is_some() {
            tokio::time::timeout(LIVENESS_AT_START, joining)
                .await
                .unwrap_or_else(|_| Err(Error::timeout("joining liveness", LIVENESS_AT_START)))
        } else {
            joining.await
        };
        match joined {
            Ok(liveness) => {
                let _ = self.liveness.set(liveness);
                Ok(())
            }
            Err(err) if self.liveness_can_wait(&err) => {
                tracing::warn!(
                    error = %err,
                    "liveness is unavailable for now (the cluster may be electing the liveness \
                     stream's leader); the network runs, and joins liveness in the background"
                );
                self.join_liveness_later(heartbeat, info);
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Whether a start may go on without liveness after `err`: on a cluster, where the
    /// liveness stream may be electing a leader, unless the server refused for good.
    fn liveness_can_wait(&self, err: &Error) -> bool {
        self.client.server_info().cluster.is_some()
            && matches!(err.kind(), ErrorKind::Broker | ErrorKind::Timeout)
    }

    /// Tries to join liveness until it works or the bridge stops.
    /// Writes this instance's liveness entry again and beats from now on, after it was
    /// withdrawn or stopped refreshing.
    pub(crate) async fn rejoin_liveness(self: &Arc<Self>) -> Result<()> {
        let me = self.weak_self();
        let info: crate::hub::InfoFn = Arc::new(move || me.upgrade().map(|b| b.network_info()));
        let heartbeat = Duration::from_millis(self.config.heartbeat_interval_ms);
        let liveness = self
            .hub
            .join_liveness(heartbeat, info, LIVENESS_AT_START)
            .await?;
        let _ = self.liveness.set(liveness);
        Ok(())
    }

    fn join_liveness_later(self: &Arc<Self>, heartbeat: Duration, info: crate::hub::InfoFn) {
        let me = self.weak_self();
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(LIVENESS_RETRY) => {}
                }
                let Some(bridge) = me.upgrade() else { return };
                let joined = tokio::select! {
                    _ = cancel.cancelled() => return,
                    joined = bridge.hub.join_liveness(heartbeat, info.clone(), LIVENESS_RETRY) => joined,
                };
                match joined {
                    Ok(liveness) => {
                        tracing::info!("joined liveness");
                        let _ = bridge.liveness.set(liveness);
                        return;
                    }
                    Err(err) if bridge.liveness_can_wait(&err) => {
                        tracing::debug!(error = %err, "liveness still unavailable");
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "cannot join liveness");
                        return;
                    }
                }
            }
        });
    }

    /// Leaves the liveness bucket: the heartbeat stops and the entry is deleted, so
    /// every watcher reports this instance as left.
    pub(crate) async fn leave(&self) {
        self.hub.leave_liveness().await;
    }

    /// This instance's key in the liveness bucket: `{network}.{instance}`.
    pub(crate) fn liveness_key(&self) -> &str {
        &self.liveness_key
    }

    pub(crate) fn weak_self(&self) -> Weak<Bridge> {
        self.me.clone()
    }

    /// Returns an output of a local actor to a proxy on `network`; `causes` are
    /// released once the proxy's network has handled it.
    pub(crate) async fn publish_return(
        &self,
        network: &str,
        subject: async_nats::Subject,
        message: Message,
        causes: Causes,
    ) -> Result<()> {
        self.stream_to(network)
            .submit(stream::Submit {
                subject,
                messages: vec![message],
                reply_to: None,
                causes,
                returned: true,
            })
            .await
    }

    /// The stream to `network`, started on first use; callers on a hot path keep it.
    pub(crate) fn stream_to(&self, network: &str) -> stream::StreamHandle {
        let mut streams = self.streams.lock();
        if let Some(handle) = streams.get(network) {
            return handle.clone();
        }
        let window = Arc::new(SendWindow::new(
            self.config.local_network_config.max_buffer_size,
        ));
        let outbox = Outbox::new(
            self.first_seq,
            window.clone(),
            EnvelopeWriter::with_epoch(&self.network_id, &self.instance_id, Some(self.first_seq)),
        );
        let handle = stream::start(self, network, outbox, window);
        streams.insert(network.to_string(), handle.clone());
        handle
    }

    /// Sends one batch of the stream to `network` (see [`stream`]): numbered, kept and
    /// sent in one envelope, or several when the broker's `max_payload` asks; waits while
    /// the stream's window is full, and while there is no road.
    pub(crate) async fn send_submit(
        &self,
        network: &str,
        outbox: &mut Outbox,
        submit: stream::Submit,
    ) -> Result<()> {
        let stream::Submit {
            subject,
            messages,
            reply_to,
            causes,
            returned,
        } = submit;
        if returned && self.returns_to_the_dead(&subject) {
            // Its proxy's instance died: nobody could take it, so it is refused.
            causes.release();
            return Ok(());
        }
        let subject = &subject;
        let messages = &messages[..];
        let reply_to = reply_to.as_deref();
        self.wait_for_room(network, outbox).await?;
        let mut road = self.reroute(network, outbox).await?;
        if road == TransportKind::Nats && !self.broker.is_up() {
            road = self.wait_for_road(network, outbox).await?;
        }
        // A batch too large for the broker is halved until its parts fit; each message
        // keeps the number the whole batch gave it, and each part keeps every cause of
        // the batch, so none is released before all are handled. Ranges still to send,
        // next one last.
        let max = self.max_payload();
        let first = outbox.take_seqs(messages.len());
        let redelivered = causes.redelivered();
        let mut causes = Some(causes);
        let mut ranges = vec![(0, messages.len())];
        let mut refused = None;
        while let Some((lo, hi)) = ranges.pop() {
            let part = &messages[lo..hi];
            let seq = first + lo as u64;
            let plain = match outbox.encode(seq, part, reply_to, redelivered) {
                Ok(plain) => plain,
                Err(err) => {
                    refused = Some(err);
                    continue;
                }
            };
            let purpose = if returned {
                Purpose::Return
            } else {
                Purpose::Data
            };
            let wire = self.wire(purpose, subject, plain.clone());
            if wire.len() > max {
                if part.len() > 1 {
                    let mid = lo + part.len() / 2;
                    ranges.push((mid, hi));
                    ranges.push((lo, mid));
                    continue;
                }
                // Refused for good: sending it again could never help. The rest of the
                // batch goes on.
                refused = Some(Error::new(
                    ErrorKind::PayloadTooLarge,
                    format!(
                        "a message for {subject} is {} bytes as sent; the server's max_payload \
                         is {max} bytes (raise max_payload in the server config, or send it \
                         in parts)",
                        wire.len()
                    ),
                ));
                continue;
            }
            let part_causes = if ranges.is_empty() {
                causes.take().unwrap_or_default()
            } else {
                causes.as_ref().map(Causes::share).unwrap_or_default()
            };
            // Kept before it is sent, so that an acknowledgement that comes back at once
            // finds it.
            let kept = Kept {
                subject: subject.clone(),
                plain,
            };
            outbox.window().keep(seq, part.len(), kept, part_causes);
            if let Err(err) = self.send_on(road, network, subject, wire).await {
                // Kept: it goes again once it is overdue, or the road changes; so do the
                // parts after it, which are kept as they come.
                tracing::debug!(network, error = %err, "a streamed envelope could not be sent; it is kept to send again");
            }
        }
        // What is left of the causes belongs to refused messages only: the refusal is
        // their outcome (kept parts hold causes of their own).
        if let Some(causes) = causes.take() {
            causes.release();
        }
        let counter = if returned {
            &self.counters.returns_out
        } else {
            &self.counters.messages_out
        };
        counter.fetch_add(
            if returned { 1 } else { messages.len() as u64 },
            Ordering::Relaxed,
        );
        match refused {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// An encoded envelope as it goes on the wire for `purpose` on `subject`: compressed
    /// where that is set and pays (and what it holds fits the receivers' bound on
    /// decompressed payloads), and sealed when this network has an auth token.
    pub(crate) fn wire(&self, purpose: Purpose, subject: &str, plain: Bytes) -> Bytes {
        // The bound is looked up only for what would be compressed.
        let compress_above = self.compress_above.filter(|above| {
            plain.len() > *above && plain.len() <= gate::plain_limit(self.max_payload())
        });
        let payload = crate::message::compress_above_limit(plain, compress_above);
        self.gate.seal(purpose, subject, payload)
    }

    /// The envelope bytes of a payload that arrived as `purpose` on `subject`, once the
    /// gate let it in (see [`gate`]), and when it was sealed.
    pub(crate) fn admitted(
        &self,
        purpose: Purpose,
        subject: &str,
        payload: &Bytes,
    ) -> Result<(Bytes, Option<u64>)> {
        self.gate
            .admit(purpose, subject, payload, || self.max_payload())
    }

    /// The largest payload the broker takes, as it announced; unbounded before it has.
    pub(crate) fn max_payload(&self) -> usize {
        match self.client.server_info().max_payload {
            0 => usize::MAX,
            max => max,
        }
    }

    /// Sends a request and waits for its reply, mapping no-responders and timeouts to
    /// the promised error phrases.
    pub(crate) async fn request(
        &self,
        network: &str,
        subject: String,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        let road = if self.broker.is_up() {
            TransportKind::Nats
        } else {
            self.road_to(network, TransportKind::Nats).await
        };
        match road {
            TransportKind::Nats => self.nats.request(network, &subject, payload, timeout).await,
            TransportKind::Direct => {
                self.direct
                    .request(network, &subject, payload, timeout)
                    .await
            }
        }
    }

    /// A control request to `network` whose JSON reply is decoded.
    pub(crate) async fn control_request<T: serde::de::DeserializeOwned>(
        &self,
        network: &str,
        verb: &str,
        body: &impl Serialize,
    ) -> Result<T> {
        let (subject, payload) = self.control_message(network, verb, serde_json::to_vec(body)?);
        let reply = self
            .request(network, subject, payload, self.request_timeout)
            .await?;
        crate::discovery::parse_reply(&format!("network {network:?}"), &reply)
    }

    /// The subject and payload of control request `verb` to `network` carrying `json`:
    /// sealed when the verb changes something there (see [`control::is_sealed`]) and this
    /// network has an auth token.
    pub(crate) fn control_message(
        &self,
        network: &str,
        verb: &str,
        json: Vec<u8>,
    ) -> (String, Bytes) {
        let subject = control_subject(network, verb);
        let payload = if control::is_sealed(verb) {
            self.gate.seal(Purpose::Control, &subject, json.into())
        } else {
            json.into()
        };
        (subject, payload)
    }

    /// Measures a round trip to `network` (and `actor` on it, if given).
    pub(crate) async fn ping(&self, network: &str, actor: Option<&str>) -> Result<Duration> {
        let started = Instant::now();
        let body = serde_json::json!({ "actor": actor });
        let _: crate::discovery::PingReply = self.control_request(network, "ping", &body).await?;
        Ok(started.elapsed())
    }

    fn count_out(&self) {
        self.counters.messages_out.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> BridgeStats {
        let c = &self.counters;
        BridgeStats {
            messages_out: c.messages_out.load(Ordering::Relaxed),
            messages_in: c.messages_in.load(Ordering::Relaxed),
            returns_out: c.returns_out.load(Ordering::Relaxed),
            returns_in: c.returns_in.load(Ordering::Relaxed),
            rejected_in: c.rejected_in.load(Ordering::Relaxed),
            duplicates_in: c.duplicates_in.load(Ordering::Relaxed),
            slow_consumer_drops: self.broker.slow_consumer_drops.load(Ordering::Relaxed),
            unacknowledged: self
                .streams
                .lock()
                .values()
                .map(|s| s.window.unacked_count() as u64)
                .sum(),
            resent: c.resent.load(Ordering::Relaxed),
            unauthenticated_in: self.gate.refusals().unauthenticated.load(Ordering::Relaxed)
                + self.gate.refusals().stale.load(Ordering::Relaxed),
        }
    }

    /// The road traffic to `network` takes now, and whether that is a direct link.
    pub(crate) fn current_road(&self, network: &str) -> (TransportKind, bool) {
        let transport = self
            .peers
            .lock()
            .all()
            .into_iter()
            .find(|c| c.network == network && c.direction == crate::events::Direction::Outbound)
            .map_or(TransportKind::Nats, |c| c.transport);
        (transport, transport == TransportKind::Direct)
    }

    /// Envelopes streamed to `network` and not yet acknowledged, and sent again so far.
    pub(crate) fn window_counts(&self, network: &str) -> (u64, u64) {
        self.streams.lock().get(network).map_or((0, 0), |s| {
            (s.window.unacked_count() as u64, s.window.resent_count())
        })
    }

    /// Remembers the last error a send to `network` met.
    pub(crate) fn note_send_error(&self, network: &str, err: &Error) {
        self.last_errors
            .lock()
            .insert(network.to_string(), err.to_string());
    }

    /// The last error a send to `network` met, if any.
    pub(crate) fn last_error(&self, network: &str) -> Option<String> {
        self.last_errors.lock().get(network).cloned()
    }

    /// Sends what this instance still owes its senders, and stops the task that does.
    pub(crate) async fn finish_acks(&self) {
        self.acks_done.cancel();
        self.send_acks().await;
    }

    /// Stops taking new inbound work: drains the data subscription (what the client has
    /// buffered is still delivered), and waits until the dispatcher has, at most
    /// `drain_timeout_ms` (the broker may go away in the middle of a drain). The
    /// dispatcher goes on taking returned outputs until [`Bridge::stop`].
    pub(crate) async fn drain_inbound(&self) {
        self.drain.cancel();
        let drained = self.drained.lock().take();
        let Some(drained) = drained else {
            return;
        };
        let limit = Duration::from_millis(self.config.local_network_config.drain_timeout_ms);
        if tokio::time::timeout(limit, drained).await.is_err() {
            tracing::warn!("inbound traffic did not drain within {limit:?}; going on");
        }
    }

    /// Stops every task of the bridge and flushes what the client still holds. With the
    /// broker down, the flush and the close wait at most [`BROKER_GOODBYE`]: the client
    /// would otherwise wait for a broker that may never come back.
    pub(crate) async fn stop(&self) {
        self.direct.shutdown().await;
        let flushed = if self.broker.is_up() {
            tokio::time::timeout(BROKER_GOODBYE, self.client.flush()).await
        } else {
            tracing::warn!(
                "shutting down with the broker unreachable: messages queued for it are dropped"
            );
            Ok(Ok(()))
        };
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "flush at shutdown failed"),
            Err(_) => tracing::warn!(
                "the broker did not take the last messages in {BROKER_GOODBYE:?}; \
                 messages still queued for it are dropped"
            ),
        }
        self.cancel.cancel();
        let dispatcher = self.data_done.lock().take();
        if let Some(mut dispatcher) = dispatcher
            && tokio::time::timeout(BROKER_GOODBYE, &mut dispatcher)
                .await
                .is_err()
        {
            // Blocked on an inbox of a halted graph: nothing more will be taken.
            dispatcher.abort();
        }
        self.tracker.close();
        // Every task stops on the cancel; one stuck on a broker that stopped answering
        // must not hold the shutdown.
        if tokio::time::timeout(TASKS_GOODBYE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("the bridge's tasks did not stop within {TASKS_GOODBYE:?}; going on");
        }
        // The connection closes with the last network that uses it.
        self.hub.release().await;
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.drain.cancel();
        self.hub.forget();
    }
}
