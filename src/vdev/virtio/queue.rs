//! The device side of a split virtqueue (virtio 1.2, 2.7), written for a
//! hostile driver. Everything in the rings is guest memory the guest can
//! change at any moment, so each index and each descriptor is read once into
//! hypervisor memory, validated, and only then used:
//!
//! - the avail index may run ahead of what the device consumed by at most the
//!   queue size ([`QueueError::IndexJump`]);
//! - head and `next` indices are below the queue size ([`QueueError::BadIndex`]);
//! - a chain is at most the queue size long: a cycle ends in
//!   [`QueueError::ChainTooLong`], never in a loop;
//! - no indirect descriptors (the feature is never offered);
//! - address + length and the chain's total length cannot overflow;
//! - every buffer and every ring lies wholly inside the VM's own RAM (the
//!   [`GuestMemory`] answers only for that: never MMIO, another VM or the
//!   hypervisor);
//! - device-writable descriptors come after the readable ones (2.7.4.2).
//!
//! Any violation is an error value; the transport then puts only this device
//! into DEVICE_NEEDS_RESET. The used index is published with release
//! ordering after the used element it covers.

use core::sync::atomic::{fence, Ordering};

/// The largest queue this hypervisor offers (QueueNumMax).
pub const MAX_SIZE: u16 = 1024;

const DESC_SIZE: u64 = 16;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
/// avail.flags: the driver does not want an interrupt (2.7.7).
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// A guest's RAM as the device sees it. Implementations answer only for the
/// VM's own RAM: a range not wholly inside it is [`OutsideRam`].
pub trait GuestMemory {
    /// Copies `[gpa, gpa + buf.len())` into `buf`.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutsideRam>;
    /// Copies `data` to `[gpa, gpa + data.len())`.
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), OutsideRam>;
    /// Whether `[gpa, gpa + len)` lies wholly inside the VM's RAM.
    fn contains(&self, gpa: u64, len: u64) -> bool;
    /// Whether `[gpa, gpa + len)` may be touched with no work for the
    /// VM's RAM first (no lazy scrub): what another VM's CPU may touch.
    fn ready(&self, gpa: u64, len: u64) -> bool {
        self.contains(gpa, len)
    }
    /// Makes `[gpa, gpa + len)` [`Self::ready`] (a lazy scrub): only on
    /// the owning VM's own CPU.
    fn prepare(&self, _gpa: u64, _len: u64) {}
    /// [`Self::read`] if the range is [`Self::ready`], else [`OutsideRam`]
    /// (one pass where the memory can do both at once).
    fn read_ready(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutsideRam> {
        if !self.ready(gpa, buf.len() as u64) {
            return Err(OutsideRam);
        }
        self.read(gpa, buf)
    }
    /// [`Self::write`] if the range is [`Self::ready`], else [`OutsideRam`].
    fn write_ready(&self, gpa: u64, data: &[u8]) -> Result<(), OutsideRam> {
        if !self.ready(gpa, data.len() as u64) {
            return Err(OutsideRam);
        }
        self.write(gpa, data)
    }
}

/// A VM's RAM as another VM's exit sees it: blocks not yet
/// [`GuestMemory::ready`] are refused as [`OutsideRam`] instead of being
/// scrubbed on the wrong CPU.
pub struct Foreign<'a>(pub &'a dyn GuestMemory);

impl GuestMemory for Foreign<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutsideRam> {
        self.0.read_ready(gpa, buf)
    }
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), OutsideRam> {
        self.0.write_ready(gpa, data)
    }
    fn contains(&self, gpa: u64, len: u64) -> bool {
        self.0.contains(gpa, len)
    }
    fn ready(&self, gpa: u64, len: u64) -> bool {
        self.0.ready(gpa, len)
    }
}

/// A guest-physical range that is not the VM's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutsideRam;

/// What is wrong with a queue. The device stops using it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// Size zero, above [`MAX_SIZE`] or not a power of two.
    BadSize(u16),
    /// A ring misaligned or not wholly inside the VM's RAM.
    BadRing(u64),
    /// The avail index is more than the queue size ahead of the device.
    IndexJump { avail: u16, seen: u16 },
    /// A head or `next` index at or above the queue size.
    BadIndex(u16),
    /// More descriptors in one chain than the queue has: a cycle.
    ChainTooLong,
    /// An indirect descriptor (never negotiated).
    Indirect(u16),
    /// address + length, or the chain's total, overflows.
    Overflow(u16),
    /// A buffer not wholly inside the VM's RAM.
    OutsideRam { desc: u16, addr: u64, len: u32 },
    /// A device-readable descriptor after a device-writable one.
    ReadAfterWrite(u16),
    /// A device-readable descriptor in a receive queue (its buffers are
    /// device-writable only).
    ReadableRx(u16),
    /// A ring read or write outside the VM's RAM (it was checked at
    /// QueueReady; memory does not move, so this means a broken check).
    Ring,
    /// The hypervisor's heap has no room for the chain's segment list (a
    /// chain longer than any before on this queue): the device fails, not
    /// the hypervisor.
    NoRoom(u16),
}

