//! Failure detection: a network in a child process is killed with SIGKILL, and a peer
//! times how long it takes to hear `NetworkDown` from its liveness watcher.
//!
//! The child is `reflow-bridge run` with a one-node configuration, so what dies is the
//! product as users run it, and nothing of it can say goodbye: the peer learns of the
//! death only when the server expires the entry the child stopped refreshing.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::support::{config, unique};
use super::{BenchOptions, BenchReport, Compared, median};
use crate::distributed_network::DistributedNetwork;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{DownReason, EventStream, NetworkEvent};
use crate::liveness::entry_ttl;

/// How long the child may take to join the broker.
const STARTUP_LIMIT: Duration = Duration::from_secs(30);

fn failed(what: String) -> Error {
    Error::new(ErrorKind::Io, what)
}

/// Kills a victim network `options.rounds` times and reports the median time until a
/// peer saw it down, against the victim's heartbeat interval.
pub(super) async fn measure(
    url: &str,
    program: &Path,
    options: &BenchOptions,
    report: &mut BenchReport,
) -> Result<()> {
    let mut observer = DistributedNetwork::new(config(url, &unique("bench_watch"))).await?;
    let mut events = observer.events();
    observer.start().await?;
    let mut times = Vec::new();
    let mut result = Ok(());
    for _ in 0..options.rounds {
        match one_kill(url, program, options.heartbeat_ms, &mut events).await {
            Ok(elapsed) => times.push(elapsed.as_secs_f64() * 1e3),
            Err(err) => {
                result = Err(err);
                break;
            }
        }
    }
    observer.shutdown().await?;
    result?;
    let ttl = entry_ttl(options.heartbeat_ms);
    report
        .add("failure detection", None, "detect_ms", median(times))
        .against(Compared::Heartbeat, options.heartbeat_ms as f64, None)
        .note(format!(
            "time from SIGKILL to NetworkDown at a peer; the victim is killed as soon as the \
             peer has seen it up, just after its first heartbeat, so this is close to the \
             worst case: the entry's TTL of {} ms (three heartbeats, rounded up to whole \
             seconds)",
            ttl.as_millis()
        ));
    Ok(())
}

/// Starts a victim, waits until the observer knows it, kills it, and times the death.
async fn one_kill(
    url: &str,
    program: &Path,
    heartbeat_ms: u64,
    events: &mut EventStream,
) -> Result<Duration> {
    let victim = unique("bench_victim");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("victim.toml");
    std::fs::write(
        &file,
        format!(
            "[network]\nnetwork_id = \"{victim}\"\ninstance_id = \"victim\"\n\
             heartbeat_interval_ms = {heartbeat_ms}\n\n[[nodes]]\nid = \"sink\"\ncomponent = \"sink\"\n"
        ),
    )?;
    let log = dir.path().join("victim.log");
    let mut child = Command::new(program)
        .arg("run")
        .arg("--config")
        .arg(&file)
        .arg("--json")
        .arg("--nats-url")
        .arg(url)
        .env_remove("REFLOW_AUTH_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot run {}: {e}", program.display())))?;
    wait_running(&mut child, program, &log).await?;
    let deadline = STARTUP_LIMIT;
    wait_event(
        events,
        deadline,
        "the victim's NetworkUp",
        |event| matches!(event, NetworkEvent::NetworkUp { network, .. } if *network == victim),
    )
    .await?;
    child.start_kill()?;
    let killed = Instant::now();
    child.wait().await?;
    let limit = entry_ttl(heartbeat_ms) * 3 + Duration::from_secs(10);
    wait_event(events, limit, "the victim's NetworkDown", |event| {
        matches!(event, NetworkEvent::NetworkDown { network, reason: DownReason::Expired, .. }
            if *network == victim)
    })
    .await?;
    Ok(killed.elapsed())
}

/// Reads the child's stdout until `run` says it is running; fails with its log (stderr)
/// if it exits first.
async fn wait_running(child: &mut Child, program: &Path, log: &Path) -> Result<()> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let running = async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("\"event\":\"running\"") {
                return Ok(true);
            }
        }
        Ok::<_, std::io::Error>(false)
    };
    let started = tokio::time::timeout(STARTUP_LIMIT, running).await;
    if matches!(started, Ok(Ok(true))) {
        return Ok(());
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    let stderr = std::fs::read_to_string(log).unwrap_or_default();
    Err(failed(format!(
        "{} run did not start within {STARTUP_LIMIT:?}: {}",
        program.display(),
        stderr.trim()
    )))
}

async fn wait_event(
    events: &mut EventStream,
    limit: Duration,
    what: &str,
    mut wanted: impl FnMut(&NetworkEvent) -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if wanted(&event) => return Ok(()),
            Ok(Some(_)) => {}
            Ok(None) => return Err(failed(format!("the event stream ended before {what}"))),
            Err(_) => return Err(Error::timeout(format_args!("waiting for {what}"), limit)),
        }
    }
}
