//! The calling side: connecting to peers, registering their actors behind proxies, and
//! confirmed sends.

use std::sync::atomic::Ordering;

use serde_json::json;

use super::Bridge;
use super::inbound::return_prefix;
use super::proxy::RemoteProxy;
use super::registry::{ConflictResolutionStrategy, RemoteActorInfo};
use crate::discovery::{
    ActorInfo, AttachRequest, ConnectAccept, ConnectRequest, nonce, proof, verify_proof,
};
use crate::error::{Error, ErrorKind, Result};
use crate::events::{Direction, NetworkEvent, TransportKind};
use crate::message::Message;
use crate::message::seal::Purpose;
use crate::subject::{data_subject, validate_name, validate_network_id};

impl Bridge {
    fn not_connected(&self, network: &str) -> Error {
        Error::new(
            ErrorKind::NetworkNotConnected,
            format!(
                "network {network:?} is not connected to {:?}; call connect_to_network({network:?}) first",
                &*self.network_id
            ),
        )
    }

    pub(crate) fn require_connected(&self, network: &str) -> Result<()> {
        if self.peers.lock().is_connected(network) || self.is_durable_peer(network) {
            Ok(())
        } else {
            Err(self.not_connected(network))
        }
    }

    /// Connects to `endpoint`: a network id, through the broker, or `host:port`, a direct
    /// link whose handshake tells the peer's network id.
    pub(crate) async fn connect_peer(&self, endpoint: &str) -> Result<()> {
        match direct_address(endpoint) {
            Some(addr) => self.connect_direct(addr).await,
            None => {
                let connected = self.connect_over_broker(endpoint).await;
                // A durable network is reachable through its stream, up or down.
                let durable = self.find_durable(endpoint).await.is_some();
                match connected {
                    Err(err) if durable && err.is(ErrorKind::NetworkDisconnected) => {
                        tracing::info!(
                            network = endpoint,
                            "durable network is down; what is sent to it is stored"
                        );
                        Ok(())
                    }
                    other => other,
                }
            }
        }
    }

    async fn connect_direct(&self, addr: &str) -> Result<()> {
        let peer = self.direct.connect(addr).await?;
        let fresh = {
            let mut peers = self.peers.lock();
            let fresh = !peers.is_connected(&peer.network);
            peers.add(
                Direction::Outbound,
                &peer.network,
                &peer.instance,
                peer.endpoint.clone().or_else(|| Some(addr.to_string())),
                TransportKind::Direct,
            );
            fresh
        };
        if fresh {
            tracing::info!(peer = %peer.network, addr, "connected over a direct link");
            self.events.send(NetworkEvent::PeerConnected {
                network: peer.network.clone(),
                instance: peer.instance.clone(),
                direction: Direction::Outbound,
                transport: TransportKind::Direct,
            });
        }
        Ok(())
    }