impl core::fmt::Display for QueueError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadSize(n) => write!(f, "queue size {n} is not a power of two up to {MAX_SIZE}"),
            Self::BadRing(a) => write!(f, "ring at {a:#x} misaligned or not in the VM's RAM"),
            Self::IndexJump { avail, seen } => {
                write!(
                    f,
                    "avail index {avail} jumps more than the queue size past {seen}"
                )
            }
            Self::BadIndex(i) => write!(f, "descriptor index {i} beyond the queue"),
            Self::ChainTooLong => write!(f, "descriptor chain longer than the queue (a cycle)"),
            Self::Indirect(i) => write!(f, "indirect descriptor {i} (not negotiated)"),
            Self::Overflow(i) => write!(f, "descriptor {i}: length overflows"),
            Self::OutsideRam { desc, addr, len } => {
                write!(
                    f,
                    "descriptor {desc}: buffer {addr:#x}+{len:#x} not in the VM's RAM"
                )
            }
            Self::ReadAfterWrite(i) => write!(f, "descriptor {i}: readable after writable"),
            Self::ReadableRx(i) => write!(f, "descriptor {i}: readable in a receive queue"),
            Self::Ring => write!(f, "ring access outside the VM's RAM"),
            Self::NoRoom(n) => write!(f, "no room in the hypervisor's heap for a {n}-descriptor chain"),
        }
    }
}

/// One buffer of a chain, validated: wholly inside the VM's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub addr: u64,
    pub len: u32,
    /// Device-writable (else device-readable).
    pub write: bool,
}

/// A validated descriptor chain: its head (what goes back in the used
/// ring) and its segments, readable ones first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub segments: alloc::vec::Vec<Segment>,
    /// Total bytes of the readable and of the writable segments.
    pub readable: u32,
    pub writable: u32,
    /// Descriptors read to build it (the work it cost).
    pub descs: u32,
}

/// A queue's registers as the driver set them, and the device's position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Queue {
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    /// Next avail entry the device will take (free running).
    next_avail: u16,
    /// The used index the device publishes next (free running).
    next_used: u16,
    /// Avail entries up to this one (free running) had their buffers
    /// prepared ([`Self::prepare_rx`]).
    prepared: u16,
    /// VRING_USED_F_NO_NOTIFY is set in the used ring ([`Self::quiet`]).
    quiet: bool,
}

impl Queue {
    /// A queue the driver has laid out (not yet enabled).
    pub const fn new(size: u16, desc: u64, avail: u64, used: u64) -> Self {
        Self {
            size,
            ready: false,
            desc,
            avail,
            used,
            next_avail: 0,
            next_used: 0,
            prepared: 0,
            quiet: false,
        }
    }

    /// Back to reset state (device reset, or the driver clearing QueueReady).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Validates the rings when the driver sets QueueReady (the layout of
    /// 2.7: 16-byte descriptors aligned 16, avail aligned 2, used aligned 4).
    pub fn enable(&mut self, mem: &dyn GuestMemory) -> Result<(), QueueError> {
        let n = self.size;
        if n == 0 || n > MAX_SIZE || !n.is_power_of_two() {
            return Err(QueueError::BadSize(n));
        }
        let n = u64::from(n);
        for (base, align, len) in [
            (self.desc, 16, DESC_SIZE * n),
            (self.avail, 2, 6 + 2 * n),
            (self.used, 4, 6 + 8 * n),
        ] {
            if !base.is_multiple_of(align) || !mem.contains(base, len) {
                return Err(QueueError::BadRing(base));
            }
        }
        // On the owner's exit: the rings are scrubbed here, so a peer's
        // delivery reads them without scrubbing.
        for (base, len) in [
            (self.desc, DESC_SIZE * n),
            (self.avail, 6 + 2 * n),
            (self.used, 6 + 8 * n),
        ] {
            mem.prepare(base, len);
        }
        // No hint left from an earlier life of the ring (Self::quiet).
        mem.write(self.used, &[0, 0])
            .map_err(|_| QueueError::BadRing(self.used))?;
        self.next_avail = 0;
        self.next_used = 0;
        self.prepared = 0;
        self.quiet = false;
        self.ready = true;
        Ok(())
    }

