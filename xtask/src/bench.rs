//! `cargo xtask bench`: deterministic performance figures.
//!
//! Every QEMU run uses `-icount shift=0,sleep=off`: one guest instruction is one
//! nanosecond of virtual time and idle time is skipped, so the guest's CNTVCT_EL0
//! (62.5 MHz on `virt`) advances one tick per 16 instructions and two runs print the same
//! numbers. The `bench` guest (tests/guests/src/bin/bench.rs) prints one `BENCH` line per
//! row in ticks; this module runs it under Tessera (tests/configs/bench.toml) and bare in
//! QEMU at EL1, twice each, flags any difference between the two runs, and prints the
//! rows in instructions (ticks x 16) with the targets of issue 7. A full run adds the
//! raw image size, the lines of Rust in `src/`, Linux boot (tests/configs/linux_one.toml
//! against the same kernel and initramfs booted directly by QEMU), and what the sub-page
//! filter costs linux0 of the Linux pair (tests/configs/linux_pair.toml), whose virtio-blk
//! transport shares its page with linux1's: its trapped accesses up to its first reboot.

use crate::board::MachineSettings;
use crate::images::Built;
use crate::qemu::{self, Console, Machine};
use crate::{assets, board, images, paths};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Guest instructions per CNTVCT tick under `-icount shift=0` (1 GHz / 62.5 MHz).
pub const INSTRUCTIONS_PER_TICK: f64 = 16.0;
/// The bench VM's config.
pub const CONFIG: &str = "tests/configs/bench.toml";
/// The Linux VM booted for the macro benchmark.
pub const LINUX_CONFIG: &str = "tests/configs/linux_one.toml";
/// Deterministic time, and a PL031 that follows it from a fixed date (Linux reads it).
pub const ICOUNT: &[&str] = &[
    "-icount",
    "shift=0,sleep=off",
    "-rtc",
    "base=2024-01-01T00:00:00,clock=vm",
];
/// The bench guest's last line.
pub const DONE: &str = "BENCH done";
/// Wall-clock limit of one bench guest run (it takes about a second).
const GUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Wall-clock limit of one Linux boot under icount.
const LINUX_TIMEOUT: Duration = Duration::from_secs(240);
/// Raw hypervisor image size target.
pub const IMAGE_TARGET: u64 = 256 * 1024;
/// Linux boot to userspace, Tessera over native.
pub const LINUX_TARGET: f64 = 1.03;

/// What a row is held to (issue 7), in instructions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Tessera's mean at most this many instructions.
    AtMost(f64),
    /// Tessera's mean at most native + this many instructions.
    NativePlus(f64),
    /// Tessera's mean at most native times this.
    NativeTimes(f64),
    /// Shown for reference only.
    None,
}

impl Target {
    /// Whether `tessera` meets the target; `None` when it cannot be decided.
    pub fn met(self, native: Option<f64>, tessera: f64) -> Option<bool> {
        match self {
            Target::AtMost(t) => Some(tessera <= t),
            Target::NativePlus(d) => native.map(|n| tessera <= n + d),
            Target::NativeTimes(r) => native.map(|n| tessera <= n * r),
            Target::None => None,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Target::AtMost(t) => format!("<= {t}"),
            Target::NativePlus(d) => format!("<= native+{d}"),
            Target::NativeTimes(r) => format!("<= {r}x native"),
            Target::None => "-".to_owned(),
        }
    }
}

/// Every row the bench guest prints, in order, with its target.
pub const ROWS: &[(&str, Target)] = &[
    ("overhead", Target::None),
    ("hvc_unknown", Target::AtMost(80.0)),
    ("hvc_psci_version", Target::AtMost(80.0)),
    ("mmio_uart_fr", Target::AtMost(200.0)),
    ("mmio_gicd_typer", Target::AtMost(200.0)),
    ("mmio_virtio_filtered", Target::None),
    ("mmio_pl031_direct", Target::NativePlus(2.0)),
    ("vtimer_to_handler", Target::NativePlus(150.0)),
    ("vtimer_to_eoi", Target::NativePlus(150.0)),
    ("ipi", Target::NativePlus(400.0)),
    ("spi_pl031", Target::NativePlus(200.0)),
    ("cpu_loop", Target::NativeTimes(1.01)),
    ("guest_entry", Target::AtMost(2_000_000.0)),
];

