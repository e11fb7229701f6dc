//! Small built-in components, usable by name from the `reflow-bridge run` config.
//!
//! | name | ports | what it does |
//! |---|---|---|
//! | `passthrough` | `in` → `out` | forwards every message unchanged |
//! | `log` | `in` → `out` | logs every message (at info level, with the node id), then forwards it |
//! | `counter` | `in` → `count` | emits the running count of messages received |
//! | `generator` | `start` → `out` | on start (or on any message to `start`), emits the integers `0..count`; metadata `count` (default 10) and `interval_ms` (default 0) |
//! | `sink` | `in` | accepts and drops everything, counting it in the log at debug level |
//! | `exec` | `in` → `out` | runs a program of any language and exchanges JSON lines with it: see [`Exec`] |
//!
//! [`Components`] is a set of named components, the built-in ones and your own: the
//! `reflow-bridge run` config draws its nodes from one, and a binary of your own hands
//! one to `cli::main_with` (feature `cli`).

mod exec;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::actor::{Actor, ActorContext};
use crate::error::Result;
use crate::message::Message;
use crate::network::Network;

pub use exec::Exec;

/// The names of every built-in component.
pub const BUILTINS: &[&str] = &["passthrough", "log", "counter", "generator", "sink", "exec"];

/// A fresh actor of the built-in component `name`, if there is one.
pub fn builtin(name: &str) -> Option<Box<dyn Actor>> {
    Some(match name {
        "passthrough" => Box::new(Passthrough),
        "log" => Box::new(Log),
        "counter" => Box::new(Counter::default()),
        "generator" => Box::new(Generator),
        "sink" => Box::new(Sink),
        "exec" => Box::new(Exec::default()),
        _ => return None,
    })
}

/// Registers every built-in component with `network` under its name.
pub fn register_builtins(network: &mut Network) -> Result<()> {
    Components::builtin().register_into(network)
}

type Factory = Arc<dyn Fn() -> Box<dyn Actor> + Send + Sync>;

/// A set of components by name: what a `reflow-bridge run` config may name in its
/// `[[nodes]]`.
///
/// ```
/// use reflow_network::actor::FnActor;
/// use reflow_network::components::Components;
///
/// use reflow_network::Message;
///
/// let components = Components::builtin().with("double", || {
///     FnActor::new(["in"], ["out"], |_port, msg| {
///         let doubled = msg.as_integer().unwrap_or(0) * 2;
///         Ok(vec![("out".to_string(), Message::Integer(doubled))])
///     })
/// });
/// assert!(components.contains("double"));
/// assert!(components.contains("passthrough"));
/// ```
#[derive(Clone, Default)]
pub struct Components {
    factories: BTreeMap<String, Factory>,
}

impl Components {
    /// No components at all.
    pub fn empty() -> Self {
        Components::default()
    }

    /// The built-in components ([`BUILTINS`]).
    pub fn builtin() -> Self {
        BUILTINS.iter().fold(Components::empty(), |set, name| {
            set.with_boxed(name, move || builtin(name).expect("listed in BUILTINS"))
        })
    }

    /// This set with `name` made by `factory`, one fresh actor per node; a component of
    /// the same name is replaced.
    pub fn with<A, F>(self, name: &str, factory: F) -> Self
    where
        A: Actor,
        F: Fn() -> A + Send + Sync + 'static,
    {
        self.with_boxed(name, move || Box::new(factory()) as Box<dyn Actor>)
    }

    /// [`Components::with`] for a factory that already boxes its actor.
    pub fn with_boxed<F>(mut self, name: &str, factory: F) -> Self
    where
        F: Fn() -> Box<dyn Actor> + Send + Sync + 'static,
    {
        self.factories.insert(name.to_string(), Arc::new(factory));
        self
    }

