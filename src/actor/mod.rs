//! Actors: the nodes of a network graph.
//!
//! An actor declares its in-ports and out-ports, and handles each message that arrives on
//! an in-port. While handling, it may emit on its out-ports through its [`ActorContext`];
//! an emit waits when the receiving actor's bounded inbox is full, so a slow actor slows
//! its producers down instead of letting memory grow.
//!
//! An actor value registered with a network is a template: each node made from it gets a
//! fresh clone, so state kept in `&mut self` belongs to one node.
//!
//! Three ready forms cover most needs: [`FnActor`] wraps a closure, [`ProbeActor`] hands
//! what it receives to a channel (for tests and for application code reading a graph's
//! results), and the [`crate::components`] module holds small built-in components.

mod context;
mod function;
mod probe;

pub use context::{ActorContext, Metadata};
pub use function::FnActor;
pub use probe::{ProbeActor, ProbeMessage};

use async_trait::async_trait;

use crate::error::Result;
use crate::message::Message;

/// A node's behaviour: which ports it has, and what it does with what arrives.
///
/// ```
/// use reflow_network::actor::{Actor, ActorContext};
/// use reflow_network::{Message, Result};
///
/// #[derive(Clone, Default)]
/// struct Running {
///     total: i64,
/// }
///
/// #[async_trait::async_trait]
/// impl Actor for Running {
///     fn inports(&self) -> Vec<String> {
///         vec!["in".into()]
///     }
///     fn outports(&self) -> Vec<String> {
///         vec!["total".into()]
///     }
///     async fn handle(&mut self, ctx: &mut ActorContext, _port: &str, msg: Message) -> Result<()> {
///         self.total += msg.as_integer().unwrap_or(0);
///         ctx.emit("total", Message::Integer(self.total)).await
///     }
/// }
/// ```
#[async_trait]
pub trait Actor: Send + 'static {
    /// The names of the ports messages arrive on.
    fn inports(&self) -> Vec<String>;

    /// The names of the ports this actor emits on.
    fn outports(&self) -> Vec<String>;

    /// A one-line description, shown by discovery.
    fn description(&self) -> String {
        String::new()
    }

    /// Called once when the node starts, before any message is handled. A source actor
    /// may emit from here; a long-running one should stop when [`ActorContext::stopping`]
    /// fires, so that shutdown can drain the graph.
    async fn start(&mut self, _ctx: &mut ActorContext) -> Result<()> {
        Ok(())
    }

    /// Handles one message that arrived on `port`.
    ///
    /// An error is logged with the node's id and counted; the node keeps running.
    async fn handle(&mut self, ctx: &mut ActorContext, port: &str, message: Message) -> Result<()>;

    /// Called once when the node stops, after its last message.
    async fn stop(&mut self, _ctx: &mut ActorContext) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl Actor for Box<dyn Actor> {
    fn inports(&self) -> Vec<String> {
        (**self).inports()
    }
    fn outports(&self) -> Vec<String> {
        (**self).outports()
    }
    fn description(&self) -> String {
        (**self).description()
    }
    async fn start(&mut self, ctx: &mut ActorContext) -> Result<()> {
        (**self).start(ctx).await
    }
    async fn handle(&mut self, ctx: &mut ActorContext, port: &str, message: Message) -> Result<()> {
        (**self).handle(ctx, port, message).await
    }
    async fn stop(&mut self, ctx: &mut ActorContext) -> Result<()> {
        (**self).stop(ctx).await
    }
}
