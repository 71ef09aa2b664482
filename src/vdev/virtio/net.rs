//! virtio-net between VMs (virtio 1.2, 5.1), switched by the hypervisor
//! with no backend VM. Each VM on a `net` link has one [`NetPort`]; a
//! frame the guest queues for transmission is copied, on that guest's own
//! exit, into hypervisor memory (read once), then into a receive buffer the
//! peer posted. A peer with no buffer posted loses the frame: the sender
//! never waits for it.
//!
//! Offloads (checksum, TCP segmentation: [`super::net_hdr`]) pass between
//! peers that both negotiated them; for a receiver that did not, the
//! hypervisor completes the checksum or cuts the frame into segments.
//!
//! Work per exit is bounded: one transmit exit moves at most [`TX_BUDGET`]
//! bytes. What is left waits in the guest's ring, and the device asks for
//! the guest's attention with a used-buffer interrupt; its handler's
//! InterruptAck (virtio_mmio acknowledges before it looks at the rings)
//! resumes the transmission, so the leftover goes without a new kick.
//!
//! A link of more than two VMs is a learning switch: source MACs are
//! learnt per port; a frame to a known MAC goes to that port only, a
//! broadcast, multicast or unknown one to every other port of the link.
//! Nothing leaves the link.

use super::mmio::{Device, Transport, VirtioMmio, INT_USED};
use super::net_hdr::{self, HdrError, NetHdr, Offload, Tso};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::{Mutex, Once};

pub const DEVICE_ID: u32 = 1;
const F_MTU: u64 = 1 << 3;
const F_MAC: u64 = 1 << 5;
const F_MRG_RXBUF: u64 = 1 << 15;
const F_STATUS: u64 = 1 << 16;
const LINK_UP: u16 = 1;
/// The largest MTU offered (VIRTIO_NET_F_MTU): guests may raise theirs to it.
pub const MTU: u16 = 65520;
/// struct virtio_net_hdr with num_buffers (always present with VERSION_1).
pub const HDR: usize = 12;
const ETH_HDR: usize = 14;
/// The largest frame a port carries: header + Ethernet header + the
/// largest segmentation offload frame (an IPv6 header and 64 KiB of
/// payload; IPv4's total length stops below that).
pub const MAX_FRAME: usize = HDR + ETH_HDR + 40 + 65535;
/// Bytes one transmit exit moves at most (frames taken, or written into
/// receivers, whichever is more): four of the largest frames.
pub const TX_BUDGET: usize = 4 * MAX_FRAME;
/// Room for the headers of one segment: Ethernet, IPv4 or IPv6 with
/// options, TCP with options.
const SEG_HDR: usize = ETH_HDR + 60 + 60;
/// Receive buffers one frame may span with mergeable receive buffers.
const MAX_MERGE: usize = 64;
const RX: usize = 0;
const TX: usize = 1;

pub type Mac = [u8; 6];

/// Counters of one port, for tests and the bench.
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    /// Frames this port could not take: no buffer posted, or not live.
    pub dropped_no_buffer: AtomicU64,
    /// Frames the guest sent that were too short or too long.
    pub dropped_bad: AtomicU64,
    /// Frames the guest sent whose virtio_net_hdr was refused.
    pub dropped_bad_hdr: AtomicU64,
    /// Frames completed or segmented here for a receiver without the
    /// offload (counted at the receiver).
    pub csum_completed: AtomicU64,
    pub segmented: AtomicU64,
    /// Transmit exits that stopped at [`TX_BUDGET`] with frames left.
    pub budget_stops: AtomicU64,
}

/// One VM's end of a net link.
pub struct NetPort {
    mac: Mac,
    switch: Arc<Switch>,
    slot: usize,
    /// The transmit bounce buffer: the frame, read once.
    tx: Mutex<Vec<u8>>,
    /// A transmit exit stopped at its budget: resume on InterruptAck.
    resume: AtomicBool,
    pub counters: Counters,
}

/// A VM's network device.
pub type NetDevice = VirtioMmio<NetPort>;

/// One link: its ports (filled in as the VMs are built) and learnt MACs.
pub struct Switch {
    ports: Vec<Once<Arc<NetDevice>>>,
    /// (MAC, port): at most a few per port, oldest replaced first.
    learnt: Mutex<Learnt>,
}

struct Learnt {
    entries: Vec<(Mac, usize)>,
    next: usize,
}

impl Switch {
    /// A link of `ports` VMs.
    pub fn new(ports: usize) -> Arc<Self> {
        Arc::new(Self {
            ports: (0..ports).map(|_| Once::new()).collect(),
            learnt: Mutex::new(Learnt {
                entries: Vec::with_capacity(4 * ports),
                next: 0,
            }),
        })
    }

