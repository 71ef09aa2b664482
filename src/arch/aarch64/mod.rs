//! AArch64 at EL2: entry, vectors, the EL2 stage-1 MMU, firmware calls and CPU
//! registers. Submodules that touch hardware are only built for the target;
//! the data layouts and decoders compile on the host so they can be tested.

pub mod esr;
#[cfg(test)]
mod esr_proptests;
pub mod extable;
pub mod frame;
pub mod pmu;
pub mod zero_plan;

#[cfg(target_os = "none")]
pub mod copy;
#[cfg(target_os = "none")]
pub mod cpu;
#[cfg(target_os = "none")]
pub mod devio;
#[cfg(target_os = "none")]
pub mod exception;
#[cfg(target_os = "none")]
pub mod firmware;
#[cfg(target_os = "none")]
pub mod gic;
#[cfg(target_os = "none")]
pub mod guest;
#[cfg(target_os = "none")]
pub mod hyptimer;
#[cfg(target_os = "none")]
pub mod mmu;
#[cfg(target_os = "none")]
pub mod spin_table;

/// Bytes of EL2 stack per physical CPU.
pub const STACK_SIZE: usize = 32 * 1024;
/// Most physical CPUs the hypervisor drives; more in the DTB are left off.
pub const MAX_CPUS: usize = 16;

/// SCTLR_EL2 with the MMU and caches off: only the RES1 bits (Arm ARM
/// D19.2.119, non-VHE layout) and SA (stack alignment check).
pub const SCTLR_EL2_RES1: u64 = 0x30C5_0830;

#[cfg(target_os = "none")]
core::arch::global_asm!(
    include_str!("entry.S"),
    stack_size = const STACK_SIZE,
    max_cpus = const MAX_CPUS,
    sctlr_el2_mmu_off = const (SCTLR_EL2_RES1 | (1 << 3)),
);

#[cfg(target_os = "none")]
core::arch::global_asm!(include_str!("vectors.S"));

#[cfg(target_os = "none")]
core::arch::global_asm!(include_str!("devio.S"));
