//! Board discovery: everything the hypervisor needs to know about the board,
//! read from the device tree the boot loader passed in `x0`.
//!
//! Pure parsing, no hardware access, so it is tested on the host against
//! DTBs dumped from QEMU (`tests/dtbs/`).

use crate::mm::PhysRange;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use fdt::node::FdtNode;
use fdt::Fdt;

pub mod nops;
#[cfg(test)]
mod tests;

/// GIC architecture version.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GicVersion {
    V2,
    V3,
}

/// The interrupt controller and all its frames.
#[derive(Clone, Debug)]
pub struct Gic {
    pub version: GicVersion,
    pub path: String,
    /// GICD.
    pub dist: PhysRange,
    /// GICv3 redistributor regions (empty on GICv2).
    pub redists: Vec<PhysRange>,
    /// GICv2 CPU interface (GICC); GICv3's optional legacy one.
    pub cpu_if: Option<PhysRange>,
    /// Virtual interface control (GICH), GICv2 only.
    pub hyp_if: Option<PhysRange>,
    /// Virtual CPU interface (GICV), GICv2 only.
    pub vcpu_if: Option<PhysRange>,
    /// The maintenance interrupt's INTID.
    pub maintenance_irq: Option<u32>,
}

/// Architected timer PPIs as INTIDs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Timer {
    pub secure_phys: u32,
    pub phys: u32,
    pub virt: u32,
    pub hyp_phys: u32,
}

/// How to call the firmware (PSCI).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Conduit {
    Smc,
    Hvc,
}

/// The physical console UART.
#[derive(Clone, Debug)]
pub struct Console {
    pub path: String,
    pub regs: PhysRange,
    /// Its interrupt (an SPI), if the DTB gives one.
    pub irq: Option<u32>,
    /// How it was found: "stdout-path", "aliases/serial0" or "first arm,pl011".
    pub found_by: &'static str,
}

/// A physical CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpu {
    pub mpidr: u64,
    pub path: String,
}

/// What the board is, as far as the hypervisor cares.
#[derive(Clone, Debug)]
pub struct Platform {
    pub model: String,
    pub ram: Vec<PhysRange>,
    /// `/reserved-memory` children and `/memreserve/` entries.
    pub reserved: Vec<PhysRange>,
    pub cpus: Vec<Cpu>,
    pub gic: Gic,
    pub timer: Timer,
    pub console: Console,
    pub psci: Option<Conduit>,
    pub bootargs: String,
    /// Things worth saying at boot that did not stop it.
    pub warnings: Vec<String>,
}

/// Something essential the device tree does not say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoverError {
    /// Not a flattened device tree at all.
    BadDtb,
    /// No `device_type = "memory"` node with a usable `reg`.
    Memory,
    /// No CPU nodes under `/cpus`.
    Cpus,
    /// No GICv2/GICv3 node, or one whose `reg` lacks a frame.
    InterruptController(&'static str),
    /// No `arm,armv8-timer` node with four interrupts.
    Timer,
    /// No PL011 for the console.
    Console,
}

impl fmt::Display for DiscoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoverError::BadDtb => write!(f, "missing: a valid device tree in x0"),
            DiscoverError::Memory => write!(f, "missing: memory (no device_type = \"memory\" node with reg)"),
            DiscoverError::Cpus => write!(f, "missing: CPUs (no cpu nodes under /cpus)"),
            DiscoverError::InterruptController(why) => write!(
                f,
                "missing: interrupt controller ({why}; need a node compatible with arm,gic-v3, arm,gic-400 or arm,cortex-a15-gic)"
            ),
            DiscoverError::Timer => write!(f, "missing: architected timer (arm,armv8-timer with 4 interrupts)"),
            DiscoverError::Console => write!(f, "missing: console (no usable stdout-path, serial0 alias or arm,pl011 node)"),
        }
    }
}

const GICV3_COMPAT: &[&str] = &["arm,gic-v3"];
const GICV2_COMPAT: &[&str] = &[
    "arm,gic-400",
    "arm,cortex-a15-gic",
    "arm,cortex-a9-gic",
    "arm,arm11mp-gic",
];
const TIMER_COMPAT: &[&str] = &["arm,armv8-timer", "arm,armv7-timer"];
const PL011_COMPAT: &str = "arm,pl011";

/// What one walk over the whole tree finds: everything discovery needs, so
/// the tree is traversed once (the `fdt` crate re-parses nodes on every scan,
/// and a scan per question cost over a million instructions at boot).
#[derive(Default)]
struct Scan<'b, 'a> {
    memory: Vec<FdtNode<'b, 'a>>,
    gic3: Option<(FdtNode<'b, 'a>, String)>,
    gic2: Option<(FdtNode<'b, 'a>, String)>,
    timer: Option<FdtNode<'b, 'a>>,
    pl011: Vec<(FdtNode<'b, 'a>, String)>,
    psci: Option<FdtNode<'b, 'a>>,
}

