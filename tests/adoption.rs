//! What a new user does after the demo, done as they would do it.
//!
//! A fresh cargo project outside this repository depends on the crate by path with the
//! default features, and its code is the README's own ("Write an actor", "Your own
//! components in the CLI"): it builds, its dependency tree is as small as the README says,
//! and it runs across two networks against a real server. Its second binary, built on
//! `cli::main_with`, runs `run --config` with a component of its own; and this crate's
//! `reflow-bridge` runs `examples/configs/exec.toml`, an actor in Python.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::process::Process;
use reflow_network::actor::ProbeActor;
use reflow_network::distributed_network::DistributedNetwork;
use reflow_network::local_server::NatsServer;
use reflow_network::network::Connector;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The README's code blocks marked `<!-- adoption-test: PATH -->`, by path.
fn readme_files() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let mut files = Vec::new();
    let mut rest = readme.as_str();
    while let Some(at) = rest.find("<!-- adoption-test: ") {
        rest = &rest[at + "<!-- adoption-test: ".len()..];
        let path = rest[..rest.find(" -->").unwrap()].to_string();
        let code = &rest[rest.find("```rust\n").unwrap() + "```rust\n".len()..];
        let code = &code[..code.find("\n```").unwrap()];
        files.push((path, format!("{code}\n")));
    }
    files
}

/// The number the README states in "N crates in all".
fn readme_crate_count() -> usize {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let at = readme
        .find(" crates in all")
        .expect("the README states the crate count");
    let number: String = readme[..at]
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    number.chars().rev().collect::<String>().parse().unwrap()
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The project, written from the README and built once for every test here (`cli` on, for
/// its second binary); its own target directory under this repository's, so that a second
/// run builds only what changed.
struct Project {
    dir: PathBuf,
    bin_dir: PathBuf,
}

fn project() -> &'static Project {
    static PROJECT: OnceLock<Project> = OnceLock::new();
    PROJECT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("reflow-adoption-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src/bin")).unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            format!(
                r#"[package]
name = "my-app"
version = "0.1.0"
edition = "2024"

[features]
cli = ["reflow_network/cli"]

[[bin]]
name = "my-bridge"
path = "src/bin/my-bridge.rs"
required-features = ["cli"]

[dependencies]
reflow_network = {{ path = {REPO:?} }}
tokio = {{ version = "1", features = ["macros", "rt-multi-thread"] }}
"#
            ),
        )
        .unwrap();
        let files = readme_files();
        let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["src/main.rs", "src/bin/my-bridge.rs"],
            "README blocks"
        );
        for (path, code) in &files {
            std::fs::write(dir.join(path), code).unwrap();
        }
        // The versions this repository was tested with, so the build needs no resolution.
        std::fs::copy(Path::new(REPO).join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
        let target = Path::new(REPO).join("target/adoption");
        let built = cargo()
            .current_dir(&dir)
            .args(["build", "--features", "cli"])
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap();
        common::process::succeeded(&built, "building the README's project");
        Project {
            dir,
            bin_dir: target.join("debug"),
        }
    })
}

#[test]
fn the_readme_project_has_a_small_dependency_tree_with_default_features() {
    let project = project();
    let tree = cargo()
        .current_dir(&project.dir)
        .args(["tree", "-e", "normal,build", "--prefix", "none"])
        .output()
        .unwrap();
    let text = common::process::succeeded(&tree, "cargo tree");
    let mut crates: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches(" (*)"))
        .filter(|l| !l.is_empty())
        .collect();
    crates.sort();
    crates.dedup();
    for tooling in ["clap ", "testcontainers ", "tracing-subscriber ", "toml "] {
        assert!(
            !crates.iter().any(|c| c.starts_with(tooling)),
            "{tooling}is in a library user's tree:\n{text}"
        );
    }
    assert!(crates.len() <= 220, "{} crates: {crates:#?}", crates.len());
    assert_eq!(
        crates.len(),
        readme_crate_count(),
        "the README states another crate count than `cargo tree` finds"
    );
}

