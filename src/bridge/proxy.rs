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

use super::Bridge;
use super::stream::{StreamHandle, Submit};
use crate::actor::{Actor, ActorContext};
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::network::Causes;
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
    pub(crate) stream: Option<StreamHandle>,
    /// Messages held while more wait in this node's inbox, sent as one batch.
    pending: Pending,
    /// Made by a remote actor's component for a node of the user's (not by
    /// `register_remote_actor`): it registers itself, with a return token of its own, when
    /// its node starts, and unregisters when it stops.
    component: bool,
}

/// Messages a proxy holds for one subject until its inbox has no more ready, and the
/// causes whose acknowledgement waits for them.
#[derive(Default)]
struct Pending {
    subject: Option<Subject>,
    messages: Vec<Message>,
    bytes: usize,
    causes: Causes,
}

impl Clone for Pending {
    /// A fresh proxy from the same template holds nothing.
    fn clone(&self) -> Self {
        Pending::default()
    }
}

/// The most messages one batch envelope carries.
const BATCH_MESSAGES: usize = 128;

/// About the most bytes of messages one batch envelope carries; a message larger than
/// this goes in an envelope of its own.
const BATCH_BYTES: usize = 64 * 1024;

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
            stream: None,
            pending: Pending::default(),
            component: false,
        }
    }

    /// A proxy for nodes the user makes from the component a registered remote actor
    /// provides; its return subject is set when its node starts.
    pub(crate) fn component(
        bridge: Weak<Bridge>,
        network: &str,
        actor: &str,
        inports: Vec<String>,
        outports: Vec<String>,
    ) -> Self {
        RemoteProxy {
            component: true,
            ..RemoteProxy::new(bridge, network, actor, inports, outports, String::new())
        }
    }

    fn subject(&self, port: &str) -> Subject {
        self.subjects
            .iter()
            .find(|(p, _)| p == port)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| Subject::from(data_subject(&self.network, &self.actor, port)))
    }

    /// Hands what the proxy holds to the stream, as one batch.
    async fn flush(&mut self) -> Result<()> {
        let Some(subject) = self.pending.subject.take() else {
            return Ok(());
        };
        let messages = std::mem::take(&mut self.pending.messages);
        let causes = self.pending.causes.take();
        self.pending.bytes = 0;
        let bridge = self.bridge.upgrade().ok_or_else(bridge_gone)?;
        // One message the broker can never take is refused here, where its sender
        // hears of it; the stream cuts batches to size itself.
        let max = bridge.max_payload();
        if let [message] = messages.as_slice()
            && message.size_hint() > max
        {
            causes.release();
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "a message for {subject} is about {} bytes; the server's max_payload is \
                     {max} bytes (raise max_payload in the server config, or send it in parts)",
                    message.size_hint()
                ),
            ));
        }
        // A durable network's messages are stored in its stream, in order; once
        // JetStream has stored them their causes are handled as far as this sender goes.
        if bridge.is_durable_peer(&self.network) {
            let port = subject.as_str().rsplit('.').next().unwrap_or_default();
            return bridge
                .store_durable(&self.network, &self.actor, port, messages, causes)
                .await;
        }
        let stream = self
            .stream
            .get_or_insert_with(|| bridge.stream_to(&self.network))
            .clone();
        let count = messages.len();
        let submitted = stream
            .submit(Submit {
                subject: subject.clone(),
                messages,
                reply_to: Some(self.reply_to.clone()),
                causes,
                returned: false,
            })
            .await;
        submitted.map_err(|err| match count {
            1 => err,
            n => Error::new(
                err.kind(),
                format!(
                    "{} (a batch of {n} messages to {subject} was not sent)",
                    err.detail()
                ),
            ),
        })
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

    /// Streams `message` to the remote actor. While more messages wait in the inbox,
    /// it is held and goes with them in one batch envelope, so a backlog costs the
    /// broker one message per batch; with no backlog it goes at once, alone.
    async fn handle(&mut self, ctx: &mut ActorContext, port: &str, message: Message) -> Result<()> {
        let subject = self.subject(port);
        if self.pending.subject.as_ref().is_some_and(|s| *s != subject)
            || self.pending.bytes + message.size_hint() > BATCH_BYTES
        {
            self.flush().await?;
        }
        self.pending.bytes += message.size_hint();
        self.pending.messages.push(message);
        self.pending.causes.add(ctx.trace().cause.as_ref());
        self.pending.subject = Some(subject);
        if ctx.more_queued() && self.pending.messages.len() < BATCH_MESSAGES {
            return Ok(());
        }
        self.flush().await
    }

    async fn start(&mut self, ctx: &mut ActorContext) -> Result<()> {
        if self.component {
            let bridge = self.bridge.upgrade().ok_or_else(bridge_gone)?;
            self.reply_to = bridge.register_component_proxy(ctx.node_id(), self)?.into();
        }
        Ok(())
    }

    /// Sends what is still held (the node halted in the middle of a backlog); a proxy made
    /// from a component then unregisters.
    async fn stop(&mut self, ctx: &mut ActorContext) -> Result<()> {
        let flushed = self.flush().await;
        if self.component
            && let Some(bridge) = self.bridge.upgrade()
        {
            let removed = bridge.registry.lock().remove(ctx.node_id());
            if let Some(info) = removed {
                let tracker = bridge.tracker.clone();
                tracker.spawn(async move { bridge.send_detach(&info).await });
            }
        }
        flushed
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
        // An output caused by a proxy's message goes back to that proxy alone; one caused
        // by a message that asked for no return (a confirmed send, plain JSON) goes
        // nowhere; one the actor emitted by itself (a source) goes to every attached proxy.
        let subscribers: Vec<Subscriber> = {
            let all = self.subscribers.read();
            match ctx.origin() {
                Some(origin) => all
                    .iter()
                    .filter(|s| s.reply_to == *origin)
                    .cloned()
                    .collect(),
                None if ctx.trace().cause.is_some() => Vec::new(),
                None => all.clone(),
            }
        };
        if subscribers.is_empty() {
            return Ok(());
        }
        for subscriber in subscribers {
            let subject = Subject::from(format!("{}.{port}", subscriber.reply_to));
            let mut causes = Causes::default();
            causes.add(ctx.trace().cause.as_ref());
            bridge
                .publish_return(&subscriber.network, subject, message.clone(), causes)
                .await?;
        }
        Ok(())
    }
}