    /// Chains waiting in the ring whose buffers [`Self::prepare_rx`] made
    /// ready, not yet taken.
    pub fn prepared_ahead(&self) -> u16 {
        let d = self.prepared.wrapping_sub(self.next_avail);
        if d <= self.size {
            d
        } else {
            0
        }
    }

    /// Sets (`on`) or clears VRING_USED_F_NO_NOTIFY (2.7.10): a hint the
    /// driver reads before it kicks, so a device that needs no kick for
    /// every buffer saves the driver an exit. The driver may miss a clear
    /// it raced with and not kick once; nothing depends on that kick.
    pub fn quiet(&mut self, mem: &dyn GuestMemory, on: bool) -> Result<(), QueueError> {
        if !self.ready || self.quiet == on {
            return Ok(());
        }
        mem.write(self.used, &u16::from(on).to_le_bytes())
            .map_err(|_| QueueError::Ring)?;
        fence(Ordering::SeqCst);
        self.quiet = on;
        Ok(())
    }

    fn read_u16(mem: &dyn GuestMemory, gpa: u64) -> Result<u16, QueueError> {
        let mut b = [0u8; 2];
        mem.read(gpa, &mut b).map_err(|_| QueueError::Ring)?;
        Ok(u16::from_le_bytes(b))
    }

    /// The avail ring's index, read once, checked against the device's
    /// position: how many chains are waiting.
    pub fn pending(&self, mem: &dyn GuestMemory) -> Result<u16, QueueError> {
        if !self.ready {
            return Ok(0);
        }
        let idx = Self::read_u16(mem, self.avail.wrapping_add(2))?;
        let ahead = idx.wrapping_sub(self.next_avail);
        if ahead > self.size {
            return Err(QueueError::IndexJump {
                avail: idx,
                seen: self.next_avail,
            });
        }
        Ok(ahead)
    }

    /// Whether the driver asked for no interrupt on used buffers.
    pub fn interrupt_suppressed(&self, mem: &dyn GuestMemory) -> bool {
        Self::read_u16(mem, self.avail).is_ok_and(|f| f & AVAIL_F_NO_INTERRUPT != 0)
    }

    /// Takes the next available chain into `out` (its segments vector is
    /// reused). `Ok(false)`: none waiting.
    pub fn pop(&mut self, mem: &dyn GuestMemory, out: &mut Chain) -> Result<bool, QueueError> {
        if self.pending(mem)? == 0 {
            return Ok(false);
        }
        // Order the ring entry's read after the index's (2.7.13.3: the
        // driver publishes the entry before the index).
        fence(Ordering::Acquire);
        let slot = u64::from(self.next_avail % self.size);
        let head = Self::read_u16(mem, self.avail.wrapping_add(4 + 2 * slot))?;
        self.walk(mem, head, out, false)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(true)
    }

    /// [`Self::pop`] for a receive queue: a device-readable descriptor is
    /// [`QueueError::ReadableRx`], found at the first one (the walk stops
    /// there).
    pub fn pop_rx(&mut self, mem: &dyn GuestMemory, out: &mut Chain) -> Result<bool, QueueError> {
        if self.pending(mem)? == 0 {
            return Ok(false);
        }
        fence(Ordering::Acquire);
        let slot = u64::from(self.next_avail % self.size);
        let head = Self::read_u16(mem, self.avail.wrapping_add(4 + 2 * slot))?;
        self.walk(mem, head, out, true)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(true)
    }

    /// Gives back the chain the last pop took (not used): it is taken
    /// again by the next pop.
    pub fn unpop(&mut self) {
        self.next_avail = self.next_avail.wrapping_sub(1);
    }

    /// Makes the buffers of the receive chains waiting in the ring
    /// [`GuestMemory::ready`], reading at most `limit` descriptors; takes
    /// nothing. For the owning VM's own exit (its notify), so a peer's
    /// delivery never has to scrub. Stops at the first broken chain (the
    /// pop that meets it fails the queue). Chains prepared before are
    /// skipped. Returns the descriptors read.
    pub fn prepare_rx(&mut self, mem: &dyn GuestMemory, scratch: &mut Chain, limit: u32) -> u32 {
        let Ok(n) = self.pending(mem) else { return 0 };
        fence(Ordering::Acquire);
        let mut read = 0u32;
        let done = self.prepared.wrapping_sub(self.next_avail);
        let from = if done <= n { done } else { 0 };
        for k in from..n {
            if read >= limit {
                break;
            }
            let at = self.next_avail.wrapping_add(k);
            let slot = u64::from(at % self.size);
            let Ok(head) = Self::read_u16(mem, self.avail.wrapping_add(4 + 2 * slot)) else {
                break;
            };
            let walked = self.walk(mem, head, scratch, true);
            read = read.saturating_add(scratch.descs);
            if walked.is_err() {
                break;
            }
            for s in &scratch.segments {
                mem.prepare(s.addr, u64::from(s.len));
            }
            self.prepared = at.wrapping_add(1);
        }
        read
    }