impl<'b, 'a> Scan<'b, 'a> {
    fn of(dtb: &'b Fdt<'a>) -> Self {
        let mut scan = Scan::default();
        if let Some(root) = dtb.find_node("/") {
            let mut path = String::new();
            scan.walk(root, &mut path);
        }
        scan
    }

    fn walk(&mut self, node: FdtNode<'b, 'a>, path: &mut String) {
        for child in node.children() {
            let len = path.len();
            path.push('/');
            path.push_str(child.name);
            if prop_str(&child, "device_type") == Some("memory") {
                self.memory.push(child);
            }
            if let Some(compat) = child.compatible() {
                for c in compat.all() {
                    if GICV3_COMPAT.contains(&c) && self.gic3.is_none() {
                        self.gic3 = Some((child, path.clone()));
                    } else if GICV2_COMPAT.contains(&c) && self.gic2.is_none() {
                        self.gic2 = Some((child, path.clone()));
                    } else if TIMER_COMPAT.contains(&c) && self.timer.is_none() {
                        self.timer = Some(child);
                    } else if c == PL011_COMPAT {
                        self.pl011.push((child, path.clone()));
                    } else if PSCI_COMPAT.contains(&c) && self.psci.is_none() {
                        self.psci = Some(child);
                    }
                }
            }
            self.walk(child, path);
            path.truncate(len);
        }
    }

    /// The path of a PL011 found by the walk.
    fn pl011_path(&self, node: &FdtNode) -> Option<&str> {
        self.pl011
            .iter()
            .find(|(n, _)| n.name.as_ptr() == node.name.as_ptr())
            .map(|(_, p)| p.as_str())
    }
}

const PSCI_COMPAT: &[&str] = &["arm,psci-1.0", "arm,psci-0.2", "arm,psci"];

/// Reads the board description out of `dtb`.
pub fn discover(dtb: &Fdt) -> Result<Platform, DiscoverError> {
    let scan = Scan::of(dtb);
    let mut warnings = Vec::new();
    let model = dtb
        .find_node("/")
        .and_then(|n| n.property("model"))
        .and_then(|p| p.as_str())
        .unwrap_or("unknown board")
        .to_string();

    let ram: Vec<PhysRange> = scan
        .memory
        .iter()
        .flat_map(|n| reg_ranges(*n))
        .filter(|r| r.size > 0)
        .collect();
    if ram.is_empty() {
        return Err(DiscoverError::Memory);
    }

    let mut reserved: Vec<PhysRange> = dtb
        .memory_reservations()
        .map(|r| PhysRange::new(r.address() as u64, r.size() as u64))
        .collect();
    if let Some(rm) = dtb.find_node("/reserved-memory") {
        reserved.extend(rm.children().flat_map(reg_ranges));
    }

    let cpus = discover_cpus(dtb)?;
    let gic = discover_gic(&scan)?;
    let timer = discover_timer(&scan)?;
    let console = discover_console(dtb, &scan, &mut warnings)?;
    let psci = scan
        .psci
        .and_then(|n| prop_str(&n, "method"))
        .and_then(|m| match m {
            "smc" => Some(Conduit::Smc),
            "hvc" => Some(Conduit::Hvc),
            _ => None,
        });
    if psci.is_none() {
        warnings.push("no PSCI node with method smc/hvc: secondary CPUs stay off".to_string());
    }
    let bootargs = dtb
        .find_node("/chosen")
        .and_then(|c| prop_str(&c, "bootargs"))
        .unwrap_or("")
        .to_string();

    Ok(Platform {
        model,
        ram,
        reserved,
        cpus,
        gic,
        timer,
        console,
        psci,
        bootargs,
        warnings,
    })
}

fn prop_str<'a>(n: &FdtNode<'_, 'a>, name: &str) -> Option<&'a str> {
    n.property(name).and_then(|p| p.as_str())
}

/// Big-endian 32-bit cells of a property.
fn cells<'a>(n: &FdtNode<'_, 'a>, name: &str) -> Option<impl Iterator<Item = u32> + 'a> {
    let v = n.property(name)?.value;
    Some(
        v.chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])),
    )
}

fn reg_ranges(n: FdtNode<'_, '_>) -> Vec<PhysRange> {
    match n.reg() {
        Some(regs) => regs
            .map(|r| PhysRange::new(r.starting_address as u64, r.size.unwrap_or(0) as u64))
            .collect(),
        None => Vec::new(),
    }
}

