//! The device tree a guest boots with.
//!
//! [`generate`] writes a small QEMU-`virt`-like machine from a [`GuestDtbSpec`]:
//! CPUs, RAM, the (emulated) GIC, the architected timer, PSCI, an optional
//! virtual PL011, `/chosen`, and copies of the board's passed-through devices
//! taken from the host DTB. It is pure logic: no hardware access, no global
//! state, tested on the host by parsing the blob back with `fdt`. The host
//! tree is a [`Tree`], the board DTB's index.
//!
//! Passed-through devices keep their node name, physical `reg` and physical
//! SPI numbers (the hypervisor routes each physical SPI to the same virtual
//! INTID). References into the host tree cannot survive the copy, so they are
//! rewritten where the guest has an equivalent (interrupt parent: the guest
//! GIC; clocks: the guest's fixed `apb-pclk`), dropped where they only describe
//! set-up the guest cannot redo anyway (pin control, supplies, power domains,
//! IOMMU/MSI links), and refused where the device would not work without them
//! (DMA channels, resets, GPIOs, PHYs, `interrupts-extended`, interrupt maps).

use crate::dt::{Node, Tree};
use crate::mm::addr::GuestPhysAddr;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use vm_fdt::FdtWriter;

/// Phandle of the guest GIC.
pub const GIC_PHANDLE: u32 = 1;
/// Phandle of the guest's fixed `apb-pclk` clock.
pub const CLOCK_PHANDLE: u32 = 2;
/// Frequency of `apb-pclk`, as on QEMU `virt`.
const APB_PCLK_HZ: u32 = 24_000_000;

/// GIC interrupt specifier: type cell values and the level-high trigger flag.
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
const IRQ_LEVEL_HIGH: u32 = 4;
/// Interrupt IDs (GIC architecture): PPIs are 16..32, SPIs 32..1020.
const PPI_BASE: u32 = 16;
const SPI_BASE: u32 = 32;
const SPI_END: u32 = 1020;

/// A GICv2 CPU-interface target list holds 8 CPUs; MPIDR Aff0 holds 256.
const GICV2_MAX_VCPUS: usize = 8;
const GICV3_MAX_VCPUS: usize = 256;

/// Host interrupt controllers whose 3-cell specifiers the guest GIC understands.
const HOST_GIC_COMPATIBLES: &[&str] = &[
    "arm,gic-v3",
    "arm,gic-400",
    "arm,cortex-a15-gic",
    "arm,cortex-a9-gic",
    "arm,cortex-a7-gic",
];

/// A guest-physical range `[base, base + size)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GuestRegion {
    pub base: GuestPhysAddr,
    pub size: u64,
}

impl GuestRegion {
    pub const fn new(base: u64, size: u64) -> Self {
        Self {
            base: GuestPhysAddr(base),
            size,
        }
    }
}

/// The interrupt controller the guest sees.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GuestGic {
    V2 { dist: GuestRegion, cpu: GuestRegion },
    V3 { dist: GuestRegion, redist: GuestRegion },
}

/// The guest's virtual PL011.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GuestConsole {
    pub base: GuestPhysAddr,
    /// Its interrupt, as an INTID (an SPI: 32 or more).
    pub intid: u32,
}

/// Everything [`generate`] needs to describe one VM.
pub struct GuestDtbSpec<'a> {
    /// VM name: the root `model` becomes `tessera,<name>`.
    pub name: &'a str,
    /// vCPUs, numbered 0..n; vCPU i has MPIDR Aff0 = i.
    pub vcpus: usize,
    /// Guest RAM regions, one `memory@` node each.
    pub memory: &'a [GuestRegion],
    pub gic: GuestGic,
    /// Timer INTIDs in binding order: secure physical, non-secure physical,
    /// virtual, hypervisor physical (QEMU `virt`: 29, 30, 27, 26).
    pub timer_ppis: [u32; 4],
    /// PSCI conduit: `"hvc"` or `"smc"`.
    pub psci_method: &'a str,
    pub console: Option<GuestConsole>,
    /// Kernel command line; omitted from `/chosen` when empty.
    pub bootargs: &'a str,
    /// Where the initrd was loaded.
    pub initrd: Option<GuestRegion>,
    /// Absolute host DT paths of passed-through devices, e.g. `/pl031@9010000`.
    /// Each component must match a node name exactly (unit address included).
    pub passthrough: &'a [&'a str],
    /// The board DTB the passed-through nodes are copied from.
    pub host: Option<&'a Tree<'a>>,
    /// `/chosen/rng-seed` and `kaslr-seed` (crate::vm::seed); none without boot entropy.
    pub seed: Option<&'a super::seed::GuestSeed>,
}

/// Why a guest DTB could not be built.
#[derive(Debug, PartialEq, Eq)]
pub enum DtbError {
    NoVcpus,
    TooManyVcpus {
        max: usize,
        got: usize,
    },
    NoMemory,
    EmptyMemoryRegion(GuestPhysAddr),
    BadPsciMethod(String),
    /// A timer INTID outside 16..32.
    BadTimerPpi(u32),
    /// The console INTID is not an SPI.
    BadConsoleSpi(u32),
    /// The initrd region wraps around the address space.
    BadInitrd,
    /// Devices to pass through, but no host DTB to copy them from.
    NoHostDtb,
    NoSuchDevice(String),
    /// Two top-level nodes with the same name (e.g. a device passed through
    /// twice, or at the virtual console's address).
    DuplicateNode(String),
    /// A passed-through node's interrupts do not go to a GIC as 3-cell SPIs.
    UnsupportedInterrupts(String),
    /// A passed-through node's `reg` cannot be expressed as CPU addresses.
    UnsupportedReg(String),
    /// A passed-through node's `clocks` does not parse against the host tree.
    BadClocks(String),
    /// A passed-through node has a property linking it to host devices the
    /// guest does not get.
    UnsupportedProperty {
        path: String,
        property: String,
    },
    /// The FDT writer refused (e.g. a NUL in a string).
    Writer(vm_fdt::Error),
}

impl From<vm_fdt::Error> for DtbError {
    fn from(e: vm_fdt::Error) -> Self {
        DtbError::Writer(e)
    }
}

