//! Emulated devices. Each implements [`MmioDevice`] and is tested on the host
//! by calling it; none touches a hardware register.

// No panic on a guest path (STYLE.md): every emulated register access is
// answered with a value. Test code may unwrap and index.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable
    )
)]

pub mod escape;
pub mod mux;
pub mod outbuf;
pub mod page_share;
#[cfg(test)]
mod proptests;
pub mod shmem;
pub mod subpage;
pub mod testdev;
pub mod vgic;
pub mod virtio;
pub mod vuart;

use core::fmt;

/// An access the device refuses: the guest gets a synchronous external abort.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BusError;

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bus error")
    }
}

/// A device behind a guest-physical MMIO window. `offset` is from the start
/// of the window, `width` is 1, 2, 4 or 8 bytes, `vcpu` the accessing vCPU.
pub trait MmioDevice: Send + Sync {
    /// Short name for logs.
    fn name(&self) -> &str;
    /// Bytes of guest-physical space the device decodes.
    fn size(&self) -> u64;
    fn read(&self, offset: u64, width: u8, vcpu: usize) -> Result<u64, BusError>;
    fn write(&self, offset: u64, width: u8, value: u64, vcpu: usize) -> Result<(), BusError>;
    /// Back to the state after power-on (VM reset). Shared state (the vGIC)
    /// is reset by its owner, not by each of its frames.
    fn reset(&self) {}
    /// The VM stopped for good (its vCPUs never run again): let go of what
    /// other VMs wait on. A link device resets, so its peers see it gone
    /// (their packets refused, their held ones answered) instead of a VM
    /// that looks live and never takes anything.
    fn stop(&self) {}
    /// For a device that counts the guest's accesses it forwards (the
    /// sub-page filter): (trapped, refused) since the last reset, which the
    /// VM reset logs at the rate of its restart line.
    fn trapped(&self) -> Option<(u64, u64)> {
        None
    }
}

/// A shared device is still one device (the console multiplexer keeps a
/// handle on each virtual UART besides the VM's MMIO bus).
impl<T: MmioDevice> MmioDevice for alloc::sync::Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read(&self, offset: u64, width: u8, vcpu: usize) -> Result<u64, BusError> {
        (**self).read(offset, width, vcpu)
    }
    fn write(&self, offset: u64, width: u8, value: u64, vcpu: usize) -> Result<(), BusError> {
        (**self).write(offset, width, value, vcpu)
    }
    fn reset(&self) {
        (**self).reset()
    }
    fn stop(&self) {
        (**self).stop()
    }
    fn trapped(&self) -> Option<(u64, u64)> {
        (**self).trapped()
    }
}
