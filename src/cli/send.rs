//! `reflow-bridge send NETWORK ACTOR PORT VALUE`: confirmed sends into an actor's
//! in-port. `VALUE` is JSON; `-` reads one JSON value per stdin line.

use crate::Message;
use crate::cli::json::SendReport;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli::Global;
use crate::cli::output::{self, CliError, CliResult};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The network that hosts the actor
    network: String,
    /// The actor's id in that network
    actor: String,
    /// One of the actor's in-ports
    port: String,
    /// The message as JSON (`42`, `'"text"'`, `'{"a":1}'`), or `-` for one per stdin line
    value: String,
    /// The network must be durable: each message returns once JetStream stored it, and
    /// waits there while the network is down (a network that is not durable is refused)
    #[arg(long)]
    durable: bool,
}

fn parse(text: &str, what: &str) -> CliResult<Message> {
    serde_json::from_str::<serde_json::Value>(text)
        .map(Message::from_json)
        .map_err(|e| {
            CliError::usage(format!(
                "{what} is not JSON ({e}): {text:?}; quote text as JSON, for example '\"hello\"'"
            ))
        })
}

pub(crate) async fn run(global: &Global, args: Args) -> CliResult {
    let first = if args.value == "-" {
        None
    } else {
        Some(parse(&args.value, "VALUE")?)
    };
    let mut network = global.open_network().await?;
    let result = send_all(&network, &args, first).await;
    let _ = network.shutdown().await;
    let (sent, stored) = result?;
    let target = format!("{}.{}.{}", args.network, args.actor, args.port);
    let delivery = if stored { "stored" } else { "delivered" };
    if output::human(global.json) {
        let plural = if sent == 1 { "" } else { "s" };
        if stored {
            println!(
                "stored {sent} message{plural} for durable network {} ({target}); it handles them when it runs",
                args.network
            );
        } else {
            println!("sent {sent} message{plural} to {target} (each confirmed)");
        }
    } else {
        output::print_json(&SendReport {
            network: args.network,
            actor: args.actor,
            port: args.port,
            subject: target,
            sent,
            delivery,
        });
    }
    Ok(())
}

async fn send_all(
    network: &crate::distributed_network::DistributedNetwork,
    args: &Args,
    first: Option<Message>,
) -> CliResult<(u64, bool)> {
    let spinner = output::Spinner::start(&format!("connecting to {}", args.network));
    let connected = network.connect_to(&args.network).await;
    drop(spinner);
    connected.map_err(CliError::from_lib)?;
    if args.durable && network.durable_backlog(&args.network).await.is_err() {
        return Err(CliError::usage(format!(
            "--durable: network {} is not durable (it has no stream {}); start it with \
             durable = true in its config, or leave out --durable",
            args.network,
            crate::durable::stream_name(&args.network)
        )));
    }
    let stored = std::cell::Cell::new(false);
    let send = |message| async {
        let delivery = network
            .send_to_remote_actor_reporting(&args.network, &args.actor, &args.port, message, None)
            .await?;
        stored.set(delivery == crate::durable::Delivery::Stored);
        Ok::<(), crate::Error>(())
    };
    if let Some(message) = first {
        send(message).await.map_err(CliError::from_lib)?;
        return Ok((1, stored.get()));
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut sent = 0u64;
    let mut number = 0u64;
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| CliError::new(output::Exit::Runtime, format!("cannot read stdin: {e}")))?
    {
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        // A failure says how far the input got, so a rerun can skip what went in.
        let so_far = |err: CliError| {
            let plural = if sent == 1 { "" } else { "s" };
            CliError::new(
                err.exit,
                format!(
                    "{sent} line{plural} sent before line {number}: {}",
                    err.message
                ),
            )
        };
        let message = parse(&line, "it").map_err(so_far)?;
        send(message)
            .await
            .map_err(|e| so_far(CliError::from_lib(e)))?;
        sent += 1;
    }
    Ok((sent, stored.get()))
}
