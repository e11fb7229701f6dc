//! `reflow-bridge bench`: the benchmark of `crate::bench`, measured against raw
//! async-nats on the same server. Starts a local server unless `--nats-url` (or
//! `$NATS_URL`) names one. Prints a table, or with `--json` one JSON object holding every
//! figure, its ratio to its baseline, the machine, the versions and the settings.
//!
//! A missed target is a measurement, not a failure: the exit code is 0 whenever every
//! scenario ran.

use crate::bench::{self, BenchOptions, Scenario};

use crate::cli::Global;
use crate::cli::output::{self, CliError, CliResult};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A quick run that checks every scenario works (a few thousand messages, one round)
    #[arg(long)]
    smoke: bool,
    /// Messages per throughput round, at most 512 MiB of payload [default: 1000000; 2000 with --smoke]
    #[arg(long, value_name = "N")]
    messages: Option<usize>,
    /// Payload sizes in bytes, comma separated [default: 16,128,1024,16384]
    #[arg(long, value_delimiter = ',', value_name = "BYTES")]
    sizes: Option<Vec<usize>>,
    /// Rounds per figure; the median is reported [default: 5; 1 with --smoke]
    #[arg(long, value_name = "R")]
    rounds: Option<usize>,
    /// Round trips per latency round [default: 2000; 100 with --smoke]
    #[arg(long, value_name = "N")]
    round_trips: Option<usize>,
    /// Live network counts for discovery, comma separated [default: 100,500]
    #[arg(long, value_delimiter = ',', value_name = "N")]
    discovery: Option<Vec<usize>>,
    /// Networks started in one process for the "many" scenario [default: 1000; 10 with
    /// --smoke]
    #[arg(long, value_name = "N")]
    many: Option<usize>,
    /// Run only these scenarios, comma separated: streamed, direct, confirmed, slow, call,
    /// failure, discovery, memory, many [default: all]
    #[arg(long, value_delimiter = ',', value_name = "SCENARIO")]
    only: Option<Vec<Scenario>>,
}

pub(crate) async fn run(global: &Global, args: Args) -> CliResult {
    let options = options(global, args)?;
    let report = bench::run_with_progress(&options, &|stage| eprintln!("bench: {stage}..."))
        .await
        .map_err(CliError::from_lib)?;
    if output::human(global.json) {
        print!("{}", report.to_table());
    } else {
        let value = serde_json::to_value(&report)
            .map_err(|e| CliError::new(output::Exit::Runtime, e.to_string()))?;
        output::print_json(&value);
    }
    Ok(())
}

fn options(global: &Global, args: Args) -> CliResult<BenchOptions> {
    let mut options = if args.smoke {
        BenchOptions::smoke()
    } else {
        BenchOptions::default()
    };
    // One server is measured: the first of a list.
    options.nats_url = global
        .nats_url
        .as_deref()
        .and_then(|urls| urls.split(',').map(str::trim).find(|u| !u.is_empty()))
        .map(str::to_string);
    if let Some(n) = args.messages {
        options.messages = n;
    }
    if let Some(sizes) = args.sizes {
        options.sizes = sizes;
    }
    if let Some(r) = args.rounds {
        options.rounds = r;
    }
    if let Some(n) = args.round_trips {
        options.round_trips = n;
    }
    if let Some(counts) = args.discovery {
        options.discovery_counts = counts;
    }
    if let Some(n) = args.many {
        options.many_networks = n;
    }
    if let Some(only) = args.only {
        options.scenarios = only;
    }
    if options.messages == 0 || options.rounds == 0 || options.round_trips == 0 {
        return Err(CliError::usage(
            "--messages, --rounds and --round-trips must be at least 1",
        ));
    }
    if options.sizes.is_empty() || options.sizes.contains(&0) {
        return Err(CliError::usage("--sizes needs sizes of at least 1 byte"));
    }
    // The network killed to time failure detection runs as this very binary.
    options.victim_program = std::env::current_exe().ok();
    Ok(options)
}