/// The `BENCH <row>` prefixes a run must print (for the test scenario).
pub const ROW_PREFIXES: &[&str] = &[
    "BENCH overhead ",
    "BENCH hvc_unknown ",
    "BENCH hvc_psci_version ",
    "BENCH mmio_uart_fr ",
    "BENCH mmio_gicd_typer ",
    "BENCH mmio_virtio_filtered ",
    "BENCH mmio_pl031_direct ",
    "BENCH vtimer_to_handler ",
    "BENCH vtimer_to_eoi ",
    "BENCH ipi ",
    "BENCH spi_pl031 ",
    "BENCH cpu_loop ",
    "BENCH guest_entry ",
    DONE,
];

pub struct Options {
    /// Only this GIC version (default: 3, then 2).
    pub gic: Option<u32>,
    pub json: Option<PathBuf>,
    /// One run per setup, GICv3 only unless `--gic`, no Linux boot.
    pub quick: bool,
}

/// One row as the guest printed it, in ticks.
#[derive(Clone, Debug, PartialEq)]
pub enum Sample {
    Measured { mean: f64, min: u64, max: u64, n: u64 },
    Unavailable(String),
}

/// Parses the `BENCH` lines of a console (any prefix before `BENCH ` is ignored).
pub fn parse(lines: &[String]) -> BTreeMap<String, Sample> {
    let mut rows = BTreeMap::new();
    for line in lines {
        let Some(at) = line.find("BENCH ") else { continue };
        let rest = &line[at + "BENCH ".len()..];
        let Some((name, fields)) = rest.split_once(' ') else {
            continue;
        };
        if let Some(why) = fields.strip_prefix("unavailable:") {
            rows.insert(name.to_owned(), Sample::Unavailable(why.trim().to_owned()));
            continue;
        }
        let mut kv = BTreeMap::new();
        for f in fields.split_whitespace() {
            if let Some((k, v)) = f.split_once('=') {
                kv.insert(k, v);
            }
        }
        let num = |k: &str| kv.get(k).and_then(|v| v.parse::<f64>().ok());
        if let (Some(mean), Some(min), Some(max), Some(n)) = (num("mean"), num("min"), num("max"), num("n")) {
            rows.insert(
                name.to_owned(),
                Sample::Measured {
                    mean,
                    min: min as u64,
                    max: max as u64,
                    n: n as u64,
                },
            );
        }
    }
    rows
}

/// The `BENCH` lines of a console without their VM prefix: what must repeat exactly.
pub fn bench_lines(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.find("BENCH ").map(|at| l[at..].to_owned()))
        .collect()
}

/// A console captured up to a line containing `until` (or the deadline).
pub(crate) struct Capture {
    pub(crate) lines: Vec<String>,
    /// Whether `until` was seen.
    pub(crate) complete: bool,
}

/// Runs `cmd` with its console piped into `log`, until a line contains `until` or
/// `timeout` passes; QEMU is then stopped by its PID.
/// The hypervisor's RAM as its boot line reports it (`tessera: hypervisor
/// RAM (KiB): total=.. in_use=.. ...`, src/mm/footprint.rs), in KiB per
/// field, plus `own`: the total without the guest images kept for resets.
pub fn footprint(lines: &[String]) -> Option<BTreeMap<String, u64>> {
    let rest = lines
        .iter()
        .find_map(|l| l.split_once(FOOTPRINT_LINE).map(|(_, r)| r))?;
    let mut out: BTreeMap<String, u64> = rest
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect();
    let own = out.get("total")?.checked_sub(*out.get("images").unwrap_or(&0))?;
    out.insert("own".to_owned(), own);
    Some(out)
}

/// How src/mm/footprint.rs starts its line.
pub const FOOTPRINT_LINE: &str = "tessera: hypervisor RAM (KiB):";
/// The hypervisor's own RAM for the Linux demo (issue 15), KiB, without the
/// guest images it keeps for resets.
pub const FOOTPRINT_TARGET_KIB: u64 = 2048;

