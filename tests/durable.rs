//! Durable networks, proved by killing real processes: messages to a durable network wait
//! in JetStream while it is down and arrive once, in order, when it is back; an instance
//! killed mid-stream loses nothing; a broker killed and restarted on its store loses and
//! repeats nothing (messages in flight at that moment may be stored out of order); a message that always fails is dead-lettered and the rest go on.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::process::Doomed;
use futures::StreamExt;
use reflow_network::Message;
use reflow_network::actor::{FnActor, ProbeActor};
use reflow_network::components::Passthrough;
use reflow_network::distributed_network::DistributedNetwork;
use reflow_network::durable::{Delivery, DurableOptions};
use reflow_network::events::NetworkEvent;
use reflow_network::local_server::NatsServer;
use reflow_network::network::Connector;

const WAIT: Duration = Duration::from_secs(60);

/// Durable network `B` with `collect`, a passthrough; with `sink`, its outputs go there.
async fn durable_b(
    url: &str,
    instance: &str,
    options: DurableOptions,
    collect: FnActor,
    sink: Option<ProbeActor>,
) -> DistributedNetwork {
    let mut b = DistributedNetwork::new(common::config(url, "B", instance, 500))
        .await
        .unwrap();
    b.set_durable(options).unwrap();
    b.register_local_actor("collect", collect, None).unwrap();
    if let Some(sink) = sink {
        b.register_local_actor("sink", sink, None).unwrap();
        b.get_local_network()
            .write()
            .add_connection(Connector::new("collect", "out", "sink", "in"))
            .unwrap();
    }
    b.start().await.unwrap();
    b
}

/// Passes every integer on but those of `unlucky`, on which it fails every time.
fn failing_on(unlucky: &'static [i64]) -> FnActor {
    FnActor::new(["in"], ["out"], move |_, m| {
        if m.as_integer().is_some_and(|i| unlucky.contains(&i)) {
            return Err(reflow_network::Error::new(
                reflow_network::ErrorKind::Actor,
                format!("{m:?} is unlucky"),
            ));
        }
        Ok(vec![("out".to_string(), m)])
    })
}

fn unlucky_13() -> FnActor {
    failing_on(&[13])
}

/// Makes durable B's streams, then shuts B down: what is sent to it waits for it.
async fn b_down(url: &str, options: DurableOptions, collect: FnActor) {
    let mut b = durable_b(url, "b0", options, collect, None).await;
    b.shutdown().await.unwrap();
}

/// Durable B as `instance`, passing what it takes to a probe: B, and what the probe sees.
async fn passing_b(
    url: &str,
    instance: &str,
) -> (
    DistributedNetwork,
    tokio::sync::mpsc::Receiver<reflow_network::actor::ProbeMessage>,
) {
    let (probe, seen) = ProbeActor::channel(20_000);
    let b = durable_b(
        url,
        instance,
        DurableOptions::default(),
        passthrough(),
        Some(probe),
    )
    .await;
    (b, seen)
}

/// Waits until `network` sees `pending` messages in durable B's backlog.
async fn wait_for_backlog(network: &DistributedNetwork, pending: u64, what: &str) {
    common::wait_for(what, WAIT, || async {
        network
            .durable_backlog("B")
            .await
            .is_ok_and(|backlog| backlog.pending == pending)
    })
    .await;
}

fn passthrough() -> FnActor {
    FnActor::map("in", "out", |m| m)
}

/// Network `A` streaming into `collect@B`: the inlet that feeds it.
async fn sender_a(url: &str) -> (DistributedNetwork, reflow_network::network::Inlet) {
    let a = common::started_with(common::config(url, "A", "a1", 500), |a| {
        a.register_local_actor("source", Passthrough, None).unwrap();
    })
    .await;
    a.connect_to_network("B").await.unwrap();
    let proxy = a.register_remote_actor("collect", "B").await.unwrap();
    let input = common::wire_source_through(&a, &proxy, None);
    (a, input)
}