impl fmt::Display for DtbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtbError::NoVcpus => write!(f, "a VM needs at least one vCPU"),
            DtbError::TooManyVcpus { max, got } => write!(f, "{got} vCPUs, this GIC allows {max}"),
            DtbError::NoMemory => write!(f, "a VM needs RAM"),
            DtbError::EmptyMemoryRegion(base) => write!(f, "empty RAM region at {base}"),
            DtbError::BadPsciMethod(m) => write!(f, "PSCI method {m:?} (want \"hvc\" or \"smc\")"),
            DtbError::BadTimerPpi(i) => write!(f, "timer INTID {i} is not a PPI"),
            DtbError::BadConsoleSpi(i) => write!(f, "console INTID {i} is not an SPI"),
            DtbError::BadInitrd => write!(f, "initrd region wraps around"),
            DtbError::NoHostDtb => write!(f, "devices to pass through but no host DTB"),
            DtbError::NoSuchDevice(p) => write!(f, "no node {p} in the host DTB"),
            DtbError::DuplicateNode(n) => write!(f, "two guest nodes named {n}"),
            DtbError::UnsupportedInterrupts(p) => write!(f, "{p}: interrupts are not GIC SPIs"),
            DtbError::UnsupportedReg(p) => {
                write!(f, "{p}: reg is not translatable to CPU addresses")
            }
            DtbError::BadClocks(p) => write!(f, "{p}: clocks do not parse"),
            DtbError::UnsupportedProperty { path, property } => {
                write!(
                    f,
                    "{path}: property {property} refers to host devices the guest lacks"
                )
            }
            DtbError::Writer(e) => write!(f, "FDT writer: {e}"),
        }
    }
}

/// Builds the guest DTB described by `spec`.
pub fn generate(spec: &GuestDtbSpec) -> Result<Vec<u8>, DtbError> {
    generate_with_links(spec, &[])
}

/// [`generate`], plus the nodes of the VM's inter-VM link devices.
pub fn generate_with_links(
    spec: &GuestDtbSpec,
    links: &[super::links::GuestLink],
) -> Result<Vec<u8>, DtbError> {
    check(spec)?;
    let mut w = FdtWriter::new()?;
    let mut names = TopLevelNames::default();
    let root = w.begin_node("")?;
    write_root_properties(&mut w, spec)?;
    write_cpus(&mut w, spec.vcpus)?;
    for region in spec.memory {
        names.claim(&memory_node_name(region))?;
        write_memory(&mut w, region)?;
    }
    names.claim(&gic_node_name(&spec.gic))?;
    write_gic(&mut w, &spec.gic)?;
    write_timer(&mut w, spec)?;
    write_psci(&mut w, spec.psci_method)?;
    write_apb_pclk(&mut w)?;
    if let Some(console) = &spec.console {
        names.claim(&console_node_name(console))?;
        write_console(&mut w, console)?;
    }
    // The generator's own nodes, so a passed-through node cannot repeat one.
    for fixed in ["cpus", "timer", "psci", "apb-pclk", "chosen"] {
        names.claim(fixed)?;
    }
    if spec.console.is_some() {
        names.claim("aliases")?;
    }
    for name in links.iter().flat_map(|l| l.node_names()) {
        names.claim(&name)?;
    }
    super::links::write_dtb(&mut w, links)?;
    write_passthrough(&mut w, spec, &mut names)?;
    write_chosen(&mut w, spec)?;
    if let Some(console) = &spec.console {
        write_aliases(&mut w, console)?;
    }
    w.end_node(root)?;
    Ok(w.finish()?)
}

/// Rejects specs that would give the guest a broken tree.
fn check(spec: &GuestDtbSpec) -> Result<(), DtbError> {
    let max = match spec.gic {
        GuestGic::V2 { .. } => GICV2_MAX_VCPUS,
        GuestGic::V3 { .. } => GICV3_MAX_VCPUS,
    };
    if spec.vcpus == 0 {
        return Err(DtbError::NoVcpus);
    }
    if spec.vcpus > max {
        return Err(DtbError::TooManyVcpus { max, got: spec.vcpus });
    }
    if spec.memory.is_empty() {
        return Err(DtbError::NoMemory);
    }
    if let Some(r) = spec.memory.iter().find(|r| r.size == 0) {
        return Err(DtbError::EmptyMemoryRegion(r.base));
    }
    if !matches!(spec.psci_method, "hvc" | "smc") {
        return Err(DtbError::BadPsciMethod(spec.psci_method.to_string()));
    }
    if let Some(&ppi) = spec
        .timer_ppis
        .iter()
        .find(|&&i| !(PPI_BASE..SPI_BASE).contains(&i))
    {
        return Err(DtbError::BadTimerPpi(ppi));
    }
    if let Some(c) = &spec.console {
        if !(SPI_BASE..SPI_END).contains(&c.intid) {
            return Err(DtbError::BadConsoleSpi(c.intid));
        }
    }
    if let Some(r) = &spec.initrd {
        r.base.0.checked_add(r.size).ok_or(DtbError::BadInitrd)?;
    }
    Ok(())
}

/// Node names directly under the root, which must be unique.
#[derive(Default)]
struct TopLevelNames(Vec<String>);

impl TopLevelNames {
    fn claim(&mut self, name: &str) -> Result<(), DtbError> {
        if self.0.iter().any(|n| n == name) {
            return Err(DtbError::DuplicateNode(name.to_string()));
        }
        self.0.push(name.to_string());
        Ok(())
    }
}

fn write_root_properties(w: &mut FdtWriter, spec: &GuestDtbSpec) -> Result<(), DtbError> {
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_u32("interrupt-parent", GIC_PHANDLE)?;
    w.property_string("model", &format!("tessera,{}", spec.name))?;
    w.property_string_list("compatible", strings(&["tessera,vm", "linux,dummy-virt"]))?;
    Ok(())
}

fn write_cpus(w: &mut FdtWriter, vcpus: usize) -> Result<(), DtbError> {
    let cpus = w.begin_node("cpus")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    for i in 0..vcpus {
        let cpu = w.begin_node(&format!("cpu@{i:x}"))?;
        w.property_string("device_type", "cpu")?;
        w.property_string("compatible", "arm,armv8")?;
        // check() bounds vcpus by 256, so the index fits MPIDR Aff0.
        w.property_u32("reg", i as u32)?;
        w.property_string("enable-method", "psci")?;
        w.end_node(cpu)?;
    }
    w.end_node(cpus)?;
    Ok(())
}

fn memory_node_name(region: &GuestRegion) -> String {
    format!("memory@{:x}", region.base.0)
}

fn write_memory(w: &mut FdtWriter, region: &GuestRegion) -> Result<(), DtbError> {
    let node = w.begin_node(&memory_node_name(region))?;
    w.property_string("device_type", "memory")?;
    w.property_array_u64("reg", &[region.base.0, region.size])?;
    w.end_node(node)?;
    Ok(())
}

fn gic_node_name(gic: &GuestGic) -> String {
    let (GuestGic::V2 { dist, .. } | GuestGic::V3 { dist, .. }) = gic;
    format!("intc@{:x}", dist.base.0)
}

