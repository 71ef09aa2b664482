//! Building the VMs the configuration describes: RAM, stage 2, emulated
//! devices, images, vCPUs. A VM that cannot be built is reported and left
//! out; the others still start.

use super::dtb::{generate_with_links, GuestConsole, GuestDtbSpec, GuestGic, GuestRegion};
use super::irq;
use super::mmio::MmioBus;
use super::Images;
use super::{RamRegion, Vcpu, Vm, VmState};
use crate::arch::aarch64::{guest, mmu, MAX_CPUS};
use crate::config::PsciConduit;
use crate::config::{Config, ConsoleKind, VmConfig};
use crate::dt::Tree;
use crate::mm::addr::GuestPhysAddr;
use crate::mm::pagetable::{Attrs, MapError, PageTable, Regime};
use crate::mm::phys::{self, FrameTables};
use crate::mm::{FrameAllocator, PhysAddr, PhysRange};
use crate::package::{Package, KIND_IMAGE};
use crate::platform::{self, GicVersion, Platform};
use crate::vdev::subpage::{SubpageFilter, Window, WindowIo};
use crate::vdev::testdev::TestDevice;
use crate::vdev::vgic::dist::Distributor;
use crate::vdev::vgic::redist::Redistributors;
use crate::vdev::vgic::redist::STRIDE;
use crate::vdev::vgic::{Owner, Version, Vgic};
use crate::vdev::vuart::VirtualUart;
use crate::vdev::BusError;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, AtomicUsize};
use log::{error, info};

/// Guest-physical base of the virtual console (QEMU `virt`'s PL011) and its SPI.
pub const VUART_IPA: u64 = 0x0900_0000;
pub const VUART_INTID: u32 = 33;
/// The virtual GIC's frames, where QEMU `virt` has them.
pub const GICD_IPA: u64 = 0x0800_0000;
pub const GICC_IPA: u64 = 0x0801_0000;
pub const GICR_IPA: u64 = 0x080a_0000;
const BLOCK: u64 = 2 << 20;

/// Builds every VM of `config`; returns those that could be built.
pub fn create_all(
    p: &Platform,
    dtb: &Tree,
    config: &Config,
    pkg: &Package<'static>,
    frames: &mut FrameAllocator,
) -> Vec<Vm> {
    let mut vms = Vec::new();
    let mut taken = [false; MAX_CPUS];
    super::smmu::init(dtb, frames);
    super::links::init(&config.links, frames);
    for (cfg_index, vc) in config.vms.iter().enumerate() {
        let index = vms.len();
        let links = Links {
            all: &config.links,
            vm: cfg_index,
        };
        match create(index, p, dtb, vc, pkg, frames, &mut taken, links) {
            Ok(vm) => {
                super::smmu::assign(&vm, dtb);
                super::pcie_reset::register(&vm, dtb);
                vms.push(vm)
            }
            Err(e) => error!("VM {}: not started: {e}", vc.name),
        }
    }
    vms
}

