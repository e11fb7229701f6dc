//! Mounting a remote network as a subgraph: every actor of it whose name matches the
//! mount's globs appears in the local graph as a proxy `{mount_point}/{actor}`, and the
//! mount follows the remote network as its actors come and go.
//!
//! The remote network's actors are read from its liveness entries, which every heartbeat
//! refreshes with its current actor list; the mount looks at the roster once a heartbeat
//! of this network. An actor missing from every live instance's list is unmounted; a
//! network with no live instance keeps its mounts (what is sent waits for it).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Bridge;
use super::registry::ConflictResolutionStrategy;
use crate::error::{Error, ErrorKind, Result};

/// Which network to mount where, and which of its actors.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SubgraphMountConfig {
    /// Where the actors appear: `{mount_point}/{actor}`. May itself hold `/` (`a/b`).
    pub mount_point: String,
    /// The network to mount.
    pub network_id: String,
    /// Globs (`*` any run of characters, `?` one) an actor's name must match one of;
    /// none means every actor.
    #[serde(default)]
    pub include_patterns: Vec<String>,
    /// Globs an actor's name must match none of.
    #[serde(default)]
    pub exclude_patterns: Vec<String>,
}

impl SubgraphMountConfig {
    /// Whether the mount takes actor `name`.
    pub fn takes(&self, name: &str) -> bool {
        (self.include_patterns.is_empty()
            || self.include_patterns.iter().any(|p| glob_matches(p, name)))
            && !self.exclude_patterns.iter().any(|p| glob_matches(p, name))
    }

    /// The local name of the remote actor `actor` under this mount.
    pub fn alias(&self, actor: &str) -> String {
        format!("{}/{actor}", self.mount_point)
    }
}

/// Whether `text` matches `pattern`: `*` stands for any run of characters, `?` for one.
pub(crate) fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// One mount while it lasts: what it mounted, and the task that follows the network.
pub(crate) struct Mount {
    config: SubgraphMountConfig,
    mounted: Arc<parking_lot::Mutex<BTreeSet<String>>>,
    stop: CancellationToken,
}

/// The mounts of a network, by mount point.
#[derive(Default)]
pub(crate) struct Mounts(parking_lot::Mutex<HashMap<String, Mount>>);

