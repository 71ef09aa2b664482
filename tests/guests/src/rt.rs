//! The Rust side of the entry: MMU on, then the guest's main (boot vCPU) or
//! the function [`start_cpu`] registered (secondaries); the panic handler.

use crate::cpu::park;
use crate::{mmu, println, psci, MAX_CPUS};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Per vCPU index: the `fn(usize) -> !` it runs once started, or 0.
static SECONDARY_MAIN: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

extern "C" {
    /// The image's first byte (linker/guest.ld).
    static __image_start: u8;
    /// PSCI CPU_ON entry in entry.S.
    fn tessera_secondary_entry();
    /// Defined by the guest with [`entry!`](crate::entry).
    fn tessera_guest_main() -> !;
}

/// CNTVCT_EL0 as the boot vCPU's entry code found it (see [`entry_counter`]).
static ENTRY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// CNTVCT_EL0 read by the boot vCPU's second instruction (the first of
/// `primary_entry` in entry.S, right after the Image header's branch), with
/// the MMU off: how long after the counter started the guest began to run.
pub fn entry_counter() -> u64 {
    ENTRY_COUNTER.load(Ordering::Relaxed)
}

/// Boot vCPU, from entry.S with relocations applied, BSS clear, stack set;
/// `entry_counter` is the CNTVCT_EL0 value entry.S read first thing.
#[no_mangle]
extern "C" fn tessera_rt_primary(_dtb: u64, entry_counter: u64) -> ! {
    mmu::build(&raw const __image_start as u64);
    mmu::enable();
    // With the caches on, like every other access to it.
    ENTRY_COUNTER.store(entry_counter, Ordering::Relaxed);
    // SAFETY: `entry!` defines this symbol as a safe `fn() -> !`.
    unsafe { tessera_guest_main() }
}

/// Secondary vCPU `index` (< MAX_CPUS, checked by entry.S).
#[no_mangle]
extern "C" fn tessera_rt_secondary(index: usize) -> ! {
    mmu::enable();
    let main = SECONDARY_MAIN[index].load(Ordering::Acquire);
    if main == 0 {
        println!("FAIL vCPU {index} started without a function to run");
        park();
    }
    // SAFETY: non-zero values are only stored by `start_cpu`, from a
    // `fn(usize) -> !`.
    let main: fn(usize) -> ! = unsafe { core::mem::transmute::<usize, fn(usize) -> !>(main) };
    main(index)
}

/// Physical address to give PSCI CPU_ON as the entry point of a secondary
/// (the context id must be its vCPU index < [`MAX_CPUS`]).
pub fn secondary_entry_address() -> u64 {
    tessera_secondary_entry as *const () as u64
}

/// Starts vCPU `index` (MPIDR Aff0 = `index`) with PSCI CPU_ON, running
/// `main(index)` on its own stack; returns the PSCI code.
///
/// # Panics
/// If `index` is not below [`MAX_CPUS`].
pub fn start_cpu(index: usize, main: fn(usize) -> !) -> i64 {
    assert!(index < MAX_CPUS, "vCPU index {index} beyond MAX_CPUS");
    SECONDARY_MAIN[index].store(main as usize, Ordering::Release);
    psci::cpu_on(index as u64, secondary_entry_address(), index as u64)
}

/// Starts vCPUs 1, 2, … with [`start_cpu`] until CPU_ON answers
/// INVALID_PARAMETERS (no such vCPU) or [`MAX_CPUS`] is reached; returns how
/// many vCPUs the VM has, the boot one included. Any other error code is
/// printed as `FAIL cpu_on: …` and ends the loop. Does not wait for them.
pub fn start_secondaries(main: fn(usize) -> !) -> usize {
    let mut cpus = 1;
    for k in 1..MAX_CPUS {
        match start_cpu(k, main) {
            0 => cpus += 1,
            psci::INVALID_PARAMETERS => break,
            r => {
                println!("FAIL cpu_on: vCPU {k}: PSCI CPU_ON returned {r}");
                break;
            }
        }
    }
    cpus
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("FAIL panic: {info}");
    park()
}
