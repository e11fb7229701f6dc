//! `cargo bench --bench bridge`: the same measurements as `reflow-bridge bench`.
//!
//! Set `REFLOW_BENCH_SMOKE=1` for a quick end-to-end check, `REFLOW_BENCH_MESSAGES` for
//! the messages per throughput round, `NATS_URL` to measure against an existing server.
//! Writes the JSON report to `target/bench-report.json`.

use reflow_network::bench::{self, BenchOptions};

/// Counts the heap for the memory figures.
#[global_allocator]
static HEAP: bench::CountingAllocator = bench::CountingAllocator;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut options = if std::env::var_os("REFLOW_BENCH_SMOKE").is_some() {
        BenchOptions::smoke()
    } else {
        BenchOptions::default()
    };
    options.nats_url = std::env::var("NATS_URL").ok();
    if let Some(n) = std::env::var("REFLOW_BENCH_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        options.messages = n;
    }
    // The network that failure detection kills runs as the CLI, built for benches too.
    options.victim_program = Some(env!("CARGO_BIN_EXE_reflow-bridge").into());
    let report =
        bench::run_with_progress(&options, &|stage| eprintln!("bench: {stage}...")).await?;
    println!("{}", report.to_table());
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-report.json");
    std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    println!("JSON report: {path}");
    Ok(())
}