/// Sends 10,000 integers streamed and 100 confirmed sends (100,000 + i) to durable B, then
/// says so, once all are stored; run as a child process the test kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: the sender the durable test kills"]
async fn child_durable_sender() {
    let Ok(url) = std::env::var("REFLOW_DURABLE_URL") else {
        return;
    };
    let (a, input) = sender_a(&url).await;
    for i in 0..10_000 {
        input.send(Message::Integer(i)).await.unwrap();
    }
    for i in 0..100 {
        let got = a
            .send_to_remote_actor_reporting(
                "B",
                "collect",
                "in",
                Message::Integer(100_000 + i),
                None,
            )
            .await
            .unwrap();
        assert_eq!(got, Delivery::Stored);
    }
    wait_for_backlog(&a, 10_100, "every message stored").await;
    println!("stored");
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_killed_sender_stored_for_a_network_that_was_down_arrives_once_in_order() {
    let server = NatsServer::start().await.unwrap();
    b_down(&server.url(), DurableOptions::default(), passthrough()).await;

    let mut sender = Doomed::this_test(
        "child_durable_sender",
        &[("REFLOW_DURABLE_URL", server.url())],
        true,
    );
    sender
        .wait_for_line("stored", WAIT, "the sender storing its messages")
        .await;
    sender.kill();
    // B is down, and what waits for it shows.
    let observer = common::started(common::config(&server.url(), "O", "o1", 500)).await;
    let info = observer.get_network_info("B").await.unwrap();
    assert_eq!(info.instance_count, 0);
    let backlog = info.durable.expect("B is durable");
    assert_eq!(backlog.pending, 10_100);
    assert!(backlog.oldest_age.is_some());
    // The streamed backlog went in entries of several messages, counted as messages.
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let mut stream = js
        .get_stream(reflow_network::durable::stream_name("B"))
        .await
        .unwrap();
    let entries = stream.info().await.unwrap().state.messages;
    assert!(entries < 10_100, "{entries} entries for 10,100 messages");

    // B starts later and takes all of it.
    let (mut b, mut seen) = passing_b(&server.url(), "b1").await;
    let got = common::recv_ints(&mut seen, 10_100, WAIT, "stored messages").await;
    let streamed: Vec<i64> = got.iter().copied().filter(|v| *v < 100_000).collect();
    let confirmed: Vec<i64> = got.iter().copied().filter(|v| *v >= 100_000).collect();
    assert_eq!(
        streamed,
        (0..10_000).collect::<Vec<_>>(),
        "streamed, in order, once"
    );
    assert_eq!(
        confirmed,
        (100_000..100_100).collect::<Vec<_>>(),
        "confirmed, in order, once"
    );
    wait_for_backlog(&b, 0, "the backlog to empty").await;
    assert!(seen.try_recv().is_err(), "a message came twice");
    b.shutdown().await.unwrap();
}

/// One instance of durable B: `collect` publishes what it takes on `durable.results`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: an instance of B the durable test kills"]
async fn child_durable_instance() {
    let Ok(url) = std::env::var("REFLOW_DURABLE_URL") else {
        return;
    };
    let instance = std::env::var("REFLOW_DURABLE_INSTANCE").unwrap();
    // What a killed instance held goes to the other after `ack_wait`.
    let options = DurableOptions {
        ack_wait: Duration::from_secs(2),
        ..DurableOptions::default()
    };
    let b = durable_b(&url, &instance, options, passthrough(), None).await;
    b.publish_port("collect", "out", "durable.results").unwrap();
    println!("ready");
    std::future::pending::<()>().await;
}

/// Instance `id` of durable B in a child process, once it runs.
async fn instance(url: &str, id: &str) -> Doomed {
    let mut child = Doomed::this_test(
        "child_durable_instance",
        &[
            ("REFLOW_DURABLE_URL", url.to_string()),
            ("REFLOW_DURABLE_INSTANCE", id.to_string()),
        ],
        true,
    );
    child
        .wait_for_line("ready", WAIT, &format!("instance {id} starting"))
        .await;
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_mid_stream_loses_nothing() {
    const N: i64 = 5_000;
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let client = async_nats::connect(&url).await.unwrap();
    let mut results = client.subscribe("durable.results").await.unwrap();
    client.flush().await.unwrap();
    let mut one = instance(&url, "b1").await;
    let _two = instance(&url, "b2").await;

    let (_a, input) = sender_a(&url).await;
    // Half is sent before the kill and half after it, so the stream runs across it.
    let first = common::feed(input.clone(), 0..N / 2, Message::Integer);
    let mut second = None;
    let mut seen = BTreeSet::new();
    while (seen.len() as i64) < N {
        let message = tokio::time::timeout(WAIT, results.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {N} (killed: {})", seen.len(), second.is_some()))
            .unwrap();
        seen.insert(serde_json::from_slice::<i64>(&message.payload).unwrap());
        if second.is_none() && seen.len() >= 1_000 {
            one.kill();
            second = Some(common::feed(input.clone(), N / 2..N, Message::Integer));
        }
    }
    first.await.unwrap();
    second.expect("b1 was killed").await.unwrap();
    assert_eq!(seen, (0..N).collect::<BTreeSet<_>>(), "0 lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_and_restarted_mid_stream_loses_and_repeats_nothing() {
    const N: i64 = 5_000;
    let mut server = NatsServer::start().await.unwrap();
    let url = server.url();
    let (b, mut seen) = passing_b(&url, "b1").await;
    let (a, input) = sender_a(&url).await;
    let first = common::feed(input.clone(), 0..N / 2, Message::Integer);

    let mut got = common::recv_ints(&mut seen, 1_000, WAIT, "before the kill").await;
    server.kill().await.unwrap();
    // The second half is sent while the broker is dead: the sender stores it once the
    // broker is back.
    let second = common::feed(input, N / 2..N, Message::Integer);
    server.restart().await.unwrap();
    got.extend(common::recv_ints(&mut seen, (N - 1_000) as usize, WAIT, "after the restart").await);
    first.await.unwrap();
    second.await.unwrap();
    // What was in flight when the broker died may be stored again after later messages:
    // each arrives once, but order is kept only outside that moment.
    let mut sorted = got.clone();
    sorted.sort_unstable();
    let head: Vec<i64> = got.iter().copied().take(1_000).collect();
    assert_eq!(
        head,
        (0..1_000).collect::<Vec<_>>(),
        "in order before the kill"
    );
    assert_eq!(sorted, (0..N).collect::<Vec<_>>(), "0 lost, 0 duplicates");
    // The sender hears that every message is stored once the acknowledgements lost with
    // the broker have timed out and their messages were stored again (kept once).
    common::wait_for("the sender to count every message stored", WAIT, || async {
        a.stats().messages_out == N as u64
    })
    .await;
    wait_for_backlog(&b, 0, "the backlog to empty").await;
    assert!(seen.try_recv().is_err(), "a message came twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_always_fails_is_dead_lettered_and_the_rest_go_on() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let (probe, mut seen) = ProbeActor::channel(100);
    let picky = unlucky_13();
    let mut b = DistributedNetwork::new(common::config(&url, "B", "b1", 500))
        .await
        .unwrap();
    b.set_durable(DurableOptions {
        max_deliver: 3,
        ..DurableOptions::default()
    })
    .unwrap();
    b.register_local_actor("collect", picky, None).unwrap();
    b.register_local_actor("sink", probe, None).unwrap();
    b.get_local_network()
        .write()
        .add_connection(Connector::new("collect", "out", "sink", "in"))
        .unwrap();
    let mut events = b.events();
    b.start().await.unwrap();
    let (a, _input) = sender_a(&url).await;
    for i in 0..30 {
        let stored = a
            .send_to_remote_actor_reporting("B", "collect", "in", Message::Integer(i), None)
            .await
            .unwrap();
        assert_eq!(stored, Delivery::Stored);
    }
    let event = common::next_event(&mut events, "a dead letter", WAIT, |e| {
        matches!(e, NetworkEvent::DeadLettered { .. })
    })
    .await;
    let NetworkEvent::DeadLettered {
        actor, deliveries, ..
    } = event
    else {
        unreachable!()
    };
    assert_eq!((actor.as_str(), deliveries), ("collect", 3));
    let mut got = common::recv_ints(&mut seen, 29, WAIT, "the rest").await;
    got.sort();
    assert_eq!(got, (0..30).filter(|i| *i != 13).collect::<Vec<_>>());
    let backlog = b.durable_backlog("B").await.unwrap();
    assert_eq!(backlog.dead_lettered, 1);
    // The dead letter keeps the message and says why.
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let dead = js
        .get_stream(reflow_network::durable::dead_stream_name("B"))
        .await
        .unwrap();
    let letter = dead.get_raw_message(1).await.unwrap();
    assert_eq!(
        Message::from_msgpack(&letter.payload).unwrap(),
        Message::Integer(13)
    );
    assert_eq!(
        letter.headers.get("Reflow-Deliveries").map(|v| v.as_str()),
        Some("3")
    );
}

fn send_durable(url: &str, network: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_reflow-bridge"))
        .args([
            "--nats-url",
            url,
            "--json",
            "send",
            "--durable",
            network,
            "tally",
            "in",
            "5",
        ])
        .env_remove("NATS_URL")
        .env_remove("REFLOW_AUTH_TOKEN")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_run_config_and_send_durable_store_while_the_network_is_down() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let client = async_nats::connect(&url).await.unwrap();
    let mut counts = client.subscribe("d.counts").await.unwrap();
    client.flush().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("d.toml");
    std::fs::write(
        &config,
        "[network]\nnetwork_id = \"D\"\nheartbeat_interval_ms = 500\ndurable = true\n\n\
         [durable]\nmax_deliver = 2\nmax_age_ms = 3600000\n\n\
         [[nodes]]\nid = \"tally\"\ncomponent = \"counter\"\n\n\
         [[publish]]\nfrom = \"tally.count\"\nsubject = \"d.counts\"\n",
    )
    .unwrap();
    let mut bridge = common::process::Process::run(&url, &config, "D");
    let js = async_nats::jetstream::new(client.clone());
    common::wait_for("D's stream", WAIT, || {
        let js = js.clone();
        async move {
            js.get_stream(reflow_network::durable::stream_name("D"))
                .await
                .is_ok()
        }
    })
    .await;
    bridge.kill();

    // D is down: a durable send is stored, and says so.
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || send_durable(&url, "D")
    })
    .await
    .unwrap();
    let stdout = common::process::succeeded(&out, "send --durable");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["delivery"], "stored", "{report}");

    // A network that is not durable is refused by --durable.
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || send_durable(&url, "nobody")
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not durable")
            || String::from_utf8_lossy(&out.stderr).contains("nobody"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `networks` lists D while it is down, with what waits for it.
    let listing = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_reflow-bridge"))
                .args(["--nats-url", &url, "--json", "networks"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let listing: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    // (Killed, its liveness entry lives out its TTL: `live` may still say true.)
    let d = &listing["durable"][0];
    assert_eq!(d["network"], "D", "{listing}");
    assert_eq!(d["pending"], 1, "{listing}");

    // D runs again and handles what waited.
    let bridge = common::process::Process::run(&url, &config, "D");
    let count = tokio::time::timeout(WAIT, counts.next())
        .await
        .unwrap_or_else(|_| panic!("nothing counted\n{}", bridge.tail()))
        .unwrap();
    assert_eq!(serde_json::from_slice::<i64>(&count.payload).unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_loss_of_the_node_leading_the_stream_loses_nothing() {
    use reflow_network::local_server::{NatsCluster, ServerOptions};
    const N: i64 = 3_000;
    let mut cluster = NatsCluster::start(3, ServerOptions::default())
        .await
        .unwrap();
    cluster.wait_until_formed().await.unwrap();
    let urls = cluster.urls();
    let on_all = |network: &str, instance: &str| {
        let mut config = common::config(&urls[0], network, instance, 500);
        config.discovery_endpoints = urls.clone();
        config
    };
    let (probe, mut seen) = ProbeActor::channel(10_000);
    let mut b = DistributedNetwork::new(on_all("B", "b1")).await.unwrap();
    b.set_durable(DurableOptions {
        replicas: 3,
        ack_wait: Duration::from_secs(2),
        ..DurableOptions::default()
    })
    .unwrap();
    b.register_local_actor("collect", passthrough(), None)
        .unwrap();
    b.register_local_actor("sink", probe, None).unwrap();
    b.get_local_network()
        .write()
        .add_connection(Connector::new("collect", "out", "sink", "in"))
        .unwrap();
    b.start().await.unwrap();
    let a = common::started_with(on_all("A", "a1"), |a| {
        a.register_local_actor("source", Passthrough, None).unwrap();
    })
    .await;
    a.connect_to_network("B").await.unwrap();
    let proxy = a.register_remote_actor("collect", "B").await.unwrap();
    let input = common::wire_source_through(&a, &proxy, None);
    // Half is sent before the kill and half while the stream elects a new leader.
    let first = common::feed(input.clone(), 0..N / 2, Message::Integer);

    let mut got = common::recv_ints(&mut seen, 500, WAIT, "before the kill").await;
    // The node that leads B's stream.
    let leader = common::stream_leader(&urls, &reflow_network::durable::stream_name("B")).await;
    cluster.node_mut(leader).kill().await.unwrap();
    let second = common::feed(input, N / 2..N, Message::Integer);
    // A message handled as the leader died may come again; none may be missing.
    let mut distinct: BTreeSet<i64> = got.drain(..).collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    while (distinct.len() as i64) < N {
        let more = tokio::time::timeout_at(deadline, seen.recv()).await;
        let Ok(Some(more)) = more else {
            let missing: Vec<i64> = (0..N).filter(|v| !distinct.contains(v)).take(20).collect();
            let backlog = b.durable_backlog("B").await;
            panic!(
                "{} of {N} after the kill; missing {missing:?}...; backlog {backlog:?}; sender {:?}",
                distinct.len(),
                a.stats()
            );
        };
        distinct.insert(more.message.as_integer().unwrap());
    }
    first.await.unwrap();
    second.await.unwrap();
    assert_eq!(distinct, (0..N).collect::<BTreeSet<_>>(), "0 lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_messages_of_a_stored_entry_are_dead_lettered_each_alone() {
    const N: i64 = 500;
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let options = DurableOptions {
        max_deliver: 3,
        ..DurableOptions::default()
    };
    // B is down while A streams, so A's backlog is stored in entries of several messages.
    const UNLUCKY: &[i64] = &[13, 14];
    b_down(&url, options.clone(), failing_on(UNLUCKY)).await;
    let (a, input) = sender_a(&url).await;
    common::feed(input, 0..N, Message::Integer).await.unwrap();
    wait_for_backlog(&a, N as u64, "the backlog stored").await;
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let mut stream = js
        .get_stream(reflow_network::durable::stream_name("B"))
        .await
        .unwrap();
    let entries = stream.info().await.unwrap().state.messages;
    assert!(entries < N as u64, "{entries} entries for {N} messages");

    let (probe, mut seen) = ProbeActor::channel(1_000);
    let b = durable_b(&url, "b2", options, failing_on(UNLUCKY), Some(probe)).await;
    let mut events = b.events();
    let event = common::next_event(&mut events, "a dead letter", WAIT, |e| {
        matches!(e, NetworkEvent::DeadLettered { .. })
    })
    .await;
    assert!(
        matches!(event, NetworkEvent::DeadLettered { deliveries: 3, .. }),
        "{event:?}"
    );
    let mut got = common::recv_ints(&mut seen, N as usize - UNLUCKY.len(), WAIT, "the rest").await;
    got.sort();
    assert_eq!(
        got,
        (0..N).filter(|i| !UNLUCKY.contains(i)).collect::<Vec<_>>()
    );
    wait_for_backlog(&b, 0, "the backlog to empty").await;
    // The entry was delivered three times; what it held besides 13 and 14 was handled once.
    assert!(seen.try_recv().is_err(), "a message came twice");
    let mut dead = js
        .get_stream(reflow_network::durable::dead_stream_name("B"))
        .await
        .unwrap();
    // Each is kept on its own, though both came from one entry with one id.
    assert_eq!(dead.info().await.unwrap().state.messages, 2);
    for (seq, unlucky) in [(1, 13), (2, 14)] {
        let letter = dead.get_raw_message(seq).await.unwrap();
        assert_eq!(
            Message::from_msgpack(&letter.payload).unwrap(),
            Message::Integer(unlucky),
            "a dead letter is one failing message alone"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_shut_down_right_after_streaming_loses_nothing() {
    const N: i64 = 5_000;
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    b_down(&url, DurableOptions::default(), passthrough()).await;
    let (mut a, input) = sender_a(&url).await;
    common::feed(input, 0..N, Message::Integer).await.unwrap();
    // Some of it may still be in the sender's graph or publisher: a shutdown stores it.
    a.shutdown().await.unwrap();

    let (b, mut seen) = passing_b(&url, "b2").await;
    let got = common::recv_ints(&mut seen, N as usize, WAIT, "all of it").await;
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "all, once, in order");
    wait_for_backlog(&b, 0, "the backlog to empty").await;
    assert!(seen.try_recv().is_err(), "a message came twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_cut_to_what_the_server_takes_and_an_oversized_message_is_refused() {
    const N: i64 = 300;
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    b_down(&url, DurableOptions::default(), passthrough()).await;
    let (a, input) = sender_a(&url).await;
    // Objects of about 10 KB: 128 of them would be more than the server's 1 MB
    // max_payload in one entry.
    let object =
        |i: i64| Message::from_json(serde_json::json!({ "i": i, "pad": "x".repeat(10_000) }));
    common::feed(input, 0..N, object).await.unwrap();
    wait_for_backlog(&a, N as u64, "every object stored").await;

    // One message larger than the server takes is refused, naming the limit.
    let huge = Message::Bytes(vec![0u8; 2 * 1024 * 1024].into());
    let err = a
        .send_to_remote_actor("B", "collect", "in", huge)
        .await
        .unwrap_err();
    assert!(err.is(reflow_network::ErrorKind::PayloadTooLarge), "{err}");
    assert!(err.to_string().contains("max_payload"), "{err}");

    let (_b, mut seen) = passing_b(&url, "b2").await;
    for i in 0..N {
        let got = tokio::time::timeout(WAIT, seen.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.message, object(i), "in order");
    }
}
