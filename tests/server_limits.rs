//! A NATS server limit reached: `start()` fails with an error that names the limit and
//! the server setting that raises it, and the networks already running keep running.

mod common;

use std::time::Duration;

use reflow_network::ErrorKind;
use reflow_network::distributed_network::DistributedNetwork;
use reflow_network::local_server::{NatsServer, ServerOptions};

/// Starts `network` on its own connection (as a network of another process would) and
/// returns the error `start()` fails with.
async fn refused_start(url: &str, network: &str) -> reflow_network::Error {
    let mut late = DistributedNetwork::new(common::config(url, network, "i", 1_000))
        .await
        .unwrap();
    late.use_own_connection(true);
    late.start()
        .await
        .expect_err("a start past the server's limit must fail")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_accounts_consumer_limit_start_names_max_consumers_and_others_run_on() {
    // An account that may hold one consumer: the first process's liveness watcher.
    let server = NatsServer::start_with(ServerOptions::new().extra_config(
        "accounts { LIMITED: { jetstream: { max_consumers: 1 }, users: [ \
         { user: \"a\", password: \"a\" } ] } }",
    ))
    .await
    .unwrap();
    let url = format!("nats://a:a@127.0.0.1:{}", server.port());
    let first = common::started(common::config(&url, "first", "i", 1_000)).await;

    let err = refused_start(&url, "second").await;
    println!("{err}");
    assert_eq!(err.kind(), ErrorKind::ServerLimit, "{err}");
    assert!(err.to_string().contains("max_consumers"), "{err}");

    // The first network, and networks that share its connection, are untouched.
    let sharing = common::started(common::config(&url, "sharing", "i", 1_000)).await;
    first.ping_network("sharing").await.unwrap();
    sharing.ping_network("first").await.unwrap();
    assert_eq!(first.live_networks().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_servers_connection_limit_start_names_max_connections_and_others_run_on() {
    let server = NatsServer::start_with(ServerOptions::new().extra_config("max_connections: 1"))
        .await
        .unwrap();
    let url = server.url();
    let first = common::started(common::config(&url, "first", "i", 1_000)).await;

    let err = tokio::time::timeout(Duration::from_secs(10), refused_start(&url, "second"))
        .await
        .expect("a refused connection fails the start at once");
    println!("{err}");
    assert_eq!(err.kind(), ErrorKind::ServerLimit, "{err}");
    assert!(err.to_string().contains("max_connections"), "{err}");

    let sharing = common::started(common::config(&url, "sharing", "i", 1_000)).await;
    first.ping_network("sharing").await.unwrap();
    assert_eq!(sharing.live_networks().len(), 2);
}
