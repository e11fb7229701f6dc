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
        CliError::new(exit, flag_words(&err.to_string()))
    }

    /// As [`CliError::from_lib`], for errors of joining the broker, where a timeout also
    /// means that nothing answered.
    pub(crate) fn from_broker(err: Error) -> Self {
        match err.kind() {
            ErrorKind::Timeout | ErrorKind::Broker => {
                CliError::new(Exit::BrokerUnreachable, flag_words(&err.to_string()))
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

/// A library message in the words of the command line: the library names its settings
/// by their field (`discovery_endpoints`, `auth_token`); here they are the flags that set
/// them.
pub(crate) fn flag_words(message: &str) -> String {
    // Phrases that already name the flag beside the field first, so no flag is doubled.
    const PHRASES: &[(&str, &str)] = &[
        ("auth_token (--token)", "--token"),
        ("discovery_endpoints / NATS_URL", "--nats-url / NATS_URL"),
        ("(NatsAuth::token)", "(--nats-token)"),
        ("tls_ca_file, --tls-ca", "--tls-ca"),
        ("tls_cert_file, --tls-cert", "--tls-cert"),
    ];
    const FIELDS: &[(&str, &str)] = &[
        ("discovery_endpoints", "--nats-url"),
        ("auth_token", "--token"),
        ("creds_file", "--creds"),
        ("nkey_seed_file", "--nkey"),
        ("tls_ca_file", "--tls-ca"),
        ("tls_cert_file", "--tls-cert"),
        ("tls_key_file", "--tls-key"),
    ];
    let mut text = message.to_string();
    for (from, to) in PHRASES.iter().chain(FIELDS) {
        text = text.replace(from, to);
    }
    text
}

/// Whether to print tables (stdout is a terminal and `--json` was not asked for).
pub(crate) fn human(json: bool) -> bool {
    !json && std::io::stdout().is_terminal()
}

/// Prints `value` as one line of JSON.
pub(crate) fn print_json(value: &impl serde::Serialize) {
    let line = serde_json::to_string(value)
        .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()));
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Prints rows under headers, each column as wide as its widest cell, within the
/// terminal's width: when the table is wider, the widest columns are cut (their cells
/// end in `…`) until it fits.
pub(crate) fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut out = std::io::stdout().lock();
    for line in layout(headers, rows, terminal_width()) {
        let _ = writeln!(out, "{line}");
    }
}

/// Columns never cut narrower than this (or their header, if shorter).
const MIN_COLUMN: usize = 6;

/// The table's lines, `width` characters at most when a width is given.
fn layout(headers: &[&str], rows: &[Vec<String>], width: Option<usize>) -> Vec<String> {
    let cell = |row: &[String], i: usize| row.get(i).map_or(0, |c| c.chars().count());
    let natural: Vec<usize> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .map(|r| cell(r, i))
                .fold(headers[i].chars().count(), usize::max)
        })
        .collect();
    let floor: Vec<usize> = natural
        .iter()
        .zip(headers)
        .map(|(n, h)| (*n).min(MIN_COLUMN.max(h.chars().count())))
        .collect();
    let gaps = 2 * headers.len().saturating_sub(1);
    let fits = |cap: usize| {
        let total: usize = natural
            .iter()
            .zip(&floor)
            .map(|(n, f)| (*n).min(cap.max(*f)))
            .sum();
        width.is_none_or(|w| total + gaps <= w)
    };
    // The largest cap on column widths that fits; the narrow columns keep their width.
    let widest = natural.iter().copied().max().unwrap_or(0);
    let cap = (0..=widest).rev().find(|c| fits(*c)).unwrap_or(0);
    let widths: Vec<usize> = natural
        .iter()
        .zip(&floor)
        .map(|(n, f)| (*n).min(cap.max(*f)))
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{:<w$}", cut(c, *w)))
            .collect();
        let text = padded.join("  ").trim_end().to_string();
        // Too many columns even at their narrowest: the line itself is cut.
        match width {
            Some(w) if text.chars().count() > w => cut(&text, w),
            _ => text,
        }
    };
    std::iter::once(line(headers.to_vec()))
        .chain(
            rows.iter()
                .map(|r| line(r.iter().map(String::as_str).collect())),
        )
        .collect()
}