    /// Whether a component is called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    /// The names of the components, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    /// Registers every component with `network` under its name.
    pub fn register_into(&self, network: &mut Network) -> Result<()> {
        for (name, factory) in &self.factories {
            let factory = Arc::clone(factory);
            network.register_factory(name, move || factory())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Components {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

/// Forwards every message from `in` to `out` unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Passthrough;

#[async_trait]
impl Actor for Passthrough {
    fn inports(&self) -> Vec<String> {
        vec!["in".into()]
    }
    fn outports(&self) -> Vec<String> {
        vec!["out".into()]
    }
    fn description(&self) -> String {
        "forwards every message unchanged".into()
    }
    async fn handle(
        &mut self,
        ctx: &mut ActorContext,
        _port: &str,
        message: Message,
    ) -> Result<()> {
        ctx.emit("out", message).await
    }
}

/// Logs every message, then forwards it from `in` to `out`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Log;

#[async_trait]
impl Actor for Log {
    fn inports(&self) -> Vec<String> {
        vec!["in".into()]
    }
    fn outports(&self) -> Vec<String> {
        vec!["out".into()]
    }
    fn description(&self) -> String {
        "logs every message, then forwards it".into()
    }
    async fn handle(
        &mut self,
        ctx: &mut ActorContext,
        _port: &str,
        message: Message,
    ) -> Result<()> {
        tracing::info!(node = %ctx.node_id(), message = %message.to_json(), "log");
        ctx.emit("out", message).await
    }
}

/// Emits on `count` how many messages have arrived on `in` so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter {
    seen: i64,
}

#[async_trait]
impl Actor for Counter {
    fn inports(&self) -> Vec<String> {
        vec!["in".into()]
    }
    fn outports(&self) -> Vec<String> {
        vec!["count".into()]
    }
    fn description(&self) -> String {
        "emits the running count of messages received".into()
    }
    async fn handle(
        &mut self,
        ctx: &mut ActorContext,
        _port: &str,
        _message: Message,
    ) -> Result<()> {
        self.seen += 1;
        ctx.emit("count", Message::Integer(self.seen)).await
    }
}

/// Emits the integers `0..count` on `out` when it starts and whenever `start` receives a
/// message; metadata `count` (default 10) and `interval_ms` (default 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct Generator;

impl Generator {
    async fn run(ctx: &mut ActorContext) -> Result<()> {
        let count = ctx.config("count").and_then(|v| v.as_i64()).unwrap_or(10);
        let interval = ctx
            .config("interval_ms")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        for i in 0..count {
            if ctx.is_stopping() {
                break;
            }
            ctx.emit("out", Message::Integer(i)).await?;
            if interval > 0 {
                tokio::select! {
                    _ = ctx.stopping() => break,
                    _ = tokio::time::sleep(Duration::from_millis(interval)) => {}
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Actor for Generator {
    fn inports(&self) -> Vec<String> {
        vec!["start".into()]
    }
    fn outports(&self) -> Vec<String> {
        vec!["out".into()]
    }
    fn description(&self) -> String {
        "emits the integers 0..count (metadata count, interval_ms)".into()
    }
    async fn start(&mut self, ctx: &mut ActorContext) -> Result<()> {
        if ctx.config("on_start").and_then(|v| v.as_bool()) != Some(false) {
            Generator::run(ctx).await?;
        }
        Ok(())
    }
    async fn handle(
        &mut self,
        ctx: &mut ActorContext,
        _port: &str,
        _message: Message,
    ) -> Result<()> {
        Generator::run(ctx).await
    }
}

/// Accepts and drops every message on `in`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sink;

#[async_trait]
impl Actor for Sink {
    fn inports(&self) -> Vec<String> {
        vec!["in".into()]
    }
    fn outports(&self) -> Vec<String> {
        Vec::new()
    }
    fn description(&self) -> String {
        "accepts and drops every message".into()
    }
    async fn handle(
        &mut self,
        ctx: &mut ActorContext,
        _port: &str,
        message: Message,
    ) -> Result<()> {
        tracing::debug!(node = %ctx.node_id(), kind = message.type_name(), "sink");
        Ok(())
    }
}
