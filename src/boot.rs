//! The boot flow on the target: what `entry.S` calls.

use crate::arch::aarch64::{cpu, mmu};
use crate::config::Config;
use crate::dt::{Dt, Tree};
use crate::mm::{FrameAllocator, PhysRange};
use crate::package::Package;
use crate::platform::ranges::DtNode;
use crate::platform::{self, Platform};
use crate::vm::{self, vcpu};
use crate::{console, smp, VERSION};
use alloc::vec::Vec;
use core::panic::PanicInfo;
use log::{error, info, warn};
use spin::Once;

/// The board, once discovered (read-only from then on).
pub static PLATFORM: Once<Platform> = Once::new();
/// The board DTB's index, built once at boot.
pub static BOARD_DTB: Once<Tree<'static>> = Once::new();
/// The free physical memory.
pub static FRAMES: spin::Mutex<FrameAllocator> = spin::Mutex::new(FrameAllocator::new_empty());

extern "C" {
    static _start: u8;
}

/// The loaded image: from `_start` for the header's `image_size` bytes (BSS
/// and any appended guest package included).
fn image_range() -> PhysRange {
    // SAFETY: `_start` is the Image header; image_size is at offset 16.
    let (base, size) = unsafe {
        let base = &_start as *const u8 as u64;
        (base, core::ptr::read_volatile((base + 16) as *const u64))
    };
    PhysRange::new(base, size)
}

/// The end of the image's text (page aligned by the linker script).
fn text_end() -> u64 {
    extern "C" {
        static __text_end: u8;
    }
    core::ptr::addr_of!(__text_end) as u64
}

/// What the boot CPU wrote with its MMU off: the image from the end of text
/// (entry.S relocates nothing below it) to the end of BSS (relocations, BSS)
/// and its own stack.
fn written_before_mmu() -> [PhysRange; 2] {
    extern "C" {
        static __text_end: u8;
        static __bss_end: u8;
    }
    let text_end = core::ptr::addr_of!(__text_end) as u64;
    let bss_end = core::ptr::addr_of!(__bss_end) as u64;
    let stack_top = smp::stack_top(0);
    let stack = crate::arch::aarch64::STACK_SIZE as u64;
    [
        PhysRange::new(text_end, bss_end - text_end),
        PhysRange::new(stack_top - stack, stack),
    ]
}