    /// Plugs `dev` into port `slot` (once).
    pub fn attach(&self, slot: usize, dev: Arc<NetDevice>) {
        if let Some(p) = self.ports.get(slot) {
            p.call_once(|| dev);
        }
    }

    pub fn port(&self, slot: usize) -> Option<&Arc<NetDevice>> {
        self.ports.get(slot).and_then(Once::get)
    }

    fn learn(&self, mac: Mac, slot: usize) -> Option<usize> {
        let mut l = self.learnt.lock();
        let cap = 4 * self.ports.len();
        let found = l.entries.iter().position(|e| e.0 == mac);
        match found {
            Some(i) => {
                if let Some(e) = l.entries.get_mut(i) {
                    e.1 = slot;
                }
            }
            None if l.entries.len() < cap => l.entries.push((mac, slot)),
            None => {
                let i = l.next % cap.max(1);
                if let Some(e) = l.entries.get_mut(i) {
                    *e = (mac, slot);
                }
                l.next = i + 1;
            }
        }
        None
    }

    fn lookup(&self, mac: &Mac) -> Option<usize> {
        self.learnt
            .lock()
            .entries
            .iter()
            .find(|e| &e.0 == mac)
            .map(|e| e.1)
    }

    /// Forwards `frame` (Ethernet, no virtio header; its offload request
    /// `o` validated) from port `from`. Returns the bytes written into
    /// receivers.
    pub fn forward(&self, from: usize, o: &Offload, frame: &[u8]) -> usize {
        let (Some(dst), Some(src)) = (frame.get(..6), frame.get(6..12)) else {
            return 0;
        };
        let mut s = [0u8; 6];
        s.copy_from_slice(src);
        if s[0] & 1 == 0 {
            self.learn(s, from);
        }
        let mut d = [0u8; 6];
        d.copy_from_slice(dst);
        let to = if d[0] & 1 == 0 { self.lookup(&d) } else { None };
        match to {
            Some(p) if p == from => 0,
            Some(p) => self.deliver(p, o, frame),
            None => (0..self.ports.len())
                .filter(|&p| p != from)
                .map(|p| self.deliver(p, o, frame))
                .sum(),
        }
    }

    fn deliver(&self, slot: usize, o: &Offload, frame: &[u8]) -> usize {
        match self.port(slot) {
            Some(dev) => dev.device.receive(&dev.transport, dev.negotiated(), o, frame),
            None => 0,
        }
    }
}

impl NetPort {
    /// `None` when the hypervisor's heap has no room for the port's frame buffer
    /// ([`MAX_FRAME`] bytes): the caller refuses that VM instead of the allocator
    /// stopping the hypervisor.
    pub fn new(mac: Mac, switch: Arc<Switch>, slot: usize) -> Option<Self> {
        let mut tx = Vec::new();
        tx.try_reserve_exact(MAX_FRAME).ok()?;
        tx.resize(MAX_FRAME, 0);
        Some(Self {
            mac,
            switch,
            slot,
            tx: Mutex::new(tx),
            resume: AtomicBool::new(false),
            counters: Counters::default(),
        })
    }

    /// Takes `frame`, sent with offload request `o`, into this VM's receive
    /// queue as its negotiated `features` allow: offloads it shares pass in
    /// the header; a checksum it cannot take is completed here, a TCP
    /// segmentation frame it cannot take is cut into segments. Returns the
    /// bytes written. Runs on the sender's CPU.
    pub fn receive(&self, t: &Transport, features: u64, o: &Offload, frame: &[u8]) -> usize {
        let (hdr, work) = net_hdr::for_receiver(o, features);
        match work {
            Offload::Csum { start, offset } => {
                let at = usize::from(start) + usize::from(offset);
                let (Some(head), Some(tail)) = (frame.get(..at), frame.get(at + 2..)) else {
                    return 0;
                };
                let field = net_hdr::complete(frame, start);
                self.counters.csum_completed.fetch_add(1, Ordering::Relaxed);
                // The sum covered the field's old bytes: the pseudo-header
                // sum Linux leaves there, as the checksum must.
                self.take(t, features, &hdr, &[head, &field, tail])
            }
            Offload::Tso(tso) => self.segments(t, features, &tso, frame),
            Offload::None => self.take(t, features, &hdr, &[frame]),
        }
    }

