//! The seed's "Mesh Topology": three networks, each connected to the other two, each
//! able to reach every actor, over a three-node NATS cluster (the shape of
//! `nats/cluster/`). Each network connects to a different node and lists all three URLs
//! in `discovery_endpoints` as its seed list, so traffic crosses the cluster's routes.

mod common;

use reflow_network::Message;
use reflow_network::actor::FnActor;
use reflow_network::distributed_network::DistributedNetwork;
use reflow_network::local_server::{NatsCluster, ServerOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cluster = NatsCluster::start(3, ServerOptions::default()).await?;
    let urls = cluster.urls();
    println!("three-node NATS cluster running at {}", urls.join(", "));
    let names = ["mesh_node_1", "mesh_node_2", "mesh_node_3"];
    let mut nodes = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        // Each network's own node first, the others as fallbacks.
        let mut seeds = urls.clone();
        seeds.rotate_left(i);
        let mut config = common::config(&seeds[0], name, "i1");
        config.discovery_endpoints = seeds;
        let mut node = DistributedNetwork::new(config).await?;
        let me = name.to_string();
        node.register_local_actor(
            "echo",
            FnActor::map("in", "out", move |m| {
                Message::from(format!("{me} got {}", m.to_json()))
            }),
            None,
        )?;
        node.start().await?;
        nodes.push(node);
    }
    for (i, node) in nodes.iter().enumerate() {
        for (j, other) in names.iter().enumerate() {
            if i != j {
                node.connect_to_network(other).await?;
                let rtt = node.ping_remote_actor(other, "echo").await?;
                node.send_to_remote_actor(other, "echo", "in", Message::Integer(i as i64))
                    .await?;
                println!(
                    "{} -> {other}: connected, echo answered a ping in {rtt:.2?}, and took a message",
                    names[i]
                );
            }
        }
    }
    for node in &nodes {
        println!(
            "{} has {} active connections",
            node.get_config().network_id,
            node.get_active_connections().await?.len()
        );
    }
    for mut node in nodes {
        node.shutdown().await?;
    }
    Ok(())
}
