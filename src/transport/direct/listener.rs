//! The accept loop: one task that takes connections and hands each to a task of its own
//! for the handshake.
//!
//! Two caps, so that connections which never finish a handshake cannot keep a peer out:
//!
//! * handshakes in progress: at most [`Handshakes::total`] in all and
//!   [`Handshakes::per_source`] from one address, each for at most the handshake timeout;
//!   when all are taken, a connection from an address holding fewer takes the oldest
//!   place of the address holding the most; a connection past the per-address cap, or
//!   finding no place it may take, is told `Refused: too many handshakes in progress` and
//!   closed at once;
//! * established links: a semaphore of `max_connections` permits, taken only once the
//!   handshake has succeeded; a peer that finds none left is told `Refused: max
//!   connections reached (N)`.
//!
//! The loop itself never waits on a connection, so one slow or hostile peer cannot stall
//! the others.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::config::DirectConfig;
use super::handshake::{self, Failure, send_refusal};
use super::link::{self, Parts};
use super::peer::PeerInfo;
use super::refusal::Refusal;
use super::stats::Counters;
use crate::error::{Error, ErrorKind, Result};

/// Binds the listening socket; the error keeps the operating system's words and the address.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|err| {
        Error::with_source(
            ErrorKind::Bind,
            format!("cannot listen for direct links on {addr}"),
            err,
        )
    })
}

/// The address peers should dial: the configured one, else the bound one, with a wildcard
/// IP replaced by one that others can reach.
pub(crate) fn advertised(config: &DirectConfig, bound: Option<SocketAddr>) -> Option<String> {
    if let Some(advertise) = &config.advertise {
        return Some(advertise.clone());
    }
    let bound = bound?;
    let ip = if bound.ip().is_unspecified() {
        primary_ip()
    } else {
        bound.ip()
    };
    Some(SocketAddr::new(ip, bound.port()).to_string())
}

/// The host's primary IPv4 address, or 127.0.0.1 when it has none.
///
/// Connecting a UDP socket sends nothing; the kernel only picks the interface it would
/// route through, and the socket's local address is that interface's. The target is in
/// TEST-NET-1 (RFC 5737), which no one answers.
fn primary_ip() -> IpAddr {
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|socket| {
            socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
            socket.local_addr()
        })
        .map(|addr| addr.ip())
        .ok()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The handshakes in progress, in all and per source address.
///
/// When every place is taken, a connection from an address that holds fewer handshakes
/// than the one holding the most takes the oldest place of that one, which is closed: so
/// addresses that hold many idle sockets cannot keep a peer from another address out,
/// however many of them there are. A peer's handshake takes milliseconds, and an address
/// holding one place is never the one that gives it up.
pub(crate) struct Handshakes {
    total: usize,
    per_source: usize,
    state: Arc<Mutex<Places>>,
}

/// Who holds the places.
#[derive(Default)]
struct Places {
    next_id: u64,
    held: usize,
    /// Per source address, its places oldest first: an id and what closes it.
    by_source: HashMap<IpAddr, std::collections::VecDeque<(u64, CancellationToken)>>,
}

/// A handshake's place: given back when dropped; `evicted` is cancelled when a
/// connection from another address took it.
pub(crate) struct HandshakeSlot {
    id: u64,
    source: IpAddr,
    pub(crate) evicted: CancellationToken,
    state: Arc<Mutex<Places>>,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut state = self.state.lock();
        let Some(places) = state.by_source.get_mut(&self.source) else {
            return;
        };
        let before = places.len();
        places.retain(|(id, _)| *id != self.id);
        let freed = before - places.len();
        if places.is_empty() {
            state.by_source.remove(&self.source);
        }
        state.held -= freed;
    }
}

impl Handshakes {
    /// Room for four times `max_connections` handshakes at once (at least 64), twice
    /// `max_connections` (at least 16) from one address.
    pub(crate) fn new(max_connections: usize) -> Self {
        Handshakes {
            total: Self::total(max_connections),
            per_source: Self::per_source(max_connections),
            state: Arc::default(),
        }
    }

    /// How many handshakes may be in progress at once.
    pub(crate) fn total(max_connections: usize) -> usize {
        max_connections.saturating_mul(4).max(64)
    }

