//! Churn: networks starting and stopping at a steady rate in one process, while a
//! watcher on another connection counts what its events say.
//!
//! The churning networks run on a runtime of their own (so on a broker connection and
//! liveness watcher of their own, as in another process); each lives for a moment and
//! shuts down. The watcher should see every one come up and leave, once each and in
//! that order, and nothing else: an event it lacks is *missed*, an event it should not
//! have (a second up, an expiry, a leave before the up, a network that never ran) is a
//! *phantom*. Both should be 0.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::support::{config, unique};
use super::{BenchOptions, BenchReport, Compared};
use crate::distributed_network::DistributedNetwork;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{DownReason, NetworkEvent};

/// How long each churned network lives.
const LIFETIME: Duration = Duration::from_millis(500);

/// How long the watcher may take, after the churn, to hear the last networks leave.
const SETTLE: Duration = Duration::from_secs(20);

/// The heartbeat of the churned networks and the watcher.
const HEARTBEAT_MS: u64 = 1_000;

/// Starts a network every `1 / rate` for `window` on a runtime of its own, each
/// shutting down [`LIFETIME`] after its start; returns the ids started, in order.
fn churn(
    url: String,
    prefix: String,
    rate: u32,
    window: Duration,
) -> std::thread::JoinHandle<Result<Vec<String>>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let mut started = Vec::new();
            let mut stopping = Vec::new();
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
            let begun = Instant::now();
            while begun.elapsed() < window {
                ticks.tick().await;
                let id = format!("{prefix}_{:05}", started.len());
                let mut network =
                    DistributedNetwork::new(crate::distributed_network::DistributedConfig {
                        heartbeat_interval_ms: HEARTBEAT_MS,
                        ..config(&url, &id)
                    })
                    .await?;
                network.start().await?;
                started.push(id);
                stopping.push(tokio::spawn(async move {
                    tokio::time::sleep(LIFETIME).await;
                    network.shutdown().await
                }));
            }
            for stop in stopping {
                stop.await.map_err(|e| {
                    Error::new(
                        ErrorKind::Io,
                        format!("a churned network's stop failed: {e}"),
                    )
                })??;
            }
            Ok(started)
        })
    })
}

/// What the watcher's events said of the churned networks.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    missed: usize,
    phantom: usize,
}

/// Compares what each network's events were with `[up, left]`; events of networks under
/// `prefix` that were never started are phantoms.
fn tally(started: &[String], seen: &HashMap<String, Vec<&'static str>>, prefix: &str) -> Tally {
    let started_set: HashSet<&String> = started.iter().collect();
    let mut tally = Tally::default();
    for id in started {
        let events = seen.get(id).map(Vec::as_slice).unwrap_or_default();
        let ups = events.iter().filter(|e| **e == "up").count();
        let lefts = events.iter().filter(|e| **e == "left").count();
        tally.missed += usize::from(ups == 0) + usize::from(lefts == 0);
        tally.phantom += ups.saturating_sub(1) + lefts.saturating_sub(1);
        tally.phantom += events.iter().filter(|e| **e == "expired").count();
        if ups == 1 && lefts == 1 && events.first() != Some(&"up") {
            tally.phantom += 1;
        }
    }
    for (id, events) in seen {
        if id.starts_with(prefix) && !started_set.contains(id) {
            tally.phantom += events.len();
        }
    }
    tally
}

