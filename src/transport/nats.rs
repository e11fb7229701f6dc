//! The connection to the NATS broker: options from the configuration, the server version
//! check, and the broker's own events turned into [`NetworkEvent`]s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, ServerAddr};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

use super::Transport;
use crate::events::TransportKind;

use crate::error::{Error, ErrorKind, Result};
use crate::events::NetworkEvent;

/// Where the broker connection's events go: every network that uses the connection.
pub(crate) type EventSink = Arc<dyn Fn(NetworkEvent) + Send + Sync>;

/// The oldest nats-server with per-message TTLs in key-value buckets (ADR-43).
pub const MIN_SERVER_VERSION: (u64, u64, u64) = (2, 11, 0);

/// How long the first connection attempt may take before `start()` gives up on it.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the client pings a broker that has sent it nothing: once per heartbeat
/// interval, kept between these bounds. The client gives the broker up after three
/// unanswered pings, so a broker that stops answering without closing the connection
/// (frozen, or cut off by a partition) is found out within about three intervals rather
/// than the two minutes of the NATS client's default.
const PING_BOUNDS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(5));

/// The client's ping interval for `heartbeat_interval_ms`.
pub(crate) fn ping_interval(heartbeat_interval_ms: u64) -> Duration {
    Duration::from_millis(heartbeat_interval_ms).clamp(PING_BOUNDS.0, PING_BOUNDS.1)
}

/// What the bridge learns from the broker connection while it runs.
#[derive(Debug)]
pub(crate) struct BrokerState {
    /// Whether the client is connected now.
    pub(crate) up: watch::Sender<bool>,
    /// Messages the client dropped because a subscription's buffer was full.
    pub(crate) slow_consumer_drops: AtomicU64,
    lost: AtomicBool,
}

impl BrokerState {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(BrokerState {
            up: watch::channel(false).0,
            slow_consumer_drops: AtomicU64::new(0),
            lost: AtomicBool::new(false),
        })
    }

    /// Whether the broker connection is up.
    pub(crate) fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    fn on_event(&self, event: async_nats::Event, events: &dyn Fn(NetworkEvent)) {
        match event {
            async_nats::Event::Connected => {
                self.up.send_replace(true);
                if self.lost.swap(false, Ordering::AcqRel) {
                    tracing::info!("broker connection regained");
                    events(NetworkEvent::BrokerRegained);
                }
            }
            async_nats::Event::Disconnected => {
                self.up.send_replace(false);
                if !self.lost.swap(true, Ordering::AcqRel) {
                    tracing::warn!("broker connection lost; reconnecting");
                    events(NetworkEvent::BrokerLost);
                }
            }
            async_nats::Event::SlowConsumer(sid) => {
                let total = self.slow_consumer_drops.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    sid,
                    total,
                    "slow consumer: the NATS client dropped a message"
                );
                events(NetworkEvent::SlowConsumer {
                    total_dropped: total,
                });
            }
            async_nats::Event::ServerError(err) => {
                let text = err.to_string();
                match super::limits::describe(&text) {
                    Some(limit) => {
                        tracing::error!(error = %text, "the NATS server refused: {limit}")
                    }
                    None => tracing::warn!(error = %text, "the NATS server reported an error"),
                }
            }
            other => tracing::info!(event = %other, "broker event"),
        }
    }
}

/// What the broker road needs to connect: no more of the network's configuration than
/// this, so the transport does not depend on the facade.
#[derive(Clone)]
pub(crate) struct BrokerOptions {
    /// Server URLs, a cluster's seed list.
    pub(crate) urls: Vec<String>,
    /// The name the server shows for this connection.
    pub(crate) client_name: String,
    /// A token for servers that ask for one.
    pub(crate) token: Option<String>,
    /// The liveness heartbeat, which paces the client's pings.
    pub(crate) heartbeat_interval_ms: u64,
    /// TLS, creds, NKey, user or server token.
    pub(crate) auth: crate::distributed_network::NatsAuth,
    /// The caller's own changes to the connect options, applied last.
    pub(crate) custom: Option<ConnectCustomizer>,
    /// The JetStream domain that holds the liveness bucket (`$JS.{domain}.API`), for a
    /// server that is a leaf node of the one with the bucket; `None` is the server's own.
    pub(crate) jetstream_domain: Option<String>,
}

