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
/// The escape key of QEMU's stdio multiplexer (`-echr`), on every QEMU xtask starts:
/// Ctrl-] (0x1d, as telnet and `virsh console` use), not QEMU's default Ctrl-A, which is
/// Tessera's console focus key (Ctrl-A three times, as Xen) and would otherwise be eaten.
pub const ESCAPE_KEY: u8 = 0x1d;
/// How [`ESCAPE_KEY`] is written for people.
pub const ESCAPE_NAME: &str = "Ctrl-]";
/// What `cargo xtask run` says before it starts QEMU.
pub const CONSOLE_HELP: &str = "console: Ctrl-A three times moves the keyboard to the next VM; \
Ctrl-] x quits QEMU (Ctrl-] h lists QEMU's keys, Ctrl-] c its monitor)";
/// QEMU `virt` with GICv2 has a single distributor with 8 CPU interfaces.
pub const GICV2_MAX_CPUS: u32 = 8;

/// Finds QEMU, installing it on a Debian machine when running as root.
pub fn ensure_installed() -> Result<PathBuf> {
    host_tools::ensure_installed(PROGRAM, DEBIAN_PACKAGE)
}

/// Where Debian 12 gets QEMU 10: `bookworm-backports`, as a deb822 sources file.
const BACKPORTS_FILE: &str = "/etc/apt/sources.list.d/bookworm-backports.sources";
const BACKPORTS_SOURCES: &str = "Types: deb\n\
URIs: http://deb.debian.org/debian\n\
Suites: bookworm-backports\n\
Components: main\n\
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";

/// Finds a QEMU at least `min` ("major.minor"; a board model needs it). On Debian 12 as
/// root a missing or older one is replaced by bookworm-backports' (after adding that
/// suite to apt's sources); anyone else is told the command.
pub fn ensure_version(min: Option<&str>) -> Result<PathBuf> {
    let Some(min) = min else {
        return ensure_installed();
    };
    let want = parse_version(min).with_context(|| format!("qemu_min {min:?} is not major.minor"))?;
    let found = host_tools::find(PROGRAM);
    let have = found.as_deref().and_then(version_of);
    if let (Some(p), Some(v)) = (&found, have) {
        if v >= want {
            return Ok(p.clone());
        }
    }
    let what = match have {
        Some((a, b)) => format!("QEMU {a}.{b} is older than the {min} this board needs"),
        None => format!("`{PROGRAM}` {min} or newer is needed"),
    };
    let bookworm = std::fs::read_to_string("/etc/debian_version").is_ok_and(|v| v.starts_with("12"));
    if !bookworm {
        bail!("{what}; {}", host_tools::qemu_fix(min));
    }
    if !host_tools::is_root() {
        bail!(
            "{what}; on Debian 12 add bookworm-backports to apt ({BACKPORTS_FILE}) and run: \
             sudo apt-get update && sudo apt-get install -t bookworm-backports {DEBIAN_PACKAGE}"
        );
    }
    eprintln!("xtask: {what}; installing {DEBIAN_PACKAGE} from bookworm-backports");
    if !Path::new(BACKPORTS_FILE).exists() {
        std::fs::write(BACKPORTS_FILE, BACKPORTS_SOURCES)
            .with_context(|| format!("cannot write {BACKPORTS_FILE}"))?;
    }
    host_tools::run_checked(Command::new("apt-get").arg("update"))?;
    host_tools::run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "-t", "bookworm-backports", DEBIAN_PACKAGE])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let p = host_tools::find(PROGRAM).context("QEMU not on PATH after installing it")?;
    match version_of(&p) {
        Some(v) if v >= want => Ok(p),
        _ => bail!("QEMU is still older than {min} after installing bookworm-backports' {DEBIAN_PACKAGE}"),
    }
}

/// A QEMU version, (major, minor).
type Version = (u32, u32);

/// The version of the QEMU at `qemu`, if it says.
pub fn installed_version(qemu: &Path) -> Option<(u32, u32)> {
    version_of(qemu)
}

/// `qemu-system-aarch64 --version` as (major, minor), remembered per program.
fn version_of(qemu: &Path) -> Option<Version> {
    static SEEN: std::sync::Mutex<Vec<(PathBuf, Option<Version>)>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, v)) = seen.iter().find(|(p, _)| p == qemu) {
        return *v;
    }
    let v = Command::new(qemu)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| version_line(&String::from_utf8_lossy(&o.stdout)));
    seen.push((qemu.to_owned(), v));
    v
}

