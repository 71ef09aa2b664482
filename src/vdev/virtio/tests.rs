//! The transport and the net switch driven the way Linux's drivers drive
//! them, through the MMIO registers, over fake guest RAM.

use super::mmio::{F_VERSION_1, INT_CONFIG, INT_USED, STATUS_FEATURES_OK, STATUS_NEEDS_RESET};
use super::net::{NetDevice, NetPort, Switch, HDR};
use super::queue::testmem::VecMemory;
use super::queue::{GuestMemory, OutsideRam};
use crate::vdev::MmioDevice;
use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::vec::Vec;

const RAM: u64 = 0x4000_0000;
const SIZE: u16 = 8;

/// Guest RAM shared between the test (the driver) and the device.
#[derive(Clone)]
struct Shared(Arc<VecMemory>);

impl GuestMemory for Shared {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutsideRam> {
        self.0.read(gpa, buf)
    }
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), OutsideRam> {
        self.0.write(gpa, data)
    }
    fn contains(&self, gpa: u64, len: u64) -> bool {
        self.0.contains(gpa, len)
    }
}

/// Guest RAM that counts descriptor reads (queue 0's table) and acts
/// like lazily scrubbed RAM: 64 KiB blocks from [`LAZY_FROM`] on are
/// "scrubbed" (counted) by the first read or write or prepare.
struct Counting {
    mem: Arc<VecMemory>,
    size: u16,
    desc_reads: Arc<AtomicUsize>,
    scrubs: Arc<AtomicUsize>,
    scrubbed: Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
}

const LAZY_FROM: u64 = RAM + 0xc_0000;

