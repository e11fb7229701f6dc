//! The seed's "Mesh Topology": three networks, each connected to the other two, each
//! able to reach every actor. In production the broker is the three-node cluster of
//! `nats/cluster/` and each network lists all three URLs in `discovery_endpoints`; this
//! example runs against one local server so that it starts anywhere in seconds.

mod common;

use reflow_network::Message;
use reflow_network::actor::FnActor;
use reflow_network::distributed_network::DistributedNetwork;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = common::server().await?;
    let names = ["mesh_node_1", "mesh_node_2", "mesh_node_3"];
    let mut nodes = Vec::new();
    for name in names {
        let mut node = DistributedNetwork::new(common::config(&server.url(), name, "i1")).await?;
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
