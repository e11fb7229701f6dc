//! What happens to a distributed network, as a stream of events.
//!
//! The bridge, the liveness watcher and the transports all report here. Events go out on
//! a bounded broadcast channel: a subscriber that falls far behind loses the oldest events
//! and receives one [`NetworkEvent::Lagged`] saying how many, rather than holding memory
//! without limit or slowing the bridge down.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Events each subscriber may fall behind by before it starts losing the oldest.
pub(crate) const EVENT_CAPACITY: usize = 4096;

/// Why a network instance went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownReason {
    /// It shut down gracefully and deleted its liveness entry.
    Left,
    /// Its liveness entry expired: it stopped refreshing it (crashed, hung or cut off).
    Expired,
}

/// Which road traffic to a peer takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransportKind {
    /// Through the NATS broker.
    Nats,
    /// Over a direct TCP link.
    Direct,
}

/// Who opened a peer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// This network connected to the peer.
    Outbound,
    /// The peer connected to this network.
    Inbound,
}

/// Something that happened to this network or one it knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum NetworkEvent {
    /// A network instance appeared in the liveness bucket.
    NetworkUp {
        /// Its network id.
        network: String,
        /// Its instance id.
        instance: String,
    },
    /// A network instance went away.
    NetworkDown {
        /// Its network id.
        network: String,
        /// Its instance id.
        instance: String,
        /// Whether it left or its entry expired.
        reason: DownReason,
    },
    /// A connect handshake with a peer network succeeded.
    PeerConnected {
        /// The peer's network id.
        network: String,
        /// The peer instance that answered.
        instance: String,
        /// Which side opened it.
        direction: Direction,
        /// The road its traffic takes.
        transport: TransportKind,
    },
    /// A peer network disconnected, or was disconnected.
    PeerDisconnected {
        /// The peer's network id.
        network: String,
        /// Why, in words.
        reason: String,
    },
    /// A peer refused our connect handshake, or we refused theirs.
    PeerRefused {
        /// The peer's network id or address.
        peer: String,
        /// Why, in words.
        reason: String,
    },
    /// Traffic to a peer moved from one road to another.
    TransportSwitched {
        /// The peer's network id.
        network: String,
        /// The road it left.
        from: TransportKind,
        /// The road it takes now.
        to: TransportKind,
    },
    /// The connection to the NATS broker was lost; the client keeps reconnecting.
    BrokerLost,
    /// The connection to the NATS broker is back.
    BrokerRegained,
    /// The liveness bucket stopped answering while the broker connection is up, or did
    /// not answer when this network joined it: on a leaf node, what the loss of the
    /// leaf's link to the hub that holds the bucket looks like (or, on a cluster, the
    /// bucket's stream without a leader). Until
    /// [`NetworkEvent::LivenessRegained`], this process's entries are not refreshed, so
    /// networks elsewhere see them expire, and what this process knows of networks
    /// elsewhere is as it was when the bucket was last heard (traffic to them may not
    /// get through; streams hold it and send it again).
    LivenessLost {
        /// What the server or the client said, for a person.
        reason: String,
    },
    /// The liveness bucket answers again: entries are refreshed (networks elsewhere see
    /// this process's networks come back up) and the roster is read afresh, so what
    /// happened meanwhile arrives as up and down events.
    LivenessRegained,
    /// A durable network's message failed `max_deliver` times and was moved to its
    /// dead-letter subject, `_reflow_dead.{network}.{actor}.{port}`.
    DeadLettered {
        /// This (durable) network.
        network: String,
        /// The actor it was for.
        actor: String,
        /// The in-port it was for.
        port: String,
        /// How many times it was delivered.
        deliveries: u64,
        /// Why the last delivery failed.
        error: String,
    },
    /// More messages wait in this durable network's stream than its `backlog_limit`.
    BacklogAboveLimit {
        /// This (durable) network.
        network: String,
        /// Messages waiting.
        pending: u64,
        /// The limit.
        limit: u64,
    },
    /// The NATS client dropped inbound messages because a subscription's buffer was full.
    SlowConsumer {
        /// Drops counted so far by this network.
        total_dropped: u64,
    },
    /// This subscriber fell behind and missed this many events.
    Lagged {
        /// How many events were lost to this subscriber.
        missed: u64,
    },
}

