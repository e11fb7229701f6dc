//! The bridge's side of durable networks (see [`crate::durable`]): making the streams of a
//! durable network and consuming them as one of its instances; finding a durable peer,
//! and storing what is sent to it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;

use super::Bridge;
use crate::discovery::ActorInfo;
use crate::durable::{
    Backlog, DurableOptions, dead_stream_name, dead_subject, durable_subject,
    parse_durable_subject, stream_error, stream_name,
};
use crate::error::{Error, ErrorKind, Result};
use crate::events::NetworkEvent;
use crate::message::Message;
use crate::network::{Cause, Outcome, Trace};

/// The durable consumer every instance of a durable network shares.
const CONSUMER: &str = "instances";

/// Messages an instance takes before it has handled the first of them.
const MAX_ACK_PENDING: i64 = 1024;

/// How many handled stream sequences an instance remembers, to take a redelivery of one
/// it already handled (its acknowledgement lost with a broker) as a repeat.
const REMEMBERED: usize = 100_000;

/// How soon a message whose handler failed is delivered again.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// What a sender knows of a durable network: that it is one, and its actors' ports (from
/// the stream's metadata, for when no instance runs to ask).
#[derive(Debug, Clone)]
pub(crate) struct DurablePeer {
    pub(crate) actors: Vec<ActorInfo>,
}

/// Stream sequences this instance handled, recent ones only.
#[derive(Default)]
pub(crate) struct Handled {
    seqs: parking_lot::Mutex<BTreeSet<u64>>,
}

impl Handled {
    fn contains(&self, seq: u64) -> bool {
        self.seqs.lock().contains(&seq)
    }

    fn insert(&self, seq: u64) {
        let mut seqs = self.seqs.lock();
        seqs.insert(seq);
        while seqs.len() > REMEMBERED {
            seqs.pop_first();
        }
    }
}

