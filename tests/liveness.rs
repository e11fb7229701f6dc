//! Liveness through the JetStream KV bucket against a real nats-server: crashes expire,
//! graceful leaves are seen at once, a watcher cut off from the server still learns what
//! it missed, and a restarted instance is a new member that stays up.
//!
//! Crashed processes are real ones: the test binary runs itself again as a child
//! (`child_network_process`, ignored unless `REFLOW_CHILD_URL` is set) and kills it with
//! SIGKILL.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{CutProxy, next_event, started, wait_for};
use reflow_network::distributed_network::{DistributedConfig, DistributedNetwork};
use reflow_network::events::{DownReason, EventStream, NetworkEvent};
use reflow_network::local_server::NatsServer;

const HEARTBEAT_MS: u64 = 1_000;

/// The longest a crash may take to be reported: three heartbeats and a second.
const CRASH_BOUND: Duration = Duration::from_millis(3 * HEARTBEAT_MS + 1_000);

fn config(url: &str, network: &str, instance: &str) -> DistributedConfig {
    common::config(url, network, instance, HEARTBEAT_MS)
}

/// The network a child process runs, when this binary is started as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: the child process of the crash tests"]
async fn child_network_process() {
    let Ok(url) = std::env::var("REFLOW_CHILD_URL") else {
        return;
    };
    let network = std::env::var("REFLOW_CHILD_NETWORK").unwrap();
    let instance = std::env::var("REFLOW_CHILD_INSTANCE").unwrap();
    let _network = started(config(&url, &network, &instance)).await;
    std::future::pending::<()>().await;
}

/// A network in a child process; killed with SIGKILL when dropped.
struct ChildNetwork(common::process::Doomed);

impl ChildNetwork {
    fn spawn(url: &str, network: &str, instance: &str) -> Self {
        ChildNetwork(common::process::Doomed::this_test(
            "child_network_process",
            &[
                ("REFLOW_CHILD_URL", url.into()),
                ("REFLOW_CHILD_NETWORK", network.into()),
                ("REFLOW_CHILD_INSTANCE", instance.into()),
            ],
            false,
        ))
    }

    /// SIGKILL: no goodbye, no delete; only the entry's TTL tells the others.
    fn kill(&mut self) {
        self.0.kill();
    }
}

async fn wait_up(events: &mut EventStream, network: &str, instance: &str) {
    next_event(
        events,
        &format!("{network}/{instance} up"),
        Duration::from_secs(20),
        |e| matches!(e, NetworkEvent::NetworkUp { network: n, instance: i } if n == network && i == instance),
    )
    .await;
}