impl Counting {
    fn blocks(gpa: u64, len: u64) -> impl Iterator<Item = u64> {
        let last = gpa + len.max(1) - 1;
        (gpa.max(LAZY_FROM) >> 16..=last >> 16).filter(move |_| last >= LAZY_FROM)
    }
    fn scrub(&self, gpa: u64, len: u64) {
        let mut s = self.scrubbed.lock().unwrap();
        for b in Self::blocks(gpa, len) {
            if s.insert(b) {
                self.scrubs.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl GuestMemory for Counting {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutsideRam> {
        let (d, _, _) = ring(0);
        if (d..d + 16 * u64::from(self.size)).contains(&gpa) {
            self.desc_reads.fetch_add(1, Ordering::Relaxed);
        }
        self.scrub(gpa, buf.len() as u64);
        self.mem.read(gpa, buf)
    }
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), OutsideRam> {
        self.scrub(gpa, data.len() as u64);
        self.mem.write(gpa, data)
    }
    fn contains(&self, gpa: u64, len: u64) -> bool {
        self.mem.contains(gpa, len)
    }
    fn ready(&self, gpa: u64, len: u64) -> bool {
        let s = self.scrubbed.lock().unwrap();
        self.contains(gpa, len) && Self::blocks(gpa, len).all(|b| s.contains(&b))
    }
    fn prepare(&self, gpa: u64, len: u64) {
        self.scrub(gpa, len);
    }
}

/// A minimal virtio-net driver: queue 0 (rx) and 1 (tx) at fixed places.
struct Driver {
    dev: Arc<NetDevice>,
    mem: Arc<VecMemory>,
    size: u16,
    desc_reads: Arc<AtomicUsize>,
    scrubs: Arc<AtomicUsize>,
    avail: [u16; 2],
    used_seen: [u16; 2],
}

fn ring(q: usize) -> (u64, u64, u64) {
    let base = RAM + 0x1_0000 * q as u64;
    (base, base + 0x4000, base + 0x6000)
}

impl Driver {
    fn new(switch: &Arc<Switch>, slot: usize, mac: u8) -> Self {
        let mem = Arc::new(VecMemory::new(RAM, 0x10_0000));
        let port = NetPort::new([2, 0, 0, 0, 0, mac], switch.clone(), slot).unwrap();
        let dev = Arc::new(NetDevice::new("vm", port, Box::new(Shared(mem.clone())), None));
        switch.attach(slot, dev.clone());
        Self {
            dev,
            mem,
            size: SIZE,
            desc_reads: Arc::default(),
            scrubs: Arc::default(),
            avail: [0; 2],
            used_seen: [0; 2],
        }
    }

    fn w(&self, off: u64, v: u32) {
        self.dev.write(off, 4, u64::from(v), 0).unwrap();
    }
    fn r(&self, off: u64) -> u32 {
        self.dev.read(off, 4, 0).unwrap() as u32
    }

    /// The probe sequence of Linux's virtio_mmio + virtio_net.
    fn up(self, features: u64) -> Self {
        self.w(0x70, 0);
        self.w(0x70, 1 | 2);
        self.w(0x24, 0);
        self.w(0x20, features as u32);
        self.w(0x24, 1);
        self.w(0x20, (features >> 32) as u32);
        self.w(0x70, 1 | 2 | 8);
        assert_ne!(self.r(0x70) & STATUS_FEATURES_OK, 0);
        for q in 0..2u32 {
            let (d, a, u) = ring(q as usize);
            self.w(0x30, q);
            assert_eq!(self.r(0x34), u32::from(super::queue::MAX_SIZE));
            self.w(0x38, u32::from(self.size));
            self.w(0x80, d as u32);
            self.w(0x84, (d >> 32) as u32);
            self.w(0x90, a as u32);
            self.w(0x94, 0);
            self.w(0xa0, u as u32);
            self.w(0xa4, 0);
            self.w(0x44, 1);
            assert_eq!(self.r(0x44), 1);
        }
        self.w(0x70, 1 | 2 | 4 | 8);
        self
    }

    fn desc(&self, q: usize, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = Vec::new();
        d.extend_from_slice(&addr.to_le_bytes());
        d.extend_from_slice(&len.to_le_bytes());
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&next.to_le_bytes());
        self.mem.put(ring(q).0 + 16 * u64::from(i), &d);
    }

    fn offer(&mut self, q: usize, head: u16) {
        let a = ring(q).1;
        self.mem.put(
            a + 4 + 2 * u64::from(self.avail[q] % self.size),
            &head.to_le_bytes(),
        );
        self.avail[q] = self.avail[q].wrapping_add(1);
        self.mem.put(a + 2, &self.avail[q].to_le_bytes());
    }

    /// Posts receive buffer `i` of `len` bytes.
    fn post_rx(&mut self, i: u16, len: u32) {
        self.desc(0, i, RAM + 0x8_0000 + 0x1_0000 * u64::from(i), len, 2, 0);
        self.offer(0, i);
    }

    /// Sends `frame` (a virtio header is put in front) from tx slot `i`.
    fn send(&mut self, i: u16, frame: &[u8]) {
        let at = RAM + 0x4_0000 + 0x1_0000 * u64::from(i % 4);
        let mut b = std::vec![0u8; HDR];
        b.extend_from_slice(frame);
        self.mem.put(at, &b);
        self.desc(1, i, at, b.len() as u32, 0, 0);
        self.offer(1, i);
        self.w(0x50, 1);
    }

    /// New used entries of queue `q`: (id, len).
    fn used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let u = ring(q).2;
        let idx = u16::from_le_bytes(self.mem.get(u + 2, 2).try_into().unwrap());
        let mut out = Vec::new();
        while self.used_seen[q] != idx {
            let e = self
                .mem
                .get(u + 4 + 8 * u64::from(self.used_seen[q] % self.size), 8);
            out.push((
                u32::from_le_bytes(e[..4].try_into().unwrap()),
                u32::from_le_bytes(e[4..].try_into().unwrap()),
            ));
            self.used_seen[q] = self.used_seen[q].wrapping_add(1);
        }
        out
    }

    fn rx_bytes(&self, i: u16, len: usize) -> Vec<u8> {
        self.mem.get(RAM + 0x8_0000 + 0x1_0000 * u64::from(i), len)
    }
}

const BASIC: u64 = F_VERSION_1 | (1 << 5) | (1 << 16);

fn frame(dst: u8, src: u8, body: &[u8]) -> Vec<u8> {
    let mut f = std::vec![2, 0, 0, 0, 0, dst, 2, 0, 0, 0, 0, src, 0x08, 0x00];
    f.extend_from_slice(body);
    f
}

#[test]
fn the_transport_identifies_as_a_version_2_network_device() {
    let sw = Switch::new(2);
    let d = Driver::new(&sw, 0, 1);
    assert_eq!(d.r(0x000), 0x7472_6976);
    assert_eq!(d.r(0x004), 2);
    assert_eq!(d.r(0x008), 1);
    d.w(0x14, 1);
    assert_eq!(d.r(0x10) & 1, 1, "VIRTIO_F_VERSION_1 offered");
    d.w(0x14, 0);
    let f = d.r(0x10);
    assert_eq!(f & (1 << 28), 0, "no indirect descriptors offered");
    assert_ne!(f & (1 << 5), 0, "a MAC");
    // The MAC and link-up status in the configuration space, byte-wise.
    let mac: Vec<u8> = (0..6)
        .map(|i| d.dev.read(0x100 + i, 1, 0).unwrap() as u8)
        .collect();
    assert_eq!(mac, [2, 0, 0, 0, 0, 1]);
    assert_eq!(d.dev.read(0x106, 2, 0), Ok(1));
    // Registers are 32-bit only.
    assert!(d.dev.read(0x070, 2, 0).is_err());
    assert!(d.dev.write(0x072, 4, 0, 0).is_err());
}

#[test]
fn features_ok_needs_version_1_and_nothing_unoffered() {
    let sw = Switch::new(2);
    let d = Driver::new(&sw, 0, 1);
    for (lo, hi) in [(1u32 << 5, 0u32), (1 << 28, 1), (0, 1 | 2)] {
        d.w(0x70, 0);
        d.w(0x70, 3);
        d.w(0x24, 0);
        d.w(0x20, lo);
        d.w(0x24, 1);
        d.w(0x20, hi);
        d.w(0x70, 3 | 8);
        assert_eq!(d.r(0x70) & STATUS_FEATURES_OK, 0, "{lo:#x} {hi:#x}");
    }
}

#[test]
fn a_frame_reaches_the_peer_with_a_header_and_an_interrupt() {
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(BASIC);
    let mut b = Driver::new(&sw, 1, 2).up(BASIC);
    b.post_rx(0, 1526);
    let f = frame(2, 1, b"ping");
    a.send(0, &f);
    assert_eq!(a.used(1), [(0, 0)], "the sender's buffer comes back");
    assert_eq!(b.used(0), [(0, (HDR + f.len()) as u32)]);
    let got = b.rx_bytes(0, HDR + f.len());
    assert_eq!(&got[HDR..], &f[..]);
    assert_eq!(&got[10..12], &[1, 0], "num_buffers 1");
    assert_eq!(b.r(0x60) & INT_USED, INT_USED);
    b.w(0x64, INT_USED);
    assert_eq!(b.r(0x60), 0);
}

#[test]
fn without_a_posted_buffer_the_frame_is_dropped_and_the_sender_goes_on() {
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(BASIC);
    let mut b = Driver::new(&sw, 1, 2).up(BASIC);
    a.send(0, &frame(2, 1, b"lost"));
    assert_eq!(a.used(1).len(), 1);
    assert!(b.used(0).is_empty());
    assert_eq!(
        b.dev
            .device
            .counters
            .dropped_no_buffer
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Too small a buffer: dropped too, and the buffer returned empty.
    b.post_rx(0, 20);
    a.send(1, &frame(2, 1, &[7; 100]));
    assert_eq!(b.used(0), [(0, 0)]);
}

#[test]
fn a_stopped_vms_device_takes_no_more_frames() {
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(BASIC);
    let mut b = Driver::new(&sw, 1, 2).up(BASIC);
    b.post_rx(0, 1526);
    b.post_rx(1, 1526);
    a.send(0, &frame(2, 1, b"live"));
    assert_eq!(b.used(0).len(), 1);
    // B's VM stops (what its MMIO bus does then): its posted buffer is
    // never written, the frame dropped, the sender goes on.
    let mut bus = crate::vm::mmio::MmioBus::default();
    bus.add(0x0a00_0000, Box::new(b.dev.clone())).unwrap();
    bus.stop();
    a.send(1, &frame(2, 1, b"dead"));
    assert_eq!(a.used(1).len(), 2);
    assert!(b.used(0).is_empty(), "nothing delivered into a stopped VM");
    assert_eq!(
        b.dev
            .device
            .counters
            .dropped_no_buffer
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_large_frame_spans_merged_receive_buffers() {
    let sw = Switch::new(2);
    let mrg = BASIC | (1 << 15) | (1 << 3);
    let mut a = Driver::new(&sw, 0, 1).up(mrg);
    let mut b = Driver::new(&sw, 1, 2).up(mrg);
    for i in 0..3 {
        b.post_rx(i, 2048);
    }
    let body: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let f = frame(2, 1, &body);
    a.send(0, &f);
    let used = b.used(0);
    assert_eq!(used, [(0, 2048), (1, 2048), (2, (HDR + f.len() - 4096) as u32)]);
    let mut got = b.rx_bytes(0, 2048);
    got.extend(b.rx_bytes(1, 2048));
    got.extend(b.rx_bytes(2, HDR + f.len() - 4096));
    assert_eq!(&got[10..12], &[3, 0], "num_buffers 3");
    assert_eq!(&got[HDR..], &f[..]);
}

#[test]
fn a_hostile_queue_resets_only_its_own_device() {
    let sw = Switch::new(3);
    let mut a = Driver::new(&sw, 0, 1).up(BASIC);
    let mut b = Driver::new(&sw, 1, 2).up(BASIC);
    let mut c = Driver::new(&sw, 2, 3).up(BASIC);
    // A posts a cyclic transmit chain.
    a.desc(1, 0, RAM + 0x4_0000, 64, 1, 1);
    a.desc(1, 1, RAM + 0x4_0000, 64, 1, 0);
    a.offer(1, 0);
    a.w(0x50, 1);
    assert_ne!(a.r(0x70) & STATUS_NEEDS_RESET, 0);
    assert_ne!(a.r(0x60) & INT_CONFIG, 0);
    // Further notifications do nothing (a storm costs only A's exits).
    for _ in 0..1000 {
        a.w(0x50, 1);
    }
    // B and C still talk.
    c.post_rx(0, 1526);
    b.send(0, &frame(3, 2, b"still here"));
    assert_eq!(c.used(0).len(), 1);
    assert_eq!(b.r(0x70) & STATUS_NEEDS_RESET, 0);
    // A receive ring of B pointing outside its RAM resets B's device, not
    // C's that sent to it.
    b.desc(0, 1, 0x0900_0000, 1526, 2, 0);
    b.offer(0, 1);
    c.send(0, &frame(2, 3, b"to b"));
    assert_ne!(b.r(0x70) & STATUS_NEEDS_RESET, 0);
    assert_eq!(c.r(0x70) & STATUS_NEEDS_RESET, 0);
    assert_eq!(c.used(1).len(), 1);
    // A driver reset brings A back.
    let mut a = a.up(BASIC);
    a.post_rx(0, 1526);
    c.send(1, &frame(1, 3, b"welcome back"));
    assert_eq!(a.used(0).len(), 1);
}

#[test]
fn a_switch_learns_macs_and_sends_unicast_to_one_port_only() {
    let sw = Switch::new(3);
    let mut a = Driver::new(&sw, 0, 1).up(BASIC);
    let mut b = Driver::new(&sw, 1, 2).up(BASIC);
    let mut c = Driver::new(&sw, 2, 3).up(BASIC);
    for d in [&mut a, &mut b, &mut c] {
        for i in 0..4 {
            d.post_rx(i, 1526);
        }
    }
    // A port's own MAC is known before it ever sent: C alone gets it.
    a.send(0, &frame(3, 1, b"to c"));
    assert_eq!((b.used(0).len(), c.used(0).len()), (0, 1));
    // Unknown destination (a MAC behind B's bridge): flooded to B and C.
    a.send(1, &frame(9, 1, b"who"));
    assert_eq!((b.used(0).len(), c.used(0).len()), (1, 1));
    // B answers from it: learnt, and A's own MAC goes to A only.
    b.send(0, &frame(1, 9, b"me"));
    assert_eq!((a.used(0).len(), c.used(0).len()), (1, 0));
    // Now A to that MAC reaches B only.
    a.send(2, &frame(9, 1, b"hi b"));
    assert_eq!((b.used(0).len(), c.used(0).len()), (1, 0));
    // Broadcast reaches everybody else.
    let mut bc = frame(0, 1, b"all");
    bc[..6].copy_from_slice(&[0xff; 6]);
    a.send(3, &bc);
    assert_eq!((b.used(0).len(), c.used(0).len()), (1, 1));
}

#[test]
fn a_port_cannot_take_over_another_ports_mac() {
    let sw = Switch::new(3);
    let mut a = Driver::new(&sw, 0, 1).up(BASIC);
    let mut b = Driver::new(&sw, 1, 2).up(BASIC);
    let mut c = Driver::new(&sw, 2, 3).up(BASIC);
    for d in [&mut a, &mut b, &mut c] {
        for i in 0..4 {
            d.post_rx(i, 1526);
        }
    }
    // C sends as B (to A, and broadcast): dropped, counted, nothing learnt.
    c.send(0, &frame(1, 2, b"i am b"));
    let mut bc = frame(0, 2, b"i am b, everybody");
    bc[..6].copy_from_slice(&[0xff; 6]);
    c.send(1, &bc);
    assert_eq!((a.used(0).len(), b.used(0).len()), (0, 0));
    assert_eq!(c.dev.device.counters.dropped_spoofed.load(Ordering::Relaxed), 2);
    assert_eq!(c.used(1).len(), 2, "the spoofed frames' buffers go back");
    // What A sends to B still reaches B, not C.
    a.send(0, &frame(2, 1, b"for b only"));
    assert_eq!((b.used(0).len(), c.used(0).len()), (1, 0));
    assert_eq!(c.dev.device.counters.dropped_spoofed.load(Ordering::Relaxed), 2);
}

#[test]
fn a_device_reset_quiesces_the_queues() {
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(BASIC);
    let mut b = Driver::new(&sw, 1, 2).up(BASIC);
    b.post_rx(0, 1526);
    b.w(0x70, 0);
    b.w(0x30, 0);
    assert_eq!(b.r(0x44), 0);
    a.send(0, &frame(2, 1, b"after reset"));
    assert!(b.used(0).is_empty());
    assert_eq!(b.rx_bytes(0, 16), [0; 16]);
    // The VM's reset (MmioDevice::reset) does the same.
    let mut b = b.up(BASIC);
    b.post_rx(1, 1526);
    b.dev.reset();
    a.send(1, &frame(2, 1, b"after vm reset"));
    assert!(b.used(0).is_empty());
}

#[test]
fn frames_that_are_too_short_or_too_long_are_dropped() {
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(BASIC);
    let mut b = Driver::new(&sw, 1, 2).up(BASIC);
    b.post_rx(0, 1526);
    a.send(0, &[1, 2, 3]);
    assert_eq!(a.used(1).len(), 1);
    assert!(b.used(0).is_empty());
    // A chain claiming 1 MiB (inside its RAM): not a frame.
    a.desc(1, 1, RAM, 0x10_0000, 0, 0);
    a.offer(1, 1);
    a.w(0x50, 1);
    assert_eq!(a.used(1).len(), 1);
    assert!(b.used(0).is_empty());
    assert_eq!(a.r(0x70) & STATUS_NEEDS_RESET, 0);
}

#[test]
fn delivery_does_not_wait_for_the_receivers_register_lock() {
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(BASIC);
    let mut b = Driver::new(&sw, 1, 2).up(BASIC);
    b.post_rx(0, 1526);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let held = b.dev.clone();
    // B's driver is mid-access (holding its register lock) while A sends.
    let guard = held.transport.hold_registers();
    let sender = std::thread::spawn(move || {
        a.send(0, &frame(2, 1, b"while b is busy"));
        done_tx.send(()).unwrap();
        a
    });
    let finished = done_rx.recv_timeout(std::time::Duration::from_secs(2)).is_ok();
    drop(guard);
    assert!(finished, "the sender waited for the receiver's register lock");
    sender.join().unwrap();
    assert_eq!(b.used(0).len(), 1);
}

// ---------------------------------------------------------------------------
// Offloads, whole-frame publishing and the per-exit budget.

use super::net::{MAX_FRAME, TX_BUDGET};
use super::net_hdr::testframe::{tcp, tcp_ok};
use super::net_hdr::{self as nh, NetHdr};

const OFFLOADING: u64 = BASIC | nh::OFFLOADS | (1 << 15);

impl Driver {
    /// Queues `frame` behind header `h` in tx slot `i` without notifying.
    fn queue_tx(&mut self, i: u16, h: &NetHdr, frame: &[u8]) {
        let at = RAM + 0x4_0000 + 0x1_0000 * u64::from(i % 4);
        let mut b = h.bytes(0).to_vec();
        b.extend_from_slice(frame);
        self.mem.put(at, &b);
        self.desc(1, i, at, b.len() as u32, 0, 0);
        self.offer(1, i);
    }
    fn send_with(&mut self, i: u16, h: &NetHdr, frame: &[u8]) {
        self.queue_tx(i, h, frame);
        self.w(0x50, 1);
    }
    /// The header and frame received in buffer `i` (used length `len`).
    fn rx(&self, i: u16, len: u32) -> (NetHdr, Vec<u8>) {
        let b = self.rx_bytes(i, len as usize);
        (NetHdr::parse(b[..10].try_into().unwrap()), b[HDR..].to_vec())
    }
}

/// NEEDS_CSUM for the TCP checksum of an IPv4 frame.
fn partial() -> NetHdr {
    NetHdr {
        flags: nh::NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 16,
        ..NetHdr::default()
    }
}

#[test]
fn offloads_both_peers_negotiated_pass_in_the_header() {
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(OFFLOADING);
    let mut b = Driver::new(&sw, 1, 2).up(OFFLOADING);
    b.post_rx(0, 0x1_0000);
    let f = tcp(false, 0, b"partial checksum", 0x18);
    a.send_with(0, &partial(), &f);
    let u = b.used(0);
    assert_eq!(u.len(), 1);
    let (h, got) = b.rx(0, u[0].1);
    assert_eq!((h.flags, h.csum_start, h.csum_offset), (nh::NEEDS_CSUM, 34, 16));
    assert_eq!(got, f, "the frame as sent, checksum still partial");
    assert!(!tcp_ok(&got));
}

#[test]
fn a_receiver_without_guest_csum_gets_the_checksum_completed() {
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(OFFLOADING);
    let mut b = Driver::new(&sw, 1, 2).up(BASIC | (1 << 15));
    b.post_rx(0, 0x1_0000);
    let f = tcp(false, 0, b"partial checksum, odd length", 0x18);
    a.send_with(0, &partial(), &f);
    let u = b.used(0);
    assert_eq!(u.len(), 1);
    let (h, got) = b.rx(0, u[0].1);
    assert_eq!(h, NetHdr::default());
    assert!(tcp_ok(&got), "checksum completed by the hypervisor");
    assert_eq!(got[..50], f[..50]);
    assert_eq!(got[52..], f[52..]);
    assert_eq!(
        b.dev
            .device
            .counters
            .csum_completed
            .load(core::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_receiver_without_guest_tso_gets_segments() {
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(OFFLOADING);
    // Offloads but TSO: checksums only.
    let mut b = Driver::new(&sw, 1, 2).up(BASIC | (1 << 15) | nh::F_CSUM | nh::F_GUEST_CSUM);
    for i in 0..4 {
        b.post_rx(i, 0x1_0000);
    }
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
    let f = tcp(false, 0, &payload, 0x19);
    let h = NetHdr {
        gso_type: nh::GSO_TCPV4,
        gso_size: 1448,
        ..partial()
    };
    a.send_with(0, &h, &f);
    let u = b.used(0);
    assert_eq!(u.len(), 3, "3000 bytes in 1448-byte segments");
    let mut joined = Vec::new();
    for (k, &(id, len)) in u.iter().enumerate() {
        let (h, s) = b.rx(id as u16, len);
        assert_eq!(h, NetHdr::default());
        assert!(tcp_ok(&s), "segment {k}");
        assert!(s.len() <= 54 + 1448);
        joined.extend_from_slice(&s[54..]);
    }
    assert_eq!(joined, payload);
}

#[test]
fn a_hostile_header_drops_the_frame_only() {
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(OFFLOADING);
    let mut b = Driver::new(&sw, 1, 2).up(OFFLOADING);
    b.post_rx(0, 0x1_0000);
    let f = tcp(false, 0, &[5; 3000], 0x18);
    let bad = [
        NetHdr {
            flags: 2,
            ..partial()
        },
        NetHdr {
            csum_start: 0xffff,
            ..partial()
        },
        NetHdr {
            csum_offset: 4000,
            ..partial()
        },
        NetHdr {
            gso_type: nh::GSO_TCPV4,
            gso_size: 0,
            ..partial()
        },
        NetHdr {
            gso_type: nh::GSO_TCPV4,
            gso_size: 1,
            ..partial()
        },
        NetHdr {
            gso_type: nh::GSO_TCPV6,
            gso_size: 1448,
            ..partial()
        },
        NetHdr {
            gso_type: 3,
            gso_size: 1448,
            ..partial()
        },
        NetHdr {
            gso_type: nh::GSO_TCPV4,
            gso_size: 1448,
            csum_start: 20,
            ..partial()
        },
    ];
    for (i, h) in bad.iter().enumerate() {
        a.send_with(i as u16 % SIZE, h, &f);
    }
    assert_eq!(a.used(1).len(), bad.len(), "each chain returned");
    assert!(b.used(0).is_empty(), "none delivered");
    let c = &a.dev.device.counters;
    assert_eq!(
        c.dropped_bad_hdr.load(core::sync::atomic::Ordering::Relaxed),
        bad.len() as u64
    );
    assert_eq!(
        a.r(0x70) & STATUS_NEEDS_RESET,
        0,
        "a bad header is not a broken queue"
    );
    // The link still works.
    a.send_with(0, &partial(), &f);
    assert_eq!(b.used(0).len(), 1);
}

#[test]
fn a_merged_frame_is_published_under_one_used_index() {
    /// Records the writes to the receive ring's used index.
    struct Watch(Arc<VecMemory>, std::sync::Mutex<Vec<(u64, usize)>>);
    impl GuestMemory for Watch {
        fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutsideRam> {
            self.0.read(gpa, buf)
        }
        fn write(&self, gpa: u64, data: &[u8]) -> Result<(), OutsideRam> {
            self.1.lock().unwrap().push((gpa, data.len()));
            self.0.write(gpa, data)
        }
        fn contains(&self, gpa: u64, len: u64) -> bool {
            self.0.contains(gpa, len)
        }
    }
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(BASIC | (1 << 15));
    // B's device over a memory that watches its writes.
    let mem = Arc::new(VecMemory::new(RAM, 0x10_0000));
    let watch = Arc::new(Watch(mem.clone(), Default::default()));
    struct Shared2(Arc<Watch>);
    impl GuestMemory for Shared2 {
        fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutsideRam> {
            self.0.read(gpa, buf)
        }
        fn write(&self, gpa: u64, data: &[u8]) -> Result<(), OutsideRam> {
            self.0.write(gpa, data)
        }
        fn contains(&self, gpa: u64, len: u64) -> bool {
            self.0.contains(gpa, len)
        }
    }
    let port = NetPort::new([2, 0, 0, 0, 0, 2], sw.clone(), 1).unwrap();
    let dev = Arc::new(NetDevice::new("vm", port, Box::new(Shared2(watch.clone())), None));
    sw.attach(1, dev.clone());
    let mut b = Driver {
        dev,
        mem,
        size: SIZE,
        desc_reads: Arc::default(),
        scrubs: Arc::default(),
        avail: [0; 2],
        used_seen: [0; 2],
    }
    .up(BASIC | (1 << 15));
    for i in 0..3 {
        b.post_rx(i, 2048);
    }
    watch.1.lock().unwrap().clear();
    a.send(0, &frame(2, 1, &[9u8; 5000]));
    let used_idx = ring(0).2 + 2;
    let w = watch.1.lock().unwrap().clone();
    let idx_writes: Vec<_> = w.iter().enumerate().filter(|(_, x)| x.0 == used_idx).collect();
    assert_eq!(idx_writes.len(), 1, "one used-index write for the frame: {w:x?}");
    let last_elem = w
        .iter()
        .rposition(|x| (ring(0).2 + 4..ring(0).2 + 4 + 8 * 8).contains(&x.0))
        .unwrap();
    assert!(idx_writes[0].0 > last_elem, "the index after every element");
    assert_eq!(b.used(0).len(), 3);
}

#[test]
fn a_transmit_exit_stops_at_its_budget_and_the_interrupt_ack_resumes() {
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(BASIC | (1 << 15));
    let mut b = Driver::new(&sw, 1, 2).up(BASIC | (1 << 15));
    for i in 0..8 {
        b.post_rx(i, 0x1_0000);
    }
    // The largest frames fit RX buffers of 64 KiB only without the header
    // overhead: send frames of 60000 bytes, 8 of them, one kick.
    let f = frame(2, 1, &[3u8; 60000]);
    for i in 0..8 {
        a.queue_tx(i, &NetHdr::default(), &f);
    }
    a.w(0x50, 1);
    let first = a.used(1).len();
    assert!(
        first < 8,
        "one exit moved {first} frames of {}: over the budget",
        f.len()
    );
    assert!(first * (HDR + f.len()) <= TX_BUDGET + HDR + MAX_FRAME);
    assert_eq!(b.used(0).len(), first);
    // The used interrupt is up; the guest acknowledges it: the rest goes,
    // a budget at a time, each acknowledgement resuming.
    let mut acks = 0;
    while a.used_seen[1] != 8 && acks < 8 {
        assert_ne!(a.r(0x60) & INT_USED, 0, "interrupt raised for the leftover");
        a.w(0x64, INT_USED);
        a.used(1);
        acks += 1;
    }
    assert_eq!(a.used_seen[1], 8, "all frames sent after {acks} acknowledgements");
    assert_eq!(b.used(0).len(), 8 - first);
    assert!(
        a.dev
            .device
            .counters
            .budget_stops
            .load(core::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

// ---------------------------------------------------------------------------
// Work done on the sender's CPU for a hostile receiver.

use super::net::{DESC_COST, FRAME_WORK};

impl Driver {
    /// A driver over [`Counting`] RAM with queues of `size`.
    fn counting(switch: &Arc<Switch>, slot: usize, mac: u8, size: u16) -> Self {
        let mem = Arc::new(VecMemory::new(RAM, 0x10_0000));
        let desc_reads = Arc::new(AtomicUsize::new(0));
        let scrubs = Arc::new(AtomicUsize::new(0));
        let ram = Counting {
            mem: mem.clone(),
            size,
            desc_reads: desc_reads.clone(),
            scrubs: scrubs.clone(),
            scrubbed: Arc::default(),
        };
        let port = NetPort::new([2, 0, 0, 0, 0, mac], switch.clone(), slot).unwrap();
        let dev = Arc::new(NetDevice::new("vm", port, Box::new(ram), None));
        switch.attach(slot, dev.clone());
        Self {
            dev,
            mem,
            size,
            desc_reads,
            scrubs,
            avail: [0; 2],
            used_seen: [0; 2],
        }
    }
}

/// Checksum offloads, merged buffers, no TSO.
const NO_TSO: u64 = BASIC | (1 << 15) | nh::F_CSUM | nh::F_GUEST_CSUM;

/// A TSO frame of `payload` bytes in 1448-byte segments.
fn tso(payload: usize) -> (NetHdr, Vec<u8>) {
    let p: Vec<u8> = (0..payload).map(|i| (i % 251) as u8).collect();
    let h = NetHdr {
        gso_type: nh::GSO_TCPV4,
        gso_size: 1448,
        ..partial()
    };
    (h, tcp(false, 0, &p, 0x19))
}

#[test]
fn a_shared_tail_receive_queue_costs_the_sender_at_most_its_budget() {
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(OFFLOADING);
    let mut b = Driver::counting(&sw, 1, 2, 1024).up(NO_TSO);
    // Heads 0..512 all lead into one tail 512..=1023 of 1-byte buffers.
    let buf = RAM + 0x8_0000;
    for i in 0..1024u16 {
        let (flags, next) = match i {
            0..512 => (2 | 1, 512),
            1023 => (2, 0),
            _ => (2 | 1, i + 1),
        };
        b.desc(0, i, buf, 1, flags, next);
    }
    for h in 0..512 {
        b.offer(0, h);
    }
    b.w(0x50, 0);
    b.desc_reads.store(0, Ordering::Relaxed);
    let (h, f) = tso(60000);
    a.send_with(0, &h, &f);
    let reads = b.desc_reads.load(Ordering::Relaxed);
    assert!(
        reads <= FRAME_WORK / DESC_COST + 1024,
        "one exit read {reads} of the receiver's descriptors"
    );
    assert_eq!(a.used(1).len(), 1, "the sender's frame is done");
}

#[test]
fn segmentation_stops_at_the_first_segment_the_receiver_drops() {
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(OFFLOADING);
    let mut b = Driver::new(&sw, 1, 2).up(BASIC | nh::F_CSUM | nh::F_GUEST_CSUM);
    // Buffers too small for even the header: every segment is dropped.
    for i in 0..8 {
        b.post_rx(i, 8);
    }
    let (h, f) = tso(3000);
    a.send_with(0, &h, &f);
    assert_eq!(b.used(0).len(), 1, "one chain taken, for the first segment only");
}

#[test]
fn a_readable_receive_descriptor_fails_only_the_receivers_device() {
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(BASIC | (1 << 15));
    let mut b = Driver::new(&sw, 1, 2).up(BASIC | (1 << 15));
    b.desc(0, 0, RAM + 0x8_0000, 0x1_0000, 0, 0);
    b.offer(0, 0);
    a.send(0, &frame(2, 1, b"to a read-only buffer"));
    assert_ne!(
        b.r(0x70) & STATUS_NEEDS_RESET,
        0,
        "the receiver's queue is broken"
    );
    assert_eq!(a.r(0x70) & STATUS_NEEDS_RESET, 0, "the sender goes on");
    assert_eq!(a.used(1).len(), 1);
}

#[test]
fn a_sender_never_scrubs_the_receivers_ram_which_its_notify_prepares() {
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(BASIC | (1 << 15));
    let mut b = Driver::counting(&sw, 1, 2, SIZE).up(BASIC | (1 << 15));
    // Buffer 4 is in a block never touched, posted without a notify.
    b.post_rx(4, 0x1_0000);
    a.send(0, &frame(2, 1, b"first"));
    assert_eq!(
        b.scrubs.load(Ordering::Relaxed),
        0,
        "scrubbed on the sender's CPU"
    );
    assert_eq!(b.used(0), [(4, 0)], "the unusable buffer goes back empty");
    // Buffer 5, also untouched, posted and notified: the receiver's own
    // exit scrubs it and the next frame lands there.
    b.post_rx(5, 0x1_0000);
    b.w(0x50, 0);
    assert_eq!(b.scrubs.load(Ordering::Relaxed), 1);
    let f = frame(2, 1, b"second");
    a.send(1, &f);
    assert_eq!(b.used(0), [(5, (HDR + f.len()) as u32)]);
    assert_eq!(b.rx_bytes(5, HDR + f.len())[HDR..], f[..]);
    assert_eq!(b.scrubs.load(Ordering::Relaxed), 1);
}

#[test]
fn a_receiver_with_plenty_of_prepared_buffers_is_asked_not_to_kick() {
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(BASIC);
    let mut b = Driver::new(&sw, 1, 2).up(BASIC);
    let flags = |d: &Driver| u16::from_le_bytes(d.mem.get(ring(0).2, 2).try_into().unwrap());
    // Half the ring posted and kicked: prepared, so no kick needed per refill.
    for i in 0..4 {
        b.post_rx(i, 1526);
    }
    assert_eq!(flags(&b), 0, "nothing prepared before the kick");
    b.w(0x50, 0);
    assert_eq!(flags(&b), 1, "VRING_USED_F_NO_NOTIFY");
    // Deliveries use them up; under a quarter left, kicks are wanted again.
    for i in 0..2 {
        a.send(i, &frame(2, 1, b"x"));
    }
    assert_eq!(flags(&b), 1, "two of eight prepared ahead: still quiet");
    a.send(2, &frame(2, 1, b"y"));
    assert_eq!(flags(&b), 0, "one left: the driver's next refill kicks");
    assert_eq!(b.used(0).len(), 3);
    // Fewer than half posted: every refill kicks.
    b.post_rx(4, 1526);
    b.w(0x50, 0);
    assert_eq!(flags(&b), 0, "two prepared of eight");
    // A device reset forgets it.
    for i in 5..8 {
        b.post_rx(i, 1526);
    }
    b.w(0x50, 0);
    assert_eq!(flags(&b), 1);
    // A driver reset and a fresh ring (nothing posted yet): the old hint
    // is cleared when the queue is enabled again.
    b.mem.put(ring(0).1 + 2, &[0, 0]);
    let b = b.up(BASIC);
    assert_eq!(flags(&b), 0, "a reset driver's fresh ring: no hint");
}

#[test]
fn a_senders_completion_interrupt_waits_for_the_next_frame_in() {
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(BASIC);
    let mut b = Driver::new(&sw, 1, 2).up(BASIC);
    a.dev.transport.held_for_test().give_slot_for_test(0);
    a.post_rx(0, 1526);
    b.post_rx(0, 1526);
    a.send(0, &frame(2, 1, b"ping"));
    assert_eq!(a.used(1), [(0, 0)], "the frame is finished at once");
    assert_eq!(a.r(0x60), 0, "its interrupt is held");
    b.send(0, &frame(1, 2, b"pong"));
    assert_eq!(a.r(0x60), INT_USED, "the reply raises it, once, for both queues");
    assert_eq!(a.used(0).len(), 1);
    a.w(0x64, INT_USED);
    a.dev.transport.release_held();
    assert_eq!(a.r(0x60), 0, "nothing left held");

    // No frame comes back: the holding CPU's timer raises it.
    a.send(1, &frame(2, 1, b"lost"));
    assert_eq!(a.r(0x60), 0);
    a.dev.transport.release_held();
    assert_eq!(a.r(0x60), INT_USED);
    a.w(0x64, INT_USED);

    // An interrupt already pending takes the bits at once.
    b.send(1, &frame(1, 2, b"no buffer: dropped"));
    a.dev.transport.interrupt(INT_CONFIG);
    a.send(2, &frame(2, 1, b"x"));
    assert_eq!(a.r(0x60), INT_CONFIG | INT_USED);
    a.w(0x64, INT_CONFIG | INT_USED);

    // A large frame's completion is not held: a bulk sender's socket
    // waits for it.
    a.send(3, &frame(2, 1, &[0; super::moderate::SMALL]));
    assert_eq!(a.r(0x60), INT_USED);
    a.w(0x64, INT_USED);

    // A reset forgets what was held.
    a.send(0, &frame(2, 1, b"y"));
    a.w(0x70, 0);
    a.dev.transport.release_held();
    assert_eq!(a.r(0x60), 0);
}

#[test]
fn half_a_ring_finished_at_once_interrupts_at_once() {
    let sw = Switch::new(2);
    let mut a = Driver::new(&sw, 0, 1).up(BASIC);
    let _b = Driver::new(&sw, 1, 2).up(BASIC);
    a.dev.transport.held_for_test().give_slot_for_test(0);
    let f = frame(2, 1, b"burst");
    let mut b = std::vec![0u8; HDR];
    b.extend_from_slice(&f);
    let at = RAM + 0x4_0000;
    a.mem.put(at, &b);
    for i in 0..SIZE / 2 {
        a.desc(1, i, at, b.len() as u32, 0, 0);
        a.offer(1, i);
    }
    a.w(0x50, 1);
    assert_eq!(a.used(1).len(), usize::from(SIZE / 2));
    assert_eq!(a.r(0x60), INT_USED, "a driver out of room waits for it");
}
