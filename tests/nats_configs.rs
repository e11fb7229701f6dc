//! The server configurations under `nats/`: each one parses, and the users/permissions
//! config really keeps one network from reading another's traffic while leaving the
//! bridge everything it needs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::{ConnectOptions, Event};
use futures::StreamExt;
use reflow_network::Message;
use reflow_network::actor::ProbeActor;
use reflow_network::distributed_network::{DistributedConfig, DistributedNetwork};
use reflow_network::local_server::find_nats_server;
use tokio::sync::mpsc;

fn nats_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("nats")
}

fn conf_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            conf_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "conf") {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn every_config_file_parses() {
    let bin = find_nats_server().unwrap().path().to_path_buf();
    let mut files = Vec::new();
    conf_files(&nats_dir(), &mut files);
    assert!(files.len() >= 8, "found only {files:?}");
    for file in files {
        let out = Command::new(&bin)
            .arg("-t")
            .arg("-c")
            .arg(&file)
            .env("REFLOW_AUTH_TOKEN", "test-token")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not parse: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A nats-server run from a copy of one of our configs, on a free port; killed on drop.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(conf: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text = std::fs::read_to_string(nats_dir().join(conf))
            .unwrap()
            .replace("127.0.0.1:4222", &format!("127.0.0.1:{port}"))
            .replace("./target/nats-data/users", dir.path().to_str().unwrap());
        let path = dir.path().join("server.conf");
        std::fs::write(&path, text).unwrap();
        let server = Server {
            child: Command::new(find_nats_server().unwrap().path())
                .arg("-c")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
            port,
            _dir: dir,
        };
        for _ in 0..250 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("nats-server with {conf} did not start");
    }

    fn url(&self, user: &str) -> String {
        format!("nats://{user}:{user}_password@127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects as `user`, handing the server's error reports to the returned channel.
async fn connect_as(
    server: &Server,
    user: &str,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (tx, errors) = mpsc::unbounded_channel();
    let password = format!("{user}_password");
    let client = ConnectOptions::with_user_and_password(user.into(), password)
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let Event::ServerError(err) = event {
                    let _ = tx.send(err.to_string());
                }
            }
        })
        .connect(format!("127.0.0.1:{}", server.port))
        .await
        .unwrap();
    (client, errors)
}

/// net_b (hosting a probe `inbox`) and net_a, each started as its own user of
/// `server`; returns them with what the probe receives.
async fn two_networks(
    server: &Server,
) -> (
    DistributedNetwork,
    DistributedNetwork,
    mpsc::Receiver<reflow_network::actor::ProbeMessage>,
) {
    let config = |network: &str| DistributedConfig {
        network_id: network.into(),
        instance_id: "one".into(),
        discovery_endpoints: vec![server.url(network)],
        heartbeat_interval_ms: 1_000,
        ..DistributedConfig::default()
    };
    let mut b = DistributedNetwork::new(config("net_b")).await.unwrap();
    let (probe, seen) = ProbeActor::channel(8);
    b.register_local_actor("inbox", probe, None).unwrap();
    b.start().await.unwrap();
    let mut a = DistributedNetwork::new(config("net_a")).await.unwrap();
    a.start().await.unwrap();
    (a, b, seen)
}

/// net_a sends `value` to net_b's `inbox`, confirmed, and the probe receives it.
async fn a_sends_to_b(
    a: &DistributedNetwork,
    seen: &mut mpsc::Receiver<reflow_network::actor::ProbeMessage>,
    value: i64,
) {
    a.connect_to_network("net_b").await.unwrap();
    a.send_to_remote_actor("net_b", "inbox", "in", Message::Integer(value))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message, Message::Integer(value));
}

/// Waits for the server to report a permissions violation on `subject` to `errors`.
async fn violation(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let err = tokio::time::timeout_at(deadline, errors.recv())
            .await
            .unwrap_or_else(|_| panic!("the server did not refuse {subject}"))
            .unwrap();
        if err.to_lowercase().contains("permissions violation") && err.contains(subject) {
            return;
        }
    }
}

