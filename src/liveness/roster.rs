//! The watcher's picture of who is live, and the events each change to it means.
//!
//! Kept free of I/O so the rules can be tested on their own:
//!
//! * every change carries the stream sequence (revision) it was written at, and a change
//!   no newer than the last one applied for its key is ignored, so a reconcile listing and
//!   the watch can both feed the roster in any interleaving;
//! * a put with a new incarnation for a live key is a restart: the old member goes down
//!   and the new one comes up;
//! * the roster is shared by every network of a process: it raises events for every key,
//!   and the hub passes each on to every network but the one it is about.

use std::collections::{BTreeMap, HashMap};

use crate::discovery::NetworkInfo;
use crate::events::{DownReason, NetworkEvent};

/// What the latest message for a key says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    /// The instance is live, with this entry.
    Put(Box<NetworkInfo>),
    /// The instance is live, with the very entry it had (a heartbeat that changed
    /// nothing, recognised without decoding it).
    Same,
    /// The entry is gone, and why.
    Gone(DownReason),
}

/// A live instance as last seen.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) info: NetworkInfo,
    revision: u64,
    /// The entry as written, so a refresh that changed nothing needs no decoding.
    raw: bytes::Bytes,
    /// When this process last saw the entry written or refreshed.
    seen_at: std::time::SystemTime,
}

impl Member {
    /// Its entry, with when this process last saw it.
    fn seen(&self) -> NetworkInfo {
        NetworkInfo {
            last_seen: Some(self.seen_at),
            ..self.info.clone()
        }
    }
}

/// Every live instance, by liveness key.
#[derive(Debug)]
pub(crate) struct Roster {
    members: BTreeMap<String, Member>,
    /// The newest revision applied per key, markers included.
    seen: HashMap<String, u64>,
}

impl Roster {
    pub(crate) fn new() -> Self {
        Roster {
            members: BTreeMap::new(),
            seen: HashMap::new(),
        }
    }

    /// The live instances, sorted by key.
    pub(crate) fn infos(&self) -> Vec<NetworkInfo> {
        self.members.values().map(Member::seen).collect()
    }

    /// The live instances of `network`, by key: a range of the roster, not all of it.
    fn members_of<'r>(
        &'r self,
        network: &'r str,
    ) -> impl Iterator<Item = (&'r String, &'r Member)> {
        self.members
            .range(format!("{network}.")..)
            .take_while(move |(key, _)| key.starts_with(network))
            .filter(move |(_, m)| m.info.network_id == network)
    }

    /// The live instances of `network`, as [`Roster::infos`] gives them.
    pub(crate) fn infos_of(&self, network: &str) -> Vec<NetworkInfo> {
        self.members_of(network).map(|(_, m)| m.seen()).collect()
    }

    /// How many live instances of `network` there are besides the one whose key is
    /// `own_key`.
    pub(crate) fn others_of(&self, network: &str, own_key: &str) -> usize {
        self.members_of(network)
            .filter(|(key, _)| *key != own_key)
            .count()
    }

    /// Forgets every revision, for a stream that was made again and numbers its
    /// messages afresh: the next listing's changes all apply, and a member it lacks is
    /// gone.
    pub(crate) fn renumber(&mut self) {
        self.seen.clear();
        for member in self.members.values_mut() {
            member.revision = 0;
        }
    }

    /// Whether `raw` is exactly the entry `key` holds now.
    pub(crate) fn holds(&self, key: &str, raw: &[u8]) -> bool {
        self.members.get(key).is_some_and(|m| m.raw == raw)
    }

    /// Whether `key` is live.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.members.contains_key(key)
    }

    /// Applies one change to `key` written at `revision`; returns the events it means.
    pub(crate) fn apply(&mut self, key: &str, revision: u64, change: Change) -> Vec<NetworkEvent> {
        self.apply_raw(key, revision, change, bytes::Bytes::new())
    }

    /// [`Roster::apply`], remembering the entry as written (`raw`).
    pub(crate) fn apply_raw(
        &mut self,
        key: &str,
        revision: u64,
        change: Change,
        raw: bytes::Bytes,
    ) -> Vec<NetworkEvent> {
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
                self.members.insert(
                    key.to_string(),
                    Member {
                        info,
                        revision,
                        raw,
                        seen_at: std::time::SystemTime::now(),
                    },
                );
            }
            Change::Same => {
                if let Some(member) = self.members.get_mut(key) {
                    member.revision = revision;
                    member.seen_at = std::time::SystemTime::now();
                }
            }
            Change::Gone(reason) => {
                if let Some(old) = self.members.remove(key) {
                    events.push(down(&old.info, reason));
                }
            }
        }
        events
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

    fn info(network: &str, instance: &str, incarnation: &str) -> NetworkInfo {
        NetworkInfo {
            network_id: network.into(),
            instance_id: instance.into(),
            incarnation: incarnation.into(),
            instance_count: 1,
            instances: vec![instance.into()],
            heartbeat_interval_ms: 1_000,
            version: "0".into(),
            ..NetworkInfo::default()
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
        let mut r = Roster::new();
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
        let mut r = Roster::new();
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
    fn after_renumbering_a_listing_with_lower_revisions_applies_and_the_missing_go() {
        let mut r = Roster::new();
        r.apply("a.1", 500, Change::Put(Box::new(info("a", "1", "x"))));
        r.apply("b.1", 501, Change::Put(Box::new(info("b", "1", "x"))));
        r.renumber();
        let events = r.reconcile(
            vec![("a.1".into(), 2, Change::Put(Box::new(info("a", "1", "x"))))],
            2,
        );
        assert_eq!(events, vec![gone("b", "1", DownReason::Expired)]);
        assert!(r.contains("a.1"));
        // The new stream's later changes apply too.
        assert_eq!(
            r.apply("a.1", 3, Change::Gone(DownReason::Left)),
            vec![gone("a", "1", DownReason::Left)]
        );
    }

    #[test]
    fn an_unchanged_refresh_is_recognised_and_raises_nothing() {
        let mut r = Roster::new();
        let raw = bytes::Bytes::from_static(b"entry");
        r.apply_raw(
            "a.1",
            1,
            Change::Put(Box::new(info("a", "1", "x"))),
            raw.clone(),
        );
        assert!(r.holds("a.1", b"entry"));
        assert!(!r.holds("a.1", b"other"));
        assert!(r.apply("a.1", 2, Change::Same).is_empty());
        assert_eq!(r.others_of("a", "b.1"), 1);
        assert_eq!(r.others_of("a", "a.1"), 0);
        // A stale refresh does not move the revision back.
        assert!(r.apply("a.1", 1, Change::Same).is_empty());
        assert!(r.contains("a.1"));
    }

    #[test]
    fn reconcile_reports_what_the_watch_missed() {
        let mut r = Roster::new();
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
