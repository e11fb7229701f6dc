//! Building and validating NATS subject names.
//!
//! Data travels on `{network}.{actor}.{port}`. A network id may hold dots
//! (`prod.ml.training`); actor and port names may not, so the last two tokens of a data
//! subject are always the actor and the port, and each network's subscription
//! `{network}.*.*` matches its own traffic only, however ids nest: `prod.ml.*.*` needs
//! exactly two more tokens than `prod.ml`, which `prod.ml.training.a.p` does not have.
//!
//! Control traffic lives under the reserved prefix [`CONTROL_PREFIX`], which is why no
//! network id may begin with `_`.

use crate::error::{Error, ErrorKind, Result};

/// The reserved first token of every control subject.
pub const CONTROL_PREFIX: &str = "_reflow";

/// The subject every network answers for scatter-gather discovery.
pub const DISCOVER_SUBJECT: &str = "_reflow.discover";

/// The longest name accepted for a network id, actor or port.
pub const MAX_NAME_LEN: usize = 128;

fn bad_name(what: &str, value: &str, why: &str) -> Error {
    Error::new(ErrorKind::InvalidName, format!("{what} {value:?} {why}"))
}

fn check_token(what: &str, whole: &str, token: &str) -> Result<()> {
    if token.is_empty() {
        return Err(bad_name(what, whole, "has an empty part"));
    }
    if let Some(c) = token
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '>'))
    {
        let why = match c {
            '*' | '>' => format!("contains the wildcard {c:?}"),
            _ => format!("contains whitespace or a control character ({c:?})"),
        };
        return Err(bad_name(what, whole, &why));
    }
    Ok(())
}

