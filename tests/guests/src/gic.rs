//! One small API over the GICv2 and GICv3 of QEMU `virt` (which is also what
//! Tessera's virtual GIC presents), and the IRQ hook the runtime's vector calls.
//!
//! Layout: distributor at `0x0800_0000`; GICv3 redistributors from
//! `0x080A_0000`, one 128 KiB pair of frames per CPU (RD_base, then SGI_base
//! at +64 KiB), found by `GICR_TYPER[63:32]` == our MPIDR affinity; GICv2 CPU
//! interface at `0x0801_0000`. The version comes from `GICD_PIDR2[7:4]` at
//! 0xFFE8 (GICv3); a GICv2 distributor is only 4 KiB on QEMU, so an abort
//! there also means GICv2.
//!
//! Configuration, as Linux sets it up:
//! - GICv3: affinity routing, everything group 1 (`GICD_CTLR` = ARE | EnableGrp1),
//!   the CPU interface through the system registers (SRE), EOImode 0 (the EOI
//!   also deactivates); SGIs and PPIs in this vCPU's redistributor.
//! - GICv2: everything group 0 (`GICD_CTLR` = 1, `GICC_CTLR` = 1), delivered as IRQ.
//!
//! Every interrupt starts disabled at [`DEFAULT_PRIORITY`], level-sensitive
//! (SGIs are always edge). Priority mask 0xff: all priorities are let through.
//!
//! The IRQ hook: [`set_handler`] registers one `fn(intid)` for the whole VM.
//! On an IRQ the vector acknowledges it, calls the handler (IRQs still masked:
//! no nesting), then EOIs it unless the handler called [`hold_eoi`], which
//! leaves it active (see [`take_held`]). A spurious INTID (1020..=1023) is
//! ignored. An IRQ with no handler registered is a `FAIL` and parks the vCPU.
//!
//! vCPU index K is the CPU with MPIDR Aff0 = K (Aff1..3 = 0) and GICv2 CPU
//! interface number K, as under Tessera and on QEMU `virt` with up to 8 CPUs.
//! No heap; register accesses are single `ldr`/`str` instructions without
//! writeback ([`Mmio::ld32`] & co., emulatable from the syndrome), 32-bit
//! except `IPRIORITYR`/`ITARGETSR` (bytes, like Linux) and
//! `GICR_TYPER`/`GICD_IROUTER` (64-bit).

use crate::cpu::{cpu_index, mpidr, park};
use crate::{println, try_access, Mmio, MAX_CPUS};
use core::arch::asm;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};

/// The GIC architecture version the VM sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// GICv2: memory-mapped CPU interface, 8 CPUs, ITARGETSR routing.
    V2,
    /// GICv3 (or v4): system-register CPU interface, affinity routing.
    V3,
}

/// Who an SGI goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SgiTarget {
    /// The vCPUs whose index bit is set (bit K = Aff0 K on GICv3, up to 16
    /// bits; CPU interface K on GICv2, 8 bits). Bits of CPUs that do not
    /// exist are sent as they are: that is a test case.
    List(u16),
    /// Every vCPU but the sender (GICv3 IRM = 1; GICv2 filter 1).
    AllButSelf,
}

/// Trigger mode of a PPI or SPI (`ICFGR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Level-sensitive: pending while the line is asserted.
    Level,
    /// Edge-triggered: each rising edge makes it pending once.
    Edge,
}

/// An acknowledged interrupt: the raw IAR value. GICv2 keeps the SGI's
/// source CPU in it, which the EOI must carry back, so give [`eoi`] this and
/// not just the INTID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Irq(u32);

impl Irq {
    /// The interrupt ID.
    pub fn intid(self) -> u32 {
        match version() {
            Version::V2 => self.0 & 0x3ff,
            Version::V3 => self.0 & 0x00ff_ffff,
        }
    }

