//! `reflow-bridge networks [--watch]`: the live networks and their instances; `--watch`
//! then prints networks going up and down as it happens, until Ctrl-C.
//!
//! The picture comes from `discover_networks()` (every network that answers on the
//! broker, instances merged) and `live_networks()` (one liveness entry per instance), so
//! a network is listed with what it offers as a whole and with each of its instances.
//! The one-shot networks the CLI itself joins as (`reflow-cli-*`) are left out unless
//! `--all` asks for them: they are this tool's probes, not anyone's workload.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::discovery::NetworkInfo;
use crate::events::{DownReason, NetworkEvent};

use crate::cli::json::{DurableEntry, InstanceEntry, NetworkChange, NetworkEntry, NetworkList};
use crate::cli::output::{self, CliError, CliResult};
use crate::cli::{CLI_PREFIX, Global};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Keep running and print networks going up and down, until Ctrl-C
    #[arg(long)]
    watch: bool,
    /// Also show the short-lived `reflow-cli-*` networks of other reflow-bridge commands
    #[arg(long)]
    all: bool,
}

pub(crate) async fn run(global: &Global, args: Args) -> CliResult {
    let mut network = global.open_network().await?;
    let me = network.get_config().network_id.clone();
    // Subscribed before listing, so nothing that changes after the listing goes unseen.
    let mut events = network.events();
    let spinner = output::Spinner::start("listing live networks");
    let listed = network.discover_networks().await;
    drop(spinner);
    let networks = match listed {
        Ok(networks) => networks,
        Err(err) => {
            let _ = network.shutdown().await;
            return Err(CliError::from_lib(err));
        }
    };
    let shown = |id: &str| id != me && (args.all || !id.starts_with(CLI_PREFIX));
    let networks: Vec<NetworkInfo> = networks
        .into_iter()
        .filter(|n| shown(&n.network_id))
        .collect();
    let live = network.live_networks();
    let durable: Vec<DurableEntry> = network
        .durable_networks()
        .await
        .unwrap_or_default()
        .iter()
        .map(|backlog| {
            let up = live.iter().any(|n| n.network_id == backlog.network_id);
            DurableEntry::new(backlog, up)
        })
        .collect();

    if output::human(global.json) {
        print_table(global, &networks, &live);
        print_durable(&durable);
    } else {
        let networks = networks.iter().map(|n| network_json(n, &live)).collect();
        output::print_json(&NetworkList { networks, durable });
    }

    if args.watch {
        if output::human(global.json) {
            eprintln!("watching for networks going up and down; Ctrl-C to stop");
        }
        let stop = crate::cli::up::stop_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { break };
                    print_event(global, &event, &shown);
                }
                _ = &mut stop => break,
            }
        }
    }
    let _ = network.shutdown().await;
    Ok(())
}

/// One row per instance; a network that answered discovery but whose liveness entry this
/// process has not read yet gets a row per instance id with what discovery said.
fn print_table(global: &Global, networks: &[NetworkInfo], live: &[NetworkInfo]) {
    if networks.is_empty() {
        println!("no live networks on {}", global.urls_or(&[]).join(","));
        return;
    }
    let now = now_ms();
    let mut rows = Vec::new();
    for net in networks {
        for (id, instance) in instances_of(net, live) {
            let info = instance.unwrap_or(net);
            rows.push(vec![
                net.network_id.clone(),
                id.to_string(),
                info.actor_count.to_string(),
                info.capabilities.join(","),
                info.tags.join(","),
                info.endpoints.direct.clone().unwrap_or_else(|| "-".into()),
                uptime(now.saturating_sub(info.started_at_ms)),
                info.version.clone(),
            ]);
        }
    }
    output::print_table(
        &[
            "NETWORK",
            "INSTANCE",
            "ACTORS",
            "CAPABILITIES",
            "TAGS",
            "DIRECT",
            "UP",
            "VERSION",
        ],
        &rows,
    );
}

