//! Memory management: address types, the physical frame allocator, the
//! translation-table builder, and the hypervisor heap.

pub mod addr;
pub mod footprint;
pub mod frame;
pub mod pagetable;
pub mod scrub;

#[cfg(target_os = "none")]
pub mod heap;

#[cfg_attr(not(target_os = "none"), allow(unused_imports))]
pub use addr::{PhysAddr, PhysRange};
#[cfg_attr(not(target_os = "none"), allow(unused_imports))]
pub use frame::FrameAllocator;

#[cfg(target_os = "none")]
pub mod phys;
