//! The accept loop: one task that takes connections, caps how many are held at once, and
//! hands each to a task of its own for the handshake.
//!
//! The cap is a semaphore with `max_connections` permits. A connection that finds none
//! left is told `Refused: max connections reached (N)` and closed; the loop itself never
//! waits on a connection, so one slow or hostile peer cannot stall the others.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;

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
        match shared.connections.clone().try_acquire_owned() {
            Ok(permit) => {
                shared
                    .tracker
                    .spawn(serve(shared.clone(), stream, addr, permit));
            }
            Err(_) => {
                let refusal = Refusal::max_connections(shared.config.max_connections);
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

/// Runs the listener's side of the handshake on one connection, then starts its link or
/// refuses it.
async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
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
        outcome = tokio::time::timeout(limit, answered) => outcome,
    };
    let refusal = match outcome {
        Ok(Ok((identity, welcome))) => {
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
