//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub(crate) mod pki;
pub(crate) mod process;

use std::future::Future;
use std::time::Duration;

/// A loopback port nothing listens on at the moment.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A configuration for `network`/`instance` on the server at `url`.
pub(crate) fn config(
    url: &str,
    network: &str,
    instance: &str,
    heartbeat_ms: u64,
) -> reflow_network::distributed_network::DistributedConfig {
    reflow_network::distributed_network::DistributedConfig {
        network_id: network.into(),
        instance_id: instance.into(),
        discovery_endpoints: vec![url.into()],
        heartbeat_interval_ms: heartbeat_ms,
        ..Default::default()
    }
}

/// Wires `source.out -> {through}.in` in `network`, and `{through}.out -> sink.in` when
/// `back_to` names a sink; returns the inlet that feeds `source.in`.
pub(crate) fn wire_source_through(
    network: &reflow_network::distributed_network::DistributedNetwork,
    through: &str,
    back_to: Option<&str>,
) -> reflow_network::network::Inlet {
    use reflow_network::network::Connector;
    let local = network.get_local_network();
    let mut local = local.write();
    local
        .add_connection(Connector::new("source", "out", through, "in"))
        .unwrap();
    if let Some(sink) = back_to {
        local
            .add_connection(Connector::new(through, "out", sink, "in"))
            .unwrap();
    }
    local.inlet("source", "in").unwrap()
}

/// Sends `make(i)` for every `i` in `range` into `input`, in order, from a task of its own.
pub(crate) fn feed(
    input: reflow_network::network::Inlet,
    range: std::ops::Range<i64>,
    make: impl Fn(i64) -> reflow_network::Message + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in range {
            input.send(make(i)).await.unwrap();
        }
    })
}

/// A started network.
pub(crate) async fn started(
    config: reflow_network::distributed_network::DistributedConfig,
) -> reflow_network::distributed_network::DistributedNetwork {
    let mut network = reflow_network::distributed_network::DistributedNetwork::new(config)
        .await
        .unwrap();
    network.start().await.unwrap();
    network
}

/// The next `n` integers `seen` receives, within `timeout`.
pub(crate) async fn recv_ints(
    seen: &mut tokio::sync::mpsc::Receiver<reflow_network::actor::ProbeMessage>,
    n: usize,
    timeout: Duration,
    what: &str,
) -> Vec<i64> {
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(left, seen.recv()).await {
            Ok(Some(m)) => out.push(m.message.as_integer().expect("an integer")),
            _ => panic!("{what}: got {} of {n} messages", out.len()),
        }
    }
    out
}

/// A network started from `config` once `setup` has registered what it hosts.
pub(crate) async fn started_with(
    config: reflow_network::distributed_network::DistributedConfig,
    setup: impl FnOnce(&reflow_network::distributed_network::DistributedNetwork),
) -> reflow_network::distributed_network::DistributedNetwork {
    let mut network = reflow_network::distributed_network::DistributedNetwork::new(config)
        .await
        .unwrap();
    setup(&network);
    network.start().await.unwrap();
    network
}

/// Polls `condition` every 20 ms until it holds; panics naming `what` after `timeout`.
pub(crate) async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads `events` until one matches `wanted`, returning it; panics naming `what` after
/// `timeout`.
pub(crate) async fn next_event<F>(
    events: &mut reflow_network::events::EventStream,
    what: &str,
    timeout: Duration,
    mut wanted: F,
) -> reflow_network::events::NetworkEvent
where
    F: FnMut(&reflow_network::events::NetworkEvent) -> bool,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if wanted(&event) => return event,
            Ok(Some(_)) => {}
            Ok(None) => panic!("event stream ended waiting for {what}"),
            Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
        }
    }
}

/// A TCP proxy in front of a NATS server that a test can cut: every connection through
/// it is dropped and new ones are refused until [`CutProxy::restore`].
pub(crate) struct CutProxy {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    links: std::sync::Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    pub(crate) async fn start(upstream_port: u16) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let links = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (open2, links2) = (open.clone(), links.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !open2.load(Ordering::Acquire) {
                    continue;
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut upstream) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
                    }
                });
                links2.lock().push(link);
            }
        });
        CutProxy {
            port,
            open,
            links,
            accept,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on: what a leaf node's remote names to join through it.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Drops every connection and refuses new ones.
    pub(crate) fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::Release);
        for link in self.links.lock().drain(..) {
            link.abort();
        }
    }

    /// Lets connections through again.
    pub(crate) fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::Release);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The liveness stream's consumers and replicas, read from the server.
pub(crate) async fn liveness_stream(url: &str) -> (usize, usize) {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(format!("KV_{}", reflow_network::liveness::BUCKET))
        .await
        .unwrap();
    let info = stream.info().await.unwrap();
    (info.state.consumer_count, info.config.num_replicas)
}

/// The index in `urls` of the cluster node that leads stream `name`.
pub(crate) async fn stream_leader(urls: &[String], name: &str) -> usize {
    let js = async_nats::jetstream::new(async_nats::connect(&urls[0]).await.unwrap());
    let mut stream = js.get_stream(name).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3, "{name} is replicated");
    let leader_name = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .unwrap();
    for (index, url) in urls.iter().enumerate() {
        let client = async_nats::connect(url).await.unwrap();
        if client.server_info().server_name == leader_name {
            return index;
        }
    }
    panic!("the leader of {name}, {leader_name}, is none of the nodes")
}
