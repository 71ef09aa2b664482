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

/// What xtask needs to fetch Debian's arm64 packages (apt-get and Debian's archive keyring;
/// see `debian.rs`), checked before anything is built so a gap is named with its fix up
/// front. As root on a host with apt-get, a missing keyring is installed (as QEMU and dtc
/// are); anyone else is told the command.
pub fn ensure_debian_fetch() -> Result<()> {
    if crate::debian::check_prerequisites().is_ok() {
        return Ok(());
    }
    if find("apt-get").is_some() && is_root() && !Path::new(crate::debian::KEYRING).exists() {
        eprintln!("xtask: Debian's archive keyring is missing, installing debian-archive-keyring");
        // Ubuntu has it in universe; its lists may be empty on a fresh machine.
        let installed = run_checked(
            Command::new("apt-get")
                .args(["install", "-y", "debian-archive-keyring"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .or_else(|_| {
            run_checked(Command::new("apt-get").arg("update"))?;
            run_checked(
                Command::new("apt-get")
                    .args(["install", "-y", "debian-archive-keyring"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )
        });
        if let Err(e) = installed {
            eprintln!("xtask: {e:#}");
        }
    }
    crate::debian::check_prerequisites()
}

/// Whether booting `config` (or, without one, the bare `board`) takes anything from
/// Debian: a `debian:` kernel or initrd in the config, or a board DTB from Debian.
pub fn needs_debian(config: Option<&Path>, board: &str) -> bool {
    let parsed = config.and_then(|c| crate::config::parse(c).ok().map(|p| (c, p)));
    let board_dir = match &parsed {
        Some((c, p)) => crate::board::board_dir(c, p).ok(),
        None => Some(crate::board::named_board_dir(board)),
    };
    let text = config
        .and_then(|c| std::fs::read_to_string(c).ok())
        .unwrap_or_default();
    text.contains("\"debian:")
        || board_dir
            .and_then(|d| crate::board::load_board(&d).ok())
            .is_some_and(|b| b.dtb.starts_with("debian:"))
}

/// The command that brings QEMU `min` ("major.minor") or newer on this host, from
/// /etc/os-release: Debian 12 has QEMU 10 in bookworm-backports, Debian 13 in its main
/// suite; Ubuntu 24.04 ships 8.2.
pub fn qemu_fix(min: &str) -> String {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |key: &str| {
        os.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_default()
    };
    qemu_fix_for(&field("ID"), &field("VERSION_CODENAME"), min)
}

/// [`qemu_fix`] for an os-release `ID` and `VERSION_CODENAME`.
pub fn qemu_fix_for(id: &str, codename: &str, min: &str) -> String {
    let package = crate::qemu::DEBIAN_PACKAGE;
    match (id, codename) {
        ("debian", "bookworm") => format!(
            "add bookworm-backports to apt's sources (as .ci/run does) and run \
             `sudo apt-get update && sudo apt-get install -t bookworm-backports {package}`"
        ),
        ("debian", _) => format!("sudo apt-get install {package}"),
        ("ubuntu", _) => format!(
            "`sudo apt-get install {package}`; if your Ubuntu's QEMU is older than {min} \
             (24.04 has 8.2), the scenarios needing {min} are skipped unless you build QEMU \
             {min} yourself"
        ),
        _ => format!("install qemu-system-aarch64 {min} or newer"),
    }
}

/// Runs `cmd` with inherited stdio and fails with the command line if it does not succeed.
pub fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// A digest of the tree at `path`: every entry's path, type, permission bits, and file
/// contents or link target (not times). A scenario compares it before and after to show
/// that xtask left part of the host (`/etc/apt`) as it was. A missing path has a digest too.
pub fn tree_digest(path: &Path) -> Result<u64> {
    use std::hash::Hasher;
    use std::os::unix::fs::PermissionsExt;
    // FNV-1a: stable, and any change to what is fed in changes it with overwhelming odds.
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    let mut todo = vec![path.to_owned()];
    while let Some(p) = todo.pop() {
        let rel = p.strip_prefix(path).unwrap_or(&p).to_string_lossy().into_owned();
        h.write(rel.as_bytes());
        h.write(&[0]);
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                h.write(b"absent");
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        };
        h.write(&meta.permissions().mode().to_le_bytes());
        if meta.file_type().is_symlink() {
            h.write(std::fs::read_link(&p)?.to_string_lossy().as_bytes());
        } else if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&p)
                .with_context(|| format!("reading {}", p.display()))?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()?;
            entries.sort();
            // Popped in order: reversed onto the stack.
            todo.extend(entries.into_iter().rev());
        } else if meta.is_file() {
            h.write(&std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?);
        }
        h.write(&[0xff]);
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_fix_names_the_right_source() {
        assert!(qemu_fix_for("debian", "bookworm", "10.0").contains("-t bookworm-backports qemu-system-arm"));
        assert_eq!(
            qemu_fix_for("debian", "trixie", "10.0"),
            "sudo apt-get install qemu-system-arm"
        );
        assert!(qemu_fix_for("ubuntu", "noble", "10.0").contains("skipped"));
        assert!(qemu_fix_for("fedora", "", "10.0").contains("10.0 or newer"));
    }

    #[test]
    fn tree_digest_sees_every_change_but_times() {
        let dir = std::env::temp_dir().join(format!("xtask-digest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a.d")).unwrap();
        std::fs::write(dir.join("a.d/x"), b"one").unwrap();
        let d0 = tree_digest(&dir).unwrap();
        assert_eq!(tree_digest(&dir).unwrap(), d0);
        // Rewriting the same bytes (a new mtime) is no change.
        std::fs::write(dir.join("a.d/x"), b"one").unwrap();
        assert_eq!(tree_digest(&dir).unwrap(), d0);
        std::fs::write(dir.join("a.d/x"), b"two").unwrap();
        let d1 = tree_digest(&dir).unwrap();
        assert_ne!(d1, d0);
        std::fs::write(dir.join("a.d/y"), b"").unwrap();
        let d2 = tree_digest(&dir).unwrap();
        assert_ne!(d2, d1);
        std::os::unix::fs::symlink("x", dir.join("a.d/z")).unwrap();
        assert_ne!(tree_digest(&dir).unwrap(), d2);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_ne!(tree_digest(&dir).unwrap(), d0, "a missing tree");
    }
}
