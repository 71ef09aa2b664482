//! Access to physical memory through the hypervisor's identity map. The only
//! place that turns a physical address into a pointer.

use super::pagetable::{MapError, TableMemory};
use super::FrameAllocator;

/// Zeroes `[pa, pa + len)`.
///
/// # Safety
/// The range must be RAM the caller owns (allocated to it from the frame
/// allocator) and identity mapped.
pub unsafe fn zero(pa: u64, len: u64) {
    // SAFETY: the caller's contract (RAM is normal memory, as DC ZVA needs).
    unsafe { crate::arch::aarch64::mmu::zero(pa, len) };
}

/// Zeroes `[pa, pa + len)` and cleans it to PoC, for a guest that starts
/// with its MMU and caches off.
///
/// # Safety
/// As for [`zero`].
pub unsafe fn zero_to_poc(pa: u64, len: u64) {
    // SAFETY: the caller's contract.
    unsafe { crate::arch::aarch64::mmu::zero_to_poc(pa, len) };
}

/// Copies `src` to physical `pa`.
///
/// # Safety
/// As for [`zero`], for `[pa, pa + src.len())`.
pub unsafe fn copy_to(pa: u64, src: &[u8]) {
    // SAFETY: the caller's contract; `src` is hypervisor memory, which is
    // never handed to a VM, so the two cannot overlap.
    unsafe { crate::arch::aarch64::copy::copy_bytes(pa as *mut u8, src.as_ptr(), src.len()) };
}

/// Copies physical `[pa, pa + dst.len())` into `dst`.
///
/// # Safety
/// The range must be RAM, identity mapped; `dst` is hypervisor memory, which
/// is never handed to a VM, so the two cannot overlap.
pub unsafe fn copy_from(pa: u64, dst: &mut [u8]) {
    // SAFETY: the caller's contract.
    unsafe { crate::arch::aarch64::copy::copy_bytes(dst.as_mut_ptr(), pa as *const u8, dst.len()) };
}

/// Copies `src` to physical `pa` and cleans it to PoC, for a guest that
/// starts with its MMU and caches off.
///
/// # Safety
/// As for [`copy_to`].
pub unsafe fn copy_to_poc(pa: u64, src: &[u8]) {
    // SAFETY: the caller's contract; as in `copy_to`, no overlap.
    unsafe { crate::arch::aarch64::mmu::copy_to_poc(pa, src.as_ptr() as u64, src.len() as u64) };
}

/// Stores `desc` into the translation-table entry at physical `slot` and
/// makes it visible to the table walkers of every CPU (a single 64-bit
/// store, so a walker sees the old or the new entry, never a torn one).
///
/// # Safety
/// `slot` must be an 8-byte aligned entry of a live translation table the
/// caller may change: an invalid entry made valid needs no TLB maintenance;
/// a valid one made invalid needs a TLB invalidation before the memory it
/// mapped is reused.
pub unsafe fn set_table_entry(slot: u64, desc: u64) {
    // SAFETY: the caller's contract; table pages are identity mapped.
    unsafe { core::ptr::write_volatile(slot as *mut u64, desc) };
    crate::arch::aarch64::mmu::table_write_barrier();
}

/// Translation-table pages from the frame allocator (stage-2 tables).
pub struct FrameTables<'a>(pub &'a mut FrameAllocator);

/// Bytes of stage-2 table pages handed out so far (the footprint report).
static TABLE_BYTES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Bytes of translation tables taken from the frame allocator.
pub fn table_bytes() -> u64 {
    TABLE_BYTES.load(core::sync::atomic::Ordering::Relaxed)
}

impl TableMemory for FrameTables<'_> {
    fn alloc_tables(&mut self, pages: usize) -> Result<u64, MapError> {
        let size = pages as u64 * 4096;
        let pa = self.0.alloc(size, size).map_err(|_| MapError::NoMemory)?.0;
        TABLE_BYTES.fetch_add(size, core::sync::atomic::Ordering::Relaxed);
        // SAFETY: freshly allocated RAM, owned by these tables from now on.
        unsafe { zero(pa, size) };
        Ok(pa)
    }

    fn table(&mut self, pa: u64) -> &mut [u64; 512] {
        // SAFETY: `pa` came from `alloc_tables`: an identity-mapped table
        // page owned by the table being edited, which the caller holds.
        unsafe { &mut *(pa as *mut [u64; 512]) }
    }
}
