//! The vsock device driven the way Linux's virtio_vsock drives it, through
//! the MMIO registers, over fake guest RAM: the packet checks, RSTs for
//! unknown CIDs, hold and resume, credit fields, resets, broken queues, the
//! lock order under two CPUs, and a property test of the packet path.

use super::mmio::{F_VERSION_1, INT_USED, STATUS_FEATURES_OK, STATUS_NEEDS_RESET};
use super::queue::testmem::VecMemory;
use super::queue::{GuestMemory, OutsideRam, MAX_SIZE};
use super::vsock::{Header, VsockDevice, VsockLink, VsockPort, HDR, MAX_PAYLOAD, OP_RST, OP_RW, TYPE_STREAM};
use crate::vdev::MmioDevice;
use alloc::boxed::Box;
use alloc::sync::Arc;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use proptest::test_runner::{Config, RngSeed};
use std::sync::atomic::Ordering;
use std::vec::Vec;

const RAM: u64 = 0x4000_0000;
const RAM_SIZE: usize = 0x40_0000;
const SIZE: u16 = 16;
const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_CREDIT_UPDATE: u16 = 6;
/// Linux's receive buffer: header + 4 KiB.
const RXBUF: u32 = HDR as u32 + 4096;

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

fn ring(q: usize) -> (u64, u64, u64) {
    let base = RAM + 0x1_0000 * q as u64;
    (base, base + 0x1000, base + 0x2000)
}
fn rx_at(i: u16) -> u64 {
    RAM + 0x8_0000 + 0x2000 * u64::from(i)
}
fn tx_at(i: u16) -> u64 {
    RAM + 0x10_0000 + 0x2_0000 * u64::from(i % 8)
}

/// A minimal virtio-vsock driver: rx 0, tx 1, event 2.
struct Driver {
    dev: Arc<VsockDevice>,
    mem: Arc<VecMemory>,
    cid: u64,
    avail: [u16; 3],
    used_seen: [u16; 3],
    /// Receive buffers posted and not yet returned.
    rx_out: usize,
}

impl Driver {
    fn new(link: &Arc<VsockLink>, slot: usize, cid: u32) -> Self {
        let mem = Arc::new(VecMemory::new(RAM, RAM_SIZE));
        let port = VsockPort::new(cid, link.clone(), slot).unwrap();
        let dev = Arc::new(VsockDevice::new("vm", port, Box::new(Shared(mem.clone())), None));
        link.attach(slot, dev.clone());
        Self {
            dev,
            mem,
            cid: u64::from(cid),
            avail: [0; 3],
            used_seen: [0; 3],
            rx_out: 0,
        }
    }

    fn w(&self, off: u64, v: u32) {
        self.dev.write(off, 4, u64::from(v), 0).unwrap();
    }
    fn r(&self, off: u64) -> u32 {
        self.dev.read(off, 4, 0).unwrap() as u32
    }

    /// Linux's probe: reset, features (VERSION_1 only), three queues.
    fn up(mut self) -> Self {
        self.w(0x70, 0);
        self.w(0x70, 1 | 2);
        self.w(0x24, 1);
        self.w(0x20, (F_VERSION_1 >> 32) as u32);
        self.w(0x70, 1 | 2 | 8);
        assert_ne!(self.r(0x70) & STATUS_FEATURES_OK, 0);
        for q in 0..3u32 {
            let (d, a, u) = ring(q as usize);
            self.w(0x30, q);
            self.w(0x38, u32::from(SIZE));
            self.w(0x80, d as u32);
            self.w(0x90, a as u32);
            self.w(0xa0, u as u32);
            self.w(0x44, 1);
        }
        self.w(0x70, 1 | 2 | 4 | 8);
        self.avail = [0; 3];
        self.used_seen = [0; 3];
        self.rx_out = 0;
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
        self.mem
            .put(a + 4 + 2 * u64::from(self.avail[q] % SIZE), &head.to_le_bytes());
        self.avail[q] = self.avail[q].wrapping_add(1);
        self.mem.put(a + 2, &self.avail[q].to_le_bytes());
    }

    /// Posts receive buffer `i` (`len` bytes) without notifying.
    fn post_rx_quiet(&mut self, i: u16, len: u32) {
        self.desc(0, i, rx_at(i), len, 2, 0);
        self.offer(0, i);
        self.rx_out += 1;
    }

    /// Posts receive buffers `ids` and notifies the rx queue.
    fn post_rx(&mut self, ids: impl IntoIterator<Item = u16>) {
        for i in ids {
            self.post_rx_quiet(i, RXBUF);
        }
        self.w(0x50, 0);
    }

    /// A header from this VM.
    fn hdr(&self, dst: u64, op: u16, len: u32) -> Header {
        Header {
            src_cid: self.cid,
            dst_cid: dst,
            src_port: 1000,
            dst_port: 2000,
            len,
            kind: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 256 * 1024,
            fwd_cnt: 77,
        }
    }

