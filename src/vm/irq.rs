//! Interrupts at EL2: physical IRQs taken while a guest runs, filling the
//! list registers, maintenance interrupts, and kicking other CPUs. The only
//! place where the vGIC model meets the physical GIC.

use super::vcpu::{abandon_guest, current};
use super::VmState;
use crate::arch::aarch64::{cpu, gic as icc, hyptimer};
use crate::drivers::gic::{self, PhysGic, KICK_SGI};
use crate::vdev::vgic::lr::{place, ActiveChange, ActiveSet, ListRegs, Lr, Placed};
use crate::vdev::vgic::{Vgic, VgicHost};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

static LR_COUNT: AtomicUsize = AtomicUsize::new(0);
/// QEMU's GICv2 model (7.2) does not signal a level interrupt that is still
/// asserted when a guest deactivates it through a HW list register, so a
/// timer can go silent. On that board, hardware interrupts are listed as
/// software ones with EOI maintenance and deactivated here instead: one more
/// exit per interrupt, only where the model needs it.
static SOFT_HW_DEACTIVATE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Turns the QEMU GICv2 workaround on (see [`SOFT_HW_DEACTIVATE`]).
pub fn use_soft_hw_deactivate() {
    SOFT_HW_DEACTIVATE.store(true, Ordering::Relaxed);
}

/// The list register for a queued interrupt.
#[inline]
fn to_lr(q: &crate::vdev::vgic::Queued) -> Lr {
    let lr = q.lr();
    if q.hw && SOFT_HW_DEACTIVATE.load(Ordering::Relaxed) {
        Lr {
            pintid: None,
            eoi: true,
            ..lr
        }
    } else {
        lr
    }
}
static MAINTENANCE: AtomicU32 = AtomicU32::new(25);

/// Whether the GIC is a GICv3, so the interrupt exit picks its CPU
/// interface with one load instead of the driver's `Once` and enum.
static GIC_V3: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// The GICv2 driver, likewise, for GICv2's interrupt exit (null on GICv3).
static GIC_V2: core::sync::atomic::AtomicPtr<crate::drivers::gicv2::Gicv2> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());
/// Per physical CPU, the ICC_SGI1R_EL1 value that kicks it (GICv3; 0 until
/// that CPU came up, or on GICv2: then the driver sends the kick).
static KICK_WORD: [core::sync::atomic::AtomicU64; crate::arch::aarch64::MAX_CPUS] =
    [const { core::sync::atomic::AtomicU64::new(0) }; crate::arch::aarch64::MAX_CPUS];

/// Sends the kick SGI to `pcpu`: on GICv3 the precomputed ICC_SGI1R_EL1
/// value, one load and the write.
#[inline(always)]
fn send_kick(pcpu: usize) {
    match KICK_WORD.get(pcpu).map_or(0, |w| w.load(Ordering::Relaxed)) {
        0 => kick_slow(pcpu),
        w => icc::send_sgi1r(w),
    }
}

