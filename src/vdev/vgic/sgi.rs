//! Per-vCPU SGI mailboxes: the IPI path without a lock. A sender posts an
//! SGI with one atomic OR into the target vCPU's mailbox and kicks its CPU
//! if the bit was clear; the target's interrupt exit takes the bits one at a
//! time straight into a list register ([`super::Vgic::pop`]).
//!
//! The mailbox only carries SGIs that are deliverable right now: enabled,
//! with their group enabled in GICD_CTLR. That is mirrored here (`ready`,
//! and each SGI's priority and group for the list register) by the vGIC
//! under its lock whenever the guest changes it; an SGI that is not ready
//! takes the locked path and stays latched pending in the distributor
//! state, exactly as before. The mirror can only be late towards "not
//! ready" (the locked path then decides), never claim ready for an SGI the
//! guest disabled before it was sent.

use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};

/// Sources a mailbox has a lane for: GICv2 SGIs carry the sender's CPU
/// number (0-7); the mailbox has lanes for 0-3, a VM with more vCPUs posts
/// from the others through the locked queue. GICv3 SGIs carry none (lane 0).
pub const LANES: usize = 4;

/// One vCPU's mailbox.
pub struct SgiBox {
    /// Bit `16 * lane + sgi`: posted, not yet in a list register.
    pending: AtomicU64,
    /// Bit `sgi`: may be posted (enabled, group enabled).
    ready: AtomicU16,
    /// Per SGI: priority | group1 << 8, for the list register.
    lr: [AtomicU16; 16],
    /// The vCPU's posted fast SPIs (next to its SGIs: the kick exit looks
    /// at both).
    pub spis: SpiBox,
}

/// What [`SgiBox::take`] hands out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Taken {
    pub sgi: u32,
    pub lane: u8,
    pub priority: u8,
    pub group1: bool,
}

impl SgiBox {
    pub const fn new() -> Self {
        SgiBox {
            pending: AtomicU64::new(0),
            ready: AtomicU16::new(0),
            lr: [const { AtomicU16::new(0) }; 16],
            spis: SpiBox::new(),
        }
    }

    /// Posts `sgi` from `lane` if it is ready: `None` if it is not (the
    /// caller takes the locked path), else whether it was newly posted
    /// (the target must be kicked) rather than merged with one waiting.
    #[inline(always)]
    pub fn post(&self, sgi: u32, lane: usize) -> Option<bool> {
        let sgi = sgi & 0xf;
        if lane >= LANES || self.ready.load(Ordering::Acquire) & (1 << sgi) == 0 {
            return None;
        }
        let bit = 1u64 << (16 * lane as u32 + sgi);
        Some(self.pending.fetch_or(bit, Ordering::AcqRel) & bit == 0)
    }

    /// Whether anything is posted.
    #[inline(always)]
    pub fn any(&self) -> bool {
        self.pending.load(Ordering::Acquire) != 0
    }

    /// Takes the lowest posted SGI out of the mailbox.
    #[inline]
    pub fn take(&self) -> Option<Taken> {
        let mut cur = self.pending.load(Ordering::Acquire);
        let bit = loop {
            if cur == 0 {
                return None;
            }
            let bit = cur.trailing_zeros();
            match self.pending.compare_exchange_weak(
                cur,
                cur & !(1u64 << bit),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break bit,
                Err(now) => cur = now,
            }
        };
        Some(self.entry(bit))
    }

    /// Takes everything posted at once (the interrupt exit's drain).
    #[inline(always)]
    pub fn take_all(&self) -> u64 {
        self.pending.swap(0, Ordering::AcqRel)
    }

    /// Posts again what a drain could not place (`bits` as [`Self::take_all`]
    /// returned them).
    pub fn repost(&self, bits: u64) {
        self.pending.fetch_or(bits, Ordering::AcqRel);
    }

    /// What bit `bit` (as in [`Self::take_all`]) stands for.
    #[inline(always)]
    pub fn entry(&self, bit: u32) -> Taken {
        let sgi = bit % 16;
        let t = self.lr.get(sgi as usize).map_or(0, |t| t.load(Ordering::Relaxed));
        Taken {
            sgi,
            lane: (bit / 16) as u8,
            priority: t as u8,
            group1: t & 0x100 != 0,
        }
    }

    /// Drops `sgi` from every lane (ICPENDR, GICD_CPENDSGIR).
    pub fn cancel(&self, sgi: u32) {
        let mask = 0x0001_0001_0001_0001u64 << (sgi & 0xf);
        self.pending.fetch_and(!mask, Ordering::AcqRel);
    }

