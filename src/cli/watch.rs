//! `reflow-bridge watch [SUBJECT]`: tails traffic, every payload shown for what it is.
//!
//! Data envelopes (on `{network}.{actor}.{port}`, on the return subjects
//! `_reflow.{network}.{instance}.ret.…` and on the addressed `….to.…` subjects; plain,
//! batched, compressed or sealed) are decoded to JSON; JSON payloads (control requests
//! and replies, acknowledgements) are shown as they are; text as text; anything else as
//! hex, labelled so. Without a subject it tails `>` less the NATS system traffic
//! (`$JS.>`, `$KV.>`, `$SRV.>`, `_INBOX.>`), which would drown the rest: the liveness
//! heartbeats alone are several messages a second; `--all` (or naming a subject) shows it.

use crate::message::Envelope;
use futures::StreamExt;
use serde::Serialize;

use crate::cli::Global;
use crate::cli::output::{self, CliError, CliResult, Exit};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The subject to tail; wildcards allowed (`math.>`, `*.double.in`) [default: every
    /// subject but the NATS system traffic]
    subject: Option<String>,
    /// With no SUBJECT, also show `$JS.>`, `$KV.>`, `$SRV.>` and `_INBOX.>` traffic
    #[arg(long)]
    all: bool,
}

/// The subjects of NATS's own machinery (JetStream, key-value, services, replies) that
/// the default watch hides.
const SYSTEM_PREFIXES: &[&str] = &["$JS.", "$KV.", "$SRV.", "_INBOX."];

/// Whether `subject` is NATS's own traffic rather than the networks'.
fn is_system(subject: &str) -> bool {
    SYSTEM_PREFIXES.iter().any(|p| subject.starts_with(p))
}

/// One thing seen on the wire, as `watch --json` prints it (one object per line).
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Seen {
    /// The subject it came on.
    pub(crate) subject: String,
    /// `envelope`, `json`, `text`, `binary` or `empty`.
    pub(crate) kind: &'static str,
    /// Whether the payload was sealed with a network's auth token (not checked here).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) sealed: bool,
    /// Envelopes: the sending network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) network: Option<String>,
    /// Envelopes: the sending instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) instance: Option<String>,
    /// Envelopes: the message's sequence number in its sender's stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) seq: Option<u64>,
    /// Envelopes: the message, as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<serde_json::Value>,
    /// Envelopes: where the target's outputs go back to, if anywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reply_to: Option<String>,
    /// JSON payloads: the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) json: Option<serde_json::Value>,
    /// Text payloads: the text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<String>,
    /// Binary payloads: the bytes in hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hex: Option<String>,
    /// The payload's size in bytes, as it came.
    pub(crate) bytes: usize,
}

impl Seen {
    fn new(subject: &str, kind: &'static str, bytes: usize) -> Self {
        Seen {
            subject: subject.to_string(),
            kind,
            sealed: false,
            network: None,
            instance: None,
            seq: None,
            message: None,
            reply_to: None,
            json: None,
            text: None,
            hex: None,
            bytes,
        }
    }
}

/// What one NATS message shows as: one entry per message it carries (a batch envelope
/// carries several), or the payload itself.
fn describe(subject: &str, payload: &bytes::Bytes) -> Vec<Seen> {
    let size = payload.len();
    let inner = crate::message::seal::unsealed(payload);
    let sealed = inner.len() != size;
    if let Ok(envelopes) = Envelope::decode_all(&inner) {
        return envelopes
            .into_iter()
            .map(|envelope| Seen {
                sealed,
                network: Some(envelope.network),
                instance: Some(envelope.instance),
                seq: Some(envelope.seq),
                message: Some(envelope.message.to_json()),
                reply_to: envelope.reply_to,
                ..Seen::new(subject, "envelope", size)
            })
            .collect();
    }
    let seen = if inner.is_empty() {
        Seen::new(subject, "empty", size)
    } else if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&inner) {
        Seen {
            json: Some(value),
            ..Seen::new(subject, "json", size)
        }
    } else if let Some(text) = std::str::from_utf8(&inner)
        .ok()
        .filter(|t| !t.chars().any(|c| c.is_control() && !c.is_whitespace()))
    {
        Seen {
            text: Some(text.to_string()),
            ..Seen::new(subject, "text", size)
        }
    } else {
        Seen {
            hex: Some(inner.iter().map(|b| format!("{b:02x}")).collect()),
            ..Seen::new(subject, "binary", size)
        }
    };
    vec![Seen { sealed, ..seen }]
}

/// Hex digits shown on a line for a binary payload before it is cut short.
const HEX_SHOWN: usize = 96;

fn human_line(seen: &Seen) -> String {
    let subject = &seen.subject;
    let sealed = if seen.sealed { " (sealed)" } else { "" };
    match seen.kind {
        "envelope" => format!(
            "{subject}  from {}/{} #{}: {}{sealed}",
            seen.network.as_deref().unwrap_or_default(),
            seen.instance.as_deref().unwrap_or_default(),
            seen.seq.unwrap_or_default(),
            seen.message.as_ref().unwrap_or(&serde_json::Value::Null)
        ),
        "json" => format!(
            "{subject}  {}{sealed}",
            seen.json.as_ref().unwrap_or(&serde_json::Value::Null)
        ),
        "text" => format!("{subject}  {}", seen.text.as_deref().unwrap_or_default()),
        "empty" => format!("{subject}  (empty)"),
        _ => {
            let hex = seen.hex.as_deref().unwrap_or_default();
            let (shown, more) = if hex.len() > HEX_SHOWN {
                (&hex[..HEX_SHOWN], "…")
            } else {
                (hex, "")
            };
            format!(
                "{subject}  (binary, {} bytes, hex) {shown}{more}",
                seen.bytes
            )
        }
    }
}

