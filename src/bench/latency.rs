//! Round trips one at a time: confirmed `send_to_remote_actor` against raw request/reply,
//! and a call into B's actor whose output comes back out of A's proxy.

use std::time::{Duration, Instant};

use futures::StreamExt;

use super::support::{Pair, ROUND_LIMIT, broker, too_slow, unique};
use super::{BenchOptions, BenchReport, Compared, median, quantile};
use crate::actor::ProbeActor;
use crate::components::{Passthrough, Sink};
use crate::error::Result;
use crate::message::Message;
use crate::network::Connector;

/// The payload size of every round trip.
pub(super) const SIZE: usize = 16;

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Quantiles (p50, p99, p999) in microseconds of `samples`.
pub(super) fn quantiles(mut samples: Vec<Duration>) -> [f64; 3] {
    samples.sort();
    [0.5, 0.99, 0.999].map(|q| micros(quantile(&samples, q)))
}

/// The median over rounds of quantile `i`.
pub(super) fn pick(rounds: &[[f64; 3]], i: usize) -> f64 {
    median(rounds.iter().map(|r| r[i]).collect())
}

/// Runs `n` timed round trips after `n / 10` untimed ones that warm the path up.
async fn timed(n: usize, mut once: impl AsyncFnMut() -> Result<()>) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let started = Instant::now();
        once().await?;
        if i >= n / 10 {
            samples.push(started.elapsed());
        }
    }
    Ok(samples)
}

/// Times `n` round trips of each of `ours` and `raw`, taken in turn, after `n / 10`
/// untimed ones of each that warm both paths up. Taken in turn, a shared machine's
/// drifting load falls on both alike, so their ratio holds steadier than that of rounds
/// measured one after the other.
async fn timed_in_turn(
    n: usize,
    mut ours: impl AsyncFnMut() -> Result<()>,
    mut raw: impl AsyncFnMut() -> Result<()>,
) -> Result<[Vec<Duration>; 2]> {
    let mut samples = [Vec::with_capacity(n), Vec::with_capacity(n)];
    for i in 0..n + n / 10 {
        let started = Instant::now();
        ours().await?;
        let between = Instant::now();
        raw().await?;
        if i >= n / 10 {
            samples[0].push(between - started);
            samples[1].push(between.elapsed());
        }
    }
    Ok(samples)
}

/// Confirmed `send_to_remote_actor` round trips against raw request/reply.
pub(super) async fn confirmed(
    url: &str,
    options: &BenchOptions,
    report: &mut BenchReport,
) -> Result<()> {
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..options.rounds {
        let [o, r] = confirmed_round(url, options.round_trips).await?;
        ours.push(quantiles(o));
        raw.push(quantiles(r));
    }
    let targets = [Some((1.15, false)), Some((1.5, false)), None];
    for (i, metric) in ["p50_us", "p99_us", "p999_us"].into_iter().enumerate() {
        report
            .add("confirmed round trip", Some(SIZE), metric, pick(&ours, i))
            .against(Compared::RawNats, pick(&raw, i), targets[i]);
    }
    Ok(())
}

/// One round: `n` confirmed sends from A to B's actor, each followed by a raw request
/// to a raw responder on the same server.
async fn confirmed_round(url: &str, n: usize) -> Result<[Vec<Duration>; 2]> {
    confirmed_round_between(url, url, n).await
}

/// As [`confirmed_round`], A and the raw requester on the server at `a_url`, B and the raw
/// responder on the one at `b_url`.
pub(super) async fn confirmed_round_between(
    a_url: &str,
    b_url: &str,
    n: usize,
) -> Result<[Vec<Duration>; 2]> {
    let pair = Pair::between(a_url, b_url, Sink).await?;
    let b_id = pair.b.get_config().network_id.clone();
    let message = Message::Bytes(vec![0x5a; SIZE].into());
    let a = &pair.a;
    let raw = RawResponder::start(b_url, a_url).await?;
    let payload = bytes::Bytes::from(vec![0x5a; SIZE]);
    let samples = timed_in_turn(
        n,
        async || {
            a.send_to_remote_actor(&b_id, "target", "in", message.clone())
                .await
        },
        async || raw.request(payload.clone()).await,
    )
    .await;
    raw.stop();
    pair.close().await?;
    samples
}

/// Raw async-nats request/reply: a client, and a responder that answers each request
/// with an empty reply as soon as it arrives.
struct RawResponder {
    subject: async_nats::Subject,
    client: async_nats::Client,
    answering: tokio::task::JoinHandle<()>,
}

impl RawResponder {
    /// The responder on the server at `url`, the requesting client on the one at
    /// `requester_url`.
    async fn start(url: &str, requester_url: &str) -> Result<Self> {
        let subject = async_nats::Subject::from(unique("bench.req"));
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
        let client = async_nats::connect(requester_url).await.map_err(broker)?;
        let raw = RawResponder {
            subject,
            client,
            answering,
        };
        // On a cluster the responder's interest reaches the requester's node a moment
        // later: until then a request finds no responders.
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(err) = raw.request(bytes::Bytes::new()).await {
            if Instant::now() > deadline {
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(raw)
    }

    async fn request(&self, payload: bytes::Bytes) -> Result<()> {
        self.client
            .request(self.subject.clone(), payload)
            .await
            .map(drop)
            .map_err(broker)
    }

    fn stop(self) {
        self.answering.abort();
    }
}

/// A call into B's actor and back out of A's proxy, one at a time.
pub(super) async fn remote_call(
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
        report.add("remote actor call", Some(SIZE), metric, pick(&rounds, i));
    }
    Ok(())
}

async fn remote_call_round(url: &str, n: usize) -> Result<Vec<Duration>> {
    let pair = Pair::over_nats(url, Passthrough).await?;
    let (probe, mut results) = ProbeActor::channel(16);
    let inlet = {
        let local = pair.a.get_local_network();
        let mut local = local.write();
        local.register_actor("results", probe)?;
        local.add_node("results", "results", None)?;
        local.add_connection(Connector::new(&pair.alias, "out", "results", "in"))?;
        local.inlet(&pair.alias, "in")?
    };
    let message = Message::Bytes(vec![0x5a; SIZE].into());
    let samples = timed(n, async || {
        inlet.send(message.clone()).await?;
        tokio::time::timeout(ROUND_LIMIT, results.recv())
            .await
            .map_err(|_| too_slow("remote call"))?;
        Ok(())
    })
    .await;
    pair.close().await?;
    samples
}