// One more than clippy's seven: the VM's place among the links.
#[allow(clippy::too_many_arguments)]
fn create(
    index: usize,
    p: &Platform,
    dtb: &Tree,
    vc: &VmConfig,
    pkg: &Package<'static>,
    frames: &mut FrameAllocator,
    taken: &mut [bool; MAX_CPUS],
    links: Links,
) -> Result<Vm, String> {
    for &c in &vc.cpus {
        if c >= p.cpus.len() || c >= MAX_CPUS {
            return Err(format!(
                "CPU {c} does not exist on this board ({} CPUs)",
                p.cpus.len()
            ));
        }
        if taken.get(c) == Some(&true) {
            return Err(format!("CPU {c} already belongs to another VM"));
        }
    }
    let kernel = pkg
        .find(KIND_IMAGE, &vc.kernel)
        .ok_or_else(|| format!("image {:?} not in the package", vc.kernel))?;

    // RAM first: nothing else is allocated if it does not fit.
    let mut ram: Vec<RamRegion> = Vec::new();
    for m in &vc.memory {
        let got = match m.phys {
            Some(pa) => frames.alloc_at(PhysAddr(pa), m.size).map(|_| pa),
            None => frames.alloc(m.size, BLOCK).map(|a| a.0),
        };
        match got {
            Ok(pa) => ram.push(RamRegion {
                ipa: if m.identity { pa } else { m.ipa },
                pa,
                size: m.size,
            }),
            Err(e) => {
                for r in &ram {
                    frames.free(PhysAddr(r.pa), r.size);
                }
                return Err(format!("memory: {e}"));
            }
        }
    }

    // Passed-through devices: their MMIO (mapped at the same address) and
    // their SPIs, resolved against the live DTB.
    let mut passthrough: Vec<(u64, u64)> = Vec::new();
    let mut owned: Vec<(u32, Owner)> = alloc::vec![(p.timer.virt, Owner::Hw), (p.timer.phys, Owner::Hw)];
    // A passthrough console is the board's UART, owned outright.
    let mut device_paths: Vec<&str> = vc.devices.iter().map(|d| d.as_str()).collect();
    // The `reg`s of the devices that may master the bus, and whether one is a PCIe bridge.
    let mut dma_regs: Vec<(u64, u64)> = Vec::new();
    let mut bridge = false;
    if vc.console == ConsoleKind::Passthrough {
        device_paths.push(&p.console.path);
    }
    for path in &device_paths {
        if let Some(why) = super::guard::untranslated_dma(dtb, path, super::smmu::operational())
            .filter(|_| !vc.dma_unrestricted)
        {
            return Err(format!(
                "device {path}: {why}, so its DMA would not be confined; not passed through (dma = \"unrestricted\" accepts that)"
            ));
        }
        let dev = platform::device(dtb, path).map_err(|e| alloc::format!("{e}"))?;
        passthrough.extend(dev.regs.iter().map(|r| (r.base.0, r.size)));
        if !super::guard::never_masters(dtb, path) {
            dma_regs.extend(dev.regs.iter().map(|r| (r.base.0, r.size)));
        }
        owned.extend(dev.spis.iter().map(|&i| (i, Owner::Hw)));
        // A PCIe host bridge: its windows and INTx lines too (vm/pcie.rs).
        if let Some(b) = super::pcie::bridge(dtb, path, None) {
            bridge = true;
            passthrough.extend(b.windows);
            owned.extend(b.spis.iter().map(|&i| (i, Owner::Hw)));
        }
    }
    // Scrubbed at first touch, block by block, unless a device may DMA
    // into the RAM (it would read unscrubbed memory, or lose what it wrote
    // to a later scrub) or the config asks for all of it before the VM
    // starts (vm/lazy.rs). Only devices known never to master the bus
    // (guard::never_masters) leave a VM lazy outright; bus masters reachable
    // only through the sub-page filter have all of the RAM scrubbed at their
    // first forwarded access instead (HwWindow), before it reaches them.
    let runs = super::passthrough::plan(dtb, &device_paths, &passthrough);
    let scrub =
        super::passthrough::scrub_plan(vc.scrub_at_boot, vc.dma_unrestricted, &dma_regs, bridge, &runs);
    let tuples: Vec<(u64, u64, u64)> = ram.iter().map(|r| (r.ipa, r.pa, r.size)).collect();
    let lazy = Arc::new(crate::mm::scrub::LazyRam::new(
        &tuples,
        scrub != super::passthrough::ScrubPlan::Eager,
    ));
    let scrub_first = (scrub == super::passthrough::ScrubPlan::BeforeDeviceAccess).then(|| lazy.clone());

    if vc.console == ConsoleKind::Virtual {
        owned.push((VUART_INTID, Owner::Virtual));
    }
    for intid in super::links::interrupts(links.all, links.vm) {
        if owned.iter().any(|o| o.0 == intid) {
            return Err(format!("link interrupt {intid} is already the VM's"));
        }
        owned.push((intid, Owner::Virtual));
    }
    let version = match p.gic.version {
        GicVersion::V2 => Version::V2,
        GicVersion::V3 => Version::V3,
    };
    let pcpus: Vec<usize> = vc.cpus.clone();
    let vgic = Arc::new(Vgic::new(
        version,
        vc.cpus.len(),
        &owned,
        Box::new(irq::Host { pcpus }),
    ));
    let mut mmio = MmioBus::default();
    let mut console_uart = None;
    let overlap = |a: u64| format!("emulated device overlaps at {a:#x}");
    mmio.add(GICD_IPA, Box::new(Distributor { vgic: vgic.clone() }))
        .map_err(overlap)?;
    if version == Version::V3 {
        mmio.add(GICR_IPA, Box::new(Redistributors { vgic: vgic.clone() }))
            .map_err(overlap)?;
    }
    if vc.console == ConsoleKind::Virtual {
        let uart =
            Arc::new(VirtualUart::new(&vc.name, crate::console::vm_line).with_irq(vgic.clone(), VUART_INTID));
        mmio.add(VUART_IPA, Box::new(uart.clone())).map_err(overlap)?;
        console_uart = Some(uart);
    }
    super::links::attach(links.vm, &vc.name, links.all, &ram, &lazy, &vgic, &mut mmio)?;
    if let Some(base) = vc.test_device {
        mmio.add(base, Box::new(TestDevice::new()))
            .map_err(|a| format!("emulated device overlaps at {a:#x}"))?;
    }
    // Pages the VM's devices share with anything it was not given are not
    // mapped but trapped through a sub-page filter; decided here from the
    // live DTB, whatever xtask reported.
    let mut hyp_owned = super::passthrough::forbidden(p, vc.console == ConsoleKind::Passthrough);
    if !passthrough.is_empty() {
        hyp_owned.extend_from_slice(super::guard::hyp_frames_cached(
            dtb,
            &p.console.path,
            vc.console == ConsoleKind::Passthrough,
        ));
    }
    if let Some(((base, size), what)) = super::passthrough::clash(&passthrough, &hyp_owned) {
        return Err(format!(
            "device range {base:#x}+{size:#x} overlaps {what}: not passed through"
        ));
    }
    // Interrupts the hypervisor takes itself stay its own.
    let mut hyp_irqs = super::smmu::irqs();
    if vc.console != ConsoleKind::Passthrough {
        hyp_irqs.extend(p.console.irq.map(|i| (i, "the hypervisor's console interrupt")));
    }
    let spis: Vec<u32> = owned
        .iter()
        .filter(|o| o.0 >= 32 && o.1 == Owner::Hw)
        .map(|o| o.0)
        .collect();
    if let Some((intid, what)) = super::guard::irq_clash(&spis, &hyp_irqs) {
        return Err(format!(
            "a device's interrupt {intid} is {what}: not passed through"
        ));
    }
    for run in runs.iter().filter(|r| r.filtered) {
        let windows = filter_windows(&passthrough, run.start, run.end, &scrub_first)
            .map_err(|e| format!("sub-page filter at {:#x}: EL2 map: {e}", run.start))?;
        info!(
            "VM {}: {:#x}..{:#x} not owned outright (shared with other nodes, or partly undescribed): {} window(s) trapped through the sub-page filter",
            vc.name,
            run.start,
            run.end,
            windows.len()
        );
        mmio.add(
            run.start,
            Box::new(SubpageFilter::new(
                &vc.name,
                run.start,
                run.end - run.start,
                windows,
            )),
        )
        .map_err(overlap)?;
    }

    let shared = super::links::shared_regions(links.all, links.vm)?;
    // Stage 2: IPA size from the highest address the VM uses, capped by the CPU.
    let top = ram
        .iter()
        .map(|r| r.ipa + r.size)
        .chain(shared.iter().map(|s| s.0 + s.2))
        .chain(mmio.regions().iter().map(|r| r.base + r.size))
        .chain(passthrough.iter().map(|r| r.0 + r.1))
        .max()
        .unwrap_or(1 << 32);
    let ipa_bits = (64 - (top - 1).leading_zeros()).max(32).min(guest::pa_bits());
    if top > 1 << ipa_bits {
        return Err(format!(
            "guest-physical address {top:#x} beyond the CPU's {ipa_bits}-bit IPA space"
        ));
    }
    let mut tables = FrameTables(frames);
    let mut s2 =
        PageTable::new(Regime::Stage2, ipa_bits, &mut tables).map_err(|e| format!("stage 2: {e}"))?;
    // Shared regions of its shmem links: normal memory, never executable.
    for &(ipa, pa, size, write) in &shared {
        let attrs = Attrs {
            write,
            exec: false,
            ..Attrs::RAM
        };
        s2.map(ipa, pa, size, attrs, &mut tables)
            .map_err(|e| format!("stage 2 for a shared region at {ipa:#x}: {e}"))?;
    }
    // Only the pages the VM owns outright are mapped (page_share).
    for run in runs.iter().filter(|r| !r.filtered) {
        s2.map(
            run.start,
            run.start,
            run.end - run.start,
            Attrs::DEVICE,
            &mut tables,
        )
        .map_err(|e| format!("stage 2 for device at {:#x}: {e}", run.start))?;
    }
    // GICv2: the guest's CPU interface is the physical GICV frame.
    if version == Version::V2 {
        let gicv = p
            .gic
            .vcpu_if
            .ok_or("GICv2 without a GICV frame: no virtual CPU interface")?;
        s2.map(GICC_IPA, gicv.base.0, 0x2000, Attrs::DEVICE, &mut tables)
            .map_err(|e| format!("stage 2 for the GIC CPU interface: {e}"))?;
    }
    // Hardware SPIs start routed to vCPU 0's CPU and disabled until the guest enables them.
    let g = crate::drivers::gic::get();
    let boot_cpu = vc.cpus.first().copied().ok_or("a VM needs at least one CPU")?;
    for &(intid, _) in owned.iter().filter(|o| o.0 >= 32 && o.1 == Owner::Hw) {
        g.set_enabled(intid, boot_cpu, false);
        g.route(intid, boot_cpu);
    }

    // Where everything goes in the first RAM region: the kernel at its
    // Image text_offset, the DTB in the top 2 MiB, the initrd right below.
    let first = *ram.first().ok_or("a VM needs RAM")?;
    let text_offset = image_text_offset(kernel);
    let kernel_end = text_offset + (kernel.len() as u64).max(image_size(kernel));
    if first.size < 4 << 20 || kernel_end > first.size - (2 << 20) {
        return Err(format!(
            "the first RAM region ({} KiB) cannot hold the kernel ({} KiB with BSS) and a 2 MiB DTB area",
            first.size >> 10,
            kernel_end >> 10
        ));
    }
    let dtb_ipa = first.ipa + first.size - (2 << 20);
    let initrd = match &vc.initrd {
        Some(name) => {
            let bytes = pkg
                .find(KIND_IMAGE, name)
                .ok_or_else(|| format!("initrd {name:?} not in the package"))?;
            let at = (dtb_ipa - bytes.len() as u64) & !0xfff;
            if at < first.ipa + kernel_end {
                return Err(format!(
                    "the initrd ({} KiB) does not fit between the kernel and the DTB",
                    bytes.len() >> 10
                ));
            }
            Some((bytes, at))
        }
        None => None,
    };
    let dtb: alloc::borrow::Cow<'static, [u8]> = match &vc.dtb {
        Some(name) => pkg
            .find(KIND_IMAGE, name)
            .ok_or_else(|| format!("DTB {name:?} not in the package"))?
            .into(),
        None => {
            let memory: Vec<GuestRegion> = ram.iter().map(|r| GuestRegion::new(r.ipa, r.size)).collect();
            let gic = match version {
                Version::V3 => GuestGic::V3 {
                    dist: GuestRegion::new(GICD_IPA, 0x1_0000),
                    redist: GuestRegion::new(GICR_IPA, STRIDE * vc.cpus.len() as u64),
                },
                Version::V2 => GuestGic::V2 {
                    dist: GuestRegion::new(GICD_IPA, 0x1000),
                    cpu: GuestRegion::new(GICC_IPA, 0x2000),
                },
            };
            let paths = &device_paths;
            let t = p.timer;
            let seed = super::seed::next(index);
            let spec = GuestDtbSpec {
                name: &vc.name,
                vcpus: vc.cpus.len(),
                memory: &memory,
                gic,
                timer_ppis: [t.secure_phys, t.phys, t.virt, t.hyp_phys],
                psci_method: if vc.psci == PsciConduit::Smc { "smc" } else { "hvc" },
                console: (vc.console == ConsoleKind::Virtual).then_some(GuestConsole {
                    base: GuestPhysAddr(VUART_IPA),
                    intid: VUART_INTID,
                }),
                bootargs: &vc.bootargs,
                initrd: initrd.map(|(b, at)| GuestRegion::new(at, b.len() as u64)),
                passthrough: paths,
                host: Some(dtb),
                seed: seed.as_ref(),
            };
            let link_nodes = super::links::guest_links(links.all, links.vm);
            generate_with_links(&spec, &link_nodes)
                .map_err(|e| format!("guest DTB: {e}"))?
                .into()
        }
    };
    if dtb.len() as u64 > 2 << 20 {
        return Err("the DTB is larger than 2 MiB".into());
    }
    let images = Images {
        kernel,
        kernel_ipa: first.ipa + text_offset,
        initrd,
        seed: vc
            .dtb
            .is_none()
            .then(|| super::seed::SeedSlots::find(&dtb, index))
            .flatten(),
        dtb,
        dtb_ipa,
    };
    // RAM in stage 2 now that the images' blocks are known; scrubbed and
    // loaded on the VM's own CPU before it first runs (lazy::before_entry).
    lazy.mark_covered(&image_ranges(&ram, &images)?);
    map_ram(&ram, &lazy, &mut s2, &mut tables).map_err(|e| format!("stage 2: {e}"))?;

    for &c in &vc.cpus {
        if let Some(t) = taken.get_mut(c) {
            *t = true;
        }
    }
    if let Some(u) = console_uart {
        crate::console::register(u);
    }
    let vmid = (index + 1) as u16;
    let vcpus = vc
        .cpus
        .iter()
        .enumerate()
        .map(|(i, &c)| Vcpu::new(index, i, c))
        .collect();
    let devices = if vc.devices.is_empty() {
        "none".into()
    } else {
        vc.devices.join(" ")
    };
    info!(
        "VM {} ({}): CPUs {:?}, RAM {}, devices {}, console {:?}, {} at {:#x}, DTB at {:#x}{}",
        index,
        vc.name,
        vc.cpus,
        ram.iter()
            .map(|r| format!("{:#x}->{:#x}+{}M", r.ipa, r.pa, r.size >> 20))
            .collect::<Vec<_>>()
            .join(" "),
        devices,
        vc.console,
        if vc.dtb.is_some() {
            "kernel (own DTB)"
        } else {
            "kernel"
        },
        images.kernel_ipa,
        images.dtb_ipa,
        match images.initrd {
            Some((b, at)) => format!(", initrd {} KiB at {at:#x}", b.len() >> 10),
            None => String::new(),
        }
    );
    Ok(Vm {
        index,
        vmid,
        vttbr: s2.root() | (u64::from(vmid) << 48),
        vtcr: guest::vtcr(ipa_bits, s2.start_level()),
        entry: images.kernel_ipa,
        x0: images.dtb_ipa,
        images,
        lazy,
        config: vc.clone(),
        vcpus,
        ram,
        mmio,
        vgic,
        state: AtomicU8::new(VmState::Running as u8),
        faults_logged: AtomicUsize::new(0),
    })
}

