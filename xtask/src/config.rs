//! VM configurations: TOML files in `boards/<board>/`, checked against the
//! board before anything is built, then written as the config blob the
//! hypervisor reads (a small FDT, `compatible = "tessera,config-v1"`; see
//! `src/config/mod.rs`) and packed with the guest images.
//!
//! Every error names the file, the VM and the field. No image is written
//! when a config is wrong.

use crate::dt_ranges::ranges;
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// Where guests see their first RAM region unless the config says otherwise.
pub const DEFAULT_RAM_IPA: u64 = 0x4000_0000;
/// Guest-physical windows the hypervisor emulates for every VM (GIC, console).
pub const EMULATED_WINDOWS: &[(&str, u64, u64)] = &[
    ("the virtual GIC", 0x0800_0000, 0x0100_0000),
    ("the virtual console", 0x0900_0000, 0x1000),
];

/// A size in bytes: an integer or a string with K/M/G suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

/// "16M", "1G", "512K", "4096" -> bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = if let Some(hex) = num.strip_prefix("0x") {
        u64::from_str_radix(hex, 16)
    } else {
        num.parse()
    }
    .map_err(|_| format!("`{s}` is not a size (like 16M, 1G or 4096)"))?;
    n.checked_mul(mult).ok_or_else(|| format!("`{s}` is too large"))
}

/// A physical CPU: its index in the board's CPU list, or its MPIDR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuRef {
    Index(u64),
    Mpidr { mpidr: u64 },
}