/// `text` in at most `width` characters, ending in `…` when cut.
fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let kept: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// The terminal's width in columns: `$COLUMNS`, else what the terminal on stdout says;
/// `None` when neither tells (then tables are not cut).
fn terminal_width() -> Option<usize> {
    if let Some(columns) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return Some(columns);
    }
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize into the struct handed to it.
        let asked =
            unsafe { libc::ioctl(std::io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
        if asked == 0 && size.ws_col > 0 {
            return Some(size.ws_col as usize);
        }
    }
    None
}

/// The spinner's line, while one is drawn on stderr. Whoever prints to the terminal takes
/// this lock and clears the line first, so the spinner never shares a line with a log
/// line or a report; the spinner draws again on its next tick.
static SPINNER_LINE: parking_lot::Mutex<bool> = parking_lot::Mutex::new(false);

/// Clears the spinner's line, if one is drawn; call with [`SPINNER_LINE`] held.
fn clear_spinner(drawn: &mut bool) {
    if std::mem::take(drawn) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(b"\r\x1b[2K");
        let _ = err.flush();
    }
}

/// Prints `line` on stdout, on a line of its own even while a spinner turns.
pub(crate) fn say(line: &str) {
    let mut drawn = SPINNER_LINE.lock();
    clear_spinner(&mut drawn);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Stderr for the log: each log line first clears the spinner's line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut drawn = SPINNER_LINE.lock();
        clear_spinner(&mut drawn);
        std::io::stderr().lock().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

/// A spinner on stderr for waits longer than a moment; silent when stderr is not a
/// terminal. It stops and clears its line when dropped. Lines printed through [`say`]
/// and the log clear it first, so they never land on its line.
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
                {
                    let mut drawn = SPINNER_LINE.lock();
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2K{frame} {what}...");
                    let _ = err.flush();
                    *drawn = true;
                }
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
            clear_spinner(&mut SPINNER_LINE.lock());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wide_table_is_cut_to_the_terminal_width_and_a_narrow_one_is_left_alone() {
        let headers = ["NETWORK", "INSTANCE", "CAPABILITIES", "UP"];
        let rows = vec![vec![
            "prod.ml.training".to_string(),
            "i-0123456789abcdef".to_string(),
            "indexing,search,ranking,embedding,translation".to_string(),
            "3d".to_string(),
        ]];
        let wide = layout(&headers, &rows, None);
        assert!(wide[1].contains("indexing,search,ranking,embedding,translation"));
        assert_eq!(layout(&headers, &rows, Some(200)), wide);
        for width in [60, 40] {
            let cut = layout(&headers, &rows, Some(width));
            for line in &cut {
                assert!(line.chars().count() <= width, "{width}: {line:?}");
            }
            assert!(cut[1].contains('…'), "{cut:?}");
            assert!(
                cut[1].ends_with("3d"),
                "the narrow column stays whole: {cut:?}"
            );
        }
        let tiny = layout(&headers, &rows, Some(12));
        assert!(tiny.iter().all(|l| l.chars().count() <= 12), "{tiny:?}");
    }

    #[test]
    fn library_field_names_become_the_flags_that_set_them() {
        assert_eq!(
            flag_words("discovery_endpoints: \"http://x\" uses scheme \"http\""),
            "--nats-url: \"http://x\" uses scheme \"http\""
        );
        assert_eq!(
            flag_words(
                "the NATS server at u wants credentials; set auth_token (--token), a creds file (--creds)"
            ),
            "the NATS server at u wants credentials; set --token, a creds file (--creds)"
        );
        assert_eq!(
            flag_words("cannot reach; or set discovery_endpoints / NATS_URL"),
            "cannot reach; or set --nats-url / NATS_URL"
        );
        assert_eq!(
            flag_words("signed by the CA given (tls_ca_file, --tls-ca)"),
            "signed by the CA given (--tls-ca)"
        );
    }

    #[test]
    fn the_readme_exit_code_table_has_every_exit_code() {
        let readme = include_str!("../../README.md");
        for (code, words) in [
            (Exit::Runtime, "failed while running"),
            (Exit::Usage, "bad command line or config file"),
            (Exit::NotFound, "does not exist"),
            (Exit::BrokerUnreachable, "no NATS server reachable"),
            (Exit::AuthenticationFailed, "refused the credentials"),
        ] {
            let row = format!("| {} | ", code as u8);
            let line = readme.lines().find(|l| l.starts_with(&row));
            assert!(
                line.is_some_and(|l| l.contains(words)),
                "README has no exit-code row {row}...{words}"
            );
        }
    }
}
