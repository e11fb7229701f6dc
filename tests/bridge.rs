//! The NATS bridge against a real nats-server: remote actors used like local ones.

mod common;

use common::started;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reflow_network::actor::{FnActor, ProbeActor, ProbeMessage};
use reflow_network::components::Passthrough;
use reflow_network::distributed_network::{
    ConflictResolutionStrategy, DistributedConfig, DistributedNetwork,
};
use reflow_network::events::{Direction, NetworkEvent};
use reflow_network::local_server::{NatsServer, ServerOptions};
use reflow_network::network::{Connector, NetworkConfig};
use reflow_network::{ErrorKind, Message};
use tokio::sync::mpsc;

fn config(url: &str, network: &str, instance: &str) -> DistributedConfig {
    common::config(url, network, instance, 1_000)
}

/// A configuration whose requests (confirmed sends among them) give up after 300 ms.
fn impatient(url: &str, network: &str, instance: &str) -> DistributedConfig {
    DistributedConfig {
        local_network_config: NetworkConfig {
            request_timeout_ms: 300,
            ..NetworkConfig::default()
        },
        ..config(url, network, instance)
    }
}

fn doubler() -> FnActor {
    FnActor::map("in", "out", |m| {
        Message::Integer(m.as_integer().unwrap_or(-1) * 2)
    })
}

/// Adds a probe node `id` to `network` and returns what it receives.
fn probe(network: &DistributedNetwork, id: &str) -> mpsc::Receiver<ProbeMessage> {
    let (probe, seen) = ProbeActor::channel(20_000);
    network.register_local_actor(id, probe, None).unwrap();
    seen
}

