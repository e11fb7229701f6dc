//! The local network: a graph of actors in one process.
//!
//! A [`Network`] knows its components (actor templates registered by name), its nodes
//! (instances of components, each with an id and metadata), and the connections between
//! their ports. Each node runs as its own tokio task with a bounded inbox of
//! [`NetworkConfig::inbox_capacity`] messages; a full inbox makes its producers wait.
//!
//! This module knows nothing of NATS: the distributed layer builds on it, never the other
//! way round.
//!
//! ```
//! use reflow_network::actor::{FnActor, ProbeActor};
//! use reflow_network::network::{Connector, InitialPacket, Network, NetworkConfig};
//! use reflow_network::Message;
//!
//! # #[tokio::main] async fn main() -> reflow_network::Result<()> {
//! let mut net = Network::new(NetworkConfig::default());
//! net.register_actor("double", FnActor::map("in", "out", |m| {
//!     Message::Integer(m.as_integer().unwrap_or(0) * 2)
//! }))?;
//! let (probe, mut seen) = ProbeActor::channel(16);
//! net.register_actor("probe", probe)?;
//! net.add_node("d", "double", None)?;
//! net.add_node("p", "probe", None)?;
//! net.add_connection(Connector::new("d", "out", "p", "in"))?;
//! net.add_initial(InitialPacket::new("d", "in", Message::Integer(21)))?;
//! net.start()?;
//! assert_eq!(seen.recv().await.unwrap().message, Message::Integer(42));
//! net.shutdown().await;
//! # Ok(()) }
//! ```

mod cause;
mod graph;
mod node;
mod routing;

pub(crate) use cause::{Cause, Causes, Outcome, Trace};
pub use graph::{ConnectionPoint, Connector, InitialPacket};
pub use routing::{Inlet, Outlet};

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::actor::{Actor, ActorContext, Metadata};
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::subject::validate_name;
use routing::{Delivery, NodeEntry, Shared, Target, unknown_node, unknown_port};

/// Settings of the local network, and of how the bridge buffers and encodes its traffic.
///
/// A key it does not know is refused when it is read (a misspelt setting would otherwise
/// fall back to its default unnoticed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Bytes streamed to one peer network that may wait for its acknowledgement: the
    /// bridge keeps them to send again (after a loss, or on a switch between the broker
    /// and a direct link), and a sender waits while this much is unacknowledged, so a
    /// slow receiver slows its senders instead of filling its client's buffer. Keep it
    /// well above 256 KiB (what a receiver acknowledges at once) for full speed.
    pub max_buffer_size: usize,
    /// Compress envelopes larger than [`NetworkConfig::compression_threshold`] with LZ4.
    pub enable_compression: bool,
    /// Envelopes above this many bytes are compressed when compression is on.
    pub compression_threshold: usize,
    /// Messages each node's inbox holds before its producers wait.
    pub inbox_capacity: usize,
    /// How long a graceful shutdown waits for in-flight messages before stopping anyway.
    pub drain_timeout_ms: u64,
    /// How long a confirmed send or a control request waits for its answer.
    pub request_timeout_ms: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            max_buffer_size: 8 * 1024 * 1024,
            enable_compression: false,
            compression_threshold: 1024,
            inbox_capacity: 1024,
            drain_timeout_ms: 5_000,
            request_timeout_ms: 5_000,
        }
    }
}

impl NetworkConfig {
    /// Checks the values, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.inbox_capacity == 0 {
            return Err(Error::invalid_config(
                "local_network_config.inbox_capacity",
                "must be at least 1",
            ));
        }
        if self.max_buffer_size == 0 {
            return Err(Error::invalid_config(
                "local_network_config.max_buffer_size",
                "must be at least 1 byte",
            ));
        }
        if self.request_timeout_ms == 0 {
            return Err(Error::invalid_config(
                "local_network_config.request_timeout_ms",
                "must be at least 1 ms",
            ));
        }
        Ok(())
    }
}

/// What a network knows of one of its nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id.
    pub id: String,
    /// The component it was made from.
    pub component: String,
    /// Its in-ports.
    pub inports: Vec<String>,
    /// Its out-ports.
    pub outports: Vec<String>,
    /// The actor's own description.
    pub description: String,
    /// The metadata it was added with.
    pub metadata: Metadata,
}

type Factory = Arc<dyn Fn() -> Box<dyn Actor> + Send + Sync>;