/// The durable networks, live or not, and what waits for each.
fn print_durable(durable: &[DurableEntry]) {
    if durable.is_empty() {
        return;
    }
    println!();
    let rows: Vec<Vec<String>> = durable
        .iter()
        .map(|d| {
            vec![
                d.network.clone(),
                if d.live { "yes" } else { "no" }.to_string(),
                d.pending.to_string(),
                d.oldest_age_ms.map_or("-".to_string(), uptime),
                d.dead_lettered.to_string(),
            ]
        })
        .collect();
    output::print_table(&["DURABLE", "LIVE", "WAITING", "OLDEST", "DEAD"], &rows);
}

/// A network for scripts: what it offers as a whole, and each instance's own entry.
fn network_json(net: &NetworkInfo, live: &[NetworkInfo]) -> NetworkEntry {
    NetworkEntry {
        network: net.network_id.clone(),
        capabilities: net.capabilities.clone(),
        tags: net.tags.clone(),
        actors: net.actors.clone(),
        actor_count: net.actor_count,
        instance_count: net.instance_count,
        instances: instances_of(net, live)
            .into_iter()
            .map(|(id, entry)| InstanceEntry::new(id, entry))
            .collect(),
    }
}

/// The instance ids of `net`, each with its liveness entry when this process holds one.
fn instances_of<'a>(
    net: &'a NetworkInfo,
    live: &'a [NetworkInfo],
) -> Vec<(&'a str, Option<&'a NetworkInfo>)> {
    net.instances
        .iter()
        .map(|id| {
            let entry = live
                .iter()
                .find(|l| l.network_id == net.network_id && &l.instance_id == id);
            (id.as_str(), entry)
        })
        .collect()
}

fn print_event(global: &Global, event: &NetworkEvent, shown: &impl Fn(&str) -> bool) {
    let human = output::human(global.json);
    let say = |change: NetworkChange, words: String| {
        if human {
            println!("{words}");
        } else {
            output::print_json(&change);
        }
    };
    match event {
        NetworkEvent::NetworkUp { network, instance } if shown(network) => say(
            NetworkChange::Up {
                network: network.clone(),
                instance: instance.clone(),
            },
            format!("up   {network} instance {instance}"),
        ),
        NetworkEvent::NetworkDown {
            network,
            instance,
            reason,
        } if shown(network) => {
            let (reason, why) = match reason {
                DownReason::Left => ("left", "shut down"),
                DownReason::Expired => ("expired", "stopped refreshing its liveness entry"),
            };
            say(
                NetworkChange::Down {
                    network: network.clone(),
                    instance: instance.clone(),
                    reason,
                },
                format!("down {network} instance {instance} ({why})"),
            )
        }
        NetworkEvent::BrokerLost => {
            let message = "lost the NATS server; reconnecting".to_string();
            say(
                NetworkChange::BrokerLost {
                    message: message.clone(),
                },
                message,
            )
        }
        NetworkEvent::BrokerRegained => {
            let message = "the NATS server is back".to_string();
            say(
                NetworkChange::BrokerRegained {
                    message: message.clone(),
                },
                message,
            )
        }
        NetworkEvent::Lagged { missed } => {
            let message =
                format!("missed {missed} events; run `networks` again for the full picture");
            say(
                NetworkChange::Lagged {
                    missed: *missed,
                    message: message.clone(),
                },
                message,
            )
        }
        _ => {}
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// `42s`, `7m`, `3h`, `2d`: how long an instance has been up, roughly.
fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_rounded_down_to_one_unit() {
        assert_eq!(uptime(999), "0s");
        assert_eq!(uptime(59_000), "59s");
        assert_eq!(uptime(61_000), "1m");
        assert_eq!(uptime(7_200_000), "2h");
        assert_eq!(uptime(3 * 86_400_000), "3d");
    }
}