fn check_length(what: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(bad_name(what, value, "is empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(bad_name(
            what,
            value,
            &format!("is longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    Ok(())
}

/// Checks a network id: dot-separated tokens, none empty, no whitespace or wildcards, and
/// no leading `_` (reserved for control subjects).
///
/// ```
/// use reflow_network::subject::validate_network_id;
///
/// assert!(validate_network_id("prod.ml.training").is_ok());
/// assert!(validate_network_id("_reflow").is_err());
/// assert!(validate_network_id("a.*").is_err());
/// ```
pub fn validate_network_id(id: &str) -> Result<()> {
    check_length("network id", id)?;
    if id.starts_with('_') {
        return Err(bad_name(
            "network id",
            id,
            "starts with '_', which is reserved for control subjects",
        ));
    }
    id.split('.')
        .try_for_each(|token| check_token("network id", id, token))
}

/// Checks an actor or port name (`what` says which, for the message): one subject token,
/// so no dots, whitespace or wildcards, and no leading `_`.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    check_length(what, name)?;
    if name.contains('.') {
        return Err(bad_name(what, name, "contains a dot"));
    }
    if name.starts_with('_') {
        return Err(bad_name(what, name, "starts with '_', which is reserved"));
    }
    check_token(what, name, name)
}

/// Checks an instance id: the same rules as an actor name.
pub fn validate_instance_id(id: &str) -> Result<()> {
    validate_name("instance id", id)
}

/// Checks a plain subject an out-port is published on: dot-separated tokens, none empty,
/// no whitespace or wildcards, not under `_reflow.` or `$` (the project's and the
/// server's own subjects).
///
/// ```
/// use reflow_network::subject::validate_publish_subject;
///
/// assert!(validate_publish_subject("stats.counts").is_ok());
/// assert!(validate_publish_subject("stats.>").is_err());
/// assert!(validate_publish_subject("_reflow.discover").is_err());
/// ```
pub fn validate_publish_subject(subject: &str) -> Result<()> {
    let what = "publish subject";
    if subject.is_empty() {
        return Err(bad_name(what, subject, "is empty"));
    }
    if subject.starts_with(CONTROL_PREFIX) || subject.starts_with('$') {
        return Err(bad_name(
            what,
            subject,
            "is reserved (subjects under _reflow. and $ belong to the project and the server)",
        ));
    }
    subject
        .split('.')
        .try_for_each(|token| check_token(what, subject, token))
}

/// The subject that carries data into `actor`'s `port` on `network`.
pub fn data_subject(network: &str, actor: &str, port: &str) -> String {
    let mut s = String::with_capacity(network.len() + actor.len() + port.len() + 2);
    s.push_str(network);
    s.push('.');
    s.push_str(actor);
    s.push('.');
    s.push_str(port);
    s
}

/// The wildcard subject a network's instances subscribe to (in queue group `network`).
pub fn network_wildcard(network: &str) -> String {
    format!("{network}.*.*")
}

/// Splits a data subject received on `network`'s wildcard into `(actor, port)`.
///
/// Returns `None` when the subject is not `{network}.{actor}.{port}`.
pub fn parse_data_subject<'a>(network: &str, subject: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = subject.strip_prefix(network)?.strip_prefix('.')?;
    let (actor, port) = rest.split_once('.')?;
    if actor.is_empty() || port.is_empty() || port.contains('.') {
        return None;
    }
    Some((actor, port))
}

/// The control subject for `verb` (`info`, `actors`, `ping`, `connect`, ...) on `network`.
pub fn control_subject(network: &str, verb: &str) -> String {
    format!("{CONTROL_PREFIX}.{network}.{verb}")
}

/// The instance whose return subject `reply_to` is, if it is one of `network`'s:
/// `_reflow.{network}.{instance}.ret.{token}`, one token each, with no wildcard. Outputs go
/// back only to such a subject, so an attach can never point an actor's outputs at
/// another network's data, or at a subject outside the one the requester's own instance
/// listens on.
pub(crate) fn return_subject_instance<'a>(network: &str, reply_to: &'a str) -> Option<&'a str> {
    let rest = reply_to
        .strip_prefix(CONTROL_PREFIX)?
        .strip_prefix('.')?
        .strip_prefix(network)?
        .strip_prefix('.')?;
    let parts: Vec<&str> = rest.split('.').collect();
    match parts.as_slice() {
        [instance, "ret", token]
            if [instance, token].iter().all(|t| {
                !t.is_empty() && !t.contains(['*', '>']) && !t.chars().any(char::is_whitespace)
            }) =>
        {
            Some(instance)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_return_subject_names_the_network_one_instance_and_one_token() {
        let ok = |network, reply_to| super::return_subject_instance(network, reply_to).is_some();
        assert_eq!(
            super::return_subject_instance("app", "_reflow.app.i-1.ret.t3"),
            Some("i-1")
        );
        assert_eq!(
            super::return_subject_instance("prod.ml", "_reflow.prod.ml.i.ret.t"),
            Some("i")
        );
        assert!(!ok("app", "ghost.spy"));
        assert!(!ok("app", "_reflow.ghost.i.ret.t"));
        assert!(!ok("app", "_reflow.app.i.ret.t.more"));
        assert!(!ok("app", "_reflow.app.i.ret.*"));
        assert!(!ok("app", "_reflow.app.i.ret.>"));
        assert!(!ok("app", "_reflow.app.i.to.t"));
        assert!(!ok("app", "_reflow.app..ret.t"));
        assert!(!ok("app", "_reflow.apps.i.ret.t"));
        assert!(!ok("app", "app.x.y"));
    }

    use super::*;

    #[test]
    fn dotted_network_ids_are_accepted() {
        for id in ["prod.ml", "prod.ml.training", "a-b_c", "x1"] {
            validate_network_id(id).unwrap();
        }
    }

    #[test]
    fn bad_network_ids_name_the_value() {
        for (id, why) in [
            ("", "empty"),
            ("a b", "whitespace"),
            ("a.*", "wildcard"),
            ("a.>", "wildcard"),
            ("_reflow", "reserved"),
            ("a..b", "empty part"),
            ("a.", "empty part"),
        ] {
            let err = validate_network_id(id).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidName, "{id:?}");
            let text = err.to_string();
            assert!(text.contains(why), "{id:?}: {text}");
            assert!(text.contains(&format!("{id:?}")), "{id:?}: {text}");
        }
    }

    #[test]
    fn actor_and_port_names_reject_dots_and_wildcards() {
        validate_name("actor", "doubler_1").unwrap();
        for name in ["a.b", "*", ">", "", " x", "_hidden", "tab\there"] {
            assert!(validate_name("actor", name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn data_subjects_parse_back() {
        let s = data_subject("prod.ml", "trainer", "in");
        assert_eq!(s, "prod.ml.trainer.in");
        assert_eq!(parse_data_subject("prod.ml", &s), Some(("trainer", "in")));
    }

    #[test]
    fn nested_ids_do_not_parse_each_others_subjects() {
        let inner = data_subject("prod.ml.training", "a", "p");
        assert_eq!(parse_data_subject("prod.ml", &inner), None);
        assert_eq!(parse_data_subject("prod", "production.a.p"), None);
    }

    #[test]
    fn control_subjects_live_under_the_reserved_prefix() {
        assert_eq!(control_subject("prod.ml", "ping"), "_reflow.prod.ml.ping");
    }
}
