//! Streamed throughput: an actor's inlet in network A feeding a remote actor in network B,
//! through the broker and over a direct link, against raw publish → subscribe.

use std::time::{Duration, Instant};

use futures::StreamExt;

use super::heap::Window;
use super::support::{CountTo, Pair, ROUND_LIMIT, broker, config, too_slow, unique};
use super::{BenchOptions, BenchReport, Compared, Scenario, median};
use crate::distributed_network::DistributedConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;

/// What one round of streaming measured.
pub(super) struct Round {
    elapsed: Duration,
    delivered: usize,
    /// Messages lost on the way: dropped by B's NATS client because its subscription
    /// buffer was full, or by the server, which cuts a client that falls too far behind.
    pub(super) dropped: u64,
    /// The most heap the round held above what was held as it began, when it was
    /// counted.
    pub(super) peak_heap: Option<isize>,
}

impl Round {
    pub(super) fn rate(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64()
    }
}

/// How often a round checks whether messages were dropped rather than delivered.
const DROP_CHECK: Duration = Duration::from_millis(5);

/// A round in which nothing more arrives or is dropped for this long is over.
const STALL: Duration = Duration::from_secs(2);

/// Sends `n` messages of `size` bytes into the proxy of `pair` and times them until B's
/// actor has counted the last one; with `heap`, counts the heap the round holds.
///
/// Core NATS has no flow control from subscriber back to publisher: when B's client
/// cannot keep up, its subscription buffer overflows and it drops messages (a slow
/// consumer, which the bridge counts), and past the server's own limit the server cuts
/// the connection. Such a round ends once every message has arrived or been counted as
/// dropped, or nothing has moved for [`STALL`], and reports what was lost.
pub(super) async fn through_pair(
    pair: impl std::future::Future<Output = Result<(Pair, CountTo)>>,
    size: usize,
    n: usize,
    heap: Option<&Window>,
) -> Result<Round> {
    let (pair, counter) = pair.await?;
    let done = counter.done();
    let inlet = pair.a.get_local_network().read().inlet(&pair.alias, "in")?;
    let message = Message::Bytes(vec![0x5a; size].into());
    let finished = done.notified();
    tokio::pin!(finished);
    finished.as_mut().enable();
    heap.inspect(|w| w.restart());
    let started = Instant::now();
    for _ in 0..n {
        inlet.send(message.clone()).await?;
    }
    let deadline = started + ROUND_LIMIT;
    let (mut progress, mut progressed) = (0, Instant::now());
    let (dropped, elapsed) = loop {
        tokio::select! {
            _ = &mut finished => break (0, started.elapsed()),
            _ = tokio::time::sleep(DROP_CHECK) => {
                let dropped = pair.b.stats().slow_consumer_drops;
                let accounted = counter.seen() + dropped as usize;
                if accounted >= n {
                    break (dropped, started.elapsed());
                }
                if accounted > progress {
                    (progress, progressed) = (accounted, Instant::now());
                } else if progressed.elapsed() > STALL {
                    // The server cut a client that fell too far behind (its own slow
                    // consumer rule): what it held is gone, uncounted.
                    break ((n - counter.seen()) as u64, progressed - started);
                }
                if Instant::now() > deadline {
                    return Err(too_slow("streamed throughput"));
                }
            }
        }
    };
    let peak_heap = heap.map(Window::peak);
    pair.close().await?;
    Ok(Round {
        elapsed,
        delivered: n - dropped as usize,
        dropped,
        peak_heap,
    })
}

pub(super) async fn nats_pair(url: &str, n: usize) -> Result<(Pair, CountTo)> {
    nats_pair_between(url, url, n).await
}

/// The pair of [`nats_pair`] with A on the server at `a_url` and B on the one at `b_url`.
pub(super) async fn nats_pair_between(
    a_url: &str,
    b_url: &str,
    n: usize,
) -> Result<(Pair, CountTo)> {
    let counter = CountTo::new(n);
    Ok((Pair::between(a_url, b_url, counter.clone()).await?, counter))
}

/// The pair of [`nats_pair`], both with an auth token: every envelope and
/// acknowledgement sealed and checked.
async fn sealed_pair(url: &str, n: usize) -> Result<(Pair, CountTo)> {
    let sealed = |id: &str| DistributedConfig {
        auth_token: Some("bench-token".into()),
        ..config(url, id)
    };
    let b_id = unique("bench_sb");
    let counter = CountTo::new(n);
    let pair = Pair::new(
        sealed(&unique("bench_sa")),
        sealed(&b_id),
        &b_id,
        counter.clone(),
    )
    .await?;
    Ok((pair, counter))
}