fn node_path(dtb: &Fdt, want: &FdtNode) -> String {
    // fdt 0.1 does not keep paths; rebuild it for the few nodes we name.
    fn walk(n: FdtNode, target: *const u8, prefix: &str) -> Option<String> {
        for c in n.children() {
            let p = alloc::format!("{prefix}/{}", c.name);
            if c.name.as_ptr() == target {
                return Some(p);
            }
            if let Some(found) = walk(c, target, &p) {
                return Some(found);
            }
        }
        None
    }
    dtb.find_node("/")
        .and_then(|root| walk(root, want.name.as_ptr(), ""))
        .unwrap_or_else(|| want.name.to_string())
}

fn is_compatible(n: &FdtNode, with: &[&str]) -> bool {
    n.compatible().is_some_and(|c| c.all().any(|s| with.contains(&s)))
}

fn discover_cpus(dtb: &Fdt) -> Result<Vec<Cpu>, DiscoverError> {
    let cpus_node = dtb.find_node("/cpus").ok_or(DiscoverError::Cpus)?;
    let addr_cells = cells(&cpus_node, "#address-cells")
        .and_then(|mut c| c.next())
        .unwrap_or(1);
    let mut cpus = Vec::new();
    for c in cpus_node.children() {
        if prop_str(&c, "device_type") != Some("cpu") {
            continue;
        }
        let Some(reg) = cells(&c, "reg").map(|r| r.collect::<Vec<u32>>()) else {
            continue;
        };
        let mpidr = match (addr_cells, reg.as_slice()) {
            (2, [hi, lo, ..]) => (u64::from(*hi) << 32) | u64::from(*lo),
            (_, [lo, ..]) => u64::from(*lo),
            _ => continue,
        };
        if prop_str(&c, "status").is_some_and(|s| s != "okay" && s != "ok") {
            continue;
        }
        cpus.push(Cpu {
            mpidr,
            path: alloc::format!("/cpus/{}", c.name),
        });
    }
    if cpus.is_empty() {
        return Err(DiscoverError::Cpus);
    }
    Ok(cpus)
}

/// Decodes a GIC `interrupts` specifier (type, number, flags) to an INTID.
pub fn gic_intid(kind: u32, number: u32) -> u32 {
    match kind {
        1 => number + 16, // PPI
        _ => number + 32, // SPI
    }
}

fn discover_gic(scan: &Scan) -> Result<Gic, DiscoverError> {
    let ((node, path), version) = if let Some(n) = scan.gic3.clone() {
        (n, GicVersion::V3)
    } else if let Some(n) = scan.gic2.clone() {
        (n, GicVersion::V2)
    } else {
        return Err(DiscoverError::InterruptController("no GIC node"));
    };
    let regs = reg_ranges(node);
    let dist = *regs
        .first()
        .ok_or(DiscoverError::InterruptController("GIC node has no reg"))?;
    let maintenance_irq = cells(&node, "interrupts").and_then(|mut c| {
        let kind = c.next()?;
        let num = c.next()?;
        Some(gic_intid(kind, num))
    });
    match version {
        GicVersion::V3 => {
            let n_redist = cells(&node, "#redistributor-regions")
                .and_then(|mut c| c.next())
                .unwrap_or(1) as usize;
            let redists: Vec<PhysRange> = regs.iter().skip(1).take(n_redist).copied().collect();
            if redists.is_empty() {
                return Err(DiscoverError::InterruptController(
                    "GICv3 node has no redistributor region",
                ));
            }
            let rest = &regs[(1 + n_redist).min(regs.len())..];
            Ok(Gic {
                version,
                path,
                dist,
                redists,
                cpu_if: rest.first().copied(),
                hyp_if: rest.get(1).copied(),
                vcpu_if: rest.get(2).copied(),
                maintenance_irq,
            })
        }
        GicVersion::V2 => {
            let cpu_if = *regs
                .get(1)
                .ok_or(DiscoverError::InterruptController("GICv2 node lacks GICC"))?;
            Ok(Gic {
                version,
                path,
                dist,
                redists: Vec::new(),
                cpu_if: Some(cpu_if),
                hyp_if: regs.get(2).copied(),
                vcpu_if: regs.get(3).copied(),
                maintenance_irq,
            })
        }
    }
}

fn discover_timer(scan: &Scan) -> Result<Timer, DiscoverError> {
    let node = scan.timer.ok_or(DiscoverError::Timer)?;
    let c: Vec<u32> = cells(&node, "interrupts").ok_or(DiscoverError::Timer)?.collect();
    // #interrupt-cells is 3 for both GIC bindings: (type, number, flags).
    let ids: Vec<u32> = c.chunks_exact(3).map(|s| gic_intid(s[0], s[1])).collect();
    if ids.len() < 4 {
        return Err(DiscoverError::Timer);
    }
    Ok(Timer {
        secure_phys: ids[0],
        phys: ids[1],
        virt: ids[2],
        hyp_phys: ids[3],
    })
}