/// Boot CPU, from `entry.S`: `dtb` as passed in x0, `el` the level we entered at.
#[no_mangle]
extern "C" fn primary_main(dtb: usize, el: u64) -> ! {
    let t0 = cpu::counter();
    // SAFETY: x0 holds the DTB address per the arm64 boot protocol: its
    // header's first two words (magic, total size) are read, nothing more.
    let header = unsafe { core::slice::from_raw_parts(dtb as *const u8, 8) };
    let Some(size) = crate::dt::blob_size(header) else {
        cpu::park(); // no DTB: no console to complain on
    };
    // SAFETY: the boot loader handed us the DTB's `size` bytes, which
    // nothing writes for the hypervisor's life.
    let bytes: &'static [u8] = unsafe { core::slice::from_raw_parts(dtb as *const u8, size) };
    // Before the heap: straight off the blob (the index needs the heap).
    let Some(raw) = Dt::new(bytes).ok().and_then(|d| d.root()) else {
        cpu::park();
    };
    if el != 2 {
        early_complain(
            raw,
            "tessera: not entered at EL2 (the boot loader must start us in EL2); stopping\n",
        );
    }
    let image = image_range();
    let dtb_range = PhysRange::new(dtb as u64, size as u64);
    if mmu::init(
        platform::memory_ranges(raw),
        image,
        text_end(),
        &written_before_mmu(),
    )
    .is_err()
    {
        early_complain(
            raw,
            "tessera: cannot build the EL2 translation tables; stopping\n",
        );
    }
    crate::mm::heap::init();
    // The board DTB read once into an index every later question is
    // answered from (crate::dt::tree).
    let board = match Tree::new(bytes) {
        Ok(t) => BOARD_DTB.call_once(|| t),
        Err(e) => early_complain(raw, &alloc::format!("tessera: cannot boot: board DTB: {e}\n")),
    };

    let platform = match platform::discover(board) {
        Ok(p) => PLATFORM.call_once(|| p),
        Err(e) => {
            let mut msg = alloc::string::String::from("tessera: cannot boot: ");
            msg.push_str(&alloc::format!("{e}\n"));
            early_complain(raw, &msg);
        }
    };
    if mmu::map_device(platform.console.regs).is_err() {
        cpu::park();
    }
    console::init(platform.console.kind, platform.console.regs.base.0 as usize, t0);
    for w in &platform.warnings {
        warn!("{w}");
    }

    let mut exclude = alloc::vec![image, dtb_range];
    exclude.extend_from_slice(&platform.reserved);
    exclude.extend(platform.release_pages());
    *FRAMES.lock() = FrameAllocator::new(&platform.ram, &exclude);

    let boot = platform.cpu_index(cpu::mpidr()).unwrap_or(0);
    cpu::set_index(boot);
    vcpu::set_stack_top(boot, smp::stack_top(0));
    if let Err(e) = init_gic(platform, boot) {
        error!("GIC: {e}; stopping");
        cpu::park();
    }
    crate::vm::irq::init_cpu(boot, maintenance_irq());
    decide_hw_deactivate(platform);
    decide_virq(platform);
    let online = smp::start_secondaries(platform, boot);
    banner(platform, online, image, t0);

    if let Some(test) = platform.boot_option("tessera.selftest") {
        selftest(test);
    }
    vm::seed::init(board);
    let vms = match package() {
        Some(pkg) => match pkg.config().map(Config::parse) {
            Some(Ok(config)) => {
                console::set_prefix(config.console_prefix);
                vm::create_all(platform, board, &config, &pkg, &mut FRAMES.lock())
            }
            Some(Err(e)) => {
                error!("{e}; no VM started");
                Vec::new()
            }
            None => {
                warn!("the image carries no configuration; no VM started");
                Vec::new()
            }
        },
        None => {
            info!("no guest package appended to the image (cargo xtask build --config ...); no VM started");
            Vec::new()
        }
    };
    let owner = vms
        .iter()
        .find(|v| v.config.console == crate::config::ConsoleKind::Passthrough);
    if let Some(owner) = owner {
        console::hand_over(owner.name());
    } else if let Some(irq) = platform.console.irq.filter(|_| !vms.is_empty()) {
        crate::vm::irq::init_console_input(irq, boot);
        console::announce_focus();
    }
    info!("{}", crate::mm::footprint::measure(image.size, online));
    info!("tessera: boot complete, {} VM(s) starting", vms.len());
    vcpu::install(vms);
    vcpu::cpu_loop()
}

/// The GIC maintenance interrupt (PPI 9 unless the DTB says otherwise).
pub fn maintenance_irq() -> u32 {
    PLATFORM.get().and_then(|p| p.gic.maintenance_irq).unwrap_or(25)
}

/// Maps the GIC's frames and initialises its distributor.
fn init_gic(p: &Platform, boot: usize) -> Result<(), &'static str> {
    use crate::drivers::gic::{self, PhysGic};
    let g = &p.gic;
    let map = |r: PhysRange| mmu::map_device(r).map_err(|_| "cannot map a GIC frame");
    map(g.dist)?;
    let mpidrs: Vec<u64> = p.cpus.iter().map(|c| c.mpidr).collect();
    let phys = match g.version {
        platform::GicVersion::V3 => {
            for r in &g.redists {
                map(*r)?;
            }
            let regions: Vec<(u64, u64)> = g.redists.iter().map(|r| (r.base.0, r.size)).collect();
            // SAFETY: every frame named here was mapped as device memory above.
            PhysGic::V3(unsafe { crate::drivers::gicv3::Gicv3::new(g.dist.base.0, &regions, &mpidrs) })
        }
        platform::GicVersion::V2 => {
            let cpu_if = g.cpu_if.ok_or("GICv2 without a CPU interface")?;
            let hyp = g
                .hyp_if
                .ok_or("GICv2 without the virtualisation extensions (GICH)")?;
            map(PhysRange::new(cpu_if.base.0, cpu_if.size.max(0x2000)))?;
            map(hyp)?;
            // SAFETY: as above.
            PhysGic::V2(unsafe {
                crate::drivers::gicv2::Gicv2::new(g.dist.base.0, cpu_if.base.0, hyp.base.0, mpidrs.len())
            })
        }
    };
    gic::init(phys, boot);
    Ok(())
}

