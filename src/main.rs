//! Tessera: a static-partitioning Type-1 hypervisor for AArch64.
//!
//! The boot flow, top to bottom: the entry code (`arch/aarch64/entry.S`)
//! relocates the image, clears BSS and calls [`primary_main`] at EL2 with the
//! DTB. From there: translation and caches on, heap, board discovery, console,
//! free memory, the other CPUs, the banner.

#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
// Decoders, builders and the address types carry complete APIs that the host
// tests exercise; the parts the boot path does not call yet would warn.
#![allow(dead_code)]

extern crate alloc;

mod arch;
mod config;
mod drivers;
mod dt;
mod mm;
mod package;
mod platform;
mod smp;
mod vdev;
mod vm;

#[cfg(target_os = "none")]
pub mod boot;
#[cfg(target_os = "none")]
mod console;

/// Version printed in the banner.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("tessera runs on aarch64-unknown-none-softfloat: use `cargo xtask build` or `cargo xtask run`");
    std::process::exit(1);
}