async fn recv_n(seen: &mut mpsc::Receiver<ProbeMessage>, n: usize, what: &str) -> Vec<Message> {
    let mut out = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, seen.recv()).await {
            Ok(Some(m)) => out.push(m.message),
            _ => panic!("{what}: got {} of {n} messages", out.len()),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_network_pipeline_carries_10k_messages_in_order() {
    let server = NatsServer::start().await.unwrap();
    let mut b = DistributedNetwork::new(config(&server.url(), "B", "b1"))
        .await
        .unwrap();
    b.register_local_actor("double", doubler(), None).unwrap();
    b.start().await.unwrap();

    let mut a = DistributedNetwork::new(config(&server.url(), "A", "a1"))
        .await
        .unwrap();
    a.register_local_actor("source", Passthrough, None).unwrap();
    let mut seen = probe(&a, "sink");
    a.start().await.unwrap();
    a.connect_to_network("B").await.unwrap();
    let alias = a.register_remote_actor("double", "B").await.unwrap();
    assert_eq!(alias, "double@B");
    let input = common::wire_source_through(&a, &alias, Some("sink"));
    let feeder = common::feed(input, 0..10_000i64, Message::Integer);
    let got = recv_n(&mut seen, 10_000, "pipeline").await;
    feeder.await.unwrap();
    let expected: Vec<Message> = (0..10_000i64).map(|i| Message::Integer(i * 2)).collect();
    assert!(got == expected, "outputs out of order or altered");
    assert_eq!(b.stats().messages_in, 10_000);
    assert_eq!(b.stats().returns_out, 10_000);
    assert_eq!(a.stats().returns_in, 10_000);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_subscriber_sees_traffic_on_network_actor_port_subject() {
    let server = NatsServer::start().await.unwrap();
    let raw = async_nats::connect(server.url()).await.unwrap();
    let mut tap = raw.subscribe("B.double.in").await.unwrap();
    raw.flush().await.unwrap();

    let mut b = DistributedNetwork::new(config(&server.url(), "B", "b1"))
        .await
        .unwrap();
    b.register_local_actor("double", doubler(), None).unwrap();
    b.start().await.unwrap();
    let a = started(config(&server.url(), "A", "a1")).await;
    a.connect_to_network("B").await.unwrap();
    for i in 0..5i64 {
        a.send_to_remote_actor("B", "double", "in", Message::Integer(i))
            .await
            .unwrap();
    }
    for i in 0..5i64 {
        let msg = tokio::time::timeout(Duration::from_secs(5), tap.next())
            .await
            .expect("raw subscriber saw nothing")
            .unwrap();
        assert_eq!(msg.subject.as_str(), "B.double.in");
        let envelope = reflow_network::message::Envelope::decode(&msg.payload).unwrap();
        assert_eq!(envelope.network, "A");
        assert_eq!(envelope.message, Message::Integer(i));
    }
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_topology_each_spoke_uses_the_hub_actor_and_gets_its_own_results() {
    let server = NatsServer::start().await.unwrap();
    let mut hub = DistributedNetwork::new(config(&server.url(), "central_hub", "hub1"))
        .await
        .unwrap();
    hub.register_local_actor("double", doubler(), None).unwrap();
    hub.start().await.unwrap();

    let mut spokes = Vec::new();
    for (n, name) in ["data_processor", "ml_trainer", "analytics"]
        .into_iter()
        .enumerate()
    {
        let spoke = DistributedNetwork::new(config(&server.url(), name, "s1"))
            .await
            .unwrap();
        let seen = probe(&spoke, "results");
        let mut spoke = spoke;
        spoke.start().await.unwrap();
        spoke.connect_to_network("central_hub").await.unwrap();
        let alias = spoke
            .register_remote_actor("double", "central_hub")
            .await
            .unwrap();
        let inlet = {
            let local = spoke.get_local_network();
            let mut local = local.write();
            local
                .add_connection(Connector::new(&alias, "out", "results", "in"))
                .unwrap();
            local.inlet(&alias, "in").unwrap()
        };
        spokes.push((spoke, seen, inlet, (n as i64 + 1) * 1_000));
    }
    for (_, _, inlet, base) in &spokes {
        for i in 0..100 {
            inlet.send(Message::Integer(base + i)).await.unwrap();
        }
    }
    for (spoke, seen, _, base) in &mut spokes {
        let got = recv_n(seen, 100, "spoke results").await;
        let expected: Vec<Message> = (0..100)
            .map(|i| Message::Integer((*base + i) * 2))
            .collect();
        assert_eq!(
            got,
            expected,
            "spoke {} got another spoke's results",
            spoke.get_config().network_id
        );
        assert!(
            seen.try_recv().is_err(),
            "spoke received more than its own results"
        );
    }
    let inbound = hub.get_active_connections().await.unwrap();
    assert_eq!(
        inbound
            .iter()
            .filter(|c| c.direction == Direction::Inbound)
            .count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotted_network_ids_never_receive_each_others_traffic() {
    let server = NatsServer::start().await.unwrap();
    let ml = DistributedNetwork::new(config(&server.url(), "prod.ml", "i1"))
        .await
        .unwrap();
    let mut ml_seen = probe(&ml, "sink");
    let training = DistributedNetwork::new(config(&server.url(), "prod.ml.training", "i1"))
        .await
        .unwrap();
    let mut training_seen = probe(&training, "sink");
    let (mut ml, mut training) = (ml, training);
    ml.start().await.unwrap();
    training.start().await.unwrap();
    let client = started(config(&server.url(), "client", "c1")).await;
    client.connect_to_network("prod.ml").await.unwrap();
    client.connect_to_network("prod.ml.training").await.unwrap();
    for i in 0..50i64 {
        client
            .send_to_remote_actor("prod.ml", "sink", "in", Message::Integer(i))
            .await
            .unwrap();
        client
            .send_to_remote_actor(
                "prod.ml.training",
                "sink",
                "in",
                Message::Integer(1_000 + i),
            )
            .await
            .unwrap();
    }
    let ml_got = recv_n(&mut ml_seen, 50, "prod.ml").await;
    let training_got = recv_n(&mut training_seen, 50, "prod.ml.training").await;
    assert_eq!(ml_got, (0..50).map(Message::Integer).collect::<Vec<_>>());
    assert_eq!(
        training_got,
        (1_000..1_050).map(Message::Integer).collect::<Vec<_>>()
    );
    // Confirmed sends were accepted before returning, so nothing else can be on its way.
    assert!(ml_seen.try_recv().is_err() && training_seen.try_recv().is_err());
    assert_eq!(ml.stats().rejected_in + training.stats().rejected_in, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_of_one_network_share_the_load_without_duplicates_or_losses() {
    let server = NatsServer::start().await.unwrap();
    let (tx, mut all) = mpsc::channel::<(usize, i64)>(4_000);
    let mut workers = Vec::new();
    for n in 0..3 {
        let tx = tx.clone();
        let worker = DistributedNetwork::new(config(&server.url(), "workers", &format!("w{n}")))
            .await
            .unwrap();
        let actor = FnActor::new(["in"], Vec::<String>::new(), move |_port, m| {
            tx.try_send((n, m.as_integer().unwrap()))
                .expect("room for every message");
            Ok(vec![])
        });
        worker.register_local_actor("work", actor, None).unwrap();
        let mut worker = worker;
        worker.start().await.unwrap();
        workers.push(worker);
    }
    drop(tx);
    let client = started(config(&server.url(), "client", "c1")).await;
    client.connect_to_network("workers").await.unwrap();
    let alias = client
        .register_remote_actor("work", "workers")
        .await
        .unwrap();
    let inlet = client
        .get_local_network()
        .read()
        .inlet(&alias, "in")
        .unwrap();
    for i in 0..3_000i64 {
        inlet.send(Message::Integer(i)).await.unwrap();
    }
    let mut per_instance: HashMap<usize, usize> = HashMap::new();
    let mut values = BTreeSet::new();
    let mut duplicates = 0;
    while values.len() < 3_000 {
        let (n, v) = tokio::time::timeout(Duration::from_secs(20), all.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of 3000 arrived", values.len()))
            .unwrap();
        *per_instance.entry(n).or_default() += 1;
        if !values.insert(v) {
            duplicates += 1;
        }
    }
    assert_eq!(duplicates, 0);
    assert_eq!(values, (0..3_000).collect::<BTreeSet<_>>());
    assert_eq!(
        per_instance.len(),
        3,
        "every instance takes a share: {per_instance:?}"
    );
    for worker in &mut workers {
        worker.shutdown().await.unwrap();
    }
    assert!(all.try_recv().is_err(), "a message arrived twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_refused_with_authentication_failed() {
    let server = NatsServer::start().await.unwrap();
    let b = started(DistributedConfig {
        auth_token: Some("right".into()),
        ..config(&server.url(), "B", "b1")
    })
    .await;
    let mut b_events = b.events();
    let a = started(DistributedConfig {
        auth_token: Some("wrong".into()),
        ..config(&server.url(), "A", "a1")
    })
    .await;
    let err = a.connect_to_network("B").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed, "{err}");
    assert!(err.to_string().contains("Authentication failed"), "{err}");
    assert!(!a.is_network_connected("B").await);
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = b_events.next().await {
            if let NetworkEvent::PeerRefused { peer, reason } = event {
                return (peer, reason);
            }
        }
        panic!("event stream ended");
    })
    .await
    .expect("B reported no refusal");
    assert_eq!(refused.0, "A");
    assert!(refused.1.contains("Authentication failed"));

    let mut good = started(DistributedConfig {
        auth_token: Some("right".into()),
        ..config(&server.url(), "C", "c1")
    })
    .await;
    good.connect_to_network("B").await.unwrap();
    assert!(good.is_network_connected("B").await);
    good.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_only_sealed_envelopes_reach_an_actor_and_the_rest_are_counted() {
    use reflow_network::message::{Envelope, WIRE_VERSION};
    let server = NatsServer::start().await.unwrap();
    let with_token = |network: &str, instance: &str| DistributedConfig {
        auth_token: Some("right".into()),
        ..config(&server.url(), network, instance)
    };
    let b = DistributedNetwork::new(with_token("B", "b1"))
        .await
        .unwrap();
    let mut seen = probe(&b, "sink");
    let mut b = b;
    b.start().await.unwrap();
    let mut a = DistributedNetwork::new(with_token("A", "a1"))
        .await
        .unwrap();
    a.register_local_actor("source", Passthrough, None).unwrap();
    a.start().await.unwrap();

    // A plain client that never proved the token: well-formed envelopes, some naming a
    // real peer (A's instance) as their sender, streamed and as requests. It also taps
    // what goes on the wire.
    let raw = async_nats::connect(server.url()).await.unwrap();
    let mut tap = raw.subscribe("B.sink.in").await.unwrap();
    raw.flush().await.unwrap();
    let forged = |sender: &str, instance: &str, seq: u64| {
        Envelope {
            version: WIRE_VERSION,
            network: sender.into(),
            instance: instance.into(),
            seq,
            message: Message::Integer(666),
            reply_to: None,
            acked_below: None,
        }
        .encode(None)
        .unwrap()
    };
    for seq in 0..5 {
        raw.publish("B.sink.in", forged("intruder", "x", seq))
            .await
            .unwrap();
        raw.publish("B.sink.in", forged("A", "a1", 1_000 + seq))
            .await
            .unwrap();
    }
    let answer = raw
        .request("B.sink.in", forged("A", "a1", 2_000))
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&answer.payload).contains("AuthenticationFailed"),
        "{:?}",
        answer.payload
    );
    raw.flush().await.unwrap();
    common::wait_for(
        "B to count the 11 forgeries",
        Duration::from_secs(5),
        || async { b.stats().unauthenticated_in == 11 },
    )
    .await;
    assert_eq!(b.stats().messages_in, 0);

    // Peers that hold the token stream and confirm as ever.
    a.connect_to_network("B").await.unwrap();
    let alias = a.register_remote_actor("sink", "B").await.unwrap();
    let input = common::wire_source_through(&a, &alias, None);
    let feeder = common::feed(input, 0..500, Message::Integer);
    tokio::time::timeout(
        Duration::from_secs(20),
        a.send_to_remote_actor("B", "sink", "in", Message::Integer(-1)),
    )
    .await
    .expect("the confirmed send was answered within 20 s")
    .unwrap();
    let got = recv_n(&mut seen, 501, "sealed messages").await;
    tokio::time::timeout(Duration::from_secs(20), feeder)
        .await
        .expect("the feeder finished within 20 s")
        .unwrap();
    assert!(
        got.iter().all(|m| m != &Message::Integer(666)),
        "a forgery got through"
    );
    assert_eq!(b.stats().unauthenticated_in, 11);
    assert_eq!(b.stats().messages_in, 501);
    // What A put on the wire was sealed; the forgeries were not.
    let mut sealed = 0;
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(200), tap.next()).await
    {
        if message.payload.first() == Some(&0x93) {
            sealed += 1;
        }
    }
    assert!(sealed > 0, "no sealed payload was seen on B.sink.in");
    for (name, network) in [("A", &mut a), ("B", &mut b)] {
        tokio::time::timeout(Duration::from_secs(20), network.shutdown())
            .await
            .unwrap_or_else(|_| panic!("{name} did not shut down within 20 s"))
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_past_max_connections_is_refused_saying_so() {
    let server = NatsServer::start().await.unwrap();
    let _b = started(DistributedConfig {
        max_connections: 1,
        ..config(&server.url(), "B", "b1")
    })
    .await;
    let first = started(config(&server.url(), "A1", "i")).await;
    first.connect_to_network("B").await.unwrap();
    let second = started(config(&server.url(), "A2", "i")).await;
    let err = second.connect_to_network("B").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MaxConnections, "{err}");
    assert!(err.to_string().contains("max connections"), "{err}");
    assert!(err.to_string().contains("max_connections = 1"), "{err}");
    // Reconnecting the one already counted is not a new connection.
    first.disconnect_from_network("B").await.unwrap();
    common::wait_for("B to release A1's slot", Duration::from_secs(5), || async {
        second.connect_to_network("B").await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_strategies_do_what_their_names_say() {
    use ConflictResolutionStrategy as S;
    let server = NatsServer::start().await.unwrap();
    let mut b = DistributedNetwork::new(config(&server.url(), "B", "b1"))
        .await
        .unwrap();
    b.register_local_actor("echo", Passthrough, None).unwrap();
    b.start().await.unwrap();
    let a = started(config(&server.url(), "A", "a1")).await;
    a.connect_to_network("B").await.unwrap();

    assert_eq!(
        a.register_remote_actor("echo", "B").await.unwrap(),
        "echo@B"
    );
    let err = a.register_remote_actor("echo", "B").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NameConflict);
    assert!(
        err.to_string().contains("Name conflict") && err.to_string().contains("echo@B"),
        "{err}"
    );
    let err = a
        .register_remote_actor_with_strategy("echo", "B", S::Fail)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NameConflict);

    assert_eq!(
        a.register_remote_actor_with_strategy("echo", "B", S::AutoAlias)
            .await
            .unwrap(),
        "echo@B-2"
    );
    assert_eq!(
        a.register_remote_actor_with_strategy("echo", "B", S::AutoAlias)
            .await
            .unwrap(),
        "echo@B-3"
    );
    assert_eq!(
        a.register_remote_actor_with_strategy("echo", "B", S::NetworkPrefix)
            .await
            .unwrap(),
        "B_echo"
    );
    assert_eq!(
        a.register_remote_actor_with_strategy("echo", "B", S::FullyQualified)
            .await
            .unwrap(),
        "B::echo"
    );
    assert_eq!(
        a.register_remote_actor_with_alias("mine", "echo", "B")
            .await
            .unwrap(),
        "mine"
    );
    let err = a
        .register_remote_actor_with_strategy("echo", "B", S::ManualAlias("mine".into()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NameConflict);

    // A local node's name is taken too.
    a.register_local_actor("local_echo", Passthrough, None)
        .unwrap();
    let err = a
        .register_remote_actor_with_alias("local_echo", "echo", "B")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NameConflict);

    let mut listed: Vec<String> = a
        .list_registered_remote_actors()
        .await
        .into_iter()
        .map(|(alias, info)| {
            assert_eq!(
                (info.actor_id.as_str(), info.network_id.as_str()),
                ("echo", "B")
            );
            alias
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "B::echo", "B_echo", "echo@B", "echo@B-2", "echo@B-3", "mine"
        ]
    );
    for alias in &listed {
        assert!(
            a.get_local_network().read().has_actor(alias),
            "{alias} is a node"
        );
    }
    a.unregister_remote_actor("mine").await.unwrap();
    assert!(!a.get_local_network().read().has_actor("mine"));
    assert_eq!(a.unregister_all_from_network("B").await.unwrap(), 5);
    assert!(a.list_registered_remote_actors().await.is_empty());
    let err = a.register_remote_actor("nope", "B").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ActorNotFound, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_sends_fail_with_the_promised_phrases() {
    let server = NatsServer::start().await.unwrap();
    let blocked = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let handled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stuck = Stuck(blocked.clone(), handled.clone());
    let mut b = DistributedNetwork::new(DistributedConfig {
        local_network_config: NetworkConfig {
            inbox_capacity: 1,
            ..NetworkConfig::default()
        },
        ..config(&server.url(), "B", "b1")
    })
    .await
    .unwrap();
    b.register_local_actor("stuck", stuck, None).unwrap();
    b.start().await.unwrap();
    let a = started(impatient(&server.url(), "A", "a1")).await;

    let err = a
        .send_to_remote_actor("B", "stuck", "in", Message::Flow)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Network not connected"), "{err}");

    let started_at = Instant::now();
    let err = a.connect_to_network("ghost").await.unwrap_err();
    assert!(err.to_string().contains("Network disconnected"), "{err}");
    let err = a.ping_network("ghost").await.unwrap_err();
    assert!(err.to_string().contains("Network disconnected"), "{err}");
    assert!(
        started_at.elapsed() < Duration::from_secs(2),
        "no-responders must answer quickly"
    );

    a.connect_to_network("B").await.unwrap();
    assert!(a.ping_network("B").await.unwrap() < Duration::from_secs(2));
    let err = a
        .send_to_remote_actor("B", "nobody", "in", Message::Flow)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Actor not found"), "{err}");
    assert!(err.to_string().contains("nobody"), "{err}");
    let err = a
        .send_to_remote_actor("B", "stuck", "nope", Message::Flow)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PortNotFound, "{err}");

    // Confirmed means handled: the actor holds the message, so no answer comes in time,
    // and the caller cannot know whether it will be handled.
    let send = |id: &'static str| {
        a.send_to_remote_actor_with_id("B", "stuck", "in", Message::Integer(1), id)
    };
    let err = send("k-1").await.unwrap_err();
    assert!(err.to_string().contains("Timeout"), "{err}");
    // A retry with the same id while it is still being handled is not delivered again.
    let err = send("k-1").await.unwrap_err();
    assert!(err.to_string().contains("Timeout"), "{err}");
    blocked.add_permits(100);
    // Once handled, a retry hears so, and the message was handled once.
    send("k-1").await.unwrap();
    assert_eq!(handled.load(std::sync::atomic::Ordering::SeqCst), 1);
    send("k-1").await.unwrap();
    assert_eq!(handled.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Another id is another message.
    send("k-2").await.unwrap();
    assert_eq!(handled.load(std::sync::atomic::Ordering::SeqCst), 2);
    let err = a
        .send_to_remote_actor_with_id("B", "stuck", "in", Message::Flow, "")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidName, "{err}");
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_retry_with_one_id_is_handled_once_across_a_networks_instances() {
    let server = NatsServer::start().await.unwrap();
    let blocked = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let handled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut bs = Vec::new();
    for instance in ["b1", "b2", "b3"] {
        let mut b = DistributedNetwork::new(config(&server.url(), "B", instance))
            .await
            .unwrap();
        b.register_local_actor("stuck", Stuck(blocked.clone(), handled.clone()), None)
            .unwrap();
        b.start().await.unwrap();
        bs.push(b);
    }
    let a = started(impatient(&server.url(), "A", "a1")).await;
    // A started after B's three instances: its liveness roster knows all of them.
    a.connect_to_network("B").await.unwrap();
    for id in ["k-1", "k-2", "k-3", "k-4"] {
        let send = || a.send_to_remote_actor_with_id("B", "stuck", "in", Message::Flow, id);
        // Held by the actor: every try times out, and every retry reaches the instance
        // that has it, which does not deliver it again.
        for _ in 0..4 {
            let err = send().await.unwrap_err();
            assert!(err.to_string().contains("Timeout"), "{err}");
        }
        blocked.add_permits(1);
        common::wait_for(
            "the retry to be answered",
            Duration::from_secs(5),
            || async { send().await.is_ok() },
        )
        .await;
    }
    assert_eq!(
        handled.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "each id handled once across B's instances"
    );
    for mut b in bs {
        b.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_see_connect_and_disconnect_events_and_listings() {
    let server = NatsServer::start().await.unwrap();
    let b = started(config(&server.url(), "B", "b1")).await;
    let mut b_events = b.events();
    let a = started(config(&server.url(), "A", "a1")).await;
    let mut a_events = a.events();
    a.connect_to_network("B").await.unwrap();
    assert_eq!(a.get_connected_networks().await, ["B"]);
    assert!(a.is_network_connected("B").await);
    let connections = b.get_active_connections().await.unwrap();
    assert_eq!(connections.len(), 1);
    assert_eq!(
        (connections[0].network.as_str(), connections[0].direction),
        ("A", Direction::Inbound)
    );
    assert!(matches!(
        next(&mut a_events).await,
        NetworkEvent::PeerConnected {
            direction: Direction::Outbound,
            ..
        }
    ));
    assert!(matches!(
        next(&mut b_events).await,
        NetworkEvent::PeerConnected {
            direction: Direction::Inbound,
            ..
        }
    ));
    a.disconnect_from_network("B").await.unwrap();
    assert!(matches!(
        next(&mut a_events).await,
        NetworkEvent::PeerDisconnected { .. }
    ));
    assert!(matches!(
        next(&mut b_events).await,
        NetworkEvent::PeerDisconnected { .. }
    ));
    assert!(!a.is_network_connected("B").await);
    let err = a.disconnect_from_network("B").await.unwrap_err();
    assert!(err.to_string().contains("Network not connected"), "{err}");
}

/// The next peer event; liveness events (networks up and down) interleave freely and are
/// passed over.
async fn next(events: &mut reflow_network::events::EventStream) -> NetworkEvent {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("no event within 5 s")
            .expect("event stream ended");
        if !matches!(
            event,
            NetworkEvent::NetworkUp { .. } | NetworkEvent::NetworkDown { .. }
        ) {
            return event;
        }
    }
}

/// An actor that holds each message until the test lets it go, and counts what it
/// handled.
#[derive(Clone)]
struct Stuck(
    std::sync::Arc<tokio::sync::Semaphore>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
);

#[async_trait::async_trait]
impl reflow_network::actor::Actor for Stuck {
    fn inports(&self) -> Vec<String> {
        vec!["in".into()]
    }
    fn outports(&self) -> Vec<String> {
        vec![]
    }
    async fn handle(
        &mut self,
        _ctx: &mut reflow_network::actor::ActorContext,
        _port: &str,
        _message: Message,
    ) -> reflow_network::Result<()> {
        // Each message takes a permit of its own, for good.
        if let Ok(permit) = self.0.acquire().await {
            permit.forget();
        }
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_shrinks_large_envelopes_on_the_wire_and_round_trips() {
    let server = NatsServer::start().await.unwrap();
    let raw = async_nats::connect(server.url()).await.unwrap();
    let mut tap = raw.subscribe("B.sink.in").await.unwrap();
    raw.flush().await.unwrap();
    let b = DistributedNetwork::new(config(&server.url(), "B", "b1"))
        .await
        .unwrap();
    let mut seen = probe(&b, "sink");
    let mut b = b;
    b.start().await.unwrap();
    let a = started(DistributedConfig {
        local_network_config: NetworkConfig {
            enable_compression: true,
            compression_threshold: 256,
            ..NetworkConfig::default()
        },
        ..config(&server.url(), "A", "a1")
    })
    .await;
    a.connect_to_network("B").await.unwrap();
    let text = "reflow ".repeat(2_000);
    a.send_to_remote_actor("B", "sink", "in", Message::from(text.as_str()))
        .await
        .unwrap();
    a.send_to_remote_actor("B", "sink", "in", Message::from("tiny"))
        .await
        .unwrap();
    let got = recv_n(&mut seen, 2, "compressed messages").await;
    assert_eq!(got, [Message::from(text.as_str()), Message::from("tiny")]);
    let big = tap.next().await.unwrap();
    assert_eq!(big.payload[0], reflow_network::message::COMPRESSED_MARKER);
    assert!(
        big.payload.len() < text.len() / 4,
        "{} bytes on the wire",
        big.payload.len()
    );
    let small = tap.next().await.unwrap();
    assert_ne!(small.payload[0], reflow_network::message::COMPRESSED_MARKER);
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_payload_is_refused_naming_both_sizes() {
    let server = NatsServer::start().await.unwrap();
    let b = DistributedNetwork::new(config(&server.url(), "B", "b1"))
        .await
        .unwrap();
    let _seen = probe(&b, "sink");
    let mut b = b;
    b.start().await.unwrap();
    let a = started(config(&server.url(), "A", "a1")).await;
    a.connect_to_network("B").await.unwrap();
    let huge = Message::Bytes(vec![7u8; 2 * 1024 * 1024].into());
    let err = a
        .send_to_remote_actor("B", "sink", "in", huge)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge, "{err}");
    let text = err.to_string();
    assert!(text.contains("1048576"), "names the server's limit: {text}");
    assert!(text.contains("2097"), "names the message size: {text}");
    // The network keeps serving.
    a.send_to_remote_actor("B", "sink", "in", Message::Flow)
        .await
        .unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_run_reconnects_and_no_confirmed_send_lies() {
    let mut server = NatsServer::start().await.unwrap();
    let b = DistributedNetwork::new(config(&server.url(), "B", "b1"))
        .await
        .unwrap();
    let mut seen = probe(&b, "sink");
    let mut b = b;
    b.start().await.unwrap();
    let a = std::sync::Arc::new(
        started(DistributedConfig {
            local_network_config: NetworkConfig {
                request_timeout_ms: 500,
                ..NetworkConfig::default()
            },
            ..config(&server.url(), "A", "a1")
        })
        .await,
    );
    let mut a_events = a.events();
    let mut b_events = b.events();
    a.connect_to_network("B").await.unwrap();
    a.send_to_remote_actor("B", "sink", "in", Message::Integer(-1))
        .await
        .unwrap();

    // Confirmed sends keep going while the broker dies and comes back.
    let sender = {
        let a = a.clone();
        tokio::spawn(async move {
            let mut confirmed = Vec::new();
            let mut failed = 0;
            for i in 0..400i64 {
                match a
                    .send_to_remote_actor("B", "sink", "in", Message::Integer(i))
                    .await
                {
                    Ok(()) => confirmed.push(i),
                    Err(err) => {
                        assert!(
                            matches!(
                                err.kind(),
                                ErrorKind::Timeout
                                    | ErrorKind::NetworkDisconnected
                                    | ErrorKind::Broker
                            ),
                            "unexpected error: {err}"
                        );
                        failed += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (confirmed, failed)
        })
    };
    common::wait_for(
        "some sends before the kill",
        Duration::from_secs(10),
        || async { b.stats().messages_in > 50 },
    )
    .await;
    server.kill().await.unwrap();
    wait_event(&mut a_events, |e| matches!(e, NetworkEvent::BrokerLost)).await;
    wait_event(&mut b_events, |e| matches!(e, NetworkEvent::BrokerLost)).await;
    server.restart().await.unwrap();
    wait_event(&mut a_events, |e| matches!(e, NetworkEvent::BrokerRegained)).await;
    wait_event(&mut b_events, |e| matches!(e, NetworkEvent::BrokerRegained)).await;

    let (confirmed, failed) = sender.await.unwrap();
    println!(
        "{} confirmed, {failed} failed across the restart",
        confirmed.len()
    );
    // Traffic resumes: a send after the restart is confirmed.
    common::wait_for(
        "a confirmed send after the restart",
        Duration::from_secs(10),
        || async {
            a.send_to_remote_actor("B", "sink", "in", Message::Integer(10_000))
                .await
                .is_ok()
        },
    )
    .await;
    let mut received = BTreeSet::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), seen.recv()).await {
        received.insert(m.message.as_integer().unwrap());
    }
    assert!(received.contains(&10_000));
    let lied: Vec<_> = confirmed.iter().filter(|i| !received.contains(i)).collect();
    assert!(lied.is_empty(), "confirmed but never delivered: {lied:?}");
    b.shutdown().await.unwrap();
}

async fn wait_event(
    events: &mut reflow_network::events::EventStream,
    want: fn(&NetworkEvent) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.recv().await {
            if want(&event) {
                return;
            }
        }
    })
    .await
    .expect("event did not arrive")
}

/// Reads what the tap saw on a data subject until `n` messages came, decoding batch
/// envelopes into their messages; returns the messages in order and how many NATS
/// messages carried them.
async fn tapped(tap: &mut async_nats::Subscriber, n: usize) -> (Vec<Message>, usize, usize) {
    let (mut messages, mut nats_messages, mut largest) = (Vec::new(), 0, 0);
    while messages.len() < n {
        let msg = tokio::time::timeout(Duration::from_secs(10), tap.next())
            .await
            .unwrap_or_else(|_| panic!("the tap saw {} of {n} messages", messages.len()))
            .unwrap();
        nats_messages += 1;
        largest = largest.max(msg.payload.len());
        let envelopes = reflow_network::message::Envelope::decode_all(&msg.payload).unwrap();
        messages.extend(envelopes.into_iter().map(|e| e.message));
    }
    (messages, nats_messages, largest)
}

/// Network A streaming through a proxy to B's probe `sink`, with a raw subscriber
/// tapping `B.sink.in`.
struct TappedPair {
    a: DistributedNetwork,
    b: DistributedNetwork,
    /// Feeds A's `source`, wired to the proxy `sink@B`.
    input: reflow_network::network::Inlet,
    seen: mpsc::Receiver<ProbeMessage>,
    tap: async_nats::Subscriber,
}

impl TappedPair {
    async fn start(url: &str, n: usize) -> Self {
        let raw = async_nats::ConnectOptions::new()
            .subscription_capacity(n + 1024)
            .connect(url)
            .await
            .unwrap();
        let tap = raw.subscribe("B.sink.in").await.unwrap();
        raw.flush().await.unwrap();
        let mut b = DistributedNetwork::new(config(url, "B", "b1"))
            .await
            .unwrap();
        let seen = probe(&b, "sink");
        b.start().await.unwrap();
        let mut a = DistributedNetwork::new(config(url, "A", "a1"))
            .await
            .unwrap();
        a.register_local_actor("source", Passthrough, None).unwrap();
        a.start().await.unwrap();
        a.connect_to_network("B").await.unwrap();
        let alias = a.register_remote_actor("sink", "B").await.unwrap();
        let input = common::wire_source_through(&a, &alias, None);
        TappedPair {
            a,
            b,
            input,
            seen,
            tap,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_goes_out_in_batch_envelopes_and_arrives_whole_and_in_order() {
    const N: i64 = 20_000;
    let server = NatsServer::start().await.unwrap();
    let TappedPair {
        mut a,
        mut b,
        input,
        mut seen,
        mut tap,
    } = TappedPair::start(&server.url(), N as usize).await;

    // One message with nothing behind it goes at once, in a plain envelope.
    input.send(Message::Integer(-1)).await.unwrap();
    assert_eq!(
        recv_n(&mut seen, 1, "the lone message").await,
        [Message::Integer(-1)]
    );
    let lone = tap.next().await.unwrap();
    reflow_network::message::Envelope::decode(&lone.payload).expect("a plain envelope");

    // A backlog: the proxy takes what waits in its inbox together.
    let feeder = common::feed(input, 0..N, Message::Integer);
    let expected: Vec<Message> = (0..N).map(Message::Integer).collect();
    let got = recv_n(&mut seen, N as usize, "the backlog").await;
    feeder.await.unwrap();
    assert!(
        got == expected,
        "the receiver's messages are out of order or altered"
    );
    let (on_wire, nats_messages, _) = tapped(&mut tap, N as usize).await;
    assert!(
        on_wire == expected,
        "the envelopes' messages are out of order or altered"
    );
    assert!(
        nats_messages < N as usize / 2,
        "{N} messages took {nats_messages} NATS messages: the backlog was not batched"
    );
    assert_eq!(b.stats().messages_in, N as u64 + 1);
    assert_eq!(a.stats().messages_out, N as u64 + 1);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_cut_to_the_servers_max_payload() {
    const N: i64 = 3_000;
    const MAX_PAYLOAD: usize = 4096;
    let server = NatsServer::start_with(ServerOptions::new().max_payload(MAX_PAYLOAD))
        .await
        .unwrap();
    let TappedPair {
        mut a,
        mut b,
        input,
        mut seen,
        mut tap,
    } = TappedPair::start(&server.url(), N as usize).await;
    // 700 B each: 64 KiB batches would be far over the server's 4 KiB.
    let message = |i: i64| Message::from(format!("{i:0>700}"));
    let feeder = common::feed(input, 0..N, message);
    let expected: Vec<Message> = (0..N).map(message).collect();
    let got = recv_n(&mut seen, N as usize, "messages under a small max_payload").await;
    feeder.await.unwrap();
    assert!(got == expected, "messages lost, repeated or out of order");
    let (on_wire, nats_messages, largest) = tapped(&mut tap, N as usize).await;
    assert!(on_wire == expected);
    assert!(
        largest <= MAX_PAYLOAD,
        "a {largest}-byte payload passed a {MAX_PAYLOAD}-byte limit"
    );
    assert!(
        nats_messages < N as usize,
        "{nats_messages} NATS messages for {N}: the cut batches should still hold several"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