/// A node added but not started yet: its actor and the receiving end of its inbox.
struct Pending {
    // Actors need only be Send; the mutex makes the network shareable across threads.
    actor: parking_lot::Mutex<Box<dyn Actor>>,
    inbox: mpsc::Receiver<Delivery>,
}

/// A graph of actors in one process.
pub struct Network {
    config: NetworkConfig,
    components: HashMap<String, Factory>,
    infos: HashMap<String, NodeInfo>,
    pending: HashMap<String, Pending>,
    connections: Vec<Connector>,
    initials: Vec<InitialPacket>,
    /// Nodes the bridge added for its own plumbing; listings leave them out.
    hidden: HashSet<String>,
    shared: Arc<Shared>,
    running: bool,
    /// Nodes added now wait for [`Network::release`] rather than starting at once.
    holding: bool,
}

impl Network {
    /// An empty network.
    ///
    /// # Examples
    ///
    /// ```
    /// # use reflow_network::prelude::*;
    /// # use reflow_network::network::{InitialPacket, NetworkConfig};
    /// # #[tokio::main]
    /// # async fn main() -> Result<()> {
    /// let mut net = Network::new(NetworkConfig::default());
    /// let (probe, mut seen) = ProbeActor::channel(16);
    /// net.register_actor("print", probe)?;
    /// net.add_node("print", "print", None)?;
    /// net.start()?;
    /// net.send_to_actor("print", "in", Message::Integer(1)).await?;
    /// assert_eq!(seen.recv().await.unwrap().message, Message::Integer(1));
    /// net.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(config: NetworkConfig) -> Self {
        Network {
            config,
            components: HashMap::new(),
            infos: HashMap::new(),
            pending: HashMap::new(),
            connections: Vec::new(),
            initials: Vec::new(),
            hidden: HashSet::new(),
            shared: Arc::new(Shared::new()),
            running: false,
            holding: false,
        }
    }

    /// The network's configuration.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// Registers `actor` as the template of component `name`; each node made from it gets
    /// a clone.
    ///
    /// # Examples
    ///
    /// ```
    /// # use reflow_network::prelude::*;
    /// # use reflow_network::network::{InitialPacket, NetworkConfig};
    /// # #[tokio::main]
    /// # async fn main() -> Result<()> {
    /// # let mut net = Network::new(NetworkConfig::default());
    /// # let (probe, mut seen) = ProbeActor::channel(16);
    /// # net.register_actor("print", probe)?;
    /// # net.add_node("print", "print", None)?;
    /// let double = FnActor::map("in", "out", |m| Message::Integer(m.as_integer().unwrap_or(0) * 2));
    /// net.register_actor("double", double)?;
    /// net.add_node("d1", "double", None)?; // each node gets a fresh clone
    /// net.add_node("d2", "double", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn register_actor<A: Actor + Clone>(&mut self, name: &str, actor: A) -> Result<()> {
        // Actors need only be Send; the mutex makes the template shareable.
        let template = parking_lot::Mutex::new(actor);
        self.register_factory(name, move || Box::new(template.lock().clone()))
    }

    /// Registers a component whose nodes are made by `factory`.
    pub fn register_factory<F>(&mut self, name: &str, factory: F) -> Result<()>
    where
        F: Fn() -> Box<dyn Actor> + Send + Sync + 'static,
    {
        if name.trim().is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidName,
                format!("component name {name:?} is empty"),
            ));
        }
        self.components.insert(name.to_string(), Arc::new(factory));
        Ok(())
    }

    /// Forgets the component `name`; nodes already made from it stay.
    pub(crate) fn remove_component(&mut self, name: &str) {
        self.components.remove(name);
    }

    /// Whether a component of that name is registered.
    pub fn has_component(&self, name: &str) -> bool {
        self.components.contains_key(name)
    }

    /// The names of the registered components, sorted.
    pub fn components(&self) -> Vec<String> {
        let mut names: Vec<_> = self.components.keys().cloned().collect();
        names.sort();
        names
    }

    /// Adds node `id`, made from `component`. If the network runs, the node starts at once.
    ///
    /// # Examples
    ///
    /// ```
    /// # use reflow_network::prelude::*;
    /// # use reflow_network::network::{InitialPacket, NetworkConfig};
    /// # #[tokio::main]
    /// # async fn main() -> Result<()> {
    /// # let mut net = Network::new(NetworkConfig::default());
    /// # let (probe, mut seen) = ProbeActor::channel(16);
    /// # net.register_actor("print", probe)?;
    /// # net.add_node("print", "print", None)?;
    /// # net.register_actor("double", FnActor::map("in", "out", |m| Message::Integer(m.as_integer().unwrap_or(0) * 2)))?;
    /// let metadata = [("description".to_string(), serde_json::json!("doubles integers"))].into();
    /// net.add_node("twice", "double", Some(metadata))?;
    /// assert!(net.has_actor("twice"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn add_node(
        &mut self,
        id: &str,
        component: &str,
        metadata: Option<Metadata>,
    ) -> Result<()> {
        validate_name("actor", id)?;
        let factory = self.components.get(component).ok_or_else(|| {
            Error::new(
                ErrorKind::ActorNotFound,
                format!(
                    "no component {component:?} is registered (known: {:?})",
                    self.components()
                ),
            )
        })?;
        let actor = factory();
        self.insert_node(id, component, actor, metadata.unwrap_or_default(), false)
    }

    /// Adds a node the bridge makes itself: a remote-actor proxy (whose id, `actor@network`,
    /// may hold the dots of a network id) or a hidden node that no listing shows.
    pub(crate) fn add_bridge_node(
        &mut self,
        id: &str,
        component: &str,
        actor: Box<dyn Actor>,
        metadata: Metadata,
        hidden: bool,
    ) -> Result<()> {
        if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::new(
                ErrorKind::InvalidName,
                format!("node id {id:?} is empty or holds whitespace"),
            ));
        }
        self.insert_node(id, component, actor, metadata, hidden)
    }

    fn insert_node(
        &mut self,
        id: &str,
        component: &str,
        actor: Box<dyn Actor>,
        metadata: Metadata,
        hidden: bool,
    ) -> Result<()> {
        if self.infos.contains_key(id) {
            return Err(Error::new(
                ErrorKind::NameConflict,
                format!("a node {id:?} already exists in this network"),
            ));
        }
        let info = NodeInfo {
            id: id.to_string(),
            component: component.to_string(),
            inports: actor.inports(),
            outports: actor.outports(),
            description: actor.description(),
            metadata,
        };
        let (sender, inbox) = mpsc::channel(self.config.inbox_capacity.max(1));
        self.shared.nodes.write().insert(
            id.to_string(),
            NodeEntry {
                inports: info.inports.clone(),
                outports: info.outports.clone(),
                inbox: sender,
                routes: HashMap::new(),
                halt: self.shared.halt.child_token(),
            },
        );
        if hidden {
            self.hidden.insert(id.to_string());
        }
        self.infos.insert(id.to_string(), info);
        self.pending.insert(
            id.to_string(),
            Pending {
                actor: parking_lot::Mutex::new(actor),
                inbox,
            },
        );
        if self.running && !self.holding {
            self.spawn_pending()?;
        }
        Ok(())
    }

    /// Holds the nodes added from now on: on a running network they start at
    /// [`release`](Self::release) rather than at once. A running graph can so gain nodes
    /// together with their connections, and a source among them emits nothing before
    /// the connections it emits into are in place.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> reflow_network::Result<()> {
    /// use reflow_network::network::{Connector, Network, NetworkConfig};
    ///
    /// let mut network = Network::new(NetworkConfig::default());
    /// reflow_network::components::register_builtins(&mut network)?;
    /// network.add_node("sink", "sink", None)?;
    /// network.start()?;
    /// network.hold();
    /// network.add_node("numbers", "generator", None)?; // does not run yet
    /// network.add_connection(Connector::new("numbers", "out", "sink", "in"))?;
    /// network.release()?; // now it runs, and its first number reaches the sink
    /// # network.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Examples
    ///
    /// ```
    /// # use reflow_network::prelude::*;
    /// # use reflow_network::network::{InitialPacket, NetworkConfig};
    /// # #[tokio::main]
    /// # async fn main() -> Result<()> {
    /// # let mut net = Network::new(NetworkConfig::default());
    /// # let (probe, mut seen) = ProbeActor::channel(16);
    /// # net.register_actor("print", probe)?;
    /// # net.add_node("print", "print", None)?;
    /// # net.register_actor("double", FnActor::map("in", "out", |m| Message::Integer(m.as_integer().unwrap_or(0) * 2)))?;
    /// net.start()?;
    /// net.hold(); // what is added now starts together, at release()
    /// net.add_node("twice", "double", None)?;
    /// net.add_connection(Connector::new("twice", "out", "print", "in"))?;
    /// net.release()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn hold(&mut self) {
        self.holding = true;
    }

    /// Starts the nodes added since [`hold`](Self::hold), if the network runs, and stops
    /// holding.
    pub fn release(&mut self) -> Result<()> {
        self.holding = false;
        if self.running {
            self.spawn_pending()?;
        }
        Ok(())
    }

    /// Removes node `id` and every connection to or from it; its task stops.
    pub fn remove_node(&mut self, id: &str) -> Result<()> {
        self.infos.remove(id).ok_or_else(|| unknown_node(id))?;
        self.pending.remove(id);
        self.hidden.remove(id);
        self.connections
            .retain(|c| c.from.actor != id && c.to.actor != id);
        let mut nodes = self.shared.nodes.write();
        if let Some(entry) = nodes.remove(id) {
            entry.halt.cancel();
        }
        for entry in nodes.values_mut() {
            for targets in entry.routes.values_mut() {
                if targets.iter().any(|t| &*t.node == id) {
                    *targets = targets.iter().filter(|t| &*t.node != id).cloned().collect();
                }
            }
        }
        Ok(())
    }

    /// Connects an out-port to an in-port. One out-port may feed many in-ports (each gets
    /// a copy) and one in-port may be fed by many out-ports.
    ///
    /// # Examples
    ///
    /// ```
    /// # use reflow_network::prelude::*;
    /// # use reflow_network::network::{InitialPacket, NetworkConfig};
    /// # #[tokio::main]
    /// # async fn main() -> Result<()> {
    /// # let mut net = Network::new(NetworkConfig::default());
    /// # let (probe, mut seen) = ProbeActor::channel(16);
    /// # net.register_actor("print", probe)?;
    /// # net.add_node("print", "print", None)?;
    /// # net.register_actor("double", FnActor::map("in", "out", |m| Message::Integer(m.as_integer().unwrap_or(0) * 2)))?;
    /// # net.add_node("twice", "double", None)?;
    /// net.add_connection(Connector::new("twice", "out", "print", "in"))?;
    /// net.start()?;
    /// net.send_to_actor("twice", "in", Message::Integer(4)).await?;
    /// assert_eq!(seen.recv().await.unwrap().message, Message::Integer(8));
    /// # Ok(())
    /// # }
    /// ```
    pub fn add_connection(&mut self, connector: Connector) -> Result<()> {
        let (from, to) = (&connector.from, &connector.to);
        let from_info = self
            .infos
            .get(&from.actor)
            .ok_or_else(|| unknown_node(&from.actor))?;
        if !from_info.outports.contains(&from.port) {
            return Err(unknown_port(
                &from.actor,
                "out-port",
                &from.port,
                &from_info.outports,
            ));
        }
        let to_info = self
            .infos
            .get(&to.actor)
            .ok_or_else(|| unknown_node(&to.actor))?;
        if !to_info.inports.contains(&to.port) {
            return Err(unknown_port(
                &to.actor,
                "in-port",
                &to.port,
                &to_info.inports,
            ));
        }
        let mut nodes = self.shared.nodes.write();
        let inbox = nodes[&to.actor].inbox.clone();
        let target = Target {
            node: Arc::from(to.actor.as_str()),
            port: Arc::from(to.port.as_str()),
            inbox,
        };
        let entry = nodes
            .get_mut(&from.actor)
            .expect("routing table matches node infos");
        let targets = entry
            .routes
            .entry(from.port.clone())
            .or_insert_with(|| Arc::from([]));
        *targets = targets.iter().cloned().chain([target]).collect();
        drop(nodes);
        self.connections.push(connector);
        Ok(())
    }

    /// Removes a connection added before; unknown connections are an error.
    pub fn remove_connection(&mut self, connector: &Connector) -> Result<()> {
        let (from, to) = (&connector.from, &connector.to);
        let before = self.connections.len();
        self.connections.retain(|c| {
            !(c.from.actor == from.actor
                && c.from.port == from.port
                && c.to.actor == to.actor
                && c.to.port == to.port)
        });
        if self.connections.len() == before {
            return Err(Error::new(
                ErrorKind::ActorNotFound,
                format!(
                    "no connection {}.{} -> {}.{}",
                    from.actor, from.port, to.actor, to.port
                ),
            ));
        }
        let mut nodes = self.shared.nodes.write();
        if let Some(targets) = nodes
            .get_mut(&from.actor)
            .and_then(|e| e.routes.get_mut(&from.port))
        {
            *targets = targets
                .iter()
                .filter(|t| !(*t.node == *to.actor && *t.port == *to.port))
                .cloned()
                .collect();
        }
        Ok(())
    }

    /// Delivers a message to a node's in-port when the network starts, or at once if it
    /// already runs.
    ///
    /// # Examples
    ///
    /// ```
    /// # use reflow_network::prelude::*;
    /// # use reflow_network::network::{InitialPacket, NetworkConfig};
    /// # #[tokio::main]
    /// # async fn main() -> Result<()> {
    /// # let mut net = Network::new(NetworkConfig::default());
    /// # let (probe, mut seen) = ProbeActor::channel(16);
    /// # net.register_actor("print", probe)?;
    /// # net.add_node("print", "print", None)?;
    /// net.add_initial(InitialPacket::new("print", "in", Message::from_json(serde_json::json!({"go": true}))))?;
    /// net.start()?; // delivered now
    /// assert_eq!(seen.recv().await.unwrap().message.to_json(), serde_json::json!({"go": true}));
    /// # Ok(())
    /// # }
    /// ```
    pub fn add_initial(&mut self, packet: InitialPacket) -> Result<()> {
        let inlet = self.inlet(&packet.to.actor, &packet.to.port)?;
        if self.running {
            let message = packet.to.initial_data.unwrap_or(Message::Flow);
            let sent = inlet.clone();
            self.shared.tracker.spawn(async move {
                if let Err(err) = sent.send(message).await {
                    tracing::warn!(node = %inlet.node_id(), error = %err, "initial packet not delivered");
                }
            });
        } else {
            self.initials.push(packet);
        }
        Ok(())
    }

    /// Starts every node. Must be called inside a tokio runtime.
    pub fn start(&mut self) -> Result<()> {
        if self.running {
            return Ok(());
        }
        if self.shared.halt.is_cancelled() {
            return Err(Error::new(
                ErrorKind::Shutdown,
                "this network was shut down; make a new one",
            ));
        }
        tokio::runtime::Handle::try_current().map_err(|_| {
            Error::new(
                ErrorKind::Shutdown,
                "Network::start must be called inside a tokio runtime",
            )
        })?;
        self.running = true;
        self.spawn_pending()?;
        for packet in std::mem::take(&mut self.initials) {
            self.add_initial(packet)?;
        }
        Ok(())
    }

    fn spawn_pending(&mut self) -> Result<()> {
        for (id, pending) in self.pending.drain() {
            let info = &self.infos[&id];
            let node: Arc<str> = Arc::from(id.as_str());
            let halt = self.shared.nodes.read()[&id].halt.clone();
            let ctx = ActorContext::new(
                node.clone(),
                Arc::new(info.metadata.clone()),
                Outlet::new(self.shared.clone(), node),
                self.shared.stopping.clone(),
            );
            self.shared.tracker.spawn(node::run(
                pending.actor.into_inner(),
                ctx,
                pending.inbox,
                halt,
                self.shared.clone(),
            ));
        }
        Ok(())
    }

    /// Whether [`Network::start`] has run and shutdown has not.
    pub fn is_running(&self) -> bool {
        self.running && !self.shared.halt.is_cancelled()
    }

    /// Whether a node of that id exists.
    pub fn has_actor(&self, id: &str) -> bool {
        self.infos.contains_key(id) && !self.hidden.contains(id)
    }

    /// The ids of every node, sorted.
    pub fn actors(&self) -> Vec<String> {
        let mut ids: Vec<_> = self
            .infos
            .keys()
            .filter(|id| !self.hidden.contains(*id))
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// What the network knows of every node, sorted by id.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut nodes: Vec<_> = self
            .infos
            .values()
            .filter(|info| !self.hidden.contains(&info.id))
            .cloned()
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes
    }

    /// What the network knows of one node.
    pub fn node(&self, id: &str) -> Option<&NodeInfo> {
        self.infos.get(id)
    }

    /// Every connection, in the order added.
    pub fn connections(&self) -> &[Connector] {
        &self.connections
    }

    /// A handle that sends into `node`'s `port` from outside the graph.
    ///
    /// # Examples
    ///
    /// ```
    /// # use reflow_network::prelude::*;
    /// # use reflow_network::network::{InitialPacket, NetworkConfig};
    /// # #[tokio::main]
    /// # async fn main() -> Result<()> {
    /// # let mut net = Network::new(NetworkConfig::default());
    /// # let (probe, mut seen) = ProbeActor::channel(16);
    /// # net.register_actor("print", probe)?;
    /// # net.add_node("print", "print", None)?;
    /// net.start()?;
    /// let input = net.inlet("print", "in")?; // keeps no borrow of the network
    /// input.send(Message::from("hello")).await?;
    /// assert_eq!(seen.recv().await.unwrap().message, Message::from("hello"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn inlet(&self, node: &str, port: &str) -> Result<Inlet> {
        Inlet::new(self.shared.clone(), node, port)
    }

    /// A handle that emits on `node`'s out-ports from outside the node.
    pub fn outlet(&self, node: &str) -> Result<Outlet> {
        if !self.infos.contains_key(node) {
            return Err(unknown_node(node));
        }
        Ok(Outlet::new(self.shared.clone(), Arc::from(node)))
    }

    /// Sends `message` into `node`'s `port`, waiting while its inbox is full.
    ///
    /// The returned future does not borrow the network, so a caller holding the network
    /// behind a lock can release the lock before awaiting:
    /// `let sent = net.read().send_to_actor("a", "in", m); sent.await?;`
    ///
    /// # Examples
    ///
    /// ```
    /// # use reflow_network::prelude::*;
    /// # use reflow_network::network::{InitialPacket, NetworkConfig};
    /// # #[tokio::main]
    /// # async fn main() -> Result<()> {
    /// # let mut net = Network::new(NetworkConfig::default());
    /// # let (probe, mut seen) = ProbeActor::channel(16);
    /// # net.register_actor("print", probe)?;
    /// # net.add_node("print", "print", None)?;
    /// net.start()?;
    /// net.send_to_actor("print", "in", Message::Boolean(true)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_to_actor(
        &self,
        node: &str,
        port: &str,
        message: Message,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let inlet = self.inlet(node, port);
        async move { inlet?.send(message).await }
    }

    /// Messages delivered to an inbox and not yet handled, across the graph.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// How many times a handler returned an error.
    pub fn handler_errors(&self) -> usize {
        self.shared.handler_errors.load(Ordering::Relaxed)
    }

    /// How many node tasks are alive.
    pub fn running_tasks(&self) -> usize {
        self.shared.tracker.len()
    }

    /// Shuts the network down gracefully: refuses new outside sends, asks sources to stop,
    /// waits until every message in flight has been handled (at most
    /// [`NetworkConfig::drain_timeout_ms`]), then stops every node task and waits for them.
    ///
    /// The returned future does not borrow the network (see [`Network::send_to_actor`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # use reflow_network::prelude::*;
    /// # use reflow_network::network::{InitialPacket, NetworkConfig};
    /// # #[tokio::main]
    /// # async fn main() -> Result<()> {
    /// # let mut net = Network::new(NetworkConfig::default());
    /// # let (probe, mut seen) = ProbeActor::channel(16);
    /// # net.register_actor("print", probe)?;
    /// # net.add_node("print", "print", None)?;
    /// net.start()?;
    /// net.shutdown().await; // drains what is in flight, then stops every node
    /// assert!(!net.is_running());
    /// # Ok(())
    /// # }
    /// ```
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        let drain = Duration::from_millis(self.config.drain_timeout_ms);
        async move {
            shared.accepting.store(false, Ordering::Release);
            shared.stopping.cancel();
            if tokio::time::timeout(drain, shared.wait_idle())
                .await
                .is_err()
            {
                tracing::warn!(
                    in_flight = shared.in_flight(),
                    "shutdown: messages still in flight after {drain:?}; stopping anyway"
                );
            }
            shared.halt.cancel();
            shared.tracker.close();
            shared.tracker.wait().await;
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Tasks must not outlive the network that owns them.
        self.shared.halt.cancel();
    }
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("nodes", &self.actors())
            .field("components", &self.components())
            .field("running", &self.is_running())
            .finish()
    }
}
