//! What every example shares: a local NATS server and a short config.
#![allow(dead_code)]

use std::time::Duration;

use reflow_network::actor::ProbeMessage;
use reflow_network::distributed_network::DistributedConfig;
use reflow_network::local_server::{NatsServer, ServerOptions};
use tokio::sync::mpsc;

/// The NATS server an example runs against: the one `NATS_URL` names, else a local
/// JetStream nats-server on a free port (provisioned on first use), stopped on drop.
pub(crate) struct Server {
    url: String,
    _local: Option<NatsServer>,
}

impl Server {
    /// The server's URL.
    pub(crate) fn url(&self) -> String {
        self.url.clone()
    }
}

/// The server `NATS_URL` names (it needs JetStream), else a local one of the example's own.
pub(crate) async fn server() -> anyhow::Result<Server> {
    if let Some(url) = std::env::var("NATS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        println!("using the NATS server at {url} (NATS_URL)");
        return Ok(Server { url, _local: None });
    }
    let local = server_with(ServerOptions::default()).await?;
    Ok(Server {
        url: local.url(),
        _local: Some(local),
    })
}

/// A local server of the example's own with `options` (a token, say): examples that need
/// a server set up a particular way start their own even when `NATS_URL` is set.
pub(crate) async fn server_with(options: ServerOptions) -> anyhow::Result<NatsServer> {
    let server = NatsServer::start_with(ServerOptions {
        jetstream: true,
        ..options
    })
    .await?;
    println!("local NATS server running at {}", server.url());
    Ok(server)
}

/// A loopback TCP port that was free a moment ago: the OS picks it for a listener that
/// is closed at once. Examples use it instead of fixed ports such as the seed's 8080,
/// which may already be taken on the machine that runs them. Another process could take
/// the port between this call and its use; that window is short, and a port taken in it
/// makes `start()` fail loudly with "Address already in use" rather than misbehave.
pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A config for `network` on the server at `url`, everything else default.
pub(crate) fn config(url: &str, network: &str, instance: &str) -> DistributedConfig {
    DistributedConfig {
        network_id: network.into(),
        instance_id: instance.into(),
        discovery_endpoints: vec![url.into()],
        heartbeat_interval_ms: 1_000,
        ..DistributedConfig::default()
    }
}

/// Receives `n` messages, or fails after five seconds.
pub(crate) async fn receive(
    seen: &mut mpsc::Receiver<ProbeMessage>,
    n: usize,
) -> anyhow::Result<Vec<reflow_network::Message>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(5), seen.recv()).await {
            Ok(Some(m)) => out.push(m.message),
            _ => anyhow::bail!("received {} of {n} messages", out.len()),
        }
    }
    Ok(out)
}

/// The JetStream domain of the hub in [`LeafStar`]: where the liveness bucket lives.
pub(crate) const HUB_DOMAIN: &str = "hub";

/// A hub server and leaf servers that join it, each its own nats-server process, with
/// JetStream domains as NATS documents them: the hub's is [`HUB_DOMAIN`], each leaf has
/// one of its own (`site1`, `site2`, ...). This is `nats/leaf/` on free ports.
pub(crate) struct LeafStar {
    pub(crate) hub: NatsServer,
    pub(crate) leaves: Vec<NatsServer>,
    _stores: tempfile::TempDir,
}

impl LeafStar {
    /// Starts the hub and `leaves` leaf servers, and waits until every leaf reaches the
    /// hub's JetStream through its link.
    pub(crate) async fn start(leaves: usize) -> anyhow::Result<LeafStar> {
        let stores = tempfile::tempdir()?;
        let jetstream = |domain: &str| {
            format!(
                "jetstream {{\n  domain: {domain}\n  store_dir: {:?}\n}}\n",
                stores.path().join(domain).display().to_string()
            )
        };
        let leafnode_port = free_port()?;
        // JetStream is set here, with its domain, rather than by the harness.
        let hub = NatsServer::start_with(
            ServerOptions::new()
                .jetstream(false)
                .name("hub")
                .extra_config(format!(
                    "{}leafnodes {{ listen: \"127.0.0.1:{leafnode_port}\" }}",
                    jetstream(HUB_DOMAIN)
                )),
        )
        .await?;
        println!(
            "hub NATS server at {} (JetStream domain `{HUB_DOMAIN}`)",
            hub.url()
        );
        let mut started = Vec::new();
        for site in 1..=leaves {
            let leaf = NatsServer::start_with(
                ServerOptions::new()
                    .jetstream(false)
                    .name(format!("leaf-site{site}"))
                    .extra_config(format!(
                        "{}leafnodes {{ remotes: [ {{ url: \"nats-leaf://127.0.0.1:{leafnode_port}\" }} ] }}",
                        jetstream(&format!("site{site}"))
                    )),
            )
            .await?;
            println!("leaf NATS server at {} joins the hub", leaf.url());
            started.push(leaf);
        }
        for leaf in &started {
            let client = async_nats::connect(leaf.url()).await?;
            let js = async_nats::jetstream::with_domain(client, HUB_DOMAIN);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while js.query_account().await.is_err() {
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the leaf at {} did not join the hub within 10 s",
                    leaf.url()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(LeafStar {
            hub,
            leaves: started,
            _stores: stores,
        })
    }
}