/// The list registers of this CPU.
struct LocalLrs(&'static PhysGic);

impl ListRegs for LocalLrs {
    #[inline(always)]
    fn count(&self) -> usize {
        LR_COUNT.load(Ordering::Relaxed)
    }
    #[inline(always)]
    fn read(&self, i: usize) -> Lr {
        match self.0 {
            PhysGic::V3(_) => Lr::decode_v3(icc::ich_lr(i)),
            PhysGic::V2(g) => Lr::decode_v2(g.lr(i)),
        }
    }
    #[inline(always)]
    fn write(&mut self, i: usize, lr: Lr) {
        match self.0 {
            PhysGic::V3(_) => icc::set_ich_lr(i, lr.encode_v3()),
            PhysGic::V2(g) => g.set_lr(i, lr.encode_v2()),
        }
    }
    #[inline(always)]
    fn empty(&self) -> u64 {
        match self.0 {
            PhysGic::V3(_) => icc::ich_elrsr(),
            PhysGic::V2(g) => u64::from(g.elrsr()),
        }
    }
}

/// Per CPU, what the interrupt exit must look after even with nothing
/// queued (it skips the flush when this is 0): the maintenance interrupts
/// asked for, as ICH_HCR_EL2 bits (UIE, NPIE), and [`SOFT_VIRQ`].
static WATCH: [core::sync::atomic::AtomicU8; crate::arch::aarch64::MAX_CPUS] =
    [const { core::sync::atomic::AtomicU8::new(0) }; crate::arch::aarch64::MAX_CPUS];
/// ICH_HCR_EL2.UIE (GICH_HCR.UIE): underflow maintenance, to refill.
const UIE: u8 = 1 << 1;
/// ICH_HCR_EL2.NPIE: maintenance once no list register is pending.
const NPIE: u8 = 1 << 3;
/// Not a register bit: the guest's virtual IRQ is asserted through
/// HCR_EL2.VI, because this board's GIC does not signal it to the CPU (see
/// [`use_soft_virq`]). Set on every CPU or on none.
const SOFT_VIRQ: u8 = 1 << 7;

/// Asks for underflow maintenance (or stops); returns this CPU's [`WATCH`].
#[inline(always)]
fn set_underflow(g: &PhysGic, on: bool) -> u8 {
    let Some(w) = WATCH.get(cpu::index()) else {
        return 0;
    };
    let old = w.load(Ordering::Relaxed);
    let new = if on { old | UIE } else { old & !UIE };
    if new != old {
        w.store(new, Ordering::Relaxed);
        write_hcr(g, new);
    }
    new
}

fn write_hcr(g: &PhysGic, watch: u8) {
    match g {
        PhysGic::V3(_) => icc::set_ich_hcr(1 | u64::from(watch & (UIE | NPIE))),
        PhysGic::V2(v2) => v2.set_hcr(watch & UIE != 0),
    }
}

/// For a GICv3 whose virtual IRQ output is not wired to the CPUs (QEMU
/// 10.0's `imx8mp-evk`; board data, `tessera.virq=hcr`): the list registers
/// fill but no guest would ever take an interrupt. Then the hypervisor
/// asserts the virtual IRQ itself with HCR_EL2.VI whenever it leaves a list
/// register pending, and the No Pending maintenance interrupt tells it when
/// the guest has taken them all: one more exit per interrupt, only there.
/// Called at boot, before the secondary CPUs start.
pub fn use_soft_virq() {
    for w in &WATCH {
        w.store(SOFT_VIRQ, Ordering::Relaxed);
    }
}

/// With [`SOFT_VIRQ`]: HCR_EL2.VI and NPIE as the list registers of this
/// CPU say (see [`crate::vdev::vgic::lr::soft_virq`]).
#[cold]
#[inline(never)]
fn update_soft_virq(g: &'static PhysGic) {
    let d = crate::vdev::vgic::lr::soft_virq(&mut LocalLrs(g));
    crate::arch::aarch64::guest::set_virtual_irq(d.assert);
    let Some(w) = WATCH.get(cpu::index()) else {
        return;
    };
    let old = w.load(Ordering::Relaxed);
    let new = if d.npie { old | NPIE } else { old & !NPIE };
    if new != old {
        w.store(new, Ordering::Relaxed);
        write_hcr(g, new);
    }
}

/// Per-CPU GIC setup (every CPU, at bring-up).
pub fn init_cpu(cpu: usize, maintenance: u32) {
    let g = gic::get();
    g.init_cpu(cpu, maintenance);
    MAINTENANCE.store(maintenance, Ordering::Relaxed);
    // The hypervisor's own timer (the console comes back with it for lines
    // its VM left): urgent, so it also gets through to a CPU waiting for a
    // kick.
    hyptimer::disarm();
    g.set_priority(hyptimer::INTID, cpu, gic::URGENT);
    g.set_enabled(hyptimer::INTID, cpu, true);
    let n = match g {
        PhysGic::V3(v3) => {
            GIC_V3.store(true, Ordering::Relaxed);
            if let Some(w) = KICK_WORD.get(cpu) {
                w.store(v3.sgi_value(KICK_SGI, cpu), Ordering::Relaxed);
            }
            (icc::ich_vtr() & 0x1f) as usize + 1
        }
        PhysGic::V2(v2) => {
            GIC_V2.store(core::ptr::from_ref(v2).cast_mut(), Ordering::Relaxed);
            v2.lr_count()
        }
    };
    LR_COUNT.store(n.min(16), Ordering::Relaxed);
}

/// Clears the virtual CPU interface for a vCPU (re)starting on this CPU.
/// Hardware interrupts still listed are deactivated physically.
pub fn reset_vcpu_interface(vgic: &Vgic) {
    let g = gic::get();
    let mut lrs = LocalLrs(g);
    for i in 0..lrs.count() {
        let lr = lrs.read(i);
        // A hardware interrupt still listed (HW bit, or waiting for the EOI
        // maintenance that deactivates it with SOFT_HW_DEACTIVATE) is still
        // active physically: finish it, or it would never fire again.
        let listed = lr.state != crate::vdev::vgic::lr::LrState::Invalid || lr.eoi;
        let hw = lr
            .pintid
            .or_else(|| (vgic.owner(lr.vintid) == Some(crate::vdev::vgic::Owner::Hw)).then_some(lr.vintid));
        if let Some(p) = hw.filter(|_| listed) {
            g.deactivate(p);
        }
        lrs.write(i, Lr::EMPTY);
    }
    // A PPI of this VM acknowledged here but dropped from a queue before it
    // reached a list register (GICv2 can only reach its banked copy here).
    for intid in 16..32 {
        if vgic.owner(intid) == Some(crate::vdev::vgic::Owner::Hw) {
            g.clear_active(intid, cpu::index());
        }
    }
    match g {
        PhysGic::V3(_) => {
            icc::set_ich_ap0r0(0);
            icc::set_ich_ap1r0(0);
            icc::set_ich_vmcr(0);
        }
        PhysGic::V2(v2) => v2.reset_virtual(),
    }
    if set_underflow(g, false) & SOFT_VIRQ != 0 {
        update_soft_virq(g); // nothing listed: VI and NPIE off
    }
}

/// Moves what is queued for `vcpu` (running here) into the list registers.
pub fn flush(vgic: &Vgic, vcpu: usize) {
    match gic::get() {
        PhysGic::V3(_) => flush_on(V3If, vgic, vcpu, true),
        PhysGic::V2(g) => flush_on(V2If(g), vgic, vcpu, true),
    }
}

/// [`flush`] on a known CPU interface: the SGI mailbox straight into list
/// registers, then (rarely) the locked queue and the maintenance requests.
/// The fast-SPI mailbox is looked at when `kicked` (whoever posts to it
/// kicks this CPU, and that exit drains it) or when this CPU asked for
/// maintenance (a drain that found no free list register), not on every
/// maintenance exit of GICv2's EOI workaround.
#[inline(always)]
fn flush_on<C: CpuIf>(mut c: C, vgic: &Vgic, vcpu: usize, kicked: bool) {
    let mut full = false;
    let watching = watched();
    if let Some(b) = vgic.sgi_box(vcpu) {
        // No look first: the swap of an empty mailbox costs what the look would.
        full = drain_sgis(&mut c, b);
        if (kicked || watching) && b.spis.any() {
            full |= drain_spis(&mut c, vgic, vcpu, &b.spis);
        }
    }
    if full || watching || vgic.queue_nonempty(vcpu) {
        flush_queue(vgic, vcpu, full);
    }
}

/// Everything in `b` into list registers; what does not fit is posted
/// again and `true` returned (the caller asks for underflow maintenance).
/// The list register of an SGI taken from a mailbox: pending, software
/// (no HW bit), its source vCPU as the lane.
#[inline(always)]
fn sgi_lr(t: crate::vdev::vgic::sgi::Taken) -> Lr {
    Lr {
        vintid: t.sgi,
        pintid: None,
        priority: t.priority,
        state: crate::vdev::vgic::lr::LrState::Pending,
        group1: t.group1,
        eoi: false,
        source: t.lane,
    }
}

#[inline(always)]
fn drain_sgis<C: CpuIf>(c: &mut C, b: &crate::vdev::vgic::sgi::SgiBox) -> bool {
    let mut bits = b.take_all();
    if bits == 0 {
        return false;
    }
    let all = (1u64 << c.count()) - 1;
    let mut empty = c.empty() & all;
    if empty == all {
        // Nothing listed, so nothing to merge with: straight into the free
        // list registers from the first (LR0), no list register read.
        let t = b.entry(bits.trailing_zeros());
        c.write_first(sgi_lr(t));
        empty &= empty - 1;
        bits &= bits - 1;
        while bits != 0 {
            if empty == 0 {
                b.repost(bits);
                return true;
            }
            let t = b.entry(bits.trailing_zeros());
            c.write(empty.trailing_zeros() as usize, sgi_lr(t));
            empty &= empty - 1;
            bits &= bits - 1;
        }
        return false;
    }
    while bits != 0 {
        let t = b.entry(bits.trailing_zeros());
        let lr = sgi_lr(t);
        if place(c, lr) == Placed::Full {
            b.repost(bits);
            return true;
        }
        bits &= bits - 1;
    }
    false
}

/// [`drain_sgis`] for the fast SPIs posted to `b` (a doorbell's ring). One
/// that is no longer deliverable (its post raced with the guest disabling
/// it, or with a VM reset) is latched in the distributor instead, as the
/// locked path would have: it is not listed behind the guest's back.
#[inline(never)]
fn drain_spis<C: CpuIf>(c: &mut C, vgic: &Vgic, vcpu: usize, b: &crate::vdev::vgic::sgi::SpiBox) -> bool {
    let mut bits = b.take_all();
    while bits != 0 {
        if let Some(f) = vgic.fast_spi(bits.trailing_zeros() as usize) {
            let Some(e) = f.entry_if_ready() else {
                vgic.raise_locked(f.intid, vcpu, 0);
                bits &= bits - 1;
                continue;
            };
            let lr = Lr {
                vintid: e.intid,
                pintid: None,
                priority: e.priority,
                state: crate::vdev::vgic::lr::LrState::Pending,
                group1: e.group1,
                eoi: e.eoi,
                source: 0,
            };
            if place(c, lr) == Placed::Full {
                b.repost(bits);
                return true;
            }
        }
        bits &= bits - 1;
    }
    false
}

/// Whether `vcpu` (running on this CPU) has a virtual interrupt waiting to
/// be taken: in a list register or queued for one. A WFI at EL2 does not wake
/// for virtual interrupts, so a trapped WFI-like call must not sleep then.
pub fn has_pending_virtual(vgic: &Vgic, vcpu: usize) -> bool {
    if vgic.has_queued(vcpu) {
        return true;
    }
    let lrs = LocalLrs(gic::get());
    let empty = lrs.empty();
    (0..lrs.count()).any(|i| {
        empty & (1 << i) == 0
            && matches!(
                lrs.read(i).state,
                crate::vdev::vgic::lr::LrState::Pending | crate::vdev::vgic::lr::LrState::PendingActive
            )
    })
}

/// The locked queue into list registers (unless `full`: no room left), and
/// the maintenance requests that go with it.
#[inline(never)]
fn flush_queue(vgic: &Vgic, vcpu: usize, full: bool) {
    match gic::get() {
        PhysGic::V3(_) => flush_queue_on(V3If, vgic, vcpu, full),
        PhysGic::V2(g) => flush_queue_on(V2If(g), vgic, vcpu, full),
    }
}

#[inline(always)]
fn flush_queue_on<C: CpuIf>(mut c: C, vgic: &Vgic, vcpu: usize, mut full: bool) {
    while !full {
        let Some(q) = vgic.pop(vcpu) else { break };
        if place(&mut c, to_lr(&q)) == Placed::Full {
            vgic.unpop(vcpu, q);
            full = true;
        }
    }
    // Usually nothing to change: one load and a branch.
    if full
        || WATCH
            .get(cpu::index())
            .is_some_and(|w| w.load(Ordering::Relaxed) != 0)
    {
        after_flush(full);
    }
}

/// The end of a flush that asks for underflow maintenance, stops asking, or
/// asserts the virtual IRQ by software.
#[cold]
#[inline(never)]
fn after_flush(full: bool) {
    let g = gic::get();
    if set_underflow(g, full) & SOFT_VIRQ != 0 {
        update_soft_virq(g);
    }
}

/// The physical side of a VM's vGIC: which CPU runs each vCPU.
pub struct Host {
    pub pcpus: Vec<usize>,
}

impl VgicHost for Host {
    fn kick(&self, vcpu: usize) {
        let Some(&p) = self.pcpus.get(vcpu) else { return };
        if p == cpu::index() {
            let (vm, v) = current();
            flush(&vm.vgic, v.index);
        } else {
            send_kick(p);
        }
    }

    fn hw_enable(&self, intid: u32, vcpu: usize, enable: bool) {
        if let Some(&p) = self.pcpus.get(vcpu) {
            gic::get().set_enabled(intid, p, enable);
        }
    }

    fn hw_route(&self, intid: u32, vcpu: usize) {
        if let Some(&p) = self.pcpus.get(vcpu) {
            gic::get().route(intid, p);
        }
    }

    fn hw_deactivate(&self, intid: u32, vcpu: usize) {
        if let Some(&p) = self.pcpus.get(vcpu) {
            gic::get().clear_active(intid, p);
        }
    }

    fn active(&self, vcpu: usize) -> ActiveSet {
        match self.pcpus.get(vcpu) {
            Some(&p) if p == cpu::index() => active_here(),
            Some(&p) => ask(p, None),
            None => ActiveSet::EMPTY,
        }
    }

    fn set_active(&self, intid: u32, vcpu: usize, active: bool) {
        match self.pcpus.get(vcpu) {
            Some(&p) if p == cpu::index() => change_active_here(intid, active),
            Some(&p) => {
                ask(p, Some((intid, active)));
            }
            None => {}
        }
    }
}

/// The active interrupts in this CPU's list registers.
fn active_here() -> ActiveSet {
    crate::vdev::vgic::lr::active_set(&LocalLrs(gic::get()))
}

/// ISACTIVER/ICACTIVER for `intid` on this CPU's list registers, and the
/// physical side of a hardware interrupt whose active state is cleared.
fn change_active_here(intid: u32, active: bool) {
    let (vm, vcpu) = current();
    let g = gic::get();
    let hw_owned = vm.vgic.owner(intid) == Some(crate::vdev::vgic::Owner::Hw);
    match crate::vdev::vgic::lr::change_active(&mut LocalLrs(g), intid, active, hw_owned) {
        ActiveChange::Changed {
            deactivate: Some(p), ..
        } => g.deactivate(p),
        ActiveChange::Changed { eoi: true, .. } => vm.vgic.eoi(intid, vcpu.index),
        _ => {}
    }
}

/// A question to another CPU about (or a change to) its list registers:
/// they can be read and written only there. The asker bumps `asked`, sends
/// the kick, and waits (bounded) until `answered` reaches its number; the
/// CPU answers from its kick handler, or from its own wait as an asker, so
/// two CPUs asking each other do not deadlock.
struct Mailbox {
    asked: AtomicU32,
    answered: AtomicU32,
    /// `CHANGE_*` | INTID of a change to make first, or 0.
    change: core::sync::atomic::AtomicU64,
    active: [AtomicU32; crate::vdev::vgic::lr::MAX_LRS],
}

const CHANGE_SET: u64 = 1 << 33;
const CHANGE_CLEAR: u64 = 1 << 32;

static MAILBOX: [Mailbox; crate::arch::aarch64::MAX_CPUS] = [const {
    Mailbox {
        asked: AtomicU32::new(0),
        answered: AtomicU32::new(0),
        change: core::sync::atomic::AtomicU64::new(0),
        active: [const { AtomicU32::new(crate::vdev::vgic::lr::NONE) }; crate::vdev::vgic::lr::MAX_LRS],
    }
}; crate::arch::aarch64::MAX_CPUS];

/// Asks CPU `pcpu` for its active interrupts, after making `change`.
/// Without an answer within 100 ms (a CPU idle or waiting answers at once,
/// so only one stuck with interrupts masked, or a host that does not run
/// the emulated CPU, is that slow) nothing is active there. Only the asking
/// VM waits: `pcpu` runs one of its own vCPUs. (10 ms was too short for
/// QEMU on a loaded 2-core host.)
fn ask(pcpu: usize, change: Option<(u32, bool)>) -> ActiveSet {
    let Some(m) = MAILBOX.get(pcpu) else {
        return ActiveSet::EMPTY;
    };
    let deadline = cpu::counter() + cpu::counter_freq() / 10;
    if let Some((intid, set)) = change {
        let word = u64::from(intid) | if set { CHANGE_SET } else { CHANGE_CLEAR };
        while m
            .change
            .compare_exchange(0, word, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            if cpu::counter() > deadline {
                return ActiveSet::EMPTY;
            }
            answer_questions(true);
            core::hint::spin_loop();
        }
    }
    let mine = m.asked.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
    kick_cpu(pcpu);
    while (m.answered.load(Ordering::Acquire).wrapping_sub(mine) as i32) < 0 {
        if cpu::counter() > deadline {
            return ActiveSet::EMPTY;
        }
        answer_questions(true);
        core::hint::spin_loop();
    }
    let mut set = ActiveSet::EMPTY;
    for (s, a) in set.0.iter_mut().zip(m.active.iter()) {
        *s = a.load(Ordering::Relaxed);
    }
    set
}

/// Answers what other CPUs asked about this CPU's list registers;
/// `running`: a vCPU runs here (else its list registers mean nothing).
#[inline(always)]
fn answer_questions(running: bool) {
    answer_questions_of(cpu::index(), running)
}

/// [`answer_questions`] where this CPU's index is known already.
#[inline(always)]
fn answer_questions_of(this_cpu: usize, running: bool) {
    let Some(m) = MAILBOX.get(this_cpu) else {
        return;
    };
    let asked = m.asked.load(Ordering::Acquire);
    if asked != m.answered.load(Ordering::Relaxed) {
        answer(m, asked, running);
    }
}

#[inline(never)]
fn answer(m: &Mailbox, asked: u32, running: bool) {
    let change = m.change.swap(0, Ordering::AcqRel);
    if running && change != 0 {
        change_active_here(change as u32, change & CHANGE_SET != 0);
    }
    let set = if running { active_here() } else { ActiveSet::EMPTY };
    for (a, s) in m.active.iter().zip(set.0.iter()) {
        a.store(*s, Ordering::Relaxed);
    }
    m.answered.store(asked, Ordering::Release);
}

static CONSOLE_IRQ: AtomicU32 = AtomicU32::new(u32::MAX);

fn console_irq() -> Option<u32> {
    let v = CONSOLE_IRQ.load(Ordering::Relaxed);
    (v != u32::MAX).then_some(v)
}

/// Takes the console's receive interrupt on `cpu` (the boot CPU).
pub fn init_console_input(intid: u32, cpu: usize) {
    CONSOLE_IRQ.store(intid, Ordering::Relaxed);
    let g = gic::get();
    g.route(intid, cpu);
    g.set_priority(intid, cpu, gic::URGENT);
    g.set_enabled(intid, cpu, true);
    crate::console::enable_input();
}

/// This CPU's hypervisor timer fired: its deadlines that passed are
/// served (and the timer re-set for the rest, or stopped).
#[inline(never)]
fn on_hyp_timer() {
    let due = hyptimer::expired();
    if due & hyptimer::Use::Console.bit() != 0 {
        crate::console::on_come_back_timer();
    }
    if due & hyptimer::Use::Interrupts.bit() != 0 {
        crate::vdev::virtio::moderate::release_held(cpu::index());
    }
}

/// A CPU with no vCPU: it only serves the console's input, if that
/// interrupt is routed here, and otherwise sleeps.
pub fn idle() -> ! {
    let g = gic::get();
    loop {
        // WFI wakes on a pending interrupt even with IRQs masked at EL2.
        cpu::wait_for_interrupt();
        loop {
            let (intid, raw) = g.ack();
            if intid >= 1020 {
                break;
            }
            if Some(intid) == console_irq() {
                crate::console::on_input();
            } else if intid == hyptimer::INTID {
                on_hyp_timer();
            } else {
                super::smmu::on_irq(intid);
            }
            g.eoi(raw);
            g.deactivate(raw);
        }
    }
}

/// A CPU whose vCPU is off or whose VM is not running waits here for a
/// kick. Only urgent interrupts (the kick, the console's input) are let
/// through meanwhile; the console's input is served, so a VM that stops on
/// the console's CPU does not take the other VMs' input with it. Returns
/// after any such interrupt (or a spurious wake-up): the caller looks again.
pub fn wait_for_kick() {
    let g = gic::get();
    g.set_pmr(gic::PMR_URGENT_ONLY);
    // WFI wakes on a pending, unmasked-by-PMR interrupt even with IRQs
    // masked at EL2.
    cpu::wait_for_interrupt();
    loop {
        let (intid, raw) = g.ack();
        if intid >= 1020 {
            break;
        }
        if intid == hyptimer::INTID {
            // Disarmed before the deactivation, so the level is gone.
            on_hyp_timer();
        }
        g.eoi(raw);
        g.deactivate(raw);
        if Some(intid) == console_irq() {
            crate::console::on_input();
        } else {
            super::smmu::on_irq(intid);
        }
    }
    answer_questions(false);
    g.set_pmr(0xff);
}

/// Makes another CPU take a look at its vCPU (its VM stopped, say).
pub fn kick_cpu(pcpu: usize) {
    send_kick(pcpu);
}

/// A physical IRQ while a guest ran on this CPU.
pub fn handle_irq() {
    // Decide the GIC version once; the hot path below is compiled for each,
    // once (the fallback before `init_cpu` reuses the two copies).
    if GIC_V3.load(Ordering::Relaxed) {
        return irq_v3();
    }
    let v2 = GIC_V2.load(Ordering::Relaxed);
    if !v2.is_null() {
        // SAFETY: set in `init_cpu` from the driver, which lives in a
        // `static` for ever and is never moved or written again.
        return irq_v2(unsafe { &*v2 });
    }
    match gic::get() {
        PhysGic::V3(_) => irq_v3(),
        PhysGic::V2(g) => irq_v2(g),
    }
}

#[inline(never)]
fn irq_v3() {
    handle_irq_on(V3If)
}

#[inline(never)]
fn irq_v2(g: &'static crate::drivers::gicv2::Gicv2) {
    handle_irq_on(V2If(g))
}

/// The physical CPU interface and list registers, per GIC version, so the
/// interrupt exit does not test the version at every register access.
trait CpuIf: ListRegs + Copy {
    /// Writes list register 0.
    fn write_first(&mut self, lr: Lr) {
        self.write(0, lr)
    }
    fn ack(self) -> (u32, u32);
    fn eoi(self, raw: u32);
    fn deactivate(self, raw: u32);
}

#[derive(Clone, Copy)]
struct V3If;
#[derive(Clone, Copy)]
struct V2If(&'static crate::drivers::gicv2::Gicv2);

impl ListRegs for V3If {
    #[inline(always)]
    fn count(&self) -> usize {
        LR_COUNT.load(Ordering::Relaxed)
    }
    #[inline(always)]
    fn read(&self, i: usize) -> Lr {
        Lr::decode_v3(icc::ich_lr(i))
    }
    #[inline(always)]
    fn write(&mut self, i: usize, lr: Lr) {
        icc::set_ich_lr(i, lr.encode_v3())
    }
    #[inline(always)]
    fn empty(&self) -> u64 {
        icc::ich_elrsr()
    }
}

impl CpuIf for V3If {
    #[inline(always)]
    fn write_first(&mut self, lr: Lr) {
        icc::set_ich_lr0(lr.encode_v3())
    }
    #[inline(always)]
    fn ack(self) -> (u32, u32) {
        let iar = icc::icc_iar1() as u32;
        (iar & 0xff_ffff, iar)
    }
    #[inline(always)]
    fn eoi(self, raw: u32) {
        icc::icc_eoir1(u64::from(raw))
    }
    #[inline(always)]
    fn deactivate(self, raw: u32) {
        icc::icc_dir(u64::from(raw))
    }
}

impl ListRegs for V2If {
    #[inline(always)]
    fn count(&self) -> usize {
        LR_COUNT.load(Ordering::Relaxed)
    }
    #[inline(always)]
    fn read(&self, i: usize) -> Lr {
        Lr::decode_v2(self.0.lr(i))
    }
    #[inline(always)]
    fn write(&mut self, i: usize, lr: Lr) {
        self.0.set_lr(i, lr.encode_v2())
    }
    #[inline(always)]
    fn empty(&self) -> u64 {
        u64::from(self.0.elrsr())
    }
}

impl CpuIf for V2If {
    #[inline(always)]
    fn ack(self) -> (u32, u32) {
        let iar = self.0.ack();
        (iar & 0x3ff, iar)
    }
    #[inline(always)]
    fn eoi(self, raw: u32) {
        self.0.eoi(raw)
    }
    #[inline(always)]
    fn deactivate(self, raw: u32) {
        self.0.deactivate(raw)
    }
}

#[inline(always)]
fn handle_irq_on<C: CpuIf>(mut c: C) {
    let (vm, vcpu) = current();
    // One interrupt per exit: another one pending is taken as soon as the
    // guest resumes, and the common case saves a second acknowledge.
    let (intid, raw) = c.ack();
    if intid == KICK_SGI {
        // Another CPU posted to this vCPU (an IPI), asks about its list
        // registers, or wants it to look at its power state: the IPI path.
        c.eoi(raw);
        c.deactivate(raw);
        answer_questions_of(vcpu.pcpu, true);
        if vm.state() != VmState::Running || vcpu.power() != super::psci::Power::On {
            abandon_guest();
        }
        return flush_on(c, &vm.vgic, vcpu.index, true);
    } else if intid >= 1020 {
        return; // spurious
    } else if let Some(q) = vm.vgic.hw_fired(intid, vcpu.index) {
        // The guest's own hardware interrupts: the other hot path.
        // Priority drop only: the interrupt stays active until the guest
        // deactivates it through the HW bit.
        c.eoi(raw);
        match place(&mut c, to_lr(&q)) {
            Placed::New => {}
            Placed::Merged => c.deactivate(raw),
            Placed::Full => {
                vm.vgic.queue_hw(vcpu.index, q);
                set_underflow(gic::get(), true);
            }
        }
        // The SGI mailbox is not looked at here: whoever posts to it kicks
        // this CPU, and that exit drains it.
        if vm.vgic.queue_nonempty(vcpu.index) || watched() {
            flush_queue(&vm.vgic, vcpu.index, false);
        }
        return;
    } else {
        other_irq(gic::get(), intid, raw);
    }
    flush_on(c, &vm.vgic, vcpu.index, false);
}

/// Whether this CPU asked for maintenance or asserts the virtual IRQ by
/// software ([`WATCH`]).
#[inline(always)]
fn watched() -> bool {
    WATCH
        .get(cpu::index())
        .is_some_and(|w| w.load(Ordering::Relaxed) != 0)
}

/// Everything but a guest's hardware interrupt and the kick: the
/// hypervisor's timer and maintenance, the console, and interrupts nobody may have.
#[inline(never)]
fn other_irq(g: &'static PhysGic, intid: u32, raw: u32) {
    let (vm, vcpu) = current();
    g.eoi(raw);
    g.deactivate(raw);
    if Some(intid) == console_irq() {
        crate::console::on_input();
    } else if intid == MAINTENANCE.load(Ordering::Relaxed) {
        maintenance_eoi(g, &vm.vgic, vcpu.index);
    } else if intid == hyptimer::INTID {
        // Still asserted when deactivated above; disarming it drops the
        // level, and with it the pending state, before the guest resumes.
        on_hyp_timer();
    } else if super::smmu::on_irq(intid) {
    } else if intid < 32 || !owned_elsewhere(vm, intid) {
        // Nobody's, or this VM's and disabled by it: mask it here so it
        // cannot storm.
        g.set_enabled(intid, cpu::index(), false);
    } else {
        // Another VM's SPI caught in flight while it was being routed.
        // Enabling is global for SPIs, so leave it enabled, and pend it again
        // so an edge is not lost: it is taken on its owner's CPU.
        g.set_pending_spi(intid);
    }
}

/// Whether a VM other than `vm` owns SPI `intid` as a hardware interrupt.
fn owned_elsewhere(vm: &super::Vm, intid: u32) -> bool {
    super::vcpu::VMS.get().is_some_and(|vms| {
        vms.iter()
            .any(|o| !core::ptr::eq(o, vm) && o.vgic.owner(intid) == Some(crate::vdev::vgic::Owner::Hw))
    })
}

/// EOI maintenance: software level-triggered interrupts the guest finished.
fn maintenance_eoi(g: &'static PhysGic, vgic: &Vgic, vcpu: usize) {
    let (misr, eisr) = match g {
        PhysGic::V3(_) => (icc::ich_misr(), icc::ich_eisr()),
        PhysGic::V2(v2) => (u64::from(v2.misr()), u64::from(v2.eisr())),
    };
    if misr & 1 == 0 {
        return;
    }
    let mut lrs = LocalLrs(g);
    for i in 0..lrs.count() {
        if eisr & (1 << i) != 0 {
            let lr = lrs.read(i);
            lrs.write(i, Lr::EMPTY);
            if vgic.owner(lr.vintid) == Some(crate::vdev::vgic::Owner::Hw) {
                // Only with SOFT_HW_DEACTIVATE: finish the physical one.
                g.deactivate(lr.vintid);
            } else {
                vgic.eoi(lr.vintid, vcpu);
            }
        }
    }
}

/// A guest's write to ICC_SGI1R_EL1 (or ICC_SGI0R/ASGI1R): SGIs to its own
/// vCPUs only; affinities it does not have are dropped.
#[inline(always)]
pub fn guest_sgi(value: u64) {
    let (vm, vcpu) = current();
    // The usual IPI: one SGI to one other vCPU by its Aff0 (no Aff1-3, no
    // range selector, no broadcast), into its mailbox with one atomic OR.
    let list = value & 0xffff;
    if value & !SGI_ONE_TARGET == 0 && list & list.wrapping_sub(1) == 0 {
        let t = list.trailing_zeros() as usize;
        if let (Some(b), Some(v)) = (vm.vgic.sgi_box(t), vm.vcpus.get(t)) {
            if t != vcpu.index {
                // ICC_SGI1R_EL1 is GICv3's: its SGIs carry no source (lane 0).
                match b.post((value >> 24) as u32, 0) {
                    // This exit returns to the guest next: no ISB needed.
                    Some(true) => match KICK_WORD.get(v.pcpu).map_or(0, |w| w.load(Ordering::Relaxed)) {
                        0 => kick_slow(v.pcpu),
                        w => icc::send_sgi1r_before_eret(w),
                    },
                    Some(false) => {}
                    None => vm.vgic.send_sgi((value >> 24) as u32 & 0xf, vcpu.index, 1 << t),
                }
                return;
            }
        }
    }
    guest_sgi_any(vm, vcpu, value)
}

/// ICC_SGI1R_EL1 fields an SGI to one listed vCPU may use: INTID and the
/// target list (one bit).
const SGI_ONE_TARGET: u64 = 0x0f00_ffff;

/// Every other SGI register value: broadcast, ranges, several targets,
/// itself, affinities this VM does not have.
#[inline(never)]
fn guest_sgi_any(vm: &super::Vm, vcpu: &super::Vcpu, value: u64) {
    let n = vm.vcpus.len();
    let all: u64 = if n >= 64 { !0 } else { (1 << n) - 1 };
    let intid = ((value >> 24) & 0xf) as u32;
    let targets = if value & (1 << 40) != 0 {
        all & !(1 << vcpu.index)
    } else {
        let upper = (value >> 16) & 0xff | (value >> 32) & 0xff | (value >> 48) & 0xff;
        let rs = (value >> 44) & 0xf;
        if upper != 0 || rs >= 4 {
            0
        } else {
            ((value & 0xffff) << (16 * rs)) & all
        }
    };
    let mut kicks = vm.vgic.post_sgis(intid, vcpu.index, targets);
    // The kicks straight to the targets' CPUs, not through the vGIC's host.
    while kicks != 0 {
        let t = kicks.trailing_zeros() as usize;
        kicks &= kicks - 1;
        let Some(v) = vm.vcpus.get(t) else { continue };
        match KICK_WORD.get(v.pcpu).map_or(0, |w| w.load(Ordering::Relaxed)) {
            _ if t == vcpu.index => flush_self(),
            0 => kick_slow(v.pcpu),
            w => icc::send_sgi1r(w),
        }
    }
}

/// An SGI a vCPU sent itself: into its own list registers now.
#[cold]
#[inline(never)]
fn flush_self() {
    let (vm, vcpu) = current();
    flush(&vm.vgic, vcpu.index);
}

/// The kick through the driver (GICv2, or a CPU not up yet).
#[cold]
#[inline(never)]
fn kick_slow(pcpu: usize) {
    gic::get().send_sgi(KICK_SGI, pcpu);
}
