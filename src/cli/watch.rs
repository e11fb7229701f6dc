//! `reflow-bridge watch [SUBJECT]`: tails traffic. Data envelopes are decoded to JSON;
//! control traffic (already JSON) is shown as it is.

use crate::message::Envelope;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::cli::Global;
use crate::cli::output::{self, CliError, CliResult, Exit};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The subject to tail; wildcards allowed (`math.>`, `*.double.in`)
    #[arg(default_value = ">")]
    subject: String,
}

/// What one NATS message shows as: one entry per message it carries (a batch envelope
/// carries several), or the payload itself.
fn describe(subject: &str, payload: &[u8]) -> Vec<Value> {
    let control = subject.starts_with("_reflow.") || subject.starts_with("_INBOX.");
    if !control && let Ok(envelopes) = Envelope::decode_all(payload) {
        return envelopes
            .into_iter()
            .map(|envelope| {
                json!({
                    "subject": subject,
                    "from": envelope.network,
                    "instance": envelope.instance,
                    "seq": envelope.seq,
                    "message": envelope.message.to_json(),
                    "reply_to": envelope.reply_to,
                })
            })
            .collect();
    }
    vec![match serde_json::from_slice::<Value>(payload) {
        Ok(value) => json!({ "subject": subject, "json": value }),
        Err(_) => json!({ "subject": subject, "text": String::from_utf8_lossy(payload) }),
    }]
}

fn human_line(value: &Value) -> String {
    let subject = value["subject"].as_str().unwrap_or_default();
    if let Some(message) = value.get("message") {
        format!(
            "{subject}  from {}/{} #{}: {message}",
            value["from"].as_str().unwrap_or_default(),
            value["instance"].as_str().unwrap_or_default(),
            value["seq"]
        )
    } else if let Some(json) = value.get("json") {
        format!("{subject}  {json}")
    } else {
        format!("{subject}  {}", value["text"].as_str().unwrap_or_default())
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
    let mut messages = client
        .subscribe(args.subject.clone())
        .await
        .map_err(|e| CliError::usage(format!("cannot subscribe to {:?}: {e}", args.subject)))?;
    client
        .flush()
        .await
        .map_err(|e| CliError::new(Exit::BrokerUnreachable, format!("NATS server lost: {e}")))?;
    eprintln!(
        "watching {} on {} (Ctrl-C to stop)",
        args.subject,
        urls.join(",")
    );
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { break };
                for value in describe(&message.subject, &message.payload) {
                    if output::human(global.json) {
                        println!("{}", human_line(&value));
                    } else {
                        output::print_json(&value);
                    }
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    #[test]
    fn envelopes_decode_and_control_json_shows_as_is() {
        let bytes = Envelope::new("A", "a1", 7, Message::Integer(5))
            .encode(None)
            .unwrap();
        let value = &describe("B.double.in", &bytes)[0];
        assert_eq!(value["from"], "A");
        assert_eq!(value["message"], 5);
        let control = &describe("_reflow.B.ping", br#"{"actor":null}"#)[0];
        assert_eq!(control["json"], json!({ "actor": null }));
    }

    #[test]
    fn a_batch_envelope_shows_one_entry_per_message_with_its_number() {
        let batch = json!({
            "v": 1, "n": "A", "i": "a1", "s": 7,
            "b": [{ "Integer": 5 }, { "String": "x" }],
        });
        let bytes = rmp_serde::to_vec_named(&batch).unwrap();
        let shown = describe("B.double.in", &bytes);
        assert_eq!(shown.len(), 2);
        assert_eq!(
            (&shown[0]["seq"], &shown[0]["message"]),
            (&json!(7), &json!(5))
        );
        assert_eq!(
            (&shown[1]["seq"], &shown[1]["message"]),
            (&json!(8), &json!("x"))
        );
        assert_eq!(human_line(&shown[1]), "B.double.in  from A/a1 #8: \"x\"");
    }
}
