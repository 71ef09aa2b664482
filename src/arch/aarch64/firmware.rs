//! Calls from EL2 to the board firmware (PSCI over SMC or HVC, per the DTB).
//! Only the hypervisor calls the firmware; guests never reach it.

use crate::platform::Conduit;
use smccc::psci;
use smccc::{Hvc, Smc};

/// PSCI version as (major, minor).
pub fn psci_version(conduit: Conduit) -> Result<(u16, u16), psci::Error> {
    let v = match conduit {
        Conduit::Smc => psci::version::<Smc>(),
        Conduit::Hvc => psci::version::<Hvc>(),
    }?;
    Ok(((v.major), (v.minor)))
}

/// Starts the CPU `mpidr` at physical address `entry` with `context` in x0.
pub fn cpu_on(conduit: Conduit, mpidr: u64, entry: u64, context: u64) -> Result<(), psci::Error> {
    match conduit {
        Conduit::Smc => psci::cpu_on::<Smc>(mpidr, entry, context),
        Conduit::Hvc => psci::cpu_on::<Hvc>(mpidr, entry, context),
    }
}

/// Powers the whole system off (used when every VM has stopped).
pub fn system_off(conduit: Conduit) -> Result<(), psci::Error> {
    match conduit {
        Conduit::Smc => psci::system_off::<Smc>(),
        Conduit::Hvc => psci::system_off::<Hvc>(),
    }
}
