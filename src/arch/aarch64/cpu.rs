//! This CPU: its index, MPIDR, counter, and parking.

use aarch64_cpu::asm;
use aarch64_cpu::registers::{
    CurrentEL, Readable, Writeable, CNTFRQ_EL0, CNTPCT_EL0, DAIF, ID_AA64ISAR0_EL1, MPIDR_EL1, TPIDR_EL2,
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

/// 64 bits from the CPU's reseeded random number generator (FEAT_RNG
/// RNDRRS); `None` without one or when it delivered none this time.
pub fn random() -> Option<u64> {
    if (ID_AA64ISAR0_EL1.get() >> 60) & 0xf == 0 {
        return None;
    }
    let (value, nzcv): (u64, u64);
    // SAFETY: RNDRRS exists (ID_AA64ISAR0_EL1.RNDR above); reading it sets
    // only NZCV (Z on failure), which the asm does not promise to keep.
    unsafe {
        core::arch::asm!(
            "mrs {v}, s3_3_c2_c4_1",
            "mrs {f}, nzcv",
            v = out(reg) value,
            f = out(reg) nzcv,
            options(nomem, nostack)
        )
    };
    (nzcv & (1 << 30) == 0).then_some(value)
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
