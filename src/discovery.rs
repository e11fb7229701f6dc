//! Request/reply between networks: the control payloads, the connect handshake's proof,
//! and the calls that ask another network something (ping, its actors, attach).
//!
//! Control traffic lives under `_reflow.` and is JSON, so that standard NATS tooling
//! (`nats req _reflow.math.actors ''`) shows it readably; `docs/wire.md` documents it.
//! Every reply is either `{"ok": ...}` or `{"error": {"kind": ..., "message": ...}}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{KeyInit, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::actor::Metadata;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{Direction, TransportKind};

/// What one actor of a network looks like from outside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorInfo {
    /// The actor's id (its node id) in its network.
    pub id: String,
    /// The component it was made from.
    pub component: String,
    /// Its in-ports.
    pub inports: Vec<String>,
    /// Its out-ports.
    pub outports: Vec<String>,
    /// A description: node metadata `description`, else the actor's own.
    pub description: String,
    /// Capabilities from node metadata `capabilities` (a list of strings).
    pub capabilities: Vec<String>,
    /// The node's metadata as given.
    pub metadata: Metadata,
    /// The actor's name: the same as `id`.
    #[serde(default)]
    pub name: String,
    /// The component it was made from: the same as `component`.
    #[serde(default)]
    pub component_type: String,
}

/// Where an instance can be reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    /// Its direct-link endpoint (`host:port`), when it has a bind port.
    pub direct: Option<String>,
    /// The NATS server it is connected to.
    pub nats: Option<String>,
}

/// What a network instance says about itself: the value of its liveness entry and its
/// answer on [`DISCOVER_SUBJECT`](crate::subject::DISCOVER_SUBJECT).
///
/// [`DistributedNetwork::discover_networks`](crate::distributed_network::DistributedNetwork::discover_networks)
/// merges the instances of one network into one value: capabilities, tags and actors are
/// the union over its instances, `instances` lists them all, `instance_count` counts
/// them, and the other fields are those of its first instance by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// The network's id.
    pub network_id: String,
    /// The instance's id within its network.
    pub instance_id: String,
    /// Which start of the instance this is: start time in milliseconds and a random part.
    /// A process restarted with the same `instance_id` has a new incarnation.
    pub incarnation: String,
    /// Where the instance can be reached.
    pub endpoints: Endpoints,
    /// What the network offers, as set by `set_capabilities`.
    pub capabilities: Vec<String>,
    /// Free-form labels such as `region=eu`, as set by `set_tags`.
    pub tags: Vec<String>,
    /// The ids of the actors it hosts (remote-actor proxies left out), sorted.
    pub actors: Vec<String>,
    /// How many actors it hosts.
    pub actor_count: usize,
    /// How many instances the network has: 1 for one instance's own entry.
    pub instance_count: usize,
    /// The instance ids of the network, sorted: the instance's own for a single entry.
    #[serde(default)]
    pub instances: Vec<String>,
    /// How often the instance refreshes its liveness entry, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// The `reflow_network` version the instance runs.
    pub version: String,
    /// When the instance started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// The address that reaches it, as a string: its direct endpoint (`tcp://host:port`)
    /// when it has one, else the NATS server it is connected to.
    #[serde(default)]
    pub endpoint: String,
    /// When this process last heard from it: its liveness entry written or refreshed, or
    /// its answer to discovery. Not part of the entry itself.
    #[serde(skip)]
    pub last_seen: Option<std::time::SystemTime>,
    /// For a durable network, what waits for it, read from its stream by
    /// [`DistributedNetwork::get_network_info`](crate::distributed_network::DistributedNetwork::get_network_info).
    #[serde(skip)]
    pub durable: Option<crate::durable::Backlog>,
}

impl NetworkInfo {
    /// Whether it was heard from within two heartbeats and a second: a live entry whose
    /// refreshes keep coming. One that missed them is about to expire.
    ///
    /// ```
    /// # fn example(info: reflow_network::discovery::NetworkInfo) {
    /// if !info.is_healthy() {
    ///     eprintln!("{} last seen {:?}", info.network_id, info.last_seen);
    /// }
    /// # }
    /// ```
    pub fn is_healthy(&self) -> bool {
        let allowed = std::time::Duration::from_millis(2 * self.heartbeat_interval_ms + 1_000);
        self.last_seen
            .and_then(|seen| seen.elapsed().ok().or(Some(std::time::Duration::ZERO)))
            .is_some_and(|age| age <= allowed)
    }