#[tokio::test]
async fn a_network_user_cannot_remove_the_liveness_stream_or_forge_anothers_entry() {
    use reflow_network::liveness::BUCKET;
    let server = Server::start("auth/users.conf").await;
    let (mut a, mut b, mut seen) = two_networks(&server).await;

    let (hostile, mut errors) = connect_as(&server, "net_a").await;
    let stream = format!("KV_{BUCKET}");
    // Deleting, purging or reconfiguring the stream, or deleting one of its messages.
    for api in ["DELETE", "PURGE", "UPDATE", "MSG.DELETE"] {
        let subject = format!("$JS.API.STREAM.{api}.{stream}");
        hostile
            .publish_with_reply(subject.clone(), hostile.new_inbox(), "{}".into())
            .await
            .unwrap();
        hostile.flush().await.unwrap();
        violation(&mut errors, &subject).await;
    }
    // Writing (or purging) net_b's liveness entry.
    let forged = format!("$KV.{BUCKET}.net_b.one");
    hostile.publish(forged.clone(), "{}".into()).await.unwrap();
    hostile.flush().await.unwrap();
    violation(&mut errors, &forged).await;
    // Reading net_b's data.
    let _spy = hostile.subscribe("net_b.>").await.unwrap();
    hostile.flush().await.unwrap();
    violation(&mut errors, "net_b.>").await;

    // The stream and net_b's entry are untouched, and both networks still work.
    let admin = ConnectOptions::with_user_and_password("admin".into(), "admin_password".into())
        .connect(format!("127.0.0.1:{}", server.port))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(admin);
    let kv = js.get_key_value(BUCKET).await.unwrap();
    let entry = kv.get("net_b.one").await.unwrap().expect("net_b's entry");
    let info: reflow_network::discovery::NetworkInfo = serde_json::from_slice(&entry).unwrap();
    assert_eq!(info.network_id, "net_b");
    a_sends_to_b(&a, &mut seen, 9).await;
    assert!(
        a.live_networks().iter().any(|n| n.network_id == "net_b"),
        "net_a still sees net_b live"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_network_user_cannot_subscribe_to_another_networks_subjects() {
    let server = Server::start("auth/users.conf").await;
    let (net_a, mut a_errors) = connect_as(&server, "net_a").await;
    let (net_b, mut b_errors) = connect_as(&server, "net_b").await;

    for stolen in ["net_b.>", "_reflow.net_b.>"] {
        let _spy = net_a.subscribe(stolen).await.unwrap();
        net_a.flush().await.unwrap();
        let err = tokio::time::timeout(Duration::from_secs(5), a_errors.recv())
            .await
            .expect("the server reports the refused subscription")
            .unwrap();
        assert!(
            err.to_lowercase().contains("permissions violation") && err.contains(stolen),
            "{stolen}: {err}"
        );
    }

    // net_b's own subscription works, and net_a may still send to it. The publish is
    // repeated until it arrives (at most 5 s): interest from a new subscription is not
    // always in place at the instant the subscriber's flush returns.
    let mut inbound = net_b.subscribe("net_b.>").await.unwrap();
    net_b.flush().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut attempts = 0;
    let got = loop {
        attempts += 1;
        net_a.publish("net_b.tally.in", "7".into()).await.unwrap();
        net_a.flush().await.unwrap();
        let wait = deadline.min(tokio::time::Instant::now() + Duration::from_millis(250));
        if let Ok(got) = tokio::time::timeout_at(wait, inbound.next()).await {
            break got.unwrap();
        }
        let mut errs = Vec::new();
        while let Ok(e) = a_errors.try_recv() {
            errs.push(format!("net_a: {e}"));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "net_b received nothing of what net_a sent ({attempts} tries; errors {errs:?})"
        );
    };
    if attempts > 1 {
        println!("delivered on try {attempts}");
    }
    assert_eq!(got.subject.as_str(), "net_b.tally.in");
    assert!(b_errors.try_recv().is_err(), "net_b was refused nothing");
}

#[tokio::test]
async fn the_bridge_runs_with_only_its_networks_permissions() {
    let server = Server::start("auth/users.conf").await;
    let (mut a, mut b, mut seen) = two_networks(&server).await;
    a_sends_to_b(&a, &mut seen, 5).await;
    assert!(a.ping_network("net_b").await.is_ok());

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
