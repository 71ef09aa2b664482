//! Memory management: address types, the physical frame allocator, the
//! translation-table builder, and the hypervisor heap.

pub mod addr;
pub mod frame;
pub mod pagetable;

#[cfg(target_os = "none")]
pub mod heap;

pub use addr::PhysRange;
pub use frame::FrameAllocator;
