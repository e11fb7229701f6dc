//! One nats-server child process: its files, its start-up, and the signals that hurt it.
//!
//! Each server lives in its own temporary folder holding the configuration file, the log
//! (the server's stderr, appended to across restarts) and the JetStream store. Start-up is
//! finished when the log says `Server is ready` and the client port greets with `INFO`; the
//! ports the server picked are read back from the log and written into the configuration,
//! so that a restart comes back on the same ones.
//!
//! The child is a `std::process::Child` polled from async code rather than a tokio one, so
//! that it does not depend on the runtime that happened to start it (tests make one runtime
//! each). On Linux it is spawned from one long-lived thread with `PR_SET_PDEATHSIG`, so it is
//! killed when this process dies, however it dies: the kernel sends that signal when the
//! *thread* that forked the child ends, and a runtime's worker threads come and go.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::config::ConfigSpec;
use super::{POLL_EVERY, READY_TIMEOUT, greets, tail};
use crate::error::{Error, ErrorKind, Result};

/// How long a stopped server may take to exit after `SIGTERM` before it gets `SIGKILL`.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

const CLIENT_PORT_LINE: &str = "Listening for client connections on ";
const HTTP_PORT_LINE: &str = "Starting http monitor on ";

/// A nats-server child process and the folder it lives in.
pub(super) struct Process {
    binary: PathBuf,
    spec: ConfigSpec,
    config_path: PathBuf,
    log_path: PathBuf,
    store_dir: PathBuf,
    child: Option<Child>,
    paused: AtomicBool,
    // Last, so that the folder goes after the child is gone.
    _dir: TempDir,
}

impl Process {
    /// Starts `binary` with `spec` (whose store folder is set here) and waits until it is
    /// ready.
    pub(super) async fn start(binary: &Path, mut spec: ConfigSpec) -> Result<Process> {
        let dir = tempfile::Builder::new()
            .prefix("reflow-nats-")
            .tempdir()
            .map_err(|err| io_failed("cannot make a temporary folder", err))?;
        let store_dir = dir.path().join("store");
        spec.store_dir = store_dir.display().to_string();
        let mut process = Process {
            binary: binary.to_path_buf(),
            spec,
            config_path: dir.path().join("nats-server.conf"),
            log_path: dir.path().join("nats-server.log"),
            store_dir,
            child: None,
            paused: AtomicBool::new(false),
            _dir: dir,
        };
        process.launch().await?;
        Ok(process)
    }

    pub(super) fn port(&self) -> u16 {
        self.spec
            .client_port
            .expect("a started server has a client port")
    }

