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
    let sent = result?;
    let target = format!("{}.{}.{}", args.network, args.actor, args.port);
    if output::human(global.json) {
        let plural = if sent == 1 { "" } else { "s" };
        println!("sent {sent} message{plural} to {target} (each confirmed)");
    } else {
        output::print_json(&SendReport {
            network: args.network,
            actor: args.actor,
            port: args.port,
            subject: target,
            sent,
        });
    }
    Ok(())
}

async fn send_all(
    network: &crate::distributed_network::DistributedNetwork,
    args: &Args,
    first: Option<Message>,
) -> CliResult<u64> {
    let spinner = output::Spinner::start(&format!("connecting to {}", args.network));
    let connected = network.connect_to_network(&args.network).await;
    drop(spinner);
    connected.map_err(CliError::from_lib)?;
    let send =
        |message| network.send_to_remote_actor(&args.network, &args.actor, &args.port, message);
    if let Some(message) = first {
        send(message).await.map_err(CliError::from_lib)?;
        return Ok(1);
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
    Ok(sent)
}
