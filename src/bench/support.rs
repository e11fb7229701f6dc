//! What every scenario needs: networks with fresh names, a counting actor, a pair of
//! networks where one uses the other's actor, and the benchmark's own errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::actor::{Actor, ActorContext};
use crate::distributed_network::{DistributedConfig, DistributedNetwork};
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;

/// How long one round may take before the benchmark gives up on it.
pub(super) const ROUND_LIMIT: Duration = Duration::from_secs(60);

/// Heartbeat of the networks the throughput and latency scenarios start: slow, so that
/// liveness traffic does not share the measured time.
const QUIET_HEARTBEAT_MS: u64 = 5_000;

/// Counts what arrives and wakes the benchmark when the count is reached.
#[derive(Clone)]
pub(super) struct CountTo {
    seen: Arc<AtomicUsize>,
    target: usize,
    done: Arc<Notify>,
}

impl CountTo {
    pub(super) fn new(target: usize) -> Self {
        CountTo {
            seen: Arc::new(AtomicUsize::new(0)),
            target,
            done: Arc::new(Notify::new()),
        }
    }

    /// How many messages have arrived.
    pub(super) fn seen(&self) -> usize {
        self.seen.load(Ordering::Relaxed)
    }

    /// Wakes whoever waits on it once `target` messages have arrived.
    pub(super) fn done(&self) -> Arc<Notify> {
        self.done.clone()
    }
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

/// `prefix` with eight random hex digits, so runs against a shared server never meet.
pub(super) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The configuration of a benchmark network `id` on the server at `url`.
pub(super) fn config(url: &str, id: &str) -> DistributedConfig {
    DistributedConfig {
        network_id: id.into(),
        instance_id: "bench".into(),
        discovery_endpoints: vec![url.into()],
        heartbeat_interval_ms: QUIET_HEARTBEAT_MS,
        ..DistributedConfig::default()
    }
}

pub(super) fn too_slow(what: &str) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("benchmark round {what} did not finish within {ROUND_LIMIT:?}"),
    )
}

pub(super) fn broker(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::Broker, "benchmark client failed", e)
}

/// A pair of started networks, `a` using actor `target` of `b` through a proxy.
pub(super) struct Pair {
    pub(super) a: DistributedNetwork,
    pub(super) b: DistributedNetwork,
    /// The proxy's node id in `a`.
    pub(super) alias: String,
}

impl Pair {
    /// Both networks on the broker at `url`.
    pub(super) async fn over_nats(url: &str, actor: impl Actor + Clone) -> Result<Self> {
        Pair::between(url, url, actor).await
    }

    /// `a` on the server at `a_url`, `b` on the one at `b_url` (two nodes of a cluster).
    pub(super) async fn between(
        a_url: &str,
        b_url: &str,
        actor: impl Actor + Clone,
    ) -> Result<Self> {
        let b_id = unique("bench_b");
        let a_id = unique("bench_a");
        Pair::new(config(a_url, &a_id), config(b_url, &b_id), &b_id, actor).await
    }

    /// Both networks started from `a` and `b`; `a` connects to `endpoint` (b's network id,
    /// or its direct address) and registers `b`'s actor `target`.
    pub(super) async fn new(
        a: DistributedConfig,
        b: DistributedConfig,
        endpoint: &str,
        actor: impl Actor + Clone,
    ) -> Result<Self> {
        let b_id = b.network_id.clone();
        let mut b = DistributedNetwork::new(b).await?;
        b.register_local_actor("target", actor, None)?;
        b.start().await?;
        let mut a = DistributedNetwork::new(a).await?;
        a.start().await?;
        a.connect_to(endpoint).await?;
        let alias = a.register_remote_actor("target", &b_id).await?;
        Ok(Pair { a, b, alias })
    }

    pub(super) async fn close(mut self) -> Result<()> {
        self.a.shutdown().await?;
        self.b.shutdown().await
    }
}
