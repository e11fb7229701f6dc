//! The benchmark's result: figures, their ratios to a baseline, and where they were
//! measured.

use serde::{Deserialize, Serialize};

use super::BenchOptions;

/// The async-nats version this build links, reported beside the figures. A unit test
/// checks it against `Cargo.lock`.
pub const ASYNC_NATS_VERSION: &str = "0.51.0";

/// What a figure is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compared {
    /// Raw async-nats doing the same job on the same server.
    RawNats,
    /// The bridge's own path through the broker (for the direct link).
    NatsPath,
    /// The heartbeat interval (for failure detection).
    Heartbeat,
    /// The messages sent (for what went twice).
    MessagesSent,
    /// The up and down events a churn should cause (for those missed or invented).
    EventsExpected,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// Which scenario.
    pub scenario: String,
    /// Payload size in bytes, where it matters.
    pub size: Option<usize>,
    /// How many live networks, for discovery.
    pub networks: Option<usize>,
    /// What was measured, with its unit (`msgs_per_s`, `p50_us`, `detect_ms`, ...).
    pub metric: String,
    /// The bridge's value (median of the rounds).
    pub value: f64,
    /// What the value is compared with, if anything.
    pub compared_with: Option<Compared>,
    /// The baseline's value in the same unit.
    pub baseline: Option<f64>,
    /// `value / baseline`.
    pub ratio: Option<f64>,
    /// The target for the ratio, in words (`>= 0.9`), if there is one.
    pub target: Option<String>,
    /// Whether the target is met.
    pub met: Option<bool>,
    /// What else a reader needs to know about this figure.
    pub note: Option<String>,
}

impl Figure {
    /// Compares the figure with `baseline`; `target` is `(limit, higher_is_better)`.
    pub(crate) fn against(
        &mut self,
        compared: Compared,
        baseline: f64,
        target: Option<(f64, bool)>,
    ) -> &mut Self {
        let ratio = (baseline > 0.0).then(|| self.value / baseline);
        self.compared_with = Some(compared);
        self.baseline = Some(baseline);
        self.ratio = ratio;
        if let (Some((limit, higher)), Some(r)) = (target, ratio) {
            let sign = if higher { ">=" } else { "<=" };
            self.target = Some(format!("{sign} {limit}"));
            self.met = Some(if higher { r >= limit } else { r <= limit });
        }
        self
    }

    /// Sets how many live networks the figure was measured with.
    pub(crate) fn networks(&mut self, count: usize) -> &mut Self {
        self.networks = Some(count);
        self
    }

    /// Adds a note for readers.
    pub(crate) fn note(&mut self, text: String) -> &mut Self {
        self.note = Some(text);
        self
    }
}

/// The machine a report was measured on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineInfo {
    /// CPU cores available to the process.
    pub cores: usize,
    /// The CPU model, from `/proc/cpuinfo` where there is one.
    pub cpu_model: Option<String>,
    /// Operating system and architecture.
    pub os: String,
    /// The kernel release, where it can be read.
    pub kernel: Option<String>,
}

impl MachineInfo {
    /// The machine this process runs on.
    pub fn here() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, model)| model.trim().to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|k| k.trim().to_string());
        MachineInfo {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            kernel,
        }
    }
}

/// The software a report was measured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Versions {
    /// This library.
    pub reflow_network: String,
    /// The nats-server measured against, as it reports itself.
    pub nats_server: String,
    /// The NATS client both the bridge and the baselines use.
    pub async_nats: String,
    /// Whether this build has optimisations on (`release`) or not (`debug`).
    pub build: String,
}

/// Everything one benchmark run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    /// Where it ran.
    pub machine: MachineInfo,
    /// With what.
    pub versions: Versions,
    /// The server's URL.
    pub server_url: String,
    /// With which settings.
    pub settings: BenchOptions,
    /// What it measured.
    pub figures: Vec<Figure>,
    /// Scenarios left out, and why.
    pub skipped: Vec<String>,
    /// When the run started, in seconds since the Unix epoch.
    pub started_at_s: u64,
    /// How long the whole run took, in seconds.
    pub elapsed_s: f64,
}

