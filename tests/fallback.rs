//! The direct link on the bind port as a road of its own: with no broker at all, and as
//! the fallback while the broker is down, against real sockets and a real nats-server
//! that is killed and restarted.

mod common;

use common::free_port;

use std::time::{Duration, Instant};

use reflow_network::actor::{FnActor, ProbeActor, ProbeMessage};
use reflow_network::components::Passthrough;
use reflow_network::distributed_network::{DistributedConfig, DistributedNetwork};
use reflow_network::events::{NetworkEvent, TransportKind};
use reflow_network::local_server::NatsServer;
use reflow_network::{ErrorKind, Message};
use tokio::sync::mpsc;

/// A network bound on a free loopback port, using the broker at `url`.
fn config(url: &str, network: &str, instance: &str) -> DistributedConfig {
    DistributedConfig {
        bind_address: "127.0.0.1".into(),
        bind_port: free_port(),
        ..common::config(url, network, instance, 500)
    }
}

/// A broker URL where no broker is: a port that was free a moment ago.
fn nowhere() -> String {
    format!("nats://127.0.0.1:{}", free_port())
}

fn doubler() -> FnActor {
    FnActor::map("in", "out", |m| {
        Message::Integer(m.as_integer().unwrap_or(-1) * 2)
    })
}

/// Adds a probe node `id` to `network` and returns what it receives.
fn probe(network: &DistributedNetwork, id: &str) -> mpsc::Receiver<ProbeMessage> {
    let (probe, seen) = ProbeActor::channel(30_000);
    network.register_local_actor(id, probe, None).unwrap();
    seen
}

