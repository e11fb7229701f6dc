//! The seed's "Basic Setup": a server network and a client network, with the seed's full
//! `DistributedConfig` literals. The server binds a port; the client connects to it with
//! `connect_to_network("127.0.0.1:PORT")`, a direct TCP link, as the seed does. Both also
//! join one NATS server, which is how they find each other and talk when no direct
//! address is given (`connect_to_network("main_server")`).

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

    // The seed binds 8080 and 8081. Fixed ports collide with whatever else runs on the
    // machine (a web server, another copy of this example), so ask the OS for free ones,
    // each just before the network that binds it starts.
    let server_port = common::free_port()?;

    let server_config = DistributedConfig {
        network_id: "main_server".to_string(),
        instance_id: "server_001".to_string(),
        bind_address: "0.0.0.0".to_string(),
        bind_port: server_port,
        discovery_endpoints: vec![server.url()], // NATS URLs, not http:// services
        auth_token: Some("secure_token".to_string()),
        max_connections: 100,
        heartbeat_interval_ms: 30000,
        local_network_config: NetworkConfig::default(),
    };
    let mut server_network = DistributedNetwork::new(server_config).await?;
    server_network.start().await?;
    println!("server network `main_server` started on port {server_port}");

    let client_port = common::free_port()?;
    let client_config = DistributedConfig {
        network_id: "client_worker".to_string(),
        instance_id: "client_001".to_string(),
        bind_address: "127.0.0.1".to_string(),
        bind_port: client_port,
        discovery_endpoints: vec![server.url()],
        auth_token: Some("secure_token".to_string()),
        max_connections: 10,
        heartbeat_interval_ms: 30000,
        local_network_config: NetworkConfig::default(),
    };
    let mut client_network = DistributedNetwork::new(client_config).await?;

    client_network.start().await?;
    println!("client network `client_worker` started on port {client_port}");

    // The seed's line: a host:port is a direct link; the handshake proves the token.
    client_network
        .connect_to_network(&format!("127.0.0.1:{server_port}"))
        .await?;
    println!("client connected to server at 127.0.0.1:{server_port}");
    for link in client_network.get_active_connections().await? {
        println!(
            "  linked to `{}` (instance {}) over {:?}",
            link.network, link.instance, link.transport
        );
    }
    anyhow::ensure!(
        client_network.is_network_connected("main_server").await,
        "the client should be connected to main_server"
    );
    let rtt = client_network.ping_network("main_server").await?;
    println!("ping main_server: round trip {rtt:.2?}");

    client_network.shutdown().await?;
    server_network.shutdown().await?;
    println!("both shut down");
    Ok(())
}
