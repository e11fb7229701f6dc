//! [`DistributedConfig`]: the nine settings of the seed guide, and what each means here.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::network::NetworkConfig;
use crate::subject::{validate_instance_id, validate_network_id};

/// The broker used when `discovery_endpoints` is empty and `$NATS_URL` is unset.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// URL schemes a NATS client accepts; `discovery_endpoints` must use one of them.
pub const NATS_SCHEMES: &[&str] = &["nats", "tls", "ws", "wss"];

/// How one network instance joins the others.
///
/// The fields are exactly those of the seed guide, so its struct literals compile. Their
/// meaning follows the NATS design:
///
/// | field | meaning |
/// |---|---|
/// | `network_id` | subject prefix, queue group and discovery name (dots allowed: `prod.ml`) |
/// | `instance_id` | this process within its network; the key of its liveness entry |
/// | `bind_address`, `bind_port` | the direct TCP fallback listener; port 0 turns it off |
/// | `discovery_endpoints` | NATS server URLs (`nats://`, `tls://`, `ws://`, `wss://`); several form a cluster's seed list; empty means `$NATS_URL`, else [`DEFAULT_NATS_URL`] |
/// | `auth_token` | the NATS token where the server asks for one, and the secret peers prove in the connect handshake |
/// | `max_connections` | most peer networks (and direct links) accepted at once |
/// | `heartbeat_interval_ms` | liveness refresh period; an instance is dead after three missed |
/// | `local_network_config` | the local network: buffer bounds, compression, timeouts |
///
/// ```
/// use reflow_network::distributed_network::DistributedConfig;
///
/// let config = DistributedConfig {
///     network_id: "prod.ml".into(),
///     instance_id: "worker_1".into(),
///     ..DistributedConfig::default()
/// };
/// config.validate().unwrap();
/// assert_eq!(config.nats_urls(), vec![std::env::var("NATS_URL")
///     .unwrap_or_else(|_| "nats://127.0.0.1:4222".into())]);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DistributedConfig {
    /// The network's id: subject prefix, queue group and discovery name.
    pub network_id: String,
    /// This instance's id within its network.
    pub instance_id: String,
    /// Address the direct-link listener binds (`0.0.0.0` for every interface).
    pub bind_address: String,
    /// Port of the direct-link listener; 0 turns direct links off.
    pub bind_port: u16,
    /// NATS server URLs; several form a cluster's seed list.
    pub discovery_endpoints: Vec<String>,
    /// Token for the NATS server and shared secret of the peer handshake.
    pub auth_token: Option<String>,
    /// Most peer networks (and direct links) accepted at once.
    pub max_connections: usize,
    /// How often the liveness entry is refreshed, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Settings of the local network and of the bridge's buffers.
    pub local_network_config: NetworkConfig,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        DistributedConfig {
            network_id: "reflow".to_string(),
            instance_id: format!("i{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            bind_address: "127.0.0.1".to_string(),
            bind_port: 0,
            discovery_endpoints: Vec::new(),
            auth_token: None,
            max_connections: 100,
            heartbeat_interval_ms: 5_000,
            local_network_config: NetworkConfig::default(),
        }
    }
}

impl DistributedConfig {
    /// Checks every field, naming the first bad value and what to do about it.
    pub fn validate(&self) -> Result<()> {
        validate_network_id(&self.network_id)?;
        validate_instance_id(&self.instance_id)?;
        if self.heartbeat_interval_ms == 0 {
            return Err(Error::invalid_config(
                "heartbeat_interval_ms",
                "0 is not a period; use at least 100 (ms), for example 5000",
            ));
        }
        if self.max_connections == 0 {
            return Err(Error::invalid_config(
                "max_connections",
                "0 would refuse every peer; use at least 1",
            ));
        }
        if self.bind_port != 0 && self.bind_address.trim().is_empty() {
            return Err(Error::invalid_config(
                "bind_address",
                format!(
                    "is empty but bind_port is {}; use 127.0.0.1 or 0.0.0.0",
                    self.bind_port
                ),
            ));
        }
        for url in &self.discovery_endpoints {
            check_nats_url(url)?;
        }
        if let Some(token) = &self.auth_token
            && token.is_empty()
        {
            return Err(Error::invalid_config(
                "auth_token",
                "is Some(\"\"); use None for no authentication",
            ));
        }
        self.local_network_config.validate()
    }

