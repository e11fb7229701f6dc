//! The last resort: a NATS server in a Docker container, through `testcontainers`.
//!
//! Used only when no binary can be found or provisioned. The testcontainers NATS module
//! defaults to an image older than 2.11 and would pull it; here the image is pinned to one
//! new enough, and it must already be present locally, because machines without PyPI
//! usually have no registry either and a pull would only hang or fail late. The server runs
//! from the same generated configuration as a process does, with its client port published
//! on a fixed host port so that a restarted container keeps it.

use std::time::{Duration, Instant};

use testcontainers::bollard::Docker;
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::binary::Version;
use super::config::ConfigSpec;
use super::{POLL_EVERY, READY_TIMEOUT, ServerOptions, free_ports, greets};
use crate::error::{Error, ErrorKind, Result};

/// The NATS image the Docker fallback runs (2.11 or newer, with JetStream on) unless
/// [`ServerOptions::docker_image`] or `$REFLOW_NATS_IMAGE` names another. It must be
/// present locally: `docker pull nats:2.11` where a registry is reachable, or
/// `docker/build-images.sh` (which builds `reflow-nats:local` from scratch) where not.
pub const NATS_IMAGE: &str = "nats:2.11";

/// The environment variable that names the image in place of [`NATS_IMAGE`].
pub const NATS_IMAGE_ENV: &str = "REFLOW_NATS_IMAGE";

/// The image `options` asks for: its own, else `$REFLOW_NATS_IMAGE`, else [`NATS_IMAGE`].
fn image_of(options: &ServerOptions) -> String {
    options
        .docker_image
        .clone()
        .or_else(|| std::env::var(NATS_IMAGE_ENV).ok().filter(|i| !i.is_empty()))
        .unwrap_or_else(|| NATS_IMAGE.to_string())
}

/// `name` and `tag` of an image reference; `latest` when it has no tag. A registry's port
/// (`host:5000/nats`) is not a tag.
fn name_and_tag(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

const CONFIG_PATH: &str = "/etc/reflow/nats-server.conf";
const CLIENT_PORT: u16 = 4222;

/// A server in a container, with its client port published on `port`.
pub(super) struct Container {
    container: ContainerAsync<GenericImage>,
    port: u16,
    running: bool,
}

impl Container {
    /// Starts a container of the image `options` names, set up by `options`; returns it
    /// and the version the server reports.
    pub(super) async fn start(options: &ServerOptions) -> Result<(Container, Version)> {
        let image = image_of(options);
        require_local_image(&image).await?;
        let port = free_ports(1)?[0];
        let mut spec = ConfigSpec::new(options.clone(), "0.0.0.0", "/data".into());
        spec.client_port = Some(CLIENT_PORT);
        spec.options.monitoring = false;

        let (name, tag) = name_and_tag(&image);
        let container = GenericImage::new(name, tag)
            .with_wait_for(WaitFor::message_on_stderr("Server is ready"))
            .with_mapped_port(port, CLIENT_PORT.tcp())
            .with_copy_to(CONFIG_PATH, spec.render().into_bytes())
            .with_cmd(["-c", CONFIG_PATH])
            .with_startup_timeout(READY_TIMEOUT * 3)
            .start()
            .await
            .map_err(|err| failed(&format!("cannot start a {image} container"), err))?;
        let log = container.stderr_to_vec().await.unwrap_or_default();
        let version = logged_version(&String::from_utf8_lossy(&log))
            .or_else(|| Version::parse(tag))
            .unwrap_or(super::MIN_VERSION);
        Ok((
            Container {
                container,
                port,
                running: true,
            },
            version,
        ))
    }

    pub(super) fn port(&self) -> u16 {
        self.port
    }

    pub(super) fn is_running(&self) -> bool {
        self.running
    }

    /// Stops the container: at once when `kill`, else gracefully.
    pub(super) async fn stop(&mut self, kill: bool) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        let grace = if kill { 0 } else { 5 };
        self.container
            .stop_with_timeout(Some(grace))
            .await
            .map_err(|err| failed("cannot stop the NATS container", err))?;
        self.running = false;
        Ok(())
    }

    pub(super) async fn pause(&self) -> Result<()> {
        self.container
            .pause()
            .await
            .map_err(|err| failed("cannot pause the NATS container", err))
    }

    pub(super) async fn resume(&self) -> Result<()> {
        self.container
            .unpause()
            .await
            .map_err(|err| failed("cannot unpause the NATS container", err))
    }

    pub(super) async fn restart(&mut self) -> Result<()> {
        self.stop(false).await?;
        self.container
            .start()
            .await
            .map_err(|err| failed("cannot start the NATS container again", err))?;
        self.running = true;
        let deadline = Instant::now() + READY_TIMEOUT;
        while !greets(self.port).await {
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::LocalServer,
                    format!("the restarted NATS container was not ready within {READY_TIMEOUT:?}"),
                ));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        Ok(())
    }
}

/// Fails clearly unless Docker answers and `image` is present locally.
async fn require_local_image(image: &str) -> Result<()> {
    let docker =
        Docker::connect_with_defaults().map_err(|err| failed("Docker is not reachable", err))?;
    match tokio::time::timeout(Duration::from_secs(5), docker.ping()).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => return Err(failed("Docker does not answer", err)),
        Err(_) => {
            return Err(Error::new(
                ErrorKind::LocalServer,
                "Docker does not answer within 5s",
            ));
        }
    }
    docker.inspect_image(image).await.map(drop).map_err(|err| {
        failed(
            &format!(
                "the image {image} is not present locally (run `docker pull {image}` where a \
                 registry is reachable, or docker/build-images.sh where not)"
            ),
            err,
        )
    })
}

/// The version in the server's start-up banner (`[INF]   Version:  2.11.4`).
fn logged_version(log: &str) -> Option<Version> {
    let line = log.lines().find(|line| line.contains("Version:"))?;
    Version::parse(line.split("Version:").nth(1)?)
}

fn failed(what: &str, err: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::LocalServer, what, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_into_name_and_tag() {
        assert_eq!(name_and_tag("nats:2.11"), ("nats", "2.11"));
        assert_eq!(name_and_tag("reflow-nats"), ("reflow-nats", "latest"));
        assert_eq!(
            name_and_tag("registry:5000/nats:2.15.1"),
            ("registry:5000/nats", "2.15.1")
        );
        assert_eq!(
            name_and_tag("registry:5000/nats"),
            ("registry:5000/nats", "latest")
        );
    }

    #[test]
    fn the_options_image_comes_first() {
        let options = ServerOptions::new().docker_image("mine:1");
        assert_eq!(image_of(&options), "mine:1");
    }

    #[test]
    fn reads_the_version_from_the_banner() {
        let log = "[1] 2026/01/01 00:00:00.000000 [INF] Starting nats-server\n\
                   [1] 2026/01/01 00:00:00.000000 [INF]   Version:  2.11.4\n";
        assert_eq!(logged_version(log), Some(Version::new(2, 11, 4)));
    }
}
