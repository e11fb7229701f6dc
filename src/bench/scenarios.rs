//! The scenarios, each measured through the bridge and through raw async-nats.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::Notify;

use super::{BenchOptions, BenchReport, median, quantile};
use crate::actor::{Actor, ActorContext, ProbeActor};
use crate::components::Passthrough;
use crate::distributed_network::{DistributedConfig, DistributedNetwork};
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::network::Connector;

/// How long one round may take before the benchmark gives up on it.
const ROUND_LIMIT: Duration = Duration::from_secs(60);

/// Counts what arrives and wakes the benchmark when the count is reached.
#[derive(Clone)]
struct CountTo {
    seen: Arc<AtomicUsize>,
    target: usize,
    done: Arc<Notify>,
}

#[async_trait]
impl Actor for CountTo {
    fn inports(&self) -> Vec<String> {
        vec!["in".into()]
    }
    fn outports(&self) -> Vec<String> {
        Vec::new()
    }
    async fn handle(&mut self, _ctx: &mut ActorContext, _port: &str, _m: Message) -> Result<()> {
        if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.done.notify_one();
        }
        Ok(())
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

async fn network(url: &str, id: &str) -> Result<DistributedNetwork> {
    DistributedNetwork::new(DistributedConfig {
        network_id: id.into(),
        instance_id: "bench".into(),
        discovery_endpoints: vec![url.into()],
        heartbeat_interval_ms: 5_000,
        ..DistributedConfig::default()
    })
    .await
}

fn too_slow(what: &str) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("benchmark round {what} did not finish within {ROUND_LIMIT:?}"),
    )
}

fn broker(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::Broker, "benchmark client failed", e)
}

/// A pair of networks, `a` using actor `actor` of `b` through a proxy.
struct Pair {
    a: DistributedNetwork,
    b: DistributedNetwork,
    alias: String,
}

impl Pair {
    async fn new(url: &str, actor: impl Actor + Clone) -> Result<Self> {
        let b_id = unique("bench_b");
        let mut b = network(url, &b_id).await?;
        b.register_local_actor("target", actor, None)?;
        b.start().await?;
        let mut a = network(url, &unique("bench_a")).await?;
        a.start().await?;
        a.connect_to_network(&b_id).await?;
        let alias = a.register_remote_actor("target", &b_id).await?;
        Ok(Pair { a, b, alias })
    }

    async fn close(mut self) -> Result<()> {
        self.a.shutdown().await?;
        self.b.shutdown().await
    }
}

async fn bridge_throughput(url: &str, size: usize, n: usize) -> Result<Duration> {
    let counter = CountTo {
        seen: Arc::new(AtomicUsize::new(0)),
        target: n,
        done: Arc::new(Notify::new()),
    };
    let done = counter.done.clone();
    let pair = Pair::new(url, counter).await?;
    let inlet = pair.a.get_local_network().read().inlet(&pair.alias, "in")?;
    let message = Message::Bytes(vec![0x5a; size].into());
    let started = Instant::now();
    let finished = done.notified();
    tokio::pin!(finished);
    finished.as_mut().enable();
    for _ in 0..n {
        inlet.send(message.clone()).await?;
    }
    tokio::time::timeout(ROUND_LIMIT, finished)
        .await
        .map_err(|_| too_slow("bridge throughput"))?;
    let elapsed = started.elapsed();
    pair.close().await?;
    Ok(elapsed)
}

