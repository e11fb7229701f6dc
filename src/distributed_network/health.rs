//! What Reflow's guides call the health, registry and discovery-service calls, with their
//! meaning over NATS: the liveness roster answers "is it there", the bridge's peers and
//! send windows answer "how is my link to it", and the liveness entry plus the discovery
//! responder are what "registering with discovery" means.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::DistributedNetwork;
use crate::bridge::SubgraphMountConfig;
use crate::bridge::registry::RemoteActorInfo;
use crate::discovery::{ActorInfo, NetworkInfo, group_by_network};
use crate::error::{Error, ErrorKind, Result};
use crate::events::TransportKind;

/// The state of this network's link to one network it connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum LinkState {
    /// The network is live and reachable: what is sent to it is delivered.
    Connected,
    /// Connected, but no instance of it is live now: what is streamed to it waits in the
    /// send window until one is.
    Waiting,
    /// Neither the broker nor a direct link reaches it now: what is sent waits.
    Unreachable,
}

/// How this network's link to one connected network stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NetworkStatus {
    /// The road traffic to it takes now.
    pub transport: TransportKind,
    /// Whether what is sent to it is delivered now.
    pub state: LinkState,
    /// The last error a send to it met, if any.
    pub last_error: Option<String>,
    /// Envelopes streamed to it and not yet acknowledged as handled.
    pub unacknowledged: u64,
    /// Envelopes streamed to it again (a road changed, or no acknowledgement came in time).
    pub resent: u64,
}

/// This network's bridge as a whole: [`DistributedNetwork::get_bridge_status`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BridgeStatus {
    /// This network's id.
    pub network_id: String,
    /// This instance's id.
    pub instance_id: String,
    /// Whether the broker connection is up.
    pub broker_connected: bool,
    /// Each network this one connected to, and how its link stands.
    pub connected_networks: BTreeMap<String, NetworkStatus>,
    /// The bridge's counters.
    pub stats: crate::bridge::BridgeStats,
}

impl DistributedNetwork {
    /// What the liveness roster knows of network `network_id` now: its instances merged
    /// into one [`NetworkInfo`] (see [`DistributedNetwork::discover_networks`]), with
    /// `last_seen` the latest refresh of any of them. For a durable network, `durable`
    /// holds its backlog; one that is down is still found, with no instance
    /// (`instance_count` 0) and its backlog.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(app: reflow_network::prelude::DistributedNetwork) -> reflow_network::Result<()> {
    /// let info = app.get_network_info("math").await?;
    /// println!("{} at {}, healthy: {}", info.network_id, info.endpoint, info.is_healthy());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `Network disconnected` when no instance of it is live and it is not durable.
    pub async fn get_network_info(&self, network_id: &str) -> Result<NetworkInfo> {
        let instances = self.live_instances_of(network_id);
        let last_seen = instances.iter().filter_map(|i| i.last_seen).max();
        let backlog = match self.bridge.as_ref() {
            Some(bridge) if bridge.find_durable(network_id).await.is_some() => {
                bridge.backlog(network_id).await.ok()
            }
            _ => None,
        };
        let Some(mut merged) = group_by_network(instances).pop() else {
            // A durable network that is down still has its backlog.
            return match backlog {
                Some(backlog) => Ok(NetworkInfo {
                    network_id: network_id.to_string(),
                    durable: Some(backlog),
                    ..NetworkInfo::default()
                }),
                None => Err(Error::new(
                    ErrorKind::NetworkDisconnected,
                    format!("network {network_id:?} has no live instance"),
                )),
            };
        };
        merged.last_seen = last_seen;
        merged.durable = backlog;
        Ok(merged)
    }

    /// Mounts network `config.network_id` as a subgraph: every actor of it whose name
    /// matches one of `include_patterns` (every actor, when there are none) and none of
    /// `exclude_patterns` appears in the local graph as `{mount_point}/{actor}`, a
    /// proxy usable in `add_connection`, initial packets and (as a component)
    /// `add_node`, like any registered remote actor. The mount follows the network: an
    /// actor it adds appears within about a heartbeat, one it removes goes. Mount points
    /// nest as paths (`site/server`). Connects to the network first if need be; returns
    /// the local names mounted now.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(app: reflow_network::prelude::DistributedNetwork) -> reflow_network::Result<()> {
    /// use reflow_network::distributed_network::SubgraphMountConfig;
    /// use reflow_network::network::Connector;
    ///
    /// app.mount_network_as_subgraph(SubgraphMountConfig {
    ///     mount_point: "server".into(),
    ///     network_id: "server".into(),
    ///     include_patterns: vec!["data_*".into()],
    ///     exclude_patterns: vec!["*_internal".into()],
    /// })
    /// .await?;
    /// app.get_local_network()
    ///     .write()
    ///     .add_connection(Connector::new("source", "out", "server/data_processor", "in"))?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `Invalid name` for a mount point that is not names joined by `/`; `Name
    /// conflict` for one already mounted (or a local node of a mounted name); the errors
    /// of `connect_to_network` and of a control request.
    pub async fn mount_network_as_subgraph(
        &self,
        config: SubgraphMountConfig,
    ) -> Result<Vec<String>> {
        let names = self.bridge()?.mount(config.clone()).await?;
        Ok(names.iter().map(|actor| config.alias(actor)).collect())
    }

