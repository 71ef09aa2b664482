//! `vq_hostile`: a bare-metal VM on a net link that drives its virtio-net
//! device (virtio-mmio at 0x0a80_0000, Tessera's link 0) with broken
//! virtqueues: a cyclic chain, buffers in MMIO, beyond its RAM and wrapping
//! the address space, a huge length, an index jump, a head beyond the
//! queue, an indirect descriptor, rings outside its RAM, receive buffers in
//! MMIO. Each must put its device into DEVICE_NEEDS_RESET (status bit 0x40)
//! and nothing else; a driver reset must bring it back. Sending with a
//! peer's MAC as its source must steal none of that peer's frames. Then it keeps
//! storming the device with notifications, printing `vq_hostile: still
//! alive N`. The Linux VMs on the same link must not notice.
//!
//! Only passes under the hypervisor with a net link configured.
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
    const F_INDIRECT: u16 = 4;
    /// The VM's RAM (the scenario gives it 16 MiB at the default base).
    const RAM: u64 = 0x4000_0000;
    const RAM_SIZE: u64 = 16 << 20;

    /// Rings and buffers: queue q's descriptors at q * 0x4000, its avail
    /// ring 0x1000 and used ring 0x2000 above; frames from 0x8000.
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
    fn data() -> u64 {
        base() + 0x8000
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

    /// A driver's setup: reset, VERSION_1 only, both queues at AREA.
    fn setup() -> bool {
        setup_with(0)
    }

    /// VIRTIO_NET_F_CSUM, HOST_TSO4 and HOST_TSO6: what a sender's
    /// virtio_net_hdr may then ask for.
    const OFFLOADS: u32 = 1 | (1 << 11) | (1 << 12);

    /// [`setup`], accepting feature bits `low` (0..31) as well.
    fn setup_with(low: u32) -> bool {
        DEV.write32(0x70, 0);
        for i in 0..0x8000u64 {
            put::<u8>(base() + i, 0);
        }
        DEV.write32(0x70, 1 | 2);
        DEV.write32(0x24, 1);
        DEV.write32(0x20, 1);
        DEV.write32(0x24, 0);
        DEV.write32(0x20, low);
        DEV.write32(0x70, 1 | 2 | 8);
        if status() & 8 == 0 {
            return false;
        }
        for q in 0..2u64 {
            layout(q, desc_at(q), avail_at(q), used_at(q));
            DEV.write32(0x44, 1);
        }
        DEV.write32(0x70, 1 | 2 | 4 | 8);
        status() == 1 | 2 | 4 | 8
    }

    fn layout(q: u64, d: u64, a: u64, u: u64) {
        DEV.write32(0x30, q as u32);
        DEV.write32(0x38, u32::from(SIZE));
        DEV.write32(0x80, d as u32);
        DEV.write32(0x84, (d >> 32) as u32);
        DEV.write32(0x90, a as u32);
        DEV.write32(0x94, (a >> 32) as u32);
        DEV.write32(0xa0, u as u32);
        DEV.write32(0xa4, (u >> 32) as u32);
    }

    fn desc(q: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = desc_at(q) + 16 * u64::from(i);
        put(d, addr);
        put(d + 8, len);
        put(d + 12, flags);
        put(d + 14, next);
    }

    /// Puts `head` in the avail ring and publishes index `idx`.
    fn offer(q: u64, slot: u16, head: u16, idx: u16) {
        put(avail_at(q) + 4 + 2 * u64::from(slot % SIZE), head);
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        put(avail_at(q) + 2, idx);
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }

    fn notify(q: u32) {
        DEV.write32(0x50, q);
    }

    /// One attack on the transmit queue: a fresh device, `craft`, a kick.
    fn attack(c: &mut Checker, name: &str, craft: impl FnOnce()) {
        if !setup() {
            c.fail(name, "setup failed");
            return;
        }
        craft();
        notify(1);
        let s = status();
        c.check(name, s & NEEDS_RESET != 0, format_args!("status {s:#x}"));
    }

    /// One attack on the offload header: a device with the offloads, a
    /// broadcast IPv4/TCP frame (3000 payload bytes) behind header `hdr`
    /// (flags, gso_type, gso_size, csum_start, csum_offset). The frame must
    /// be dropped and its chain returned; the device stays usable.
    fn header_attack(c: &mut Checker, name: &str, features: u32, hdr: (u8, u8, u16, u16, u16)) {
        if !setup_with(features) {
            c.fail(name, "setup failed");
            return;
        }
        let f = data();
        let (flags, gso_type, gso_size, start, offset) = hdr;
        let mut h = [0u8; 12];
        h[0] = flags;
        h[1] = gso_type;
        h[4..6].copy_from_slice(&gso_size.to_le_bytes());
        h[6..8].copy_from_slice(&start.to_le_bytes());
        h[8..10].copy_from_slice(&offset.to_le_bytes());
        // Ethernet broadcast from 02:54:53:00:00:03, IPv4 10.0.0.3 ->
        // 10.0.0.99 (nobody), TCP 5000 -> 5001.
        let mut head = [0u8; 12 + 54];
        head[..12].copy_from_slice(&h);
        head[12..26].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0x54, 0x53, 0, 0, 3, 8, 0]);
        head[26..46].copy_from_slice(&[
            0x45, 0, 0x0b, 0xe0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 3, 10, 0, 0, 99,
        ]);
        head[46..50].copy_from_slice(&[0x13, 0x88, 0x13, 0x89]);
        head[58] = 0x50;
        head[59] = 0x18;
        for (i, b) in head.iter().enumerate() {
            put::<u8>(f + i as u64, *b);
        }
        for i in 0..3000u64 {
            put::<u8>(f + 66 + i, i as u8);
        }
        desc(1, 0, f, 66 + 3000, 0, 0);
        offer(1, 0, 0, 1);
        notify(1);
        let used: u16 = get(used_at(1) + 2);
        let s = status();
        c.check(
            name,
            used == 1 && s & NEEDS_RESET == 0,
            format_args!("used index {used}, status {s:#x}"),
        );
    }

    /// linux1's MAC on the link (the scenario's second port).
    const LINUX1: [u8; 6] = [2, 0x54, 0x53, 0, 0, 2];

    /// For 20 s, sends a broadcast every 5 ms with linux1's MAC as its
    /// source while counting what arrives for that MAC: a switch that
    /// learnt it here would hand this VM linux0's frames to linux1.
    fn spoof(c: &mut Checker) {
        if !setup() {
            c.fail("vq_spoofed_mac_steals_nothing", "setup failed");
            return;
        }
        let rxbuf = |i: u16| data() + 0x1000 + 0x800 * u64::from(i);
        for i in 0..SIZE {
            desc(0, i, rxbuf(i), 1526, F_WRITE, 0);
            offer(0, i, i, i + 1);
        }
        notify(0);
        let f = data();
        for i in 0..12 + 60u64 {
            put::<u8>(f + i, 0);
        }
        let mut hdr = [0xffu8; 14];
        hdr[6..12].copy_from_slice(&LINUX1);
        hdr[12..].copy_from_slice(&[0x88, 0xb5]);
        for (i, b) in hdr.iter().enumerate() {
            put::<u8>(f + 12 + i as u64, *b);
        }
        let (mut posted, mut seen, mut tx) = (SIZE, 0u16, 0u16);
        let (mut received, mut stolen) = (0u32, 0u32);
        let deadline = counter() + ms_to_ticks(20_000);
        let mut next = 0;
        let mut s = status();
        while counter() < deadline && s & NEEDS_RESET == 0 {
            if counter() >= next {
                desc(1, 0, f, 12 + 60, 0, 0);
                offer(1, tx, 0, tx.wrapping_add(1));
                tx = tx.wrapping_add(1);
                notify(1);
                s = status();
                next = counter() + ms_to_ticks(5);
            }
            let used: u16 = get(used_at(0) + 2);
            while seen != used {
                let id = get::<u32>(used_at(0) + 4 + 8 * u64::from(seen % SIZE)) as u16 % SIZE;
                let dst: [u8; 6] = core::array::from_fn(|k| get::<u8>(rxbuf(id) + 12 + k as u64));
                received += 1;
                stolen += u32::from(dst == LINUX1);
                seen = seen.wrapping_add(1);
                offer(0, posted, id, posted.wrapping_add(1));
                posted = posted.wrapping_add(1);
                notify(0);
            }
        }
        c.check(
            "vq_spoofed_mac_steals_nothing",
            stolen == 0 && s & NEEDS_RESET == 0 && tx > 1000,
            format_args!(
                "{tx} frames sent as linux1, {received} received, {stolen} of them for linux1, status {s:#x}"
            ),
        );
    }

    tessera_guests::entry!(run);

    fn run() -> ! {
        println!("vq_hostile: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        let mut c = Checker::new("vq_hostile");
        let (magic, version, id) = (DEV.read32(0), DEV.read32(4), DEV.read32(8));
        c.check(
            "vq_device_is_virtio_net_v2",
            magic == 0x7472_6976 && version == 2 && id == 1,
            format_args!("magic {magic:#x} version {version} id {id}"),
        );
        attack(&mut c, "vq_cyclic_chain", || {
            desc(1, 0, data(), 64, F_NEXT, 1);
            desc(1, 1, data(), 64, F_NEXT, 0);
            offer(1, 0, 0, 1);
        });
        attack(&mut c, "vq_buffer_in_mmio", || {
            desc(1, 0, 0x0900_0000, 64, 0, 0);
            offer(1, 0, 0, 1);
        });
        attack(&mut c, "vq_buffer_beyond_ram", || {
            desc(1, 0, RAM + RAM_SIZE - 32, 64, 0, 0);
            offer(1, 0, 0, 1);
        });
        attack(&mut c, "vq_buffer_in_the_hypervisor", || {
            // Physical 0x4000_0000 is the hypervisor on QEMU virt; this VM's
            // IPA 0x4000_0000 is its own RAM, so name memory it does not have.
            desc(1, 0, 0x1_0000_0000, 64, 0, 0);
            offer(1, 0, 0, 1);
        });
        attack(&mut c, "vq_address_wraps", || {
            desc(1, 0, u64::MAX - 15, 64, 0, 0);
            offer(1, 0, 0, 1);
        });
        attack(&mut c, "vq_huge_length", || {
            desc(1, 0, RAM, u32::MAX, 0, 0);
            offer(1, 0, 0, 1);
        });
        attack(&mut c, "vq_index_jump", || {
            desc(1, 0, data(), 64, 0, 0);
            offer(1, 0, 0, 0x1234);
        });
        attack(&mut c, "vq_head_beyond_queue", || {
            offer(1, 0, 200, 1);
        });
        attack(&mut c, "vq_indirect_descriptor", || {
            desc(1, 0, data(), 32, F_INDIRECT, 0);
            offer(1, 0, 0, 1);
        });
        // Offload headers as hostile input: each frame is dropped (and
        // counted), the device keeps working.
        for (name, features, hdr) in [
            ("hdr_data_valid_flag", OFFLOADS, (2, 0, 0, 0, 0)),
            ("hdr_csum_not_negotiated", 0, (1, 0, 0, 34, 16)),
            ("hdr_csum_start_outside", OFFLOADS, (1, 0, 0, 0xffff, 16)),
            ("hdr_csum_offset_outside", OFFLOADS, (1, 0, 0, 34, 0x7000)),
            ("hdr_gso_size_zero", OFFLOADS, (1, 1, 0, 34, 16)),
            ("hdr_gso_size_tiny", OFFLOADS, (1, 1, 1, 34, 16)),
            ("hdr_gso_udp", OFFLOADS, (1, 3, 1448, 34, 16)),
            ("hdr_gso_ecn", OFFLOADS, (1, 0x81, 1448, 34, 16)),
            ("hdr_gso_v6_on_v4", OFFLOADS, (1, 4, 1448, 34, 16)),
            ("hdr_gso_csum_not_tcp", OFFLOADS, (1, 1, 1448, 20, 16)),
            ("hdr_gso_without_csum", OFFLOADS, (0, 1, 1448, 34, 16)),
            ("hdr_gso_not_negotiated", 1, (1, 1, 1448, 34, 16)),
        ] {
            header_attack(&mut c, name, features, hdr);
        }
        // Rings outside its RAM: refused when the queue goes ready.
        if setup() {
            DEV.write32(0x44, 0);
            layout(1, 0x0800_0000, avail_at(1), used_at(1));
            DEV.write32(0x44, 1);
            let s = status();
            c.check(
                "vq_ring_in_mmio",
                s & NEEDS_RESET != 0,
                format_args!("status {s:#x}"),
            );
        } else {
            c.fail("vq_ring_in_mmio", "setup failed");
        }
        // A notification storm on a broken device costs only this VM's exits.
        let t0 = counter();
        for _ in 0..100_000 {
            notify(1);
            notify(0);
            notify(0xffff);
        }
        let s = status();
        c.check(
            "vq_notification_storm",
            s & NEEDS_RESET != 0,
            format_args!(
                "300000 notifications in {} ms, status {s:#x}",
                (counter() - t0) / ms_to_ticks(1)
            ),
        );
        // Receive buffers in MMIO: the first frame the Linux VMs flood to
        // this port (ARP, IPv6 neighbour discovery) breaks this device only.
        if setup() {
            for i in 0..SIZE {
                desc(0, i, 0x0900_0000, 1526, F_WRITE, 0);
                offer(0, i, i, i + 1);
            }
            let deadline = counter() + ms_to_ticks(120_000);
            while status() & NEEDS_RESET == 0 && counter() < deadline {
                core::hint::spin_loop();
            }
            let s = status();
            c.check(
                "vq_rx_buffer_in_mmio",
                s & NEEDS_RESET != 0,
                format_args!("status {s:#x}"),
            );
        } else {
            c.fail("vq_rx_buffer_in_mmio", "setup failed");
        }
        // A driver reset brings the device back: a well-formed frame goes out.
        if setup() {
            let f = data();
            for i in 0..12u64 {
                put::<u8>(f + i, 0);
            }
            // Broadcast, from 02:54:53:00:00:03, EtherType 0x88b5 (local experimental).
            let frame: [u8; 14] = [
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0x54, 0x53, 0, 0, 3, 0x88, 0xb5,
            ];
            for (i, b) in frame.iter().enumerate() {
                put::<u8>(f + 12 + i as u64, *b);
            }
            desc(1, 0, f, 12 + 60, 0, 0);
            offer(1, 0, 0, 1);
            notify(1);
            let used: u16 = get(used_at(1) + 2);
            let s = status();
            c.check(
                "vq_device_works_after_reset",
                used == 1 && s & NEEDS_RESET == 0,
                format_args!("used index {used}, status {s:#x}"),
            );
        } else {
            c.fail("vq_device_works_after_reset", "setup failed");
        }
        spoof(&mut c);
        c.finish();
        // Forever: break the device again and storm it.
        setup();
        desc(1, 0, data(), 64, F_NEXT, 0);
        offer(1, 0, 0, 1);
        notify(1);
        let mut n = 0u64;
        loop {
            for _ in 0..20_000 {
                notify(1);
            }
            n += 1;
            if n.is_multiple_of(10) {
                println!("vq_hostile: still alive {n}");
            }
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