    /// Queues `h` with `payload` from tx slot `i` (header and payload in two
    /// descriptors, as Linux 6.1 does) and notifies.
    fn send(&mut self, i: u16, h: &Header, payload: &[u8]) {
        let at = tx_at(i);
        self.mem.put(at, &h.bytes());
        self.mem.put(at + 0x100, payload);
        let d0 = (2 * i) % SIZE;
        if payload.is_empty() {
            self.desc(1, d0, at, HDR as u32, 0, 0);
        } else {
            self.desc(1, d0, at, HDR as u32, 1, d0 + 1);
            self.desc(1, d0 + 1, at + 0x100, payload.len() as u32, 0, 0);
        }
        self.offer(1, d0);
        self.w(0x50, 1);
    }

    fn used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let u = ring(q).2;
        let idx = u16::from_le_bytes(self.mem.get(u + 2, 2).try_into().unwrap());
        let mut out = Vec::new();
        while self.used_seen[q] != idx {
            let e = self.mem.get(u + 4 + 8 * u64::from(self.used_seen[q] % SIZE), 8);
            out.push((
                u32::from_le_bytes(e[..4].try_into().unwrap()),
                u32::from_le_bytes(e[4..].try_into().unwrap()),
            ));
            self.used_seen[q] = self.used_seen[q].wrapping_add(1);
        }
        if q == 0 {
            self.rx_out -= out.len();
        }
        out
    }

    /// Posts the next receive buffer if the ring has room.
    fn post_next(&mut self, next: &mut u16) {
        if self.rx_out < usize::from(SIZE) {
            self.post_rx_quiet(*next % SIZE, RXBUF);
            *next = next.wrapping_add(1);
        }
    }

    /// New received packets: (header, payload).
    fn received(&mut self) -> Vec<(Header, Vec<u8>)> {
        self.used(0)
            .into_iter()
            .filter(|&(_, len)| len as usize >= HDR)
            .map(|(id, len)| {
                let b = self.mem.get(rx_at(id as u16), len as usize);
                let h = Header::parse(b[..HDR].try_into().unwrap());
                (h, b[HDR..].to_vec())
            })
            .collect()
    }

    fn counter(&self, f: impl Fn(&super::vsock::Counters) -> &core::sync::atomic::AtomicU64) -> u64 {
        f(&self.dev.device.counters).load(Ordering::Relaxed)
    }
}

/// A (port 1000) connects to B (port 2000) from tx slot 0; B answers
/// from its tx slot 0.
fn connect(a: &mut Driver, b: &mut Driver) {
    a.send(0, &a.hdr(4, OP_REQUEST, 0), &[]);
    let mut resp = b.hdr(3, OP_RESPONSE, 0);
    resp.src_port = 2000;
    resp.dst_port = 1000;
    b.send(0, &resp, &[]);
}

fn pair() -> (Driver, Driver) {
    let link = VsockLink::new(&[3, 4]);
    (Driver::new(&link, 0, 3).up(), Driver::new(&link, 1, 4).up())
}

#[test]
fn the_device_is_vsock_with_its_cid_three_queues_and_no_seqpacket() {
    let (a, _) = pair();
    assert_eq!(a.r(0x008), 19);
    a.w(0x14, 0);
    assert_eq!(a.r(0x10) & 0b11, 0, "neither F_STREAM nor F_SEQPACKET bits");
    a.w(0x14, 1);
    assert_eq!(a.r(0x10), 1, "VERSION_1 only");
    let cid: Vec<u8> = (0..8)
        .map(|i| a.dev.read(0x100 + i, 1, 0).unwrap() as u8)
        .collect();
    assert_eq!(cid, 3u64.to_le_bytes());
    assert_eq!(a.dev.read(0x100, 4, 0), Ok(3));
    for (q, max) in [(0, u32::from(MAX_SIZE)), (2, u32::from(MAX_SIZE)), (3, 0)] {
        a.w(0x30, q);
        assert_eq!(a.r(0x34), max, "queue {q}");
    }
}

#[test]
fn a_packet_reaches_the_peer_with_its_credit_fields() {
    let (mut a, mut b) = pair();
    b.post_rx(0..2);
    let h = a.hdr(4, OP_RW, 5);
    a.send(0, &h, b"hello");
    assert_eq!(a.used(1), [(0, 0)], "the sender's chain comes back");
    let got = b.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, h, "every field as sent: ports, buf_alloc, fwd_cnt");
    assert_eq!(got[0].1, b"hello");
    assert_eq!(b.r(0x60) & INT_USED, INT_USED);
    assert_eq!(a.r(0x60) & INT_USED, INT_USED);
    // A credit update (no payload) goes through the same way.
    let mut c = a.hdr(4, OP_CREDIT_UPDATE, 0);
    c.fwd_cnt = 123_456;
    a.send(1, &c, &[]);
    assert_eq!(b.received()[0].0, c);
}

