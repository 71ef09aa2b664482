//! The hypervisor heap: a buddy allocator over a region of the image's BSS, so
//! it exists before the frame allocator does. Its peak use is in the footprint
//! report (`footprint.rs`).

use buddy_system_allocator::LockedHeap;

/// 768 KiB. Every config in the suite peaks at 3-40 KiB (the footprint
/// line says so; the SMMU/PCIe ones were at 993 KiB while the iommu-map was
/// read one requester ID at a time). A config's own guest DTB (up to
/// 2 MiB) is loaded from the package, never copied here; a generated one
/// holds the host nodes passed through (the largest board DTB in
/// tests/dtbs is 35 KiB, a few times that while it is written). A failed
/// allocation stops the hypervisor, hence the margin: 19x the peak seen.
pub const HEAP_SIZE: usize = 768 << 10;

#[repr(C, align(4096))]
struct HeapSpace([u8; HEAP_SIZE]);

/// Not zeroed at entry (`.noinit`): the allocator never reads memory it has
/// not written.
#[link_section = ".noinit.heap"]
static mut HEAP_SPACE: core::mem::MaybeUninit<HeapSpace> = core::mem::MaybeUninit::uninit();

#[global_allocator]
static HEAP: Tracked = Tracked(LockedHeap::empty());

/// The heap with its high-water mark (bytes the buddy allocator had handed
/// out at most, its power-of-two rounding included), for the footprint
/// report.
struct Tracked(LockedHeap<32>);

static PEAK: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

// SAFETY: forwards to the buddy allocator under its lock, which is a correct
// GlobalAlloc; the high-water mark is only bookkeeping.
unsafe impl core::alloc::GlobalAlloc for Tracked {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        let mut h = self.0.lock();
        let p = h.alloc(layout).map_or(core::ptr::null_mut(), |p| p.as_ptr());
        let used = h.stats_alloc_actual();
        drop(h);
        PEAK.fetch_max(used, core::sync::atomic::Ordering::Relaxed);
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
        if let Some(p) = core::ptr::NonNull::new(ptr) {
            self.0.lock().dealloc(p, layout);
        }
    }
}

/// Hands the BSS heap region to the allocator. Call once, with the MMU on.
pub fn init() {
    // SAFETY: called once on the boot CPU before any other CPU runs or any
    // allocation happens; HEAP_SPACE is used by nothing else.
    unsafe {
        let start = core::ptr::addr_of_mut!(HEAP_SPACE) as usize;
        HEAP.0.lock().init(start, HEAP_SIZE);
    }
}

/// Bytes in use and bytes managed.
pub fn usage() -> (usize, usize) {
    let h = HEAP.0.lock();
    (h.stats_alloc_actual(), h.stats_total_bytes())
}

/// The most bytes ever in use (allocator rounding included).
pub fn peak() -> usize {
    PEAK.load(core::sync::atomic::Ordering::Relaxed)
}
