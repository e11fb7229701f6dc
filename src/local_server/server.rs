//! [`NatsServer`]: one local server, whatever runs it.

use std::path::Path;

use super::ServerOptions;
use super::binary::{Version, find_nats_server};
use super::config::{ClusterSpec, ConfigSpec};
use super::process::Process;
use crate::error::{Error, ErrorKind, Result};

/// A local nats-server that tests and tools can start, hurt and bring back.
///
/// It normally runs as a child process (see [`super::find_nats_server`]); when no binary
/// can be had and Docker runs, as a container. It listens on loopback, keeps JetStream in a
/// temporary folder, and is killed and cleaned up when dropped.
///
/// A stopped, killed or restarted server keeps its [`port`](Self::port) and its JetStream
/// store, so clients connected to [`url`](Self::url) reconnect by themselves once it is back.
pub struct NatsServer {
    backend: Backend,
    options: ServerOptions,
    version: Version,
}

// A handful of servers live at a time, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Process(Process),
    #[cfg(feature = "docker")]
    Container(super::container::Container),
}

impl NatsServer {
    /// Starts a single server with the default [`ServerOptions`]: JetStream on, no token,
    /// a free loopback port.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::LocalServer`] when no server can be had (see [`super::find_nats_server`])
    /// or it does not become ready within [`super::READY_TIMEOUT`]; the message carries the
    /// end of the server's log.
    ///
    /// # Cancel safety
    ///
    /// Cancelling drops the half-started server, which kills it.
    pub async fn start() -> Result<NatsServer> {
        Self::start_with(ServerOptions::default()).await
    }

