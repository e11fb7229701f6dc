//! The local actor runtime: graphs in one process, no NATS involved.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use reflow_network::actor::{Actor, ActorContext, FnActor, ProbeActor, ProbeMessage};
use reflow_network::components;
use reflow_network::network::{Connector, InitialPacket, Network, NetworkConfig};
use reflow_network::{ErrorKind, Message, Result};
use tokio::sync::{Semaphore, mpsc};

const WAIT: Duration = Duration::from_secs(10);

async fn recv(rx: &mut mpsc::Receiver<ProbeMessage>) -> ProbeMessage {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a message within the deadline")
        .expect("probe channel open")
}

/// Emits `0..count` on `out` from `start`.
#[derive(Clone)]
struct Source {
    count: i64,
}

#[async_trait]
impl Actor for Source {
    fn inports(&self) -> Vec<String> {
        Vec::new()
    }
    fn outports(&self) -> Vec<String> {
        vec!["out".into()]
    }
    async fn start(&mut self, ctx: &mut ActorContext) -> Result<()> {
        for i in 0..self.count {
            ctx.emit("out", Message::Integer(i)).await?;
        }
        Ok(())
    }
    async fn handle(&mut self, _: &mut ActorContext, _: &str, _: Message) -> Result<()> {
        Ok(())
    }
}

/// Takes one permit from a gate before handling each message, and reports each arrival
/// with whether more messages were queued behind it.
#[derive(Clone)]
struct Gated {
    gate: Arc<Semaphore>,
    arrived: mpsc::UnboundedSender<(i64, bool)>,
}

#[async_trait]
impl Actor for Gated {
    fn inports(&self) -> Vec<String> {
        vec!["in".into()]
    }
    fn outports(&self) -> Vec<String> {
        Vec::new()
    }
    async fn handle(&mut self, ctx: &mut ActorContext, _: &str, m: Message) -> Result<()> {
        let _ = self
            .arrived
            .send((m.as_integer().unwrap(), ctx.more_queued()));
        self.gate.acquire().await.unwrap().forget();
        Ok(())
    }
}

/// A started network whose one node `slow` is [`Gated`]: the network, the gate, what
/// arrived, and the inlet to `slow.in`.
fn gated(
    config: NetworkConfig,
) -> (
    Network,
    Arc<Semaphore>,
    mpsc::UnboundedReceiver<(i64, bool)>,
    reflow_network::network::Inlet,
) {
    let mut net = Network::new(config);
    let gate = Arc::new(Semaphore::new(0));
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    net.register_actor(
        "gated",
        Gated {
            gate: gate.clone(),
            arrived: arrived_tx,
        },
    )
    .unwrap();
    net.add_node("slow", "gated", None).unwrap();
    net.start().unwrap();
    let inlet = net.inlet("slow", "in").unwrap();
    (net, gate, arrived, inlet)
}

