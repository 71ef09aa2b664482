//! What happens when a guest leaves EL1: one dispatch on ESR_EL2.EC, every
//! class answered. The HVC path is the hot path: no locks shared with other
//! VMs, no allocation, no logging.

use super::inject::{inject, GuestState, Injected};
use super::psci::{self, Action, Power};
use super::trap::{self, Action as TrapAction, Undef};
use super::vcpu::{abandon_guest, current};
use super::{RateLimit, Vm, VmState};
use crate::arch::aarch64::esr::{self, Esr, SysRegAccess};
use crate::arch::aarch64::frame::TrapFrame;
use crate::arch::aarch64::pmu::{self, PmuReg};
use crate::arch::aarch64::{cpu, guest, MAX_CPUS};
use log::{info, warn};

/// What [`hvc_fast`] returns to `vectors.S` (in x0 and x1).
#[repr(C)]
pub struct FastAnswer {
    /// The guest's new x0.
    x0: u64,
    /// 0: not answered, the hypercall needs the whole frame ([`hvc_exit`]).
    answered: u64,
}

/// A hypercall from a VM whose conduit is HVC, decided from x0 and the
/// syndrome alone: `vectors.S` calls this with only the caller-saved
/// registers saved and ELR_EL2/SPSR_EL2 still in the CPU, so it must not
/// take an exception or touch anything but its arguments. The answers that
/// need nothing of the VM (a non-zero immediate, the version queries,
/// services nobody implements) are given here; the rest go to [`hvc_exit`].
#[no_mangle]
extern "C" fn hvc_fast(x0: u64, esr: u64) -> FastAnswer {
    // ELR already points past the HVC. A non-zero immediate is no SMCCC call.
    if esr & 0xffff != 0 {
        return FastAnswer {
            x0: NOT_SUPPORTED,
            answered: 1,
        };
    }
    match psci::fast(x0 as u32) {
        Some(v) => FastAnswer { x0: v, answered: 1 },
        None => FastAnswer { x0, answered: 0 },
    }
}

/// A hypercall [`hvc_fast`] did not answer, with the whole frame saved.
#[no_mangle]
extern "C" fn hvc_exit(frame: &mut TrapFrame, esr: u64) {
    if esr & 0xffff != 0 {
        frame.x[0] = NOT_SUPPORTED;
    } else if let Some(v) = psci::fast(frame.x[0] as u32) {
        frame.x[0] = v;
    } else {
        smccc_call(frame);
    }
}

/// A data abort whose register (if the syndrome names one) is not one of
/// x19-x29: `vectors.S` calls this with the caller-saved registers and the
/// return state in `frame` (x19-x29 are live in the CPU and untouched by
/// Rust). Nearly always an emulated device access.
#[no_mangle]
extern "C" fn mmio_exit_short(frame: &mut TrapFrame, esr: u64) {
    data_abort(frame, Esr(esr));
}

/// A system register trap (EC 0x18), from `vectors.S` with x0-x18 and x30
/// in `frame` and nothing else: ELR_EL2 and SPSR_EL2 are only in the CPU,
/// so this must take no exception and leave them alone. Takes an
/// ICC_SGI1R_EL1 write whose register is not one of x19-x29 (`vectors.S`
/// then moves the PC on); `false` sends the exit, not begun, on to
/// [`lower_sync`] with the whole frame.
#[no_mangle]
extern "C" fn sgi_exit_short(frame: &TrapFrame, esr: u64) -> bool {
    // The whole syndrome but Rt in one compare: EC 0x18 with IL set (a
    // trapped MSR is always a 32-bit instruction), ISS[24:22] RES0, no
    // ISS2 (Arm ARM D19.2.45).
    if esr | ESR_RT != SGI1R_WRITE_ESR {
        return false;
    }
    let rt = (esr >> 5) & 0x1f;
    if callee_saved(rt) {
        return false;
    }
    super::irq::guest_sgi(frame.reg(rt as usize));
    true
}

/// x19-x29: not in the short frame.
#[inline(always)]
const fn callee_saved(reg: u64) -> bool {
    reg >= 19 && reg <= 29
}