async fn raw_throughput(url: &str, size: usize, n: usize) -> Result<Duration> {
    let subject = unique("bench.raw");
    let receiver = async_nats::ConnectOptions::new()
        .subscription_capacity(n + 1024)
        .connect(url)
        .await
        .map_err(broker)?;
    let mut subscriber = receiver.subscribe(subject.clone()).await.map_err(broker)?;
    receiver.flush().await.map_err(broker)?;
    let sender = async_nats::connect(url).await.map_err(broker)?;
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

/// Streamed throughput, actor in A to remote actor in B, against raw publish/subscribe.
pub(crate) async fn throughput(
    url: &str,
    size: usize,
    options: &BenchOptions,
    report: &mut BenchReport,
) -> Result<()> {
    let n = options.messages;
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..options.rounds {
        ours.push(n as f64 / bridge_throughput(url, size, n).await?.as_secs_f64());
        raw.push(n as f64 / raw_throughput(url, size, n).await?.as_secs_f64());
    }
    let (ours, raw) = (median(ours), median(raw));
    let target = (size == 128).then_some((0.9, true));
    report.add(
        "streamed throughput",
        Some(size),
        "msgs_per_s",
        ours,
        Some(raw),
        target,
    );
    let mb = |rate: f64| rate * size as f64 / 1e6;
    report.add(
        "streamed throughput",
        Some(size),
        "MB_per_s",
        mb(ours),
        Some(mb(raw)),
        None,
    );
    Ok(())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Quantiles (p50, p99, p999) in microseconds of `samples`.
fn quantiles(mut samples: Vec<Duration>) -> [f64; 3] {
    samples.sort();
    [0.5, 0.99, 0.999].map(|q| micros(quantile(&samples, q)))
}

/// Confirmed `send_to_remote_actor` round trips against raw request/reply.
pub(crate) async fn confirmed_latency(
    url: &str,
    options: &BenchOptions,
    report: &mut BenchReport,
) -> Result<()> {
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..options.rounds {
        ours.push(quantiles(confirmed_round(url, options.round_trips).await?));
        raw.push(quantiles(
            raw_request_round(url, options.round_trips).await?,
        ));
    }
    let pick = |rounds: &[[f64; 3]], i: usize| median(rounds.iter().map(|r| r[i]).collect());
    let targets = [Some((1.15, false)), Some((1.5, false)), None];
    for (i, metric) in ["p50_us", "p99_us", "p999_us"].into_iter().enumerate() {
        report.add(
            "confirmed round trip",
            Some(16),
            metric,
            pick(&ours, i),
            Some(pick(&raw, i)),
            targets[i],
        );
    }
    Ok(())
}

async fn confirmed_round(url: &str, n: usize) -> Result<Vec<Duration>> {
    let pair = Pair::new(url, crate::components::Sink).await?;
    let b_id = pair.b.get_config().network_id.clone();
    let message = Message::Bytes(vec![0x5a; 16].into());
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let started = Instant::now();
        pair.a
            .send_to_remote_actor(&b_id, "target", "in", message.clone())
            .await?;
        if i >= n / 10 {
            samples.push(started.elapsed());
        }
    }
    pair.close().await?;
    Ok(samples)
}

async fn raw_request_round(url: &str, n: usize) -> Result<Vec<Duration>> {
    let subject = unique("bench.req");
    let responder = async_nats::connect(url).await.map_err(broker)?;
    let mut requests = responder.subscribe(subject.clone()).await.map_err(broker)?;
    responder.flush().await.map_err(broker)?;
    let answering = tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                let _ = responder.publish(reply, bytes::Bytes::new()).await;
            }
        }
    });
    let client = async_nats::connect(url).await.map_err(broker)?;
    let payload = bytes::Bytes::from(vec![0x5a; 16]);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let started = Instant::now();
        client
            .request(subject.clone(), payload.clone())
            .await
            .map_err(broker)?;
        if i >= n / 10 {
            samples.push(started.elapsed());
        }
    }
    answering.abort();
    Ok(samples)
}

/// A call into B's actor and back out of A's proxy, one at a time.
pub(crate) async fn remote_call_latency(
    url: &str,
    options: &BenchOptions,
    report: &mut BenchReport,
) -> Result<()> {
    let mut rounds = Vec::new();
    for _ in 0..options.rounds {
        rounds.push(quantiles(
            remote_call_round(url, options.round_trips).await?,
        ));
    }
    for (i, metric) in ["p50_us", "p99_us"].into_iter().enumerate() {
        let value = median(rounds.iter().map(|r| r[i]).collect());
        report.add("remote actor call", Some(16), metric, value, None, None);
    }
    Ok(())
}

async fn remote_call_round(url: &str, n: usize) -> Result<Vec<Duration>> {
    let pair = Pair::new(url, Passthrough).await?;
    let (probe, mut results) = ProbeActor::channel(16);
    let inlet = {
        let local = pair.a.get_local_network();
        let mut local = local.write();
        local.register_actor("results", probe)?;
        local.add_node("results", "results", None)?;
        local.add_connection(Connector::new(&pair.alias, "out", "results", "in"))?;
        local.inlet(&pair.alias, "in")?
    };
    let message = Message::Bytes(vec![0x5a; 16].into());
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let started = Instant::now();
        inlet.send(message.clone()).await?;
        tokio::time::timeout(ROUND_LIMIT, results.recv())
            .await
            .map_err(|_| too_slow("remote call"))?;
        if i >= n / 10 {
            samples.push(started.elapsed());
        }
    }
    pair.close().await?;
    Ok(samples)
}