    /// Follows the chain from `head`, reading each descriptor exactly once.
    fn walk(&self, mem: &dyn GuestMemory, head: u16, out: &mut Chain, rx: bool) -> Result<(), QueueError> {
        out.head = head;
        out.segments.clear();
        out.readable = 0;
        out.writable = 0;
        out.descs = 0;
        let mut index = head;
        let mut seen_write = false;
        for _ in 0..self.size {
            if index >= self.size {
                return Err(QueueError::BadIndex(index));
            }
            let mut raw = [0u8; DESC_SIZE as usize];
            out.descs += 1;
            mem.read(self.desc + DESC_SIZE * u64::from(index), &mut raw)
                .map_err(|_| QueueError::Ring)?;
            let [a0, a1, a2, a3, a4, a5, a6, a7, l0, l1, l2, l3, f0, f1, n0, n1] = raw;
            let addr = u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]);
            let len = u32::from_le_bytes([l0, l1, l2, l3]);
            let flags = u16::from_le_bytes([f0, f1]);
            let next = u16::from_le_bytes([n0, n1]);
            if flags & F_INDIRECT != 0 {
                return Err(QueueError::Indirect(index));
            }
            if addr.checked_add(u64::from(len)).is_none() {
                return Err(QueueError::Overflow(index));
            }
            if !mem.contains(addr, u64::from(len)) {
                return Err(QueueError::OutsideRam {
                    desc: index,
                    addr,
                    len,
                });
            }
            let write = flags & F_WRITE != 0;
            if rx && !write {
                return Err(QueueError::ReadableRx(index));
            }
            let total = if write {
                seen_write = true;
                &mut out.writable
            } else {
                if seen_write {
                    return Err(QueueError::ReadAfterWrite(index));
                }
                &mut out.readable
            };
            *total = total.checked_add(len).ok_or(QueueError::Overflow(index))?;
            // The list grows only past the longest chain seen on this
            // queue, and never aborts the hypervisor when the heap is full.
            if out.segments.len() == out.segments.capacity() {
                let more = out.segments.len().max(4);
                out.segments
                    .try_reserve(more)
                    .map_err(|_| QueueError::NoRoom(out.descs as u16))?;
            }
            out.segments.push(Segment { addr, len, write });
            if flags & F_NEXT == 0 {
                return Ok(());
            }
            index = next;
        }
        Err(QueueError::ChainTooLong)
    }

    /// Returns chain `head` to the driver with `written` bytes written into
    /// it: the used element first, then (release) the index.
    pub fn push_used(&mut self, mem: &dyn GuestMemory, head: u16, written: u32) -> Result<(), QueueError> {
        self.put_used(mem, head, written)?;
        self.publish_used(mem)
    }

    /// Writes the used element of chain `head` without publishing it: the
    /// driver sees it only at the next [`Self::publish_used`]. A frame
    /// spread over several buffers (mergeable receive buffers) is published
    /// whole, never its first buffer before the rest (5.1.6.4.2).
    pub fn put_used(&mut self, mem: &dyn GuestMemory, head: u16, written: u32) -> Result<(), QueueError> {
        if !self.ready {
            return Ok(());
        }
        let slot = u64::from(self.next_used % self.size);
        let mut elem = [0u8; 8];
        let (id, len) = elem.split_at_mut(4);
        id.copy_from_slice(&u32::from(head).to_le_bytes());
        len.copy_from_slice(&written.to_le_bytes());
        mem.write(self.used.wrapping_add(4 + 8 * slot), &elem)
            .map_err(|_| QueueError::Ring)?;
        self.next_used = self.next_used.wrapping_add(1);
        Ok(())
    }

    /// Publishes the used elements written so far: (release) the index.
    pub fn publish_used(&mut self, mem: &dyn GuestMemory) -> Result<(), QueueError> {
        if !self.ready {
            return Ok(());
        }
        // 2.7.8.2: the elements are visible before the index that covers them.
        fence(Ordering::Release);
        mem.write(self.used.wrapping_add(2), &self.next_used.to_le_bytes())
            .map_err(|_| QueueError::Ring)
    }
}

