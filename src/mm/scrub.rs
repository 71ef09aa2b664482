//! What a VM's RAM scrub must cover and when it happens: everything but the
//! bytes its images are about to overwrite, either before the VM first runs
//! (eager) or, 2 MiB block by block, at the first touch of a block (lazy).
//! Pure logic over atomics, host-tested; the hardware side (zero + clean to
//! PoC, the stage-2 descriptor store, TLB maintenance) comes in through
//! [`BlockOps`].
//!
//! A lazy block starts unmapped in stage 2. Whoever needs it first (the
//! VM's own vCPU at a stage-2 translation fault, or the hypervisor about to
//! read or write it for a device) claims it (FRESH -> BUSY, one winner),
//! scrubs it, maps it, and only then marks it READY; everybody else waits
//! for READY. So a block is scrubbed exactly once per run and is never
//! mapped, read or written by anyone before its scrub is complete.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// The lazy granule: one level-2 stage-2 block.
pub const BLOCK: u64 = 2 << 20;

/// Not scrubbed since the VM's last start; unmapped in stage 2.
const FRESH: u8 = 0;
/// Claimed: being scrubbed and mapped, or being unmapped by a reset.
const BUSY: u8 = 1;
/// Scrubbed and mapped.
const READY: u8 = 2;
/// Scrubbed and loaded with the VM's images before each start; always mapped.
const EAGER: u8 = 3;

/// The hardware half of a lazy scrub.
pub trait BlockOps {
    /// Zeroes `[pa, pa + len)` and cleans it to PoC.
    fn scrub(&self, pa: u64, len: u64);
    /// Stores `desc` into the stage-2 slot at physical `slot` and makes it
    /// visible to the table walkers (invalid -> valid: no TLB maintenance).
    fn map(&self, slot: u64, desc: u64);
    /// Stores an invalid descriptor at `slot` (TLB maintenance follows in
    /// [`BlockOps::flush`], once for all blocks).
    fn unmap(&self, slot: u64);
    /// Invalidates the VM's stage-2 TLB entries on every CPU.
    fn flush(&self);
}

/// One RAM region of a VM and its blocks.
struct Region {
    ipa: u64,
    pa: u64,
    size: u64,
    /// One per block when the region is lazy; empty when it is eager.
    state: Vec<AtomicU8>,
    /// Each block's stage-2 slot and its valid descriptor ((0, 0) for an
    /// eager block), set once by [`LazyRam::set_slots`] while the VM is built.
    slots: spin::Once<Vec<(u64, u64)>>,
}

/// Whether an address is in a block that is now usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// Not the VM's RAM.
    NotRam,
    /// In an eager region or block: always mapped, nothing to do.
    Eager,
    /// A lazy block, scrubbed and mapped now (or already).
    Ready,
}

/// A VM's RAM and which of it is scrubbed.
pub struct LazyRam {
    regions: Vec<Region>,
    /// The first start's eager scrub and image load: 0 to do, 1 under way,
    /// 2 done.
    first: AtomicU8,
    /// Every lazy block READY since the last start ([`Self::scrub_all`]).
    all_ready: AtomicBool,
}

impl LazyRam {
    /// `ram` as (ipa, pa, size). With `lazy` false (a VM whose devices do
    /// DMA) every byte is eager; otherwise each region whose guest and
    /// physical base and size are 2 MiB aligned is lazy, block by block.
    pub fn new(ram: &[(u64, u64, u64)], lazy: bool) -> Self {
        let regions = ram
            .iter()
            .map(|&(ipa, pa, size)| {
                let aligned = ipa % BLOCK == 0 && pa % BLOCK == 0 && size % BLOCK == 0;
                let n = if lazy && aligned { size / BLOCK } else { 0 };
                Region {
                    ipa,
                    pa,
                    size,
                    state: (0..n).map(|_| AtomicU8::new(FRESH)).collect(),
                    slots: spin::Once::new(),
                }
            })
            .collect();
        Self {
            regions,
            first: AtomicU8::new(0),
            all_ready: AtomicBool::new(false),
        }
    }

