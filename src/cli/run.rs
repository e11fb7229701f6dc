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

use crate::cli::Global;
use crate::cli::config::{self, Endpoint, RunConfig};
use crate::cli::json::RunEvent;
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
    let waiting = Waiting::default();
    let reporter = report_events(global, network.events(), waiting.clone());
    // Set before start(), so the first liveness entry and every discovery reply carry them.
    if let Some(options) = &plan.durable {
        network
            .set_durable(options.clone())
            .map_err(CliError::from_lib)?;
    }
    network.set_capabilities(plan.capabilities.iter().cloned());
    network.set_tags(plan.tags.iter().cloned());
    // The nodes that feed remote actors start once those are wired, the rest at start.
    let held = feeding_remote(&plan);
    let bad_connection = |i: usize, err: crate::Error| {
        CliError::usage(format!(
            "{}: line {}: connections[{i}]: {}",
            args.config.display(),
            plan.connection_lines.get(i).copied().unwrap_or_default(),
            output::flag_words(&err.to_string())
        ))
    };
    build_local(&network, &plan, &held, components, &bad_connection)?;
    let spinner = output::Spinner::start("connecting to the NATS server");
    let started = network.start().await;
    drop(spinner);
    started.map_err(CliError::from_broker)?;

    let wait = Duration::from_secs(args.wait_secs);
    let wired = wire_remote(
        global,
        &network,
        &plan,
        &held,
        wait,
        &waiting,
        &bad_connection,
    )
    .await;
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
        output::say(&format!("network {} shut down", plan.network.network_id));
    } else {
        output::print_json(&RunEvent::Stopped {
            network: plan.network.network_id.clone(),
        });
    }
    Ok(())
}

/// The local nodes whose messages can reach a remote actor: those connected to one, and
/// every node upstream of them. They start only once the remote actors are wired, so
/// nothing they emit at start (a generator's first numbers) is lost.
fn feeding_remote(plan: &RunConfig) -> HashSet<&str> {
    let local = |(from, to): &&(Endpoint, Endpoint)| !from.after_start() && !to.after_start();
    // Published ports are wired after start too, so they feed "remote" subjects.
    let mut feeding: HashSet<&str> = plan
        .connections
        .iter()
        .filter(|(from, to)| !from.after_start() && to.after_start())
        .map(|(from, _)| from.node.as_str())
        .chain(plan.publish.iter().map(|(from, _)| from.node.as_str()))
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
    !from.after_start()
        && !to.after_start()
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
    bad_connection: &dyn Fn(usize, crate::Error) -> CliError,
) -> CliResult {
    let local = network.get_local_network();
    let mut local = local.write();
    components
        .register_into(&mut local)
        .map_err(CliError::from_lib)?;
    for node in plan.nodes.iter().filter(|n| !held.contains(n.id.as_str())) {
        local
            .add_node(&node.id, &node.component, Some(node.metadata.clone()))
            .map_err(CliError::from_lib)?;
    }
    for (i, (from, to)) in plan.connections.iter().enumerate() {
        if starts_with_network(from, to, held) {
            local
                .add_connection(Connector::new(&from.node, &from.port, &to.node, &to.port))
                .map_err(|e| bad_connection(i, e))?;
        }
    }
    Ok(())
}