/// Every synchronous exit from the guest, with the whole frame saved.
#[no_mangle]
extern "C" fn lower_sync(frame: &mut TrapFrame) {
    let esr = guest::esr();
    let ec = esr >> 26;
    if ec == EC_DABT_LOW {
        data_abort(frame, Esr(esr));
    } else if ec == EC_SYSREG && esr & SYSREG_KEY_MASK == SGI1R_WRITE {
        // ICC_SGI1R_EL1 writes (an IPI): the guest's most frequent trap after
        // hypercalls and MMIO, straight to the vGIC.
        super::irq::guest_sgi(frame.reg(((esr >> 5) & 0x1f) as usize));
        frame.elr += 4;
    } else {
        other_sync(frame, Esr(esr));
    }
}

/// SMCCC NOT_SUPPORTED (-1) in x0.
const NOT_SUPPORTED: u64 = u64::MAX;
const EC_DABT_LOW: u64 = 0x24;
/// ESR_EL2.ISV of a data abort: the syndrome names the register.
const ISV: u64 = 1 << 24;
const EC_SYSREG: u64 = 0x18;
/// The ISS bits naming a system register and the direction (Rt cleared).
const SYSREG_KEY_MASK: u64 = 0x3f_fc1f;
/// ICC_SGI1R_EL1 (S3_0_C12_C11_5), written (direction 0).
const SGI1R_WRITE: u64 = esr::ICC_SGI1R_EL1 as u64;
/// ESR_EL2.ISS.Rt of a trapped MSR/MRS.
const ESR_RT: u64 = 0x1f << 5;
/// The ESR_EL2 of an ICC_SGI1R_EL1 write, Rt all ones.
const SGI1R_WRITE_ESR: u64 = EC_SYSREG << 26 | 1 << 25 | SGI1R_WRITE | ESR_RT;

/// Every synchronous exit but the hot ones: decided by [`trap::decide`],
/// carried out here.
#[inline(never)]
fn other_sync(frame: &mut TrapFrame, esr: Esr) {
    let (vm, vcpu) = current();
    match trap::decide(esr, vm.config.psci, guest::pmu_trapped()) {
        TrapAction::Call { advance } => {
            frame.elr += advance;
            smccc_call(frame);
        }
        TrapAction::NotSupported { advance } => {
            frame.elr += advance;
            frame.x[0] = NOT_SUPPORTED;
        }
        TrapAction::Mmio(_) | TrapAction::DataAbort { .. } => data_abort(frame, esr),
        TrapAction::InstrAbort => {
            if super::lazy::on_fault(vm, guest::fault_ipa()) {
                return;
            }
            let far = guest::far();
            if vm.should_log_fault() {
                warn!(
                    "VM {} vCPU {}: instruction fetch from unmapped {:#x}; abort injected",
                    vm.name(),
                    vcpu.index,
                    far
                );
            }
            inject_into(frame, Injected::InstrAbort { far });
        }
        TrapAction::Skip => frame.elr += 4,
        TrapAction::Sgi { rt } => {
            super::irq::guest_sgi(frame.reg(rt as usize));
            frame.elr += 4;
        }
        TrapAction::PmuRead { reg, rt } => match pmu_target(reg) {
            Some(r) => {
                frame.set_reg(rt as usize, pmu::hw::read(r));
                frame.elr += 4;
            }
            None => undefined(frame, esr, Undef::SysReg),
        },
        TrapAction::PmuWrite { reg, rt } => match pmu_target(reg) {
            Some(r) => {
                pmu::hw::write(r, r.sanitize(frame.reg(rt as usize)));
                frame.elr += 4;
            }
            None => undefined(frame, esr, Undef::SysReg),
        },
        TrapAction::Undefined(why) => undefined(frame, esr, why),
    }
}

/// The PMU register a trapped access reaches: PMXEV* through PMSELR_EL0;
/// `None` for a counter this PMU lacks (UNDEFINED, as on hardware).
fn pmu_target(reg: PmuReg) -> Option<PmuReg> {
    let pmselr = if matches!(reg, PmuReg::Pmxevtyper | PmuReg::Pmxevcntr) {
        pmu::hw::read(PmuReg::Pmselr)
    } else {
        0
    };
    reg.resolve(pmselr).filter(|r| r.exists(guest::pmu_counters()))
}

