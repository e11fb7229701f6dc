//! The `reflow-bridge` command line (feature `cli`): run, inspect and poke reflow networks
//! from the shell.
//!
//! [`main`] is the `reflow-bridge` binary. A binary of your own that offers its own
//! components to `run --config`, next to the built-in ones, calls [`main_with`] and gets
//! the whole CLI:
//!
//! ```no_run
//! use reflow_network::actor::FnActor;
//! use reflow_network::components::Components;
//! use reflow_network::Message;
//!
//! fn main() -> std::process::ExitCode {
//!     let components = Components::builtin().with("double", || {
//!         FnActor::new(["in"], ["out"], |_port, msg| {
//!             let doubled = msg.as_integer().unwrap_or(0) * 2;
//!             Ok(vec![("out".to_string(), Message::Integer(doubled))])
//!         })
//!     });
//!     reflow_network::cli::main_with(components)
//! }
//! ```
//!
//! Every subcommand lives in its own file. The inspecting commands (`networks`, `actors`,
//! `ping`, `send`) join the broker as a short-lived network of their own, `reflow-cli-{random}`,
//! ask their question and leave; `watch` uses a plain NATS connection; `run` is a long-
//! lived bridge process; `up` starts a local broker; `bench` measures the bridge against
//! raw async-nats. Output, errors and exit codes are
//! shared through `output`.

mod actors;
mod bench;
mod completions;
mod config;
mod json;
mod networks;
mod output;
mod ping;
mod run;
mod send;
mod up;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::components::Components;
use crate::distributed_network::{DistributedConfig, DistributedNetwork, NatsAuth};

use output::{CliError, CliResult, Exit};

/// The prefix of the one-shot networks the inspecting commands join as: listings and the
/// `run` reports leave them out, being this tool's probes rather than anyone's peers.
pub(crate) const CLI_PREFIX: &str = "reflow-cli-";

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
    /// A natscli context (~/.config/nats/context/NAME.json): its URL, credentials and
    /// TLS files, under any flag given here
    #[arg(long, global = true, env = "NATS_CONTEXT", value_name = "NAME")]
    pub(crate) context: Option<String>,
    /// A .creds file (user JWT and NKey seed) for the NATS server
    #[arg(long, global = true, env = "NATS_CREDS", value_name = "FILE")]
    pub(crate) creds: Option<std::path::PathBuf>,
    /// A file holding a user NKey seed for the NATS server
    #[arg(long, global = true, env = "NATS_NKEY", value_name = "FILE")]
    pub(crate) nkey: Option<std::path::PathBuf>,
    /// A NATS user (its password from --password or NATS_PASSWORD)
    #[arg(long, global = true, env = "NATS_USER")]
    pub(crate) user: Option<String>,
    /// The NATS user's password
    #[arg(long, global = true, env = "NATS_PASSWORD", hide_env_values = true)]
    pub(crate) password: Option<String>,
    /// A token for the NATS server alone; --token stays the peers' shared secret
    #[arg(long, global = true, env = "NATS_TOKEN", hide_env_values = true)]
    pub(crate) nats_token: Option<String>,
    /// PEM file of the CA that signed the NATS server's certificate
    #[arg(
        long,
        global = true,
        env = "NATS_CA",
        value_name = "FILE",
        visible_alias = "tlsca"
    )]
    pub(crate) tls_ca: Option<std::path::PathBuf>,
    /// PEM file of a client certificate, for servers that verify clients
    #[arg(
        long,
        global = true,
        env = "NATS_CERT",
        value_name = "FILE",
        visible_alias = "tlscert"
    )]
    pub(crate) tls_cert: Option<std::path::PathBuf>,
    /// PEM file of the client certificate's key
    #[arg(
        long,
        global = true,
        env = "NATS_KEY",
        value_name = "FILE",
        visible_alias = "tlskey"
    )]
    pub(crate) tls_key: Option<std::path::PathBuf>,
    /// The JetStream domain of the liveness bucket, as natscli's --js-domain: on a leaf
    /// node with JetStream of its own, the hub's domain
    #[arg(long, global = true, value_name = "DOMAIN")]
    pub(crate) js_domain: Option<String>,
    /// Start with the TLS handshake (servers with handshake_first)
    #[arg(long, global = true, visible_alias = "tlsfirst")]
    pub(crate) tls_first: bool,
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff); `reflow-bridge man | man -l -` reads it
    Man,
}

impl Global {
    /// The URLs to use, by precedence: `--nats-url`, then `$NATS_URL` (both through
    /// clap), then `fallback` (a config file's endpoints), then the `--context`'s URL,
    /// else the default.
    pub(crate) fn urls_or(&self, fallback: &[String]) -> Vec<String> {
        let context_url = self
            .context
            .as_deref()
            .and_then(|name| NatsAuth::from_context(name).ok())
            .and_then(|(_, url)| url);
        let urls = match &self.nats_url {
            Some(urls) if !urls.trim().is_empty() => urls
                .split(',')
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect(),
            _ if !fallback.is_empty() => fallback.to_vec(),
            _ if context_url.is_some() => context_url.into_iter().collect(),
            _ => vec![crate::distributed_network::DEFAULT_NATS_URL.to_string()],
        };
        urls.iter().map(|u| with_scheme(u)).collect()
    }

