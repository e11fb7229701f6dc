//! The seed's "Basic Setup": a server network and a client network, with the seed's full
//! `DistributedConfig` literals. Here both join one NATS server and the client connects
//! to the server by its network id.

mod common;

use reflow_network::distributed_network::{DistributedConfig, DistributedNetwork};
use reflow_network::local_server::ServerOptions;
use reflow_network::network::NetworkConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The NATS server asks for the same token the networks use.
    let server = common::server_with(ServerOptions {
        token: Some("secure_token".into()),
        ..ServerOptions::default()
    })
    .await?;

    let server_config = DistributedConfig {
        network_id: "main_server".to_string(),
        instance_id: "server_001".to_string(),
        bind_address: "0.0.0.0".to_string(),
        bind_port: 0, // the seed used 8080; 0 leaves the direct fallback off
        discovery_endpoints: vec![server.url()], // NATS URLs, not http:// services
        auth_token: Some("secure_token".to_string()),
        max_connections: 100,
        heartbeat_interval_ms: 30000,
        local_network_config: NetworkConfig::default(),
    };
    let mut server_network = DistributedNetwork::new(server_config).await?;

    let client_config = DistributedConfig {
        network_id: "client_worker".to_string(),
        instance_id: "client_001".to_string(),
        bind_address: "127.0.0.1".to_string(),
        bind_port: 0,
        discovery_endpoints: vec![server.url()],
        auth_token: Some("secure_token".to_string()),
        max_connections: 10,
        heartbeat_interval_ms: 30000,
        local_network_config: NetworkConfig::default(),
    };
    let mut client_network = DistributedNetwork::new(client_config).await?;

    server_network.start().await?;
    println!("server network `main_server` started");
    client_network.start().await?;
    println!("client network `client_worker` started");
    client_network.connect_to_network("main_server").await?;
    println!(
        "client connected to server; connected networks: {:?}",
        client_network.get_connected_networks().await
    );

    client_network.shutdown().await?;
    server_network.shutdown().await?;
    println!("both shut down");
    Ok(())
}