#[test]
fn a_spoofed_source_cid_is_dropped_without_a_word() {
    let (mut a, mut b) = pair();
    a.post_rx(0..2);
    b.post_rx(0..2);
    for src in [4u64, 1, 2, 3 | 1 << 32, u64::MAX] {
        let mut h = a.hdr(4, OP_REQUEST, 0);
        h.src_cid = src;
        a.send(0, &h, &[]);
        assert_eq!(a.used(1).len(), 1, "consumed");
    }
    assert!(b.received().is_empty(), "nothing reaches B");
    assert!(a.received().is_empty(), "no RST for a spoofer");
    assert_eq!(a.counter(|c| &c.spoofed), 5);
}

#[test]
fn bad_lengths_types_and_ops_are_refused_with_an_rst() {
    let (mut a, mut b) = pair();
    a.post_rx(0..8);
    b.post_rx(0..8);
    // len beyond the chain.
    let h = a.hdr(4, OP_RW, 100);
    a.send(0, &h, &[1; 50]);
    // len beyond MAX_PAYLOAD (the chain is long enough: 1 MiB of RAM).
    let h2 = a.hdr(4, OP_RW, MAX_PAYLOAD + 1);
    a.mem.put(tx_at(1), &h2.bytes());
    a.desc(1, 2, tx_at(1), HDR as u32 + MAX_PAYLOAD + 1, 0, 0);
    a.offer(1, 2);
    a.w(0x50, 1);
    // A payload on an op that carries none.
    a.send(2, &a.hdr(4, OP_REQUEST, 4), &[1; 4]);
    // Op 0 and op 99.
    a.send(3, &a.hdr(4, 0, 0), &[]);
    a.send(4, &a.hdr(4, 99, 0), &[]);
    // A chain shorter than a header: dropped, nothing to answer.
    a.mem.put(tx_at(5), &[0; 20]);
    a.desc(1, 10, tx_at(5), 20, 0, 0);
    a.offer(1, 10);
    a.w(0x50, 1);
    // Not a stream packet: dropped.
    let mut d = a.hdr(4, OP_REQUEST, 0);
    d.kind = 2;
    a.send(6, &d, &[]);
    assert_eq!(a.used(1).len(), 7, "every chain comes back");
    assert!(b.received().is_empty());
    let rsts = a.received();
    assert_eq!(rsts.len(), 5);
    for (r, _) in &rsts {
        assert_eq!(
            (r.op, r.src_cid, r.dst_cid, r.src_port, r.dst_port),
            (OP_RST, 4, 3, 2000, 1000)
        );
        assert_eq!(r.len, 0);
    }
    assert_eq!(a.counter(|c| &c.bad), 7);
    assert_eq!(
        a.r(0x70) & STATUS_NEEDS_RESET,
        0,
        "bad packets are no broken queue"
    );
}

#[test]
fn an_unknown_cid_or_a_peer_not_running_gets_an_rst_and_an_rst_gets_none() {
    let link = VsockLink::new(&[3, 4]);
    let mut a = Driver::new(&link, 0, 3).up();
    let b = Driver::new(&link, 1, 4);
    a.post_rx(0..4);
    for dst in [99u64, 3, 2, 4 | 1 << 32] {
        a.send(0, &a.hdr(dst, OP_REQUEST, 0), &[]);
        let r = a.received();
        assert_eq!(r.len(), 1, "dst {dst}");
        assert_eq!((r[0].0.op, r[0].0.src_cid, r[0].0.dst_cid), (OP_RST, dst, 3));
    }
    // An RST skips a receive buffer too small for it.
    a.post_rx_quiet(4, 10);
    a.post_rx([5]);
    a.send(3, &a.hdr(99, OP_REQUEST, 0), &[]);
    assert_eq!(a.used(0), [(4, 0), (5, HDR as u32)]);
    a.post_rx(4..8);
    // B is on the link but its driver never started.
    a.send(1, &a.hdr(4, OP_REQUEST, 0), &[]);
    assert_eq!(a.received()[0].0.op, OP_RST);
    // An RST to nowhere is not answered.
    a.send(2, &a.hdr(99, OP_RST, 0), &[]);
    assert!(a.received().is_empty());
    assert_eq!(a.used(1).len(), 7);
    drop(b);
}