/// Connects to `remote`, retrying while it is not up yet, until `deadline` (`wait` after
/// the wiring began); says once that it waits.
async fn connect_waiting(
    global: &Global,
    network: &DistributedNetwork,
    remote: &str,
    (deadline, wait): (Instant, Duration),
    waiting: &Waiting,
) -> CliResult {
    let mut spinner = None;
    // Refusals while it is not up are expected, not news; the last one is the error.
    waiting.lock().insert(remote.to_string());
    let connected = loop {
        match network.connect_to(remote).await {
            Err(e) if e.is(ErrorKind::NetworkDisconnected) && Instant::now() < deadline => {
                if spinner.is_none() {
                    tell_waiting(global, remote, wait);
                    spinner = Some(output::Spinner::start(&format!(
                        "waiting for network {remote}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => break other,
        }
    };
    if connected.is_ok() {
        waiting.lock().remove(remote);
    }
    drop(spinner);
    connected.map_err(|e| {
        let mut err = CliError::from_lib(e);
        err.message = format!(
            "{}; waited {}s for it: start it first, or raise --wait-secs",
            err.message,
            wait.as_secs()
        );
        err
    })
}

/// Connects to each remote network (retrying while it is not up yet), registers its
/// actors as proxies and mounts its mounts, adds the connections that touch them, then
/// the initial packets.
#[allow(clippy::too_many_arguments)]
async fn wire_remote(
    global: &Global,
    network: &DistributedNetwork,
    plan: &RunConfig,
    held: &HashSet<&str>,
    wait: Duration,
    waiting: &Waiting,
    bad_connection: &dyn Fn(usize, crate::Error) -> CliError,
) -> CliResult {
    let deadline = Instant::now() + wait;
    for (actor, remote) in plan.remote_actors() {
        connect_waiting(global, network, &remote, (deadline, wait), waiting).await?;
        network
            .register_remote_actor(&actor, &remote)
            .await
            .map_err(CliError::from_lib)?;
    }
    for mount in &plan.mounts {
        connect_waiting(
            global,
            network,
            &mount.network_id,
            (deadline, wait),
            waiting,
        )
        .await?;
        network
            .mount_network_as_subgraph(mount.clone())
            .await
            .map_err(CliError::from_lib)?;
    }
    // The held nodes, with every connection not made yet, start together once all of
    // them are in place.
    let shared = network.get_local_network();
    shared.write().hold();
    let added = (|| {
        let mut local = shared.write();
        for node in plan.nodes.iter().filter(|n| held.contains(n.id.as_str())) {
            local
                .add_node(&node.id, &node.component, Some(node.metadata.clone()))
                .map_err(CliError::from_lib)?;
        }
        for (i, (from, to)) in plan.connections.iter().enumerate() {
            if !starts_with_network(from, to, held) {
                local
                    .add_connection(Connector::new(&from.node, &from.port, &to.node, &to.port))
                    .map_err(|e| bad_connection(i, e))?;
            }
        }
        Ok(())
    })();
    let published = plan
        .publish
        .iter()
        .try_for_each(|(from, subject)| network.publish_port(&from.node, &from.port, subject))
        .map_err(CliError::from_lib);
    let mut local = shared.write();
    let released = local.release().map_err(CliError::from_lib);
    added.and(published).and(released)?;
    for (to, value) in &plan.initial {
        let packet = InitialPacket::new(&to.node, &to.port, Message::from_json(value.clone()));
        local.add_initial(packet).map_err(CliError::from_lib)?;
    }
    Ok(())
}

/// The remote networks `run` is waiting for: refusals from them are expected until they
/// are up, so they are not reported.
type Waiting = std::sync::Arc<parking_lot::Mutex<HashSet<String>>>;

/// Says, once, that `run` waits for `remote` and for how long at most.
fn tell_waiting(global: &Global, remote: &str, wait: Duration) {
    let secs = wait.as_secs();
    if output::human(global.json) {
        output::say(&format!(
            "waiting for network {remote} (up to {secs} s; --wait-secs changes it)"
        ));
    } else {
        output::print_json(&RunEvent::Waiting {
            network: remote.to_string(),
            wait_secs: secs,
        });
    }
}

/// Prints what the operator of a bridge process wants to know as it runs: the broker
/// lost and back, peers connecting, leaving or refused, traffic changing road, and
/// messages dropped. One line each, or one JSON object each with `--json` or into a pipe.
/// The CLI's own one-shot probe networks (`reflow-cli-*`, from `networks`, `ping`,
/// `send`...) are not peers anyone asked about, and are left out.
fn report_events(
    global: &Global,
    mut events: EventStream,
    waiting: Waiting,
) -> tokio::task::JoinHandle<()> {
    let human = output::human(global.json);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if is_probe(&event) {
                continue;
            }
            if let NetworkEvent::PeerRefused { peer, .. } = &event
                && waiting.lock().contains(peer)
            {
                continue;
            }
            if let Some((json, words)) = describe(&event) {
                if human {
                    output::say(&words);
                } else {
                    output::print_json(&json);
                }
            }
        }
    })
}

/// Whether `event` is about one of the CLI's own probe networks.
fn is_probe(event: &NetworkEvent) -> bool {
    let peer = match event {
        NetworkEvent::PeerConnected { network, .. }
        | NetworkEvent::PeerDisconnected { network, .. }
        | NetworkEvent::TransportSwitched { network, .. } => network,
        NetworkEvent::PeerRefused { peer, .. } => peer,
        _ => return false,
    };
    peer.starts_with(crate::cli::CLI_PREFIX)
}

fn road(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Nats => "nats",
        TransportKind::Direct => "direct",
    }
}

/// An event as a JSON line and in words; `None` for those `networks --watch` is for.
fn describe(event: &NetworkEvent) -> Option<(RunEvent, String)> {
    Some(match event {
        NetworkEvent::BrokerLost => (
            RunEvent::BrokerLost,
            "lost the NATS server; reconnecting (peers with a bind port are reached directly)"
                .to_string(),
        ),
        NetworkEvent::BrokerRegained => (
            RunEvent::BrokerRegained,
            "the NATS server is back".to_string(),
        ),
        NetworkEvent::TransportSwitched { network, from, to } => (
            RunEvent::RoadSwitched {
                network: network.clone(),
                road: road(*to),
                was: road(*from),
            },
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
            RunEvent::PeerConnected {
                network: network.clone(),
                instance: instance.clone(),
                road: road(*transport),
            },
            format!(
                "connected to {network} ({instance}) over {}",
                road(*transport)
            ),
        ),
        NetworkEvent::PeerDisconnected { network, reason } => (
            RunEvent::PeerDisconnected {
                network: network.clone(),
                reason: reason.clone(),
            },
            format!("disconnected from {network}: {reason}"),
        ),
        NetworkEvent::PeerRefused { peer, reason } => (
            RunEvent::PeerRefused {
                network: peer.clone(),
                reason: reason.clone(),
            },
            format!("refused {peer}: {reason}"),
        ),
        NetworkEvent::SlowConsumer { total_dropped } => (
            RunEvent::SlowConsumer {
                total_dropped: *total_dropped,
            },
            format!(
                "fell behind: the NATS client dropped inbound messages ({total_dropped} so far)"
            ),
        ),
        NetworkEvent::LivenessLost { reason } => (
            RunEvent::LivenessLost {
                reason: reason.clone(),
            },
            format!("the liveness bucket does not answer ({reason}); entries are not refreshed"),
        ),
        NetworkEvent::LivenessRegained => (
            RunEvent::LivenessRegained,
            "the liveness bucket answers again".to_string(),
        ),
        NetworkEvent::Lagged { missed } => (
            RunEvent::Lagged { missed: *missed },
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
        output::say(&format!(
            "network {} (instance {}) running on {urls}",
            plan.network.network_id, plan.network.instance_id
        ));
        output::say(&format!("  nodes:  {}", nodes.join(", ")));
        if !remote.is_empty() {
            output::say(&format!("  remote: {}", remote.join(", ")));
        }
        if !plan.capabilities.is_empty() {
            output::say(&format!("  capabilities: {}", plan.capabilities.join(", ")));
        }
        if !plan.tags.is_empty() {
            output::say(&format!("  tags:   {}", plan.tags.join(", ")));
        }
        output::say("  Ctrl-C to stop");
    } else {
        output::print_json(&RunEvent::Running {
            network: plan.network.network_id.clone(),
            instance: plan.network.instance_id.clone(),
            nats: urls,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            remote,
            capabilities: plan.capabilities.clone(),
            tags: plan.tags.clone(),
        });
    }
}
