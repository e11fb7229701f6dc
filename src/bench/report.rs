//! The benchmark's result: figures, ratios, and where they were measured.

use serde::{Deserialize, Serialize};

use super::BenchOptions;

/// One measured figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// Which scenario.
    pub scenario: String,
    /// Payload size in bytes, where it matters.
    pub size: Option<usize>,
    /// What was measured (`msgs_per_s`, `p50_us`, ...).
    pub metric: String,
    /// The bridge's value (median of the rounds).
    pub value: f64,
    /// Raw async-nats doing the same job, if there is a baseline.
    pub baseline: Option<f64>,
    /// `value / baseline`.
    pub ratio: Option<f64>,
    /// The target for the ratio, in words (`>= 0.9`), if there is one.
    pub target: Option<String>,
    /// Whether the target is met.
    pub met: Option<bool>,
}

/// The machine and software a report was measured on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineInfo {
    /// CPU cores available.
    pub cores: usize,
    /// Operating system and architecture.
    pub os: String,
    /// This library's version.
    pub reflow_version: String,
    /// The nats-server version measured against.
    pub server_version: String,
    /// The server's URL.
    pub server_url: String,
}

/// Everything one benchmark run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    /// Where it ran.
    pub machine: MachineInfo,
    /// With which settings.
    pub settings: BenchOptions,
    /// What it measured.
    pub figures: Vec<Figure>,
}

impl BenchReport {
    pub(crate) async fn new(options: &BenchOptions, url: &str) -> Self {
        let server_version = match async_nats::connect(url).await {
            Ok(client) => client.server_info().version,
            Err(_) => "unknown".into(),
        };
        BenchReport {
            machine: MachineInfo {
                cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
                os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
                reflow_version: env!("CARGO_PKG_VERSION").into(),
                server_version,
                server_url: url.into(),
            },
            settings: options.clone(),
            figures: Vec::new(),
        }
    }

    /// Adds a figure; `higher_is_better` says which way the target points.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add(
        &mut self,
        scenario: &str,
        size: Option<usize>,
        metric: &str,
        value: f64,
        baseline: Option<f64>,
        target: Option<(f64, bool)>,
    ) {
        let ratio = baseline.filter(|b| *b > 0.0).map(|b| value / b);
        let (target_text, met) = match (target, ratio) {
            (Some((limit, true)), Some(r)) => (Some(format!(">= {limit}")), Some(r >= limit)),
            (Some((limit, false)), Some(r)) => (Some(format!("<= {limit}")), Some(r <= limit)),
            _ => (None, None),
        };
        self.figures.push(Figure {
            scenario: scenario.into(),
            size,
            metric: metric.into(),
            value,
            baseline,
            ratio,
            target: target_text,
            met,
        });
    }

    /// A plain-text table for people.
    pub fn to_table(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "reflow_network {} against nats-server {} at {} ({} cores, {})\n\n",
            m.reflow_version, m.server_version, m.server_url, m.cores, m.os
        );
        out.push_str(&format!(
            "{:<26} {:>7} {:<12} {:>14} {:>14} {:>7} {:>8}\n",
            "scenario", "size", "metric", "reflow", "raw nats", "ratio", "target"
        ));
        for f in &self.figures {
            let size = f.size.map_or("-".to_string(), |s| s.to_string());
            let baseline = f.baseline.map_or("-".to_string(), |b| format!("{b:.1}"));
            let ratio = f.ratio.map_or("-".to_string(), |r| format!("{r:.2}"));
            let target = match (&f.target, f.met) {
                (Some(t), Some(true)) => format!("{t} ok"),
                (Some(t), Some(false)) => format!("{t} MISS"),
                _ => "-".into(),
            };
            out.push_str(&format!(
                "{:<26} {:>7} {:<12} {:>14.1} {:>14} {:>7} {:>8}\n",
                f.scenario, size, f.metric, f.value, baseline, ratio, target
            ));
        }
        out
    }
}
