//! Bringing up the other physical CPUs: PSCI CPU_ON or a spin table, per
//! CPU as the device tree's `enable-method` says.
//!
//! The boot CPU runs on stack slot 0 whatever its position in the DTB, so a
//! CPU's stack slot is its logical index with the boot CPU's and 0 swapped.

#[cfg(target_os = "none")]
pub use target::*;

/// The boot CPU's stack slot is 0; the CPU that would have had slot 0 takes
/// the boot CPU's. The mapping is its own inverse.
pub fn slot_of(logical: usize, boot: usize) -> usize {
    if logical == boot {
        0
    } else if logical == 0 {
        boot
    } else {
        logical
    }
}

#[cfg(target_os = "none")]
mod target {
    use super::slot_of;
    use crate::arch::aarch64::{cpu, firmware, mmu, spin_table, MAX_CPUS};
    use crate::platform::{EnableMethod, Platform};
    use core::sync::atomic::{AtomicUsize, Ordering};
    use log::{info, warn};

    /// CPUs running hypervisor code, the boot CPU included.
    static ONLINE: AtomicUsize = AtomicUsize::new(1);
    /// Logical index of the boot CPU (read by secondaries with the MMU off).
    static mut BOOT_CPU: usize = 0;

    extern "C" {
        fn secondary_entry();
        static __data_start: u8;
        static __bss_end: u8;
    }

    /// Starts every CPU of the platform but this one; returns how many are online.
    pub fn start_secondaries(p: &Platform, boot: usize) -> usize {
        // SAFETY: written before any secondary runs; cleaned to PoC just below.
        unsafe { BOOT_CPU = boot };
        // Secondaries start with caches off: make everything they read before
        // their MMU is on (the image's data and BSS) visible in memory. Text
        // and read-only data are never written here (relocations and the BSS
        // clear run with the MMU and caches off), so cleaning starts at
        // `.data`: 200 lines, not 6,600.
        // SAFETY: linker-provided symbols; only their addresses are used.
        let (start, end) = unsafe { (&__data_start as *const u8 as u64, &__bss_end as *const u8 as u64) };
        mmu::clean_dcache(start, end);

        let entry = secondary_entry as *const () as u64;
        let mut warned_psci = false;
        for (i, c) in p.cpus.iter().enumerate() {
            if i == boot {
                continue;
            }
            if i >= MAX_CPUS {
                warn!(
                    "CPU {i} (MPIDR {:#x}) left off: Tessera drives at most {MAX_CPUS} CPUs",
                    c.mpidr
                );
                continue;
            }
            let before = ONLINE.load(Ordering::Acquire);
            let slot = slot_of(i, boot);
            match (c.enable, p.psci) {
                (EnableMethod::Psci, Some(conduit)) => {
                    if let Err(e) = firmware::cpu_on(conduit, c.mpidr, entry, slot as u64) {
                        warn!("CPU {i} (MPIDR {:#x}) failed to start: PSCI error {e:?}", c.mpidr);
                        continue;
                    }
                }
                (EnableMethod::Psci, None) => {
                    if !warned_psci {
                        warn!("no PSCI: CPUs without a spin table stay off");
                        warned_psci = true;
                    }
                    continue;
                }
                (EnableMethod::SpinTable { release_addr }, _) => {
                    spin_table::release(slot, c.mpidr, release_addr);
                }
                // Discovery said why.
                (EnableMethod::Off, _) => continue,
            }
            // Wait for it to report in (bounded: a CPU that never arrives is
            // left). 5 s, as Linux waits for a secondary: a loaded emulator
            // can take over 1 s to schedule a CPU it just released.
            let deadline = cpu::counter() + 5 * cpu::counter_freq();
            while ONLINE.load(Ordering::Acquire) == before && cpu::counter() < deadline {
                core::hint::spin_loop();
            }
            if ONLINE.load(Ordering::Acquire) == before {
                warn!("CPU {i} (MPIDR {:#x}) did not report in within 5 s", c.mpidr);
            }
        }
        ONLINE.load(Ordering::Acquire)
    }

    extern "C" {
        static __stacks: u8;
    }

    /// Top of the stack in `slot` (entry.S lays stacks out the same way).
    pub fn stack_top(slot: usize) -> u64 {
        let base = core::ptr::addr_of!(__stacks) as u64;
        base + ((slot + 1) * crate::arch::aarch64::STACK_SIZE) as u64
    }

    /// First Rust code on a secondary CPU, called from `secondary_entry`.
    pub fn secondary_init(slot: usize) -> usize {
        mmu::enable_secondary();
        // SAFETY: BOOT_CPU was written and cleaned before this CPU was started.
        let boot = unsafe { core::ptr::addr_of!(BOOT_CPU).read_volatile() };
        let logical = slot_of(slot, boot);
        cpu::set_index(logical);
        crate::vm::vcpu::set_stack_top(logical, stack_top(slot));
        crate::vm::irq::init_cpu(logical, crate::boot::maintenance_irq());
        info!(
            "CPU {logical} online (MPIDR {:#x}, EL{})",
            cpu::mpidr(),
            cpu::current_el()
        );
        ONLINE.fetch_add(1, Ordering::AcqRel);
        logical
    }
}

#[cfg(test)]
mod tests {
    use super::slot_of;

    #[test]
    fn boot_cpu_takes_slot_zero() {
        assert_eq!(slot_of(2, 2), 0);
        assert_eq!(slot_of(0, 2), 2);
        assert_eq!(slot_of(1, 2), 1);
        assert_eq!(slot_of(0, 0), 0);
        for boot in 0..4 {
            let mut slots: Vec<usize> = (0..4).map(|l| slot_of(l, boot)).collect();
            slots.sort();
            assert_eq!(slots, vec![0, 1, 2, 3]);
        }
    }
}
