//! QEMU: finding (or installing) it, building its command line, and stopping it.
//!
//! Every QEMU process xtask starts has a deadline and is stopped by its own PID: a hung
//! guest must never hang CI, and we never signal processes we did not start.

use crate::host_tools;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const PROGRAM: &str = "qemu-system-aarch64";
/// Debian ships `qemu-system-aarch64` in this package.
pub const DEBIAN_PACKAGE: &str = "qemu-system-arm";
/// QEMU `virt` with GICv2 has a single distributor with 8 CPU interfaces.
pub const GICV2_MAX_CPUS: u32 = 8;

/// Finds QEMU, installing it on a Debian machine when running as root.
pub fn ensure_installed() -> Result<PathBuf> {
    host_tools::ensure_installed(PROGRAM, DEBIAN_PACKAGE)
}

/// How the console is wired up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// `-nographic`: UART and monitor multiplexed on the terminal (Ctrl-A X quits).
    Interactive,
    /// UART only on stdio, no monitor: for piping output into a test runner.
    Captured,
}

/// One QEMU `virt` machine run at EL2.
#[derive(Debug, Clone)]
pub struct Machine {
    pub gic: u32,
    pub smp: u32,
    pub mem: String,
    pub kernel: PathBuf,
    pub dtb: Option<PathBuf>,
    pub append: Option<String>,
    pub gdb: bool,
    pub extra: Vec<String>,
}

impl Machine {
    pub fn new(kernel: PathBuf) -> Self {
        Self {
            gic: 3,
            smp: 4,
            mem: "1G".to_owned(),
            kernel,
            dtb: None,
            append: None,
            gdb: false,
            extra: Vec::new(),
        }
    }

    /// Rejects what QEMU would refuse with a less helpful message.
    pub fn validate(&self) -> Result<()> {
        self.check_topology()?;
        self.check_files()
    }

    /// GIC version and CPU count, which need no files to check.
    pub fn check_topology(&self) -> Result<()> {
        if self.gic != 2 && self.gic != 3 {
            bail!("--gic must be 2 or 3, not {}", self.gic);
        }
        if self.smp == 0 {
            bail!("--smp must be at least 1");
        }
        if self.gic == 2 && self.smp > GICV2_MAX_CPUS {
            bail!(
                "GICv2 supports at most {GICV2_MAX_CPUS} CPUs on QEMU virt (asked for {}); \
                 use --gic 3 for more",
                self.smp
            );
        }
        Ok(())
    }

    /// The image and the DTB exist.
    pub fn check_files(&self) -> Result<()> {
        for (what, path) in [("image", Some(&self.kernel)), ("dtb", self.dtb.as_ref())] {
            if let Some(p) = path.filter(|p| !p.is_file()) {
                bail!("{what} {} does not exist", p.display());
            }
        }
        Ok(())
    }

    pub fn command(&self, qemu: &Path, console: Console) -> Command {
        let mut cmd = Command::new(qemu);
        cmd.args(["-machine", &machine_arg(self.gic, None)])
            .args(["-cpu", "cortex-a72"])
            .args(["-smp", &self.smp.to_string()])
            .args(["-m", &self.mem])
            .arg("-nographic");
        if console == Console::Captured {
            cmd.args(["-monitor", "none", "-serial", "stdio"]);
        }
        cmd.arg("-kernel").arg(&self.kernel);
        if let Some(dtb) = &self.dtb {
            cmd.arg("-dtb").arg(dtb);
        }
        if let Some(append) = &self.append {
            cmd.args(["-append", append]);
        }
        if self.gdb {
            cmd.args(["-s", "-S"]);
        }
        cmd.args(&self.extra);
        cmd
    }
}

/// The `-machine` value: `virt` with EL2 enabled, and optionally dumping its DTB.
pub fn machine_arg(gic: u32, dumpdtb: Option<&Path>) -> String {
    let mut s = format!("virt,virtualization=on,gic-version={gic}");
    if let Some(file) = dumpdtb {
        s.push_str(&format!(",dumpdtb={}", file.display()));
    }
    s
}

/// Waits for `child` until `timeout` (None: forever). On expiry stops it and returns None.
pub fn wait_with_deadline(child: &mut Child, timeout: Option<Duration>) -> Result<Option<ExitStatus>> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            stop(child)?;
            return Ok(None);
        }
        sleep(Duration::from_millis(50));
    }
}

/// Stops `child` by its PID: SIGTERM first so QEMU restores the terminal it put in raw
/// mode, then SIGKILL if it is still there after a second. Always reaps it.
pub fn stop(child: &mut Child) -> Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        sleep(Duration::from_millis(20));
    }
    // The child may exit between the check and the kill; that is fine.
    let _ = child.kill();
    child.wait().context("waiting for QEMU to exit")?;
    Ok(())
}
