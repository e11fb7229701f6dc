//! Direct TCP links between networks: the road traffic takes when there is no broker.
//!
//! A [`DirectTransport`] listens on a network's bind port and dials other networks' ports.
//! Each connection starts with a handshake (ids, protocol version, and a mutual proof of
//! the shared token; see `handshake`), then carries the same things NATS carries for the
//! bridge: streamed messages on subjects, request/reply, and pings. What arrives is handed
//! to the owner as [`Inbound`] values through a bounded channel.
//!
//! The parts, one concept each:
//!
//! * [`frame`]: the frames and the length-prefixed codec (`docs/wire.md`, "Direct link");
//! * `handshake`: challenge, hello, welcome, and the HMAC proofs;
//! * `listener`: the accept loop: handshakes in progress capped apart (in all and per
//!   source address), established links by a semaphore of `max_connections` permits;
//! * `link`: one writer and one reader task per link, with bounded queues;
//! * `refusal` and `stats`: why links are refused, and the counters.
//!
//! Every task is spawned on one `TaskTracker` and watches one `CancellationToken`, so
//! [`DirectTransport::shutdown`] can say goodbye on every link, let the queues drain, and
//! know that nothing is left running.
//!
//! ```
//! use bytes::Bytes;
//! use reflow_network::transport::direct::{DirectConfig, DirectTransport, Inbound};
//! use tokio::sync::mpsc;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> reflow_network::Result<()> {
//! let (tx, mut inbox) = mpsc::channel(64);
//! let here = "127.0.0.1:0".parse().ok();
//! let server = DirectTransport::start(DirectConfig::new("server", "s-1"), here, tx).await?;
//!
//! let (tx, _client_inbox) = mpsc::channel(64);
//! let client = DirectTransport::start(DirectConfig::new("client", "c-1"), None, tx).await?;
//! let peer = client.connect(&server.advertised_endpoint().unwrap()).await?;
//! assert_eq!(peer.network, "server");
//!
//! client.publish("server", "server.sum.in", Bytes::from_static(b"1")).await?;
//! loop {
//!     if let Some(Inbound::Message { subject, .. }) = inbox.recv().await {
//!         assert_eq!(subject, "server.sum.in");
//!         break;
//!     }
//! }
//! client.shutdown().await;
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod body;
mod config;
pub mod frame;
mod handshake;
mod link;
mod listener;
mod peer;
mod refusal;
mod stats;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use parking_lot::RwLock;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::DirectConfig;
pub use handshake::token_proof;
pub use peer::{Inbound, PeerInfo, Replier};
pub use refusal::RefuseCode;
pub use stats::DirectStats;

use self::frame::Frame;
use self::link::{Link, Parts};
use self::stats::Counters;
use crate::error::{Error, ErrorKind, Result};

/// A network's direct links: its listener, if it has one, and every link it holds.
///
/// Cloning is cheap and every clone drives the same transport. When the last clone is
/// dropped every task is stopped at once; call [`shutdown`](Self::shutdown) first to close
/// links politely.
///
/// Two links to one network can exist (both ends dialled each other at once, or the peer
/// network runs several instances). Sends to that network always take the oldest link
/// that is still open, so their order holds.
#[derive(Clone)]
pub struct DirectTransport {
    handle: Arc<Handle>,
}

/// Stops every task when the last [`DirectTransport`] clone goes away.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.root.cancel();
    }
}

/// The state every task of a transport shares.
pub(crate) struct Shared {
    pub(crate) config: DirectConfig,
    pub(crate) inbound: mpsc::Sender<Inbound>,
    pub(crate) counters: Counters,
    pub(crate) tracker: TaskTracker,
    /// Cancelling it stops every task now.
    pub(crate) root: CancellationToken,
    /// Cancelling it stops the accept loop only.
    pub(crate) accepting: CancellationToken,
    /// One permit per established inbound link, from its handshake's success to its end.
    pub(crate) connections: Arc<Semaphore>,
    /// One permit per inbound handshake in progress, and how many each source address
    /// holds: connections that never finish their handshake are bounded apart from the
    /// links, so they cannot keep a legitimate peer out.
    pub(crate) handshakes: listener::Handshakes,
    /// The address sent to peers in the handshake.
    pub(crate) endpoint: Option<String>,
    local_addr: Option<SocketAddr>,
    links: RwLock<HashMap<String, Vec<Arc<Link>>>>,
    next_link: AtomicU64,
    stopped: AtomicBool,
    /// Where messages on the notice subject go instead of `inbound`.
    pub(crate) notices: OnceLock<Notices>,
}