/// Changes a caller makes to the client's connect options
/// ([`DistributedNetwork::customize_connection`](crate::distributed_network::DistributedNetwork::customize_connection)).
pub type ConnectCustomizer = Arc<dyn Fn(ConnectOptions) -> ConnectOptions + Send + Sync>;

/// Parses the configured URLs, naming any that is not a server address.
pub(crate) fn server_addrs(urls: &[String]) -> Result<Vec<ServerAddr>> {
    urls.iter()
        .map(|url| {
            url.parse::<ServerAddr>().map_err(|e| {
                Error::invalid_config("discovery_endpoints", format!("{url:?} is not usable: {e}"))
            })
        })
        .collect()
}

/// Connects to the broker named by `config`.
///
/// With `wait` the first attempt must succeed within [`CONNECT_TIMEOUT`]; without it the
/// client is returned at once and keeps trying in the background (the direct-link mode,
/// where a missing broker must not block startup).
pub(crate) async fn connect(
    config: &BrokerOptions,
    state: Arc<BrokerState>,
    events: EventSink,
    wait: bool,
) -> Result<Client> {
    let addrs = server_addrs(&config.urls)?;
    let callback_state = state.clone();
    let mut options = ConnectOptions::new()
        .name(config.client_name.clone())
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(ping_interval(config.heartbeat_interval_ms))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            // Quick first retries so a restarted broker is found within a second; capped so
            // a long outage costs little.
            Duration::from_millis((50u64 << attempts.min(5)).min(1_000))
        })
        .subscription_capacity(64 * 1024)
        .event_callback(move |event| {
            let state = callback_state.clone();
            let events = events.clone();
            async move { state.on_event(event, &*events) }
        });
    options = authenticate(options, &config.auth, config.token.as_deref(), &addrs).await?;
    if let Some(custom) = &config.custom {
        options = custom(options);
    }
    if !wait {
        options = options.retry_on_initial_connect();
    }
    let urls = config.urls.join(", ");
    let client = async_nats::connect_with_options(addrs, options)
        .await
        .map_err(|e| connect_error(&urls, &what_proves(&config.auth, config.token.is_some()), e))?;
    if client.connection_state() == async_nats::connection::State::Connected {
        state.up.send_replace(true);
    }
    Ok(client)
}

/// Adds what proves this client to the server: the first of a creds file, an NKey
/// seed, a user and password (set, or in a URL), a server token and the auth token; and
/// TLS files.
async fn authenticate(
    mut options: ConnectOptions,
    auth: &crate::distributed_network::NatsAuth,
    token: Option<&str>,
    addrs: &[ServerAddr],
) -> Result<ConnectOptions> {
    auth.check()?;
    if let Some(creds) = &auth.creds_file {
        options = options.credentials_file(creds).await.map_err(|e| {
            Error::with_source(
                ErrorKind::InvalidConfig,
                format!("the creds file {} cannot be used", creds.display()),
                e,
            )
        })?;
    } else if let Some(seed_file) = &auth.nkey_seed_file {
        let seed = std::fs::read_to_string(seed_file)
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::InvalidConfig,
                    format!("cannot read the NKey seed file {}", seed_file.display()),
                    e,
                )
            })?
            .trim()
            .to_string();
        if !seed.starts_with("SU") {
            return Err(Error::invalid_config(
                "nkey_seed_file",
                format!(
                    "{} does not hold a user NKey seed (one starting with SU)",
                    seed_file.display()
                ),
            ));
        }
        options = options.nkey(seed);
    } else if let (Some(user), Some(password)) = (&auth.user, &auth.password) {
        options = options.user_and_password(user.clone(), password.clone());
    } else if let Some(addr) = addrs.iter().find(|a| a.password().is_some()) {
        // async-nats does not read credentials embedded in a URL; a per-network user
        // (nats/auth/users.conf) is written as nats://user:password@host, so pass them on.
        options = options.user_and_password(
            addr.username().unwrap_or_default().to_string(),
            addr.password().unwrap_or_default().to_string(),
        );
    } else if let Some(url_token) = addrs.iter().find_map(|a| a.username()) {
        // nats://TOKEN@host: a user with no password is a token, as natscli reads it.
        options = options.token(url_token.to_string());
    } else if let Some(token) = auth.token.as_deref().or(token) {
        options = options.token(token.to_string());
    }
    if let Some(ca) = &auth.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&auth.tls_cert_file, &auth.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if auth.wants_tls() {
        options = options.require_tls(true);
    }
    if auth.tls_first {
        options = options.tls_first();
    }
    Ok(options)
}

