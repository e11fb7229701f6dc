//! The NATS Services API (ADR-32), answered once per process: every network is a
//! service instance, so standard tooling sees the networks (`nats micro ls`, `nats micro
//! info`), but one subscription on `$SRV.>` answers `$SRV.PING`, `$SRV.INFO` and
//! `$SRV.STATS` (with and without the name and id suffixes) for all of them, one reply
//! per network, as separately registered services would.
//!
//! Service names allow only `A-Z a-z 0-9 _ -`, so the name is the network id with every
//! other character (the dots of `prod.ml`) turned into `_`; the id is the instance's
//! incarnation, and the metadata carries the real network id, instance id and
//! incarnation. The endpoint `info`, `_reflow.{network}.info`, is answered through the
//! network's control queue group with one instance's
//! [`NetworkInfo`](crate::discovery::NetworkInfo); every in-port of every actor the
//! instance hosts is an endpoint too, `{actor}-{port}` on its data subject, taking plain
//! JSON requests (see `bridge::plain`), with what plain clients did there as its stats.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::service::{Info, PingResponse, endpoint};
use serde_json::json;

use super::{Hub, ServiceEndpoint};
use crate::discovery::NetworkInfo;
use crate::subject::control_subject;

/// The subscription that takes every Services API request.
pub(super) const SUBJECT: &str = "$SRV.>";

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

/// What a request on `subject` asks: the verb, and the name and id it is for, if any.
fn parse(subject: &str) -> Option<(&str, Option<&str>, Option<&str>)> {
    let mut tokens = subject.strip_prefix("$SRV.")?.split('.');
    let verb = tokens.next()?;
    let (name, id) = (tokens.next(), tokens.next());
    if tokens.next().is_some() || !matches!(verb, "PING" | "INFO" | "STATS") {
        return None;
    }
    Some((verb, name, id))
}

/// The reply of network `info` (served `requests` info requests, with the in-port
/// `endpoints`) to `verb`.
fn answer_for(
    verb: &str,
    info: &NetworkInfo,
    requests: u64,
    endpoints: &[ServiceEndpoint],
) -> Option<Vec<u8>> {
    let name = service_name(&info.network_id);
    let id = info.incarnation.clone();
    let version = env!("CARGO_PKG_VERSION").to_string();
    let metadata = HashMap::from([
        ("network_id".to_string(), info.network_id.clone()),
        ("instance_id".to_string(), info.instance_id.clone()),
        ("incarnation".to_string(), info.incarnation.clone()),
    ]);
    let subject = control_subject(&info.network_id, "info");
    let body = match verb {
        "PING" => serde_json::to_vec(&PingResponse {
            kind: "io.nats.micro.v1.ping_response".into(),
            name,
            id,
            version,
            metadata,
        }),
        "INFO" => serde_json::to_vec(&Info {
            kind: "io.nats.micro.v1.info_response".into(),
            name,
            id,
            description: format!("reflow_network network {}", info.network_id),
            version,
            metadata,
            endpoints: std::iter::once(endpoint::Info {
                name: "info".into(),
                subject,
                queue_group: info.network_id.clone(),
                metadata: HashMap::new(),
            })
            .chain(endpoints.iter().map(|e| endpoint::Info {
                name: e.name.clone(),
                subject: e.subject.clone(),
                queue_group: info.network_id.clone(),
                metadata: HashMap::from([(
                    "content_type".to_string(),
                    "application/json".to_string(),
                )]),
            }))
            .collect(),
        }),
        "STATS" => serde_json::to_vec(&json!({
            "type": "io.nats.micro.v1.stats_response",
            "name": name,
            "id": id,
            "version": version,
            "metadata": metadata,
            "started": rfc3339(info.started_at_ms),
            "endpoints": std::iter::once(json!({
                "name": "info",
                "subject": subject,
                "queue_group": info.network_id,
                "num_requests": requests,
                "num_errors": 0,
                "processing_time": 0,
                "average_processing_time": 0,
                "last_error": "",
            }))
            .chain(endpoints.iter().map(|e| json!({
                "name": e.name,
                "subject": e.subject,
                "queue_group": info.network_id,
                "num_requests": e.stats.requests,
                "num_errors": e.stats.errors,
                "processing_time": e.stats.processing_ns,
                "average_processing_time": e.stats.processing_ns.checked_div(e.stats.requests).unwrap_or(0),
                "last_error": e.stats.last_error,
            })))
            .collect::<Vec<_>>(),
        })),
        _ => return None,
    };
    body.ok()
}

/// `ms` since the epoch as an RFC 3339 UTC time (`2026-12-05T09:14:22.123Z`).
fn rfc3339(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64;
    let of_day = ms % 86_400_000;
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1_000 % 60,
        of_day % 1_000
    )
}

/// Answers a Services API request for every network of the hub that has joined
/// liveness and that it names.
pub(super) async fn answer(hub: Arc<Hub>, request: async_nats::Message) {
    let (Some(reply), Some((verb, name, id))) = (&request.reply, parse(&request.subject)) else {
        return;
    };
    for (_, member) in hub.members.joined() {
        let Some(info) = member.info() else { continue };
        if name.is_some_and(|n| n != service_name(&info.network_id))
            || id.is_some_and(|i| i != info.incarnation)
        {
            continue;
        }
        let requests = member
            .info_requests
            .load(std::sync::atomic::Ordering::Relaxed);
        let endpoints = match (verb, member.endpoints.read().clone()) {
            ("INFO" | "STATS", Some(list)) => list(),
            _ => Vec::new(),
        };
        if let Some(body) = answer_for(verb, &info, requests, &endpoints)
            && let Err(err) = hub.client.publish(reply.clone(), body.into()).await
        {
            tracing::debug!(error = %err, "could not answer a services request");
        }
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

    #[test]
    fn requests_name_their_verb_and_target() {
        assert_eq!(parse("$SRV.PING"), Some(("PING", None, None)));
        assert_eq!(
            parse("$SRV.INFO.prod_ml"),
            Some(("INFO", Some("prod_ml"), None))
        );
        assert_eq!(
            parse("$SRV.STATS.prod_ml.x1"),
            Some(("STATS", Some("prod_ml"), Some("x1")))
        );
        assert_eq!(parse("$SRV.PING.a.b.c"), None);
        assert_eq!(parse("$SRV.OTHER"), None);
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_462_062_123), "2026-12-05T09:14:22.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
