//! Board discovery: everything the hypervisor needs to know about the board,
//! read from the device tree the boot loader passed in `x0`.
//!
//! Pure parsing, no hardware access, so it is tested on the host against
//! DTBs dumped from QEMU (`tests/dtbs/`).

pub use crate::drivers::uart::Kind as UartKind;
use crate::dt::{Node, Tree};
use crate::mm::PhysRange;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
pub use enable::EnableMethod;
use ranges::DtNode;

pub mod enable;
#[cfg(test)]
pub mod nops;
pub mod ranges;
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
    /// GICv2 CPU interface (GICC), GICv3's optional legacy one: an 8 KiB
    /// window with GICC_DIR at 0x1000 (see [`contiguous_cpu_interface`]).
    pub cpu_if: Option<PhysRange>,
    /// Virtual interface control (GICH), GICv2 only.
    pub hyp_if: Option<PhysRange>,
    /// Virtual CPU interface (GICV), GICv2 only: 8 KiB, contiguous like
    /// `cpu_if`, which is what a guest's GICC is mapped to.
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
    /// Which driver runs it.
    pub kind: UartKind,
    pub path: String,
    pub regs: PhysRange,
    /// Its interrupt (an SPI), if the DTB gives one.
    pub irq: Option<u32>,
    /// How it was found: "tessera.console" (the boot argument),
    /// "stdout-path", "aliases/serialN" or "compatible".
    pub found_by: &'static str,
}

/// A physical CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpu {
    pub mpidr: u64,
    pub path: String,
    /// How the hypervisor starts it.
    pub enable: EnableMethod,
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
    /// No UART Tessera drives for the console.
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
            DiscoverError::Console => write!(f, "missing: console (no stdout-path, serialN alias or node that is a PL011, Cadence or i.MX UART with status okay)"),
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

/// Whether a node is usable: no `status`, or "okay" (or the older "ok").
/// Everything else ("disabled", "reserved", "fail", ...) is skipped, along
/// with the node's children.
pub fn is_okay(n: &Node) -> bool {
    n.is_okay()
}

/// Property `name` of any node as a string (trailing NULs dropped).
fn raw_str<'a>(n: &impl DtNode<'a>, name: &str) -> Option<&'a str> {
    n.prop(name)
        .and_then(|v| core::str::from_utf8(v).ok())
        .map(|s| s.trim_end_matches('\0'))
}

/// [`is_okay`] for any node.
fn raw_okay<'a>(n: &impl DtNode<'a>) -> bool {
    raw_str(n, "status").is_none_or(|s| s == "okay" || s == "ok")
}

/// The UART driver for one of any node's compatible strings.
fn raw_uart<'a>(n: &impl DtNode<'a>) -> Option<UartKind> {
    n.prop("compatible")?
        .split(|&b| b == 0)
        .filter_map(|c| core::str::from_utf8(c).ok())
        .find_map(UartKind::of_compatible)
}

/// A node the walk found, with its path and its `reg` translated to CPU
/// physical addresses.
#[derive(Clone)]
struct Found<'b, 'a> {
    node: Node<'b, 'a>,
    path: String,
    regs: Vec<PhysRange>,
}

/// What one walk over the whole tree finds: everything discovery needs, so
/// the tree is traversed once (the `fdt` crate re-parsed nodes on every scan,
/// and a scan per question cost over a million instructions at boot).
/// Nodes whose status is not okay are not looked at, nor their children,
/// nor the children of nodes that are no bus (no `ranges`).
#[derive(Default)]
struct Scan<'b, 'a> {
    memory: Vec<Found<'b, 'a>>,
    gic3: Option<Found<'b, 'a>>,
    gic2: Option<Found<'b, 'a>>,
    timer: Option<Node<'b, 'a>>,
    uarts: Vec<(UartKind, Found<'b, 'a>)>,
    psci: Option<Node<'b, 'a>>,
    /// Children of the root looked up by name, found on the way (each
    /// `find_node` would be another pass over the tree).
    chosen: Option<Node<'b, 'a>>,
    aliases: Option<Node<'b, 'a>>,
    cpus: Option<Node<'b, 'a>>,
    reserved_memory: Option<Node<'b, 'a>>,
    /// Why `reg` entries of the nodes found were left out (no bus maps them).
    untranslated: Vec<String>,
}

impl<'b, 'a> Scan<'b, 'a> {
    fn of(dtb: &'b Tree<'a>) -> Self {
        let mut scan = Scan::default();
        let root = dtb.root();
        let mut path = String::new();
        let mut ancestors = alloc::vec![root];
        scan.walk(root, &mut path, &mut ancestors);
        scan
    }

