//! What every command shares on the way out: exit codes, one-line errors, tables for
//! people, JSON for scripts, and a spinner for waits.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use crate::{Error, ErrorKind};

/// What the exit code tells a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Something failed while running.
    Runtime = 1,
    /// The command line or a config file is wrong.
    Usage = 2,
    /// The network or actor asked for does not exist (or nobody answers for it).
    NotFound = 3,
    /// No NATS server could be reached.
    BrokerUnreachable = 4,
    /// The NATS server (or a peer) refused the credentials, certificate or token.
    AuthenticationFailed = 5,
}

/// A failure of a command: one line for people, an exit code for scripts.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) exit: Exit,
    pub(crate) message: String,
}

pub(crate) type CliResult<T = ()> = Result<T, CliError>;

impl CliError {
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError {
            exit,
            message: message.into(),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        CliError::new(Exit::Usage, message)
    }

    /// The exit code a library error deserves.
    pub(crate) fn from_lib(err: Error) -> Self {
        let exit = match err.kind() {
            ErrorKind::InvalidConfig | ErrorKind::InvalidName => Exit::Usage,
            ErrorKind::NetworkDisconnected
            | ErrorKind::ActorNotFound
            | ErrorKind::PortNotFound
            | ErrorKind::NetworkNotConnected => Exit::NotFound,
            ErrorKind::Broker => Exit::BrokerUnreachable,
            ErrorKind::AuthenticationFailed => Exit::AuthenticationFailed,
            _ => Exit::Runtime,
        };
        CliError::new(exit, err.to_string())
    }

    /// As [`CliError::from_lib`], for errors of joining the broker, where a timeout also
    /// means that nothing answered.
    pub(crate) fn from_broker(err: Error) -> Self {
        match err.kind() {
            ErrorKind::Timeout | ErrorKind::Broker => {
                CliError::new(Exit::BrokerUnreachable, err.to_string())
            }
            _ => CliError::from_lib(err),
        }
    }

    /// Prints `error: ...` on one line and returns the exit code.
    pub(crate) fn report(&self) -> ExitCode {
        let line = self
            .message
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        eprintln!("error: {line}");
        ExitCode::from(self.exit as u8)
    }
}

/// Whether to print tables (stdout is a terminal and `--json` was not asked for).
pub(crate) fn human(json: bool) -> bool {
    !json && std::io::stdout().is_terminal()
}

/// Prints `value` as one line of JSON.
pub(crate) fn print_json(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// Prints rows under headers, each column as wide as its widest cell.
pub(crate) fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    println!("{}", line(headers.to_vec()));
    for row in rows {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
}

/// A spinner on stderr for waits longer than a moment; silent when stderr is not a
/// terminal. It stops and clears its line when dropped.
pub(crate) struct Spinner {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Spinner {
    pub(crate) fn start(what: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Spinner { task: None };
        }
        let what = what.to_string();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for frame in ["|", "/", "-", "\\"].iter().cycle() {
                eprint!("\r{frame} {what}...");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Spinner { task: Some(task) }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            eprint!("\r\x1b[2K");
        }
    }
}
