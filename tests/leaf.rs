//! The star across sites on real leaf nodes: a hub server and two leaf servers, each its
//! own nats-server process, with JetStream domains as NATS documents them (the hub's
//! domain `hub`, each leaf a domain of its own), and every network looking for liveness
//! in the hub's domain, so that there is one bucket and every site sees every other.
//! The servers run `nats/leaf/hub.conf` and `nats/leaf/leaf.conf` (ports and stores
//! replaced). Each leaf joins the hub through a TCP proxy the test can cut, which is how the loss
//! of one leaf's link to the hub is made: the hub, the other leaf and every client
//! connection stay up.

mod common;

use std::time::Duration;

use common::CutProxy;
use common::process::Doomed;
use futures::StreamExt;
use reflow_network::Message;
use reflow_network::actor::{FnActor, ProbeActor};
use reflow_network::components::Passthrough;
use reflow_network::distributed_network::DistributedNetwork;
use reflow_network::events::{DownReason, EventStream, NetworkEvent};
use reflow_network::local_server::{NatsServer, ServerOptions};

/// The hub's JetStream domain, which holds the liveness bucket.
const HUB_DOMAIN: &str = "hub";
const HEARTBEAT_MS: u64 = 1_000;

/// A hub and two leaves; `links[i]` carries leaf `i`'s connection to the hub.
struct Star {
    hub: NatsServer,
    leaves: Vec<NatsServer>,
    links: Vec<CutProxy>,
    _stores: tempfile::TempDir,
}

/// `nats/leaf/{file}` with each `(from, to)` replaced; a `from` the file no longer holds
/// fails the test, so the files and the test cannot drift apart.
fn leaf_config(file: &str, replace: &[(&str, String)]) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("nats/leaf")
        .join(file);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in replace {
        assert!(
            text.contains(from),
            "{} no longer holds {from:?}",
            path.display()
        );
        text = text.replace(from, to);
    }
    text
}

impl Star {
    /// The servers of `nats/leaf/`, on free ports with stores in a temporary folder:
    /// the harness sets the client port (the files' `listen` lines go), JetStream and
    /// everything else come from the files.
    async fn start() -> Star {
        let stores = tempfile::tempdir().unwrap();
        let store = |name: &str| stores.path().join(name).display().to_string();
        let leafnode_port = common::free_port();
        let hub = NatsServer::start_with(ServerOptions::new().jetstream(false).extra_config(
            leaf_config(
                "hub.conf",
                &[
                    ("listen: 127.0.0.1:4222", String::new()),
                    ("./target/nats-data/hub", store("hub")),
                    // Not advertised: a leaf that learnt the hub's own address would
                    // rejoin around the proxy that stands for its link.
                    (
                        "listen: 127.0.0.1:7422",
                        format!("listen: 127.0.0.1:{leafnode_port}\n  no_advertise: true"),
                    ),
                ],
            ),
        ))
        .await
        .unwrap();
        let mut leaves = Vec::new();
        let mut links = Vec::new();
        for site in 1..=2 {
            let link = CutProxy::start(leafnode_port).await;
            let leaf = NatsServer::start_with(ServerOptions::new().jetstream(false).extra_config(
                leaf_config(
                    "leaf.conf",
                    &[
                        ("listen: 127.0.0.1:4232", String::new()),
                        (
                            "./target/nats-data/leaf-site-1",
                            store(&format!("site{site}")),
                        ),
                        (
                            "server_name: leaf-site-1",
                            format!("server_name: leaf-site-{site}"),
                        ),
                        ("domain: site1", format!("domain: site{site}")),
                        ("127.0.0.1:7422", format!("127.0.0.1:{}", link.port())),
                    ],
                ),
            ))
            .await
            .unwrap();
            leaves.push(leaf);
            links.push(link);
        }
        let star = Star {
            hub,
            leaves,
            links,
            _stores: stores,
        };
        for site in 0..2 {
            star.wait_linked(site).await;
        }
        star
    }