    /// GICv2 only: the CPU interface that sent this SGI.
    pub fn source_cpu(self) -> Option<usize> {
        (version() == Version::V2 && self.intid() < 16).then_some(((self.0 >> 10) & 7) as usize)
    }

    /// The raw IAR value.
    pub fn raw(self) -> u32 {
        self.0
    }

    /// INTID 1020..=1023: nothing (more) to take.
    pub fn is_spurious(self) -> bool {
        (1020..=1023).contains(&self.intid())
    }
}

/// Priority every interrupt gets from the init functions.
pub const DEFAULT_PRIORITY: u8 = 0xa0;
/// The virtual timer's PPI.
pub const VTIMER_INTID: u32 = 27;

const GICD_BASE: usize = 0x0800_0000;
const GICC_BASE: usize = 0x0801_0000;
const GICR_BASE: usize = 0x080A_0000;
const GICR_STRIDE: usize = 0x2_0000;
const SGI_FRAME: usize = 0x1_0000;

// Distributor (and, for 0x080..0xc08, the same layout in the GICv3 SGI frame).
const GICD_CTLR: usize = 0x000;
const GICD_TYPER: usize = 0x004;
const IGROUPR: usize = 0x080;
const ISENABLER: usize = 0x100;
const ICENABLER: usize = 0x180;
const ISPENDR: usize = 0x200;
const ICPENDR: usize = 0x280;
const ISACTIVER: usize = 0x300;
const ICACTIVER: usize = 0x380;
const IPRIORITYR: usize = 0x400;
const ITARGETSR: usize = 0x800;
const ICFGR: usize = 0xc00;
const GICD_SGIR: usize = 0xf00;
const GICD_IROUTER: usize = 0x6000;
const GICD_PIDR2: usize = 0xffe8;
/// GICD_CTLR.RWP: a register write is still taking effect.
const GICD_CTLR_RWP: u32 = 1 << 31;
const CTLR_V3: u32 = (1 << 4) | (1 << 1); // ARE, EnableGrp1

// Redistributor RD_base frame.
const GICR_CTLR: usize = 0x0000;
const GICR_WAKER: usize = 0x0014;
const GICR_TYPER: usize = 0x0008;
/// GICR_CTLR.RWP.
const GICR_CTLR_RWP: u32 = 1 << 3;
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
const TYPER_LAST: u64 = 1 << 4;
/// Most redistributors we walk before giving up (the region holds 123).
const MAX_REDISTRIBUTORS: usize = 64;

// GICv2 CPU interface.
const GICC_CTLR: usize = 0x00;
const GICC_PMR: usize = 0x04;
const GICC_BPR: usize = 0x08;
const GICC_IAR: usize = 0x0c;
const GICC_EOIR: usize = 0x10;
const GICC_RPR: usize = 0x14;

/// 0 unknown, 2 or 3.
static VERSION: AtomicU8 = AtomicU8::new(0);
/// Per vCPU: its redistributor's RD_base, or 0 before `init_cpu`.
static REDIST: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// The `fn(u32)` the IRQ vector calls, or 0.
static HANDLER: AtomicUsize = AtomicUsize::new(0);
/// Per vCPU: set by `hold_eoi` while the handler runs.
static HOLD: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Per vCPU: raw IAR + 1 of the interrupt left active by `hold_eoi`, or 0.
static HELD: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

fn gicd() -> Mmio {
    // SAFETY: the distributor is a device; no Rust object lives there.
    unsafe { Mmio::new(GICD_BASE) }
}

fn gicc() -> Mmio {
    // SAFETY: the GICv2 CPU interface is a device.
    unsafe { Mmio::new(GICC_BASE) }
}