    fn walk(&mut self, node: Node<'b, 'a>, path: &mut String, ancestors: &mut Vec<Node<'b, 'a>>) {
        for child in node.children() {
            if !is_okay(&child) {
                continue;
            }
            if ancestors.len() == 1 {
                let slot = match child.name {
                    "chosen" => Some(&mut self.chosen),
                    "aliases" => Some(&mut self.aliases),
                    "cpus" => Some(&mut self.cpus),
                    "reserved-memory" => Some(&mut self.reserved_memory),
                    _ => None,
                };
                if let Some(slot) = slot {
                    slot.get_or_insert(child);
                }
            }
            let len = path.len();
            path.push('/');
            path.push_str(child.name);
            let untranslated = &mut self.untranslated;
            let mut found = || {
                let mut regs = Vec::new();
                for (i, r) in ranges::regs_checked(child, ancestors).enumerate() {
                    match r {
                        Ok(r) => regs.push(r),
                        Err(why) => untranslated.push(untranslatable(path, i, ancestors, why)),
                    }
                }
                Found {
                    node: child,
                    path: path.clone(),
                    regs,
                }
            };
            if prop_str(&child, "device_type") == Some("memory") {
                self.memory.push(found());
            }
            if let Some(compat) = child.compatible() {
                for c in compat.all() {
                    if GICV3_COMPAT.contains(&c) && self.gic3.is_none() {
                        self.gic3 = Some(found());
                    } else if GICV2_COMPAT.contains(&c) && self.gic2.is_none() {
                        self.gic2 = Some(found());
                    } else if TIMER_COMPAT.contains(&c) && self.timer.is_none() {
                        self.timer = Some(child);
                    } else if let Some(kind) = UartKind::of_compatible(c) {
                        self.uarts.push((kind, found()));
                        break;
                    } else if PSCI_COMPAT.contains(&c) && self.psci.is_none() {
                        self.psci = Some(child);
                    }
                }
            }
            // Only a bus with `ranges` has memory-mapped children
            // (Devicetree spec 2.3.8): below any other node (an I2C or SPI
            // controller, pin and clock trees, /cpus) nothing discovery looks
            // for can sit, and skipping those subtrees makes the walk several
            // times cheaper on a real board's tree.
            if child.property("ranges").is_some() {
                ancestors.push(child);
                self.walk(child, path, ancestors);
                ancestors.pop();
            }
            path.truncate(len);
        }
    }

    /// The UART the walk found at exactly `path`.
    fn uart_at(&self, path: &str) -> Option<&(UartKind, Found<'b, 'a>)> {
        self.uarts.iter().find(|(_, f)| f.path == path)
    }
}

const PSCI_COMPAT: &[&str] = &["arm,psci-1.0", "arm,psci-0.2", "arm,psci"];

/// Reads the board description out of `dtb`.
pub fn discover(dtb: &Tree) -> Result<Platform, DiscoverError> {
    let scan = Scan::of(dtb);
    let mut warnings = scan.untranslated.clone();
    let model = dtb.root().str("model").unwrap_or("unknown board").to_string();

    let ram: Vec<PhysRange> = scan
        .memory
        .iter()
        .flat_map(|f| f.regs.iter().copied())
        .filter(|r| r.size > 0)
        .collect();
    if ram.is_empty() {
        return Err(DiscoverError::Memory);
    }

    let mut reserved: Vec<PhysRange> = dtb
        .memory_reservations()
        .map(|(base, size)| PhysRange::new(base, size))
        .collect();
    if let Some(rm) = scan.reserved_memory {
        let chain = [dtb.root(), rm];
        for child in rm.children().filter(is_okay) {
            reserved.extend(ranges::regs(child, &chain));
        }
    }

    let cpus = discover_cpus(scan.cpus, &ram, &mut warnings)?;
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
    let needs_psci = cpus.len() > 1 && cpus.iter().any(|c| c.enable == EnableMethod::Psci);
    if psci.is_none() && needs_psci {
        warnings.push("no PSCI node with method smc/hvc: CPUs without a spin table stay off".to_string());
    }
    let bootargs = scan
        .chosen
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

fn prop_str<'a>(n: &Node<'_, 'a>, name: &str) -> Option<&'a str> {
    n.str(name)
}

/// Big-endian 32-bit cells of a property.
fn cells<'a>(n: &Node<'_, 'a>, name: &str) -> Option<impl Iterator<Item = u32> + 'a> {
    n.property(name).map(|p| p.cells())
}

fn discover_cpus(
    cpus_node: Option<Node>,
    ram: &[PhysRange],
    warnings: &mut Vec<String>,
) -> Result<Vec<Cpu>, DiscoverError> {
    let cpus_node = cpus_node.ok_or(DiscoverError::Cpus)?;
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
        let path = alloc::format!("/cpus/{}", c.name);
        let raw = |name: &str| c.property(name).map(|p| p.value);
        let enable =
            enable::parse(&path, raw("enable-method"), raw("cpu-release-addr"), ram).unwrap_or_else(|why| {
                warnings.push(why);
                EnableMethod::Off
            });
        cpus.push(Cpu { mpidr, path, enable });
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
    let (Found { node, path, regs }, version) = if let Some(n) = scan.gic3.clone() {
        (n, GicVersion::V3)
    } else if let Some(n) = scan.gic2.clone() {
        (n, GicVersion::V2)
    } else {
        return Err(DiscoverError::InterruptController("no GIC node"));
    };
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
                cpu_if: Some(contiguous_cpu_interface(cpu_if)),
                hyp_if: regs.get(2).copied(),
                vcpu_if: regs.get(3).copied().map(contiguous_cpu_interface),
                maintenance_irq,
            })
        }
    }
}

