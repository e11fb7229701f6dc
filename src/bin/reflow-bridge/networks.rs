//! `reflow-bridge networks [--watch]`: the live networks and their instances, from the
//! liveness bucket; `--watch` then prints up/down events as they happen.
//!
//! NOT BUILT YET: this file is written against the discovery API
//! (`DistributedNetwork::discover_networks() -> Result<Vec<NetworkInfo>>`) that lands
//! with the discovery branch. To enable it: `mod networks;` in main.rs and a
//! `Networks(networks::Args)` variant dispatching to `networks::run`.

use std::collections::BTreeMap;

use reflow_network::events::NetworkEvent;
use serde_json::json;

use crate::Global;
use crate::output::{self, CliError, CliResult};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Keep running and print networks going up and down
    #[arg(long)]
    watch: bool,
}

pub(crate) async fn run(global: &Global, args: Args) -> CliResult {
    let mut network = global.open_network().await?;
    let me = network.get_config().network_id.clone();
    let mut events = network.events();
    let spinner = output::Spinner::start("listing live networks");
    let listed = network.discover_networks().await;
    drop(spinner);
    let mut infos = match listed {
        Ok(infos) => infos,
        Err(err) => {
            let _ = network.shutdown().await;
            return Err(CliError::from_lib(err));
        }
    };
    // This command's own one-shot network is not news to anyone.
    infos.retain(|i| i.network_id != me);
    infos.sort_by(|a, b| (&a.network_id, &a.instance_id).cmp(&(&b.network_id, &b.instance_id)));

    if output::human(global.json) {
        let rows: Vec<Vec<String>> = infos
            .iter()
            .map(|i| {
                vec![
                    i.network_id.clone(),
                    i.instance_id.clone(),
                    i.actors.len().to_string(),
                    i.capabilities.join(","),
                    i.tags.join(","),
                    i.endpoints.join(","),
                    i.version.clone(),
                ]
            })
            .collect();
        output::print_table(
            &["NETWORK", "INSTANCE", "ACTORS", "CAPABILITIES", "TAGS", "ENDPOINTS", "VERSION"],
            &rows,
        );
    } else {
        let mut by_network: BTreeMap<&str, Vec<&_>> = BTreeMap::new();
        for info in &infos {
            by_network.entry(info.network_id.as_str()).or_default().push(info);
        }
        let networks: Vec<_> = by_network
            .into_iter()
            .map(|(id, instances)| json!({ "network_id": id, "instances": instances }))
            .collect();
        output::print_json(&json!({ "networks": networks }));
    }

    if args.watch {
        loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { break };
                    print_event(global, &me, &event);
                }
                _ = crate::up::stop_signal() => break,
            }
        }
    }
    let _ = network.shutdown().await;
    Ok(())
}

fn print_event(global: &Global, me: &str, event: &NetworkEvent) {
    let (what, network, instance, reason) = match event {
        NetworkEvent::NetworkUp { network, instance } => ("up", network, instance, None),
        NetworkEvent::NetworkDown {
            network,
            instance,
            reason,
        } => ("down", network, instance, Some(format!("{reason:?}"))),
        _ => return,
    };
    if network == me {
        return;
    }
    if output::human(global.json) {
        let why = reason.map(|r| format!(" ({r})")).unwrap_or_default();
        println!("{what:<4} {network}/{instance}{why}");
    } else {
        output::print_json(&json!({
            "event": what,
            "network_id": network,
            "instance_id": instance,
            "reason": reason,
        }));
    }
}
