//! Runs QEMU scenarios: boots each one with its console piped, watches the lines for what
//! must and must not appear, and stops QEMU as soon as the verdict is known.

use crate::images::Built;
use crate::paths;
use crate::qemu::{self, Console};
use crate::scenarios::{Image, Scenario};
use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long to keep reading after the verdict is known: after the last `must` line, so a
/// forbidden line printed right after it (a panic, say) still fails the scenario; after a
/// forbidden line, so the log shows what came with it.
const GRACE: Duration = Duration::from_millis(300);
/// Console lines shown when a scenario fails.
const TAIL_LINES: usize = 30;

/// The result of one test (a QEMU scenario or the host unit tests).
pub struct Outcome {
    pub name: String,
    pub duration: Duration,
    /// Why it failed; `None` means it passed.
    pub failure: Option<String>,
    /// Output to show under a failure (the console tail).
    pub details: Vec<String>,
    /// Why it did not run (the host's QEMU lacks what it needs); it neither passed nor failed.
    pub skipped: Option<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failure.is_none() && self.skipped.is_none()
    }

    /// The `PASS`/`FAIL` line, followed on failure by the details.
    pub fn report(&self) -> String {
        let secs = self.duration.as_secs_f64();
        if let Some(why) = &self.skipped {
            return format!("SKIP {}: {why}\n", self.name);
        }
        match &self.failure {
            None => format!("PASS {} ({secs:.1} s)\n", self.name),
            Some(why) => {
                let mut s = format!("FAIL {}: {why}\n", self.name);
                for line in &self.details {
                    s.push_str(&format!("    | {line}\n"));
                }
                s
            }
        }
    }

    /// Prints the report in one piece, so parallel runners do not interleave.
    pub fn print(&self) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(self.report().as_bytes());
        let _ = out.flush();
    }
}

/// Runs `scenarios`, `jobs` at a time, printing each outcome as it finishes.
pub fn run_all(scenarios: &[Scenario], jobs: usize, qemu: &Path, built: &Built) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                while let Some(scenario) = scenarios.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let outcome = run(scenario, qemu, built);
                    outcome.print();
                    outcomes.lock().unwrap().push(outcome);
                }
            });
        }
    });
    outcomes.into_inner().unwrap()
}

/// Runs one scenario; setup errors (a missing image, QEMU failing to start) fail it too.
pub fn run(scenario: &Scenario, qemu: &Path, built: &Built) -> Outcome {
    let start = Instant::now();
    if let Some((min, why)) = scenario.needs_qemu {
        if let Some(have) = qemu::installed_version(qemu).filter(|&v| Some(v) < qemu::parse_version(min)) {
            return Outcome {
                name: scenario.name.to_owned(),
                duration: start.elapsed(),
                failure: None,
                details: Vec::new(),
                skipped: Some(format!(
                    "needs QEMU {min} or newer ({why}); this is {}.{}",
                    have.0, have.1
                )),
            };
        }
    }
    let log = paths::test_logs_dir(&built.target_dir).join(format!("{}.log", scenario.name));
    let digests = || -> Vec<Result<u64, String>> {
        let digest = |p: &&str| crate::host_tools::tree_digest(Path::new(p)).map_err(|e| format!("{e:#}"));
        scenario.host_unchanged.iter().map(digest).collect()
    };
    let before = digests();
    let (mut failure, details) = match watch(scenario, qemu, built, &log) {
        Ok(verdict) => verdict.into_failure(&log),
        Err(e) => (Some(format!("{e:#}")), Vec::new()),
    };
    for ((path, b), a) in scenario.host_unchanged.iter().zip(before).zip(digests()) {
        if a != b {
            let why = format!("the host's {path} changed during the scenario");
            failure = Some(failure.map_or(why.clone(), |f| format!("{why}; {f}")));
        }
    }
    Outcome {
        name: scenario.name.to_owned(),
        duration: start.elapsed(),
        failure,
        details,
        skipped: None,
    }
}

/// What was seen on the console.
struct Verdict {
    missing: Vec<&'static str>,
    /// What is left of the ordered list.
    sequence: Vec<&'static str>,
    forbidden_seen: Vec<&'static str>,
    /// Set when QEMU exited on its own or the time ran out before all `must` lines.
    ended: Option<String>,
    tail: VecDeque<String>,
}