    /// The instance's key in the liveness bucket: `{network}.{instance}`.
    pub fn liveness_key(&self) -> String {
        format!("{}.{}", self.network_id, self.instance_id)
    }

    /// Whether the network offers `capability`.
    pub fn has_capability(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    /// Whether the network carries every one of `tags`.
    pub fn has_all_tags<S: AsRef<str>>(&self, tags: &[S]) -> bool {
        tags.iter()
            .all(|wanted| self.tags.iter().any(|t| t == wanted.as_ref()))
    }
}

/// Capabilities and tags an instance advertises; settable before and after `start()`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Profile {
    pub(crate) capabilities: Vec<String>,
    pub(crate) tags: Vec<String>,
}

/// A fresh incarnation: start time in milliseconds, a dash, and a random part.
pub(crate) fn incarnation(started_at_ms: u64) -> String {
    format!("{started_at_ms}-{}", &nonce()[..8])
}

/// Merges per-instance entries into one [`NetworkInfo`] per network, sorted by network id.
///
/// Entries for the same `(network, instance)` are kept once, the first one winning.
pub(crate) fn group_by_network(entries: impl IntoIterator<Item = NetworkInfo>) -> Vec<NetworkInfo> {
    use std::collections::BTreeMap;
    let mut instances: BTreeMap<(String, String), NetworkInfo> = BTreeMap::new();
    for info in entries {
        instances
            .entry((info.network_id.clone(), info.instance_id.clone()))
            .or_insert(info);
    }
    let mut networks: BTreeMap<String, NetworkInfo> = BTreeMap::new();
    for ((network, instance), info) in instances {
        match networks.get_mut(&network) {
            None => {
                let mut first = info;
                first.instances = vec![instance];
                first.instance_count = 1;
                networks.insert(network, first);
            }
            Some(merged) => {
                merged.instances.push(instance);
                merged.instance_count += 1;
                union_into(&mut merged.capabilities, info.capabilities);
                union_into(&mut merged.tags, info.tags);
                union_into(&mut merged.actors, info.actors);
                merged.actor_count = merged.actors.len();
            }
        }
    }
    networks.into_values().collect()
}

fn union_into(into: &mut Vec<String>, more: Vec<String>) {
    for item in more {
        if !into.contains(&item) {
            into.push(item);
        }
    }
    into.sort();
}

/// One live connection between this network and a peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// The peer's network id.
    pub network: String,
    /// The peer instance that took part in the handshake.
    pub instance: String,
    /// Which side opened it.
    pub direction: Direction,
    /// The road its traffic takes now.
    pub transport: TransportKind,
    /// The peer's direct-link endpoint, if it has one.
    pub endpoint: Option<String>,
    /// When the handshake completed, in milliseconds since the Unix epoch.
    pub connected_at_ms: u64,
}

/// An error carried in a control reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlError {
    /// The [`ErrorKind`], by its variant name.
    pub kind: String,
    /// The full message, phrase first.
    pub message: String,
}

/// Every control reply: a value or an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlReply<T> {
    /// It worked.
    Ok(T),
    /// It did not; why.
    Error(ControlError),
}

impl From<&Error> for ControlError {
    fn from(err: &Error) -> Self {
        ControlError {
            kind: format!("{:?}", err.kind()),
            message: err.detail().to_string(),
        }
    }
}

impl From<ControlError> for Error {
    fn from(err: ControlError) -> Self {
        let kind = match err.kind.as_str() {
            "ActorNotFound" => ErrorKind::ActorNotFound,
            "ActorNotAvailable" => ErrorKind::ActorNotAvailable,
            "PortNotFound" => ErrorKind::PortNotFound,
            "AuthenticationFailed" => ErrorKind::AuthenticationFailed,
            "MaxConnections" => ErrorKind::MaxConnections,
            "Shutdown" => ErrorKind::Shutdown,
            "InvalidName" => ErrorKind::InvalidName,
            "NetworkNotConnected" => ErrorKind::NetworkNotConnected,
            "PayloadTooLarge" => ErrorKind::PayloadTooLarge,
            "Encoding" => ErrorKind::Encoding,
            _ => ErrorKind::Protocol,
        };
        Error::new(kind, err.message)
    }
}

