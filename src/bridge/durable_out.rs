//! Storing what is sent to a durable network. One publisher task per durable peer keeps up
//! to [`IN_FLIGHT`] messages published to its stream and not yet acknowledged by
//! JetStream, so a stream goes at the broker's pace instead of one batch's round trip at
//! a time; a sender waits only when that many (or [`IN_FLIGHT_KIB`]) are outstanding.
//!
//! Messages are published in the order they are handed over. What JetStream does not
//! acknowledge (the broker lost, a stream electing a leader) is published again with the
//! same deduplication id, so it is stored once: a stream's message until it is stored or
//! the network shuts down, a confirmed send until its deadline.

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::pin::pin;
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::Subject;
use async_nats::jetstream::{
    self,
    context::{PublishError, PublishErrorKind},
};
use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Bridge;
use crate::error::{Error, ErrorKind, Result};
use crate::network::Causes;

/// Entries handed to one durable network's publisher and not yet stored, at most.
const IN_FLIGHT: u32 = 1_024;

/// Their bytes at most, in KiB.
const IN_FLIGHT_KIB: u32 = 16 * 1024;

/// Messages handed over together at most, so several parts are in flight at once.
const PART: u32 = 128;

/// How soon what was not stored is published again.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// One entry of a durable network's stream: one message, or several stored together.
pub(crate) struct Entry {
    pub(crate) subject: Subject,
    /// How many messages it holds.
    pub(crate) messages: u64,
    /// Its deduplication id.
    pub(crate) msg_id: String,
    pub(crate) payload: Bytes,
}

/// One entry on its way into a durable network's stream.
struct Item {
    subject: Subject,
    /// How many messages the entry holds.
    messages: u64,
    msg_id: String,
    payload: Bytes,
    done: Done,
    /// Its place among the outstanding messages and bytes, given back when it goes.
    _room: Room,
}

/// Room taken for one message in its publisher's limits, given back when dropped.
struct Room {
    limits: Arc<Limits>,
    kib: u32,
}

impl Drop for Room {
    fn drop(&mut self) {
        self.limits.messages.add_permits(1);
        self.limits.kib.add_permits(self.kib as usize);
        self.limits.left.notify_waiters();
    }
}

/// How many messages, and how many KiB of them, may be outstanding.
struct Limits {
    messages: Semaphore,
    kib: Semaphore,
    /// Told each time messages leave, for [`Outlet::settled`].
    left: Notify,
}

/// What one message takes of [`Limits::kib`].
fn kib_of(payload: &Bytes) -> u32 {
    (payload.len().div_ceil(1024) as u32).clamp(1, IN_FLIGHT_KIB)
}

/// Who hears that a message was stored.
enum Done {
    /// A message of a stream. The causes of its batch ride on the batch's last message:
    /// once that is stored (after every earlier one), they are handled.
    Stream(Option<Causes>),
    /// A confirmed send, told once its message is stored, or that it was not by
    /// `deadline`.
    Confirmed {
        reply: oneshot::Sender<std::result::Result<(), String>>,
        deadline: Instant,
    },
}

