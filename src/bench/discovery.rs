//! Discovery at scale: `discover_networks` with many live networks on one server.
//!
//! The networks run in this process, each with a broker connection of its own
//! ([`DistributedNetwork::use_own_connection`]), so each answers discovery on its own as
//! networks in separate processes would (networks that share a process answer in one
//! reply). They are started a few at a time, and the fleet grows from one count to the
//! next, so 500 includes the first 100.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use super::support::{config, unique};
use super::{BenchOptions, BenchReport, median};
use crate::distributed_network::{DistributedConfig, DistributedNetwork};
use crate::error::{Error, ErrorKind, Result};

/// Networks started at once while the fleet grows.
const STARTING_AT_ONCE: usize = 8;

/// Heartbeat of the fleet: slow, so that 500 watchers hearing 500 heartbeats do not load
/// the machine while discovery is timed.
const FLEET_HEARTBEAT_MS: u64 = 60_000;

/// How long the observer may take to see every fleet member in its liveness roster.
const ROSTER_LIMIT: Duration = Duration::from_secs(60);

fn fleet_config(url: &str, prefix: &str, i: usize) -> DistributedConfig {
    DistributedConfig {
        instance_id: "f".into(),
        heartbeat_interval_ms: FLEET_HEARTBEAT_MS,
        ..config(url, &format!("{prefix}_{i:04}"))
    }
}

async fn start_one(config: DistributedConfig) -> Result<DistributedNetwork> {
    let mut network = DistributedNetwork::new(config).await?;
    network.use_own_connection(true);
    network.start().await?;
    Ok(network)
}

/// Times `discover_networks` for every count in `options.discovery_counts`.
pub(super) async fn measure(
    url: &str,
    options: &BenchOptions,
    report: &mut BenchReport,
    progress: &dyn Fn(&str),
) -> Result<()> {
    let prefix = unique("bench_fleet");
    let mut observer = DistributedNetwork::new(config(url, &unique("bench_seek"))).await?;
    observer.start().await?;
    let mut fleet: Vec<DistributedNetwork> = Vec::new();
    let mut counts = options.discovery_counts.clone();
    counts.sort_unstable();
    let mut result = Ok(());
    for count in counts {
        progress(&format!("discovery with {count} live networks"));
        if let Err(err) = grow(url, &prefix, &mut fleet, count).await {
            result = Err(err);
            break;
        }
        match time_discovery(&observer, &prefix, count, options.rounds).await {
            Ok((ms, found)) => {
                report
                    .add("discovery", None, "latency_ms", ms)
                    .networks(count);
                report
                    .add("discovery", None, "networks_found", found as f64)
                    .networks(count);
            }
            Err(err) => {
                result = Err(err);
                break;
            }
        }
    }
    futures::stream::iter(fleet.iter_mut())
        .for_each_concurrent(STARTING_AT_ONCE * 4, |network| async move {
            let _ = network.shutdown().await;
        })
        .await;
    observer.shutdown().await?;
    result
}

/// Starts fleet members until there are `count`.
async fn grow(
    url: &str,
    prefix: &str,
    fleet: &mut Vec<DistributedNetwork>,
    count: usize,
) -> Result<()> {
    let started: Vec<DistributedNetwork> = futures::stream::iter(fleet.len()..count)
        .map(|i| start_one(fleet_config(url, prefix, i)))
        .buffer_unordered(STARTING_AT_ONCE)
        .try_collect()
        .await?;
    fleet.extend(started);
    Ok(())
}