/// What this client offers the server as proof, for error messages.
fn what_proves(auth: &crate::distributed_network::NatsAuth, has_token: bool) -> String {
    if let Some(creds) = &auth.creds_file {
        format!("the creds file {}", creds.display())
    } else if let Some(seed) = &auth.nkey_seed_file {
        format!("the NKey seed in {}", seed.display())
    } else if let Some(user) = &auth.user {
        format!("user {user:?} and its password")
    } else if auth.token.is_some() {
        "the server token (NatsAuth::token)".into()
    } else if has_token {
        "the auth_token (--token)".into()
    } else {
        String::new()
    }
}

/// Whether a connect failure is TLS refusing: a bad setup, or a certificate one side
/// would not take (async-nats reports the latter as I/O).
fn is_tls_failure(err: &async_nats::ConnectError) -> bool {
    let text = err.to_string().to_ascii_lowercase();
    err.kind() == async_nats::ConnectErrorKind::Tls
        || (err.kind() == async_nats::ConnectErrorKind::Io
            && (text.contains("certificate") || text.contains("tls") || text.contains("alert")))
}

/// What a first connection that no server answered in time says.
pub(crate) fn no_answer(urls: &str) -> String {
    format!(
        "no NATS server answered at {urls} within {CONNECT_TIMEOUT:?}; start one with \
         `reflow-bridge up`"
    )
}

fn connect_error(urls: &str, proof: &str, err: async_nats::ConnectError) -> Error {
    use async_nats::ConnectErrorKind as K;
    let text = err.to_string();
    match err.kind() {
        K::AuthorizationViolation | K::Authentication => Error::with_source(
            ErrorKind::AuthenticationFailed,
            if proof.is_empty() {
                format!(
                    "the NATS server at {urls} wants credentials; set auth_token (--token), \
                     a creds file (--creds), an NKey seed (--nkey) or a user (--user)"
                )
            } else {
                format!("the NATS server at {urls} refused {proof}")
            },
            err,
        ),
        _ if is_tls_failure(&err) => Error::quoting_source(
            ErrorKind::AuthenticationFailed,
            format!(
                "TLS with the NATS server at {urls} failed ({text}): check that the server's \
                 certificate is signed by the CA given (tls_ca_file, --tls-ca) and names the \
                 host dialled, and that the client certificate (tls_cert_file, --tls-cert) is \
                 one the server trusts"
            ),
            err,
        ),
        K::TimedOut => Error::with_source(ErrorKind::Timeout, no_answer(urls), err),
        _ if super::limits::describe(&text).is_some() => super::limits::name_limit(Error::new(
            ErrorKind::Broker,
            format!("the NATS server at {urls}: {text}"),
        )),
        _ => Error::quoting_source(
            ErrorKind::Broker,
            format!(
                "cannot reach a NATS server at {urls} ({text}); start one with \
                 `reflow-bridge up`, or set discovery_endpoints / NATS_URL"
            ),
            err,
        ),
    }
}

/// Connects a plain NATS client to `urls` as a network would: proving itself with `auth`
/// (or `token`, or a `user:password` in a URL); a failure is one error naming what was
/// refused. For tools that need a bare client, such as `reflow-bridge watch`.
pub async fn connect_client(
    urls: &[String],
    token: Option<&str>,
    auth: &crate::distributed_network::NatsAuth,
    name: &str,
) -> Result<Client> {
    let addrs = server_addrs(urls)?;
    let options = ConnectOptions::new()
        .name(name)
        .connection_timeout(CONNECT_TIMEOUT);
    let options = authenticate(options, auth, token, &addrs).await?;
    async_nats::connect_with_options(addrs, options)
        .await
        .map_err(|e| connect_error(&urls.join(", "), &what_proves(auth, token.is_some()), e))
}

