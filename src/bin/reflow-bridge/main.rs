//! `reflow-bridge`: run, inspect and poke reflow networks from the shell.
//!
//! Every subcommand lives in its own file. The inspecting commands (`networks`, `actors`,
//! `ping`, `send`) join the broker as a short-lived network of their own, `reflow-cli-{random}`,
//! ask their question and leave; `watch` uses a plain NATS connection; `run` is a long-
//! lived bridge process; `up` starts a local broker; `bench` measures the bridge against
//! raw async-nats. Output, errors and exit codes are
//! shared through `output`.

mod actors;
mod bench;
mod config;
mod networks;
mod output;
mod ping;
mod run;
mod send;
mod up;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use reflow_network::distributed_network::{DistributedConfig, DistributedNetwork};

use output::{CliError, CliResult, Exit};

/// Counts the heap while `bench` measures memory; otherwise the system allocator, at the
/// cost of one relaxed load per allocation.
#[global_allocator]
static HEAP: reflow_network::bench::CountingAllocator = reflow_network::bench::CountingAllocator;

/// Run, inspect and poke reflow networks joined through NATS.
#[derive(Debug, Parser)]
#[command(name = "reflow-bridge", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Flags every subcommand takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Global {
    /// NATS server URL(s), comma separated [default: nats://127.0.0.1:4222]
    #[arg(long, global = true, env = "NATS_URL")]
    pub(crate) nats_url: Option<String>,
    /// Token for the NATS server and the peer handshake
    #[arg(long, global = true, env = "REFLOW_AUTH_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Print machine-readable JSON instead of tables
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// More log output on stderr (-v info, -vv debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local JetStream nats-server (unless one already answers) and keep it running
    Up(up::Args),
    /// Run a bridge process from a TOML file until Ctrl-C
    Run(run::Args),
    /// Show the live networks and their instances; --watch adds up/down events
    Networks(networks::Args),
    /// List the actors of a network, with their ports
    Actors(actors::Args),
    /// Measure round trips to a network, or to one of its actors
    Ping(ping::Args),
    /// Send JSON values into an actor's in-port, confirmed one by one
    Send(send::Args),
    /// Tail messages on a subject, decoding envelopes to JSON
    Watch(watch::Args),
    /// Measure the bridge against raw async-nats on the same server
    ///
    /// Starts a local nats-server of its own unless --nats-url or NATS_URL names one.
    /// Prints a table, or with --json every figure with its ratio to its baseline, the
    /// machine, the versions and the settings. A missed target is a measurement, not a
    /// failure: the exit code is 0 whenever every scenario ran.
    Bench(bench::Args),
}

impl Global {
    /// The URLs to use, by precedence: `--nats-url`, then `$NATS_URL` (both through
    /// clap), then `fallback` (a config file's endpoints), else the default.
    pub(crate) fn urls_or(&self, fallback: &[String]) -> Vec<String> {
        match &self.nats_url {
            Some(urls) if !urls.trim().is_empty() => urls
                .split(',')
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect(),
            _ if !fallback.is_empty() => fallback.to_vec(),
            _ => vec![reflow_network::distributed_network::DEFAULT_NATS_URL.to_string()],
        }
    }

    /// Joins the broker as a one-shot network `reflow-cli-{random}` for a single question.
    pub(crate) async fn open_network(&self) -> CliResult<DistributedNetwork> {
        let short = |n: usize| uuid::Uuid::new_v4().simple().to_string()[..n].to_string();
        let config = DistributedConfig {
            network_id: format!("reflow-cli-{}", short(8)),
            instance_id: short(8),
            discovery_endpoints: self.urls_or(&[]),
            auth_token: self.token.clone(),
            ..DistributedConfig::default()
        };
        let mut network = DistributedNetwork::new(config)
            .await
            .map_err(CliError::from_lib)?;
        let spinner = output::Spinner::start("connecting to the NATS server");
        let started = network.start().await;
        drop(spinner);
        started.map_err(CliError::from_broker)?;
        Ok(network)
    }
}

fn init_logging(verbose: u8, command: &Command) {
    let default = match verbose {
        // The benchmark starts networks with no broker on purpose (the direct-link
        // rounds), and reports what it measures in its figures, not in warnings.
        0 if matches!(command, Command::Bench(_)) => "error",
        0 => "warn,reflow_network::components=info",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let usage = err.use_stderr();
            let _ = err.print();
            return if usage {
                ExitCode::from(Exit::Usage as u8)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(cli.global.verbose, &cli.command);
    let mut global = cli.global;
    // An empty REFLOW_AUTH_TOKEN (as compose passes when it is unset) means no token.
    global.token = global.token.filter(|t| !t.is_empty());
    let result = match cli.command {
        Command::Up(args) => up::run(&global, args).await,
        Command::Run(args) => run::run(&global, args).await,
        Command::Networks(args) => networks::run(&global, args).await,
        Command::Actors(args) => actors::run(&global, args).await,
        Command::Ping(args) => ping::run(&global, args).await,
        Command::Send(args) => send::run(&global, args).await,
        Command::Watch(args) => watch::run(&global, args).await,
        Command::Bench(args) => bench::run(&global, args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => err.report(),
    }
}
