//! The peer networks this instance is connected to, in both directions.
//!
//! A connection is the outcome of a connect handshake. Outbound connections are the ones
//! this network opened (and needs before it may use a peer's actors); inbound ones were
//! opened by peers and count against `max_connections`.

use std::collections::{BTreeMap, BTreeSet};

use crate::discovery::{ConnectionInfo, now_ms};
use crate::events::{Direction, TransportKind};

/// Both directions of the connection table.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    outbound: BTreeMap<String, ConnectionInfo>,
    inbound: BTreeMap<String, ConnectionInfo>,
    /// Connections made over a direct link (by address), which end with that link.
    by_link: BTreeSet<(bool, String)>,
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
        let outbound = direction == Direction::Outbound;
        if transport == TransportKind::Direct {
            self.by_link.insert((outbound, network.to_string()));
        } else {
            self.by_link.remove(&(outbound, network.to_string()));
        }
        match direction {
            Direction::Outbound => self.outbound.insert(network.to_string(), info),
            Direction::Inbound => self.inbound.insert(network.to_string(), info),
        };
    }

    /// Forgets the connections that were made over the direct link to `network`, which
    /// has closed; true if there were any.
    pub(crate) fn remove_direct(&mut self, network: &str) -> bool {
        let mut removed = false;
        for outbound in [true, false] {
            if self.by_link.remove(&(outbound, network.to_string())) {
                let table = if outbound {
                    &mut self.outbound
                } else {
                    &mut self.inbound
                };
                removed |= table.remove(network).is_some();
            }
        }
        removed
    }

    /// The direct endpoint `network` advertised when it connected, or when we did.
    pub(crate) fn endpoint_of(&self, network: &str) -> Option<String> {
        self.outbound
            .get(network)
            .and_then(|c| c.endpoint.clone())
            .or_else(|| self.inbound.get(network).and_then(|c| c.endpoint.clone()))
    }

    /// Records the road traffic to `network` takes now.
    pub(crate) fn set_transport(&mut self, network: &str, transport: TransportKind) {
        for table in [&mut self.outbound, &mut self.inbound] {
            if let Some(info) = table.get_mut(network) {
                info.transport = transport;
            }
        }
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
