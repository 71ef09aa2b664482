//! Running vCPUs: every physical CPU that owns a vCPU waits here until the
//! vCPU is powered on, then drops into the guest. A vCPU that powers off (or
//! whose VM stops) comes back here on a fresh stack.

use super::psci::Power;
use super::{Vcpu, Vm, VmState};
use crate::arch::aarch64::{cpu, guest, mmu, MAX_CPUS};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use spin::Once;

/// All VMs, fixed once created.
pub static VMS: Once<Vec<Vm>> = Once::new();

/// The vCPU each physical CPU runs, if any, and its VM.
static CURRENT: [AtomicPtr<Vcpu>; MAX_CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
static CURRENT_VM: [AtomicPtr<Vm>; MAX_CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
/// Top of each physical CPU's stack, where guest frames live.
static STACK_TOP: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Publishes the VMs and assigns their vCPUs to physical CPUs; powers on
/// each VM's first vCPU.
pub fn install(vms: Vec<Vm>) {
    let vms = VMS.call_once(|| vms);
    for vm in vms {
        for v in &vm.vcpus {
            if let (Some(c), Some(cvm)) = (CURRENT.get(v.pcpu), CURRENT_VM.get(v.pcpu)) {
                c.store(v as *const Vcpu as *mut Vcpu, Ordering::Release);
                cvm.store(vm as *const Vm as *mut Vm, Ordering::Release);
            }
        }
        if let Some(boot) = vm.vcpus.first() {
            let _ = boot.request_on(vm.entry, vm.x0);
        }
    }
    // Only now may CPUs look up their vCPU (a CPU that looked earlier would
    // find none and idle for ever).
    INSTALLED.store(true, Ordering::Release);
    cpu::send_event();
}

/// Set once every CPU's vCPU is known.
static INSTALLED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Waits until the VMs are installed (secondary CPUs at bring-up).
pub fn wait_installed() {
    while !INSTALLED.load(Ordering::Acquire) {
        cpu::wait_for_event();
    }
}

/// Records where this CPU's stack ends (called once per CPU at bring-up).
pub fn set_stack_top(cpu: usize, top: u64) {
    if let Some(t) = STACK_TOP.get(cpu) {
        t.store(top, Ordering::Relaxed);
    }
}

/// This physical CPU's slot of a per-CPU array. `cpu::index()` is below
/// MAX_CPUS on every CPU the hypervisor runs (it starts no more), so the
/// index cannot fail: an invariant of the hypervisor, not a guest's doing.
#[inline(always)]
fn this_cpu<T>(per_cpu: &[T; MAX_CPUS]) -> &T {
    cpu_slot(per_cpu, cpu::index())
}

/// Slot `cpu` (a physical CPU's index, so below MAX_CPUS as above) of a
/// per-CPU array: for paths that look up several arrays and read the index
/// once (it is a system register read the compiler cannot merge).
#[inline(always)]
#[allow(clippy::indexing_slicing)]
fn cpu_slot<T>(per_cpu: &[T; MAX_CPUS], cpu: usize) -> &T {
    &per_cpu[cpu]
}

/// The vCPU running on this physical CPU and its VM. Only valid while a
/// guest is assigned, which is the case for every exit from a lower EL.
#[inline(always)]
pub fn current() -> (&'static Vm, &'static Vcpu) {
    let cpu = cpu::index();
    let vcpu = cpu_slot(&CURRENT, cpu).load(Ordering::Relaxed);
    let vm = cpu_slot(&CURRENT_VM, cpu).load(Ordering::Relaxed);
    // SAFETY: both were set in `install`, before INSTALLED, to elements of
    // VMS, which lives for ever and never moves; lower-EL exits only happen
    // on CPUs that run a vCPU, so neither is null here.
    unsafe { (&*vm, &*vcpu) }
}

/// This CPU's scheduler, such as it is: wait for our vCPU, run it. Never
/// returns; entered from boot and again after a vCPU stops.
pub extern "C" fn cpu_loop() -> ! {
    let p = this_cpu(&CURRENT).load(Ordering::Acquire);
    if p.is_null() {
        super::irq::idle();
    }
    // SAFETY: as in `current`.
    let vcpu: &'static Vcpu = unsafe { &*p };
    // VMs are installed before CPUs run them.
    let Some(vm) = VMS.get().and_then(|vms| vms.get(vcpu.vm)) else {
        super::irq::idle();
    };
    vcpu.in_guest.store(false, Ordering::Release);
    let (entry, context) = loop {
        if vm.state() == VmState::Running && vcpu.power() == Power::OnPending && vcpu.claim_on() {
            // Read after the claim: only an Off vCPU takes new ones.
            let args = vcpu.boot_args();
            // Announce guest entry, then look again: a reset or stop that
            // turned this vCPU off meanwhile either sees `in_guest` and
            // waits for us, or we see its state here and back off.
            vcpu.in_guest.store(true, Ordering::SeqCst);
            core::sync::atomic::fence(Ordering::SeqCst);
            if vm.state() == VmState::Running && vcpu.power() == Power::On {
                break args;
            }
            vcpu.in_guest.store(false, Ordering::Release);
        }
        super::irq::wait_for_kick();
    };
    // The first entry scrubs the VM's eager RAM here, on its own CPU.
    if let Err(e) = super::lazy::before_entry(vm) {
        log::error!("VM {}: {e}", vm.name());
        super::exit::stop_vm(vm, vcpu.index, "its RAM could not be scrubbed and loaded", 0);
    }
    guest::load_vm(
        vm.vttbr,
        vm.vtcr,
        vcpu.vmpidr,
        vm.config.psci == crate::config::PsciConduit::Smc,
    );
    super::irq::reset_vcpu_interface(&vm.vgic);
    super::irq::flush(&vm.vgic, vcpu.index);
    // Nothing this CPU fetched before this start is fetched now (see
    // lazy::HwBlocks::scrub, which relies on it).
    mmu::invalidate_icache_local();
    guest::enter(
        entry,
        context,
        guest::SPSR_EL1H_MASKED,
        this_cpu(&STACK_TOP).load(Ordering::Relaxed),
    )
}

/// Leaves the guest for good on this CPU (its vCPU is off or its VM stopped)
/// and goes back to waiting.
pub fn abandon_guest() -> ! {
    guest::restart(this_cpu(&STACK_TOP).load(Ordering::Relaxed), cpu_loop)
}
