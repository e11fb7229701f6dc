//! The gate, tried as an attacker on a shared server would: a plain NATS client that holds
//! no token (and one that replays what it captured) against networks that hold one. Each
//! attack is refused or harmless, and the victims' own traffic goes on, counted.

mod common;

use std::time::Duration;

use futures::StreamExt;
use reflow_network::Message;
use reflow_network::actor::{FnActor, ProbeActor, ProbeMessage};
use reflow_network::components::Passthrough;
use reflow_network::distributed_network::{DistributedConfig, DistributedNetwork};
use reflow_network::events::NetworkEvent;
use reflow_network::local_server::NatsServer;
use tokio::sync::mpsc;

const TOKEN: &str = "the-shared-secret";

fn sealed_config(url: &str, network: &str, instance: &str) -> DistributedConfig {
    DistributedConfig {
        auth_token: Some(TOKEN.into()),
        ..common::config(url, network, instance, 1_000)
    }
}

fn doubler() -> FnActor {
    FnActor::map("in", "out", |m| {
        Message::Integer(m.as_integer().unwrap_or(-1) * 2)
    })
}

/// Receives `n` integers within 20 s, or fails naming `what`.
async fn ints(seen: &mut mpsc::Receiver<ProbeMessage>, n: usize, what: &str) -> Vec<i64> {
    common::recv_ints(seen, n, Duration::from_secs(20), what).await
}

/// Nothing more arrives at `seen` within a moment in which a delivered message would have.
async fn nothing_more(seen: &mut mpsc::Receiver<ProbeMessage>, what: &str) {
    if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(800), seen.recv()).await {
        panic!("{what}: {:?} arrived", m.message);
    }
}

/// This process's resident memory, in bytes.
fn resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// `src` offers `double`; `app` uses it through a proxy and collects what comes back.
struct Pair {
    src: DistributedNetwork,
    app: DistributedNetwork,
    input: reflow_network::network::Inlet,
    back: mpsc::Receiver<ProbeMessage>,
}

impl Pair {
    async fn start(url: &str, token: bool) -> Pair {
        let config = |network: &str, instance: &str| {
            if token {
                sealed_config(url, network, instance)
            } else {
                common::config(url, network, instance, 1_000)
            }
        };
        let src = common::started_with(config("src", "s1"), |n| {
            n.register_local_actor("double", doubler(), None).unwrap();
        })
        .await;
        let (probe, back) = ProbeActor::channel(10_000);
        let app = common::started_with(config("app", "a1"), |n| {
            n.register_local_actor("source", Passthrough, None).unwrap();
            n.register_local_actor("sink", probe, None).unwrap();
        })
        .await;
        app.connect_to_network("src").await.unwrap();
        let alias = app.register_remote_actor("double", "src").await.unwrap();
        let input = common::wire_source_through(&app, &alias, Some("sink"));
        Pair {
            src,
            app,
            input,
            back,
        }
    }

    /// Feeds `values` through `double@src` and checks that every one comes back doubled,
    /// in order.
    async fn round_trip(&mut self, values: std::ops::Range<i64>, what: &str) {
        let n = (values.end - values.start) as usize;
        let expected: Vec<i64> = values.clone().map(|v| v * 2).collect();
        common::feed(self.input.clone(), values, Message::Integer)
            .await
            .unwrap();
        assert_eq!(ints(&mut self.back, n, what).await, expected, "{what}");
    }
}

/// The answer to an attach request from a plain client that claims to be `network` and
/// wants `{actor}@src`'s outputs at `reply_to`.
async fn attach_answer(
    raw: &async_nats::Client,
    network: &str,
    actor: &str,
    reply_to: &str,
) -> String {
    let request = serde_json::json!({"network": network, "actor": actor, "reply_to": reply_to});
    let answer = raw
        .request("_reflow.src.attach", request.to_string().into())
        .await
        .unwrap();
    String::from_utf8_lossy(&answer.payload).into_owned()
}