/// The GIC version, read from `GICD_PIDR2` (0xFFE8) once: ArchRev 3 or 4 is
/// GICv3, anything else, or an abort there, GICv2. Call it first outside the
/// IRQ handler (it uses [`try_access`]).
pub fn version() -> Version {
    let mut v = VERSION.load(Relaxed);
    if v == 0 {
        // A GICv2 distributor is 4 KiB on QEMU: 0xFFE8 aborts there, and
        // its PIDR2 is at 0xFE8 instead.
        let pidr2 = try_access(|| gicd().ld32(GICD_PIDR2)).unwrap_or(0);
        v = match (pidr2 >> 4) & 0xf {
            3 | 4 => 3,
            _ => 2,
        };
        VERSION.store(v, Relaxed);
    }
    if v == 3 {
        Version::V3
    } else {
        Version::V2
    }
}

/// `"GICv3"` or `"GICv2"`, for the guests' second line.
pub fn version_name() -> &'static str {
    match version() {
        Version::V3 => "GICv3",
        Version::V2 => "GICv2",
    }
}

/// Number of INTIDs the distributor implements (`GICD_TYPER.ITLinesNumber`).
pub fn lines() -> u32 {
    ((gicd().ld32(GICD_TYPER) & 0x1f) + 1) * 32
}

/// Waits (bounded) for a GICv3 `RWP` bit to clear.
fn wait_rwp(frame: Mmio, ctlr: usize, rwp: u32) {
    let mut n = 0u32;
    while frame.ld32(ctlr) & rwp != 0 && n < 1_000_000 {
        n += 1;
        core::hint::spin_loop();
    }
}

/// Sets up the distributor: off, every SPI group 1 (v3) / group 0 (v2),
/// disabled, not pending, level, [`DEFAULT_PRIORITY`], routed to vCPU 0;
/// then on. Once per VM, by one vCPU, before the others use the GIC.
pub fn init_distributor() {
    let d = gicd();
    let v3 = version() == Version::V3;
    d.st32(GICD_CTLR, 0);
    wait_rwp(d, GICD_CTLR, GICD_CTLR_RWP);
    let lines = lines();
    for i in (32..lines).step_by(32) {
        let word = (i / 32) as usize * 4;
        d.st32(IGROUPR + word, if v3 { u32::MAX } else { 0 });
        d.st32(ICENABLER + word, u32::MAX);
        d.st32(ICPENDR + word, u32::MAX);
        d.st32(ICACTIVER + word, u32::MAX);
    }
    for i in (32..lines).step_by(16) {
        d.st32(ICFGR + (i / 16) as usize * 4, 0);
    }
    for i in (32..lines).step_by(4) {
        d.st32(IPRIORITYR + i as usize, u32::from_ne_bytes([DEFAULT_PRIORITY; 4]));
    }
    for i in 32..lines {
        route_spi(i, 0);
    }
    if v3 {
        wait_rwp(d, GICD_CTLR, GICD_CTLR_RWP);
        d.st32(GICD_CTLR, CTLR_V3);
        wait_rwp(d, GICD_CTLR, GICD_CTLR_RWP);
    } else {
        d.st32(GICD_CTLR, 1);
    }
}

/// This vCPU's redistributor RD_base (GICv3), found on first use.
fn redistributor() -> Mmio {
    let me = cpu_index();
    let mut base = REDIST[me].load(Relaxed);
    if base == 0 {
        let m = mpidr();
        let affinity = (m & 0xff_ffff) | ((m >> 8) & 0xff00_0000);
        let mut at = GICR_BASE;
        for _ in 0..MAX_REDISTRIBUTORS {
            // SAFETY: redistributor frames are device memory.
            let typer = unsafe { Mmio::new(at) }.ld64(GICR_TYPER);
            if typer >> 32 == affinity {
                base = at;
                break;
            }
            if typer & TYPER_LAST != 0 {
                break;
            }
            at += GICR_STRIDE;
        }
        if base == 0 {
            println!("FAIL gic: no redistributor for MPIDR {m:#x} (vCPU {me})");
            park();
        }
        REDIST[me].store(base, Relaxed);
    }
    // SAFETY: a redistributor is device memory.
    unsafe { Mmio::new(base) }
}

