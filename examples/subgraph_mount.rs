//! Mounting a remote network as a subgraph: network `server` offers `data_processor`,
//! `data_internal` and `model`; network `app` mounts it at `server`, taking the `data_*`
//! actors but no `*_internal` one, and wires `server/data_processor` like a local actor.
//! While mounted, `server` adds `data_enricher`, and it appears under the mount.
//!
//!     cargo run --example subgraph_mount

mod common;

use std::time::Duration;

use reflow_network::Message;
use reflow_network::actor::{FnActor, ProbeActor};
use reflow_network::components::Passthrough;
use reflow_network::distributed_network::{DistributedNetwork, SubgraphMountConfig};
use reflow_network::network::Connector;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let nats = common::server().await?;
    let double = || {
        FnActor::map("in", "out", |m| {
            Message::Integer(m.as_integer().unwrap_or(0) * 2)
        })
    };

    let mut server = DistributedNetwork::new(common::config(&nats.url(), "server", "s1")).await?;
    server.register_local_actor("data_processor", double(), None)?;
    server.register_local_actor("data_internal", Passthrough, None)?;
    server.register_local_actor("model", Passthrough, None)?;
    server.start().await?;
    println!("network `server` is up with data_processor, data_internal and model");

    let mut app = DistributedNetwork::new(common::config(&nats.url(), "app", "a1")).await?;
    let (results, mut seen) = ProbeActor::channel(16);
    app.register_local_actor("results", results, None)?;
    app.start().await?;
    let mounted = app
        .mount_network_as_subgraph(SubgraphMountConfig {
            mount_point: "server".into(),
            network_id: "server".into(),
            include_patterns: vec!["data_*".into()],
            exclude_patterns: vec!["*_internal".into()],
        })
        .await?;
    println!("`app` mounted {mounted:?}");

    let input = {
        let local = app.get_local_network();
        let mut local = local.write();
        local.add_connection(Connector::new(
            "server/data_processor",
            "out",
            "results",
            "in",
        ))?;
        local.inlet("server/data_processor", "in")?
    };
    input.send(Message::Integer(21)).await?;
    let got = common::receive(&mut seen, 1).await?;
    println!(
        "sent 21 through server/data_processor; got {}",
        got[0].to_json()
    );

    server.register_local_actor("data_enricher", Passthrough, None)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app
        .get_local_network()
        .read()
        .node("server/data_enricher")
        .is_none()
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "server/data_enricher never appeared under the mount"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("`server` added data_enricher; it appeared as server/data_enricher");
    let local = app.get_local_network();
    anyhow::ensure!(
        !local.read().has_actor("server/data_internal") && !local.read().has_actor("server/model"),
        "an actor the globs leave out was mounted"
    );
    println!("data_internal and model stay out of the mount");

    app.unmount_subgraph("server").await?;
    app.shutdown().await?;
    server.shutdown().await?;
    println!("unmounted and shut down cleanly");
    Ok(())
}
