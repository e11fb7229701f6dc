//! The probe: an actor that hands everything it receives to a channel.
//!
//! Tests use it to see what reached the end of a graph; applications use it to read a
//! graph's results from ordinary async code. The channel is bounded, so a reader that
//! falls behind slows the graph down rather than losing messages.

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Actor, ActorContext};
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;

/// One message a probe received: on which node and port, and what.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeMessage {
    /// The probe node's id.
    pub node: String,
    /// The in-port it arrived on.
    pub port: String,
    /// The message.
    pub message: Message,
    /// Whether it may be a repeat of one handled before (see
    /// [`ActorContext::redelivered`]).
    pub redelivered: bool,
}

/// An actor that forwards every message it receives to a bounded channel.
///
/// ```
/// use reflow_network::actor::ProbeActor;
///
/// let (probe, mut received) = ProbeActor::channel(1024);
/// # let _ = (probe, &mut received);
/// ```
#[derive(Clone)]
pub struct ProbeActor {
    inports: Vec<String>,
    sender: mpsc::Sender<ProbeMessage>,
}

impl ProbeActor {
    /// A probe with one in-port `in`, and the receiving end of its channel.
    ///
    /// # Examples
    ///
    /// ```
    /// # use reflow_network::prelude::*;
    /// # #[tokio::main]
    /// # async fn main() -> Result<()> {
    /// let (probe, mut seen) = ProbeActor::channel(16);
    /// let mut net = Network::new(Default::default());
    /// net.register_actor("results", probe)?;
    /// net.add_node("results", "results", None)?;
    /// net.start()?;
    /// net.send_to_actor("results", "in", Message::Integer(7)).await?;
    /// let got = seen.recv().await.unwrap();
    /// assert_eq!((got.port.as_str(), got.message), ("in", Message::Integer(7)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn channel(capacity: usize) -> (ProbeActor, mpsc::Receiver<ProbeMessage>) {
        ProbeActor::with_ports(["in"], capacity)
    }

    /// A probe with the given in-ports, and the receiving end of its channel.
    pub fn with_ports<I>(inports: I, capacity: usize) -> (ProbeActor, mpsc::Receiver<ProbeMessage>)
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let probe = ProbeActor {
            inports: inports.into_iter().map(Into::into).collect(),
            sender,
        };
        (probe, receiver)
    }
}

#[async_trait]
impl Actor for ProbeActor {
    fn inports(&self) -> Vec<String> {
        self.inports.clone()
    }

    fn outports(&self) -> Vec<String> {
        Vec::new()
    }

    fn description(&self) -> String {
        "hands every message it receives to a channel".into()
    }

    async fn handle(&mut self, ctx: &mut ActorContext, port: &str, message: Message) -> Result<()> {
        let received = ProbeMessage {
            node: ctx.node_id().to_string(),
            port: port.to_string(),
            message,
            redelivered: ctx.redelivered(),
        };
        self.sender.send(received).await.map_err(|_| {
            Error::new(
                ErrorKind::ActorNotAvailable,
                format!("probe {:?}: its receiver was dropped", ctx.node_id()),
            )
        })
    }
}