#[test]
fn without_receive_buffers_the_packet_is_held_and_resumed_when_they_come() {
    let link = VsockLink::new(&[3, 4, 5]);
    let mut a = Driver::new(&link, 0, 3).up();
    let mut b = Driver::new(&link, 1, 4).up();
    let mut c = Driver::new(&link, 2, 5).up();
    a.post_rx(0..4);
    c.post_rx(0..4);
    let h = a.hdr(4, OP_RW, 3);
    a.send(0, &h, b"abc");
    assert!(a.used(1).is_empty(), "held: the chain stays with the device");
    assert_eq!(a.counter(|c| &c.parked), 1);
    // Traffic to C is not blocked behind it.
    a.send(1, &a.hdr(5, OP_RW, 2), b"hi");
    assert_eq!(c.received().len(), 1);
    assert_eq!(a.used(1), [(2, 0)]);
    // A second packet to the full B is refused (RST), never queued.
    let mut h2 = a.hdr(4, OP_RW, 1);
    h2.src_port = 1001;
    a.send(2, &h2, b"x");
    assert_eq!(a.used(1), [(4, 0)]);
    let r = a.received();
    assert_eq!((r[0].0.op, r[0].0.dst_port), (OP_RST, 1001));
    assert_eq!(a.counter(|c| &c.refused_full), 1);
    // B posts buffers: its notify resumes A's packet.
    b.post_rx(0..2);
    let got = b.received();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, &got[0].1[..]), (h, &b"abc"[..]));
    assert_eq!(a.used(1), [(0, 0)], "A gets its chain back");
    assert_eq!(a.r(0x60) & INT_USED, INT_USED);
}

#[test]
fn a_large_payload_is_split_over_receive_buffers_and_can_be_held_midway() {
    let (mut a, mut b) = pair();
    let body: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let h = a.hdr(4, OP_RW, body.len() as u32);
    b.post_rx_quiet(0, RXBUF);
    a.send(0, &h, &body);
    let first = b.received();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0.len, 4096);
    assert!(a.used(1).is_empty(), "the rest is held");
    b.post_rx(1..3);
    let rest = b.received();
    assert_eq!(rest.iter().map(|p| p.0.len).collect::<Vec<_>>(), [4096, 1808]);
    let mut all = first[0].1.clone();
    for (r, d) in &rest {
        assert_eq!(
            (r.src_port, r.dst_port, r.buf_alloc, r.fwd_cnt, r.op),
            (1000, 2000, 256 * 1024, 77, OP_RW)
        );
        all.extend_from_slice(d);
    }
    assert_eq!(all, body);
    assert_eq!(a.used(1), [(0, 0)]);
    // A buffer too small for a header is returned empty and skipped.
    // So is one with room for a header but none for the payload.
    b.post_rx_quiet(3, 10);
    b.post_rx_quiet(5, HDR as u32);
    b.post_rx_quiet(4, RXBUF);
    a.send(1, &a.hdr(4, OP_RW, 1), b"z");
    assert_eq!(b.used(0), [(3, 0), (5, 0), (4, HDR as u32 + 1)]);
}

#[test]
fn a_peer_that_resets_leaves_no_connection_or_held_packet_hanging() {
    let (mut a, mut b) = pair();
    a.post_rx(0..8);
    b.post_rx(0..4);
    // A connects to B; B answers.
    connect(&mut a, &mut b);
    assert_eq!(a.received().len(), 1);
    b.received();
    // A queues data B has no room for (B's 4 buffers: 3 left, filled).
    for i in 1..4 {
        a.send(i, &a.hdr(4, OP_RW, 1), b"d");
    }
    let held = a.hdr(4, OP_RW, 1);
    let mut held = held;
    held.src_port = 1005;
    a.send(4, &held, b"h");
    a.used(1);
    assert_eq!(a.counter(|c| &c.parked), 1);
    // B's VM reboots: the held packet comes back with an RST, and A's
    // connection to B gets an RST from B.
    b.dev.reset();
    assert_eq!(a.used(1), [(8, 0)]);
    let r: Vec<Header> = a.received().into_iter().map(|p| p.0).collect();
    assert!(r.iter().any(|h| h.op == OP_RST && h.dst_port == 1005), "{r:?}");
    assert!(
        r.iter()
            .any(|h| h.op == OP_RST && h.src_cid == 4 && h.src_port == 2000 && h.dst_port == 1000),
        "{r:?}"
    );
    // B comes back: its driver gets TRANSPORT_RESET on the event queue.
    let mut b = b.up();
    b.desc(2, 0, RAM + 0xf_0000, 4, 2, 0);
    b.mem.put(RAM + 0xf_0000, &[0xff; 4]);
    b.offer(2, 0);
    b.w(0x50, 2);
    assert_eq!(b.used(2), [(0, 4)]);
    assert_eq!(
        b.mem.get(RAM + 0xf_0000, 4),
        [0; 4],
        "VIRTIO_VSOCK_EVENT_TRANSPORT_RESET"
    );
    // Once only.
    b.desc(2, 1, RAM + 0xf_0010, 4, 2, 0);
    b.offer(2, 1);
    b.w(0x50, 2);
    assert!(b.used(2).is_empty());
}

