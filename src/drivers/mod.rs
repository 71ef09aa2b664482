//! Drivers for physical devices. They know nothing about VMs.

pub mod pl011;
