//! The streamed and confirmed scenarios on a local three-node cluster, each against raw
//! async-nats on the same cluster in the same run.
//!
//! Network A (and the raw publisher or requester) connects to node 1, network B (and the
//! raw subscriber or responder) to node 2, so every message crosses a route between
//! nodes, as it does between machines of a production cluster; the liveness stream has
//! three replicas. The payload is 128 B for throughput, 16 B for round trips.

use super::latency::{SIZE, confirmed_round_between, pick, quantiles};
use super::throughput::{nats_pair_between, raw_between, through_pair};
use super::{BenchOptions, BenchReport, Compared, median};
use crate::error::Result;
use crate::local_server::{NatsCluster, ServerOptions};

/// The payload of the cluster's throughput rounds.
const STREAM_SIZE: usize = 128;

/// Starts a three-node cluster and measures streamed throughput and confirmed round
/// trips across two of its nodes, against raw async-nats across the same two.
pub(super) async fn measure(options: &BenchOptions, report: &mut BenchReport) -> Result<()> {
    let cluster = NatsCluster::start(3, ServerOptions::default()).await?;
    let urls = cluster.urls();
    let (a_url, b_url) = (&urls[0], &urls[1]);
    let n = options.messages_at(STREAM_SIZE);
    let (mut ours, mut raw, mut dropped) = (Vec::new(), Vec::new(), 0);
    for _ in 0..options.rounds {
        let round = through_pair(nats_pair_between(a_url, b_url, n), STREAM_SIZE, n, None).await?;
        dropped += round.dropped;
        ours.push(round.rate());
        raw.push(
            raw_between(a_url, b_url, STREAM_SIZE, n, None)
                .await?
                .rate(),
        );
    }
    let scenario = "cluster streamed throughput";
    let figure = report
        .add(scenario, Some(STREAM_SIZE), "msgs_per_s", median(ours))
        .against(Compared::RawNats, median(raw), Some((0.9, true)));
    let mut note = "a local three-node cluster: the sender on node 1, the receiver on node 2 \
                    (raw publish and subscribe likewise)"
        .to_string();
    if dropped > 0 {
        note.push_str(&format!(
            "; {dropped} messages were lost to slow-consumer limits and are not counted"
        ));
    }
    figure.note(note);

    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..options.rounds {
        let [o, r] = confirmed_round_between(a_url, b_url, options.round_trips).await?;
        ours.push(quantiles(o));
        raw.push(quantiles(r));
    }
    let targets = [Some((1.15, false)), Some((1.5, false)), None];
    for (i, metric) in ["p50_us", "p99_us", "p999_us"].into_iter().enumerate() {
        report
            .add(
                "cluster confirmed round trip",
                Some(SIZE),
                metric,
                pick(&ours, i),
            )
            .against(Compared::RawNats, pick(&raw, i), targets[i]);
    }
    drop(cluster);
    Ok(())
}