#[test]
fn the_readme_actor_runs_across_two_networks() {
    let project = project();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(NatsServer::start()).unwrap();
    let out = Command::new(project.bin_dir.join("my-app"))
        .env("NATS_URL", server.url())
        .output()
        .unwrap();
    let stdout = common::process::succeeded(&out, "the project's binary");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["1 -> 2", "2 -> 4", "3 -> 6"]
    );
}

/// Streams 1..=5 from a network of the test's own into `actor@network` and returns what
/// comes back, in order.
async fn doubled_by(url: &str, actor: &str, network: &str) -> Vec<i64> {
    let mut client = DistributedNetwork::new(common::config(url, "client", "c1", 500))
        .await
        .unwrap();
    let (results, mut seen) = ProbeActor::channel(16);
    client
        .register_local_actor("results", results, None)
        .unwrap();
    client.start().await.unwrap();
    common::wait_for(
        &format!("{network} to be live"),
        Duration::from_secs(30),
        || {
            let live = client.live_networks();
            async move { live.iter().any(|n| n.network_id == network) }
        },
    )
    .await;
    client.connect_to_network(network).await.unwrap();
    let proxy = client.register_remote_actor(actor, network).await.unwrap();
    let input = {
        let local = client.get_local_network();
        let mut local = local.write();
        local
            .add_connection(Connector::new(&proxy, "out", "results", "in"))
            .unwrap();
        local.inlet(&proxy, "in").unwrap()
    };
    for n in 1..=5 {
        input
            .send(reflow_network::Message::Integer(n))
            .await
            .unwrap();
    }
    let got = common::recv_ints(&mut seen, 5, Duration::from_secs(20), "doubled").await;
    client.shutdown().await.unwrap();
    got
}

/// Checks that `actor@network`, run by `bridge`, doubles what another network streams in.
async fn assert_doubles(url: &str, actor: &str, network: &str, bridge: &Process) {
    let got = tokio::time::timeout(Duration::from_secs(60), doubled_by(url, actor, network))
        .await
        .unwrap_or_else(|_| panic!("no answer from {actor}@{network}\n{}", bridge.tail()));
    assert_eq!(got, [2, 4, 6, 8, 10], "{}", bridge.tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_of_ones_own_runs_a_config_naming_its_own_component() {
    let project = tokio::task::spawn_blocking(project).await.unwrap();
    let server = NatsServer::start().await.unwrap();
    let config = project.dir.join("math.toml");
    std::fs::write(
        &config,
        "[network]\nnetwork_id = \"math\"\nheartbeat_interval_ms = 500\n\n\
         [[nodes]]\nid = \"twice\"\ncomponent = \"double\"\n",
    )
    .unwrap();
    let bridge = Process::run_program(
        &project.bin_dir.join("my-bridge"),
        &project.dir,
        &server.url(),
        &config,
        "my-bridge",
    );
    assert_doubles(&server.url(), "twice", "math", &bridge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_actor_in_python_doubles_integers_for_another_network() {
    let server = NatsServer::start().await.unwrap();
    let bridge = Process::run(
        &server.url(),
        &Path::new(REPO).join("examples/configs/exec.toml"),
        "py",
    );
    assert_doubles(&server.url(), "double", "py", &bridge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_run_against_the_server_nats_url_names() {
    let server = NatsServer::start().await.unwrap();
    let out = tokio::task::spawn_blocking({
        let url = server.url();
        move || {
            cargo()
                .current_dir(REPO)
                .args(["run", "--quiet", "--example", "quickstart"])
                .env("NATS_URL", url)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = common::process::succeeded(&out, "the project's binary");
    assert!(
        stdout.contains(&format!(
            "using the NATS server at {} (NATS_URL)",
            server.url()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("local NATS server running"), "{stdout}");
    assert!(
        stdout.contains("both networks shut down cleanly"),
        "{stdout}"
    );
}