impl Bridge {
    fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.client.clone())
    }

    /// Makes (or brings up to date) this durable network's streams, with its actors'
    /// ports in the metadata, and starts consuming: one task, taking messages in order.
    pub(crate) async fn start_durable(self: &Arc<Self>, options: &DurableOptions) -> Result<()> {
        let js = self.jetstream();
        let network = self.network_id.to_string();
        let token = crate::durable::network_token(&network);
        let actors = serde_json::to_string(&self.actor_infos()).unwrap_or_default();
        let config = stream::Config {
            name: stream_name(&network),
            subjects: vec![format!("_reflow_durable.{token}.>")],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            max_age: options.max_age,
            max_bytes: options.max_bytes,
            max_messages: options.max_messages,
            num_replicas: options.replicas,
            duplicate_window: Duration::from_secs(120),
            metadata: HashMap::from([
                ("reflow_network".to_string(), network.clone()),
                ("reflow_actors".to_string(), actors),
            ]),
            ..Default::default()
        };
        let info = js
            .create_or_update_stream(config)
            .await
            .map_err(|e| stream_error("make its stream", &network, e))?;
        js.create_or_update_stream(stream::Config {
            name: dead_stream_name(&network),
            subjects: vec![format!("_reflow_dead.{token}.>")],
            storage: stream::StorageType::File,
            max_age: options.max_age,
            num_replicas: options.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| stream_error("make its dead-letter stream", &network, e))?;
        let stream = js
            .get_stream(&info.config.name)
            .await
            .map_err(|e| stream_error("open its stream", &network, e))?;
        let consumer_config = consumer::pull::Config {
            durable_name: Some(CONSUMER.to_string()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: options.ack_wait,
            max_deliver: -1,
            max_ack_pending: MAX_ACK_PENDING,
            ..Default::default()
        };
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(CONSUMER, consumer_config)
            .await
            .map_err(|e| stream_error("make its consumer", &network, e))?;
        if options.backlog_limit > 0 {
            self.watch_backlog(options.backlog_limit);
        }
        let bridge = self.weak_self();
        let options = options.clone();
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            let mut inlets = HashMap::new();
            // Pulls end when the broker goes; they are opened again until shutdown.
            loop {
                let messages = tokio::select! {
                    _ = cancel.cancelled() => return,
                    // Short pulls, so a pull lost with a node (a cluster electing a
                    // leader) is noticed and made again within seconds.
                    opened = consumer
                        .stream()
                        .expires(Duration::from_secs(5))
                        .heartbeat(Duration::from_secs(1))
                        .messages() => opened,
                };
                let mut messages = match messages {
                    Ok(messages) => messages,
                    Err(err) => {
                        tracing::debug!(error = %err, "durable consumer: cannot pull yet");
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(RETRY_DELAY) => continue,
                        }
                    }
                };
                loop {
                    let next = tokio::select! {
                        _ = cancel.cancelled() => return,
                        next = messages.next() => next,
                    };
                    let Some(bridge) = bridge.upgrade() else {
                        return;
                    };
                    match next {
                        Some(Ok(message)) => {
                            bridge.take_durable(message, &options, &mut inlets).await;
                        }
                        Some(Err(err)) => {
                            tracing::debug!(error = %err, "durable consumer: a pull failed");
                            if matches!(
                                err.kind(),
                                consumer::pull::MessagesErrorKind::ConsumerDeleted
                            ) {
                                break;
                            }
                        }
                        None => break,
                    }
                }
            }
        });
        Ok(())
    }

    /// Raises [`NetworkEvent::BacklogAboveLimit`] each time the backlog rises above
    /// `limit`, looking once a heartbeat.
    fn watch_backlog(self: &Arc<Self>, limit: u64) {
        let bridge = self.weak_self();
        let cancel = self.cancel.clone();
        let every = Duration::from_millis(self.config.heartbeat_interval_ms.max(100));
        self.tracker.spawn(async move {
            let mut above = false;
            let mut ticks = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let Some(bridge) = bridge.upgrade() else {
                    return;
                };
                let Ok(backlog) = bridge.backlog(&bridge.network_id).await else {
                    continue;
                };
                if backlog.pending > limit && !above {
                    bridge.events.send(NetworkEvent::BacklogAboveLimit {
                        network: bridge.network_id.to_string(),
                        pending: backlog.pending,
                        limit,
                    });
                }
                above = backlog.pending > limit;
            }
        });
    }

    /// Delivers one stored message to its actor; it is acknowledged to JetStream once
    /// handled, delivered again after a failure, and dead-lettered after `max_deliver`.
    async fn take_durable(
        self: &Arc<Self>,
        message: jetstream::Message,
        options: &DurableOptions,
        inlets: &mut HashMap<String, crate::network::Inlet>,
    ) {
        let (stream_seq, delivered) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered),
            Err(err) => {
                tracing::warn!(error = %err, "durable message without delivery info");
                return;
            }
        };
        if self.durable_handled.contains(stream_seq) {
            // Handled here already; its acknowledgement was lost (a broker restart).
            self.counters.duplicates_in.fetch_add(1, Ordering::Relaxed);
            let _ = message.ack().await;
            return;
        }
        let subject = message.subject.to_string();
        let decoded = self.decode_durable(&subject, &message);
        let (actor, port, value) = match decoded {
            Ok(parts) => parts,
            Err(err) => {
                // It can never be read: no retry helps.
                self.dead_letter(&message, &subject, delivered, &err.to_string())
                    .await;
                return;
            }
        };
        let cached = inlets.get(&subject).cloned();
        let found = match cached {
            Some(inlet) => Ok(inlet),
            None => self.lookup_inlet(&actor, &port),
        };
        let inlet = match found {
            Ok(inlet) => {
                inlets.insert(subject.clone(), inlet.clone());
                inlet
            }
            Err(err) => {
                self.retry_or_dead_letter(message, &subject, delivered, options, &err.to_string())
                    .await;
                return;
            }
        };
        let cause = self.durable_cause(message, subject.clone(), stream_seq, delivered, options);
        if let Err(err) = inlet.send_from(value, Trace::new(None, Some(cause))).await {
            inlets.remove(&subject);
            tracing::debug!(error = %err, "durable message not delivered; JetStream sends it again");
            return;
        }
        self.counters.messages_in.fetch_add(1, Ordering::Relaxed);
    }

    /// The inlet of `actor`'s `port`, with the network's lock held only for the lookup.
    fn lookup_inlet(&self, actor: &str, port: &str) -> Result<crate::network::Inlet> {
        self.local.read().inlet(actor, port)
    }

    /// The actor, port and message of a stored message.
    fn decode_durable(
        &self,
        subject: &str,
        message: &jetstream::Message,
    ) -> Result<(String, String, Message)> {
        let (actor, port) = parse_durable_subject(&self.network_id, subject).ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                format!("{subject:?} is not a durable subject of this network"),
            )
        })?;
        let value = if super::plain::is_plain_json(message.headers.as_ref()) {
            let json: serde_json::Value =
                serde_json::from_slice(&message.payload).map_err(|e| {
                    Error::new(
                        ErrorKind::Encoding,
                        format!("marked JSON but not JSON: {e}"),
                    )
                })?;
            Message::from_json(json)
        } else {
            Message::from_msgpack(&message.payload)?
        };
        Ok((actor.to_string(), port.to_string(), value))
    }

    /// The cause of a stored message: acknowledged once handled, delivered again after a
    /// failure or a shutdown, dead-lettered after `max_deliver` failures.
    fn durable_cause(
        self: &Arc<Self>,
        message: jetstream::Message,
        subject: String,
        stream_seq: u64,
        delivered: i64,
        options: &DurableOptions,
    ) -> Cause {
        let bridge = Arc::downgrade(self);
        let options = options.clone();
        Cause::with_outcome(delivered > 1, move |outcome: Outcome| {
            let Some(bridge) = bridge.upgrade() else {
                return;
            };
            let tracker = bridge.tracker.clone();
            tracker.spawn(async move {
                match outcome {
                    Outcome {
                        handled: true,
                        failed: false,
                    } => {
                        bridge.durable_handled.insert(stream_seq);
                        if let Err(err) = message.ack().await {
                            tracing::debug!(error = %err, "a durable acknowledgement failed; the message comes again and is taken as a repeat");
                        }
                    }
                    Outcome { handled: false, .. } => {
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                    }
                    Outcome { failed: true, .. } => {
                        bridge
                            .retry_or_dead_letter(
                                message,
                                &subject,
                                delivered,
                                &options,
                                "its handler returned an error",
                            )
                            .await;
                    }
                }
            });
        })
    }

    /// Delivers `message` again later, or dead-letters it when it has had `max_deliver`
    /// deliveries.
    async fn retry_or_dead_letter(
        &self,
        message: jetstream::Message,
        subject: &str,
        delivered: i64,
        options: &DurableOptions,
        why: &str,
    ) {
        if delivered < options.max_deliver {
            let _ = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
            return;
        }
        self.dead_letter(&message, subject, delivered, why).await;
    }

    /// Stores `message` on the dead-letter subject with why it failed, then takes it off
    /// the stream, and raises [`NetworkEvent::DeadLettered`].
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        subject: &str,
        delivered: i64,
        why: &str,
    ) {
        let (actor, port) = parse_durable_subject(&self.network_id, subject)
            .map(|(a, p)| (a.to_string(), p.to_string()))
            .unwrap_or_else(|| ("?".into(), "?".into()));
        let mut headers = message.headers.clone().unwrap_or_default();
        headers.insert("Reflow-Error", why);
        headers.insert("Reflow-Deliveries", delivered.to_string());
        headers.insert("Reflow-Subject", subject);
        let stored = self
            .jetstream()
            .publish_with_headers(
                dead_subject(&self.network_id, &actor, &port),
                headers,
                message.payload.clone(),
            )
            .await;
        let stored = match stored {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        if let Err(err) = stored {
            tracing::warn!(error = %err, subject, "could not dead-letter a message; it is delivered again");
            let _ = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
            return;
        }
        let _ = message.ack().await;
        tracing::warn!(
            subject,
            deliveries = delivered,
            why,
            "message dead-lettered"
        );
        self.events.send(NetworkEvent::DeadLettered {
            network: self.network_id.to_string(),
            actor,
            port,
            deliveries: delivered.max(0) as u64,
            error: why.to_string(),
        });
    }

    /// `network`'s durable streams, if it is durable: found by its stream, whether or not
    /// an instance runs. Remembered once found.
    pub(crate) async fn find_durable(&self, network: &str) -> Option<DurablePeer> {
        if let Some(peer) = self.durable_peers.lock().get(network) {
            return Some(peer.clone());
        }
        let mut stream = self
            .jetstream()
            .get_stream(stream_name(network))
            .await
            .ok()?;
        let info = stream.info().await.ok()?;
        let actors = info
            .config
            .metadata
            .get("reflow_actors")
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default();
        let peer = DurablePeer { actors };
        self.durable_peers
            .lock()
            .insert(network.to_string(), peer.clone());
        Some(peer)
    }

    /// Whether `network` is known to be durable (after [`Bridge::find_durable`]).
    pub(crate) fn is_durable_peer(&self, network: &str) -> bool {
        self.durable_peers.lock().contains_key(network)
    }

    /// Stores `messages` for `actor`'s `port` on durable `network`, in order, each with a
    /// deduplication id from this sender and its sequence (or `{network}/{id}` for a
    /// confirmed send's `id`); returns once JetStream has stored every one.
    ///
    /// What is not stored (the broker lost, a stream electing a leader) is published
    /// again with the same ids, so JetStream keeps each once: for a stream until it is
    /// stored or the network shuts down, for a confirmed send for the request timeout.
    pub(crate) async fn store_durable(
        &self,
        network: &str,
        actor: &str,
        port: &str,
        messages: Vec<Message>,
        id: Option<&str>,
    ) -> Result<()> {
        let subject = durable_subject(network, actor, port);
        let mut prepared = Vec::with_capacity(messages.len());
        for message in &messages {
            let seq = self.durable_seq.fetch_add(1, Ordering::Relaxed);
            let msg_id = match id {
                Some(id) => format!("{}/{id}", &*self.network_id),
                None => format!(
                    "{}/{}/{}/{seq}",
                    &*self.network_id, &*self.instance_id, self.incarnation
                ),
            };
            prepared.push((msg_id, Bytes::from(message.to_msgpack()?)));
        }
        let deadline = id.map(|_| tokio::time::Instant::now() + self.request_timeout);
        let mut from = 0;
        while from < prepared.len() {
            match self.publish_durable(&subject, &prepared[from..]).await {
                Ok(()) => from = prepared.len(),
                Err((stored, err)) => {
                    from += stored;
                    let out_of_time = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
                    if out_of_time || self.cancel.is_cancelled() {
                        return Err(self.durable_refused(network, err));
                    }
                    tracing::debug!(network, error = %err, "storing again what was not stored");
                    tokio::select! {
                        _ = self.cancel.cancelled() => {}
                        _ = tokio::time::sleep(RETRY_DELAY) => {}
                    }
                }
            }
        }
        self.counters
            .messages_out
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Publishes `batch` and waits for every acknowledgement; on a failure, how many
    /// at its head were stored, and the error.
    async fn publish_durable(
        &self,
        subject: &str,
        batch: &[(String, Bytes)],
    ) -> std::result::Result<(), (usize, String)> {
        let js = self.jetstream();
        let mut acks = Vec::with_capacity(batch.len());
        for (msg_id, payload) in batch {
            let mut headers = HeaderMap::new();
            headers.insert(
                "Reflow-From",
                format!("{}.{}", &*self.network_id, &*self.instance_id),
            );
            let publish = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .headers(headers)
                .message_id(msg_id);
            match js.send_publish(subject.to_string(), publish).await {
                Ok(ack) => acks.push(ack),
                Err(err) => {
                    acks.truncate(0);
                    return Err((0, err.to_string()));
                }
            }
        }
        for (stored, ack) in acks.into_iter().enumerate() {
            if let Err(err) = ack.await {
                return Err((stored, err.to_string()));
            }
        }
        Ok(())
    }

    fn durable_refused(&self, network: &str, err: impl std::fmt::Display) -> Error {
        let err = Error::new(
            ErrorKind::Broker,
            format!("durable network {network:?} did not store a message: {err}"),
        );
        self.note_send_error(network, &err);
        err
    }

    /// Every durable network on the server (found by its stream), with its backlog.
    pub(crate) async fn list_durable(&self) -> Result<Vec<Backlog>> {
        let js = self.jetstream();
        let mut names = js.stream_names();
        let mut networks = Vec::new();
        while let Some(name) = names.next().await {
            let name = name.map_err(|e| stream_error("list streams", "*", e))?;
            if !name.starts_with("REFLOW_DURABLE_") {
                continue;
            }
            let Ok(mut stream) = js.get_stream(&name).await else {
                continue;
            };
            let Ok(info) = stream.info().await else {
                continue;
            };
            if let Some(network) = info.config.metadata.get("reflow_network").cloned() {
                networks.push(network);
            }
        }
        networks.sort();
        let mut backlogs = Vec::with_capacity(networks.len());
        for network in networks {
            backlogs.push(self.backlog(&network).await?);
        }
        Ok(backlogs)
    }

    /// What waits for durable `network` now.
    pub(crate) async fn backlog(&self, network: &str) -> Result<Backlog> {
        let js = self.jetstream();
        let mut stream = js.get_stream(stream_name(network)).await.map_err(|e| {
            Error::new(
                ErrorKind::NetworkNotConnected,
                format!(
                    "network {network:?} is not durable (no stream {}): {e}",
                    stream_name(network)
                ),
            )
        })?;
        let state = stream
            .info()
            .await
            .map_err(|e| stream_error("read its stream", network, e))?
            .state
            .clone();
        let oldest_age = (state.messages > 0).then(|| {
            let first = state.first_timestamp.unix_timestamp_nanos();
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as i128;
            Duration::from_nanos((now - first).max(0) as u64)
        });
        let dead_lettered = match js.get_stream(dead_stream_name(network)).await {
            Ok(mut dead) => dead.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        Ok(Backlog {
            network_id: network.to_string(),
            pending: state.messages,
            oldest_age,
            dead_lettered,
        })
    }
}
