//! Memory: the heap a network holds at rest, and the most a streamed round holds, each
//! against raw async-nats doing the same job in the same process.
//!
//! Both are counted by [`CountingAllocator`](super::CountingAllocator): bytes allocated
//! and not yet freed, which is what the bridge's buffers and state cost, free of how the
//! system allocator happens to hand memory back to the operating system.

use futures::{StreamExt, TryStreamExt};

use super::heap::Window;
use super::support::{broker, config, unique};
use super::throughput::{nats_pair, raw, through_pair};
use super::{BenchOptions, BenchReport, Compared, median};
use crate::components::Sink;
use crate::distributed_network::DistributedNetwork;
use crate::error::Result;

/// The payload size of the streamed rounds.
const SIZE: usize = 128;

/// Networks (and raw clients) started at once.
const STARTING_AT_ONCE: usize = 8;

fn kib(bytes: isize) -> f64 {
    bytes as f64 / 1024.0
}

fn mib(bytes: isize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Reports both memory figures, or says they were skipped when the heap is not counted.
pub(super) async fn measure(
    url: &str,
    options: &BenchOptions,
    report: &mut BenchReport,
) -> Result<()> {
    let Some(window) = Window::open() else {
        report.skipped.push(
            "memory: this binary does not count its heap (install \
             reflow_network::bench::CountingAllocator as its #[global_allocator])"
                .into(),
        );
        return Ok(());
    };
    let count = options.memory_networks.max(1);
    window.restart();
    let raw_clients = clients(url, count).await?;
    let theirs = window.settled().await / count as isize;
    drop(raw_clients);
    window.settled().await;
    window.restart();
    let fleet = networks(url, count).await?;
    let ours = window.settled().await / count as isize;
    stop(fleet).await;
    window.settled().await;
    report
        .add("memory at rest", None, "heap_KiB_per_network", kib(ours))
        .against(Compared::RawNats, kib(theirs), None)
        .networks(count)
        .note(format!(
            "heap held by each of {count} started networks with one actor in one process, \
             against a raw client with one subscription: the network's share of the \
             process's connection, liveness watcher and roster, its five subscriptions, its \
             bridge and its local graph"
        ));

    let n = options.messages_at(SIZE);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..options.rounds {
        let round = through_pair(nats_pair(url, n), SIZE, n, Some(&window)).await?;
        ours.push(mib(round.peak_heap.unwrap_or_default()));
        let round = raw(url, SIZE, n, Some(&window)).await?;
        theirs.push(mib(round.peak_heap.unwrap_or_default()));
    }
    report
        .add(
            "memory while streaming",
            Some(SIZE),
            "peak_heap_MiB",
            median(ours),
        )
        .against(Compared::RawNats, median(theirs), None)
        .note(format!(
            "the most heap a streamed round of {n} messages held above where it began: \
             the bridge's bounded inboxes, and the sender's window of unacknowledged \
             envelopes (max_buffer_size), which bounds what the receiving client buffers; \
             against raw publish to a subscriber whose buffer holds every message it has \
             not yet taken"
        ));
    Ok(())
}

/// Shuts every network of `fleet` down.
async fn stop(fleet: Vec<DistributedNetwork>) {
    futures::stream::iter(fleet)
        .for_each_concurrent(STARTING_AT_ONCE * 4, |mut network| async move {
            let _ = network.shutdown().await;
        })
        .await;
}

/// `count` started networks, each with one actor.
async fn networks(url: &str, count: usize) -> Result<Vec<DistributedNetwork>> {
    let prefix = unique("bench_mem");
    futures::stream::iter(0..count)
        .map(|i| {
            let config = config(url, &format!("{prefix}_{i:04}"));
            async move {
                let mut network = DistributedNetwork::new(config).await?;
                network.register_local_actor("target", Sink, None)?;
                network.start().await?;
                Ok(network)
            }
        })
        .buffer_unordered(STARTING_AT_ONCE)
        .try_collect()
        .await
}

/// `count` raw clients, each subscribed to a subject of its own.
async fn clients(
    url: &str,
    count: usize,
) -> Result<Vec<(async_nats::Client, async_nats::Subscriber)>> {
    let prefix = unique("bench.mem");
    futures::stream::iter(0..count)
        .map(|i| {
            let subject = format!("{prefix}.{i}.*.*");
            async move {
                let client = async_nats::connect(url).await.map_err(broker)?;
                let subscriber = client.subscribe(subject).await.map_err(broker)?;
                client.flush().await.map_err(broker)?;
                Ok((client, subscriber))
            }
        })
        .buffer_unordered(STARTING_AT_ONCE)
        .try_collect()
        .await
}