/// This vCPU's redistributor RD_base frame on GICv3, `None` on GICv2.
pub fn rd_frame() -> Option<Mmio> {
    (version() == Version::V3).then(redistributor)
}

/// Where the SGI/PPI registers (INTID < 32) of this vCPU are: the SGI frame
/// of its redistributor (v3) or the banked distributor registers (v2).
fn private_frame() -> Mmio {
    match version() {
        // SAFETY: the SGI frame is device memory.
        Version::V3 => unsafe { Mmio::new(redistributor().base() + SGI_FRAME) },
        Version::V2 => gicd(),
    }
}

/// The frame holding `intid`'s enable/pending/priority/config registers.
fn frame_of(intid: u32) -> Mmio {
    if intid < 32 {
        private_frame()
    } else {
        gicd()
    }
}

/// Sets up this vCPU's side: (v3) wakes its redistributor, SGIs/PPIs group
/// 1; (v2) SGIs/PPIs group 0; all SGIs/PPIs disabled at [`DEFAULT_PRIORITY`];
/// then the CPU interface on with priority mask 0xff and EOImode 0. Every
/// vCPU, after [`init_distributor`] ran. IRQs stay masked in PSTATE.
pub fn init_cpu() {
    let p = private_frame();
    if version() == Version::V3 {
        let rd = redistributor();
        rd.st32(GICR_WAKER, rd.ld32(GICR_WAKER) & !WAKER_PROCESSOR_SLEEP);
        let mut n = 0u32;
        while rd.ld32(GICR_WAKER) & WAKER_CHILDREN_ASLEEP != 0 && n < 1_000_000 {
            n += 1;
            core::hint::spin_loop();
        }
        p.st32(IGROUPR, u32::MAX);
    } else {
        p.st32(IGROUPR, 0);
    }
    p.st32(ICENABLER, u32::MAX);
    p.st32(ICPENDR, u32::MAX);
    p.st32(ICACTIVER, u32::MAX);
    for i in (0..32).step_by(4) {
        p.st32(IPRIORITYR + i, u32::from_ne_bytes([DEFAULT_PRIORITY; 4]));
    }
    if version() == Version::V3 {
        wait_rwp(redistributor(), GICR_CTLR, GICR_CTLR_RWP);
        // SAFETY: the GICv3 CPU interface registers of this vCPU; SRE first
        // (with an ISB) so the other ICC_* accesses go to the system registers.
        unsafe {
            asm!(
                "mrs {t}, icc_sre_el1",
                "orr {t}, {t}, #1",
                "msr icc_sre_el1, {t}",
                "isb",
                "msr icc_pmr_el1, {pmr}",
                "msr icc_bpr1_el1, xzr",
                "msr icc_ctlr_el1, xzr",
                "mov {t}, #1",
                "msr icc_igrpen1_el1, {t}",
                "isb",
                t = out(reg) _,
                pmr = in(reg) 0xffu64,
                options(nostack),
            )
        };
    } else {
        let c = gicc();
        c.st32(GICC_PMR, 0xff);
        c.st32(GICC_BPR, 0);
        c.st32(GICC_CTLR, 1);
    }
}

fn set_bit(reg: usize, intid: u32) {
    frame_of(intid).st32(reg + (intid / 32) as usize * 4, 1 << (intid % 32));
}

fn get_bit(reg: usize, intid: u32) -> bool {
    frame_of(intid).ld32(reg + (intid / 32) as usize * 4) & (1 << (intid % 32)) != 0
}

/// Enables `intid` (`ISENABLER`).
pub fn enable(intid: u32) {
    set_bit(ISENABLER, intid);
}

