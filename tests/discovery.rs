//! Discovery against a real nats-server: scatter-gather on `_reflow.discover` merged with
//! the liveness roster, capability and tag filters, actor listings, and the NATS
//! Services API that standard tooling reads.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{config, started};
use futures::StreamExt;
use reflow_network::Message;
use reflow_network::actor::{FnActor, Metadata};
use reflow_network::components::Passthrough;
use reflow_network::discovery::{ControlReply, NetworkInfo};
use reflow_network::distributed_network::DistributedNetwork;
use reflow_network::local_server::NatsServer;

/// Sends `payload` to `subject` with an inbox reply subject and collects replies until
/// 300 ms pass without one.
async fn scatter_gather(client: &async_nats::Client, subject: &str) -> Vec<async_nats::Message> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply(subject.to_string(), inbox, "".into())
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Ok(Some(reply)) =
        tokio::time::timeout(Duration::from_millis(300), replies.next()).await
    {
        got.push(reply);
    }
    got
}

fn ids(networks: &[NetworkInfo]) -> BTreeSet<String> {
    networks.iter().map(|n| n.network_id.clone()).collect()
}

fn caps_of(i: usize) -> Vec<String> {
    let mut caps = Vec::new();
    if i.is_multiple_of(2) {
        caps.push("gpu".to_string());
    }
    if i.is_multiple_of(3) {
        caps.push("cpu".to_string());
    }
    caps
}