fn console_at(dtb: &Fdt, scan: &Scan, node: FdtNode, found_by: &'static str) -> Option<Console> {
    if !is_compatible(&node, &[PL011_COMPAT]) || prop_str(&node, "status").is_some_and(|s| s == "disabled") {
        return None;
    }
    let regs = *reg_ranges(node).first()?;
    let irq = cells(&node, "interrupts").and_then(|mut c| {
        let kind = c.next()?;
        let num = c.next()?;
        Some(gic_intid(kind, num))
    });
    let path = scan
        .pl011_path(&node)
        .map(|p| p.to_string())
        .unwrap_or_else(|| node_path(dtb, &node));
    Some(Console {
        path,
        regs,
        irq,
        found_by,
    })
}

fn discover_console(dtb: &Fdt, scan: &Scan, warnings: &mut Vec<String>) -> Result<Console, DiscoverError> {
    let resolve = |name: &str| -> Option<FdtNode> {
        if name.starts_with('/') {
            dtb.find_node(name)
        } else {
            dtb.aliases()?.resolve_node(name)
        }
    };
    let stdout = dtb.find_node("/chosen").and_then(|c| prop_str(&c, "stdout-path"));
    match stdout {
        Some(path) => {
            let name = path.split(':').next().unwrap_or(path);
            match resolve(name).and_then(|n| console_at(dtb, scan, n, "stdout-path")) {
                Some(c) => return Ok(c),
                None => warnings.push(alloc::format!(
                    "/chosen/stdout-path \"{path}\" is not a usable PL011"
                )),
            }
        }
        None => warnings.push("no /chosen/stdout-path".to_string()),
    }
    if let Some(c) = resolve("serial0").and_then(|n| console_at(dtb, scan, n, "aliases/serial0")) {
        return Ok(c);
    }
    scan.pl011
        .iter()
        .find_map(|(n, _)| console_at(dtb, scan, *n, "first arm,pl011"))
        .ok_or(DiscoverError::Console)
}

/// RAM ranges straight from the DTB, without allocating: what the EL2 map
/// needs before the heap exists.
pub fn memory_ranges<'a>(dtb: &'a Fdt<'a>) -> impl Iterator<Item = PhysRange> + 'a {
    // Memory nodes sit at the root (Devicetree spec 3.4): no deeper scan.
    dtb.find_node("/")
        .into_iter()
        .flat_map(|root| root.children())
        .filter(|n| prop_str(n, "device_type") == Some("memory"))
        .filter_map(|n| n.reg())
        .flatten()
        .map(|r| PhysRange::new(r.starting_address as u64, r.size.unwrap_or(0) as u64))
        .filter(|r| r.size > 0)
}

/// A device to pass through: its MMIO ranges and its SPIs (as INTIDs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub regs: Vec<PhysRange>,
    pub spis: Vec<u32>,
}

/// The node at exactly `path` (no alias or unit-address guessing).
pub fn node_at<'b, 'a>(dtb: &'b Fdt<'a>, path: &str) -> Option<FdtNode<'b, 'a>> {
    let mut node = dtb.find_node("/")?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        node = node.children().find(|c| c.name == part)?;
    }
    Some(node)
}

/// The device at `path`: its `reg` ranges and the SPIs of its `interrupts`
/// (GIC three-cell specifiers; PPIs cannot be passed through).
pub fn device(dtb: &Fdt, path: &str) -> Option<Device> {
    let node = node_at(dtb, path)?;
    let regs = reg_ranges(node);
    let spis = cells(&node, "interrupts")
        .map(|c| {
            let c: Vec<u32> = c.collect();
            c.chunks_exact(3)
                .filter(|s| s[0] == 0)
                .map(|s| s[1] + 32)
                .collect()
        })
        .unwrap_or_default();
    Some(Device { regs, spis })
}

/// Base of the first PL011 in the DTB, without allocating: somewhere to say
/// why boot stopped before the console is set up.
pub fn first_uart(dtb: &Fdt) -> Option<usize> {
    let node = dtb.find_compatible(&[PL011_COMPAT])?;
    let r = node.reg()?.next()?;
    Some(r.starting_address as usize)
}

impl Platform {
    /// Index in [`Platform::cpus`] of the CPU with this MPIDR.
    pub fn cpu_index(&self, mpidr: u64) -> Option<usize> {
        self.cpus.iter().position(|c| c.mpidr == mpidr)
    }

    /// Total RAM in bytes.
    pub fn ram_bytes(&self) -> u64 {
        self.ram.iter().map(|r| r.size).sum()
    }

    /// Whether the boot arguments contain `key=value` or the bare flag `key`.
    pub fn boot_option(&self, key: &str) -> Option<&str> {
        self.bootargs
            .split_whitespace()
            .find_map(|w| match w.split_once('=') {
                Some((k, v)) if k == key => Some(v),
                None if w == key => Some(""),
                _ => None,
            })
    }
}