/// Disables `intid` (`ICENABLER`).
pub fn disable(intid: u32) {
    set_bit(ICENABLER, intid);
    if version() == Version::V3 {
        if intid < 32 {
            wait_rwp(redistributor(), GICR_CTLR, GICR_CTLR_RWP);
        } else {
            wait_rwp(gicd(), GICD_CTLR, GICD_CTLR_RWP);
        }
    }
}

/// Makes `intid` pending (`ISPENDR`; not for GICv2 SGIs, whose bits there
/// are read-only: send them with [`send_sgi`]).
pub fn set_pending(intid: u32) {
    set_bit(ISPENDR, intid);
}

/// Clears `intid`'s pending state (`ICPENDR`).
pub fn clear_pending(intid: u32) {
    set_bit(ICPENDR, intid);
}

/// Whether `intid` reads as enabled (`ISENABLER`).
pub fn is_enabled(intid: u32) -> bool {
    get_bit(ISENABLER, intid)
}

/// Whether `intid` reads as pending (`ISPENDR`).
pub fn is_pending(intid: u32) -> bool {
    get_bit(ISPENDR, intid)
}

/// Whether `intid` reads as active (`ISACTIVER`).
pub fn is_active(intid: u32) -> bool {
    get_bit(ISACTIVER, intid)
}

/// Makes `intid` active (`ISACTIVER`).
pub fn set_active(intid: u32) {
    set_bit(ISACTIVER, intid);
}

/// Makes `intid` inactive (`ICACTIVER`).
pub fn clear_active(intid: u32) {
    set_bit(ICACTIVER, intid);
}

/// GICv3: whether SGI/PPI `intid` reads active (`GICR_ISACTIVER0`) in the
/// redistributor of vCPU `vcpu` (MPIDR Aff0 = `vcpu`), another vCPU's
/// included. `None` on GICv2 (banked: only the own copy is visible) or
/// without such a redistributor.
pub fn is_active_on(vcpu: usize, intid: u32) -> Option<bool> {
    if version() != Version::V3 || intid >= 32 {
        return None;
    }
    let mut at = GICR_BASE;
    for _ in 0..MAX_REDISTRIBUTORS {
        // SAFETY: redistributor frames are device memory.
        let rd = unsafe { Mmio::new(at) };
        let typer = rd.ld64(GICR_TYPER);
        if typer >> 32 == vcpu as u64 {
            // SAFETY: its SGI frame, device memory too.
            let sgi = unsafe { Mmio::new(at + SGI_FRAME) };
            return Some(sgi.ld32(ISACTIVER) & (1 << intid) != 0);
        }
        if typer & TYPER_LAST != 0 {
            return None;
        }
        at += GICR_STRIDE;
    }
    None
}

/// Sets `intid`'s priority (lower is more urgent; the GIC may drop low bits).
pub fn set_priority(intid: u32, priority: u8) {
    frame_of(intid).st8(IPRIORITYR + intid as usize, priority);
}

/// `intid`'s priority as the GIC reads it back.
pub fn priority(intid: u32) -> u8 {
    frame_of(intid).ld8(IPRIORITYR + intid as usize)
}

/// Sets a PPI's or SPI's trigger mode (`ICFGR`; SGIs are always edge).
pub fn set_trigger(intid: u32, trigger: Trigger) {
    let f = frame_of(intid);
    let reg = ICFGR + (intid / 16) as usize * 4;
    let bit = 1 << ((intid % 16) * 2 + 1);
    let old = f.ld32(reg);
    f.st32(
        reg,
        if trigger == Trigger::Edge {
            old | bit
        } else {
            old & !bit
        },
    );
}

/// Routes SPI `intid` to vCPU `vcpu`: `GICD_IROUTER` = its affinity (v3),
/// the `GICD_ITARGETSR` byte = `1 << vcpu` (v2).
pub fn route_spi(intid: u32, vcpu: usize) {
    match version() {
        Version::V3 => gicd().st64(GICD_IROUTER + intid as usize * 8, vcpu as u64),
        Version::V2 => gicd().st8(ITARGETSR + intid as usize, 1 << (vcpu % 8)),
    }
}

