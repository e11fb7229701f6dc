//! What `--json` prints, one serde type per kind of line, so every command names the same
//! thing the same way: `network` for a network id, `instance` for an instance id, `event`
//! for what happened. The README's "JSON output" section documents these types; a field
//! renamed here is a change to that schema.
//!
//! `watch` prints [`Seen`](crate::cli::watch) lines, defined beside their decoding, and
//! `bench` its measurements, described under "Performance".

use serde::Serialize;

use crate::discovery::{ActorInfo, Endpoints, NetworkInfo};

/// `networks`: the live networks.
#[derive(Debug, Serialize)]
pub(crate) struct NetworkList {
    pub(crate) networks: Vec<NetworkEntry>,
    /// Every durable network on the server, live or not, with what waits for it.
    pub(crate) durable: Vec<DurableEntry>,
}

/// A durable network and its backlog.
#[derive(Debug, Serialize)]
pub(crate) struct DurableEntry {
    pub(crate) network: String,
    pub(crate) live: bool,
    pub(crate) pending: u64,
    pub(crate) oldest_age_ms: Option<u64>,
    pub(crate) dead_lettered: u64,
}

impl DurableEntry {
    pub(crate) fn new(backlog: &crate::durable::Backlog, live: bool) -> Self {
        DurableEntry {
            network: backlog.network_id.clone(),
            live,
            pending: backlog.pending,
            oldest_age_ms: backlog.oldest_age.map(|a| a.as_millis() as u64),
            dead_lettered: backlog.dead_lettered,
        }
    }
}

/// One network as a whole, and each of its instances.
#[derive(Debug, Serialize)]
pub(crate) struct NetworkEntry {
    pub(crate) network: String,
    pub(crate) capabilities: Vec<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) actors: Vec<String>,
    pub(crate) actor_count: usize,
    pub(crate) instance_count: usize,
    pub(crate) instances: Vec<InstanceEntry>,
}

/// One instance. Its own fields come from its liveness entry; while this process has not
/// read that entry (a bucket made again after a server restart, for a moment), `live` is
/// false and they are null or empty, so the shape never changes.
#[derive(Debug, Serialize)]
pub(crate) struct InstanceEntry {
    pub(crate) instance: String,
    pub(crate) live: bool,
    pub(crate) incarnation: Option<String>,
    pub(crate) endpoints: Endpoints,
    pub(crate) capabilities: Vec<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) actors: Vec<String>,
    pub(crate) heartbeat_interval_ms: Option<u64>,
    pub(crate) version: Option<String>,
    pub(crate) started_at_ms: Option<u64>,
}

impl InstanceEntry {
    pub(crate) fn new(id: &str, entry: Option<&NetworkInfo>) -> Self {
        match entry {
            Some(i) => InstanceEntry {
                instance: i.instance_id.clone(),
                live: true,
                incarnation: Some(i.incarnation.clone()),
                endpoints: i.endpoints.clone(),
                capabilities: i.capabilities.clone(),
                tags: i.tags.clone(),
                actors: i.actors.clone(),
                heartbeat_interval_ms: Some(i.heartbeat_interval_ms),
                version: Some(i.version.clone()),
                started_at_ms: Some(i.started_at_ms),
            },
            None => InstanceEntry {
                instance: id.to_string(),
                live: false,
                incarnation: None,
                endpoints: Endpoints::default(),
                capabilities: Vec::new(),
                tags: Vec::new(),
                actors: Vec::new(),
                heartbeat_interval_ms: None,
                version: None,
                started_at_ms: None,
            },
        }
    }
}

/// `networks --watch`: one line per change after the listing.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum NetworkChange {
    /// An instance went live.
    Up {
        network: String,
        instance: String,
    },
    /// An instance left (`reason`: `left`) or stopped refreshing its entry (`expired`).
    Down {
        network: String,
        instance: String,
        reason: &'static str,
    },
    BrokerLost {
        message: String,
    },
    BrokerRegained {
        message: String,
    },
    /// Events this watch missed; run `networks` again for the full picture.
    Lagged {
        missed: u64,
        message: String,
    },
}

/// `actors NETWORK`.
#[derive(Debug, Serialize)]
pub(crate) struct ActorList {
    pub(crate) network: String,
    pub(crate) actors: Vec<ActorInfo>,
}

/// `ping NETWORK [ACTOR]`: round trips in milliseconds.
#[derive(Debug, Serialize)]
pub(crate) struct PingReport {
    pub(crate) network: String,
    pub(crate) actor: Option<String>,
    pub(crate) count: usize,
    pub(crate) min_ms: f64,
    pub(crate) avg_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) samples_ms: Vec<f64>,
}

/// `send`: how many messages were sent, each confirmed.
#[derive(Debug, Serialize)]
pub(crate) struct SendReport {
    pub(crate) network: String,
    pub(crate) actor: String,
    pub(crate) port: String,
    pub(crate) subject: String,
    pub(crate) sent: u64,
    /// `delivered` (handled by the network) or `stored` (by JetStream, for a durable one).
    pub(crate) delivery: &'static str,
}

/// `up`: the server's URL, and whether this command started it.
#[derive(Debug, Serialize)]
pub(crate) struct UpReport {
    pub(crate) url: String,
    pub(crate) port: u16,
    pub(crate) started: bool,
}

