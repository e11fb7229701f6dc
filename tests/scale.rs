//! More live networks than a stream's default consumer limit (1,000) on one nats-server,
//! and on a three-node cluster with the liveness stream replicated: 2,000 networks in four
//! OS processes of 500 (this test's process and three children that run this binary again
//! as `child_scale_process`). The liveness stream holds one consumer per process,
//! discovery from any network finds all 2,000, and when one process is killed with
//! SIGKILL the others see its 500 networks expire and keep sending and receiving. On the
//! cluster each process connects to a node of its own first.
//!
//! The size is chosen for a slow two-core machine with one of its cores taken by
//! something else (`.ci/handicap`): past the limit that once refused the 334th network,
//! with a liveness load of `NETWORKS / HEARTBEAT` = 400 writes a second, each delivered to
//! the four processes. The same property at 5,000 networks and more, in a release build,
//! is the bench's (`reflow-bridge bench --only many --many 5000`, and `--only discovery`
//! for networks spread over processes).

mod common;

use common::process::Doomed;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use reflow_network::Message;
use reflow_network::actor::{FnActor, ProbeActor};
use reflow_network::components::Passthrough;
use reflow_network::distributed_network::DistributedNetwork;
use reflow_network::events::{DownReason, NetworkEvent};
use reflow_network::local_server::{NatsCluster, NatsServer, ServerOptions};

const PROCESSES: usize = 4;
const PER_PROCESS: usize = 500;
const HEARTBEAT_MS: u64 = 5_000;

/// How long a started network may take to be seen everywhere, and a killed one to be
/// seen gone: its entry lives three heartbeats, and the watcher reconciles on a timer as
/// well; the rest is room for a loaded machine working through a wave of expiries.
const LIVENESS_BOUND: Duration = Duration::from_millis(3 * HEARTBEAT_MS + 30_000);

/// How long a request may go unanswered while the machine is loaded before the test
/// calls it lost: three of the library's 5 s request timeouts, tried again meanwhile.
const ANSWER_BOUND: Duration = Duration::from_secs(15);

/// Networks started at once in each process.
const STARTING_AT_ONCE: usize = 16;

fn network_id(process: usize, i: usize) -> String {
    format!("s{process}_{i:04}")
}

fn doubler() -> FnActor {
    FnActor::map("in", "out", |m| {
        Message::Integer(m.as_integer().unwrap_or(-1) * 2)
    })
}

/// Starts the `PER_PROCESS` networks of `process`, each hosting `double`; `setup` adds
/// more to network `i` before it starts. Network `i` is at index `i`.
async fn start_fleet(
    urls: &[String],
    process: usize,
    setup: impl Fn(usize, &DistributedNetwork) + Sync,
) -> Vec<DistributedNetwork> {
    let setup = &setup;
    let mut fleet = futures::stream::iter(0..PER_PROCESS)
        .map(|i| async move {
            let mut config = common::config(&urls[0], &network_id(process, i), "i", HEARTBEAT_MS);
            config.discovery_endpoints = urls.to_vec();
            let mut network = DistributedNetwork::new(config).await?;
            network.register_local_actor("double", doubler(), None)?;
            setup(i, &network);
            network.start().await?;
            Ok::<_, reflow_network::Error>(network)
        })
        .buffer_unordered(STARTING_AT_ONCE)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    fleet.sort_by(|a, b| a.get_config().network_id.cmp(&b.get_config().network_id));
    fleet
}

/// The networks of one child process, when this binary is started as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: a child process of the scale test"]
async fn child_scale_process() {
    let Ok(urls) = std::env::var("REFLOW_SCALE_URLS") else {
        return;
    };
    let urls: Vec<String> = urls.split(',').map(str::to_string).collect();
    let process: usize = std::env::var("REFLOW_SCALE_PROCESS")
        .unwrap()
        .parse()
        .unwrap();
    let _fleet = start_fleet(&urls, process, |_, _| {}).await;
    println!("ready");
    std::future::pending::<()>().await;
}

/// A child process of `PER_PROCESS` networks; killed with SIGKILL when dropped.
struct Fleet(Doomed);