/// A GIC-400 CPU interface (GICC, or the virtual one, GICV) is two 4 KiB
/// pages, the second holding GICC_DIR at 0x1000. Some SoCs (ZynqMP) wire it
/// so that each page repeats over 64 KiB, and their DTBs give the frame as
/// 128 KiB: page 0 fills 0x0..0x10000, page 1 0x10000..0x20000, so the base
/// itself has no page 1 behind it. The two pages are contiguous only at
/// base + 0xf000 (what Linux reports as "Adjusting CPU interface base").
/// Decided from the `reg` size alone: 128 KiB is what this wiring looks
/// like, and nothing else describes a GICv2 CPU interface that way.
pub fn contiguous_cpu_interface(r: PhysRange) -> PhysRange {
    if r.size == 0x2_0000 {
        PhysRange::new(r.base.0 + 0xf000, 0x2000)
    } else {
        r
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

fn first_intid(n: &Node) -> Option<u32> {
    cells(n, "interrupts").and_then(|mut c| {
        let kind = c.next()?;
        let num = c.next()?;
        Some(gic_intid(kind, num))
    })
}

fn console_of(found: &(UartKind, Found), found_by: &'static str) -> Option<Console> {
    let (kind, f) = found;
    Some(Console {
        kind: *kind,
        path: f.path.clone(),
        regs: *f.regs.first()?,
        irq: first_intid(&f.node),
        found_by,
    })
}

/// `/aliases` entries tried, in order, when stdout-path does not help.
const SERIAL_ALIASES: [&str; 8] = [
    "serial0", "serial1", "serial2", "serial3", "serial4", "serial5", "serial6", "serial7",
];
const SERIAL_FOUND_BY: [&str; 8] = [
    "aliases/serial0",
    "aliases/serial1",
    "aliases/serial2",
    "aliases/serial3",
    "aliases/serial4",
    "aliases/serial5",
    "aliases/serial6",
    "aliases/serial7",
];

/// The absolute path `name` stands for: itself if it starts with `/`, else
/// the alias it names (stdout-path may be either, with `:options` after).
fn resolve_path<'a>(aliases: Option<impl DtNode<'a>>, name: &'a str) -> Option<&'a str> {
    let name = name.split(':').next().unwrap_or(name);
    if name.starts_with('/') {
        Some(name)
    } else {
        raw_str(&aliases?, name)
    }
}

/// The boot argument that picks the hypervisor's console over the device
/// tree's `stdout-path`: a node path or an `/aliases` name.
pub const CONSOLE_OPTION: &str = "tessera.console";

/// The value of `key=value` among whitespace-separated `args`.
fn option_in<'a>(args: &'a str, key: &str) -> Option<&'a str> {
    args.split_whitespace()
        .find_map(|w| w.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
}

fn discover_console(dtb: &Tree, scan: &Scan, warnings: &mut Vec<String>) -> Result<Console, DiscoverError> {
    // The walk's paths spell every unit address; a path written without
    // one (allowed when unambiguous) is matched by following it instead.
    let uart = |path: &str| {
        scan.uart_at(path).or_else(|| {
            let node = ranges::with_node(dtb.root(), path, |n, _| n.index())?;
            scan.uarts.iter().find(|(_, f)| f.node.index() == node)
        })
    };
    let bootargs = scan.chosen.and_then(|c| prop_str(&c, "bootargs")).unwrap_or("");
    if let Some(chosen) = option_in(bootargs, CONSOLE_OPTION) {
        match resolve_path(scan.aliases, chosen)
            .and_then(uart)
            .and_then(|u| console_of(u, CONSOLE_OPTION))
        {
            Some(c) => return Ok(c),
            None => warnings.push(alloc::format!(
                "{CONSOLE_OPTION}={chosen}: not a UART Tessera drives with status okay; the device tree's console is used"
            )),
        }
    }
    let stdout = scan.chosen.and_then(|c| prop_str(&c, "stdout-path"));
    match stdout {
        Some(s) => match resolve_path(scan.aliases, s)
            .and_then(uart)
            .and_then(|u| console_of(u, "stdout-path"))
        {
            Some(c) => return Ok(c),
            None => warnings.push(alloc::format!(
                "/chosen/stdout-path \"{s}\" is not a UART Tessera drives with status okay"
            )),
        },
        None => warnings.push("no /chosen/stdout-path".to_string()),
    }
    for (alias, found_by) in SERIAL_ALIASES.iter().zip(SERIAL_FOUND_BY) {
        if let Some(c) = resolve_path(scan.aliases, alias)
            .and_then(uart)
            .and_then(|u| console_of(u, found_by))
        {
            return Ok(c);
        }
    }
    scan.uarts
        .iter()
        .find_map(|u| console_of(u, "compatible"))
        .ok_or(DiscoverError::Console)
}

/// RAM ranges straight from the DTB, without allocating: what the EL2 map
/// needs before the heap exists. Memory nodes whose status is not okay
/// (QEMU's `secure=on` adds a disabled one for the secure RAM) are not RAM.
pub fn memory_ranges<'a, N: DtNode<'a> + 'a>(root: N) -> impl Iterator<Item = PhysRange> + 'a {
    // Memory nodes sit at the root (Devicetree spec 3.4): no deeper scan,
    // and addresses are the root's, untranslated.
    let (ac, sc) = ranges::cell_sizes(&root);
    root.children()
        .filter(|n| raw_str(n, "device_type") == Some("memory") && raw_okay(n))
        .flat_map(move |n| ranges::split_reg(n.prop("reg").unwrap_or(&[]), ac, sc))
        .filter(|r| r.size > 0)
}

/// A device to pass through: its MMIO ranges and its SPIs (as INTIDs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub regs: Vec<PhysRange>,
    pub spis: Vec<u32>,
}

