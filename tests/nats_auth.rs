//! Networks on NATS servers that demand TLS, mutual TLS, an NKey or a creds file
//! (operator mode), with certificates, keys and JWTs made at test time: two networks exchange streamed and confirmed messages, and a
//! wrong CA, a missing client certificate or a wrong key fails `start()` with one clear
//! error naming what was refused.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::pki::Pki;
use reflow_network::actor::ProbeActor;
use reflow_network::components::Passthrough;
use reflow_network::distributed_network::{DistributedNetwork, NatsAuth};
use reflow_network::local_server::{NatsServer, ServerOptions};
use reflow_network::{ErrorKind, Message};

async fn network(
    url: &str,
    id: &str,
    auth: NatsAuth,
) -> reflow_network::Result<DistributedNetwork> {
    let mut network = DistributedNetwork::new(common::config(url, id, "i", 1_000)).await?;
    network.set_nats_auth(auth)?;
    Ok(network)
}

/// Starts B (hosting a probe) and A with `auth`, and checks that A streams 100 values to
/// B's probe through a proxy and confirms one more.
async fn two_networks_exchange(url: &str, auth: NatsAuth) {
    let mut b = network(url, "B", auth.clone()).await.unwrap();
    let (probe, mut seen) = ProbeActor::channel(1_000);
    b.register_local_actor("sink", probe, None).unwrap();
    b.start().await.unwrap();
    let mut a = network(url, "A", auth).await.unwrap();
    a.register_local_actor("source", Passthrough, None).unwrap();
    a.start().await.unwrap();
    a.connect_to_network("B").await.unwrap();
    let alias = a.register_remote_actor("sink", "B").await.unwrap();
    let inlet = common::wire_source_through(&a, &alias, None);
    let feeder = common::feed(inlet, 0..100, Message::Integer);
    let got = common::recv_ints(&mut seen, 100, Duration::from_secs(10), "streamed").await;
    feeder.await.unwrap();
    assert_eq!(got, (0..100).collect::<Vec<i64>>());
    a.send_to_remote_actor("B", "sink", "in", Message::Integer(1_000))
        .await
        .unwrap();
    let got = common::recv_ints(&mut seen, 1, Duration::from_secs(10), "confirmed").await;
    assert_eq!(got, [1_000]);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

async fn refused(url: &str, auth: NatsAuth) -> reflow_network::Error {
    let mut late = network(url, "late", auth).await.unwrap();
    late.use_own_connection(true);
    late.start().await.expect_err("the server must refuse it")
}

fn tls_server(pki: &Pki, verify: bool) -> ServerOptions {
    ServerOptions::new().extra_config(pki.server_tls(verify))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_private_ca_networks_exchange_and_a_wrong_ca_is_named() {
    let pki = Pki::new();
    let server = NatsServer::start_with(tls_server(&pki, false))
        .await
        .unwrap();
    let url = server.url();
    two_networks_exchange(&url, pki.auth("ca", false)).await;

    let err = refused(&url, pki.auth("other_ca", false)).await;
    println!("{err}");
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed, "{err}");
    assert!(
        err.to_string().contains("TLS with the NATS server"),
        "{err}"
    );
    assert!(err.to_string().contains("tls_ca_file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mutual_tls_networks_exchange_and_a_client_without_a_certificate_is_refused() {
    let pki = Pki::new();
    let server = NatsServer::start_with(tls_server(&pki, true))
        .await
        .unwrap();
    let url = server.url();
    two_networks_exchange(&url, pki.auth("ca", true)).await;

    let err = refused(&url, pki.auth("ca", false)).await;
    println!("{err}");
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed, "{err}");
    assert!(
        err.to_string().contains("TLS with the NATS server"),
        "{err}"
    );
    assert!(err.to_string().contains("tls_cert_file"), "{err}");

    // The caller's own connect options: the client certificate added by hand.
    let mut custom = network(&url, "custom", pki.auth("ca", false))
        .await
        .unwrap();
    let (cert, key) = (pki.path("client"), pki.path("client_key"));
    custom.customize_connection(move |options| {
        options.add_client_certificate(cert.clone(), key.clone())
    });
    custom.start().await.unwrap();
    custom.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_tls_first_server_networks_exchange_when_told_to_start_with_tls() {
    let pki = Pki::new();
    let config = pki
        .server_tls(false)
        .replace("verify: false", "verify: false\n  handshake_first: true");
    let server = NatsServer::start_with(ServerOptions::new().extra_config(config))
        .await
        .unwrap();
    let url = server.url();
    let first = NatsAuth {
        tls_first: true,
        ..pki.auth("ca", false)
    };
    two_networks_exchange(&url, first).await;
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_nkey_networks_exchange_and_a_wrong_key_is_named() {
    let user = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_user();
    let server = NatsServer::start_with(ServerOptions::new().extra_config(format!(
        "authorization {{ users = [ {{ nkey: {:?} }} ] }}",
        user.public_key()
    )))
    .await
    .unwrap();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let seed = write(dir.path(), "user.nk", &user.seed().unwrap());
    let auth = |seed: PathBuf| NatsAuth {
        nkey_seed_file: Some(seed),
        ..NatsAuth::default()
    };
    let seed_text = seed.display().to_string();
    two_networks_exchange(&url, auth(seed)).await;

    let wrong = write(dir.path(), "stranger.nk", &stranger.seed().unwrap());
    let err = refused(&url, auth(wrong.clone())).await;
    println!("{err}");
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed, "{err}");
    assert!(
        err.to_string().contains(&wrong.display().to_string()),
        "{err}"
    );

    // The same through the CLI: --nkey, exit code 5 for the stranger.
    let (code, _, err) = cli(&["networks", "--nats-url", &url, "--nkey", &seed_text], &[]);
    assert_eq!(code, 0, "{err}");
    let stranger_text = wrong.display().to_string();
    let (code, _, err) = cli(
        &["networks", "--nats-url", &url, "--nkey", &stranger_text],
        &[],
    );
    assert_eq!(code, 5, "{err}");
    assert!(
        err.trim().starts_with("error: Authentication failed"),
        "{err}"
    );

    // A file that holds no user seed is named before anything is sent.
    let garbage = write(dir.path(), "garbage.nk", "not a seed");
    let err = refused(&url, auth(garbage)).await;
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("nkey_seed_file"), "{err}");
}

/// Runs `reflow-bridge` with `args` (and `env`), returning its exit code and stderr.
fn cli(args: &[&str], env: &[(&str, &Path)]) -> (i32, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_reflow-bridge"));
    command
        .args(args)
        .env_remove("NATS_URL")
        .env_remove("NATS_CONTEXT");
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_tls_files_from_flags_and_from_a_natscli_context() {
    let pki = Pki::new();
    let server = NatsServer::start_with(tls_server(&pki, true))
        .await
        .unwrap();
    let url = server.url();
    let mut host = network(&url, "tls_host", pki.auth("ca", true))
        .await
        .unwrap();
    host.start().await.unwrap();
    let path = |name: &str| pki.path(name).display().to_string();

    let (code, out, err) = cli(
        &[
            "networks",
            "--nats-url",
            &url,
            "--tls-ca",
            &path("ca"),
            "--tls-cert",
            &path("client"),
            "--tls-key",
            &path("client_key"),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("tls_host"), "{out}");

    // A wrong CA: one error line, exit code 5.
    let (code, _, err) = cli(
        &[
            "networks",
            "--nats-url",
            &url,
            "--tls-ca",
            &path("other_ca"),
            "--tls-cert",
            &path("client"),
            "--tls-key",
            &path("client_key"),
        ],
        &[],
    );
    assert_eq!(code, 5, "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("error: Authentication failed: TLS"),
        "{err}"
    );

    // The same from a natscli context file, URL included.
    let config = tempfile::tempdir().unwrap();
    let contexts = config.path().join("nats").join("context");
    std::fs::create_dir_all(&contexts).unwrap();
    std::fs::write(
        contexts.join("secure.json"),
        serde_json::json!({
            "description": "made by the test",
            "url": url,
            "ca": path("ca"),
            "cert": path("client"),
            "key": path("client_key"),
        })
        .to_string(),
    )
    .unwrap();
    let (code, out, err) = cli(
        &["--context", "secure", "networks"],
        &[("XDG_CONFIG_HOME", config.path())],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("tls_host"), "{out}");
    host.shutdown().await.unwrap();
}

/// A NATS JWT (v2) for `claims`, signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let body = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let signature = issuer.sign(body.as_bytes()).unwrap();
    format!("{body}.{}", b64(&signature))
}

/// An operator-mode server configuration (an operator, one account with JetStream,
/// preloaded), and the creds file of a user of that account.
fn operator_setup(dir: &Path) -> (String, PathBuf) {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let system = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "op",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    });
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "reflow",
        serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "stats",
        serde_json::json!({
            "type": "user", "version": 2, "pub": {}, "sub": {},
            "subs": -1, "data": -1, "payload": -1,
        }),
    );
    let server = format!(
        "operator: {operator_jwt:?}\nsystem_account: {}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {}: {account_jwt:?}\n  {}: {system_jwt:?}\n}}\n",
        system.public_key(),
        account.public_key(),
        system.public_key()
    );
    let creds = format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    );
    (server, write(dir, "stats.creds", &creds))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_creds_file_in_operator_mode_networks_exchange_and_a_stranger_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (server_config, creds) = operator_setup(dir.path());
    let server = NatsServer::start_with(ServerOptions::new().extra_config(server_config))
        .await
        .unwrap();
    let url = server.url();
    let auth = |creds: PathBuf| NatsAuth {
        creds_file: Some(creds),
        ..NatsAuth::default()
    };
    let creds_path = creds.clone();
    two_networks_exchange(&url, auth(creds)).await;

    // The creds of a user of an account this server does not know.
    let other = tempfile::tempdir().unwrap();
    let (_, stranger) = operator_setup(other.path());
    let err = refused(&url, auth(stranger.clone())).await;
    println!("{err}");
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed, "{err}");
    assert!(
        err.to_string().contains(&stranger.display().to_string()),
        "{err}"
    );

    // The same through the CLI: NATS_CREDS, and --creds for the stranger.
    let (code, _, err) = cli(
        &["networks", "--nats-url", &url],
        &[("NATS_CREDS", &creds_path)],
    );
    assert_eq!(code, 0, "{err}");
    let stranger_text = stranger.display().to_string();
    let (code, _, err) = cli(
        &["networks", "--nats-url", &url, "--creds", &stranger_text],
        &[],
    );
    assert_eq!(code, 5, "{err}");
    assert!(
        err.trim().starts_with("error: Authentication failed"),
        "{err}"
    );
}
