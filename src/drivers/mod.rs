//! Drivers for physical devices. They know nothing about VMs.

pub mod gic;
pub mod gicv2;
pub mod gicv3;
pub mod pl011;
