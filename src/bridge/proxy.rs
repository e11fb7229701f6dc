//! The two actors that make a remote actor feel local.
//!
//! On the using side, a [`RemoteProxy`] node stands in for the remote actor: it has the
//! remote actor's ports, and whatever arrives on an in-port is streamed to
//! `{network}.{actor}.{port}`. Each envelope names where outputs should come back to.
//!
//! On the hosting side, an [`Egress`] node is wired to every out-port of an actor that
//! some proxy uses, and sends each output back to every proxy attached to it, which then
//! emits it on its own out-port in the caller's graph.
//!
//! Both take their messages inline (`crate::network::InlineSink`): the sender's task
//! encodes and publishes, with no queue and task of their own in between.

use std::sync::{Arc, OnceLock, Weak};

use async_trait::async_trait;
use parking_lot::RwLock;

use async_nats::Subject;

use super::{Bridge, SharedOutbox};
use crate::actor::{Actor, ActorContext};
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::network::InlineSink;
use crate::subject::data_subject;

fn bridge_gone() -> Error {
    Error::new(ErrorKind::Shutdown, "the distributed network has shut down")
}

/// Stands in for `actor` on `network` in the local graph.
///
/// It takes its messages inline ([`InlineSink`]): whoever sends to the proxy encodes and
/// publishes in its own task, so a message reaches the broker's queue without a hop
/// through a task of the proxy's own.
#[derive(Clone)]
pub(crate) struct RemoteProxy {
    core: Arc<ProxyCore>,
}

struct ProxyCore {
    bridge: Weak<Bridge>,
    network: Arc<str>,
    actor: Arc<str>,
    inports: Vec<String>,
    outports: Vec<String>,
    /// Subject prefix under which the remote actor's outputs come back.
    reply_to: Arc<str>,
    /// Subjects per in-port, built once.
    subjects: Vec<(String, Subject)>,
    /// The stream to the remote network, fetched on first use.
    outbox: OnceLock<SharedOutbox>,
}

impl RemoteProxy {
    pub(crate) fn new(
        bridge: Weak<Bridge>,
        network: &str,
        actor: &str,
        inports: Vec<String>,
        outports: Vec<String>,
        reply_to: String,
    ) -> Self {
        let subjects = inports
            .iter()
            .map(|port| {
                (
                    port.clone(),
                    Subject::from(data_subject(network, actor, port)),
                )
            })
            .collect();
        RemoteProxy {
            core: Arc::new(ProxyCore {
                bridge,
                network: network.into(),
                actor: actor.into(),
                inports,
                outports,
                reply_to: reply_to.into(),
                subjects,
                outbox: OnceLock::new(),
            }),
        }
    }

    /// The proxy as a sink its senders hand messages to directly.
    pub(crate) fn inline(&self) -> Arc<dyn InlineSink> {
        self.core.clone()
    }
}

#[async_trait]
impl InlineSink for ProxyCore {
    async fn accept(&self, port: &str, message: Message, _origin: Option<Arc<str>>) -> Result<()> {
        let bridge = self.bridge.upgrade().ok_or_else(bridge_gone)?;
        let built;
        let subject = match self.subjects.iter().find(|(p, _)| p == port) {
            Some((_, subject)) => subject,
            None => {
                built = Subject::from(data_subject(&self.network, &self.actor, port));
                &built
            }
        };
        let outbox = self.outbox.get_or_init(|| bridge.outbox(&self.network));
        bridge
            .publish_envelope(
                outbox,
                &self.network,
                subject,
                &message,
                Some(&self.reply_to),
            )
            .await
    }
}

#[async_trait]
impl Actor for RemoteProxy {
    fn inports(&self) -> Vec<String> {
        self.core.inports.clone()
    }

    fn outports(&self) -> Vec<String> {
        self.core.outports.clone()
    }

    fn description(&self) -> String {
        format!(
            "proxy for actor {:?} on network {:?}",
            &*self.core.actor, &*self.core.network
        )
    }

    async fn handle(&mut self, ctx: &mut ActorContext, port: &str, message: Message) -> Result<()> {
        let origin = ctx.origin().cloned();
        self.core.accept(port, message, origin).await
    }
}

/// Where one local actor's outputs go back to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Subscriber {
    /// The network the proxy lives in.
    pub(crate) network: String,
    /// The subject prefix; the out-port is appended.
    pub(crate) reply_to: Arc<str>,
}

/// The attached proxies of one local actor.
pub(crate) type Subscribers = Arc<RwLock<Vec<Subscriber>>>;

/// Sends a local actor's outputs back to the proxies attached to it. Like a proxy, it
/// takes its messages inline: the actor's own task publishes its outputs.
#[derive(Clone)]
pub(crate) struct Egress {
    core: Arc<EgressCore>,
}

struct EgressCore {
    bridge: Weak<Bridge>,
    actor: Arc<str>,
    outports: Vec<String>,
    subscribers: Subscribers,
}

impl Egress {
    pub(crate) fn new(
        bridge: Weak<Bridge>,
        actor: &str,
        outports: Vec<String>,
        subscribers: Subscribers,
    ) -> Self {
        Egress {
            core: Arc::new(EgressCore {
                bridge,
                actor: actor.into(),
                outports,
                subscribers,
            }),
        }
    }

    /// The egress as a sink its actor hands outputs to directly.
    pub(crate) fn inline(&self) -> Arc<dyn InlineSink> {
        self.core.clone()
    }
}

#[async_trait]
impl InlineSink for EgressCore {
    async fn accept(&self, port: &str, message: Message, origin: Option<Arc<str>>) -> Result<()> {
        let bridge = self.bridge.upgrade().ok_or_else(bridge_gone)?;
        // An output caused by a proxy's message goes back to that proxy alone; one the
        // actor emitted by itself (a source) goes to every attached proxy.
        let subscribers: Vec<Subscriber> = {
            let all = self.subscribers.read();
            match &origin {
                Some(origin) => all
                    .iter()
                    .filter(|s| s.reply_to == *origin)
                    .cloned()
                    .collect(),
                None => all.clone(),
            }
        };
        for subscriber in subscribers {
            let subject = Subject::from(format!("{}.{port}", subscriber.reply_to));
            bridge
                .publish_return(&subscriber.network, &subject, &message)
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Actor for Egress {
    fn inports(&self) -> Vec<String> {
        self.core.outports.clone()
    }

    fn outports(&self) -> Vec<String> {
        Vec::new()
    }

    fn description(&self) -> String {
        format!(
            "returns the outputs of {:?} to remote proxies",
            &*self.core.actor
        )
    }

    async fn handle(&mut self, ctx: &mut ActorContext, port: &str, message: Message) -> Result<()> {
        let origin = ctx.origin().cloned();
        self.core.accept(port, message, origin).await
    }
}