/// Nothing reached the attacker's `subscriber` within a moment.
async fn heard_nothing(subscriber: &mut async_nats::Subscriber) {
    assert!(
        tokio::time::timeout(Duration::from_millis(300), subscriber.next())
            .await
            .is_err(),
        "an output reached the attacker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsealed_attach_is_refused_and_the_actor_keeps_serving_its_caller() {
    let server = NatsServer::start().await.unwrap();
    let mut pair = Pair::start(&server.url(), true).await;
    pair.round_trip(0..50, "before the attack").await;

    let raw = async_nats::connect(server.url()).await.unwrap();
    let mut spy = raw.subscribe("ghost.>").await.unwrap();
    let mut stolen = raw.subscribe("_reflow.ghost.>").await.unwrap();
    raw.flush().await.unwrap();
    for reply_to in ["ghost.spy", "_reflow.ghost.g1.ret.t"] {
        let text = attach_answer(&raw, "ghost", "double", reply_to).await;
        assert!(text.contains("AuthenticationFailed"), "{text}");
    }
    // The actor's outputs go to its caller alone, all of them.
    pair.round_trip(50..5_050, "after the fake attaches").await;
    heard_nothing(&mut spy).await;
    heard_nothing(&mut stolen).await;
    assert!(pair.src.stats().unauthenticated_in >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_outputs_go_back_only_to_a_return_subject_of_the_asking_network() {
    let server = NatsServer::start().await.unwrap();
    let mut pair = Pair::start(&server.url(), false).await;
    let raw = async_nats::connect(server.url()).await.unwrap();
    let mut spy = raw.subscribe("ghost.>").await.unwrap();
    raw.flush().await.unwrap();
    for (network, reply_to) in [
        ("ghost", "ghost.spy"),
        ("ghost", "app.sink.in"),
        ("ghost", "_reflow.app.a1.ret.t"),
        ("ghost", "_reflow.ghost.g1.ret.>"),
    ] {
        let text = attach_answer(&raw, network, "double", reply_to).await;
        assert!(text.contains("return subject"), "{reply_to}: {text}");
    }
    pair.round_trip(0..100, "after the refused attaches").await;
    heard_nothing(&mut spy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_lived_is_dropped_and_cannot_stall_the_actor() {
    // Without a token anyone may attach (the README says so). An actor's own outputs go
    // to every subscriber; a subscriber with no liveness entry is buried after a grace
    // of 5 s and what was streamed to it given up, so the actor never waits on it for
    // good and its real caller gets everything.
    const COUNT: usize = 10_000;
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let metadata: reflow_network::actor::Metadata =
        serde_json::from_value(serde_json::json!({"count": COUNT, "on_start": false})).unwrap();
    let _src = common::started_with(common::config(&url, "src", "s1", 1_000), |n| {
        n.register_local_actor("gen", reflow_network::components::Generator, Some(metadata))
            .unwrap();
    })
    .await;
    let (probe, mut seen) = ProbeActor::channel(COUNT);
    let app = common::started_with(common::config(&url, "app", "a1", 1_000), |n| {
        n.register_local_actor("sink", probe, None).unwrap();
    })
    .await;
    app.connect_to_network("src").await.unwrap();
    let alias = app.register_remote_actor("gen", "src").await.unwrap();
    app.get_local_network()
        .write()
        .add_connection(reflow_network::network::Connector::new(
            &alias, "out", "sink", "in",
        ))
        .unwrap();

    let raw = async_nats::connect(url).await.unwrap();
    let mut spy = raw.subscribe("_reflow.ghost.>").await.unwrap();
    raw.flush().await.unwrap();
    let text = attach_answer(&raw, "ghost", "gen", "_reflow.ghost.g1.ret.t").await;
    assert!(text.contains("\"ok\""), "{text}");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    raw.publish_with_headers("src.gen.start", headers, "1".into())
        .await
        .unwrap();
    raw.flush().await.unwrap();
    // More outputs than a stream keeps unacknowledged (4,096): without the burial the
    // actor would block once the ghost's window filled, and its caller would wait for
    // ever. The bound: the grace, and room to stream the rest.
    let got = common::recv_ints(
        &mut seen,
        COUNT,
        Duration::from_secs(40),
        "gen's outputs at app",
    )
    .await;
    assert_eq!(got, (0..COUNT as i64).collect::<Vec<_>>());
    assert!(
        tokio::time::timeout(Duration::from_secs(5), spy.next())
            .await
            .is_ok(),
        "the fake subscriber got nothing: the attach did not take"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_detach_and_disconnect_notices_do_not_cut_a_consumer_off() {
    let server = NatsServer::start().await.unwrap();
    let mut pair = Pair::start(&server.url(), true).await;
    let raw = async_nats::connect(server.url()).await.unwrap();
    // The consumer's return subject is public: it is on every output returned to it.
    let mut returns = raw.subscribe("_reflow.app.>").await.unwrap();
    raw.flush().await.unwrap();
    pair.round_trip(0..20, "before the attack").await;
    let returned = tokio::time::timeout(Duration::from_secs(5), returns.next())
        .await
        .unwrap()
        .unwrap();
    let reply_to = returned
        .subject
        .as_str()
        .rsplit_once('.')
        .unwrap()
        .0
        .to_string();
    assert!(reply_to.starts_with("_reflow.app.a1.ret."), "{reply_to}");

    let detach = serde_json::json!({"network": "app", "actor": "double", "reply_to": reply_to});
    let disconnect = serde_json::json!({"network": "app", "instance": "a1"});
    for _ in 0..3 {
        raw.publish("_reflow.src.detach", detach.to_string().into())
            .await
            .unwrap();
        raw.publish("_reflow.src.disconnect", disconnect.to_string().into())
            .await
            .unwrap();
    }
    raw.flush().await.unwrap();
    common::wait_for(
        "src to refuse the six forged notices",
        Duration::from_secs(10),
        || async { pair.src.stats().unauthenticated_in >= 6 },
    )
    .await;
    pair.round_trip(20..2_020, "after the forged notices").await;
    assert!(
        pair.src
            .get_active_connections()
            .await
            .unwrap()
            .iter()
            .any(|c| c.network == "app"),
        "the forged disconnect removed app from src's peers"
    );
}

/// A sealed network `network` hosting a probe `actor`, started, and what reaches it.
async fn with_probe(
    url: &str,
    network: &str,
    actor: &str,
) -> (DistributedNetwork, mpsc::Receiver<ProbeMessage>) {
    let (probe, seen) = ProbeActor::channel(10_000);
    let started = common::started_with(sealed_config(url, network, "r1"), |n| {
        n.register_local_actor(actor, probe, None).unwrap();
    })
    .await;
    (started, seen)
}

/// A sealed network `A` with a `source` actor, started.
async fn sender(url: &str) -> DistributedNetwork {
    common::started_with(sealed_config(url, "A", "a1"), |n| {
        n.register_local_actor("source", Passthrough, None).unwrap();
    })
    .await
}

/// A plain client without the token, and its tap on `subject`.
async fn tapped(url: &str, subject: &str) -> (async_nats::Client, async_nats::Subscriber) {
    let raw = async_nats::connect(url).await.unwrap();
    let tap = raw.subscribe(subject.to_string()).await.unwrap();
    raw.flush().await.unwrap();
    (raw, tap)
}

/// Streams `values` from `sender`'s source to `actor@network` and checks they arrive at
/// `seen`, in order.
async fn stream_to(
    sender: &DistributedNetwork,
    (network, actor): (&str, &str),
    values: std::ops::Range<i64>,
    seen: &mut mpsc::Receiver<ProbeMessage>,
) {
    sender.connect_to_network(network).await.unwrap();
    let alias = sender.register_remote_actor(actor, network).await.unwrap();
    let input = common::wire_source_through(sender, &alias, None);
    let n = (values.end - values.start) as usize;
    let expected: Vec<i64> = values.clone().collect();
    common::feed(input, values, Message::Integer).await.unwrap();
    assert_eq!(ints(seen, n, &format!("{actor}@{network}")).await, expected);
}

/// Everything the tap saw, once it has been quiet for a moment.
async fn captured(tap: &mut async_nats::Subscriber) -> Vec<bytes::Bytes> {
    let mut captured = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), tap.next()).await {
        captured.push(m.payload);
    }
    captured
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_envelopes_replayed_on_another_network_are_refused_and_its_traffic_goes_on() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let (_recv, mut tally) = with_probe(&url, "recv", "tally").await;
    let (recv2, mut tally2) = with_probe(&url, "recv2", "tally").await;
    let sender = sender(&url).await;
    let (raw, mut tap) = tapped(&url, "recv.tally.in").await;
    stream_to(&sender, ("recv", "tally"), 0..180, &mut tally).await;
    sender
        .send_to_remote_actor("recv", "tally", "in", Message::Integer(-1))
        .await
        .unwrap();
    ints(&mut tally, 1, "the confirmed send to recv").await;

    // Everything captured on recv's subject, streamed and confirmed, published unchanged
    // on recv2's, and again on recv's (a replay, dropped as a repeat or answered again).
    let captured = captured(&mut tap).await;
    assert!(!captured.is_empty());
    for payload in &captured {
        raw.publish("recv2.tally.in", payload.clone())
            .await
            .unwrap();
        raw.publish("recv.tally.in", payload.clone()).await.unwrap();
    }
    raw.flush().await.unwrap();
    let n = captured.len() as u64;
    common::wait_for(
        "recv2 to refuse every replayed envelope",
        Duration::from_secs(10),
        || async { recv2.stats().unauthenticated_in == n },
    )
    .await;
    nothing_more(&mut tally2, "recv2 took a replay").await;
    nothing_more(&mut tally, "recv handled a replay again").await;

    // recv2's own traffic from the same sender is untouched: streamed and confirmed.
    stream_to(&sender, ("recv2", "tally"), 0..20, &mut tally2).await;
    tokio::time::timeout(
        Duration::from_secs(10),
        sender.send_to_remote_actor("recv2", "tally", "in", Message::Integer(-2)),
    )
    .await
    .expect("a confirmed send to recv2 was answered")
    .unwrap();
    assert_eq!(
        ints(&mut tally2, 1, "the confirmed send to recv2").await,
        vec![-2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_confirmed_send_replayed_is_answered_but_never_handled_again() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let (b, mut seen) = with_probe(&url, "B", "sink").await;
    let a = sender(&url).await;
    let (raw, mut tap) = tapped(&url, "B.sink.in").await;
    a.connect_to_network("B").await.unwrap();
    a.send_to_remote_actor("B", "sink", "in", Message::Integer(7))
        .await
        .unwrap();
    assert_eq!(ints(&mut seen, 1, "the confirmed send").await, vec![7]);
    let captured = tokio::time::timeout(Duration::from_secs(5), tap.next())
        .await
        .unwrap()
        .unwrap();
    assert!(captured.reply.is_some(), "a confirmed send is a request");
    for _ in 0..20 {
        let answer = raw
            .request("B.sink.in", captured.payload.clone())
            .await
            .unwrap();
        assert!(answer.payload.is_empty(), "{:?}", answer.payload);
    }
    nothing_more(&mut seen, "a replayed confirmed send was handled again").await;
    assert_eq!(b.stats().messages_in, 1);
    assert!(b.stats().duplicates_in >= 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_replayed_after_its_sender_left_is_refused() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let (b, mut seen) = with_probe(&url, "B", "sink").await;
    let mut events = b.events();
    let mut a = sender(&url).await;
    let (raw, mut tap) = tapped(&url, "B.sink.in").await;
    stream_to(&a, ("B", "sink"), 0..100, &mut seen).await;
    let captured = captured(&mut tap).await;
    a.shutdown().await.unwrap();
    common::next_event(
        &mut events,
        "A leaving",
        Duration::from_secs(10),
        |e| matches!(e, NetworkEvent::NetworkDown { network, .. } if network == "A"),
    )
    .await;
    // B lets go of A's stream once A is gone; a replay of it must not start it again.
    let before = b.stats().unauthenticated_in;
    let replayed = captured.len() as u64;
    let b = &b;
    common::wait_for(
        "B to refuse the replay of A's stream",
        Duration::from_secs(10),
        || {
            let (raw, captured) = (raw.clone(), captured.clone());
            async move {
                for payload in captured {
                    raw.publish("B.sink.in", payload).await.unwrap();
                }
                raw.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                b.stats().unauthenticated_in >= before + replayed
            }
        },
    )
    .await;
    nothing_more(
        &mut seen,
        "a replay of a departed sender's stream was delivered",
    )
    .await;
    assert_eq!(b.stats().messages_in, 100);
}

/// 980 bytes that claim 250 MB once LZ4-decompressed.
fn bomb() -> bytes::Bytes {
    let mut bomb = vec![reflow_network::message::COMPRESSED_MARKER];
    bomb.extend(250_000_000u32.to_le_bytes());
    bomb.extend(std::iter::repeat_n(0u8, 975));
    bomb.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compression_bomb_is_refused_before_it_is_decompressed() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let mut sealed = Pair::start(&url, true).await;
    let (probe, mut seen) = ProbeActor::channel(1_000);
    let open = common::started_with(common::config(&url, "open", "o1", 1_000), |n| {
        n.register_local_actor("sink", probe, None).unwrap();
    })
    .await;
    let raw = async_nats::connect(url.clone()).await.unwrap();
    let before = resident();
    for _ in 0..40 {
        for subject in [
            "src.double.in",
            "_reflow.src.s1.ret.t.out",
            "_reflow.app.a1.ret.t.out",
            "open.sink.in",
            "_reflow.open.o1.ret.t.out",
        ] {
            raw.publish(subject, bomb()).await.unwrap();
        }
    }
    raw.flush().await.unwrap();
    common::wait_for("every bomb refused", Duration::from_secs(20), || async {
        sealed.src.stats().unauthenticated_in >= 80
            && sealed.app.stats().unauthenticated_in >= 40
            && open.stats().rejected_in >= 80
    })
    .await;
    let grown = resident().saturating_sub(before);
    assert!(
        grown < 100 * 1024 * 1024,
        "resident memory grew by {} MiB for 200 bombs of 980 bytes",
        grown / (1024 * 1024)
    );
    nothing_more(&mut seen, "a bomb was delivered").await;
    sealed.round_trip(0..100, "after the bombs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_json_on_ever_new_subjects_does_not_grow_memory() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let mut pair = Pair::start(&url, true).await;
    let raw = async_nats::connect(url.clone()).await.unwrap();
    let json_headers = || {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Content-Type", "application/json");
        headers
    };
    let flood = |range: std::ops::Range<usize>| {
        let raw = raw.clone();
        async move {
            for i in range {
                raw.publish_with_headers(format!("src.a{i}.in"), json_headers(), "1".into())
                    .await
                    .unwrap();
            }
            raw.flush().await.unwrap();
        }
    };
    // Once to warm up whatever is allocated once, then measured.
    flood(0..5_000).await;
    common::wait_for("the warm-up refused", Duration::from_secs(30), || async {
        pair.src.stats().rejected_in >= 5_000
    })
    .await;
    let before = resident();
    flood(5_000..55_000).await;
    common::wait_for("the flood refused", Duration::from_secs(60), || async {
        pair.src.stats().rejected_in >= 55_000
    })
    .await;
    let grown = resident().saturating_sub(before);
    assert!(
        grown < 32 * 1024 * 1024,
        "resident memory grew by {} MiB for 50,000 refused plain messages",
        grown / (1024 * 1024)
    );
    pair.round_trip(0..100, "after the flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_messages_not_sealed_for_a_durable_network_never_reach_its_actors() {
    use reflow_network::durable::{DurableOptions, durable_subject};
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let (probe, mut seen) = ProbeActor::channel(1_000);
    let mut b = DistributedNetwork::new(sealed_config(&url, "B", "b1"))
        .await
        .unwrap();
    b.set_durable(DurableOptions::default()).unwrap();
    b.register_local_actor("sink", probe, None).unwrap();
    b.start().await.unwrap();
    let a = sender(&url).await;
    let subject = durable_subject("B", "sink", "in");
    let (raw, mut tap) = tapped(&url, &subject).await;
    a.connect_to_network("B").await.unwrap();
    a.send_to_remote_actor("B", "sink", "in", Message::Integer(1))
        .await
        .unwrap();
    assert_eq!(ints(&mut seen, 1, "a sealed stored message").await, vec![1]);
    let stored = tokio::time::timeout(Duration::from_secs(5), tap.next())
        .await
        .unwrap()
        .unwrap();

    // Stored by a client without the token: plain MessagePack, plain JSON, and the
    // captured sealed one stored again under another deduplication id.
    let with_id = |id: &str| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        headers
    };
    let forged = Message::Integer(666).to_msgpack().unwrap();
    raw.publish_with_headers(subject.clone(), with_id("forged"), forged.into())
        .await
        .unwrap();
    let mut json = with_id("json");
    json.insert("Content-Type", "application/json");
    raw.publish_with_headers(subject.clone(), json, "666".into())
        .await
        .unwrap();
    raw.publish_with_headers(subject.clone(), with_id("again"), stored.payload.clone())
        .await
        .unwrap();
    raw.flush().await.unwrap();
    common::wait_for(
        "B to refuse the three stored forgeries",
        Duration::from_secs(20),
        || async { b.stats().rejected_in >= 3 },
    )
    .await;
    nothing_more(&mut seen, "a forged stored message was delivered").await;
    a.send_to_remote_actor("B", "sink", "in", Message::Integer(2))
        .await
        .unwrap();
    assert_eq!(ints(&mut seen, 1, "the next sealed one").await, vec![2]);
}