/// The GIC, without ITS (guests get no MSI controller) and without a
/// maintenance interrupt (the list registers belong to the hypervisor).
fn write_gic(w: &mut FdtWriter, gic: &GuestGic) -> Result<(), DtbError> {
    let node = w.begin_node(&gic_node_name(gic))?;
    match gic {
        GuestGic::V3 { dist, redist } => {
            w.property_string("compatible", "arm,gic-v3")?;
            w.property_array_u64("reg", &[dist.base.0, dist.size, redist.base.0, redist.size])?;
            w.property_u32("#redistributor-regions", 1)?;
        }
        GuestGic::V2 { dist, cpu } => {
            w.property_string("compatible", "arm,cortex-a15-gic")?;
            w.property_array_u64("reg", &[dist.base.0, dist.size, cpu.base.0, cpu.size])?;
        }
    }
    w.property_u32("#interrupt-cells", 3)?;
    w.property_null("interrupt-controller")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_null("ranges")?;
    w.property_phandle(GIC_PHANDLE)?;
    w.end_node(node)?;
    Ok(())
}

/// PPI flags: level-high, plus on GICv2 the CPU target mask in bits 8..16
/// (one bit per vCPU, as QEMU writes it); GICv3 has no target mask.
fn ppi_flags(gic: &GuestGic, vcpus: usize) -> u32 {
    match gic {
        GuestGic::V3 { .. } => IRQ_LEVEL_HIGH,
        GuestGic::V2 { .. } => {
            let mask = (1u32 << vcpus.min(GICV2_MAX_VCPUS)) - 1;
            (mask << 8) | IRQ_LEVEL_HIGH
        }
    }
}

fn write_timer(w: &mut FdtWriter, spec: &GuestDtbSpec) -> Result<(), DtbError> {
    let flags = ppi_flags(&spec.gic, spec.vcpus);
    let cells: Vec<u32> = spec
        .timer_ppis
        .iter()
        .flat_map(|&intid| [GIC_PPI, intid - PPI_BASE, flags])
        .collect();
    let node = w.begin_node("timer")?;
    w.property_string("compatible", "arm,armv8-timer")?;
    w.property_array_u32("interrupts", &cells)?;
    w.property_null("always-on")?;
    w.end_node(node)?;
    Ok(())
}

fn write_psci(w: &mut FdtWriter, method: &str) -> Result<(), DtbError> {
    let node = w.begin_node("psci")?;
    w.property_string_list("compatible", strings(&["arm,psci-1.0", "arm,psci-0.2"]))?;
    w.property_string("method", method)?;
    w.end_node(node)?;
    Ok(())
}

/// A fixed 24 MHz clock for PrimeCell devices (the virtual PL011 and
/// passed-through ones), like QEMU `virt`'s.
fn write_apb_pclk(w: &mut FdtWriter) -> Result<(), DtbError> {
    let node = w.begin_node("apb-pclk")?;
    w.property_string("compatible", "fixed-clock")?;
    w.property_u32("#clock-cells", 0)?;
    w.property_u32("clock-frequency", APB_PCLK_HZ)?;
    w.property_string("clock-output-names", "clk24mhz")?;
    w.property_phandle(CLOCK_PHANDLE)?;
    w.end_node(node)?;
    Ok(())
}

fn console_node_name(console: &GuestConsole) -> String {
    format!("pl011@{:x}", console.base.0)
}

fn write_console(w: &mut FdtWriter, console: &GuestConsole) -> Result<(), DtbError> {
    let node = w.begin_node(&console_node_name(console))?;
    w.property_string_list("compatible", strings(&["arm,pl011", "arm,primecell"]))?;
    w.property_array_u64("reg", &[console.base.0, 0x1000])?;
    w.property_array_u32("interrupts", &[GIC_SPI, console.intid - SPI_BASE, IRQ_LEVEL_HIGH])?;
    w.property_array_u32("clocks", &[CLOCK_PHANDLE, CLOCK_PHANDLE])?;
    w.property_string_list("clock-names", strings(&["uartclk", "apb_pclk"]))?;
    w.end_node(node)?;
    Ok(())
}

fn write_chosen(w: &mut FdtWriter, spec: &GuestDtbSpec) -> Result<(), DtbError> {
    let node = w.begin_node("chosen")?;
    if !spec.bootargs.is_empty() {
        w.property_string("bootargs", spec.bootargs)?;
    }
    if let Some(console) = &spec.console {
        w.property_string("stdout-path", &format!("/{}", console_node_name(console)))?;
    }
    if let Some(initrd) = &spec.initrd {
        // check() ruled out the overflow.
        w.property_u64("linux,initrd-start", initrd.base.0)?;
        w.property_u64("linux,initrd-end", initrd.base.0 + initrd.size)?;
    }
    if let Some(seed) = spec.seed {
        w.property("rng-seed", &seed.rng)?;
        w.property_u64("kaslr-seed", seed.kaslr)?;
    }
    w.end_node(node)?;
    Ok(())
}