/// Waits for `network/instance` to go down; returns why and when it was seen.
async fn wait_down(
    events: &mut EventStream,
    network: &str,
    instance: &str,
    timeout: Duration,
) -> (DownReason, Instant) {
    let event = next_event(
        events,
        &format!("{network}/{instance} down"),
        timeout,
        |e| matches!(e, NetworkEvent::NetworkDown { network: n, instance: i, .. } if n == network && i == instance),
    )
    .await;
    let NetworkEvent::NetworkDown { reason, .. } = event else {
        unreachable!()
    };
    (reason, Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_process_is_reported_expired_to_every_peer_within_three_heartbeats() {
    let server = NatsServer::start().await.unwrap();
    let w1 = started(config(&server.url(), "watch_a", "w1")).await;
    let w2 = started(config(&server.url(), "watch_b", "w2")).await;
    let (mut e1, mut e2) = (w1.events(), w2.events());
    let mut child = ChildNetwork::spawn(&server.url(), "crashy", "c1");
    wait_up(&mut e1, "crashy", "c1").await;
    wait_up(&mut e2, "crashy", "c1").await;

    child.kill();
    let killed = Instant::now();
    let (peer1, peer2) = tokio::join!(
        wait_down(&mut e1, "crashy", "c1", CRASH_BOUND),
        wait_down(&mut e2, "crashy", "c1", CRASH_BOUND),
    );
    for (name, (reason, seen)) in [("w1", peer1), ("w2", peer2)] {
        let delay = seen - killed;
        println!("{name}: crash of crashy/c1 reported after {delay:?} (bound {CRASH_BOUND:?})");
        assert_eq!(reason, DownReason::Expired);
        assert!(delay <= CRASH_BOUND, "{name} took {delay:?}");
    }
    assert!(w1.live_networks().iter().all(|n| n.network_id != "crashy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_is_reported_left_within_500ms() {
    let server = NatsServer::start().await.unwrap();
    let watcher = started(config(&server.url(), "watcher", "w1")).await;
    let mut events = watcher.events();
    let mut leaving = started(config(&server.url(), "leaving", "l1")).await;
    wait_up(&mut events, "leaving", "l1").await;

    let seen = tokio::spawn(async move {
        wait_down(&mut events, "leaving", "l1", Duration::from_secs(10)).await
    });
    leaving.shutdown().await.unwrap();
    let returned = Instant::now();
    let (reason, at) = tokio::time::timeout(Duration::from_millis(500), seen)
        .await
        .expect("no NetworkDown within 500 ms of shutdown() returning")
        .unwrap();
    println!(
        "leave reported {:?} after shutdown() returned",
        at.saturating_duration_since(returned)
    );
    assert_eq!(reason, DownReason::Left);
    assert!(
        watcher
            .live_networks()
            .iter()
            .all(|n| n.network_id != "leaving")
    );
}

/// Whether the bucket holds a live value for `key`, as a plain NATS client sees it.
async fn entry_is_live(kv: &async_nats::jetstream::kv::Store, key: &str) -> bool {
    use async_nats::jetstream::kv::Operation;
    matches!(kv.entry(key).await, Ok(Some(e)) if e.operation == Operation::Put)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_cut_off_during_a_leave_and_a_crash_reports_both_after_reconnecting() {
    let server = NatsServer::start().await.unwrap();
    let proxy = CutProxy::start(server.port()).await;
    let watcher = started(config(&proxy.url(), "cutoff", "w1")).await;
    let mut events = watcher.events();
    let mut peer = started(config(&server.url(), "peer", "p1")).await;
    let mut crashy = ChildNetwork::spawn(&server.url(), "crashy", "c1");
    wait_up(&mut events, "peer", "p1").await;
    wait_up(&mut events, "crashy", "c1").await;
    let raw = async_nats::connect(server.url()).await.unwrap();
    let kv = async_nats::jetstream::new(raw)
        .get_key_value(reflow_network::liveness::BUCKET)
        .await
        .unwrap();

    proxy.cut();
    wait_for(
        "the watcher to lose the broker",
        Duration::from_secs(5),
        || async { !watcher.is_broker_connected() },
    )
    .await;
    peer.shutdown().await.unwrap();
    crashy.kill();
    wait_for(
        "the crashed entry to expire",
        Duration::from_secs(10),
        || async { !entry_is_live(&kv, "crashy.c1").await },
    )
    .await;
    let live: Vec<String> = watcher
        .live_networks()
        .into_iter()
        .map(|n| n.network_id)
        .collect();
    assert!(
        live.contains(&"peer".to_string()) && live.contains(&"crashy".to_string()),
        "the cut-off watcher cannot have seen the leave or the crash yet: {live:?}"
    );

    proxy.restore();
    let restored = Instant::now();
    let mut downs = HashMap::new();
    while downs.len() < 2 {
        let event = next_event(&mut events, "both downs", Duration::from_secs(10), |e| {
            matches!(e, NetworkEvent::NetworkDown { network, .. } if network == "peer" || network == "crashy")
        })
        .await;
        if let NetworkEvent::NetworkDown {
            network, reason, ..
        } = event
        {
            println!(
                "missed down of {network} reported as {reason:?} {:?} after the reconnect",
                restored.elapsed()
            );
            downs.insert(network, reason);
        }
    }
    assert_eq!(downs["peer"], DownReason::Left);
    assert_eq!(downs["crashy"], DownReason::Expired);
    assert!(watcher.is_broker_connected());
    let live = watcher.live_networks();
    assert!(
        live.iter()
            .all(|n| n.network_id != "peer" && n.network_id != "crashy")
    );
    assert!(live.iter().any(|n| n.network_id == "cutoff"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_the_same_instance_id_stays_up_after_the_old_ttl_passes() {
    let server = NatsServer::start().await.unwrap();
    let watcher = started(config(&server.url(), "observer", "o1")).await;
    let mut events = watcher.events();
    let incarnation = || {
        watcher
            .live_networks()
            .into_iter()
            .find(|n| n.network_id == "phoenix" && n.instance_id == "p1")
            .map(|n| n.incarnation)
    };

    let mut first = ChildNetwork::spawn(&server.url(), "phoenix", "p1");
    wait_up(&mut events, "phoenix", "p1").await;
    let old = incarnation().unwrap();
    first.kill();
    let killed = Instant::now();
    let _second = ChildNetwork::spawn(&server.url(), "phoenix", "p1");
    wait_for("the new incarnation", Duration::from_secs(20), || async {
        incarnation().is_some_and(|now| now != old)
    })
    .await;
    println!("new incarnation live {:?} after the kill", killed.elapsed());
    // Drain to the new incarnation's up; whatever the old one did happened before it.
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(100), events.recv()).await
    {
        println!("before the old TTL: {event:?}");
    }

    // The old entry's TTL (three heartbeats) and a margin pass with no down event.
    let old_ttl_passed = killed + Duration::from_millis(3 * HEARTBEAT_MS + 1_500);
    let quiet = tokio::time::timeout_at(
        old_ttl_passed.into(),
        next_event(
            &mut events,
            "a down",
            Duration::from_secs(60),
            |e| matches!(e, NetworkEvent::NetworkDown { network, .. } if network == "phoenix"),
        ),
    )
    .await;
    assert!(
        quiet.is_err(),
        "the restarted instance went down: {quiet:?}"
    );
    let now = incarnation().expect("the restarted instance is still live");
    assert_ne!(now, old);
    let discovered = watcher.discover_networks().await.unwrap();
    assert!(discovered.iter().any(|n| n.network_id == "phoenix"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_liveness_bucket_is_back_within_a_heartbeat_and_crashes_are_still_seen() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let keeper = started(config(&url, "keeper", "k1")).await;
    let mut events = keeper.events();
    let mut child = ChildNetwork::spawn(&url, "victim", "v1");
    wait_up(&mut events, "victim", "v1").await;

    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let stream = format!("KV_{}", reflow_network::liveness::BUCKET);
    js.delete_stream(&stream).await.unwrap();
    let deleted = Instant::now();
    let back = Duration::from_millis(HEARTBEAT_MS) + Duration::from_millis(500);
    wait_for("the liveness bucket to be made again", back, || {
        let (js, stream) = (js.clone(), stream.clone());
        async move { js.get_stream(&stream).await.is_ok() }
    })
    .await;
    println!(
        "the liveness bucket was back {:?} after its deletion",
        deleted.elapsed()
    );
    let kv = js
        .get_key_value(reflow_network::liveness::BUCKET)
        .await
        .unwrap();
    wait_for("both entries in the new bucket", back * 2, || {
        let kv = kv.clone();
        async move { entry_is_live(&kv, "keeper.k1").await && entry_is_live(&kv, "victim.v1").await }
    })
    .await;
    wait_for(
        "the keeper to list the victim from the new bucket",
        Duration::from_secs(5),
        || async {
            keeper
                .live_networks()
                .iter()
                .any(|n| n.network_id == "victim")
        },
    )
    .await;

    // A crash after the healing is still seen.
    let mut events = keeper.events();
    child.kill();
    let killed = Instant::now();
    let (reason, seen) = wait_down(&mut events, "victim", "v1", CRASH_BOUND).await;
    assert_eq!(reason, DownReason::Expired);
    println!("the crash was seen after {:?}", seen - killed);
}

/// How long a three-node cluster may take to give the liveness stream a new leader
/// after its leader is killed, and a watcher to see entries again, on a loaded machine.
const LEADER_ELECTED: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_loss_of_the_liveness_streams_leader_leaves_liveness_working() {
    use reflow_network::local_server::{NatsCluster, ServerOptions};
    let mut cluster = NatsCluster::start(3, ServerOptions::default())
        .await
        .unwrap();
    cluster.wait_until_formed().await.unwrap();
    let urls = cluster.urls();
    let on_all = |network: &str, instance: &str| {
        let mut config = config(&urls[0], network, instance);
        config.discovery_endpoints = urls.clone();
        config
    };
    let keeper = started(on_all("keeper", "k1")).await;

    // The node that leads the (replicated) liveness stream.
    let leader =
        common::stream_leader(&urls, &format!("KV_{}", reflow_network::liveness::BUCKET)).await;
    let survivor = urls[(leader + 1) % urls.len()].clone();

    let mut events = keeper.events();
    let mut child = ChildNetwork::spawn(&survivor, "victim", "v1");
    wait_up(&mut events, "victim", "v1").await;

    cluster.node_mut(leader).kill().await.unwrap();
    let lost = Instant::now();
    let mut late = reflow_network::distributed_network::DistributedNetwork::new(config(
        &survivor, "late", "l1",
    ))
    .await
    .unwrap();
    late.use_own_connection(true);
    late.start().await.unwrap();
    let started_after = lost.elapsed();
    println!("a new network started {started_after:?} after the leader's loss");
    assert!(started_after <= Duration::from_secs(5), "{started_after:?}");

    // A crash after the loss is still seen, by a network on the surviving nodes.
    let mut events = late.events();
    // Liveness comes back once the stream has a new leader and the victim's next
    // heartbeat is stored; the late network joins it then (it tries every second).
    // Alone that takes 3-10 s; beside the other cluster tests on a loaded two-core
    // machine it took over 20 s, so the bound is the election's, not a fast machine's.
    wait_for(
        "the late network to list the victim",
        LEADER_ELECTED,
        || async {
            late.live_networks()
                .iter()
                .any(|n| n.network_id == "victim")
        },
    )
    .await;
    child.kill();
    let killed = Instant::now();
    let (reason, seen) = wait_down(&mut events, "victim", "v1", CRASH_BOUND * 2).await;
    assert_eq!(reason, DownReason::Expired);
    println!("the crash was seen after {:?}", seen - killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_of_one_process_share_one_liveness_consumer_and_none_is_left_after_shutdown() {
    const NETWORKS: usize = 20;
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    // A fast heartbeat: a watcher that listed the bucket every few heartbeats, with a
    // fresh consumer each time, would pile them up within seconds.
    let mut networks = Vec::new();
    for n in 0..NETWORKS {
        networks.push(started(common::config(&url, &format!("n{n}"), "i", 200)).await);
    }
    // One more with a connection of its own: it holds a watcher of its own.
    let mut alone = DistributedNetwork::new(common::config(&url, "alone", "i", 200))
        .await
        .unwrap();
    alone.use_own_connection(true);
    alone.start().await.unwrap();
    let settled = Instant::now() + Duration::from_secs(4);
    let mut most = 0;
    while Instant::now() < settled {
        most = most.max(common::liveness_stream(&url).await.0);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        most, 2,
        "consumers on the liveness stream for {NETWORKS} networks sharing a connection and \
         one with its own"
    );
    assert_eq!(alone.live_networks().len(), NETWORKS + 1);

    // One network's shutdown leaves the others, and their connection, working.
    let mut events = networks[1].events();
    let mut first = networks.remove(0);
    first.shutdown().await.unwrap();
    next_event(
        &mut events,
        "n0 to leave",
        Duration::from_secs(5),
        |e| matches!(e, NetworkEvent::NetworkDown { network, reason: DownReason::Left, .. } if network == "n0"),
    )
    .await;
    networks[0].ping_network("n19").await.unwrap();
    alone.ping_network("n5").await.unwrap();
    let found = networks[3].discover_networks().await.unwrap();
    assert_eq!(found.len(), NETWORKS, "{found:?}");
    assert_eq!(common::liveness_stream(&url).await.0, 2);

    for mut network in networks {
        network.shutdown().await.unwrap();
    }
    alone.shutdown().await.unwrap();
    wait_for(
        "the liveness consumers to go with their networks",
        Duration::from_secs(5),
        || async { common::liveness_stream(&url).await.0 == 0 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_liveness_stream_states_its_consumer_limit_and_the_server_allows_past_1000() {
    use async_nats::jetstream::consumer::push;
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let mut network = started(config(&url, "first", "i")).await;
    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js
        .get_stream(format!("KV_{}", reflow_network::liveness::BUCKET))
        .await
        .unwrap();
    let stated = stream.info().await.unwrap().config.max_consumers;
    assert_eq!(stated, reflow_network::liveness::MAX_CONSUMERS);
    // Where the stream states none, nats-server refuses the 1,001st consumer; here as
    // many watchers as that, and more, are let in.
    let mut held = Vec::new();
    for n in 0..1_050 {
        let consumer = stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: client.new_inbox(),
                filter_subject: format!("$KV.{}.>", reflow_network::liveness::BUCKET),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("consumer {n} refused: {e}"));
        held.push(consumer);
    }
    drop(held);
    network.shutdown().await.unwrap();
}
