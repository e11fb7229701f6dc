//! Answers to other networks' control requests: ping, actor listing, attach and detach,
//! and both halves of the connect handshake.
//!
//! Requests that one instance can answer for the whole network (`ping`, `actors`,
//! `attach`, `info`) come through a queue subscription in group `{network}`; the ones
//! every instance must hear (`connect`, `disconnect`, `detach`) through a plain one. Discovery on
//! `_reflow.discover` is answered here only over direct links: through the broker, the
//! hub answers it once for every network of the process.

use std::sync::Weak;

use futures::StreamExt;
use futures::stream::SelectAll;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::Bridge;
use crate::discovery::{
    ActorInfo, AttachRequest, ConnectAccept, ConnectRequest, PingReply, proof, reply_bytes,
    verify_proof,
};
use crate::error::{Error, ErrorKind, Result};
use crate::events::{Direction, NetworkEvent, TransportKind};
use crate::message::seal::Purpose;
use crate::subject::{DISCOVER_SUBJECT, control_subject};

/// Verbs one instance answers for the whole network.
#[cfg(test)]
const QUEUED: &[&str] = &["ping", "actors", "attach", "info"];
/// Verbs every instance must hear.
const BROADCAST: &[&str] = &["connect", "disconnect", "detach"];

/// Verbs that change something on the network they are sent to: with an auth token they
/// are sealed, and the gate refuses one that is not sealed for its subject, or is stale.
/// The others (`ping`, `actors`, `info`, `discover`) only read what every network's
/// liveness entry already tells anyone on the server.
const SEALED: &[&str] = &["attach", "detach", "connect", "disconnect"];

/// Whether control requests with `verb` are sealed.
pub(crate) fn is_sealed(verb: &str) -> bool {
    SEALED.contains(&verb)
}

/// One control message, and whether it came through the queue group.
type Control = (bool, async_nats::Message);

/// Subscribes to this network's control subjects: `_reflow.{network}.*` twice, once in
/// queue group `{network}` and once plainly, so a network costs the server two control
/// subscriptions rather than one per verb. Each copy of a message is handled only by the
/// subscription its verb belongs to; control traffic is rare, so the copy the other one
/// drops costs little.
pub(crate) async fn subscribe(
    bridge: &Bridge,
) -> Result<SelectAll<futures::stream::BoxStream<'static, Control>>> {
    let subject = control_subject(&bridge.network_id, "*");
    let failed = |e: async_nats::SubscribeError| {
        Error::with_source(
            ErrorKind::Broker,
            format!("cannot subscribe to {subject}"),
            e,
        )
    };
    let queued = bridge
        .client
        .queue_subscribe(subject.clone(), bridge.network_id.to_string())
        .await
        .map_err(failed)?;
    let broadcast = bridge
        .client
        .subscribe(subject.clone())
        .await
        .map_err(failed)?;
    let mut all = SelectAll::new();
    all.push(queued.map(|m| (true, m)).boxed());
    all.push(broadcast.map(|m| (false, m)).boxed());
    Ok(all)
}

/// Whether the copy of a message on `subject` that came through the queue group (or
/// not, per `queued`) is the one to handle.
fn handles(prefix: &str, subject: &str, queued: bool) -> bool {
    let verb = subject.strip_prefix(prefix).unwrap_or("");
    if queued {
        !BROADCAST.contains(&verb)
    } else {
        BROADCAST.contains(&verb)
    }
}

pub(crate) async fn run(
    bridge: Weak<Bridge>,
    mut subscribers: SelectAll<futures::stream::BoxStream<'static, Control>>,
    cancel: CancellationToken,
) {
    let mut prefix = None;
    loop {
        let message = tokio::select! {
            message = subscribers.next() => message,
            _ = cancel.cancelled() => break,
        };
        let Some((queued, message)) = message else {
            break;
        };
        let Some(bridge) = bridge.upgrade() else {
            break;
        };
        let prefix = prefix.get_or_insert_with(|| control_subject(&bridge.network_id, ""));
        if !handles(prefix, &message.subject, queued) {
            continue;
        }
        let answer = bridge.answer_control(&message.subject, &message.payload);
        if let (Some(reply), Some(body)) = (message.reply, answer)
            && let Err(err) = bridge
                .publish_notice(TransportKind::Nats, "", reply, body)
                .await
        {
            tracing::warn!(error = %err, "could not answer a control request");
        }
    }
}

#[derive(Deserialize)]
struct PingRequest {
    actor: Option<String>,
}

#[derive(Deserialize)]
struct DisconnectNotice {
    network: String,
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, payload: &[u8]) -> Result<T> {
    serde_json::from_slice(payload).map_err(|e| {
        Error::new(
            ErrorKind::Protocol,
            format!("malformed {what} request: {e}"),
        )
    })
}

