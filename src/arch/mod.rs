//! Architecture support. Only `aarch64` exists; this is the only place in the
//! hypervisor with `asm!` and system-register access.
pub mod aarch64;