impl Chain {
    /// Copies the readable bytes, from `skip` on, into `buf`; returns how
    /// many were copied (at most `buf.len()`).
    pub fn read(&self, mem: &dyn GuestMemory, mut skip: usize, buf: &mut [u8]) -> Result<usize, OutsideRam> {
        let mut done = 0;
        for s in self.segments.iter().filter(|s| !s.write) {
            let len = s.len as usize;
            if skip >= len {
                skip -= len;
                continue;
            }
            let Some(dst) = buf.get_mut(done..) else { break };
            let n = (len - skip).min(dst.len());
            let Some(dst) = dst.get_mut(..n) else { break };
            mem.read(s.addr + skip as u64, dst)?;
            done += n;
            skip = 0;
            if done == buf.len() {
                break;
            }
        }
        Ok(done)
    }

    /// Copies `data` into the writable segments, from writable offset
    /// `skip` on; returns how many bytes fitted.
    pub fn write(&self, mem: &dyn GuestMemory, mut skip: usize, data: &[u8]) -> Result<usize, OutsideRam> {
        let mut done = 0;
        for s in self.segments.iter().filter(|s| s.write) {
            let len = s.len as usize;
            if skip >= len {
                skip -= len;
                continue;
            }
            let Some(src) = data.get(done..) else { break };
            let n = (len - skip).min(src.len());
            let Some(src) = src.get(..n) else { break };
            mem.write(s.addr + skip as u64, src)?;
            done += n;
            skip = 0;
            if done == data.len() {
                break;
            }
        }
        Ok(done)
    }
}

/// Guest RAM for host tests: one region of bytes at a base.
#[cfg(test)]
pub mod testmem {
    use super::{GuestMemory, OutsideRam};
    use std::sync::Mutex;
    use std::vec::Vec;

    pub struct VecMemory {
        pub base: u64,
        pub bytes: Mutex<Vec<u8>>,
    }

    impl VecMemory {
        pub fn new(base: u64, size: usize) -> Self {
            Self {
                base,
                bytes: Mutex::new(std::vec![0; size]),
            }
        }
        fn range(&self, gpa: u64, len: usize) -> Option<core::ops::Range<usize>> {
            let off = gpa.checked_sub(self.base)? as usize;
            let end = off.checked_add(len)?;
            (end <= self.bytes.lock().unwrap().len()).then_some(off..end)
        }
        pub fn put(&self, gpa: u64, data: &[u8]) {
            self.write(gpa, data).unwrap();
        }
        pub fn get(&self, gpa: u64, len: usize) -> Vec<u8> {
            let mut v = std::vec![0; len];
            self.read(gpa, &mut v).unwrap();
            v
        }
    }

    impl GuestMemory for VecMemory {
        fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutsideRam> {
            let r = self.range(gpa, buf.len()).ok_or(OutsideRam)?;
            buf.copy_from_slice(&self.bytes.lock().unwrap()[r]);
            Ok(())
        }
        fn write(&self, gpa: u64, data: &[u8]) -> Result<(), OutsideRam> {
            let r = self.range(gpa, data.len()).ok_or(OutsideRam)?;
            self.bytes.lock().unwrap()[r].copy_from_slice(data);
            Ok(())
        }
        fn contains(&self, gpa: u64, len: u64) -> bool {
            usize::try_from(len)
                .ok()
                .and_then(|l| self.range(gpa, l))
                .is_some()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testmem::VecMemory;
    use super::*;

    pub const RAM: u64 = 0x4000_0000;
    const DESC: u64 = RAM;
    const AVAIL: u64 = RAM + 0x1000;
    const USED: u64 = RAM + 0x2000;
    const DATA: u64 = RAM + 0x10000;

    /// A driver-side view for the tests: writes descriptors and the avail ring.
    struct Driver<'a> {
        mem: &'a VecMemory,
        avail_idx: u16,
        size: u16,
    }