impl Bridge {
    /// Answers one control message on `subject` (`_reflow.{network}.{verb}`), from the
    /// broker or a direct link; `None` for notices, which get no answer.
    pub(crate) fn answer_control(
        &self,
        subject: &str,
        payload: &bytes::Bytes,
    ) -> Option<bytes::Bytes> {
        let prefix = control_subject(&self.network_id, "");
        let verb = if subject == DISCOVER_SUBJECT {
            "discover"
        } else {
            subject.strip_prefix(prefix.as_str()).unwrap_or("")
        };
        let opened;
        let payload: &[u8] = if is_sealed(verb) {
            match self.admitted(Purpose::Control, subject, payload) {
                Ok((json, _)) => {
                    opened = json;
                    &opened
                }
                Err(err) => return self.refuse_control(verb, subject, payload, err),
            }
        } else {
            payload
        };
        match verb {
            "discover" => Some(reply_bytes(Ok(self.network_info()))),
            "info" => {
                self.hub.served_info();
                Some(reply_bytes(Ok(self.network_info())))
            }
            "ping" => Some(self.answer_ping(payload)),
            "actors" => Some(reply_bytes(Ok(self.actor_infos()))),
            "attach" => Some(reply_bytes(self.answer_attach(payload))),
            "connect" => Some(reply_bytes(self.answer_connect(payload))),
            "disconnect" => {
                self.answer_disconnect(payload);
                None
            }
            "detach" => {
                if let Ok(req) = serde_json::from_slice::<AttachRequest>(payload) {
                    self.detach(&req.actor, &req.reply_to);
                }
                None
            }
            other => {
                tracing::debug!(verb = other, "unknown control verb");
                Some(reply_bytes::<()>(Err(Error::new(
                    ErrorKind::Protocol,
                    format!("unknown control request {subject:?}"),
                ))))
            }
        }
    }

    /// The answer to a control message on `subject` the gate refused with `err`: notices
    /// get none, requests an error; a refused connect is told to the application as
    /// before (naming the network the request claims to be from, unproven).
    fn refuse_control(
        &self,
        verb: &str,
        subject: &str,
        payload: &bytes::Bytes,
        err: Error,
    ) -> Option<bytes::Bytes> {
        self.refused("control request", subject, &err);
        match verb {
            "connect" => {
                let claimed = serde_json::from_slice::<ConnectRequest>(
                    &crate::message::seal::unsealed(payload),
                )
                .map(|r| crate::throttle::clip(&r.network).to_string())
                .unwrap_or_else(|_| "(unreadable)".into());
                let err = Error::new(
                    ErrorKind::AuthenticationFailed,
                    format!(
                        "network {claimed:?} did not prove the auth token of network {:?} \
                         (check that both use the same auth_token): {}",
                        &*self.network_id,
                        err.detail()
                    ),
                );
                tracing::warn!(peer = %claimed, reason = %err, "connect refused");
                self.events.send(NetworkEvent::PeerRefused {
                    peer: claimed,
                    reason: err.to_string(),
                });
                Some(reply_bytes::<()>(Err(err)))
            }
            "attach" => Some(reply_bytes::<()>(Err(err))),
            _ => None,
        }
    }

    fn answer_ping(&self, payload: &[u8]) -> bytes::Bytes {
        let actor = serde_json::from_slice::<PingRequest>(payload)
            .ok()
            .and_then(|p| p.actor);
        if let Some(actor) = &actor
            && !self.local.read().has_actor(actor)
        {
            return reply_bytes::<()>(Err(Error::new(
                ErrorKind::ActorNotFound,
                format!("no actor {actor:?} on network {:?}", &*self.network_id),
            )));
        }
        reply_bytes(Ok(PingReply {
            network: self.network_id.to_string(),
            instance: self.instance_id.to_string(),
            actor,
        }))
    }

    /// What this instance hosts, proxies left out.
    pub(crate) fn actor_infos(&self) -> Vec<ActorInfo> {
        let registry = self.registry.lock();
        self.local
            .read()
            .nodes()
            .into_iter()
            .filter(|node| !registry.contains(&node.id))
            .map(|node| {
                let description = node
                    .metadata
                    .get("description")
                    .and_then(|d| d.as_str())
                    .map(str::to_string)
                    .unwrap_or(node.description);
                let capabilities = metadata_capabilities(&node.metadata);
                ActorInfo {
                    name: node.id.clone(),
                    component_type: node.component.clone(),
                    id: node.id,
                    component: node.component,
                    inports: node.inports,
                    outports: node.outports,
                    description,
                    capabilities,
                    metadata: node.metadata,
                }
            })
            .collect()
    }

