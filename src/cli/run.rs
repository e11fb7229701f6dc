//! `reflow-bridge run --config FILE`: a long-lived bridge process built from a TOML file
//! (see `config`). It builds the local graph from built-in components, sets the
//! capabilities and tags the network advertises in discovery, joins the broker,
//! connects to every network whose actors the connections name (waiting for networks
//! that are not up yet), registers those actors as proxies, wires everything (the nodes
//! that feed remote actors start only then, so none of their messages is lost), delivers
//! the initial packets, and runs until Ctrl-C or SIGTERM, then shuts down gracefully.
//! Meanwhile it reports on stdout what an operator needs to see: the broker lost and
//! back, peers, road switches and slow-consumer drops.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::components::Components;
use crate::distributed_network::DistributedNetwork;
use crate::events::{EventStream, NetworkEvent, TransportKind};
use crate::network::{Connector, InitialPacket};
use crate::{ErrorKind, Message};
use serde_json::json;

use crate::cli::Global;
use crate::cli::config::{self, Endpoint, RunConfig};
use crate::cli::output::{self, CliError, CliResult};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The TOML file that declares the network, its nodes and connections
    #[arg(short, long)]
    config: PathBuf,
    /// How long to wait for remote networks that are not up yet, in seconds
    #[arg(long, default_value_t = 30)]
    wait_secs: u64,
}

pub(crate) async fn run(global: &Global, args: Args, components: &Components) -> CliResult {
    let mut plan = config::load(&args.config, components)?;
    plan.network.discovery_endpoints = global.urls_or(&plan.network.discovery_endpoints);
    plan.network.auth_token = global.token.clone();

    let mut network = DistributedNetwork::new(plan.network.clone())
        .await
        .map_err(CliError::from_lib)?;
    network
        .set_nats_auth(global.nats_auth(plan.nats.clone())?)
        .map_err(CliError::from_lib)?;
    global.set_js_domain(&mut network, plan.jetstream_domain.as_deref())?;
    let reporter = report_events(global, network.events());
    // Set before start(), so the first liveness entry and every discovery reply carry them.
    network.set_capabilities(plan.capabilities.iter().cloned());
    network.set_tags(plan.tags.iter().cloned());
    // The nodes that feed remote actors start once those are wired, the rest at start.
    let held = feeding_remote(&plan);
    build_local(&network, &plan, &held, components).map_err(CliError::from_lib)?;
    let spinner = output::Spinner::start("connecting to the NATS server");
    let started = network.start().await;
    drop(spinner);
    started.map_err(CliError::from_broker)?;

    let wait = Duration::from_secs(args.wait_secs);
    let wired = wire_remote(&network, &plan, &held, wait).await;
    if let Err(err) = wired {
        let _ = network.shutdown().await;
        return Err(err);
    }
    announce(global, &plan);
    crate::cli::up::stop_signal().await;
    let spinner = output::Spinner::start("shutting down");
    let stopped = network.shutdown().await;
    reporter.abort();
    drop(spinner);
    stopped.map_err(CliError::from_lib)?;
    if output::human(global.json) {
        println!("network {} shut down", plan.network.network_id);
    } else {
        output::print_json(&json!({ "event": "stopped", "network": plan.network.network_id }));
    }
    Ok(())
}

/// The local nodes whose messages can reach a remote actor: those connected to one, and
/// every node upstream of them. They start only once the remote actors are wired, so
/// nothing they emit at start (a generator's first numbers) is lost.
fn feeding_remote(plan: &RunConfig) -> HashSet<&str> {
    let local =
        |(from, to): &&(Endpoint, Endpoint)| from.remote().is_none() && to.remote().is_none();
    let mut feeding: HashSet<&str> = plan
        .connections
        .iter()
        .filter(|(from, to)| from.remote().is_none() && to.remote().is_some())
        .map(|(from, _)| from.node.as_str())
        .collect();
    loop {
        let before = feeding.len();
        for (from, to) in plan.connections.iter().filter(local) {
            if feeding.contains(to.node.as_str()) {
                feeding.insert(from.node.as_str());
            }
        }
        if feeding.len() == before {
            return feeding;
        }
    }
}

/// Whether a connection joins two local nodes that start with the network.
fn starts_with_network(from: &Endpoint, to: &Endpoint, held: &HashSet<&str>) -> bool {
    from.remote().is_none()
        && to.remote().is_none()
        && !held.contains(from.node.as_str())
        && !held.contains(to.node.as_str())
}

/// The local nodes and connections that do not wait for remote actors; they exist
/// before the network starts, so nothing a node emits at start is lost.
fn build_local(
    network: &DistributedNetwork,
    plan: &RunConfig,
    held: &HashSet<&str>,
    components: &Components,
) -> crate::Result<()> {
    let local = network.get_local_network();
    let mut local = local.write();
    components.register_into(&mut local)?;
    for node in plan.nodes.iter().filter(|n| !held.contains(n.id.as_str())) {
        local.add_node(&node.id, &node.component, Some(node.metadata.clone()))?;
    }
    for (from, to) in &plan.connections {
        if starts_with_network(from, to, held) {
            local.add_connection(Connector::new(&from.node, &from.port, &to.node, &to.port))?;
        }
    }
    Ok(())
}

