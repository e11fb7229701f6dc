//! What an actor sees of the world while it runs.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::error::Result;
use crate::message::Message;
use crate::network::{Outlet, Trace};

/// A node's metadata: free-form JSON values set when the node is added. Discovery reads
/// `description` and `capabilities` from here; components read their settings from it.
pub type Metadata = HashMap<String, serde_json::Value>;

/// A running node's handle on its network: its id, its metadata, and its out-ports.
pub struct ActorContext {
    node: Arc<str>,
    metadata: Arc<Metadata>,
    outlet: Outlet,
    stopping: CancellationToken,
    /// Where the message being handled came from: outputs emitted while handling it
    /// carry this along, so they find their way back to the remote proxy that sent it,
    /// and its sender hears it acknowledged only once they are handled too.
    trace: Trace,
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
            trace: Trace::default(),
            more_queued: false,
        }
    }

    pub(crate) fn set_trace(&mut self, trace: Trace) {
        self.trace = trace;
    }

    pub(crate) fn take_trace(&mut self) -> Trace {
        std::mem::take(&mut self.trace)
    }

    pub(crate) fn trace(&self) -> &Trace {
        &self.trace
    }

    pub(crate) fn origin(&self) -> Option<&Arc<str>> {
        self.trace.origin.as_ref()
    }

    /// Whether the message being handled may be a repeat of one handled before.
    ///
    /// Delivery between networks is at least once across the loss of an instance: a
    /// message that a dead instance handled, but had not yet acknowledged, is sent again
    /// and handled a second time by a surviving instance. Such a message, and every
    /// message emitted while handling one (on this network and on the networks its
    /// outputs travel on to), is marked redelivered. A message that is not marked was
    /// never handled before; one that is marked may or may not have been. An actor that
    /// must not act twice checks its own records for marked messages only.
    pub fn redelivered(&self) -> bool {
        self.trace.redelivered()
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
            .emit_from(port, message, self.trace.clone())
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
