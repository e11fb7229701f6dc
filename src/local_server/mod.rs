//! Interim stub (replaced by the harness branch).
#![allow(missing_docs)]
use crate::error::{Error, ErrorKind, Result};
use std::process::Stdio;
pub struct NatsServer {
    child: tokio::process::Child,
    port: u16,
    dir: tempfile::TempDir,
    opts: ServerOptions,
}
#[derive(Default, Clone, Debug)]
pub struct ServerOptions {
    pub token: Option<String>,
    pub jetstream: bool,
    pub port: Option<u16>,
}
/// The nats-server binary to run (interim: the provisioned one under target/).
pub async fn find_nats_server() -> Result<std::path::PathBuf> {
    if let Ok(bin) = std::env::var("NATS_SERVER_BIN") {
        return Ok(bin.into());
    }
    Ok(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/nats-server/2.15.1/bin/nats-server"
    )
    .into())
}
impl NatsServer {
    pub async fn start() -> Result<Self> {
        Self::start_with(ServerOptions::default()).await
    }
    pub async fn start_with(o: ServerOptions) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = match o.port {
            Some(port) => port,
            None => std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port(),
        };
        Self::spawn(o, dir, port).await
    }
    async fn spawn(o: ServerOptions, dir: tempfile::TempDir, port: u16) -> Result<Self> {
        let bin = find_nats_server().await?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-js",
            "-sd",
            dir.path().to_str().unwrap(),
        ]);
        if let Some(t) = &o.token {
            cmd.args(["--auth", t]);
        }
        let child = cmd
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
                return Ok(NatsServer {
                    child,
                    port,
                    dir,
                    opts: o,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(Error::new(ErrorKind::LocalServer, "no start"))
    }
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub async fn stop(&mut self) -> Result<()> {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        Ok(())
    }
    pub fn kill(&mut self) -> Result<()> {
        let _ = self.child.start_kill();
        Ok(())
    }
    pub async fn restart(&mut self) -> Result<()> {
        let _ = self.child.kill().await;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir()?);
        *self = Self::spawn(self.opts.clone(), dir, self.port).await?;
        Ok(())
    }
    pub fn pause(&self) -> Result<()> {
        self.signal(libc::SIGSTOP)
    }
    pub fn resume(&self) -> Result<()> {
        self.signal(libc::SIGCONT)
    }
    fn signal(&self, signal: i32) -> Result<()> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| Error::new(ErrorKind::LocalServer, "server is not running"))?;
        // SAFETY: kill(2) with a pid we spawned and own; no memory is involved.
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }
}
