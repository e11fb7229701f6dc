//! The TOML file of `reflow-bridge run`: the network's settings, its nodes drawn from the
//! built-in components, connections (to local nodes or to remote actors, `actor@network`),
//! initial packets, capabilities and tags.
//!
//! ```toml
//! [network]
//! network_id = "math"
//! instance_id = "math-1"          # optional; random when left out
//! discovery_endpoints = ["nats://127.0.0.1:4222"]
//! capabilities = ["arithmetic"]
//! tags = ["demo"]
//!
//! [[nodes]]
//! id = "tally"
//! component = "counter"
//!
//! [[connections]]
//! from = "feed.out"
//! to = "tally@stats.in"           # a remote actor: connected and registered at start
//!
//! [[initial]]
//! to = "feed.in"
//! value = 41
//! ```
//!
//! The auth token never comes from the file: it is `--token` or `$REFLOW_AUTH_TOKEN`.
//! Every mistake is reported as one line naming the file, the field and what to do.

use std::collections::HashSet;
use std::path::Path;

use crate::actor::Metadata;
use crate::components::Components;
use crate::distributed_network::DistributedConfig;
use crate::network::NetworkConfig;
use serde::Deserialize;

use crate::cli::output::{CliError, CliResult};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    network: NetworkSection,
    /// How to prove this process to the NATS server (files only, never secrets).
    #[serde(default)]
    nats: NatsSection,
    #[serde(default)]
    nodes: Vec<NodeSpec>,
    #[serde(default)]
    connections: Vec<ConnectionSpec>,
    #[serde(default)]
    initial: Vec<InitialSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkSection {
    network_id: String,
    instance_id: Option<String>,
    bind_address: Option<String>,
    bind_port: Option<u16>,
    discovery_endpoints: Option<Vec<String>>,
    /// Only read to refuse it: tokens do not belong in files.
    auth_token: Option<toml::Value>,
    max_connections: Option<usize>,
    heartbeat_interval_ms: Option<u64>,
    local_network_config: Option<NetworkConfig>,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// The `[nats]` section: paths to credentials and TLS files, and a user name; a password
/// or token in it is refused (they come from the environment or the command line).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NatsSection {
    creds_file: Option<std::path::PathBuf>,
    nkey_seed_file: Option<std::path::PathBuf>,
    user: Option<String>,
    tls_ca_file: Option<std::path::PathBuf>,
    tls_cert_file: Option<std::path::PathBuf>,
    tls_key_file: Option<std::path::PathBuf>,
    /// The JetStream domain of the liveness bucket (`--js-domain`).
    jetstream_domain: Option<String>,
    /// Only read to refuse it.
    password: Option<toml::Value>,
    /// Only read to refuse it.
    token: Option<toml::Value>,
}

/// One node of the local graph.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeSpec {
    pub(crate) id: String,
    pub(crate) component: String,
    #[serde(default)]
    pub(crate) metadata: Metadata,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectionSpec {
    from: String,
    to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InitialSpec {
    to: String,
    value: serde_json::Value,
}

/// One end of a connection: a node's port. The node is local, or a remote actor written
/// `actor@network`, whose proxy node carries that same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) node: String,
    pub(crate) port: String,
}

impl Endpoint {
    /// `(actor, network)` when the node is a remote actor.
    pub(crate) fn remote(&self) -> Option<(&str, &str)> {
        self.node.split_once('@')
    }
}

/// Everything `run` needs, checked.
#[derive(Debug)]
pub(crate) struct RunConfig {
    pub(crate) network: DistributedConfig,
    /// How to prove this process to the NATS server, from `[nats]`.
    pub(crate) nats: crate::distributed_network::NatsAuth,
    /// The JetStream domain of the liveness bucket, from `[nats] jetstream_domain`.
    pub(crate) jetstream_domain: Option<String>,
    /// What the network offers; `run` sets them before start, so discovery and the
    /// liveness entry carry them from the first moment.
    pub(crate) capabilities: Vec<String>,
    /// Free-form labels (`region=eu`), set and advertised like the capabilities.
    pub(crate) tags: Vec<String>,
    pub(crate) nodes: Vec<NodeSpec>,
    pub(crate) connections: Vec<(Endpoint, Endpoint)>,
    pub(crate) initial: Vec<(Endpoint, serde_json::Value)>,
}

