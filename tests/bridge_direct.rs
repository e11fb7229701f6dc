//! The bridge with no broker at all: networks that reach each other only over direct
//! links, by address.

mod common;

use std::time::Duration;

use common::free_port;
use reflow_network::Message;
use reflow_network::actor::ProbeActor;
use reflow_network::distributed_network::{DistributedConfig, DistributedNetwork};

/// A network with a direct listener on `port`, whose broker URL leads nowhere.
fn brokerless(network: &str, port: u16, nowhere: &str) -> DistributedConfig {
    DistributedConfig {
        bind_address: "127.0.0.1".into(),
        bind_port: port,
        ..common::config(nowhere, network, "i1", 1_000)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_streams_go_direct_in_order_and_shutdown_completes() {
    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    let b_port = free_port();
    let mut b = DistributedNetwork::new(brokerless("B", b_port, &nowhere))
        .await
        .unwrap();
    let (probe, mut seen) = ProbeActor::channel(5_000);
    b.register_local_actor("sink", probe, None).unwrap();
    b.start().await.unwrap();
    let mut a = DistributedNetwork::new(brokerless("A", free_port(), &nowhere))
        .await
        .unwrap();
    a.start().await.unwrap();
    a.connect_to_network(&format!("127.0.0.1:{b_port}"))
        .await
        .unwrap();
    let alias = a.register_remote_actor("sink", "B").await.unwrap();
    let inlet = a.get_local_network().read().inlet(&alias, "in").unwrap();
    for i in 0..2_000i64 {
        inlet.send(Message::Integer(i)).await.unwrap();
    }
    for i in 0..2_000i64 {
        let got = tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .expect("a message over the direct link")
            .unwrap();
        assert_eq!(got.message, Message::Integer(i));
    }
    // Shutting down must not wait for a broker that never answered.
    tokio::time::timeout(Duration::from_secs(20), async {
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    })
    .await
    .expect("shutdown without a broker completes");
}
