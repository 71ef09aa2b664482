//! The hypervisor heap: a buddy allocator over a region of the image's BSS, so
//! it exists before the frame allocator does. Grown from free RAM later if needed.

use buddy_system_allocator::LockedHeap;

const HEAP_SIZE: usize = 4 << 20;

#[repr(C, align(4096))]
struct HeapSpace([u8; HEAP_SIZE]);

/// Not zeroed at entry (`.noinit`): the allocator never reads memory it has
/// not written.
#[link_section = ".noinit.heap"]
static mut HEAP_SPACE: core::mem::MaybeUninit<HeapSpace> = core::mem::MaybeUninit::uninit();

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Hands the BSS heap region to the allocator. Call once, with the MMU on.
pub fn init() {
    // SAFETY: called once on the boot CPU before any other CPU runs or any
    // allocation happens; HEAP_SPACE is used by nothing else.
    unsafe {
        let start = core::ptr::addr_of_mut!(HEAP_SPACE) as usize;
        HEAP.lock().init(start, HEAP_SIZE);
    }
}

/// Bytes in use and bytes managed.
pub fn usage() -> (usize, usize) {
    let h = HEAP.lock();
    (h.stats_alloc_actual(), h.stats_total_bytes())
}