/// Encodes a control reply.
pub(crate) fn reply_bytes<T: Serialize>(result: Result<T>) -> bytes::Bytes {
    let reply = match result {
        Ok(value) => ControlReply::Ok(value),
        Err(err) => ControlReply::Error(ControlError::from(&err)),
    };
    serde_json::to_vec(&reply)
        .expect("control replies are plain data")
        .into()
}

/// Decodes a control reply from `who`.
pub(crate) fn parse_reply<T: DeserializeOwned>(who: &str, payload: &[u8]) -> Result<T> {
    let reply: ControlReply<T> = serde_json::from_slice(payload).map_err(|e| {
        Error::new(
            ErrorKind::Protocol,
            format!("{who} sent a reply this version cannot read: {e}"),
        )
    })?;
    match reply {
        ControlReply::Ok(value) => Ok(value),
        ControlReply::Error(err) => Err(err.into()),
    }
}

/// A discovery reply: one instance's entry (a direct link, or an older version), or the
/// entries of several instances that share a process and its connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Discovered {
    /// Several instances, from one process.
    Many(Vec<NetworkInfo>),
    /// One instance.
    One(Box<NetworkInfo>),
}

impl Discovered {
    /// The entries the reply holds, seen now.
    pub(crate) fn into_vec(self) -> Vec<NetworkInfo> {
        let mut all = match self {
            Discovered::Many(all) => all,
            Discovered::One(one) => vec![*one],
        };
        let now = SystemTime::now();
        for info in &mut all {
            info.last_seen = Some(now);
        }
        all
    }
}

/// The replies that answer discovery for `infos`: each `{"ok": [...]}` and at most half
/// of `max_payload` bytes (an entry larger than that goes alone).
pub(crate) fn discovery_replies(infos: Vec<NetworkInfo>, max_payload: usize) -> Vec<bytes::Bytes> {
    const FRAME: usize = r#"{"ok":[]}"#.len();
    let limit = max_payload / 2;
    let mut replies = Vec::new();
    let mut body: Vec<u8> = Vec::new();
    for info in infos {
        let entry = serde_json::to_vec(&info).expect("entries are plain data");
        if !body.is_empty() && FRAME + body.len() + 1 + entry.len() > limit {
            replies.push(frame(&body));
            body.clear();
        }
        if !body.is_empty() {
            body.push(b',');
        }
        body.extend_from_slice(&entry);
    }
    if !body.is_empty() {
        replies.push(frame(&body));
    }
    replies
}

fn frame(entries: &[u8]) -> bytes::Bytes {
    let mut out = Vec::with_capacity(entries.len() + 10);
    out.extend_from_slice(br#"{"ok":["#);
    out.extend_from_slice(entries);
    out.extend_from_slice(b"]}");
    out.into()
}

/// The first message of the connect handshake, sent to `_reflow.{peer}.connect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// The connecting network.
    pub network: String,
    /// The connecting instance.
    pub instance: String,
    /// A fresh random value, hex.
    pub nonce: String,
    /// `HMAC-SHA256(token, "reflow-connect|{network}|{peer}|{nonce}")`, hex; absent without a token.
    pub proof: Option<String>,
    /// The connecting instance's direct-link endpoint, if any.
    pub endpoint: Option<String>,
    /// The connecting library's version.
    pub version: String,
}

/// The peer's answer to a [`ConnectRequest`]: accepted, or an error saying why not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectAccept {
    /// The accepting network.
    pub network: String,
    /// The accepting instance.
    pub instance: String,
    /// Its direct-link endpoint, if any.
    pub endpoint: Option<String>,
    /// `HMAC-SHA256(token, "reflow-accept|{peer}|{network}|{nonce}")`, hex: the peer
    /// proves it knows the token too. Absent without a token.
    pub proof: Option<String>,
}

/// Asks a network to send an actor's outputs to this instance (and learns its ports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachRequest {
    /// The asking network.
    pub network: String,
    /// The actor whose outputs are wanted.
    pub actor: String,
    /// The subject prefix outputs go to; the out-port name is appended.
    pub reply_to: String,
}

/// The answer to a ping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingReply {
    /// The answering network.
    pub network: String,
    /// The answering instance.
    pub instance: String,
    /// The actor pinged, if one was.
    pub actor: Option<String>,
}

