//! The local server harness, against real nats-server processes: the rest of the test suite
//! relies on it killing, freezing and restarting servers faithfully.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::{Client, ConnectErrorKind, ConnectOptions};
use common::wait_for;
use futures::StreamExt;
use reflow_network::local_server::{
    MIN_VERSION, NatsCluster, NatsServer, ServerOptions, find_nats_server,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// A client of `server` that retries quickly after losing it, so tests need not wait out
/// async-nats's default back-off.
async fn connect(server: &NatsServer) -> anyhow::Result<Client> {
    Ok(server
        .connect_options()
        .reconnect_delay_callback(|_| Duration::from_millis(50))
        .connect(server.url())
        .await?)
}

/// Subscribes, publishes `payload` and asserts it comes back, all through `client`.
async fn roundtrip(client: &Client, payload: &'static str) -> anyhow::Result<()> {
    let subject = format!("roundtrip.{}", uuid::Uuid::new_v4().simple());
    let mut subscription = client.subscribe(subject.clone()).await?;
    client.flush().await?;
    client.publish(subject, payload.into()).await?;
    client.flush().await?;
    let message = timeout(WAIT, subscription.next())
        .await?
        .expect("subscription open");
    assert_eq!(message.payload, payload);
    Ok(())
}

/// Whether a process with `pid` exists (Linux).
fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn finds_a_binary_new_enough_for_per_message_ttls() {
    let binary = find_nats_server().expect("a nats-server can be had");
    assert!(binary.version() >= MIN_VERSION, "{binary:?}");
    assert!(binary.path().is_file(), "{binary:?}");
}

#[tokio::test]
async fn killed_server_restarts_on_the_same_port_and_the_same_client_reconnects()
-> anyhow::Result<()> {
    let mut server = NatsServer::start().await?;
    let port = server.port();
    let first_pid = server.pid().expect("a running server has a pid");
    let client = connect(&server).await?;
    roundtrip(&client, "before the crash").await?;

    server.kill().await?;
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    assert!(!process_exists(first_pid), "SIGKILL reaps the process");
    wait_for("the client to see the server gone", WAIT, || async {
        client.connection_state() == State::Disconnected
    })
    .await;
    let flushed = timeout(Duration::from_millis(300), client.flush()).await;
    assert!(
        !matches!(flushed, Ok(Ok(()))),
        "a flush cannot succeed while the server is down"
    );

    server.restart().await?;
    assert_eq!(server.port(), port, "a restarted server keeps its port");
    assert!(server.is_running());
    wait_for("the same client to reconnect", WAIT, || async {
        client.connection_state() == State::Connected
    })
    .await;
    roundtrip(&client, "after the restart").await?;
    Ok(())
}

#[tokio::test]
async fn paused_server_answers_nothing_until_resumed() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let responder = connect(&server).await?;
    let mut requests = responder.subscribe("echo").await?;
    responder.flush().await?;
    let echo = tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                let _ = responder.publish(reply, request.payload).await;
            }
        }
    });
    let client = connect(&server).await?;
    let answer = client.request("echo", "one".into()).await?;
    assert_eq!(answer.payload, "one");

    server.pause().await?;
    let asked = timeout(
        Duration::from_millis(300),
        client.request("echo", "two".into()),
    )
    .await;
    assert!(asked.is_err(), "a paused server answered: {asked:?}");

    server.resume().await?;
    wait_for("a request to be answered after resume", WAIT, || async {
        let asked = timeout(
            Duration::from_millis(500),
            client.request("echo", "three".into()),
        );
        matches!(asked.await, Ok(Ok(answer)) if answer.payload == "three")
    })
    .await;
    echo.abort();
    Ok(())
}