/// The VM's place among the configuration's links.
#[derive(Clone, Copy)]
struct Links<'a> {
    all: &'a [crate::config::links::LinkConfig],
    /// The VM's index in the configuration.
    vm: usize,
}

/// The hardware behind one filtered window: the EL2 volatile accessor, and
/// for a VM whose bus masters are all behind the filter its RAM, scrubbed
/// whole before any access reaches a device (passthrough::ScrubPlan).
struct HwWindow(mmu::DeviceWindow, Option<Arc<crate::mm::scrub::LazyRam>>);

impl HwWindow {
    /// On the trapping vCPU's CPU; returns once every block is scrubbed and
    /// mapped (one atomic load once it is done).
    fn scrub_first(&self) {
        if let Some(lazy) = &self.1 {
            lazy.scrub_all(&super::lazy::HwBlocks::TOUCH);
        }
    }
}

impl WindowIo for HwWindow {
    fn read(&self, offset: u64, width: u8) -> Result<u64, BusError> {
        self.scrub_first();
        self.0.read(offset, width).ok_or(BusError)
    }
    fn write(&self, offset: u64, width: u8, value: u64) -> Result<(), BusError> {
        self.scrub_first();
        self.0.write(offset, width, value).ok_or(BusError)
    }
}

/// The VM's device windows clipped to the filtered pages `[start, end)`,
/// each mapped as device memory at EL2 for forwarding.
fn filter_windows(
    regs: &[(u64, u64)],
    start: u64,
    end: u64,
    scrub_first: &Option<Arc<crate::mm::scrub::LazyRam>>,
) -> Result<Vec<Window<HwWindow>>, MapError> {
    let mut out = Vec::new();
    for &(b, s) in regs {
        let (lo, hi) = (b.max(start), b.saturating_add(s).min(end));
        if lo < hi {
            let io = mmu::DeviceWindow::map(PhysRange::new(lo, hi - lo))?;
            out.push(Window {
                base: lo,
                size: hi - lo,
                io: HwWindow(io, scrub_first.clone()),
            });
        }
    }
    Ok(out)
}

