//! The `exec` component: an actor written in any language, as a program that reads JSON
//! lines on stdin and answers each with a line on stdout.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::actor::{Actor, ActorContext};
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;

/// How long a program may take to answer one message, unless the node's `timeout_ms`
/// says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a program and exchanges JSON lines with it: every message arriving on `in` is
/// written to the program's stdin as one line of JSON, and the program answers each with
/// one line on stdout: a JSON value, emitted on `out`, or an empty line, for nothing.
///
/// The node's metadata says what to run:
///
/// | key | meaning |
/// |---|---|
/// | `command` | an array, the program and its arguments (`["python3", "double.py"]`), or a string run by `/bin/sh -c` |
/// | `cwd` | the directory to run it in (default: the bridge process's) |
/// | `env` | an object of extra environment variables |
/// | `timeout_ms` | how long the program may take to answer one message (default 30,000) |
///
/// The program starts with the node and is given `PYTHONUNBUFFERED=1`; a program in
/// another language must flush stdout after each line. Its stderr goes to the bridge's
/// log, line by line, under the node's id. A message is handled once its answer is read,
/// so what the program emits carries the message's acknowledgement along. A program that
/// exits, answers with something that is not JSON, or does not answer in time fails that
/// message with an error naming the program; the next message starts it again.
///
/// ```toml
/// [[nodes]]
/// id = "double"
/// component = "exec"
/// metadata = { command = ["python3", "-c", "import sys, json\nfor l in sys.stdin: print(json.dumps(2 * json.loads(l)))"] }
/// ```
#[derive(Debug, Default)]
pub struct Exec {
    running: Option<Running>,
}

/// The program while it runs, with what its metadata said: read once, when it starts.
#[derive(Debug)]
struct Running {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    shown: String,
    timeout: Duration,
}

/// What the node's metadata asks to run.
struct Program {
    command: Command,
    shown: String,
    timeout: Duration,
}

impl Program {
    fn from_metadata(ctx: &ActorContext) -> Result<Program> {
        let invalid = |detail: String| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("exec node {:?}: {detail}", ctx.node_id()),
            )
        };
        let (mut command, shown) = match ctx.config("command") {
            Some(serde_json::Value::String(line)) if !line.trim().is_empty() => {
                let mut command = Command::new("/bin/sh");
                command.arg("-c").arg(line);
                (command, line.clone())
            }
            Some(serde_json::Value::Array(words)) if !words.is_empty() => {
                let words: Vec<&str> = words
                    .iter()
                    .map(|w| w.as_str())
                    .collect::<Option<_>>()
                    .ok_or_else(|| invalid("every word of `command` must be a string".into()))?;
                let mut command = Command::new(words[0]);
                command.args(&words[1..]);
                (command, words.join(" "))
            }
            Some(other) => {
                return Err(invalid(format!(
                    "`command` must be a non-empty array of strings or a string, not {other}"
                )));
            }
            None => {
                return Err(invalid(
                    "metadata has no `command` (the program to run, e.g. [\"python3\", \"double.py\"])"
                        .into(),
                ));
            }
        };
        if let Some(cwd) = ctx.config("cwd") {
            let cwd = cwd
                .as_str()
                .ok_or_else(|| invalid("`cwd` must be a string".into()))?;
            command.current_dir(cwd);
        }
        if let Some(env) = ctx.config("env") {
            let env = env
                .as_object()
                .ok_or_else(|| invalid("`env` must be an object of strings".into()))?;
            for (key, value) in env {
                let value = match value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                command.env(key, value);
            }
        }
        let timeout = match ctx.config("timeout_ms") {
            None => DEFAULT_TIMEOUT,
            Some(ms) => Duration::from_millis(
                ms.as_u64()
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| invalid("`timeout_ms` must be a positive integer".into()))?,
            ),
        };
        command
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Ok(Program {
            command,
            shown,
            timeout,
        })
    }

    fn spawn(mut self, node: &str) -> Result<Running> {
        let mut child = self.command.spawn().map_err(|err| {
            Error::new(
                ErrorKind::Actor,
                format!("exec node {node:?}: cannot start `{}`: {err}", self.shown),
            )
        })?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let stderr = child.stderr.take().expect("stderr is piped");
        let node = node.to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(node = %node, "exec stderr: {line}");
            }
        });
        Ok(Running {
            child,
            stdin,
            stdout,
            shown: self.shown,
            timeout: self.timeout,
        })
    }
}

impl Exec {
    /// Writes `message` and reads the program's answer, starting the program first when
    /// it is not running.
    async fn exchange(&mut self, ctx: &ActorContext, message: &Message) -> Result<Option<Message>> {
        if self.running.is_none() {
            self.running = Some(Program::from_metadata(ctx)?.spawn(ctx.node_id())?);
        }
        let running = self.running.as_mut().expect("started above");
        let (shown, timeout) = (running.shown.clone(), running.timeout);
        let failed = |detail: String| {
            Error::new(
                ErrorKind::Actor,
                format!("exec node {:?} (`{shown}`): {detail}", ctx.node_id()),
            )
        };
        let mut line = serde_json::to_vec(&message.to_json())
            .map_err(|err| failed(format!("cannot write the message as JSON: {err}")))?;
        line.push(b'\n');
        let answer = tokio::time::timeout(timeout, async {
            running.stdin.write_all(&line).await?;
            running.stdin.flush().await?;
            running.stdout.next_line().await
        })
        .await;
        let answer = match answer {
            Ok(Ok(Some(answer))) => answer,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = self.stop_program().await;
                return Err(failed(format!(
                    "the program exited ({status}) before answering"
                )));
            }
            Err(_) => {
                self.stop_program().await;
                return Err(failed(format!(
                    "no answer within {} ms; the program was stopped and starts again with the next message",
                    timeout.as_millis()
                )));
            }
        };
        if answer.trim().is_empty() {
            return Ok(None);
        }
        let value: serde_json::Value = serde_json::from_str(&answer)
            .map_err(|err| failed(format!("answered {answer:?}, which is not JSON: {err}")))?;
        Ok(Some(Message::from_json(value)))
    }

    /// Stops the program (closing its stdin first, so a well-behaved one ends on its own)
    /// and says how it ended.
    async fn stop_program(&mut self) -> String {
        let Some(mut running) = self.running.take() else {
            return "not running".into();
        };
        drop(running.stdin);
        let status = match tokio::time::timeout(Duration::from_secs(2), running.child.wait()).await
        {
            Ok(Ok(status)) => return status.to_string(),
            Ok(Err(err)) => err.to_string(),
            Err(_) => "still running after its stdin closed".to_string(),
        };
        let _ = running.child.kill().await;
        status
    }
}

#[async_trait]
impl Actor for Exec {
    fn inports(&self) -> Vec<String> {
        vec!["in".into()]
    }
    fn outports(&self) -> Vec<String> {
        vec!["out".into()]
    }
    fn description(&self) -> String {
        "runs a program, one JSON line in and one out per message (metadata command)".into()
    }
    async fn start(&mut self, ctx: &mut ActorContext) -> Result<()> {
        self.running = Some(Program::from_metadata(ctx)?.spawn(ctx.node_id())?);
        Ok(())
    }
    async fn handle(
        &mut self,
        ctx: &mut ActorContext,
        _port: &str,
        message: Message,
    ) -> Result<()> {
        if let Some(answer) = self.exchange(ctx, &message).await? {
            ctx.emit("out", answer).await?;
        }
        Ok(())
    }
    async fn stop(&mut self, _ctx: &mut ActorContext) -> Result<()> {
        self.stop_program().await;
        Ok(())
    }
}