/// `up --which`: the nats-server binary `up` runs.
#[derive(Debug, Serialize)]
pub(crate) struct WhichReport {
    pub(crate) path: std::path::PathBuf,
    pub(crate) version: String,
    pub(crate) origin: &'static str,
}

/// `run`: one line per thing the operator of a bridge process wants to know.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum RunEvent {
    /// Wired and running.
    Running {
        network: String,
        instance: String,
        nats: String,
        nodes: Vec<String>,
        remote: Vec<String>,
        capabilities: Vec<String>,
        tags: Vec<String>,
    },
    /// Waiting (at most `wait_secs`) for a remote network that is not up yet.
    Waiting {
        network: String,
        wait_secs: u64,
    },
    BrokerLost,
    BrokerRegained,
    /// The liveness bucket stopped answering (a leaf node cut off from its hub, say):
    /// entries are not refreshed, `reason` says why.
    LivenessLost {
        reason: String,
    },
    /// The liveness bucket answers again.
    LivenessRegained,
    /// Traffic to `network` now goes over `road` (`nats` or `direct`), was over `was`.
    RoadSwitched {
        network: String,
        road: &'static str,
        was: &'static str,
    },
    PeerConnected {
        network: String,
        instance: String,
        road: &'static str,
    },
    PeerDisconnected {
        network: String,
        reason: String,
    },
    /// A connect handshake refused, either way; `network` is a network id or an address.
    PeerRefused {
        network: String,
        reason: String,
    },
    /// The NATS client dropped inbound messages: `total_dropped` so far.
    SlowConsumer {
        total_dropped: u64,
    },
    /// Events this process's reporter missed.
    Lagged {
        missed: u64,
    },
    /// Shut down after Ctrl-C or SIGTERM.
    Stopped {
        network: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of `value`, nested objects and arrays of objects included.
    fn keys(value: &serde_json::Value, into: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    into.push(k.clone());
                    keys(v, into);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| keys(v, into)),
            _ => {}
        }
    }

    #[test]
    fn every_json_field_is_documented_in_the_readme_and_ids_are_named_alike() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("### JSON output")
            .expect("a JSON output section");
        let section = &readme[start..];
        let section = &section[..section[4..].find("\n## ").map_or(section.len(), |e| e + 4)];
        let info = NetworkInfo {
            network_id: "n".into(),
            instance_id: "i".into(),
            incarnation: "1-a".into(),
            instance_count: 1,
            instances: vec!["i".into()],
            heartbeat_interval_ms: 1000,
            version: "0".into(),
            ..NetworkInfo::default()
        };
        let samples = [
            serde_json::to_value(NetworkList {
                networks: vec![NetworkEntry {
                    network: "n".into(),
                    capabilities: vec![],
                    tags: vec![],
                    actors: vec![],
                    actor_count: 0,
                    instance_count: 2,
                    instances: vec![
                        InstanceEntry::new("i", Some(&info)),
                        InstanceEntry::new("j", None),
                    ],
                }],
                durable: vec![DurableEntry::new(
                    &crate::durable::Backlog {
                        network_id: "n".into(),
                        pending: 1,
                        oldest_age: Some(std::time::Duration::from_secs(1)),
                        dead_lettered: 0,
                    },
                    false,
                )],
            }),
            serde_json::to_value(NetworkChange::Down {
                network: "n".into(),
                instance: "i".into(),
                reason: "left",
            }),
            serde_json::to_value(NetworkChange::Lagged {
                missed: 1,
                message: "m".into(),
            }),
            serde_json::to_value(PingReport {
                network: "n".into(),
                actor: None,
                count: 1,
                min_ms: 1.0,
                avg_ms: 1.0,
                max_ms: 1.0,
                p50_ms: 1.0,
                samples_ms: vec![1.0],
            }),
            serde_json::to_value(SendReport {
                network: "n".into(),
                actor: "a".into(),
                port: "p".into(),
                subject: "n.a.p".into(),
                sent: 1,
                delivery: "stored",
            }),
            serde_json::to_value(UpReport {
                url: "u".into(),
                port: 1,
                started: true,
            }),
            serde_json::to_value(RunEvent::Running {
                network: "n".into(),
                instance: "i".into(),
                nats: "u".into(),
                nodes: vec![],
                remote: vec![],
                capabilities: vec![],
                tags: vec![],
            }),
            serde_json::to_value(RunEvent::RoadSwitched {
                network: "n".into(),
                road: "nats",
                was: "direct",
            }),
            serde_json::to_value(RunEvent::SlowConsumer { total_dropped: 1 }),
        ];
        let mut all = Vec::new();
        for sample in &samples {
            keys(sample.as_ref().unwrap(), &mut all);
        }
        for key in all {
            assert!(
                !key.ends_with("_id") && key != "from",
                "{key}: ids are `network` and `instance`"
            );
            assert!(section.contains(&key), "README's JSON output lacks {key:?}");
        }
        for event in [
            "running",
            "waiting",
            "peer_refused",
            "road_switched",
            "stopped",
        ] {
            assert!(section.contains(&format!("\"{event}\"")), "{event}");
        }
    }
}
