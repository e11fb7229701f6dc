//! The seed's "High-Performance Configuration": bigger buffers, compression, fewer
//! heartbeats; then 20,000 messages streamed through a remote actor and back.

mod common;

use std::time::Instant;

use reflow_network::Message;
use reflow_network::actor::ProbeActor;
use reflow_network::components::Passthrough;
use reflow_network::distributed_network::{DistributedConfig, DistributedNetwork};
use reflow_network::network::{Connector, NetworkConfig};

const COUNT: usize = 20_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = common::server().await?;
    let performance = |network: &str| DistributedConfig {
        max_connections: 1000,
        heartbeat_interval_ms: 60000,
        local_network_config: NetworkConfig {
            max_buffer_size: 1024 * 1024,
            enable_compression: true,
            ..NetworkConfig::default()
        },
        ..common::config(&server.url(), network, "i1")
    };

    let mut worker = DistributedNetwork::new(performance("worker")).await?;
    worker.register_local_actor("relay", Passthrough, None)?;
    worker.start().await?;

    let mut app = DistributedNetwork::new(performance("app")).await?;
    app.register_local_actor("source", Passthrough, None)?;
    let (sink, mut seen) = ProbeActor::channel(COUNT);
    app.register_local_actor("sink", sink, None)?;
    app.start().await?;
    app.connect_to_network("worker").await?;
    let alias = app.register_remote_actor("relay", "worker").await?;
    let input = {
        let local = app.get_local_network();
        let mut local = local.write();
        local.add_connection(Connector::new("source", "out", &alias, "in"))?;
        local.add_connection(Connector::new(&alias, "out", "sink", "in"))?;
        local.inlet("source", "in")?
    };

    let started = Instant::now();
    let payload = "x".repeat(2048); // above the compression threshold
    let feeder = tokio::spawn(async move {
        for i in 0..COUNT {
            let message = Message::from_json(serde_json::json!({ "i": i, "pad": payload }));
            if input.send(message).await.is_err() {
                break;
            }
        }
    });
    let got = common::receive(&mut seen, COUNT).await?;
    feeder.await?;
    let took = started.elapsed();
    let in_order = got
        .iter()
        .enumerate()
        .all(|(i, m)| m.to_json()["i"] == serde_json::json!(i));
    println!(
        "{COUNT} messages (2 KiB each, LZ4-compressed on the wire) went to `relay@worker` and back in {:.2?}: {:.0} msg/s, in order: {in_order}",
        took,
        COUNT as f64 / took.as_secs_f64()
    );
    println!("app stats: {:?}", app.stats());
    app.shutdown().await?;
    worker.shutdown().await?;
    anyhow::ensure!(in_order, "messages arrived out of order");
    Ok(())
}