    /// How many of them one source address may hold.
    pub(crate) fn per_source(max_connections: usize) -> usize {
        max_connections.saturating_mul(2).max(16)
    }

    /// A place for a handshake from `source`, if there is one: a free one, or the oldest
    /// of the address holding the most, when that is more than `source` holds.
    fn take(&self, source: IpAddr) -> Option<HandshakeSlot> {
        let mut state = self.state.lock();
        let mine = state.by_source.get(&source).map_or(0, |p| p.len());
        if mine >= self.per_source {
            return None;
        }
        if state.held >= self.total {
            let (victim, most) = state
                .by_source
                .iter()
                .map(|(ip, places)| (*ip, places.len()))
                .max_by_key(|(_, held)| *held)?;
            if most <= mine + 1 {
                return None;
            }
            let places = state.by_source.get_mut(&victim)?;
            let (_, closes) = places.pop_front()?;
            closes.cancel();
            state.held -= 1;
        }
        state.next_id += 1;
        let id = state.next_id;
        let evicted = CancellationToken::new();
        state
            .by_source
            .entry(source)
            .or_default()
            .push_back((id, evicted.clone()));
        state.held += 1;
        Some(HandshakeSlot {
            id,
            source,
            evicted,
            state: self.state.clone(),
        })
    }
}

/// Accepts connections until the transport stops accepting.
pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = shared.accepting.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!("accepting a direct link failed: {err}; retrying in {backoff:?}");
                tokio::select! {
                    _ = shared.accepting.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(10);
        let _ = stream.set_nodelay(true);
        match shared.handshakes.take(addr.ip()) {
            Some(slot) => {
                shared
                    .tracker
                    .spawn(serve(shared.clone(), stream, addr, slot));
            }
            None => {
                let refusal = Refusal::busy();
                let shared = shared.clone();
                shared.tracker.clone().spawn(async move {
                    let (read, write) = stream.into_split();
                    tokio::select! {
                        _ = shared.root.cancelled() => {}
                        _ = send_refusal(&shared.counters, addr, read, write, &refusal) => {}
                    }
                });
            }
        }
    }
    tracing::debug!(addr = ?listener.local_addr().ok(), "direct listener stopped accepting");
}

