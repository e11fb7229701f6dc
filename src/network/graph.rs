//! The plain data that describes a graph: connections, their end points, initial packets.

use serde::{Deserialize, Serialize};

use crate::message::Message;

/// One end of a connection: a node and one of its ports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ConnectionPoint {
    /// The node's id.
    pub actor: String,
    /// The port's name.
    pub port: String,
    /// For an [`InitialPacket`], the message to deliver at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_data: Option<Message>,
}

impl ConnectionPoint {
    /// A point at `actor`'s `port`.
    pub fn new(actor: impl Into<String>, port: impl Into<String>) -> Self {
        ConnectionPoint {
            actor: actor.into(),
            port: port.into(),
            initial_data: None,
        }
    }
}

/// A connection from one node's out-port to another node's in-port.
///
/// Its two ends are all it is, so it can be written as a literal, as Reflow's guides do:
///
/// ```
/// use reflow_network::network::{ConnectionPoint, Connector};
///
/// let literal = Connector {
///     from: ConnectionPoint::new("source", "out"),
///     to: ConnectionPoint::new("sink", "in"),
/// };
/// assert_eq!(literal, Connector::new("source", "out", "sink", "in"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Connector {
    /// Where messages leave.
    pub from: ConnectionPoint,
    /// Where messages arrive.
    pub to: ConnectionPoint,
}

impl Connector {
    /// A connection from `from_actor.from_port` to `to_actor.to_port`.
    pub fn new(from_actor: &str, from_port: &str, to_actor: &str, to_port: &str) -> Self {
        Connector {
            from: ConnectionPoint::new(from_actor, from_port),
            to: ConnectionPoint::new(to_actor, to_port),
        }
    }
}

/// A message delivered to a node's in-port when the network starts (or at once, if it
/// already runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitialPacket {
    /// Where to deliver; `to.initial_data` is the message.
    pub to: ConnectionPoint,
}

impl InitialPacket {
    /// A packet delivering `message` to `actor`'s `port`.
    pub fn new(actor: &str, port: &str, message: Message) -> Self {
        InitialPacket {
            to: ConnectionPoint {
                actor: actor.to_string(),
                port: port.to_string(),
                initial_data: Some(message),
            },
        }
    }
}
