//! 200 networks in one process share one broker connection; while every one of them
//! streams through another's actor and back, one of them shuts down and a network in a
//! child process (which some of them were sending to) is killed with SIGKILL. Every
//! other network keeps sending and receiving, streamed and confirmed, with no error and
//! no sign of trouble in its events.

mod common;

use std::time::Duration;

use common::process::Doomed;
use futures::{StreamExt, TryStreamExt};
use reflow_network::Message;
use reflow_network::actor::{FnActor, ProbeActor, ProbeMessage};
use reflow_network::components::Passthrough;
use reflow_network::distributed_network::DistributedNetwork;
use reflow_network::events::{DownReason, EventStream, NetworkEvent};
use reflow_network::local_server::NatsServer;
use tokio::sync::mpsc;

const NETWORKS: usize = 200;
const HEARTBEAT_MS: u64 = 1_000;
/// Values each network streams around the ring while the others come and go.
const VALUES: i64 = 40;
/// The pace of each network's stream, so that the shutdown and the kill fall inside it.
const EVERY: Duration = Duration::from_millis(25);

fn network_id(i: usize) -> String {
    format!("n{i:03}")
}

fn doubler() -> FnActor {
    FnActor::map("in", "out", |m| {
        Message::Integer(m.as_integer().unwrap_or(-1) * 2)
    })
}

/// The network of the child process, when this binary is started as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: the child process of the shared-connection test"]
async fn child_network() {
    let Ok(url) = std::env::var("REFLOW_SHARED_URL") else {
        return;
    };
    let config = common::config(&url, "victim", "v1", HEARTBEAT_MS);
    let _victim = common::started_with(config, |n| {
        n.register_local_actor("double", doubler(), None).unwrap();
    })
    .await;
    println!("ready");
    std::future::pending::<()>().await;
}

/// One network of the 200 and what the test reads of it.
struct Member {
    network: DistributedNetwork,
    seen: mpsc::Receiver<ProbeMessage>,
    events: EventStream,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_networks_on_one_connection_survive_a_shutdown_and_a_killed_peer() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let mut child = Doomed::this_test("child_network", &[("REFLOW_SHARED_URL", url.clone())], true);
    child
        .wait_for_line("ready", Duration::from_secs(60), "starting the victim")
        .await;

    let began = std::time::Instant::now();
    let mut members: Vec<Member> = futures::stream::iter(0..NETWORKS)
        .map(|i| {
            let url = url.clone();
            async move {
                let config = common::config(&url, &network_id(i), "i1", HEARTBEAT_MS);
                let mut network = DistributedNetwork::new(config).await?;
                let (sink, seen) = ProbeActor::channel(4 * VALUES as usize);
                network.register_local_actor("double", doubler(), None)?;
                network.register_local_actor("source", Passthrough, None)?;
                network.register_local_actor("sink", sink, None)?;
                let events = network.events();
                network.start().await?;
                Ok::<_, reflow_network::Error>(Member {
                    network,
                    seen,
                    events,
                })
            }
        })
        .buffered(16)
        .try_collect()
        .await
        .unwrap();
    println!("{NETWORKS} networks started in {:.1?}", began.elapsed());
    let (consumers, _) = common::liveness_stream(&url).await;
    assert!(
        consumers <= 2,
        "{consumers} liveness consumers for two processes: the 200 do not share a connection"
    );

    // Network 0 will shut down and `victim` will be killed; first both are peers of
    // others: network 1 connects to network 0, network 2 to the victim, and each
    // confirms a send into the other's actor.
    for (from, to) in [(1, network_id(0)), (2, "victim".to_string())] {
        let network = &members[from].network;
        common::wait_for(
            "the peer in the roster",
            Duration::from_secs(10),
            || async { network.live_networks().iter().any(|n| n.network_id == to) },
        )
        .await;
        network.connect_to_network(&to).await.unwrap();
        network
            .send_to_remote_actor(&to, "double", "in", Message::Integer(1))
            .await
            .unwrap();
    }

    // Every survivor streams through the next survivor's actor, and back.
    let survivors = 1..NETWORKS;
    let next = |i: usize| if i + 1 == NETWORKS { 1 } else { i + 1 };
    let mut feeders = Vec::new();
    for i in survivors.clone() {
        let network = &members[i].network;
        let target = network_id(next(i));
        network.connect_to_network(&target).await.unwrap();
        let alias = network
            .register_remote_actor("double", &target)
            .await
            .unwrap();
        let inlet = common::wire_source_through(network, &alias, Some("sink"));
        feeders.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(EVERY);
            for v in 0..VALUES {
                ticks.tick().await;
                inlet.send(Message::Integer(v)).await.unwrap();
            }
        }));
    }

    // Meanwhile: network 0 shuts down, and the victim's process is killed.
    tokio::time::sleep(EVERY * (VALUES as u32) / 3).await;
    let mut leaving = members.remove(0);
    child.kill();
    leaving.network.shutdown().await.unwrap();
    for feeder in feeders {
        feeder.await.unwrap();
    }
    // Every survivor gets all its values back, doubled, in order.
    for member in &mut members {
        let id = member.network.get_config().network_id.clone();
        let got = common::recv_ints(
            &mut member.seen,
            VALUES as usize,
            Duration::from_secs(30),
            &format!("{id}'s values back"),
        )
        .await;
        assert_eq!(got, (0..VALUES).map(|v| v * 2).collect::<Vec<_>>(), "{id}");
    }
    // Every survivor sees both go, and confirms a send to its neighbour.
    let watcher = &mut members[100];
    for (gone, how) in [("victim", DownReason::Expired), ("n000", DownReason::Left)] {
        if watcher
            .network
            .live_networks()
            .iter()
            .any(|n| n.network_id == gone)
        {
            common::next_event(
                &mut watcher.events,
                &format!("{gone} {how:?}"),
                Duration::from_secs(15),
                |e| matches!(e, NetworkEvent::NetworkDown { network, reason, .. } if network == gone && *reason == how),
            )
            .await;
        }
    }
    for (k, member) in members.iter().enumerate() {
        let target = network_id(next(k + 1));
        member
            .network
            .send_to_remote_actor(&target, "sink", "in", Message::Integer(-1))
            .await
            .unwrap_or_else(|e| panic!("a confirmed send to {target}: {e}"));
    }
    for member in &mut members {
        let id = member.network.get_config().network_id.clone();
        let live = member.network.live_networks();
        assert!(
            live.iter()
                .all(|n| n.network_id != "victim" && n.network_id != "n000"),
            "{id} still counts a departed network live"
        );
        assert_eq!(live.len(), NETWORKS - 1, "{id}'s roster");
        let stats = member.network.stats();
        assert_eq!(stats.slow_consumer_drops, 0, "{id} dropped messages");
        while let Ok(Some(event)) = tokio::time::timeout(Duration::ZERO, member.events.recv()).await
        {
            assert!(
                !matches!(
                    event,
                    NetworkEvent::BrokerLost
                        | NetworkEvent::LivenessLost { .. }
                        | NetworkEvent::SlowConsumer { .. }
                        | NetworkEvent::Lagged { .. }
                ),
                "{id} saw {event:?}"
            );
        }
        assert!(member.network.is_broker_connected(), "{id}");
    }
    println!(
        "{} networks kept streaming and confirming through a shutdown and a kill ({:.1?} in all)",
        NETWORKS - 1,
        began.elapsed()
    );
}