/// GICv2: finds out, by trying, whether a guest's deactivation of a level
/// interrupt through a HW list register lets it fire again while its line
/// is still up. Where it does not (QEMU's GICv2 model, on `virt` and
/// `xlnx-zcu102` alike, still in QEMU 10), guests' hardware interrupts are
/// listed as software ones with EOI maintenance and deactivated by the
/// hypervisor instead: one more exit per interrupt, only where needed. A
/// probe rather than board data, because the property belongs to the
/// interrupt controller (model or silicon), not to the board's name.
fn decide_hw_deactivate(p: &Platform) {
    use crate::drivers::gic::{self, PhysGic};
    let PhysGic::V2(v2) = gic::get() else { return };
    let Some(gicv) = p.gic.vcpu_if else { return };
    if mmu::map_device(PhysRange::new(gicv.base.0, 0x2000)).is_err() {
        return;
    }
    // SAFETY: GICV is this GIC's virtual CPU interface, mapped just above;
    // this is the boot CPU with IRQs masked and no guest running.
    let resignals = unsafe {
        v2.probe_hw_deactivate_resignals(
            gicv.base.0,
            p.timer.hyp_phys,
            cpu::hyp_timer_fire_now,
            cpu::hyp_timer_stop,
        )
    };
    match resignals {
        Some(true) => {}
        Some(false) => {
            info!("GICv2: a level interrupt deactivated through a HW list register does not fire again; guests' hardware interrupts are deactivated on EOI maintenance");
            crate::vm::irq::use_soft_hw_deactivate();
        }
        None => {
            warn!("GICv2: the HW-deactivation probe got no answer; guests' hardware interrupts are deactivated on EOI maintenance to be safe");
            crate::vm::irq::use_soft_hw_deactivate();
        }
    }
}

/// The guest package xtask appended after the image, if any.
/// `tessera.virq=hcr`: this board's GICv3 does not signal the guests'
/// virtual IRQ to the CPUs (QEMU before 10.1 leaves the `imx8mp-evk` model's
/// wire unconnected; boards/imx8mp-evk/board.toml passes the option there),
/// so the hypervisor asserts it through HCR_EL2.VI. Board data, not a probe:
/// the wire can only be seen from EL1. Real boards need nothing.
fn decide_virq(p: &Platform) {
    use crate::drivers::gic::{self, PhysGic};
    match p.boot_option("tessera.virq") {
        None | Some("gic") => {}
        Some("hcr") => match gic::get() {
            PhysGic::V3(_) => {
                info!("GICv3: guests' virtual IRQ asserted through HCR_EL2.VI (tessera.virq=hcr: the GIC's virtual IRQ output does not reach the CPUs on this board)");
                crate::vm::irq::use_soft_virq();
            }
            PhysGic::V2(_) => warn!("tessera.virq=hcr is for a GICv3; ignored on this GICv2"),
        },
        Some(other) => warn!("tessera.virq={other:?} unknown (gic or hcr); ignored"),
    }
}

fn package() -> Option<Package<'static>> {
    extern "C" {
        static __payload_start: u8;
    }
    let image = image_range();
    let start = core::ptr::addr_of!(__payload_start) as u64;
    if image.end() <= start + 24 {
        return None;
    }
    // SAFETY: the loader placed `image_size` bytes from `_start`, and the
    // package lies inside them (checked above); the bytes are never written.
    let bytes = unsafe { core::slice::from_raw_parts(start as *const u8, (image.end() - start) as usize) };
    Package::parse(bytes)
}

/// Each secondary CPU, from `entry.S`, with `slot` its stack slot.
#[no_mangle]
extern "C" fn secondary_main(slot: usize) -> ! {
    smp::secondary_init(slot);
    vcpu::wait_installed();
    vcpu::cpu_loop()
}

