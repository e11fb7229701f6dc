//! The peer networks this instance is connected to, in both directions.
//!
//! A connection is the outcome of a connect handshake. Outbound connections are the ones
//! this network opened (and needs before it may use a peer's actors); inbound ones were
//! opened by peers and count against `max_connections`.

use std::collections::BTreeMap;

use crate::discovery::{ConnectionInfo, now_ms};
use crate::events::{Direction, TransportKind};

/// Both directions of the connection table.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    outbound: BTreeMap<String, ConnectionInfo>,
    inbound: BTreeMap<String, ConnectionInfo>,
}

impl Peers {
    pub(crate) fn is_connected(&self, network: &str) -> bool {
        self.outbound.contains_key(network)
    }

    pub(crate) fn inbound_count(&self) -> usize {
        self.inbound.len()
    }

    pub(crate) fn has_inbound(&self, network: &str) -> bool {
        self.inbound.contains_key(network)
    }

    pub(crate) fn add(
        &mut self,
        direction: Direction,
        network: &str,
        instance: &str,
        endpoint: Option<String>,
        transport: TransportKind,
    ) {
        let info = ConnectionInfo {
            network: network.to_string(),
            instance: instance.to_string(),
            direction,
            transport,
            endpoint,
            connected_at_ms: now_ms(),
        };
        match direction {
            Direction::Outbound => self.outbound.insert(network.to_string(), info),
            Direction::Inbound => self.inbound.insert(network.to_string(), info),
        };
    }

    pub(crate) fn remove(&mut self, direction: Direction, network: &str) -> Option<ConnectionInfo> {
        match direction {
            Direction::Outbound => self.outbound.remove(network),
            Direction::Inbound => self.inbound.remove(network),
        }
    }

    /// Connected network ids (outbound), sorted.
    pub(crate) fn connected_networks(&self) -> Vec<String> {
        self.outbound.keys().cloned().collect()
    }

    /// Every connection, outbound first.
    pub(crate) fn all(&self) -> Vec<ConnectionInfo> {
        self.outbound
            .values()
            .chain(self.inbound.values())
            .cloned()
            .collect()
    }

    /// Every network connected in either direction.
    pub(crate) fn every_network(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .outbound
            .keys()
            .chain(self.inbound.keys())
            .cloned()
            .collect();
        all.sort();
        all.dedup();
        all
    }
}
