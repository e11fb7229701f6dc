//! The calls Reflow's guides use beyond the seed, each against a real server: health and
//! registry lookups, the bridge status, discovery registration, proxies as components,
//! where a remote actor's outputs go, and mounting a remote network as a subgraph.

mod common;

use std::time::Duration;

use reflow_network::Message;
use reflow_network::actor::{FnActor, ProbeActor};
use reflow_network::components::Passthrough;
use reflow_network::distributed_network::{DistributedNetwork, LinkState, SubgraphMountConfig};
use reflow_network::events::NetworkEvent;
use reflow_network::local_server::NatsServer;
use reflow_network::network::Connector;

const WAIT: Duration = Duration::from_secs(10);

fn doubler() -> FnActor {
    FnActor::map("in", "out", |m| {
        Message::Integer(m.as_integer().unwrap_or(0) * 2)
    })
}

/// Network `B` hosting `double` (with metadata `capability = "math"`) and `echo`.
async fn network_b(url: &str) -> DistributedNetwork {
    common::started_with(common::config(url, "B", "b1", 300), |b| {
        let metadata = [("capability".to_string(), serde_json::json!("math"))].into();
        b.register_local_actor("double", doubler(), Some(metadata))
            .unwrap();
        b.register_local_actor("echo", Passthrough, None).unwrap();
    })
    .await
}

