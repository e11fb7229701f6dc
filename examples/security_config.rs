//! The seed's "Security Configuration": a token the NATS server and every peer must
//! know, and `max_connections` limiting how many peers a network accepts.

mod common;

use reflow_network::distributed_network::{DistributedConfig, DistributedNetwork};
use reflow_network::local_server::ServerOptions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let token = "your_secure_token_here";
    let server = common::server_with(ServerOptions {
        token: Some(token.into()),
        ..ServerOptions::default()
    })
    .await?;
    let secure = |network: &str| DistributedConfig {
        auth_token: Some(token.to_string()),
        max_connections: 1, // the seed says 50; 1 shows the limit at work
        heartbeat_interval_ms: 15000,
        ..common::config(&server.url(), network, "i1")
    };

    let mut vault = DistributedNetwork::new(secure("vault")).await?;
    vault.start().await?;
    println!("network `vault` started with a token and max_connections = 1");

    let mut first = DistributedNetwork::new(secure("teller")).await?;
    first.start().await?;
    first.connect_to_network("vault").await?;
    println!("`teller` (right token) connected to `vault`");

    let mut second = DistributedNetwork::new(secure("auditor")).await?;
    second.start().await?;
    match second.connect_to_network("vault").await {
        Ok(()) => anyhow::bail!("a second peer should have been refused"),
        Err(e) => println!("`auditor` was refused as expected: {e}"),
    }

    let mut intruder = DistributedNetwork::new(DistributedConfig {
        auth_token: Some("guessed".into()),
        ..secure("intruder")
    })
    .await?;
    match intruder.start().await {
        Ok(()) => anyhow::bail!("a wrong token should have been refused"),
        Err(e) => println!("`intruder` (wrong token) could not even join the broker: {e}"),
    }

    for mut network in [second, first, vault] {
        network.shutdown().await?;
    }
    println!("done");
    Ok(())
}