    /// Drops everything (VM reset).
    pub fn clear(&self) {
        self.pending.store(0, Ordering::Release);
    }

    /// Republishes SGI `sgi`'s state; the vGIC calls this under its lock
    /// after any change to it (or to GICD_CTLR). Priority and group are
    /// stored before `ready` says the SGI may be posted.
    pub fn mirror(&self, sgi: u32, ready: bool, priority: u8, group1: bool) {
        let sgi = sgi & 0xf;
        if let Some(t) = self.lr.get(sgi as usize) {
            t.store(u16::from(priority) | u16::from(group1) << 8, Ordering::Relaxed);
        }
        if ready {
            self.ready.fetch_or(1 << sgi, Ordering::Release);
        } else {
            self.ready.fetch_and(!(1 << sgi), Ordering::Release);
        }
    }
}

impl Default for SgiBox {
    fn default() -> Self {
        Self::new()
    }
}

/// Virtual SPIs the hypervisor raises itself (a shmem doorbell, an
/// emulated device's edge) take the same way as SGIs: one atomic OR into
/// the target vCPU's [`SpiBox`] and a kick, drained by the kick exit into
/// list registers. Each such SPI has a slot in its VM's vGIC, whose state is
/// mirrored into one word under the vGIC lock whenever the guest changes
/// it, like an SGI's: an SPI that is not ready (disabled, its group
/// disabled) takes the locked path and stays latched pending.
pub const MAX_FAST_SPIS: usize = 32;

/// [`FastSpi`]'s word: deliverable now.
const READY: u32 = 1 << 31;
/// The list register wants EOI maintenance (level-triggered virtual SPI).
const EOI: u32 = 1 << 10;
const GROUP1: u32 = 1 << 8;

/// One fast SPI of a VM.
pub struct FastSpi {
    pub intid: u32,
    /// READY | target vCPU << 16 | EOI | GROUP1 | priority.
    word: AtomicU32,
}

/// What a drained fast SPI becomes in a list register.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FastEntry {
    pub intid: u32,
    pub priority: u8,
    pub group1: bool,
    pub eoi: bool,
}

impl FastSpi {
    pub const fn new(intid: u32) -> Self {
        FastSpi {
            intid,
            word: AtomicU32::new(0),
        }
    }

    /// The vCPU to post to, if the SPI is deliverable now.
    #[inline(always)]
    pub fn ready_target(&self) -> Option<usize> {
        let w = self.word.load(Ordering::Acquire);
        (w & READY != 0).then_some(((w >> 16) & 0xff) as usize)
    }

    #[inline(always)]
    pub fn entry(&self) -> FastEntry {
        let w = self.word.load(Ordering::Relaxed);
        FastEntry {
            intid: self.intid,
            priority: w as u8,
            group1: w & GROUP1 != 0,
            eoi: w & EOI != 0,
        }
    }

    /// [`Self::entry`] if the SPI is deliverable now (one load): a post that
    /// raced with the guest disabling it, or with a VM reset, is not.
    #[inline(always)]
    pub fn entry_if_ready(&self) -> Option<FastEntry> {
        let w = self.word.load(Ordering::Acquire);
        (w & READY != 0).then_some(FastEntry {
            intid: self.intid,
            priority: w as u8,
            group1: w & GROUP1 != 0,
            eoi: w & EOI != 0,
        })
    }

    /// Republishes the SPI's state (the vGIC calls this under its lock).
    pub fn mirror(&self, ready: bool, target: usize, priority: u8, group1: bool, eoi: bool) {
        let w = u32::from(ready) << 31
            | ((target.min(0xff) as u32) << 16)
            | u32::from(eoi) << 10
            | u32::from(group1) << 8
            | u32::from(priority);
        self.word.store(w, Ordering::Release);
    }
}

/// One vCPU's posted fast SPIs: bit `k` is its VM's fast SPI slot `k`.
pub struct SpiBox {
    pending: AtomicU32,
}

impl SpiBox {
    pub const fn new() -> Self {
        SpiBox {
            pending: AtomicU32::new(0),
        }
    }

    /// Posts slot `k`; whether it was newly posted (kick the target).
    #[inline(always)]
    pub fn post(&self, k: usize) -> bool {
        let bit = 1u32 << (k % MAX_FAST_SPIS);
        self.pending.fetch_or(bit, Ordering::AcqRel) & bit == 0
    }

