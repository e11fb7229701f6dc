//! The watcher's picture of who is live, and the events each change to it means.
//!
//! Kept free of I/O so the rules can be tested on their own:
//!
//! * every change carries the stream sequence (revision) it was written at, and a change
//!   no newer than the last one applied for its key is ignored, so a reconcile listing and
//!   the watch can both feed the roster in any interleaving;
//! * a put with a new incarnation for a live key is a restart: the old member goes down
//!   and the new one comes up;
//! * the instance's own key is tracked (discovery lists it) but raises no events.

use std::collections::{BTreeMap, HashMap};

use crate::discovery::NetworkInfo;
use crate::events::{DownReason, NetworkEvent};

/// What the latest message for a key says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    /// The instance is live, with this entry.
    Put(Box<NetworkInfo>),
    /// The entry is gone, and why.
    Gone(DownReason),
}

/// A live instance as last seen.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) info: NetworkInfo,
    revision: u64,
}

/// Every live instance, by liveness key.
#[derive(Debug)]
pub(crate) struct Roster {
    own_key: String,
    members: BTreeMap<String, Member>,
    /// The newest revision applied per key, markers included.
    seen: HashMap<String, u64>,
}

impl Roster {
    pub(crate) fn new(own_key: String) -> Self {
        Roster {
            own_key,
            members: BTreeMap::new(),
            seen: HashMap::new(),
        }
    }

    /// The live instances, sorted by key.
    pub(crate) fn infos(&self) -> Vec<NetworkInfo> {
        self.members.values().map(|m| m.info.clone()).collect()
    }

    /// How many live instances of `network` there are besides this one.
    pub(crate) fn others_of(&self, network: &str) -> usize {
        self.members
            .range(format!("{network}.")..)
            .take_while(|(key, _)| key.starts_with(network))
            .filter(|(key, m)| m.info.network_id == network && **key != self.own_key)
            .count()
    }

    /// Whether `key` is live.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.members.contains_key(key)
    }

    /// Applies one change to `key` written at `revision`; returns the events it means.
    pub(crate) fn apply(&mut self, key: &str, revision: u64, change: Change) -> Vec<NetworkEvent> {
        let last = self.seen.entry(key.to_string()).or_default();
        if revision <= *last {
            return Vec::new();
        }
        *last = revision;
        let mut events = Vec::new();
        match change {
            Change::Put(info) => {
                let fresh = match self.members.get(key) {
                    None => true,
                    Some(old) if old.info.incarnation != info.incarnation => {
                        events.push(down(&old.info, DownReason::Expired));
                        true
                    }
                    Some(_) => false,
                };
                if fresh {
                    events.push(NetworkEvent::NetworkUp {
                        network: info.network_id.clone(),
                        instance: info.instance_id.clone(),
                    });
                }
                let info = *info;
                self.members
                    .insert(key.to_string(), Member { info, revision });
            }
            Change::Gone(reason) => {
                if let Some(old) = self.members.remove(key) {
                    events.push(down(&old.info, reason));
                }
            }
        }
        self.quiet_about_self(key, events)
    }

    /// Brings the roster in line with a full listing taken when the stream's last
    /// sequence was `listed_at`: applies every listed change, and takes down members
    /// whose keys the listing no longer holds at all (their markers are gone too).
    pub(crate) fn reconcile(
        &mut self,
        listing: Vec<(String, u64, Change)>,
        listed_at: u64,
    ) -> Vec<NetworkEvent> {
        let mut events = Vec::new();
        let listed: std::collections::HashSet<String> =
            listing.iter().map(|(key, _, _)| key.clone()).collect();
        for (key, revision, change) in listing {
            events.extend(self.apply(&key, revision, change));
        }
        let vanished: Vec<String> = self
            .members
            .iter()
            .filter(|(key, member)| !listed.contains(*key) && member.revision <= listed_at)
            .map(|(key, _)| key.clone())
            .collect();
        for key in vanished {
            let revision = listed_at.max(self.seen.get(&key).copied().unwrap_or(0) + 1);
            events.extend(self.apply(&key, revision, Change::Gone(DownReason::Expired)));
        }
        events
    }

    fn quiet_about_self(&self, key: &str, events: Vec<NetworkEvent>) -> Vec<NetworkEvent> {
        if key == self.own_key {
            Vec::new()
        } else {
            events
        }
    }
}

