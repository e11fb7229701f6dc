//! What a direct transport needs to know: who it is, the shared secret, and its limits.

use std::fmt;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::frame::DEFAULT_MAX_FRAME_SIZE;
use crate::error::{Error, Result};
use crate::subject::{validate_instance_id, validate_network_id};

/// The smallest frame limit accepted: a handshake must always fit.
const MIN_FRAME_SIZE: usize = 1024;

/// Settings of a [`DirectTransport`](super::DirectTransport).
///
/// [`DirectConfig::new`] fills in defaults that suit a LAN; the fields are public so that
/// tests and the bridge can tighten them.
///
/// ```
/// use reflow_network::transport::direct::DirectConfig;
///
/// let mut config = DirectConfig::new("prod.ml", "i-1");
/// config.auth_token = Some("s3cret".into());
/// config.max_connections = 16;
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone)]
pub struct DirectConfig {
    /// This network's id, sent to peers in the handshake.
    pub network_id: String,
    /// This process's instance id within its network.
    pub instance_id: String,
    /// Shared secret every peer must prove it knows; `None` accepts anyone who speaks the
    /// protocol. When set, this end also demands the listener's proof when it dials.
    pub auth_token: Option<String>,
    /// Most inbound links held at once; further connections are refused with
    /// `Refused: max connections reached (N)`.
    pub max_connections: usize,
    /// Largest frame body, in bytes, read from or written to a peer.
    pub max_frame_size: usize,
    /// How often an idle link is pinged.
    pub ping_interval: Duration,
    /// How long a link may stay silent (no pong, nor any other frame) before it is closed.
    pub ping_timeout: Duration,
    /// How long a dial or an accepted connection may take to finish the handshake.
    pub handshake_timeout: Duration,
    /// Default wait for [`ping`](super::DirectTransport::ping) answers.
    pub request_timeout: Duration,
    /// How long [`shutdown`](super::DirectTransport::shutdown) and
    /// [`disconnect`](super::DirectTransport::disconnect) wait for queues to drain before
    /// they cut links.
    pub shutdown_timeout: Duration,
    /// The address peers should dial to reach this end, when the bound one is not it (NAT,
    /// containers). `None` advertises the bound address.
    pub advertise: Option<String>,
    /// Frames each link may queue for sending before publishers wait.
    pub outbound_capacity: usize,
}

impl DirectConfig {
    /// Settings for `network`'s instance `instance`, with defaults for everything else:
    /// no token, 100 connections, 8 MiB frames, a ping every 5 s and a 15 s silence limit,
    /// 5 s handshakes, 10 s requests and 1024 queued frames per link.
    pub fn new(network: impl Into<String>, instance: impl Into<String>) -> Self {
        DirectConfig {
            network_id: network.into(),
            instance_id: instance.into(),
            auth_token: None,
            max_connections: 100,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
            advertise: None,
            outbound_capacity: 1024,
        }
    }

    /// Checks every field; the error names the first one that is wrong.
    pub fn validate(&self) -> Result<()> {
        validate_network_id(&self.network_id)?;
        validate_instance_id(&self.instance_id)?;
        if self.auth_token.as_deref() == Some("") {
            return Err(Error::invalid_config(
                "auth_token",
                "is empty; use None for no token",
            ));
        }
        if !(1..=Semaphore::MAX_PERMITS).contains(&self.max_connections) {
            return Err(Error::invalid_config(
                "max_connections",
                format!(
                    "{} is outside 1..={}",
                    self.max_connections,
                    Semaphore::MAX_PERMITS
                ),
            ));
        }
        if !(MIN_FRAME_SIZE..=u32::MAX as usize).contains(&self.max_frame_size) {
            return Err(Error::invalid_config(
                "max_frame_size",
                format!(
                    "{} is outside {MIN_FRAME_SIZE}..={} bytes",
                    self.max_frame_size,
                    u32::MAX
                ),
            ));
        }
        if self.outbound_capacity == 0 {
            return Err(Error::invalid_config(
                "outbound_capacity",
                "must be at least 1",
            ));
        }
        for (field, value) in [
            ("ping_interval", self.ping_interval),
            ("ping_timeout", self.ping_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("request_timeout", self.request_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::invalid_config(field, "must be longer than zero"));
            }
        }
        if self.ping_timeout < self.ping_interval {
            return Err(Error::invalid_config(
                "ping_timeout",
                format!(
                    "{:?} is shorter than ping_interval ({:?}); a link would be cut before it is pinged",
                    self.ping_timeout, self.ping_interval
                ),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for DirectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectConfig")
            .field("network_id", &self.network_id)
            .field("instance_id", &self.instance_id)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("max_connections", &self.max_connections)
            .field("max_frame_size", &self.max_frame_size)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("advertise", &self.advertise)
            .field("outbound_capacity", &self.outbound_capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn defaults_are_valid_and_the_token_is_not_printed() {
        let mut config = DirectConfig::new("prod.ml", "i-1");
        config.auth_token = Some("s3cret".into());
        config.validate().unwrap();
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn a_bad_field_is_named() {
        let mut config = DirectConfig::new("n", "i");
        config.max_frame_size = 10;
        let err = config.validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.to_string().contains("max_frame_size"), "{err}");

        let mut config = DirectConfig::new("n", "i");
        config.ping_timeout = Duration::from_millis(1);
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("ping_timeout")
        );
    }
}