/// Parses `2.15.1`, `v2.11.0-RC.1` and the like into numbers.
pub fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let text = text.trim().trim_start_matches('v');
    let core = text.split(['-', '+', ' ']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Fails with [`ErrorKind::ServerVersion`] when the connected server is older than
/// [`MIN_SERVER_VERSION`], naming the version found.
pub(crate) fn check_server_version(client: &Client) -> Result<()> {
    let info = client.server_info();
    if info.version.is_empty() {
        // Not connected yet (direct-link mode): checked once the broker appears.
        return Ok(());
    }
    let (major, minor, patch) = MIN_SERVER_VERSION;
    match parse_version(&info.version) {
        Some(found) if found >= MIN_SERVER_VERSION => Ok(()),
        _ => Err(Error::new(
            ErrorKind::ServerVersion,
            format!(
                "nats-server {} at {} is too old; reflow_network needs {major}.{minor}.{patch} \
                 or newer for per-message TTLs in its liveness bucket",
                info.version, info.host
            ),
        )),
    }
}

/// Maps a publish failure to an error naming the subject (and the server's limit, if
/// the payload is too large).
pub(crate) fn publish_error(subject: &str, err: async_nats::PublishError) -> Error {
    match err.kind() {
        async_nats::client::PublishErrorKind::MaxPayloadExceeded => Error::new(
            ErrorKind::PayloadTooLarge,
            format!("message for {subject}: {err} (the server's max_payload)"),
        ),
        async_nats::client::PublishErrorKind::InvalidSubject => {
            Error::new(ErrorKind::InvalidName, format!("{subject:?}: {err}"))
        }
        async_nats::client::PublishErrorKind::Send => Error::with_source(
            ErrorKind::Broker,
            format!("publish to {subject} failed: {err}"),
            err,
        ),
    }
}

/// The broker road: a thin layer over the NATS client that speaks in this library's
/// errors.
#[derive(Debug, Clone)]
pub(crate) struct NatsTransport {
    pub(crate) client: Client,
}

#[async_trait]
impl Transport for NatsTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Nats
    }

    async fn publish(
        &self,
        _network: &str,
        subject: &async_nats::Subject,
        payload: Bytes,
    ) -> Result<()> {
        self.client
            .publish(subject.clone(), payload)
            .await
            .map_err(|e| publish_error(subject, e))
    }

    async fn request(
        &self,
        network: &str,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        let request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        self.client
            .send_request(async_nats::Subject::from(subject), request)
            .await
            .map(|reply| reply.payload)
            .map_err(|e| request_error(network, subject, timeout, e))
    }
}

fn request_error(
    network: &str,
    subject: &str,
    timeout: Duration,
    err: async_nats::RequestError,
) -> Error {
    use async_nats::RequestErrorKind as K;
    match err.kind() {
        K::NoResponders => Error::new(
            ErrorKind::NetworkDisconnected,
            format!(
                "no instance of network {network:?} answers on {subject} \
                 (is it running, on the same NATS server or cluster?)"
            ),
        ),
        K::TimedOut => Error::timeout(
            format!("request to network {network:?} on {subject}"),
            timeout,
        ),
        K::MaxPayloadExceeded => Error::new(
            ErrorKind::PayloadTooLarge,
            format!("request to {subject}: {err} (the server's max_payload)"),
        ),
        K::InvalidSubject => Error::new(ErrorKind::InvalidName, format!("{subject:?}: {err}")),
        K::Other => Error::with_source(
            ErrorKind::Broker,
            format!("request to {subject} failed: {err}"),
            err,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15, 1)));
        assert_eq!(parse_version("v2.11.0-RC.1"), Some((2, 11, 0)));
        assert_eq!(parse_version("2.9"), Some((2, 9, 0)));
        assert!(parse_version("2.9.25").unwrap() < MIN_SERVER_VERSION);
        assert!(parse_version("2.11.0").unwrap() >= MIN_SERVER_VERSION);
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn pings_follow_the_heartbeat_within_bounds() {
        assert_eq!(ping_interval(2_000), Duration::from_secs(2));
        assert_eq!(ping_interval(100), Duration::from_secs(1));
        assert_eq!(ping_interval(0), Duration::from_secs(1));
        assert_eq!(ping_interval(30_000), Duration::from_secs(5));
    }
}
