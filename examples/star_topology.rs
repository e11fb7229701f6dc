//! The seed's "Star Topology" across sites: a central hub network and three spokes, each
//! spoke at a site of its own. The example starts a hub nats-server and one leaf
//! nats-server per site that joins it (NATS leaf nodes, `nats/leaf/`), runs the hub
//! network on the hub server and each spoke on its site's leaf. The spokes find the hub
//! by network id, connect, and report to it; the hub then asks each spoke back.
//!
//! Every network looks for liveness in the hub's JetStream domain
//! (`set_jetstream_domain("hub")`), so there is one liveness bucket for all sites and
//! each network sees every other. With `NATS_URL` set, everything runs on that server
//! instead (its own JetStream, no domain).

mod common;

use reflow_network::Message;
use reflow_network::actor::ProbeActor;
use reflow_network::distributed_network::{DistributedConfig, DistributedNetwork};

const SPOKES: [&str; 3] = ["data_processor", "ml_trainer", "analytics"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Either the servers of a star (kept alive until the end), or the one at NATS_URL.
    let (_star, hub_url, spoke_urls, domain) = match std::env::var("NATS_URL") {
        Ok(url) if !url.trim().is_empty() => {
            println!("NATS_URL is set: every network on {url}");
            (None, url.clone(), vec![url; SPOKES.len()], None)
        }
        _ => {
            let star = common::LeafStar::start(SPOKES.len()).await?;
            let hub = star.hub.url();
            let leaves = star.leaves.iter().map(|l| l.url()).collect();
            (Some(star), hub, leaves, Some(common::HUB_DOMAIN))
        }
    };
    let new_network = |config: DistributedConfig| async move {
        let mut network = DistributedNetwork::new(config).await?;
        if let Some(domain) = domain {
            network.set_jetstream_domain(domain)?;
        }
        anyhow::Ok(network)
    };

    let hub_config = DistributedConfig {
        max_connections: 100,
        ..common::config(&hub_url, "central_hub", "hub")
    };
    let mut hub = new_network(hub_config).await?;
    let (collect, mut reports) = ProbeActor::channel(16);
    hub.register_local_actor("collect", collect, None)?;
    hub.start().await?;
    println!("hub network `central_hub` is up on {hub_url} with actor `collect`");

    let mut spokes = Vec::new();
    for (name, url) in SPOKES.into_iter().zip(&spoke_urls) {
        let mut spoke = new_network(common::config(url, name, "s1")).await?;
        let (inbox, seen) = ProbeActor::channel(16);
        spoke.register_local_actor("inbox", inbox, None)?;
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
        println!("spoke `{name}` on {url} connected to the hub and reported");
        spokes.push((spoke, seen));
    }
    let got = common::receive(&mut reports, SPOKES.len()).await?;
    println!(
        "the hub received: {:?}",
        got.iter().map(|m| m.to_json()).collect::<Vec<_>>()
    );

    // The hub sees every site, and reaches each spoke back through its leaf.
    let mut found: Vec<String> = hub
        .discover_networks()
        .await?
        .into_iter()
        .map(|n| n.network_id)
        .collect();
    found.sort();
    println!("the hub discovers: {found:?}");
    for name in SPOKES {
        anyhow::ensure!(
            found.iter().any(|f| f == name),
            "the hub does not see {name}"
        );
        hub.connect_to_network(name).await?;
        hub.send_to_remote_actor(name, "inbox", "in", Message::from("thanks"))
            .await?;
    }
    for (spoke, seen) in &mut spokes {
        let got = common::receive(seen, 1).await?;
        println!(
            "spoke `{}` heard back from the hub: {}",
            spoke.get_config().network_id,
            got[0].to_json()
        );
    }
    // Each spoke is connected both ways now: it connected to the hub, and the hub to it.
    let mut peers: Vec<String> = hub
        .get_active_connections()
        .await?
        .into_iter()
        .map(|c| c.network)
        .collect();
    peers.sort();
    peers.dedup();
    println!("the hub's peers: {peers:?}");
    for (mut spoke, _) in spokes {
        spoke.shutdown().await?;
    }
    hub.shutdown().await?;
    Ok(())
}
