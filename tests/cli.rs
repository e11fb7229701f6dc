//! The `reflow-bridge` binary, driven as a user would drive it: `up` starts a broker,
//! two `run` processes make a two-network setup from `examples/configs`, and `actors`,
//! `ping`, `send` and `watch` work against it; `networks` lists what `run` started, with
//! the capabilities and tags of its config file, and `networks --watch` sees it come and go.

mod common;

use common::free_port;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_reflow-bridge");

fn config(name: &str) -> String {
    format!("{}/examples/configs/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A running `reflow-bridge` whose output is collected; interrupted (like Ctrl-C), then
/// killed if need be, when dropped.
struct Running {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    text
}

impl Running {
    fn spawn(args: &[&str]) -> Running {
        Running::spawn_with(args, &[])
    }

    /// As [`Running::spawn`], with `env` set.
    fn spawn_with(args: &[&str], env: &[(&str, std::path::PathBuf)]) -> Running {
        let mut child = Command::new(BIN)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove("NATS_URL")
            .env_remove("REFLOW_AUTH_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits until `stream` (stdout or stderr) holds a line for which `found` holds.
    fn wait_for(&self, what: &str, on_stderr: bool, found: impl Fn(&str) -> bool) -> String {
        let stream = if on_stderr {
            &self.stderr
        } else {
            &self.stdout
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(line) = stream.lock().unwrap().lines().find(|l| found(l)) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; stdout:\n{}\nstderr:\n{}",
                self.stdout.lock().unwrap(),
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGINT (what Ctrl-C sends) and waits for a clean exit; kills it after 10 s.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        match self.signal(libc::SIGINT) {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                self.child.wait().unwrap()
            }
        }
    }

    /// Sends `signal` and waits, at most 10 s, for the exit.
    fn signal(&mut self, signal: i32) -> Option<std::process::ExitStatus> {
        unsafe { libc::kill(self.child.id() as i32, signal) };
        self.exit_within(Duration::from_secs(10))
    }

    /// Waits, at most `limit`, for the process to exit.
    fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.interrupt();
        }
    }
}

impl Running {
    /// `run --config CONFIG` against `url`, once it says it is running.
    fn network(url: &str, config: &str, name: &str) -> Running {
        let running = Running::spawn(&["--nats-url", url, "run", "--config", config]);
        running.wait_for(&format!("{name} to run"), false, |l| {
            l.contains("\"running\"")
        });
        running
    }
}

/// Runs a one-shot command to completion.
fn cli(url: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .arg("--nats-url")
        .arg(url)
        .args(args)
        .env_remove("REFLOW_AUTH_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn json_of(output: &Output) -> Value {
    let stdout = common::process::succeeded(output, "reflow-bridge");
    serde_json::from_str(&stdout).expect("one JSON value on stdout")
}

fn logged(line: &str, node: &str, value: &str) -> bool {
    line.contains(&format!("node={node}")) && line.trim_end().ends_with(&format!(" {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_run_and_send_over_mutual_tls_given_by_natscli_flags_and_environment() {
    use reflow_network::local_server::{NatsServer, ServerOptions};
    let pki = common::pki::Pki::new();
    let server = NatsServer::start_with(ServerOptions::new().extra_config(pki.server_tls(true)))
        .await
        .unwrap();
    let url = server.url();
    // natscli's environment names for the TLS files.
    let env = [
        ("NATS_CA", pki.path("ca")),
        ("NATS_CERT", pki.path("client")),
        ("NATS_KEY", pki.path("client_key")),
    ];
    let running = |config_file: &str, name: &str| {
        let run = Running::spawn_with(
            &["--nats-url", &url, "run", "--config", &config(config_file)],
            &env,
        );
        run.wait_for(&format!("{name} to run"), false, |l| {
            l.contains("\"running\"")
        });
        run
    };
    let stats = running("stats.toml", "stats");
    let feeder = running("feeder.toml", "feeder");
    // Streamed from feeder into stats' tally, and its count back out of the proxy.
    feeder.wait_for("the count back in feeder", true, |l| {
        logged(l, "print", "1")
    });
    // A confirmed send, with natscli's flag spellings.
    let path = |name: &str| pki.path(name).display().to_string();
    let sent = Command::new(BIN)
        .args(["--nats-url", &url, "--tlsca", &path("ca"), "--tlscert"])
        .args([&path("client"), "--tlskey", &path("client_key")])
        .args(["send", "stats", "tally", "in", "\"over tls\""])
        .env_remove("NATS_URL")
        .output()
        .unwrap();
    common::process::succeeded(&sent, "send over mutual TLS");
    stats.wait_for("the second count in stats", true, |l| {
        logged(l, "shout", "2")
    });
}

#[test]
fn up_run_actors_ping_send_and_watch_work_together() {
    let port = free_port();
    let mut up = Running::spawn(&["up", "--port", &port.to_string()]);
    let line = up.wait_for("up to print its URL", false, |l| l.contains("\"url\""));
    let url = serde_json::from_str::<Value>(&line).unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(url, format!("nats://127.0.0.1:{port}"));
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("the server accepts");

    // Two networks, one process each, that share nothing but the broker.
    let stats = Running::network(&url, &config("stats.toml"), "stats");
    let mut feeder = Running::network(&url, &config("feeder.toml"), "feeder");
    // feeder's initial packet went through stats' `tally` and its count came back.
    feeder.wait_for("the count back in feeder", true, |l| {
        logged(l, "print", "1")
    });
    stats.wait_for("the count logged in stats", true, |l| {
        logged(l, "shout", "1")
    });

    let listing = json_of(&cli(&url, &["networks"], None));
    for id in ["stats", "feeder"] {
        let network = listed_network(&listing, id)
            .unwrap_or_else(|| panic!("networks --json does not list {id}: {listing}"));
        assert_eq!(
            network["instances"].as_array().map(Vec::len),
            Some(1),
            "{network}"
        );
    }

    let actors = json_of(&cli(&url, &["actors", "stats"], None));
    let tally = actors["actors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "tally")
        .expect("tally is listed");
    assert_eq!(tally["inports"], serde_json::json!(["in"]));
    assert_eq!(tally["outports"], serde_json::json!(["count"]));

    let ping = json_of(&cli(&url, &["ping", "stats", "-c", "3", "-i", "10"], None));
    assert_eq!(ping["count"], 3);
    assert!(ping["min_ms"].as_f64().unwrap() > 0.0);
    assert!(ping["p50_ms"].as_f64().unwrap() <= ping["max_ms"].as_f64().unwrap());
    let ping_actor = json_of(&cli(&url, &["ping", "stats", "tally", "-c", "1"], None));
    assert_eq!(
        (&ping_actor["network"], &ping_actor["actor"]),
        (&Value::from("stats"), &Value::from("tally"))
    );

    let watch = Running::spawn(&["--nats-url", &url, "watch", "stats.tally.in"]);
    watch.wait_for("watch to subscribe", true, |l| l.contains("watching"));
    let sent = json_of(&cli(
        &url,
        &["send", "stats", "tally", "in", r#""hello""#],
        None,
    ));
    assert_eq!(sent["sent"], 1);
    stats.wait_for("the sent message counted", true, |l| {
        logged(l, "shout", "2")
    });
    let seen = watch.wait_for("watch to decode the envelope", false, |l| {
        l.contains("hello")
    });
    let seen: Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(seen["subject"], "stats.tally.in");
    assert_eq!(seen["message"], "hello");
    assert!(seen["network"].as_str().unwrap().starts_with("reflow-cli-"));

    let piped = json_of(&cli(
        &url,
        &["send", "stats", "tally", "in", "-"],
        Some("1\n{\"a\":2}\n"),
    ));
    assert_eq!(piped["sent"], 2);
    stats.wait_for("both piped messages counted", true, |l| {
        logged(l, "shout", "4")
    });

    let status = feeder.interrupt();
    assert!(status.success(), "Ctrl-C shuts run down cleanly: {status}");
    assert!(feeder.stdout.lock().unwrap().contains("\"stopped\""));
    drop(watch);
    drop(stats);
    assert!(up.interrupt().success());
}

#[test]
fn unknown_network_and_actor_exit_3_in_one_line() {
    let port = free_port();
    let up = Running::spawn(&["up", "--port", &port.to_string()]);
    up.wait_for("up to print its URL", false, |l| l.contains("\"url\""));
    let url = format!("nats://127.0.0.1:{port}");
    let out = cli(&url, &["ping", "nosuch"], None);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: Network disconnected"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = cli(&url, &["send", "nosuch", "a", "in", "1"], None);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn a_bad_config_file_names_the_field_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    for (text, field) in [
        (
            "[network]\nnetwork_id = \"a\"\nbind_port = \"eighty\"\n",
            "bind_port",
        ),
        (
            "[network]\nnetwork_id = \"a\"\nauth_token = \"secret\"\n",
            "REFLOW_AUTH_TOKEN",
        ),
        (
            "[network]\nnetwork_id = \"a\"\n[[nodes]]\nid = \"x\"\ncomponent = \"blender\"\n",
            "nodes[0].component",
        ),
        // A misspelt buffer setting used to fall back to its default unnoticed.
        (
            "[network]\nnetwork_id = \"a\"\n\n[network.local_network_config]\n\
             inbox_capcity = 8\n",
            "line 5: inbox_capcity",
        ),
        // A port the component does not have used to exit 3 (not found), naming no line.
        (
            "[network]\nnetwork_id = \"a\"\n\n[[nodes]]\nid = \"feed\"\n\
             component = \"passthrough\"\n\n[[connections]]\nfrom = \"feed.nope\"\n\
             to = \"feed.in\"\n",
            "bad.toml: line 9: connections[0]",
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = cli(
            "nats://127.0.0.1:1",
            &["run", "--config", path.to_str().unwrap()],
            None,
        );
        assert_eq!(out.status.code(), Some(2), "{field}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: "), "{err}");
        assert!(err.contains(field), "{field}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn an_unreachable_broker_exits_4() {
    let port = free_port();
    let out = cli(
        &format!("nats://127.0.0.1:{port}"),
        &["actors", "stats"],
        None,
    );
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reflow-bridge up"), "says what to do: {err}");
}

/// The network called `id` in the output of `networks --json`, if it is listed.
fn listed_network(listing: &Value, id: &str) -> Option<Value> {
    listing["networks"]
        .as_array()
        .expect("a list of networks")
        .iter()
        .find(|n| n["network"] == id)
        .cloned()
}

#[test]
fn networks_lists_what_run_started_with_its_capabilities_and_tags_and_watch_sees_it_come_and_go() {
    let port = free_port();
    let up = Running::spawn(&["up", "--port", &port.to_string()]);
    up.wait_for("up to print its URL", false, |l| l.contains("\"url\""));
    let url = format!("nats://127.0.0.1:{port}");

    let watch = Running::spawn(&["--nats-url", &url, "networks", "--watch", "--json"]);
    let first = watch.wait_for("the first listing", false, |l| l.contains("\"networks\""));
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        first["networks"],
        serde_json::json!([]),
        "nothing runs yet, and the command's own network is not listed"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.toml");
    std::fs::write(
        &path,
        r#"
        [network]
        network_id = "catalog"
        instance_id = "catalog-1"
        capabilities = ["indexing", "search"]
        tags = ["region=eu", "tier=gold"]
        [[nodes]]
        id = "index"
        component = "counter"
        "#,
    )
    .unwrap();
    let mut catalog = Running::network(&url, path.to_str().unwrap(), "catalog");

    let event = |what: &'static str| {
        move |l: &str| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|v| v["event"] == what && v["network"] == "catalog")
        }
    };
    let went_up = watch.wait_for("catalog's up event", false, event("up"));
    let went_up: Value = serde_json::from_str(&went_up).unwrap();
    assert_eq!(went_up["instance"], "catalog-1");

    let listing = json_of(&cli(&url, &["networks", "--json"], None));
    let catalog_listed = listed_network(&listing, "catalog").expect("catalog is listed");
    assert_eq!(
        catalog_listed["capabilities"],
        serde_json::json!(["indexing", "search"])
    );
    assert_eq!(
        catalog_listed["tags"],
        serde_json::json!(["region=eu", "tier=gold"])
    );
    assert_eq!(catalog_listed["actors"], serde_json::json!(["index"]));
    assert_eq!(catalog_listed["instance_count"], 1);
    let instance = &catalog_listed["instances"][0];
    assert_eq!(instance["instance"], "catalog-1");
    assert_eq!(instance["live"], true);
    assert_eq!(
        instance["tags"],
        serde_json::json!(["region=eu", "tier=gold"])
    );
    assert!(
        instance["endpoints"]["nats"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!(":{port}"))),
        "{instance}"
    );
    let ids: Vec<&str> = listing["networks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["network"].as_str())
        .collect();
    assert_eq!(ids, ["catalog"], "the CLI's own probes are left out");

    assert!(catalog.interrupt().success());
    let went_down = watch.wait_for("catalog's down event", false, event("down"));
    let went_down: Value = serde_json::from_str(&went_down).unwrap();
    assert_eq!(went_down["reason"], "left");
    let listing = json_of(&cli(&url, &["networks", "--json"], None));
    assert!(
        listed_network(&listing, "catalog").is_none(),
        "a network that shut down is no longer listed: {listing}"
    );
}

#[test]
fn up_which_prints_the_binary_the_harness_finds_bare_or_as_json() {
    let found = reflow_network::local_server::find_nats_server().unwrap();
    let bare = cli("nats://127.0.0.1:1", &["up", "--which"], None);
    common::process::succeeded(&bare, "up --which");
    // A bare path even into a pipe, for scripts.
    assert_eq!(
        String::from_utf8_lossy(&bare.stdout).trim_end(),
        found.path().display().to_string()
    );
    let listing = json_of(&cli(
        "nats://127.0.0.1:1",
        &["--json", "up", "--which"],
        None,
    ));
    assert_eq!(listing["path"], found.path().display().to_string());
    assert_eq!(listing["version"], found.version().to_string());
}

#[test]
fn a_generator_feeding_a_remote_actor_loses_none_of_its_first_numbers() {
    let port = free_port();
    let up = Running::spawn(&["up", "--port", &port.to_string()]);
    up.wait_for("up to print its URL", false, |l| l.contains("\"url\""));
    let url = format!("nats://127.0.0.1:{port}");
    let dir = std::env::temp_dir().join(format!("reflow-gen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shows = dir.join("shows.toml");
    std::fs::write(
        &shows,
        "[network]\nnetwork_id = \"shows\"\n\n[[nodes]]\nid = \"show\"\ncomponent = \"log\"\n",
    )
    .unwrap();
    let numbers = dir.join("numbers.toml");
    // The generator emits at once when it starts; it must not start before show@shows
    // is wired, or its first numbers go nowhere.
    std::fs::write(
        &numbers,
        "[network]\nnetwork_id = \"numbers\"\n\n[[nodes]]\nid = \"gen\"\n\
         component = \"generator\"\nmetadata = { count = 5 }\n\n[[connections]]\n\
         from = \"gen.out\"\nto = \"show@shows.in\"\n",
    )
    .unwrap();
    let shows_run = Running::network(&url, shows.to_str().unwrap(), "shows");
    let numbers_run = Running::network(&url, numbers.to_str().unwrap(), "numbers");
    shows_run.wait_for("the last number", true, |l| logged(l, "show", "4"));
    let shown: Vec<String> = shows_run
        .stderr
        .lock()
        .unwrap()
        .lines()
        .filter(|l| l.contains("node=show"))
        .map(|l| l.trim_end().rsplit(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(shown, ["0", "1", "2", "3", "4"]);
    drop(numbers_run);
    drop(shows_run);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_reports_the_broker_lost_and_back_on_stdout() {
    let port = free_port();
    let mut up = Running::spawn(&["up", "--port", &port.to_string()]);
    up.wait_for("up to print its URL", false, |l| l.contains("\"url\""));
    let url = format!("nats://127.0.0.1:{port}");
    let stats = Running::network(&url, &config("stats.toml"), "stats");

    assert!(up.interrupt().success());
    stats.wait_for("the broker lost", false, |l| {
        l.contains(r#""event":"broker_lost""#)
    });
    let up = Running::spawn(&["up", "--port", &port.to_string()]);
    up.wait_for("up to print its URL again", false, |l| {
        l.contains("\"url\"")
    });
    stats.wait_for("the broker back", false, |l| {
        l.contains(r#""event":"broker_regained""#)
    });
}

/// A config file in a temporary directory.
fn config_file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// `up --port P` running, and its URL.
fn up() -> (Running, String) {
    let port = free_port();
    let up = Running::spawn(&["up", "--port", &port.to_string()]);
    up.wait_for("up to print its URL", false, |l| l.contains("\"url\""));
    (up, format!("nats://127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_urls_are_taken_as_natscli_takes_them_bare_or_with_a_token_inside() {
    use reflow_network::local_server::{NatsServer, ServerOptions};
    let open = NatsServer::start().await.unwrap();
    for bare in [
        format!("127.0.0.1:{}", open.port()),
        format!("localhost:{}", open.port()),
    ] {
        let out = cli(&bare, &["networks", "--json"], None);
        common::process::succeeded(&out, &format!("networks at {bare}"));
    }
    let guarded = NatsServer::start_with(ServerOptions::new().token("s3cret"))
        .await
        .unwrap();
    let with_token = format!("nats://s3cret@127.0.0.1:{}", guarded.port());
    let out = cli(&with_token, &["networks", "--json"], None);
    common::process::succeeded(&out, "networks with the token in the URL");
    let wrong = format!("nats://wrong@127.0.0.1:{}", guarded.port());
    assert_eq!(cli(&wrong, &["networks"], None).status.code(), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_flags_not_the_library_fields() {
    use reflow_network::local_server::{NatsServer, ServerOptions};
    let out = cli("http://127.0.0.1:4222", &["networks"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--nats-url: \"http://127.0.0.1:4222\""),
        "{err}"
    );
    assert!(!err.contains("discovery_endpoints"), "{err}");

    let guarded = NatsServer::start_with(ServerOptions::new().token("s3cret"))
        .await
        .unwrap();
    let out = cli(&guarded.url(), &["networks"], None);
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token"), "{err}");
    assert!(!err.contains("auth_token"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn send_from_stdin_says_how_many_lines_went_before_the_bad_one() {
    let (_up, url) = up();
    let _stats = Running::network(&url, &config("stats.toml"), "stats");
    let out = cli(
        &url,
        &["send", "stats", "tally", "in", "-"],
        Some("1\n\n2\nnot json\n3\n"),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: 2 lines sent before line 4: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn watch_decodes_return_envelopes_hides_system_traffic_and_ends_cleanly_on_sigterm() {
    let (_up, url) = up();
    let mut watch = Running::spawn(&["--nats-url", &url, "--json", "watch"]);
    watch.wait_for("watch to subscribe", true, |l| l.contains("watching"));
    let mut all = Running::spawn(&["--nats-url", &url, "--json", "watch", "--all"]);
    all.wait_for("watch --all to subscribe", true, |l| l.contains("watching"));
    let _stats = Running::network(&url, &config("stats.toml"), "stats");
    let feeder = Running::network(&url, &config("feeder.toml"), "feeder");
    feeder.wait_for("the count back in feeder", true, |l| {
        logged(l, "print", "1")
    });
    // tally's count came back to feeder's proxy on a return subject, as an envelope.
    let returned = watch.wait_for("the returned count, decoded", false, |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| {
            v["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with("_reflow.feeder.") && s.ends_with(".count"))
                && v["kind"] == "envelope"
        })
    });
    let returned: Value = serde_json::from_str(&returned).unwrap();
    assert_eq!(returned["message"], 1);
    assert_eq!(returned["network"], "stats");
    // Liveness and JetStream traffic flowed meanwhile: --all shows it, the default not.
    all.wait_for("liveness traffic under --all", false, |l| {
        l.contains("\"$KV.")
    });
    let shown = watch.stdout.lock().unwrap().clone();
    for line in shown.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let subject = v["subject"].as_str().unwrap();
        for hidden in ["$JS.", "$KV.", "$SRV.", "_INBOX."] {
            assert!(!subject.starts_with(hidden), "shown: {line}");
        }
        assert_ne!(
            v["kind"], "text",
            "nothing the bridge sends shows as text: {line}"
        );
    }
    let status = watch.signal(libc::SIGTERM).expect("watch ends on SIGTERM");
    assert_eq!(status.code(), Some(0), "SIGTERM ends watch cleanly");
    let status = all.signal(libc::SIGINT).expect("watch ends on Ctrl-C");
    assert_eq!(status.code(), Some(0), "Ctrl-C ends watch cleanly");
}

#[test]
fn up_on_a_port_held_by_something_else_fails_saying_it_is_not_nats() {
    // A listener that accepts and says nothing, as many non-NATS services do at first;
    // and one that speaks first, but not NATS.
    for greeting in [None, Some("HTTP/1.1 400 Bad Request\r\n\r\n")] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for mut stream in listener.incoming().map_while(Result::ok) {
                if let Some(text) = greeting {
                    let _ = stream.write_all(text.as_bytes());
                }
                held.push(stream);
            }
        });
        let out = cli(
            "nats://127.0.0.1:1",
            &["up", "--port", &port.to_string()],
            None,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{greeting:?}: {err}");
        assert!(err.contains("not a NATS server"), "{err}");
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn completions_and_a_man_page_come_from_the_command_line_itself() {
    for shell in ["bash", "zsh", "fish"] {
        let out = cli("nats://127.0.0.1:1", &["completions", shell], None);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("reflow-bridge"), "{shell}: {script}");
        assert!(script.contains("nats-url"), "{shell} completes the flags");
    }
    let out = cli("nats://127.0.0.1:1", &["completions", "tcsh"], None);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
    let out = cli("nats://127.0.0.1:1", &["man"], None);
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
    assert!(page.contains("reflow\\-bridge"), "{page}");
    assert!(page.contains("watch"), "lists the subcommands");
}

#[test]
fn run_waiting_for_a_remote_network_says_so_once_and_reports_no_refusals() {
    let (_up, url) = up();
    // stats never comes up: feeder waits 2 s for it, then gives up (exit 3).
    let out = Command::new(BIN)
        .args([
            "--nats-url",
            &url,
            "run",
            "--config",
            &config("feeder.toml"),
        ])
        .args(["--wait-secs", "2"])
        .env_remove("NATS_URL")
        .env_remove("REFLOW_AUTH_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let waiting: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(r#""event":"waiting""#))
        .collect();
    assert_eq!(waiting.len(), 1, "one waiting message: {stdout}");
    let waiting: Value = serde_json::from_str(waiting[0]).unwrap();
    assert_eq!(waiting["network"], "stats");
    assert_eq!(waiting["wait_secs"], 2);
    assert!(
        !stdout.contains("refused") && !stderr.contains("refused"),
        "no refusal per retry: {stdout}{stderr}"
    );
    assert!(stderr.contains("waited 2s"), "{stderr}");
}

#[test]
fn run_does_not_report_the_cli_probes_as_peers() {
    let (_up, url) = up();
    let stats = Running::network(&url, &config("stats.toml"), "stats");
    json_of(&cli(&url, &["send", "stats", "tally", "in", "1"], None));
    json_of(&cli(&url, &["ping", "stats", "-c", "1"], None));
    json_of(&cli(&url, &["actors", "stats"], None));
    json_of(&cli(&url, &["networks"], None));
    // A real peer after the probes: its report comes after any the probes caused.
    let _feeder = Running::network(&url, &config("feeder.toml"), "feeder");
    stats.wait_for("feeder reported as a peer", false, |l| {
        l.contains(r#""event":"peer_connected""#) && l.contains(r#""network":"feeder""#)
    });
    let report = stats.stdout.lock().unwrap().clone();
    assert!(!report.contains("reflow-cli-"), "{report}");
}

#[test]
fn a_second_copy_with_the_same_instance_id_is_refused_and_leaves_the_first_listed() {
    let (_up, url) = up();
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(
        &dir,
        "twin.toml",
        "[network]\nnetwork_id = \"twin\"\ninstance_id = \"twin-1\"\n\
         heartbeat_interval_ms = 500\n\n[[nodes]]\nid = \"n\"\ncomponent = \"log\"\n",
    );
    let _first = Running::network(&url, &path, "the first twin");
    let watch = Running::spawn(&["--nats-url", &url, "networks", "--watch", "--json"]);
    watch.wait_for("the first listing", false, |l| l.contains("\"networks\""));
    let mut second = Running::spawn(&["--nats-url", &url, "run", "--config", &path]);
    let status = second
        .exit_within(Duration::from_secs(15))
        .expect("the second copy stops by itself instead of running");
    assert_eq!(status.code(), Some(2));
    let err = second.stderr.lock().unwrap().clone();
    assert!(
        err.contains("\"twin\"") && err.contains("\"twin-1\"") && err.contains("instance_id"),
        "names the network and the instance id: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        !second.stdout.lock().unwrap().contains("\"running\""),
        "never ran"
    );
    // A network started after the second copy left: its up event comes after anything
    // the second copy did to the first's entry (one stream, in order).
    let marker = config_file(
        &dir,
        "marker.toml",
        "[network]\nnetwork_id = \"marker\"\n\n[[nodes]]\nid = \"n\"\ncomponent = \"log\"\n",
    );
    let _marker = Running::network(&url, &marker, "marker");
    watch.wait_for("marker's up event", false, |l| {
        l.contains("\"up\"") && l.contains("\"marker\"")
    });
    let events = watch.stdout.lock().unwrap().clone();
    assert!(
        !events
            .lines()
            .any(|l| l.contains("\"event\"") && l.contains("\"twin\"")),
        "the first twin's entry was never deleted or replaced: {events}"
    );
}

/// The keys of every instance object in `networks --json`, live entry read or not.
const INSTANCE_KEYS: [&str; 10] = [
    "actors",
    "capabilities",
    "endpoints",
    "heartbeat_interval_ms",
    "incarnation",
    "instance",
    "live",
    "started_at_ms",
    "tags",
    "version",
];

#[test]
fn after_up_restarts_with_a_fresh_store_warnings_stop_and_networks_keeps_its_shape() {
    let port = free_port();
    let mut up = Running::spawn(&["up", "--port", &port.to_string()]);
    up.wait_for("up to print its URL", false, |l| l.contains("\"url\""));
    let url = format!("nats://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(
        &dir,
        "pulse.toml",
        "[network]\nnetwork_id = \"pulse\"\ninstance_id = \"pulse-1\"\n\
         heartbeat_interval_ms = 300\n\n[[nodes]]\nid = \"n\"\ncomponent = \"log\"\n",
    );
    let pulse = Running::network(&url, &path, "pulse");

    // The server goes, and comes back with an empty store: the liveness bucket is gone.
    assert!(up.interrupt().success());
    pulse.wait_for("the broker lost", false, |l| l.contains("broker_lost"));
    let _up = Running::spawn(&["up", "--port", &port.to_string()]);
    pulse.wait_for("the broker back", false, |l| l.contains("broker_regained"));

    // Every listing has the same shape, and pulse's own entry is back soon.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let listing = json_of(&cli(&url, &["networks", "--json"], None));
        let Some(network) = listed_network(&listing, "pulse") else {
            assert!(Instant::now() < deadline, "pulse never listed again");
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let instance = network["instances"][0].as_object().expect("an instance");
        let mut keys: Vec<&str> = instance.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, INSTANCE_KEYS, "{network}");
        if instance["live"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "pulse's entry never came back");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Healed: no more refresh warnings. Before, one came every heartbeat for minutes;
    // ten heartbeats without one is the proof asked for.
    let warnings = || {
        pulse
            .stderr
            .lock()
            .unwrap()
            .lines()
            .filter(|l| l.contains("WARN"))
            .count()
    };
    let settled = warnings();
    std::thread::sleep(Duration::from_millis(10 * 300));
    let later = pulse.stderr.lock().unwrap().clone();
    assert_eq!(
        warnings(),
        settled,
        "warnings go on after the heal:\n{later}"
    );
    assert!(
        settled <= 3,
        "at most a couple of heartbeats warned:\n{later}"
    );
}