    fn answer_attach(&self, payload: &[u8]) -> Result<ActorInfo> {
        let request: AttachRequest = parse("attach", payload)?;
        if !self.local.read().has_actor(&request.actor) || request.actor.starts_with('_') {
            return Err(Error::new(
                ErrorKind::ActorNotFound,
                format!(
                    "no actor {:?} on network {:?}",
                    request.actor, &*self.network_id
                ),
            ));
        }
        // An explicit attach (a registration, a refresh) checks that the actor's egress
        // still fits it; per-message attaches take the fast path.
        if self.egress_outdated(&request.actor) {
            self.rebuild_egress(&request.actor)?;
        }
        self.attach(&request.actor, &request.network, &request.reply_to)?;
        self.actor_infos()
            .into_iter()
            .find(|a| a.id == request.actor)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::ActorNotFound,
                    format!(
                        "no actor {:?} on network {:?}",
                        request.actor, &*self.network_id
                    ),
                )
            })
    }

    fn answer_connect(&self, payload: &[u8]) -> Result<ConnectAccept> {
        let request: ConnectRequest = parse("connect", payload)?;
        let refuse = |err: Error| {
            tracing::warn!(peer = %request.network, reason = %err, "connect refused");
            self.events.send(NetworkEvent::PeerRefused {
                peer: request.network.clone(),
                reason: err.to_string(),
            });
            Err(err)
        };
        if !self.accepting.load(std::sync::atomic::Ordering::Acquire) {
            return refuse(Error::new(
                ErrorKind::Shutdown,
                format!(
                    "network {:?} is not accepting connections",
                    &*self.network_id
                ),
            ));
        }
        if let Some(token) = &self.config.auth_token {
            let parts = [
                "reflow-connect",
                &request.network,
                &self.network_id,
                &request.nonce,
            ];
            let proven = request
                .proof
                .as_deref()
                .is_some_and(|p| verify_proof(token, &parts, p));
            if !proven {
                return refuse(Error::new(
                    ErrorKind::AuthenticationFailed,
                    format!(
                        "network {:?} did not prove the auth token of network {:?} \
                         (check that both use the same auth_token)",
                        request.network, &*self.network_id
                    ),
                ));
            }
        }
        let mut peers = self.peers.lock();
        let max = self.config.max_connections;
        if !peers.has_inbound(&request.network) && peers.inbound_count() >= max {
            drop(peers);
            return refuse(Error::new(
                ErrorKind::MaxConnections,
                format!(
                    "network {:?} already has {max} connections (max_connections = {max})",
                    &*self.network_id
                ),
            ));
        }
        let fresh = !peers.has_inbound(&request.network);
        peers.add(
            Direction::Inbound,
            &request.network,
            &request.instance,
            request.endpoint.clone(),
            TransportKind::Nats,
        );
        drop(peers);
        if fresh {
            tracing::info!(peer = %request.network, "peer connected");
            self.events.send(NetworkEvent::PeerConnected {
                network: request.network.clone(),
                instance: request.instance.clone(),
                direction: Direction::Inbound,
                transport: TransportKind::Nats,
            });
        }
        let accept_proof = self.config.auth_token.as_deref().map(|token| {
            proof(
                token,
                &[
                    "reflow-accept",
                    &self.network_id,
                    &request.network,
                    &request.nonce,
                ],
            )
        });
        Ok(ConnectAccept {
            network: self.network_id.to_string(),
            instance: self.instance_id.to_string(),
            endpoint: self.direct.advertised_endpoint(),
            proof: accept_proof,
        })
    }

    fn answer_disconnect(&self, payload: &[u8]) {
        let Ok(notice) = serde_json::from_slice::<DisconnectNotice>(payload) else {
            return;
        };
        self.detach_network(&notice.network);
        if self
            .peers
            .lock()
            .remove(Direction::Inbound, &notice.network)
            .is_some()
        {
            self.events.send(NetworkEvent::PeerDisconnected {
                network: notice.network.clone(),
                reason: format!("network {:?} disconnected", notice.network),
            });
        }
    }
}

/// The capabilities node metadata declares: the list `capabilities`, and the single
/// `capability` (a string, or a list) that some guides write, in that order, each once.
fn metadata_capabilities(metadata: &crate::actor::Metadata) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for key in ["capabilities", "capability"] {
        let values = match metadata.get(key) {
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        for value in values {
            if !found.contains(&value) {
                found.push(value);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_verb_is_handled_by_one_of_the_two_subscriptions() {
        let prefix = control_subject("prod.ml", "");
        for verb in QUEUED {
            let subject = control_subject("prod.ml", verb);
            assert!(handles(&prefix, &subject, true), "{verb}");
            assert!(!handles(&prefix, &subject, false), "{verb}");
        }
        for verb in BROADCAST {
            let subject = control_subject("prod.ml", verb);
            assert!(!handles(&prefix, &subject, true), "{verb}");
            assert!(handles(&prefix, &subject, false), "{verb}");
        }
        // An unknown verb gets its error answer once.
        let unknown = control_subject("prod.ml", "bogus");
        assert!(handles(&prefix, &unknown, true));
        assert!(!handles(&prefix, &unknown, false));
    }
}