/// Signs `parts` with the shared token.
pub(crate) fn proof(token: &str, parts: &[&str]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(parts.join("|").as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Checks a proof in constant time.
pub(crate) fn verify_proof(token: &str, parts: &[&str], proof_hex: &str) -> bool {
    let Some(given) = unhex(proof_hex) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(parts.join("|").as_bytes());
    mac.verify_slice(&given).is_ok()
}

/// A fresh random nonce, hex.
pub(crate) fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(network: &str, instance: &str, caps: &[&str], tags: &[&str]) -> NetworkInfo {
        NetworkInfo {
            network_id: network.into(),
            instance_id: instance.into(),
            incarnation: incarnation(1),
            endpoints: Endpoints::default(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            actors: vec![format!("a_{instance}")],
            actor_count: 1,
            instance_count: 1,
            instances: vec![instance.into()],
            heartbeat_interval_ms: 1_000,
            version: "0".into(),
            started_at_ms: 1,
            ..NetworkInfo::default()
        }
    }

    #[test]
    fn discovery_replies_batch_entries_within_half_the_payload_limit_and_read_back() {
        let infos: Vec<NetworkInfo> = (0..50)
            .map(|i| entry(&format!("n{i}"), "x", &[], &[]))
            .collect();
        let replies = discovery_replies(infos.clone(), 4_096);
        assert!(replies.len() > 1, "{} replies", replies.len());
        let mut read = Vec::new();
        for reply in &replies {
            assert!(reply.len() <= 2_048, "{} bytes", reply.len());
            read.extend(parse_reply::<Discovered>("test", reply).unwrap().into_vec());
        }
        // Every entry read is seen now; the rest is as written.
        assert!(read.iter().all(|info| info.last_seen.is_some()));
        let unseen = |mut info: NetworkInfo| {
            info.last_seen = None;
            info
        };
        assert_eq!(read.into_iter().map(unseen).collect::<Vec<_>>(), infos);
        // A single entry, as a direct link or an older version answers, reads too.
        let single = entry("a", "1", &[], &[]);
        let one = reply_bytes(Ok(single.clone()));
        let read = parse_reply::<Discovered>("test", &one).unwrap().into_vec();
        assert_eq!(
            read.into_iter().map(unseen).collect::<Vec<_>>(),
            vec![single]
        );
        assert!(discovery_replies(Vec::new(), 4_096).is_empty());
    }

    #[test]
    fn grouping_merges_instances_of_a_network_sorted_by_id() {
        let grouped = group_by_network([
            entry("b", "b2", &["gpu"], &["region=eu"]),
            entry("a", "a1", &[], &[]),
            entry("b", "b1", &["cpu"], &["region=eu", "tier=1"]),
            entry("b", "b1", &["ignored"], &[]),
        ]);
        assert_eq!(grouped.len(), 2);
        assert_eq!(grouped[0].network_id, "a");
        let b = &grouped[1];
        assert_eq!(b.instance_count, 2);
        assert_eq!(b.instances, vec!["b1", "b2"]);
        assert_eq!(b.instance_id, "b1");
        assert_eq!(b.capabilities, vec!["cpu", "gpu"]);
        assert_eq!(b.actors, vec!["a_b1", "a_b2"]);
        assert_eq!(b.actor_count, 2);
        assert!(b.has_capability("gpu"));
        assert!(b.has_all_tags(&["region=eu", "tier=1"]));
        assert!(!b.has_all_tags(&["region=us"]));
    }

    #[test]
    fn proofs_verify_only_with_the_same_token_and_parts() {
        let p = proof("secret", &["reflow-connect", "a", "b", "n1"]);
        assert!(verify_proof(
            "secret",
            &["reflow-connect", "a", "b", "n1"],
            &p
        ));
        assert!(!verify_proof(
            "other",
            &["reflow-connect", "a", "b", "n1"],
            &p
        ));
        assert!(!verify_proof(
            "secret",
            &["reflow-connect", "a", "b", "n2"],
            &p
        ));
        assert!(!verify_proof(
            "secret",
            &["reflow-connect", "a", "b", "n1"],
            "zz"
        ));
    }

    #[test]
    fn control_errors_keep_kind_and_phrase() {
        let err = Error::new(ErrorKind::ActorNotFound, "no actor \"x\" on network \"m\"");
        let bytes = reply_bytes::<()>(Err(err));
        let back = parse_reply::<()>("m", &bytes).unwrap_err();
        assert_eq!(back.kind(), ErrorKind::ActorNotFound);
        assert_eq!(
            back.to_string(),
            "Actor not found: no actor \"x\" on network \"m\""
        );
    }
}