    /// Starts a single server set up by `options`.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub async fn start_with(options: ServerOptions) -> Result<NatsServer> {
        match locate().await {
            Ok(binary) => Self::start_process(binary.path(), binary.version(), options, None).await,
            #[cfg(feature = "docker")]
            Err(no_binary) => Self::start_in_docker(options).await.map_err(|no_docker| {
                Error::new(
                    ErrorKind::LocalServer,
                    format!(
                        "{}; and the Docker fallback failed: {}",
                        no_binary.detail(),
                        no_docker.detail()
                    ),
                )
            }),
            #[cfg(not(feature = "docker"))]
            Err(no_binary) => Err(no_binary),
        }
    }

    /// Starts a server in a Docker container of the image `options` names (see
    /// [`ServerOptions::docker_image`]; [`super::NATS_IMAGE`] by default), which must be present
    /// locally. [`start_with`](Self::start_with) does this by itself when there is no binary.
    ///
    /// Such a server has no pid, log file or store folder on this machine, and no
    /// monitoring endpoint.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::LocalServer`] when Docker does not answer, the image is missing, or the
    /// server does not become ready.
    #[cfg(feature = "docker")]
    pub async fn start_in_docker(options: ServerOptions) -> Result<NatsServer> {
        let (container, version) = super::container::Container::start(&options).await?;
        Ok(NatsServer {
            backend: Backend::Container(container),
            options,
            version,
        })
    }

    /// Starts a process-backed server; the cluster passes its node's name and routes.
    pub(super) async fn start_process(
        binary: &Path,
        version: Version,
        options: ServerOptions,
        node: Option<(String, ClusterSpec)>,
    ) -> Result<NatsServer> {
        let mut spec = ConfigSpec::new(options.clone(), "127.0.0.1", String::new());
        if let Some((name, cluster)) = node {
            spec.server_name = Some(name);
            spec.cluster = Some(cluster);
        }
        let process = Process::start(binary, spec).await?;
        Ok(NatsServer {
            backend: Backend::Process(process),
            options,
            version,
        })
    }

    /// The URL clients connect to: `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port())
    }

    /// The client port. It stays the same across [`restart`](Self::restart)s.
    pub fn port(&self) -> u16 {
        match &self.backend {
            Backend::Process(p) => p.port(),
            #[cfg(feature = "docker")]
            Backend::Container(c) => c.port(),
        }
    }

    /// The monitoring endpoint (`http://127.0.0.1:PORT`), when [`ServerOptions::monitoring`]
    /// is on and the server runs as a process.
    pub fn monitoring_url(&self) -> Option<String> {
        match &self.backend {
            Backend::Process(p) => p.http_port().map(|port| format!("http://127.0.0.1:{port}")),
            #[cfg(feature = "docker")]
            Backend::Container(_) => None,
        }
    }

    /// The options the server was started with.
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// Options for an `async_nats` client of this server: its token, if it has one.
    pub fn connect_options(&self) -> async_nats::ConnectOptions {
        match &self.options.token {
            Some(token) => async_nats::ConnectOptions::with_token(token.clone()),
            None => async_nats::ConnectOptions::new(),
        }
    }

    /// The server's version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The server process's id while it runs; `None` when it is stopped or in a container.
    pub fn pid(&self) -> Option<u32> {
        match &self.backend {
            Backend::Process(p) => p.pid(),
            #[cfg(feature = "docker")]
            Backend::Container(_) => None,
        }
    }

    /// The JetStream store folder; `None` in a container.
    pub fn store_dir(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Process(p) => Some(p.store_dir()),
            #[cfg(feature = "docker")]
            Backend::Container(_) => None,
        }
    }

    /// The server's log file, appended to across restarts; `None` in a container.
    pub fn log_path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Process(p) => Some(p.log_path()),
            #[cfg(feature = "docker")]
            Backend::Container(_) => None,
        }
    }

    /// Whether the server runs (a paused server counts as running).
    pub fn is_running(&mut self) -> bool {
        match &mut self.backend {
            Backend::Process(p) => p.is_running(),
            #[cfg(feature = "docker")]
            Backend::Container(c) => c.is_running(),
        }
    }

    /// Shuts the server down gracefully (`SIGTERM`, then `SIGKILL` if it lingers) and waits
    /// until it has exited. Does nothing if it is not running.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::LocalServer`] when it cannot be signalled or waited for.
    pub async fn stop(&mut self) -> Result<()> {
        match &mut self.backend {
            Backend::Process(p) => p.stop().await,
            #[cfg(feature = "docker")]
            Backend::Container(c) => c.stop(false).await,
        }
    }

    /// Kills the server at once (`SIGKILL`), as a crash or power loss would, and waits until
    /// it is gone. Does nothing if it is not running.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::LocalServer`] when it cannot be killed.
    pub async fn kill(&mut self) -> Result<()> {
        match &mut self.backend {
            Backend::Process(p) => p.kill(),
            #[cfg(feature = "docker")]
            Backend::Container(c) => c.stop(true).await,
        }
    }

    /// Freezes the server (`SIGSTOP`): its connections stay open but nothing is answered,
    /// as with a hung or partitioned server. Returns once the server is frozen.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::LocalServer`] when the server is not running.
    pub async fn pause(&self) -> Result<()> {
        match &self.backend {
            Backend::Process(p) => p.pause().await,
            #[cfg(feature = "docker")]
            Backend::Container(c) => c.pause().await,
        }
    }

    /// Lets a paused server run again (`SIGCONT`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::LocalServer`] when the server cannot be signalled.
    pub async fn resume(&self) -> Result<()> {
        match &self.backend {
            Backend::Process(p) => p.resume(),
            #[cfg(feature = "docker")]
            Backend::Container(c) => c.resume().await,
        }
    }

    /// Starts the server again on the same ports with the same JetStream store, stopping it
    /// first if it runs, and waits until it is ready. Works after [`stop`](Self::stop) and
    /// after [`kill`](Self::kill).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub async fn restart(&mut self) -> Result<()> {
        match &mut self.backend {
            Backend::Process(p) => p.restart().await,
            #[cfg(feature = "docker")]
            Backend::Container(c) => c.restart().await,
        }
    }
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("url", &self.url())
            .field("version", &self.version)
            .field("pid", &self.pid())
            .finish()
    }
}

/// [`find_nats_server`] off the async threads: it may run `pip`.
pub(super) async fn locate() -> Result<super::NatsBinary> {
    tokio::task::spawn_blocking(find_nats_server)
        .await
        .map_err(|err| {
            Error::new(
                ErrorKind::LocalServer,
                format!("the binary search failed: {err}"),
            )
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_and_clusters_can_move_between_tasks() {
        fn send_and_sync<T: Send + Sync>() {}
        send_and_sync::<NatsServer>();
        send_and_sync::<super::super::NatsCluster>();
    }
}
