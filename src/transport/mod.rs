//! The roads traffic takes between networks: [`nats`] through the broker, and direct TCP
//! links between networks for when there is no broker. The bridge sees both through the
//! small `Transport` trait: publish a payload on a subject, or ask and wait for a reply.

pub mod direct;
pub(crate) mod limits;
pub mod nats;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::events::TransportKind;

/// One road to other networks.
#[async_trait]
pub(crate) trait Transport: Send + Sync {
    /// Which road this is.
    #[allow(dead_code)] // read by the fallback router
    fn kind(&self) -> TransportKind;

    /// Sends `payload` on `subject` of `network`, in order with earlier publishes to it;
    /// waits while the road's outbound buffer is full. The subject is shared rather than
    /// copied: a stream sends every message of a port on the same one.
    async fn publish(
        &self,
        network: &str,
        subject: &async_nats::Subject,
        payload: Bytes,
    ) -> Result<()>;

    /// Sends `payload` on `subject` of `network` and waits up to `timeout` for the reply.
    async fn request(
        &self,
        network: &str,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes>;
}