fn tags_of(i: usize) -> Vec<String> {
    let region = if i.is_multiple_of(2) { "eu" } else { "us" };
    vec![format!("region={region}"), format!("tier={}", i % 4)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_networks_are_discovered_with_their_capabilities_and_tags() {
    const N: usize = 200;
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let began = Instant::now();
    let networks: Vec<DistributedNetwork> = futures::stream::iter(0..N)
        .map(|i| {
            let url = url.clone();
            async move {
                let mut network =
                    DistributedNetwork::new(config(&url, &format!("scale.n{i:03}"), "i1", 60_000))
                        .await
                        .unwrap();
                network.set_capabilities(caps_of(i));
                network.set_tags(tags_of(i));
                network.start().await.unwrap();
                network
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    println!("{N} networks started in {:?}", began.elapsed());

    let asker = &networks[N / 2];
    assert!(asker.live_networks().len() >= N);
    let began = Instant::now();
    let all = asker.discover_networks().await.unwrap();
    println!(
        "discover_networks over {N} networks took {:?}",
        began.elapsed()
    );
    let scale: Vec<&NetworkInfo> = all
        .iter()
        .filter(|n| n.network_id.starts_with("scale."))
        .collect();
    assert_eq!(scale.len(), N);
    assert!(all.windows(2).all(|w| w[0].network_id < w[1].network_id));
    for info in &scale {
        let i: usize = info.network_id["scale.n".len()..].parse().unwrap();
        assert_eq!(info.capabilities, caps_of(i), "{}", info.network_id);
        assert_eq!(info.tags, tags_of(i), "{}", info.network_id);
        assert_eq!(info.instance_count, 1);
    }

    let gpu = asker
        .discover_networks_with_capability("gpu")
        .await
        .unwrap();
    let expected: BTreeSet<String> = (0..N)
        .filter(|i| i.is_multiple_of(2))
        .map(|i| format!("scale.n{i:03}"))
        .collect();
    assert_eq!(ids(&gpu), expected);

    let tagged = asker
        .discover_networks_by_tags(["region=eu", "tier=0"])
        .await
        .unwrap();
    let expected: BTreeSet<String> = (0..N)
        .filter(|i| i.is_multiple_of(4))
        .map(|i| format!("scale.n{i:03}"))
        .collect();
    assert_eq!(ids(&tagged), expected);
    assert!(
        asker
            .discover_networks_by_tags(["region=eu", "region=us"])
            .await
            .unwrap()
            .is_empty()
    );

    let began = Instant::now();
    futures::future::join_all(networks.into_iter().map(|mut n| async move {
        n.shutdown().await.unwrap();
    }))
    .await;
    println!("{N} networks shut down in {:?}", began.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_of_one_network_merge_and_profile_changes_show_at_once() {
    let server = NatsServer::start().await.unwrap();
    let a1 = started(config(&server.url(), "shared", "a1", 1_000)).await;
    let a2 = started(config(&server.url(), "shared", "a2", 1_000)).await;
    a1.set_capabilities(["train"]);
    a2.set_capabilities(["serve"]);
    a2.set_tags(["region=eu"]);
    let networks = a1.discover_networks().await.unwrap();
    assert_eq!(networks.len(), 1);
    let shared = &networks[0];
    assert_eq!(shared.instance_count, 2);
    assert_eq!(shared.instances, vec!["a1", "a2"]);
    assert_eq!(shared.capabilities, vec!["serve", "train"]);
    assert_eq!(shared.tags, vec!["region=eu"]);
    assert_eq!(shared.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(shared.heartbeat_interval_ms, 1_000);
    assert!(
        shared
            .endpoints
            .nats
            .as_deref()
            .unwrap()
            .ends_with(&server.port().to_string())
    );
    assert_eq!(a1.live_networks().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_actors_and_ports_match_what_was_registered() {
    let server = NatsServer::start().await.unwrap();
    let mut host = DistributedNetwork::new(config(&server.url(), "host", "h1", 1_000))
        .await
        .unwrap();
    let double = FnActor::map("in", "out", |m| {
        Message::Integer(m.as_integer().unwrap_or(0) * 2)
    });
    let metadata: Metadata = serde_json::from_value(serde_json::json!({
        "description": "doubles integers",
        "capabilities": ["math"],
    }))
    .unwrap();
    host.register_local_actor("double", double, Some(metadata))
        .unwrap();
    host.register_local_actor("relay", Passthrough, None)
        .unwrap();
    host.start().await.unwrap();
    let asker = started(config(&server.url(), "asker", "a1", 1_000)).await;

    let mut actors = asker.discover_actors_on_network("host").await.unwrap();
    actors.sort_by(|a, b| a.id.cmp(&b.id));
    let listed: Vec<(&str, &[String], &[String])> = actors
        .iter()
        .map(|a| (a.id.as_str(), &a.inports[..], &a.outports[..]))
        .collect();
    let (ins, outs) = (vec!["in".to_string()], vec!["out".to_string()]);
    assert_eq!(
        listed,
        vec![
            ("double", &ins[..], &outs[..]),
            ("relay", &ins[..], &outs[..])
        ]
    );
    assert_eq!(actors[0].description, "doubles integers");
    assert_eq!(actors[0].capabilities, vec!["math"]);
    asker.ping_remote_actor("host", "double").await.unwrap();

    let host_info = asker
        .discover_networks()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.network_id == "host")
        .unwrap();
    assert_eq!(host_info.actors, vec!["double", "relay"]);
    assert_eq!(host_info.actor_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_answers_the_nats_services_api() {
    let server = NatsServer::start().await.unwrap();
    let _one = started(config(&server.url(), "prod.ml", "m1", 1_000)).await;
    let _two = started(config(&server.url(), "prod.ml", "m2", 1_000)).await;
    let _three = started(config(&server.url(), "billing", "b1", 1_000)).await;
    let raw = async_nats::connect(server.url()).await.unwrap();

    let pings = scatter_gather(&raw, "$SRV.PING").await;
    let mut names: Vec<String> = pings
        .iter()
        .map(|p| {
            let ping: async_nats::service::PingResponse =
                serde_json::from_slice(&p.payload).unwrap();
            format!("{}/{}", ping.name, ping.metadata["instance_id"])
        })
        .collect();
    names.sort();
    assert_eq!(names, vec!["billing/b1", "prod_ml/m1", "prod_ml/m2"]);

    let infos = scatter_gather(&raw, "$SRV.INFO.prod_ml").await;
    assert_eq!(infos.len(), 2);
    for reply in &infos {
        let info: async_nats::service::Info = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(info.metadata["network_id"], "prod.ml");
        assert_eq!(info.endpoints[0].subject, "_reflow.prod.ml.info");
    }
    let stats = scatter_gather(&raw, "$SRV.STATS.billing").await;
    assert_eq!(stats.len(), 1);

    let reply = raw
        .request("_reflow.prod.ml.info", "".into())
        .await
        .unwrap();
    let ControlReply::Ok(info) =
        serde_json::from_slice::<ControlReply<NetworkInfo>>(&reply.payload).unwrap()
    else {
        panic!("info endpoint answered with an error");
    };
    assert_eq!(info.network_id, "prod.ml");
}