impl Verdict {
    fn new(must: &[&'static str], sequence: &[&'static str]) -> Self {
        Self {
            missing: must.to_vec(),
            sequence: sequence.iter().rev().copied().collect(),
            forbidden_seen: Vec::new(),
            ended: None,
            tail: VecDeque::new(),
        }
    }

    fn see(&mut self, line: String, forbidden: &[&'static str]) {
        self.missing.retain(|m| !line.contains(m));
        if self.sequence.last().is_some_and(|s| line.contains(s)) {
            self.sequence.pop();
        }
        for f in forbidden {
            if line.contains(f) && !self.forbidden_seen.contains(f) {
                self.forbidden_seen.push(f);
            }
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    fn into_failure(self, log: &Path) -> (Option<String>, Vec<String>) {
        if self.missing.is_empty() && self.sequence.is_empty() && self.forbidden_seen.is_empty() {
            return (None, Vec::new());
        }
        let mut why = Vec::new();
        if !self.missing.is_empty() {
            why.push(format!("missing {}", quoted(&self.missing)));
        }
        if let Some(next) = self.sequence.last() {
            why.push(format!("sequence stopped before {next:?}"));
        }
        if !self.forbidden_seen.is_empty() {
            why.push(format!("found forbidden {}", quoted(&self.forbidden_seen)));
        }
        why.extend(self.ended);
        why.push(format!("log: {}", paths::display(log)));
        (Some(why.join("; ")), self.tail.into())
    }
}

fn quoted(items: &[&str]) -> String {
    let q: Vec<_> = items.iter().map(|s| format!("{s:?}")).collect();
    q.join(", ")
}

fn image_path(scenario: &Scenario, built: &Built) -> Result<PathBuf> {
    match scenario.image {
        Image::Hypervisor => Ok(built.hypervisor_bin.clone()),
        Image::File(path) => Ok(paths::root().join(path)),
        Image::Make(make) => make(built).context("building the scenario's image"),
    }
}

fn watch(scenario: &Scenario, qemu: &Path, built: &Built, log_path: &Path) -> Result<Verdict> {
    // The scenario's machine settings where it gives them (0 / "": the board's).
    let set = |m: &mut crate::board::MachineSettings| {
        if scenario.gic != 0 && m.gic_selectable {
            m.gic = scenario.gic;
        }
        if scenario.smp != 0 {
            m.smp = scenario.smp;
        }
        if !scenario.mem.is_empty() {
            m.mem = scenario.mem.to_owned();
        }
    };
    let (settings, kernel) = match scenario.config {
        Some(config) => {
            let img = crate::board::build_config_image(&paths::root().join(config), built, Some(&set))?;
            (img.machine, img.path)
        }
        None => {
            let mut m = crate::board::board_machine(scenario.board, &built.target_dir)?;
            set(&mut m);
            (m, image_path(scenario, built)?)
        }
    };
    let qemu = match settings.qemu_min.as_deref() {
        Some(min) => qemu::ensure_version(Some(min))?,
        None => qemu.to_owned(),
    };
    let qemu = qemu.as_path();
    let mut machine = settings.to_machine(kernel);
    if let Some(make) = scenario.firmware {
        let fw = make(built, &machine.kernel).context("building the boot medium")?;
        machine.bios = Some(fw.bios);
        machine.extra.extend(fw.args);
    }
    if let Some(d) = scenario.dtb {
        machine.dtb = Some(paths::root().join(d));
    }
    machine.append = settings.append_for(qemu::installed_version(qemu), scenario.append);
    machine.extra.extend(scenario.extra.iter().map(|s| s.to_string()));
    // A UART a VM owns writes to <test-logs>/<scenario>.<name>.log.
    // The previous run's file goes first: followed before QEMU truncates it, it
    // would hide everything this run writes.
    let serial_dir = paths::test_logs_dir(&built.target_dir).join(format!("{}.serial", scenario.name));
    machine.serial_dir = Some(serial_dir.clone());
    if !machine.serial_logs().is_empty() {
        std::fs::create_dir_all(&serial_dir)?;
        for (_, file) in machine.serial_logs() {
            let _ = std::fs::remove_file(file);
        }
    }
    machine.validate()?;
    let console = if scenario.through_qemu_mux {
        Console::Interactive
    } else {
        Console::Captured
    };
    let mut cmd = machine.command(qemu, console);
    cmd.current_dir(paths::root())
        .stdin(if scenario.input.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    std::fs::create_dir_all(log_path.parent().expect("log path has a directory"))?;
    let mut log = File::create(log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    writeln!(log, "$ {cmd:?}")?;

    let mut child = cmd.spawn().with_context(|| format!("cannot start {cmd:?}"))?;
    let stop_tails = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lines = console_lines(&mut child, &machine.serial_logs(), &stop_tails);
    let mut stdin = child.stdin.take();
    // Typed input: each entry waits for its trigger line, in order.
    let mut inputs = scenario.input.iter().peekable();
    let forbidden = scenario.forbidden();
    let mut v = Verdict::new(scenario.must, scenario.sequence);
    let mut see = |line: String, v: &mut Verdict| -> Result<()> {
        writeln!(log, "{line}")?;
        v.see(line, &forbidden);
        Ok(())
    };

    let deadline = Instant::now() + Duration::from_secs(scenario.timeout_secs);
    let mut grace_end = None;
    let mut exited = false;
    loop {
        let until = grace_end.unwrap_or(deadline).min(deadline);
        let Some(left) = until.checked_duration_since(Instant::now()) else {
            if grace_end.is_none() {
                v.ended = Some(format!("timed out after {} s", scenario.timeout_secs));
            }
            break;
        };
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some((trigger, bytes)) = inputs.peek() {
                    if line.contains(trigger) {
                        if let Some(w) = stdin.as_mut() {
                            // Typed slowly enough for a guest polling its UART.
                            for b in bytes.iter() {
                                let _ = w.write_all(&[*b]);
                                let _ = w.flush();
                                thread::sleep(Duration::from_millis(2));
                            }
                        }
                        inputs.next();
                    }
                }
                see(line, &mut v)?;
                // The verdict is known once everything required (or anything forbidden)
                // has shown up; the grace period only collects what follows.
                let decided = (v.missing.is_empty() && v.sequence.is_empty()) || !v.forbidden_seen.is_empty();
                if decided && grace_end.is_none() {
                    grace_end = Some(Instant::now() + GRACE);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                exited = true;
                break;
            }
        }
    }
    qemu::stop(&mut child)?;
    stop_tails.store(true, Ordering::Release);
    // Lines already printed before QEMU stopped still count; the pipes are closed now.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
        see(line, &mut v)?;
    }
    if exited && (!v.missing.is_empty() || !v.sequence.is_empty()) {
        let status = child.wait()?;
        v.ended = Some(format!("QEMU exited first ({status})"));
    }
    Ok(v)
}

/// QEMU's stdout and stderr, line by line, read on their own threads so the deadline is
/// kept even when QEMU prints nothing; and the lines of each UART log in `serials`, as
/// `<name>| line`, until `stop` is set.
fn console_lines(
    child: &mut Child,
    serials: &[(String, PathBuf)],
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    for (name, file) in serials {
        let (tx, name, file, stop) = (tx.clone(), name.clone(), file.clone(), stop.clone());
        thread::spawn(move || tail_lines(&name, &file, &stop, tx));
    }
    let stdout = child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>);
    let stderr = child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>);
    for pipe in [stdout, stderr].into_iter().flatten() {
        let tx = tx.clone();
        thread::spawn(move || forward_lines(pipe, tx));
    }
    rx
}

/// Follows `file` (a QEMU `-serial file:`) and sends each complete line as `<name>| line`;
/// after `stop`, one last read, then what is left of a partial line.
fn tail_lines(name: &str, file: &Path, stop: &std::sync::atomic::AtomicBool, tx: mpsc::Sender<String>) {
    let mut f = None;
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let last = stop.load(Ordering::Acquire);
        if f.is_none() {
            f = File::open(file).ok();
        }
        if let Some(f) = f.as_mut() {
            while let Ok(n @ 1..) = f.read(&mut buf) {
                pending.extend_from_slice(&buf[..n]);
            }
        }
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line);
            if tx
                .send(format!("{name}| {}", text.trim_end_matches(['\n', '\r'])))
                .is_err()
            {
                return;
            }
        }
        if last {
            if !pending.is_empty() {
                let _ = tx.send(format!("{name}| {}", String::from_utf8_lossy(&pending)));
            }
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends each line of `pipe` (lossily decoded, without its line ending) until EOF.
fn forward_lines(pipe: Box<dyn Read + Send>, tx: mpsc::Sender<String>) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']).to_owned();
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    }
}