pub(crate) fn capture(mut cmd: Command, log: &Path, until: &str, timeout: Duration) -> Result<Capture> {
    cmd.current_dir(paths::root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    fs::create_dir_all(log.parent().expect("log has a directory"))?;
    let mut file = fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    writeln!(file, "$ {cmd:?}")?;
    let mut child = cmd.spawn().with_context(|| format!("cannot start {cmd:?}"))?;
    let (tx, rx) = mpsc::channel::<String>();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut r = BufReader::new(pipe);
            let mut buf = Vec::new();
            while matches!(r.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned();
                buf.clear();
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    let mut complete = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                writeln!(file, "{line}")?;
                let done = line.contains(until);
                lines.push(line);
                if done {
                    complete = true;
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    qemu::stop(&mut child)?;
    if !complete {
        writeln!(
            file,
            "xtask: no line with {until:?} within {} s",
            timeout.as_secs()
        )?;
    }
    Ok(Capture { lines, complete })
}

/// QEMU `virt` without EL2 (the guest runs at EL1 on the real devices, PSCI by `hvc`
/// to QEMU's built-in firmware), under icount. `dtb-randomness=off`: no `kaslr-seed` /
/// `rng-seed` from the host in the DTB, which would make Linux boot differently each run
/// (and Tessera's guests then get none either, as `tessera_command` runs it).
fn native_command(qemu: &Path, gic: u32, smp: u32, mem: &str, kernel: &Path) -> Command {
    let mut cmd = Command::new(qemu);
    cmd.args(["-machine", &format!("virt,gic-version={gic},dtb-randomness=off")])
        .args(["-cpu", "cortex-a72", "-smp", &smp.to_string(), "-m", mem])
        .args(["-nographic", "-monitor", "none", "-serial", "stdio"])
        .args(ICOUNT)
        .arg("-kernel")
        .arg(kernel);
    cmd
}

/// The QEMU command booting a packed config image under Tessera, with icount.
pub(crate) fn tessera_command(qemu: &Path, img: &board::ConfigImage) -> Result<Command> {
    let mut extra = img.machine.extra.clone();
    // The config may already ask for icount; say it once.
    if !extra.iter().any(|a| a == "-icount") {
        extra.extend(ICOUNT.iter().map(|s| s.to_string()));
    }
    let base = img.machine.to_machine(img.path.clone());
    // As natively: no seed in QEMU's DTB, so none in the guests' (src/vm/seed.rs),
    // whose boot (KASLR, CRNG) would otherwise differ from run to run.
    let model = if base.model == "virt" {
        format!("{},dtb-randomness=off", base.model)
    } else {
        base.model.clone()
    };
    let m = Machine { extra, model, ..base };
    m.validate()?;
    Ok(m.command(qemu, Console::Captured))
}

/// One setup's runs: the parsed rows of the first and whether all runs agreed.
struct SetupResult {
    rows: BTreeMap<String, Sample>,
    /// The hypervisor's footprint line of the first run (KiB per field).
    footprint: Option<BTreeMap<String, u64>>,
    /// `None` if every run printed the same `BENCH` lines, else what differed.
    difference: Option<String>,
    runs: usize,
}

fn run_setup(
    name: &str,
    runs: usize,
    logs: &Path,
    make: &dyn Fn() -> Result<Command>,
) -> Result<SetupResult> {
    let mut first: Option<Vec<String>> = None;
    let mut difference = None;
    let mut rows = BTreeMap::new();
    let mut fp = None;
    for run in 1..=runs {
        let log = logs.join(format!("{name}-run{run}.log"));
        let start = Instant::now();
        let c = capture(make()?, &log, DONE, GUEST_TIMEOUT)?;
        if !c.complete {
            bail!(
                "{name} run {run}: no `{DONE}` within {} s (log: {})",
                GUEST_TIMEOUT.as_secs(),
                paths::display(&log)
            );
        }
        for l in c.lines.iter().filter(|l| l.contains("FAIL")) {
            eprintln!("xtask: bench: {name} run {run}: {l}");
        }
        println!("  {name} run {run}: {:.1} s", start.elapsed().as_secs_f64());
        let lines = bench_lines(&c.lines);
        match &first {
            None => {
                rows = parse(&c.lines);
                fp = footprint(&c.lines);
                first = Some(lines);
            }
            Some(f) if *f != lines => {
                let which = f
                    .iter()
                    .zip(&lines)
                    .find(|(a, b)| a != b)
                    .map(|(a, b)| format!("run 1 `{a}`, run {run} `{b}`"))
                    .unwrap_or_else(|| format!("run {run} printed {} lines, run 1 {}", lines.len(), f.len()));
                difference.get_or_insert(which);
            }
            Some(_) => {}
        }
    }
    Ok(SetupResult {
        rows,
        footprint: fp,
        difference,
        runs,
    })
}

/// One table row, in instructions.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub gic: u32,
    pub native: Option<f64>,
    pub tessera: Option<f64>,
    pub min: Option<u64>,
    pub max: Option<u64>,
    pub n: Option<u64>,
    pub target: Target,
    pub met: Option<bool>,
}

impl Row {
    pub fn ratio(&self) -> Option<f64> {
        match (self.native, self.tessera) {
            (Some(n), Some(t)) if n > 0.0 => Some(t / n),
            _ => None,
        }
    }
}

fn instr(s: Option<&Sample>) -> Option<f64> {
    match s {
        Some(Sample::Measured { mean, .. }) => Some(mean * INSTRUCTIONS_PER_TICK),
        _ => None,
    }
}

/// Combines the native and Tessera rows of one GIC into table rows.
pub fn rows_for(gic: u32, native: &BTreeMap<String, Sample>, tessera: &BTreeMap<String, Sample>) -> Vec<Row> {
    ROWS.iter()
        .map(|&(name, target)| {
            let t = tessera.get(name);
            let n = instr(native.get(name));
            let tv = instr(t);
            let (min, max, count) = match t {
                Some(Sample::Measured { min, max, n, .. }) => (
                    Some(min * INSTRUCTIONS_PER_TICK as u64),
                    Some(max * INSTRUCTIONS_PER_TICK as u64),
                    Some(*n),
                ),
                _ => (None, None, None),
            };
            Row {
                name: name.to_owned(),
                gic,
                native: n,
                tessera: tv,
                min,
                max,
                n: count,
                target,
                met: tv.and_then(|tv| target.met(n, tv)),
            }
        })
        .collect()
}

fn fmt_footprint(f: &BTreeMap<String, u64>) -> String {
    [
        "total",
        "own",
        "in_use",
        "image",
        "stacks",
        "heap",
        "heap_peak",
        "el2_tables",
        "stage2_tables",
        "images",
    ]
    .iter()
    .filter_map(|k| f.get(*k).map(|v| format!("{k} {v}")))
    .collect::<Vec<_>>()
    .join(", ")
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| {
        if v >= 100_000.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    })
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "-",
    }
}

