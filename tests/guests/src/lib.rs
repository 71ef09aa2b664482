//! Tiny runtime for Tessera's bare-metal test guests.
//!
//! A guest is one binary in `src/bin/` that runs at EL1 in a VM (or bare in
//! QEMU `virt`), exercises one feature and prints `PASS name` / `FAIL name: why`
//! lines ending with `RESULT guest: N passed, M failed`, which the scenarios of
//! `cargo xtask test` match. This crate provides:
//!
//! - the entry ([`entry!`]): arm64 Image header, self-relocation, BSS, one
//!   stack per vCPU (up to [`MAX_CPUS`]), EL1 vectors, and an identity map with
//!   the MMU and caches on (see [`mmu`]), so atomics behave architecturally;
//! - the console: [`println!`] / [`print!`] on the PL011 at `0x0900_0000`,
//!   whole lines at a time across vCPUs;
//! - [`hvc`] / [`smc`], [`psci`], [`start_cpu`] for secondary vCPUs;
//! - [`try_access`] / [`expect_fault`] to provoke exceptions and look at them;
//! - [`Mmio`] for device accesses whose exact instruction matters;
//! - [`Checker`] for the PASS/FAIL/RESULT lines;
//! - [`gic`]: one API over GICv2 and GICv3, and the IRQ handler hook;
//!   [`vtimer`] for the EL1 virtual timer.
//!
//! Everything that touches the hardware is only built for the target
//! (`target_os = "none"`); on the host the crate is (nearly) empty so that
//! `cargo test --workspace` and `cargo clippy --workspace` work.
#![cfg_attr(target_os = "none", no_std)]

mod fault;
pub use fault::{Fault, EC_DABT_CURRENT, EC_IABT_CURRENT, EC_UNKNOWN};

/// Most vCPUs a guest supports (one stack and one fault slot each).
pub const MAX_CPUS: usize = 8;

#[cfg(target_os = "none")]
mod check;
#[cfg(target_os = "none")]
#[doc(hidden)]
pub mod console;
#[cfg(target_os = "none")]
mod cpu;
#[cfg(target_os = "none")]
mod exceptions;
#[cfg(target_os = "none")]
pub mod gic;
#[cfg(target_os = "none")]
mod mmio;
#[cfg(target_os = "none")]
pub mod mmu;
#[cfg(target_os = "none")]
pub mod owned_pl011;
#[cfg(target_os = "none")]
pub mod owned_uart;
#[cfg(target_os = "none")]
pub mod psci;
#[cfg(target_os = "none")]
mod rt;
#[cfg(target_os = "none")]
mod smccc;
#[cfg(target_os = "none")]
mod uart;
#[cfg(target_os = "none")]
pub mod vnet;
#[cfg(target_os = "none")]
pub mod vtimer;

#[cfg(target_os = "none")]
pub use check::{fail, pass, Checker};
#[cfg(target_os = "none")]
pub use cpu::{counter, counter_freq, cpu_index, current_el, mpidr, ms_to_ticks, park, spin_until};
#[cfg(target_os = "none")]
pub use exceptions::{branch_to, expect_fault, try_access};
#[cfg(target_os = "none")]
pub use mmio::Mmio;
#[cfg(target_os = "none")]
pub use rt::{entry_counter, secondary_entry_address, start_cpu, start_secondaries};
#[cfg(target_os = "none")]
pub use smccc::{hvc, smc};

/// Bytes of stack per vCPU.
#[cfg(target_os = "none")]
const STACK_SIZE: usize = 16 * 1024;

#[cfg(target_os = "none")]
core::arch::global_asm!(
    include_str!("entry.S"),
    stack_size = const STACK_SIZE,
    max_cpus = const MAX_CPUS,
);

#[cfg(target_os = "none")]
core::arch::global_asm!(include_str!("vectors.S"));

/// Declares the guest's main function, which the boot vCPU runs once the
/// runtime is set up: `tessera_guests::entry!(run);` with `fn run() -> !`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        extern "C" fn tessera_guest_main() -> ! {
            let main: fn() -> ! = $main;
            main()
        }
    };
}
