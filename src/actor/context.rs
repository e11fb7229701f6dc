//! What an actor sees of the world while it runs.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::error::Result;
use crate::message::Message;
use crate::network::Outlet;

/// A node's metadata: free-form JSON values set when the node is added. Discovery reads
/// `description` and `capabilities` from here; components read their settings from it.
pub type Metadata = HashMap<String, serde_json::Value>;

/// A running node's handle on its network: its id, its metadata, and its out-ports.
pub struct ActorContext {
    node: Arc<str>,
    metadata: Arc<Metadata>,
    outlet: Outlet,
    stopping: CancellationToken,
    /// Where the message being handled came from, when a remote proxy sent it: outputs
    /// emitted while handling it carry this along, so they find their way back to that
    /// proxy and no other.
    origin: Option<Arc<str>>,
    /// Whether more messages were already waiting when this one was handed over.
    more_queued: bool,
}

impl ActorContext {
    pub(crate) fn new(
        node: Arc<str>,
        metadata: Arc<Metadata>,
        outlet: Outlet,
        stopping: CancellationToken,
    ) -> Self {
        ActorContext {
            node,
            metadata,
            outlet,
            stopping,
            origin: None,
            more_queued: false,
        }
    }

    pub(crate) fn set_origin(&mut self, origin: Option<Arc<str>>) {
        self.origin = origin;
    }

    pub(crate) fn origin(&self) -> Option<&Arc<str>> {
        self.origin.as_ref()
    }

    pub(crate) fn set_more_queued(&mut self, more: bool) {
        self.more_queued = more;
    }

    /// Whether more messages were already waiting in this node's inbox when the one being
    /// handled was handed over: the next call to `handle` follows at once.
    ///
    /// An actor that writes in batches (to a database, a socket, another network) can
    /// hold a message while this is true and write what it holds when it is false, so
    /// it batches exactly as far as a backlog allows and adds no delay when there is
    /// none. Whatever it still holds when [`Actor::stop`](crate::actor::Actor::stop) is
    /// called is its own to write out.
    pub fn more_queued(&self) -> bool {
        self.more_queued
    }

    /// The id of the node this actor runs as.
    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// The node's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// One metadata value, if set.
    pub fn config(&self, key: &str) -> Option<&serde_json::Value> {
        self.metadata.get(key)
    }

    /// Sends `message` along every connection leaving `port`.
    ///
    /// Waits while a receiving node's inbox is full. An out-port with no connection
    /// drops the message, as in any flow-based graph; a port the actor did not declare is
    /// an error.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if cancelled while waiting, the message may have reached some of
    /// the port's connections and not others.
    pub async fn emit(&self, port: &str, message: Message) -> Result<()> {
        self.outlet
            .emit_from(port, message, self.origin.clone())
            .await
    }

    /// Completes when the network asks its sources to stop (the start of shutdown).
    /// A long-running `start` should return when this fires.
    pub fn stopping(&self) -> WaitForCancellationFuture<'_> {
        self.stopping.cancelled()
    }

    /// Whether the network has asked its sources to stop.
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }
}
