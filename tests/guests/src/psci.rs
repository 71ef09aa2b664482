//! PSCI 1.1 calls over `hvc` (Arm DEN0022). Each returns the raw x0 as a
//! signed code: 0 SUCCESS, -1 NOT_SUPPORTED, -2 INVALID_PARAMETERS,
//! -3 DENIED, -4 ALREADY_ON, -9 INVALID_ADDRESS, ...

use crate::smccc::hvc;

/// PSCI_VERSION (0x8400_0000).
pub const VERSION: u32 = 0x8400_0000;
/// CPU_SUSPEND, SMC64 (0xC400_0001).
pub const CPU_SUSPEND: u32 = 0xC400_0001;
/// CPU_OFF (0x8400_0002).
pub const CPU_OFF: u32 = 0x8400_0002;
/// CPU_ON, SMC64 (0xC400_0003).
pub const CPU_ON: u32 = 0xC400_0003;
/// AFFINITY_INFO, SMC64 (0xC400_0004).
pub const AFFINITY_INFO: u32 = 0xC400_0004;
/// MIGRATE_INFO_TYPE (0x8400_0006).
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
/// SYSTEM_OFF (0x8400_0008).
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET (0x8400_0009).
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES (0x8400_000A).
pub const FEATURES: u32 = 0x8400_000A;

/// NOT_SUPPORTED.
pub const NOT_SUPPORTED: i64 = -1;
/// INVALID_PARAMETERS.
pub const INVALID_PARAMETERS: i64 = -2;
/// ALREADY_ON.
pub const ALREADY_ON: i64 = -4;
/// INVALID_ADDRESS.
pub const INVALID_ADDRESS: i64 = -9;

fn call(fid: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    hvc(fid, a1, a2, a3)[0] as i64
}

/// PSCI_VERSION: major << 16 | minor (0x10001 for 1.1).
pub fn version() -> i64 {
    call(VERSION, 0, 0, 0)
}

/// CPU_SUSPEND(power_state, entry, context_id).
pub fn cpu_suspend(power_state: u64, entry: u64, context_id: u64) -> i64 {
    call(CPU_SUSPEND, power_state, entry, context_id)
}

/// CPU_OFF: does not return on success.
pub fn cpu_off() -> i64 {
    call(CPU_OFF, 0, 0, 0)
}

/// CPU_ON(target MPIDR, entry physical address, context id for x0).
pub fn cpu_on(target: u64, entry: u64, context_id: u64) -> i64 {
    call(CPU_ON, target, entry, context_id)
}

/// AFFINITY_INFO(target, lowest level): 0 ON, 1 OFF, 2 ON_PENDING.
pub fn affinity_info(target: u64, lowest_level: u64) -> i64 {
    call(AFFINITY_INFO, target, lowest_level, 0)
}

/// MIGRATE_INFO_TYPE (2: no migration-capable Trusted OS).
pub fn migrate_info_type() -> i64 {
    call(MIGRATE_INFO_TYPE, 0, 0, 0)
}

/// SYSTEM_OFF: does not return on success.
pub fn system_off() -> i64 {
    call(SYSTEM_OFF, 0, 0, 0)
}

/// SYSTEM_RESET: does not return on success.
pub fn system_reset() -> i64 {
    call(SYSTEM_RESET, 0, 0, 0)
}

/// PSCI_FEATURES(function id): 0 (or feature flags) if implemented, else -1.
pub fn features(fid: u32) -> i64 {
    call(FEATURES, u64::from(fid), 0, 0)
}
