//! `docker-compose.yml` is accepted by `docker compose config`, and the bridge configs
//! it mounts parse. Where Docker Compose is not installed the compose check is skipped
//! with a note.

use std::process::Command;

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
