//! The seed's "Development vs Production": two configurations, both valid, one local and
//! open, one exposed and authenticated with a token from the environment.

mod common;

use reflow_network::distributed_network::{DistributedConfig, DistributedNetwork};
use reflow_network::local_server::ServerOptions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dev_config = DistributedConfig {
        bind_address: "127.0.0.1".to_string(), // local only
        heartbeat_interval_ms: 10000,          // fast heartbeats
        max_connections: 10,                   // low limit
        auth_token: None,                      // no auth for dev
        ..DistributedConfig::default()
    };
    // Production reads its token from the environment; this demo supplies one if unset.
    let token = std::env::var("AUTH_TOKEN").unwrap_or_else(|_| "demo-production-token".into());
    let prod_config = DistributedConfig {
        bind_address: "0.0.0.0".to_string(), // accept external connections
        heartbeat_interval_ms: 30000,        // balanced heartbeats
        max_connections: 1000,               // higher limit
        auth_token: Some(token.clone()),     // required auth
        ..DistributedConfig::default()
    };
    dev_config.validate()?;
    prod_config.validate()?;
    println!(
        "dev:  {:?} heartbeat {} ms, max {} peers, auth {}",
        dev_config.bind_address,
        dev_config.heartbeat_interval_ms,
        dev_config.max_connections,
        dev_config.auth_token.is_some()
    );
    println!(
        "prod: {:?} heartbeat {} ms, max {} peers, auth {}",
        prod_config.bind_address,
        prod_config.heartbeat_interval_ms,
        prod_config.max_connections,
        prod_config.auth_token.is_some()
    );

    let open = common::server().await?;
    let mut dev = DistributedNetwork::new(
        DistributedConfig {
            discovery_endpoints: vec![open.url()],
            ..common::config(&open.url(), "dev.data.processing", "d1")
        }
        .with_runtime(&dev_config),
    )
    .await?;
    dev.start().await?;
    println!("dev network `dev.data.processing` runs against an open local server");

    let secured = common::server_with(ServerOptions {
        token: Some(token),
        ..ServerOptions::default()
    })
    .await?;
    let mut prod = DistributedNetwork::new(DistributedConfig {
        network_id: "prod.ml.training".into(),
        instance_id: "p1".into(),
        discovery_endpoints: vec![secured.url()],
        ..prod_config
    })
    .await?;
    prod.start().await?;
    println!("prod network `prod.ml.training` runs against a server that requires the token");
    prod.shutdown().await?;
    dev.shutdown().await?;
    Ok(())
}

/// Copies the runtime settings of `profile` onto a config.
trait WithRuntime {
    fn with_runtime(self, profile: &DistributedConfig) -> Self;
}

impl WithRuntime for DistributedConfig {
    fn with_runtime(self, profile: &DistributedConfig) -> Self {
        DistributedConfig {
            bind_address: profile.bind_address.clone(),
            heartbeat_interval_ms: profile.heartbeat_interval_ms,
            max_connections: profile.max_connections,
            auth_token: profile.auth_token.clone(),
            ..self
        }
    }
}