/// The table of one GIC, as printed and as put in the README.
pub fn table(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<20} {:>12} {:>12} {:>7} {:>21} {:>15} {:>7}\n",
        "row (instructions)", "native", "tessera", "ratio", "tessera min/max", "target", "met"
    );
    for r in rows {
        let minmax = match (r.min, r.max) {
            (Some(a), Some(b)) => format!("{a}/{b}"),
            _ => "-".to_owned(),
        };
        s.push_str(&format!(
            "{:<20} {:>12} {:>12} {:>7} {:>21} {:>15} {:>7}\n",
            r.name,
            fmt_opt(r.native),
            fmt_opt(r.tessera),
            r.ratio().map_or("-".to_owned(), |x| format!("{x:.2}")),
            minmax,
            r.target.describe(),
            verdict(r.met)
        ));
    }
    s
}

/// Lines of Rust in `dir` (recursively), not counting `tests.rs` files nor anything from a
/// file's first `#[cfg(test)]` line to its end (test modules come last in this code base),
/// nor blank and comment-only lines. Returns (code lines, files).
pub fn count_rust_lines(dir: &Path) -> Result<(usize, usize)> {
    let mut code = 0;
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs")
                && p.file_name().is_some_and(|n| n != "tests.rs")
            {
                files += 1;
                code += count_code_lines(&fs::read_to_string(&p)?);
            }
        }
    }
    Ok((code, files))
}

/// Non-blank, non-comment lines before the first `#[cfg(test)]`.
pub fn count_code_lines(text: &str) -> usize {
    text.lines()
        .map(str::trim)
        .take_while(|l| *l != "#[cfg(test)]")
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .count()
}

/// Linux boot figures: virtual seconds from QEMU start to `Run /init`.
#[derive(Clone, Debug, Default)]
pub struct LinuxBoot {
    pub native_s: Option<f64>,
    pub tessera_s: Option<f64>,
    /// Hypervisor uptime at the VM's first entry, included in `tessera_s`.
    pub hypervisor_s: Option<f64>,
    /// The hypervisor's footprint line (KiB per field).
    pub footprint: Option<BTreeMap<String, u64>>,
    /// Workload times inside Linux (guest clock, seconds): (name, native, Tessera).
    pub work: Vec<(String, Option<f64>, Option<f64>)>,
    pub skipped: Option<String>,
}

/// `[    S.UUUUUU]` at the start of `line` (after an optional `[vm] ` prefix).
pub fn timestamp(line: &str) -> Option<f64> {
    let mut rest = line.trim_start();
    loop {
        let open = rest.strip_prefix('[')?;
        let close = open.find(']')?;
        let inside = open[..close].trim();
        if let Ok(v) = inside.parse::<f64>() {
            return Some(v);
        }
        rest = open[close + 1..].trim_start();
    }
}