/// Starts `network`, failing the test if startup takes longer than `limit`.
async fn start_within(network: &mut DistributedNetwork, limit: Duration) {
    let began = Instant::now();
    tokio::time::timeout(limit, network.start())
        .await
        .unwrap_or_else(|_| panic!("start() still waiting after {limit:?}"))
        .unwrap();
    println!("started in {:?} with no broker", began.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_broker_two_networks_exchange_10k_messages_through_remote_actors() {
    // Both point at a broker URL where nothing listens: there is no NATS anywhere.
    let mut b = DistributedNetwork::new(config(&nowhere(), "B", "b1"))
        .await
        .unwrap();
    b.register_local_actor("double", doubler(), None).unwrap();
    start_within(&mut b, Duration::from_secs(5)).await;
    assert!(!b.is_broker_connected());

    let mut a = DistributedNetwork::new(config(&nowhere(), "A", "a1"))
        .await
        .unwrap();
    a.register_local_actor("source", Passthrough, None).unwrap();
    let mut seen = probe(&a, "sink");
    start_within(&mut a, Duration::from_secs(5)).await;

    let b_address = format!("127.0.0.1:{}", b.get_config().bind_port);
    a.connect_to_network(&b_address).await.unwrap();
    assert!(
        a.is_network_connected("B").await,
        "the handshake names the peer"
    );
    assert!(a.ping_network("B").await.unwrap() < Duration::from_secs(5));
    let actors = a.discover_actors_on_network("B").await.unwrap();
    assert!(actors.iter().any(|actor| actor.id == "double"));

    let alias = a.register_remote_actor("double", "B").await.unwrap();
    let input = common::wire_source_through(&a, &alias, Some("sink"));
    let feeder = common::feed(input, 0..10_000i64, Message::Integer);
    let got = common::recv_ints(
        &mut seen,
        10_000,
        Duration::from_secs(60),
        "direct pipeline",
    )
    .await;
    feeder.await.unwrap();
    let expected: Vec<i64> = (0..10_000).map(|i| i * 2).collect();
    assert!(got == expected, "outputs out of order, altered or doubled");
    assert_eq!(b.stats().messages_in, 10_000);

    // Confirmed sends take the direct link too. They ask for no return: once one is
    // handled (its outputs too), nothing of it has come back to A's proxy.
    a.send_to_remote_actor("B", "double", "in", Message::Integer(21))
        .await
        .unwrap();
    assert_eq!(b.stats().messages_in, 10_001);
    assert!(
        seen.try_recv().is_err(),
        "a confirmed send's output came back"
    );
    let err = a
        .send_to_remote_actor("B", "nobody", "in", Message::Integer(1))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("Actor not found"),
        "unexpected error: {err}"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_basic_setup_client_connects_to_the_servers_bind_address() {
    // The seed's basic setup: the server binds a port; the client names it by address.
    let server = NatsServer::start().await.unwrap();
    let mut host = DistributedNetwork::new(DistributedConfig {
        bind_address: "0.0.0.0".into(),
        ..config(&server.url(), "server_network", "server_instance")
    })
    .await
    .unwrap();
    host.register_local_actor("double", doubler(), None)
        .unwrap();
    host.start().await.unwrap();

    let mut client = common::started(common::config(
        &server.url(),
        "client_network",
        "client_instance",
        500,
    ))
    .await;
    let address = format!("127.0.0.1:{}", host.get_config().bind_port);
    client.connect_to_network(&address).await.unwrap();
    assert_eq!(
        client.get_connected_networks().await,
        vec!["server_network"]
    );
    client
        .register_remote_actor("double", "server_network")
        .await
        .unwrap();
    client
        .send_to_remote_actor("server_network", "double", "in", Message::Integer(4))
        .await
        .unwrap();

    // The listener on 0.0.0.0 advertises an address a peer can dial, not 0.0.0.0.
    let info = client
        .discover_networks()
        .await
        .unwrap()
        .into_iter()
        .find(|info| info.network_id == "server_network")
        .expect("server_network is live");
    let advertised = info.endpoints.direct.expect("a direct endpoint");
    assert!(
        !advertised.starts_with("0.0.0.0"),
        "advertised {advertised}"
    );
    assert!(advertised.ends_with(&format!(":{}", host.get_config().bind_port)));
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_a_port_in_use_keeps_the_os_words_and_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut network = DistributedNetwork::new(DistributedConfig {
        bind_address: "127.0.0.1".into(),
        bind_port: port,
        ..common::config(&nowhere(), "busy", "b1", 500)
    })
    .await
    .unwrap();
    let err = network.start().await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Bind);
    assert!(text.contains("Address already in use"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");

    let mut caller = DistributedNetwork::new(config(&nowhere(), "caller", "c1"))
        .await
        .unwrap();
    caller.start().await.unwrap();
    let refused = caller
        .connect_to_network(&format!("127.0.0.1:{}", free_port()))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("refused"),
        "unexpected error: {refused}"
    );
    assert_eq!(refused.kind(), ErrorKind::NetworkDisconnected, "{refused}");
    caller.shutdown().await.unwrap();
}

/// What a streaming test needs: B with a probe `sink`, A streaming into `sink@B` from
/// its `source`, A's events, and the inlet that feeds `source`.
struct StreamPair {
    a: DistributedNetwork,
    b: DistributedNetwork,
    seen: mpsc::Receiver<ProbeMessage>,
    events: reflow_network::events::EventStream,
    input: reflow_network::network::Inlet,
}

/// Starts B then A from these configurations and wires `source -> sink@B` in A.
async fn stream_pair(a_config: DistributedConfig, b_config: DistributedConfig) -> StreamPair {
    let mut b = DistributedNetwork::new(b_config).await.unwrap();
    let seen = probe(&b, "sink");
    b.start().await.unwrap();
    let mut a = DistributedNetwork::new(a_config).await.unwrap();
    a.register_local_actor("source", Passthrough, None).unwrap();
    a.start().await.unwrap();
    let events = a.events();
    a.connect_to_network("B").await.unwrap();
    let alias = a.register_remote_actor("sink", "B").await.unwrap();
    let input = common::wire_source_through(&a, &alias, None);
    StreamPair {
        a,
        b,
        seen,
        events,
        input,
    }
}

/// A stream pair over `server` in which both networks have a bind port.
async fn bound_pair(server: &NatsServer) -> StreamPair {
    let url = server.url();
    stream_pair(config(&url, "A", "a1"), config(&url, "B", "b1")).await
}

/// Feeds each range sent to the returned channel into `input`, in order; a range is
/// handed over while the previous one may still be in flight.
fn stretch_feeder(
    input: reflow_network::network::Inlet,
) -> (
    mpsc::Sender<std::ops::Range<i64>>,
    tokio::task::JoinHandle<()>,
) {
    let (stretch_tx, mut stretch_rx) = mpsc::channel::<std::ops::Range<i64>>(3);
    let feeder = tokio::spawn(async move {
        while let Some(range) = stretch_rx.recv().await {
            for i in range {
                input.send(Message::Integer(i)).await.unwrap();
            }
        }
    });
    (stretch_tx, feeder)
}

/// Waits up to `secs` seconds for traffic to B to move from `from` to `to`.
async fn switch_to_b(
    events: &mut reflow_network::events::EventStream,
    from: TransportKind,
    to: TransportKind,
    secs: u64,
) {
    common::next_event(
        events,
        &format!("traffic to B switching from {from:?} to {to:?}"),
        Duration::from_secs(secs),
        |e| {
            matches!(e, NetworkEvent::TransportSwitched { network, from: f, to: t }
                if network == "B" && *f == from && *t == to)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_survives_the_broker_dying_and_returning_without_loss_or_repeats() {
    if std::env::var_os("REFLOW_TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("reflow_network=debug")
            .try_init();
    }
    const TOTAL: i64 = 20_000;
    let mut server = NatsServer::start().await.unwrap();

    let StreamPair {
        mut a,
        mut b,
        mut seen,
        mut events,
        input,
    } = bound_pair(&server).await;

    // The stream runs in three stretches: over the broker, while it is dead, and after
    // it is back. Each stretch is handed over while the previous one is still in flight.
    let (stretch_tx, feeder) = stretch_feeder(input);
    let mut got = Vec::with_capacity(TOTAL as usize);

    stretch_tx.send(0..8_000).await.unwrap();
    got.extend(
        common::recv_ints(&mut seen, 2_000, Duration::from_secs(30), "before the kill").await,
    );
    server.kill().await.unwrap();
    let killed = tokio::time::Instant::now();
    println!("broker killed after B received {}", got.len());
    stretch_tx.send(8_000..14_000).await.unwrap();
    switch_to_b(&mut events, TransportKind::Nats, TransportKind::Direct, 10).await;
    got.extend(
        common::recv_ints(
            &mut seen,
            10_000,
            Duration::from_secs(30),
            "while the broker is dead",
        )
        .await,
    );
    assert!(
        !a.is_broker_connected(),
        "the broker came back by itself, the test proves nothing"
    );

    // The outage lasts a few seconds, as a real one would: heartbeats and reconnect
    // attempts fail meanwhile, and the stream stays on the direct link.
    tokio::time::sleep_until(killed + Duration::from_secs(3)).await;
    server.restart().await.unwrap();
    println!("broker restarted after B received {}", got.len());
    stretch_tx.send(14_000..TOTAL).await.unwrap();
    drop(stretch_tx);
    switch_to_b(&mut events, TransportKind::Direct, TransportKind::Nats, 30).await;
    let rest = TOTAL as usize - got.len();
    got.extend(
        common::recv_ints(
            &mut seen,
            rest,
            Duration::from_secs(30),
            "after the restart",
        )
        .await,
    );
    feeder.await.unwrap();

    let expected: Vec<i64> = (0..TOTAL).collect();
    if got != expected {
        let first_bad = got.iter().zip(&expected).position(|(g, e)| g != e);
        panic!("B's stream is out of order or repeats, first difference at index {first_bad:?}");
    }
    // Nothing doubled arrives late: a marker sent last is the very next message.
    a.send_to_remote_actor("B", "sink", "in", Message::Integer(-1))
        .await
        .unwrap();
    assert_eq!(
        common::recv_ints(&mut seen, 1, Duration::from_secs(10), "the marker").await,
        vec![-1]
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_direct_link_a_stream_waits_out_the_broker_and_loses_nothing_nor_order() {
    const TOTAL: i64 = 10_000;
    let mut server = NatsServer::start().await.unwrap();
    // B has no bind port: while the broker is down there is no road to it at all.
    let StreamPair {
        mut a,
        mut b,
        mut seen,
        mut events,
        input,
    } = stream_pair(
        common::config(&server.url(), "A", "a1", 500),
        common::config(&server.url(), "B", "b1", 500),
    )
    .await;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let feeder = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for i in 0..TOTAL {
                input.send(Message::Integer(i)).await.unwrap();
                sent.store(i + 1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let mut got =
        common::recv_ints(&mut seen, 1_000, Duration::from_secs(30), "before the kill").await;
    server.kill().await.unwrap();
    common::next_event(
        &mut events,
        "the broker lost",
        Duration::from_secs(10),
        |e| matches!(e, NetworkEvent::BrokerLost),
    )
    .await;
    // The sender is held back, not buffered without limit: while the broker is down the
    // count of accepted messages stops growing (the local inboxes fill, then the feeder
    // waits).
    let mut last = sent.load(std::sync::atomic::Ordering::Relaxed);
    common::wait_for(
        "the feeder to be held back",
        Duration::from_secs(10),
        || {
            let now = sent.load(std::sync::atomic::Ordering::Relaxed);
            let still = now == last;
            last = now;
            async move { still }
        },
    )
    .await;
    assert!(last < TOTAL, "all {TOTAL} were accepted with no road to B");
    println!("with the broker down the feeder waits after {last} messages");

    server.restart().await.unwrap();
    let rest = common::recv_ints(
        &mut seen,
        (TOTAL as usize) - got.len(),
        Duration::from_secs(60),
        "after the restart",
    )
    .await;
    got.extend(rest);
    feeder.await.unwrap();
    // B is its network's only instance: what arrived ahead of the resent ones waited.
    assert!(
        got.iter().copied().eq(0..TOTAL),
        "out of order, lost or doubled"
    );
    a.send_to_remote_actor("B", "sink", "in", Message::Integer(-1))
        .await
        .unwrap();
    assert_eq!(
        common::recv_ints(&mut seen, 1, Duration::from_secs(10), "the marker").await,
        vec![-1],
        "a repeat arrived late"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_broker_is_given_up_within_a_few_heartbeats_and_the_stream_goes_direct() {
    // A broker that stops answering without closing its sockets (frozen, or cut off by a
    // partition) looks alive to TCP. The client's pings, paced by the heartbeat (500 ms
    // here), must find it out; the default NATS ping interval would take two minutes.
    const TOTAL: i64 = 6_000;
    let server = NatsServer::start().await.unwrap();
    let StreamPair {
        mut a,
        mut b,
        mut seen,
        mut events,
        input,
    } = bound_pair(&server).await;
    let (stretch_tx, feeder) = stretch_feeder(input);
    stretch_tx.send(0..2_000).await.unwrap();
    let mut got = common::recv_ints(
        &mut seen,
        2_000,
        Duration::from_secs(30),
        "before the freeze",
    )
    .await;

    server.pause().await.unwrap();
    let frozen = Instant::now();
    stretch_tx.send(2_000..TOTAL).await.unwrap();
    drop(stretch_tx);
    switch_to_b(&mut events, TransportKind::Nats, TransportKind::Direct, 10).await;
    println!(
        "switched to the direct link {:?} after the freeze",
        frozen.elapsed()
    );
    got.extend(
        common::recv_ints(
            &mut seen,
            (TOTAL - 2_000) as usize,
            Duration::from_secs(30),
            "while the broker is frozen",
        )
        .await,
    );
    feeder.await.unwrap();
    assert_eq!(
        got,
        (0..TOTAL).collect::<Vec<_>>(),
        "B's stream is out of order, repeats or misses"
    );
    // Shutting down does not wait out request timeouts on the frozen broker: leaving
    // gives up on deleting the liveness entry after 2 s (it expires instead).
    let stopping = Instant::now();
    let (a_down, b_down) = tokio::join!(a.shutdown(), b.shutdown());
    a_down.unwrap();
    b_down.unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "shutting down beside a frozen broker took {:?}",
        stopping.elapsed()
    );
    server.resume().await.unwrap();
}