/// The median time of `rounds` discoveries once the observer's roster holds the whole
/// fleet, and how many fleet networks the last discovery found.
async fn time_discovery(
    observer: &DistributedNetwork,
    prefix: &str,
    count: usize,
    rounds: usize,
) -> Result<(f64, usize)> {
    let in_fleet = |networks: &[crate::discovery::NetworkInfo]| {
        networks
            .iter()
            .filter(|n| n.network_id.starts_with(prefix))
            .count()
    };
    let deadline = Instant::now() + ROSTER_LIMIT;
    while in_fleet(&observer.live_networks()) < count {
        if Instant::now() >= deadline {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "the liveness roster did not show {count} networks within {ROSTER_LIMIT:?}"
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut times = Vec::new();
    let mut found = 0;
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        let networks = observer.discover_networks().await?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        found = in_fleet(&networks);
    }
    Ok((median(times), found))
}

/// A stand-in for a process of many networks: a thread with a runtime of its own, so its
/// networks share one connection, one liveness watcher and one discovery responder, as a
/// real process's would.
struct FleetProcess {
    commands: std::sync::mpsc::Sender<(
        Vec<DistributedConfig>,
        tokio::sync::oneshot::Sender<Result<()>>,
    )>,
    thread: std::thread::JoinHandle<()>,
}

impl FleetProcess {
    fn spawn() -> FleetProcess {
        let (commands, inbox) = std::sync::mpsc::channel::<(
            Vec<DistributedConfig>,
            tokio::sync::oneshot::Sender<Result<()>>,
        )>();
        let thread = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let mut fleet: Vec<DistributedNetwork> = Vec::new();
                // An empty list asks the process to stop.
                while let Ok((configs, done)) = inbox.recv() {
                    if configs.is_empty() {
                        for mut network in fleet.drain(..) {
                            let _ = network.shutdown().await;
                        }
                        let _ = done.send(Ok(()));
                        return;
                    }
                    let started: Result<Vec<DistributedNetwork>> = futures::stream::iter(configs)
                        .map(|config| async move {
                            let mut network = DistributedNetwork::new(config).await?;
                            network.start().await?;
                            Ok(network)
                        })
                        .buffer_unordered(STARTING_AT_ONCE)
                        .try_collect()
                        .await;
                    let _ = done.send(started.map(|started| fleet.extend(started)));
                }
            });
        });
        FleetProcess { commands, thread }
    }

    /// Starts `configs` in this process (none: stops every network and the process).
    async fn run(&self, configs: Vec<DistributedConfig>) -> Result<()> {
        let (done, finished) = tokio::sync::oneshot::channel();
        let gone = || Error::new(ErrorKind::Io, "a fleet process of the benchmark stopped");
        self.commands.send((configs, done)).map_err(|_| gone())?;
        finished.await.map_err(|_| gone())?
    }
}

/// Times `discover_networks` with the counts of `options.spread_discovery_counts`, the
/// networks spread over `options.discovery_processes` processes (threads with runtimes
/// of their own), as many networks per process would be deployed.
pub(super) async fn measure_spread(
    url: &str,
    options: &BenchOptions,
    report: &mut BenchReport,
    progress: &dyn Fn(&str),
) -> Result<()> {
    let processes: Vec<FleetProcess> = (0..options.discovery_processes.max(1))
        .map(|_| FleetProcess::spawn())
        .collect();
    let prefix = unique("bench_spread");
    let mut observer = DistributedNetwork::new(config(url, &unique("bench_seek"))).await?;
    observer.start().await?;
    let mut counts = options.spread_discovery_counts.clone();
    counts.sort_unstable();
    let mut running = 0;
    let mut result = Ok(());
    for count in counts {
        progress(&format!(
            "discovery with {count} live networks in {} processes",
            processes.len()
        ));
        let mut share: Vec<Vec<DistributedConfig>> = vec![Vec::new(); processes.len()];
        for i in running..count {
            share[i % processes.len()].push(fleet_config(url, &prefix, i));
        }
        let grown = futures::future::try_join_all(
            processes
                .iter()
                .zip(share)
                .map(|(p, configs)| p.run(configs)),
        )
        .await;
        if let Err(err) = grown {
            result = Err(err);
            break;
        }
        running = count;
        match time_discovery(&observer, &prefix, count, options.rounds).await {
            Ok((ms, found)) => {
                report
                    .add("discovery, spread over processes", None, "latency_ms", ms)
                    .networks(count)
                    .note(format!(
                        "{count} networks in {} processes (each answers discovery once, \
                         for all its networks); target: within 100 ms at 2,000",
                        processes.len()
                    ));
                report
                    .add(
                        "discovery, spread over processes",
                        None,
                        "networks_found",
                        found as f64,
                    )
                    .networks(count);
            }
            Err(err) => {
                result = Err(err);
                break;
            }
        }
    }
    for process in &processes {
        let _ = process.run(Vec::new()).await;
    }
    for process in processes {
        let _ = process.thread.join();
    }
    observer.shutdown().await?;
    result
}