/// Injects UNDEFINED for `esr`, logged (rate-limited) with the reason.
fn undefined(frame: &mut TrapFrame, esr: Esr, why: Undef) {
    let (vm, vcpu) = current();
    if vm.should_log_fault() {
        match why {
            Undef::SysReg => {
                let acc = SysRegAccess::from_iss(esr.iss());
                warn!(
                    "VM {} vCPU {}: {} of system register S{}_{}_C{}_C{}_{} at {:#x}; UNDEFINED injected",
                    vm.name(),
                    vcpu.index,
                    if acc.read { "read" } else { "write" },
                    acc.op0,
                    acc.op1,
                    acc.crn,
                    acc.crm,
                    acc.op2,
                    frame.elr
                );
            }
            Undef::NotConduit => warn!(
                "VM {} vCPU {}: {} at {:#x}, but its PSCI conduit is {:?}; UNDEFINED injected",
                vm.name(),
                vcpu.index,
                esr.class(),
                frame.elr,
                vm.config.psci
            ),
            Undef::Exit => warn!(
                "VM {} vCPU {}: unhandled exit {} (ESR {:#x}) at {:#x}; UNDEFINED injected",
                vm.name(),
                vcpu.index,
                esr,
                esr.0,
                frame.elr
            ),
        }
    }
    inject_into(frame, Injected::Undefined);
}

/// A physical interrupt while the guest ran. `vectors.S` saved x0-x18 and
/// x30 only: the frame's ELR and SPSR are stale, this path leaves the
/// CPU's alone.
#[no_mangle]
extern "C" fn lower_irq(_frame: &mut TrapFrame) {
    super::irq::handle_irq();
}

#[no_mangle]
extern "C" fn lower_fiq(_frame: &mut TrapFrame) {}

/// An SError from the guest (an asynchronous external abort it caused): the
/// VM is stopped, nobody else is affected.
#[no_mangle]
extern "C" fn lower_serror(frame: &mut TrapFrame) {
    let (vm, vcpu) = current();
    stop_vm(vm, vcpu.index, "SError (asynchronous external abort)", frame.elr);
}

#[inline(always)]
fn smccc_call(frame: &mut TrapFrame) {
    let (vm, vcpu) = current();
    match psci::call(vm, frame.x[0] as u32, [frame.x[1], frame.x[2], frame.x[3]]) {
        Action::Return(v) => frame.x[0] = v,
        other => power_action(frame, vm, vcpu, other),
    }
}

/// PSCI calls that change a vCPU's or the VM's power state.
#[inline(never)]
fn power_action(frame: &mut TrapFrame, vm: &'static Vm, vcpu: &'static super::Vcpu, action: Action) {
    match action {
        Action::Return(v) => frame.x[0] = v,
        Action::CpuOff => {
            vcpu.set_power(Power::Off);
            abandon_guest();
        }
        Action::Suspend => {
            // CPU_SUSPEND as a WFI: any interrupt (or none at all) wakes it.
            // One already waiting in the vGIC returns at once.
            if !super::irq::has_pending_virtual(&vm.vgic, vcpu.index) {
                cpu::wait_for_interrupt();
            }
            frame.x[0] = 0;
        }
        Action::SystemOff => stop_vm(vm, vcpu.index, "PSCI SYSTEM_OFF", frame.elr),
        Action::SystemReset => reset_vm(vm, vcpu.index),
    }
}

/// A stage-2 data abort: an emulated device access, decided from the
/// syndrome's bits directly (the same rule as [`trap::data_abort`]), or an
/// abort to inject.
#[inline(always)]
fn data_abort(frame: &mut TrapFrame, esr: Esr) {
    let iss = esr.iss();
    if !esr::is_device_access(iss) {
        return data_abort_other(frame, esr);
    }
    let (vm, vcpu) = current();
    let ipa = guest::fault_ipa();
    let Some((dev, offset)) = vm.mmio.find(ipa) else {
        return abort(frame, vm, vcpu.index, ipa, iss & WNR != 0, "outside the VM");
    };
    let size = (iss >> 22) & 3;
    let srt = ((iss >> 16) & 0x1f) as usize;
    let done = if iss & WNR != 0 {
        let value = frame.reg(srt) & trap::load_mask(size | 4);
        dev.write(offset, 1 << size, value, vcpu.index).is_ok()
    } else {
        match dev.read(offset, 1 << size, vcpu.index) {
            Ok(v) => {
                frame.set_reg(srt, trap::load_value(v, iss));
                true
            }
            Err(_) => false,
        }
    };
    if done {
        frame.elr += esr.insn_len();
    } else {
        abort(
            frame,
            vm,
            vcpu.index,
            ipa,
            iss & WNR != 0,
            "refused by the device",
        );
    }
}