    /// True for the one caller that is to do the first start's eager scrub
    /// and image load (then [`Self::end_first_start`]); any other caller
    /// returns false once that is done.
    pub fn begin_first_start(&self) -> bool {
        loop {
            match self
                .first
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(2) => return false,
                Err(_) => core::hint::spin_loop(),
            }
        }
    }

    /// The first start's eager part is done.
    pub fn end_first_start(&self) {
        self.first.store(2, Ordering::Release);
    }

    /// Marks the blocks that the guest-physical `covered` ranges (its
    /// images) overlap eager: they are scrubbed and loaded before each start.
    pub fn mark_covered(&self, covered: &[(u64, u64)]) {
        for r in &self.regions {
            for (i, st) in r.state.iter().enumerate() {
                let b = r.ipa + i as u64 * BLOCK;
                if covered
                    .iter()
                    .any(|&(s, l)| l != 0 && s < b + BLOCK && s.saturating_add(l) > b)
                {
                    st.store(EAGER, Ordering::Relaxed);
                }
            }
        }
    }

    /// The lazy blocks of region `index` as (ipa, size) runs: what the
    /// stage-2 builder leaves unmapped (and fills [`Self::set_slots`] for).
    pub fn lazy_blocks(&self, index: usize) -> Vec<(u64, u64)> {
        self.blocks_where(index, |s| s != EAGER)
            .into_iter()
            .map(|(i, _pa)| (i, BLOCK))
            .collect()
    }

    /// The eager parts of every region as physical (pa, size), merged:
    /// what is scrubbed (but for the images) before each start.
    pub fn eager_ranges(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (index, r) in self.regions.iter().enumerate() {
            let parts: Vec<(u64, u64)> = if r.state.is_empty() {
                alloc::vec![(r.pa, r.size)]
            } else {
                self.blocks_where(index, |s| s == EAGER)
                    .into_iter()
                    .map(|(_, pa)| (pa, BLOCK))
                    .collect()
            };
            for (pa, len) in parts {
                match out.last_mut() {
                    Some(last) if last.0 + last.1 == pa => last.1 += len,
                    _ => out.push((pa, len)),
                }
            }
        }
        out
    }

    /// Bytes of RAM that are lazy (scrubbed at first touch).
    pub fn lazy_bytes(&self) -> u64 {
        (0..self.regions.len())
            .map(|i| self.lazy_blocks(i).len() as u64 * BLOCK)
            .sum()
    }

    /// (ipa, pa) of the blocks of region `index` whose state passes `keep`.
    fn blocks_where(&self, index: usize, keep: impl Fn(u8) -> bool) -> Vec<(u64, u64)> {
        let Some(r) = self.regions.get(index) else {
            return Vec::new();
        };
        r.state
            .iter()
            .enumerate()
            .filter(|(_, s)| keep(s.load(Ordering::Relaxed)))
            .map(|(i, _)| (r.ipa + i as u64 * BLOCK, r.pa + i as u64 * BLOCK))
            .collect()
    }

    /// Records the stage-2 slot and valid descriptor of each lazy block of
    /// region `index`, given as (ipa, slot, descriptor).
    pub fn set_slots(&self, index: usize, slots: &[(u64, u64, u64)]) {
        if let Some(r) = self.regions.get(index) {
            r.slots.call_once(|| {
                let mut all = alloc::vec![(0, 0); r.state.len()];
                for &(ipa, slot, desc) in slots {
                    if let Some(e) = ipa
                        .checked_sub(r.ipa)
                        .and_then(|o| all.get_mut((o / BLOCK) as usize))
                    {
                        *e = (slot, desc);
                    }
                }
                all
            });
        }
    }

    /// The region and block index of `ipa`.
    fn find(&self, ipa: u64) -> Option<(&Region, usize)> {
        let r = self
            .regions
            .iter()
            .find(|r| ipa >= r.ipa && ipa - r.ipa < r.size)?;
        Some((r, ((ipa - r.ipa) / BLOCK) as usize))
    }

    /// Whether every block `[ipa, ipa + len)` overlaps is usable as it is
    /// (eager, or lazy and already scrubbed): touching it costs no scrub.
    /// Changes nothing. Bytes outside the VM's RAM count as not usable.
    pub fn is_ready(&self, ipa: u64, len: u64) -> bool {
        if len == 0 {
            return true;
        }
        let last = ipa.saturating_add(len - 1);
        let mut at = ipa & !(BLOCK - 1);
        // One step per 2 MiB block: a range inside the VM's RAM.
        while at <= last {
            let Some((r, i)) = self.find(at) else {
                return false;
            };
            if let Some(st) = r.state.get(i) {
                if !matches!(st.load(Ordering::Acquire), EAGER | READY) {
                    return false;
                }
            }
            let Some(next) = at.checked_add(BLOCK) else {
                return true;
            };
            at = next;
        }
        true
    }

    /// Makes the block holding `ipa` usable: scrubbed and mapped, exactly
    /// once, whoever comes first; returns once it is.
    pub fn touch(&self, ipa: u64, ops: &impl BlockOps) -> Touch {
        let Some((r, i)) = self.find(ipa) else {
            return Touch::NotRam;
        };
        let Some(st) = r.state.get(i) else {
            return Touch::Eager;
        };
        loop {
            match st.load(Ordering::Acquire) {
                EAGER => return Touch::Eager,
                READY => return Touch::Ready,
                FRESH => {
                    if st
                        .compare_exchange(FRESH, BUSY, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        let pa = r.pa + i as u64 * BLOCK;
                        ops.scrub(pa, BLOCK);
                        if let Some(&(slot, desc)) = self.slot_of(r, i) {
                            ops.map(slot, desc);
                        }
                        // Release: whoever sees READY sees the zeros and
                        // the descriptor.
                        st.store(READY, Ordering::Release);
                        return Touch::Ready;
                    }
                }
                // Another CPU scrubs it (about 2 MiB of DC ZVA) or a reset
                // unmaps it: both finish without waiting for anyone.
                _ => core::hint::spin_loop(),
            }
        }
    }

    /// [`Self::touch`] for every block `[ipa, ipa + len)` overlaps (the
    /// hypervisor about to read or write there for a device).
    pub fn touch_range(&self, ipa: u64, len: u64, ops: &impl BlockOps) {
        if len == 0 {
            return;
        }
        let last = ipa.saturating_add(len - 1);
        let mut at = ipa & !(BLOCK - 1);
        while at <= last {
            self.touch(at.max(ipa), ops);
            match at.checked_add(BLOCK) {
                Some(n) => at = n,
                None => break,
            }
        }
    }

    /// Makes every lazy block usable (scrubbed and mapped), each exactly once
    /// whoever else touches it meanwhile; returns once all are. For a VM whose
    /// bus-mastering devices are only reachable through trapped accesses: run
    /// before the first such access reaches a device, the device never finds
    /// a block unscrubbed, and the VM is as good as eager until its next reset.
    #[inline(always)]
    pub fn scrub_all(&self, ops: &impl BlockOps) {
        if !self.all_ready.load(Ordering::Acquire) {
            self.scrub_all_now(ops);
        }
    }

    /// [`Self::scrub_all`]'s once-per-run part, out of the device-access path.
    #[cold]
    #[inline(never)]
    fn scrub_all_now(&self, ops: &impl BlockOps) {
        for r in &self.regions {
            for i in 0..r.state.len() {
                self.touch(r.ipa + i as u64 * BLOCK, ops);
            }
        }
        // Release: whoever sees it sees every block READY.
        self.all_ready.store(true, Ordering::Release);
    }

    /// The slot and descriptor of lazy block `i` of `r`.
    fn slot_of<'a>(&self, r: &'a Region, i: usize) -> Option<&'a (u64, u64)> {
        r.slots.get()?.get(i).filter(|s| s.0 != 0)
    }

    /// A VM restart: every lazy block goes back to FRESH and unmapped, so
    /// nothing of the previous run is readable until it is scrubbed again.
    /// Each block is claimed first (waiting out a scrub in progress), so no
    /// one maps it between its unmapping and the TLB flush.
    pub fn reset(&self, ops: &impl BlockOps) {
        self.all_ready.store(false, Ordering::Release);
        let mut any = false;
        for r in &self.regions {
            for (i, st) in r.state.iter().enumerate() {
                loop {
                    match st.load(Ordering::Acquire) {
                        EAGER => break,
                        BUSY => core::hint::spin_loop(),
                        s => {
                            if st
                                .compare_exchange(s, BUSY, Ordering::Acquire, Ordering::Relaxed)
                                .is_ok()
                            {
                                if s == READY {
                                    if let Some(&(slot, _)) = self.slot_of(r, i) {
                                        ops.unmap(slot);
                                        any = true;
                                    }
                                }
                                break;
                            }
                        }
                    }
                }
            }
        }
        if any {
            ops.flush();
        }
        for r in &self.regions {
            for st in &r.state {
                let _ = st.compare_exchange(BUSY, FRESH, Ordering::Release, Ordering::Relaxed);
            }
        }
    }
}