fn doubler() -> FnActor {
    FnActor::map("in", "out", |m| {
        Message::Integer(m.as_integer().unwrap() * 2)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_actor_pipeline_carries_100_000_messages_in_order() {
    const N: i64 = 100_000;
    let mut net = Network::new(NetworkConfig::default());
    let (probe, mut seen) = ProbeActor::channel(1024);
    net.register_actor("source", Source { count: N }).unwrap();
    net.register_actor("double", doubler()).unwrap();
    net.register_actor("probe", probe).unwrap();
    net.add_node("src", "source", None).unwrap();
    net.add_node("dbl", "double", None).unwrap();
    net.add_node("out", "probe", None).unwrap();
    net.add_connection(Connector::new("src", "out", "dbl", "in"))
        .unwrap();
    net.add_connection(Connector::new("dbl", "out", "out", "in"))
        .unwrap();
    net.start().unwrap();
    for i in 0..N {
        assert_eq!(recv(&mut seen).await.message, Message::Integer(i * 2));
    }
    net.shutdown().await;
}

#[tokio::test]
async fn a_slow_consumer_makes_the_producer_wait_instead_of_buffering() {
    const CAPACITY: usize = 8;
    let config = NetworkConfig {
        inbox_capacity: CAPACITY,
        ..NetworkConfig::default()
    };
    let (net, gate, mut arrived, inlet) = gated(config);

    // The consumer takes the first message and blocks on the gate.
    inlet.send(Message::Integer(0)).await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, arrived.recv()).await.unwrap(),
        Some((0, false))
    );

    // Its inbox takes exactly CAPACITY more without waiting...
    for i in 1..=CAPACITY as i64 {
        let sent = inlet.send(Message::Integer(i)).now_or_never();
        assert!(matches!(sent, Some(Ok(()))), "send {i} should not wait");
    }
    // ...and the next send waits: nothing is buffered beyond the bound.
    let mut blocked = Box::pin(inlet.send(Message::Integer(CAPACITY as i64 + 1)));
    assert!(
        (&mut blocked).now_or_never().is_none(),
        "a full inbox must make the sender wait"
    );
    assert_eq!(net.in_flight(), CAPACITY + 1);

    // Opening the gate lets everything through, in order, and the waiting send completes.
    gate.add_permits(usize::MAX >> 4);
    tokio::time::timeout(WAIT, blocked).await.unwrap().unwrap();
    for i in 1..=CAPACITY as i64 + 1 {
        let (arrived, _) = tokio::time::timeout(WAIT, arrived.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(arrived, i);
    }
    net.shutdown().await;
}

#[tokio::test]
async fn more_queued_says_whether_a_backlog_waits_behind_a_message() {
    let (net, gate, mut arrived, inlet) = gated(NetworkConfig::default());
    let mut next = async || {
        tokio::time::timeout(WAIT, arrived.recv())
            .await
            .unwrap()
            .unwrap()
    };

    // Alone in the inbox: nothing follows it.
    inlet.send(Message::Integer(0)).await.unwrap();
    assert_eq!(next().await, (0, false));
    // While the actor is held, five more queue up behind it.
    for i in 1..=5 {
        inlet.send(Message::Integer(i)).await.unwrap();
    }
    gate.add_permits(1);
    // Each of the backlog but the last has more behind it.
    for i in 1..=4 {
        assert_eq!(next().await, (i, true));
        gate.add_permits(1);
    }
    assert_eq!(next().await, (5, false));
    gate.add_permits(1);
    // A message sent after the backlog drained is alone again.
    inlet.send(Message::Integer(6)).await.unwrap();
    assert_eq!(next().await, (6, false));
    gate.add_permits(1);
    net.shutdown().await;
}

#[tokio::test]
async fn fan_out_copies_and_fan_in_merges() {
    let mut net = Network::new(NetworkConfig::default());
    let (probe, mut seen) = ProbeActor::channel(64);
    net.register_actor("pass", components::Passthrough).unwrap();
    net.register_actor("probe", probe).unwrap();
    for id in ["a", "b", "c"] {
        net.add_node(id, "pass", None).unwrap();
    }
    net.add_node("p", "probe", None).unwrap();
    // a fans out to b and c; b and c fan in to p.
    net.add_connection(Connector::new("a", "out", "b", "in"))
        .unwrap();
    net.add_connection(Connector::new("a", "out", "c", "in"))
        .unwrap();
    net.add_connection(Connector::new("b", "out", "p", "in"))
        .unwrap();
    net.add_connection(Connector::new("c", "out", "p", "in"))
        .unwrap();
    net.add_initial(InitialPacket::new("a", "in", Message::from("x")))
        .unwrap();
    net.start().unwrap();
    assert_eq!(recv(&mut seen).await.message, Message::from("x"));
    assert_eq!(recv(&mut seen).await.message, Message::from("x"));
    net.shutdown().await;
    assert!(seen.try_recv().is_err(), "exactly two copies arrive");
}

#[tokio::test]
async fn unknown_nodes_components_and_ports_are_named_in_the_error() {
    let mut net = Network::new(NetworkConfig::default());
    net.register_actor("pass", components::Passthrough).unwrap();
    net.add_node("a", "pass", None).unwrap();

    let err = net.add_node("b", "nosuch", None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ActorNotFound);
    assert!(err.to_string().contains("\"nosuch\""), "{err}");

    let err = net
        .add_connection(Connector::new("a", "out", "ghost", "in"))
        .unwrap_err();
    assert!(err.to_string().contains("\"ghost\""), "{err}");

    let err = net
        .add_connection(Connector::new("a", "nope", "a", "in"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PortNotFound);
    assert!(err.to_string().contains("\"nope\""), "{err}");

    let err = net.inlet("a", "wrong").unwrap_err();
    assert!(err.to_string().contains("\"wrong\""), "{err}");

    let err = net.add_node("a", "pass", None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NameConflict);

    let err = net.add_node("bad.name", "pass", None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidName);
    assert!(err.to_string().contains("bad.name"), "{err}");
}

#[tokio::test]
async fn shutdown_finishes_in_flight_messages_and_leaks_no_task() {
    let baseline = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let mut net = Network::new(NetworkConfig {
        inbox_capacity: 4096,
        ..NetworkConfig::default()
    });
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    // A deliberately slow stage, so that messages are still queued when shutdown starts.
    let slow = FnActor::new(["in"], ["out"], move |_, m| {
        std::thread::sleep(Duration::from_micros(200));
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(vec![("out".to_string(), m)])
    });
    let (probe, mut seen) = ProbeActor::channel(4096);
    net.register_actor("slow", slow).unwrap();
    net.register_actor("probe", probe).unwrap();
    net.add_node("s", "slow", None).unwrap();
    net.add_node("p", "probe", None).unwrap();
    net.add_connection(Connector::new("s", "out", "p", "in"))
        .unwrap();
    net.start().unwrap();
    let inlet = net.inlet("s", "in").unwrap();
    for i in 0..2000 {
        inlet.send(Message::Integer(i)).await.unwrap();
    }
    assert!(
        net.in_flight() > 0,
        "the test needs messages in flight at shutdown"
    );
    assert!(net.running_tasks() == 2);

    net.shutdown().await;

    assert_eq!(
        handled.load(Ordering::SeqCst),
        2000,
        "every accepted message was handled"
    );
    let mut got = 0;
    while seen.try_recv().is_ok() {
        got += 1;
    }
    assert_eq!(got, 2000);
    assert_eq!(net.running_tasks(), 0);
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        baseline,
        "no task outlives the network"
    );
    let err = inlet.send(Message::Flow).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Shutdown);
}

#[tokio::test]
async fn shutdown_stops_a_source_that_never_ends_on_its_own() {
    let mut net = Network::new(NetworkConfig::default());
    components::register_builtins(&mut net).unwrap();
    let meta = [("count".to_string(), serde_json::json!(i64::MAX))].into();
    net.add_node("gen", "generator", Some(meta)).unwrap();
    net.add_node("sink", "sink", None).unwrap();
    net.add_connection(Connector::new("gen", "out", "sink", "in"))
        .unwrap();
    net.start().unwrap();
    tokio::time::timeout(WAIT, net.shutdown())
        .await
        .expect("shutdown completes");
    assert_eq!(net.running_tasks(), 0);
}

#[tokio::test]
async fn each_node_keeps_its_own_state_and_sees_its_metadata() {
    #[derive(Clone)]
    struct Tagger;
    #[async_trait]
    impl Actor for Tagger {
        fn inports(&self) -> Vec<String> {
            vec!["in".into()]
        }
        fn outports(&self) -> Vec<String> {
            vec!["out".into()]
        }
        async fn handle(&mut self, ctx: &mut ActorContext, _: &str, _: Message) -> Result<()> {
            let tag = ctx.config("tag").cloned().unwrap_or_default();
            ctx.emit("out", Message::Object(tag)).await
        }
    }
    let mut net = Network::new(NetworkConfig::default());
    components::register_builtins(&mut net).unwrap();
    net.register_actor("tagger", Tagger).unwrap();
    let (probe, mut seen) = ProbeActor::with_ports(["one", "two", "tag"], 16);
    net.register_actor("probe", probe).unwrap();
    net.add_node("c1", "counter", None).unwrap();
    net.add_node("c2", "counter", None).unwrap();
    let meta = [("tag".to_string(), serde_json::json!({"k": "v"}))].into();
    net.add_node("t", "tagger", Some(meta)).unwrap();
    net.add_node("p", "probe", None).unwrap();
    net.add_connection(Connector::new("c1", "count", "p", "one"))
        .unwrap();
    net.add_connection(Connector::new("c2", "count", "p", "two"))
        .unwrap();
    net.add_connection(Connector::new("t", "out", "p", "tag"))
        .unwrap();
    net.start().unwrap();
    for _ in 0..3 {
        net.send_to_actor("c1", "in", Message::Flow).await.unwrap();
    }
    net.send_to_actor("c2", "in", Message::Flow).await.unwrap();
    net.send_to_actor("t", "in", Message::Flow).await.unwrap();
    let mut ones = Vec::new();
    let mut twos = Vec::new();
    let mut tag = None;
    while ones.len() < 3 || twos.is_empty() || tag.is_none() {
        let m = recv(&mut seen).await;
        match m.port.as_str() {
            "one" => ones.push(m.message),
            "two" => twos.push(m.message),
            _ => tag = Some(m.message),
        }
    }
    assert_eq!(
        ones,
        vec![
            Message::Integer(1),
            Message::Integer(2),
            Message::Integer(3)
        ]
    );
    assert_eq!(twos, vec![Message::Integer(1)], "c2 counts for itself");
    assert_eq!(tag, Some(Message::Object(serde_json::json!({"k": "v"}))));
    net.shutdown().await;
}

#[tokio::test]
async fn nodes_added_and_removed_while_running() {
    let mut net = Network::new(NetworkConfig::default());
    components::register_builtins(&mut net).unwrap();
    let (probe, mut seen) = ProbeActor::channel(16);
    net.register_actor("probe", probe).unwrap();
    net.add_node("p", "probe", None).unwrap();
    net.start().unwrap();
    net.add_node("late", "passthrough", None).unwrap();
    net.add_connection(Connector::new("late", "out", "p", "in"))
        .unwrap();
    net.send_to_actor("late", "in", Message::Integer(7))
        .await
        .unwrap();
    assert_eq!(recv(&mut seen).await.message, Message::Integer(7));
    assert_eq!(net.running_tasks(), 2);

    net.remove_node("late").unwrap();
    assert!(!net.has_actor("late"));
    let err = net
        .send_to_actor("late", "in", Message::Flow)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ActorNotFound);
    tokio::time::timeout(WAIT, async {
        while net.running_tasks() != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the removed node's task stops");
    net.shutdown().await;
}

#[tokio::test]
async fn a_failing_handler_is_counted_and_the_node_keeps_running() {
    let mut net = Network::new(NetworkConfig::default());
    let picky = FnActor::new(["in"], ["out"], |_, m| match m {
        Message::Integer(_) => Ok(vec![("out".to_string(), m)]),
        other => Err(reflow_network::Error::new(
            ErrorKind::Actor,
            format!("wants integers, got {}", other.type_name()),
        )),
    });
    let (probe, mut seen) = ProbeActor::channel(16);
    net.register_actor("picky", picky).unwrap();
    net.register_actor("probe", probe).unwrap();
    net.add_node("k", "picky", None).unwrap();
    net.add_node("p", "probe", None).unwrap();
    net.add_connection(Connector::new("k", "out", "p", "in"))
        .unwrap();
    net.start().unwrap();
    net.send_to_actor("k", "in", Message::from("no"))
        .await
        .unwrap();
    net.send_to_actor("k", "in", Message::Integer(1))
        .await
        .unwrap();
    assert_eq!(recv(&mut seen).await.message, Message::Integer(1));
    assert_eq!(net.handler_errors(), 1);
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_added_while_held_start_at_release_with_their_connections_in_place() {
    let mut net = Network::new(NetworkConfig::default());
    components::register_builtins(&mut net).unwrap();
    let (probe, mut seen) = ProbeActor::channel(64);
    net.register_actor("probe", probe).unwrap();
    net.add_node("sink", "probe", None).unwrap();
    net.start().unwrap();
    for round in 0..5 {
        let id = format!("numbers{round}");
        let metadata = [("count".to_string(), serde_json::json!(3))].into();
        net.hold();
        net.add_node(&id, "generator", Some(metadata)).unwrap();
        // Time enough for a started generator to emit into a port with no connection
        // yet, which would drop its numbers: a held one has not started.
        tokio::time::sleep(Duration::from_millis(20)).await;
        net.add_connection(Connector::new(&id, "out", "sink", "in"))
            .unwrap();
        net.release().unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            let message = tokio::time::timeout(Duration::from_secs(5), seen.recv())
                .await
                .expect("the generator's numbers arrive")
                .unwrap();
            got.push(message.message);
        }
        assert_eq!(
            got,
            [0, 1, 2].map(Message::Integer),
            "round {round}: the held generator's numbers"
        );
    }
    net.shutdown().await;
}

/// An `exec` node running `script` (by `/bin/sh -c`) with `timeout_ms`, feeding a probe.
fn exec_network(script: &str, timeout_ms: u64) -> (Network, mpsc::Receiver<ProbeMessage>) {
    let mut net = Network::new(NetworkConfig::default());
    components::register_builtins(&mut net).unwrap();
    let (probe, seen) = ProbeActor::channel(16);
    net.register_actor("probe", probe).unwrap();
    let meta = [
        ("command".to_string(), serde_json::json!(script)),
        ("timeout_ms".to_string(), serde_json::json!(timeout_ms)),
    ]
    .into();
    net.add_node("prog", "exec", Some(meta)).unwrap();
    net.add_node("p", "probe", None).unwrap();
    net.add_connection(Connector::new("prog", "out", "p", "in"))
        .unwrap();
    net.start().unwrap();
    (net, seen)
}

/// Sends `value` into the `exec` node's `in`.
async fn to_prog(net: &Network, value: serde_json::Value) {
    net.send_to_actor("prog", "in", Message::from_json(value))
        .await
        .unwrap();
}

/// Waits until `net` counts `n` failed messages.
async fn handler_errors(net: &Network, n: usize) {
    tokio::time::timeout(WAIT, async {
        while net.handler_errors() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {n} failures", net.handler_errors()));
}

#[tokio::test]
async fn exec_answers_each_message_with_a_json_line_and_empty_lines_emit_nothing() {
    // Echoes objects, answers `null` lines with nothing, doubles numbers.
    let script = r#"while read -r line; do
        case "$line" in
          null) echo ;;
          \{*) echo "$line" ;;
          *) echo $((line * 2)) ;;
        esac
      done"#;
    let (net, mut seen) = exec_network(script, 5_000);
    for value in [
        serde_json::json!(21),
        serde_json::json!(null),
        serde_json::json!({"a": [1, "x"]}),
        serde_json::json!(5),
    ] {
        to_prog(&net, value).await;
    }
    assert_eq!(recv(&mut seen).await.message, Message::Integer(42));
    assert_eq!(
        recv(&mut seen).await.message.to_json(),
        serde_json::json!({"a": [1, "x"]})
    );
    assert_eq!(recv(&mut seen).await.message, Message::Integer(10));
    assert_eq!(net.handler_errors(), 0);
    net.shutdown().await;
}

#[tokio::test]
async fn exec_fails_a_message_the_program_garbles_or_dies_on_and_goes_on_with_the_next() {
    // `bad` gets a line that is not JSON; `die` makes the program exit; the rest doubles.
    let script = r#"while read -r line; do
        case "$line" in
          '"bad"') echo 'not json' ;;
          '"die"') exit 3 ;;
          *) echo $((line * 2)) ;;
        esac
      done"#;
    let (net, mut seen) = exec_network(script, 5_000);
    to_prog(&net, serde_json::json!("bad")).await;
    handler_errors(&net, 1).await;
    to_prog(&net, serde_json::json!(1)).await;
    assert_eq!(recv(&mut seen).await.message, Message::Integer(2));
    to_prog(&net, serde_json::json!("die")).await;
    handler_errors(&net, 2).await;
    // Started again for the next message.
    to_prog(&net, serde_json::json!(4)).await;
    assert_eq!(recv(&mut seen).await.message, Message::Integer(8));
    assert_eq!(net.handler_errors(), 2);
    net.shutdown().await;
}

#[tokio::test]
async fn exec_stops_a_program_that_does_not_answer_in_time() {
    let script = r#"while read -r line; do
        if [ "$line" = '"hang"' ]; then sleep 60; else echo $((line + 1)); fi
      done"#;
    let (net, mut seen) = exec_network(script, 300);
    to_prog(&net, serde_json::json!("hang")).await;
    handler_errors(&net, 1).await;
    to_prog(&net, serde_json::json!(1)).await;
    assert_eq!(recv(&mut seen).await.message, Message::Integer(2));
    net.shutdown().await;
}
