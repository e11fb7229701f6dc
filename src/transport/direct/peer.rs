//! What the owner of a transport hears from it: who is linked, and what they send.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use super::frame::Frame;
use super::link::Link;
use crate::error::Result;

/// A peer at the other end of a link, as it introduced itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerInfo {
    /// The peer's network id.
    pub network: String,
    /// The peer's instance id within its network.
    pub instance: String,
    /// The address the peer says it can be dialled on, if it listens.
    pub endpoint: Option<String>,
    /// The socket address of the peer's end of this connection.
    pub addr: SocketAddr,
    /// Whether the peer dialled this end (`true`) or this end dialled it.
    pub inbound: bool,
}

/// Something a transport hands its owner, through the bounded channel given to
/// [`DirectTransport::start`](super::DirectTransport::start).
///
/// A link's events arrive in order: its `PeerUp` first, then its messages and requests as
/// the peer sent them, and its `PeerDown` last. When the owner's channel is full the link
/// stops reading from its socket, so the peer's sends wait; nothing is dropped.
#[derive(Debug)]
pub enum Inbound {
    /// A streamed message.
    Message {
        /// Who sent it.
        peer: Arc<PeerInfo>,
        /// The subject it was published on.
        subject: String,
        /// Its bytes.
        payload: Bytes,
    },
    /// A request; answer it through `reply`.
    Request {
        /// Who sent it.
        peer: Arc<PeerInfo>,
        /// The subject it was sent on.
        subject: String,
        /// Its bytes.
        payload: Bytes,
        /// Sends the one answer back on the link it came from.
        reply: Replier,
    },
    /// A link completed its handshake.
    PeerUp(Arc<PeerInfo>),
    /// A link closed.
    PeerDown {
        /// Who was at the other end.
        peer: Arc<PeerInfo>,
        /// Why it closed.
        reason: String,
    },
}

/// The way back for one [`Inbound::Request`].
///
/// Dropping it unanswered tells the requester at once (it fails with the text "the request
/// was dropped without a reply") rather than leaving it to time out.
pub struct Replier {
    link: Arc<Link>,
    id: u64,
    answered: bool,
}

impl Replier {
    pub(crate) fn new(link: Arc<Link>, id: u64) -> Self {
        Replier {
            link,
            id,
            answered: false,
        }
    }

    /// The request's id on its link.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Answers the request: `Ok` with the reply's bytes, or `Err` with why it failed,
    /// which the requester receives as an error.
    ///
    /// Waits while the link's outbound queue is full. Fails with `Network disconnected`
    /// when the link has closed, and with `Payload too large` when the answer exceeds the
    /// link's frame limit.
    ///
    /// # Cancel safety
    ///
    /// Cancelling drops the answer; the requester then times out.
    pub async fn send(mut self, answer: std::result::Result<Bytes, String>) -> Result<()> {
        self.answered = true;
        let (payload, error) = match answer {
            Ok(payload) => (payload, None),
            Err(error) => (Bytes::new(), Some(error)),
        };
        self.link.check_size("reply", payload.len())?;
        self.link
            .send(Frame::Reply {
                id: self.id,
                payload,
                error,
            })
            .await
    }
}

impl Drop for Replier {
    fn drop(&mut self) {
        if !self.answered {
            self.link.try_control(Frame::Reply {
                id: self.id,
                payload: Bytes::new(),
                error: Some("the request was dropped without a reply".into()),
            });
        }
    }
}

impl fmt::Debug for Replier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replier")
            .field("network", &self.link.peer.network)
            .field("id", &self.id)
            .finish()
    }
}
