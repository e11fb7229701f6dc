//! Acknowledged streams against a real nats-server: a healthy stream is acknowledged in
//! full with nothing sent twice (through the broker and over a direct link), a sender is
//! held back while its receiver takes nothing, and what a receiver cut off from the
//! broker missed is sent again and arrives once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::{CutProxy, free_port, wait_for};
use reflow_network::Message;
use reflow_network::actor::{Actor, ActorContext, ProbeActor};
use reflow_network::components::Passthrough;
use reflow_network::distributed_network::{DistributedConfig, DistributedNetwork};
use reflow_network::local_server::NatsServer;
use reflow_network::network::Connector;
use tokio::sync::watch;

fn config(url: &str, network: &str, instance: &str) -> DistributedConfig {
    common::config(url, network, instance, 500)
}

/// A started network `A` with a `source` node feeding `target@{b}`; returns it and the
/// inlet of `source`.
async fn sender(
    config: DistributedConfig,
    b: &str,
) -> (DistributedNetwork, reflow_network::network::Inlet) {
    let a = common::started_with(config, |a| {
        a.register_local_actor("source", Passthrough, None).unwrap();
    })
    .await;
    a.connect_to_network(b).await.unwrap();
    let alias = a.register_remote_actor("target", &b_id(b)).await.unwrap();
    let input = common::wire_source_through(&a, &alias, None);
    (a, input)
}

/// The network id behind `endpoint`: itself, or `B` for a direct address.
fn b_id(endpoint: &str) -> String {
    if endpoint.contains(':') {
        "B".into()
    } else {
        endpoint.into()
    }
}

/// Waits until A has heard every envelope it streamed acknowledged.
async fn all_acknowledged(a: &DistributedNetwork) {
    wait_for(
        "A to hear every envelope acknowledged",
        Duration::from_secs(10),
        || async { a.stats().unacknowledged == 0 },
    )
    .await;
}