fn down(info: &NetworkInfo, reason: DownReason) -> NetworkEvent {
    NetworkEvent::NetworkDown {
        network: info.network_id.clone(),
        instance: info.instance_id.clone(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Endpoints;

    fn info(network: &str, instance: &str, incarnation: &str) -> NetworkInfo {
        NetworkInfo {
            network_id: network.into(),
            instance_id: instance.into(),
            incarnation: incarnation.into(),
            endpoints: Endpoints::default(),
            capabilities: vec![],
            tags: vec![],
            actors: vec![],
            actor_count: 0,
            instance_count: 1,
            instances: vec![instance.into()],
            heartbeat_interval_ms: 1_000,
            version: "0".into(),
            started_at_ms: 0,
        }
    }

    fn up(network: &str, instance: &str) -> NetworkEvent {
        NetworkEvent::NetworkUp {
            network: network.into(),
            instance: instance.into(),
        }
    }

    fn gone(network: &str, instance: &str, reason: DownReason) -> NetworkEvent {
        NetworkEvent::NetworkDown {
            network: network.into(),
            instance: instance.into(),
            reason,
        }
    }

    #[test]
    fn puts_raise_up_once_and_markers_raise_down_with_their_reason() {
        let mut r = Roster::new("me.1".into());
        assert_eq!(
            r.apply("a.1", 1, Change::Put(Box::new(info("a", "1", "x")))),
            vec![up("a", "1")]
        );
        assert!(
            r.apply("a.1", 2, Change::Put(Box::new(info("a", "1", "x"))))
                .is_empty()
        );
        assert_eq!(
            r.apply("a.1", 3, Change::Gone(DownReason::Left)),
            vec![gone("a", "1", DownReason::Left)]
        );
        assert!(
            r.apply("a.1", 4, Change::Gone(DownReason::Expired))
                .is_empty()
        );
    }

    #[test]
    fn a_new_incarnation_replaces_the_old_and_stale_changes_are_ignored() {
        let mut r = Roster::new("me.1".into());
        r.apply("a.1", 1, Change::Put(Box::new(info("a", "1", "old"))));
        assert_eq!(
            r.apply("a.1", 5, Change::Put(Box::new(info("a", "1", "new")))),
            vec![gone("a", "1", DownReason::Expired), up("a", "1")]
        );
        assert!(
            r.apply("a.1", 3, Change::Gone(DownReason::Expired))
                .is_empty()
        );
        assert!(r.contains("a.1"));
    }

    #[test]
    fn own_key_is_listed_but_silent() {
        let mut r = Roster::new("me.1".into());
        assert!(
            r.apply("me.1", 1, Change::Put(Box::new(info("me", "1", "x"))))
                .is_empty()
        );
        assert_eq!(r.infos().len(), 1);
    }

    #[test]
    fn reconcile_reports_what_the_watch_missed() {
        let mut r = Roster::new("me.1".into());
        r.apply("a.1", 1, Change::Put(Box::new(info("a", "1", "x"))));
        r.apply("b.1", 2, Change::Put(Box::new(info("b", "1", "x"))));
        r.apply("c.1", 9, Change::Put(Box::new(info("c", "1", "x"))));
        let events = r.reconcile(
            vec![
                ("a.1".into(), 4, Change::Gone(DownReason::Left)),
                ("d.1".into(), 5, Change::Put(Box::new(info("d", "1", "x")))),
            ],
            6,
        );
        assert_eq!(
            events,
            vec![
                gone("a", "1", DownReason::Left),
                up("d", "1"),
                gone("b", "1", DownReason::Expired),
            ]
        );
        // c.1 was written after the listing: it stays.
        assert!(r.contains("c.1"));
        // A late watch delivery of b's old put does not bring it back.
        assert!(
            r.apply("b.1", 2, Change::Put(Box::new(info("b", "1", "x"))))
                .is_empty()
        );
    }
}
