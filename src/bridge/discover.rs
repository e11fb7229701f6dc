//! Which networks exist: this instance's own [`NetworkInfo`], and scatter-gather discovery
//! of everyone else's, merged with the liveness watcher's roster.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use super::Bridge;
use crate::discovery::{Discovered, Endpoints, NetworkInfo, group_by_network, parse_reply};
use crate::error::{Error, ErrorKind, Result};
use crate::subject::DISCOVER_SUBJECT;

/// Discovery stops listening once no reply has come for this long...
pub(crate) const QUIET: Duration = Duration::from_millis(250);

/// ...or this long, once every instance the liveness roster knows has answered (a
/// moment for instances so new that their entry has not reached the roster yet)...
pub(crate) const QUIET_WHEN_COMPLETE: Duration = Duration::from_millis(25);

/// ...or, at the latest, this long after the request went out.
pub(crate) const BOUND: Duration = Duration::from_secs(3);

/// Publishes `payload` on `subject` with a fresh inbox as reply subject and hands every
/// reply to `take` until `quiet` passes without one, or `bound` after sending. Once
/// `take` says the answers are complete, the quiet period shortens to
/// [`QUIET_WHEN_COMPLETE`].
pub(crate) async fn gather(
    client: &async_nats::Client,
    subject: &str,
    payload: bytes::Bytes,
    quiet: Duration,
    bound: Duration,
    mut take: impl FnMut(async_nats::Message) -> bool,
) -> Result<()> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.map_err(|e| {
        Error::with_source(ErrorKind::Broker, format!("cannot subscribe to {inbox}"), e)
    })?;
    client
        .publish_with_reply(subject.to_string(), inbox, payload)
        .await
        .map_err(|e| crate::transport::nats::publish_error(subject, e))?;
    let deadline = Instant::now() + bound;
    let mut complete = false;
    loop {
        let wait = if complete { QUIET_WHEN_COMPLETE } else { quiet };
        let until = (Instant::now() + wait).min(deadline);
        match tokio::time::timeout_at(until, replies.next()).await {
            Ok(Some(reply)) => complete = take(reply),
            Ok(None) | Err(_) => break,
        }
    }
    let _ = replies.unsubscribe().await;
    Ok(())
}

impl Bridge {
    /// This instance as others see it, now.
    pub(crate) fn network_info(&self) -> NetworkInfo {
        let profile = self.profile.read().clone();
        let mut actors: Vec<String> = self.actor_infos().into_iter().map(|a| a.id).collect();
        actors.sort();
        let direct = self.direct.advertised_endpoint();
        let nats = self.server_url();
        let endpoint = match (&direct, &nats) {
            (Some(direct), _) => format!("tcp://{direct}"),
            (None, Some(nats)) => nats.clone(),
            (None, None) => String::new(),
        };
        NetworkInfo {
            network_id: self.network_id.to_string(),
            instance_id: self.instance_id.to_string(),
            incarnation: self.incarnation.clone(),
            endpoints: Endpoints { direct, nats },
            endpoint,
            last_seen: None,
            durable: None,
            capabilities: profile.capabilities,
            tags: profile.tags,
            actor_count: actors.len(),
            actors,
            instance_count: 1,
            instances: vec![self.instance_id.to_string()],
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at_ms: self.started_at_ms,
        }
    }

    /// The URL of the server this instance is connected to, as that server names itself;
    /// the first configured URL when it listens on every interface.
    fn server_url(&self) -> Option<String> {
        let info = self.client.server_info();
        let unspecified = info.host.is_empty() || info.host == "0.0.0.0" || info.host == "::";
        if unspecified || info.port == 0 {
            self.config.nats_urls.first().cloned()
        } else if info.host.contains(':') {
            Some(format!("nats://[{}]:{}", info.host, info.port))
        } else {
            Some(format!("nats://{}:{}", info.host, info.port))
        }
    }

    /// The instances the liveness watcher knows to be live, sorted by network and instance.
    pub(crate) fn live_instances(&self) -> Vec<NetworkInfo> {
        self.liveness
            .get()
            .map(|liveness| liveness.roster.read().infos())
            .unwrap_or_default()
    }

    /// The instances of `network` the liveness watcher knows to be live now.
    pub(crate) fn live_instances_of(&self, network: &str) -> Vec<NetworkInfo> {
        self.liveness
            .get()
            .map(|liveness| liveness.roster.read().infos_of(network))
            .unwrap_or_default()
    }

    /// Whether this instance is its network's only live one, as far as the liveness
    /// roster knows. Without the broker there is no roster, and a direct link reaches one
    /// instance: alone.
    pub(crate) fn alone(&self) -> bool {
        self.liveness.get().is_none_or(|liveness| {
            liveness
                .roster
                .read()
                .others_of(&self.network_id, self.liveness_key())
                == 0
        })
    }

    /// Every network that answers discovery or holds a live entry, one value per network,
    /// sorted by network id.
    pub(crate) async fn discover_networks(&self) -> Result<Vec<NetworkInfo>> {
        let live = self.live_instances();
        let mut waiting: HashSet<(String, String)> = live
            .iter()
            .map(|i| (i.network_id.clone(), i.instance_id.clone()))
            .collect();
        // An empty roster (the broker joined a moment ago) says nothing about who exists.
        let roster_known = !waiting.is_empty();
        let mut answered = Vec::new();
        gather(
            &self.client,
            DISCOVER_SUBJECT,
            bytes::Bytes::from_static(b"{}"),
            QUIET,
            BOUND,
            |reply| {
                match parse_reply::<Discovered>("a discovery reply", &reply.payload) {
                    Ok(infos) => {
                        for info in infos.into_vec() {
                            waiting.remove(&(info.network_id.clone(), info.instance_id.clone()));
                            answered.push(info);
                        }
                    }
                    Err(err) => tracing::debug!(error = %err, "ignoring a discovery reply"),
                }
                roster_known && waiting.is_empty()
            },
        )
        .await?;
        // Replies come first so they win over (older) liveness entries.
        let all: Vec<NetworkInfo> = answered.into_iter().chain(live).collect();
        Ok(group_by_network(all))
    }
}
