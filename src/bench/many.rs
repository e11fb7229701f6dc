//! Many networks in one process: how long they take to start, the heap and server
//! subscriptions they hold, and the CPU they use at rest with a 1 s heartbeat, against a
//! raw async-nats client holding as many subscriptions.
//!
//! CPU is the process's user and system time ([`libc::getrusage`]) over a quiet window,
//! as a share of one core; the server's subscriptions are read from its monitoring
//! endpoint (`/subsz`), so this scenario needs the server the benchmark starts itself.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::heap::Window;
use super::support::{broker, unique};
use super::{BenchOptions, BenchReport, Compared};
use crate::components::Sink;
use crate::distributed_network::{DistributedConfig, DistributedNetwork};
use crate::error::{Error, ErrorKind, Result};

/// The heartbeat the fleet runs with, as the target states it.
const HEARTBEAT_MS: u64 = 1_000;

/// Networks started at once.
const STARTING_AT_ONCE: usize = 16;

/// How long the fleet runs before its CPU is measured: every heartbeat timer has ticked.
const SETTLE: Duration = Duration::from_secs(3);

/// The process's user and system CPU time so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct it is given and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// The share of one core this process uses over `window`, in percent.
async fn cpu_percent(window: Duration) -> f64 {
    let (cpu, wall) = (cpu_time(), Instant::now());
    tokio::time::sleep(window).await;
    100.0 * (cpu_time() - cpu).as_secs_f64() / wall.elapsed().as_secs_f64()
}

/// The subscriptions the server holds, from its monitoring endpoint.
async fn server_subscriptions(monitoring: &str) -> Result<u64> {
    let failed = |what: String| Error::new(ErrorKind::Io, format!("{monitoring}/subsz: {what}"));
    let address = monitoring.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let request = format!("GET /subsz HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let text = String::from_utf8_lossy(&response);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .ok_or_else(|| failed("no body".into()))?;
    let value: serde_json::Value = serde_json::from_str(body).map_err(|e| failed(e.to_string()))?;
    value["num_subscriptions"]
        .as_u64()
        .ok_or_else(|| failed("no num_subscriptions".into()))
}

/// Measures `options.many_networks` networks in this process.
pub(super) async fn measure(
    url: &str,
    monitoring: Option<&str>,
    options: &BenchOptions,
    report: &mut BenchReport,
) -> Result<()> {
    let Some(monitoring) = monitoring else {
        report.skipped.push(
            "many networks in one process: needs the server the benchmark starts (its \
             monitoring endpoint counts subscriptions); run without --nats-url"
                .into(),
        );
        return Ok(());
    };
    let count = options.many_networks.max(1);
    let window = Duration::from_secs(options.idle_window_s.max(1));
    let heap = Window::open();
    let subscriptions_before = server_subscriptions(monitoring).await?;

    if let Some(heap) = &heap {
        heap.restart();
    }
    let started = Instant::now();
    let prefix = unique("bench_many");
    let fleet: Vec<DistributedNetwork> = futures::stream::iter(0..count)
        .map(|i| {
            let config = DistributedConfig {
                network_id: format!("{prefix}_{i:04}"),
                instance_id: "m".into(),
                discovery_endpoints: vec![url.into()],
                heartbeat_interval_ms: HEARTBEAT_MS,
                ..DistributedConfig::default()
            };
            async move {
                let mut network = DistributedNetwork::new(config).await?;
                network.register_local_actor("target", Sink, None)?;
                network.start().await?;
                Ok::<_, Error>(network)
            }
        })
        .buffer_unordered(STARTING_AT_ONCE)
        .try_collect()
        .await?;
    let start_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let heap_mib = match &heap {
        Some(heap) => Some(heap.settled().await as f64 / (1024.0 * 1024.0)),
        None => None,
    };
    let held = server_subscriptions(monitoring)
        .await?
        .saturating_sub(subscriptions_before);
    let entry_bytes = fleet
        .first()
        .and_then(|n| {
            let id = &n.get_config().network_id;
            n.live_networks().into_iter().find(|i| &i.network_id == id)
        })
        .and_then(|info| serde_json::to_vec(&info).ok())
        .map_or(0, |entry| entry.len());
    let ours = cpu_percent(window).await;
    futures::stream::iter(fleet)
        .for_each_concurrent(STARTING_AT_ONCE * 4, |mut network| async move {
            let _ = network.shutdown().await;
        })
        .await;

    // The baseline: one raw client holding as many subscriptions, at rest.
    let raw = async_nats::connect(url).await.map_err(broker)?;
    let raw_prefix = unique("bench.many");
    let mut subscribers = Vec::with_capacity(held as usize);
    for i in 0..held {
        subscribers.push(
            raw.subscribe(format!("{raw_prefix}.{i}"))
                .await
                .map_err(broker)?,
        );
    }
    raw.flush().await.map_err(broker)?;
    tokio::time::sleep(SETTLE).await;
    let theirs = cpu_percent(window).await;
    drop(subscribers);
    drop(raw);

    report
        .add("many networks", None, "idle_cpu_percent_of_a_core", ours)
        .against(Compared::RawNats, theirs, None)
        .networks(count)
        .note(format!(
            "CPU of this process over {window:?} at rest, {count} started networks with one \
             actor and a {HEARTBEAT_MS} ms heartbeat (target: under 5 % of one core), against \
             one raw client holding the same {held} subscriptions"
        ));
    report
        .add("many networks", None, "start_s", start_s)
        .networks(count)
        .note(format!(
            "time to start {count} networks in one process, {STARTING_AT_ONCE} at a time"
        ));
    report
        .add("many networks", None, "server_subscriptions", held as f64)
        .networks(count)
        .note(format!(
            "subscriptions the server holds for {count} networks sharing one connection \
             ({:.1} each)",
            held as f64 / count as f64
        ));
    report
        .add(
            "many networks",
            None,
            "liveness_entry_bytes",
            entry_bytes as f64,
        )
        .networks(count)
        .note(format!(
            "one network's liveness entry (JSON, one actor), written every heartbeat with \
             its subject and headers (about {} bytes more) and delivered to the watcher of \
             every process",
            "$KV.reflow_liveness.".len() + 40
        ));
    if let Some(heap_mib) = heap_mib {
        report
            .add("many networks", None, "heap_MiB", heap_mib)
            .networks(count)
            .note(format!(
                "heap held by {count} started networks with one actor, at rest"
            ));
    }
    Ok(())
}