/// The node at exactly `path` (no alias or unit-address guessing) and its
/// ancestors, root first.
fn node_with_ancestors<'b, 'a>(dtb: &'b Tree<'a>, path: &str) -> Option<(Node<'b, 'a>, Vec<Node<'b, 'a>>)> {
    let node = dtb.node_at(path)?;
    Some((node, node.ancestors()))
}

/// The node at exactly `path` (no alias or unit-address guessing).
pub fn node_at<'b, 'a>(dtb: &'b Tree<'a>, path: &str) -> Option<Node<'b, 'a>> {
    dtb.node_at(path)
}

/// Why [`device`] has no device to give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// No node at that path.
    NotFound(String),
    /// A `reg` entry of the node has no CPU address: the message names the
    /// node, the entry and the bus that does not map it.
    Untranslatable(String),
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::NotFound(path) => write!(f, "device {path} is not in the board's DTB"),
            DeviceError::Untranslatable(why) => write!(f, "{why}"),
        }
    }
}

/// The path of `ancestors[..=i]`'s last node.
fn path_of(ancestors: &[Node], i: usize) -> String {
    let mut p = String::new();
    for n in ancestors.iter().take(i + 1).skip(1) {
        p.push('/');
        p.push_str(n.name);
    }
    if p.is_empty() {
        p.push('/');
    }
    p
}

/// Says why entry `index` of `path`'s `reg` has no CPU address.
fn untranslatable(path: &str, index: usize, ancestors: &[Node], why: ranges::Untranslatable) -> String {
    match why {
        ranges::Untranslatable::NoRanges { bus } => alloc::format!(
            "{path}: reg[{index}] is not memory mapped: {} has no `ranges`",
            path_of(ancestors, bus)
        ),
        ranges::Untranslatable::OutsideRanges { bus, addr } => alloc::format!(
            "{path}: reg[{index}] address {addr:#x} is outside every `ranges` window of {}",
            path_of(ancestors, bus)
        ),
        ranges::Untranslatable::Malformed => alloc::format!(
            "{path}: reg does not fit the parent's #address-cells/#size-cells (or is wider than 64 bits)"
        ),
    }
}