/// A stream of [`NetworkEvent`]s, from [`crate::distributed_network::DistributedNetwork::events`].
///
/// Use it as a [`Stream`], or call [`EventStream::recv`]. It ends when the network is
/// dropped.
pub struct EventStream {
    inner: Pin<Box<dyn Stream<Item = NetworkEvent> + Send>>,
}

impl EventStream {
    pub(crate) fn new(receiver: broadcast::Receiver<NetworkEvent>) -> Self {
        let inner = futures::stream::unfold(receiver, |mut receiver| async move {
            let event = match receiver.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => NetworkEvent::Lagged { missed },
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((event, receiver))
        });
        EventStream {
            inner: Box::pin(inner),
        }
    }

    /// The next event, or `None` once the network is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is never lost by dropping this future.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(network: reflow_network::distributed_network::DistributedNetwork) {
    /// use reflow_network::events::NetworkEvent;
    ///
    /// let mut events = network.events();
    /// while let Some(event) = events.recv().await {
    ///     match event {
    ///         NetworkEvent::NetworkUp { network, instance } => println!("{network}/{instance} up"),
    ///         NetworkEvent::NetworkDown { network, instance, .. } => println!("{network}/{instance} down"),
    ///         other => println!("{other:?}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn recv(&mut self) -> Option<NetworkEvent> {
        futures::StreamExt::next(&mut self.inner).await
    }
}

impl Stream for EventStream {
    type Item = NetworkEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<NetworkEvent>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The sending side, shared by everything that reports events.
///
/// The channel is made when the first subscriber asks for it: a network nobody listens
/// to would otherwise hold [`EVENT_CAPACITY`] empty slots (over 300 KiB) for nothing.
/// Nothing is lost by waiting, since a subscriber only ever sees events sent after it
/// subscribed.
#[derive(Clone, Default)]
pub(crate) struct EventSender {
    sender: Arc<OnceLock<broadcast::Sender<NetworkEvent>>>,
    /// The bridge's own view of instances coming and going (see [`EventSender::members`]).
    members: Arc<OnceLock<tokio::sync::mpsc::Sender<NetworkEvent>>>,
}

/// Membership events queued for the bridge, at most; past this the bridge hears one
/// [`NetworkEvent::Lagged`] instead.
const MEMBER_EVENTS: usize = 1024;

impl EventSender {
    pub(crate) fn new() -> Self {
        EventSender::default()
    }

    pub(crate) fn send(&self, event: NetworkEvent) {
        tracing::debug!(?event, "network event");
        if let Some(members) = self.members.get()
            && matches!(
                event,
                NetworkEvent::NetworkUp { .. } | NetworkEvent::NetworkDown { .. }
            )
        {
            use tokio::sync::mpsc::error::TrySendError;
            if let Err(TrySendError::Full(_)) = members.try_send(event.clone()) {
                let _ = members.try_send(NetworkEvent::Lagged { missed: 1 });
            }
        }
        // No subscriber is not an error: events are for whoever listens.
        if let Some(sender) = self.sender.get() {
            let _ = sender.send(event);
        }
    }

    /// The instances of other networks coming and going, for the bridge alone: a bounded
    /// queue that costs nothing until asked for, unlike a broadcast subscription. Asked
    /// for once; a second call gets a stream that ends at once.
    pub(crate) fn members(&self) -> tokio::sync::mpsc::Receiver<NetworkEvent> {
        let (tx, rx) = tokio::sync::mpsc::channel(MEMBER_EVENTS);
        let _ = self.members.set(tx);
        rx
    }

    pub(crate) fn subscribe(&self) -> EventStream {
        let sender = self
            .sender
            .get_or_init(|| broadcast::channel(EVENT_CAPACITY).0);
        EventStream::new(sender.subscribe())
    }
}