    /// How to prove this process to the NATS server: the `--context`'s settings, with
    /// every flag given here over them; `base` (a config file's) under both.
    pub(crate) fn nats_auth(&self, base: NatsAuth) -> CliResult<NatsAuth> {
        let mut auth = base;
        if let Some(name) = &self.context {
            let (context, _) = NatsAuth::from_context(name).map_err(CliError::from_lib)?;
            auth = merge(auth, context);
        }
        let flags = NatsAuth {
            creds_file: self.creds.clone(),
            nkey_seed_file: self.nkey.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            token: self.nats_token.clone().filter(|t| !t.is_empty()),
            tls_ca_file: self.tls_ca.clone(),
            tls_cert_file: self.tls_cert.clone(),
            tls_key_file: self.tls_key.clone(),
            tls_required: false,
            tls_first: self.tls_first,
        };
        let auth = merge(auth, flags);
        auth.check().map_err(CliError::from_lib)?;
        Ok(auth)
    }

    /// Sets `network`'s JetStream domain: `--js-domain`, else `base` (a config file's).
    pub(crate) fn set_js_domain(
        &self,
        network: &mut DistributedNetwork,
        base: Option<&str>,
    ) -> CliResult<()> {
        match self.js_domain.as_deref().or(base) {
            Some(domain) => network
                .set_jetstream_domain(domain)
                .map_err(|e| CliError::usage(e.to_string())),
            None => Ok(()),
        }
    }

    /// Joins the broker as a one-shot network `reflow-cli-{random}` for a single question.
    pub(crate) async fn open_network(&self) -> CliResult<DistributedNetwork> {
        let short = |n: usize| uuid::Uuid::new_v4().simple().to_string()[..n].to_string();
        let config = DistributedConfig {
            network_id: format!("{CLI_PREFIX}{}", short(8)),
            instance_id: short(8),
            discovery_endpoints: self.urls_or(&[]),
            auth_token: self.token.clone(),
            ..DistributedConfig::default()
        };
        let mut network = DistributedNetwork::new(config)
            .await
            .map_err(CliError::from_lib)?;
        network
            .set_nats_auth(self.nats_auth(NatsAuth::default())?)
            .map_err(CliError::from_lib)?;
        self.set_js_domain(&mut network, None)?;
        let spinner = output::Spinner::start("connecting to the NATS server");
        let started = network.start().await;
        drop(spinner);
        started.map_err(CliError::from_broker)?;
        Ok(network)
    }
}

/// A server address as natscli takes it: a bare `host` or `host:port` means
/// `nats://host:port` (the port 4222 when left out); a URL with a scheme stays as it is.
fn with_scheme(url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("nats://{url}")
    }
}

/// `under` with every setting `over` makes replacing it; one way of logging in in `over`
/// replaces every way in `under`.
fn merge(under: NatsAuth, over: NatsAuth) -> NatsAuth {
    let logs_in = over.creds_file.is_some()
        || over.nkey_seed_file.is_some()
        || over.user.is_some()
        || over.token.is_some();
    let under = if logs_in {
        NatsAuth {
            creds_file: None,
            nkey_seed_file: None,
            user: None,
            password: None,
            token: None,
            ..under
        }
    } else {
        under
    };
    NatsAuth {
        creds_file: over.creds_file.or(under.creds_file),
        nkey_seed_file: over.nkey_seed_file.or(under.nkey_seed_file),
        user: over.user.or(under.user),
        password: over.password.or(under.password),
        token: over.token.or(under.token),
        tls_ca_file: over.tls_ca_file.or(under.tls_ca_file),
        tls_cert_file: over.tls_cert_file.or(under.tls_cert_file),
        tls_key_file: over.tls_key_file.or(under.tls_key_file),
        tls_required: over.tls_required || under.tls_required,
        tls_first: over.tls_first || under.tls_first,
    }
}

fn init_logging(verbose: u8, command: &Command) {
    let default = match verbose {
        // The benchmark starts networks with no broker on purpose (the direct-link
        // rounds), and reports what it measures in its figures, not in warnings.
        0 if matches!(command, Command::Bench(_)) => "error,async_nats=off",
        // The NATS client's own error lines repeat what the one-line error says (an
        // authorization violation, a refused certificate); -v shows them.
        0 => "warn,async_nats=off,reflow_network::components=info",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(output::LogWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// The `reflow-bridge` binary: parses the command line, runs the subcommand with the
/// built-in components, and returns the exit code.
pub fn main() -> ExitCode {
    main_with(Components::builtin())
}

/// The whole `reflow-bridge` CLI, with `components` as what `run --config` may name in its
/// `[[nodes]]` (pass [`Components::builtin`] with yours added to keep the built-in ones).
///
/// Runs its own tokio runtime, so call it from a plain `fn main`, not from inside one.
pub fn main_with(components: Components) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run_cli(components)),
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            ExitCode::from(Exit::Runtime as u8)
        }
    }
}

async fn run_cli(components: Components) -> ExitCode {
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
        Command::Run(args) => run::run(&global, args, &components).await,
        Command::Networks(args) => networks::run(&global, args).await,
        Command::Actors(args) => actors::run(&global, args).await,
        Command::Ping(args) => ping::run(&global, args).await,
        Command::Send(args) => send::run(&global, args).await,
        Command::Watch(args) => watch::run(&global, args).await,
        Command::Bench(args) => bench::run(&global, args).await,
        Command::Completions(args) => completions::completions(args),
        Command::Man => completions::man(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => err.report(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(url: &str) -> Global {
        let cli = Cli::try_parse_from(["reflow-bridge", "--nats-url", url, "networks"]).unwrap();
        cli.global
    }

    #[test]
    fn bare_hosts_and_host_ports_are_nats_urls_as_natscli_takes_them() {
        assert_eq!(
            global("127.0.0.1:4222,localhost").urls_or(&[]),
            ["nats://127.0.0.1:4222", "nats://localhost"]
        );
        assert_eq!(
            global("tls://a:4443, nats://tok@b").urls_or(&[]),
            ["tls://a:4443", "nats://tok@b"]
        );
    }
}