    /// Delivers `frame` as segments of `tso.mss` payload bytes, each with
    /// complete headers and checksums.
    fn segments(&self, t: &Transport, features: u64, tso: &Tso, frame: &[u8]) -> usize {
        self.counters.segmented.fetch_add(1, Ordering::Relaxed);
        let hl = usize::from(tso.hdr_len);
        let Some(payload) = frame.get(hl..) else { return 0 };
        let mut out = [0u8; SEG_HDR];
        let mut written = 0;
        let chunks = payload.chunks(usize::from(tso.mss).max(1));
        let n = chunks.len();
        for (i, seg) in chunks.enumerate() {
            let at = hl + i * usize::from(tso.mss);
            if net_hdr::segment_headers(frame, tso, i, at, seg, i + 1 == n, &mut out).is_none() {
                self.counters.dropped_bad.fetch_add(1, Ordering::Relaxed);
                break;
            }
            let Some(h) = out.get(..hl) else { break };
            written += self.take(t, features, &NetHdr::default(), &[h, seg]);
        }
        written
    }

    /// Takes the frame made of `parts` into this VM's receive queue with
    /// header `hdr`, if it has buffers; returns the bytes written. Holds
    /// only this queue's lock.
    fn take(&self, t: &Transport, features: u64, hdr: &NetHdr, parts: &[&[u8]]) -> usize {
        let c = &self.counters;
        let Some(q) = t.queue(RX) else { return 0 };
        if !t.live() {
            c.dropped_no_buffer.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut guard = q.lock();
        let st = &mut *guard;
        let mem = t.mem();
        let merge = features & F_MRG_RXBUF != 0;
        // Chains taken for this frame: (head, bytes written). The first
        // one is kept in `st.spare` to receive the header last, when
        // num_buffers is known (5.1.6.4: 1 unless buffers were merged).
        let mut used: [(u16, u32); MAX_MERGE] = [(0, 0); MAX_MERGE];
        let mut n = 0usize;
        // Where the copy stands: part `p`, byte `at` in it; bytes done.
        let (mut p, mut at, mut done) = (0usize, 0usize, 0usize);
        loop {
            match st.queue.pop(mem, &mut st.chain) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    drop(guard);
                    t.fail("virtio-net", RX, e);
                    return 0;
                }
            }
            let off = if n == 0 { HDR } else { 0 };
            let room = (st.chain.writable as usize).saturating_sub(off);
            let mut wrote = 0;
            // At most one step per part and one per chain-full: bounded.
            while wrote < room {
                let Some(rest) = parts.get(p).and_then(|s| s.get(at..)) else {
                    break;
                };
                let piece = rest.get(..rest.len().min(room - wrote)).unwrap_or(&[]);
                let w = st.chain.write(mem, off + wrote, piece).unwrap_or(0);
                wrote += w;
                at += w;
                if at >= parts.get(p).map_or(0, |s| s.len()) {
                    p += 1;
                    at = 0;
                } else if w < piece.len() || w == 0 {
                    break;
                }
            }
            done += wrote;
            if let Some(u) = used.get_mut(n) {
                *u = (st.chain.head, (off + wrote) as u32);
            }
            if n == 0 {
                core::mem::swap(&mut st.chain, &mut st.spare);
            }
            n += 1;
            if done == total || !merge || n == MAX_MERGE {
                break;
            }
        }
        let fits = n > 0 && done == total && st.spare.writable as usize >= HDR;
        if fits {
            let _ = st.spare.write(mem, 0, &hdr.bytes(n as u16));
            c.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            // No buffer, or too little room: the frame is lost, never
            // waited for; buffers taken go back empty.
            self.dropped(t);
        }
        // All of the frame's buffers, then one index: the driver never sees
        // a first buffer whose num_buffers names buffers not yet used.
        let published = used
            .iter()
            .take(n)
            .try_for_each(|&(head, len)| st.queue.put_used(mem, head, if fits { len } else { 0 }))
            .and_then(|()| if n > 0 { st.queue.publish_used(mem) } else { Ok(()) });
        if let Err(e) = published {
            drop(guard);
            t.fail("virtio-net", RX, e);
            return 0;
        }
        let quiet = n == 0 || st.queue.interrupt_suppressed(mem);
        drop(guard);
        if !quiet {
            t.interrupt(INT_USED);
        }
        if fits {
            HDR + total
        } else {
            0
        }
    }

    /// Counts a frame this VM had no room for; logs the first few and then
    /// every 4096th (a receiver that stops taking frames must not flood the
    /// console).
    fn dropped(&self, t: &Transport) {
        let n = self.counters.dropped_no_buffer.fetch_add(1, Ordering::Relaxed);
        if n < 4 || (n + 1).is_multiple_of(4096) {
            log::info!(
                "VM {} virtio-net: no receive buffer posted: {} frame(s) dropped so far",
                t.vm(),
                n + 1
            );
        }
    }

    /// Counts a frame whose header was refused; logs the first few and
    /// then every 4096th.
    fn bad_header(&self, t: &Transport, e: HdrError) {
        let n = self.counters.dropped_bad_hdr.fetch_add(1, Ordering::Relaxed);
        if n < 4 || (n + 1).is_multiple_of(4096) {
            log::info!(
                "VM {} virtio-net: frame dropped, its header is refused ({e:?}): {} so far",
                t.vm(),
                n + 1
            );
        }
    }

    /// Counts a frame too short or too long (`len` bytes with the header);
    /// logs the first few and then every 4096th.
    fn bad_length(&self, t: &Transport, len: usize) {
        let n = self.counters.dropped_bad.fetch_add(1, Ordering::Relaxed);
        if n < 4 || (n + 1).is_multiple_of(4096) {
            log::info!(
                "VM {} virtio-net: a {len}-byte frame is not {}..={MAX_FRAME} bytes: {} dropped so far",
                t.vm(),
                HDR + ETH_HDR,
                n + 1
            );
        }
    }

    /// Sends the frames the guest queued, up to the queue size and
    /// [`TX_BUDGET`] bytes.
    fn transmit(&self, t: &Transport) {
        let Some(q) = t.queue(TX) else { return };
        self.resume.store(false, Ordering::Relaxed);
        let features = t.features();
        let mut buf = self.tx.lock();
        let mut guard = q.lock();
        let st = &mut *guard;
        let mem = t.mem();
        let mut any = false;
        let mut budget = TX_BUDGET;
        for _ in 0..st.queue.size {
            if budget == 0 {
                break;
            }
            match st.queue.pop(mem, &mut st.chain) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    drop(guard);
                    t.fail("virtio-net", TX, e);
                    return;
                }
            }
            let len = st.chain.readable as usize;
            if (HDR + ETH_HDR..=MAX_FRAME).contains(&len) {
                match st.chain.read(mem, 0, &mut buf) {
                    Ok(n) if n == len => {
                        let mut raw = [0u8; 10];
                        raw.copy_from_slice(buf.get(..10).unwrap_or(&[0; 10]));
                        let frame = buf.get(HDR..n).unwrap_or(&[]);
                        match net_hdr::validate(&NetHdr::parse(&raw), frame, features) {
                            Ok(o) => {
                                self.counters.sent.fetch_add(1, Ordering::Relaxed);
                                let moved = self.switch.forward(self.slot, &o, frame);
                                budget = budget.saturating_sub(len.max(moved));
                            }
                            Err(e) => self.bad_header(t, e),
                        }
                    }
                    _ => self.bad_length(t, len),
                }
            } else {
                self.bad_length(t, len);
            }
            if let Err(e) = st.queue.put_used(mem, st.chain.head, 0) {
                drop(guard);
                t.fail("virtio-net", TX, e);
                return;
            }
            any = true;
        }
        if let Err(e) = st.queue.publish_used(mem) {
            drop(guard);
            t.fail("virtio-net", TX, e);
            return;
        }
        // Stopped at the budget with frames left: the interrupt (asked
        // for or not) brings the guest's InterruptAck, which resumes.
        let left = budget == 0 && st.queue.pending(mem).is_ok_and(|n| n > 0);
        let quiet = st.queue.interrupt_suppressed(mem) && !left;
        drop(guard);
        drop(buf);
        if left {
            self.counters.budget_stops.fetch_add(1, Ordering::Relaxed);
            self.resume.store(true, Ordering::Relaxed);
        }
        if any && !quiet {
            t.interrupt(INT_USED);
        }
    }
}