/// The guest-physical ranges the images occupy, each checked to lie inside
/// one RAM region.
fn image_ranges(ram: &[RamRegion], im: &Images) -> Result<Vec<(u64, u64)>, String> {
    placed(ram, im)?;
    Ok(parts(im).iter().map(|&(ipa, b)| (ipa, b.len() as u64)).collect())
}

/// The images and where they go (guest-physical).
fn parts(im: &Images) -> Vec<(u64, &[u8])> {
    let mut parts: Vec<(u64, &[u8])> = alloc::vec![(im.kernel_ipa, im.kernel)];
    if let Some((b, at)) = im.initrd {
        parts.push((at, b));
    }
    parts.push((im.dtb_ipa, &im.dtb));
    parts
}

/// Each image as physical (pa, bytes), each inside one RAM region.
fn placed<'a>(ram: &[RamRegion], im: &'a Images) -> Result<Vec<(u64, &'a [u8])>, String> {
    let parts = parts(im);
    let mut placed = Vec::with_capacity(parts.len());
    for &(ipa, bytes) in &parts {
        let r = ram
            .iter()
            .find(|r| ipa >= r.ipa && ipa + bytes.len() as u64 <= r.ipa + r.size)
            .ok_or_else(|| format!("{ipa:#x} (+{:#x}) is not inside the VM's RAM", bytes.len()))?;
        placed.push((r.pa + (ipa - r.ipa), bytes));
    }
    Ok(placed)
}

