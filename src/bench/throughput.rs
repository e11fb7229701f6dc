//! Streamed throughput: an actor's inlet in network A feeding a remote actor in network B,
//! through the broker and over a direct link, against raw publish → subscribe.

use std::time::{Duration, Instant};

use futures::StreamExt;

use super::support::{CountTo, Pair, ROUND_LIMIT, broker, config, too_slow, unique};
use super::{BenchOptions, BenchReport, Compared, Scenario, median};
use crate::distributed_network::DistributedConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;

/// Sends `n` messages of `size` bytes into the proxy of `pair` and times them until B's
/// actor has counted the last one.
async fn through_pair(
    pair: impl std::future::Future<Output = Result<(Pair, CountTo)>>,
    size: usize,
    n: usize,
) -> Result<Duration> {
    let (pair, counter) = pair.await?;
    let done = counter.done();
    let inlet = pair.a.get_local_network().read().inlet(&pair.alias, "in")?;
    let message = Message::Bytes(vec![0x5a; size].into());
    let finished = done.notified();
    tokio::pin!(finished);
    finished.as_mut().enable();
    let started = Instant::now();
    for _ in 0..n {
        inlet.send(message.clone()).await?;
    }
    tokio::time::timeout(ROUND_LIMIT, finished)
        .await
        .map_err(|_| too_slow("streamed throughput"))?;
    let elapsed = started.elapsed();
    pair.close().await?;
    Ok(elapsed)
}

async fn nats_pair(url: &str, n: usize) -> Result<(Pair, CountTo)> {
    let counter = CountTo::new(n);
    Ok((Pair::over_nats(url, counter.clone()).await?, counter))
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

async fn raw(url: &str, size: usize, n: usize) -> Result<Duration> {
    let subject = unique("bench.raw");
    let receiver = async_nats::ConnectOptions::new()
        .subscription_capacity(n + 1024)
        .connect(url)
        .await
        .map_err(broker)?;
    let mut subscriber = receiver.subscribe(subject.clone()).await.map_err(broker)?;
    receiver.flush().await.map_err(broker)?;
    let sender = async_nats::connect(url).await.map_err(broker)?;
    let subject = async_nats::Subject::from(subject);
    let payload = bytes::Bytes::from(vec![0x5a; size]);
    let counting = tokio::spawn(async move {
        for _ in 0..n {
            if subscriber.next().await.is_none() {
                break;
            }
        }
    });
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
    Ok(started.elapsed())
}

/// Streamed throughput at `size` bytes through the broker, against raw publish/subscribe;
/// and over a direct link, against the broker path.
pub(super) async fn measure(
    url: &str,
    size: usize,
    options: &BenchOptions,
    report: &mut BenchReport,
) -> Result<()> {
    let n = options.messages;
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let streamed = options.scenarios.contains(&Scenario::Streamed);
    let direct = options.scenarios.contains(&Scenario::Direct);
    let (mut ours, mut raw_rates, mut direct_rates) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.rounds {
        ours.push(rate(through_pair(nats_pair(url, n), size, n).await?));
        if streamed {
            raw_rates.push(rate(raw(url, size, n).await?));
        }
        if direct {
            direct_rates.push(rate(through_pair(direct_pair(n), size, n).await?));
        }
    }
    let ours = median(ours);
    if streamed {
        let raw_rate = median(raw_rates);
        let target = (size == 128).then_some((0.9, true));
        let scenario = "streamed throughput";
        report
            .add(scenario, Some(size), "msgs_per_s", ours)
            .against(Compared::RawNats, raw_rate, target);
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
