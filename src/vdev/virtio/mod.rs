//! Virtio devices the hypervisor emulates itself (no backend VM): the
//! virtio-mmio transport (version 2), the split virtqueue parser that treats
//! guest memory as hostile input, and the inter-VM network and vsock devices. They
//! touch guest RAM only through [`queue::GuestMemory`], never hardware.

pub mod mmio;
pub mod moderate;
pub mod net;
pub mod net_hdr;
#[cfg(test)]
mod net_hdr_proptests;
#[cfg(test)]
mod proptests;
pub mod queue;
#[cfg(test)]
mod tests;
pub mod vsock;
#[cfg(test)]
mod vsock_tests;