const LINUX_INIT_LINE: &str = "Run /init as init process";
/// The hypervisor's line just before a VM's first instruction (src/vm/lazy.rs).
const FIRST_ENTRY: &str = "first entry of ";
/// Printed by the initramfs `work` script when its workloads are done.
const WORK_DONE: &str = "TT work done";
/// Workloads inside Linux: Tessera at most 1% slower than native.
const WORK_TARGET: f64 = 1.01;

fn linux_boot(qemu: &Path, built: &Built, logs: &Path) -> Result<LinuxBoot> {
    let a = match assets::ensure_assets(&assets::Options {
        target_dir: Some(built.target_dir.clone()),
        ..Default::default()
    }) {
        Ok(a) => a,
        Err(e) => {
            return Ok(LinuxBoot {
                skipped: Some(format!("Linux assets unavailable: {e:#}")),
                ..Default::default()
            })
        }
    };
    let img = board::build_config_image(&paths::root().join(LINUX_CONFIG), built, None)?;
    let vm_mem = img
        .resolved
        .vms
        .first()
        .map(|vm| vm.memory.iter().map(|m| m.1).sum::<u64>())
        .unwrap_or(256 << 20);
    let smp = img.resolved.vms.first().map_or(2, |vm| vm.cpus.len() as u32);

    let t = capture(
        tessera_command(qemu, &img)?,
        &logs.join("linux-tessera.log"),
        WORK_DONE,
        LINUX_TIMEOUT,
    )?;
    let mut native = native_command(
        qemu,
        img.machine.gic,
        smp,
        &format!("{}M", vm_mem >> 20),
        &a.kernel,
    );
    native
        .arg("-initrd")
        .arg(&a.initrd)
        .args(["-append", "console=ttyAMA0 earlycon tessera.test=work"]);
    let n = capture(native, &logs.join("linux-native.log"), WORK_DONE, LINUX_TIMEOUT)?;
    let find = |c: &Capture, what: &str| {
        c.lines
            .iter()
            .find(|l| l.contains(what))
            .and_then(|l| timestamp(l))
    };
    // The VM's first entry (its eager scrub and image load run on its own
    // CPU after `boot complete`); older images print only the latter.
    let hyp = find(&t, FIRST_ENTRY).or_else(|| find(&t, crate::scenarios::BOOT_COMPLETE));
    let linux_t = find(&t, LINUX_INIT_LINE);
    let work_time = |c: &Capture, name: &str| {
        let tag = format!("TT work {name} ");
        c.lines
            .iter()
            .find_map(|l| l.split_once(&tag).and_then(|(_, v)| v.trim().parse::<f64>().ok()))
    };
    let work = ["sha256", "dd"]
        .iter()
        .map(|w| (w.to_string(), work_time(&n, w), work_time(&t, w)))
        .collect();
    Ok(LinuxBoot {
        work,
        native_s: find(&n, LINUX_INIT_LINE),
        tessera_s: hyp.zip(linux_t).map(|(h, l)| h + l),
        hypervisor_s: hyp,
        footprint: footprint(&t.lines),
        skipped: (!t.complete || !n.complete).then(|| "Linux did not reach its marker line".to_owned()),
    })
}

/// The Linux pair whose disks share a page (through the sub-page filter).
pub const PAIR_CONFIG: &str = "tests/configs/linux_pair.toml";
/// The hypervisor's per-filter count, logged when a VM resets.
const FILTER_COUNT: &str = "accesses trapped";

/// `(accesses, refused)` from `VM <vm>: sub-page filter ...: N accesses
/// trapped (M refused) ...`, the first such line for `vm`.
pub fn filter_count(lines: &[String], vm: &str) -> Option<(u64, u64)> {
    let tag = format!("VM {vm}: sub-page filter ");
    lines.iter().find_map(|l| {
        let rest = l.split_once(&tag)?.1;
        let (_, counts) = rest.split_once(": ")?;
        let (n, rest) = counts.split_once(" accesses trapped (")?;
        let (m, _) = rest.split_once(" refused)")?;
        Some((n.trim().parse().ok()?, m.trim().parse().ok()?))
    })
}

