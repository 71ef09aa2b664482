//! The EL2 (hypervisor) physical timer, CNTHP_*_EL2: the hypervisor's own,
//! never a guest's (the guests have the virtual and EL1 physical timers).
//! One-shot: armed for a moment later, disarmed when it fires.

use aarch64_cpu::registers::{Writeable, CNTHP_CTL_EL2};
use core::arch::asm;

/// Its interrupt: the non-secure EL2 physical timer's PPI, INTID 26 as the
/// Arm Base System Architecture assigns it (and QEMU virt, every board
/// we run, wires it).
pub const INTID: u32 = 26;

/// Fires once when the physical counter reaches `counter + ticks`.
pub fn arm_in(ticks: u64) {
    let at = super::cpu::counter().saturating_add(ticks);
    // SAFETY: CNTHP_CVAL_EL2 only sets when this CPU's EL2 timer fires.
    unsafe { asm!("msr cnthp_cval_el2, {}", in(reg) at, options(nomem, nostack, preserves_flags)) };
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET + CNTHP_CTL_EL2::IMASK::CLEAR);
}

/// Stops it: the interrupt is no longer asserted.
pub fn disarm() {
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::CLEAR + CNTHP_CTL_EL2::IMASK::SET);
}
