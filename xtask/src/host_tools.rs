//! Finding host programs (QEMU, dtc) and installing them on Debian when we may.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The first `program` on `$PATH`, if any.
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Whether we run as root, from `/proc/self/status` (no libc needed).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Makes sure `program` is on `$PATH`. A fresh Debian CI machine running as root gets the
/// `package` installed; anyone else is told the exact command, since installing software
/// behind a user's back (or prompting for sudo) is not a build tool's call.
pub fn ensure_installed(program: &str, package: &str) -> Result<PathBuf> {
    if let Some(p) = find(program) {
        return Ok(p);
    }
    if !(is_root() && Path::new("/etc/debian_version").exists()) {
        bail!("`{program}` not found on PATH; install it with: sudo apt-get install {package}");
    }
    eprintln!("xtask: `{program}` not found, installing Debian package {package}");
    run_checked(Command::new("apt-get").arg("update"))?;
    run_checked(
        Command::new("apt-get")
            .args(["install", "-y", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    find(program).with_context(|| format!("`{program}` still not on PATH after installing {package}"))
}

/// Runs `cmd` with inherited stdio and fails with the command line if it does not succeed.
pub fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