/// ESR_EL2.WnR of a data abort.
const WNR: u32 = 1 << 6;

/// A data abort that is no device access: an abort to inject, logged.
#[cold]
#[inline(never)]
fn data_abort_other(frame: &mut TrapFrame, esr: Esr) {
    let (vm, vcpu) = current();
    let ipa = guest::fault_ipa();
    let (write, why) = match trap::data_abort(esr.iss()) {
        TrapAction::DataAbort { write, why } => (write, why.message()),
        _ => (false, "not a data abort"),
    };
    abort(frame, vm, vcpu.index, ipa, write, why)
}

/// Injects an external data abort for an access to `ipa`, logged.
#[cold]
#[inline(never)]
fn abort(frame: &mut TrapFrame, vm: &Vm, vcpu: usize, ipa: u64, write: bool, why: &str) {
    // The first touch of a lazily scrubbed RAM block: now mapped, retry.
    if super::lazy::on_fault(vm, ipa) {
        return;
    }
    if vm.should_log_fault() {
        warn!(
            "VM {} vCPU {}: {} of IPA {:#x} at {:#x} {}; external abort injected",
            vm.name(),
            vcpu,
            if write { "write" } else { "read" },
            ipa,
            frame.elr,
            why
        );
    }
    inject_into(
        frame,
        Injected::DataAbort {
            far: guest::far(),
            write,
        },
    );
}

/// Delivers a synchronous exception to the guest's own EL1 vector. A guest
/// whose vector itself faults would loop here for ever: it is stopped.
fn inject_into(frame: &mut TrapFrame, what: Injected) {
    let st = GuestState {
        pc: frame.elr,
        pstate: frame.spsr,
        vbar_el1: guest::vbar_el1(),
    };
    let i = inject(&st, what);
    if i.new_pc == frame.elr {
        let (vm, vcpu) = current();
        stop_vm(
            vm,
            vcpu.index,
            "its exception vector is not in its memory (double fault)",
            frame.elr,
        );
    }
    guest::write_el1_exception(i.elr_el1, i.spsr_el1, i.esr_el1, i.far_el1);
    frame.elr = i.new_pc;
    frame.spsr = i.new_pstate;
}

/// "restarting" log lines per VM (at most one VM per CPU, so MAX_CPUS of them).
static RESET_LOG: [RateLimit; MAX_CPUS] = [const { RateLimit::new() }; MAX_CPUS];

