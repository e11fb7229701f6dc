//! Plain NATS in and out: a client with no reflow envelope (async-nats alone) sends JSON
//! into an actor, by request (confirmed once handled) and by publish, and reads the
//! actor's outputs as JSON on a plain subject; the Services API lists the in-ports with
//! what plain clients did there; a bridge process publishes ports its config names.

mod common;

use std::time::Duration;

use async_nats::HeaderMap;
use futures::StreamExt;
use reflow_network::Message;
use reflow_network::actor::FnActor;
use reflow_network::distributed_network::DistributedNetwork;
use reflow_network::local_server::NatsServer;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    headers
}

/// Network `B` with `double` (integers doubled, on `out`), published on `results.doubled`.
async fn doubling_network(url: &str, token: Option<&str>) -> DistributedNetwork {
    let mut config = common::config(url, "B", "b1", 500);
    config.auth_token = token.map(str::to_string);
    let network = common::started_with(config, |network| {
        let double = FnActor::map("in", "out", |m| {
            Message::Integer(m.as_integer().expect("an integer") * 2)
        });
        network
            .register_local_actor("double", double, None)
            .unwrap();
    })
    .await;
    network
        .publish_port("double", "out", "results.doubled")
        .unwrap();
    network
}

async fn request(client: &async_nats::Client, subject: &str, body: &str) -> async_nats::Message {
    tokio::time::timeout(
        WAIT,
        client.request_with_headers(subject.to_string(), json_headers(), body.to_string().into()),
    )
    .await
    .expect("an answer in time")
    .expect("an answer")
}

/// The next message on a results subscription, within `WAIT`.
async fn next_result(results: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(WAIT, results.next())
        .await
        .expect("a result in time")
        .expect("the subscription open")
}

/// The JSON payload of an answer or a result.
fn body(message: &async_nats::Message) -> Value {
    serde_json::from_slice(&message.payload).expect("a JSON payload")
}

/// The endpoint on `subject` in network B's Services API answer to `verb`.
async fn service_endpoint(client: &async_nats::Client, verb: &str, subject: &str) -> Value {
    let answer = client
        .request(format!("$SRV.{verb}.B"), "".into())
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&answer.payload).unwrap();
    answer["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subject"] == json!(subject))
        .unwrap_or_else(|| panic!("no endpoint for {subject}: {answer}"))
        .clone()
}

fn header<'m>(message: &'m async_nats::Message, name: &str) -> Option<&'m str> {
    message.headers.as_ref()?.get(name).map(|v| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_client_sends_json_in_by_request_and_publish_and_reads_json_out() {
    let server = NatsServer::start().await.unwrap();
    let network = doubling_network(&server.url(), None).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut results = client.subscribe("results.doubled").await.unwrap();
    client.flush().await.unwrap();

    // A request is answered once handled, and its output is on the plain subject.
    let answer = request(&client, "B.double.in", "21").await;
    assert_eq!(body(&answer), json!({"handled": true}));
    let out = next_result(&mut results).await;
    assert_eq!(body(&out), json!(42));
    assert_eq!(header(&out, "Content-Type"), Some("application/json"));
    assert_eq!(header(&out, "Reflow-From"), Some("B.double.out"));

    // A publish is delivered too (at most once: nobody hears back).
    client
        .publish_with_headers("B.double.in", json_headers(), "5".into())
        .await
        .unwrap();
    let out = next_result(&mut results).await;
    assert_eq!(body(&out), json!(10));

    // Bad input is refused with an answer naming what was wrong; serving goes on.
    let refused = request(&client, "B.double.in", "{not json").await;
    assert_eq!(body(&refused)["kind"], json!("Encoding"));
    assert!(
        body(&refused)["error"]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{:?}",
        body(&refused)
    );
    assert_eq!(header(&refused, "Nats-Service-Error-Code"), Some("400"));
    let missing = request(&client, "B.nope.in", "1").await;
    assert_eq!(body(&missing)["kind"], json!("ActorNotFound"));
    assert_eq!(header(&missing, "Nats-Service-Error-Code"), Some("404"));
    let answer = request(&client, "B.double.in", "3").await;
    assert_eq!(body(&answer), json!({"handled": true}));
    let out = next_result(&mut results).await;
    assert_eq!(body(&out), json!(6));

    // The Services API lists the in-port, with what plain clients did there.
    let endpoint = service_endpoint(&client, "INFO", "B.double.in").await;
    assert_eq!(endpoint["name"], json!("double-in"));
    assert_eq!(endpoint["queue_group"], json!("B"));
    let endpoint = service_endpoint(&client, "STATS", "B.double.in").await;
    assert_eq!(endpoint["num_requests"], json!(4), "{endpoint}");
    assert_eq!(endpoint["num_errors"], json!(1), "{endpoint}");
    assert!(
        endpoint["last_error"]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{endpoint}"
    );
    drop(network);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_with_an_auth_token_refuses_plain_json() {
    let server = NatsServer::start().await.unwrap();
    let network = doubling_network(&server.url(), Some("s3cret")).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let refused = request(&client, "B.double.in", "21").await;
    assert_eq!(body(&refused)["kind"], json!("AuthenticationFailed"));
    assert_eq!(header(&refused, "Nats-Service-Error-Code"), Some("401"));
    assert!(network.stats().unauthenticated_in >= 1);
}

#[test]
fn publishing_a_port_names_what_is_wrong() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let server = NatsServer::start().await.unwrap();
        let network = doubling_network(&server.url(), None).await;
        let err = network.publish_port("nope", "out", "x.y").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = network.publish_port("double", "nope", "x.y").unwrap_err();
        assert!(err.to_string().contains("no out-port \"nope\""), "{err}");
        let err = network.publish_port("double", "out", "x.>").unwrap_err();
        assert!(err.to_string().contains("wildcard"), "{err}");
        let err = network
            .publish_port("double", "out", "_reflow.x")
            .unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_process_publishes_the_ports_its_config_names() {
    let server = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stats.toml");
    std::fs::write(
        &config,
        "[network]\nnetwork_id = \"stats\"\nheartbeat_interval_ms = 500\n\n\
         [[nodes]]\nid = \"tally\"\ncomponent = \"counter\"\n\n\
         [[publish]]\nfrom = \"tally.count\"\nsubject = \"stats.counts\"\n",
    )
    .unwrap();
    let bridge = common::process::Process::run(&server.url(), &config, "stats");
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut counts = client.subscribe("stats.counts").await.unwrap();
    client.flush().await.unwrap();
    // Until the bridge is up, a request finds no responder.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let answer = loop {
        match client
            .request_with_headers("stats.tally.in", json_headers(), "\"hello\"".into())
            .await
        {
            Ok(answer) => break answer,
            Err(err) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the bridge never answered: {err}\n{}",
                    bridge.tail()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(body(&answer), json!({"handled": true}), "{}", bridge.tail());
    let out = tokio::time::timeout(WAIT, counts.next())
        .await
        .unwrap_or_else(|_| panic!("nothing on stats.counts\n{}", bridge.tail()))
        .unwrap();
    assert_eq!(body(&out), json!(1));
    assert_eq!(header(&out, "Reflow-From"), Some("stats.tally.count"));
}
