//! The nats-server configuration file a local server runs with.
//!
//! A file rather than command-line flags, because flags cannot say everything (cluster
//! routes with JetStream, `max_payload`, the caller's `extra_config`), and because a
//! restart must bring the server back exactly as it was: once the server has picked its
//! client port, the file is rewritten with that port fixed.

use std::fmt::Write;

use super::ServerOptions;

/// Everything that goes into one server's configuration file.
#[derive(Debug, Clone)]
pub(super) struct ConfigSpec {
    pub(super) options: ServerOptions,
    /// The address to listen on: loopback for processes, all interfaces inside a container.
    pub(super) host: &'static str,
    /// The client port; `None` lets the server pick one (read back from its log).
    pub(super) client_port: Option<u16>,
    /// The monitoring port, when [`ServerOptions::monitoring`] is on; `None` lets the
    /// server pick one.
    pub(super) http_port: Option<u16>,
    /// The JetStream store folder.
    pub(super) store_dir: String,
    /// The server name, overriding [`ServerOptions::name`] (cluster nodes need distinct ones).
    pub(super) server_name: Option<String>,
    pub(super) cluster: Option<ClusterSpec>,
}

/// The cluster block of a node's configuration.
#[derive(Debug, Clone)]
pub(super) struct ClusterSpec {
    pub(super) name: String,
    pub(super) port: u16,
    /// The cluster ports of every node, this one included (a server ignores its own route).
    pub(super) routes: Vec<u16>,
}

impl ConfigSpec {
    pub(super) fn new(options: ServerOptions, host: &'static str, store_dir: String) -> Self {
        ConfigSpec {
            client_port: options.port,
            options,
            host,
            http_port: None,
            store_dir,
            server_name: None,
            cluster: None,
        }
    }

    /// The configuration file's text.
    pub(super) fn render(&self) -> String {
        let mut out = String::new();
        let port = |p: Option<u16>| p.map_or_else(|| "-1".to_string(), |p| p.to_string());
        let _ = writeln!(out, "host: {}", quote(self.host));
        let _ = writeln!(out, "port: {}", port(self.client_port));
        if let Some(name) = self.server_name.as_ref().or(self.options.name.as_ref()) {
            let _ = writeln!(out, "server_name: {}", quote(name));
        }
        if self.options.monitoring {
            let _ = writeln!(
                out,
                "http: {}",
                quote(&format!("{}:{}", self.host, port(self.http_port)))
            );
        }
        if let Some(max) = self.options.max_payload {
            let _ = writeln!(out, "max_payload: {max}");
        }
        if let Some(token) = &self.options.token {
            let _ = writeln!(out, "authorization {{ token: {} }}", quote(token));
        }
        if self.options.jetstream {
            let _ = writeln!(out, "jetstream {{ store_dir: {} }}", quote(&self.store_dir));
        }
        if let Some(cluster) = &self.cluster {
            let routes: Vec<String> = cluster
                .routes
                .iter()
                .map(|p| quote(&format!("nats-route://127.0.0.1:{p}")))
                .collect();
            let _ = writeln!(
                out,
                "cluster {{\n  name: {}\n  listen: {}\n  routes: [{}]\n}}",
                quote(&cluster.name),
                quote(&format!("{}:{}", self.host, cluster.port)),
                routes.join(", ")
            );
        }
        if let Some(extra) = &self.options.extra_config {
            out.push_str(extra);
            out.push('\n');
        }
        out
    }
}

/// A double-quoted configuration string; the format takes JSON's escapes.
fn quote(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_server_lets_nats_pick_its_port_and_runs_jetstream() {
        let spec = ConfigSpec::new(ServerOptions::default(), "127.0.0.1", "/tmp/js".into());
        let text = spec.render();
        assert!(text.contains("host: \"127.0.0.1\"\nport: -1\n"), "{text}");
        assert!(
            text.contains("jetstream { store_dir: \"/tmp/js\" }"),
            "{text}"
        );
        assert!(!text.contains("authorization"), "{text}");
    }

    #[test]
    fn options_and_cluster_routes_appear_in_the_file() {
        let options = ServerOptions::new()
            .token("s3\"cret")
            .max_payload(2048)
            .name("alpha")
            .extra_config("debug: true");
        let mut spec = ConfigSpec::new(options, "127.0.0.1", "/tmp/js".into());
        spec.client_port = Some(4333);
        spec.cluster = Some(ClusterSpec {
            name: "reflow_test".into(),
            port: 6001,
            routes: vec![6001, 6002],
        });
        let text = spec.render();
        assert!(text.contains("port: 4333\n"), "{text}");
        assert!(text.contains("server_name: \"alpha\""), "{text}");
        assert!(text.contains("token: \"s3\\\"cret\""), "{text}");
        assert!(text.contains("max_payload: 2048"), "{text}");
        assert!(text.contains("listen: \"127.0.0.1:6001\""), "{text}");
        assert!(
            text.contains(
                "routes: [\"nats-route://127.0.0.1:6001\", \"nats-route://127.0.0.1:6002\"]"
            ),
            "{text}"
        );
        assert!(text.ends_with("debug: true\n"), "{text}");
    }
}