/// Restarts a whole VM from pristine copies of its images (PSCI
/// SYSTEM_RESET): its other vCPUs are pulled out, its RAM scrubbed and
/// reloaded, its devices reset, and vCPU 0 started again. All the work is
/// done on this VM's own CPU; other VMs never wait for it.
///
/// The reset is claimed once (Running -> Resetting): a vCPU that calls
/// SYSTEM_RESET (or SYSTEM_OFF) while another one's reset or stop is under
/// way just leaves the guest, as if kicked, instead of waiting for that one
/// to leave the guest while it waits for this one.
fn reset_vm(vm: &Vm, vcpu: usize) -> ! {
    if !vm.claim_state(VmState::Running, VmState::Resetting) {
        abandon_guest();
    }
    for v in &vm.vcpus {
        v.set_power(Power::Off);
        if v.index != vcpu {
            super::irq::kick_cpu(v.pcpu);
        }
    }
    // Wait (bounded) until no other vCPU of this VM executes guest code.
    // The fence pairs with the one in `cpu_loop`: a CPU about to enter
    // either is seen in the guest here or sees this VM resetting there.
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    let deadline = cpu::counter() + cpu::counter_freq();
    while vm
        .vcpus
        .iter()
        .any(|v| v.index != vcpu && v.in_guest.load(core::sync::atomic::Ordering::SeqCst))
    {
        if cpu::counter() > deadline {
            stop_vm(
                vm,
                vcpu,
                "SYSTEM_RESET: a vCPU did not leave the guest within 1 s",
                0,
            );
        }
        core::hint::spin_loop();
    }
    // Nobody else of this VM runs now; a CPU_ON one of them made while this
    // reset began is void: every vCPU but the boot one stays off.
    for v in &vm.vcpus {
        v.set_power(Power::Off);
    }
    // Everything this reset logs is rate-limited with its restart line: a VM
    // resetting in a loop must not keep the console busy for the others.
    let held = RESET_LOG
        .get(vm.index)
        .and_then(|log| log.check(cpu::counter(), cpu::counter_freq()));
    let reset_start = cpu::counter();
    let smmu_ticks = super::smmu::quiesce(vm);
    let pci_stopped = super::pcie_reset::quiesce(vm);
    if held.is_some() && pci_stopped > 0 {
        info!(
            "VM {}: {pci_stopped} PCI function(s) stopped (bus master, memory and I/O off) before its images are loaded again",
            vm.name()
        );
    }
    vm.vgic.reset();
    for r in vm.mmio.regions() {
        if let (Some(_), Some((n, refused))) = (held, r.device.trapped()) {
            info!(
                "VM {}: {} {:#x}..{:#x}: {n} accesses trapped ({refused} refused) since the VM started",
                vm.name(),
                r.device.name(),
                r.base,
                r.base.saturating_add(r.size)
            );
        }
        r.device.reset();
    }
    if let Err(e) = super::lazy::reload(vm) {
        log::error!("VM {}: {e}", vm.name());
        stop_vm(vm, vcpu, "SYSTEM_RESET: cannot reload its images", 0);
    }
    let smmu_ticks = smmu_ticks + super::smmu::restore(vm);
    if held.is_some() && smmu_ticks > 0 {
        let us = |t: u64| t * 1_000_000 / cpu::counter_freq().max(1);
        info!(
            "VM {}: SMMU streams aborted and re-established in {} us of the reset's {} us",
            vm.name(),
            us(smmu_ticks),
            us(cpu::counter() - reset_start)
        );
    }
    match held {
        Some(0) => info!(
            "VM {} restarting (PSCI SYSTEM_RESET from vCPU {})",
            vm.name(),
            vcpu
        ),
        Some(held) => info!(
            "VM {} restarting (PSCI SYSTEM_RESET from vCPU {}; {} more restarts not logged)",
            vm.name(),
            vcpu,
            held
        ),
        None => {}
    }
    // With the restart line (as rate-limited): `cargo xtask soak` checks
    // that resets leak nothing.
    if held.is_some() {
        info!(
            "VM {} reset: {} free frames, heap {} bytes in use (at most {} so far)",
            vm.name(),
            crate::boot::FRAMES.lock().free_bytes() / crate::mm::addr::PAGE_SIZE,
            crate::mm::heap::usage().0,
            crate::mm::heap::peak()
        );
    }
    // Only a reset nobody stopped meanwhile starts the VM again.
    if !vm.claim_state(VmState::Resetting, VmState::Running) {
        abandon_guest();
    }
    let Some(boot) = vm.vcpus.first() else {
        stop_vm(vm, vcpu, "SYSTEM_RESET: the VM has no vCPU", 0);
    };
    if boot.request_on(vm.entry, vm.x0).is_err() {
        stop_vm(vm, vcpu, "SYSTEM_RESET: its boot vCPU could not be started", 0);
    }
    cpu::send_event();
    if vm.vcpus.get(vcpu).is_none_or(|me| me.pcpu != boot.pcpu) {
        super::irq::kick_cpu(boot.pcpu);
    }
    abandon_guest()
}

/// Stops a whole VM with a logged reason; this CPU goes back to waiting.
pub(super) fn stop_vm(vm: &Vm, vcpu: usize, why: &str, pc: u64) -> ! {
    if !vm.stop() {
        // Another vCPU stopped it first and said why.
        abandon_guest();
    }
    for v in &vm.vcpus {
        v.set_power(Power::Off);
        if v.index != vcpu {
            super::irq::kick_cpu(v.pcpu);
        }
    }
    // Its link devices go with it: peers are refused and their held
    // packets answered, instead of waiting for ever on a VM that looks
    // live. On this CPU; each device takes only its own and its peers'
    // locks, none of which a stopping path holds.
    vm.mmio.stop();
    info!("VM {} stopped: {} (vCPU {}, pc {:#x})", vm.name(), why, vcpu, pc);
    abandon_guest()
}