    /// Waits until leaf `site` is joined to the hub: a message published on the hub
    /// reaches a subscriber on the leaf, and the hub's JetStream answers the leaf's
    /// clients in the hub's domain.
    async fn wait_linked(&self, site: usize) {
        let leaf = async_nats::connect(self.leaves[site].url()).await.unwrap();
        let hub = async_nats::connect(self.hub.url()).await.unwrap();
        let subject = format!("linked.{site}");
        let mut heard = leaf.subscribe(subject.clone()).await.unwrap();
        leaf.flush().await.unwrap();
        let js = async_nats::jetstream::with_domain(leaf.clone(), HUB_DOMAIN);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            hub.publish(subject.clone(), "?".into()).await.unwrap();
            hub.flush().await.unwrap();
            let crossed = tokio::time::timeout(Duration::from_millis(200), heard.next())
                .await
                .is_ok();
            if crossed && js.query_account().await.is_ok() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "leaf {} did not join the hub within 20 s",
                site + 1
            );
        }
    }
}

/// A started network `network` on the server at `url`, looking for liveness in the
/// hub's domain, once `setup` has registered what it hosts.
async fn network_on(
    url: &str,
    network: &str,
    setup: impl FnOnce(&DistributedNetwork),
) -> DistributedNetwork {
    let mut net = DistributedNetwork::new(common::config(url, network, "i1", HEARTBEAT_MS))
        .await
        .unwrap();
    net.set_jetstream_domain(HUB_DOMAIN).unwrap();
    setup(&net);
    net.start().await.unwrap();
    net
}

fn doubler() -> FnActor {
    FnActor::map("in", "out", |m| {
        Message::Integer(m.as_integer().unwrap_or(-1) * 2)
    })
}

