//! Churn: networks starting and stopping at 50 a second, in a process of their own (a
//! runtime of their own here, so a connection and a liveness watcher of their own), while
//! another process watches. Every one it sees come up it sees leave, once each and in
//! that order; it sees nothing of networks that never ran, no expiry of a network that
//! left, and its roster ends holding exactly the networks still running.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reflow_network::distributed_network::DistributedNetwork;
use reflow_network::events::{DownReason, NetworkEvent};
use reflow_network::local_server::NatsServer;

/// Starts and stops per second.
const RATE: u32 = 50;
/// How long the churn lasts.
const CHURN: Duration = Duration::from_secs(8);
/// How long each churned network lives.
const LIFETIME: Duration = Duration::from_millis(500);
/// The networks left running at the end.
const STAYING: usize = 5;

/// Runs the churn on a runtime of its own; returns the ids it started, in order.
fn churn(url: String) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut started = Vec::new();
            let mut stopping = Vec::new();
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / RATE);
            let begun = Instant::now();
            let mut n = 0;
            while begun.elapsed() < CHURN {
                ticks.tick().await;
                let id = format!("churn_{n:04}");
                n += 1;
                let config = common::config(&url, &id, "c", 1_000);
                let mut network = DistributedNetwork::new(config).await.unwrap();
                network.start().await.unwrap();
                started.push(id);
                stopping.push(tokio::spawn(async move {
                    tokio::time::sleep(LIFETIME).await;
                    network.shutdown().await.unwrap();
                }));
            }
            for stop in stopping {
                stop.await.unwrap();
            }
            started
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_churn_of_fifty_a_second_the_roster_misses_nothing_and_invents_nothing() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let watcher = common::started(common::config(&url, "watcher", "w", 1_000)).await;
    let mut events = watcher.events();
    let mut staying = Vec::new();
    for i in 0..STAYING {
        let mut network =
            DistributedNetwork::new(common::config(&url, &format!("stay_{i}"), "s", 1_000))
                .await
                .unwrap();
        network.use_own_connection(true);
        network.start().await.unwrap();
        staying.push(network);
    }

    let churner = churn(url.clone());
    let started = tokio::task::spawn_blocking(move || churner.join().unwrap())
        .await
        .unwrap();
    assert!(
        started.len() as u32 >= RATE * CHURN.as_secs() as u32 * 9 / 10,
        "only {} networks started in {CHURN:?}",
        started.len()
    );

    // Every churned network: up, then left, once each.
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let all_left = |seen: &HashMap<String, Vec<String>>| {
        started
            .iter()
            .all(|id| seen.get(id).is_some_and(|e| e.iter().any(|x| x == "left")))
    };
    while !all_left(&seen) {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| {
                let missing: Vec<&String> = started
                    .iter()
                    .filter(|id| !seen.get(*id).is_some_and(|e| e.iter().any(|x| x == "left")))
                    .take(5)
                    .collect();
                panic!("no leave seen of {missing:?} (and maybe more)")
            })
            .unwrap();
        let (network, what) = match event {
            NetworkEvent::NetworkUp { network, .. } => (network, "up".to_string()),
            NetworkEvent::NetworkDown {
                network, reason, ..
            } => (
                network,
                match reason {
                    DownReason::Left => "left".into(),
                    other => format!("{other:?}"),
                },
            ),
            NetworkEvent::Lagged { missed } => panic!("the watcher missed {missed} events"),
            _ => continue,
        };
        seen.entry(network).or_default().push(what);
    }
    for id in &started {
        assert_eq!(seen[id], ["up", "left"], "events of {id}");
    }
    let invented: Vec<&String> = seen
        .keys()
        .filter(|id| id.starts_with("churn_") && !started.contains(id))
        .collect();
    assert!(
        invented.is_empty(),
        "events of networks that never ran: {invented:?}"
    );

    // The roster holds exactly what still runs.
    let mut live: Vec<String> = watcher
        .live_networks()
        .into_iter()
        .map(|n| n.network_id)
        .collect();
    live.sort();
    let mut expected: Vec<String> = (0..STAYING).map(|i| format!("stay_{i}")).collect();
    expected.push("watcher".into());
    assert_eq!(live, expected);
    println!(
        "{} networks came and went at {RATE} a second",
        started.len()
    );
}