/// Messages on one subject that must not wait behind data: see
/// [`DirectTransport::route_notices`].
pub(crate) struct Notices {
    pub(crate) subject: String,
    pub(crate) to: mpsc::Sender<Bytes>,
}

impl Notices {
    /// Takes `payload` if it was sent on the notice subject; true when it was (a full
    /// channel drops it: notices must be worth losing).
    pub(crate) fn take(&self, subject: &str, payload: &Bytes) -> bool {
        if subject != self.subject {
            return false;
        }
        let _ = self.to.try_send(payload.clone());
        true
    }
}

impl Shared {
    pub(crate) fn next_link_id(&self) -> u64 {
        self.next_link.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn add_link(&self, link: Arc<Link>) {
        let mut links = self.links.write();
        if self.stopped.load(Ordering::SeqCst) {
            drop(links);
            link.close(
                "the transport is shutting down".into(),
                Some(shutting_down()),
            );
            return;
        }
        links
            .entry(link.peer.network.clone())
            .or_default()
            .push(link);
    }

    pub(crate) fn remove_link(&self, link: &Link) {
        let mut links = self.links.write();
        if let Some(of_network) = links.get_mut(&link.peer.network) {
            of_network.retain(|other| other.id != link.id);
            if of_network.is_empty() {
                links.remove(&link.peer.network);
            }
        }
    }

    fn check_running(&self) -> Result<()> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Shutdown,
                format!(
                    "the direct transport of '{}' is shut down",
                    self.config.network_id
                ),
            ));
        }
        Ok(())
    }

    /// The link that carries sends to `network`: the oldest open one.
    fn link_to(&self, network: &str) -> Result<Arc<Link>> {
        self.check_running()?;
        self.links
            .read()
            .get(network)
            .and_then(|links| links.first().cloned())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NetworkNotConnected,
                    format!("no direct link to network '{network}'; connect to its address first"),
                )
            })
    }

    /// A link this end dialled at `addr`, or whose peer advertises `addr`.
    fn linked_at(&self, addr: &str) -> Option<Arc<PeerInfo>> {
        self.links.read().values().flatten().find_map(|link| {
            let same = link.dialled.as_deref() == Some(addr)
                || link.peer.endpoint.as_deref() == Some(addr);
            same.then(|| link.peer.clone())
        })
    }

    fn active_links(&self) -> usize {
        self.links.read().values().map(Vec::len).sum()
    }
}

fn shutting_down() -> Frame {
    Frame::Goodbye {
        reason: "shutting down".into(),
    }
}

