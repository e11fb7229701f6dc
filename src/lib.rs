//! `reflow_network`: many actor networks, in many processes and machines, working as one
//! through a shared NATS server.
//!
//! A [`network::Network`] is a local graph of actors with named ports. A
//! [`distributed_network::DistributedNetwork`] joins it to others: data travels on NATS
//! subjects `{network}.{actor}.{port}`, discovery is NATS request/reply, liveness is a
//! JetStream key-value bucket with per-entry TTLs, and a network's bind port is an
//! optional direct TCP fallback.
#![deny(rustdoc::broken_intra_doc_links)]

pub mod actor;
#[cfg(feature = "testkit")]
pub mod bench;
mod bridge;
#[cfg(feature = "cli")]
pub mod cli;
pub mod components;
pub mod discovery;
pub mod distributed_network;
pub mod error;
pub mod events;
mod hub;
pub mod liveness;
#[cfg(feature = "testkit")]
pub mod local_server;
pub mod message;
pub mod network;
pub mod subject;
mod throttle;
pub mod transport;

pub use error::{Error, ErrorKind, Result};
pub use message::Message;
