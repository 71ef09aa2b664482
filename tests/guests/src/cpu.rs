//! CPU identity, the generic timer's virtual counter, and parking.
//!
//! System registers are read with one-line `asm!` here rather than through a
//! crate, so the guests depend on nothing the hypervisor also uses.

use core::arch::asm;

/// MPIDR_EL1 as this vCPU sees it (Aff0 = vCPU index under Tessera; QEMU also
/// sets the RES1 bit 31).
pub fn mpidr() -> u64 {
    let v: u64;
    // SAFETY: reading MPIDR_EL1 at EL1 has no side effects.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// The exception level we run at (1 in a VM).
pub fn current_el() -> u64 {
    let v: u64;
    // SAFETY: reading CurrentEL has no side effects.
    unsafe { asm!("mrs {}, CurrentEL", out(reg) v, options(nomem, nostack, preserves_flags)) };
    (v >> 2) & 3
}

/// This vCPU's index (the PSCI context id it was started with; 0 for the boot
/// vCPU), kept in TPIDR_EL1 by the entry code.
pub fn cpu_index() -> usize {
    let v: u64;
    // SAFETY: reading TPIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, tpidr_el1", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v as usize
}

/// The virtual counter, CNTVCT_EL0 (after an ISB, so it is not read early).
pub fn counter() -> u64 {
    let v: u64;
    // SAFETY: ISB and a counter read have no side effects on memory.
    unsafe { asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Counter frequency in Hz, CNTFRQ_EL0 (62.5 MHz on QEMU `virt`).
pub fn counter_freq() -> u64 {
    let v: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Counter ticks in `ms` milliseconds.
pub fn ms_to_ticks(ms: u64) -> u64 {
    counter_freq() / 1000 * ms
}

/// Polls `done` until it returns true or `timeout_ms` of counter time pass;
/// returns whether it became true. For waiting on other vCPUs, not a delay.
pub fn spin_until(timeout_ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = counter() + ms_to_ticks(timeout_ms);
    loop {
        if done() {
            return true;
        }
        if counter() >= deadline {
            return false;
        }
        core::hint::spin_loop();
    }
}

/// Stops this vCPU for good (interrupts stay masked, so WFE only idles).
pub fn park() -> ! {
    loop {
        // SAFETY: WFE only waits for an event.
        unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
    }
}