#[test]
fn a_broken_queue_resets_only_its_own_device() {
    let link = VsockLink::new(&[3, 4, 5]);
    let mut a = Driver::new(&link, 0, 3).up();
    let mut b = Driver::new(&link, 1, 4).up();
    let mut c = Driver::new(&link, 2, 5).up();
    // A posts a cyclic transmit chain.
    a.desc(1, 0, tx_at(0), 64, 1, 1);
    a.desc(1, 1, tx_at(0), 64, 1, 0);
    a.offer(1, 0);
    a.w(0x50, 1);
    assert_ne!(a.r(0x70) & STATUS_NEEDS_RESET, 0);
    for _ in 0..1000 {
        a.w(0x50, 1);
    }
    b.post_rx(0..1);
    c.post_rx(0..2);
    c.send(0, &c.hdr(4, OP_RW, 2), b"ok");
    assert_eq!(b.received().len(), 1);
    // B's receive ring points outside its RAM: B's device stops, C gets an
    // RST and carries on.
    b.desc(0, 5, 0x0900_0000, RXBUF, 2, 0);
    b.offer(0, 5);
    c.send(1, &c.hdr(4, OP_RW, 2), b"no");
    assert_ne!(b.r(0x70) & STATUS_NEEDS_RESET, 0);
    assert_eq!(c.r(0x70) & STATUS_NEEDS_RESET, 0);
    assert_eq!(c.received()[0].0.op, OP_RST);
    assert_eq!(c.used(1).len(), 2);
}

#[test]
fn two_cpus_sending_to_each_other_and_resuming_do_not_deadlock() {
    let (a, b) = pair();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let run = |mut me: Driver, peer: u64, done: std::sync::mpsc::Sender<()>| {
        std::thread::spawn(move || {
            let mut next = 0u16;
            for round in 0..3000u32 {
                let i = (round % 8) as u16;
                // Keep few buffers posted so sends hold and resumes race.
                if round % 3 == 0 {
                    me.used(0);
                    me.post_next(&mut next);
                    me.w(0x50, 0);
                }
                me.used(1);
                let h = me.hdr(peer, OP_RW, 4);
                me.send(i, &h, b"ping");
            }
            done.send(()).unwrap();
        })
    };
    let t1 = run(a, 4, done_tx.clone());
    let t2 = run(b, 3, done_tx);
    for _ in 0..2 {
        assert!(
            done_rx.recv_timeout(std::time::Duration::from_secs(60)).is_ok(),
            "deadlock between two VMs sending to each other"
        );
    }
    t1.join().unwrap();
    t2.join().unwrap();
}

fn pconfig(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x766f_636b),
        failure_persistence: None,
        ..Config::default()
    }
}

/// A hostile header: any field, biased towards the interesting values.
fn header() -> impl Strategy<Value = Header> {
    (
        prop_oneof![3 => Just(3u64), 1 => Just(4u64), 1 => any::<u64>()],
        prop_oneof![3 => Just(4u64), 1 => Just(5u64), 1 => Just(99u64), 1 => any::<u64>()],
        0u32..4,
        prop_oneof![3 => 0u32..9000, 1 => any::<u32>()],
        prop_oneof![4 => Just(TYPE_STREAM), 1 => any::<u16>()],
        prop_oneof![4 => 1u16..8, 1 => any::<u16>()],
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(src, dst, port, len, kind, op, buf_alloc, fwd_cnt)| Header {
            src_cid: src,
            dst_cid: dst,
            src_port: port,
            dst_port: port + 10,
            len,
            kind,
            op,
            flags: 0,
            buf_alloc,
            fwd_cnt,
        })
}