/// The version in `QEMU emulator version 10.0.2 (Debian ...)`.
pub fn version_line(out: &str) -> Option<(u32, u32)> {
    let rest = out.lines().next()?.split("version").nth(1)?;
    parse_version(rest.split_whitespace().next()?)
}

/// `"10.0"` or `"10.0.2"` as (10, 0).
pub fn parse_version(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

/// How the console is wired up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// `-nographic`: UART and monitor multiplexed on the terminal (Ctrl-] x quits): what
    /// `cargo xtask run` starts, and scenarios that type through that multiplexer.
    Interactive,
    /// UART only on stdio, no monitor: for piping output into a test runner.
    Captured,
}

/// What one `-serial` port of the machine is wired to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Serial {
    /// The hypervisor's console: the terminal (`run`) or the piped stdio (`test`).
    Console,
    /// Not connected.
    Null,
    /// Written to `<serial_dir>/<name>.log` (a UART a VM owns, say).
    Log(String),
}

impl Serial {
    /// `"console"`, `"null"`, or any other name for a logged port.
    pub fn parse(s: &str) -> Self {
        match s {
            "console" => Self::Console,
            "null" => Self::Null,
            name => Self::Log(name.to_owned()),
        }
    }
}

/// One QEMU machine run at EL2: `virt` by default, or a board model.
#[derive(Debug, Clone)]
pub struct Machine {
    /// The `-machine` value without `gic-version` (e.g. `virt,virtualization=on`).
    pub model: String,
    /// Whether the model takes `gic-version=` (`virt`); other models have a fixed GIC.
    pub gic_selectable: bool,
    /// `-cpu`, when the model lets one choose.
    pub cpu: Option<String>,
    /// Whether `-smp` is passed (models with a fixed CPU count may refuse it).
    pub smp_arg: bool,
    /// The `-serial` ports in order.
    pub serials: Vec<Serial>,
    /// Where [`Serial::Log`] ports write; default the current directory.
    pub serial_dir: Option<PathBuf>,
    pub gic: u32,
    pub smp: u32,
    pub mem: String,
    pub kernel: PathBuf,
    /// Firmware to start instead (`-bios`): it finds the image itself (U-Boot on a
    /// boot disk in `extra`), so `kernel` and `append` are not passed.
    pub bios: Option<PathBuf>,
    pub dtb: Option<PathBuf>,
    pub append: Option<String>,
    pub gdb: bool,
    pub extra: Vec<String>,
}

