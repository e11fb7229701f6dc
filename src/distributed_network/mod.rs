//! [`DistributedNetwork`]: the facade users touch. It owns a local [`Network`] and, once
//! started, the bridge that joins it to every other network on the same NATS server.
//!
//! ```no_run
//! use reflow_network::actor::FnActor;
//! use reflow_network::distributed_network::{DistributedConfig, DistributedNetwork};
//! use reflow_network::Message;
//!
//! # #[tokio::main] async fn main() -> reflow_network::Result<()> {
//! // A network that hosts an actor...
//! let mut math = DistributedNetwork::new(DistributedConfig {
//!     network_id: "math".into(),
//!     instance_id: "m1".into(),
//!     ..Default::default()
//! })
//! .await?;
//! math.register_local_actor("double", FnActor::map("in", "out", |m| {
//!     Message::Integer(m.as_integer().unwrap_or(0) * 2)
//! }), None)?;
//! math.start().await?;
//!
//! // ...and one that uses it.
//! let mut app = DistributedNetwork::new(DistributedConfig {
//!     network_id: "app".into(),
//!     instance_id: "a1".into(),
//!     ..Default::default()
//! })
//! .await?;
//! app.start().await?;
//! app.connect_to_network("math").await?;
//! let alias = app.register_remote_actor("double", "math").await?;
//! assert_eq!(alias, "double@math");
//! app.send_to_remote_actor("math", "double", "in", Message::Integer(21)).await?;
//! # Ok(()) }
//! ```

mod config;
mod error;
mod health;
mod nats_auth;

pub use crate::bridge::BridgeStats;
pub use crate::bridge::SubgraphMountConfig;
pub use crate::bridge::registry::{ConflictResolutionStrategy, RemoteActorInfo};
pub use config::{DEFAULT_NATS_URL, DistributedConfig, NATS_SCHEMES};
pub use error::DistributedError;
pub use health::{BridgeStatus, LinkState, NetworkStatus};
pub use nats_auth::NatsAuth;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::actor::{Actor, Metadata};
use crate::bridge::{Bridge, Parts};
use crate::discovery::{ActorInfo, ConnectionInfo, NetworkInfo, Profile};
use crate::error::{Error, ErrorKind, Result};
use crate::events::{EventSender, EventStream};
use crate::hub::Hub;
use crate::message::Message;
use crate::network::Network;
use crate::transport::direct::{DirectConfig, DirectTransport};

/// Where a network is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    Running,
    ShutDown,
}

/// A local actor network joined to every other network on the same NATS server (or
/// cluster).
pub struct DistributedNetwork {
    config: DistributedConfig,
    local: Arc<RwLock<Network>>,
    events: EventSender,
    bridge: Option<Arc<Bridge>>,
    profile: Arc<RwLock<Profile>>,
    phase: Phase,
    own_connection: bool,
    nats_auth: NatsAuth,
    customizer: Option<crate::transport::nats::ConnectCustomizer>,
    /// Set by `set_durable`: this network keeps what is sent to it in JetStream.
    durable: Option<crate::durable::DurableOptions>,
    jetstream_domain: Option<String>,
}

impl std::fmt::Debug for DistributedNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedNetwork")
            .field("network_id", &self.config.network_id)
            .field("instance_id", &self.config.instance_id)
            .field("phase", &self.phase)
            .finish()
    }
}

