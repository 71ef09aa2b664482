//! `cargo xtask soak [--minutes N] [--gic 2|3]`: a long run of the Linux pair
//! next to hostile neighbours (not part of `test`). `tests/configs/soak.toml`
//! boots linux0, linux1, `soak_flood` (a console flood from inside an
//! interrupt storm) and `storm` (an SGI flood, then a level-interrupt storm).
//! Each cycle writes linux0's disk and reboots it with `reboot -f` (typed on
//! its console), then checks on the bystander linux1 that its disk's
//! checksum is the one it wrote at the start and that its console still
//! answers, that both neighbours still run, and that the hypervisor's free
//! frames after the reset (printed on every VM reset) are the same as after
//! the first one. Stops at the first failed check or after N minutes and
//! prints the cycles survived.

use crate::images;
use crate::paths;
use crate::qemu::{self, Console, Machine};
use anyhow::{bail, Context, Result};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub const CONFIG: &str = "tests/configs/soak.toml";
pub const DEFAULT_MINUTES: u64 = 10;

/// A Linux boot (to its `TESSERA-LINUX-UP` line) on a loaded machine.
const BOOT: Duration = Duration::from_secs(300);
/// A shell command's answer.
const ANSWER: Duration = Duration::from_secs(60);
/// Heap in use after a reset may differ from the first reading by what
/// other CPUs hold at that moment (a register write's short-lived vectors).
const HEAP_SLACK: u64 = 64 << 10;
/// Lines that end the soak at once.
const FORBIDDEN: &[&str] = &[
    "panicked at",
    "EL2 exception",
    "Kernel panic",
    "VM linux1 stopped",
    "VM linux1 restarting",
    "VM linux0 stopped",
    "VM soak_flood stopped",
    "VM storm stopped",
];
/// Forbidden too once both Linux VMs are up: the bystander booting again.
const BYSTANDER_BOOT: &str = "TESSERA-LINUX-UP linux1";
const TAIL_LINES: usize = 40;

pub struct Options {
    pub minutes: u64,
    pub gic: u32,
}

/// One reset's report: `VM linux0 reset: <frames> free frames, heap <bytes> bytes in use`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetReport {
    pub free_frames: u64,
    pub heap_in_use: u64,
}

/// Parses the hypervisor's reset line for `vm`.
pub fn parse_reset_line(line: &str, vm: &str) -> Option<ResetReport> {
    let rest = line.split(&format!("VM {vm} reset: ")).nth(1)?;
    let mut words = rest.split_whitespace();
    let free_frames = words.next()?.parse().ok()?;
    let heap_in_use = words.nth(3)?.parse().ok()?;
    Some(ResetReport {
        free_frames,
        heap_in_use,
    })
}

/// The value after `prefix` on a console line of `vm` (`[vm] prefix value`).
pub fn answer<'a>(line: &'a str, vm: &str, prefix: &str) -> Option<&'a str> {
    line.strip_prefix(&format!("[{vm}] {prefix}")).map(str::trim)
}

/// The machine's console: lines in, typed bytes out, everything logged.
struct Session {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    log: File,
    tail: VecDeque<String>,
    /// The VM the console multiplexer gives typed input to.
    focus: Option<String>,
    /// Lines seen since the last [`Session::take_counts`]: (flood, storm).
    flood_lines: u64,
    storm_lines: u64,
    failure: Option<String>,
    forbidden: Vec<&'static str>,
}

/// A SHA-256 in hex, as `sha256sum` prints it.
fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Session {
    /// The next line, within `until`; `Ok(None)` when the time is up.
    fn next_line(&mut self, until: Instant) -> Result<Option<String>> {
        let Some(left) = until.checked_duration_since(Instant::now()) else {
            return Ok(None);
        };
        let line = match self.lines.recv_timeout(left) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Timeout) => return Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("QEMU exited"),
        };
        writeln!(self.log, "{line}")?;
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.clone());
        if let Some(vm) = line
            .split("console input goes to VM ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
        {
            self.focus = Some(vm.to_owned());
        }
        if line.starts_with("[soak_flood] soak_flood: line") {
            self.flood_lines += 1;
        }
        if line.starts_with("[storm] storm: still alive") {
            self.storm_lines += 1;
        }
        if let Some(f) = self.forbidden.iter().find(|f| line.contains(*f)) {
            bail!("forbidden {f:?}: {line}");
        }
        Ok(Some(line))
    }

    /// Reads until `pick` returns something, for at most `timeout`.
    fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> Result<T> {
        let until = Instant::now() + timeout;
        while let Some(line) = self.next_line(until)? {
            if let Some(v) = pick(&line) {
                return Ok(v);
            }
        }
        bail!("no {what} within {} s", timeout.as_secs())
    }

    fn type_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        // Slowly enough for a guest polling its UART, as the test runner types.
        for b in bytes {
            self.stdin.write_all(&[*b])?;
            self.stdin.flush()?;
            thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Moves the console focus to `vm` with Ctrl-A three times, as often as needed.
    fn focus_on(&mut self, vm: &str) -> Result<()> {
        for _ in 0..8 {
            if self.focus.as_deref() == Some(vm) {
                return Ok(());
            }
            self.type_bytes(b"\x01\x01\x01")?;
            self.wait_for("focus change", ANSWER, |l| {
                l.contains("console input goes to VM").then_some(())
            })?;
        }
        bail!("the console focus never reached {vm}")
    }

    /// Types `command` on `vm`'s console.
    fn run(&mut self, vm: &str, command: &str) -> Result<()> {
        self.focus_on(vm)?;
        self.type_bytes(command.as_bytes())?;
        self.type_bytes(b"\r")
    }

    fn take_counts(&mut self) -> (u64, u64) {
        let c = (self.flood_lines, self.storm_lines);
        self.flood_lines = 0;
        self.storm_lines = 0;
        c
    }
}