#[tokio::test]
async fn token_server_refuses_clients_without_the_token() -> anyhow::Result<()> {
    let server = NatsServer::start_with(ServerOptions::new().token("s3cret")).await?;

    let refused_clients = [
        ("no token", ConnectOptions::new()),
        ("a wrong token", ConnectOptions::with_token("guess".into())),
    ];
    for (what, options) in refused_clients {
        let refused = options
            .connect(server.url())
            .await
            .expect_err(&format!("{what} must not connect"));
        assert_eq!(
            refused.kind(),
            ConnectErrorKind::AuthorizationViolation,
            "{what}: {refused}"
        );
    }

    let client = ConnectOptions::with_token("s3cret".into())
        .connect(server.url())
        .await?;
    roundtrip(&client, "authorized").await?;
    Ok(())
}

#[tokio::test]
async fn three_node_cluster_carries_a_message_from_node_one_to_node_three() -> anyhow::Result<()> {
    let cluster = NatsCluster::start(3, ServerOptions::default()).await?;
    let urls = cluster.urls();
    assert_eq!(urls.len(), 3);
    assert!(urls[0] != urls[1] && urls[1] != urls[2] && urls[0] != urls[2]);

    let publisher = connect(cluster.node(0)).await?;
    let receiver = connect(cluster.node(2)).await?;
    let mut subscription = receiver.subscribe("cluster.hello").await?;
    receiver.flush().await?;

    // The subscription's interest reaches node 1 over the route a moment later; publish
    // until it has.
    let deadline = Instant::now() + WAIT;
    let message = loop {
        publisher
            .publish("cluster.hello", "from node 1".into())
            .await?;
        publisher.flush().await?;
        if let Ok(Some(message)) = timeout(Duration::from_millis(50), subscription.next()).await {
            break message;
        }
        assert!(
            Instant::now() < deadline,
            "node 3 never received node 1's message"
        );
    };
    assert_eq!(message.payload, "from node 1");
    Ok(())
}

#[tokio::test]
async fn killed_cluster_node_restarts_on_its_ports_and_rejoins() -> anyhow::Result<()> {
    let mut cluster = NatsCluster::start(3, ServerOptions::default()).await?;
    let port = cluster.node(1).port();

    cluster.node_mut(1).kill().await?;
    assert!(!cluster.node_mut(1).is_running());
    cluster.node_mut(1).restart().await?;

    assert_eq!(cluster.node(1).port(), port);
    cluster.wait_until_formed().await?;
    Ok(())
}

#[tokio::test]
async fn jetstream_is_on_and_its_store_survives_a_restart() -> anyhow::Result<()> {
    let mut server = NatsServer::start().await?;
    let client = connect(&server).await?;
    let jetstream = async_nats::jetstream::new(client.clone());
    let bucket = jetstream
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "reflow_harness".into(),
            ..Default::default()
        })
        .await?;
    bucket.put("greeting", "hello".into()).await?;
    let store = server.store_dir().expect("a process keeps its store here");
    assert!(store.join("jetstream").is_dir(), "{}", store.display());

    server.stop().await?;
    server.restart().await?;
    wait_for("the client to reconnect", WAIT, || async {
        client.connection_state() == State::Connected
    })
    .await;
    let bucket = jetstream.get_key_value("reflow_harness").await?;
    assert_eq!(bucket.get("greeting").await?, Some("hello".into()));
    Ok(())
}

#[tokio::test]
async fn options_reach_the_server() -> anyhow::Result<()> {
    let server = NatsServer::start_with(
        ServerOptions::new()
            .name("harness")
            .max_payload(2048)
            .monitoring(true)
            .jetstream(false),
    )
    .await?;
    let client = connect(&server).await?;
    let info = client.server_info();
    assert_eq!(info.server_name, "harness");
    assert_eq!(info.max_payload, 2048);
    assert!(!info.jetstream);

    let monitoring = server.monitoring_url().expect("monitoring is on");
    let address = monitoring.trim_start_matches("http://");
    let mut http = tokio::net::TcpStream::connect(address).await?;
    http.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").await?;
    let mut response = String::new();
    timeout(WAIT, http.read_to_string(&mut response)).await??;
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    Ok(())
}