proptest! {
    #![proptest_config(pconfig(256))]

    /// Whatever A sends: B receives only well-formed stream packets from
    /// A's CID, each within one buffer and with A's credit fields; every
    /// chain of A comes back or is held, at most one per destination;
    /// nothing else grows.
    #[test]
    fn the_packet_path_holds_its_invariants(
        packets in proptest::collection::vec((header(), 0usize..9000, any::<bool>()), 1..40),
        buffers in proptest::collection::vec(0u16..3, 1..40),
    ) {
        let link = VsockLink::new(&[3, 4, 5]);
        let mut a = Driver::new(&link, 0, 3).up();
        let mut b = Driver::new(&link, 1, 4).up();
        let mut c = Driver::new(&link, 2, 5).up();
        let (mut nb, mut nc, mut na) = (0u16, 0u16, 0u16);
        let mut held: Vec<u16> = Vec::new();
        let mut sent: Vec<Header> = Vec::new();
        for (n, (h, payload, post)) in packets.iter().enumerate() {
            let Some(i) = (0..8u16).find(|i| !held.contains(&(2 * i))) else {
                return Err(TestCaseError::fail("no free transmit slot"));
            };
            let body = std::vec![0x5a; (*payload).min(h.len as usize + 16)];
            a.used(0);
            a.post_next(&mut na);
            a.w(0x50, 0);
            a.send(i, h, &body);
            sent.push(*h);
            held.push(2 * i);
            let back = |a: &mut Driver, held: &mut Vec<u16>| {
                for (id, _) in a.used(1) {
                    held.retain(|&x| u32::from(x) != id);
                }
            };
            back(&mut a, &mut held);
            if *post {
                let k = buffers.get(n % buffers.len()).copied().unwrap_or(1);
                for (d, next) in [(&mut b, &mut nb), (&mut c, &mut nc)] {
                    d.used(0);
                    for _ in 0..k {
                        d.post_next(next);
                    }
                    d.w(0x50, 0);
                }
                back(&mut a, &mut held);
            }
            for (d, cid) in [(&mut b, 4u64), (&mut c, 5u64)] {
                // Only packets (empty returns are buffers too small).
                let mut got = Vec::new();
                let used = d.used(0);
                for (id, len) in used {
                    prop_assert!(len as usize >= HDR, "a buffer came back empty");
                    let raw = d.mem.get(rx_at(id as u16), len as usize);
                    got.push((Header::parse(raw[..HDR].try_into().unwrap()), raw.len() - HDR));
                }
                for (r, data) in got {
                    prop_assert_eq!(r.src_cid, 3);
                    prop_assert_eq!(r.dst_cid, cid);
                    prop_assert_eq!(r.kind, TYPE_STREAM);
                    prop_assert!((1..8).contains(&r.op));
                    prop_assert!(r.len as usize == data && r.len <= 4096);
                    prop_assert!(r.op == OP_RW || r.len == 0);
                    prop_assert!(
                        sent.iter().any(|s| (s.src_port, s.dst_port, s.op, s.buf_alloc, s.fwd_cnt)
                            == (r.src_port, r.dst_port, r.op, r.buf_alloc, r.fwd_cnt)),
                        "credit fields forwarded as sent"
                    );
                }
            }
            let outstanding = held.len();
            prop_assert!(outstanding <= 2, "at most one held chain per destination: {}", outstanding);
            prop_assert_eq!(a.r(0x70) & STATUS_NEEDS_RESET, 0);
        }
    }
}

// ---------------------------------------------------------------------------
// Work done on the sender's CPU for a hostile or lazy receiver.

/// Guest RAM lazily "scrubbed" (counted) in 8 KiB blocks from the receive
/// buffers on: by the first read, write or prepare of a block.
struct Lazy {
    mem: Arc<VecMemory>,
    scrubbed: std::sync::Mutex<std::collections::HashSet<u64>>,
    scrubs: Arc<std::sync::atomic::AtomicUsize>,
}

const LAZY_FROM: u64 = RAM + 0x8_0000;

