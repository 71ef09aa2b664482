//! Drivers for physical devices. They know nothing about VMs.

#[cfg(target_os = "none")]
pub mod gic;
pub mod gic_prio;
#[cfg(target_os = "none")]
pub mod gicv2;
#[cfg(target_os = "none")]
pub mod gicv3;
pub mod smmuv3;
pub mod uart;