#[tokio::test]
async fn dropping_a_server_kills_it_and_removes_its_files() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    server.pause().await?;
    let pid = server.pid().expect("running");
    let folder = server
        .log_path()
        .and_then(Path::parent)
        .expect("a process has a folder")
        .to_path_buf();
    assert!(folder.is_dir());

    drop(server);
    assert!(
        !process_exists(pid),
        "the paused server outlived its handle"
    );
    assert!(!folder.exists(), "{} was left behind", folder.display());
    Ok(())
}

/// Whether the Docker daemon answers here.
#[cfg(feature = "docker")]
fn docker_answers() -> bool {
    std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Builds `tag` from `docker/nats.Dockerfile` around the nats-server the other tests run.
#[cfg(feature = "docker")]
fn build_nats_image(tag: &str) -> anyhow::Result<()> {
    let context = std::env::temp_dir().join(format!("reflow-nats-image-{}", std::process::id()));
    std::fs::create_dir_all(&context)?;
    std::fs::copy(find_nats_server()?.path(), context.join("nats-server"))?;
    let dockerfile = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/nats.Dockerfile");
    let out = std::process::Command::new("docker")
        .args(["build", "--quiet", "--tag", tag, "--file", dockerfile])
        .arg(&context)
        .output()?;
    std::fs::remove_dir_all(&context)?;
    anyhow::ensure!(
        out.status.success(),
        "docker build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[cfg(feature = "docker")]
#[tokio::test(flavor = "multi_thread")]
async fn docker_fallback_runs_a_local_image_and_kills_pauses_and_restarts_it() -> anyhow::Result<()>
{
    if !docker_answers() {
        eprintln!("note: the Docker daemon does not answer; skipped");
        return Ok(());
    }
    let image = "reflow-nats:container-test";
    build_nats_image(image)?;
    let mut server =
        NatsServer::start_in_docker(ServerOptions::new().docker_image(image).token("t0k")).await?;
    assert!(server.version() >= MIN_VERSION, "{:?}", server.version());
    assert_eq!(server.pid(), None, "a container has no local pid");
    let port = server.port();
    let client = connect(&server).await?;
    roundtrip(&client, "from a container").await?;
    // The options reach the containerised server as they reach a process.
    let refused = ConnectOptions::new().connect(server.url()).await;
    assert!(refused.is_err(), "a client without the token got in");

    let mut during = client.subscribe("during.pause").await?;
    client.flush().await?;
    server.pause().await?;
    client.publish("during.pause", "held".into()).await?;
    let frozen = timeout(Duration::from_millis(500), during.next()).await;
    assert!(frozen.is_err(), "a paused container passed a message on");
    server.resume().await?;
    let held = timeout(WAIT, during.next())
        .await?
        .expect("subscription open");
    assert_eq!(held.payload, "held", "the message waited out the pause");

    server.kill().await?;
    assert!(!server.is_running());
    wait_for("the client to see the container gone", WAIT, || async {
        client.connection_state() != State::Connected
    })
    .await;
    server.restart().await?;
    assert_eq!(server.port(), port, "a restarted container keeps its port");
    wait_for("the client to reconnect", WAIT, || async {
        client.connection_state() == State::Connected
    })
    .await;
    roundtrip(&client, "after the restart").await?;
    Ok(())
}

#[cfg(feature = "docker")]
#[tokio::test(flavor = "multi_thread")]
async fn docker_fallback_names_an_image_that_is_not_here() {
    use reflow_network::ErrorKind;

    let image = "reflow-nats:no-such-tag";
    let err = NatsServer::start_in_docker(ServerOptions::new().docker_image(image))
        .await
        .expect_err("no such image, so no server");
    assert_eq!(err.kind(), ErrorKind::LocalServer);
    let text = err.to_string();
    if docker_answers() {
        assert!(
            text.contains(image) && text.contains("not present locally"),
            "the error does not name the missing image: {text}"
        );
    } else {
        assert!(
            text.contains("Docker"),
            "the error does not name Docker: {text}"
        );
    }
}