impl RunConfig {
    /// The remote actors the connections name, each once, as `(actor, network)`.
    pub(crate) fn remote_actors(&self) -> Vec<(String, String)> {
        let mut seen = Vec::new();
        let ends = self.connections.iter().flat_map(|(a, b)| [a, b]);
        for end in ends.chain(self.initial.iter().map(|(to, _)| to)) {
            if let Some((actor, network)) = end.remote() {
                let pair = (actor.to_string(), network.to_string());
                if !seen.contains(&pair) {
                    seen.push(pair);
                }
            }
        }
        seen
    }
}

/// Reads and checks the file at `path`.
pub(crate) fn load(path: &Path, components: &Components) -> CliResult<RunConfig> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::usage(format!(
            "cannot read config file {shown}: {e}; pass an existing TOML file to --config"
        ))
    })?;
    parse(&text, components).map_err(|why| CliError::usage(format!("{shown}: {why}")))
}

/// Parses and checks a config; the error names the field and what to do.
pub(crate) fn parse(text: &str, components: &Components) -> Result<RunConfig, String> {
    let file: FileConfig = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
    let nats = file.nats;
    let jetstream_domain = nats.jetstream_domain;
    if nats.password.is_some() || nats.token.is_some() {
        return Err(
            "nats: passwords and tokens are not read from config files; remove them and \
             set NATS_PASSWORD or NATS_TOKEN (or pass --password, --nats-token)"
                .into(),
        );
    }
    let nats = crate::distributed_network::NatsAuth {
        creds_file: nats.creds_file,
        nkey_seed_file: nats.nkey_seed_file,
        user: nats.user,
        tls_ca_file: nats.tls_ca_file,
        tls_cert_file: nats.tls_cert_file,
        tls_key_file: nats.tls_key_file,
        ..Default::default()
    };
    let section = file.network;
    if section.auth_token.is_some() {
        return Err(
            "network.auth_token: tokens are not read from config files; remove it and \
                    set the REFLOW_AUTH_TOKEN environment variable (or pass --token)"
                .into(),
        );
    }
    let defaults = DistributedConfig::default();
    let network = DistributedConfig {
        network_id: section.network_id,
        instance_id: section.instance_id.unwrap_or(defaults.instance_id),
        bind_address: section.bind_address.unwrap_or(defaults.bind_address),
        bind_port: section.bind_port.unwrap_or(defaults.bind_port),
        discovery_endpoints: section.discovery_endpoints.unwrap_or_default(),
        auth_token: None,
        max_connections: section.max_connections.unwrap_or(defaults.max_connections),
        heartbeat_interval_ms: section
            .heartbeat_interval_ms
            .unwrap_or(defaults.heartbeat_interval_ms),
        local_network_config: section.local_network_config.unwrap_or_default(),
    };
    network.validate().map_err(|e| match e.kind() {
        crate::ErrorKind::InvalidConfig => format!("network.{}", e.detail()),
        _ => format!("network: {}", e.detail()),
    })?;

    let mut ids = HashSet::new();
    for (i, node) in file.nodes.iter().enumerate() {
        if !components.contains(&node.component) {
            return Err(format!(
                "nodes[{i}].component: {:?} is not a known component; use one of {}",
                node.component,
                components.names().collect::<Vec<_>>().join(", ")
            ));
        }
        if node.id.contains('@') {
            return Err(format!(
                "nodes[{i}].id: {:?} holds '@', which marks remote actors; choose a plain name",
                node.id
            ));
        }
        if !ids.insert(node.id.as_str()) {
            return Err(format!("nodes[{i}].id: {:?} is declared twice", node.id));
        }
    }
    let endpoint = |field: String, text: &str| -> Result<Endpoint, String> {
        let Some((node, port)) = text.rsplit_once('.') else {
            return Err(format!(
                "{field}: {text:?} is not \"node.port\" (for a remote actor \"actor@network.port\")"
            ));
        };
        if !node.contains('@') && !ids.contains(node) {
            return Err(format!(
                "{field}: {text:?} names node {node:?}, which is not in [[nodes]]; declare it, \
                 or write a remote actor as \"actor@network.port\""
            ));
        }
        Ok(Endpoint {
            node: node.to_string(),
            port: port.to_string(),
        })
    };
    let mut connections = Vec::new();
    for (i, c) in file.connections.iter().enumerate() {
        let from = endpoint(format!("connections[{i}].from"), &c.from)?;
        let to = endpoint(format!("connections[{i}].to"), &c.to)?;
        connections.push((from, to));
    }
    let mut initial = Vec::new();
    for (i, packet) in file.initial.into_iter().enumerate() {
        initial.push((
            endpoint(format!("initial[{i}].to"), &packet.to)?,
            packet.value,
        ));
    }
    Ok(RunConfig {
        network,
        nats,
        jetstream_domain,
        capabilities: section.capabilities,
        tags: section.tags,
        nodes: file.nodes,
        connections,
        initial,
    })
}