/// Runs the listener's side of the handshake on one connection, then starts its link
/// (if a link's slot is free) or refuses it.
async fn serve(shared: Arc<Shared>, stream: TcpStream, addr: SocketAddr, slot: HandshakeSlot) {
    let (read, mut write) = stream.into_split();
    let mut reader = handshake::reader(read, shared.config.max_frame_size);
    let limit = shared.config.handshake_timeout;
    let answered = handshake::answer(
        &shared.config,
        shared.endpoint.as_deref(),
        &mut reader,
        &mut write,
    );
    let outcome = tokio::select! {
        _ = shared.root.cancelled() => return,
        // Its place went to a connection from an address holding fewer: closed.
        _ = slot.evicted.cancelled() => {
            tracing::debug!(peer = %addr, "a handshake in progress gave its place to another address's");
            return;
        }
        outcome = tokio::time::timeout(limit, answered) => outcome,
    };
    drop(slot);
    let refusal = match outcome {
        Ok(Ok((identity, welcome))) => {
            let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
                let refusal = Refusal::max_connections(shared.config.max_connections);
                tokio::select! {
                    _ = shared.root.cancelled() => {}
                    _ = send_refusal(&shared.counters, addr, reader.into_inner(), write, &refusal) => {}
                }
                return;
            };
            Counters::add(&shared.counters.accepted, 1);
            let peer = PeerInfo {
                network: identity.network,
                instance: identity.instance,
                endpoint: identity.endpoint,
                addr,
                inbound: true,
            };
            link::start(
                &shared,
                Parts {
                    peer,
                    dialled: None,
                    reader,
                    write,
                    first: Some(welcome),
                    permit: Some(permit),
                },
            );
            return;
        }
        Ok(Err(Failure::Refuse(refusal))) => refusal,
        Ok(Err(Failure::Refused { code, reason })) => {
            shared.counters.refused_by(&addr.to_string(), code, &reason);
            return;
        }
        Ok(Err(Failure::Closed(why))) => {
            tracing::debug!(peer = %addr, "direct connection closed during the handshake: {why}");
            return;
        }
        Err(_) => Refusal::handshake_timeout(limit),
    };
    tokio::select! {
        _ = shared.root.cancelled() => {}
        _ = send_refusal(&shared.counters, addr, reader.into_inner(), write, &refusal) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_are_bounded_in_all_and_per_source_and_slots_come_back() {
        let handshakes = Handshakes::new(4);
        assert_eq!(Handshakes::total(4), 64);
        assert_eq!(Handshakes::per_source(4), 16);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<HandshakeSlot> = (0..16).map(|_| handshakes.take(a).unwrap()).collect();
        assert!(handshakes.take(a).is_none(), "one source past its share");
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let others: Vec<HandshakeSlot> = (0..16).map(|_| handshakes.take(b).unwrap()).collect();
        drop(held);
        assert!(handshakes.take(a).is_some(), "its slots came back");
        drop(others);
        assert!(handshakes.state.lock().by_source.is_empty());
        assert_eq!(handshakes.state.lock().held, 0);
    }

    #[test]
    fn when_every_place_is_taken_the_address_holding_most_gives_up_its_oldest() {
        let handshakes = Handshakes::new(10);
        let (total, per_source) = (Handshakes::total(10), Handshakes::per_source(10));
        assert_eq!((total, per_source), (64, 20));
        let sources: Vec<IpAddr> = (2..=5)
            .map(|i| format!("127.0.0.{i}").parse().unwrap())
            .collect();
        let mut idle = Vec::new();
        for source in &sources {
            while idle.len() < total
                && let Some(slot) = handshakes.take(*source)
            {
                idle.push(slot);
            }
        }
        assert_eq!(idle.len(), total);
        // The last address holds only 4, this one none: it takes the place of the oldest
        // handshake of an address holding the most.
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let slot = handshakes
            .take(peer)
            .expect("a place for a peer from elsewhere");
        // The oldest place of one of the three addresses holding 20 (at 0, 20 or 40).
        let evicted: Vec<usize> = (0..idle.len())
            .filter(|i| idle[*i].evicted.is_cancelled())
            .collect();
        assert!(
            matches!(evicted.as_slice(), [0] | [20] | [40]),
            "{evicted:?}"
        );
        assert!(!slot.evicted.is_cancelled());
        assert_eq!(handshakes.state.lock().held, total);
        // A holder of the most never evicts its own; one holding one place is never
        // evicted by an address that holds as many.
        let full = Handshakes::new(0);
        let one: Vec<HandshakeSlot> = (0..64)
            .map(|i| {
                full.take(IpAddr::from([10, 0, (i / 16) as u8, (i % 16) as u8]))
                    .unwrap()
            })
            .collect();
        assert!(full.take("10.9.9.9".parse().unwrap()).is_none());
        assert!(one.iter().all(|s| !s.evicted.is_cancelled()));
        // The evicted place, dropped by its task, frees nothing twice.
        drop(idle);
        assert_eq!(handshakes.state.lock().held, 1);
        drop(slot);
        assert_eq!(handshakes.state.lock().held, 0);
    }

    #[test]
    fn a_wildcard_bind_advertises_a_reachable_address_on_the_same_port() {
        let config = DirectConfig::new("n", "i");
        let bound: SocketAddr = "0.0.0.0:7100".parse().unwrap();
        let endpoint: SocketAddr = advertised(&config, Some(bound)).unwrap().parse().unwrap();
        assert_eq!(endpoint.port(), 7100);
        assert!(!endpoint.ip().is_unspecified());
    }

    #[test]
    fn the_configured_address_wins_and_no_listener_advertises_nothing() {
        let mut config = DirectConfig::new("n", "i");
        assert_eq!(advertised(&config, None), None);
        let bound: SocketAddr = "127.0.0.1:7100".parse().unwrap();
        assert_eq!(
            advertised(&config, Some(bound)).as_deref(),
            Some("127.0.0.1:7100")
        );
        config.advertise = Some("edge.example:7000".into());
        assert_eq!(
            advertised(&config, Some(bound)).as_deref(),
            Some("edge.example:7000")
        );
    }
}
