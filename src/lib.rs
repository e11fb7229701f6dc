//! `reflow_network`: many actor networks, in many processes and machines, working as one
//! through a shared NATS server.
//!
//! A [`network::Network`] is a local graph of actors with named ports. A
//! [`distributed_network::DistributedNetwork`] joins it to others: data travels on NATS
//! subjects `{network}.{actor}.{port}`, discovery is NATS request/reply, liveness is a
//! JetStream key-value bucket with per-entry TTLs, and a network's bind port is an
//! optional direct TCP fallback.
//!
//! # Quick start
//!
//! ```toml
//! [dependencies]
//! reflow_network = "0.1"
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! Network `math` offers an actor of your own; network `app`, which could run in another
//! process or on another machine, streams numbers through it as if it were local. All
//! both need is a NATS server with JetStream (`nats-server -js`, 2.11 or newer).
//!
//! ```
//! use reflow_network::prelude::*;
//!
//! /// Doubles every integer that arrives on `in`.
//! #[derive(Clone)]
//! struct Doubler;
//!
//! #[async_trait]
//! impl Actor for Doubler {
//!     fn inports(&self) -> Vec<String> {
//!         vec!["in".into()]
//!     }
//!     fn outports(&self) -> Vec<String> {
//!         vec!["out".into()]
//!     }
//!     async fn handle(&mut self, ctx: &mut ActorContext, _port: &str, msg: Message) -> Result<()> {
//!         let n = msg.as_integer().unwrap_or(0);
//!         ctx.emit("out", Message::Integer(n * 2)).await
//!     }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<()> {
//! # let server = reflow_network::local_server::NatsServer::start().await?;
//! # let nats_url = server.url();
//! // let nats_url = "nats://127.0.0.1:4222".to_string();
//! let config = |network: &str| DistributedConfig {
//!     network_id: network.into(),
//!     discovery_endpoints: vec![nats_url.clone()],
//!     ..DistributedConfig::default()
//! };
//!
//! let mut math = DistributedNetwork::new(config("math")).await?;
//! math.register_local_actor("double", Doubler, None)?;
//! math.start().await?;
//!
//! let mut app = DistributedNetwork::new(config("app")).await?;
//! let (results, mut seen) = ProbeActor::channel(16);
//! app.register_local_actor("results", results, None)?;
//! app.start().await?;
//! app.connect_to_network("math").await?;
//! let double = app.register_remote_actor("double", "math").await?; // "double@math"
//! let input = {
//!     let local = app.get_local_network();
//!     let mut local = local.write();
//!     local.add_connection(Connector::new(&double, "out", "results", "in"))?;
//!     local.inlet(&double, "in")?
//! };
//! input.send(Message::Integer(21)).await?;
//! assert_eq!(seen.recv().await.unwrap().message, Message::Integer(42));
//!
//! app.shutdown().await?;
//! math.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Map
//!
//! | module | what is in it |
//! |---|---|
//! | [`prelude`] | the names almost every program uses, for `use reflow_network::prelude::*` |
//! | [`distributed_network`] | [`DistributedNetwork`](distributed_network::DistributedNetwork), its [`DistributedConfig`](distributed_network::DistributedConfig), and [`NatsAuth`](distributed_network::NatsAuth) for TLS, creds, NKeys and natscli contexts |
//! | [`network`] | the local graph: nodes, [`Connector`](network::Connector)s, initial packets, inlets |
//! | [`actor`] | the [`Actor`](actor::Actor) trait, [`FnActor`](actor::FnActor) for closures, [`ProbeActor`](actor::ProbeActor) to read results |
//! | [`components`] | built-in components (`passthrough`, `counter`, `exec`, ...) and [`Components`](components::Components), a named set of them |
//! | [`message`] | [`Message`], the values actors exchange, and their wire form |
//! | [`events`] | what a network reports: peers up and down, roads switched, messages refused |
//! | [`discovery`], [`liveness`] | what other networks are live, and what they offer |
//! | [`durable`] | durable networks: what is sent to them waits in JetStream while they are down |
//! | [`error`] | [`Error`] and its [`ErrorKind`] |
//! | [`subject`], [`transport`] | NATS subjects and the broker and direct roads |
//!
//! Behind features, off by default: `cli` (the `reflow-bridge` command line, and
//! `cli::main_with` to run it with your own components), `testkit` (`local_server`, which
//! starts and provisions nats-server processes and clusters, and `bench`), `docker` (a
//! NATS container when no nats-server binary can be had).
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
pub mod durable;
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

/// The attribute an [`actor::Actor`] implementation carries (`#[async_trait]`), re-exported so
/// that implementing an actor needs no dependency of your own.
pub use async_trait::async_trait;

/// The names almost every program uses: `use reflow_network::prelude::*;`.
pub mod prelude {
    pub use crate::actor::{Actor, ActorContext, FnActor, Metadata, ProbeActor};
    pub use crate::async_trait;
    pub use crate::distributed_network::{DistributedConfig, DistributedError, DistributedNetwork};
    pub use crate::error::{Error, ErrorKind, Result};
    pub use crate::message::Message;
    pub use crate::network::{Connector, Network};
}