pub(crate) async fn run(global: &Global, args: Args) -> CliResult {
    let urls = global.urls_or(&[]);
    let auth = global.nats_auth(crate::distributed_network::NatsAuth::default())?;
    let spinner = output::Spinner::start("connecting to the NATS server");
    let connected = crate::transport::nats::connect_client(
        &urls,
        global.token.as_deref(),
        &auth,
        "reflow-bridge watch",
    )
    .await;
    drop(spinner);
    let client = connected.map_err(|e| {
        let mut err = CliError::from_broker(e);
        err.message = format!("cannot watch: {}", err.message);
        err
    })?;
    let hide_system = args.subject.is_none() && !args.all;
    let subject = args.subject.unwrap_or_else(|| ">".to_string());
    let mut messages = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| CliError::usage(format!("cannot subscribe to {subject:?}: {e}")))?;
    client
        .flush()
        .await
        .map_err(|e| CliError::new(Exit::BrokerUnreachable, format!("NATS server lost: {e}")))?;
    let hidden = if hide_system {
        " but $JS, $KV, $SRV and _INBOX traffic (--all shows it)"
    } else {
        ""
    };
    eprintln!(
        "watching {subject}{hidden} on {} (Ctrl-C to stop)",
        urls.join(",")
    );
    let human = output::human(global.json);
    let stop = crate::cli::up::stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { break };
                if hide_system && is_system(&message.subject) {
                    continue;
                }
                for seen in describe(&message.subject, &message.payload) {
                    if human {
                        println!("{}", human_line(&seen));
                    } else {
                        output::print_json(&seen);
                    }
                }
            }
            _ = &mut stop => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;
    use bytes::Bytes;
    use serde_json::json;

    #[test]
    fn envelopes_decode_and_control_json_shows_as_is() {
        let bytes = Envelope::new("A", "a1", 7, Message::Integer(5))
            .encode(None)
            .unwrap();
        let seen = &describe("B.double.in", &bytes)[0];
        assert_eq!(seen.network.as_deref(), Some("A"));
        assert_eq!(seen.message, Some(json!(5)));
        let control = &describe("_reflow.B.ping", &Bytes::from_static(br#"{"actor":null}"#))[0];
        assert_eq!(control.json, Some(json!({ "actor": null })));
    }

    #[test]
    fn return_envelopes_sealed_and_compressed_decode_on_reflow_subjects() {
        let mut envelope = Envelope::new("stats", "s1", 3, Message::String("x".repeat(300).into()));
        envelope.reply_to = None;
        let compressed = envelope.encode(Some(16)).unwrap();
        assert_eq!(compressed[0], crate::message::COMPRESSED_MARKER);
        let sealed = crate::message::seal::SealKey::from_token("t").seal(
            crate::message::seal::Purpose::Data,
            "n.a.p",
            1,
            &compressed,
        );
        let subject = "_reflow.feeder.f1.ret.abc.count";
        let seen = &describe(subject, &sealed)[0];
        assert_eq!(seen.kind, "envelope");
        assert!(seen.sealed);
        assert_eq!(seen.message, Some(json!("x".repeat(300))));
        assert!(
            human_line(seen).ends_with("(sealed)"),
            "{}",
            human_line(seen)
        );
    }

    #[test]
    fn binary_that_is_nothing_known_shows_as_labelled_hex_never_as_mojibake() {
        let seen = &describe("odd.sub", &Bytes::from_static(&[0xff, 0x00, 0xc3, 0x28]))[0];
        assert_eq!(seen.kind, "binary");
        assert_eq!(seen.hex.as_deref(), Some("ff00c328"));
        assert_eq!(human_line(seen), "odd.sub  (binary, 4 bytes, hex) ff00c328");
        let empty = &describe("_INBOX.x", &Bytes::new())[0];
        assert_eq!(human_line(empty), "_INBOX.x  (empty)");
    }

    #[test]
    fn system_subjects_are_recognised() {
        for subject in [
            "$JS.API.INFO",
            "$KV.reflow_liveness.a.b",
            "$SRV.PING",
            "_INBOX.x.y",
        ] {
            assert!(is_system(subject), "{subject}");
        }
        for subject in ["_reflow.discover", "stats.tally.in", "JS.x"] {
            assert!(!is_system(subject), "{subject}");
        }
    }

    #[test]
    fn a_batch_envelope_shows_one_entry_per_message_with_its_number() {
        let batch = json!({
            "v": 1, "n": "A", "i": "a1", "s": 7,
            "b": [{ "Integer": 5 }, { "String": "x" }],
        });
        let bytes = Bytes::from(rmp_serde::to_vec_named(&batch).unwrap());
        let shown = describe("B.double.in", &bytes);
        assert_eq!(shown.len(), 2);
        assert_eq!(
            (shown[0].seq, &shown[0].message),
            (Some(7), &Some(json!(5)))
        );
        assert_eq!(
            (shown[1].seq, &shown[1].message),
            (Some(8), &Some(json!("x")))
        );
        assert_eq!(human_line(&shown[1]), "B.double.in  from A/a1 #8: \"x\"");
    }
}