    #[inline(always)]
    pub fn any(&self) -> bool {
        self.pending.load(Ordering::Acquire) != 0
    }

    /// Takes the lowest posted slot.
    pub fn take(&self) -> Option<usize> {
        let mut cur = self.pending.load(Ordering::Acquire);
        loop {
            if cur == 0 {
                return None;
            }
            let k = cur.trailing_zeros();
            match self.pending.compare_exchange_weak(
                cur,
                cur & !(1u32 << k),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(k as usize),
                Err(now) => cur = now,
            }
        }
    }

    #[inline(always)]
    pub fn take_all(&self) -> u32 {
        self.pending.swap(0, Ordering::AcqRel)
    }

    pub fn repost(&self, bits: u32) {
        self.pending.fetch_or(bits, Ordering::AcqRel);
    }

    /// Drops slot `k` (ICPENDR).
    pub fn cancel(&self, k: usize) {
        self.pending
            .fetch_and(!(1u32 << (k % MAX_FAST_SPIS)), Ordering::AcqRel);
    }

    pub fn clear(&self) {
        self.pending.store(0, Ordering::Release);
    }
}

impl Default for SpiBox {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ready_sgis_are_posted_and_duplicates_merge() {
        let b = SgiBox::new();
        assert_eq!(b.post(3, 0), None, "not ready: the locked path decides");
        b.mirror(3, true, 0xa0, true);
        assert_eq!(b.post(3, 0), Some(true), "new: kick");
        assert_eq!(b.post(3, 0), Some(false), "merged: no second kick");
        assert_eq!(b.post(3, 1), Some(true), "another source is another SGI");
        assert_eq!(b.post(3, LANES), None, "no lane for source 4");
        let t = b.take().unwrap();
        assert_eq!(
            t,
            Taken {
                sgi: 3,
                lane: 0,
                priority: 0xa0,
                group1: true
            }
        );
        assert_eq!(b.take().map(|t| t.lane), Some(1));
        assert!(b.take().is_none() && !b.any());
    }

    #[test]
    fn a_drain_takes_everything_and_reposts_the_rest() {
        let b = SgiBox::new();
        for sgi in [1, 9] {
            b.mirror(sgi, true, 0x80, false);
        }
        b.post(1, 0);
        b.post(9, 3);
        let bits = b.take_all();
        assert!(!b.any());
        assert_eq!(bits, 1 << 1 | 1 << (48 + 9));
        assert_eq!(b.entry(48 + 9).lane, 3);
        assert_eq!(b.entry(48 + 9).sgi, 9);
        b.repost(bits & (bits - 1));
        assert_eq!(b.take().map(|t| (t.sgi, t.lane)), Some((9, 3)));
    }

    #[test]
    fn disabling_stops_posting_and_cancel_drops_every_lane() {
        let b = SgiBox::new();
        b.mirror(15, true, 0, false);
        b.mirror(0, true, 0, false);
        assert_eq!(b.post(15, 2), Some(true));
        assert_eq!(b.post(15, 3), Some(true));
        assert_eq!(b.post(0, 0), Some(true));
        b.cancel(15);
        assert_eq!(b.take().map(|t| t.sgi), Some(0));
        assert!(b.take().is_none());
        b.mirror(15, false, 0, false);
        assert_eq!(b.post(15, 0), None);
        b.clear();
        assert!(!b.any());
    }

    #[test]
    fn fast_spis_post_only_where_the_mirror_says_and_merge() {
        let f = FastSpi::new(112);
        assert_eq!(f.ready_target(), None, "not mirrored yet: the locked path");
        f.mirror(true, 1, 0xa0, true, false);
        assert_eq!(f.ready_target(), Some(1));
        assert_eq!(
            f.entry(),
            FastEntry {
                intid: 112,
                priority: 0xa0,
                group1: true,
                eoi: false
            }
        );
        assert!(f.entry_if_ready().is_some());
        f.mirror(false, 1, 0xa0, true, true);
        assert_eq!(f.ready_target(), None, "disabled: not posted");
        assert_eq!(f.entry_if_ready(), None, "disabled: not drained");
        assert!(f.entry().eoi);
        let b = SpiBox::new();
        assert!(b.post(3));
        assert!(!b.post(3), "merged: no second kick");
        assert!(b.post(31));
        b.cancel(31);
        assert_eq!(b.take_all(), 1 << 3);
        assert!(!b.any());
        b.repost(1 << 5);
        assert!(b.any());
        b.clear();
        assert!(!b.any());
    }
}
