//! `docker-compose.yml` is accepted by `docker compose config`, the bridge configs it
//! mounts exist, and it runs for real: `docker/build-images.sh` builds both images from
//! scratch (no registry needed), two bridges on separate Docker networks reach each other
//! through NATS alone, and keep doing so after the NATS container is killed and started
//! again. Where Docker or Compose is missing, these tests are skipped with a note.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::free_port;

/// The compose command this machine has: the `docker compose` plugin or the standalone
/// `docker-compose`.
fn compose_command() -> Option<Vec<&'static str>> {
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if works("docker", &["compose", "version"]) {
        Some(vec!["docker", "compose"])
    } else if works("docker-compose", &["version"]) {
        Some(vec!["docker-compose"])
    } else {
        None
    }
}

#[test]
fn compose_file_is_accepted_by_docker_compose() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let Some(compose) = compose_command() else {
        eprintln!("note: neither `docker compose` nor `docker-compose` is installed; skipped");
        return;
    };
    let file = format!("{dir}/docker-compose.yml");
    let out = Command::new(compose[0])
        .args(&compose[1..])
        .args(["-f", &file, "config", "-q"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} config refused the file: {}",
        compose.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compose_mounts_configs_that_exist() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let compose = std::fs::read_to_string(format!("{dir}/docker-compose.yml")).unwrap();
    for name in ["stats.toml", "feeder.toml"] {
        assert!(compose.contains(&format!("/etc/reflow/{name}")), "{name}");
        let text = std::fs::read_to_string(format!("{dir}/examples/configs/{name}")).unwrap();
        // tests/cli.rs runs both files for real.
        assert!(text.contains("[network]"), "{name}");
    }
}

/// The bridge binary on the host, to talk to the composed setup from outside.
const BIN: &str = env!("CARGO_BIN_EXE_reflow-bridge");

/// Image tags of this test, apart from the `:local` ones a user builds.
const BRIDGE_IMAGE: &str = "reflow-bridge:compose-test";
const NATS_IMAGE: &str = "reflow-nats:compose-test";

/// How long the composed setup may take for any one step.
const STEP: Duration = Duration::from_secs(60);

fn docker_answers() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|out| out.status.success())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One composed project, taken down with its volume when dropped.
struct Project {
    compose: Vec<&'static str>,
    /// The compose file.
    file: String,
    name: String,
    port: u16,
}

