//! How messages find their way between nodes, and how the network knows when it is idle.
//!
//! Every node owns a bounded inbox. The routing table maps each `(node, out-port)` to the
//! inboxes its connections lead to; it is shared by every running node and swapped under
//! a short read lock, so connections can change while the graph runs.
//!
//! The network counts messages in flight: one more when a message enters an inbox, one
//! less when its handler returns. Because a handler's own emits are counted before it
//! returns, the count reaches zero only when the whole graph is idle, which is what a
//! graceful shutdown waits for.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::RwLock;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cause::Trace;
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;

/// One message on its way into a node's in-port.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) port: Arc<str>,
    pub(crate) message: Message,
    /// Where it came from, and whose acknowledgement waits for it to be handled.
    pub(crate) trace: Trace,
}

/// The far end of a connection.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) node: Arc<str>,
    pub(crate) port: Arc<str>,
    pub(crate) inbox: mpsc::Sender<Delivery>,
}

/// What the routing table knows of a node.
pub(crate) struct NodeEntry {
    pub(crate) inports: Vec<String>,
    pub(crate) outports: Vec<String>,
    pub(crate) inbox: mpsc::Sender<Delivery>,
    /// Out-port name to the connections leaving it.
    pub(crate) routes: HashMap<String, Arc<[Target]>>,
    /// Stops this node alone (a child of the network's halt token).
    pub(crate) halt: CancellationToken,
}

/// State shared by the network, its running nodes and every outlet and inlet.
pub(crate) struct Shared {
    pub(crate) nodes: RwLock<HashMap<String, NodeEntry>>,
    in_flight: AtomicUsize,
    idle: Notify,
    pub(crate) accepting: AtomicBool,
    /// Fired at the start of shutdown: sources should stop producing.
    pub(crate) stopping: CancellationToken,
    /// Fired at the end of shutdown: every node task stops.
    pub(crate) halt: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) handler_errors: AtomicUsize,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Shared {
            nodes: RwLock::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            accepting: AtomicBool::new(true),
            stopping: CancellationToken::new(),
            halt: CancellationToken::new(),
            tracker: TaskTracker::new(),
            handler_errors: AtomicUsize::new(0),
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Puts one message into a target's inbox, waiting while it is full.
    pub(crate) async fn deliver(
        &self,
        target: &Target,
        message: Message,
        trace: Trace,
    ) -> Result<()> {
        // Reserve first, count second: a send cancelled while waiting for room leaves
        // neither a message nor a count behind.
        let permit = target.inbox.reserve().await.map_err(|_| {
            Error::new(
                ErrorKind::ActorNotAvailable,
                format!("node {:?} has stopped", &*target.node),
            )
        })?;
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        permit.send(Delivery {
            port: target.port.clone(),
            message,
            trace,
        });
        Ok(())
    }

    /// Marks one delivered message as fully handled.
    pub(crate) fn handled_one(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until no message is in flight anywhere in the graph.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn target(&self, node: &str, port: &str) -> Result<Target> {
        let nodes = self.nodes.read();
        let entry = nodes.get(node).ok_or_else(|| unknown_node(node))?;
        if !entry.inports.iter().any(|p| p == port) {
            return Err(unknown_port(node, "in-port", port, &entry.inports));
        }
        Ok(Target {
            node: Arc::from(node),
            port: Arc::from(port),
            inbox: entry.inbox.clone(),
        })
    }

    fn routes_from(&self, node: &str, port: &str) -> Result<Option<Arc<[Target]>>> {
        let nodes = self.nodes.read();
        let entry = nodes.get(node).ok_or_else(|| unknown_node(node))?;
        match entry.routes.get(port) {
            Some(targets) => Ok(Some(targets.clone())),
            None if entry.outports.iter().any(|p| p == port) => Ok(None),
            None => Err(unknown_port(node, "out-port", port, &entry.outports)),
        }
    }
}

pub(crate) fn unknown_node(node: &str) -> Error {
    Error::new(
        ErrorKind::ActorNotFound,
        format!("no node {node:?} in this network"),
    )
}

pub(crate) fn unknown_port(node: &str, kind: &str, port: &str, known: &[String]) -> Error {
    Error::new(
        ErrorKind::PortNotFound,
        format!("node {node:?} has no {kind} {port:?} (it has {known:?})"),
    )
}

/// Emits on a node's out-ports from outside the node's handler.
///
/// Every actor's context holds one for its own node. The distributed bridge holds one
/// for each remote-actor proxy, so that the remote actor's outputs leave the proxy's
/// out-ports exactly as a local actor's would.
#[derive(Clone)]
pub struct Outlet {
    shared: Arc<Shared>,
    node: Arc<str>,
}

impl Outlet {
    pub(crate) fn new(shared: Arc<Shared>, node: Arc<str>) -> Self {
        Outlet { shared, node }
    }

    /// The node this outlet emits for.
    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// Sends `message` along every connection leaving `port`; see
    /// [`crate::actor::ActorContext::emit`].
    pub async fn emit(&self, port: &str, message: Message) -> Result<()> {
        self.emit_from(port, message, Trace::default()).await
    }

    pub(crate) async fn emit_from(&self, port: &str, message: Message, trace: Trace) -> Result<()> {
        let targets = match self.shared.routes_from(&self.node, port) {
            Ok(Some(targets)) => targets,
            // An out-port with no connection drops what it is given: that is its
            // handling. An undeclared one is the actor's error, refused for good.
            Ok(None) => {
                trace.handled();
                return Ok(());
            }
            Err(err) => {
                trace.handled();
                return Err(err);
            }
        };
        if let Some((last, rest)) = targets.split_last() {
            for target in rest {
                self.shared
                    .deliver(target, message.clone(), trace.clone())
                    .await?;
            }
            self.shared.deliver(last, message, trace).await?;
        }
        Ok(())
    }
}

/// Sends into one node's in-port from outside the graph.
///
/// Cheap to clone; holds the inbox, so repeated sends skip the lookup.
#[derive(Clone)]
pub struct Inlet {
    shared: Arc<Shared>,
    target: Target,
}

impl std::fmt::Debug for Inlet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Inlet({}.{})", self.target.node, self.target.port)
    }
}

impl std::fmt::Debug for Outlet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Outlet({})", self.node)
    }
}

impl Inlet {
    pub(crate) fn new(shared: Arc<Shared>, node: &str, port: &str) -> Result<Self> {
        let target = shared.target(node, port)?;
        Ok(Inlet { shared, target })
    }

    /// The node this inlet sends into.
    pub fn node_id(&self) -> &str {
        &self.target.node
    }

    /// The in-port this inlet sends into.
    pub fn port(&self) -> &str {
        &self.target.port
    }

    /// Sends one message, waiting while the node's inbox is full. Fails once the network
    /// has begun to shut down.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if cancelled while waiting, the message was not delivered.
    pub async fn send(&self, message: Message) -> Result<()> {
        self.send_from(message, Trace::default()).await
    }

    /// Sends one message that came from another network, remembering where its outputs
    /// go back and whose acknowledgement waits for it.
    pub(crate) async fn send_from(&self, message: Message, trace: Trace) -> Result<()> {
        if !self.shared.accepting.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::Shutdown,
                format!(
                    "network is shutting down; not accepting messages for {:?}",
                    &*self.target.node
                ),
            ));
        }
        self.shared.deliver(&self.target, message, trace).await
    }
}
