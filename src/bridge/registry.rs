//! The remote actors this network uses, each behind a proxy node with an alias.
//!
//! A remote actor appears in the local graph as a node named by its alias (by default
//! `actor@network`). An alias must be unique among every node of the local graph; when
//! the wanted alias is taken, a [`ConflictResolutionStrategy`] decides what happens.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// What to do when the alias of a remote actor is already taken, locally or by another
/// remote registration.
///
/// | strategy | alias for `sum` on `math` |
/// |---|---|
/// | `Fail` | `sum@math`, or a `Name conflict` error if it is taken |
/// | `AutoAlias` | `sum@math`, else `sum@math-2`, `sum@math-3`, ... |
/// | `NetworkPrefix` | `math_sum` |
/// | `FullyQualified` | `math::sum` |
/// | `ManualAlias(a)` | `a` |
///
/// Every strategy but `AutoAlias` fails with `Name conflict` when its alias is taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConflictResolutionStrategy {
    /// Add a number to the default alias until it is free.
    AutoAlias,
    /// Name the proxy `{network}_{actor}`.
    NetworkPrefix,
    /// Name the proxy `{network}::{actor}`.
    FullyQualified,
    /// Use the given alias.
    ManualAlias(String),
    /// Use the default alias `actor@network`; a taken alias is an error.
    Fail,
}

/// The default alias of `actor` on `network`.
pub(crate) fn default_alias(actor: &str, network: &str) -> String {
    format!("{actor}@{network}")
}

impl ConflictResolutionStrategy {
    /// Picks the alias for `actor` on `network`, given which names are taken.
    pub(crate) fn resolve(
        &self,
        actor: &str,
        network: &str,
        taken: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let wanted = match self {
            ConflictResolutionStrategy::AutoAlias => {
                let base = default_alias(actor, network);
                if !taken(&base) {
                    return Ok(base);
                }
                return (2..)
                    .map(|n| format!("{base}-{n}"))
                    .find(|alias| !taken(alias))
                    .ok_or_else(|| unreachable_alias(&base));
            }
            ConflictResolutionStrategy::NetworkPrefix => format!("{network}_{actor}"),
            ConflictResolutionStrategy::FullyQualified => format!("{network}::{actor}"),
            ConflictResolutionStrategy::ManualAlias(alias) => alias.clone(),
            ConflictResolutionStrategy::Fail => default_alias(actor, network),
        };
        if taken(&wanted) {
            return Err(Error::new(
                ErrorKind::NameConflict,
                format!(
                    "{wanted:?} is already a node of this network; pick another alias \
                     (register_remote_actor_with_alias) or use ConflictResolutionStrategy::AutoAlias"
                ),
            ));
        }
        Ok(wanted)
    }
}

fn unreachable_alias(base: &str) -> Error {
    Error::new(
        ErrorKind::NameConflict,
        format!("no free alias after {base:?}"),
    )
}

/// One remote actor registered in the local graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteActorInfo {
    /// The proxy node's id in the local graph.
    pub alias: String,
    /// The network that hosts the actor.
    pub network_id: String,
    /// The actor's id on that network.
    pub actor_id: String,
    /// The actor's in-ports (the proxy's in-ports).
    pub inports: Vec<String>,
    /// The actor's out-ports (the proxy's out-ports).
    pub outports: Vec<String>,
    /// The subject token under which its outputs come back to this instance.
    #[serde(skip)]
    pub(crate) token: String,
}

/// Aliases to registrations, and return tokens to aliases.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    by_alias: BTreeMap<String, RemoteActorInfo>,
    by_token: BTreeMap<String, String>,
}

impl Registry {
    pub(crate) fn contains(&self, alias: &str) -> bool {
        self.by_alias.contains_key(alias)
    }

    /// A subject token for `alias`'s return traffic: the alias with its dots replaced,
    /// numbered if two aliases would map to the same token.
    pub(crate) fn token_for(&self, alias: &str) -> String {
        let base: String = alias
            .chars()
            .map(|c| if c == '.' { ':' } else { c })
            .collect();
        if !self.by_token.contains_key(&base) {
            return base;
        }
        (2..)
            .map(|n| format!("{base}~{n}"))
            .find(|t| !self.by_token.contains_key(t))
            .expect("an unbounded range finds a free token")
    }

    pub(crate) fn insert(&mut self, info: RemoteActorInfo) {
        self.by_token.insert(info.token.clone(), info.alias.clone());
        self.by_alias.insert(info.alias.clone(), info);
    }

    pub(crate) fn remove(&mut self, alias: &str) -> Option<RemoteActorInfo> {
        let info = self.by_alias.remove(alias)?;
        self.by_token.remove(&info.token);
        Some(info)
    }

    pub(crate) fn get(&self, alias: &str) -> Option<RemoteActorInfo> {
        self.by_alias.get(alias).cloned()
    }

    pub(crate) fn alias_of_token(&self, token: &str) -> Option<&str> {
        self.by_token.get(token).map(String::as_str)
    }

    pub(crate) fn list(&self) -> Vec<RemoteActorInfo> {
        self.by_alias.values().cloned().collect()
    }

    pub(crate) fn aliases_on(&self, network: &str) -> Vec<String> {
        self.by_alias
            .values()
            .filter(|info| info.network_id == network)
            .map(|info| info.alias.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConflictResolutionStrategy as S;

    #[test]
    fn every_strategy_picks_its_alias_when_free() {
        let free = |_: &str| false;
        assert_eq!(S::Fail.resolve("sum", "math", free).unwrap(), "sum@math");
        assert_eq!(
            S::AutoAlias.resolve("sum", "math", free).unwrap(),
            "sum@math"
        );
        assert_eq!(
            S::NetworkPrefix.resolve("sum", "math", free).unwrap(),
            "math_sum"
        );
        assert_eq!(
            S::FullyQualified.resolve("sum", "math", free).unwrap(),
            "math::sum"
        );
        assert_eq!(
            S::ManualAlias("adder".into())
                .resolve("sum", "math", free)
                .unwrap(),
            "adder"
        );
    }

    #[test]
    fn auto_alias_numbers_past_taken_names() {
        let taken = |a: &str| a == "sum@math" || a == "sum@math-2";
        assert_eq!(
            S::AutoAlias.resolve("sum", "math", taken).unwrap(),
            "sum@math-3"
        );
    }

    #[test]
    fn other_strategies_report_the_conflict_by_name() {
        let taken = |_: &str| true;
        for s in [
            S::Fail,
            S::NetworkPrefix,
            S::FullyQualified,
            S::ManualAlias("x".into()),
        ] {
            let err = s.resolve("sum", "math", taken).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NameConflict);
            assert!(err.to_string().starts_with("Name conflict"), "{err}");
        }
    }

    #[test]
    fn tokens_are_single_subject_tokens_and_unique() {
        let mut registry = Registry::default();
        let token = registry.token_for("w@prod.ml");
        assert_eq!(token, "w@prod:ml");
        registry.insert(RemoteActorInfo {
            alias: "w@prod.ml".into(),
            network_id: "prod.ml".into(),
            actor_id: "w".into(),
            inports: vec![],
            outports: vec![],
            token: token.clone(),
        });
        assert_eq!(registry.token_for("w@prod:ml"), "w@prod:ml~2");
        assert_eq!(registry.alias_of_token(&token), Some("w@prod.ml"));
    }
}