    /// Unmounts what is mounted at `mount_point`: its proxies leave the local graph and
    /// the mount stops following its network.
    ///
    /// # Errors
    ///
    /// `Actor not found` when nothing is mounted there.
    pub async fn unmount_subgraph(&self, mount_point: &str) -> Result<()> {
        self.bridge()?.unmount(mount_point).await
    }

    /// The mounts, each with the actors it holds now (their names on their network).
    pub fn mounted_subgraphs(&self) -> Vec<(SubgraphMountConfig, Vec<String>)> {
        self.bridge.as_ref().map(|b| b.mounts()).unwrap_or_default()
    }

    /// Whether some instance of `network_id` is live now, by the liveness roster.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(app: reflow_network::prelude::DistributedNetwork) {
    /// if !app.is_network_available("math").await {
    ///     eprintln!("math is down; what is streamed to it waits");
    /// }
    /// # }
    /// ```
    pub async fn is_network_available(&self, network_id: &str) -> bool {
        !self.live_instances_of(network_id).is_empty()
    }

    /// The live instances of `network_id`, read from its part of the roster alone.
    fn live_instances_of(&self, network_id: &str) -> Vec<NetworkInfo> {
        self.bridge
            .as_ref()
            .map(|b| b.live_instances_of(network_id))
            .unwrap_or_default()
    }

    /// Connects to `endpoint` (a network id, or `host:port` of a direct link) afresh:
    /// disconnects first if connected, then connects, which also asks its actors to
    /// return outputs here again.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(app: reflow_network::prelude::DistributedNetwork) -> reflow_network::Result<()> {
    /// app.reconnect_to_network("math").await?;
    /// # Ok(()) }
    /// ```
    pub async fn reconnect_to_network(&self, endpoint: &str) -> Result<()> {
        if self.is_network_connected(endpoint).await {
            self.disconnect_from_network(endpoint).await?;
        }
        self.connect_to(endpoint).await
    }

    /// The same as [`DistributedNetwork::is_network_connected`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(app: reflow_network::prelude::DistributedNetwork) {
    /// assert_eq!(app.is_connected_to("math").await, app.is_network_connected("math").await);
    /// # }
    /// ```
    pub async fn is_connected_to(&self, network_id: &str) -> bool {
        self.is_network_connected(network_id).await
    }

    /// Every actor of every network this one is connected to, as `(actor, network)`
    /// pairs, asked of each network now.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(app: reflow_network::prelude::DistributedNetwork) -> reflow_network::Result<()> {
    /// for (actor, network) in app.list_remote_actors().await? {
    ///     println!("{actor}@{network}");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The first network that does not answer, as
    /// [`DistributedNetwork::discover_actors_on_network`] fails.
    pub async fn list_remote_actors(&self) -> Result<Vec<(String, String)>> {
        let mut pairs = Vec::new();
        for network in self.get_connected_networks().await {
            for actor in self.discover_actors_on_network(&network).await? {
                pairs.push((actor.id, network.clone()));
            }
        }
        Ok(pairs)
    }