impl Fleet {
    fn spawn(urls: &[String], process: usize) -> Self {
        Fleet(Doomed::this_test(
            "child_scale_process",
            &[
                ("REFLOW_SCALE_URLS", urls.join(",")),
                ("REFLOW_SCALE_PROCESS", process.to_string()),
            ],
            true,
        ))
    }

    /// Waits until the child says its networks have all started. Its output is read to
    /// the end: a child whose stdout closed would die on its next line (the test
    /// harness's "running for over 60 seconds", say).
    async fn ready(&mut self, limit: Duration) {
        let stdout = self.0.0.stdout.take().unwrap();
        let (said, ready) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut said = Some(said);
            for line in BufReader::new(stdout).lines().map_while(|line| line.ok()) {
                if line.trim() == "ready"
                    && let Some(said) = said.take()
                {
                    let _ = said.send(());
                }
            }
        });
        let ready = tokio::time::timeout(limit, ready).await;
        let status = self.0.0.try_wait().unwrap();
        assert!(
            matches!(ready, Ok(Ok(()))),
            "a child process did not start its {PER_PROCESS} networks within {limit:?} \
             (exit status: {status:?}; its stderr is above)"
        );
    }

    fn is_running(&mut self) -> bool {
        self.0.0.try_wait().unwrap().is_none()
    }

    fn kill(&mut self) {
        self.0.kill();
    }
}