impl DirectTransport {
    /// Starts a transport: listens on `bind` if given, and hands everything peers send to
    /// `inbound`.
    ///
    /// Fails with `Invalid configuration` naming a bad field, or with `Bind failed` naming
    /// the address and keeping the operating system's words (`Address already in use`,
    /// `Permission denied`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is started until binding has succeeded.
    pub async fn start(
        config: DirectConfig,
        bind: Option<SocketAddr>,
        inbound: mpsc::Sender<Inbound>,
    ) -> Result<Self> {
        config.validate()?;
        let listener = match bind {
            Some(addr) => Some(listener::bind(addr).await?),
            None => None,
        };
        let local_addr = listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let root = CancellationToken::new();
        let shared = Arc::new(Shared {
            endpoint: listener::advertised(&config, local_addr),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            handshakes: listener::Handshakes::new(config.max_connections),
            accepting: root.child_token(),
            root,
            config,
            inbound,
            counters: Counters::default(),
            tracker: TaskTracker::new(),
            local_addr,
            links: RwLock::new(HashMap::new()),
            next_link: AtomicU64::new(1),
            stopped: AtomicBool::new(false),
            notices: OnceLock::new(),
        });
        if let Some(listener) = listener {
            tracing::info!(
                addr = ?local_addr,
                endpoint = ?shared.endpoint,
                network = %shared.config.network_id,
                "listening for direct links"
            );
            shared
                .tracker
                .spawn(listener::accept_loop(shared.clone(), listener));
        }
        Ok(DirectTransport {
            handle: Arc::new(Handle { shared }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// The address the listener is bound to, if there is one.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared().local_addr
    }

    /// The address peers should dial: the configured `advertise`, else the bound address
    /// (a wildcard IP replaced by the host's primary IPv4, or 127.0.0.1 without one).
    pub fn advertised_endpoint(&self) -> Option<String> {
        self.shared().endpoint.clone()
    }

    /// Dials `addr` (`host:port`), runs the handshake, and returns who answered.
    ///
    /// If a link to that address already exists, returns its peer without dialling again.
    /// Fails with `Network disconnected` when nothing listens there (keeping the operating
    /// system's words), `Authentication failed` when either end's token proof is wrong,
    /// `Refused: max connections reached`, `Protocol error` on a version mismatch, and
    /// `Timeout` when the handshake does not finish within `handshake_timeout`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a half-made connection is dropped and no link is registered.
    pub async fn connect(&self, addr: &str) -> Result<Arc<PeerInfo>> {
        let shared = self.shared();
        shared.check_running()?;
        if let Some(peer) = shared.linked_at(addr) {
            return Ok(peer);
        }
        let config = &shared.config;
        let dialled = async {
            let stream = TcpStream::connect(addr).await.map_err(|err| {
                Error::with_source(
                    ErrorKind::NetworkDisconnected,
                    format!("cannot reach direct peer at {addr}"),
                    err,
                )
            })?;
            let _ = stream.set_nodelay(true);
            let peer_addr = stream.peer_addr()?;
            let (read, mut write) = stream.into_split();
            let mut reader = handshake::reader(read, config.max_frame_size);
            let identity = handshake::dial(
                config,
                shared.endpoint.as_deref(),
                &shared.counters,
                (addr, peer_addr),
                &mut reader,
                &mut write,
            )
            .await?;
            Ok::<_, Error>((identity, peer_addr, reader, write))
        };
        let limit = config.handshake_timeout;
        let (identity, peer_addr, reader, write) = tokio::select! {
            _ = shared.root.cancelled() => return Err(shared.check_running().err().unwrap_or_else(|| {
                Error::new(ErrorKind::Shutdown, "the direct transport stopped")
            })),
            dialled = tokio::time::timeout(limit, dialled) => dialled
                .map_err(|_| Error::timeout(format_args!("direct handshake with {addr}"), limit))??,
        };
        if identity.network == config.network_id && identity.instance == config.instance_id {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("{addr} is this transport's own listener"),
            ));
        }
        Counters::add(&shared.counters.connected, 1);
        let link = link::start(
            shared,
            Parts {
                peer: PeerInfo {
                    network: identity.network,
                    instance: identity.instance,
                    endpoint: identity.endpoint,
                    addr: peer_addr,
                    inbound: false,
                },
                dialled: Some(addr.to_owned()),
                reader,
                write,
                first: None,
                permit: None,
            },
        );
        Ok(link.peer.clone())
    }

    /// Streams `payload` on `subject` to `network`, behind everything sent to it before.
    ///
    /// Returns once the frame is queued on the link; waits while the link's queue is full.
    /// Fails with `Network not connected` when there is no link to `network`, `Network
    /// disconnected` when it closes, and `Payload too large` past the frame limit.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if cancelled while waiting for room, the message was not queued.
    pub async fn publish(&self, network: &str, subject: &str, payload: Bytes) -> Result<()> {
        self.shared()
            .link_to(network)?
            .publish(subject, payload)
            .await
    }

    /// Hands the payloads of messages that peers send on `subject` to `to` rather than to
    /// the inbound channel, where they would wait behind data: for notices, such as
    /// acknowledgements, that the data's consumer must not hold up. Never waits: a full
    /// `to` drops the notice. Set once; later calls change nothing.
    pub fn route_notices(&self, subject: impl Into<String>, to: mpsc::Sender<Bytes>) {
        let _ = self.shared().notices.set(Notices {
            subject: subject.into(),
            to,
        });
    }

    /// Queues a small message on `subject` to `network` ahead of the data waiting on the
    /// link, if there is room now; false when there is no link or no room. For notices
    /// that are worth sending only if they cost no wait, such as acknowledgements (what
    /// an unsent one would have acknowledged is sent again, and acknowledged then).
    pub fn offer(&self, network: &str, subject: &str, payload: Bytes) -> bool {
        self.shared().link_to(network).is_ok_and(|link| {
            link.check_size("message", subject.len() + payload.len())
                .is_ok()
                && link.try_control(Frame::Message {
                    subject: subject.to_owned(),
                    payload,
                })
        })
    }

    /// Sends `payload` on `subject` to `network` and waits up to `timeout` for the answer.
    ///
    /// Fails like [`publish`](Self::publish), with `Timeout` when no answer comes in time,
    /// and with `Actor failed` carrying the peer's text when it answers with an error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a late answer to a cancelled request is discarded.
    pub async fn request(
        &self,
        network: &str,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        self.shared()
            .link_to(network)?
            .request(subject, payload, timeout)
            .await
    }

    /// Measures the round trip to `network`: a ping ahead of any queued data, and its pong.
    ///
    /// Waits at most `request_timeout`, then fails with `Timeout`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn ping(&self, network: &str) -> Result<Duration> {
        let timeout = self.shared().config.request_timeout;
        self.shared().link_to(network)?.ping(timeout).await
    }