/// Network `A` with a probe `seen`, connected to `B`.
async fn network_a(
    url: &str,
) -> (
    DistributedNetwork,
    tokio::sync::mpsc::Receiver<reflow_network::actor::ProbeMessage>,
) {
    let (probe, seen) = ProbeActor::channel(64);
    let a = common::started_with(common::config(url, "A", "a1", 300), |a| {
        a.register_local_actor("seen", probe, None).unwrap();
    })
    .await;
    a.connect_to_network("B").await.unwrap();
    (a, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_info_availability_and_health_come_from_the_liveness_roster() {
    let server = NatsServer::start().await.unwrap();
    let mut b = network_b(&server.url()).await;
    let (a, _seen) = network_a(&server.url()).await;

    let info = a.get_network_info("B").await.unwrap();
    assert_eq!(info.network_id, "B");
    assert_eq!(info.actors, ["double", "echo"]);
    assert!(info.endpoint.starts_with("nats://"), "{}", info.endpoint);
    assert!(info.last_seen.is_some());
    assert!(info.is_healthy());
    assert!(a.is_network_available("B").await);
    assert!(!a.is_network_available("nobody").await);
    let err = a.get_network_info("nobody").await.unwrap_err();
    assert!(err.to_string().contains("nobody"), "{err}");

    b.shutdown().await.unwrap();
    common::wait_for("B to leave the roster", WAIT, || async {
        !a.is_network_available("B").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_of_actors_connections_and_local_types() {
    let server = NatsServer::start().await.unwrap();
    let _b = network_b(&server.url()).await;
    let (a, _seen) = network_a(&server.url()).await;

    assert!(a.is_connected_to("B").await);
    a.reconnect_to_network("B").await.unwrap();
    assert!(a.is_connected_to("B").await);

    let mut pairs = a.list_remote_actors().await.unwrap();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            ("double".to_string(), "B".to_string()),
            ("echo".to_string(), "B".to_string())
        ]
    );
    let actors = a.list_actors_on_network("B").await.unwrap();
    let double = actors.iter().find(|x| x.name == "double").unwrap();
    assert_eq!(double.component_type, "double");
    assert_eq!(double.capabilities, ["math"], "the singular key counts");

    a.register_remote_actor("echo", "B").await.unwrap();
    assert!(a.has_local_actor("seen"));
    assert!(!a.has_local_actor("echo@B"), "a proxy is not a local actor");
    assert!(!a.has_local_actor("nothing"));
    assert_eq!(a.get_local_actor_type("seen").as_deref(), Some("seen"));
    assert_eq!(a.get_local_actor_type("echo@B"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshing_a_remote_actor_takes_its_new_ports_and_keeps_the_connections() {
    let server = NatsServer::start().await.unwrap();
    let b = network_b(&server.url()).await;
    let (a, mut seen) = network_a(&server.url()).await;
    let alias = a.register_remote_actor("double", "B").await.unwrap();
    a.get_local_network()
        .write()
        .add_connection(Connector::new(&alias, "out", "seen", "in"))
        .unwrap();
    let unchanged = a.refresh_remote_actor(&alias).await.unwrap();
    assert_eq!(unchanged.outports, ["out"]);

    // B's `double` is made again with a second out-port.
    {
        let local = b.get_local_network();
        let mut local = local.write();
        local.remove_node("double").unwrap();
        local
            .register_actor(
                "double2",
                FnActor::new(["in"], ["out", "log"], |_, m| {
                    Ok(vec![(
                        "out".to_string(),
                        Message::Integer(m.as_integer().unwrap_or(0) * 2),
                    )])
                }),
            )
            .unwrap();
        local.add_node("double", "double2", None).unwrap();
    }
    let refreshed = a.refresh_remote_actor(&alias).await.unwrap();
    assert_eq!(refreshed.outports, ["out", "log"]);
    let node = a.get_local_network().read().node(&alias).cloned().unwrap();
    assert_eq!(node.outports, ["out", "log"]);
    // The connection to `seen` was kept and works.
    let input = a.get_local_network().read().inlet(&alias, "in").unwrap();
    input.send(Message::Integer(21)).await.unwrap();
    let got = common::recv_ints(&mut seen, 1, WAIT, "doubled after refresh").await;
    assert_eq!(got, [42]);
    let err = a.refresh_remote_actor("nope").await.unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_status_maps_each_connected_network_to_its_link() {
    let server = NatsServer::start().await.unwrap();
    let mut b = network_b(&server.url()).await;
    let (a, _seen) = network_a(&server.url()).await;
    let status = a.get_bridge_status().await.unwrap();
    assert!(status.broker_connected);
    let link = &status.connected_networks["B"];
    assert_eq!(link.state, LinkState::Connected);
    assert_eq!(link.unacknowledged, 0);
    assert_eq!(link.last_error, None);

    b.shutdown().await.unwrap();
    common::wait_for("B's link to be waiting", WAIT, || async {
        a.get_bridge_status().await.unwrap().connected_networks["B"].state == LinkState::Waiting
    })
    .await;
    let err = a
        .send_to_remote_actor("B", "double", "in", Message::Integer(1))
        .await
        .unwrap_err();
    let status = a.get_bridge_status().await.unwrap();
    assert_eq!(
        status.connected_networks["B"].last_error.as_deref(),
        Some(err.to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_registration_means_the_liveness_entry_and_the_responder() {
    let server = NatsServer::start().await.unwrap();
    let b = network_b(&server.url()).await;
    let (a, _seen) = network_a(&server.url()).await;
    let mut events = a.events();

    let rtt = a.ping_discovery_service().await.unwrap();
    assert!(rtt < WAIT);

    b.unregister_from_discovery().await.unwrap();
    common::next_event(
        &mut events,
        "B to leave",
        WAIT,
        |e| matches!(e, NetworkEvent::NetworkDown { network, .. } if network == "B"),
    )
    .await;
    assert!(!a.is_network_available("B").await);
    let found = a.discover_networks().await.unwrap();
    assert!(!found.iter().any(|n| n.network_id == "B"), "{found:?}");
    // Still running: a confirmed send is handled.
    a.send_to_remote_actor("B", "echo", "in", Message::Integer(1))
        .await
        .unwrap();

    b.register_with_discovery().await.unwrap();
    assert!(
        a.discover_networks()
            .await
            .unwrap()
            .iter()
            .any(|n| n.network_id == "B")
    );
    common::wait_for("B back in the roster", WAIT, || async {
        a.is_network_available("B").await
    })
    .await;

    // Without refreshes the entry expires, while B goes on answering discovery.
    b.stop_discovery_refresh().await.unwrap();
    common::next_event(
        &mut events,
        "B's entry to expire",
        WAIT,
        |e| matches!(e, NetworkEvent::NetworkDown { network, .. } if network == "B"),
    )
    .await;
    assert!(!a.is_network_available("B").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_remote_actor_is_a_component_and_outputs_return_to_the_node_that_sent() {
    let server = NatsServer::start().await.unwrap();
    let _b = network_b(&server.url()).await;
    let (a, _seen) = network_a(&server.url()).await;
    let alias = a.register_remote_actor("double", "B").await.unwrap();
    let (one, mut from_one) = ProbeActor::channel(16);
    let (two, mut from_two) = ProbeActor::channel(16);
    let (in_one, in_two) = {
        let local = a.get_local_network();
        let mut local = local.write();
        local.register_actor("one", one).unwrap();
        local.register_actor("two", two).unwrap();
        local.add_node("p1", "one", None).unwrap();
        local.add_node("p2", "two", None).unwrap();
        // Another proxy of the same remote actor, made from its component.
        local.add_node("my_double", &alias, None).unwrap();
        local
            .add_connection(Connector::new(&alias, "out", "p1", "in"))
            .unwrap();
        local
            .add_connection(Connector::new("my_double", "out", "p2", "in"))
            .unwrap();
        (
            local.inlet(&alias, "in").unwrap(),
            local.inlet("my_double", "in").unwrap(),
        )
    };
    in_two.send(Message::Integer(5)).await.unwrap();
    in_one.send(Message::Integer(1)).await.unwrap();
    assert_eq!(
        common::recv_ints(&mut from_two, 1, WAIT, "my_double").await,
        [10]
    );
    assert_eq!(
        common::recv_ints(&mut from_one, 1, WAIT, "double@B").await,
        [2]
    );
    // Neither saw the other's output.
    in_two.send(Message::Integer(7)).await.unwrap();
    assert_eq!(
        common::recv_ints(&mut from_two, 1, WAIT, "my_double").await,
        [14]
    );
    assert!(
        from_one.try_recv().is_err(),
        "double@B got my_double's output"
    );
    let listed: Vec<String> = a
        .list_registered_remote_actors()
        .await
        .into_iter()
        .map(|(alias, _)| alias)
        .collect();
    assert!(listed.contains(&"my_double".to_string()), "{listed:?}");
    a.get_local_network()
        .write()
        .remove_node("my_double")
        .unwrap();
    common::wait_for("my_double to unregister", WAIT, || async {
        !a.list_registered_remote_actors()
            .await
            .iter()
            .any(|(alias, _)| alias == "my_double")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_of_a_confirmed_send_go_nowhere_not_to_every_attached_proxy() {
    let server = NatsServer::start().await.unwrap();
    let _b = network_b(&server.url()).await;
    let (a, mut seen) = network_a(&server.url()).await;
    let alias = a.register_remote_actor("double", "B").await.unwrap();
    let input = {
        let local = a.get_local_network();
        let mut local = local.write();
        local
            .add_connection(Connector::new(&alias, "out", "seen", "in"))
            .unwrap();
        local.inlet(&alias, "in").unwrap()
    };
    let mut c = common::started(common::config(&server.url(), "C", "c1", 300)).await;
    c.connect_to_network("B").await.unwrap();
    c.send_to_remote_actor("B", "double", "in", Message::Integer(100))
        .await
        .unwrap();
    // A's own input comes back; C's output never reaches A.
    input.send(Message::Integer(3)).await.unwrap();
    assert_eq!(common::recv_ints(&mut seen, 1, WAIT, "A's own").await, [6]);
    assert!(seen.try_recv().is_err(), "C's output reached A");
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mounted_network_follows_its_actors_and_honours_its_globs() {
    let server = NatsServer::start().await.unwrap();
    let server_net =
        common::started_with(common::config(&server.url(), "server", "s1", 300), |s| {
            s.register_local_actor("data_processor", doubler(), None)
                .unwrap();
            s.register_local_actor("data_internal", Passthrough, None)
                .unwrap();
            s.register_local_actor("model", Passthrough, None).unwrap();
        })
        .await;
    let (probe, mut seen) = ProbeActor::channel(16);
    let app = common::started_with(common::config(&server.url(), "app", "a1", 300), |a| {
        a.register_local_actor("seen", probe, None).unwrap();
    })
    .await;
    let mounted = app
        .mount_network_as_subgraph(SubgraphMountConfig {
            mount_point: "site/server".into(),
            network_id: "server".into(),
            include_patterns: vec!["data_*".into()],
            exclude_patterns: vec!["*_internal".into()],
        })
        .await
        .unwrap();
    assert_eq!(mounted, ["site/server/data_processor"]);
    let input = {
        let local = app.get_local_network();
        let mut local = local.write();
        assert!(!local.has_actor("site/server/model"));
        assert!(!local.has_actor("site/server/data_internal"));
        local
            .add_connection(Connector::new(
                "site/server/data_processor",
                "out",
                "seen",
                "in",
            ))
            .unwrap();
        local.inlet("site/server/data_processor", "in").unwrap()
    };
    input.send(Message::Integer(4)).await.unwrap();
    assert_eq!(
        common::recv_ints(&mut seen, 1, WAIT, "through the mount").await,
        [8]
    );

    // An actor the remote network adds while mounted appears under the mount.
    server_net
        .register_local_actor("data_late", doubler(), None)
        .unwrap();
    common::wait_for("data_late to be mounted", WAIT, || async {
        app.get_local_network()
            .read()
            .node("site/server/data_late")
            .is_some()
    })
    .await;
    assert!(
        !app.get_local_network()
            .read()
            .has_actor("site/server/data_internal")
    );
    // One it removes goes.
    server_net
        .get_local_network()
        .write()
        .remove_node("data_late")
        .unwrap();
    common::wait_for("data_late to be unmounted", WAIT, || async {
        app.get_local_network()
            .read()
            .node("site/server/data_late")
            .is_none()
    })
    .await;

    let err = app
        .mount_network_as_subgraph(SubgraphMountConfig {
            mount_point: "site/server".into(),
            network_id: "server".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already"), "{err}");
    app.unmount_subgraph("site/server").await.unwrap();
    assert!(
        app.get_local_network()
            .read()
            .node("site/server/data_processor")
            .is_none()
    );
    assert!(app.unmount_subgraph("site/server").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_config_mounts_a_network_and_wires_its_actors() {
    use futures::StreamExt;
    let server = NatsServer::start().await.unwrap();
    let _remote = common::started_with(common::config(&server.url(), "server", "s1", 300), |s| {
        s.register_local_actor("data_processor", doubler(), None)
            .unwrap();
        s.register_local_actor("data_internal", Passthrough, None)
            .unwrap();
    })
    .await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut results = client.subscribe("app.results").await.unwrap();
    client.flush().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("app.toml");
    std::fs::write(
        &config,
        r#"[network]
network_id = "app"
heartbeat_interval_ms = 500

[[mount]]
mount_point = "server"
network_id = "server"
include_patterns = ["data_*"]
exclude_patterns = ["*_internal"]

[[nodes]]
id = "gen"
component = "generator"
metadata = { count = 3 }

[[connections]]
from = "gen.out"
to = "server/data_processor.in"

[[publish]]
from = "server/data_processor.out"
subject = "app.results"
"#,
    )
    .unwrap();
    let app = common::process::Process::run(&server.url(), &config, "app");
    let mut got = Vec::new();
    while got.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(30), results.next())
            .await
            .unwrap_or_else(|_| panic!("got {got:?}\n{}", app.tail()))
            .unwrap();
        got.push(serde_json::from_slice::<i64>(&message.payload).unwrap());
    }
    assert_eq!(got, [0, 2, 4], "{}", app.tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_match_on_the_variants_the_guides_use() {
    use reflow_network::distributed_network::{DistributedConfig, DistributedError};
    use reflow_network::{Error, ErrorKind};

    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let guarded = |network: &str, token: &str| DistributedConfig {
        auth_token: Some(token.into()),
        ..common::config(&url, network, "i1", 300)
    };
    let _vault = common::started(guarded("vault", "right")).await;
    let intruder = common::started(guarded("intruder", "wrong")).await;
    // As the guides write it.
    match intruder.connect_to_network("vault").await {
        Err(DistributedError::AuthenticationFailed) => {}
        other => panic!("expected AuthenticationFailed, got {other:?}"),
    }
    // The same failure, with its message.
    let err = intruder.connect_to("vault").await.unwrap_err();
    assert!(err.is(ErrorKind::AuthenticationFailed), "{err}");
    assert!(err.detail().contains("vault"), "{err}");

    // Something listens on the network's subjects and never answers: a timeout.
    let mut config = common::config(&url, "caller", "c1", 300);
    config.local_network_config.request_timeout_ms = 300;
    let caller = common::started(config).await;
    let mute = async_nats::connect(&url).await.unwrap();
    let _silence = mute.subscribe("_reflow.mute.>").await.unwrap();
    mute.flush().await.unwrap();
    match caller.connect_to_network("mute").await {
        Err(DistributedError::ConnectionTimeout) => {}
        other => panic!("expected ConnectionTimeout, got {other:?}"),
    }

    // Anything else keeps the library's error whole, and `?` converts it back.
    let err = caller.connect_to_network("ghost").await.unwrap_err();
    let DistributedError::Other(inner) = &err else {
        panic!("expected Other, got {err:?}");
    };
    assert!(inner.is(ErrorKind::NetworkDisconnected), "{inner}");
    assert!(err.to_string().contains("ghost"), "{err}");
    let back: Error = err.into();
    assert!(back.is(ErrorKind::NetworkDisconnected));
    let timed_out: Result<(), Error> = async {
        caller.connect_to_network("mute").await?;
        Ok(())
    }
    .await;
    assert!(timed_out.unwrap_err().is(ErrorKind::Timeout));
}
