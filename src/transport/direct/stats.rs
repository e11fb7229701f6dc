//! Counters of the direct transport: what it accepted, refused, sent and received.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::refusal::{Refusal, RefuseCode};

/// A snapshot of a transport's counters, from [`DirectTransport::stats`](super::DirectTransport::stats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectStats {
    /// Inbound connections that completed the handshake.
    pub accepted: u64,
    /// Outbound dials that completed the handshake.
    pub connected: u64,
    /// Connections and links this end refused or cut, by reason.
    pub refused: BTreeMap<RefuseCode, u64>,
    /// Refusals this end received from peers, by reason.
    pub refused_by_peers: BTreeMap<RefuseCode, u64>,
    /// Frames read on established links.
    pub frames_in: u64,
    /// Frames written on established links.
    pub frames_out: u64,
    /// Bytes of frames read on established links, length prefixes included.
    pub bytes_in: u64,
    /// Bytes of frames written on established links, length prefixes included.
    pub bytes_out: u64,
    /// Links open now.
    pub active_links: usize,
}

impl DirectStats {
    /// How many connections this end refused for `code`.
    pub fn refused_for(&self, code: RefuseCode) -> u64 {
        self.refused.get(&code).copied().unwrap_or(0)
    }

    /// How many connections this end refused, for any reason.
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }
}

/// The live counters behind [`DirectStats`], shared by every task of a transport.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    refused: Mutex<BTreeMap<RefuseCode, u64>>,
    refused_by_peers: Mutex<BTreeMap<RefuseCode, u64>>,
    refusing_log: crate::throttle::Throttle,
    refused_log: crate::throttle::Throttle,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a refusal this end sends to `peer`, and logs it (one line per
    /// [`crate::throttle::PERIOD`], saying how many were held back).
    pub(crate) fn refusing(&self, peer: SocketAddr, refusal: &Refusal) {
        *self.refused.lock().entry(refusal.code).or_default() += 1;
        if let Some(held_back) = self.refusing_log.allow() {
            tracing::warn!(
                peer = %peer,
                code = ?refusal.code,
                held_back,
                "refusing direct link: {}",
                crate::throttle::clip(&refusal.to_string())
            );
        }
    }

    /// Counts a refusal received from `peer`, and logs it as [`Counters::refusing`] does;
    /// the reason, which the peer chose, is clipped.
    pub(crate) fn refused_by(&self, peer: &str, code: RefuseCode, reason: &str) {
        *self.refused_by_peers.lock().entry(code).or_default() += 1;
        if let Some(held_back) = self.refused_log.allow() {
            tracing::warn!(
                peer = %peer,
                code = ?code,
                held_back,
                "direct link refused by the peer: {}",
                crate::throttle::clip(reason)
            );
        }
    }

    pub(crate) fn snapshot(&self, active_links: usize) -> DirectStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        DirectStats {
            accepted: load(&self.accepted),
            connected: load(&self.connected),
            refused: self.refused.lock().clone(),
            refused_by_peers: self.refused_by_peers.lock().clone(),
            frames_in: load(&self.frames_in),
            frames_out: load(&self.frames_out),
            bytes_in: load(&self.bytes_in),
            bytes_out: load(&self.bytes_out),
            active_links,
        }
    }
}
