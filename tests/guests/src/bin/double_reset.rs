//! `double_reset`: both vCPUs call PSCI SYSTEM_RESET at the same moment
//! (they meet at a barrier first). The reset must happen once and the VM
//! boot again: a second resetter that waited for the first to leave the
//! guest, while the first waited for it, used to get the VM stopped. Every
//! boot prints `double_reset: boot`, then both vCPUs reset again.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicU32, Ordering};
    use tessera_guests::{mpidr, park, println, psci, start_cpu};

    /// vCPUs at the barrier (RAM is scrubbed on reset: 0 each boot).
    static ARRIVED: AtomicU32 = AtomicU32::new(0);

    tessera_guests::entry!(run);

    fn run() -> ! {
        println!("double_reset: boot, MPIDR {:#x}", mpidr());
        let r = start_cpu(1, secondary);
        if r != 0 {
            println!("FAIL double_reset: CPU_ON returned {r}");
            park()
        }
        race()
    }

    fn secondary(_: usize) -> ! {
        race()
    }

    fn race() -> ! {
        ARRIVED.fetch_add(1, Ordering::AcqRel);
        while ARRIVED.load(Ordering::Acquire) < 2 {
            core::hint::spin_loop();
        }
        let r = psci::system_reset();
        println!("FAIL double_reset: SYSTEM_RESET returned {r}");
        park()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
