//! `docker-compose.yml` is accepted by `docker compose config`, and the bridge configs
//! it mounts parse. Where Docker Compose is not installed the compose check is skipped
//! with a note.

use std::process::Command;

#[test]
fn compose_file_is_accepted_by_docker_compose() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let compose = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .ok()
        .filter(|out| out.status.success());
    if compose.is_none() {
        eprintln!(
            "note: `docker compose` is not available here; skipped `docker compose config -q`"
        );
        return;
    }
    let out = Command::new("docker")
        .args([
            "compose",
            "-f",
            &format!("{dir}/docker-compose.yml"),
            "config",
            "-q",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker compose config refused the file: {}",
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
