//! The seed's "Discovery": finding the networks that are live and what they offer.
//! Every network answers on the broker and keeps a liveness entry, so a newcomer needs
//! nothing but the NATS URL: it lists every live network, narrows the list down by
//! capability or by tags, asks one network for its actors and pings it, and sees a
//! network leave.

mod common;

use std::time::Duration;

use reflow_network::actor::FnActor;
use reflow_network::components::{Counter, Log};
use reflow_network::discovery::NetworkInfo;
use reflow_network::distributed_network::DistributedNetwork;
use reflow_network::events::NetworkEvent;

/// The ids of `networks`, for printing and checking.
fn ids(networks: &[NetworkInfo]) -> Vec<&str> {
    networks.iter().map(|n| n.network_id.as_str()).collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = common::server().await?;

    // A text service in Europe...
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
    // Capabilities say what a network offers; tags are free-form labels. Both can be set
    // before start() and are then in its very first liveness entry.
    service.set_capabilities(["text", "counting"]);
    service.set_tags(["region=eu", "tier=gold"]);
    service.start().await?;

    // ...and a trainer with a GPU in the US.
    let mut trainer =
        DistributedNetwork::new(common::config(&server.url(), "ml_trainer", "t1")).await?;
    trainer.set_capabilities(["ml-training"]);
    trainer.set_tags(["region=us", "gpu"]);
    trainer.start().await?;

    let mut client =
        DistributedNetwork::new(common::config(&server.url(), "discovery_client", "c1")).await?;
    client.start().await?;

    // Every live network, this one included: start() returns once the picture is whole.
    let all = client.discover_networks().await?;
    println!("{} networks are live:", all.len());
    for network in &all {
        println!(
            "  {:<16} {} instance(s), {} actors, capabilities {:?}, tags {:?}",
            network.network_id,
            network.instance_count,
            network.actor_count,
            network.capabilities,
            network.tags
        );
    }
    anyhow::ensure!(
        ids(&all) == ["discovery_client", "discovery_server", "ml_trainer"],
        "expected the three networks, found {:?}",
        ids(&all)
    );

    let trainers = client
        .discover_networks_with_capability("ml-training")
        .await?;
    println!("networks that can do `ml-training`: {:?}", ids(&trainers));
    anyhow::ensure!(
        ids(&trainers) == ["ml_trainer"],
        "found {:?}",
        ids(&trainers)
    );

    let in_europe = client.discover_networks_by_tags(["region=eu"]).await?;
    println!("networks tagged `region=eu`: {:?}", ids(&in_europe));
    anyhow::ensure!(
        ids(&in_europe) == ["discovery_server"],
        "found {:?}",
        ids(&in_europe)
    );

    // Tags narrow down: a network must carry every one asked for.
    let gpu_in_europe = client
        .discover_networks_by_tags(["region=eu", "gpu"])
        .await?;
    println!(
        "networks tagged both `region=eu` and `gpu`: {:?} (none: the GPU is in the US)",
        ids(&gpu_in_europe)
    );
    anyhow::ensure!(gpu_in_europe.is_empty(), "found {:?}", ids(&gpu_in_europe));

    // Having found a network, ask it what it hosts and how far away it is.
    let rtt = client.ping_network("discovery_server").await?;
    println!("`discovery_server` answers a ping; round trip {rtt:.2?}");
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

    // A network that shuts down deletes its liveness entry, and every other network is
    // told at once: an event, then it is gone from discovery.
    let mut events = client.events();
    trainer.shutdown().await?;
    let told = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.recv().await {
            if let NetworkEvent::NetworkDown {
                network, reason, ..
            } = event
                && network == "ml_trainer"
            {
                return Some(reason);
            }
        }
        None
    })
    .await;
    let Ok(Some(reason)) = told else {
        anyhow::bail!("no NetworkDown event for `ml_trainer` within 10 s");
    };
    println!("`ml_trainer` shut down; the client was told it went down ({reason:?})");
    let left = client
        .discover_networks_with_capability("ml-training")
        .await?;
    println!("networks that can do `ml-training` now: {:?}", ids(&left));
    anyhow::ensure!(left.is_empty(), "found {:?}", ids(&left));

    client.shutdown().await?;
    service.shutdown().await?;
    println!("all networks shut down");
    Ok(())
}
