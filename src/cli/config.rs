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
//!
//! [[publish]]                      # plain JSON on a NATS subject, for `nats sub`
//! from = "tally.count"
//! subject = "stats.counts"
//!
//! [[mount]]                        # network `server`'s data_* actors as server/...
//! mount_point = "server"
//! network_id = "server"
//! include_patterns = ["data_*"]
//! exclude_patterns = ["*_internal"]
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
    /// Out-ports published as JSON on plain NATS subjects.
    #[serde(default)]
    publish: Vec<PublishSpec>,
    /// Remote networks mounted as subgraphs.
    #[serde(default)]
    mount: Vec<MountSpec>,
    /// A durable network's limits.
    durable: Option<crate::durable::DurableOptions>,
}

/// `[[mount]] mount_point = "server", network_id = "server", include_patterns = [..],
/// exclude_patterns = [..]`: what `mount_network_as_subgraph` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MountSpec {
    mount_point: String,
    network_id: String,
    #[serde(default)]
    include_patterns: Vec<String>,
    #[serde(default)]
    exclude_patterns: Vec<String>,
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
    /// Keep what is sent to this network in JetStream while it is down (`[durable]`
    /// sets the limits).
    #[serde(default)]
    durable: bool,
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
    from: toml::Spanned<String>,
    to: toml::Spanned<String>,
}

/// `[[publish]] from = "node.port", subject = "a.plain.subject"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishSpec {
    from: String,
    subject: String,
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
    /// The node is an actor of a mounted network (`{mount_point}/{actor}`).
    pub(crate) mounted: bool,
}

impl Endpoint {
    /// `(actor, network)` when the node is a remote actor.
    pub(crate) fn remote(&self) -> Option<(&str, &str)> {
        self.node.split_once('@')
    }

    /// Whether the node exists only once the network has started: a remote actor's
    /// proxy, or a mounted actor.
    pub(crate) fn after_start(&self) -> bool {
        self.mounted || self.remote().is_some()
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
    /// The line of the file each connection starts on, for errors found when wiring.
    pub(crate) connection_lines: Vec<usize>,
    pub(crate) initial: Vec<(Endpoint, serde_json::Value)>,
    /// Local out-ports published as JSON on plain subjects.
    pub(crate) publish: Vec<(Endpoint, String)>,
    /// Remote networks mounted as subgraphs once the network has started.
    pub(crate) mounts: Vec<crate::distributed_network::SubgraphMountConfig>,
    /// Set for a durable network (`durable = true`), with the `[durable]` limits.
    pub(crate) durable: Option<crate::durable::DurableOptions>,
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
    let mut mounts = Vec::new();
    for (i, spec) in file.mount.into_iter().enumerate() {
        let point = spec.mount_point.trim_matches('/').to_string();
        if point.is_empty() || point.contains(['@', '.', ' ']) {
            return Err(format!(
                "mount[{i}].mount_point: {:?} must be names joined by '/' (no '@', '.' or spaces)",
                spec.mount_point
            ));
        }
        crate::subject::validate_network_id(&spec.network_id)
            .map_err(|e| format!("mount[{i}].network_id: {}", e.detail()))?;
        mounts.push(crate::distributed_network::SubgraphMountConfig {
            mount_point: point,
            network_id: spec.network_id,
            include_patterns: spec.include_patterns,
            exclude_patterns: spec.exclude_patterns,
        });
    }
    let mount_points: Vec<String> = mounts
        .iter()
        .map(|m| format!("{}/", m.mount_point))
        .collect();
    let endpoint = |field: String, text: &str| -> Result<Endpoint, String> {
        let Some((node, port)) = text.rsplit_once('.') else {
            return Err(format!(
                "{field}: {text:?} is not \"node.port\" (for a remote actor \"actor@network.port\")"
            ));
        };
        let mounted = mount_points
            .iter()
            .any(|point| node.starts_with(point.as_str()));
        if !node.contains('@') && !mounted && !ids.contains(node) {
            return Err(format!(
                "{field}: {text:?} names node {node:?}, which is not in [[nodes]]; declare it, \
                 write a remote actor as \"actor@network.port\", or mount its network"
            ));
        }
        Ok(Endpoint {
            node: node.to_string(),
            port: port.to_string(),
            mounted,
        })
    };
    let mut connections = Vec::new();
    let mut connection_lines = Vec::new();
    for (i, c) in file.connections.iter().enumerate() {
        let at = |span: std::ops::Range<usize>| line_of(text, span.start);
        let from = endpoint(
            format!("line {}: connections[{i}].from", at(c.from.span())),
            c.from.get_ref(),
        )?;
        let to = endpoint(
            format!("line {}: connections[{i}].to", at(c.to.span())),
            c.to.get_ref(),
        )?;
        connections.push((from, to));
        connection_lines.push(at(c.from.span()).min(at(c.to.span())));
    }
    let mut initial = Vec::new();
    for (i, packet) in file.initial.into_iter().enumerate() {
        initial.push((
            endpoint(format!("initial[{i}].to"), &packet.to)?,
            packet.value,
        ));
    }
    let mut publish = Vec::new();
    for (i, spec) in file.publish.into_iter().enumerate() {
        let from = endpoint(format!("publish[{i}].from"), &spec.from)?;
        if from.remote().is_some() {
            return Err(format!(
                "publish[{i}].from: {:?} is a remote actor; publish a port of a local node",
                spec.from
            ));
        }
        crate::subject::validate_publish_subject(&spec.subject)
            .map_err(|e| format!("publish[{i}].subject: {}", e.detail()))?;
        publish.push((from, spec.subject));
    }
    let durable = match (section.durable, file.durable) {
        (true, options) => {
            let options = options.unwrap_or_default();
            options
                .validate()
                .map_err(|e| format!("durable: {}", e.detail()))?;
            Some(options)
        }
        (false, Some(_)) => {
            return Err(
                "durable: the [durable] section sets a durable network's limits; add \
                 durable = true under [network], or remove it"
                    .into(),
            );
        }
        (false, None) => None,
    };
    Ok(RunConfig {
        network,
        nats,
        jetstream_domain,
        capabilities: section.capabilities,
        tags: section.tags,
        nodes: file.nodes,
        connections,
        connection_lines,
        initial,
        publish,
        mounts,
        durable,
    })
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A TOML error as one line: where, which key, and what was wrong.
fn toml_error(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim().to_string();
    let Some(span) = err.span() else {
        return message;
    };
    let line_no = line_of(text, span.start);
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
            (
                "[network]\nnetwork_id = \"A\"\n[network.local_network_config]\n\
                 inbox_capacity = 8\ninbox_capcity = 9\n",
                "line 5: inbox_capcity",
            ),
            (
                "[network]\nnetwork_id = \"A\"\n[[nodes]]\nid = \"n\"\n\
                 component = \"log\"\n\n[[connections]]\nfrom = \"n.out\"\nto = \"m.in\"\n",
                "line 9: connections[0].to",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(field), "{field}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }
}