    impl Driver<'_> {
        fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let mut d = std::vec::Vec::new();
            d.extend_from_slice(&addr.to_le_bytes());
            d.extend_from_slice(&len.to_le_bytes());
            d.extend_from_slice(&flags.to_le_bytes());
            d.extend_from_slice(&next.to_le_bytes());
            self.mem.put(DESC + 16 * u64::from(i), &d);
        }
        fn offer(&mut self, head: u16) {
            let slot = u64::from(self.avail_idx % self.size);
            self.mem.put(AVAIL + 4 + 2 * slot, &head.to_le_bytes());
            self.avail_idx = self.avail_idx.wrapping_add(1);
            self.mem.put(AVAIL + 2, &self.avail_idx.to_le_bytes());
        }
        fn set_avail_idx(&mut self, idx: u16) {
            self.avail_idx = idx;
            self.mem.put(AVAIL + 2, &idx.to_le_bytes());
        }
    }

    fn setup(size: u16) -> (VecMemory, Queue) {
        let mem = VecMemory::new(RAM, 0x20_0000);
        let mut q = Queue {
            size,
            desc: DESC,
            avail: AVAIL,
            used: USED,
            ..Queue::default()
        };
        q.enable(&mem).unwrap();
        (mem, q)
    }

    fn driver(mem: &VecMemory, size: u16) -> Driver<'_> {
        Driver {
            mem,
            avail_idx: 0,
            size,
        }
    }

    #[test]
    fn a_well_formed_chain_is_taken_once_and_returned_through_the_used_ring() {
        let (mem, mut q) = setup(8);
        let mut d = driver(&mem, 8);
        d.desc(3, DATA, 12, F_NEXT, 5);
        d.desc(5, DATA + 0x100, 100, F_NEXT, 1);
        d.desc(1, DATA + 0x1000, 1500, F_WRITE, 0);
        d.offer(3);
        let mut c = Chain::default();
        assert_eq!(q.pending(&mem), Ok(1));
        assert_eq!(q.pop(&mem, &mut c), Ok(true));
        assert_eq!(c.head, 3);
        assert_eq!(c.readable, 112);
        assert_eq!(c.writable, 1500);
        assert_eq!(c.segments.len(), 3);
        assert_eq!(q.pop(&mem, &mut c), Ok(false));
        q.push_used(&mem, 3, 42).unwrap();
        assert_eq!(mem.get(USED + 2, 2), [1, 0]);
        assert_eq!(mem.get(USED + 4, 8), [3, 0, 0, 0, 42, 0, 0, 0]);
    }

    #[test]
    fn a_head_or_next_beyond_the_queue_is_refused() {
        let (mem, mut q) = setup(8);
        let mut d = driver(&mem, 8);
        d.offer(8);
        let mut c = Chain::default();
        assert_eq!(q.pop(&mem, &mut c), Err(QueueError::BadIndex(8)));
        let (mem, mut q) = setup(8);
        let mut d = driver(&mem, 8);
        d.desc(0, DATA, 4, F_NEXT, 0xffff);
        d.offer(0);
        assert_eq!(q.pop(&mem, &mut c), Err(QueueError::BadIndex(0xffff)));
    }

    #[test]
    fn a_cyclic_chain_ends_after_queue_size_descriptors() {
        let (mem, mut q) = setup(4);
        let mut d = driver(&mem, 4);
        d.desc(0, DATA, 4, F_NEXT, 1);
        d.desc(1, DATA, 4, F_NEXT, 0);
        d.offer(0);
        let mut c = Chain::default();
        assert_eq!(q.pop(&mem, &mut c), Err(QueueError::ChainTooLong));
        // A descriptor pointing at itself.
        let (mem, mut q) = setup(4);
        let mut d = driver(&mem, 4);
        d.desc(2, DATA, 4, F_NEXT, 2);
        d.offer(2);
        assert_eq!(q.pop(&mem, &mut c), Err(QueueError::ChainTooLong));
        assert!(c.segments.len() <= 4);
    }

    #[test]
    fn a_chain_of_exactly_the_queue_size_is_fine() {
        let (mem, mut q) = setup(4);
        let mut d = driver(&mem, 4);
        for i in 0..3 {
            d.desc(i, DATA, 4, F_NEXT, i + 1);
        }
        d.desc(3, DATA, 4, 0, 0);
        d.offer(0);
        let mut c = Chain::default();
        assert_eq!(q.pop(&mem, &mut c), Ok(true));
        assert_eq!(c.segments.len(), 4);
    }

    #[test]
    fn buffers_outside_ram_are_refused() {
        let mut c = Chain::default();
        for (addr, len) in [
            (0x0900_0000, 4),         // the UART's MMIO
            (RAM - 4, 8),             // straddling RAM's start
            (RAM + 0x20_0000 - 4, 8), // straddling RAM's end
            (0x1_0000_0000, 4),       // another VM / the hypervisor
            (0, 0x10),
        ] {
            let (mem, mut q) = setup(8);
            let mut d = driver(&mem, 8);
            d.desc(0, addr, len, 0, 0);
            d.offer(0);
            assert_eq!(
                q.pop(&mem, &mut c),
                Err(QueueError::OutsideRam { desc: 0, addr, len }),
                "{addr:#x}+{len:#x}"
            );
        }
    }

    #[test]
    fn lengths_that_overflow_are_refused() {
        let (mem, mut q) = setup(8);
        let mut d = driver(&mem, 8);
        d.desc(0, u64::MAX - 2, 16, 0, 0);
        d.offer(0);
        let mut c = Chain::default();
        assert_eq!(q.pop(&mem, &mut c), Err(QueueError::Overflow(0)));
        // Huge lengths each inside RAM cannot be: the total is checked too.
        let (mem, mut q) = setup(8);
        let mut d = driver(&mem, 8);
        d.desc(0, DATA, u32::MAX, 0, 0);
        d.offer(0);
        assert!(matches!(q.pop(&mem, &mut c), Err(QueueError::OutsideRam { .. })));
    }

    #[test]
    fn the_chain_total_is_checked_for_overflow() {
        // Two 3 GiB buffers in a RAM large enough to hold them (a sparse fake).
        struct Huge;
        impl GuestMemory for Huge {
            fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutsideRam> {
                buf.fill(0);
                // Descriptor 0 and 1: 3 GiB each, chained.
                if gpa == DESC {
                    buf[..8].copy_from_slice(&DATA.to_le_bytes());
                    buf[8..12].copy_from_slice(&0xc000_0000u32.to_le_bytes());
                    buf[12..14].copy_from_slice(&F_NEXT.to_le_bytes());
                    buf[14..16].copy_from_slice(&1u16.to_le_bytes());
                } else if gpa == DESC + 16 {
                    buf[..8].copy_from_slice(&DATA.to_le_bytes());
                    buf[8..12].copy_from_slice(&0xc000_0000u32.to_le_bytes());
                } else if gpa == AVAIL + 2 {
                    buf[0] = 1;
                }
                Ok(())
            }
            fn write(&self, _: u64, _: &[u8]) -> Result<(), OutsideRam> {
                Ok(())
            }
            fn contains(&self, _: u64, _: u64) -> bool {
                true
            }
        }
        let mut q = Queue {
            size: 8,
            desc: DESC,
            avail: AVAIL,
            used: USED,
            ..Queue::default()
        };
        q.enable(&Huge).unwrap();
        let mut c = Chain::default();
        assert_eq!(q.pop(&Huge, &mut c), Err(QueueError::Overflow(1)));
    }

    #[test]
    fn indirect_descriptors_are_refused() {
        let (mem, mut q) = setup(8);
        let mut d = driver(&mem, 8);
        d.desc(0, DATA, 32, F_INDIRECT, 0);
        d.offer(0);
        let mut c = Chain::default();
        assert_eq!(q.pop(&mem, &mut c), Err(QueueError::Indirect(0)));
    }

    #[test]
    fn a_readable_descriptor_in_a_receive_chain_is_refused_at_the_first() {
        let (mem, mut q) = setup(8);
        let mut d = driver(&mem, 8);
        // Readable descriptors leading into a writable one: fine for a
        // transmit queue, refused by a receive queue's pop at descriptor 0.
        for i in 0..7 {
            d.desc(i, DATA, 32, F_NEXT, i + 1);
        }
        d.desc(7, DATA, 1, F_WRITE, 0);
        d.offer(0);
        d.offer(0);
        let mut c = Chain::default();
        assert_eq!(q.pop_rx(&mem, &mut c), Err(QueueError::ReadableRx(0)));
        assert_eq!(c.descs, 1, "the walk stops at the first readable one");
        assert_eq!(q.pop(&mem, &mut c), Ok(true));
        assert_eq!((c.descs, c.readable, c.writable), (8, 7 * 32, 1));
    }

    #[test]
    fn readable_after_writable_is_refused() {
        let (mem, mut q) = setup(8);
        let mut d = driver(&mem, 8);
        d.desc(0, DATA, 32, F_WRITE | F_NEXT, 1);
        d.desc(1, DATA, 32, 0, 0);
        d.offer(0);
        let mut c = Chain::default();
        assert_eq!(q.pop(&mem, &mut c), Err(QueueError::ReadAfterWrite(1)));
    }

    #[test]
    fn the_avail_index_may_not_run_ahead_by_more_than_the_queue_size() {
        let (mem, q) = setup(8);
        let mut d = driver(&mem, 8);
        for i in 0..8 {
            d.desc(i, DATA, 4, 0, 0);
        }
        d.set_avail_idx(8);
        assert_eq!(q.pending(&mem), Ok(8));
        d.set_avail_idx(9);
        assert_eq!(q.pending(&mem), Err(QueueError::IndexJump { avail: 9, seen: 0 }));
        // Backwards is a jump too (it wraps to a huge distance).
        d.set_avail_idx(0xfff0);
        assert!(q.pending(&mem).is_err());
        // Wrapping past 0xffff is normal use.
        let (mem, mut q) = setup(8);
        let mut d = driver(&mem, 8);
        d.desc(0, DATA, 4, 0, 0);
        let mut c = Chain::default();
        for _ in 0..0x10010u32 {
            d.offer(0);
            assert_eq!(q.pop(&mem, &mut c), Ok(true));
            q.push_used(&mem, 0, 0).unwrap();
        }
    }

    #[test]
    fn each_descriptor_is_read_once() {
        // A memory that counts reads of each descriptor slot.
        struct Counting(VecMemory, Mutex<std::collections::HashMap<u64, u32>>);
        use std::sync::Mutex;
        impl GuestMemory for Counting {
            fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutsideRam> {
                if (DESC..DESC + 0x1000).contains(&gpa) {
                    *self.1.lock().unwrap().entry(gpa).or_default() += 1;
                }
                self.0.read(gpa, buf)
            }
            fn write(&self, gpa: u64, data: &[u8]) -> Result<(), OutsideRam> {
                self.0.write(gpa, data)
            }
            fn contains(&self, gpa: u64, len: u64) -> bool {
                self.0.contains(gpa, len)
            }
        }
        let (mem, mut q) = setup(8);
        let mut d = driver(&mem, 8);
        d.desc(0, DATA, 4, F_NEXT, 1);
        d.desc(1, DATA, 4, F_NEXT, 2);
        d.desc(2, DATA, 4, F_WRITE, 0);
        d.offer(0);
        let m = Counting(mem, Mutex::new(Default::default()));
        let mut c = Chain::default();
        assert_eq!(q.pop(&m, &mut c), Ok(true));
        let counts = m.1.lock().unwrap();
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    }

    #[test]
    fn rings_must_be_aligned_in_ram_and_the_size_a_power_of_two() {
        let mem = VecMemory::new(RAM, 0x20_0000);
        for (size, desc, avail, used) in [
            (0, DESC, AVAIL, USED),
            (6, DESC, AVAIL, USED),
            (2048, DESC, AVAIL, USED),
            (8, DESC + 8, AVAIL, USED),
            (8, DESC, AVAIL + 1, USED),
            (8, DESC, AVAIL, USED + 2),
            (8, 0x0800_0000, AVAIL, USED),
            (8, DESC, AVAIL, RAM + 0x20_0000 - 8),
        ] {
            let mut q = Queue {
                size,
                desc,
                avail,
                used,
                ..Queue::default()
            };
            assert!(q.enable(&mem).is_err(), "{size} {desc:#x} {avail:#x} {used:#x}");
            assert!(!q.ready);
        }
    }

    #[test]
    fn a_reset_queue_offers_nothing_and_publishes_nothing() {
        let (mem, mut q) = setup(8);
        let mut d = driver(&mem, 8);
        d.desc(0, DATA, 4, 0, 0);
        d.offer(0);
        q.reset();
        let mut c = Chain::default();
        assert_eq!(q.pop(&mem, &mut c), Ok(false));
        q.push_used(&mem, 0, 4).unwrap();
        assert_eq!(mem.get(USED, 8), [0; 8]);
    }

    #[test]
    fn chain_data_is_gathered_and_scattered_across_segments() {
        let (mem, mut q) = setup(8);
        let mut d = driver(&mem, 8);
        mem.put(DATA, b"hello ");
        mem.put(DATA + 0x100, b"world");
        d.desc(0, DATA, 6, F_NEXT, 1);
        d.desc(1, DATA + 0x100, 5, F_NEXT, 2);
        d.desc(2, DATA + 0x200, 3, F_WRITE | F_NEXT, 3);
        d.desc(3, DATA + 0x300, 8, F_WRITE, 0);
        d.offer(0);
        let mut c = Chain::default();
        q.pop(&mem, &mut c).unwrap();
        let mut buf = [0u8; 32];
        let n = c.read(&mem, 0, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello world");
        let n = c.read(&mem, 4, &mut buf[..4]).unwrap();
        assert_eq!(&buf[..n], b"o wo");
        assert_eq!(c.write(&mem, 0, b"abcdefghijklmno").unwrap(), 11);
        assert_eq!(mem.get(DATA + 0x200, 3), b"abc");
        assert_eq!(mem.get(DATA + 0x300, 8), b"defghijk");
    }

    #[test]
    fn the_no_interrupt_flag_is_seen() {
        let (mem, q) = setup(8);
        assert!(!q.interrupt_suppressed(&mem));
        mem.put(AVAIL, &1u16.to_le_bytes());
        assert!(q.interrupt_suppressed(&mem));
    }
}
