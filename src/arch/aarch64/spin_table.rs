//! Releasing a CPU that the firmware parked in a spin table (Linux
//! Documentation/arch/arm64/booting.rst 5; the Raspberry Pi's armstub and
//! QEMU's `raspi4b` park CPUs 1-3 so): the parked CPU waits in WFE, reads
//! its 64-bit release address with its MMU and caches off, and jumps to
//! what it finds there once that is non-zero, at EL2 with x0 = 0.
//!
//! It learns nothing else, so `spin_table_entry` (entry.S) finds its stack
//! slot by looking its MPIDR up in [`SPIN_MPIDRS`].

use super::{mmu, MAX_CPUS};
use aarch64_cpu::asm;
use core::sync::atomic::{AtomicU64, Ordering};

/// The MPIDR (affinity fields) of the CPU released into each stack slot;
/// `u64::MAX` where none is. Read by `spin_table_entry` with the MMU off,
/// so every write is cleaned to the point of coherency.
#[no_mangle]
static SPIN_MPIDRS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];

extern "C" {
    fn spin_table_entry();
}

/// Releases the parked CPU `mpidr` into stack slot `slot` by writing
/// `spin_table_entry`'s address to `release_addr`. `release_addr` must be
/// the CPU's `cpu-release-addr` (8-byte aligned, in RAM, identity mapped:
/// the platform checked the first two, the EL2 map maps all RAM).
pub fn release(slot: usize, mpidr: u64, release_addr: u64) {
    let Some(entry) = SPIN_MPIDRS.get(slot) else {
        return;
    };
    entry.store(mpidr, Ordering::Release);
    let at = entry as *const AtomicU64 as u64;
    mmu::clean_dcache(at, at + 8);
    let target = spin_table_entry as *const () as u64;
    // SAFETY: `release_addr` is the firmware's release slot for this CPU: an
    // aligned u64 in RAM that nothing of Tessera's uses (its page is kept
    // from the frame allocator) and that only the parked CPU reads.
    unsafe { core::ptr::write_volatile(release_addr as *mut u64, target) };
    // To the point of coherency (the parked CPU's loads bypass the caches),
    // completed (clean_dcache ends with DSB SY) before the event.
    mmu::clean_dcache(release_addr, release_addr + 8);
    asm::sev();
}