/// Console lines of `child`, read on their own threads.
fn console_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as _),
        child.stderr.take().map(|p| Box::new(p) as _),
    ];
    for pipe in pipes.into_iter().flatten() {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_owned();
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    rx
}

/// What the soak measured.
#[derive(Default)]
struct Tally {
    cycles: u64,
    first: Option<ResetReport>,
    heap_min: u64,
    heap_max: u64,
    flood_lines: u64,
    storm_lines: u64,
    slowest_cycle: Duration,
}

pub fn soak(opts: &Options) -> Result<bool> {
    if opts.minutes == 0 {
        bail!("--minutes must be at least 1");
    }
    let qemu_bin = qemu::ensure_installed()?;
    let built = images::build(false)?;
    let gic = opts.gic;
    let set = |m: &mut crate::board::MachineSettings| {
        m.gic = gic;
        m.smp = 4;
        m.mem = "1G".to_owned();
    };
    let img = crate::board::build_config_image(&paths::root().join(CONFIG), &built, Some(&set))?;
    let machine = Machine {
        gic,
        smp: 4,
        mem: "1G".to_owned(),
        extra: img.machine.extra.clone(),
        ..Machine::new(img.path.clone())
    };
    machine.validate()?;
    let mut cmd = machine.command(&qemu_bin, Console::Captured);
    cmd.current_dir(paths::root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let log_path: PathBuf = paths::test_logs_dir(&built.target_dir).join(format!("soak-gicv{gic}.log"));
    std::fs::create_dir_all(paths::test_logs_dir(&built.target_dir))?;
    let mut log = File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    writeln!(log, "$ {cmd:?}")?;
    let mut child = cmd.spawn().with_context(|| format!("cannot start {cmd:?}"))?;
    let lines = console_lines(&mut child);
    let stdin = child.stdin.take().context("QEMU's stdin")?;
    let mut s = Session {
        child,
        stdin,
        lines,
        log,
        tail: VecDeque::new(),
        focus: None,
        flood_lines: 0,
        storm_lines: 0,
        failure: None,
        forbidden: FORBIDDEN.to_vec(),
    };
    println!(
        "soak: {} minute(s) on GICv{gic}; console log {}",
        opts.minutes,
        paths::display(&log_path)
    );
    let start = Instant::now();
    let deadline = start + Duration::from_secs(opts.minutes * 60);
    let mut t = Tally {
        heap_min: u64::MAX,
        ..Tally::default()
    };
    if let Err(e) = cycles(&mut s, deadline, &mut t) {
        s.failure = Some(format!("{e:#}"));
    }
    qemu::stop(&mut s.child)?;

    let minutes = start.elapsed().as_secs_f64() / 60.0;
    println!(
        "soak: {} cycle(s) of linux0 reboot in {minutes:.1} min; slowest cycle {:.0} s",
        t.cycles,
        t.slowest_cycle.as_secs_f64()
    );
    if let Some(f) = t.first {
        println!(
            "soak: free frames after each reset {}; heap in use {}..{} bytes",
            f.free_frames, t.heap_min, t.heap_max
        );
    }
    println!(
        "soak: neighbours printed {} flood line(s) and {} storm line(s)",
        t.flood_lines, t.storm_lines
    );
    match &s.failure {
        None => {
            println!("PASS soak ({} cycles)", t.cycles);
            Ok(true)
        }
        Some(why) => {
            println!("FAIL soak after {} cycle(s): {why}", t.cycles);
            for line in &s.tail {
                println!("    | {line}");
            }
            Ok(false)
        }
    }
}

/// Setup, then reboot cycles until `deadline` or the first failed check.
fn cycles(s: &mut Session, deadline: Instant, t: &mut Tally) -> Result<()> {
    let up =
        |vm: &'static str| move |l: &str| l.contains(&format!("[{vm}] TESSERA-LINUX-UP {vm}")).then_some(());
    let mut seen = (false, false);
    s.wait_for("Linux boot of both VMs", BOOT, |l| {
        seen.0 |= up("linux0")(l).is_some();
        seen.1 |= up("linux1")(l).is_some();
        (seen.0 && seen.1).then_some(())
    })?;
    s.forbidden.push(BYSTANDER_BOOT);
    // The bystander fills the start of its disk and remembers the checksum.
    s.run(
        "linux1",
        "dd if=/dev/urandom of=/dev/vda bs=1M count=4 conv=fsync 2>/dev/null; sync; \
         echo 3 > /proc/sys/vm/drop_caches; \
         echo SOAK-SUM-0 $(dd if=/dev/vda bs=1M count=4 2>/dev/null | sha256sum | cut -c1-64)",
    )?;
    let want = s.wait_for("the bystander's checksum", ANSWER, |l| {
        answer(l, "linux1", "SOAK-SUM-0 ")
            .filter(|h| is_sha256(h))
            .map(str::to_owned)
    })?;
    println!("soak: linux1's disk sha256 {want}");
    s.take_counts();

    while Instant::now() < deadline {
        let n = t.cycles + 1;
        let began = Instant::now();
        // The rebooting VM: its own disk busy up to the reboot.
        s.run(
            "linux0",
            &format!(
                "dd if=/dev/urandom of=/dev/vda bs=1M count=2 conv=fsync 2>/dev/null; echo SOAK-REBOOT-{n}; reboot -f"
            ),
        )?;
        let report = s.wait_for("linux0's reset", BOOT, |l| parse_reset_line(l, "linux0"))?;
        s.wait_for("linux0's boot", BOOT, up("linux0"))?;
        match t.first {
            None => t.first = Some(report),
            Some(f) if f.free_frames != report.free_frames => bail!(
                "cycle {n}: {} free frames after the reset, {} after the first",
                report.free_frames,
                f.free_frames
            ),
            Some(f) if report.heap_in_use > f.heap_in_use + HEAP_SLACK => bail!(
                "cycle {n}: heap in use grew from {} to {} bytes",
                f.heap_in_use,
                report.heap_in_use
            ),
            Some(_) => {}
        }
        t.heap_min = t.heap_min.min(report.heap_in_use);
        t.heap_max = t.heap_max.max(report.heap_in_use);

        // The bystander: same disk, console answering.
        s.run(
            "linux1",
            &format!(
                "echo 3 > /proc/sys/vm/drop_caches; \
                 echo SOAK-SUM-{n} $(dd if=/dev/vda bs=1M count=4 2>/dev/null | sha256sum | cut -c1-64); \
                 echo SOAK-ECHO-{n}-$(({n} * 7))"
            ),
        )?;
        let prefix = format!("SOAK-SUM-{n} ");
        // Only a hash: a wrapped echo of the typed command may start a
        // line with the same words.
        let got = s.wait_for("the bystander's checksum", ANSWER, |l| {
            answer(l, "linux1", &prefix)
                .filter(|h| is_sha256(h) || h.is_empty())
                .map(str::to_owned)
        })?;
        if got != want {
            bail!("cycle {n}: linux1's disk sha256 is {got}, was {want}");
        }
        let echo = format!("SOAK-ECHO-{n}-{}", n * 7);
        s.wait_for("the bystander's echo", ANSWER, |l| {
            answer(l, "linux1", &echo)
                .is_some_and(str::is_empty)
                .then_some(())
        })?;
        let (flood, storm) = s.take_counts();
        t.flood_lines += flood;
        t.storm_lines += storm;
        if flood == 0 || storm == 0 {
            bail!("cycle {n}: a neighbour went quiet ({flood} flood lines, {storm} storm lines)");
        }
        t.cycles = n;
        t.slowest_cycle = t.slowest_cycle.max(began.elapsed());
        println!(
            "soak: cycle {n} ok in {:.0} s (free frames {}, heap {} bytes, {flood} flood lines)",
            began.elapsed().as_secs_f64(),
            report.free_frames,
            report.heap_in_use
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_lines_parse() {
        let line = "[   12.345678] INFO VM linux0 reset: 123456 free frames, heap 7890 bytes in use";
        assert_eq!(
            parse_reset_line(line, "linux0"),
            Some(ResetReport {
                free_frames: 123456,
                heap_in_use: 7890
            })
        );
        assert_eq!(parse_reset_line(line, "linux1"), None);
        assert_eq!(
            parse_reset_line("VM linux0 reset: many free frames", "linux0"),
            None
        );
    }

    #[test]
    fn answers_are_whole_lines_of_their_vm() {
        assert_eq!(
            answer("[linux1] SOAK-SUM-3 abc", "linux1", "SOAK-SUM-3 "),
            Some("abc")
        );
        // The shell's echo of the typed command is not the answer.
        assert_eq!(
            answer("[linux1] / # echo SOAK-SUM-3 $(dd ...)", "linux1", "SOAK-SUM-3 "),
            None
        );
        assert_eq!(answer("[linux0] SOAK-SUM-3 abc", "linux1", "SOAK-SUM-3 "), None);
    }
}