    /// Whether a link to `network` is open.
    pub fn is_linked(&self, network: &str) -> bool {
        self.shared().links.read().contains_key(network)
    }

    /// Who is at the other end of every open link.
    pub fn peers(&self) -> Vec<Arc<PeerInfo>> {
        let links = self.shared().links.read();
        links
            .values()
            .flatten()
            .map(|link| link.peer.clone())
            .collect()
    }

    /// Closes every link to `network`: what is queued is sent, then a Goodbye.
    ///
    /// Waits for the links to close, at most `shutdown_timeout`, after which they are cut.
    /// Fails with `Network not connected` when there is no link to `network`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the links close anyway; only the wait is abandoned.
    pub async fn disconnect(&self, network: &str) -> Result<()> {
        let shared = self.shared();
        let links = shared.links.write().remove(network).ok_or_else(|| {
            Error::new(
                ErrorKind::NetworkNotConnected,
                format!("no direct link to network '{network}' to disconnect"),
            )
        })?;
        for link in &links {
            link.close(
                "disconnected by this end".into(),
                Some(Frame::Goodbye {
                    reason: format!("'{}' disconnected", shared.config.network_id),
                }),
            );
        }
        let closed = join_all(links.iter().map(|link| link.closed()));
        if tokio::time::timeout(shared.config.shutdown_timeout, closed)
            .await
            .is_err()
        {
            links.iter().for_each(|link| link.cut());
        }
        Ok(())
    }

    /// Stops taking new connections and frees the port; open links stay.
    pub fn stop_accepting(&self) {
        self.shared().accepting.cancel();
    }

    /// Says goodbye on every link after sending what is queued, then stops every task.
    ///
    /// Waits at most `shutdown_timeout` for links to close politely, then cuts the rest.
    /// Afterwards every call fails with `Shut down`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the links close anyway; only the wait is abandoned.
    pub async fn shutdown(&self) {
        let shared = self.shared();
        shared.stopped.store(true, Ordering::SeqCst);
        shared.accepting.cancel();
        let links: Vec<Arc<Link>> = shared.links.write().drain().flat_map(|(_, l)| l).collect();
        for link in &links {
            link.close("this end shut down".into(), Some(shutting_down()));
        }
        shared.tracker.close();
        let limit = shared.config.shutdown_timeout;
        if tokio::time::timeout(limit, shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("direct links did not close within {limit:?}; cutting them");
        }
        shared.root.cancel();
        shared.tracker.wait().await;
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DirectStats {
        let shared = self.shared();
        shared.counters.snapshot(shared.active_links())
    }
}

impl std::fmt::Debug for DirectTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shared = self.shared();
        f.debug_struct("DirectTransport")
            .field("network", &shared.config.network_id)
            .field("instance", &shared.config.instance_id)
            .field("local_addr", &shared.local_addr)
            .field("links", &shared.active_links())
            .finish()
    }
}
