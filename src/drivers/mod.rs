//! Drivers for physical devices. They know nothing about VMs.

#[cfg(target_os = "none")]
pub mod gic;
pub mod gic_prio;
// Also on the host for its tests, which run it on plain memory.
#[cfg(any(target_os = "none", test))]
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
pub mod gicv2;
#[cfg(target_os = "none")]
pub mod gicv3;
pub mod pci_ecam;
pub mod smmuv3;
pub mod uart;
