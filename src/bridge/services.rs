//! The NATS Services API (ADR-32): every instance registers as a service, so standard
//! tooling sees the networks (`nats micro ls`, `nats micro info`), and answers
//! `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` with and without the name and id suffixes.
//!
//! Service names allow only `A-Z a-z 0-9 _ -`, so the name is the network id with every
//! other character (the dots of `prod.ml`) turned into `_`; the metadata carries the real
//! network id, instance id and incarnation. The one endpoint, `info`, listens on
//! `_reflow.{network}.info` and answers with one instance's
//! [`NetworkInfo`](crate::discovery::NetworkInfo).

use std::collections::HashMap;
use std::sync::Weak;

use async_nats::service::ServiceExt;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Bridge;
use crate::discovery::reply_bytes;
use crate::error::{Error, ErrorKind, Result};
use crate::subject::control_subject;

/// The service name for `network_id`: every character outside `A-Z a-z 0-9 _ -` becomes `_`.
pub(crate) fn service_name(network_id: &str) -> String {
    network_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Registers the service and spawns the task that answers its `info` endpoint and stops
/// the service when the bridge stops.
pub(crate) async fn start(bridge: &Bridge) -> Result<()> {
    let failed = |e: async_nats::Error| {
        Error::new(
            ErrorKind::Broker,
            format!(
                "cannot register the NATS service for network {:?}: {e}",
                &*bridge.network_id
            ),
        )
    };
    let metadata = HashMap::from([
        ("network_id".to_string(), bridge.network_id.to_string()),
        ("instance_id".to_string(), bridge.instance_id.to_string()),
        ("incarnation".to_string(), bridge.incarnation.clone()),
    ]);
    let service = bridge
        .client
        .service_builder()
        .description(format!("reflow_network network {}", &*bridge.network_id))
        .metadata(metadata)
        .start(service_name(&bridge.network_id), env!("CARGO_PKG_VERSION"))
        .await
        .map_err(failed)?;
    let endpoint = service
        .endpoint_builder()
        .name("info")
        .add(control_subject(&bridge.network_id, "info"))
        .await
        .map_err(failed)?;
    bridge.tracker.spawn(serve(
        bridge.weak_self(),
        service,
        endpoint,
        bridge.cancel.clone(),
    ));
    Ok(())
}

async fn serve(
    bridge: Weak<Bridge>,
    service: async_nats::service::Service,
    mut endpoint: async_nats::service::endpoint::Endpoint,
    cancel: CancellationToken,
) {
    loop {
        let request = tokio::select! {
            _ = cancel.cancelled() => break,
            request = endpoint.next() => request,
        };
        let (Some(request), Some(bridge)) = (request, bridge.upgrade()) else {
            break;
        };
        let body = reply_bytes(Ok(bridge.network_info()));
        if let Err(err) = request.respond(Ok(body)).await {
            tracing::debug!(error = %err, "could not answer an info request");
        }
    }
    let _ = endpoint.stop().await;
    if let Err(err) = service.stop().await {
        tracing::debug!(error = %err, "stopping the NATS service");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_keep_only_allowed_characters() {
        assert_eq!(service_name("prod.ml.training"), "prod_ml_training");
        assert_eq!(service_name("a-b_C9"), "a-b_C9");
        assert_eq!(service_name("caf\u{e9}:1"), "caf__1");
    }
}