impl BenchReport {
    pub(crate) async fn new(options: &BenchOptions, url: &str) -> Self {
        let nats_server = match async_nats::connect(url).await {
            Ok(client) => client.server_info().version,
            Err(_) => "unknown".into(),
        };
        BenchReport {
            machine: MachineInfo::here(),
            versions: Versions {
                reflow_network: env!("CARGO_PKG_VERSION").into(),
                nats_server,
                async_nats: ASYNC_NATS_VERSION.into(),
                build: if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                }
                .into(),
            },
            server_url: url.into(),
            settings: options.clone(),
            figures: Vec::new(),
            skipped: Vec::new(),
            started_at_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            elapsed_s: 0.0,
        }
    }

    /// Adds a figure without a baseline; chain [`Figure::against`] to give it one.
    pub(crate) fn add(
        &mut self,
        scenario: &str,
        size: Option<usize>,
        metric: &str,
        value: f64,
    ) -> &mut Figure {
        self.figures.push(Figure {
            scenario: scenario.into(),
            size,
            networks: None,
            metric: metric.into(),
            value,
            compared_with: None,
            baseline: None,
            ratio: None,
            target: None,
            met: None,
            note: None,
        });
        self.figures.last_mut().expect("just pushed")
    }

    /// The figures whose target is missed.
    pub fn missed(&self) -> Vec<&Figure> {
        self.figures
            .iter()
            .filter(|f| f.met == Some(false))
            .collect()
    }

    /// The settings the figures depend on, as one line.
    fn settings_line(&self) -> String {
        let s = &self.settings;
        let sizes: Vec<String> = s.sizes.iter().map(|b| format!("{b} B")).collect();
        format!(
            "{} rounds per figure, the median reported; {} messages per throughput round \
             (at most {} MiB of payload); {} round trips per latency round; sizes {}; \
             heartbeat {} ms\n\n",
            s.rounds,
            s.messages,
            s.max_round_bytes / (1024 * 1024),
            s.round_trips,
            sizes.join(", "),
            s.heartbeat_ms,
        )
    }

    /// A plain-text table for people.
    pub fn to_table(&self) -> String {
        let m = &self.machine;
        let v = &self.versions;
        let mut out = format!(
            "reflow_network {} ({} build, async-nats {}) against nats-server {} at {}\n\
             {} cores, {}, {}\n",
            v.reflow_network,
            v.build,
            v.async_nats,
            v.nats_server,
            self.server_url,
            m.cores,
            m.cpu_model.as_deref().unwrap_or("unknown CPU"),
            m.os,
        );
        out.push_str(&self.settings_line());
        out.push_str(&format!(
            "{:<28} {:>6} {:<20} {:>12} {:<10} {:>12} {:>6} {:>10}\n",
            "scenario", "size", "metric", "reflow", "against", "baseline", "ratio", "target"
        ));
        let mut notes = Vec::new();
        for f in &self.figures {
            let size = match (f.size, f.networks) {
                (Some(s), _) => s.to_string(),
                (None, Some(n)) => format!("n={n}"),
                _ => "-".into(),
            };
            let against = match f.compared_with {
                Some(Compared::RawNats) => "raw nats",
                Some(Compared::NatsPath) => "nats path",
                Some(Compared::Heartbeat) => "heartbeat",
                Some(Compared::MessagesSent) => "sent",
                Some(Compared::EventsExpected) => "events",
                None => "-",
            };
            let baseline = f.baseline.map_or("-".to_string(), |b| format!("{b:.1}"));
            let ratio = f.ratio.map_or("-".to_string(), |r| format!("{r:.2}"));
            let target = match (&f.target, f.met) {
                (Some(t), Some(true)) => format!("{t} ok"),
                (Some(t), Some(false)) => format!("{t} MISS"),
                _ => "-".into(),
            };
            let scenario = match &f.note {
                Some(note) => {
                    notes.push(note);
                    format!("{} [{}]", f.scenario, notes.len())
                }
                None => f.scenario.clone(),
            };
            out.push_str(&format!(
                "{:<28} {:>6} {:<20} {:>12.1} {:<10} {:>12} {:>6} {:>10}\n",
                scenario, size, f.metric, f.value, against, baseline, ratio, target
            ));
        }
        for (i, note) in notes.iter().enumerate() {
            out.push_str(&format!("\n[{}] {note}", i + 1));
        }
        if !notes.is_empty() {
            out.push('\n');
        }
        for skipped in &self.skipped {
            out.push_str(&format!("\nskipped: {skipped}"));
        }
        out.push_str(&format!("\nmeasured in {:.0} s\n", self.elapsed_s));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reported_async_nats_version_is_the_one_in_cargo_lock() {
        let lock = include_str!("../../Cargo.lock");
        let entry = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"async-nats\""))
            .expect("async-nats in Cargo.lock");
        assert!(
            entry.contains(&format!("version = \"{ASYNC_NATS_VERSION}\"")),
            "update ASYNC_NATS_VERSION to match Cargo.lock: {entry}"
        );
    }

    #[test]
    fn ratios_and_targets_point_the_right_way() {
        let mut f = Figure {
            scenario: "s".into(),
            size: None,
            networks: None,
            metric: "m".into(),
            value: 90.0,
            compared_with: None,
            baseline: None,
            ratio: None,
            target: None,
            met: None,
            note: None,
        };
        f.against(Compared::RawNats, 100.0, Some((0.9, true)));
        assert_eq!(f.ratio, Some(0.9));
        assert_eq!(f.met, Some(true));
        f.against(Compared::RawNats, 100.0, Some((0.8, false)));
        assert_eq!(f.met, Some(false));
        assert_eq!(f.target.as_deref(), Some("<= 0.8"));
    }

    #[test]
    fn the_table_shows_the_settings_and_each_figures_note() {
        let mut report = BenchReport {
            machine: MachineInfo::here(),
            versions: Versions {
                reflow_network: "0.1.0".into(),
                nats_server: "2.15.1".into(),
                async_nats: ASYNC_NATS_VERSION.into(),
                build: "release".into(),
            },
            server_url: "nats://127.0.0.1:4222".into(),
            settings: BenchOptions {
                sizes: vec![16, 1024],
                messages: 1234,
                rounds: 7,
                ..BenchOptions::default()
            },
            figures: Vec::new(),
            skipped: Vec::new(),
            started_at_s: 0,
            elapsed_s: 1.0,
        };
        report
            .add("streamed throughput", Some(16), "msgs_per_s", 10.0)
            .note("3 of 1234 messages were lost".into());
        report.add("discovery", None, "latency_ms", 5.0);
        let table = report.to_table();
        assert!(
            table.contains("7 rounds per figure, the median reported; 1234 messages per")
                && table.contains("sizes 16 B, 1024 B"),
            "settings missing from:\n{table}"
        );
        assert!(
            table.contains("streamed throughput [1]")
                && table.contains("[1] 3 of 1234 messages were lost"),
            "note missing from:\n{table}"
        );
        assert!(!table.contains("discovery ["), "{table}");
    }
}