impl Item {
    /// JetStream has stored it: counted in `bridge`'s statistics, and told.
    fn stored(self, bridge: &Weak<Bridge>) {
        count_stored(bridge, self.messages);
        match self.done {
            Done::Stream(causes) => {
                if let Some(causes) = causes {
                    causes.release();
                }
            }
            Done::Confirmed { reply, .. } => {
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// It can never be stored (larger than the server takes): a confirmed send is told
    /// `why`; a stream's causes are abandoned, so its sender hears it was not handled.
    fn refused(self, why: &str) {
        tracing::error!(subject = %self.subject, error = why, "a durable entry can never be stored; it is dropped");
        if let Done::Confirmed { reply, .. } = self.done {
            let _ = reply.send(Err(why.to_string()));
        }
    }

    /// A confirmed send past its deadline is told `why` and goes; anything else stays.
    fn expired(self, now: Instant, why: &str) -> Option<Item> {
        match self.done {
            Done::Confirmed { reply, deadline } if now >= deadline => {
                let _ = reply.send(Err(why.to_string()));
                None
            }
            _ => Some(self),
        }
    }
}

/// The publisher of one durable network: hands messages to its task, with backpressure.
pub(crate) struct Outlet {
    js: jetstream::Context,
    bridge: Weak<Bridge>,
    queue: mpsc::UnboundedSender<Vec<Item>>,
    limits: Arc<Limits>,
    cancel: CancellationToken,
}

impl Outlet {
    /// Starts a publisher on `bridge`'s tasks.
    pub(crate) fn start(bridge: &Bridge) -> Outlet {
        let (queue, taken) = mpsc::unbounded_channel();
        // One context for both: its publishes share one limit of acknowledgements.
        let js = jetstream::new(bridge.client.clone());
        let task = Publisher {
            js: js.clone(),
            bridge: bridge.weak_self(),
            cancel: bridge.cancel.clone(),
        };
        bridge.tracker.spawn(task.run(taken));
        Outlet {
            js,
            bridge: bridge.weak_self(),
            queue,
            limits: Arc::new(Limits {
                messages: Semaphore::new(IN_FLIGHT as usize),
                kib: Semaphore::new(IN_FLIGHT_KIB as usize),
                left: Notify::new(),
            }),
            cancel: bridge.cancel.clone(),
        }
    }

    /// Hands `items` over in order, each part once there is room for it.
    async fn hand_over(&self, items: Vec<(Entry, Done)>) -> Result<()> {
        let mut part = Vec::new();
        let mut kib = 0;
        for (entry, done) in items {
            let size = kib_of(&entry.payload);
            if part.len() == PART as usize || kib + size > IN_FLIGHT_KIB {
                self.hand_over_part(std::mem::take(&mut part), kib).await?;
                kib = 0;
            }
            kib += size;
            part.push((entry, done));
        }
        self.hand_over_part(part, kib).await
    }

    /// Takes room for `part` (of `kib` KiB in all) at once, waiting for it, and hands it
    /// over; its messages give their room back one by one as they go.
    async fn hand_over_part(&self, part: Vec<(Entry, Done)>, kib: u32) -> Result<()> {
        if part.is_empty() {
            return Ok(());
        }
        let taken = tokio::select! {
            _ = self.cancel.cancelled() => None,
            taken = async {
                let messages = self.limits.messages.acquire_many(part.len() as u32).await.ok()?;
                let bytes = self.limits.kib.acquire_many(kib).await.ok()?;
                Some((messages, bytes))
            } => taken,
        };
        let shut = || Error::new(ErrorKind::Shutdown, "the network is shutting down");
        let (messages, bytes) = taken.ok_or_else(shut)?;
        messages.forget();
        bytes.forget();
        let items = part
            .into_iter()
            .map(|(entry, done)| Item {
                _room: Room {
                    limits: self.limits.clone(),
                    kib: kib_of(&entry.payload),
                },
                subject: entry.subject,
                messages: entry.messages,
                msg_id: entry.msg_id,
                payload: entry.payload,
                done,
            })
            .collect();
        self.queue.send(items).map_err(|_| shut())
    }

    /// Hands over a stream's entries (subject, deduplication id, payload), in order,
    /// returning once the publisher has them; `causes` are handled once the last of them
    /// is stored.
    pub(crate) async fn stream(&self, entries: Vec<Entry>, causes: Causes) -> Result<()> {
        let mut causes = Some(causes);
        let last = entries.len().saturating_sub(1);
        let items = entries
            .into_iter()
            .enumerate()
            .map(|(i, entry)| {
                let done = Done::Stream(if i == last { causes.take() } else { None });
                (entry, done)
            })
            .collect();
        self.hand_over(items).await
    }

    /// Stores one entry, returning once JetStream has stored it, or with why not by
    /// `deadline`.
    pub(crate) async fn store(
        &self,
        entry: Entry,
        deadline: Instant,
    ) -> std::result::Result<(), String> {
        let late = || {
            "not known to be stored within the request timeout: the broker did not answer, \
             or too much waits to be stored"
                .to_string()
        };
        if self.outstanding() == 0 {
            // Nothing waits ahead of it: it is published here, without the publisher's
            // hops. What fails goes the publisher's way, to be stored again.
            let direct = async {
                let ack = publish(&self.js, &entry.subject, &entry.msg_id, &entry.payload)
                    .await
                    .ok()?;
                ack.await.ok()
            };
            match tokio::time::timeout_at(deadline, direct).await {
                Ok(Some(_)) => {
                    count_stored(&self.bridge, entry.messages);
                    return Ok(());
                }
                Ok(None) => {}
                Err(_) => return Err(late()),
            }
        }
        let (reply, stored) = oneshot::channel();
        let done = Done::Confirmed { reply, deadline };
        tokio::time::timeout_at(deadline, self.hand_over(vec![(entry, done)]))
            .await
            .map_err(|_| late())?
            .map_err(|err| err.detail().to_string())?;
        tokio::time::timeout_at(deadline, stored)
            .await
            .map_err(|_| late())?
            .unwrap_or_else(|_| Err("the network shut down before it was stored".into()))
    }

    /// How many messages are handed over and not yet stored.
    pub(crate) fn outstanding(&self) -> usize {
        IN_FLIGHT as usize - self.limits.messages.available_permits()
    }

    /// Waits until everything handed over is stored, at most until `deadline`; returns
    /// how many are still outstanding.
    pub(crate) async fn settled(&self, deadline: Instant) -> usize {
        loop {
            let mut left = pin!(self.limits.left.notified());
            left.as_mut().enable();
            let outstanding = self.outstanding();
            if outstanding == 0 || Instant::now() >= deadline {
                return outstanding;
            }
            tokio::select! {
                _ = left => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// Counts `messages` as stored in `bridge`'s statistics (`messages_out`).
fn count_stored(bridge: &Weak<Bridge>, messages: u64) {
    if let Some(bridge) = bridge.upgrade() {
        bridge
            .counters
            .messages_out
            .fetch_add(messages, Ordering::Relaxed);
    }
}

/// What a publish's acknowledgement is awaited as.
type AckFuture = <jetstream::context::PublishAckFuture as IntoFuture>::IntoFuture;

/// Publishes one entry with its deduplication id.
async fn publish(
    js: &jetstream::Context,
    subject: &Subject,
    msg_id: &str,
    payload: &Bytes,
) -> std::result::Result<AckFuture, PublishError> {
    let publish = jetstream::message::PublishMessage::build()
        .payload(payload.clone())
        .message_id(msg_id);
    let ack = js.send_publish(subject.clone(), publish).await?;
    Ok(ack.into_future())
}

/// The task that publishes one durable network's messages and follows their
/// acknowledgements.
struct Publisher {
    js: jetstream::Context,
    bridge: Weak<Bridge>,
    cancel: CancellationToken,
}

impl Publisher {
    async fn run(self, mut taken: mpsc::UnboundedReceiver<Vec<Item>>) {
        // Published and not yet acknowledged, in order, with their acknowledgements.
        let mut waiting: VecDeque<Item> = VecDeque::new();
        let mut acks = FuturesOrdered::new();
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return,
                Some(ack) = acks.next(), if !acks.is_empty() => {
                    let item = waiting.pop_front().expect("one message per acknowledgement");
                    match ack {
                        Ok(_) => self.stored(item),
                        Err(err) => {
                            // Those after it may or may not be stored: all go again, with
                            // their ids, and JetStream keeps each once.
                            acks = FuturesOrdered::new();
                            let again = std::iter::once(item).chain(waiting.drain(..)).collect();
                            self.store_again(again, err).await;
                        }
                    }
                }
                part = taken.recv() => {
                    let Some(part) = part else { return };
                    let mut part = part.into_iter();
                    while let Some(item) = part.next() {
                        let published = tokio::select! {
                            _ = self.cancel.cancelled() => return,
                            published = self.publish(&item) => published,
                        };
                        match published {
                            Ok(ack) => {
                                acks.push_back(ack);
                                waiting.push_back(item);
                            }
                            Err(err) => {
                                acks = FuturesOrdered::new();
                                let again = waiting
                                    .drain(..)
                                    .chain(std::iter::once(item))
                                    .chain(part.by_ref())
                                    .collect();
                                self.store_again(again, err).await;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Publishes `item`; the acknowledgement's timer starts when it is first polled.
    async fn publish(&self, item: &Item) -> std::result::Result<AckFuture, PublishError> {
        publish(&self.js, &item.subject, &item.msg_id, &item.payload).await
    }

    fn stored(&self, item: Item) {
        item.stored(&self.bridge);
    }

    /// Publishes `items` again, all at once, until each is stored, its deadline passed,
    /// or the network shuts down.
    async fn store_again(&self, mut items: Vec<Item>, first: PublishError) {
        let mut why = first.to_string();
        let subject = items.first().map(|item| item.subject.to_string());
        tracing::debug!(subject = subject.unwrap_or_default(), error = %why, count = items.len(),
            "storing again what was not stored");
        loop {
            let now = Instant::now();
            items = items
                .into_iter()
                .filter_map(|item| item.expired(now, &why))
                .collect();
            if items.is_empty() {
                return;
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(RETRY_DELAY) => {}
            }
            let mut acks = Vec::with_capacity(items.len());
            for item in &items {
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    published = self.publish(item) => acks.push(published),
                }
            }
            // Their timers run together, so a broker that does not answer costs one
            // timeout, not one per message.
            let answers = futures::future::join_all(acks.into_iter().map(|ack| async move {
                match ack {
                    Ok(ack) => ack.await.map(|_| ()),
                    Err(err) => Err(err),
                }
            }))
            .await;
            // In order: what was stored before the first failure is done (the causes of a
            // batch ride on its last entry, so they are let go only once all before it
            // are stored); from the first failure on, everything goes again, in order,
            // and JetStream keeps what it already has once.
            let mut again = Vec::new();
            for (item, answer) in items.into_iter().zip(answers) {
                match answer {
                    Err(err) if err.kind() == PublishErrorKind::MaxPayloadExceeded => {
                        item.refused(&err.to_string());
                    }
                    Ok(()) if again.is_empty() => self.stored(item),
                    Ok(()) => again.push(item),
                    Err(err) => {
                        why = err.to_string();
                        again.push(item);
                    }
                }
            }
            items = again;
        }
    }
}
