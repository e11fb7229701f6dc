//! The seed's "Star Topology": a central hub and three spokes. Each spoke connects to
//! the hub by network id (through NATS) and sends it a report.

mod common;

use reflow_network::Message;
use reflow_network::actor::ProbeActor;
use reflow_network::distributed_network::{DistributedConfig, DistributedNetwork};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = common::server().await?;
    let hub_config = DistributedConfig {
        max_connections: 100,
        ..common::config(&server.url(), "central_hub", "hub")
    };
    let mut hub = DistributedNetwork::new(hub_config).await?;
    let (collect, mut reports) = ProbeActor::channel(16);
    hub.register_local_actor("collect", collect, None)?;
    hub.start().await?;
    println!("hub `central_hub` is up with actor `collect`");

    let mut spokes = Vec::new();
    for name in ["data_processor", "ml_trainer", "analytics"] {
        let mut spoke = DistributedNetwork::new(common::config(&server.url(), name, "s1")).await?;
        spoke.start().await?;
        spoke.connect_to_network("central_hub").await?;
        spoke
            .send_to_remote_actor(
                "central_hub",
                "collect",
                "in",
                Message::from(format!("{name} ready")),
            )
            .await?;
        println!("spoke `{name}` connected to the hub and reported");
        spokes.push(spoke);
    }
    let got = common::receive(&mut reports, 3).await?;
    println!(
        "the hub received: {:?}",
        got.iter().map(|m| m.to_json()).collect::<Vec<_>>()
    );
    let peers: Vec<String> = hub
        .get_active_connections()
        .await?
        .into_iter()
        .map(|c| c.network)
        .collect();
    println!("the hub's active connections: {peers:?}");
    for mut spoke in spokes {
        spoke.shutdown().await?;
    }
    hub.shutdown().await?;
    Ok(())
}