fn write_aliases(w: &mut FdtWriter, console: &GuestConsole) -> Result<(), DtbError> {
    let node = w.begin_node("aliases")?;
    w.property_string("serial0", &format!("/{}", console_node_name(console)))?;
    w.end_node(node)?;
    Ok(())
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ---- Passed-through devices ------------------------------------------------

fn write_passthrough(
    w: &mut FdtWriter,
    spec: &GuestDtbSpec,
    names: &mut TopLevelNames,
) -> Result<(), DtbError> {
    if spec.passthrough.is_empty() {
        return Ok(());
    }
    let host = spec.host.ok_or(DtbError::NoHostDtb)?;
    for &path in spec.passthrough {
        let mut chain = find_path(host, path)?;
        // find_path never returns the root alone, so there is a last node.
        let name = chain.last().map_or("", |n| n.name);
        names.claim(name)?;
        let reg = translated_reg(&chain, path)?;
        copy_node(w, host, &mut chain, path, reg.as_deref())?;
    }
    Ok(())
}

/// The nodes from the root down to `path`, matching each component exactly
/// (a looser lookup would also accept `/virtio_mmio` for the
/// first of many `virtio_mmio@…`, and resolve aliases).
fn find_path<'b, 'a>(host: &'b Tree<'a>, path: &str) -> Result<Vec<Node<'b, 'a>>, DtbError> {
    let missing = || DtbError::NoSuchDevice(path.to_string());
    let rest = path.strip_prefix('/').ok_or_else(missing)?;
    let mut chain = vec![host.root()];
    for component in rest.split('/') {
        let parent = *chain.last().ok_or_else(missing)?;
        let child = parent
            .children()
            .find(|c| c.name == component)
            .ok_or_else(missing)?;
        chain.push(child);
    }
    Ok(chain)
}

/// How a host property is carried into the guest copy.
enum Handling {
    Copy,
    /// Rewritten or re-emitted by [`copy_node`] itself.
    Special,
    /// Set-up of host resources the guest cannot touch anyway.
    Drop,
    /// The device would not work without the host resource.
    Refuse,
}

fn handling(property: &str) -> Handling {
    match property {
        "reg" | "interrupts" | "clocks" | "interrupt-parent" | "phandle" | "linux,phandle"
        | "interrupt-map" => Handling::Special,
        "assigned-clocks" | "assigned-clock-parents" | "assigned-clock-rates" => Handling::Drop,
        "power-domains" | "power-domain-names" | "iommus" | "iommu-map" | "msi-parent" | "msi-map" => {
            Handling::Drop
        }
        p if p.starts_with("pinctrl-") || p.ends_with("-supply") => Handling::Drop,
        // A PCIe bridge's, rewritten for the virtual GIC (vm/pcie.rs).
        "interrupt-map-mask" => Handling::Copy,
        "interrupts-extended"
        | "dmas"
        | "resets"
        | "phys"
        | "gpios"
        | "memory-region"
        | "nvmem-cells"
        | "mboxes" => Handling::Refuse,
        p if p.ends_with("-gpios") => Handling::Refuse,
        _ => Handling::Copy,
    }
}

/// Writes `chain`'s last node and its subtree. `reg`, if given, replaces the
/// node's own `reg` (the top-level copy, re-encoded for the guest root).
fn copy_node<'b, 'a>(
    w: &mut FdtWriter,
    host: &'b Tree<'a>,
    chain: &mut Vec<Node<'b, 'a>>,
    path: &str,
    reg: Option<&[u64]>,
) -> Result<(), DtbError> {
    let node = *chain
        .last()
        .ok_or_else(|| DtbError::NoSuchDevice(path.to_string()))?;
    let out = w.begin_node(node.name)?;
    for prop in node.properties() {
        match (handling(prop.name), prop.name) {
            (Handling::Copy, name) => w.property(name, prop.value)?,
            (Handling::Drop, _) => {}
            (Handling::Refuse, name) => {
                return Err(DtbError::UnsupportedProperty {
                    path: path.to_string(),
                    property: name.to_string(),
                })
            }
            (Handling::Special, "reg") => match reg {
                Some(cells) => w.property_array_u64("reg", cells)?,
                None => w.property("reg", prop.value)?,
            },
            (Handling::Special, "interrupts") => {
                check_interrupts(host, chain, prop.value, path)?;
                w.property("interrupts", prop.value)?;
                // Explicit, so the copy does not depend on where it sits.
                w.property_u32("interrupt-parent", GIC_PHANDLE)?;
            }
            (Handling::Special, "interrupt-map") => {
                let map = cells(prop.value)
                    .and_then(|c| super::pcie::guest_interrupt_map(host, &c, GIC_PHANDLE))
                    .ok_or_else(|| DtbError::UnsupportedProperty {
                        path: path.to_string(),
                        property: "interrupt-map".to_string(),
                    })?;
                w.property_array_u32("interrupt-map", &map)?
            }
            (Handling::Special, "clocks") => {
                w.property_array_u32("clocks", &guest_clocks(host, prop.value, path)?)?
            }
            // interrupt-parent is re-emitted with `interrupts`; phandles of
            // copies are dropped: nothing in the guest refers to them.
            (Handling::Special, _) => {}
        }
    }
    let children: Vec<Node<'b, 'a>> = node.children().collect();
    for child in children {
        chain.push(child);
        let result = copy_node(w, host, chain, &format!("{path}/{}", child.name), None);
        chain.pop();
        result?;
    }
    w.end_node(out)?;
    Ok(())
}

/// Big-endian cells of a property value; `None` unless a whole number of cells.
fn cells(value: &[u8]) -> Option<Vec<u32>> {
    if !value.len().is_multiple_of(4) {
        return None;
    }
    Some(
        value
            .chunks_exact(4)
            .filter_map(|c| c.try_into().ok().map(u32::from_be_bytes))
            .collect(),
    )
}

fn u32_property(node: &Node, name: &str) -> Option<u32> {
    node.property(name)
        .and_then(|p| cells(p.value))
        .and_then(|c| c.first().copied())
}

/// `#address-cells` and `#size-cells` a node gives its children (DT spec
/// defaults: 2 and 1).
fn child_cells(node: &Node) -> (usize, usize) {
    let address = u32_property(node, "#address-cells").unwrap_or(2);
    let size = u32_property(node, "#size-cells").unwrap_or(1);
    (address as usize, size as usize)
}

/// Reads a number of 0..=2 cells from the front of `cells`.
fn take_number(cells: &mut &[u32], count: usize) -> Option<u64> {
    if count > 2 || cells.len() < count {
        return None;
    }
    let (head, tail) = cells.split_at(count);
    *cells = tail;
    Some(head.iter().fold(0u64, |acc, &c| (acc << 32) | u64::from(c)))
}

/// The top-level copy's `reg` as (address, size) pairs in CPU addresses,
/// ready for the guest root's 2+2 cells: decoded with the host parent's cell
/// counts and translated through every bus's `ranges` up to the root.
fn translated_reg(chain: &[Node], path: &str) -> Result<Option<Vec<u64>>, DtbError> {
    let unsupported = || DtbError::UnsupportedReg(path.to_string());
    let (node, buses) = chain.split_last().ok_or_else(unsupported)?;
    let Some(prop) = node.property("reg") else {
        return Ok(None);
    };
    let parent = buses.last().ok_or_else(unsupported)?;
    let (address_cells, size_cells) = child_cells(parent);
    let all = cells(prop.value).ok_or_else(unsupported)?;
    let mut rest = all.as_slice();
    let mut out = Vec::new();
    while !rest.is_empty() {
        let address = take_number(&mut rest, address_cells).ok_or_else(unsupported)?;
        let size = take_number(&mut rest, size_cells).ok_or_else(unsupported)?;
        let address = translate_to_root(buses, address, size).ok_or_else(unsupported)?;
        out.extend_from_slice(&[address, size]);
    }
    if size_cells == 0 || out.is_empty() {
        return Err(unsupported());
    }
    Ok(Some(out))
}

/// Translates `address` on the bus `buses.last()` to a root (CPU) address.
fn translate_to_root(buses: &[Node], mut address: u64, size: u64) -> Option<u64> {
    for pair in buses.windows(2).rev() {
        let [bus_parent, bus] = pair else { return None };
        address = translate_one(bus, bus_parent, address, size)?;
    }
    Some(address)
}

/// One bus hop: `ranges` absent means no mapping, empty means identity.
fn translate_one(bus: &Node, bus_parent: &Node, address: u64, size: u64) -> Option<u64> {
    let ranges = cells(bus.property("ranges")?.value)?;
    if ranges.is_empty() {
        return Some(address);
    }
    let (bus_cells, size_cells) = child_cells(bus);
    let (parent_cells, _) = child_cells(bus_parent);
    let mut rest = ranges.as_slice();
    while !rest.is_empty() {
        let child = take_number(&mut rest, bus_cells)?;
        let parent = take_number(&mut rest, parent_cells)?;
        let len = take_number(&mut rest, size_cells)?;
        let offset = address.checked_sub(child)?;
        if offset < len && size <= len - offset {
            return parent.checked_add(offset);
        }
    }
    None
}

/// The host node's effective interrupt parent, the way Linux finds it: its
/// own `interrupt-parent`, else the nearest ancestor's, stopping at the first
/// node with `#interrupt-cells`. A phandle target without `#interrupt-cells`
/// (an interrupt parent that is itself a nexus) is not followed.
fn interrupt_parent(host: &Tree, chain: &[Node]) -> Option<crate::dt::Target> {
    for (depth, node) in chain.iter().enumerate().rev() {
        if let Some(phandle) = u32_property(node, "interrupt-parent") {
            return crate::dt::phandle_target(host, phandle).filter(|p| p.interrupt_cells.is_some());
        }
        let parent = chain.get(depth.checked_sub(1)?)?;
        if parent.property("#interrupt-cells").is_some() {
            return Some(crate::dt::Target::of(parent));
        }
    }
    None
}

fn is_gic(node: &crate::dt::Target) -> bool {
    node.is_compatible(HOST_GIC_COMPATIBLES) && node.interrupt_cells == Some(3)
}

/// Accepts `interrupts` only as 3-cell GIC SPIs: those keep their physical
/// numbers in the guest.
fn check_interrupts(host: &Tree, chain: &[Node], value: &[u8], path: &str) -> Result<(), DtbError> {
    let unsupported = || DtbError::UnsupportedInterrupts(path.to_string());
    if !interrupt_parent(host, chain).is_some_and(|p| is_gic(&p)) {
        return Err(unsupported());
    }
    let all = cells(value).ok_or_else(unsupported)?;
    if all.is_empty() || !all.len().is_multiple_of(3) {
        return Err(unsupported());
    }
    let all_spis = all
        .chunks_exact(3)
        .all(|s| matches!(s, [GIC_SPI, spi, _] if *spi < SPI_END - SPI_BASE));
    if !all_spis {
        return Err(unsupported());
    }
    Ok(())
}

/// One guest `apb-pclk` reference per host clock specifier (a phandle and
/// its provider's `#clock-cells` arguments).
fn guest_clocks(host: &Tree, value: &[u8], path: &str) -> Result<Vec<u32>, DtbError> {
    let bad = || DtbError::BadClocks(path.to_string());
    let all = cells(value).ok_or_else(bad)?;
    let mut rest = all.as_slice();
    let mut out = Vec::new();
    while let Some((&phandle, tail)) = rest.split_first() {
        let provider = crate::dt::phandle_target(host, phandle).ok_or_else(bad)?;
        let args = provider.clock_cells.unwrap_or(0) as usize;
        rest = tail.get(args..).ok_or_else(bad)?;
        out.push(CLOCK_PHANDLE);
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdt::Fdt;
    use std::collections::BTreeSet;

    const QEMU_V3: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dtbs/qemu-virt-gicv3-smp4.dtb");
    const QEMU_V2: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dtbs/qemu-virt-gicv2-smp4.dtb");
    const RAM: [GuestRegion; 2] = [
        GuestRegion::new(0x4000_0000, 0x800_0000),
        GuestRegion::new(0x1_0000_0000, 0x1000_0000),
    ];
    const V3: GuestGic = GuestGic::V3 {
        dist: GuestRegion::new(0x0800_0000, 0x1_0000),
        redist: GuestRegion::new(0x080a_0000, 0x4_0000),
    };
    const V2: GuestGic = GuestGic::V2 {
        dist: GuestRegion::new(0x0800_0000, 0x1_0000),
        cpu: GuestRegion::new(0x0801_0000, 0x1_0000),
    };
    const QEMU_TIMER: [u32; 4] = [29, 30, 27, 26];
    const PASSTHROUGH: [&str; 2] = ["/pl031@9010000", "/virtio_mmio@a000000"];

    fn spec<'a>(gic: GuestGic, host: Option<&'a Tree<'a>>, passthrough: &'a [&'a str]) -> GuestDtbSpec<'a> {
        GuestDtbSpec {
            name: "linux",
            vcpus: 2,
            memory: &RAM,
            gic,
            timer_ppis: QEMU_TIMER,
            psci_method: "hvc",
            console: Some(GuestConsole {
                base: GuestPhysAddr(0x0900_0000),
                intid: 33,
            }),
            bootargs: "console=ttyAMA0 earlycon",
            initrd: Some(GuestRegion::new(0x4800_0000, 0x20_0000)),
            passthrough,
            host,
            seed: None,
        }
    }

    /// The 2-vCPU GICv3 VM with console, initrd and two devices from QEMU's DTB.
    fn v3_blob() -> Vec<u8> {
        let host_blob = std::fs::read(QEMU_V3).unwrap();
        let host = Tree::new(&host_blob).unwrap();
        generate(&spec(V3, Some(&host), &PASSTHROUGH)).unwrap()
    }

    /// A 1-vCPU GICv2 VM without console, same two devices.
    fn v2_blob() -> Vec<u8> {
        let host_blob = std::fs::read(QEMU_V2).unwrap();
        let host = Tree::new(&host_blob).unwrap();
        let spec = GuestDtbSpec {
            vcpus: 1,
            memory: &RAM[..1],
            console: None,
            initrd: None,
            ..spec(V2, Some(&host), &PASSTHROUGH)
        };
        generate(&spec).unwrap()
    }

    fn prop_cells(fdt: &Fdt, path: &str, name: &str) -> Vec<u32> {
        let node = fdt.find_node(path).unwrap_or_else(|| panic!("no {path}"));
        let prop = node.property(name).unwrap_or_else(|| panic!("no {path}:{name}"));
        cells(prop.value).unwrap()
    }

    fn prop_str<'a>(fdt: &Fdt<'a>, path: &str, name: &str) -> &'a str {
        fdt.find_node(path)
            .and_then(|n| n.property(name))
            .and_then(|p| p.as_str())
            .unwrap()
    }

    fn prop_u64(fdt: &Fdt, path: &str, name: &str) -> u64 {
        let c = prop_cells(fdt, path, name);
        assert_eq!(c.len(), 2);
        (u64::from(c[0]) << 32) | u64::from(c[1])
    }

    fn top_level_names(fdt: &Fdt) -> BTreeSet<String> {
        fdt.find_node("/")
            .unwrap()
            .children()
            .map(|n| n.name.to_string())
            .collect()
    }

    fn gic_phandle(fdt: &Fdt, path: &str) -> u32 {
        prop_cells(fdt, path, "phandle")[0]
    }

    #[test]
    fn v3_root_names_the_vm_and_points_at_the_gic() {
        let blob = v3_blob();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(prop_str(&fdt, "/", "model"), "tessera,linux");
        let compatible: Vec<&str> = fdt.root().compatible().all().collect();
        assert_eq!(compatible, ["tessera,vm", "linux,dummy-virt"]);
        assert_eq!(prop_cells(&fdt, "/", "#address-cells"), [2]);
        assert_eq!(prop_cells(&fdt, "/", "#size-cells"), [2]);
        assert_eq!(
            prop_cells(&fdt, "/", "interrupt-parent"),
            [gic_phandle(&fdt, "/intc@8000000")]
        );
    }

    #[test]
    fn v3_cpus_have_mpidr_regs_and_psci() {
        let blob = v3_blob();
        let fdt = Fdt::new(&blob).unwrap();
        let cpus: Vec<_> = fdt.cpus().collect();
        assert_eq!(cpus.len(), 2);
        for (i, cpu) in cpus.iter().enumerate() {
            assert_eq!(cpu.ids().first(), i);
            assert_eq!(
                cpu.property("enable-method").and_then(|p| p.as_str()),
                Some("psci")
            );
            assert_eq!(
                cpu.property("compatible").and_then(|p| p.as_str()),
                Some("arm,armv8")
            );
        }
        assert_eq!(prop_cells(&fdt, "/cpus", "#address-cells"), [1]);
        assert_eq!(prop_cells(&fdt, "/cpus", "#size-cells"), [0]);
    }

    #[test]
    fn v3_memory_node_per_region() {
        let blob = v3_blob();
        let fdt = Fdt::new(&blob).unwrap();
        for r in RAM {
            let path = format!("/memory@{:x}", r.base.0);
            assert_eq!(prop_str(&fdt, &path, "device_type"), "memory");
            let reg = prop_cells(&fdt, &path, "reg");
            assert_eq!(
                reg,
                [
                    (r.base.0 >> 32) as u32,
                    r.base.0 as u32,
                    (r.size >> 32) as u32,
                    r.size as u32
                ]
            );
        }
        assert_eq!(
            fdt.all_nodes().filter(|n| n.name.starts_with("memory@")).count(),
            2
        );
    }

    #[test]
    fn v3_gic_node() {
        let blob = v3_blob();
        let fdt = Fdt::new(&blob).unwrap();
        let gic = "/intc@8000000";
        assert_eq!(prop_str(&fdt, gic, "compatible"), "arm,gic-v3");
        assert_eq!(
            prop_cells(&fdt, gic, "reg"),
            [0, 0x0800_0000, 0, 0x1_0000, 0, 0x080a_0000, 0, 0x4_0000]
        );
        assert_eq!(prop_cells(&fdt, gic, "#interrupt-cells"), [3]);
        assert_eq!(prop_cells(&fdt, gic, "#redistributor-regions"), [1]);
        assert_eq!(gic_phandle(&fdt, gic), GIC_PHANDLE);
        let node = fdt.find_node(gic).unwrap();
        assert!(node.property("interrupt-controller").is_some());
        // No ITS and no maintenance interrupt.
        assert_eq!(node.children().count(), 0);
        assert!(node.property("interrupts").is_none());
    }

    #[test]
    fn v3_timer_ppis_are_level_high_without_cpu_mask() {
        let blob = v3_blob();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(prop_str(&fdt, "/timer", "compatible"), "arm,armv8-timer");
        assert_eq!(
            prop_cells(&fdt, "/timer", "interrupts"),
            [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]
        );
        assert!(fdt.find_node("/timer").unwrap().property("always-on").is_some());
    }

    #[test]
    fn v3_psci_uses_the_configured_conduit() {
        let blob = v3_blob();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(prop_str(&fdt, "/psci", "method"), "hvc");
        let compatible: Vec<&str> = fdt
            .find_node("/psci")
            .unwrap()
            .compatible()
            .unwrap()
            .all()
            .collect();
        assert_eq!(compatible, ["arm,psci-1.0", "arm,psci-0.2"]);
    }

    #[test]
    fn v3_chosen_has_bootargs_stdout_and_initrd() {
        let blob = v3_blob();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(prop_str(&fdt, "/chosen", "bootargs"), "console=ttyAMA0 earlycon");
        assert_eq!(prop_str(&fdt, "/chosen", "stdout-path"), "/pl011@9000000");
        assert_eq!(prop_u64(&fdt, "/chosen", "linux,initrd-start"), 0x4800_0000);
        assert_eq!(prop_u64(&fdt, "/chosen", "linux,initrd-end"), 0x4820_0000);
        assert_eq!(prop_str(&fdt, "/aliases", "serial0"), "/pl011@9000000");
    }

    #[test]
    fn v3_console_is_a_pl011_on_apb_pclk() {
        let blob = v3_blob();
        let fdt = Fdt::new(&blob).unwrap();
        let uart = "/pl011@9000000";
        assert_eq!(prop_cells(&fdt, uart, "reg"), [0, 0x0900_0000, 0, 0x1000]);
        assert_eq!(prop_cells(&fdt, uart, "interrupts"), [0, 1, 4]);
        let clock = gic_phandle(&fdt, "/apb-pclk");
        assert_eq!(prop_cells(&fdt, uart, "clocks"), [clock, clock]);
        let names: Vec<&str> = fdt
            .find_node(uart)
            .unwrap()
            .property("clock-names")
            .unwrap()
            .value
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| core::str::from_utf8(s).unwrap())
            .collect();
        assert_eq!(names, ["uartclk", "apb_pclk"]);
        assert_eq!(prop_str(&fdt, "/apb-pclk", "compatible"), "fixed-clock");
        assert_eq!(prop_cells(&fdt, "/apb-pclk", "clock-frequency"), [24_000_000]);
        assert_eq!(prop_cells(&fdt, "/apb-pclk", "#clock-cells"), [0]);
    }

    #[test]
    fn v3_passthrough_keeps_reg_and_spis_under_the_guest_gic() {
        let blob = v3_blob();
        let fdt = Fdt::new(&blob).unwrap();
        let gic = gic_phandle(&fdt, "/intc@8000000");
        let rtc = "/pl031@9010000";
        assert_eq!(prop_cells(&fdt, rtc, "reg"), [0, 0x0901_0000, 0, 0x1000]);
        assert_eq!(prop_cells(&fdt, rtc, "interrupts"), [0, 2, 4]);
        assert_eq!(prop_cells(&fdt, rtc, "interrupt-parent"), [gic]);
        assert_eq!(prop_cells(&fdt, rtc, "clocks"), [gic_phandle(&fdt, "/apb-pclk")]);
        assert_eq!(prop_str(&fdt, rtc, "clock-names"), "apb_pclk");
        let virtio = "/virtio_mmio@a000000";
        assert_eq!(prop_cells(&fdt, virtio, "reg"), [0, 0x0a00_0000, 0, 0x200]);
        assert_eq!(prop_cells(&fdt, virtio, "interrupts"), [0, 0x10, 1]);
        assert_eq!(prop_cells(&fdt, virtio, "interrupt-parent"), [gic]);
        assert_eq!(prop_str(&fdt, virtio, "compatible"), "virtio,mmio");
        assert!(fdt.find_node(virtio).unwrap().property("dma-coherent").is_some());
    }

    #[test]
    fn v3_no_other_host_device_appears() {
        let blob = v3_blob();
        let fdt = Fdt::new(&blob).unwrap();
        let expected = [
            "cpus",
            "memory@40000000",
            "memory@100000000",
            "intc@8000000",
            "timer",
            "psci",
            "apb-pclk",
            "pl011@9000000",
            "pl031@9010000",
            "virtio_mmio@a000000",
            "chosen",
            "aliases",
        ];
        assert_eq!(
            top_level_names(&fdt),
            expected.iter().map(|s| s.to_string()).collect()
        );
        assert!(fdt
            .all_nodes()
            .all(|n| !n.name.starts_with("pl061") && !n.name.starts_with("fw-cfg")));
    }

    #[test]
    fn v2_single_cpu_without_console() {
        let blob = v2_blob();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(fdt.cpus().count(), 1);
        let gic = "/intc@8000000";
        assert_eq!(prop_str(&fdt, gic, "compatible"), "arm,cortex-a15-gic");
        assert_eq!(
            prop_cells(&fdt, gic, "reg"),
            [0, 0x0800_0000, 0, 0x1_0000, 0, 0x0801_0000, 0, 0x1_0000]
        );
        assert!(fdt
            .find_node(gic)
            .unwrap()
            .property("#redistributor-regions")
            .is_none());
        // One vCPU: CPU target mask 0b1 in bits 8..16.
        assert_eq!(
            prop_cells(&fdt, "/timer", "interrupts"),
            [1, 13, 0x104, 1, 14, 0x104, 1, 11, 0x104, 1, 10, 0x104]
        );
        assert!(fdt
            .find_node("/chosen")
            .unwrap()
            .property("stdout-path")
            .is_none());
        assert!(fdt
            .find_node("/chosen")
            .unwrap()
            .property("linux,initrd-start")
            .is_none());
        let expected = [
            "cpus",
            "memory@40000000",
            "intc@8000000",
            "timer",
            "psci",
            "apb-pclk",
            "pl031@9010000",
            "virtio_mmio@a000000",
            "chosen",
        ];
        assert_eq!(
            top_level_names(&fdt),
            expected.iter().map(|s| s.to_string()).collect()
        );
        let phandle = gic_phandle(&fdt, gic);
        assert_eq!(prop_cells(&fdt, "/pl031@9010000", "interrupt-parent"), [phandle]);
        assert_eq!(
            prop_cells(&fdt, "/virtio_mmio@a000000", "interrupts"),
            [0, 0x10, 1]
        );
    }

    #[test]
    fn v2_cpu_mask_covers_every_vcpu() {
        let spec = GuestDtbSpec {
            vcpus: 4,
            ..spec(V2, None, &[])
        };
        let blob = generate(&spec).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(prop_cells(&fdt, "/timer", "interrupts")[2], 0xf04);
    }

    #[test]
    fn missing_path_is_no_such_device() {
        let host_blob = std::fs::read(QEMU_V3).unwrap();
        let host = Tree::new(&host_blob).unwrap();
        for path in [
            "/pl031@9999999",
            "/pl031",
            "pl031@9010000",
            "/",
            "/pl031@9010000/",
        ] {
            let paths = [path];
            let err = generate(&spec(V3, Some(&host), &paths)).unwrap_err();
            assert_eq!(err, DtbError::NoSuchDevice(path.to_string()));
        }
    }

    #[test]
    fn passthrough_without_host_dtb_fails() {
        assert_eq!(generate(&spec(V3, None, &PASSTHROUGH)), Err(DtbError::NoHostDtb));
    }

    #[test]
    fn passthrough_at_the_console_address_clashes() {
        let host_blob = std::fs::read(QEMU_V3).unwrap();
        let host = Tree::new(&host_blob).unwrap();
        let paths = ["/pl011@9000000"];
        let err = generate(&spec(V3, Some(&host), &paths)).unwrap_err();
        assert_eq!(err, DtbError::DuplicateNode("pl011@9000000".to_string()));
        let twice = ["/pl031@9010000", "/pl031@9010000"];
        assert!(matches!(
            generate(&spec(V3, Some(&host), &twice)),
            Err(DtbError::DuplicateNode(_))
        ));
    }

    #[test]
    fn bad_specs_are_errors() {
        assert_eq!(
            generate(&GuestDtbSpec {
                vcpus: 0,
                ..spec(V3, None, &[])
            }),
            Err(DtbError::NoVcpus)
        );
        assert_eq!(
            generate(&GuestDtbSpec {
                vcpus: 9,
                ..spec(V2, None, &[])
            }),
            Err(DtbError::TooManyVcpus { max: 8, got: 9 })
        );
        assert_eq!(
            generate(&GuestDtbSpec {
                memory: &[],
                ..spec(V3, None, &[])
            }),
            Err(DtbError::NoMemory)
        );
        let empty = [GuestRegion::new(0x4000_0000, 0)];
        assert!(matches!(
            generate(&GuestDtbSpec {
                memory: &empty,
                ..spec(V3, None, &[])
            }),
            Err(DtbError::EmptyMemoryRegion(_))
        ));
        assert!(matches!(
            generate(&GuestDtbSpec {
                psci_method: "svc",
                ..spec(V3, None, &[])
            }),
            Err(DtbError::BadPsciMethod(_))
        ));
        assert_eq!(
            generate(&GuestDtbSpec {
                timer_ppis: [29, 30, 27, 33],
                ..spec(V3, None, &[])
            }),
            Err(DtbError::BadTimerPpi(33))
        );
        let console = Some(GuestConsole {
            base: GuestPhysAddr(0x0900_0000),
            intid: 27,
        });
        assert_eq!(
            generate(&GuestDtbSpec {
                console,
                ..spec(V3, None, &[])
            }),
            Err(DtbError::BadConsoleSpi(27))
        );
        let initrd = Some(GuestRegion::new(u64::MAX, 2));
        assert_eq!(
            generate(&GuestDtbSpec {
                initrd,
                ..spec(V3, None, &[])
            }),
            Err(DtbError::BadInitrd)
        );
        assert!(matches!(
            generate(&GuestDtbSpec {
                bootargs: "a\0b",
                ..spec(V3, None, &[])
            }),
            Err(DtbError::Writer(_))
        ));
    }

    // ---- Synthetic host trees: buses, references ---------------------------

    /// A host tree with a GIC (phandle 1), a clock with one argument cell
    /// (phandle 2), a pin controller (phandle 3), a GPIO controller (phandle
    /// 4), and a `/soc` bus with 1+1 cells mapping 0x0 -> 0x1_0000_0000.
    fn synthetic_host(device: impl FnOnce(&mut FdtWriter)) -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.property_u32("interrupt-parent", 1).unwrap();
        let gic = w.begin_node("interrupt-controller@2f000000").unwrap();
        w.property_string("compatible", "arm,gic-400").unwrap();
        w.property_u32("#interrupt-cells", 3).unwrap();
        w.property_null("interrupt-controller").unwrap();
        w.property_phandle(1).unwrap();
        w.end_node(gic).unwrap();
        let clk = w.begin_node("clock-controller").unwrap();
        w.property_u32("#clock-cells", 1).unwrap();
        w.property_phandle(2).unwrap();
        w.end_node(clk).unwrap();
        let pinctrl = w.begin_node("pinctrl").unwrap();
        w.property_phandle(3).unwrap();
        w.end_node(pinctrl).unwrap();
        let gpio = w.begin_node("gpio").unwrap();
        w.property_u32("#interrupt-cells", 2).unwrap();
        w.property_null("interrupt-controller").unwrap();
        w.property_phandle(4).unwrap();
        w.end_node(gpio).unwrap();
        let soc = w.begin_node("soc").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 1).unwrap();
        w.property_array_u32("ranges", &[0x0, 0x1, 0x0, 0x1000_0000])
            .unwrap();
        device(&mut w);
        w.end_node(soc).unwrap();
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    fn mmc(w: &mut FdtWriter, extra: impl FnOnce(&mut FdtWriter)) {
        let node = w.begin_node("mmc@20000").unwrap();
        w.property_string("compatible", "vendor,mmc").unwrap();
        w.property_array_u32("reg", &[0x2_0000, 0x1000]).unwrap();
        w.property_array_u32("interrupts", &[0, 60, 4]).unwrap();
        w.property_array_u32("clocks", &[2, 7, 2, 8]).unwrap();
        w.property_array_u32("pinctrl-0", &[3]).unwrap();
        w.property_string("pinctrl-names", "default").unwrap();
        w.property_array_u32("vmmc-supply", &[3]).unwrap();
        w.property_phandle(9).unwrap();
        extra(w);
        let card = w.begin_node("card@0").unwrap();
        w.property_u32("reg", 0).unwrap();
        w.end_node(card).unwrap();
        w.end_node(node).unwrap();
    }

    fn guest_from(host_blob: &[u8]) -> Result<Vec<u8>, DtbError> {
        let host = Tree::new(host_blob).unwrap();
        let paths = ["/soc/mmc@20000"];
        generate(&spec(V3, Some(&host), &paths))
    }

    #[test]
    fn bus_device_reg_is_translated_and_reencoded() {
        let host = synthetic_host(|w| mmc(w, |_| {}));
        let blob = guest_from(&host).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(prop_cells(&fdt, "/mmc@20000", "reg"), [1, 0x2_0000, 0, 0x1000]);
        assert_eq!(prop_cells(&fdt, "/mmc@20000", "interrupts"), [0, 60, 4]);
        assert_eq!(prop_cells(&fdt, "/mmc@20000", "interrupt-parent"), [GIC_PHANDLE]);
        // Two specifiers with one argument each become two plain references.
        assert_eq!(
            prop_cells(&fdt, "/mmc@20000", "clocks"),
            [CLOCK_PHANDLE, CLOCK_PHANDLE]
        );
        // The child keeps its own reg (relative to the copied node's cells).
        assert_eq!(prop_cells(&fdt, "/mmc@20000/card@0", "reg"), [0]);
    }

    #[test]
    fn host_only_links_are_dropped() {
        let host = synthetic_host(|w| mmc(w, |_| {}));
        let blob = guest_from(&host).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let node = fdt.find_node("/mmc@20000").unwrap();
        for name in ["pinctrl-0", "pinctrl-names", "vmmc-supply", "phandle"] {
            assert!(node.property(name).is_none(), "{name} copied");
        }
        assert!(fdt.find_node("/soc").is_none());
        assert!(fdt.find_node("/gpio").is_none());
    }

    #[test]
    fn links_the_device_needs_are_refused() {
        for property in ["dmas", "resets", "cd-gpios", "interrupts-extended"] {
            let host = synthetic_host(|w| mmc(w, |w| w.property_array_u32(property, &[4, 1, 0]).unwrap()));
            let err = guest_from(&host).unwrap_err();
            let expected = DtbError::UnsupportedProperty {
                path: "/soc/mmc@20000".into(),
                property: property.into(),
            };
            assert_eq!(err, expected);
        }
    }

    #[test]
    fn interrupts_to_a_non_gic_parent_are_refused() {
        let host = synthetic_host(|w| mmc(w, |w| w.property_u32("interrupt-parent", 4).unwrap()));
        assert_eq!(
            guest_from(&host),
            Err(DtbError::UnsupportedInterrupts("/soc/mmc@20000".into()))
        );
    }

    #[test]
    fn ppis_on_a_device_are_refused() {
        let host = synthetic_host(|w| {
            let node = w.begin_node("mmc@20000").unwrap();
            w.property_array_u32("reg", &[0x2_0000, 0x1000]).unwrap();
            w.property_array_u32("interrupts", &[1, 9, 4]).unwrap();
            w.end_node(node).unwrap();
        });
        assert_eq!(
            guest_from(&host),
            Err(DtbError::UnsupportedInterrupts("/soc/mmc@20000".into()))
        );
    }

    #[test]
    fn reg_outside_the_bus_ranges_is_refused() {
        let host = synthetic_host(|w| {
            let node = w.begin_node("mmc@20000").unwrap();
            w.property_array_u32("reg", &[0x2000_0000, 0x1000]).unwrap();
            w.end_node(node).unwrap();
        });
        assert_eq!(
            guest_from(&host),
            Err(DtbError::UnsupportedReg("/soc/mmc@20000".into()))
        );
    }

    #[test]
    fn dangling_clock_reference_is_refused() {
        let host = synthetic_host(|w| {
            let node = w.begin_node("mmc@20000").unwrap();
            w.property_array_u32("reg", &[0x2_0000, 0x1000]).unwrap();
            w.property_array_u32("clocks", &[0x77]).unwrap();
            w.end_node(node).unwrap();
        });
        assert_eq!(
            guest_from(&host),
            Err(DtbError::BadClocks("/soc/mmc@20000".into()))
        );
    }

    /// `dtc` (where installed) decompiles the blob without errors.
    #[test]
    fn dtc_accepts_the_blobs() {
        let Ok(status) = std::process::Command::new("dtc").arg("--version").output() else {
            return;
        };
        assert!(status.status.success());
        for (name, blob) in [("v3", v3_blob()), ("v2", v2_blob())] {
            let path =
                std::env::temp_dir().join(format!("tessera-dtb-test-{}-{name}.dtb", std::process::id()));
            std::fs::write(&path, &blob).unwrap();
            let out = std::process::Command::new("dtc")
                .args(["-I", "dtb", "-O", "dts"])
                .arg(&path)
                .output()
                .unwrap();
            std::fs::remove_file(&path).unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "dtc failed on {name}: {stderr}");
            assert!(!stderr.contains("ERROR"), "dtc on {name}: {stderr}");
        }
    }
}