    /// The connect handshake with `network` through the broker.
    async fn connect_over_broker(&self, network: &str) -> Result<()> {
        validate_network_id(network)?;
        if network == &*self.network_id {
            return Err(Error::new(
                ErrorKind::InvalidName,
                format!("network {network:?} cannot connect to itself"),
            ));
        }
        if self.peers.lock().is_connected(network) {
            return Ok(());
        }
        let nonce = nonce();
        let token = self.config.auth_token.as_deref();
        let request = ConnectRequest {
            network: self.network_id.to_string(),
            instance: self.instance_id.to_string(),
            proof: token.map(|t| proof(t, &["reflow-connect", &self.network_id, network, &nonce])),
            nonce: nonce.clone(),
            endpoint: self.direct.advertised_endpoint(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let accepted: ConnectAccept = match self.control_request(network, "connect", &request).await
        {
            Ok(accepted) => accepted,
            Err(err) => {
                self.events.send(NetworkEvent::PeerRefused {
                    peer: network.to_string(),
                    reason: err.to_string(),
                });
                return Err(err);
            }
        };
        if let Some(token) = token {
            let parts = ["reflow-accept", network, &self.network_id, &nonce];
            if !accepted
                .proof
                .as_deref()
                .is_some_and(|p| verify_proof(token, &parts, p))
            {
                return Err(Error::new(
                    ErrorKind::AuthenticationFailed,
                    format!("network {network:?} could not prove it knows the auth token"),
                ));
            }
        }
        self.peers.lock().add(
            Direction::Outbound,
            network,
            &accepted.instance,
            accepted.endpoint.clone(),
            TransportKind::Nats,
        );
        tracing::info!(peer = network, "connected");
        self.events.send(NetworkEvent::PeerConnected {
            network: network.to_string(),
            instance: accepted.instance,
            direction: Direction::Outbound,
            transport: TransportKind::Nats,
        });
        Ok(())
    }

    /// Ends the connection to `network`, telling it so.
    pub(crate) async fn disconnect_peer(&self, network: &str, reason: &str) -> Result<()> {
        if self
            .peers
            .lock()
            .remove(Direction::Outbound, network)
            .is_none()
        {
            return Err(self.not_connected(network));
        }
        let notice = json!({ "network": &*self.network_id, "instance": &*self.instance_id });
        let (subject, body) =
            self.control_message(network, "disconnect", serde_json::to_vec(&notice)?);
        self.publish_notice(TransportKind::Nats, network, subject.into(), body)
            .await?;
        self.events.send(NetworkEvent::PeerDisconnected {
            network: network.to_string(),
            reason: reason.to_string(),
        });
        Ok(())
    }

    /// Says goodbye to every peer, in both directions (graceful shutdown).
    pub(crate) async fn disconnect_all(&self) {
        let networks = self.peers.lock().every_network();
        let notice = json!({ "network": &*self.network_id, "instance": &*self.instance_id });
        let Ok(body) = serde_json::to_vec(&notice) else {
            return;
        };
        for network in networks {
            let (subject, body) = self.control_message(&network, "disconnect", body.clone());
            let _ = self
                .publish_notice(TransportKind::Nats, &network, subject.into(), body)
                .await;
        }
    }

    /// Puts a proxy for `actor` on `network` into the local graph.
    pub(crate) async fn register_remote(
        &self,
        actor: &str,
        network: &str,
        strategy: ConflictResolutionStrategy,
    ) -> Result<String> {
        validate_name("actor", actor)?;
        validate_network_id(network)?;
        self.require_connected(network)?;
        let alias = {
            let registry = self.registry.lock();
            let local = self.local.read();
            strategy.resolve(actor, network, |name| {
                registry.contains(name) || local.node(name).is_some()
            })?
        };
        let token = self.registry.lock().token_for(&alias);
        let reply_to = format!(
            "{}.{token}",
            return_prefix(&self.network_id, &self.instance_id)
        );
        let request = AttachRequest {
            network: self.network_id.to_string(),
            actor: actor.to_string(),
            reply_to: reply_to.clone(),
        };
        let remote: ActorInfo = match self.control_request(network, "attach", &request).await {
            Ok(remote) => remote,
            // A durable network that is down: its ports from its stream.
            Err(err) if self.is_durable_peer(network) => self
                .find_durable(network)
                .await
                .and_then(|peer| peer.actors.into_iter().find(|a| a.id == actor))
                .ok_or(err)?,
            Err(err) => return Err(err),
        };
        let proxy = RemoteProxy::new(
            self.weak_self(),
            network,
            actor,
            remote.inports.clone(),
            remote.outports.clone(),
            reply_to,
        );
        let metadata = [
            ("remote_network".to_string(), json!(network)),
            ("remote_actor".to_string(), json!(actor)),
        ]
        .into_iter()
        .collect();
        // Registry first: the moment the node exists, returns for it may arrive.
        let component = RemoteProxy::component(
            self.weak_self(),
            network,
            actor,
            remote.inports.clone(),
            remote.outports.clone(),
        );
        let info = RemoteActorInfo {
            alias: alias.clone(),
            network_id: network.to_string(),
            actor_id: actor.to_string(),
            inports: remote.inports,
            outports: remote.outports,
            token,
        };
        {
            let mut registry = self.registry.lock();
            if registry.contains(&alias) {
                return Err(Error::new(
                    ErrorKind::NameConflict,
                    format!("{alias:?} was registered meanwhile by another call"),
                ));
            }
            registry.insert(info);
        }
        // The alias is a component too: `add_node("mine", alias, ..)` makes another proxy of
        // the same actor, whose outputs come back to it alone.
        let added = {
            let mut local = self.local.write();
            local
                .add_bridge_node(&alias, "remote", Box::new(proxy), metadata, false)
                .and_then(|()| local.register_factory(&alias, move || Box::new(component.clone())))
        };
        if let Err(err) = added {
            self.registry.lock().remove(&alias);
            return Err(err);
        }
        tracing::info!(alias = %alias, actor, network, "remote actor registered");
        Ok(alias)
    }

    /// Removes the proxy `alias` and tells its network to stop returning outputs to it.
    pub(crate) async fn unregister_remote(&self, alias: &str) -> Result<RemoteActorInfo> {
        let info = self.registry.lock().remove(alias).ok_or_else(|| {
            Error::new(
                ErrorKind::ActorNotFound,
                format!("no remote actor is registered as {alias:?}"),
            )
        })?;
        {
            let mut local = self.local.write();
            local.remove_component(alias);
            if let Err(err) = local.remove_node(alias) {
                tracing::debug!(error = %err, "proxy node already gone");
            }
        }
        self.send_detach(&info).await;
        Ok(info)
    }

    /// Asks the network of proxy `alias` for its actor's ports again (re-attaching its
    /// return subject), and makes the proxy anew when they changed, keeping every
    /// connection whose port still exists.
    pub(crate) async fn refresh_remote(&self, alias: &str) -> Result<RemoteActorInfo> {
        let info = self.registry.lock().get(alias).ok_or_else(|| {
            Error::new(
                ErrorKind::ActorNotFound,
                format!("no remote actor is registered as {alias:?}"),
            )
        })?;
        let reply_to = format!(
            "{}.{}",
            return_prefix(&self.network_id, &self.instance_id),
            info.token
        );
        let request = AttachRequest {
            network: self.network_id.to_string(),
            actor: info.actor_id.clone(),
            reply_to: reply_to.clone(),
        };
        let remote: ActorInfo = self
            .control_request(&info.network_id, "attach", &request)
            .await?;
        if remote.inports == info.inports && remote.outports == info.outports {
            return Ok(info);
        }
        let fresh = RemoteActorInfo {
            inports: remote.inports.clone(),
            outports: remote.outports.clone(),
            ..info.clone()
        };
        let proxy = RemoteProxy::new(
            self.weak_self(),
            &info.network_id,
            &info.actor_id,
            remote.inports.clone(),
            remote.outports.clone(),
            reply_to,
        );
        let component = RemoteProxy::component(
            self.weak_self(),
            &info.network_id,
            &info.actor_id,
            remote.inports,
            remote.outports,
        );
        let mut local = self.local.write();
        let kept: Vec<crate::network::Connector> = local
            .connections()
            .iter()
            .filter(|c| {
                (c.from.actor != alias || fresh.outports.contains(&c.from.port))
                    && (c.to.actor != alias || fresh.inports.contains(&c.to.port))
                    && (c.from.actor == alias || c.to.actor == alias)
            })
            .cloned()
            .collect();
        let metadata = local
            .node(alias)
            .map(|node| node.metadata.clone())
            .unwrap_or_default();
        local.remove_node(alias)?;
        local.add_bridge_node(alias, "remote", Box::new(proxy), metadata, false)?;
        local.register_factory(alias, move || Box::new(component.clone()))?;
        for connector in kept {
            local.add_connection(connector)?;
        }
        self.registry.lock().insert(fresh.clone());
        tracing::info!(alias, "remote actor's ports changed; proxy made anew");
        Ok(fresh)
    }

    /// Tells `info`'s network to stop returning outputs to its proxy.
    pub(crate) async fn send_detach(&self, info: &RemoteActorInfo) {
        let notice = AttachRequest {
            network: self.network_id.to_string(),
            actor: info.actor_id.clone(),
            reply_to: format!(
                "{}.{}",
                return_prefix(&self.network_id, &self.instance_id),
                info.token
            ),
        };
        if let Ok(body) = serde_json::to_vec(&notice) {
            let (subject, body) = self.control_message(&info.network_id, "detach", body);
            let _ = self
                .publish_notice(TransportKind::Nats, &info.network_id, subject.into(), body)
                .await;
        }
    }

    /// Registers a proxy node made from a remote actor's component once it starts as
    /// `node`: its own return token, so the outputs of what it sends come back to it.
    pub(crate) fn register_component_proxy(
        &self,
        node: &str,
        proxy: &RemoteProxy,
    ) -> Result<String> {
        let mut registry = self.registry.lock();
        if registry.contains(node) {
            return Err(Error::new(
                ErrorKind::NameConflict,
                format!("{node:?} is already a registered remote actor"),
            ));
        }
        let token = registry.token_for(node);
        registry.insert(RemoteActorInfo {
            alias: node.to_string(),
            network_id: proxy.network.to_string(),
            actor_id: proxy.actor.to_string(),
            inports: proxy.inports.clone(),
            outports: proxy.outports.clone(),
            token: token.clone(),
        });
        Ok(format!(
            "{}.{token}",
            return_prefix(&self.network_id, &self.instance_id)
        ))
    }

    /// Sends one message and waits until the remote network has handled it; `id` makes
    /// a retry safe (see `DistributedNetwork::send_to_remote_actor_with_id`).
    pub(crate) async fn send_confirmed(
        &self,
        network: &str,
        actor: &str,
        port: &str,
        message: Message,
        id: Option<&str>,
    ) -> Result<crate::durable::Delivery> {
        validate_network_id(network)?;
        validate_name("actor", actor)?;
        validate_name("port", port)?;
        self.require_connected(network)?;
        if self.is_durable_peer(network) {
            self.store_durable_confirmed(network, actor, port, &message, id)
                .await?;
            return Ok(crate::durable::Delivery::Stored);
        }
        let seq = self.confirmed_seq.fetch_add(1, Ordering::Relaxed);
        // Every confirmed send carries an id, made here when the caller gave none (this
        // start's incarnation and the send's number: unique without asking the OS for
        // randomness): the receiver remembers it for longer than the seal is fresh, so a
        // captured send replayed is answered again, never handled again.
        let made;
        let key = match id {
            Some(id) => id,
            None => {
                made = format!("~{}.{seq}", self.incarnation);
                made.as_str()
            }
        };
        let payload = crate::message::EnvelopeRef {
            version: crate::message::WIRE_VERSION,
            network: &self.network_id,
            instance: &self.instance_id,
            seq,
            message: &message,
            reply_to: None,
            acked_below: None,
            key: Some(key),
        }
        .encode(None)?;
        let payload = self.wire(
            Purpose::Confirmed,
            &data_subject(network, actor, port),
            payload,
        );
        // With an id, every try goes to the same instance while it lives, so that the
        // one that saw the id answers the retry (see `Bridge::instance_for`).
        let addressed = id
            .filter(|_| self.broker.is_up())
            .and_then(|id| self.instance_for(network, id));
        let subject = match addressed {
            Some(instance) => format!(
                "{}.{actor}.{port}",
                super::inbound::addressed_prefix(network, &instance)
            ),
            None => data_subject(network, actor, port),
        };
        let reply = self
            .request(network, subject, payload, self.request_timeout)
            .await?;
        if reply.is_empty() {
            self.count_out();
            return Ok(crate::durable::Delivery::Delivered);
        }
        crate::discovery::parse_reply::<()>(&format!("network {network:?}"), &reply)
            .map(|()| crate::durable::Delivery::Delivered)
    }
}

impl Bridge {
    /// The live instance of `network` that confirmed sends with `id` go to: the same for
    /// every try while the set of live instances stays the same (a rendezvous choice, so
    /// an instance coming or going moves only the ids it must). `None` when no instance
    /// is known (the broker is down, or the roster is empty): the send then goes to the
    /// network's queue group.
    pub(crate) fn instance_for(&self, network: &str, id: &str) -> Option<String> {
        use std::hash::{Hash, Hasher};
        self.live_instances()
            .into_iter()
            .filter(|info| info.network_id == network)
            .max_by_key(|info| {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                (id, &info.instance_id).hash(&mut hasher);
                hasher.finish()
            })
            .map(|info| info.instance_id)
    }
}

/// `host:port` (an IP or a name, and a port number) when `endpoint` names an address
/// rather than a network id.
fn direct_address(endpoint: &str) -> Option<&str> {
    let (host, port) = endpoint.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && port.parse::<u16>().is_ok() && !endpoint.contains("://"))
        .then_some(endpoint)
}

#[cfg(test)]
mod tests {
    use super::direct_address;

    #[test]
    fn addresses_and_network_ids_are_told_apart() {
        assert_eq!(direct_address("127.0.0.1:8080"), Some("127.0.0.1:8080"));
        assert_eq!(direct_address("hub:8080"), Some("hub:8080"));
        assert_eq!(direct_address("[::1]:8080"), Some("[::1]:8080"));
        assert_eq!(direct_address("main_server"), None);
        assert_eq!(direct_address("prod.ml.training"), None);
        assert_eq!(direct_address("nats://x:4222"), None);
    }
}
