//! Interim stub (replaced by the harness branch).
#![allow(missing_docs)]
use crate::error::{Error, ErrorKind, Result};
use std::process::Stdio;
pub struct NatsServer {
    child: tokio::process::Child,
    port: u16,
    options: ServerOptions,
    dir: tempfile::TempDir,
}
#[derive(Default, Clone, Debug)]
pub struct ServerOptions {
    pub token: Option<String>,
}
impl NatsServer {
    pub async fn start() -> Result<Self> {
        Self::start_with(ServerOptions::default()).await
    }
    pub async fn start_with(o: ServerOptions) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Self::spawn(port, dir.path(), &o).await?;
        Ok(NatsServer {
            child,
            port,
            options: o,
            dir,
        })
    }
    async fn spawn(
        port: u16,
        dir: &std::path::Path,
        o: &ServerOptions,
    ) -> Result<tokio::process::Child> {
        let bin = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/nats-server/2.15.1/bin/nats-server"
        );
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-js",
            "-sd",
            dir.to_str().unwrap(),
        ]);
        if let Some(t) = &o.token {
            cmd.args(["--auth", t]);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                return Ok(child);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let _ = child.start_kill();
        Err(Error::new(ErrorKind::LocalServer, "no start"))
    }
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn kill(&mut self) -> Result<()> {
        self.child.start_kill()?;
        Ok(())
    }
    fn signal(&self, signal: libc::c_int) -> Result<()> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| Error::new(ErrorKind::LocalServer, "the server has exited"))?;
        // SAFETY: kill(2) with a pid this process spawned and a valid signal number.
        if unsafe { libc::kill(pid as libc::pid_t, signal) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }
    /// Freezes the server (SIGSTOP): connections stay open but nothing is answered.
    pub fn pause(&self) -> Result<()> {
        self.signal(libc::SIGSTOP)
    }
    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        self.signal(libc::SIGCONT)
    }
    /// Kills the server and starts it again on the same port with the same store.
    pub async fn restart(&mut self) -> Result<()> {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.child = Self::spawn(self.port, self.dir.path(), &self.options).await?;
        Ok(())
    }
}
