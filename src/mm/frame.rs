//! Physical frame allocator over the board's free RAM.
//!
//! Free memory is a sorted list of disjoint ranges; allocation is first fit
//! with alignment, and freed ranges merge with their neighbours. It hands out
//! translation tables, VM memory and buffers; never the image, the DTB or a
//! reserved region, because those are cut out before any allocation.

use super::addr::{PhysAddr, PhysRange, PAGE_SIZE};
use alloc::vec::Vec;
use core::fmt;

/// Why an allocation failed. Exhaustion is an error, never a panic.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FrameError {
    /// No free range large enough with the requested alignment.
    OutOfMemory { size: u64 },
    /// A fixed range that is not entirely free.
    NotFree { base: u64, size: u64 },
    /// Zero size, or not page aligned.
    BadRequest,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::OutOfMemory { size } => {
                write!(f, "out of memory allocating {size:#x} bytes")
            }
            FrameError::NotFree { base, size } => {
                write!(f, "range {:#x}..{:#x} is not free RAM", base, base + size)
            }
            FrameError::BadRequest => write!(f, "size or alignment not page aligned"),
        }
    }
}

/// The free physical memory of the board.
#[derive(Default, Debug)]
pub struct FrameAllocator {
    free: Vec<PhysRange>,
}

impl FrameAllocator {
    /// An allocator with nothing to give (before RAM is known).
    pub const fn new_empty() -> Self {
        Self { free: Vec::new() }
    }

    /// Free memory = `ram` minus every range in `exclude` (image, DTB,
    /// reserved memory), trimmed to whole pages.
    pub fn new(ram: &[PhysRange], exclude: &[PhysRange]) -> Self {
        let mut free: Vec<PhysRange> = Vec::new();
        for r in ram {
            let mut pieces = alloc::vec![*r];
            for x in exclude {
                pieces = pieces.into_iter().flat_map(|p| subtract(p, x)).collect();
            }
            free.extend(pieces);
        }
        let mut free: Vec<PhysRange> = free
            .into_iter()
            .filter_map(|r| {
                let base = r.base.align_up(PAGE_SIZE).0;
                let end = r.end() & !(PAGE_SIZE - 1);
                (end > base).then(|| PhysRange::new(base, end - base))
            })
            .collect();
        free.sort_by_key(|r| r.base);
        let mut a = Self { free: Vec::new() };
        for r in free {
            a.insert(r);
        }
        a
    }

    /// Total free bytes.
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|r| r.size).sum()
    }

    /// The free ranges, sorted.
    pub fn free_ranges(&self) -> &[PhysRange] {
        &self.free
    }

    /// Allocates `size` bytes aligned to `align` (both multiples of 4 KiB,
    /// `align` a power of two), first fit from the bottom.
    pub fn alloc(&mut self, size: u64, align: u64) -> Result<PhysAddr, FrameError> {
        let align = align.max(PAGE_SIZE);
        if size == 0 || !size.is_multiple_of(PAGE_SIZE) || !align.is_power_of_two() {
            return Err(FrameError::BadRequest);
        }
        let found = self.free.iter().find_map(|r| {
            let base = r.base.align_up(align).0;
            (base >= r.base.0 && base.checked_add(size)? <= r.end()).then_some(base)
        });
        let base = found.ok_or(FrameError::OutOfMemory { size })?;
        self.take(PhysRange::new(base, size))?;
        Ok(PhysAddr(base))
    }

    /// Allocates exactly `[base, base + size)`, which must be entirely free.
    pub fn alloc_at(&mut self, base: PhysAddr, size: u64) -> Result<(), FrameError> {
        if size == 0 || !size.is_multiple_of(PAGE_SIZE) || !base.is_aligned(PAGE_SIZE) {
            return Err(FrameError::BadRequest);
        }
        self.take(PhysRange::new(base.0, size))
    }

    /// Returns a range to the free list. Freeing memory that is already free
    /// is ignored for the overlapping part (it cannot be handed out twice).
    pub fn free(&mut self, base: PhysAddr, size: u64) {
        let r = PhysRange::new(base.0, size);
        let mut pieces = alloc::vec![r];
        for f in &self.free {
            pieces = pieces.into_iter().flat_map(|p| subtract(p, f)).collect();
        }
        for p in pieces {
            self.insert(p);
        }
    }

    fn take(&mut self, want: PhysRange) -> Result<(), FrameError> {
        let i = self
            .free
            .iter()
            .position(|r| r.base.0 <= want.base.0 && want.end() <= r.end())
            .ok_or(FrameError::NotFree {
                base: want.base.0,
                size: want.size,
            })?;
        let r = self.free.remove(i);
        for (k, p) in subtract(r, &want).into_iter().enumerate() {
            self.free.insert(i + k, p);
        }
        Ok(())
    }

    /// Inserts a range disjoint from every free range, merging neighbours.
    fn insert(&mut self, r: PhysRange) {
        if r.size == 0 {
            return;
        }
        let i = self.free.partition_point(|f| f.base < r.base);
        self.free.insert(i, r);
        if i + 1 < self.free.len() && self.free[i].end() == self.free[i + 1].base.0 {
            self.free[i].size += self.free[i + 1].size;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].end() == self.free[i].base.0 {
            self.free[i - 1].size += self.free[i].size;
            self.free.remove(i);
        }
    }
}