/// A TOML error as one line: where, which key, and what was wrong.
fn toml_error(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim().to_string();
    let Some(span) = err.span() else {
        return message;
    };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or_default();
    match line.split_once('=') {
        Some((key, _)) if !line.trim_start().starts_with('[') => {
            format!("line {line_no}: {}: {message}", key.trim())
        }
        _ => format!("line {line_no}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RunConfig, String> {
        super::parse(text, &Components::builtin())
    }

    const GOOD: &str = r#"
        [network]
        network_id = "A"
        capabilities = ["x"]
        [[nodes]]
        id = "feed"
        component = "passthrough"
        [[connections]]
        from = "feed.out"
        to = "tally@prod.stats.in"
        [[initial]]
        to = "feed.in"
        value = { n = 1 }
    "#;

    #[test]
    fn a_good_file_parses_with_remote_actors_on_dotted_networks() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.network.network_id, "A");
        assert_eq!(config.capabilities, ["x"]);
        assert_eq!(
            config.remote_actors(),
            [("tally".to_string(), "prod.stats".to_string())]
        );
        assert_eq!(config.initial[0].1, serde_json::json!({ "n": 1 }));
    }

    #[test]
    fn a_token_in_the_file_is_refused_pointing_at_the_env_var() {
        let err = parse("[network]\nnetwork_id = \"A\"\nauth_token = \"s3cret\"\n").unwrap_err();
        assert!(err.contains("network.auth_token"), "{err}");
        assert!(err.contains("REFLOW_AUTH_TOKEN"), "{err}");
    }

    #[test]
    fn the_nats_section_names_files_and_refuses_secrets() {
        let config = parse(
            "[network]\nnetwork_id = \"A\"\n[nats]\ncreds_file = \"/k/a.creds\"\n\
             tls_ca_file = \"/k/ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(
            config.nats.creds_file.as_deref(),
            Some(std::path::Path::new("/k/a.creds"))
        );
        assert_eq!(
            config.nats.tls_ca_file.as_deref(),
            Some(std::path::Path::new("/k/ca.pem"))
        );
        for secret in ["password = \"x\"", "token = \"x\""] {
            let err = parse(&format!(
                "[network]\nnetwork_id = \"A\"\n[nats]\n{secret}\n"
            ))
            .unwrap_err();
            assert!(err.contains("not read from config files"), "{err}");
        }
        let err = parse("[network]\nnetwork_id = \"A\"\n[nats]\ncert = \"x\"\n").unwrap_err();
        assert!(err.contains("cert"), "{err}");
    }

    #[test]
    fn bad_fields_are_named() {
        for (text, field) in [
            (
                "[network]\nnetwork_id = \"A\"\nbind_port = \"x\"\n",
                "bind_port",
            ),
            ("[network]\nnetwrk_id = \"A\"\n", "netwrk_id"),
            (
                "[network]\nnetwork_id = \"A\"\nheartbeat_interval_ms = 0\n",
                "heartbeat_interval_ms",
            ),
            (
                "[network]\nnetwork_id = \"A\"\n[[nodes]]\nid = \"n\"\ncomponent = \"nope\"\n",
                "nodes[0].component",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(field), "{field}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }
}