/// Where SPI `intid` is routed, raw (`IROUTER` on v3, the `ITARGETSR` byte on v2).
pub fn route_of(intid: u32) -> u64 {
    match version() {
        Version::V3 => gicd().ld64(GICD_IROUTER + intid as usize * 8),
        Version::V2 => u64::from(gicd().ld8(ITARGETSR + intid as usize)),
    }
}

/// Sends SGI `intid` (0..=15).
pub fn send_sgi(intid: u32, target: SgiTarget) {
    let intid = intid & 0xf;
    match version() {
        Version::V3 => {
            let value = u64::from(intid) << 24
                | match target {
                    SgiTarget::List(mask) => u64::from(mask),
                    SgiTarget::AllButSelf => 1 << 40,
                };
            // SAFETY: ICC_SGI1R_EL1 only generates SGIs; the DSB makes
            // earlier stores visible to the target first.
            unsafe { asm!("dsb ishst", "msr icc_sgi1r_el1, {}", "isb", in(reg) value, options(nostack)) };
        }
        Version::V2 => {
            let filter = match target {
                SgiTarget::List(mask) => u32::from(mask & 0xff) << 16,
                SgiTarget::AllButSelf => 1 << 24,
            };
            // SAFETY: orders earlier stores before the SGI (a device write).
            unsafe { asm!("dsb ishst", options(nostack)) };
            gicd().st32(GICD_SGIR, filter | intid);
        }
    }
}

/// Acknowledges the highest-priority pending interrupt (IAR).
pub fn ack() -> Irq {
    match version() {
        Version::V3 => {
            let v: u64;
            // SAFETY: reading ICC_IAR1_EL1 acknowledges an interrupt, which
            // is what this function is for; no memory is touched.
            unsafe { asm!("mrs {}, icc_iar1_el1", "dsb sy", out(reg) v, options(nostack)) };
            Irq(v as u32)
        }
        Version::V2 => Irq(gicc().ld32(GICC_IAR)),
    }
}

/// Ends (and, EOImode 0, deactivates) an interrupt from [`ack`].
pub fn eoi(irq: Irq) {
    match version() {
        Version::V3 => {
            // SAFETY: writing ICC_EOIR1_EL1 only changes GIC state.
            unsafe { asm!("msr icc_eoir1_el1, {}", "isb", in(reg) u64::from(irq.raw()), options(nostack)) };
        }
        Version::V2 => gicc().st32(GICC_EOIR, irq.raw()),
    }
}

/// The running priority of this vCPU's CPU interface (0xff when idle).
pub fn running_priority() -> u8 {
    match version() {
        Version::V3 => {
            let v: u64;
            // SAFETY: reading ICC_RPR_EL1 has no side effects.
            unsafe { asm!("mrs {}, icc_rpr_el1", out(reg) v, options(nomem, nostack)) };
            v as u8
        }
        Version::V2 => gicc().ld32(GICC_RPR) as u8,
    }
}

/// Registers the IRQ handler for every vCPU of the VM: `f(intid)` runs in
/// the IRQ vector between the acknowledge and the EOI, with IRQs masked.
pub fn set_handler(f: fn(u32)) {
    HANDLER.store(f as usize, SeqCst);
}

/// From inside the handler: do not EOI the current interrupt. It stays
/// active (so the running priority stays at its priority) until the guest
/// passes [`take_held`]'s value to [`eoi`]. One held interrupt per vCPU.
pub fn hold_eoi() {
    HOLD[cpu_index()].store(1, Relaxed);
}

/// The interrupt [`hold_eoi`] left active on this vCPU, if any (cleared).
pub fn take_held() -> Option<Irq> {
    match HELD[cpu_index()].swap(0, Relaxed) {
        0 => None,
        v => Some(Irq(v - 1)),
    }
}