    /// The same as [`DistributedNetwork::discover_actors_on_network`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(app: reflow_network::prelude::DistributedNetwork) -> reflow_network::Result<()> {
    /// for actor in app.list_actors_on_network("math").await? {
    ///     println!("{} ({})", actor.name, actor.component_type);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_actors_on_network(&self, network_id: &str) -> Result<Vec<ActorInfo>> {
        self.discover_actors_on_network(network_id).await
    }

    /// Resolves the remote actor behind proxy `alias` again: asks its network for the
    /// actor's ports (and to return its outputs here, as at registration), and when they
    /// changed, makes the proxy anew with the new ports, keeping every connection whose
    /// port still exists. Returns the registration as it is now.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(app: reflow_network::prelude::DistributedNetwork) -> reflow_network::Result<()> {
    /// let info = app.refresh_remote_actor("double@math").await?;
    /// println!("in-ports now {:?}", info.inports);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `Actor not found` when no proxy is registered as `alias`, or its network no longer
    /// has the actor; the errors of a control request when the network does not answer.
    pub async fn refresh_remote_actor(&self, alias: &str) -> Result<RemoteActorInfo> {
        self.bridge()?.refresh_remote(alias).await
    }

    /// Whether `id` is an actor of this network's own: a node that is not a remote-actor
    /// proxy or hidden.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn example(app: reflow_network::prelude::DistributedNetwork) {
    /// assert!(app.has_local_actor("double"));
    /// assert!(!app.has_local_actor("double@math"));
    /// # }
    /// ```
    pub fn has_local_actor(&self, id: &str) -> bool {
        self.get_local_actor_type(id).is_some()
    }

    /// The component the local actor `id` was made from (for a registered actor, its
    /// own id); `None` when there is no such local actor.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn example(app: reflow_network::prelude::DistributedNetwork) {
    /// assert_eq!(app.get_local_actor_type("tally").as_deref(), Some("counter"));
    /// # }
    /// ```
    pub fn get_local_actor_type(&self, id: &str) -> Option<String> {
        let is_proxy = self
            .bridge
            .as_ref()
            .is_some_and(|b| b.registry.lock().contains(id));
        if is_proxy || id.starts_with('_') {
            return None;
        }
        let local = self.local.read();
        local
            .has_actor(id)
            .then(|| local.node(id).map(|node| node.component.clone()))
            .flatten()
    }

    /// The bridge's state: the broker connection, each connected network's link (road,
    /// state, last error, unacknowledged and resent envelopes), and the counters.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(app: reflow_network::prelude::DistributedNetwork) -> reflow_network::Result<()> {
    /// let status = app.get_bridge_status().await?;
    /// for (network, link) in &status.connected_networks {
    ///     println!("{network}: {:?} over {:?}, {} unacknowledged", link.state, link.transport, link.unacknowledged);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `Shutdown` before `start()` or after `shutdown()`.
    pub async fn get_bridge_status(&self) -> Result<BridgeStatus> {
        let bridge = self.bridge()?;
        let broker_connected = self.is_broker_connected();
        let mut connected_networks = BTreeMap::new();
        for network in self.get_connected_networks().await {
            let (transport, direct) = bridge.current_road(&network);
            let state = if !broker_connected && !direct {
                LinkState::Unreachable
            } else if direct || !bridge.live_instances_of(&network).is_empty() {
                LinkState::Connected
            } else {
                LinkState::Waiting
            };
            let (unacknowledged, resent) = bridge.window_counts(&network);
            connected_networks.insert(
                network.clone(),
                NetworkStatus {
                    transport,
                    state,
                    last_error: bridge.last_error(&network),
                    unacknowledged,
                    resent,
                },
            );
        }
        Ok(BridgeStatus {
            network_id: self.config.network_id.clone(),
            instance_id: self.config.instance_id.clone(),
            broker_connected,
            connected_networks,
            stats: bridge.stats(),
        })
    }

    /// Registers this instance with discovery again, over NATS: writes its liveness
    /// entry now, beats from then on, and answers discovery. `start()` does this; call it
    /// after [`DistributedNetwork::unregister_from_discovery`] or
    /// [`DistributedNetwork::stop_discovery_refresh`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(app: reflow_network::prelude::DistributedNetwork) -> reflow_network::Result<()> {
    /// app.unregister_from_discovery().await?; // out of sight for maintenance
    /// app.register_with_discovery().await?;   // back
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `Shutdown` when not running; the liveness bucket's errors when it cannot be written.
    pub async fn register_with_discovery(&self) -> Result<()> {
        self.bridge()?.rejoin_liveness().await
    }

    /// Withdraws this instance from discovery while it goes on running: deletes its
    /// liveness entry (every other process sees it leave), stops its heartbeat, and stops
    /// answering discovery. Traffic already addressed to it is still served.
    ///
    /// # Errors
    ///
    /// `Shutdown` when not running.
    pub async fn unregister_from_discovery(&self) -> Result<()> {
        self.bridge()?.hub.withdraw().await;
        Ok(())
    }

    /// How long the discovery service takes to answer: the round trip of one request on
    /// `_reflow.discover` to its first reply (this process's own responder answers too).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(app: reflow_network::prelude::DistributedNetwork) -> reflow_network::Result<()> {
    /// println!("discovery answers in {:?}", app.ping_discovery_service().await?);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `Timeout` when nothing answers within the request timeout; `Shutdown` when not
    /// running.
    pub async fn ping_discovery_service(&self) -> Result<Duration> {
        let bridge = self.bridge()?;
        let began = Instant::now();
        let asked = bridge.client.request(
            crate::subject::DISCOVER_SUBJECT,
            bytes::Bytes::from_static(b"{}"),
        );
        match tokio::time::timeout(bridge.request_timeout, asked).await {
            Ok(Ok(_)) => Ok(began.elapsed()),
            Ok(Err(err)) => Err(Error::with_source(
                ErrorKind::Timeout,
                "the discovery service did not answer",
                err,
            )),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "the discovery service did not answer within {:?}",
                    bridge.request_timeout
                ),
            )),
        }
    }

    /// Stops refreshing this instance's liveness entry: it expires after its TTL (about
    /// three heartbeats), and other processes then see this instance as down, while it
    /// goes on running and answering discovery.
    ///
    /// # Errors
    ///
    /// `Shutdown` when not running.
    pub async fn stop_discovery_refresh(&self) -> Result<()> {
        self.bridge()?.hub.stop_refreshing().await;
        Ok(())
    }
}