/// Churns networks at `options.churn_rate` a second for `options.churn_secs` and reports
/// what the watcher missed and invented.
pub(super) async fn measure(
    url: &str,
    options: &BenchOptions,
    report: &mut BenchReport,
) -> Result<()> {
    let mut watcher = DistributedNetwork::new(crate::distributed_network::DistributedConfig {
        heartbeat_interval_ms: HEARTBEAT_MS,
        ..config(url, &unique("bench_churn_watch"))
    })
    .await?;
    let mut events = watcher.events();
    watcher.start().await?;
    let prefix = unique("bench_churn");
    let window = Duration::from_secs(options.churn_secs);
    let churner = churn(url.to_string(), prefix.clone(), options.churn_rate, window);
    let mut seen: HashMap<String, Vec<&'static str>> = HashMap::new();
    let mut lagged = 0;
    let mut take = |event: NetworkEvent, seen: &mut HashMap<String, Vec<&'static str>>| {
        let (network, what) = match event {
            NetworkEvent::NetworkUp { network, .. } => (network, "up"),
            NetworkEvent::NetworkDown {
                network, reason, ..
            } => (
                network,
                match reason {
                    DownReason::Left => "left",
                    DownReason::Expired => "expired",
                },
            ),
            NetworkEvent::Lagged { missed } => {
                lagged += missed;
                return;
            }
            _ => return,
        };
        if network.starts_with(&prefix) {
            seen.entry(network).or_default().push(what);
        }
    };
    // Read while the churn runs, so the watcher's queue never holds more than a moment.
    while !churner.is_finished() {
        if let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(50), events.recv()).await
        {
            take(event, &mut seen);
        }
    }
    let started = churner
        .join()
        .map_err(|_| Error::new(ErrorKind::Io, "the churning thread panicked"))??;
    let deadline = tokio::time::Instant::now() + SETTLE;
    let all_left = |seen: &HashMap<String, Vec<&'static str>>| {
        started
            .iter()
            .all(|id| seen.get(id).is_some_and(|e| e.contains(&"left")))
    };
    while !all_left(&seen) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => take(event, &mut seen),
            _ => break,
        }
    }
    watcher.shutdown().await?;
    let Tally { missed, phantom } = tally(&started, &seen, &prefix);
    let expected = 2.0 * started.len() as f64;
    let rate = started.len() as f64 / window.as_secs_f64().max(f64::EPSILON);
    let scenario = "churn";
    let note = format!(
        "{} networks started and stopped at {rate:.0} a second over {} s, each living {} ms, \
         on their own connection; the watcher on another connection should see each come \
         up and leave, once each ({} events expected){}",
        started.len(),
        options.churn_secs,
        LIFETIME.as_millis(),
        expected,
        if lagged > 0 {
            format!("; the watcher's event stream lagged by {lagged}")
        } else {
            String::new()
        }
    );
    report
        .add(scenario, None, "missed_events", missed as f64)
        .networks(started.len())
        .against(Compared::EventsExpected, expected, Some((0.0, false)))
        .note(note);
    report
        .add(scenario, None, "phantom_events", phantom as f64)
        .networks(started.len())
        .against(Compared::EventsExpected, expected, Some((0.0, false)));
    report
        .add(scenario, None, "networks_per_s", rate)
        .networks(started.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(pairs: &[(&str, &[&'static str])]) -> HashMap<String, Vec<&'static str>> {
        pairs
            .iter()
            .map(|(id, events)| (id.to_string(), events.to_vec()))
            .collect()
    }

    #[test]
    fn up_then_left_once_each_is_neither_missed_nor_phantom() {
        let started = vec!["c_1".to_string(), "c_2".to_string()];
        let all = seen(&[("c_1", &["up", "left"]), ("c_2", &["up", "left"])]);
        assert_eq!(tally(&started, &all, "c_"), Tally::default());
    }

    #[test]
    fn lacking_doubled_out_of_order_expired_and_unknown_events_are_counted() {
        let started = vec!["c_1".into(), "c_2".into(), "c_3".into(), "c_4".into()];
        let all = seen(&[
            ("c_1", &["up"]),
            ("c_2", &["up", "up", "left"]),
            ("c_3", &["left", "up"]),
            ("c_4", &["up", "expired", "left"]),
            ("c_9", &["up"]),
            ("other", &["up"]),
        ]);
        assert_eq!(
            tally(&started, &all, "c_"),
            Tally {
                missed: 1,
                phantom: 4
            }
        );
    }
}
