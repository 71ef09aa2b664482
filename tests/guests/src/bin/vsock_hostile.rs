//! `vsock_hostile`: a bare-metal VM on a vsock link (its virtio-mmio
//! transport at 0x0a80_0000, Tessera's link 0; CID 5) next to a Linux pair.
//! It sends packets with a spoofed `src_cid` (dropped, no answer), to a CID
//! not on the link and with a huge length (each answered with an RST from
//! the hypervisor), asks linux1 (CID 4) for a port nobody listens on
//! (an RST comes back), breaks its transmit queue with a cyclic
//! chain (only its device needs a reset), and comes back with a driver
//! reset (TRANSPORT_RESET on its event queue), sends to CID 99 with no
//! receive buffer posted (the chain waits; the RST comes with the first
//! buffer, never lost). Then it never posts a
//! receive buffer again and storms its device with notifications, printing
//! `vsock_hostile: still alive N`: packets the pair sends it are held or
//! refused, never waited for. The pair must not notice.
//!
//! Only passes under the hypervisor with a vsock link configured.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::cell::UnsafeCell;
    use core::ptr::{read_volatile, write_volatile};
    use tessera_guests::{counter, current_el, mpidr, ms_to_ticks, println, Checker, Mmio};

    // SAFETY: the link's virtio-mmio transport, not memory.
    const DEV: Mmio = unsafe { Mmio::new(0x0a80_0000) };
    const SIZE: u16 = 8;
    const NEEDS_RESET: u32 = 0x40;
    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;
    const HDR: u64 = 44;
    const ME: u64 = 5;
    const OP_REQUEST: u16 = 1;
    const OP_RST: u16 = 3;

    /// Queue q's descriptors at q * 0x4000, avail 0x1000 and used 0x2000
    /// above; packets from 0xc000.
    #[repr(C, align(4096))]
    struct Area(UnsafeCell<[u8; 0x1_0000]>);
    // SAFETY: one vCPU; the device is the only other party.
    unsafe impl Sync for Area {}
    static AREA: Area = Area(UnsafeCell::new([0; 0x1_0000]));

    fn base() -> u64 {
        AREA.0.get() as u64
    }
    fn desc_at(q: u64) -> u64 {
        base() + q * 0x4000
    }
    fn avail_at(q: u64) -> u64 {
        desc_at(q) + 0x1000
    }
    fn used_at(q: u64) -> u64 {
        desc_at(q) + 0x2000
    }
    /// Transmit packet i, receive buffer i, event buffer.
    fn tx_buf() -> u64 {
        base() + 0xc000
    }
    fn rx_buf(i: u16) -> u64 {
        base() + 0xd000 + 0x100 * u64::from(i)
    }
    fn ev_buf() -> u64 {
        base() + 0xf000
    }

    fn put<T>(addr: u64, v: T) {
        // SAFETY: inside AREA (callers pass addresses derived from it).
        unsafe { write_volatile(addr as *mut T, v) }
    }
    fn get<T>(addr: u64) -> T {
        // SAFETY: as for `put`.
        unsafe { read_volatile(addr as *const T) }
    }

    fn status() -> u32 {
        DEV.read32(0x70)
    }

    /// Driver state: next avail index per queue, used entries seen.
    struct Drv {
        avail: [u16; 3],
        seen: [u16; 3],
    }

    /// Reset, VERSION_1 only, three queues at AREA; `rx` receive buffers
    /// posted (0x100 bytes each) and one event buffer.
    fn setup(rx: u16) -> Option<Drv> {
        DEV.write32(0x70, 0);
        for i in 0..0x1_0000u64 {
            put::<u8>(base() + i, 0);
        }
        DEV.write32(0x70, 1 | 2);
        DEV.write32(0x24, 1);
        DEV.write32(0x20, 1);
        DEV.write32(0x24, 0);
        DEV.write32(0x20, 0);
        DEV.write32(0x70, 1 | 2 | 8);
        if status() & 8 == 0 {
            return None;
        }
        for q in 0..3u64 {
            DEV.write32(0x30, q as u32);
            DEV.write32(0x38, u32::from(SIZE));
            for (reg, a) in [(0x80, desc_at(q)), (0x90, avail_at(q)), (0xa0, used_at(q))] {
                DEV.write32(reg, a as u32);
                DEV.write32(reg + 4, (a >> 32) as u32);
            }
            DEV.write32(0x44, 1);
        }
        DEV.write32(0x70, 1 | 2 | 4 | 8);
        if status() != 1 | 2 | 4 | 8 {
            return None;
        }
        let mut d = Drv {
            avail: [0; 3],
            seen: [0; 3],
        };
        for i in 0..rx {
            desc(0, i, rx_buf(i), 0x100, F_WRITE, 0);
            d.offer(0, i);
        }
        desc(2, 0, ev_buf(), 4, F_WRITE, 0);
        put::<u32>(ev_buf(), 0xffff_ffff);
        d.offer(2, 0);
        notify(0);
        notify(2);
        Some(d)
    }

    fn desc(q: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = desc_at(q) + 16 * u64::from(i);
        put(d, addr);
        put(d + 8, len);
        put(d + 12, flags);
        put(d + 14, next);
    }

    fn notify(q: u32) {
        DEV.write32(0x50, q);
    }

    impl Drv {
        fn offer(&mut self, q: usize, head: u16) {
            let a = avail_at(q as u64);
            put(a + 4 + 2 * u64::from(self.avail[q] % SIZE), head);
            self.avail[q] = self.avail[q].wrapping_add(1);
            core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
            put(a + 2, self.avail[q]);
            core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        }

        /// Sends a header (src, dst, ports, len, op) in a chain of `chain`
        /// bytes.
        fn send(&mut self, src: u64, dst: u64, dst_port: u32, len: u32, op: u16, chain: u32) {
            let p = tx_buf();
            put(p, src);
            put(p + 8, dst);
            put(p + 16, 7000u32);
            put(p + 20, dst_port);
            put(p + 24, len);
            put(p + 28, 1u16);
            put(p + 30, op);
            put(p + 32, 0u32);
            put(p + 36, 65536u32);
            put(p + 40, 0u32);
            desc(1, 0, p, chain, 0, 0);
            self.offer(1, 0);
            notify(1);
        }

        /// A new used entry of queue q: (id, len).
        fn used(&mut self, q: usize) -> Option<(u32, u32)> {
            let u = used_at(q as u64);
            let idx: u16 = get(u + 2);
            if idx == self.seen[q] {
                return None;
            }
            let e = u + 4 + 8 * u64::from(self.seen[q] % SIZE);
            self.seen[q] = self.seen[q].wrapping_add(1);
            Some((get(e), get(e + 4)))
        }

        /// The next received packet's (src_cid, op), waiting up to `ms`.
        fn receive(&mut self, ms: u64) -> Option<(u64, u16)> {
            let deadline = counter() + ms_to_ticks(ms);
            loop {
                if let Some((id, len)) = self.used(0) {
                    let b = rx_buf(id as u16);
                    let r = (get::<u64>(b), get::<u16>(b + 30));
                    // Give the buffer back.
                    self.offer(0, id as u16);
                    notify(0);
                    return (u64::from(len) >= HDR).then_some(r);
                }
                if counter() > deadline {
                    return None;
                }
                core::hint::spin_loop();
            }
        }
    }

    tessera_guests::entry!(run);

    fn run() -> ! {
        println!("vsock_hostile: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        let mut c = Checker::new("vsock_hostile");
        let (magic, version, id) = (DEV.read32(0), DEV.read32(4), DEV.read32(8));
        let cid = u64::from(DEV.read32(0x100)) | u64::from(DEV.read32(0x104)) << 32;
        c.check(
            "vsock_device_is_virtio_vsock_v2_with_cid_5",
            magic == 0x7472_6976 && version == 2 && id == 19 && cid == ME,
            format_args!("magic {magic:#x} version {version} id {id} cid {cid}"),
        );
        let Some(mut d) = setup(4) else {
            c.fail("vsock_setup", "setup failed");
            c.finish();
            loop {
                core::hint::spin_loop();
            }
        };
        // The driver's start after a reset: TRANSPORT_RESET (id 0).
        let ev = d.used(2);
        let evid: u32 = get(ev_buf());
        c.check(
            "vsock_transport_reset_event_on_start",
            matches!(ev, Some((0, 4))) && evid == 0,
            format_args!("used {ev:?}, id {evid:#x}"),
        );
        // Spoofed: from linux0's CID to linux1. Dropped, not answered.
        d.send(3, 4, 9999, 0, OP_REQUEST, HDR as u32);
        let tx = d.used(1);
        let r = d.receive(2000);
        c.check(
            "vsock_spoofed_src_cid_dropped",
            tx.is_some() && r.is_none() && status() & NEEDS_RESET == 0,
            format_args!("tx {tx:?}, answer {r:?}, status {:#x}", status()),
        );
        // To a CID not on the link: the hypervisor's RST, as from CID 99.
        d.send(ME, 99, 1, 0, OP_REQUEST, HDR as u32);
        d.used(1);
        let r = d.receive(2000);
        c.check(
            "vsock_bogus_dst_cid_gets_rst",
            r == Some((99, OP_RST)),
            format_args!("answer {r:?}"),
        );
        // A huge length in a 44-byte chain: refused with an RST.
        d.send(ME, 4, 9999, 0x7fff_0000, 5, HDR as u32);
        d.used(1);
        let r = d.receive(2000);
        c.check(
            "vsock_huge_len_gets_rst",
            r == Some((4, OP_RST)) && status() & NEEDS_RESET == 0,
            format_args!("answer {r:?}, status {:#x}", status()),
        );
        // A request to linux1 for a port nobody listens on: an RST from
        // CID 4 (linux1's own, or the hypervisor's while linux1 is down).
        d.send(ME, 4, 9999, 0, OP_REQUEST, HDR as u32);
        d.used(1);
        let r = d.receive(5000);
        c.check(
            "vsock_request_to_linux1_gets_rst",
            r == Some((4, OP_RST)),
            format_args!("answer {r:?}"),
        );
        // A cyclic transmit chain: this device, and only it, needs a reset.
        desc(1, 1, tx_buf(), 64, F_NEXT, 2);
        desc(1, 2, tx_buf(), 64, F_NEXT, 1);
        d.offer(1, 1);
        notify(1);
        let s = status();
        c.check(
            "vsock_cyclic_chain_needs_reset",
            s & NEEDS_RESET != 0,
            format_args!("status {s:#x}"),
        );
        // A driver reset brings it back.
        let ok = setup(4).is_some_and(|mut d| {
            d.send(ME, 99, 1, 0, OP_REQUEST, HDR as u32);
            d.receive(2000) == Some((99, OP_RST))
        });
        c.check(
            "vsock_device_works_after_reset",
            ok,
            "RST from CID 99 after the reset",
        );
        // Refused with no receive buffer posted: the RST is not lost, the
        // chain waits in the ring until a buffer comes.
        let mut got = (true, false, None);
        let ok = setup(0).is_some_and(|mut d| {
            d.send(ME, 99, 1, 0, OP_REQUEST, HDR as u32);
            let waiting = d.used(1).is_none();
            desc(0, 0, rx_buf(0), 0x100, F_WRITE, 0);
            d.offer(0, 0);
            notify(0);
            let back = d.used(1).is_some();
            let r = d.receive(2000);
            got = (waiting, back, r);
            waiting && back && r == Some((99, OP_RST))
        });
        c.check(
            "vsock_rst_waits_for_a_receive_buffer",
            ok,
            format_args!("(chain waiting, back after the refill, answer) {got:?}"),
        );
        c.finish();
        // Forever: a healthy device that never posts a receive buffer,
        // stormed with notifications (each rx notify makes the hypervisor
        // look for packets held for it).
        let _ = setup(0);
        let mut n = 0u64;
        loop {
            for _ in 0..20_000 {
                notify(0);
                notify(1);
            }
            n += 1;
            if n.is_multiple_of(10) {
                println!("vsock_hostile: still alive {n}");
            }
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