    /// What the bridge needs of this configuration.
    pub(crate) fn bridge_settings(&self) -> crate::bridge::Settings {
        crate::bridge::Settings {
            network_id: self.network_id.clone(),
            instance_id: self.instance_id.clone(),
            auth_token: self.auth_token.clone(),
            max_connections: self.max_connections,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            nats_urls: self.nats_urls(),
            local_network_config: self.local_network_config.clone(),
            durable: None,
        }
    }

    /// What the broker road needs of this configuration.
    pub(crate) fn broker_options(&self) -> crate::transport::nats::BrokerOptions {
        crate::transport::nats::BrokerOptions {
            urls: self.nats_urls(),
            client_name: format!("reflow:{}:{}", self.network_id, self.instance_id),
            token: self.auth_token.clone(),
            auth: Default::default(),
            custom: None,
            jetstream_domain: None,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
        }
    }

    /// The NATS URLs to connect to: `discovery_endpoints`, else `$NATS_URL` (comma
    /// separated), else [`DEFAULT_NATS_URL`].
    pub fn nats_urls(&self) -> Vec<String> {
        if !self.discovery_endpoints.is_empty() {
            return self.discovery_endpoints.clone();
        }
        match std::env::var("NATS_URL") {
            Ok(urls) if !urls.trim().is_empty() => urls
                .split(',')
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect(),
            _ => vec![DEFAULT_NATS_URL.to_string()],
        }
    }
}

/// Checks that `url` names a NATS server: a NATS scheme and a host.
fn check_nats_url(url: &str) -> Result<()> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(Error::invalid_config(
            "discovery_endpoints",
            format!("{url:?} has no scheme; write nats://host:4222"),
        ));
    };
    if !NATS_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
        return Err(Error::invalid_config(
            "discovery_endpoints",
            format!(
                "{url:?} uses scheme {scheme:?}, but discovery endpoints are NATS server URLs \
                 (nats://, tls://, ws://, wss://); for example nats://127.0.0.1:4222"
            ),
        ));
    }
    if rest.trim_end_matches('/').is_empty() {
        return Err(Error::invalid_config(
            "discovery_endpoints",
            format!("{url:?} names no host"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn config() -> DistributedConfig {
        DistributedConfig {
            network_id: "net".into(),
            instance_id: "one".into(),
            ..DistributedConfig::default()
        }
    }

    fn message_of(config: DistributedConfig) -> String {
        let err = config.validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
        err.to_string()
    }

    #[test]
    fn default_config_is_valid() {
        DistributedConfig::default().validate().unwrap();
    }

    #[test]
    fn zero_heartbeat_is_refused_by_name() {
        let msg = message_of(DistributedConfig {
            heartbeat_interval_ms: 0,
            ..config()
        });
        assert!(msg.contains("heartbeat_interval_ms"), "{msg}");
    }

    #[test]
    fn zero_max_connections_is_refused_by_name() {
        let msg = message_of(DistributedConfig {
            max_connections: 0,
            ..config()
        });
        assert!(msg.contains("max_connections"), "{msg}");
    }

    #[test]
    fn http_discovery_endpoint_is_refused_naming_url_and_scheme() {
        let msg = message_of(DistributedConfig {
            discovery_endpoints: vec!["http://discovery.example.com:3000".into()],
            ..config()
        });
        assert!(msg.contains("http://discovery.example.com:3000"), "{msg}");
        assert!(msg.contains("\"http\""), "{msg}");
    }

    #[test]
    fn nats_schemes_are_accepted() {
        DistributedConfig {
            discovery_endpoints: vec![
                "nats://a:4222".into(),
                "tls://b:4222".into(),
                "ws://c:80".into(),
                "wss://d:443".into(),
            ],
            ..config()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn invalid_ids_are_named() {
        for (net, inst, bad) in [
            ("bad net", "one", "bad net"),
            ("_reflow", "one", "_reflow"),
            ("a.*", "one", "a.*"),
            ("net", "in.stance", "in.stance"),
            ("net", "", "\"\""),
        ] {
            let err = DistributedConfig {
                network_id: net.into(),
                instance_id: inst.into(),
                ..config()
            }
            .validate()
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidName);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn config_round_trips_through_serde_with_defaults_filled() {
        let parsed: DistributedConfig =
            serde_json::from_str(r#"{"network_id":"x","instance_id":"y"}"#).unwrap();
        assert_eq!(parsed.network_id, "x");
        assert_eq!(parsed.max_connections, 100);
        let back: DistributedConfig =
            serde_json::from_str(&serde_json::to_string(&parsed).unwrap()).unwrap();
        assert_eq!(back, parsed);
    }
}