/// The two scale tests run one after the other: each alone loads a two-core machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_consumer_limit_in_four_processes_networks_hold_one_consumer_each_and_survive_a_kill()
 {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = NatsServer::start().await.unwrap();
    fleets_of_processes(&[server.url()], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_consumer_limit_on_a_three_node_cluster_with_replicated_liveness() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = NatsCluster::start(3, ServerOptions::default())
        .await
        .unwrap();
    cluster.wait_until_formed().await.unwrap();
    fleets_of_processes(&cluster.urls(), 3).await;
}

/// Process `k` lists the servers starting from node `k`, so the processes spread over a
/// cluster's nodes.
fn servers_for(urls: &[String], process: usize) -> Vec<String> {
    let mut rotated = urls.to_vec();
    rotated.rotate_left(process % urls.len());
    rotated
}

async fn fleets_of_processes(urls: &[String], replicas: usize) {
    let url = &urls[0];
    let began = Instant::now();
    let mut children: Vec<Fleet> = (1..PROCESSES)
        .map(|k| Fleet::spawn(&servers_for(urls, k), k))
        .collect();

    // This process is the last of the fleets: its first networks also stream through
    // others' actors.
    const SENDERS: usize = 3;
    let probes = std::sync::Mutex::new(Vec::new());
    let fleet = start_fleet(urls, 0, |i, network| {
        if i < SENDERS {
            network
                .register_local_actor("source", Passthrough, None)
                .unwrap();
            let (probe, seen) = ProbeActor::channel(1_000);
            network.register_local_actor("sink", probe, None).unwrap();
            probes.lock().unwrap().push((i, seen));
        }
    })
    .await;
    let mut probes = probes.into_inner().unwrap();
    probes.sort_by_key(|(i, _)| *i);
    for child in &mut children {
        // Starting is bounded by the machine, not by a setting: ten times what a
        // loaded two-core machine takes.
        child.ready(Duration::from_secs(300)).await;
    }
    println!(
        "{} networks started in {PROCESSES} processes in {:.1?}",
        PROCESSES * PER_PROCESS,
        began.elapsed()
    );
    let observer = &fleet[0];
    let total = PROCESSES * PER_PROCESS;
    common::wait_for(
        "every network in the liveness roster",
        LIVENESS_BOUND,
        || async { observer.live_networks().len() == total },
    )
    .await;

    let (consumers, held) = common::liveness_stream(url).await;
    assert!(
        consumers <= PROCESSES,
        "{consumers} consumers on the liveness stream for {PROCESSES} processes"
    );
    assert_eq!(held, replicas, "replicas of the liveness stream");
    let asked = Instant::now();
    let found = fleet[PER_PROCESS - 1].discover_networks().await.unwrap();
    println!(
        "discover_networks found {} networks in {:.1?}",
        found.len(),
        asked.elapsed()
    );
    assert_eq!(found.len(), total);
    assert!((0..PROCESSES).all(|k| found.iter().any(|n| n.network_id == network_id(k, 7))));

    // SIGKILL one process: the others see its networks expire.
    let mut events = observer.events();
    children.remove(0).kill();
    let killed = Instant::now();
    let mut expired = std::collections::HashSet::new();
    let deadline = killed + LIVENESS_BOUND;
    while expired.len() < PER_PROCESS {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(NetworkEvent::NetworkDown {
                network,
                reason: DownReason::Expired,
                ..
            })) if network.starts_with("s1_") => {
                expired.insert(network);
            }
            Ok(Some(NetworkEvent::Lagged { missed })) => panic!("missed {missed} events"),
            Ok(Some(_)) => {}
            _ => panic!(
                "only {} of {PER_PROCESS} networks of the killed process expired within \
                 {LIVENESS_BOUND:?} (three heartbeats of {HEARTBEAT_MS} ms, and room)",
                expired.len()
            ),
        }
    }
    println!(
        "{PER_PROCESS} networks of the killed process expired after {:.1?}",
        killed.elapsed()
    );
    assert_eq!(observer.live_networks().len(), total - PER_PROCESS);
    assert!(
        fleet[PER_PROCESS / 2]
            .live_networks()
            .iter()
            .all(|n| !n.network_id.starts_with("s1_"))
    );

    // The rest keep working: streams out to actors of every other process and back,
    // and confirmed sends.
    for (i, seen) in &mut probes {
        let sender = &fleet[*i];
        // source.out goes to a proxy in each surviving child process, and every proxy's
        // out to the sink: each value comes back doubled once from each.
        let mut inlet = None;
        for k in 2..PROCESSES {
            let target = network_id(k, 100 + *i);
            answered(&format!("{target} connected"), || {
                sender.connect_to(&target)
            })
            .await;
            let alias = answered(&format!("double@{target} registered"), || {
                sender.register_remote_actor("double", &target)
            })
            .await;
            inlet = Some(common::wire_source_through(sender, &alias, Some("sink")));
        }
        let feeder = common::feed(inlet.unwrap(), 0..50, Message::Integer);
        let mut got = common::recv_ints(
            seen,
            50 * (PROCESSES - 2),
            LIVENESS_BOUND,
            "doubled values back from the other processes",
        )
        .await;
        feeder.await.unwrap();
        got.sort_unstable();
        let mut expected: Vec<i64> = (0..50).flat_map(|v| vec![v * 2; PROCESSES - 2]).collect();
        expected.sort_unstable();
        assert_eq!(got, expected);
    }
    let (confirming, pinging) = (&fleet[PER_PROCESS - 2], &fleet[PER_PROCESS - 3]);
    for k in 2..PROCESSES {
        let target = network_id(k, PER_PROCESS - 2);
        answered(&format!("{target} connected"), || {
            confirming.connect_to(&target)
        })
        .await;
        answered(&format!("a confirmed send to double@{target}"), || {
            confirming.send_to_remote_actor(&target, "double", "in", Message::Integer(1))
        })
        .await;
        let target = network_id(k, 3);
        answered(&format!("a ping of {target}"), || {
            pinging.ping_network(&target)
        })
        .await;
    }
    assert!(children.iter_mut().all(Fleet::is_running));
}

/// Tries `call` until it succeeds, for at most [`ANSWER_BOUND`]: on a loaded machine one
/// request may miss its 5 s timeout while the survivors work through the expiries of a
/// killed process, and that is not the failure this test looks for; no answer for three
/// timeouts in a row is.
async fn answered<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = reflow_network::Result<T>>,
{
    let deadline = Instant::now() + ANSWER_BOUND;
    loop {
        match call().await {
            Ok(value) => return value,
            Err(e) if Instant::now() < deadline => {
                println!("{what}: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{what}: no success within {ANSWER_BOUND:?}; the last error: {e}"),
        }
    }
}