impl Device for NetPort {
    fn name(&self) -> &'static str {
        "virtio-net"
    }
    fn device_id(&self) -> u32 {
        DEVICE_ID
    }
    fn features(&self) -> u64 {
        F_MAC | F_STATUS | F_MTU | F_MRG_RXBUF | net_hdr::OFFLOADS
    }
    fn queues(&self) -> usize {
        2
    }
    /// struct virtio_net_config: mac, status, max_virtqueue_pairs, mtu.
    fn config(&self, offset: u64) -> u8 {
        let mut c = [0u8; 12];
        c[..6].copy_from_slice(&self.mac);
        c[6..8].copy_from_slice(&LINK_UP.to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes());
        c[10..12].copy_from_slice(&MTU.to_le_bytes());
        usize::try_from(offset)
            .ok()
            .and_then(|o| c.get(o))
            .copied()
            .unwrap_or(0)
    }
    fn notify(&self, t: &Transport, queue: usize) {
        // Receive buffers are taken when a frame arrives, not queued here.
        if queue == TX {
            self.transmit(t);
        }
    }
    fn resume(&self, t: &Transport) {
        if self.resume.load(Ordering::Relaxed) {
            self.transmit(t);
        }
    }
    fn reset(&self) {
        self.resume.store(false, Ordering::Relaxed);
    }
}
