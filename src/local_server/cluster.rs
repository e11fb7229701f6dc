//! [`NatsCluster`]: several local servers routed together as one cluster.
//!
//! A cluster is how the product scales past one server, and what a liveness or reconnect
//! test needs when it takes one node out while the others carry on. Every node gets a
//! cluster port picked up front and routes to every node's port (its own included, which a
//! server ignores), so each node's configuration is complete from the start and a killed
//! node restarts on the same ports and rejoins. JetStream clustering refuses to start
//! without configured routes, which is why the ports cannot be left to the servers.
//!
//! A started cluster is formed, not just running: a message published on any node has
//! reached a subscriber on every other, and with JetStream on, the JetStream API answers.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::try_join_all;

use super::config::ClusterSpec;
use super::server::locate;
use super::{NatsBinary, NatsServer, ServerOptions, free_ports};
use crate::error::{Error, ErrorKind, Result};

/// The cluster name every local cluster uses.
const CLUSTER_NAME: &str = "reflow_test";

/// How long a started cluster may take to route messages between all its nodes and, with
/// JetStream on, to elect a JetStream leader.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a start is tried again when another process took a picked port.
const PORT_ATTEMPTS: usize = 3;

/// Several local nats-servers on loopback, routed together as one cluster.
///
/// Each node is a [`NatsServer`] with its own name (`{name}-1`, `{name}-2`, ... where the
/// name defaults to `reflow`), store folder and ports; any node can be stopped, killed,
/// paused or restarted through [`node_mut`](Self::node_mut).
///
/// ```no_run
/// use reflow_network::local_server::{NatsCluster, ServerOptions};
///
/// # #[tokio::main] async fn main() -> reflow_network::Result<()> {
/// let mut cluster = NatsCluster::start(3, ServerOptions::default()).await?;
/// let seeds = cluster.urls(); // give all of them to a client
/// cluster.node_mut(0).kill().await?;
/// cluster.node_mut(0).restart().await?;
/// cluster.wait_until_formed().await?;
/// # drop(seeds);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` nodes set up by `options` and waits until they form one cluster.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] when `size` is 0 or `options.port` is set (each node
    /// needs its own port); [`ErrorKind::LocalServer`] when no nats-server binary can be had
    /// (clusters do not run in Docker), a node does not start, or the cluster does not form
    /// within 30 seconds.
    ///
    /// # Cancel safety
    ///
    /// Cancelling drops the nodes started so far, which kills them.
    pub async fn start(size: usize, options: ServerOptions) -> Result<NatsCluster> {
        if size == 0 {
            return Err(Error::invalid_config(
                "cluster size",
                "need at least one node",
            ));
        }
        if let Some(port) = options.port {
            return Err(Error::invalid_config(
                "ServerOptions::port",
                format!("{port} cannot serve every node of a cluster; leave it unset"),
            ));
        }
        let binary = locate().await?;
        let mut attempt = 1;
        let cluster = loop {
            match Self::start_nodes(&binary, size, &options).await {
                Ok(cluster) => break cluster,
                Err(err)
                    if attempt < PORT_ATTEMPTS
                        && err.detail().contains("address already in use") =>
                {
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        };
        cluster.wait_until_formed().await?;
        Ok(cluster)
    }

    async fn start_nodes(
        binary: &NatsBinary,
        size: usize,
        options: &ServerOptions,
    ) -> Result<NatsCluster> {
        let ports = free_ports(size)?;
        let base = options.name.as_deref().unwrap_or("reflow");
        let starts = ports.iter().enumerate().map(|(i, &port)| {
            let node = ClusterSpec {
                name: CLUSTER_NAME.to_string(),
                port,
                routes: ports.clone(),
            };
            let name = format!("{base}-{}", i + 1);
            NatsServer::start_process(
                binary.path(),
                binary.version(),
                options.clone(),
                Some((name, node)),
            )
        });
        Ok(NatsCluster {
            nodes: try_join_all(starts).await?,
        })
    }

    /// Waits until every node's messages reach subscribers on every other node and, with JetStream on, the JetStream API answers. [`start`](Self::start) does
    /// this; call it again after restarting a node.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::LocalServer`] when a node cannot be reached or the cluster does not form
    /// within 30 seconds; the message names the nodes that cannot reach each other.
    pub async fn wait_until_formed(&self) -> Result<()> {
        let deadline = Instant::now() + FORM_TIMEOUT;
        let mut clients = Vec::new();
        for node in &self.nodes {
            let client = node
                .connect_options()
                .name("reflow-local-cluster-check")
                .connect(node.url())
                .await
                .map_err(|err| nats_failed(&format!("cannot connect to {}", node.url()), err))?;
            clients.push(client);
        }
        let run = uuid::Uuid::new_v4().simple().to_string();
        for (to, receiver) in clients.iter().enumerate() {
            for (from, sender) in clients.iter().enumerate().filter(|&(from, _)| from != to) {
                let subject = format!("_reflow_local.routes.{run}.{from}.{to}");
                let mut subscription = receiver
                    .subscribe(subject.clone())
                    .await
                    .map_err(|err| nats_failed("cannot subscribe", err))?;
                receiver
                    .flush()
                    .await
                    .map_err(|err| nats_failed("cannot flush", err))?;
                loop {
                    sender
                        .publish(subject.clone(), "route check".into())
                        .await
                        .map_err(|err| nats_failed("cannot publish", err))?;
                    sender
                        .flush()
                        .await
                        .map_err(|err| nats_failed("cannot flush", err))?;
                    let arrived =
                        tokio::time::timeout(Duration::from_millis(50), subscription.next()).await;
                    if matches!(arrived, Ok(Some(_))) {
                        break;
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::new(
                            ErrorKind::LocalServer,
                            format!(
                                "the cluster did not form within {FORM_TIMEOUT:?}: messages published \
                                 on node {} do not reach node {}",
                                from + 1,
                                to + 1
                            ),
                        ));
                    }
                }
            }
        }
        if self.nodes[0].options().jetstream {
            wait_for_jetstream(clients[0].clone(), deadline).await?;
        }
        Ok(())
    }

    /// The nodes, in start order.
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// Node `index` (from 0).
    ///
    /// # Panics
    ///
    /// When `index` is not below [`len`](Self::len).
    pub fn node(&self, index: usize) -> &NatsServer {
        &self.nodes[index]
    }

    /// Node `index` (from 0), to stop, kill, pause or restart it.
    ///
    /// # Panics
    ///
    /// When `index` is not below [`len`](Self::len).
    pub fn node_mut(&mut self, index: usize) -> &mut NatsServer {
        &mut self.nodes[index]
    }

    /// Every node's client URL, in node order: a client's seed list.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes (never true of a started one).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// Polls the JetStream API until it answers, which in a cluster means a leader is elected.
async fn wait_for_jetstream(client: async_nats::Client, deadline: Instant) -> Result<()> {
    let mut jetstream = async_nats::jetstream::new(client);
    jetstream.set_timeout(Duration::from_millis(500));
    loop {
        match jetstream.query_account().await {
            Ok(_) => return Ok(()),
            Err(err) if Instant::now() >= deadline => {
                return Err(nats_failed(
                    &format!("JetStream did not come up within {FORM_TIMEOUT:?}"),
                    err,
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn nats_failed(what: &str, err: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::LocalServer, what, err)
}
