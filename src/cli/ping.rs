//! `reflow-bridge ping NETWORK [ACTOR] [-c N]`: round trips through the broker to a
//! network (any of its instances) or to the instance hosting one of its actors.

use std::time::Duration;

use crate::cli::json::PingReport;

use crate::cli::Global;
use crate::cli::output::{self, CliError, CliResult};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The network to ping
    network: String,
    /// Ping the instance that hosts this actor instead
    actor: Option<String>,
    /// How many pings
    #[arg(short = 'c', long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,
    /// Milliseconds between pings
    #[arg(short = 'i', long, default_value_t = 200)]
    interval_ms: u64,
}

/// Round-trip statistics in milliseconds.
#[derive(Debug, PartialEq)]
struct Stats {
    min: f64,
    avg: f64,
    max: f64,
    p50: f64,
}

fn stats(samples: &[f64]) -> Stats {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let p50 = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Stats {
        min: sorted[0],
        avg: sorted.iter().sum::<f64>() / n as f64,
        max: sorted[n - 1],
        p50,
    }
}

pub(crate) async fn run(global: &Global, args: Args) -> CliResult {
    let mut network = global.open_network().await?;
    let result = ping_all(global, &network, &args).await;
    let _ = network.shutdown().await;
    let samples = result?;
    let s = stats(&samples);
    let target = match &args.actor {
        Some(actor) => format!("{actor}@{}", args.network),
        None => args.network.clone(),
    };
    if output::human(global.json) {
        println!(
            "{} pings to {target}: min {:.2} ms, avg {:.2} ms, max {:.2} ms, p50 {:.2} ms",
            samples.len(),
            s.min,
            s.avg,
            s.max,
            s.p50
        );
    } else {
        output::print_json(&PingReport {
            network: args.network.clone(),
            actor: args.actor.clone(),
            count: samples.len(),
            min_ms: s.min,
            avg_ms: s.avg,
            max_ms: s.max,
            p50_ms: s.p50,
            samples_ms: samples,
        });
    }
    Ok(())
}

async fn ping_all(
    global: &Global,
    network: &crate::distributed_network::DistributedNetwork,
    args: &Args,
) -> CliResult<Vec<f64>> {
    let mut samples = Vec::with_capacity(args.count as usize);
    for i in 0..args.count {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
        let rtt = match &args.actor {
            Some(actor) => network.ping_remote_actor(&args.network, actor).await,
            None => network.ping_network(&args.network).await,
        }
        .map_err(CliError::from_lib)?;
        let ms = rtt.as_secs_f64() * 1000.0;
        if output::human(global.json) {
            println!("reply from {}: seq={i} time={ms:.2} ms", args.network);
        }
        samples.push(ms);
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_take_the_middle_of_an_even_count() {
        let s = stats(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!(
            s,
            Stats {
                min: 1.0,
                avg: 2.5,
                max: 4.0,
                p50: 2.5
            }
        );
    }
}