/// The parts of `[base, base + size)` that none of the `covered` (start,
/// length) ranges overlap, in order.
pub fn uncovered(base: u64, size: u64, covered: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let end = base + size;
    let mut cuts: Vec<(u64, u64)> = covered
        .iter()
        .map(|&(s, l)| (s.max(base), s.saturating_add(l).min(end)))
        .filter(|&(s, e)| s < e)
        .collect();
    // A few images: an insertion sort (no sort routine in the image).
    for i in 1..cuts.len() {
        let mut j = i;
        while j > 0 && cuts.get(j - 1) > cuts.get(j) {
            cuts.swap(j - 1, j);
            j -= 1;
        }
    }
    let mut out = Vec::new();
    let mut at = base;
    for (s, e) in cuts {
        if s > at {
            out.push((at, s - at));
        }
        at = at.max(e);
    }
    if at < end {
        out.push((at, end - at));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what a lazy scrub asks of the hardware.
    #[derive(Default)]
    struct Log {
        events: Mutex<Vec<(&'static str, u64)>>,
        slow: bool,
    }

    impl BlockOps for Log {
        fn scrub(&self, pa: u64, _len: u64) {
            if self.slow {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            self.events.lock().unwrap().push(("scrub", pa));
        }
        fn map(&self, slot: u64, _desc: u64) {
            self.events.lock().unwrap().push(("map", slot));
        }
        fn unmap(&self, slot: u64) {
            self.events.lock().unwrap().push(("unmap", slot));
        }
        fn flush(&self) {
            self.events.lock().unwrap().push(("flush", 0));
        }
    }

    impl Log {
        fn take(&self) -> Vec<(&'static str, u64)> {
            std::mem::take(&mut *self.events.lock().unwrap())
        }
    }

    const IPA: u64 = 0x4000_0000;
    const PA: u64 = 0x8000_0000;

    /// 16 MiB at IPA -> PA, lazy, with slots at 0x1000 + 8 * block.
    fn ram() -> LazyRam {
        let l = LazyRam::new(&[(IPA, PA, 16 << 20)], true);
        let slots: Vec<(u64, u64, u64)> = l
            .lazy_blocks(0)
            .iter()
            .map(|&(ipa, _)| (ipa, 0x1000 + (ipa - IPA) / BLOCK * 8, 1))
            .collect();
        l.set_slots(0, &slots);
        l
    }

    #[test]
    fn a_block_is_scrubbed_once_and_mapped_after_its_scrub() {
        let l = ram();
        let ops = Log::default();
        assert_eq!(l.touch(IPA + (4 << 20) + 8, &ops), Touch::Ready);
        assert_eq!(ops.take(), [("scrub", PA + (4 << 20)), ("map", 0x1000 + 16)]);
        // Again, anywhere in the block: nothing to do.
        assert_eq!(l.touch(IPA + (6 << 20) - 1, &ops), Touch::Ready);
        assert!(ops.take().is_empty());
        assert_eq!(l.touch(IPA - 1, &ops), Touch::NotRam);
        assert_eq!(l.touch(IPA + (16 << 20), &ops), Touch::NotRam);
    }

    #[test]
    fn scrub_all_leaves_no_block_fresh_and_is_rearmed_by_a_reset() {
        let l = ram();
        l.mark_covered(&[(IPA, 0x1000)]);
        let ops = Log::default();
        l.touch(IPA + (4 << 20), &ops);
        ops.take();
        l.scrub_all(&ops);
        // The six blocks still fresh (not the image's, not the touched one).
        assert_eq!(ops.take().iter().filter(|e| e.0 == "scrub").count(), 6);
        assert!(l.is_ready(IPA, 16 << 20));
        l.scrub_all(&ops);
        assert!(ops.take().is_empty(), "done once per run");
        l.reset(&ops);
        ops.take();
        assert!(!l.is_ready(IPA + BLOCK, 8));
        l.scrub_all(&ops);
        assert_eq!(ops.take().iter().filter(|e| e.0 == "scrub").count(), 7);
        assert!(l.is_ready(IPA, 16 << 20));
    }

    #[test]
    fn scrub_all_racing_first_touches_scrubs_each_block_once_and_waits_for_all() {
        let l = std::sync::Arc::new(ram());
        let ops = std::sync::Arc::new(Log {
            slow: true,
            ..Log::default()
        });
        let (l2, ops2) = (l.clone(), ops.clone());
        let toucher = std::thread::spawn(move || {
            for b in (0..8).rev() {
                l2.touch(IPA + b * BLOCK, &*ops2);
            }
        });
        l.scrub_all(&*ops);
        // Whoever scrubbed a block, scrub_all returned only once all were.
        assert!(l.is_ready(IPA, 16 << 20));
        toucher.join().unwrap();
        let ev = ops.take();
        let mut scrubbed: Vec<u64> = ev.iter().filter(|e| e.0 == "scrub").map(|e| e.1).collect();
        scrubbed.sort();
        let all: Vec<u64> = (0..8).map(|b| PA + b * BLOCK).collect();
        assert_eq!(scrubbed, all);
    }

    #[test]
    fn readiness_is_read_without_scrubbing() {
        let l = ram();
        let ops = Log::default();
        assert!(!l.is_ready(IPA + 8, 16), "a fresh block is not ready");
        assert!(!l.is_ready(IPA + BLOCK - 8, 16));
        assert_eq!(l.touch(IPA, &ops), Touch::Ready);
        assert!(l.is_ready(IPA + 8, 16));
        assert!(
            !l.is_ready(IPA + BLOCK - 8, 16),
            "the range reaches a fresh block"
        );
        assert!(!l.is_ready(IPA - 8, 16), "partly outside the RAM");
        assert!(l.is_ready(IPA + 8, 0));
        assert_eq!(ops.take().len(), 2, "only the touch scrubbed (and mapped)");
        let eager = LazyRam::new(&[(IPA, PA, 16 << 20)], false);
        assert!(eager.is_ready(IPA, 16 << 20));
    }

    #[test]
    fn concurrent_first_touches_scrub_once_and_all_wait_for_it() {
        let l = ram();
        let ops = Log {
            slow: true,
            ..Default::default()
        };
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let (l, ops) = (&l, &ops);
                s.spawn(move || {
                    assert_eq!(l.touch(IPA + (2 << 20) + t * 4096, ops), Touch::Ready);
                    // Nobody returns before the block is scrubbed and mapped.
                    let ev = ops.events.lock().unwrap().clone();
                    assert_eq!(ev, [("scrub", PA + (2 << 20)), ("map", 0x1008)], "thread {t}");
                });
            }
        });
        assert_eq!(ops.take().len(), 2);
    }

    #[test]
    fn a_range_touches_every_block_it_overlaps() {
        let l = LazyRam::new(
            &[(IPA, PA, 4 << 20), (IPA + (4 << 20), 0x9000_0000, 4 << 20)],
            true,
        );
        let ops = Log::default();
        // From the last byte of block 1 into block 0 of the second region.
        l.touch_range(IPA + (4 << 20) - 1, 2, &ops);
        assert_eq!(ops.take(), [("scrub", PA + (2 << 20)), ("scrub", 0x9000_0000)]);
        l.touch_range(IPA, 0, &ops);
        assert!(ops.take().is_empty(), "an empty range touches nothing");
        l.touch_range(u64::MAX - 4, 16, &ops);
        assert!(ops.take().is_empty());
    }

    #[test]
    fn blocks_images_overlap_are_eager_and_the_rest_lazy() {
        let l = ram();
        let l2 = LazyRam::new(&[(IPA, PA, 16 << 20)], true);
        // A kernel over blocks 0-1 (ending 1 byte into block 1) and a DTB in block 7.
        l2.mark_covered(&[
            (IPA + 0x8_0000, (2 << 20) - 0x8_0000 + 1),
            (IPA + (14 << 20), 0x1000),
            (IPA, 0),
        ]);
        assert_eq!(l2.eager_ranges(), [(PA, 4 << 20), (PA + (14 << 20), 2 << 20)]);
        let lazy: Vec<u64> = l2.lazy_blocks(0).iter().map(|b| (b.0 - IPA) >> 21).collect();
        assert_eq!(lazy, [2, 3, 4, 5, 6]);
        assert_eq!(l2.lazy_bytes(), 10 << 20);
        let ops = Log::default();
        assert_eq!(l2.touch(IPA + 5, &ops), Touch::Eager);
        assert!(ops.take().is_empty(), "an eager block is never scrubbed on touch");
        assert_eq!(l.lazy_bytes(), 16 << 20);
        assert!(l.eager_ranges().is_empty());
    }

    #[test]
    fn dma_vms_and_unaligned_regions_are_eager() {
        let dma = LazyRam::new(&[(IPA, PA, 16 << 20)], false);
        assert_eq!(dma.eager_ranges(), [(PA, 16 << 20)]);
        assert_eq!(dma.lazy_bytes(), 0);
        let ops = Log::default();
        assert_eq!(dma.touch(IPA, &ops), Touch::Eager);
        let odd = LazyRam::new(
            &[
                (IPA, PA + 0x1000, 4 << 20),
                (IPA + (4 << 20), PA + (8 << 20), 3 << 20),
            ],
            true,
        );
        assert_eq!(
            odd.eager_ranges(),
            [(PA + 0x1000, 4 << 20), (PA + (8 << 20), 3 << 20)]
        );
        assert!(ops.take().is_empty());
    }

    #[test]
    fn a_reset_unmaps_touched_blocks_and_they_are_scrubbed_again() {
        let l = ram();
        let ops = Log::default();
        l.touch(IPA, &ops);
        l.touch(IPA + (8 << 20), &ops);
        ops.take();
        l.reset(&ops);
        assert_eq!(ops.take(), [("unmap", 0x1000), ("unmap", 0x1020), ("flush", 0)]);
        l.touch(IPA + (8 << 20), &ops);
        assert_eq!(ops.take(), [("scrub", PA + (8 << 20)), ("map", 0x1020)]);
        // A reset with nothing touched needs no TLB flush.
        let fresh = ram();
        fresh.reset(&ops);
        assert!(ops.take().is_empty());
    }

    #[test]
    fn a_reset_waits_out_a_scrub_in_progress() {
        let l = ram();
        let ops = Log {
            slow: true,
            ..Default::default()
        };
        std::thread::scope(|s| {
            s.spawn(|| l.touch(IPA, &ops));
            std::thread::sleep(std::time::Duration::from_millis(5));
            l.reset(&ops);
        });
        let ev = ops.take();
        // Either the reset came first (nothing to unmap) or it unmapped
        // the block after its map: never a map after the unmap.
        let unmap = ev.iter().position(|e| e.0 == "unmap");
        let map = ev.iter().position(|e| e.0 == "map");
        if let (Some(u), Some(m)) = (unmap, map) {
            assert!(m < u, "{ev:?}");
        }
        assert_eq!(l.touch(IPA, &ops), Touch::Ready);
    }

    #[test]
    fn gaps_around_images_in_any_order_and_overlapping() {
        let covered = [(0x5000, 0x1000), (0x1000, 0x800), (0x1400, 0x800)];
        assert_eq!(
            uncovered(0x0, 0x8000, &covered),
            [(0x0, 0x1000), (0x1c00, 0x3400), (0x6000, 0x2000)]
        );
    }

    #[test]
    fn images_outside_or_across_the_edges_are_clipped() {
        assert_eq!(
            uncovered(0x1000, 0x1000, &[(0x0, 0x1100), (0x1f00, 0x1000)]),
            [(0x1100, 0xe00)]
        );
        assert_eq!(
            uncovered(0x1000, 0x1000, &[(0x3000, 0x10), (0x0, 0)]),
            [(0x1000, 0x1000)]
        );
        assert!(uncovered(0x1000, 0x1000, &[(0x1000, 0x1000)]).is_empty());
        assert_eq!(
            uncovered(0x1000, 0x1000, &[(u64::MAX - 1, 10)]),
            [(0x1000, 0x1000)]
        );
    }
}