impl Bridge {
    /// Mounts `config.network_id` at `config.mount_point`; returns the local names of the
    /// actors mounted now.
    pub(crate) async fn mount(
        self: &Arc<Self>,
        config: SubgraphMountConfig,
    ) -> Result<Vec<String>> {
        let point = config.mount_point.trim_matches('/');
        if point.is_empty()
            || point.split('/').any(str::is_empty)
            || point
                .chars()
                .any(|c| c.is_whitespace() || c == '@' || c == '.')
        {
            return Err(Error::new(
                ErrorKind::InvalidName,
                format!(
                    "mount point {:?} must be names joined by '/', without whitespace, '@' or '.'",
                    config.mount_point
                ),
            ));
        }
        let config = SubgraphMountConfig {
            mount_point: point.to_string(),
            ..config
        };
        if self.mounts.0.lock().contains_key(point) {
            return Err(Error::new(
                ErrorKind::NameConflict,
                format!("{point:?} is already a mount point; unmount it first"),
            ));
        }
        if !self.peers.lock().is_connected(&config.network_id) {
            self.connect_peer(&config.network_id).await?;
        }
        let actors: Vec<crate::discovery::ActorInfo> = self
            .control_request(&config.network_id, "actors", &serde_json::json!({}))
            .await?;
        let actors: Vec<String> = actors.into_iter().map(|a| a.id).collect();
        let mounted = Arc::new(parking_lot::Mutex::new(BTreeSet::new()));
        let stop = self.cancel.child_token();
        {
            let mut mounts = self.mounts.0.lock();
            if mounts.contains_key(point) {
                return Err(Error::new(
                    ErrorKind::NameConflict,
                    format!("{point:?} was mounted meanwhile by another call"),
                ));
            }
            mounts.insert(
                point.to_string(),
                Mount {
                    config: config.clone(),
                    mounted: mounted.clone(),
                    stop: stop.clone(),
                },
            );
        }
        let now = self.follow_actors(&config, &mounted, &actors).await;
        let bridge = Arc::downgrade(self);
        let heartbeat = Duration::from_millis(self.config.heartbeat_interval_ms.max(100));
        let (follow, follow_mounted) = (config.clone(), mounted.clone());
        self.tracker.spawn(async move {
            let mut ticks = tokio::time::interval(heartbeat);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let Some(bridge) = bridge.upgrade() else {
                    return;
                };
                let live = bridge.live_instances_of(&follow.network_id);
                if live.is_empty() {
                    continue;
                }
                let actors: BTreeSet<String> =
                    live.into_iter().flat_map(|info| info.actors).collect();
                let actors: Vec<String> = actors.into_iter().collect();
                // A failure is logged and tried again at the next tick.
                let _ = bridge
                    .follow_actors(&follow, &follow_mounted, &actors)
                    .await;
            }
        });
        if let Err(err) = now {
            let _ = self.unmount(point).await;
            return Err(err);
        }
        let names = mounted.lock().iter().cloned().collect();
        Ok(names)
    }

    /// Brings the mount in line with `actors`, the remote network's actors now: mounts
    /// those it takes and lacks, unmounts those gone.
    async fn follow_actors(
        &self,
        config: &SubgraphMountConfig,
        mounted: &parking_lot::Mutex<BTreeSet<String>>,
        actors: &[String],
    ) -> Result<()> {
        let wanted: BTreeSet<String> = actors.iter().filter(|a| config.takes(a)).cloned().collect();
        let have = mounted.lock().clone();
        let mut first_error = None;
        for actor in wanted.difference(&have) {
            let alias = config.alias(actor);
            let strategy = ConflictResolutionStrategy::ManualAlias(alias.clone());
            match self
                .register_remote(actor, &config.network_id, strategy)
                .await
            {
                Ok(_) => {
                    mounted.lock().insert(actor.clone());
                    tracing::info!(alias, "mounted");
                }
                Err(err) => {
                    tracing::warn!(alias, error = %err, "could not mount");
                    first_error.get_or_insert(err);
                }
            }
        }
        for actor in have.difference(&wanted) {
            let alias = config.alias(actor);
            if let Err(err) = self.unregister_remote(&alias).await {
                tracing::debug!(alias, error = %err, "unmounting");
            }
            mounted.lock().remove(actor);
            tracing::info!(alias, "unmounted: gone from its network");
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Unmounts `mount_point`: stops following its network and removes its proxies.
    pub(crate) async fn unmount(&self, mount_point: &str) -> Result<()> {
        let point = mount_point.trim_matches('/');
        let mount = self.mounts.0.lock().remove(point).ok_or_else(|| {
            Error::new(
                ErrorKind::ActorNotFound,
                format!("nothing is mounted at {point:?}"),
            )
        })?;
        mount.stop.cancel();
        let actors: Vec<String> = mount.mounted.lock().iter().cloned().collect();
        for actor in actors {
            let alias = mount.config.alias(&actor);
            if let Err(err) = self.unregister_remote(&alias).await {
                tracing::debug!(alias, error = %err, "unmounting");
            }
        }
        Ok(())
    }

    /// The mounts now: each one's config and the actors it holds.
    pub(crate) fn mounts(&self) -> Vec<(SubgraphMountConfig, Vec<String>)> {
        self.mounts
            .0
            .lock()
            .values()
            .map(|m| (m.config.clone(), m.mounted.lock().iter().cloned().collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_runs_and_single_characters() {
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("data_*", "data_processor"));
        assert!(!glob_matches("data_*", "model"));
        assert!(glob_matches("*_processor", "data_processor"));
        assert!(glob_matches("d?ta*r", "data_processor"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
        assert!(glob_matches("", ""));
        assert!(!glob_matches("", "x"));
    }

    #[test]
    fn a_mount_takes_what_it_includes_and_does_not_exclude() {
        let config = SubgraphMountConfig {
            mount_point: "server".into(),
            network_id: "server".into(),
            include_patterns: vec!["data_*".into(), "model".into()],
            exclude_patterns: vec!["*_secret".into()],
        };
        assert!(config.takes("data_processor"));
        assert!(config.takes("model"));
        assert!(!config.takes("data_secret"));
        assert!(!config.takes("other"));
        assert_eq!(config.alias("model"), "server/model");
        let everything = SubgraphMountConfig::default();
        assert!(everything.takes("whatever"));
    }
}
