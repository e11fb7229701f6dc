//! Nothing accepted is lost when an instance dies.
//!
//! A three-network pipeline A -> B -> C: A (a generator of 50,000 integers) and every
//! instance of B (a passthrough) run as OS processes of their own (`reflow-bridge run`);
//! C runs in the test and records what arrives. Mid-stream, at full speed, one B instance
//! is killed with SIGKILL (and, in one test, started again with the same instance id).
//! Every run must deliver every value to C; the duplicates that reach C are counted, must
//! each be marked redelivered, and stay within one sender window, as the README says.
//! Each test repeats its scenario several times: a fault that shows once in a few runs
//! is a bug.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::process::{Process, passthrough_b};

use reflow_network::Message;
use reflow_network::actor::ProbeActor;
use reflow_network::distributed_network::DistributedNetwork;
use reflow_network::events::NetworkEvent;
use reflow_network::local_server::NatsServer;

/// Values A sends.
const VALUES: i64 = 50_000;

/// C must have this many values before an instance is killed.
const KILL_AFTER: usize = 10_000;

/// A's window, in bytes: what it may leave unhandled at any time.
const WINDOW_BYTES: usize = 64 * 1024;

/// Every integer message takes at least this many bytes in an envelope (a one-key map,
/// the key "Integer", and the number), and an envelope holds at most 128 messages; so
/// A never has more than this many messages unhandled, and no more can be sent twice.
const MOST_DUPLICATES: usize = WINDOW_BYTES / 10 + 128;

/// How long a stream may make no progress at C before the run counts as stalled.
const STALL: Duration = Duration::from_secs(20);

/// How long after the kill every value must be at C: the dead instance's liveness entry
/// expires within three heartbeats (3 s here), what it held goes again at once, a
/// restarted instance is probed as soon as it appears, and what was lost in flight goes
/// again within a retransmission timeout (at most 30 s, about 1 s here).
const RECOVERED_WITHIN: Duration = Duration::from_secs(15);

/// What C received in one run: every value with how often it came, and how often it
/// came marked redelivered.
#[derive(Default)]
struct Received {
    copies: HashMap<i64, (u32, u32)>,
    total: usize,
}

impl Received {
    fn distinct(&self) -> usize {
        self.copies.len()
    }

    /// Values that came more than once: (extra copies, extra copies not explained by a
    /// redelivered mark).
    fn duplicates(&self) -> (usize, usize) {
        let mut extra = 0;
        let mut unmarked = 0;
        for (copies, marked) in self.copies.values() {
            if *copies > 1 {
                extra += (*copies - 1) as usize;
                // Of n copies, at most one (the first) may be unmarked.
                unmarked += (*copies - 1).saturating_sub(*marked) as usize;
            }
        }
        (extra, unmarked)
    }
}

/// How one run kills B.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILL one of B's instances; the others carry on.
    KillOne,
    /// SIGKILL B's only instance and start it again with the same instance id.
    KillAndRestart,
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn a_config(dir: &Path, tag: &str) -> std::path::PathBuf {
    write(
        dir,
        "a.toml",
        &format!(
            r#"
[network]
network_id = "A{tag}"
instance_id = "a-1"
heartbeat_interval_ms = 1000

[network.local_network_config]
max_buffer_size = {WINDOW_BYTES}

[[nodes]]
id = "gen"
component = "generator"
metadata = {{ count = {VALUES} }}

[[connections]]
from = "gen.out"
to = "work@B{tag}.in"
"#
        ),
    )
}