impl DistributedNetwork {
    /// Checks `config` and builds the (not yet started) network.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] or [`ErrorKind::InvalidName`], naming the bad value.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example() -> Result<()> {
    /// let config = DistributedConfig {
    ///     network_id: "math".into(),
    ///     discovery_endpoints: vec!["nats://127.0.0.1:4222".into()],
    ///     ..DistributedConfig::default()
    /// };
    /// let mut math = DistributedNetwork::new(config).await?;
    /// math.start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn new(config: DistributedConfig) -> Result<Self> {
        config.validate()?;
        let local = Network::new(config.local_network_config.clone());
        Ok(DistributedNetwork {
            config,
            local: Arc::new(RwLock::new(local)),
            events: EventSender::new(),
            bridge: None,
            profile: Arc::default(),
            phase: Phase::Created,
            own_connection: false,
            nats_auth: NatsAuth::default(),
            customizer: None,
            durable: None,
            jetstream_domain: None,
        })
    }

    /// Joins the broker (the connection this process's networks share, made by the
    /// first; see [`DistributedNetwork::use_own_connection`]), subscribes to this
    /// network's subjects, writes this instance's liveness entry, waits until the
    /// process's liveness roster holds every entry written before it, and starts the
    /// local graph.
    /// When it returns, [`DistributedNetwork::live_networks`] and
    /// [`DistributedNetwork::discover_networks`] include every live instance. Calling it
    /// again while running does nothing.
    ///
    /// # Errors
    ///
    /// The broker cannot be reached (`Broker error`, naming the URLs), refuses the token
    /// (`Authentication failed`), is older than 2.11 (`NATS server too old`), or refuses
    /// because one of its limits is reached (`NATS server limit reached`, naming the
    /// setting that raises it); `Name conflict` if this process already runs this
    /// network's `instance_id`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// app.register_local_actor("print", ProbeActor::channel(16).0, None)?;
    /// app.start().await?;
    /// assert!(app.is_broker_connected());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(&mut self) -> Result<()> {
        match self.phase {
            Phase::Running => return Ok(()),
            Phase::ShutDown => {
                return Err(Error::new(
                    ErrorKind::Shutdown,
                    format!(
                        "network {:?} was shut down; make a new DistributedNetwork",
                        self.config.network_id
                    ),
                ));
            }
            Phase::Created => {}
        }
        // The listener first: a port in use is the first thing a user should hear of.
        let (inbound, direct_inbound) = tokio::sync::mpsc::channel(1024);
        let direct =
            DirectTransport::start(self.direct_config(), self.bind_address().await?, inbound)
                .await?;
        let mut options = self.config.broker_options();
        options.auth = self.nats_auth.clone();
        options.custom = self.customizer.clone();
        options.jetstream_domain = self.jetstream_domain.clone();
        let key = format!("{}.{}", self.config.network_id, self.config.instance_id);
        // Changes of the caller's own cannot be compared: such a network connects alone.
        let own = self.own_connection || self.customizer.is_some();
        let hub = match Hub::join(&options, own, true, &key, self.events.clone()).await {
            Ok(hub) => hub,
            // With a direct listener, a missing broker must not block startup: peers
            // reach this network by address, and the client keeps trying.
            Err(err)
                if self.config.bind_port != 0
                    && matches!(err.kind(), ErrorKind::Broker | ErrorKind::Timeout) =>
            {
                tracing::warn!(error = %err, "no broker yet; running on direct links until one answers");
                Hub::join(&options, own, false, &key, self.events.clone()).await?
            }
            Err(err) => return Err(err),
        };
        let graph_up = tokio_util::sync::CancellationToken::new();
        let bridge = Bridge::start(Parts {
            config: crate::bridge::Settings {
                durable: self.durable.clone(),
                ..self.config.bridge_settings()
            },
            local: self.local.clone(),
            hub,
            events: self.events.clone(),
            profile: self.profile.clone(),
            direct,
            direct_inbound,
            graph_up: graph_up.clone(),
        })
        .await?;
        self.local.write().start()?;
        graph_up.cancel();
        self.bridge = Some(bridge);
        self.phase = Phase::Running;
        tracing::info!(network = %self.config.network_id, instance = %self.config.instance_id, "network started");
        Ok(())
    }

    /// Sets how this network proves itself to the NATS server: TLS files, a creds file,
    /// an NKey seed, a user and password, or a server token apart from `auth_token`
    /// (which then stays the peers' shared secret alone). Takes effect at
    /// [`DistributedNetwork::start`]; networks of one process share a connection only
    /// when these match.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] naming a file that does not exist, or settings that
    /// do not go together (a certificate without its key, two ways to log in).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// use reflow_network::distributed_network::NatsAuth;
    ///
    /// app.set_nats_auth(NatsAuth {
    ///     creds_file: Some("/etc/reflow/app.creds".into()),
    ///     tls_ca_file: Some("/etc/reflow/ca.pem".into()),
    ///     ..NatsAuth::default()
    /// })?;
    /// app.start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_nats_auth(&mut self, auth: NatsAuth) -> Result<()> {
        auth.check()?;
        self.nats_auth = auth;
        Ok(())
    }

    /// Looks for the liveness bucket in the JetStream domain `domain` (`$JS.{domain}.API`,
    /// natscli's `--js-domain`) rather than in the server's own; an empty `domain` goes
    /// back to the server's own. Takes effect at [`DistributedNetwork::start`]; networks
    /// of one process share a connection only when their domains match.
    ///
    /// This is what a network on a **leaf node** needs when the leaf runs JetStream of
    /// its own (a domain of its own, as NATS requires of a leaf with JetStream): name the
    /// hub's domain, and the networks of every site share the hub's one bucket, so each
    /// sees every other come and go. A leaf without JetStream passes the JetStream API to
    /// the hub by itself, and needs no domain. The data, discovery and control subjects
    /// cross leaf links on their own whatever the domain.
    ///
    /// ```
    /// # use reflow_network::distributed_network::{DistributedConfig, DistributedNetwork};
    /// # #[tokio::main] async fn main() -> reflow_network::Result<()> {
    /// let mut network = DistributedNetwork::new(DistributedConfig::default()).await?;
    /// network.set_jetstream_domain("hub")?;
    /// assert_eq!(network.jetstream_domain(), Some("hub"));
    /// assert!(network.set_jetstream_domain("two.tokens").is_err());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] when `domain` holds a dot, whitespace, `*` or `>`.
    pub fn set_jetstream_domain(&mut self, domain: impl Into<String>) -> Result<()> {
        let domain = domain.into();
        if domain
            .chars()
            .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace())
        {
            return Err(Error::invalid_config(
                "jetstream_domain",
                format!(
                    "{domain:?} is not a JetStream domain: one name without dots, \
                     whitespace, '*' or '>', as in the server's jetstream {{ domain: ... }}"
                ),
            ));
        }
        self.jetstream_domain = (!domain.is_empty()).then_some(domain);
        Ok(())
    }

    /// The JetStream domain of the liveness bucket, when one is set
    /// ([`DistributedNetwork::set_jetstream_domain`]).
    pub fn jetstream_domain(&self) -> Option<&str> {
        self.jetstream_domain.as_deref()
    }

    /// For full control of the NATS connection: `customize` gets the client's
    /// [`async_nats::ConnectOptions`] as this crate sets them (name, pings, reconnects,
    /// events, and what [`DistributedNetwork::set_nats_auth`] asks for) and returns them
    /// changed, for example with a custom TLS configuration or an auth callback. A network
    /// customized so gets a connection of its own. Takes effect at
    /// [`DistributedNetwork::start`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// app.customize_connection(|options| options.name("billing-app"));
    /// app.start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn customize_connection<F>(&mut self, customize: F)
    where
        F: Fn(async_nats::ConnectOptions) -> async_nats::ConnectOptions + Send + Sync + 'static,
    {
        self.customizer = Some(std::sync::Arc::new(customize));
    }

    /// Every durable network on the server, up or down, with its backlog (see
    /// [`DistributedNetwork::durable_backlog`]).
    ///
    /// # Errors
    ///
    /// `Broker error` when the server's streams cannot be listed.
    pub async fn durable_networks(&self) -> Result<Vec<crate::durable::Backlog>> {
        self.bridge()?.list_durable().await
    }

    /// Makes this network durable (before [`DistributedNetwork::start`]): what is sent to
    /// it waits in a JetStream stream while it is down, its instances share the work
    /// through one durable consumer, and a message acknowledged to JetStream is one that
    /// was handled (see [`crate::durable`]).
    ///
    /// ```no_run
    /// # async fn example(mut billing: reflow_network::prelude::DistributedNetwork) -> reflow_network::Result<()> {
    /// use reflow_network::durable::DurableOptions;
    ///
    /// billing.set_durable(DurableOptions { max_deliver: 3, ..DurableOptions::default() })?;
    /// billing.start().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `Invalid config` naming a bad option, or when called after `start()`.
    pub fn set_durable(&mut self, options: crate::durable::DurableOptions) -> Result<()> {
        if self.phase != Phase::Created {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "set_durable must be called before start()",
            ));
        }
        options.validate()?;
        self.durable = Some(options);
        Ok(())
    }

    /// Sends `message` into `actor`'s `port` on `network_id` as
    /// [`DistributedNetwork::send_to_remote_actor`] does, and says what the caller got:
    /// [`Delivery::Delivered`](crate::durable::Delivery::Delivered) when the network
    /// handled it, [`Delivery::Stored`](crate::durable::Delivery::Stored) when JetStream
    /// stored it for a durable network (up or down), to be handled when an instance takes
    /// it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(app: reflow_network::prelude::DistributedNetwork) -> reflow_network::Result<()> {
    /// use reflow_network::durable::Delivery;
    /// use reflow_network::Message;
    ///
    /// app.connect_to_network("billing").await?; // durable: works while it is down
    /// match app.send_to_remote_actor_reporting("billing", "charge", "in", Message::Integer(5), None).await? {
    ///     Delivery::Delivered => println!("handled"),
    ///     Delivery::Stored => println!("stored; billing handles it when it runs"),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`DistributedNetwork::send_to_remote_actor`]; for a durable network, `Broker
    /// error` when JetStream did not store it (a stream at its limits refuses).
    pub async fn send_to_remote_actor_reporting(
        &self,
        network_id: &str,
        actor: &str,
        port: &str,
        message: Message,
        id: Option<&str>,
    ) -> Result<crate::durable::Delivery> {
        if id == Some("") {
            return Err(Error::new(
                ErrorKind::InvalidName,
                "a confirmed send's id may not be empty",
            ));
        }
        let bridge = self.bridge()?;
        bridge
            .send_confirmed(network_id, actor, port, message, id)
            .await
            .inspect_err(|err| bridge.note_send_error(network_id, err))
    }

    /// What waits for durable network `network_id`: messages stored and not yet handled,
    /// the oldest one's age, and how many were dead-lettered; read from its streams, so
    /// it works while the network is down.
    ///
    /// # Errors
    ///
    /// `Network not connected` when `network_id` is not durable (it has no stream).
    pub async fn durable_backlog(&self, network_id: &str) -> Result<crate::durable::Backlog> {
        self.bridge()?.backlog(network_id).await
    }

    /// The durable options set with [`DistributedNetwork::set_durable`], if any.
    pub fn durable_options(&self) -> Option<&crate::durable::DurableOptions> {
        self.durable.as_ref()
    }

    /// Gives this network a broker connection of its own (`true`), or lets it share one
    /// (`false`, the default). Takes effect at [`DistributedNetwork::start`].
    ///
    /// By default the networks of one process that use the same servers with the same
    /// credentials (`discovery_endpoints`, `auth_token`) share one connection, one
    /// liveness watcher and one discovery responder, so that what they cost the server
    /// grows with processes, not networks; each keeps its own subscriptions, queue
    /// groups, liveness entry and events, and one's shutdown never disturbs another.
    /// Networks with other credentials, or another JetStream domain
    /// ([`DistributedNetwork::set_jetstream_domain`]), never share. A connection of its own isolates a
    /// network's broker traffic (its own slow-consumer budget, its own reconnects) at the
    /// cost of a connection and a liveness consumer on the server.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// app.use_own_connection(true);
    /// app.start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn use_own_connection(&mut self, own: bool) {
        self.own_connection = own;
    }

    fn direct_config(&self) -> DirectConfig {
        let mut direct = DirectConfig::new(&self.config.network_id, &self.config.instance_id);
        direct.auth_token = self.config.auth_token.clone();
        direct.max_connections = self.config.max_connections;
        direct.max_frame_size = direct
            .max_frame_size
            .max(self.config.local_network_config.max_buffer_size);
        direct.request_timeout =
            Duration::from_millis(self.config.local_network_config.request_timeout_ms);
        let heartbeat = Duration::from_millis(self.config.heartbeat_interval_ms);
        direct.ping_interval = heartbeat.clamp(Duration::from_millis(200), Duration::from_secs(5));
        direct.ping_timeout = direct.ping_interval * 3;
        direct
    }

    /// The direct listener's address, when `bind_port` is set.
    async fn bind_address(&self) -> Result<Option<std::net::SocketAddr>> {
        if self.config.bind_port == 0 {
            return Ok(None);
        }
        let wanted = format!("{}:{}", self.config.bind_address, self.config.bind_port);
        let mut addrs = tokio::net::lookup_host(&wanted).await.map_err(|e| {
            Error::with_source(
                ErrorKind::Bind,
                format!("cannot resolve bind address {wanted}"),
                e,
            )
        })?;
        addrs.next().map(Some).ok_or_else(|| {
            Error::new(
                ErrorKind::Bind,
                format!("bind address {wanted} resolves to nothing"),
            )
        })
    }

    /// Shuts down gracefully: stops accepting connections and says goodbye to peers,
    /// takes no new inbound work, lets the messages already received and in flight finish
    /// (bounded by `local_network_config.drain_timeout_ms`), waits for the peers it can
    /// still reach to handle what it streamed to them (bounded the same way), sends the
    /// acknowledgements it owes, and only then deletes its liveness entry (every watcher
    /// sees [`NetworkEvent::NetworkDown`](crate::events::NetworkEvent::NetworkDown) with
    /// reason `Left`), stops every task and leaves the broker connection (closed with the
    /// last network of the process that shares it). What it had
    /// accepted and could not finish in time is left unacknowledged, so its senders send
    /// it again to the instances left.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// app.start().await?;
    /// // ... run ...
    /// app.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(&mut self) -> Result<()> {
        if self.phase == Phase::ShutDown {
            return Ok(());
        }
        self.phase = Phase::ShutDown;
        let Some(bridge) = self.bridge.take() else {
            let drained = self.local.read().shutdown();
            drained.await;
            return Ok(());
        };
        bridge
            .accepting
            .store(false, std::sync::atomic::Ordering::Release);
        bridge.disconnect_all().await;
        bridge.drain_inbound().await;
        let drained = self.local.read().shutdown();
        drained.await;
        bridge
            .await_acknowledged(Duration::from_millis(
                self.config.local_network_config.drain_timeout_ms,
            ))
            .await;
        // What was handled is acknowledged before the liveness entry goes: senders take
        // its going as the loss of whatever this instance still held, and send that again.
        bridge
            .await_stored(Duration::from_millis(
                self.config.local_network_config.drain_timeout_ms,
            ))
            .await;
        bridge.finish_acks().await;
        bridge.leave().await;
        bridge.stop().await;
        tracing::info!(network = %self.config.network_id, "network shut down");
        Ok(())
    }

    /// Refuses new peer connections from now on; existing ones keep working.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// app.stop_accepting_connections().await?;
    /// // drain, then
    /// app.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn stop_accepting_connections(&self) -> Result<()> {
        if let Some(bridge) = &self.bridge {
            bridge
                .accepting
                .store(false, std::sync::atomic::Ordering::Release);
            bridge.direct.stop_accepting();
        }
        Ok(())
    }

    /// The configuration this network was made with.
    pub fn get_config(&self) -> &DistributedConfig {
        &self.config
    }

    /// The local graph, to add nodes and connections to.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// let local = app.get_local_network();
    /// let mut local = local.write();
    /// local.add_connection(Connector::new("source", "out", "double@math", "in"))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_local_network(&self) -> Arc<RwLock<Network>> {
        self.local.clone()
    }

    /// Adds a local actor as node `id` (its component is also named `id`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// let double = FnActor::map("in", "out", |m| Message::Integer(m.as_integer().unwrap_or(0) * 2));
    /// app.register_local_actor("double", double, None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn register_local_actor<A: Actor + Clone>(
        &self,
        id: &str,
        actor: A,
        metadata: Option<Metadata>,
    ) -> Result<()> {
        let mut local = self.local.write();
        if local.node(id).is_some() {
            return Err(Error::new(
                ErrorKind::NameConflict,
                format!(
                    "{id:?} is already a node of network {:?}",
                    self.config.network_id
                ),
            ));
        }
        local.register_actor(id, actor)?;
        local.add_node(id, id, metadata)
    }

    /// Publishes every message `actor` emits on its out-port `port` as JSON on the plain
    /// NATS subject `subject`, with the headers `Content-Type: application/json` and
    /// `Reflow-From: {network}.{actor}.{port}`, so a plain client (`nats sub SUBJECT`)
    /// reads the actor's results. Once the network has started; publishing the same port
    /// on the same subject twice is one publication.
    ///
    /// Each message is published once, at most: a plain subscriber acknowledges nothing.
    ///
    /// ```no_run
    /// # async fn demo(network: reflow_network::prelude::DistributedNetwork) -> reflow_network::Result<()> {
    /// network.publish_port("tally", "count", "stats.counts")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `Actor not found` or `Port not found` naming what is missing; `Invalid name` for a
    /// subject with wildcards or under `_reflow.`/`$`; `Shutdown` before `start()`.
    pub fn publish_port(&self, actor: &str, port: &str, subject: &str) -> Result<()> {
        self.bridge()?.publish_port(actor, port, subject)
    }

    /// A stream of what happens: peers connecting and leaving, the broker lost and
    /// regained, slow-consumer drops, networks up and down.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// use reflow_network::events::NetworkEvent;
    ///
    /// let mut events = app.events();
    /// tokio::spawn(async move {
    ///     while let Some(event) = events.recv().await {
    ///         if let NetworkEvent::NetworkDown { network, .. } = &event {
    ///             eprintln!("{network} went away");
    ///         }
    ///     }
    /// });
    /// # Ok(())
    /// # }
    /// ```
    pub fn events(&self) -> EventStream {
        self.events.subscribe()
    }

    fn bridge(&self) -> Result<&Arc<Bridge>> {
        self.bridge.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Shutdown,
                format!(
                    "network {:?} is not running; call start() first",
                    self.config.network_id
                ),
            )
        })
    }

    /// Connects to another network. `endpoint` is its network id, reached through the
    /// broker, or `host:port`, its direct-link listener (the seed's
    /// `connect_to_network("127.0.0.1:8080")`), whose handshake tells its network id.
    /// Either way the peer checks the auth token proof and its `max_connections`.
    ///
    /// # Errors
    ///
    /// A [`DistributedError`], so that a `match` on its variants compiles as in Reflow's
    /// guides: [`DistributedError::ConnectionTimeout`],
    /// [`DistributedError::AuthenticationFailed`], or [`DistributedError::Other`] with the
    /// library's [`Error`]: `Network disconnected` when no instance of it answers (for an
    /// address, with the operating system's words, such as `Connection refused`),
    /// `Refused: max connections reached`, ... `?` turns it into an [`Error`] or an
    /// `anyhow::Error`. [`DistributedNetwork::connect_to`] is the same call returning
    /// the [`Error`], whose message says which side refused or what did not answer.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// app.connect_to_network("math").await?;
    /// assert!(app.is_network_connected("math").await);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_to_network(
        &self,
        endpoint: &str,
    ) -> std::result::Result<(), DistributedError> {
        Ok(self.connect_to(endpoint).await?)
    }

    /// [`DistributedNetwork::connect_to_network`], failing with the library's [`Error`]:
    /// every failure keeps its message (a refused credential says which side refused,
    /// a timeout what did not answer and after how long).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// if let Err(err) = app.connect_to("math").await {
    ///     eprintln!("{err}"); // e.g. "Authentication failed: network \"math\" refused ..."
    ///     return Err(err);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_to(&self, endpoint: &str) -> Result<()> {
        self.bridge()?.connect_peer(endpoint).await
    }

    /// Ends the connection to `network_id`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// app.disconnect_from_network("math").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn disconnect_from_network(&self, network_id: &str) -> Result<()> {
        self.bridge()?
            .disconnect_peer(network_id, "disconnected by this network")
            .await
    }

    /// Whether this network has connected to `network_id`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// if !app.is_network_connected("math").await {
    ///     app.connect_to_network("math").await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn is_network_connected(&self, network_id: &str) -> bool {
        self.bridge
            .as_ref()
            .is_some_and(|b| b.peers.lock().is_connected(network_id))
    }

    /// The networks this network has connected to.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// for network in app.get_connected_networks().await {
    ///     println!("connected to {network}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_connected_networks(&self) -> Vec<String> {
        self.bridge
            .as_ref()
            .map(|b| b.peers.lock().connected_networks())
            .unwrap_or_default()
    }

    /// Every live connection, both those this network opened and those peers opened.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// for connection in app.get_active_connections().await? {
    ///     println!("{connection:?}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_active_connections(&self) -> Result<Vec<ConnectionInfo>> {
        Ok(self.bridge()?.peers.lock().all())
    }

    /// Measures a round trip to `network_id`. A network nobody answers for fails at once
    /// with `Network disconnected`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// let rtt = app.ping_network("math").await?;
    /// println!("math answers in {rtt:?}");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ping_network(&self, network_id: &str) -> Result<Duration> {
        crate::subject::validate_network_id(network_id)?;
        self.bridge()?.ping(network_id, None).await
    }

    /// Measures a round trip to the host of `actor` on `network_id`; `Actor not found`
    /// if it is not there.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// let rtt = app.ping_remote_actor("math", "double").await?;
    /// println!("math.double answers in {rtt:?}");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ping_remote_actor(&self, network_id: &str, actor: &str) -> Result<Duration> {
        crate::subject::validate_network_id(network_id)?;
        crate::subject::validate_name("actor", actor)?;
        self.bridge()?.ping(network_id, Some(actor)).await
    }

    /// Sets what this network offers, replacing what was set before. Takes effect at once
    /// in discovery replies and at the next heartbeat in the liveness entry; usable before
    /// [`DistributedNetwork::start`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// app.set_capabilities(["arithmetic", "gpu"]);
    /// app.start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_capabilities<I, S>(&self, capabilities: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.profile.write().capabilities = capabilities.into_iter().map(Into::into).collect();
    }

    /// Sets this network's tags (free-form labels such as `region=eu`), replacing what
    /// was set before; takes effect as [`DistributedNetwork::set_capabilities`] does.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// app.set_tags(["region=eu", "tier=gold"]);
    /// app.start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_tags<I, S>(&self, tags: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.profile.write().tags = tags.into_iter().map(Into::into).collect();
    }

    /// Every network that answers discovery or holds a live liveness entry, this one
    /// included: one [`NetworkInfo`] per network (its instances merged), sorted by
    /// network id.
    ///
    /// Discovery is scatter-gather on `_reflow.discover`: it listens for replies until
    /// 250 ms pass without one (25 ms once every instance the liveness watcher knows has
    /// answered; 3 s at most), then adds the instances the liveness watcher knows, so
    /// every live entry is included even if its instance was slow to answer.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// for info in app.discover_networks().await? {
    ///     println!("{} ({} instances): {:?}", info.network_id, info.instance_count, info.capabilities);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn discover_networks(&self) -> Result<Vec<NetworkInfo>> {
        self.bridge()?.discover_networks().await
    }

    /// The networks of [`DistributedNetwork::discover_networks`] that offer `capability`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// let gpus = app.discover_networks_with_capability("gpu").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn discover_networks_with_capability(
        &self,
        capability: &str,
    ) -> Result<Vec<NetworkInfo>> {
        let mut networks = self.discover_networks().await?;
        networks.retain(|n| n.has_capability(capability));
        Ok(networks)
    }

    /// The networks of [`DistributedNetwork::discover_networks`] that carry every one of
    /// `tags`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// let eu = app.discover_networks_by_tags(["region=eu"]).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn discover_networks_by_tags<I, S>(&self, tags: I) -> Result<Vec<NetworkInfo>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let tags: Vec<S> = tags.into_iter().collect();
        let mut networks = self.discover_networks().await?;
        networks.retain(|n| n.has_all_tags(&tags));
        Ok(networks)
    }

    /// The instances the liveness watcher knows to be live now, this one included, one
    /// entry per instance, sorted by liveness key (`{network}.{instance}`). Empty before
    /// [`DistributedNetwork::start`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// let live: Vec<String> = app.live_networks().into_iter().map(|n| n.network_id).collect();
    /// # Ok(())
    /// # }
    /// ```
    pub fn live_networks(&self) -> Vec<NetworkInfo> {
        self.bridge
            .as_ref()
            .map(|b| b.live_instances())
            .unwrap_or_default()
    }

    /// Lists the actors `network_id` hosts, with their ports.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// for actor in app.discover_actors_on_network("math").await? {
    ///     println!("{} in {:?} out {:?}", actor.id, actor.inports, actor.outports);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn discover_actors_on_network(&self, network_id: &str) -> Result<Vec<ActorInfo>> {
        crate::subject::validate_network_id(network_id)?;
        self.bridge()?
            .control_request(network_id, "actors", &serde_json::json!({}))
            .await
    }

    /// The same as [`DistributedNetwork::discover_actors_on_network`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// let actors = app.discover_remote_actors("math").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn discover_remote_actors(&self, network_id: &str) -> Result<Vec<ActorInfo>> {
        self.discover_actors_on_network(network_id).await
    }

    /// Puts `actor` of `network_id` into the local graph as node `actor@network_id` and
    /// returns that alias. The network must be connected.
    ///
    /// Connect to the proxy's in-ports to stream to the remote actor; connect from its
    /// out-ports to receive what the remote actor emits.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// app.connect_to_network("math").await?;
    /// let proxy = app.register_remote_actor("double", "math").await?;
    /// assert_eq!(proxy, "double@math");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn register_remote_actor(&self, actor: &str, network_id: &str) -> Result<String> {
        self.register_remote_actor_with_strategy(
            actor,
            network_id,
            ConflictResolutionStrategy::Fail,
        )
        .await
    }

    /// As [`DistributedNetwork::register_remote_actor`], with the proxy named `alias`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// let proxy = app.register_remote_actor_with_alias("doubler", "double", "math").await?;
    /// assert_eq!(proxy, "doubler");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn register_remote_actor_with_alias(
        &self,
        alias: &str,
        actor: &str,
        network_id: &str,
    ) -> Result<String> {
        self.register_remote_actor_with_strategy(
            actor,
            network_id,
            ConflictResolutionStrategy::ManualAlias(alias.to_string()),
        )
        .await
    }

    /// As [`DistributedNetwork::register_remote_actor`], resolving a taken alias with
    /// `strategy`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// use reflow_network::distributed_network::ConflictResolutionStrategy;
    ///
    /// let proxy = app
    ///     .register_remote_actor_with_strategy("double", "math", ConflictResolutionStrategy::NetworkPrefix)
    ///     .await?;
    /// assert_eq!(proxy, "math_double");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn register_remote_actor_with_strategy(
        &self,
        actor: &str,
        network_id: &str,
        strategy: ConflictResolutionStrategy,
    ) -> Result<String> {
        self.bridge()?
            .register_remote(actor, network_id, strategy)
            .await
    }

    /// Removes the proxy `alias` from the local graph.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// app.unregister_remote_actor("double@math").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn unregister_remote_actor(&self, alias: &str) -> Result<()> {
        self.bridge()?.unregister_remote(alias).await.map(|_| ())
    }

    /// Removes every proxy for actors of `network_id`; returns how many.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// let removed = app.unregister_all_from_network("math").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn unregister_all_from_network(&self, network_id: &str) -> Result<usize> {
        let bridge = self.bridge()?;
        let aliases = bridge.registry.lock().aliases_on(network_id);
        for alias in &aliases {
            bridge.unregister_remote(alias).await?;
        }
        Ok(aliases.len())
    }

    /// Every remote actor registered here.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// for (alias, info) in app.list_registered_remote_actors().await {
    ///     println!("{alias}: {} on {}", info.actor_id, info.network_id);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_registered_remote_actors(&self) -> Vec<(String, RemoteActorInfo)> {
        self.bridge
            .as_ref()
            .map(|b| b.registry.lock().list())
            .unwrap_or_default()
            .into_iter()
            .map(|info| (info.alias.clone(), info))
            .collect()
    }

    /// Sends `message` into `actor`'s `port` on `network_id` and waits until that network
    /// has *handled* it: the actor's handler returned, and everything it emitted while
    /// handling it was handled in turn (by local actors, and by the networks its outputs
    /// were streamed to).
    ///
    /// # Errors
    ///
    /// `Network not connected` before [`DistributedNetwork::connect_to_network`],
    /// `Network disconnected` when no instance answers, `Actor not found`, `Port not
    /// found`, `Timeout`, or `Payload too large` naming both sizes.
    ///
    /// `Timeout` means the outcome is unknown: the message may still be handled. To send
    /// it again safely, use [`DistributedNetwork::send_to_remote_actor_with_id`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// app.send_to_remote_actor("math", "double", "in", Message::Integer(21)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send_to_remote_actor(
        &self,
        network_id: &str,
        actor: &str,
        port: &str,
        message: Message,
    ) -> Result<()> {
        self.send_to_remote_actor_reporting(network_id, actor, port, message, None)
            .await
            .map(|_| ())
    }

    /// As [`DistributedNetwork::send_to_remote_actor`], with an id that makes retries
    /// safe: send again with the same `id` after a `Timeout` (or any error that leaves
    /// the outcome unknown), and the message is handled at most once. A retry of a send
    /// still being handled waits for its outcome; a retry of one already handled gets
    /// the answer the first got.
    ///
    /// Every try of an id goes to the same live instance of the network, chosen from the
    /// id, which remembers ids (per calling network and target) for five minutes, at most
    /// 65,536 of them. Only if that instance dies can a retry reach another, which
    /// handles it again. Choose ids unique per message (an order number, a UUID).
    ///
    /// ```no_run
    /// # async fn demo(net: &reflow_network::distributed_network::DistributedNetwork) -> reflow_network::Result<()> {
    /// use reflow_network::{ErrorKind, Message};
    /// let id = "order-1842";
    /// loop {
    ///     match net.send_to_remote_actor_with_id("billing", "charge", "in", Message::Integer(42), id).await {
    ///         Err(err) if err.kind() == ErrorKind::Timeout => continue, // unknown: try again
    ///         other => break other,
    ///     }
    /// }
    /// # }
    /// ```
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// // A retry with the same id is not handled twice.
    /// app.send_to_remote_actor_with_id("billing", "charge", "in", Message::Integer(100), "order-42")
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send_to_remote_actor_with_id(
        &self,
        network_id: &str,
        actor: &str,
        port: &str,
        message: Message,
        id: &str,
    ) -> Result<()> {
        self.send_to_remote_actor_reporting(network_id, actor, port, message, Some(id))
            .await
            .map(|_| ())
    }

    /// Counters of the bridge's traffic.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use reflow_network::prelude::*;
    /// # async fn example(mut app: DistributedNetwork) -> Result<()> {
    /// let stats = app.stats();
    /// println!("{} out, {} in, {} unacknowledged", stats.messages_out, stats.messages_in, stats.unacknowledged);
    /// # Ok(())
    /// # }
    /// ```
    pub fn stats(&self) -> BridgeStats {
        self.bridge.as_ref().map(|b| b.stats()).unwrap_or_default()
    }

    /// Whether the broker connection is up.
    pub fn is_broker_connected(&self) -> bool {
        self.bridge.as_ref().is_some_and(|b| b.broker.is_up())
    }
}

impl Drop for DistributedNetwork {
    fn drop(&mut self) {
        if self.phase == Phase::Running {
            tracing::debug!(network = %self.config.network_id, "dropped without shutdown(); stopping abruptly");
        }
    }
}