/// Waits until `network` discovers every one of `wanted`.
async fn discovers(network: &DistributedNetwork, wanted: &[&str]) {
    let id = network.get_config().network_id.clone();
    common::wait_for(
        &format!("{id} to discover {wanted:?}"),
        Duration::from_secs(10),
        || async {
            let found = network.discover_networks().await.unwrap();
            wanted
                .iter()
                .all(|w| found.iter().any(|n| n.network_id == *w))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_on_two_leaves_and_the_hub_discover_each_other_and_send_leaf_to_leaf() {
    let star = Star::start().await;
    let central = network_on(&star.hub.url(), "central", |_| {}).await;
    let site2 = network_on(&star.leaves[1].url(), "site2", |n| {
        n.register_local_actor("double", doubler(), None).unwrap();
    })
    .await;
    let (sink, mut seen) = ProbeActor::channel(1_000);
    let site1 = network_on(&star.leaves[0].url(), "site1", |n| {
        n.register_local_actor("source", Passthrough, None).unwrap();
        n.register_local_actor("sink", sink, None).unwrap();
    })
    .await;

    let all = ["central", "site1", "site2"];
    for network in [&central, &site1, &site2] {
        discovers(network, &all).await;
    }
    // One bucket, in the hub's domain: nothing was made in the leaves' own.
    for leaf in &star.leaves {
        let client = async_nats::connect(leaf.url()).await.unwrap();
        let own = async_nats::jetstream::new(client);
        assert!(
            own.get_key_value(reflow_network::liveness::BUCKET)
                .await
                .is_err(),
            "a liveness bucket in a leaf's own domain"
        );
    }

    // Streamed, leaf to leaf through the hub, and the outputs back the same way.
    site1.connect_to_network("site2").await.unwrap();
    let alias = site1
        .register_remote_actor("double", "site2")
        .await
        .unwrap();
    let inlet = common::wire_source_through(&site1, &alias, Some("sink"));
    let feeder = common::feed(inlet, 0..500, Message::Integer);
    let got = common::recv_ints(&mut seen, 500, Duration::from_secs(20), "doubled values").await;
    feeder.await.unwrap();
    assert_eq!(got, (0..500).map(|v| v * 2).collect::<Vec<_>>());

    // Confirmed, leaf to leaf and leaf to hub.
    site1
        .send_to_remote_actor("site2", "double", "in", Message::Integer(21))
        .await
        .unwrap();
    central.connect_to_network("site1").await.unwrap();
    central
        .send_to_remote_actor("site1", "sink", "in", Message::Integer(7))
        .await
        .unwrap();
    // A confirmed send asks for no return: only the 7 sent to `sink` itself arrives, and
    // the 42 `double` made of the first never comes back to site1's proxy.
    let got = common::recv_ints(&mut seen, 1, Duration::from_secs(5), "the send to sink").await;
    assert_eq!(got, [7]);
    assert!(
        seen.try_recv().is_err(),
        "a confirmed send's output came back"
    );
    site2.ping_network("site1").await.unwrap();
}

/// One network in a child process, when this binary is started as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: a child process of the leaf tests"]
async fn child_leaf_network() {
    let Ok(url) = std::env::var("REFLOW_LEAF_URL") else {
        return;
    };
    let network = std::env::var("REFLOW_LEAF_NETWORK").unwrap();
    let _network = network_on(&url, &network, |_| {}).await;
    println!("ready");
    std::future::pending::<()>().await;
}

/// Starts `network` on the server at `url` in a child process; returns once it runs.
async fn child_network(url: &str, network: &str) -> Doomed {
    let mut child = Doomed::this_test(
        "child_leaf_network",
        &[
            ("REFLOW_LEAF_URL", url.to_string()),
            ("REFLOW_LEAF_NETWORK", network.to_string()),
        ],
        true,
    );
    child
        .wait_for_line(
            "ready",
            Duration::from_secs(60),
            &format!("starting {network}"),
        )
        .await;
    child
}

/// Reads `events` until `network` goes down for `reason` (or comes up, with `None`).
async fn sees(
    events: &mut EventStream,
    network: &str,
    reason: Option<DownReason>,
    limit: Duration,
) {
    let what = match reason {
        None => format!("{network} up"),
        Some(reason) => format!("{network} down ({reason:?})"),
    };
    common::next_event(events, &what, limit, |event| match (event, reason) {
        (NetworkEvent::NetworkUp { network: n, .. }, None) => n == network,
        (
            NetworkEvent::NetworkDown {
                network: n,
                reason: r,
                ..
            },
            Some(reason),
        ) => n == network && *r == reason,
        _ => false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_killed_on_one_leaf_expires_on_the_other() {
    let star = Star::start().await;
    let site2 = network_on(&star.leaves[1].url(), "site2", |_| {}).await;
    let mut events = site2.events();
    let mut doomed = child_network(&star.leaves[0].url(), "doomed").await;
    if !site2
        .live_networks()
        .iter()
        .any(|n| n.network_id == "doomed")
    {
        sees(&mut events, "doomed", None, Duration::from_secs(10)).await;
    }
    discovers(&site2, &["doomed", "site2"]).await;

    doomed.kill();
    let killed = std::time::Instant::now();
    sees(
        &mut events,
        "doomed",
        Some(DownReason::Expired),
        Duration::from_secs(15),
    )
    .await;
    println!(
        "the kill on leaf 1 was seen on leaf 2 after {:.1?}",
        killed.elapsed()
    );
    assert!(
        site2
            .live_networks()
            .iter()
            .all(|n| n.network_id != "doomed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_leafs_link_to_the_hub_is_reported_and_recovered() {
    let star = Star::start().await;
    let (collect, mut seen) = ProbeActor::channel(1_000);
    let site2 = network_on(&star.leaves[1].url(), "site2", |n| {
        n.register_local_actor("collect", collect, None).unwrap();
    })
    .await;
    let central = network_on(&star.hub.url(), "central", |_| {}).await;
    let site1 = network_on(&star.leaves[0].url(), "site1", |n| {
        n.register_local_actor("source", Passthrough, None).unwrap();
    })
    .await;
    discovers(&site1, &["central", "site1", "site2"]).await;
    site1.connect_to_network("site2").await.unwrap();
    let alias = site1
        .register_remote_actor("collect", "site2")
        .await
        .unwrap();
    let inlet = common::wire_source_through(&site1, &alias, None);
    site1
        .send_to_remote_actor("site2", "collect", "in", Message::Integer(-1))
        .await
        .unwrap();
    assert_eq!(
        common::recv_ints(&mut seen, 1, Duration::from_secs(5), "the first send").await,
        [-1]
    );
    let mut site1_events = site1.events();
    let mut site2_events = site2.events();
    let mut central_events = central.events();

    // Cut leaf 1 off the hub: leaf 1's network hears it, the others see it expire.
    star.links[0].cut();
    let cut = std::time::Instant::now();
    let lost = common::next_event(
        &mut site1_events,
        "LivenessLost on leaf 1",
        Duration::from_secs(10),
        |e| matches!(e, NetworkEvent::LivenessLost { .. }),
    )
    .await;
    println!("leaf 1 reported {lost:?} after {:.1?}", cut.elapsed());
    assert!(
        site1.is_broker_connected(),
        "leaf 1's own server is still there"
    );
    for events in [&mut site2_events, &mut central_events] {
        sees(
            events,
            "site1",
            Some(DownReason::Expired),
            Duration::from_secs(15),
        )
        .await;
    }
    let refused = site1
        .send_to_remote_actor("site2", "collect", "in", Message::Integer(-2))
        .await;
    assert!(
        refused.is_err(),
        "a confirmed send across a cut link: {refused:?}"
    );
    // Streamed while the link is down: held, and sent again once it is back.
    let feeder = common::feed(inlet.clone(), 0..50, Message::Integer);
    feeder.await.unwrap();

    // The link back: leaf 1 hears liveness again, the others see it up, sends work.
    star.links[0].restore();
    let restored = std::time::Instant::now();
    common::next_event(
        &mut site1_events,
        "LivenessRegained on leaf 1",
        Duration::from_secs(15),
        |e| matches!(e, NetworkEvent::LivenessRegained),
    )
    .await;
    println!("leaf 1 regained liveness after {:.1?}", restored.elapsed());
    for events in [&mut site2_events, &mut central_events] {
        sees(events, "site1", None, Duration::from_secs(15)).await;
    }
    common::wait_for(
        "a confirmed send across the restored link",
        Duration::from_secs(10),
        || async {
            site1
                .send_to_remote_actor("site2", "collect", "in", Message::Integer(1_000))
                .await
                .is_ok()
        },
    )
    .await;
    let feeder = common::feed(inlet, 50..100, Message::Integer);
    feeder.await.unwrap();
    // Every streamed value arrives: those sent into the cut ones again.
    let mut missing: std::collections::BTreeSet<i64> = (0..100).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while !missing.is_empty() {
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some(m)) => {
                missing.remove(&m.message.as_integer().unwrap());
            }
            _ => panic!(
                "{} streamed values never arrived after the link came back: {:?}",
                missing.len(),
                missing.iter().take(10).collect::<Vec<_>>()
            ),
        }
    }
    println!(
        "every streamed value arrived {:.1?} after the link came back",
        restored.elapsed()
    );
    central.ping_network("site1").await.unwrap();
}

/// `reflow-bridge` with `args`, its stdout as JSON.
fn cli_json(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reflow-bridge"))
        .args(args)
        .arg("--json")
        .env_remove("NATS_URL")
        .output()
        .unwrap();
    let stdout = common::process::succeeded(&out, &format!("reflow-bridge {args:?}"));
    serde_json::from_str(&stdout).unwrap()
}

fn listed(listing: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = listing["networks"]
        .as_array()
        .expect("a list of networks")
        .iter()
        .map(|n| n["network"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_on_a_leaf_sees_every_site_with_js_domain_and_a_run_config_sets_it_too() {
    let star = Star::start().await;
    let _central = network_on(&star.hub.url(), "central", |_| {}).await;
    let _site2 = network_on(&star.leaves[1].url(), "site2", |_| {}).await;
    let leaf1 = star.leaves[0].url();

    let everywhere = cli_json(&["--nats-url", &leaf1, "--js-domain", HUB_DOMAIN, "networks"]);
    assert_eq!(listed(&everywhere), ["central", "site2"]);
    // Without it, the leaf's own JetStream answers, and a bucket of its own is made
    // there: the split the domain prevents.
    let own = || async {
        let client = async_nats::connect(&leaf1).await.unwrap();
        async_nats::jetstream::new(client)
            .get_key_value(reflow_network::liveness::BUCKET)
            .await
            .is_ok()
    };
    assert!(!own().await);
    cli_json(&["--nats-url", &leaf1, "networks"]);
    assert!(own().await, "no bucket made in the leaf's own domain");

    // `run` on leaf 1 with the domain in its [nats] section joins the hub's bucket.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("site1.toml");
    std::fs::write(
        &config,
        format!(
            "[network]\nnetwork_id = \"site1\"\nheartbeat_interval_ms = 1000\n\n\
             [nats]\njetstream_domain = \"{HUB_DOMAIN}\"\n"
        ),
    )
    .unwrap();
    let _run = common::process::Process::run(&leaf1, &config, "site1");
    let observer = &_central;
    common::wait_for(
        "the run bridge on leaf 1 in the hub's roster",
        Duration::from_secs(20),
        || async {
            observer
                .live_networks()
                .iter()
                .any(|n| n.network_id == "site1")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_started_on_a_cut_off_leaf_runs_and_joins_liveness_when_the_link_returns() {
    let star = Star::start().await;
    let (collect, mut seen) = ProbeActor::channel(16);
    let site2 = network_on(&star.leaves[1].url(), "site2", |n| {
        n.register_local_actor("collect", collect, None).unwrap();
    })
    .await;
    let mut site2_events = site2.events();
    star.links[0].cut();
    let leaf1 = async_nats::connect(star.leaves[0].url()).await.unwrap();
    let hub_js = async_nats::jetstream::with_domain(leaf1, HUB_DOMAIN);
    common::wait_for(
        "leaf 1 to lose the hub's JetStream",
        Duration::from_secs(10),
        || async { hub_js.query_account().await.is_err() },
    )
    .await;

    let mut site1 = DistributedNetwork::new(common::config(
        &star.leaves[0].url(),
        "site1",
        "i1",
        HEARTBEAT_MS,
    ))
    .await
    .unwrap();
    site1.set_jetstream_domain(HUB_DOMAIN).unwrap();
    let mut events = site1.events();
    tokio::time::timeout(Duration::from_secs(15), site1.start())
        .await
        .expect("start() on a cut-off leaf returns")
        .expect("start() on a cut-off leaf runs the network");
    common::next_event(&mut events, "LivenessLost", Duration::from_secs(10), |e| {
        matches!(e, NetworkEvent::LivenessLost { .. })
    })
    .await;
    assert!(
        site2
            .live_networks()
            .iter()
            .all(|n| n.network_id != "site1")
    );

    star.links[0].restore();
    common::next_event(
        &mut events,
        "LivenessRegained",
        Duration::from_secs(15),
        |e| matches!(e, NetworkEvent::LivenessRegained),
    )
    .await;
    sees(&mut site2_events, "site1", None, Duration::from_secs(10)).await;
    discovers(&site1, &["site1", "site2"]).await;
    site1.connect_to_network("site2").await.unwrap();
    site1
        .send_to_remote_actor("site2", "collect", "in", Message::Integer(5))
        .await
        .unwrap();
    assert_eq!(
        common::recv_ints(&mut seen, 1, Duration::from_secs(5), "the send").await,
        [5]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_naming_different_domains_do_not_share_a_connection() {
    let star = Star::start().await;
    let url = star.hub.url();
    // Two in the hub's domain share one connection (one liveness watcher); one that
    // names none gets its own, though all three use the same server.
    let _a = network_on(&url, "dom_a", |_| {}).await;
    let _b = network_on(&url, "dom_b", |_| {}).await;
    let _c = common::started(common::config(&url, "dom_c", "i1", HEARTBEAT_MS)).await;
    let (consumers, _) = common::liveness_stream(&url).await;
    assert_eq!(consumers, 2, "liveness watchers for two connections");
}
