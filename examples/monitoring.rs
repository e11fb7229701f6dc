//! The seed's "Monitoring and Diagnostics": configuration, active connections, traffic
//! counters, the event stream, and a health check built on `ping_network`.

mod common;

use std::time::Duration;

use reflow_network::Message;
use reflow_network::components::Sink;
use reflow_network::distributed_network::DistributedNetwork;

async fn health_check(network: &DistributedNetwork, target: &str) -> bool {
    network.ping_network(target).await.is_ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = common::server().await?;
    let mut target =
        DistributedNetwork::new(common::config(&server.url(), "target_network", "t1")).await?;
    target.register_local_actor("sink", Sink, None)?;
    let mut target_events = target.events();
    target.start().await?;

    let mut monitor =
        DistributedNetwork::new(common::config(&server.url(), "monitor", "m1")).await?;
    monitor.start().await?;
    let config = monitor.get_config();
    println!(
        "network id: {}, instance: {}, broker: {:?}",
        config.network_id,
        config.instance_id,
        config.nats_urls()
    );

    println!(
        "health of target_network before it has peers: {}",
        health_check(&monitor, "target_network").await
    );
    monitor.connect_to_network("target_network").await?;
    for i in 0..10 {
        monitor
            .send_to_remote_actor("target_network", "sink", "in", Message::Integer(i))
            .await?;
    }
    let event = tokio::time::timeout(Duration::from_secs(2), target_events.recv()).await?;
    println!("target saw the event: {event:?}");
    for c in target.get_active_connections().await? {
        println!(
            "target's active connection: {} ({:?}, over {:?})",
            c.network, c.direction, c.transport
        );
    }
    println!("monitor stats: {:?}", monitor.stats());
    println!("target stats:  {:?}", target.stats());
    println!(
        "health of a network nobody runs: {}",
        health_check(&monitor, "ghost").await
    );

    monitor.shutdown().await?;
    target.shutdown().await?;
    Ok(())
}
