//! Benchmarks: the bridge measured side by side with raw async-nats doing the same job on
//! the same server, in the same run.
//!
//! Absolute numbers depend on the machine; the ratios to the raw baseline are what the
//! targets speak of. Each figure is the median of several rounds. The same code serves
//! `reflow-bridge bench` and `benches/`.

mod report;
mod scenarios;

pub use report::{BenchReport, Figure, MachineInfo};

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::local_server::NatsServer;

/// What to measure, and how much.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchOptions {
    /// An existing server to measure against; `None` starts a local one.
    pub nats_url: Option<String>,
    /// Payload sizes, in bytes.
    pub sizes: Vec<usize>,
    /// Messages per throughput round.
    pub messages: usize,
    /// Round trips per latency round.
    pub round_trips: usize,
    /// Rounds per figure; the median is reported.
    pub rounds: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            nats_url: None,
            sizes: vec![16, 128, 1024, 16 * 1024],
            messages: 50_000,
            round_trips: 2_000,
            rounds: 3,
        }
    }
}

impl BenchOptions {
    /// A quick run that checks every scenario works end to end (for CI): few messages,
    /// one round, one size. Its timings mean nothing.
    pub fn smoke() -> Self {
        BenchOptions {
            nats_url: None,
            sizes: vec![128],
            messages: 2_000,
            round_trips: 100,
            rounds: 1,
        }
    }
}

/// Runs every scenario and reports the figures with their ratios to raw async-nats.
pub async fn run(options: &BenchOptions) -> Result<BenchReport> {
    let (_server, url) = match &options.nats_url {
        Some(url) => (None, url.clone()),
        None => {
            let server = NatsServer::start().await?;
            let url = server.url();
            (Some(server), url)
        }
    };
    let mut report = BenchReport::new(options, &url).await;
    for &size in &options.sizes {
        scenarios::throughput(&url, size, options, &mut report).await?;
    }
    scenarios::confirmed_latency(&url, options, &mut report).await?;
    scenarios::remote_call_latency(&url, options, &mut report).await?;
    Ok(report)
}

/// The value at quantile `q` (0 to 1) of sorted `samples`.
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// The median of `values`.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
