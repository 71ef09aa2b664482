//! Used-buffer interrupt moderation for transmit completions.
//!
//! A transmit exit finishes the guest's frames at once, on its own CPU, so
//! an interrupt for their used buffers would come straight back into the
//! same guest, which had just kicked: an interrupt, two register traps and
//! a NAPI poll only to free the frames. Instead the bits wait, at most
//! [`HOLD_US`], for the next interrupt this device raises anyway (a frame
//! delivered to it by a peer: the reply to a ping, the ACK of a TCP
//! segment); Linux's receive poll frees finished transmit buffers too
//! (`virtnet_poll_cleantx`), so one interrupt serves both. If nothing comes
//! by then, the hypervisor timer of the CPU that held the bits raises them.
//! This is a NIC's transmit interrupt moderation: virtio requires the
//! notification, not its timing (virtio 1.2, 2.7.10).
//!
//! Only an exit that sent nothing but small frames ([`SMALL`]: a ping, an
//! ACK, a short request) holds its interrupt: those usually get a reply.
//! A bulk sender's frames complete at once, since Linux counts a frame's
//! bytes against its socket until the completion frees it (TCP small
//! queues): held, they would stall the sender until the timer. Measured
//! with `cargo xtask bench` (links rows): holding every exit cost TCP 8%
//! (364 against 394 MB/s); holding small ones only gained it 7% (466
//! against 435, with the faster copy of arch/aarch64/copy.rs) and took a
//! ping round trip from 2.11x to 1.8x loopback.
//!
//! The bits never wait either when the device stopped at its budget with
//! frames left (the interrupt brings the InterruptAck that resumes it) or
//! when an exit finished half the ring or more (a driver whose ring filled
//! waits for this interrupt to go on); the caller decides (net.rs).
//!
//! Holders: each device that may hold bits is registered once, at build
//! time, and gets a slot; each CPU keeps a mask of the slots it holds bits
//! for. A device without a slot (more than [`SLOTS`] of them) interrupts
//! at once, as without moderation.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use spin::RwLock;

/// Longest a completion interrupt is held, in microseconds: several ping
/// round trips between two VMs, and short against anything a driver
/// times out on.
pub const HOLD_US: u64 = 200;
/// The largest frame, virtio header included, whose completion is held.
pub const SMALL: usize = 256;
/// Devices that can hold bits (one bit each in a CPU's mask).
pub const SLOTS: usize = 64;
const NONE: usize = usize::MAX;

/// What the timer does for a held device: raise its held bits.
pub trait Release: Send + Sync {
    fn release(&self);
}

static HOLDERS: RwLock<Vec<Arc<dyn Release>>> = RwLock::new(Vec::new());
/// Per CPU: the slots whose bits that CPU's timer releases.
static HELD_ON: [AtomicU64; crate::arch::aarch64::MAX_CPUS] =
    [const { AtomicU64::new(0) }; crate::arch::aarch64::MAX_CPUS];

/// A device's held InterruptStatus bits and its slot.
pub struct Held {
    bits: AtomicU32,
    slot: AtomicUsize,
}

impl Default for Held {
    fn default() -> Self {
        Self {
            bits: AtomicU32::new(0),
            slot: AtomicUsize::new(NONE),
        }
    }
}

impl Held {
    /// Gives `dev`, whose own `Held` this is, a slot: from now on it may
    /// hold bits. Build time only (takes the holders' write lock).
    pub fn register(&self, dev: Arc<dyn Release>) {
        let mut h = HOLDERS.write();
        if h.len() < SLOTS && self.slot.load(Ordering::Relaxed) == NONE {
            self.slot.store(h.len(), Ordering::Relaxed);
            h.push(dev);
        }
    }

    /// Holds `bits`; false if this device cannot (no slot), and the caller
    /// raises them now. The first bits held arm this CPU's timer.
    pub fn hold(&self, bits: u32) -> bool {
        let slot = self.slot.load(Ordering::Relaxed);
        if slot >= SLOTS {
            return false;
        }
        // SeqCst: the used-ring writes before it are seen by whoever takes
        // the bits (`take`), and raises them.
        if self.bits.fetch_or(bits, Ordering::SeqCst) == 0 {
            // Nobody holds this device's bits: this CPU does, until its
            // timer fires or an interrupt takes them.
            arm(slot);
        }
        true
    }

    /// The held bits, now no longer held: for the interrupt about to be
    /// raised. A load first, so the common case (nothing held) writes
    /// nothing.
    #[inline]
    pub fn take(&self) -> u32 {
        if self.bits.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.bits.swap(0, Ordering::SeqCst)
    }

    /// Forgets the held bits (device reset).
    pub fn clear(&self) {
        self.bits.store(0, Ordering::SeqCst);
    }

    #[cfg(test)]
    pub fn give_slot_for_test(&self, slot: usize) {
        self.slot.store(slot, Ordering::Relaxed);
    }
}

#[cfg(target_os = "none")]
fn arm(slot: usize) {
    use crate::arch::aarch64::{cpu, hyptimer};
    if let Some(mask) = HELD_ON.get(cpu::index()) {
        if mask.fetch_or(1 << slot, Ordering::Relaxed) == 0 {
            hyptimer::arm_in(
                hyptimer::Use::Interrupts,
                cpu::counter_freq() * HOLD_US / 1_000_000,
            );
        }
    }
}

/// Host tests: no timer; the bits stay held until taken.
#[cfg(not(target_os = "none"))]
fn arm(_slot: usize) {}

/// This CPU's timer for held interrupts fired: raises every device's bits
/// it holds (some may have been taken since, by an interrupt; they are
/// gone, and nothing is raised for them). Runs with IRQs masked.
pub fn release_held(cpu: usize) {
    let Some(mask) = HELD_ON.get(cpu) else { return };
    let mut m = mask.swap(0, Ordering::Relaxed);
    if m == 0 {
        return;
    }
    let holders = HOLDERS.read();
    while m != 0 {
        let slot = m.trailing_zeros() as usize;
        m &= m - 1;
        if let Some(dev) = holders.get(slot) {
            dev.release();
        }
    }
}
