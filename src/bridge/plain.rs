//! Plain NATS in: JSON from clients that speak no reflow envelope.
//!
//! A message on a data subject `{network}.{actor}.{port}` that carries the header
//! `Content-Type: application/json` is one JSON value for that in-port; it is recognised
//! by the header alone, never by guessing at the payload. With a reply subject (a NATS
//! request) it is confirmed: the answer, once the message and everything it caused on
//! this network are handled, is `{"handled":true}`; a refusal is `{"error":..,"kind":..}`
//! with the Services API's `Nats-Service-Error` and `Nats-Service-Error-Code` headers.
//! Without one it is delivered at most once: nobody hears whether it was handled.
//!
//! A network with an auth token takes sealed envelopes only, so it refuses plain JSON:
//! anyone who can publish on its subjects could otherwise feed its actors.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use serde_json::json;

use super::Bridge;
use super::inbound::DispatchState;
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::network::{Cause, Trace};
use crate::subject::parse_data_subject;

/// The header that marks a plain JSON message, and its value.
pub(crate) const CONTENT_TYPE: &str = "Content-Type";
const JSON: &str = "application/json";

/// Whether `headers` mark the payload as plain JSON.
pub(crate) fn is_plain_json(headers: Option<&HeaderMap>) -> bool {
    headers.and_then(|h| h.get(CONTENT_TYPE)).is_some_and(|v| {
        let v = v.as_str().trim();
        v.len() >= JSON.len() && v[..JSON.len()].eq_ignore_ascii_case(JSON)
    })
}

/// What plain clients did with one endpoint (an in-port), for the Services API's stats.
#[derive(Debug, Default, Clone)]
pub(crate) struct EndpointStats {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) last_error: String,
    pub(crate) processing_ns: u64,
}

/// Plain-client statistics by data subject.
#[derive(Debug, Default)]
pub(crate) struct PlainStats(parking_lot::Mutex<HashMap<String, EndpointStats>>);

impl PlainStats {
    fn record(&self, subject: &str, outcome: std::result::Result<(), &Error>, took_ns: u64) {
        let mut stats = self.0.lock();
        let entry = stats.entry(subject.to_string()).or_default();
        entry.requests += 1;
        entry.processing_ns += took_ns;
        if let Err(err) = outcome {
            entry.errors += 1;
            entry.last_error = err.to_string();
        }
    }

    /// The statistics of the endpoint on `subject`.
    pub(crate) fn of(&self, subject: &str) -> EndpointStats {
        self.0.lock().get(subject).cloned().unwrap_or_default()
    }
}

/// The JSON answer to a plain request refused with `err`, with its error headers.
fn refusal(err: &Error) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Service-Error", err.detail());
    headers.insert(
        "Nats-Service-Error-Code",
        error_code(err.kind()).to_string(),
    );
    let body = json!({ "error": err.detail(), "kind": format!("{:?}", err.kind()) });
    (headers, Bytes::from(body.to_string()))
}

/// An HTTP-like status for the Services API's error code header.
fn error_code(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::ActorNotFound | ErrorKind::PortNotFound => 404,
        ErrorKind::AuthenticationFailed => 401,
        ErrorKind::Encoding | ErrorKind::Protocol | ErrorKind::PayloadTooLarge => 400,
        ErrorKind::Shutdown => 503,
        _ => 500,
    }
}

impl Bridge {
    /// Takes one plain JSON message from a client on `subject`; a request is answered at
    /// `reply` once handled, or at once when refused.
    pub(crate) async fn deliver_plain(
        &self,
        subject: &str,
        payload: &Bytes,
        reply: Option<Subject>,
        state: &mut DispatchState,
    ) -> Result<()> {
        let began = Instant::now();
        let result = self
            .deliver_plain_or_refuse(subject, payload, reply.clone(), state)
            .await;
        let took = began.elapsed().as_nanos() as u64;
        // Only endpoints that exist have statistics: a client publishing on ever new
        // subjects must not grow this network's memory.
        if self.is_endpoint(subject, state) {
            self.plain_stats
                .record(subject, result.as_ref().map(|_| ()), took);
        }
        if let Err(err) = &result {
            self.counters.rejected_in.fetch_add(1, Ordering::Relaxed);
            if let Some(reply) = reply {
                let (headers, body) = refusal(err);
                if let Err(sent) = self.client.publish_with_headers(reply, headers, body).await {
                    tracing::debug!(error = %sent, "could not answer a plain request");
                }
            }
        }
        result
    }

