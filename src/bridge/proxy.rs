//! The two actors that make a remote actor feel local.
//!
//! On the using side, a [`RemoteProxy`] node stands in for the remote actor: it has the
//! remote actor's ports, and whatever arrives on an in-port is streamed to
//! `{network}.{actor}.{port}`. Each envelope names where outputs should come back to.
//!
//! On the hosting side, an [`Egress`] node is wired to every out-port of an actor that
//! some proxy uses, and sends each output back to every proxy attached to it, which then
//! emits it on its own out-port in the caller's graph.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use parking_lot::RwLock;

use async_nats::Subject;

use super::{Bridge, SharedOutbox};
use crate::actor::{Actor, ActorContext};
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::subject::data_subject;

fn bridge_gone() -> Error {
    Error::new(ErrorKind::Shutdown, "the distributed network has shut down")
}

/// Stands in for `actor` on `network` in the local graph.
#[derive(Clone)]
pub(crate) struct RemoteProxy {
    pub(crate) bridge: Weak<Bridge>,
    pub(crate) network: Arc<str>,
    pub(crate) actor: Arc<str>,
    pub(crate) inports: Vec<String>,
    pub(crate) outports: Vec<String>,
    /// Subject prefix under which the remote actor's outputs come back.
    pub(crate) reply_to: Arc<str>,
    /// Subjects per in-port, built once.
    pub(crate) subjects: Arc<Vec<(String, Subject)>>,
    /// The stream to the remote network, fetched on first use.
    pub(crate) outbox: Option<SharedOutbox>,
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
            bridge,
            network: network.into(),
            actor: actor.into(),
            inports,
            outports,
            reply_to: reply_to.into(),
            subjects: Arc::new(subjects),
            outbox: None,
        }
    }
}

#[async_trait]
impl Actor for RemoteProxy {
    fn inports(&self) -> Vec<String> {
        self.inports.clone()
    }

    fn outports(&self) -> Vec<String> {
        self.outports.clone()
    }

    fn description(&self) -> String {
        format!(
            "proxy for actor {:?} on network {:?}",
            &*self.actor, &*self.network
        )
    }

    async fn handle(
        &mut self,
        _ctx: &mut ActorContext,
        port: &str,
        message: Message,
    ) -> Result<()> {
        let bridge = self.bridge.upgrade().ok_or_else(bridge_gone)?;
        let subject = self
            .subjects
            .iter()
            .find(|(p, _)| p == port)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| Subject::from(data_subject(&self.network, &self.actor, port)));
        let outbox = self
            .outbox
            .get_or_insert_with(|| bridge.outbox(&self.network))
            .clone();
        bridge
            .publish_envelope(
                &outbox,
                &self.network,
                &subject,
                &message,
                Some(&self.reply_to),
            )
            .await
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

/// Sends a local actor's outputs back to the proxies attached to it.
#[derive(Clone)]
pub(crate) struct Egress {
    pub(crate) bridge: Weak<Bridge>,
    pub(crate) actor: Arc<str>,
    pub(crate) outports: Vec<String>,
    pub(crate) subscribers: Subscribers,
}

#[async_trait]
impl Actor for Egress {
    fn inports(&self) -> Vec<String> {
        self.outports.clone()
    }

    fn outports(&self) -> Vec<String> {
        Vec::new()
    }

    fn description(&self) -> String {
        format!(
            "returns the outputs of {:?} to remote proxies",
            &*self.actor
        )
    }

    async fn handle(&mut self, ctx: &mut ActorContext, port: &str, message: Message) -> Result<()> {
        let bridge = self.bridge.upgrade().ok_or_else(bridge_gone)?;
        // An output caused by a proxy's message goes back to that proxy alone; one the
        // actor emitted by itself (a source) goes to every attached proxy.
        let subscribers: Vec<Subscriber> = {
            let all = self.subscribers.read();
            match ctx.origin() {
                Some(origin) => all
                    .iter()
                    .filter(|s| s.reply_to == *origin)
                    .cloned()
                    .collect(),
                None => all.clone(),
            }
        };
        if subscribers.is_empty() {
            return Ok(());
        }
        for subscriber in subscribers {
            let subject = Subject::from(format!("{}.{port}", subscriber.reply_to));
            bridge
                .publish_return(&subscriber.network, &subject, &message)
                .await?;
        }
        Ok(())
    }
}
