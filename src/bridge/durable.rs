//! The bridge's side of durable networks (see [`crate::durable`]): making the streams of a
//! durable network and consuming them as one of its instances; finding a durable peer,
//! and storing what is sent to it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, AckKind, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;

use super::Bridge;
use super::durable_out::{Entry, Outlet};
use crate::discovery::ActorInfo;
use crate::durable::{
    Backlog, DurableOptions, ENTRY_MESSAGES, dead_stream_name, dead_subject, decode_entry,
    durable_entry_subject, durable_subject, entry_payload, parse_durable_subject, stream_error,
    stream_name,
};
use crate::error::{Error, ErrorKind, Result};
use crate::events::NetworkEvent;
use crate::message::Message;
use crate::message::seal::Purpose;
use crate::network::{Cause, Causes, Outcome, Trace};
use async_nats::Subject;

/// The durable consumer every instance of a durable network shares.
const CONSUMER: &str = "instances";

/// Entries the instances of a durable network hold unacknowledged at most (each of up
/// to [`ENTRY_MESSAGES`] messages).
const MAX_ACK_PENDING: i64 = 512;

/// How many handled messages (stream sequence and place in the entry) an instance
/// remembers, to take a redelivery of one it already handled (its acknowledgement lost
/// with a broker, or another message of its entry failed) as a repeat: twice what it can
/// hold unacknowledged.
const REMEMBERED: usize = 2 * MAX_ACK_PENDING as usize * ENTRY_MESSAGES;

/// Entries an instance asks for at a time. Each waits in the client, its `ack_wait`
/// running, until the instance takes it; once taken, it is kept in progress.
const PULL_BATCH: usize = 8;

/// Entries not yet acknowledged whose handled messages an instance remembers.
const UNSETTLED_REMEMBERED: usize = 4 * MAX_ACK_PENDING as usize;

/// How soon a message whose handler failed is delivered again.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// What a sender knows of a durable network: that it is one, and its actors' ports (from
/// the stream's metadata, for when no instance runs to ask).
#[derive(Debug, Clone)]
pub(crate) struct DurablePeer {
    pub(crate) actors: Vec<ActorInfo>,
}

/// Messages this instance handled (or dead-lettered), by stream sequence and place in
/// their entry: recent ones, and those of an entry that comes again (refused, or some of
/// it failed) until it is acknowledged, however many others are handled meanwhile.
#[derive(Default)]
pub(crate) struct Handled {
    recent: parking_lot::Mutex<BTreeSet<(u64, usize)>>,
    unsettled: parking_lot::Mutex<BTreeMap<u64, BTreeSet<usize>>>,
}

impl Handled {
    fn contains(&self, seq: u64, index: usize) -> bool {
        self.recent.lock().contains(&(seq, index))
            || self
                .unsettled
                .lock()
                .get(&seq)
                .is_some_and(|handled| handled.contains(&index))
    }

    fn insert(&self, seq: u64, index: usize) {
        let mut recent = self.recent.lock();
        recent.insert((seq, index));
        while recent.len() > REMEMBERED {
            recent.pop_first();
        }
    }

    /// The entry `seq` comes again (refused, or some of it failed): what was handled of
    /// it is kept until it is acknowledged.
    fn keep_unsettled(&self, seq: u64, handled: &[usize]) {
        let mut unsettled = self.unsettled.lock();
        unsettled.entry(seq).or_default().extend(handled);
        // Entries given to another instance never settle here: the oldest go.
        while unsettled.len() > UNSETTLED_REMEMBERED {
            unsettled.pop_first();
        }
    }

    /// The entry `seq` is acknowledged: it will not come again.
    fn settled(&self, seq: u64) {
        self.unsettled.lock().remove(&seq);
    }
}

/// Which messages of an entry something is about.
#[derive(Debug, Clone)]
enum Items {
    All,
    These(Vec<usize>),
}

/// One stored entry being handled: the outcomes of its messages, gathered, decide what
/// JetStream hears of it once the last is known.
struct Taken {
    message: parking_lot::Mutex<Option<jetstream::Message>>,
    subject: String,
    stream_seq: u64,
    delivered: i64,
    options: DurableOptions,
    remaining: AtomicUsize,
    /// Which of its messages were handled, and which failed.
    handled: parking_lot::Mutex<Vec<usize>>,
    failed: parking_lot::Mutex<Vec<usize>>,
    abandoned: AtomicBool,
}