/// Waits until C has seen every instance of B named in `instances` come up.
async fn wait_up(
    events: &mut reflow_network::events::EventStream,
    network: &str,
    instances: &[String],
    processes: &[Process],
) {
    let mut missing: Vec<String> = instances.to_vec();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !missing.is_empty() {
        let event = tokio::time::timeout_at(deadline, events.recv()).await;
        let event = match event {
            Ok(Some(event)) => event,
            _ => panic!(
                "{network} instances {missing:?} did not come up\n{}",
                processes
                    .iter()
                    .map(Process::tail)
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        };
        if let NetworkEvent::NetworkUp {
            network: n,
            instance,
        } = event
            && n == network
        {
            missing.retain(|m| *m != instance);
        }
    }
}

/// Drains what C's probe received into `received` until `done` holds or the stream
/// stalls; returns whether `done` held.
async fn collect_until(
    seen: &mut tokio::sync::mpsc::Receiver<reflow_network::actor::ProbeMessage>,
    received: &mut Received,
    done: impl Fn(&Received) -> bool,
) -> bool {
    while !done(received) {
        match tokio::time::timeout(STALL, seen.recv()).await {
            Ok(Some(probe)) => {
                let Message::Integer(value) = probe.message else {
                    panic!("C got {:?}", probe.message);
                };
                let entry = received.copies.entry(value).or_default();
                entry.0 += 1;
                entry.1 += u32::from(probe.redelivered);
                received.total += 1;
            }
            _ => return false,
        }
    }
    true
}

/// One run of the pipeline with `instances` instances of B and `fault`; panics with
/// what went wrong.
async fn pipeline_run(url: &str, tag: &str, instances: usize, fault: Fault) {
    let dir = tempfile::tempdir().unwrap();
    let (probe, mut seen) = ProbeActor::channel(4096);
    let mut c = DistributedNetwork::new(common::config(url, &format!("C{tag}"), "c-1", 1000))
        .await
        .unwrap();
    c.register_local_actor("collect", probe, None).unwrap();
    let mut events = c.events();
    c.start().await.unwrap();

    let b_network = format!("B{tag}");
    let names: Vec<String> = (1..=instances).map(|k| format!("b-{k}")).collect();
    let mut bs: Vec<Process> = (1..=instances)
        .map(|k| {
            Process::run(
                url,
                &passthrough_b(dir.path(), tag, k, 0),
                &format!("B b-{k}"),
            )
        })
        .collect();
    wait_up(&mut events, &b_network, &names, &bs).await;
    let mut a = Process::run(url, &a_config(dir.path(), tag), "A");

    let mut received = Received::default();
    let started = Instant::now();
    let reached = collect_until(&mut seen, &mut received, |r| r.distinct() >= KILL_AFTER).await;
    let report = |received: &Received, bs: &[Process], a: &Process| {
        format!(
            "{} of {VALUES} distinct values at C ({} copies)\n{}\n{}",
            received.distinct(),
            received.total,
            bs.iter().map(Process::tail).collect::<Vec<_>>().join("\n"),
            a.tail()
        )
    };
    assert!(
        reached,
        "stalled before the kill: {}",
        report(&received, &bs, &a)
    );

    bs[0].kill();
    let killed_at = Instant::now();
    if let Fault::KillAndRestart = fault {
        bs[0] = Process::run(
            url,
            &passthrough_b(dir.path(), tag, 1, 0),
            "B b-1 (restarted)",
        );
    }
    let complete = collect_until(&mut seen, &mut received, |r| r.distinct() as i64 >= VALUES).await;
    assert!(
        complete,
        "{fault:?} with {instances} instance(s): the stream stalled for {STALL:?}, values were lost: {}",
        report(&received, &bs, &a)
    );
    assert!(
        killed_at.elapsed() < RECOVERED_WITHIN,
        "{fault:?}: took {:.1?} after the kill to deliver everything",
        killed_at.elapsed()
    );
    let (extra, unmarked) = received.duplicates();
    eprintln!(
        "run {tag}: {fault:?}, {instances} instance(s): all {VALUES} values at C in {:.1?} \
         ({:.1?} after the kill), {extra} duplicates",
        started.elapsed(),
        killed_at.elapsed()
    );
    assert_eq!(
        unmarked,
        0,
        "duplicates that were not marked redelivered: {}",
        report(&received, &bs, &a)
    );
    assert!(
        extra <= MOST_DUPLICATES,
        "{extra} duplicates, more than one window of A ({MOST_DUPLICATES})"
    );
    assert!(received.copies.keys().all(|v| (0..VALUES).contains(v)));
    a.kill();
    for b in &mut bs {
        b.kill();
    }
    c.shutdown().await.unwrap();
}

/// The runs of one scenario; each uses its own network ids on one server.
async fn runs(scenario: &str, instances: usize, fault: Fault, count: usize) {
    let server = NatsServer::start().await.unwrap();
    for run in 0..count {
        pipeline_run(&server.url(), &format!("{scenario}{run}"), instances, fault).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_instances_mid_stream_loses_nothing_in_five_runs() {
    runs("two", 2, Fault::KillOne, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_instances_mid_stream_loses_nothing_in_five_runs() {
    runs("three", 3, Fault::KillOne, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_only_instance_and_restarting_it_loses_nothing_and_does_not_stall_in_five_runs()
{
    runs("restart", 1, Fault::KillAndRestart, 5).await;
}

/// A caller that dies with outputs of the actor it called still on their way back to it
/// does not stall that actor: once the caller's liveness entry expires, what was to go
/// back to it is given up, and other callers are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_killed_mid_stream_does_not_stall_the_actor_it_called() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    // B returns its outputs one envelope at a time: with the caller dead, the second
    // one has nowhere to go until the stream gives up on it.
    let mut b_config = common::config(&url, "Bcall", "b-1", 1000);
    b_config.local_network_config.max_buffer_size = 1;
    let mut b = DistributedNetwork::new(b_config).await.unwrap();
    b.register_local_actor("work", reflow_network::components::Passthrough, None)
        .unwrap();
    let mut b_events = b.events();
    b.start().await.unwrap();

    let a_file = dir.path().join("a.toml");
    std::fs::write(
        &a_file,
        r#"
[network]
network_id = "Acall"
instance_id = "a-1"
heartbeat_interval_ms = 1000

[[nodes]]
id = "gen"
component = "generator"
metadata = { count = 1000000 }

[[connections]]
from = "gen.out"
to = "work@Bcall.in"
"#,
    )
    .unwrap();
    let mut a = Process::run(&url, &a_file, "A");
    common::wait_for("B to work for A", Duration::from_secs(30), || async {
        b.stats().returns_out > 100
    })
    .await;
    a.kill();
    let killed = Instant::now();

    let c = common::started(common::config(&url, "Ccall", "c-1", 1000)).await;
    c.connect_to_network("Bcall").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let sent = c
            .send_to_remote_actor_with_id(
                "Bcall",
                "work",
                "in",
                Message::Integer(7),
                "after-the-kill",
            )
            .await;
        match sent {
            Ok(()) => break,
            Err(err) => assert!(
                Instant::now() < deadline,
                "B was still stalled {:.1?} after its caller died ({attempts} attempts): {err}\n{}",
                killed.elapsed(),
                a.tail()
            ),
        }
    }
    // The caller's death was seen, and that is what freed B.
    let saw_down = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = b_events.recv().await {
            if matches!(&event, NetworkEvent::NetworkDown { network, .. } if network == "Acall") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(saw_down, "B never saw its caller go down");
    eprintln!(
        "B served another caller {:.1?} after the first died ({attempts} attempts)",
        killed.elapsed()
    );
    let mut c = c;
    c.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