/// Connects to each remote network (retrying while it is not up yet), registers its
/// actors as proxies, adds the connections that touch them, then the initial packets.
async fn wire_remote(
    network: &DistributedNetwork,
    plan: &RunConfig,
    held: &HashSet<&str>,
    wait: Duration,
) -> CliResult {
    let deadline = Instant::now() + wait;
    for (actor, remote) in plan.remote_actors() {
        let spinner = output::Spinner::start(&format!("waiting for network {remote}"));
        let connected = loop {
            match network.connect_to_network(&remote).await {
                Err(e) if e.is(ErrorKind::NetworkDisconnected) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => break other,
            }
        };
        drop(spinner);
        connected.map_err(|e| {
            let mut err = CliError::from_lib(e);
            err.message = format!(
                "{}; waited {}s for it: start it first, or raise --wait-secs",
                err.message,
                wait.as_secs()
            );
            err
        })?;
        network
            .register_remote_actor(&actor, &remote)
            .await
            .map_err(CliError::from_lib)?;
    }
    // The held nodes, with every connection not made yet, start together once all of
    // them are in place.
    let local = network.get_local_network();
    let mut local = local.write();
    local.hold();
    let added = (|| {
        for node in plan.nodes.iter().filter(|n| held.contains(n.id.as_str())) {
            local.add_node(&node.id, &node.component, Some(node.metadata.clone()))?;
        }
        for (from, to) in &plan.connections {
            if !starts_with_network(from, to, held) {
                local.add_connection(Connector::new(&from.node, &from.port, &to.node, &to.port))?;
            }
        }
        Ok(())
    })();
    let released = local.release();
    added.and(released).map_err(CliError::from_lib)?;
    for (to, value) in &plan.initial {
        let packet = InitialPacket::new(&to.node, &to.port, Message::from_json(value.clone()));
        local.add_initial(packet).map_err(CliError::from_lib)?;
    }
    Ok(())
}

/// Prints what the operator of a bridge process wants to know as it runs: the broker
/// lost and back, peers connecting, leaving or refused, traffic changing road, and
/// messages dropped. One line each, or one JSON object each with `--json` or into a pipe.
fn report_events(global: &Global, mut events: EventStream) -> tokio::task::JoinHandle<()> {
    let human = output::human(global.json);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let Some((json, words)) = describe(&event) {
                if human {
                    println!("{words}");
                } else {
                    output::print_json(&json);
                }
            }
        }
    })
}

fn road(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Nats => "nats",
        TransportKind::Direct => "direct",
    }
}

/// An event as JSON and in words; `None` for those `networks --watch` is for.
fn describe(event: &NetworkEvent) -> Option<(serde_json::Value, String)> {
    Some(match event {
        NetworkEvent::BrokerLost => (
            json!({ "event": "broker_lost" }),
            "lost the NATS server; reconnecting (peers with a bind port are reached directly)"
                .to_string(),
        ),
        NetworkEvent::BrokerRegained => (
            json!({ "event": "broker_regained" }),
            "the NATS server is back".to_string(),
        ),
        NetworkEvent::TransportSwitched { network, from, to } => (
            json!({ "event": "road_switched", "network": network, "from": road(*from), "to": road(*to) }),
            format!(
                "traffic to {network} now goes over {} (was {})",
                road(*to),
                road(*from)
            ),
        ),
        NetworkEvent::PeerConnected {
            network,
            instance,
            transport,
            ..
        } => (
            json!({ "event": "peer_connected", "network": network, "instance": instance, "road": road(*transport) }),
            format!(
                "connected to {network} ({instance}) over {}",
                road(*transport)
            ),
        ),
        NetworkEvent::PeerDisconnected { network, reason } => (
            json!({ "event": "peer_disconnected", "network": network, "reason": reason }),
            format!("disconnected from {network}: {reason}"),
        ),
        NetworkEvent::PeerRefused { peer, reason } => (
            json!({ "event": "peer_refused", "peer": peer, "reason": reason }),
            format!("refused {peer}: {reason}"),
        ),
        NetworkEvent::SlowConsumer { total_dropped } => (
            json!({ "event": "slow_consumer", "total_dropped": total_dropped }),
            format!(
                "fell behind: the NATS client dropped inbound messages ({total_dropped} so far)"
            ),
        ),
        NetworkEvent::Lagged { missed } => (
            json!({ "event": "lagged", "missed": missed }),
            format!("missed {missed} events"),
        ),
        _ => return None,
    })
}

fn announce(global: &Global, plan: &RunConfig) {
    let nodes: Vec<&str> = plan.nodes.iter().map(|n| n.id.as_str()).collect();
    let remote: Vec<String> = plan
        .remote_actors()
        .into_iter()
        .map(|(actor, network)| format!("{actor}@{network}"))
        .collect();
    let urls = plan.network.discovery_endpoints.join(",");
    if output::human(global.json) {
        println!(
            "network {} (instance {}) running on {urls}",
            plan.network.network_id, plan.network.instance_id
        );
        println!("  nodes:  {}", nodes.join(", "));
        if !remote.is_empty() {
            println!("  remote: {}", remote.join(", "));
        }
        if !plan.capabilities.is_empty() {
            println!("  capabilities: {}", plan.capabilities.join(", "));
        }
        if !plan.tags.is_empty() {
            println!("  tags:   {}", plan.tags.join(", "));
        }
        println!("  Ctrl-C to stop");
    } else {
        output::print_json(&json!({
            "event": "running",
            "network": plan.network.network_id,
            "instance": plan.network.instance_id,
            "nats": urls,
            "nodes": nodes,
            "remote": remote,
            "capabilities": plan.capabilities,
            "tags": plan.tags,
        }));
    }
}
