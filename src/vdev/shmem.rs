//! The doorbell of a `shmem` link: one emulated 4 KiB page per VM on the
//! link, next to the region the link maps into all of them. Writing a
//! peer's index to RING makes that peer's virtual SPI pending (edge: rings
//! before it is taken coalesce) and sets this VM's bit in the peer's
//! PENDING; the peer clears bits by writing them to ACK. A ring never waits
//! for the peer, and an index that is not on the link is ignored.
//!
//! | offset | register | |
//! |---|---|---|
//! | 0x00 | ID | RO: this VM's index on the link |
//! | 0x04 | PEERS | RO: how many VMs the link has |
//! | 0x08 | RING | WO: the index of the VM to interrupt |
//! | 0x0c | PENDING | RO: bit i set: VM i rang since its bit was acked |
//! | 0x10 | ACK | WO: clears the bits written |
//! | 0x14 | WRITABLE | RO: 1 if this VM may write the region |
//! | 0x18, 0x1c | REGION_LO, _HI | RO: the region's guest-physical base |
//! | 0x20, 0x24 | SIZE_LO, _HI | RO: its size |
//!
//! 32-bit accesses only; anything else is a bus error.

use super::vgic::Vgic;
use super::{BusError, MmioDevice};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use spin::Once;

const ID: u64 = 0x00;
const PEERS: u64 = 0x04;
const RING: u64 = 0x08;
const PENDING: u64 = 0x0c;
const ACK: u64 = 0x10;
const WRITABLE: u64 = 0x14;
const REGION_LO: u64 = 0x18;
const REGION_HI: u64 = 0x1c;
const SIZE_LO: u64 = 0x20;
const SIZE_HI: u64 = 0x24;
/// At most 32 VMs on a link: PENDING has one bit each.
pub const MAX_PEERS: usize = 32;

/// Where a ring goes: a VM's vGIC and interrupt, and its PENDING bits.
pub trait Ringer: Send + Sync {
    fn ring(&self, intid: u32);
}

impl Ringer for Vgic {
    fn ring(&self, intid: u32) {
        self.raise(intid, 0, 0);
    }
}

struct Peer {
    target: Arc<dyn Ringer>,
    intid: u32,
    pending: Arc<AtomicU32>,
}

/// The link: its VMs' doorbells, filled in as the VMs are built.
pub struct DoorbellLink {
    peers: Vec<Once<Peer>>,
}

impl DoorbellLink {
    pub fn new(peers: usize) -> Arc<Self> {
        Arc::new(Self {
            peers: (0..peers.min(MAX_PEERS)).map(|_| Once::new()).collect(),
        })
    }

    /// The doorbell page of VM `index` on this link, interrupting `target`
    /// with `intid`.
    pub fn doorbell(
        self: &Arc<Self>,
        index: usize,
        target: Arc<dyn Ringer>,
        intid: u32,
        region: (u64, u64),
        writable: bool,
    ) -> Option<Doorbell> {
        let pending = Arc::new(AtomicU32::new(0));
        let slot = self.peers.get(index)?;
        slot.call_once(|| Peer {
            target,
            intid,
            pending: pending.clone(),
        });
        Some(Doorbell {
            link: self.clone(),
            index,
            pending,
            region,
            writable,
        })
    }
}

/// One VM's doorbell page.
pub struct Doorbell {
    link: Arc<DoorbellLink>,
    index: usize,
    pending: Arc<AtomicU32>,
    region: (u64, u64),
    writable: bool,
}

impl Doorbell {
    fn ring(&self, peer: u32) {
        let Some(p) = self.link.peers.get(peer as usize).and_then(Once::get) else {
            return;
        };
        // The bit is visible before the interrupt that announces it.
        p.pending.fetch_or(1 << self.index, Ordering::SeqCst);
        p.target.ring(p.intid);
    }
}

impl MmioDevice for Doorbell {
    fn name(&self) -> &str {
        "shmem doorbell"
    }

    fn size(&self) -> u64 {
        0x1000
    }

    fn read(&self, offset: u64, width: u8, _vcpu: usize) -> Result<u64, BusError> {
        if width != 4 || !offset.is_multiple_of(4) {
            return Err(BusError);
        }
        let (base, size) = self.region;
        Ok(match offset {
            ID => self.index as u64,
            PEERS => self.link.peers.len() as u64,
            PENDING => u64::from(self.pending.load(Ordering::SeqCst)),
            WRITABLE => u64::from(self.writable),
            REGION_LO => base & 0xffff_ffff,
            REGION_HI => base >> 32,
            SIZE_LO => size & 0xffff_ffff,
            SIZE_HI => size >> 32,
            _ => 0,
        })
    }