/// Two networks with direct listeners and no broker: `discovery_endpoints` names a port
/// where nothing listens, so both run in direct-link mode, and A reaches B by address.
async fn direct_pair(n: usize) -> Result<(Pair, CountTo)> {
    let nowhere = format!("nats://127.0.0.1:{}", free_port()?);
    let direct = |id: &str, port: u16| DistributedConfig {
        bind_address: "127.0.0.1".into(),
        bind_port: port,
        ..config(&nowhere, id)
    };
    let b_port = free_port()?;
    let a = direct(&unique("bench_da"), free_port()?);
    let b = direct(&unique("bench_db"), b_port);
    let counter = CountTo::new(n);
    let endpoint = format!("127.0.0.1:{b_port}");
    Ok((Pair::new(a, b, &endpoint, counter.clone()).await?, counter))
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Raw async-nats: `n` messages of `size` bytes published to a subscriber on another
/// connection whose buffer holds them all, timed until it has the last one; with `heap`,
/// counts the heap the round holds.
pub(super) async fn raw(url: &str, size: usize, n: usize, heap: Option<&Window>) -> Result<Round> {
    raw_between(url, url, size, n, heap).await
}

/// As [`raw`], the publisher on the server at `send_url` and the subscriber on the one at
/// `receive_url`.
pub(super) async fn raw_between(
    send_url: &str,
    receive_url: &str,
    size: usize,
    n: usize,
    heap: Option<&Window>,
) -> Result<Round> {
    let subject = unique("bench.raw");
    let receiver = async_nats::ConnectOptions::new()
        .subscription_capacity(n + 1024)
        .connect(receive_url)
        .await
        .map_err(broker)?;
    let mut subscriber = receiver.subscribe(subject.clone()).await.map_err(broker)?;
    receiver.flush().await.map_err(broker)?;
    let sender = async_nats::connect(send_url).await.map_err(broker)?;
    let subject = async_nats::Subject::from(subject);
    let payload = bytes::Bytes::from(vec![0x5a; size.max(1)]);
    // On a cluster the subscriber's interest reaches the publisher's node a moment later,
    // and what is published before is lost: empty probes go until one arrives (the count
    // skips them, late ones included).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        sender
            .publish(subject.clone(), bytes::Bytes::new())
            .await
            .map_err(broker)?;
        sender.flush().await.map_err(broker)?;
        if let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(20), subscriber.next()).await
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(too_slow("raw throughput (no route to the subscriber)"));
        }
    }
    let counting = tokio::spawn(async move {
        let mut counted = 0;
        while counted < n {
            match subscriber.next().await {
                Some(message) if message.payload.is_empty() => {}
                Some(_) => counted += 1,
                None => break,
            }
        }
    });
    heap.inspect(|w| w.restart());
    let started = Instant::now();
    for _ in 0..n {
        sender
            .publish(subject.clone(), payload.clone())
            .await
            .map_err(broker)?;
    }
    sender.flush().await.map_err(broker)?;
    tokio::time::timeout(ROUND_LIMIT, counting)
        .await
        .map_err(|_| too_slow("raw throughput"))?
        .map_err(|e| Error::new(ErrorKind::Io, format!("counting task failed: {e}")))?;
    Ok(Round {
        elapsed: started.elapsed(),
        delivered: n,
        dropped: 0,
        peak_heap: heap.map(Window::peak),
    })
}

/// Streamed throughput at `size` bytes through the broker, against raw publish/subscribe;
/// and over a direct link, against the broker path.
pub(super) async fn measure(
    url: &str,
    size: usize,
    options: &BenchOptions,
    report: &mut BenchReport,
) -> Result<()> {
    let n = options.messages_at(size);
    let streamed = options.scenarios.contains(&Scenario::Streamed);
    let direct = options.scenarios.contains(&Scenario::Direct);
    let (mut ours, mut raw_rates, mut direct_rates) = (Vec::new(), Vec::new(), Vec::new());
    // Sealing is measured at the size the target speaks of.
    let sealing = streamed && size == 128;
    let mut sealed_rates = Vec::new();
    let mut dropped = 0;
    for _ in 0..options.rounds {
        let round = through_pair(nats_pair(url, n), size, n, None).await?;
        dropped += round.dropped;
        ours.push(round.rate());
        if streamed {
            raw_rates.push(raw(url, size, n, None).await?.rate());
        }
        if direct {
            direct_rates.push(through_pair(direct_pair(n), size, n, None).await?.rate());
        }
        if sealing {
            sealed_rates.push(
                through_pair(sealed_pair(url, n), size, n, None)
                    .await?
                    .rate(),
            );
        }
    }
    let ours = median(ours);
    if streamed {
        let raw_rate = median(raw_rates);
        let target = (size == 128).then_some((0.9, true));
        let scenario = "streamed throughput";
        let figure = report
            .add(scenario, Some(size), "msgs_per_s", ours)
            .against(Compared::RawNats, raw_rate, target);
        if dropped > 0 {
            figure.note(format!(
                "{dropped} of {} messages were lost to slow-consumer limits (the sender \
                 outran the receiver; core NATS has no flow control); the rate counts \
                 delivered messages only",
                n * options.rounds
            ));
        }
        if sealing {
            report
                .add(
                    "streamed throughput, sealed (auth_token)",
                    Some(size),
                    "msgs_per_s",
                    median(sealed_rates),
                )
                .against(Compared::RawNats, raw_rate, Some((0.9, true)))
                .note(
                    "both networks with an auth token: every envelope sealed with an \
                     HMAC-SHA256 tag by the sender and checked by the receiver"
                        .into(),
                );
        }
        let mb = |rate: f64| rate * size as f64 / 1e6;
        report
            .add(scenario, Some(size), "MB_per_s", mb(ours))
            .against(Compared::RawNats, mb(raw_rate), None);
    }
    if direct {
        report
            .add(
                "direct link throughput",
                Some(size),
                "msgs_per_s",
                median(direct_rates),
            )
            .against(Compared::NatsPath, ours, Some((1.0, true)));
    }
    Ok(())
}