impl Project {
    fn command(&self) -> Command {
        let mut command = Command::new(self.compose[0]);
        command
            .args(&self.compose[1..])
            .args(["-p", &self.name, "-f", &self.file])
            .env("NATS_IMAGE", NATS_IMAGE)
            .env("BRIDGE_IMAGE", BRIDGE_IMAGE)
            .env("NATS_PORT", self.port.to_string())
            .env_remove("REFLOW_AUTH_TOKEN");
        command
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "compose {args:?} failed: {}",
            text(&out)
        );
        text(&out)
    }

    fn logs(&self, service: &str) -> String {
        self.run(&["logs", "--no-color", service])
    }

    /// Waits until `service` has logged a line that ends with `needle`.
    fn wait_for_log(&self, service: &str, needle: &str) {
        self.wait_for_line(service, needle, |line| line.trim_end().ends_with(needle));
    }

    /// Waits until `service` has logged a line for which `found` holds.
    fn wait_for_line(&self, service: &str, what: &str, found: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + STEP;
        loop {
            let logs = self.logs(service);
            if logs.lines().any(&found) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{service} logged no {what} within {STEP:?}:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until `service` reports traffic to `network` switching to `road`.
    fn wait_for_switch(&self, service: &str, network: &str, road: &str) {
        self.wait_for_line(service, &format!("a switch to {road}"), |line| {
            line.contains(r#""event":"road_switched""#)
                && line.contains(&format!(r#""network":"{network}""#))
                && line.contains(&format!(r#""road":"{road}""#))
        });
    }

    /// The Docker networks the container of `service` is on.
    fn networks_of(&self, service: &str) -> Vec<String> {
        let id = self.run(&["ps", "-q", service]).trim().to_string();
        let out = Command::new("docker")
            .args([
                "inspect",
                "--format",
                "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}",
                &id,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "docker inspect: {}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// Runs the host's `reflow-bridge` against the composed server.
    fn bridge(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(["--nats-url", &format!("nats://127.0.0.1:{}", self.port)])
            .args(args)
            .env_remove("REFLOW_AUTH_TOKEN")
            .output()
            .unwrap()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.command().args(["down", "-v", "-t", "5"]).output();
    }
}

/// The compose command, with both images built; `None`, with a note, where Docker or
/// Compose is missing.
fn ready_to_compose() -> Option<Vec<&'static str>> {
    let Some(compose) = compose_command() else {
        eprintln!("note: neither `docker compose` nor `docker-compose` is installed; skipped");
        return None;
    };
    if !docker_answers() {
        eprintln!("note: the Docker daemon does not answer; skipped");
        return None;
    }
    build_images();
    Some(compose)
}

/// Builds both images with `docker/build-images.sh` (once per test run), packaging the
/// nats-server the tests use; the static bridge is built in a target folder of its own.
fn build_images() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(build_images_now);
}

fn build_images_now() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let nats = reflow_network::local_server::find_nats_server().unwrap();
    let out = Command::new(format!("{dir}/docker/build-images.sh"))
        .env("PROFILE", "dev")
        .env(
            "CARGO_TARGET_DIR",
            format!("{}/docker-build", env!("CARGO_TARGET_TMPDIR")),
        )
        .env("NATS_SERVER_BIN", nats.path())
        .env("BRIDGE_IMAGE", BRIDGE_IMAGE)
        .env("NATS_IMAGE", NATS_IMAGE)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-images.sh failed: {}",
        text(&out)
    );
}

#[test]
fn composed_bridges_share_only_nats_and_outlive_a_killed_server() {
    let Some(compose) = ready_to_compose() else {
        return;
    };
    let project = Project {
        compose,
        file: concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml").into(),
        name: format!("reflow-compose-test-{}", std::process::id()),
        port: free_port(),
    };
    project.run(&["up", "-d", "--no-build"]);

    // feeder's initial message went to stats' tally through NATS, and the count came back.
    project.wait_for_log("stats", "node=shout 1");
    project.wait_for_log("feeder", "node=print 1");

    // The two bridges share no Docker network: NATS is the only way between them.
    let (stats, feeder, nats) = (
        project.networks_of("stats"),
        project.networks_of("feeder"),
        project.networks_of("nats"),
    );
    assert!(
        stats.iter().all(|n| !feeder.contains(n)),
        "stats {stats:?} and feeder {feeder:?} share a network"
    );
    assert!(
        stats.iter().chain(&feeder).all(|n| nats.contains(n)),
        "nats {nats:?} is not on every bridge's network ({stats:?}, {feeder:?})"
    );

    // Seen from the host through the published port, both are live.
    let listing = project.bridge(&["--json", "networks"]);
    assert!(listing.status.success(), "networks: {}", text(&listing));
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    for id in ["\"stats\"", "\"feeder\""] {
        assert!(listing.contains(id), "{id} missing from {listing}");
    }

    // Kill the server outright and start it again: both bridges reconnect by themselves,
    // and feeder -> tally@stats -> back to feeder works once more.
    project.run(&["kill", "nats"]);
    project.run(&["start", "nats"]);
    for event in ["broker_lost", "broker_regained"] {
        let needle = format!(r#""event":"{event}""#);
        project.wait_for_line("stats", event, |line| line.contains(&needle));
    }
    let deadline = Instant::now() + STEP;
    loop {
        let sent = project.bridge(&["send", "feeder", "feed", "in", "7"]);
        if sent.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "feeder took no message within {STEP:?} of the restart: {}",
            text(&sent)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    project.wait_for_log("stats", "node=shout 2");
    project.wait_for_log("feeder", "node=print 2");
}

/// Two bridges in containers of their own, each with a bind port, on one Docker network
/// with NATS: `relay_a`'s generator streams into the `show` actor of `relay_b`.
const RELAY_COMPOSE: &str = r#"
services:
  nats:
    image: ${NATS_IMAGE}
    command: ["--jetstream", "--store_dir", "/data"]
    ports: ["${NATS_PORT}:4222"]
  relay_b:
    image: ${BRIDGE_IMAGE}
    command: ["run", "--config", "/etc/relay/b.toml"]
    environment: { NATS_URL: "nats://nats:4222" }
    volumes: ["./b.toml:/etc/relay/b.toml:ro"]
    depends_on: [nats]
  relay_a:
    image: ${BRIDGE_IMAGE}
    command: ["run", "--config", "/etc/relay/a.toml", "--wait-secs", "60"]
    environment: { NATS_URL: "nats://nats:4222" }
    volumes: ["./a.toml:/etc/relay/a.toml:ro"]
    depends_on: [nats, relay_b]
"#;

const RELAY_B: &str = r#"
[network]
network_id = "relay_b"
instance_id = "b1"
bind_address = "0.0.0.0"
bind_port = 7000
heartbeat_interval_ms = 1000

[[nodes]]
id = "show"
component = "log"
"#;

const RELAY_A: &str = r#"
[network]
network_id = "relay_a"
instance_id = "a1"
bind_address = "0.0.0.0"
bind_port = 7000
heartbeat_interval_ms = 1000

[[nodes]]
id = "gen"
component = "generator"
metadata = { count = 1000000, interval_ms = 10 }

[[connections]]
from = "gen.out"
to = "show@relay_b.in"
"#;

/// The values `relay_b`'s `show` node has logged, in order.
fn shown(project: &Project) -> Vec<i64> {
    project
        .logs("relay_b")
        .lines()
        .filter(|line| line.contains("node=show"))
        .filter_map(|line| line.trim_end().rsplit(' ').next()?.parse().ok())
        .collect()
}

/// Waits until `relay_b` has shown more than `count` values; returns them.
fn shown_past(project: &Project, count: usize, what: &str) -> Vec<i64> {
    let deadline = Instant::now() + STEP;
    loop {
        let values = shown(project);
        if values.len() > count {
            return values;
        }
        assert!(
            Instant::now() < deadline,
            "relay_b showed {} values, not more than {count}, {what}",
            values.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn containers_stream_over_a_direct_link_while_the_nats_container_is_dead() {
    let Some(compose) = ready_to_compose() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("reflow-relay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in [
        ("docker-compose.yml", RELAY_COMPOSE),
        ("a.toml", RELAY_A),
        ("b.toml", RELAY_B),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let project = Project {
        compose,
        file: dir.join("docker-compose.yml").display().to_string(),
        name: format!("reflow-relay-test-{}", std::process::id()),
        port: free_port(),
    };
    project.run(&["up", "-d", "--no-build"]);

    // Through NATS first.
    let before = shown_past(&project, 20, "through NATS").len();
    project.run(&["kill", "nats"]);
    project.wait_for_switch("relay_a", "relay_b", "direct");
    // The stream goes on between the two containers with no broker at all.
    let during = shown_past(&project, before + 100, "with the NATS container dead").len();
    project.run(&["start", "nats"]);
    project.wait_for_switch("relay_a", "relay_b", "nats");
    let values = shown_past(&project, during + 100, "after NATS came back");

    // Every value once, in order, from the generator's first (it starts only once its
    // remote target is wired) and across both switches.
    let expected: Vec<i64> = (0..values.len() as i64).collect();
    if values != expected {
        let bad = values
            .iter()
            .zip(&expected)
            .position(|(v, e)| v != e)
            .unwrap_or(0);
        panic!(
            "relay_b's values are out of order, repeated or missing from index {bad}: {:?}",
            &values[bad.saturating_sub(3)..(bad + 5).min(values.len())]
        );
    }
    drop(project);
    std::fs::remove_dir_all(&dir).unwrap();
}