impl Lazy {
    fn blocks(gpa: u64, len: u64) -> impl Iterator<Item = u64> {
        let last = gpa + len.max(1) - 1;
        (gpa.max(LAZY_FROM) >> 13..=last >> 13).filter(move |_| last >= LAZY_FROM)
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

impl GuestMemory for Lazy {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutsideRam> {
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

#[test]
fn a_sender_never_scrubs_the_receivers_ram_the_packet_waits_for_its_notify() {
    let link = VsockLink::new(&[3, 4]);
    let mut a = Driver::new(&link, 0, 3).up();
    let mem = Arc::new(VecMemory::new(RAM, RAM_SIZE));
    let scrubs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let lazy = Lazy {
        mem: mem.clone(),
        scrubbed: Default::default(),
        scrubs: scrubs.clone(),
    };
    let port = VsockPort::new(4, link.clone(), 1).unwrap();
    let dev = Arc::new(VsockDevice::new("vm", port, Box::new(lazy), None));
    link.attach(1, dev.clone());
    let mut b = Driver {
        dev,
        mem,
        cid: 4,
        avail: [0; 3],
        used_seen: [0; 3],
        rx_out: 0,
    }
    .up();
    // Posted in a block never touched, without a notify.
    b.post_rx_quiet(0, RXBUF);
    let h = a.hdr(4, OP_RW, 5);
    a.send(0, &h, b"hello");
    assert_eq!(scrubs.load(Ordering::Relaxed), 0, "scrubbed on the sender's CPU");
    assert!(b.received().is_empty(), "the buffer is left alone");
    assert!(a.used(1).is_empty(), "the packet is held");
    // The receiver's notify, on its own CPU, makes the buffer ready and
    // the held packet goes there.
    b.w(0x50, 0);
    assert_eq!(scrubs.load(Ordering::Relaxed), 1);
    let got = b.received();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, &got[0].1[..]), (h, &b"hello"[..]));
    assert_eq!(a.used(1), [(0, 0)]);
}

#[test]
fn a_readable_receive_descriptor_fails_only_the_receivers_device() {
    let (mut a, mut b) = pair();
    b.desc(0, 0, rx_at(0), RXBUF, 0, 0);
    b.offer(0, 0);
    let h = a.hdr(4, OP_RW, 5);
    a.send(0, &h, b"hello");
    assert_ne!(
        b.r(0x70) & STATUS_NEEDS_RESET,
        0,
        "the receiver's queue is broken"
    );
    assert_eq!(a.r(0x70) & STATUS_NEEDS_RESET, 0, "the sender goes on");
}

// ---------------------------------------------------------------------------
// An RST owed to a sender with no receive buffer is never lost.

#[test]
fn a_refused_packet_waits_for_the_senders_receive_buffer_for_its_rst() {
    let (mut a, _b) = pair();
    // A has no receive buffer: its packet to a CID nobody has stays in the
    // ring (not consumed, no RST lost), and so does the one behind it.
    let mut h = a.hdr(99, OP_REQUEST, 0);
    a.send(0, &h, &[]);
    h.src_port = 1001;
    a.send(1, &h, &[]);
    assert!(a.used(1).is_empty(), "both chains wait");
    assert_eq!(a.counter(|c| &c.rst), 0);
    // Kicking the transmit queue again costs one try, nothing else.
    for _ in 0..100 {
        a.w(0x50, 1);
    }
    assert!(a.used(1).is_empty());
    // One buffer posted: the first RST is given and its chain comes back;
    // the second waits for the next buffer.
    a.post_rx([0]);
    let r = a.received();
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].0.op, r[0].0.src_cid, r[0].0.dst_port), (OP_RST, 99, 1000));
    assert_eq!(a.used(1), [(0, 0)]);
    a.post_rx([1]);
    let r = a.received();
    assert_eq!((r[0].0.op, r[0].0.dst_port), (OP_RST, 1001));
    assert_eq!(a.used(1), [(2, 0)]);
    assert_eq!(a.counter(|c| &c.rst), 2);
    assert_eq!(a.r(0x70) & STATUS_NEEDS_RESET, 0);
}

#[test]
fn a_packet_refused_for_a_full_peer_waits_and_may_then_go_through() {
    let (mut a, mut b) = pair();
    // Held for B (no buffer), then a second packet to B is refused while A
    // has no receive buffer for the RST: it waits in A's ring.
    a.send(0, &a.hdr(4, OP_RW, 3), b"abc");
    let mut h2 = a.hdr(4, OP_RW, 1);
    h2.src_port = 1001;
    a.send(1, &h2, b"x");
    assert!(a.used(1).is_empty());
    assert_eq!(a.counter(|c| &c.parked), 1);
    // B takes packets again: the held one goes; A's refill then retries
    // the waiting one, which now goes through instead of being reset.
    b.post_rx(0..4);
    assert_eq!(b.received().len(), 1);
    assert_eq!(a.used(1), [(0, 0)]);
    a.post_rx(0..2);
    assert!(a.received().is_empty(), "no RST after all");
    assert_eq!(a.used(1), [(2, 0)]);
    let got = b.received();
    assert_eq!((got[0].0, &got[0].1[..]), (h2, &b"x"[..]));
}

#[test]
fn a_held_packet_whose_peer_resets_keeps_its_chain_until_its_rst_is_given() {
    let (mut a, b) = pair();
    a.send(0, &a.hdr(4, OP_RW, 3), b"abc");
    assert_eq!(a.counter(|c| &c.parked), 1);
    // B resets while A has no receive buffer: the RST waits, and so does
    // the chain (returned only with its RST).
    b.dev.reset();
    assert!(a.used(1).is_empty());
    a.post_rx(0..2);
    let r = a.received();
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].0.op, r[0].0.src_cid, r[0].0.dst_port), (OP_RST, 4, 1000));
    assert_eq!(a.used(1), [(0, 0)]);
    // Once only.
    a.post_rx(2..4);
    assert!(a.received().is_empty());
}