/// linux0 of the Linux pair boots, probes its virtio-blk disk through the
/// sub-page filter, writes and reads 4 MiB, and reboots; the hypervisor logs
/// how many of its accesses the filter trapped when it resets.
fn linux_pair_filter(qemu: &Path, built: &Built, logs: &Path) -> Result<Option<(u64, u64)>> {
    let img = board::build_config_image(&paths::root().join(PAIR_CONFIG), built, None)?;
    let c = capture(
        tessera_command(qemu, &img)?,
        &logs.join("linux-pair-filter.log"),
        FILTER_COUNT,
        LINUX_TIMEOUT,
    )?;
    Ok(filter_count(&c.lines, "linux0"))
}

/// `cargo xtask bench`; returns false if two runs of one setup differed.
pub fn bench(opts: &Options) -> Result<bool> {
    let gics: Vec<u32> = match opts.gic {
        Some(g @ (2 | 3)) => vec![g],
        Some(g) => bail!("--gic must be 2 or 3, not {g}"),
        None if opts.quick => vec![3],
        None => vec![3, 2],
    };
    let runs = if opts.quick { 1 } else { 2 };
    let qemu = qemu::ensure_installed()?;
    let built = images::build(false)?;
    let logs = built.target_dir.join("bench-logs");
    let guest = built.guest("bench")?.bin.clone();
    let mut all_rows = Vec::new();
    let mut identical = true;
    let mut setups = Vec::new();
    let mut footprints = Vec::new();
    for &gic in &gics {
        println!("GICv{gic}:");
        let set = |m: &mut MachineSettings| m.gic = gic;
        let img = board::build_config_image(&paths::root().join(CONFIG), &built, Some(&set))?;
        let tessera = run_setup(&format!("tessera-gic{gic}"), runs, &logs, &|| {
            tessera_command(&qemu, &img)
        })?;
        let native = run_setup(&format!("native-gic{gic}"), runs, &logs, &|| {
            Ok(native_command(&qemu, gic, 2, "1G", &guest))
        })?;
        for (what, r) in [("tessera", &tessera), ("native", &native)] {
            match &r.difference {
                Some(d) => {
                    identical = false;
                    println!("  DIFFERENT between runs ({what}, GICv{gic}): {d}");
                }
                None if r.runs > 1 => println!("  {what}: {} runs, identical BENCH lines", r.runs),
                None => {}
            }
            setups.push(json!({
                "setup": what, "gic": gic, "runs": r.runs, "identical": r.difference.is_none(),
                "difference": r.difference,
            }));
        }
        if let Some(f) = &tessera.footprint {
            println!("  hypervisor RAM (KiB, bench config): {}", fmt_footprint(f));
        }
        footprints.push(json!({ "config": CONFIG, "gic": gic, "kib": tessera.footprint }));
        let rows = rows_for(gic, &native.rows, &tessera.rows);
        println!();
        println!("GICv{gic} (instructions = CNTVCT ticks x 16; mean over n samples; min/max per sample):");
        print!("{}", table(&rows));
        for (name, s) in native.rows.iter().chain(&tessera.rows) {
            if let Sample::Unavailable(why) = s {
                println!("  {name}: unavailable in one setup: {why}");
            }
        }
        println!();
        all_rows.extend(rows);
    }

    let image = fs::metadata(&built.hypervisor_bin)?.len();
    let (loc, files) = count_rust_lines(&paths::root().join("src"))?;
    println!(
        "raw hypervisor image {}: {image} bytes ({:.1} KiB), target <= 256 KiB: {}",
        paths::display(&built.hypervisor_bin),
        image as f64 / 1024.0,
        verdict(Some(image <= IMAGE_TARGET))
    );
    println!("Rust in src/: {loc} lines in {files} files (no blank or comment lines, no tests.rs, nothing from #[cfg(test)] on)");

    let linux = if opts.quick {
        None
    } else {
        println!("Linux boot ({LINUX_CONFIG} vs the same kernel and initramfs bare in QEMU):");
        let l = linux_boot(&qemu, &built, &logs)?;
        match (&l.skipped, l.native_s, l.tessera_s) {
            (None, Some(n), Some(t)) => println!(
                "  to `{LINUX_INIT_LINE}`: native {n:.6} s, Tessera {t:.6} s (hypervisor {:.6} s + Linux {:.6} s), ratio {:.3}, target <= {LINUX_TARGET}: {}",
                l.hypervisor_s.unwrap_or(0.0),
                t - l.hypervisor_s.unwrap_or(0.0),
                t / n,
                verdict(Some(t / n <= LINUX_TARGET))
            ),
            (Some(why), ..) => println!("  skipped: {why}"),
            _ => println!("  no `{LINUX_INIT_LINE}` timestamp found (logs in {})", paths::display(&logs)),
        }
        if let Some(f) = &l.footprint {
            println!(
                "  hypervisor RAM (KiB, {LINUX_CONFIG}): {}; own (without the kept images) {} KiB, target <= {FOOTPRINT_TARGET_KIB}: {}",
                fmt_footprint(f),
                f.get("own").copied().unwrap_or(0),
                verdict(f.get("own").map(|o| *o <= FOOTPRINT_TARGET_KIB))
            );
        }
        for (name, n, t) in &l.work {
            match (n, t) {
                (Some(n), Some(t)) => println!(
                    "  workload {name} (guest clock): native {n:.6} s, Tessera {t:.6} s, ratio {:.4}, target <= {WORK_TARGET}: {}",
                    t / n,
                    verdict(Some(t / n <= WORK_TARGET))
                ),
                _ => println!("  workload {name}: no time found (logs in {})", paths::display(&logs)),
            }
        }
        Some(l)
    };
    let pair = if opts.quick {
        None
    } else {
        println!("Linux pair, virtio-blk through the sub-page filter ({PAIR_CONFIG}, GICv3):");
        let per_access = all_rows
            .iter()
            .find(|r| r.gic == 3 && r.name == "mmio_virtio_filtered")
            .and_then(|r| r.tessera);
        let counts = match assets::ensure_assets(&assets::Options {
            target_dir: Some(built.target_dir.clone()),
            ..Default::default()
        }) {
            Ok(_) => linux_pair_filter(&qemu, &built, &logs)?,
            Err(e) => {
                println!("  skipped: Linux assets unavailable: {e:#}");
                None
            }
        };
        match (counts, per_access) {
            (Some((n, refused)), Some(each)) => println!(
                "  linux0 boot, disk probe, 4 MiB written and read back: {n} trapped accesses ({refused} refused) x {each:.0} instructions = {:.0} instructions",
                n as f64 * each
            ),
            (Some((n, refused)), None) => println!("  linux0: {n} trapped accesses ({refused} refused)"),
            (None, _) => println!("  no filter count found (log in {})", paths::display(&logs)),
        }
        counts.map(|(n, refused)| (n, refused, per_access))
    };

    let ipi = all_rows
        .iter()
        .find(|r| r.gic == 3 && r.name == "ipi")
        .and_then(|r| r.tessera);
    let links = crate::bench_links::run(&qemu, &built, &logs, ipi, !opts.quick)?;

    if let Some(path) = &opts.json {
        let rows: Vec<Value> = all_rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.name, "gic": r.gic, "native": r.native, "tessera": r.tessera,
                    "ratio": r.ratio(), "min": r.min, "max": r.max, "n": r.n,
                    "target": r.target.describe(), "met": r.met,
                })
            })
            .collect();
        let doc = json!({
            "unit": "instructions (CNTVCT ticks x 16, QEMU -icount shift=0,sleep=off)",
            "rows": rows,
            "runs": setups,
            "image": { "path": paths::display(&built.hypervisor_bin), "bytes": image, "target": IMAGE_TARGET,
                       "met": image <= IMAGE_TARGET },
            "loc": { "lines": loc, "files": files,
                     "method": "non-blank, non-comment lines of src/**/*.rs, without tests.rs files and without anything from a file's first #[cfg(test)] on" },
            "footprint": {
                "unit": "KiB", "bench": footprints,
                "linux": linux.as_ref().map(|l| json!({ "config": LINUX_CONFIG, "kib": l.footprint,
                    "target_own_kib": FOOTPRINT_TARGET_KIB,
                    "met": l.footprint.as_ref().and_then(|f| f.get("own")).map(|o| *o <= FOOTPRINT_TARGET_KIB) })),
                "method": "the hypervisor's boot line (src/mm/footprint.rs): image = code and data, stacks and heap and the EL2 table pool as reserved, heap_peak = the most of the heap ever handed out, stage2_tables from free RAM, images = the guest package kept for VM resets; own = total - images",
            },
            "linux_boot": linux.as_ref().map(|l| json!({
                "native_s": l.native_s, "tessera_s": l.tessera_s, "hypervisor_s": l.hypervisor_s,
                "workloads": l.work.iter().map(|(w, n, t)| json!({"name": w, "native_s": n, "tessera_s": t})).collect::<Vec<_>>(),
                "ratio": l.native_s.zip(l.tessera_s).map(|(n, t)| t / n),
                "target": LINUX_TARGET, "skipped": l.skipped,
            })),
            "links": links,
            "linux_pair_subpage_filter": pair.map(|(n, refused, each)| json!({
                "config": PAIR_CONFIG, "vm": "linux0", "trapped_accesses": n, "refused": refused,
                "instructions_per_access": each, "instructions": each.map(|e| e * n as f64),
            })),
        });
        fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if !identical {
        println!("bench: runs of the same setup differed (see above): the numbers are not deterministic");
    }
    Ok(identical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_the_filter_count_of_one_vm() {
        let l = lines(&[
            "[    4.1] VM linux1: sub-page filter 0xa003000..0xa004000: 7 accesses trapped (1 refused) since the VM started",
            "[   43.5] VM linux0: sub-page filter 0xa003000..0xa004000: 114 accesses trapped (0 refused) since the VM started",
        ]);
        assert_eq!(filter_count(&l, "linux0"), Some((114, 0)));
        assert_eq!(filter_count(&l, "linux1"), Some((7, 1)));
        assert_eq!(filter_count(&l, "rt"), None);
    }

    #[test]
    fn parses_rows_with_and_without_a_vm_prefix() {
        let rows = parse(&lines(&[
            "[bench] BENCH hvc_unknown mean=7.500 min=7 max=8 n=10000",
            "BENCH cpu_loop mean=3750001.000 min=3750001 max=3750001 n=1",
            "BENCH hvc_unknown2 unavailable: HVC is UNDEFINED without EL2",
            "[bench] bench: start",
            "BENCH done",
        ]));
        assert_eq!(
            rows["hvc_unknown"],
            Sample::Measured {
                mean: 7.5,
                min: 7,
                max: 8,
                n: 10000
            }
        );
        assert!(matches!(rows["cpu_loop"], Sample::Measured { n: 1, .. }));
        assert!(matches!(&rows["hvc_unknown2"], Sample::Unavailable(w) if w.starts_with("HVC")));
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn targets_and_rows_in_instructions() {
        let native = parse(&lines(&["BENCH ipi mean=1.000 min=1 max=1 n=10"]));
        let tessera = parse(&lines(&[
            "BENCH ipi mean=20.000 min=20 max=21 n=10",
            "BENCH hvc_unknown mean=5.000 min=5 max=5 n=10",
        ]));
        let rows = rows_for(3, &native, &tessera);
        let ipi = rows.iter().find(|r| r.name == "ipi").unwrap();
        assert_eq!((ipi.native, ipi.tessera), (Some(16.0), Some(320.0)));
        assert_eq!((ipi.min, ipi.max), (Some(320), Some(336)));
        assert_eq!(ipi.met, Some(true));
        let hvc = rows.iter().find(|r| r.name == "hvc_unknown").unwrap();
        assert_eq!(hvc.met, Some(true));
        assert_eq!(hvc.ratio(), None);
        assert_eq!(Target::NativeTimes(1.01).met(Some(100.0), 102.0), Some(false));
        assert_eq!(Target::NativePlus(1.0).met(None, 1.0), None);
        assert!(table(&rows).contains("MISSED") || table(&rows).contains("met"));
    }

    #[test]
    fn every_row_has_a_prefix_for_the_test_scenario() {
        for (name, _) in ROWS {
            assert!(
                ROW_PREFIXES.contains(&format!("BENCH {name} ").as_str()),
                "{name}"
            );
        }
        assert_eq!(ROW_PREFIXES.len(), ROWS.len() + 1);
    }

    #[test]
    fn reads_the_footprint_line() {
        let f = footprint(&lines(&[
            "[bench] BENCH done",
            "[    0.019479] tessera: hypervisor RAM (KiB): total=38420 in_use=33721 image=292 images=33252 (stacks: 4 CPUs online of 16 x 32 KiB)",
        ]))
        .unwrap();
        assert_eq!(f["total"], 38420);
        assert_eq!(f["image"], 292);
        assert_eq!(f["own"], 38420 - 33252);
        assert!(footprint(&lines(&["tessera: boot complete"])).is_none());
    }

    #[test]
    fn timestamps_after_prefixes() {
        assert_eq!(timestamp("[    0.069095]   CPUs online"), Some(0.069095));
        assert_eq!(
            timestamp("[linux0] [    1.500000] Run /init as init process"),
            Some(1.5)
        );
        assert_eq!(timestamp("[linux0] no time"), None);
    }

    #[test]
    fn code_lines_stop_at_the_test_module() {
        let text = "//! doc\nfn a() {}\n\n// note\nfn b() {}\n#[cfg(test)]\nmod tests {\n fn t() {}\n}\n";
        assert_eq!(count_code_lines(text), 2);
    }
}
