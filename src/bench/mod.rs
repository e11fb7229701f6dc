//! Benchmarks: the bridge measured side by side with raw async-nats doing the same job on
//! the same server, in the same run.
//!
//! Absolute numbers depend on the machine; the ratios to the baseline are what the
//! targets speak of. Each figure is the median of several rounds. The same code serves
//! `reflow-bridge bench`, `cargo bench --bench bridge` and the smoke test.
//!
//! | scenario | measure | compared with |
//! |---|---|---|
//! | streamed throughput, A's inlet → B's actor | msgs/s, MB/s | raw publish → subscribe |
//! | confirmed `send_to_remote_actor` | p50, p99, p999 | raw request → reply |
//! | remote actor call, into B's actor and back out of A's proxy | p50, p99 | — |
//! | direct link throughput, no broker | msgs/s | the broker path |
//! | a slow receiver (1 ms a message) fed as fast as possible | repeats, envelopes sent again | messages sent |
//! | failure detection, SIGKILL of a child network | ms until `NetworkDown` | heartbeat |
//! | discovery with N live networks (each on its own connection, or spread over processes) | latency | — |
//! | memory: a network at rest, a streamed round | heap bytes | raw client, raw pub/sub |
//! | many networks in one process: CPU at rest, start, subscriptions, heap | % of a core | raw client with as many subscriptions |
//! | churn: networks starting and stopping at 50/s, watched from another connection | missed and phantom up/down events | events expected |
//! | a local three-node cluster: streamed (128 B) and confirmed, A and B on different nodes | msgs/s, p50, p99 | raw async-nats across the same nodes |
//!
//! The memory figures count the heap with [`CountingAllocator`], which the binary running
//! the benchmark installs as its global allocator; without it they are skipped.
//!
//! ```no_run
//! use reflow_network::bench::{self, BenchOptions};
//!
//! # #[tokio::main] async fn main() -> reflow_network::Result<()> {
//! let report = bench::run(&BenchOptions::smoke()).await?;
//! println!("{}", report.to_table());
//! # Ok(()) }
//! ```

mod churn;
mod cluster;
mod discovery;
mod durable;
mod failure;
mod heap;
mod latency;
mod many;
mod memory;
mod report;
mod slow;
mod support;
mod throughput;

pub use heap::CountingAllocator;
pub use report::{ASYNC_NATS_VERSION, BenchReport, Compared, Figure, MachineInfo, Versions};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::local_server::NatsServer;

/// One of the measured scenarios, to run a part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Streamed throughput through the broker, against raw publish → subscribe.
    Streamed,
    /// Streamed throughput over a direct link, against the broker path.
    Direct,
    /// Confirmed `send_to_remote_actor` round trips, against raw request → reply.
    Confirmed,
    /// What a receiver that takes 1 ms over each message is sent twice.
    Slow,
    /// A call into a remote actor and back out of its proxy.
    Call,
    /// Time until a peer sees a killed network down.
    Failure,
    /// `discover_networks` with many live networks.
    Discovery,
    /// The heap a network holds at rest and while streaming, against raw clients.
    Memory,
    /// Many networks in one process: CPU at rest, start time, subscriptions, heap.
    Many,
    /// Networks starting and stopping at a steady rate: missed and phantom events.
    Churn,
    /// Streamed and confirmed across the nodes of a local three-node cluster.
    Cluster,
    /// Durable streamed throughput and durable sends, against raw JetStream.
    Durable,
}

impl Scenario {
    /// Every scenario, in the order a run measures them.
    pub const ALL: [Scenario; 12] = [
        Scenario::Streamed,
        Scenario::Direct,
        Scenario::Confirmed,
        Scenario::Slow,
        Scenario::Call,
        Scenario::Failure,
        Scenario::Discovery,
        Scenario::Memory,
        Scenario::Many,
        Scenario::Churn,
        Scenario::Cluster,
        Scenario::Durable,
    ];

    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Streamed => "streamed",
            Scenario::Direct => "direct",
            Scenario::Confirmed => "confirmed",
            Scenario::Slow => "slow",
            Scenario::Call => "call",
            Scenario::Failure => "failure",
            Scenario::Discovery => "discovery",
            Scenario::Memory => "memory",
            Scenario::Many => "many",
            Scenario::Churn => "churn",
            Scenario::Cluster => "cluster",
            Scenario::Durable => "durable",
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|s| s.name() == text.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!("no scenario {text:?}; choose from {}", names.join(", "))
            })
    }
}