    pub(super) fn http_port(&self) -> Option<u16> {
        self.spec.http_port
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(super) fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    pub(super) fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub(super) fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Asks the server to shut down (`SIGTERM`) and waits; `SIGKILL` if it takes too long.
    pub(super) async fn stop(&mut self) -> Result<()> {
        if self.child.is_none() {
            return Ok(());
        }
        self.resume()?;
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.try_reap()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        self.kill()
    }

    /// Kills the server at once (`SIGKILL`), as a crash would, and reaps it.
    pub(super) fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            self.paused.store(false, Ordering::SeqCst);
            child
                .kill()
                .and_then(|()| child.wait())
                .map_err(|err| io_failed("cannot kill nats-server", err))?;
        }
        Ok(())
    }

    /// Freezes the server (`SIGSTOP`) and waits until the kernel reports it stopped.
    pub(super) async fn pause(&self) -> Result<()> {
        self.signal(libc::SIGSTOP)?;
        self.paused.store(true, Ordering::SeqCst);
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !is_stopped(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// Lets a paused server run again (`SIGCONT`); does nothing if it is not paused.
    pub(super) fn resume(&self) -> Result<()> {
        if self.paused.swap(false, Ordering::SeqCst) {
            self.signal(libc::SIGCONT)?;
        }
        Ok(())
    }

    /// Stops the server if it runs, then starts it again on the same ports and store.
    pub(super) async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.launch().await
    }

    /// Writes the configuration, spawns the server and waits until it is ready; then fixes
    /// the ports it picked into the configuration for the next start.
    async fn launch(&mut self) -> Result<()> {
        fs::write(&self.config_path, self.spec.render())
            .map_err(|err| io_failed("cannot write the nats-server configuration", err))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|err| io_failed("cannot open the nats-server log", err))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let child = spawn(&self.binary, &self.config_path, log)
            .map_err(|err| io_failed(&format!("cannot run {}", self.binary.display()), err))?;
        self.child = Some(child);

        match self.wait_ready(log_start).await {
            Ok((client, http)) => {
                self.spec.client_port = Some(client);
                self.spec.http_port = http;
                fs::write(&self.config_path, self.spec.render())
                    .map_err(|err| io_failed("cannot rewrite the nats-server configuration", err))
            }
            Err(err) => {
                let _ = self.kill();
                Err(err)
            }
        }
    }

    /// Polls until the log (from `log_start` on) says the server is ready and its client
    /// port greets; returns the client and monitoring ports.
    async fn wait_ready(&mut self, log_start: u64) -> Result<(u16, Option<u16>)> {
        let deadline = Instant::now() + READY_TIMEOUT;
        // A server that starts every connection with a TLS handshake greets no one in
        // plain text: accepting is all it shows.
        let tls_first = self.spec.render().contains("handshake_first: true");
        loop {
            if let Some(status) = self.try_reap()? {
                return Err(self.not_ready(&format!("nats-server exited ({status})"), log_start));
            }
            let log = self.read_log(log_start);
            if log.contains("Server is ready")
                && let Some(client) = logged_port(&log, CLIENT_PORT_LINE)
                && (if tls_first {
                    tokio::net::TcpStream::connect(("127.0.0.1", client))
                        .await
                        .is_ok()
                } else {
                    greets(client).await
                })
            {
                return Ok((client, logged_port(&log, HTTP_PORT_LINE)));
            }
            if Instant::now() >= deadline {
                return Err(self.not_ready(
                    &format!("nats-server was not ready within {READY_TIMEOUT:?}"),
                    log_start,
                ));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    fn not_ready(&self, what: &str, log_start: u64) -> Error {
        Error::new(
            ErrorKind::LocalServer,
            format!(
                "{what}; the end of its log ({}):\n{}",
                self.log_path.display(),
                tail(&self.read_log(log_start), 15)
            ),
        )
    }

    fn read_log(&self, from: u64) -> String {
        let bytes = fs::read(&self.log_path).unwrap_or_default();
        let from = usize::try_from(from).unwrap_or(0).min(bytes.len());
        String::from_utf8_lossy(&bytes[from..]).into_owned()
    }

    /// Reaps the child if it has exited, returning how it ended.
    fn try_reap(&mut self) -> Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                self.paused.store(false, Ordering::SeqCst);
                Ok(Some(status))
            }
            Ok(None) => Ok(None),
            Err(err) => Err(io_failed("cannot wait for nats-server", err)),
        }
    }

    fn signal(&self, signal: libc::c_int) -> Result<()> {
        let Some(pid) = self.pid() else {
            return Err(Error::new(
                ErrorKind::LocalServer,
                "the nats-server is not running; restart it first",
            ));
        };
        send_signal(pid, signal)
            .map_err(|err| io_failed(&format!("cannot signal nats-server (pid {pid})"), err))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if *self.paused.get_mut() {
                let _ = send_signal(child.id(), libc::SIGCONT);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `signal` to `pid`. Callers hold the unreaped child, so the pid cannot have been
/// reused by another process.
fn send_signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The port at the end of the first log line holding `marker` (`... on 127.0.0.1:4222`).
fn logged_port(log: &str, marker: &str) -> Option<u16> {
    let line = log.lines().find(|line| line.contains(marker))?;
    let address = line.split(marker).nth(1)?.trim();
    address.rsplit(':').next()?.parse().ok()
}

/// Whether the kernel reports `pid` stopped (state `T` in `/proc/<pid>/stat`). Where there
/// is no `/proc`, a sent `SIGSTOP` is taken as done.
fn is_stopped(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "T" || state == "t"),
        Err(_) => true,
    }
}

/// Spawns `binary -c config` with its output going to `log`, on the spawner thread.
fn spawn(binary: &Path, config: &Path, log: File) -> io::Result<Child> {
    let mut command = Command::new(binary);
    command
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the hook only calls prctl, getppid and _exit, which are
        // async-signal-safe, and allocates nothing.
        unsafe {
            let parent = libc::getpid();
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before the line above took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    on_spawner_thread(command)
}

type SpawnJob = (Command, mpsc::SyncSender<io::Result<Child>>);

/// Spawns `command` from a thread that lives as long as the process, so that the parent
/// death signal fires only when the process ends.
fn on_spawner_thread(command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, queue) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("reflow-nats-spawner".into())
            .spawn(move || {
                for (mut command, reply) in queue {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("the nats-server spawner thread starts");
        jobs
    });
    let (reply, answer) = mpsc::sync_channel(1);
    spawner
        .send((command, reply))
        .map_err(|_| io::Error::other("the nats-server spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the nats-server spawner thread is gone"))?
}

fn io_failed(what: &str, err: io::Error) -> Error {
    Error::with_source(ErrorKind::LocalServer, what, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ports_the_server_logged() {
        let log = "[1] 2026/01/01 00:00:00.000000 [INF] Starting http monitor on 127.0.0.1:37919\n\
                   [1] 2026/01/01 00:00:00.000000 [INF] Listening for client connections on 127.0.0.1:40123\n\
                   [1] 2026/01/01 00:00:00.000000 [INF] Server is ready\n";
        assert_eq!(logged_port(log, CLIENT_PORT_LINE), Some(40123));
        assert_eq!(logged_port(log, HTTP_PORT_LINE), Some(37919));
        assert_eq!(logged_port("nothing here", CLIENT_PORT_LINE), None);
    }
}