#[test]
fn a_stopped_vm_refuses_its_peers_and_answers_what_they_held_for_it() {
    let (mut a, mut b) = pair();
    a.post_rx(0..8);
    b.post_rx(0..1);
    let p1 = a.hdr(4, OP_RW, 2);
    a.send(0, &p1, b"p1");
    let mut p2 = a.hdr(4, OP_RW, 2);
    p2.src_port = 1002;
    a.send(1, &p2, b"p2");
    assert_eq!(a.used(1), [(0, 0)]);
    assert_eq!(a.counter(|c| &c.parked), 1, "p2 held: B is full");
    assert_eq!(b.received().len(), 1);
    // B's guest left a buffer posted (no notify) and the hypervisor stops
    // its VM (SYSTEM_OFF, an SError...): what the VM's MMIO bus does then.
    b.post_rx_quiet(1, RXBUF);
    let mut bus = crate::vm::mmio::MmioBus::default();
    bus.add(0x0a00_0000, Box::new(b.dev.clone())).unwrap();
    bus.stop();
    // The held packet comes back with an RST, and so does a new one:
    // nothing more goes into the stopped VM's RAM.
    assert_eq!(a.used(1), [(2, 0)]);
    let mut p3 = a.hdr(4, OP_RW, 2);
    p3.src_port = 1003;
    a.send(2, &p3, b"p3");
    assert_eq!(a.used(1), [(4, 0)]);
    let ports: Vec<(u16, u32)> = a.received().iter().map(|p| (p.0.op, p.0.dst_port)).collect();
    assert!(ports.contains(&(OP_RST, 1002)), "{ports:?}");
    assert!(ports.contains(&(OP_RST, 1003)), "{ports:?}");
    assert!(b.used(0).is_empty(), "B's posted buffer is left alone");
}

#[test]
fn a_transmit_queue_turned_off_leaves_no_held_chain_behind() {
    let (mut a, mut b) = pair();
    a.send(0, &a.hdr(4, OP_RW, 3), b"abc");
    assert_eq!(a.counter(|c| &c.parked), 1);
    // A's driver turns its transmit queue off and on again (same rings).
    a.w(0x30, 1);
    a.w(0x44, 0);
    a.w(0x44, 1);
    assert_eq!(a.r(0x44), 1);
    // B posts buffers: the chain of the ring's earlier life is not
    // delivered, nor returned into the new one.
    b.post_rx(0..2);
    assert!(b.received().is_empty(), "nothing from a queue turned off");
    assert!(a.used(1).is_empty(), "no used entry for a chain never offered");
    assert_eq!(a.r(0x70) & STATUS_NEEDS_RESET, 0);
}

#[test]
fn a_reset_forgets_a_transmit_exit_that_stopped_at_its_budget() {
    let (mut a, mut b) = pair();
    // Three 64 KiB packets into big buffers: two spend the exit's budget.
    for i in 0..3u16 {
        b.post_rx_quiet(i, HDR as u32 + MAX_PAYLOAD);
    }
    b.w(0x50, 0);
    let body = std::vec![7u8; MAX_PAYLOAD as usize];
    for i in 0..3u16 {
        let at = tx_at(i);
        a.mem.put(at, &a.hdr(4, OP_RW, MAX_PAYLOAD).bytes());
        a.mem.put(at + 0x100, &body);
        a.desc(1, 2 * i, at, HDR as u32, 1, 2 * i + 1);
        a.desc(1, 2 * i + 1, at + 0x100, MAX_PAYLOAD, 0, 0);
        a.offer(1, 2 * i);
    }
    a.w(0x50, 1);
    assert_eq!(a.used(1).len(), 2, "stopped at the budget with one left");
    // The driver resets (B's last buffer takes the RST for A's
    // connection) and comes back; a chain it offers without a notify is
    // not taken by its first InterruptAck.
    let mut a = a.up();
    assert_eq!(b.received()[2].0.op, OP_RST);
    b.post_rx([3]);
    // A driver's rings start zeroed.
    a.mem.put(ring(1).1, &[0; 4]);
    a.mem.put(ring(1).2, &[0; 4]);
    let at = tx_at(1);
    a.mem.put(at, &a.hdr(4, OP_RW, 0).bytes());
    a.desc(1, 2, at, HDR as u32, 0, 0);
    a.offer(1, 2);
    a.w(0x64, INT_USED);
    assert!(a.used(1).is_empty(), "no resume left from before the reset");
}

#[test]
fn a_reset_peers_rst_waits_for_a_receive_buffer_of_the_vm_it_is_for() {
    let (mut a, mut b) = pair();
    b.post_rx(0..4);
    // A connects to B, B answers into A's only buffer.
    a.post_rx(0..1);
    connect(&mut a, &mut b);
    assert_eq!(a.received().len(), 1);
    // B reboots while A has no receive buffer: the RST for A's connection
    // waits for A's refill instead of being lost.
    b.dev.reset();
    assert_eq!(a.counter(|c| &c.rst_lost), 0);
    a.post_rx(1..3);
    let r: Vec<Header> = a.received().into_iter().map(|p| p.0).collect();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (r[0].op, r[0].src_cid, r[0].src_port, r[0].dst_port),
        (OP_RST, 4, 2000, 1000)
    );
    // Given once.
    a.post_rx(3..4);
    assert!(a.received().is_empty());
}