/// The device at `path`: its `reg` ranges as CPU physical addresses
/// (translated through the buses above it) and the SPIs of its
/// `interrupts` (GIC three-cell specifiers; PPIs cannot be passed through).
/// Its `status` is not looked at: a config may give a VM a device the
/// board's own tree leaves disabled. A `reg` entry that no bus above maps
/// is an error naming the node: mapping the rest would hand a VM part of
/// a device.
pub fn device(dtb: &Tree, path: &str) -> Result<Device, DeviceError> {
    let (node, ancestors) =
        node_with_ancestors(dtb, path).ok_or_else(|| DeviceError::NotFound(path.to_string()))?;
    let mut regs = Vec::new();
    for (i, r) in ranges::regs_checked(node, &ancestors).enumerate() {
        regs.push(r.map_err(|why| DeviceError::Untranslatable(untranslatable(path, i, &ancestors, why)))?);
    }
    let spis = cells(&node, "interrupts")
        .map(|c| {
            let c: Vec<u32> = c.collect();
            c.chunks_exact(3)
                .filter(|s| s[0] == 0)
                .map(|s| s[1] + 32)
                .collect()
        })
        .unwrap_or_default();
    Ok(Device { regs, spis })
}

/// The console UART, without allocating: somewhere to say why boot stopped
/// before the console is set up. The same order as [`discover`]:
/// `tessera.console=`, stdout-path, then the serialN aliases, then the
/// first UART Tessera drives.
pub fn early_console<'a, N: DtNode<'a>>(root: N) -> Option<(UartKind, u64)> {
    let at = |path: &str| {
        ranges::with_node(root, path, |n, chain| {
            if !raw_okay(&n) || !chain.iter().all(raw_okay) {
                return None;
            }
            let kind = raw_uart(&n)?;
            Some((kind, ranges::regs(n, chain).next()?.base.0))
        })
        .flatten()
    };
    let chosen = ranges::with_node(root, "/chosen", |n, _| n);
    let stdout = chosen.and_then(|c| raw_str(&c, "stdout-path"));
    let aliases = ranges::with_node(root, "/aliases", |n, _| n);
    let option = chosen
        .and_then(|c| raw_str(&c, "bootargs"))
        .and_then(|a| option_in(a, CONSOLE_OPTION));
    if let Some(c) = option.and_then(|s| resolve_path(aliases, s)).and_then(at) {
        return Some(c);
    }
    if let Some(c) = stdout.and_then(|s| resolve_path(aliases, s)).and_then(at) {
        return Some(c);
    }
    if let Some(c) = SERIAL_ALIASES
        .iter()
        .find_map(|a| resolve_path(aliases, a).and_then(at))
    {
        return Some(c);
    }
    let mut chain = [root; ranges::MAX_DEPTH];
    first_uart_below(root, &mut chain, 1)
}

/// Depth-first: the first okay UART Tessera drives under `node`, whose
/// ancestors are `chain[..depth - 1]` and which is `chain[depth - 1]`.
fn first_uart_below<'a, N: DtNode<'a>>(
    node: N,
    chain: &mut [N; ranges::MAX_DEPTH],
    depth: usize,
) -> Option<(UartKind, u64)> {
    if depth >= ranges::MAX_DEPTH {
        return None;
    }
    chain[depth - 1] = node;
    for child in node.children().filter(raw_okay) {
        if let Some(kind) = raw_uart(&child) {
            if let Some(r) = ranges::regs(child, &chain[..depth]).next() {
                return Some((kind, r.base.0));
            }
        }
        if let Some(found) = first_uart_below(child, chain, depth + 1) {
            return Some(found);
        }
    }
    None
}

impl Platform {
    /// Index in [`Platform::cpus`] of the CPU with this MPIDR.
    pub fn cpu_index(&self, mpidr: u64) -> Option<usize> {
        self.cpus.iter().position(|c| c.mpidr == mpidr)
    }

    /// The pages holding the spin tables' release addresses: kept from
    /// the frame allocator (parked CPUs keep reading them).
    pub fn release_pages(&self) -> Vec<PhysRange> {
        let mut pages: Vec<PhysRange> = self
            .cpus
            .iter()
            .filter_map(|c| match c.enable {
                EnableMethod::SpinTable { release_addr } => Some(enable::release_page(release_addr)),
                _ => None,
            })
            .collect();
        pages.dedup();
        pages
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