impl<'de> Deserialize<'de> for CpuRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `{ mpidr = ... }` and nothing else: an untagged enum would ignore
        // unknown keys in the table.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Mpidr {
            mpidr: u64,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Index(u64),
            Mpidr(Mpidr),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Index(x)) => Ok(CpuRef::Index(x)),
            Ok(Raw::Mpidr(m)) => Ok(CpuRef::Mpidr { mpidr: m.mpidr }),
            Err(_) => Err(serde::de::Error::custom(
                "a CPU is an index into the board's CPUs or { mpidr = <MPIDR> }",
            )),
        }
    }
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct MemoryToml {
    pub size: Size,
    /// Fixed physical base (else the hypervisor chooses at boot).
    pub base: Option<u64>,
    /// Guest-physical base (default: 0x4000_0000 for the first region, then
    /// each region right after the previous one).
    pub ipa: Option<u64>,
    /// Guest-physical = physical, for VMs owning DMA-capable devices.
    #[serde(default)]
    pub identity: bool,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Console {
    #[default]
    Virtual,
    Passthrough,
    None,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Psci {
    #[default]
    Hvc,
    Smc,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct VmToml {
    pub name: String,
    pub cpus: Vec<CpuRef>,
    pub memory: Vec<MemoryToml>,
    /// `guest:<name>` for a test guest built by xtask, else a path relative
    /// to the config file.
    pub kernel: String,
    pub initrd: Option<String>,
    pub dtb: Option<String>,
    #[serde(default)]
    pub bootargs: String,
    #[serde(default)]
    pub console: Console,
    #[serde(default)]
    pub psci: Psci,
    /// Host device-tree paths of devices passed through.
    #[serde(default)]
    pub devices: Vec<String>,
    /// `"unrestricted"`: the VM's DMA-capable devices are not behind an SMMU
    /// and may reach any physical address (config_dma.rs).
    pub dma: Option<String>,
    /// `"boot"`: all RAM scrubbed before the VM enters; `"lazy"` (default):
    /// blocks its images do not touch scrubbed at first touch where no
    /// device of the VM may do DMA.
    pub scrub: Option<String>,
    /// Guest-physical base of the scratch MMIO test device (tests only).
    pub test_device: Option<u64>,
}

/// QEMU settings for `xtask run`/`test` with this config.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct QemuToml {
    pub gic: Option<u32>,
    pub smp: Option<u32>,
    pub mem: Option<String>,
    #[serde(default)]
    pub extra: Vec<String>,
    /// Virtio-blk disks, in order: the first sits on QEMU's last virtio-mmio
    /// transport (`/virtio_mmio@a003e00`), the next one below it, and so on.
    /// xtask creates each image, zeroed, before every run.
    #[serde(default)]
    pub disks: Vec<DiskToml>,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct DiskToml {
    /// Image file name; it lives in `target/disks/<config>-gic<N>-smp<N>/`.
    pub file: String,
    pub size: Size,
    /// The virtio-mmio transport to plug it into, as QEMU's bus number
    /// (`virtio-mmio-bus.N`, at 0xa000000 + N * 0x200: 31 is
    /// `/virtio_mmio@a003e00`); default: the next free one from the top.
    pub bus: Option<u32>,
    /// A virtio-blk-pci device behind QEMU's PCIe host bridge (and its
    /// SMMU, with `iommu_platform=on`) instead of a virtio-mmio one.
    #[serde(default)]
    pub pci: bool,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct HypervisorToml {
    /// Prefix each VM's console lines with its name (default true).
    pub console_prefix: Option<bool>,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct ConfigToml {
    /// The board folder under `boards/` (default: the folder the config is in).
    pub board: Option<String>,
    #[serde(default)]
    pub hypervisor: HypervisorToml,
    #[serde(default)]
    pub qemu: QemuToml,
    /// Defaulted so that a config without `[[vm]]` gets the "no VMs" error
    /// of `check` rather than serde's "missing field".
    #[serde(rename = "vm", default)]
    pub vms: Vec<VmToml>,
    /// Links between VMs (`xtask/src/links.rs`).
    #[serde(rename = "link", default)]
    pub links: Vec<crate::links::LinkToml>,
}

/// What the board offers, from its device tree (and board.toml).
#[derive(Clone, Debug, Default)]
pub struct Board {
    /// MPIDR of each CPU, in DTB order.
    pub cpus: Vec<u64>,
    pub ram: Vec<(u64, u64)>,
    /// Ranges nobody may be given: where the hypervisor image and the DTB sit.
    pub reserved: Vec<(String, u64, u64)>,
    /// Device paths with their MMIO ranges.
    pub devices: BTreeMap<String, Vec<(u64, u64)>>,
    /// Path of the board's console UART.
    pub console: Option<String>,
    /// Every node with a non-empty MMIO `reg` (devices, buses, the GIC, the
    /// console), for the page-sharing report.
    pub nodes: Vec<Node>,
    /// Which devices do DMA and whether an SMMU translates it.
    pub dma: crate::config_dma::BoardDma,
}

#[path = "config_pages.rs"]
mod pages;
pub use pages::{hot_device, Node, PageNote};

/// A config error: file, VM and field, then what is wrong.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub vm: Option<String>,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        if let Some(vm) = &self.vm {
            write!(f, "vm \"{vm}\": ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A VM ready to pack: everything resolved and checked.
#[derive(Clone, Debug)]
pub struct ResolvedVm {
    pub name: String,
    pub cpus: Vec<u32>,
    /// (ipa, size, fixed phys, identity)
    pub memory: Vec<(u64, u64, Option<u64>, bool)>,
    pub kernel: Vec<u8>,
    pub initrd: Option<Vec<u8>>,
    pub dtb: Option<Vec<u8>>,
    pub bootargs: String,
    pub console: Console,
    pub psci: Psci,
    pub devices: Vec<String>,
    pub test_device: Option<u64>,
    /// `dma = "unrestricted"` (checked): written as `dma-unrestricted`.
    pub dma_unrestricted: bool,
    /// `scrub = "boot"`: written as `scrub-at-boot`.
    pub scrub_at_boot: bool,
}

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub vms: Vec<ResolvedVm>,
    pub console_prefix: bool,
    pub qemu: QemuToml,
    /// How each passed-through device will be mapped (or filtered).
    pub pages: Vec<PageNote>,
    pub links: Vec<crate::links::ResolvedLink>,
}

/// Parses `path` (syntax and unknown keys only).
pub fn parse(path: &Path) -> Result<ConfigToml> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = crate::paths::display(path);
    let parsed: ConfigToml = toml::from_str(&text).map_err(|e| ConfigError {
        file: file.clone(),
        vm: e.span().and_then(|r| vm_at(&text, r.start)),
        field: String::new(),
        message: e.message().trim_end().to_owned() + &location(&text, e.span()),
    })?;
    Ok(parsed)
}

/// Checks the parsed config at `path` against `board`. `guest_image` maps
/// `guest:<name>` kernels to built test-guest images.
pub fn load(
    path: &Path,
    parsed: &ConfigToml,
    board: &Board,
    guest_image: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<Resolved> {
    let file = crate::paths::display(path);
    let dir = path.parent().unwrap_or(Path::new("."));
    let resolved = check(&file, dir, parsed, board, guest_image)?;
    for note in &resolved.pages {
        eprintln!("xtask: {}", note.text);
        if let Some(w) = &note.warning {
            eprintln!("xtask: warning: {w}");
        }
    }
    Ok(resolved)
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) => format!(
            " (line {})",
            text.as_bytes()[..r.start.min(text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1
        ),
        None => String::new(),
    }
}

/// The name of the `[[vm]]` whose table holds byte `offset` of `text`, for
/// errors serde reports with a position but no VM (unknown keys, bad values).
fn vm_at(text: &str, offset: usize) -> Option<String> {
    let line_end = text[offset.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| offset + i);
    let mut index = 0usize;
    let mut in_vm = false;
    for line in text[..line_end].lines() {
        let l: String = line.chars().filter(|c| !c.is_whitespace()).collect();
        if l.starts_with("[[vm]]") {
            index += 1;
            in_vm = true;
        } else if l.starts_with('[') {
            in_vm = l.starts_with("[[vm.") || l.starts_with("[vm.");
        }
    }
    if !in_vm {
        return None;
    }
    let table: toml::Table = toml::from_str(text).ok()?;
    let vm = table.get("vm")?.as_array()?.get(index - 1)?;
    Some(vm.get("name")?.as_str()?.to_owned())
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

/// Checks a parsed config against the board: every rule of docs/config.md.
pub fn check(
    file: &str,
    dir: &Path,
    cfg: &ConfigToml,
    board: &Board,
    guest_image: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<Resolved, ConfigError> {
    let err = |vm: Option<&str>, field: String, message: String| ConfigError {
        file: file.to_owned(),
        vm: vm.map(str::to_owned),
        field,
        message,
    };
    if cfg.vms.is_empty() {
        return Err(err(
            None,
            "vm".into(),
            "no VMs: add at least one [[vm]] table".into(),
        ));
    }
    check_disks(&cfg.qemu.disks).map_err(|(field, message)| err(None, field, message))?;
    let mut cpu_owner: HashMap<u32, String> = HashMap::new();
    let mut dev_owner: HashMap<String, String> = HashMap::new();
    let mut fixed: Vec<(String, String, u64, u64)> = Vec::new(); // (vm, field, base, size)
    let mut total = 0u64;
    let mut names: Vec<&str> = Vec::new();
    let mut passthrough_console: Option<&str> = None;
    let mut vms = Vec::new();

    for vm in &cfg.vms {
        let n = Some(vm.name.as_str());
        if vm.name.is_empty()
            || vm.name.len() > 24
            || !vm
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(err(
                n,
                "name".into(),
                "must be 1-24 characters of letters, digits, - and _".into(),
            ));
        }
        if names.contains(&vm.name.as_str()) {
            return Err(err(n, "name".into(), "another VM has the same name".into()));
        }
        names.push(&vm.name);

        // CPUs.
        if vm.cpus.is_empty() {
            return Err(err(n, "cpus".into(), "a VM needs at least one CPU".into()));
        }
        let mut cpus = Vec::new();
        for (i, c) in vm.cpus.iter().enumerate() {
            let field = format!("cpus[{i}]");
            let idx = match c {
                CpuRef::Index(x) if (*x as usize) < board.cpus.len() => *x as u32,
                CpuRef::Index(x) => {
                    return Err(err(
                        n,
                        field,
                        format!(
                            "CPU {x} does not exist: the board has {} CPUs (0..{})",
                            board.cpus.len(),
                            board.cpus.len().saturating_sub(1)
                        ),
                    ))
                }
                CpuRef::Mpidr { mpidr } => match board.cpus.iter().position(|m| m == mpidr) {
                    Some(p) => p as u32,
                    None => {
                        return Err(err(
                            n,
                            field,
                            format!("no CPU with MPIDR {mpidr:#x} on the board"),
                        ))
                    }
                },
            };
            if let Some(other) = cpu_owner.insert(idx, vm.name.clone()) {
                return Err(err(
                    n,
                    field,
                    format!("CPU {idx} is already given to vm \"{other}\""),
                ));
            }
            cpus.push(idx);
        }

        // Memory.
        if vm.memory.is_empty() {
            return Err(err(
                n,
                "memory".into(),
                "a VM needs at least one memory region".into(),
            ));
        }
        let mut memory: Vec<(u64, u64, Option<u64>, bool)> = Vec::new();
        let mut next_ipa = DEFAULT_RAM_IPA;
        for (i, m) in vm.memory.iter().enumerate() {
            let field = format!("memory[{i}]");
            let size = m.size.0;
            if size == 0 || size % 4096 != 0 {
                return Err(err(
                    n,
                    format!("{field}.size"),
                    format!("{size:#x} is not a non-zero multiple of 4 KiB"),
                ));
            }
            if let Some(b) = m.base {
                if b % 4096 != 0 {
                    return Err(err(
                        n,
                        format!("{field}.base"),
                        format!("{b:#x} is not 4 KiB aligned"),
                    ));
                }
                if b.checked_add(size).is_none() {
                    return Err(err(
                        n,
                        format!("{field}.base"),
                        format!("{b:#x} + {size:#x} is past the end of the address space"),
                    ));
                }
                if !board.ram.iter().any(|&(rb, rs)| b >= rb && b + size <= rb + rs) {
                    return Err(err(
                        n,
                        format!("{field}.base"),
                        format!(
                            "{b:#x}..{:#x} is not inside the board's RAM ({})",
                            b + size,
                            ranges(&board.ram)
                        ),
                    ));
                }
                for (what, rb, rs) in &board.reserved {
                    if overlaps((b, size), (*rb, *rs)) {
                        return Err(err(
                            n,
                            format!("{field}.base"),
                            format!(
                                "{b:#x}..{:#x} overlaps {what} at {rb:#x}..{:#x}",
                                b + size,
                                rb + rs
                            ),
                        ));
                    }
                }
                for (ovm, ofield, ob, os) in &fixed {
                    if overlaps((b, size), (*ob, *os)) {
                        return Err(err(
                            n,
                            format!("{field}.base"),
                            format!(
                                "{b:#x}..{:#x} overlaps vm \"{ovm}\" {ofield} at {ob:#x}..{:#x}",
                                b + size,
                                ob + os
                            ),
                        ));
                    }
                }
                fixed.push((vm.name.clone(), field.clone(), b, size));
            }
            if m.identity && m.ipa.is_some() && m.ipa != m.base {
                return Err(err(
                    n,
                    format!("{field}.ipa"),
                    "an identity region's ipa is its physical base: leave ipa out".into(),
                ));
            }
            let ipa = if m.identity {
                m.base.unwrap_or(0)
            } else {
                m.ipa.unwrap_or(next_ipa)
            };
            // The guest-physical range, when known now: an identity region
            // without a fixed base gets its address at boot.
            let known_ipa = !m.identity || m.base.is_some();
            // An identity region's guest-physical base is its `base`.
            let ipa_field = format!("{field}.{}", if m.identity { "base" } else { "ipa" });
            if !m.identity {
                if ipa % 4096 != 0 {
                    return Err(err(n, ipa_field, format!("{ipa:#x} is not 4 KiB aligned")));
                }
                if ipa.checked_add(size).is_none() {
                    return Err(err(
                        n,
                        ipa_field,
                        format!("{ipa:#x} + {size:#x} is past the end of the address space"),
                    ));
                }
            }
            if known_ipa {
                for (what, wb, ws) in EMULATED_WINDOWS {
                    if overlaps((ipa, size), (*wb, *ws)) {
                        return Err(err(
                            n,
                            ipa_field,
                            format!("{ipa:#x}..{:#x} overlaps {what} at {wb:#x}", ipa + size),
                        ));
                    }
                }
                for (j, &(oi, os, ophys, oid)) in memory.iter().enumerate() {
                    let other_known = !oid || ophys.is_some();
                    if other_known && overlaps((ipa, size), (oi, os)) {
                        return Err(err(n, ipa_field, format!("overlaps memory[{j}] of the same VM")));
                    }
                }
            }
            if !m.identity {
                next_ipa = (ipa + size).checked_next_multiple_of(2 << 20).unwrap_or(u64::MAX);
            }
            total = total.saturating_add(size);
            memory.push((ipa, size, m.base, m.identity));
        }

        // Devices.
        for (i, d) in vm.devices.iter().enumerate() {
            let field = format!("devices[{i}]");
            if !board.devices.contains_key(d) {
                return Err(err(
                    n,
                    field,
                    format!(
                        "the board has no device {d:?} (a device is the DT path of a node with \
                         `compatible` and `reg`, like \"/virtio_mmio@a000000\")"
                    ),
                ));
            }
            if let Some(other) = dev_owner.insert(d.clone(), vm.name.clone()) {
                return Err(err(n, field, format!("{d} is already given to vm \"{other}\"")));
            }
            if board.console.as_deref() == Some(d.as_str()) {
                return Err(err(
                    n,
                    field,
                    format!(
                        "{d} is the hypervisor's console; use console = \"passthrough\" to give it to a VM"
                    ),
                ));
            }
            crate::config_hyp::check_device(d, board, vm.console == Console::Passthrough)
                .map_err(|m| err(n, field.clone(), m))?;
            // Passed through at its physical addresses, which must be free in
            // the guest's address space.
            for &(db, ds) in &board.devices[d] {
                let at = format!("{d} at {db:#x}..{:#x}", db.saturating_add(ds));
                for (what, wb, ws) in EMULATED_WINDOWS {
                    if overlaps((db, ds), (*wb, *ws)) {
                        return Err(err(n, field, format!("{at} overlaps {what} at {wb:#x}")));
                    }
                }
                for (j, &(mi, ms, mphys, mid)) in memory.iter().enumerate() {
                    if (!mid || mphys.is_some()) && overlaps((db, ds), (mi, ms)) {
                        return Err(err(
                            n,
                            field,
                            format!("{at} overlaps the VM's memory[{j}] at {mi:#x}..{:#x}", mi + ms),
                        ));
                    }
                }
            }
        }
        crate::config_dma::check_vm(vm.dma.as_deref(), &vm.devices, &board.dma)
            .map_err(|(field, message)| err(n, field, message))?;
        let scrub_at_boot = match vm.scrub.as_deref() {
            None | Some("lazy") => false,
            Some("boot") => true,
            Some(other) => {
                return Err(err(
                    n,
                    "scrub".into(),
                    format!("{other:?}: the values are \"lazy\" (the default) and \"boot\""),
                ))
            }
        };
        let identity: Vec<bool> = vm.memory.iter().map(|m| m.identity).collect();
        crate::config_dma::check_identity(vm.dma.as_deref(), &vm.devices, &identity, &board.dma)
            .map_err(|(field, message)| err(n, field, message))?;
        if vm.console == Console::Passthrough {
            if let Some(other) = passthrough_console {
                return Err(err(
                    n,
                    "console".into(),
                    format!("the physical console is already given to vm \"{other}\""),
                ));
            }
            passthrough_console = Some(&vm.name);
        }

        // Images.
        let kernel_path = resolve(dir, &vm.kernel, guest_image).map_err(|m| err(n, "kernel".into(), m))?;
        let kernel = read(&kernel_path).map_err(|m| err(n, "kernel".into(), m))?;
        let kernel = crate::image::guest_kernel(&kernel)
            .map_err(|e| err(n, "kernel".into(), format!("{}: {e:#}", kernel_path.display())))?;
        let initrd = match &vm.initrd {
            Some(p) => Some(
                resolve(dir, p, guest_image)
                    .and_then(|p| read(&p))
                    .map_err(|m| err(n, "initrd".into(), m))?,
            ),
            None => None,
        };
        let dtb = match &vm.dtb {
            Some(p) => {
                let bytes = resolve(dir, p, guest_image)
                    .and_then(|p| read(&p))
                    .map_err(|m| err(n, "dtb".into(), m))?;
                fdt::Fdt::new(&bytes)
                    .map_err(|e| err(n, "dtb".into(), format!("not a device tree blob: {e:?}")))?;
                Some(bytes)
            }
            None => None,
        };
        if let Some(t) = vm.test_device {
            if t % 4096 != 0 {
                return Err(err(
                    n,
                    "test_device".into(),
                    format!("{t:#x} is not 4 KiB aligned"),
                ));
            }
        }
        vms.push(ResolvedVm {
            name: vm.name.clone(),
            cpus,
            memory,
            kernel,
            initrd,
            dtb,
            bootargs: vm.bootargs.clone(),
            console: vm.console,
            psci: vm.psci,
            devices: vm.devices.clone(),
            test_device: vm.test_device,
            dma_unrestricted: vm.dma.as_deref() == Some("unrestricted"),
            scrub_at_boot,
        });
    }
    // What the hypervisor will map and what it will trap (it decides again
    // at boot from the live DTB, by the same rule).
    let given: Vec<(String, Vec<String>)> = vms
        .iter()
        .map(|vm| {
            let mut devs = vm.devices.clone();
            if vm.console == Console::Passthrough {
                devs.extend(board.console.clone());
            }
            (vm.name.clone(), devs)
        })
        .collect();
    let pages = pages::report(board, &given);
    let links = crate::links::check(file, &cfg.links, &vms, board)?;
    // The hypervisor allocates shmem regions from the same RAM as the VMs.
    let shared: u64 = links
        .iter()
        .filter(|l| l.kind == crate::links::Kind::Shmem)
        .map(|l| l.size)
        .fold(0, u64::saturating_add);
    let ram: u64 = board.ram.iter().map(|r| r.1).sum();
    let reserved: u64 = board.reserved.iter().map(|r| r.2).sum();
    if total.saturating_add(shared).saturating_add(reserved) > ram {
        let with_links = if shared > 0 {
            format!(" (and their shmem links {} MiB)", shared >> 20)
        } else {
            String::new()
        };
        return Err(err(
            None,
            "memory".into(),
            format!(
                "the VMs ask for {} MiB{with_links} but the board has {} MiB of RAM, {} MiB of it reserved",
                total >> 20,
                ram >> 20,
                reserved >> 20
            ),
        ));
    }
    Ok(Resolved {
        vms,
        console_prefix: cfg.hypervisor.console_prefix.unwrap_or(true),
        qemu: cfg.qemu.clone(),
        pages,
        links,
    })
}

/// QEMU virt's virtio-mmio transports (`virtio-mmio-bus.0` .. `.31`).
const VIRTIO_BUSES: u32 = 32;

/// Places the disks on transports as QEMU will, in command-line order: one
/// with a `bus` takes that one, the others the highest free one. A bus out
/// of range or already taken is an error (field, message).
fn check_disks(disks: &[DiskToml]) -> Result<(), (String, String)> {
    let mut taken: Vec<(u32, usize)> = Vec::new();
    for (i, d) in disks.iter().enumerate().filter(|(_, d)| !d.pci) {
        let field = format!("qemu.disks[{i}].bus");
        let bus = match d.bus {
            Some(b) if b >= VIRTIO_BUSES => {
                return Err((
                    field,
                    format!(
                        "{b} is not a virtio-mmio transport of QEMU virt (0..{})",
                        VIRTIO_BUSES - 1
                    ),
                ))
            }
            Some(b) => b,
            None => match (0..VIRTIO_BUSES).rev().find(|b| !taken.iter().any(|t| t.0 == *b)) {
                Some(b) => b,
                None => return Err((field, "no free virtio-mmio transport left".into())),
            },
        };
        if let Some(&(_, j)) = taken.iter().find(|t| t.0 == bus) {
            return Err((field, format!("transport {bus} already holds qemu.disks[{j}]")));
        }
        taken.push((bus, i));
    }
    Ok(())
}

fn ranges(r: &[(u64, u64)]) -> String {
    r.iter()
        .map(|(b, s)| format!("{b:#x}..{:#x}", b + s))
        .collect::<Vec<_>>()
        .join(", ")
}

fn resolve(dir: &Path, spec: &str, guest_image: &dyn Fn(&str) -> Option<PathBuf>) -> Result<PathBuf, String> {
    if spec.starts_with("debian:") {
        // Debian's arm64 kernel and the initramfs xtask builds around busybox.
        return guest_image(spec)
            .ok_or_else(|| format!("`{spec}`: no such guest asset, or Debian's packages could not be fetched (see above; --kernel/--initrd use your own)"));
    }
    match spec.strip_prefix("guest:") {
        Some(name) => guest_image(name).ok_or_else(|| format!("no test guest `{name}`")),
        None => Ok(dir.join(spec)),
    }
}

fn read(p: &Path) -> Result<Vec<u8>, String> {
    fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
}

/// The config blob the hypervisor parses (`src/config/mod.rs`).
pub fn blob(r: &Resolved) -> Result<Vec<u8>> {
    let e = |e: vm_fdt::Error| anyhow!("writing the config blob: {e}");
    let mut w = vm_fdt::FdtWriter::new().map_err(e)?;
    let root = w.begin_node("").map_err(e)?;
    w.property_string("compatible", "tessera,config-v1").map_err(e)?;
    w.property_u32("console-prefix", u32::from(r.console_prefix))
        .map_err(e)?;
    for (i, vm) in r.vms.iter().enumerate() {
        let n = w.begin_node(&format!("vm@{i}")).map_err(e)?;
        w.property_string("name", &vm.name).map_err(e)?;
        w.property_array_u32("cpus", &vm.cpus).map_err(e)?;
        let mut mem = Vec::new();
        for &(ipa, size, phys, identity) in &vm.memory {
            let p = phys.unwrap_or(0);
            let flags = u32::from(identity) | if phys.is_some() { 2 } else { 0 };
            mem.extend_from_slice(&[(ipa >> 32) as u32, ipa as u32, (size >> 32) as u32, size as u32]);
            mem.extend_from_slice(&[(p >> 32) as u32, p as u32, flags]);
        }
        w.property_array_u32("memory", &mem).map_err(e)?;
        w.property_string("kernel", &format!("k{i}")).map_err(e)?;
        if vm.initrd.is_some() {
            w.property_string("initrd", &format!("i{i}")).map_err(e)?;
        }
        if vm.dtb.is_some() {
            w.property_string("dtb", &format!("d{i}")).map_err(e)?;
        }
        w.property_string("bootargs", &vm.bootargs).map_err(e)?;
        let console = match vm.console {
            Console::Virtual => "virtual",
            Console::Passthrough => "passthrough",
            Console::None => "none",
        };
        w.property_string("console", console).map_err(e)?;
        w.property_string("psci", if vm.psci == Psci::Smc { "smc" } else { "hvc" })
            .map_err(e)?;
        if !vm.devices.is_empty() {
            w.property_string_list("devices", vm.devices.clone()).map_err(e)?;
        }
        if let Some(t) = vm.test_device {
            w.property_array_u32("test-device", &[(t >> 32) as u32, t as u32])
                .map_err(e)?;
        }
        if vm.dma_unrestricted {
            w.property_null("dma-unrestricted").map_err(e)?;
        }
        if vm.scrub_at_boot {
            w.property_null("scrub-at-boot").map_err(e)?;
        }
        w.end_node(n).map_err(e)?;
    }
    crate::links::write_blob(&mut w, &r.links)?;
    w.end_node(root).map_err(e)?;
    w.finish().map_err(e)
}

/// Package entry kinds, as the hypervisor's `src/package.rs` defines them.
pub const KIND_CONFIG: u32 = 1;
pub const KIND_IMAGE: u32 = 2;

/// The config blob and every image, named as the blob refers to them.
pub fn package_entries(r: &Resolved) -> Result<Vec<(u32, String, Vec<u8>)>> {
    let mut out = vec![(KIND_CONFIG, "config".to_owned(), blob(r)?)];
    for (i, vm) in r.vms.iter().enumerate() {
        out.push((KIND_IMAGE, format!("k{i}"), vm.kernel.clone()));
        if let Some(b) = &vm.initrd {
            out.push((KIND_IMAGE, format!("i{i}"), b.clone()));
        }
        if let Some(b) = &vm.dtb {
            out.push((KIND_IMAGE, format!("d{i}"), b.clone()));
        }
    }
    Ok(out)
}

/// The board as its DTB describes it.
pub fn board_from_dtb(dtb: &[u8], reserved: Vec<(String, u64, u64)>) -> Result<Board> {
    let fdt = fdt::Fdt::new(dtb).map_err(|e| anyhow!("board DTB: {e:?}"))?;
    let mut b = Board {
        reserved,
        ..Default::default()
    };
    if let Some(cpus) = fdt.find_node("/cpus") {
        for c in cpus.children() {
            if c.property("device_type").and_then(|p| p.as_str()) == Some("cpu") {
                if let Some(reg) = c.property("reg") {
                    let v = reg.value;
                    let mpidr = match v.len() {
                        4 => u64::from(u32::from_be_bytes(v[..4].try_into()?)),
                        8 => u64::from_be_bytes(v[..8].try_into()?),
                        _ => continue,
                    };
                    b.cpus.push(mpidr);
                }
            }
        }
    }
    for n in fdt.all_nodes() {
        // `virt,secure=on` adds a secure-only `memory` node with status "disabled".
        if n.property("device_type").and_then(|p| p.as_str()) == Some("memory") && available(&n) {
            for r in n.reg().into_iter().flatten() {
                b.ram
                    .push((r.starting_address as u64, r.size.unwrap_or(0) as u64));
            }
        }
    }
    let root = fdt.find_node("/").context("board DTB has no root")?;
    collect_devices(root, "", &mut Vec::new(), &mut b.devices);
    b.dma = crate::config_dma::scan(&fdt, b.devices.keys());
    collect_nodes(root, "", &mut Vec::new(), &mut b.nodes);
    if let Some(stdout) = fdt
        .find_node("/chosen")
        .and_then(|c| c.property("stdout-path"))
        .and_then(|p| p.as_str())
    {
        // An alias (the Raspberry Pi's "serial1") names the node it stands for.
        b.console = Some(
            crate::board_console::resolve(dtb, stdout)
                .unwrap_or_else(|_| stdout.split(':').next().unwrap_or(stdout).to_owned()),
        );
    }
    if b.cpus.is_empty() || b.ram.is_empty() {
        bail!("board DTB lists no CPUs or no memory");
    }
    Ok(b)
}

/// Whether a node's `status` (none, `okay` or `ok`) makes it available.
fn available(n: &fdt::node::FdtNode) -> bool {
    n.property("status")
        .and_then(|p| p.as_str())
        .is_none_or(|s| matches!(s, "okay" | "ok"))
}

/// Every available device with a `reg` (CPU addresses, through the buses' `ranges`, by
/// the hypervisor's own translation), by path. A node whose status is not okay is
/// skipped with everything below it; so is a device with a `reg` entry no bus maps
/// (the hypervisor refuses to pass such a device through).
fn collect_devices<'b, 'a>(
    node: fdt::node::FdtNode<'b, 'a>,
    prefix: &str,
    ancestors: &mut Vec<fdt::node::FdtNode<'b, 'a>>,
    out: &mut BTreeMap<String, Vec<(u64, u64)>>,
) {
    ancestors.push(node);
    for c in node.children() {
        if !available(&c) {
            continue;
        }
        let path = format!("{prefix}/{}", c.name);
        // CPUs and RAM have `compatible` or `reg` too, but are not devices.
        let kind = c.property("device_type").and_then(|p| p.as_str());
        if c.name.contains('@')
            && c.property("compatible").is_some()
            && !matches!(kind, Some("cpu" | "memory"))
            && c.property("reg").is_some()
        {
            let regs: Option<Vec<(u64, u64)>> = ranges::regs_checked(c, ancestors)
                .map(|r| r.ok().map(|r| (r.base.0, r.size)))
                .collect();
            if let Some(regs) = regs.filter(|r| !r.is_empty()) {
                out.insert(path.clone(), regs);
            }
        }
        collect_devices(c, &path, ancestors, out);
    }
    ancestors.pop();
}

/// Every node below `node` with a non-empty `reg` (as the hypervisor sees
/// the DTB when it decides which pages to map).
fn collect_nodes<'b, 'a>(
    node: fdt::node::FdtNode<'b, 'a>,
    prefix: &str,
    ancestors: &mut Vec<fdt::node::FdtNode<'b, 'a>>,
    out: &mut Vec<Node>,
) {
    ancestors.push(node);
    for c in node.children() {
        let path = format!("{prefix}/{}", c.name);
        // Disabled nodes count too: their registers may still be in the page.
        let regs: Vec<(u64, u64)> = ranges::regs_checked(c, ancestors)
            .filter_map(Result::ok)
            .filter(|r| r.size != 0)
            .map(|r| (r.base.0, r.size))
            .collect();
        if !regs.is_empty() {
            let compatible = c
                .compatible()
                .map(|s| s.all().map(str::to_owned).collect())
                .unwrap_or_default();
            out.push(Node {
                path: path.clone(),
                regs,
                compatible,
            });
        }
        collect_nodes(c, &path, ancestors, out);
    }
    ancestors.pop();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("16m"), Ok(16 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size(" 2g "), Ok(2 << 30));
        assert_eq!(parse_size("0x1000"), Ok(0x1000));
        assert_eq!(parse_size("0x10M"), Ok(16 << 20));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("16383G"), Ok(16383 << 30));
        for bad in ["", "M", "16Q", "-1", "1.5G", "0x", "0xG", "16 M", "1e6", "ten"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains("is not a size"), "{bad:?}: {e}");
        }
        assert!(parse_size("17179869184G").unwrap_err().contains("too large"));
        assert!(parse_size("0x10000000000000000").is_err());
    }

    #[test]
    fn sizes_in_toml_are_integers_or_strings() {
        #[derive(Deserialize)]
        struct S {
            a: Size,
            b: Size,
        }
        let s: S = toml::from_str("a = 8192\nb = \"2M\"").unwrap();
        assert_eq!((s.a, s.b), (Size(8192), Size(2 << 20)));
        let e = toml::from_str::<S>("a = 1\nb = \"2X\"").err().unwrap();
        assert!(e.message().contains("`2X` is not a size"), "{e}");
    }

    #[test]
    fn cpus_are_indices_or_mpidr_tables_only() {
        #[derive(Deserialize, Debug)]
        struct C {
            cpus: Vec<CpuRef>,
        }
        let c: C = toml::from_str("cpus = [3, { mpidr = 0x100 }]").unwrap();
        assert_eq!(c.cpus, [CpuRef::Index(3), CpuRef::Mpidr { mpidr: 0x100 }]);
        for bad in [
            "cpus = [{ mpidr = 1, cluster = 0 }]",
            "cpus = [{ mpdir = 1 }]",
            "cpus = [\"0\"]",
            "cpus = [-1]",
        ] {
            let e = toml::from_str::<C>(bad).unwrap_err();
            assert!(e.message().contains("a CPU is an index"), "{bad}: {e}");
        }
    }

    #[test]
    fn parse_errors_name_the_vm_they_are_in() {
        let text = "board = \"x\"\n[[vm]]\nname = \"a\"\n[[vm]]\nname = \"b\"\n\n[[ vm.memory ]]\nsize = 1\n[qemu]\nsmp = 1\n";
        let at = |needle: &str| vm_at(text, text.find(needle).unwrap());
        assert_eq!(at("board"), None);
        assert_eq!(at("\"a\""), Some("a".into()));
        assert_eq!(at("[[vm]]\nname = \"b\""), Some("b".into()));
        assert_eq!(at("size"), Some("b".into()));
        assert_eq!(at("smp"), None);
        assert_eq!(location(text, Some(0..1)), " (line 1)");
        assert_eq!(location(text, Some(text.find("[[vm]]").unwrap()..0)), " (line 2)");
        assert_eq!(location(text, None), "");
    }

    fn vm(name: &str) -> ResolvedVm {
        ResolvedVm {
            name: name.into(),
            cpus: vec![1],
            memory: vec![(DEFAULT_RAM_IPA, 16 << 20, None, false)],
            kernel: b"kernel".to_vec(),
            initrd: None,
            dtb: None,
            bootargs: String::new(),
            console: Console::Virtual,
            psci: Psci::Hvc,
            devices: vec![],
            test_device: None,
            dma_unrestricted: false,
            scrub_at_boot: false,
        }
    }

    fn cells(p: Option<fdt::node::NodeProperty>) -> Vec<u32> {
        p.unwrap()
            .value
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn s<'a>(n: &fdt::node::FdtNode<'_, 'a>, p: &str) -> Option<&'a str> {
        n.property(p).and_then(|p| p.as_str())
    }

    #[test]
    fn blob_round_trip() {
        let mut a = vm("alpha");
        a.cpus = vec![0, 2];
        a.memory = vec![
            (0x5000_0000, 0x100_0000, Some(0x5000_0000), true),
            (0x1_2340_0000, 0x20_0000, None, false),
            (0x4000_0000, 0x1_0000_0000, Some(0x1_8000_0000), false),
        ];
        a.initrd = Some(b"initrd".to_vec());
        a.bootargs = "console=ttyAMA0 quiet".into();
        a.console = Console::Passthrough;
        a.psci = Psci::Smc;
        a.devices = vec!["/virtio_mmio@a000000".into(), "/virtio_mmio@a000200".into()];
        a.test_device = Some(0x1_0b00_0000);
        a.dma_unrestricted = true;
        let mut b = vm("beta");
        b.dtb = Some(b"dtb".to_vec());
        b.console = Console::None;
        let r = Resolved {
            vms: vec![a, b],
            console_prefix: false,
            qemu: QemuToml::default(),
            pages: vec![],
            links: vec![],
        };
        let blob = blob(&r).unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        let root = fdt.find_node("/").unwrap();
        assert_eq!(s(&root, "compatible"), Some("tessera,config-v1"));
        assert_eq!(cells(root.property("console-prefix")), [0]);

        let a = fdt.find_node("/vm@0").unwrap();
        assert_eq!(s(&a, "name"), Some("alpha"));
        assert_eq!(cells(a.property("cpus")), [0, 2]);
        assert_eq!(
            cells(a.property("memory")),
            [
                0,
                0x5000_0000,
                0,
                0x100_0000,
                0,
                0x5000_0000,
                3, // identity, fixed
                1,
                0x2340_0000,
                0,
                0x20_0000,
                0,
                0,
                0, // chosen at boot
                0,
                0x4000_0000,
                1,
                0,
                1,
                0x8000_0000,
                2, // fixed, not identity
            ]
        );
        assert_eq!(s(&a, "kernel"), Some("k0"));
        assert_eq!(s(&a, "initrd"), Some("i0"));
        assert!(a.property("dtb").is_none());
        assert_eq!(s(&a, "bootargs"), Some("console=ttyAMA0 quiet"));
        assert_eq!(s(&a, "console"), Some("passthrough"));
        assert_eq!(s(&a, "psci"), Some("smc"));
        assert_eq!(
            a.property("devices").unwrap().value,
            b"/virtio_mmio@a000000\0/virtio_mmio@a000200\0"
        );
        assert_eq!(cells(a.property("test-device")), [1, 0x0b00_0000]);
        assert!(a.property("dma-unrestricted").is_some());

        let b = fdt.find_node("/vm@1").unwrap();
        assert_eq!(s(&b, "name"), Some("beta"));
        assert_eq!(cells(b.property("cpus")), [1]);
        assert_eq!(
            cells(b.property("memory")),
            [0, 0x4000_0000, 0, 0x100_0000, 0, 0, 0]
        );
        assert_eq!(s(&b, "kernel"), Some("k1"));
        assert!(b.property("initrd").is_none());
        assert_eq!(s(&b, "dtb"), Some("d1"));
        assert_eq!(s(&b, "bootargs"), Some(""));
        assert_eq!(s(&b, "console"), Some("none"));
        assert_eq!(s(&b, "psci"), Some("hvc"));
        assert!(b.property("devices").is_none());
        assert!(b.property("test-device").is_none());
        assert!(b.property("dma-unrestricted").is_none());
        assert!(fdt.find_node("/vm@2").is_none());

        // The packed entries are the ones the blob names.
        let names: Vec<String> = package_entries(&r).unwrap().into_iter().map(|e| e.1).collect();
        assert_eq!(names, ["config", "k0", "i0", "k1", "d1"]);
    }
}