/// Per vCPU: IRQ exceptions whose acknowledge found nothing (INTID 1020..=1023).
static SPURIOUS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// From this many spurious interrupts on, each power of two is printed: an
/// IRQ line that stays asserted with nothing to acknowledge is a GIC (or
/// hypervisor) bug that would otherwise look like a silent hang.
const SPURIOUS_REPORT: u32 = 1024;

/// How many spurious interrupts this vCPU has taken.
pub fn spurious_count() -> u32 {
    SPURIOUS[cpu_index()].load(Relaxed)
}

/// Per vCPU: CNTVCT_EL0 at the IRQ vector's entry, for the IRQ being handled.
static ENTRY_AT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Per vCPU: CNTVCT_EL0 right after the last EOI the vector wrote returned.
static EOI_AT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// From inside the handler: CNTVCT_EL0 read at the third instruction of the
/// IRQ vector (before the context save and the acknowledge), for latencies.
pub fn irq_entry_counter() -> u64 {
    ENTRY_AT[cpu_index()].load(Relaxed)
}

/// CNTVCT_EL0 (after an ISB) just after the vector's last EOI on this vCPU
/// returned; not updated for an interrupt left active by [`hold_eoi`].
pub fn last_eoi_counter() -> u64 {
    EOI_AT[cpu_index()].load(Relaxed)
}

/// Called by the IRQ vector with the counter it read at entry: acknowledge,
/// run the handler, EOI.
pub(crate) fn handle_irq(entry_counter: u64) {
    let me = cpu_index();
    ENTRY_AT[me].store(entry_counter, Relaxed);
    let irq = ack();
    if irq.is_spurious() {
        let n = SPURIOUS[me].fetch_add(1, Relaxed) + 1;
        if n.is_power_of_two() && n >= SPURIOUS_REPORT {
            println!(
                "gic: vCPU {me} has taken {n} spurious interrupts (IAR {:#x})",
                irq.raw()
            );
        }
        return;
    }
    let f = HANDLER.load(SeqCst);
    if f == 0 {
        println!(
            "FAIL unexpected interrupt: INTID {} (vCPU {me}), no handler",
            irq.intid()
        );
        park();
    }
    // SAFETY: non-zero values are only stored by `set_handler`, from a `fn(u32)`.
    let f: fn(u32) = unsafe { core::mem::transmute::<usize, fn(u32)>(f) };
    HOLD[me].store(0, Relaxed);
    f(irq.intid());
    if HOLD[me].swap(0, Relaxed) != 0 {
        HELD[me].store(irq.raw() + 1, Relaxed);
    } else {
        eoi(irq);
        EOI_AT[me].store(crate::counter(), Relaxed);
    }
}

/// Unmasks IRQs at EL1 (PSTATE.I = 0).
pub fn irqs_on() {
    // SAFETY: only changes PSTATE.I; the handler is set up by the runtime.
    unsafe { asm!("msr daifclr, #2", options(nostack)) };
}

/// Masks IRQs at EL1 (PSTATE.I = 1).
pub fn irqs_off() {
    // SAFETY: only changes PSTATE.I.
    unsafe { asm!("msr daifset, #2", options(nostack)) };
}

/// Sleeps in WFI until `done()` holds, taking interrupts in between; the
/// check and the WFI run with IRQs masked, so an interrupt that makes `done`
/// true cannot slip in between them and leave the vCPU asleep. Returns with
/// IRQs unmasked. Never returns if no interrupt ever comes and `done` stays
/// false: use it only where interrupts are sure to keep coming.
pub fn wait_for_interrupts_until(mut done: impl FnMut() -> bool) {
    loop {
        irqs_off();
        if done() {
            irqs_on();
            return;
        }
        // SAFETY: WFI only waits; a pending IRQ wakes it even while masked.
        unsafe { asm!("wfi", options(nostack)) };
        irqs_on();
    }
}