async fn shut_down(mut a: DistributedNetwork, mut b: DistributedNetwork) {
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Streams 5,000 messages from A to B and checks that every one arrives once, in order,
/// that A hears every envelope acknowledged, and that nothing went twice.
async fn acknowledged_in_full(
    a_config: DistributedConfig,
    b_config: DistributedConfig,
    endpoint: &str,
) {
    let (probe, mut seen) = ProbeActor::channel(10_000);
    let b = common::started_with(b_config, |b| {
        b.register_local_actor("target", probe, None).unwrap();
    })
    .await;
    let (a, input) = sender(a_config, endpoint).await;
    let feeder = common::feed(input, 0..5_000, Message::Integer);
    let got = common::recv_ints(&mut seen, 5_000, Duration::from_secs(30), "the stream").await;
    feeder.await.unwrap();
    assert!(
        got.iter().copied().eq(0..5_000),
        "out of order, lost or doubled"
    );
    all_acknowledged(&a).await;
    let (a_stats, b_stats) = (a.stats(), b.stats());
    assert_eq!(
        a_stats.resent, 0,
        "nothing was lost, so nothing went twice: {a_stats:?}"
    );
    assert_eq!(b_stats.duplicates_in, 0, "{b_stats:?}");
    assert_eq!(b_stats.messages_in, 5_000);
    shut_down(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_through_the_broker_is_acknowledged_in_full_and_nothing_goes_twice() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    acknowledged_in_full(config(&url, "A", "a1"), config(&url, "B", "b1"), "B").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_over_a_direct_link_is_acknowledged_in_full_and_nothing_goes_twice() {
    // No broker anywhere: acknowledgements travel on the link, ahead of its data.
    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    let bound = |network: &str, instance: &str, port: u16| DistributedConfig {
        bind_address: "127.0.0.1".into(),
        bind_port: port,
        ..config(&nowhere, network, instance)
    };
    let b_port = free_port();
    acknowledged_in_full(
        bound("A", "a1", free_port()),
        bound("B", "b1", b_port),
        &format!("127.0.0.1:{b_port}"),
    )
    .await;
}

/// Passes each message on once it is open; until then it holds the first and takes no
/// more, so its inbox fills behind it.
#[derive(Clone)]
struct Gate(watch::Receiver<bool>);

#[async_trait]
impl Actor for Gate {
    fn inports(&self) -> Vec<String> {
        vec!["in".into()]
    }
    fn outports(&self) -> Vec<String> {
        vec!["out".into()]
    }
    async fn handle(
        &mut self,
        ctx: &mut ActorContext,
        _port: &str,
        message: Message,
    ) -> reflow_network::Result<()> {
        let _ = self.0.wait_for(|open| *open).await;
        ctx.emit("out", message).await
    }
}

/// A started network B whose actor `target` is a shut [`Gate`] in front of a probe that
/// holds up to `n` messages; returns it, the gate's switch and what the probe receives.
async fn gated(
    config: DistributedConfig,
    n: usize,
) -> (
    DistributedNetwork,
    watch::Sender<bool>,
    tokio::sync::mpsc::Receiver<reflow_network::actor::ProbeMessage>,
) {
    let (open, gate) = watch::channel(false);
    let (probe, seen) = ProbeActor::channel(n);
    let b = common::started_with(config, |b| {
        b.register_local_actor("target", Gate(gate), None).unwrap();
        b.register_local_actor("sink", probe, None).unwrap();
        let local = b.get_local_network();
        local
            .write()
            .add_connection(Connector::new("target", "out", "sink", "in"))
            .unwrap();
    })
    .await;
    (b, open, seen)
}

/// A message of about 1 KiB that carries `i`.
fn kib(i: i64) -> Message {
    let mut body = i.to_be_bytes().to_vec();
    body.resize(1024, 0);
    Message::Bytes(body.into())
}

fn kib_index(message: &Message) -> i64 {
    let Message::Bytes(body) = message else {
        panic!("not bytes: {message:?}");
    };
    i64::from_be_bytes(body[..8].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_is_held_back_while_its_receiver_takes_nothing_then_all_arrives_in_order() {
    const N: usize = 20_000;
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let small = |mut config: DistributedConfig| {
        config.local_network_config.max_buffer_size = 512 * 1024;
        config.local_network_config.inbox_capacity = 64;
        config
    };
    let (b, open, mut seen) = gated(small(config(&url, "B", "b1")), N).await;
    let (a, input) = sender(small(config(&url, "A", "a1")), "B").await;

    let sent = Arc::new(AtomicUsize::new(0));
    let feeder = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for i in 0..N as i64 {
                input.send(kib(i)).await.unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Held back: the count stops moving with envelopes waiting to be acknowledged.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = usize::MAX;
    let held_at = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = sent.load(Ordering::Relaxed);
        if now == last && a.stats().unacknowledged > 0 {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the sender never stopped: {now} sent"
        );
        last = now;
    };
    // Without acknowledgements every message would have gone: B's client buffer holds
    // 65,536. What got out is the inboxes, the proxy's batch, the stream's queue of four
    // batches and one window of 512 KiB.
    assert!(
        held_at < 2_000,
        "held back only after {held_at} of {N} messages"
    );
    assert_eq!(b.stats().slow_consumer_drops, 0);

    open.send(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for expected in 0..N as i64 {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = tokio::time::timeout(left, seen.recv())
            .await
            .unwrap_or_else(|_| panic!("got {expected} of {N} after the gate opened"))
            .unwrap();
        assert_eq!(
            kib_index(&got.message),
            expected,
            "out of order, lost or doubled"
        );
    }
    feeder.await.unwrap();
    assert_eq!(b.stats().slow_consumer_drops, 0);
    assert_eq!(b.stats().messages_in, N as u64);
    shut_down(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_receiver_cut_off_from_the_broker_missed_is_sent_again_and_arrives_once_in_order() {
    const N: usize = 3_000;
    let server = NatsServer::start().await.unwrap();
    let proxy = CutProxy::start(server.port()).await;
    // B reaches the broker through a proxy the test cuts; A reaches it directly, so A
    // never learns of the cut: only the missing acknowledgements tell.
    let (probe, mut seen) = ProbeActor::channel(N * 2);
    let b = common::started_with(config(&proxy.url(), "B", "b1"), |b| {
        b.register_local_actor("target", probe, None).unwrap();
    })
    .await;
    let (a, input) = sender(config(&server.url(), "A", "a1"), "B").await;

    let feeder = tokio::spawn(async move {
        // About a thousand a second, so that the cut falls in the middle of the stream.
        for i in 0..N as i64 {
            input.send(Message::Integer(i)).await.unwrap();
            if i % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let received = Arc::new(AtomicUsize::new(0));
    let collector = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut got = Vec::with_capacity(N);
            while got.len() < N {
                match tokio::time::timeout(Duration::from_secs(30), seen.recv()).await {
                    Ok(Some(m)) => got.push(m.message.as_integer().unwrap()),
                    _ => break,
                }
                received.store(got.len(), Ordering::Relaxed);
            }
            got
        })
    };
    wait_for(
        "B to receive the start of the stream",
        Duration::from_secs(10),
        || async { received.load(Ordering::Relaxed) >= 300 },
    )
    .await;
    proxy.cut();
    wait_for("B to lose the broker", Duration::from_secs(5), || async {
        !b.is_broker_connected()
    })
    .await;
    let sent_at_cut = a.stats().messages_out;
    wait_for("A to send into the cut", Duration::from_secs(5), || async {
        a.stats().messages_out >= sent_at_cut + 200
    })
    .await;
    proxy.restore();

    let got = collector.await.unwrap();
    feeder.await.unwrap();
    assert_eq!(got.len(), N, "B got {} of {N}", got.len());
    // B is its network's only instance, so what came after the gap waited for it.
    assert!(
        got.iter().copied().eq(0..N as i64),
        "out of order, lost or doubled"
    );
    let a_stats = a.stats();
    assert!(
        a_stats.resent > 0,
        "what the cut swallowed was sent again: {a_stats:?}"
    );
    all_acknowledged(&a).await;
    shut_down(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_waits_until_the_peer_has_acknowledged_what_it_was_sent() {
    const N: i64 = 300;
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let mut b_config = config(&url, "B", "b1");
    // A small inbox, so that B's dispatcher stops taking (and acknowledging) what A sent
    // while the gate is shut.
    b_config.local_network_config.inbox_capacity = 8;
    let (b, open, mut seen) = gated(b_config, N as usize).await;
    let (mut a, input) = sender(config(&url, "A", "a1"), "B").await;
    common::feed(input, 0..N, Message::Integer).await.unwrap();
    wait_for("A to send everything", Duration::from_secs(10), || async {
        a.stats().messages_out == N as u64
    })
    .await;
    assert!(a.stats().unacknowledged > 0, "B took everything already");

    let shutdown = tokio::spawn(async move {
        a.shutdown().await.unwrap();
        a
    });
    // A bounded look for an absence: the shutdown must still be waiting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !shutdown.is_finished(),
        "shut down with envelopes unacknowledged"
    );
    let opened = Instant::now();
    open.send(true).unwrap();
    let a = tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown finished once B acknowledged")
        .unwrap();
    assert!(
        opened.elapsed() < Duration::from_secs(4),
        "it waited for the acknowledgements, not for its time limit"
    );
    assert_eq!(a.stats().unacknowledged, 0);
    let got = common::recv_ints(&mut seen, N as usize, Duration::from_secs(10), "at B").await;
    assert!(
        got.iter().copied().eq(0..N),
        "out of order, lost or doubled"
    );
    let mut b = b;
    b.shutdown().await.unwrap();
}

/// Takes a millisecond over each message, then hands it on.
#[derive(Clone)]
struct Slow;

#[async_trait]
impl Actor for Slow {
    fn inports(&self) -> Vec<String> {
        vec!["in".into()]
    }
    fn outports(&self) -> Vec<String> {
        vec!["out".into()]
    }
    async fn handle(
        &mut self,
        ctx: &mut ActorContext,
        _port: &str,
        message: Message,
    ) -> reflow_network::Result<()> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        ctx.emit("out", message).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_fed_as_fast_as_possible_is_sent_almost_nothing_twice() {
    // Seconds of backlog: far longer than the shortest retransmission timeout.
    const N: i64 = 2_500;
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let (probe, mut seen) = ProbeActor::channel(N as usize);
    let mut b = common::started_with(config(&url, "B", "b1"), |b| {
        b.register_local_actor("target", Slow, None).unwrap();
        b.register_local_actor("sink", probe, None).unwrap();
        b.get_local_network()
            .write()
            .add_connection(Connector::new("target", "out", "sink", "in"))
            .unwrap();
    })
    .await;
    let (mut a, input) = sender(config(&url, "A", "a1"), "B").await;
    let started = Instant::now();
    common::feed(input, 0..N, Message::Integer).await.unwrap();
    let got = common::recv_ints(&mut seen, N as usize, Duration::from_secs(60), "at B").await;
    assert!(
        got.iter().copied().eq(0..N),
        "out of order, lost or doubled"
    );
    all_acknowledged(&a).await;
    let (sent, received) = (a.stats(), b.stats());
    eprintln!(
        "{N} messages through a 1 ms actor in {:.1?}: {} envelopes sent again, {} repeats at B",
        started.elapsed(),
        sent.resent,
        received.duplicates_in
    );
    // A handling time that grows with the backlog is no loss: under 1 % goes twice.
    assert!(
        received.duplicates_in * 100 < N as u64,
        "{} of {N} messages reached B twice: {sent:?} {received:?}",
        received.duplicates_in
    );
    assert!(sent.resent * 100 < N as u64, "{sent:?}");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