impl Machine {
    pub fn new(kernel: PathBuf) -> Self {
        Self {
            model: VIRT_MODEL.to_owned(),
            gic_selectable: true,
            cpu: Some(VIRT_CPU.to_owned()),
            smp_arg: true,
            serials: vec![Serial::Console],
            serial_dir: None,
            gic: 3,
            smp: 4,
            mem: "1G".to_owned(),
            kernel,
            bios: None,
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
        if self.gic_selectable && self.gic != 2 && self.gic != 3 {
            bail!("--gic must be 2 or 3, not {}", self.gic);
        }
        if self.smp == 0 {
            bail!("--smp must be at least 1");
        }
        if self.gic_selectable && self.gic == 2 && self.smp > GICV2_MAX_CPUS {
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
        let image = if self.bios.is_some() {
            None
        } else {
            Some(&self.kernel)
        };
        for (what, path) in [
            ("image", image),
            ("firmware", self.bios.as_ref()),
            ("dtb", self.dtb.as_ref()),
        ] {
            if let Some(p) = path.filter(|p| !p.is_file()) {
                bail!("{what} {} does not exist", p.display());
            }
        }
        Ok(())
    }

    pub fn command(&self, qemu: &Path, console: Console) -> Command {
        let mut cmd = Command::new(qemu);
        cmd.args(["-machine", &self.machine_arg(None)]);
        if let Some(cpu) = &self.cpu {
            cmd.args(["-cpu", cpu]);
        }
        if self.smp_arg {
            cmd.args(["-smp", &self.smp.to_string()]);
        }
        cmd.args(["-m", &self.mem]).arg("-nographic");
        cmd.args(["-echr", &ESCAPE_KEY.to_string()]);
        if console == Console::Captured {
            cmd.args(["-monitor", "none"]);
        }
        let dir = self.serial_dir.clone().unwrap_or_default();
        for serial in &self.serials {
            let to = match serial {
                Serial::Console if console == Console::Captured => "stdio".to_owned(),
                // The monitor shares the terminal: Ctrl-] x quits, Ctrl-] Ctrl-] types Ctrl-].
                Serial::Console => "mon:stdio".to_owned(),
                Serial::Null => "null".to_owned(),
                Serial::Log(name) => format!("file:{}", serial_log(&dir, name).display()),
            };
            cmd.args(["-serial", &to]);
        }
        match &self.bios {
            Some(bios) => {
                cmd.arg("-bios").arg(bios);
            }
            None => {
                cmd.arg("-kernel").arg(&self.kernel);
            }
        }
        if let Some(dtb) = &self.dtb {
            cmd.arg("-dtb").arg(dtb);
        }
        if let Some(append) = self.append.as_ref().filter(|_| self.bios.is_none()) {
            cmd.args(["-append", append]);
        }
        if self.gdb {
            cmd.args(["-s", "-S"]);
        }
        cmd.args(&self.extra);
        cmd
    }

    /// The `-machine` value, optionally dumping the DTB the guest would get.
    pub fn machine_arg(&self, dumpdtb: Option<&Path>) -> String {
        let mut s = self.model.clone();
        if self.gic_selectable {
            s.push_str(&format!(",gic-version={}", self.gic));
        }
        if let Some(file) = dumpdtb {
            s.push_str(&format!(",dumpdtb={}", file.display()));
        }
        s
    }

    /// The log files of the [`Serial::Log`] ports: (name, file).
    pub fn serial_logs(&self) -> Vec<(String, PathBuf)> {
        let dir = self.serial_dir.clone().unwrap_or_default();
        self.serials
            .iter()
            .filter_map(|s| match s {
                Serial::Log(name) => Some((name.clone(), serial_log(&dir, name))),
                _ => None,
            })
            .collect()
    }
}

/// QEMU `virt` with EL2, as every `virt` run uses it.
pub const VIRT_MODEL: &str = "virt,virtualization=on";
pub const VIRT_CPU: &str = "cortex-a72";

fn serial_log(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

/// The `-machine` value for `virt` with EL2 enabled, and optionally dumping its DTB.
pub fn machine_arg(gic: u32, dumpdtb: Option<&Path>) -> String {
    Machine {
        gic,
        ..Machine::new(PathBuf::new())
    }
    .machine_arg(dumpdtb)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_qemu_and_board_toml() {
        let out = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright";
        assert_eq!(version_line(out), Some((10, 0)));
        assert_eq!(
            version_line("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)"),
            Some((7, 2))
        );
        assert_eq!(parse_version("10.0"), Some((10, 0)));
        assert_eq!(parse_version("10"), Some((10, 0)));
        assert_eq!(parse_version("ten"), None);
        assert!((7, 2) < (10, 0) && (10, 1) > (10, 0));
    }

    #[test]
    fn board_serials_become_serial_options() {
        let m = Machine {
            model: "imx8mp-evk".into(),
            gic_selectable: false,
            cpu: None,
            serials: vec![Serial::Log("uart1".into()), Serial::Console],
            serial_dir: Some(PathBuf::from("/logs")),
            ..Machine::new(PathBuf::from("img"))
        };
        let args: Vec<String> = m
            .command(Path::new("qemu"), Console::Captured)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = args.join(" ");
        assert!(line.starts_with("-machine imx8mp-evk -smp 4 -m 1G"), "{line}");
        assert!(
            line.contains("-serial file:/logs/uart1.log -serial stdio"),
            "{line}"
        );
        assert!(!line.contains("-cpu") && !line.contains("gic-version"), "{line}");
        // Both consoles move QEMU's escape key off Ctrl-A (Tessera's focus key).
        for console in [Console::Captured, Console::Interactive] {
            let cmd = m.command(Path::new("qemu"), console);
            let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
            let at = args.iter().position(|a| a == "-echr").expect("-echr");
            assert_eq!(args[at + 1], "29");
            assert_ne!(ESCAPE_KEY, 0x01);
        }
        assert_eq!(
            m.serial_logs(),
            [("uart1".to_owned(), PathBuf::from("/logs/uart1.log"))]
        );
    }
}