    async fn deliver_plain_or_refuse(
        &self,
        subject: &str,
        payload: &Bytes,
        reply: Option<Subject>,
        state: &mut DispatchState,
    ) -> Result<()> {
        self.gate.admit_plain(&self.network_id)?;
        let Some((actor, port)) = parse_data_subject(&self.network_id, subject) else {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "{subject:?} is not a data subject of network {:?}",
                    &*self.network_id
                ),
            ));
        };
        let value: serde_json::Value = serde_json::from_slice(payload).map_err(|err| {
            Error::new(
                ErrorKind::Encoding,
                format!("the payload on {subject} is marked {JSON} but is not JSON: {err}"),
            )
        })?;
        let inlet = self.inlet(subject, actor, port, &mut state.inlets)?.clone();
        let cause = reply.map(|reply| self.plain_cause(reply));
        let message = Message::from_json(value);
        if let Err(err) = inlet.send_from(message, Trace::new(None, cause)).await {
            state.inlets.remove(subject);
            return Err(err);
        }
        self.counters.messages_in.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Whether `subject` is the data subject of an in-port of a local actor (an
    /// endpoint of the Services API).
    fn is_endpoint(&self, subject: &str, state: &DispatchState) -> bool {
        if state.inlets.contains_key(subject) {
            return true;
        }
        let Some((actor, port)) = parse_data_subject(&self.network_id, subject) else {
            return false;
        };
        !actor.starts_with('_')
            && !self.registry.lock().contains(actor)
            && self.local.read().inlet(actor, port).is_ok()
    }

    /// The cause of a plain request answered at `reply`: `{"handled":true}` once it and
    /// what it caused here are handled; an error if the network stops first.
    fn plain_cause(&self, reply: Subject) -> Cause {
        let bridge = self.weak_self();
        Cause::new(false, move |handled| {
            let Some(bridge) = bridge.upgrade() else {
                return;
            };
            let tracker = bridge.tracker.clone();
            tracker.spawn(async move {
                let sent = if handled {
                    let body = Bytes::from_static(br#"{"handled":true}"#);
                    bridge.client.publish(reply, body).await
                } else {
                    let (headers, body) = refusal(&Error::new(
                        ErrorKind::Shutdown,
                        "the network shut down before the message was handled; send it again",
                    ));
                    bridge
                        .client
                        .publish_with_headers(reply, headers, body)
                        .await
                };
                if let Err(err) = sent {
                    tracing::debug!(error = %err, "could not answer a plain request");
                }
            });
        })
    }

    /// The Services API endpoints of this instance: one per in-port of each actor it
    /// hosts, on the actor's data subject, with what plain clients did there.
    pub(crate) fn service_endpoints(&self) -> Vec<crate::hub::ServiceEndpoint> {
        self.actor_infos()
            .into_iter()
            .filter(|actor| !actor.id.starts_with('_'))
            .flat_map(|actor| {
                actor
                    .inports
                    .iter()
                    .map(|port| {
                        let subject =
                            crate::subject::data_subject(&self.network_id, &actor.id, port);
                        crate::hub::ServiceEndpoint {
                            name: crate::hub::service_name(&format!("{}-{port}", actor.id)),
                            stats: self.plain_stats.of(&subject),
                            subject,
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Plain NATS out: publishes every message arriving on `in` as JSON on a plain subject,
/// with `Content-Type: application/json` and `Reflow-From: {network}.{actor}.{port}`.
#[derive(Clone)]
pub(crate) struct Publisher {
    client: async_nats::Client,
    subject: Subject,
    from: String,
}

impl Publisher {
    /// The hidden node that publishes `actor`'s `port` on `subject`.
    pub(crate) fn node_id(actor: &str, port: &str, subject: &str) -> String {
        format!("_publish:{actor}:{port}:{subject}")
    }
}

#[async_trait::async_trait]
impl crate::actor::Actor for Publisher {
    fn inports(&self) -> Vec<String> {
        vec!["in".into()]
    }
    fn outports(&self) -> Vec<String> {
        Vec::new()
    }
    fn description(&self) -> String {
        format!("publishes {} as JSON on {}", self.from, self.subject)
    }
    async fn handle(
        &mut self,
        _ctx: &mut crate::actor::ActorContext,
        _port: &str,
        message: Message,
    ) -> Result<()> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, JSON);
        headers.insert("Reflow-From", self.from.as_str());
        let body = Bytes::from(message.to_json().to_string());
        self.client
            .publish_with_headers(self.subject.clone(), headers, body)
            .await
            .map_err(|err| {
                Error::with_source(
                    ErrorKind::Broker,
                    format!("could not publish {} on {}", self.from, self.subject),
                    err,
                )
            })
    }
}

impl Bridge {
    /// Publishes every message `actor` emits on `port` as JSON on the plain `subject`.
    pub(crate) fn publish_port(&self, actor: &str, port: &str, subject: &str) -> Result<()> {
        crate::subject::validate_publish_subject(subject)?;
        let publisher = Publisher {
            client: self.client.clone(),
            subject: Subject::from(subject),
            from: format!("{}.{actor}.{port}", &*self.network_id),
        };
        let id = Publisher::node_id(actor, port, subject);
        let mut local = self.local.write();
        let node = local.node(actor).ok_or_else(|| self.no_actor(actor))?;
        if !node.outports.iter().any(|p| p == port) {
            return Err(Error::new(
                ErrorKind::PortNotFound,
                format!(
                    "actor {actor:?} of network {:?} has no out-port {port:?} (it has {:?})",
                    &*self.network_id, node.outports
                ),
            ));
        }
        if local.node(&id).is_some() {
            return Ok(());
        }
        local.add_bridge_node(
            &id,
            "publish",
            Box::new(publisher),
            Default::default(),
            true,
        )?;
        local.add_connection(crate::network::Connector::new(actor, port, &id, "in"))
    }
}
