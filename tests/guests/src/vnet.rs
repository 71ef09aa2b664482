//! A minimal polling driver for the virtio-net device of Tessera's first
//! link (virtio-mmio at 0x0a80_0000): queues of 8 in a caller's 32 KiB
//! area, one descriptor per buffer, for guests that test the link.

use crate::Mmio;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering};

// SAFETY: the link's virtio-mmio transport, not memory.
const DEV: Mmio = unsafe { Mmio::new(0x0a80_0000) };
const SIZE: u16 = 8;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
/// struct virtio_net_hdr with num_buffers (VERSION_1).
pub const HDR: u64 = 12;

/// The device and its two queues (0 receive, 1 transmit).
pub struct Vnet {
    area: u64,
    avail: [u16; 2],
    used_seen: [u16; 2],
}

fn put<T>(addr: u64, v: T) {
    // SAFETY: inside the caller's area or buffers (the constructor's contract).
    unsafe { write_volatile(addr as *mut T, v) }
}
fn get<T>(addr: u64) -> T {
    // SAFETY: as for `put`.
    unsafe { read_volatile(addr as *const T) }
}

impl Vnet {
    /// Resets the device and sets both queues up in `area` (32 KiB, 4 KiB
    /// aligned, this VM's RAM, used by nothing else). `None` if the device
    /// refuses.
    ///
    /// # Safety
    /// `area` as above.
    pub unsafe fn new(area: u64) -> Option<Self> {
        DEV.write32(0x70, 0);
        for i in 0..0x8000u64 / 8 {
            put::<u64>(area + i * 8, 0);
        }
        DEV.write32(0x70, 1 | 2);
        DEV.write32(0x24, 1);
        DEV.write32(0x20, 1);
        DEV.write32(0x24, 0);
        DEV.write32(0x20, 0);
        DEV.write32(0x70, 1 | 2 | 8);
        for q in 0..2u64 {
            let d = area + q * 0x4000;
            DEV.write32(0x30, q as u32);
            DEV.write32(0x38, u32::from(SIZE));
            for (off, a) in [(0x80, d), (0x90, d + 0x1000), (0xa0, d + 0x2000)] {
                DEV.write32(off, a as u32);
                DEV.write32(off + 4, (a >> 32) as u32);
            }
            DEV.write32(0x44, 1);
        }
        DEV.write32(0x70, 1 | 2 | 4 | 8);
        (DEV.read32(0x70) == 1 | 2 | 4 | 8).then_some(Self {
            area,
            avail: [0; 2],
            used_seen: [0; 2],
        })
    }

    /// Offers buffer `addr`+`len` on queue `q` (write-only for receive).
    pub fn offer(&mut self, q: usize, addr: u64, len: u32) {
        self.offer_chain(q, &[(addr, len)]);
    }

    /// Offers the buffers of `parts` as one chain on queue `q`, from the
    /// next free slot on (at most [`SIZE`] outstanding, in order).
    pub fn offer_chain(&mut self, q: usize, parts: &[(u64, u32)]) {
        let base = self.area + q as u64 * 0x4000;
        let idx = self.avail[q & 1];
        let slot = idx % SIZE;
        for (k, &(addr, len)) in parts.iter().enumerate() {
            let i = (slot + k as u16) % SIZE;
            let d = base + 16 * u64::from(i);
            let more = k + 1 < parts.len();
            put(d, addr);
            put(d + 8, len);
            put(
                d + 12,
                if q == 0 { F_WRITE } else { 0 } | if more { F_NEXT } else { 0 },
            );
            put(d + 14, (i + 1) % SIZE);
        }
        put(base + 0x1000 + 4 + 2 * u64::from(slot), slot);
        fence(Ordering::SeqCst);
        let next = idx.wrapping_add(1);
        put(base + 0x1000 + 2, next);
        self.avail[q & 1] = next;
        fence(Ordering::SeqCst);
        DEV.write32(0x50, q as u32);
    }

    /// The next buffer the device returned on queue `q`: (descriptor
    /// address, bytes written).
    pub fn next_used(&mut self, q: usize) -> Option<(u64, u32)> {
        let base = self.area + q as u64 * 0x4000;
        let seen = self.used_seen[q & 1];
        fence(Ordering::SeqCst);
        if get::<u16>(base + 0x2000 + 2) == seen {
            return None;
        }
        let e = base + 0x2000 + 4 + 8 * u64::from(seen % SIZE);
        let (id, len) = (get::<u32>(e), get::<u32>(e + 4));
        self.used_seen[q & 1] = seen.wrapping_add(1);
        Some((get::<u64>(base + 16 * u64::from(id as u16 % SIZE)), len))
    }

    /// Device status: bit 0x40 is DEVICE_NEEDS_RESET.
    pub fn status(&self) -> u32 {
        DEV.read32(0x70)
    }
}