/// `a` minus `b`: zero, one or two ranges.
fn subtract(a: PhysRange, b: &PhysRange) -> Vec<PhysRange> {
    if !a.overlaps(b) {
        return alloc::vec![a];
    }
    let mut out = Vec::new();
    if a.base.0 < b.base.0 {
        out.push(PhysRange::new(a.base.0, b.base.0 - a.base.0));
    }
    if b.end() < a.end() {
        out.push(PhysRange::new(b.end(), a.end() - b.end()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: PhysRange = PhysRange::new(0x4000_0000, 0x4000_0000);

    fn disjoint_from(a: &FrameAllocator, x: &PhysRange) -> bool {
        a.free_ranges().iter().all(|r| !r.overlaps(x))
    }

    #[test]
    fn excludes_image_dtb_and_reserved() {
        let image = PhysRange::new(0x4000_0000, 0x23_4567);
        let dtb = PhysRange::new(0x4800_0123, 0x10_0000);
        let reserved = PhysRange::new(0x5000_0000, 0x100_0000);
        let a = FrameAllocator::new(&[RAM], &[image, dtb, reserved]);
        for x in [image, dtb, reserved] {
            assert!(disjoint_from(&a, &x), "{x} still free");
        }
        // Partial pages at the edges are not handed out.
        assert_eq!(a.free_ranges()[0].base.0, 0x4023_5000);
        assert_eq!(a.free_ranges()[0].end(), 0x4800_0000);
        assert_eq!(a.free_ranges()[1].base.0, 0x4810_1000);
        assert_eq!(a.free_ranges()[2].base.0, 0x5100_0000);
        let taken = 0x23_5000 + 0x10_1000 + 0x100_0000;
        assert_eq!(a.free_bytes(), RAM.size - taken);
    }

    #[test]
    fn allocations_never_overlap_exclusions_or_each_other() {
        let image = PhysRange::new(0x4000_0000, 0x20_0000);
        let mut a = FrameAllocator::new(&[RAM], &[image]);
        let mut got: Vec<PhysRange> = Vec::new();
        for i in 0..200u64 {
            let size = ((i % 7) + 1) * PAGE_SIZE;
            let align = PAGE_SIZE << (i % 4);
            let p = a.alloc(size, align).unwrap();
            assert!(p.is_aligned(align));
            let r = PhysRange::new(p.0, size);
            assert!(!r.overlaps(&image));
            assert!(got.iter().all(|g| !g.overlaps(&r)));
            got.push(r);
        }
    }

    #[test]
    fn exhaustion_returns_error() {
        let mut a = FrameAllocator::new(&[PhysRange::new(0x1000, 0x4000)], &[]);
        assert_eq!(a.alloc(0x4000, 0x1000), Ok(PhysAddr(0x1000)));
        assert_eq!(
            a.alloc(0x1000, 0x1000),
            Err(FrameError::OutOfMemory { size: 0x1000 })
        );
        assert_eq!(a.alloc(0x1001, 0x1000), Err(FrameError::BadRequest));
    }

    #[test]
    fn free_merges_and_double_free_is_harmless() {
        let mut a = FrameAllocator::new(&[PhysRange::new(0x10_0000, 0x10_0000)], &[]);
        let p = a.alloc(0x8000, 0x1000).unwrap();
        let q = a.alloc(0x8000, 0x1000).unwrap();
        a.free(p, 0x8000);
        a.free(q, 0x8000);
        a.free(q, 0x8000);
        assert_eq!(a.free_ranges(), &[PhysRange::new(0x10_0000, 0x10_0000)]);
    }

    #[test]
    fn alloc_at_needs_free_memory() {
        let mut a = FrameAllocator::new(&[RAM], &[PhysRange::new(0x4000_0000, 0x10_0000)]);
        assert_eq!(
            a.alloc_at(PhysAddr(0x4000_0000), 0x1000),
            Err(FrameError::NotFree {
                base: 0x4000_0000,
                size: 0x1000
            })
        );
        a.alloc_at(PhysAddr(0x4800_0000), 0x20_0000).unwrap();
        assert!(a.alloc_at(PhysAddr(0x4810_0000), 0x1000).is_err());
        assert_eq!(a.alloc(0x20_0000, 0x20_0000).unwrap(), PhysAddr(0x4020_0000));
    }
}