fn banner(p: &Platform, online: usize, image: PhysRange, t0: u64) {
    let us = (cpu::counter() - t0) * 1_000_000 / cpu::counter_freq().max(1);
    info!("Tessera {VERSION} on \"{}\"", p.model);
    let spin = p
        .cpus
        .iter()
        .any(|c| matches!(c.enable, platform::EnableMethod::SpinTable { .. }));
    info!(
        "  CPUs online: {online}/{} (boot CPU MPIDR {:#x}{})",
        p.cpus.len(),
        cpu::mpidr(),
        if spin { "; spin table" } else { "" }
    );
    let frames = FRAMES.lock();
    info!(
        "  RAM: {} MiB in {} range(s), {} MiB free; image {} ({} KiB)",
        p.ram_bytes() >> 20,
        p.ram.len(),
        frames.free_bytes() >> 20,
        image,
        image.size >> 10
    );
    drop(frames);
    let g = &p.gic;
    match g.version {
        platform::GicVersion::V3 => info!(
            "  GICv3 ({}): GICD {}, GICR {}{}",
            g.path,
            g.dist.base,
            g.redists[0].base,
            if g.redists.len() > 1 {
                " (+ more regions)"
            } else {
                ""
            }
        ),
        platform::GicVersion::V2 => info!(
            "  GICv2 ({}): GICD {}, GICC {:#x}, GICH {:#x}, GICV {:#x}",
            g.path,
            g.dist.base,
            g.cpu_if.map(|r| r.base.0).unwrap_or(0),
            g.hyp_if.map(|r| r.base.0).unwrap_or(0),
            g.vcpu_if.map(|r| r.base.0).unwrap_or(0)
        ),
    }
    info!(
        "  console: {} at {} ({}, via {})",
        p.console.kind.name(),
        p.console.regs.base,
        p.console.path,
        p.console.found_by
    );
    let psci = p
        .psci
        .map(|c| (c, crate::arch::aarch64::firmware::psci_version(c)));
    match psci {
        Some((c, Ok((maj, min)))) => info!(
            "  timer PPIs: virt {}, EL1 phys {}, EL2 phys {}; PSCI {maj}.{min} via {c:?}",
            p.timer.virt, p.timer.phys, p.timer.hyp_phys
        ),
        _ => info!(
            "  timer PPIs: virt {}, EL1 phys {}, EL2 phys {}; no PSCI",
            p.timer.virt, p.timer.phys, p.timer.hyp_phys
        ),
    }
    // The counter starts at zero when the board (or QEMU) resets.
    let since_reset = cpu::counter() * 1_000_000 / cpu::counter_freq().max(1);
    info!(
        "  boot: {}.{:03} ms from entry to banner, {}.{:03} ms since reset",
        us / 1000,
        us % 1000,
        since_reset / 1000,
        since_reset % 1000
    );
}

/// Deliberate faults for the test suite (`tessera.selftest=` on the command line).
fn selftest(name: &str) {
    match name {
        "el2-fault" => {
            info!("selftest: reading an unmapped address at EL2");
            // SAFETY: deliberately faults; the EL2 vector reports and parks.
            let v = unsafe { core::ptr::read_volatile(0xdead_0000 as *const u64) };
            info!("selftest: read {v:#x} (should not get here)");
        }
        other => warn!("unknown selftest {other:?}"),
    }
}

/// Says `msg` on the console UART the DTB names and stops: for failures
/// before the console is up. Without a UART Tessera drives, parks silently.
fn early_complain<'a>(root: impl DtNode<'a>, msg: &str) -> ! {
    if let Some((kind, base)) = platform::early_console(root) {
        let _ = mmu::map_device(PhysRange::new(base, 0x1000));
        console::early_print(kind, base as usize, msg);
    }
    cpu::park()
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    console::emergency_print(format_args!("\ntessera: CPU {} panicked at ", cpu::index()));
    if let Some(l) = info.location() {
        console::emergency_print(format_args!("{}:{}: ", l.file(), l.line()));
    }
    console::emergency_print(format_args!("{}\n", info.message()));
    cpu::park()
}
