//! `reflow-bridge` processes for tests that kill real processes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

const BIN: &str = env!("CARGO_BIN_EXE_reflow-bridge");

/// A child process, killed with SIGKILL when dropped.
pub(crate) struct Doomed(pub(crate) Child);

impl Doomed {
    /// This test binary again, running only its ignored helper test `helper`, with
    /// `env`; its stdout piped when `piped`, else discarded; its stderr (a panic's
    /// message) shown with the test's own.
    pub(crate) fn this_test(helper: &str, env: &[(&str, String)], piped: bool) -> Doomed {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", helper, "--ignored", "--nocapture"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(if piped { Stdio::piped() } else { Stdio::null() })
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Doomed(child)
    }

    /// SIGKILL: no goodbye, no flush, no liveness delete.
    pub(crate) fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// Waits, at most `limit`, until a child started with its stdout piped prints `line`;
    /// panics naming `what` if it does not. Its output is read to the end: a child whose
    /// stdout closed would die on its next line.
    pub(crate) async fn wait_for_line(
        &mut self,
        line: &str,
        limit: std::time::Duration,
        what: &str,
    ) {
        let stdout = self.0.stdout.take().expect("a child with its stdout piped");
        let (said, heard) = tokio::sync::oneshot::channel();
        let line = line.to_string();
        std::thread::spawn(move || {
            let mut said = Some(said);
            for printed in BufReader::new(stdout).lines().map_while(Result::ok) {
                if printed.trim() == line
                    && let Some(said) = said.take()
                {
                    let _ = said.send(());
                }
            }
        });
        let heard = tokio::time::timeout(limit, heard).await;
        let status = self.0.try_wait().unwrap();
        assert!(
            matches!(heard, Ok(Ok(()))),
            "{what}: the child did not get there within {limit:?} (exit status: {status:?}; \
             its stderr is above)"
        );
    }
}

impl Drop for Doomed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `reflow-bridge run` process.
pub(crate) struct Process {
    name: String,
    child: Doomed,
    output: Arc<Mutex<String>>,
}

impl Process {
    pub(crate) fn run(url: &str, config: &Path, name: &str) -> Process {
        Process::run_program(
            Path::new(BIN),
            Path::new(env!("CARGO_MANIFEST_DIR")),
            url,
            config,
            name,
        )
    }

    /// `program run --config CONFIG` in `cwd`: `program` is this crate's `reflow-bridge`
    /// or a binary of someone's own built on `cli::main_with`.
    pub(crate) fn run_program(
        program: &Path,
        cwd: &Path,
        url: &str,
        config: &Path,
        name: &str,
    ) -> Process {
        let mut child = Command::new(program)
            .current_dir(cwd)
            .args(["--nats-url", url, "run", "--config"])
            .arg(config)
            .env_remove("NATS_URL")
            .env_remove("REFLOW_AUTH_TOKEN")
            .env("RUST_LOG", "reflow_network=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut text = sink.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        Process {
            name: name.to_string(),
            child: Doomed(child),
            output,
        }
    }

    /// SIGKILL: no goodbye, no flush, no liveness delete.
    pub(crate) fn kill(&mut self) {
        self.child.kill();
    }

    /// The last lines it printed, for a failure message.
    pub(crate) fn tail(&self) -> String {
        let text = self.output.lock().unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(15);
        format!("--- {} ---\n{}", self.name, lines[from..].join("\n"))
    }
}

/// Writes into `dir` the config of instance `b-{instance}` of network `B{tag}`: a
/// passthrough `work` whose outputs go on to `collect@C{tag}`, with a 1 s heartbeat and
/// a direct listener on `bind_port` (0: none).
pub(crate) fn passthrough_b(
    dir: &Path,
    tag: &str,
    instance: usize,
    bind_port: u16,
) -> std::path::PathBuf {
    let path = dir.join(format!("b{instance}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[network]
network_id = "B{tag}"
instance_id = "b-{instance}"
heartbeat_interval_ms = 1000
bind_address = "127.0.0.1"
bind_port = {bind_port}

[[nodes]]
id = "work"
component = "passthrough"

[[connections]]
from = "work.out"
to = "collect@C{tag}.in"
"#
        ),
    )
    .unwrap();
    path
}

/// What a finished program printed on its standard output, once it is asserted to have
/// succeeded; a failure names `what` and shows both outputs.
pub(crate) fn succeeded(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({})\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
