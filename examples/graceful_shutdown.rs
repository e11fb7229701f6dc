//! The seed's "Proper shutdown sequence": stop accepting connections, let work in
//! flight finish, shut down. Messages already streamed are delivered, not dropped.

mod common;

use std::time::Duration;

use reflow_network::Message;
use reflow_network::actor::ProbeActor;
use reflow_network::components::Passthrough;
use reflow_network::distributed_network::DistributedNetwork;
use reflow_network::network::Connector;

async fn shutdown_gracefully(mut network: DistributedNetwork) -> anyhow::Result<()> {
    network.stop_accepting_connections().await?;
    // The seed waits 5 s here; shutdown() itself drains what is in flight.
    tokio::time::sleep(Duration::from_millis(200)).await;
    network.shutdown().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = common::server().await?;
    let mut receiver =
        DistributedNetwork::new(common::config(&server.url(), "receiver", "r1")).await?;
    let (probe, mut seen) = ProbeActor::channel(1000);
    receiver.register_local_actor("store", probe, None)?;
    receiver.start().await?;

    let mut sender = DistributedNetwork::new(common::config(&server.url(), "sender", "s1")).await?;
    sender.register_local_actor("source", Passthrough, None)?;
    sender.start().await?;
    sender.connect_to_network("receiver").await?;
    let alias = sender.register_remote_actor("store", "receiver").await?;
    let input = {
        let local = sender.get_local_network();
        let mut local = local.write();
        local.add_connection(Connector::new("source", "out", &alias, "in"))?;
        local.inlet("source", "in")?
    };
    for i in 0..500 {
        input.send(Message::Integer(i)).await?;
    }
    drop(input);
    println!("streamed 500 messages; shutting the sender down at once");
    shutdown_gracefully(sender).await?;
    let got = common::receive(&mut seen, 500).await?;
    println!(
        "the receiver got all {} of them after the sender left",
        got.len()
    );

    let mut late = DistributedNetwork::new(common::config(&server.url(), "late", "l1")).await?;
    late.start().await?;
    receiver.stop_accepting_connections().await?;
    match late.connect_to_network("receiver").await {
        Ok(()) => println!("(the receiver still accepted a peer)"),
        Err(e) => println!("after stop_accepting_connections, a new peer is refused: {e}"),
    }
    late.shutdown().await?;
    shutdown_gracefully(receiver).await?;
    println!("both shut down gracefully");
    Ok(())
}
