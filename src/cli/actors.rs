//! `reflow-bridge actors NETWORK`: the actors one network hosts, with their ports.

use crate::cli::json::ActorList;

use crate::cli::Global;
use crate::cli::output::{self, CliError, CliResult};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The network to ask (its network id, for example `math` or `prod.ml`)
    network: String,
}

pub(crate) async fn run(global: &Global, args: Args) -> CliResult {
    let mut network = global.open_network().await?;
    let spinner = output::Spinner::start(&format!("asking {} for its actors", args.network));
    let listed = network.discover_actors_on_network(&args.network).await;
    drop(spinner);
    let _ = network.shutdown().await;
    let mut actors = listed.map_err(CliError::from_lib)?;
    actors.sort_by(|a, b| a.id.cmp(&b.id));
    if output::human(global.json) {
        let rows: Vec<Vec<String>> = actors
            .iter()
            .map(|a| {
                vec![
                    a.id.clone(),
                    a.component.clone(),
                    a.inports.join(","),
                    a.outports.join(","),
                    a.description.clone(),
                ]
            })
            .collect();
        output::print_table(&["ACTOR", "COMPONENT", "IN", "OUT", "DESCRIPTION"], &rows);
    } else {
        output::print_json(&ActorList {
            network: args.network,
            actors,
        });
    }
    Ok(())
}
