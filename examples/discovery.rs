//! The seed's "Discovery": finding out what another network offers. Every network
//! answers on the broker, so a newcomer needs only its network id: it lists its actors
//! and ports and pings it. (`discover_networks()`, which lists every live network from
//! the liveness bucket, arrives with the discovery work.)

mod common;

use reflow_network::actor::FnActor;
use reflow_network::components::{Counter, Log};
use reflow_network::distributed_network::DistributedNetwork;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = common::server().await?;
    let mut service =
        DistributedNetwork::new(common::config(&server.url(), "discovery_server", "d1")).await?;
    service.register_local_actor("count", Counter::default(), None)?;
    service.register_local_actor("log", Log, None)?;
    service.register_local_actor(
        "upper",
        FnActor::map("text", "upper", |m| {
            reflow_network::Message::from(m.as_str().unwrap_or_default().to_uppercase())
        }),
        None,
    )?;
    service.start().await?;

    let mut client =
        DistributedNetwork::new(common::config(&server.url(), "discovery_client", "c1")).await?;
    client.start().await?;
    let rtt = client.ping_network("discovery_server").await?;
    println!("`discovery_server` answers; round trip {rtt:.2?}");
    let mut actors = client
        .discover_actors_on_network("discovery_server")
        .await?;
    actors.sort_by(|a, b| a.id.cmp(&b.id));
    println!("it hosts {} actors:", actors.len());
    for actor in &actors {
        println!(
            "  {:<6} in {:?} out {:?} ({})",
            actor.id, actor.inports, actor.outports, actor.description
        );
    }
    match client.discover_actors_on_network("nobody_here").await {
        Ok(_) => anyhow::bail!("an absent network should not answer"),
        Err(e) => println!("asking an absent network fails at once: {e}"),
    }
    client.shutdown().await?;
    service.shutdown().await?;
    Ok(())
}