    fn write(&self, offset: u64, width: u8, value: u64, _vcpu: usize) -> Result<(), BusError> {
        if width != 4 || !offset.is_multiple_of(4) {
            return Err(BusError);
        }
        match offset {
            RING => self.ring(value as u32),
            ACK => {
                self.pending.fetch_and(!(value as u32), Ordering::SeqCst);
            }
            _ => {}
        }
        Ok(())
    }

    /// The VM restarts: nothing rang it yet. (The region is the link's, not
    /// the VM's: it keeps what the peers wrote.)
    fn reset(&self) {
        self.pending.store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Rec(Mutex<Vec<u32>>);
    impl Ringer for Rec {
        fn ring(&self, intid: u32) {
            self.0.lock().unwrap().push(intid);
        }
    }

    fn link3() -> (Vec<Doorbell>, Vec<Arc<Rec>>) {
        let link = DoorbellLink::new(3);
        let recs: Vec<Arc<Rec>> = (0..3).map(|_| Arc::new(Rec::default())).collect();
        let bells = (0..3)
            .map(|i| {
                link.doorbell(i, recs[i].clone(), 112, (0x7000_0000, 0x1_0000), i != 2)
                    .unwrap()
            })
            .collect();
        (bells, recs)
    }

    #[test]
    fn a_ring_interrupts_the_peer_named_and_says_who_rang() {
        let (b, r) = link3();
        b[0].write(RING, 4, 2, 0).unwrap();
        b[1].write(RING, 4, 2, 0).unwrap();
        assert_eq!(*r[2].0.lock().unwrap(), [112, 112]);
        assert!(r[0].0.lock().unwrap().is_empty() && r[1].0.lock().unwrap().is_empty());
        assert_eq!(b[2].read(PENDING, 4, 0), Ok(0b011));
        b[2].write(ACK, 4, 0b001, 0).unwrap();
        assert_eq!(b[2].read(PENDING, 4, 0), Ok(0b010));
        assert_eq!(b[0].read(PENDING, 4, 0), Ok(0));
    }

    #[test]
    fn registers_describe_the_vm_and_its_region() {
        let (b, _) = link3();
        assert_eq!(b[1].read(ID, 4, 0), Ok(1));
        assert_eq!(b[1].read(PEERS, 4, 0), Ok(3));
        assert_eq!(b[1].read(WRITABLE, 4, 0), Ok(1));
        assert_eq!(b[2].read(WRITABLE, 4, 0), Ok(0));
        assert_eq!(b[2].read(REGION_LO, 4, 0), Ok(0x7000_0000));
        assert_eq!(b[2].read(SIZE_LO, 4, 0), Ok(0x1_0000));
        assert_eq!(b[2].read(SIZE_HI, 4, 0), Ok(0));
    }

    #[test]
    fn an_index_off_the_link_and_odd_widths_do_nothing() {
        let (b, r) = link3();
        for peer in [3u64, 31, 0xffff_ffff, u64::MAX] {
            b[0].write(RING, 4, peer, 0).unwrap();
        }
        assert!(r.iter().all(|r| r.0.lock().unwrap().is_empty()));
        assert_eq!(b[0].write(RING, 1, 1, 0), Err(BusError));
        assert_eq!(b[0].read(PENDING, 8, 0), Err(BusError));
        assert_eq!(b[0].read(0x0a, 4, 0), Err(BusError));
        assert!(r[1].0.lock().unwrap().is_empty());
    }

    #[test]
    fn a_reset_forgets_the_rings() {
        let (b, _) = link3();
        b[0].write(RING, 4, 1, 0).unwrap();
        b[1].reset();
        assert_eq!(b[1].read(PENDING, 4, 0), Ok(0));
    }

    #[test]
    fn a_peer_not_built_yet_is_not_rung() {
        let link = DoorbellLink::new(2);
        let r = Arc::new(Rec::default());
        let b = link.doorbell(0, r.clone(), 112, (0, 0), true).unwrap();
        b.write(RING, 4, 1, 0).unwrap();
        assert!(r.0.lock().unwrap().is_empty());
        assert!(link.doorbell(2, r, 112, (0, 0), true).is_none());
    }
}