/// What to measure, and how much.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchOptions {
    /// An existing server to measure against; `None` starts a local one.
    pub nats_url: Option<String>,
    /// Payload sizes, in bytes.
    pub sizes: Vec<usize>,
    /// Messages per throughput round (at most [`max_round_bytes`](Self::max_round_bytes)
    /// of payload).
    pub messages: usize,
    /// Payload bytes a throughput round sends at most: large payloads send fewer
    /// messages, so a round takes about as long at every size.
    pub max_round_bytes: usize,
    /// Round trips per latency round.
    pub round_trips: usize,
    /// Messages streamed to the slow receiver (1 ms each).
    pub slow_messages: usize,
    /// Rounds per figure; the median is reported.
    pub rounds: usize,
    /// Live network counts at which discovery is timed, each network on a connection of
    /// its own.
    pub discovery_counts: Vec<usize>,
    /// Live network counts at which discovery is timed with the networks spread over
    /// [`discovery_processes`](Self::discovery_processes) processes.
    pub spread_discovery_counts: Vec<usize>,
    /// Processes (threads with runtimes of their own) the spread networks run in.
    pub discovery_processes: usize,
    /// Networks started at once to count the heap each holds at rest.
    pub memory_networks: usize,
    /// Networks started in one process to measure CPU at rest, start time and what they
    /// hold.
    pub many_networks: usize,
    /// How long CPU at rest is measured, in seconds.
    pub idle_window_s: u64,
    /// Networks the churn starts (and stops) a second.
    #[serde(default = "default_churn_rate")]
    pub churn_rate: u32,
    /// How long the churn lasts, in seconds.
    #[serde(default = "default_churn_secs")]
    pub churn_secs: u64,
    /// Heartbeat interval of the network killed to time failure detection, in ms.
    pub heartbeat_ms: u64,
    /// The `reflow-bridge` binary, to run the network that failure detection kills in a
    /// process of its own. `None` skips that scenario.
    pub victim_program: Option<PathBuf>,
    /// The scenarios to run.
    pub scenarios: Vec<Scenario>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            nats_url: None,
            sizes: vec![16, 128, 1024, 16 * 1024],
            messages: 1_000_000,
            max_round_bytes: 512 * 1024 * 1024,
            round_trips: 2_000,
            slow_messages: 5_000,
            rounds: 5,
            discovery_counts: vec![100, 500],
            spread_discovery_counts: vec![1_000, 2_000],
            discovery_processes: 8,
            memory_networks: 20,
            many_networks: 1_000,
            idle_window_s: 10,
            churn_rate: default_churn_rate(),
            churn_secs: default_churn_secs(),
            heartbeat_ms: 1_000,
            victim_program: None,
            scenarios: Scenario::ALL.to_vec(),
        }
    }
}

impl BenchOptions {
    /// A quick run that checks every scenario works end to end (for CI): a few thousand
    /// messages, one round, one size, a small fleet. Its timings mean nothing.
    pub fn smoke() -> Self {
        BenchOptions {
            sizes: vec![128],
            messages: 2_000,
            round_trips: 100,
            slow_messages: 200,
            rounds: 1,
            discovery_counts: vec![5],
            spread_discovery_counts: vec![10],
            discovery_processes: 2,
            memory_networks: 3,
            many_networks: 10,
            idle_window_s: 1,
            churn_secs: 1,
            ..BenchOptions::default()
        }
    }

    /// Messages per throughput round at `size` bytes: [`messages`](Self::messages), or
    /// fewer where that would send more than [`max_round_bytes`](Self::max_round_bytes).
    pub fn messages_at(&self, size: usize) -> usize {
        self.messages.min(self.max_round_bytes / size.max(1)).max(1)
    }
}

fn default_churn_rate() -> u32 {
    50
}

fn default_churn_secs() -> u64 {
    10
}

/// Runs every scenario and reports the figures with their ratios to their baselines.
pub async fn run(options: &BenchOptions) -> Result<BenchReport> {
    run_with_progress(options, &|_| {}).await
}

/// As [`run`], telling `progress` which scenario starts.
pub async fn run_with_progress(
    options: &BenchOptions,
    progress: &dyn Fn(&str),
) -> Result<BenchReport> {
    let started = Instant::now();
    let (server, url) = match &options.nats_url {
        Some(url) => (None, url.clone()),
        None => {
            progress("starting a local nats-server");
            let server = NatsServer::start_with(crate::local_server::ServerOptions {
                monitoring: true,
                ..Default::default()
            })
            .await?;
            let url = server.url();
            (Some(server), url)
        }
    };
    let monitoring = server.as_ref().and_then(NatsServer::monitoring_url);
    let mut report = BenchReport::new(options, &url).await;
    let on = |scenario| options.scenarios.contains(&scenario);
    if on(Scenario::Streamed) || on(Scenario::Direct) {
        for &size in &options.sizes {
            progress(&format!("streamed throughput at {size} B"));
            throughput::measure(&url, size, options, &mut report).await?;
        }
    }
    if on(Scenario::Confirmed) {
        progress("confirmed round trips");
        latency::confirmed(&url, options, &mut report).await?;
    }
    if on(Scenario::Slow) {
        progress("a slow receiver");
        slow::measure(&url, options, &mut report).await?;
    }
    if on(Scenario::Call) {
        progress("remote actor calls");
        latency::remote_call(&url, options, &mut report).await?;
    }
    match (&options.victim_program, on(Scenario::Failure)) {
        (Some(program), true) => {
            progress("failure detection");
            failure::measure(&url, program, options, &mut report).await?;
        }
        (None, true) => report
            .skipped
            .push("failure detection: no reflow-bridge binary to run the victim".into()),
        (_, false) => {}
    }
    if on(Scenario::Discovery) {
        discovery::measure(&url, options, &mut report, progress).await?;
        discovery::measure_spread(&url, options, &mut report, progress).await?;
    }
    if on(Scenario::Memory) {
        progress("memory at rest and while streaming");
        memory::measure(&url, options, &mut report).await?;
    }
    if on(Scenario::Many) {
        progress(&format!(
            "{} networks in one process at rest",
            options.many_networks
        ));
        many::measure(&url, monitoring.as_deref(), options, &mut report).await?;
    }
    if on(Scenario::Churn) {
        progress(&format!(
            "churn: {} networks a second for {} s",
            options.churn_rate, options.churn_secs
        ));
        churn::measure(&url, options, &mut report).await?;
    }
    if on(Scenario::Cluster) {
        progress("streamed and confirmed on a local three-node cluster");
        if let Err(err) = cluster::measure(options, &mut report).await {
            if err.kind() != crate::error::ErrorKind::LocalServer {
                return Err(err);
            }
            report
                .skipped
                .push(format!("three-node cluster: {}", err.detail()));
        }
    }
    if on(Scenario::Durable) {
        progress("durable throughput and sends");
        durable::measure(&url, options, &mut report).await?;
    }
    report.elapsed_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The value at quantile `q` (0 to 1) of sorted `samples`.
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// The median of `values`.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