impl Taken {
    /// The cause of its `index`th message.
    fn cause(self: &Arc<Self>, bridge: &Arc<Bridge>, index: usize) -> Cause {
        let taken = self.clone();
        let bridge = Arc::downgrade(bridge);
        Cause::with_outcome(self.delivered > 1, move |outcome: Outcome| {
            if let Some(bridge) = bridge.upgrade() {
                taken.settle(&bridge, index, outcome);
            }
        })
    }

    /// Notes the outcome of its `index`th message; after the last, acknowledges the entry
    /// (every message handled), delivers it again (one was not handled, or failed and
    /// may be tried again) or dead-letters what failed too often.
    fn settle(self: &Arc<Self>, bridge: &Arc<Bridge>, index: usize, outcome: Outcome) {
        match outcome {
            Outcome {
                handled: true,
                failed: false,
            } => {
                bridge.durable_handled.insert(self.stream_seq, index);
                self.handled.lock().push(index);
            }
            Outcome { handled: false, .. } => self.abandoned.store(true, Ordering::Release),
            Outcome { failed: true, .. } => self.failed.lock().push(index),
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let Some(message) = self.message.lock().take() else {
            return;
        };
        let taken = self.clone();
        let bridge = bridge.clone();
        let tracker = bridge.tracker.clone();
        tracker.spawn(async move {
            let failed = std::mem::take(&mut *taken.failed.lock());
            let handled = std::mem::take(&mut *taken.handled.lock());
            if failed.is_empty() && !taken.abandoned.load(Ordering::Acquire) {
                bridge.durable_handled.settled(taken.stream_seq);
                if let Err(err) = message.ack().await {
                    tracing::debug!(error = %err, "a durable acknowledgement failed; the entry comes again and is taken as a repeat");
                }
                return;
            }
            // It comes again (or what failed is dead-lettered, which settles it): what was
            // handled is taken as a repeat then.
            bridge
                .durable_handled
                .keep_unsettled(taken.stream_seq, &handled);
            if taken.abandoned.load(Ordering::Acquire) {
                let _ = message.ack_with(AckKind::Nak(None)).await;
            } else {
                bridge
                    .retry_or_dead_letter(
                        message,
                        &taken.subject,
                        taken.delivered,
                        &taken.options,
                        "its handler returned an error",
                        Items::These(failed),
                    )
                    .await;
            }
        });
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
        // Made, or brought up to this start's settings (max_ack_pending, ack_wait).
        let consumer: consumer::PullConsumer = stream
            .create_consumer(consumer_config)
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
                        // Few entries wait in the client: their ack_wait runs there.
                        .max_messages_per_batch(PULL_BATCH)
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

    /// Delivers the messages of one stored entry to their actor, in order. The entry is
    /// acknowledged to JetStream once every one is handled, delivered again after a
    /// failure (what was handled here is then taken as a repeat), and what keeps failing
    /// is dead-lettered after `max_deliver` deliveries.
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
        let subject = message.subject.to_string();
        let (actor, port, values) = match self.decode_durable(&subject, &message) {
            Ok(parts) => parts,
            Err(err) if err.kind() == ErrorKind::AuthenticationFailed => {
                // Stored by someone who never proved the token: never delivered, and not
                // kept as a dead letter either (anyone who may publish could fill that).
                self.counters.rejected_in.fetch_add(1, Ordering::Relaxed);
                self.refused("stored message", &subject, &err);
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
            Err(err) => {
                // It can never be read: no retry helps.
                self.dead_letter(&message, &subject, delivered, &err.to_string(), Items::All)
                    .await;
                return;
            }
        };
        let inlet = match inlets.get(&subject) {
            Some(inlet) => inlet.clone(),
            None => match self.lookup_inlet(&actor, &port) {
                Ok(inlet) => {
                    inlets.insert(subject.clone(), inlet.clone());
                    inlet
                }
                Err(err) => {
                    let why = err.to_string();
                    self.retry_or_dead_letter(
                        message,
                        &subject,
                        delivered,
                        options,
                        &why,
                        Items::All,
                    )
                    .await;
                    return;
                }
            },
        };
        let taken = Arc::new(Taken {
            message: parking_lot::Mutex::new(Some(message)),
            subject: subject.clone(),
            stream_seq,
            delivered,
            options: options.clone(),
            remaining: AtomicUsize::new(values.len()),
            handled: Default::default(),
            failed: Default::default(),
            abandoned: AtomicBool::new(false),
        });
        if values.len() > 1 {
            self.keep_in_progress(&taken, options.ack_wait);
        }
        let handled = Outcome {
            handled: true,
            failed: false,
        };
        let mut values = values.into_iter().enumerate();
        while let Some((index, value)) = values.next() {
            if self.durable_handled.contains(stream_seq, index) {
                // Handled here already; the entry's acknowledgement was lost (a broker
                // restart) or another of its messages is tried again.
                self.counters.duplicates_in.fetch_add(1, Ordering::Relaxed);
                taken.settle(self, index, handled);
                continue;
            }
            let cause = taken.cause(self, index);
            if let Err(err) = inlet.send_from(value, Trace::new(None, Some(cause))).await {
                inlets.remove(&subject);
                tracing::debug!(error = %err, "durable message not delivered; JetStream sends it again");
                let abandoned = Outcome {
                    handled: false,
                    failed: false,
                };
                for (index, _) in values.by_ref() {
                    taken.settle(self, index, abandoned);
                }
                return;
            }
            self.counters.messages_in.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Tells JetStream that the entry `taken` is in progress, now (its `ack_wait` ran while
    /// it waited behind others) and every half `ack_wait` until it is acknowledged, so an
    /// entry of many messages is not given to another instance while this one works
    /// through it.
    fn keep_in_progress(&self, taken: &Arc<Taken>, ack_wait: Duration) {
        let taken = Arc::downgrade(taken);
        let cancel = self.cancel.clone();
        let every = (ack_wait / 2).max(Duration::from_millis(100));
        self.tracker.spawn(async move {
            loop {
                let message = {
                    let Some(taken) = taken.upgrade() else { return };
                    let Some(message) = taken.message.lock().clone() else {
                        return;
                    };
                    message
                };
                let _ = message.ack_with(AckKind::Progress).await;
                drop(message);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
    }

    /// The inlet of `actor`'s `port`, with the network's lock held only for the lookup.
    fn lookup_inlet(&self, actor: &str, port: &str) -> Result<crate::network::Inlet> {
        self.local.read().inlet(actor, port)
    }

    /// The actor, port and messages of a stored entry.
    fn decode_durable(
        &self,
        subject: &str,
        message: &jetstream::Message,
    ) -> Result<(String, String, Vec<Message>)> {
        let (actor, port, count) =
            parse_durable_subject(&self.network_id, subject).ok_or_else(|| {
                Error::new(
                    ErrorKind::Protocol,
                    format!("{subject:?} is not a durable subject of this network"),
                )
            })?;
        let payload = self.opened_stored(subject, message)?;
        let values = if count > 1 {
            let values = decode_entry(&payload)?;
            if values.len() != count {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "an entry on {subject:?} holds {} messages, not {count}",
                        values.len()
                    ),
                ));
            }
            values
        } else if super::plain::is_plain_json(message.headers.as_ref()) {
            let json: serde_json::Value = serde_json::from_slice(&payload).map_err(|e| {
                Error::new(
                    ErrorKind::Encoding,
                    format!("marked JSON but not JSON: {e}"),
                )
            })?;
            vec![Message::from_json(json)]
        } else {
            vec![Message::from_msgpack(&payload)?]
        };
        Ok((actor.to_string(), port.to_string(), values))
    }

    /// The payload of a stored message once the gate let it in: with a token, sealed for
    /// its subject and deduplication id (plain JSON is refused); without one, as it is.
    fn opened_stored(&self, subject: &str, message: &jetstream::Message) -> Result<Bytes> {
        if super::plain::is_plain_json(message.headers.as_ref()) {
            self.gate.admit_plain(&self.network_id)?;
            return Ok(message.payload.clone());
        }
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map_or("", |id| id.as_str());
        let binding = super::gate::Gate::stored_binding(subject, id);
        self.admitted(Purpose::Stored, &binding, &message.payload)
            .map(|(payload, _)| payload)
    }

    /// An entry of `messages` for durable `subject` under `msg_id`: sealed for both,
    /// when this network has an auth token.
    fn stored_entry(
        &self,
        subject: String,
        messages: u64,
        msg_id: String,
        payload: Vec<u8>,
    ) -> Entry {
        let binding = super::gate::Gate::stored_binding(&subject, &msg_id);
        let payload = self
            .gate
            .seal(Purpose::Stored, &binding, Bytes::from(payload));
        Entry {
            subject: Subject::from(subject),
            messages,
            msg_id,
            payload,
        }
    }

    /// Delivers `message` again later, or dead-letters `items` of it when it has had
    /// `max_deliver` deliveries.
    async fn retry_or_dead_letter(
        &self,
        message: jetstream::Message,
        subject: &str,
        delivered: i64,
        options: &DurableOptions,
        why: &str,
        items: Items,
    ) {
        if delivered < options.max_deliver {
            let _ = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
            return;
        }
        self.dead_letter(&message, subject, delivered, why, items)
            .await;
    }

    /// Stores `items` of the entry `message` on the dead-letter subject, each message
    /// alone, with why it failed; then acknowledges the entry (what else it held was
    /// handled) and raises [`NetworkEvent::DeadLettered`] for each.
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        subject: &str,
        delivered: i64,
        why: &str,
        items: Items,
    ) {
        let (actor, port, count) = parse_durable_subject(&self.network_id, subject)
            .map(|(a, p, n)| (a.to_string(), p.to_string(), n))
            .unwrap_or_else(|| ("?".into(), "?".into(), 1));
        // The messages to keep: an entry's own, one by one, where it can be read; the
        // payload as it came otherwise.
        let opened = self.opened_stored(subject, message).ok();
        let entry = (count > 1)
            .then(|| decode_entry(opened.as_ref()?).ok())
            .flatten();
        let payloads: Vec<(usize, Bytes)> = match (&entry, &items) {
            (Some(values), items) => {
                let chosen: Vec<usize> = match items {
                    Items::All => (0..values.len()).collect(),
                    Items::These(chosen) => chosen.clone(),
                };
                chosen
                    .into_iter()
                    .filter_map(|i| Some((i, Bytes::from(values.get(i)?.to_msgpack().ok()?))))
                    .collect()
            }
            (None, _) => vec![(0, opened.unwrap_or_else(|| message.payload.clone()))],
        };
        let mut headers = message.headers.clone().unwrap_or_default();
        headers.insert("Reflow-Error", why);
        headers.insert("Reflow-Deliveries", delivered.to_string());
        headers.insert(
            "Reflow-Subject",
            durable_subject(&self.network_id, &actor, &port),
        );
        // Each dead letter gets an id of its own, from its entry's and its place in it: the
        // entry's id alone would have JetStream keep only the first of them.
        let seq = message.info().map_or(0, |info| info.stream_sequence);
        let entry_id = headers
            .get("Nats-Msg-Id")
            .map(|id| id.to_string())
            .unwrap_or_else(|| format!("{}/seq/{seq}", &*self.network_id));
        let js = self.jetstream();
        let dead = dead_subject(&self.network_id, &actor, &port);
        for (index, payload) in &payloads {
            let mut headers = headers.clone();
            headers.insert("Nats-Msg-Id", format!("{entry_id}/{index}"));
            let stored = match js
                .publish_with_headers(dead.clone(), headers, payload.clone())
                .await
            {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(err) => Err(err.to_string()),
            };
            if let Err(err) = stored {
                tracing::warn!(error = %err, subject, "could not dead-letter a message; it is delivered again");
                let _ = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
                return;
            }
            // Kept: should the entry come again, this one is not tried or kept twice.
            self.durable_handled.insert(seq, *index);
            self.durable_handled.keep_unsettled(seq, &[*index]);
        }
        self.durable_handled.settled(seq);
        let _ = message.ack().await;
        for _ in &payloads {
            tracing::warn!(
                subject,
                deliveries = delivered,
                why,
                "message dead-lettered"
            );
            self.events.send(NetworkEvent::DeadLettered {
                network: self.network_id.to_string(),
                actor: actor.clone(),
                port: port.clone(),
                deliveries: delivered.max(0) as u64,
                error: why.to_string(),
            });
        }
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

    /// The publisher of durable `network`'s stream, started on first use.
    fn durable_outlet(&self, network: &str) -> Arc<Outlet> {
        self.durable_outlets
            .lock()
            .entry(network.to_string())
            .or_insert_with(|| Arc::new(Outlet::start(self)))
            .clone()
    }

    /// The deduplication id of this sender's next durable message.
    fn durable_msg_id(&self) -> String {
        let seq = self.durable_seq.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}/{}/{}/{seq}",
            &*self.network_id, &*self.instance_id, self.incarnation
        )
    }

    /// Hands `messages` for `actor`'s `port` on durable `network` to its publisher, in
    /// order. A backlog is stored in entries of up to [`ENTRY_MESSAGES`] messages (and
    /// half the server's `max_payload`), one alone under the plain durable subject; each
    /// entry has a deduplication id from this sender and its sequence. Returns once the
    /// publisher has them (waiting while too many are outstanding); `causes` are handled
    /// once JetStream has stored the last. What is not stored is published again with
    /// the same ids until it is, or the network shuts down.
    pub(crate) async fn store_durable(
        &self,
        network: &str,
        actor: &str,
        port: &str,
        messages: Vec<Message>,
        causes: Causes,
    ) -> Result<()> {
        let subject = durable_subject(network, actor, port);
        let mut encoded = Vec::with_capacity(messages.len());
        for message in &messages {
            encoded.push(self.durable_payload(&subject, message)?);
        }
        let room = self.max_payload() / 2;
        let mut entries = Vec::new();
        let mut rest = encoded.as_slice();
        while !rest.is_empty() {
            let mut count = 1;
            let mut bytes = rest[0].len();
            while count < rest.len().min(ENTRY_MESSAGES) && bytes + rest[count].len() <= room {
                bytes += rest[count].len();
                count += 1;
            }
            let (part, after) = rest.split_at(count);
            let (subject, payload) = match part {
                [message] => (subject.clone(), message.clone()),
                _ => (
                    durable_entry_subject(network, actor, port, count),
                    entry_payload(part),
                ),
            };
            entries.push(self.stored_entry(subject, count as u64, self.durable_msg_id(), payload));
            rest = after;
        }
        self.durable_outlet(network).stream(entries, causes).await
    }

    /// `message` encoded for `subject`, or why the server cannot take it.
    fn durable_payload(&self, subject: &str, message: &Message) -> Result<Vec<u8>> {
        let bytes = message.to_msgpack()?;
        let max = self.max_payload();
        // Room for the headers (the deduplication id) besides the payload.
        if bytes.len().saturating_add(1024) > max {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "a message for {subject} is {} bytes; the server's max_payload is {max} \
                     bytes (raise max_payload in the server config, or send it in parts)",
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }

    /// Stores one confirmed send for `actor`'s `port` on durable `network`, with the
    /// deduplication id `{sender network}/{id}` (or one from this sender's sequence);
    /// returns once JetStream has stored it, or fails after the request timeout.
    pub(crate) async fn store_durable_confirmed(
        &self,
        network: &str,
        actor: &str,
        port: &str,
        message: &Message,
        id: Option<&str>,
    ) -> Result<()> {
        let subject = durable_subject(network, actor, port);
        let payload = self.durable_payload(&subject, message)?;
        let msg_id = match id {
            Some(id) => format!("{}/{id}", &*self.network_id),
            None => self.durable_msg_id(),
        };
        let entry = self.stored_entry(subject, 1, msg_id, payload);
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        self.durable_outlet(network)
            .store(entry, deadline)
            .await
            .map_err(|err| self.durable_refused(network, err))
    }

    /// Waits until what was handed to every durable network's publisher is stored, at
    /// most until `limit` has passed; what is still outstanding then is logged.
    pub(crate) async fn await_stored(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let outlets: Vec<(String, Arc<Outlet>)> = self
            .durable_outlets
            .lock()
            .iter()
            .map(|(network, outlet)| (network.clone(), outlet.clone()))
            .collect();
        for (network, outlet) in outlets {
            let outstanding = outlet.settled(deadline).await;
            if outstanding > 0 {
                tracing::warn!(
                    network,
                    "shutting down with {outstanding} messages for durable network \
                     {network:?} not yet stored"
                );
            }
        }
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
        // An entry of several messages counts as that many: its subject says how many.
        let mut pending = state.messages;
        if state.messages > 0 {
            let entries = format!("{}.*", durable_subject(network, "*", "*"));
            let mut subjects = stream
                .info_with_subjects(entries)
                .await
                .map_err(|e| stream_error("count its entries", network, e))?;
            while let Some(counted) = subjects.next().await {
                let (subject, entries) =
                    counted.map_err(|e| stream_error("count its entries", network, e))?;
                if let Some((_, _, count)) = parse_durable_subject(network, &subject) {
                    pending += entries as u64 * (count as u64 - 1);
                }
            }
        }
        let dead_lettered = match js.get_stream(dead_stream_name(network)).await {
            Ok(mut dead) => dead.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        Ok(Backlog {
            network_id: network.to_string(),
            pending,
            oldest_age,
            dead_lettered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_handled_of_an_unacknowledged_entry_outlives_the_recent_window() {
        let handled = Handled::default();
        handled.insert(1, 5);
        // Entry 1 had a message fail: it comes again.
        handled.keep_unsettled(1, &[5]);
        // Far more messages of later entries than the recent window holds.
        for index in 0..REMEMBERED + 10 {
            handled.insert(2 + (index / ENTRY_MESSAGES) as u64 % 8, index);
        }
        assert!(!handled.recent.lock().contains(&(1, 5)));
        assert!(handled.contains(1, 5), "entry 1 is not acknowledged yet");
        assert!(!handled.contains(1, 6));
        handled.settled(1);
        assert!(!handled.contains(1, 5));
    }
}
