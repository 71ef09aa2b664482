//! Memory management: address types, the physical frame allocator, the
//! translation-table builder, and the hypervisor heap.

pub mod addr;
pub mod frame;
pub mod pagetable;

#[cfg(target_os = "none")]
pub mod heap;

pub use addr::{PhysAddr, PhysRange};
pub use frame::FrameAllocator;
#[cfg(target_os = "none")]
pub mod phys;