/// Maps the VM's RAM in stage 2: eager parts as usual, each lazy block's
/// level-2 slot prepared but left invalid (mapped at its first touch).
fn map_ram(
    ram: &[RamRegion],
    lazy: &crate::mm::scrub::LazyRam,
    s2: &mut PageTable,
    tables: &mut FrameTables,
) -> Result<(), MapError> {
    for (i, r) in ram.iter().enumerate() {
        let blocks = lazy.lazy_blocks(i);
        for (ipa, len) in crate::mm::scrub::uncovered(r.ipa, r.size, &blocks) {
            s2.map(ipa, r.pa + (ipa - r.ipa), len, Attrs::RAM, tables)?;
        }
        let mut slots = Vec::with_capacity(blocks.len());
        for &(ipa, len) in &blocks {
            let pa = r.pa + (ipa - r.ipa);
            for (k, slot) in s2.block_slots(ipa, len, tables)?.into_iter().enumerate() {
                let off = k as u64 * crate::mm::scrub::BLOCK;
                slots.push((ipa + off, slot, s2.block_desc(pa + off, Attrs::RAM)));
            }
        }
        lazy.set_slots(i, &slots);
    }
    Ok(())
}

/// Scrubs the VM's eager RAM and copies its pristine images in: before its
/// first entry and on every reset, so nothing of a previous run survives
/// there (lazy blocks are scrubbed at their first touch instead). What the
/// images overwrite is not scrubbed first; everything else is.
pub fn load_images(ram: &[RamRegion], im: &Images, lazy: &crate::mm::scrub::LazyRam) -> Result<(), String> {
    let placed = placed(ram, im)?;
    let covered: Vec<(u64, u64)> = placed.iter().map(|&(pa, b)| (pa, b.len() as u64)).collect();
    for (base, size) in lazy.eager_ranges() {
        for (pa, len) in crate::mm::scrub::uncovered(base, size, &covered) {
            // SAFETY: the VM's own RAM, identity mapped; no vCPU of it runs.
            // Cleaned to PoC too: a guest starts with its MMU off (non-cacheable
            // accesses), so it must read the zeros from memory, and a dirty line
            // evicted later must not overwrite what it wrote since.
            unsafe { phys::zero_to_poc(pa, len) };
        }
    }
    // A fresh guest seed for every start (crate::vm::seed).
    let dtb = super::seed::fresh(&im.dtb, im.seed);
    for (pa, bytes) in placed {
        let bytes = if bytes.as_ptr() == im.dtb.as_ptr() {
            &dtb
        } else {
            bytes
        };
        // SAFETY: inside one of the VM's RAM regions (checked above); vCPUs
        // start with their MMU and caches off, so the bytes go to PoC.
        unsafe { phys::copy_to_poc(pa, bytes) };
    }
    // No stale instruction-cache line of a previous run is fetched instead.
    mmu::invalidate_icache_all();
    Ok(())
}

/// image_size from an arm64 Image header (the kernel's extent with BSS).
fn image_size(image: &[u8]) -> u64 {
    if image.len() >= 64 && image.get(56..60) == Some(b"ARM\x64".as_slice()) {
        image
            .get(16..24)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    } else {
        0
    }
}

/// text_offset from an arm64 Image header, or 0 for a raw binary.
fn image_text_offset(image: &[u8]) -> u64 {
    if image.len() >= 64 && image.get(56..60) == Some(b"ARM\x64".as_slice()) {
        image
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    } else {
        0
    }
}
