//! This CPU: its index, MPIDR, counter, and parking.

use aarch64_cpu::asm;
use aarch64_cpu::registers::{
    CurrentEL, Readable, Writeable, CNTFRQ_EL0, CNTPCT_EL0, DAIF, MPIDR_EL1, TPIDR_EL2,
};

/// Index of the running CPU in the platform's CPU list (set at entry).
pub fn index() -> usize {
    TPIDR_EL2.get() as usize
}

/// The affinity fields of MPIDR_EL1 (Aff3..Aff0), as the DTB's `reg` spells them.
pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}

/// The exception level we run at.
pub fn current_el() -> u64 {
    CurrentEL.read(CurrentEL::EL)
}

/// Physical counter value.
pub fn counter() -> u64 {
    asm::barrier::isb(asm::barrier::SY);
    CNTPCT_EL0.get()
}

/// Counter frequency in Hz.
pub fn counter_freq() -> u64 {
    CNTFRQ_EL0.get()
}

/// Stops this CPU for good: interrupts masked, waiting forever.
pub fn park() -> ! {
    DAIF.write(DAIF::D::Masked + DAIF::A::Masked + DAIF::I::Masked + DAIF::F::Masked);
    loop {
        asm::wfe();
    }
}

/// Records the running CPU's logical index (read back by [`index`]).
pub fn set_index(i: usize) {
    TPIDR_EL2.set(i as u64);
}

/// Wakes CPUs waiting in WFE.
pub fn send_event() {
    asm::sev();
}

/// Waits for an event (SEV or interrupt), for polling loops.
pub fn wait_for_event() {
    asm::wfe();
}

/// Waits for an interrupt.
pub fn wait_for_interrupt() {
    asm::wfi();
}

/// Starts the EL2 physical timer with a deadline already past, so that it
/// asserts its (level) interrupt at once and holds it until
/// [`hyp_timer_stop`]. Only for boot-time probes: the hypervisor does not
/// otherwise use this timer.
pub fn hyp_timer_fire_now() {
    use aarch64_cpu::registers::CNTHP_CTL_EL2;
    // SAFETY: writes the EL2 timer's compare value, which nothing else uses.
    unsafe { core::arch::asm!("msr cnthp_cval_el2, xzr", options(nomem, nostack)) };
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET + CNTHP_CTL_EL2::IMASK::CLEAR);
    asm::barrier::isb(asm::barrier::SY);
}

/// Stops the EL2 physical timer: its interrupt deasserts.
pub fn hyp_timer_stop() {
    use aarch64_cpu::registers::CNTHP_CTL_EL2;
    CNTHP_CTL_EL2.set(0);
    asm::barrier::isb(asm::barrier::SY);
}
