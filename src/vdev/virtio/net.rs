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
//! Work per exit is bounded: one transmit exit does at most [`TX_BUDGET`]
//! of work ([`Budget`]): bytes read and written, descriptors walked and
//! chains taken in its own queue and in receivers', refused frames too.
//! A receiver's RAM is touched only where it is already scrubbed (its
//! owner prepares its posted buffers on its own rx notify), so a peer's
//! lazy scrub never runs on the sender's CPU. What is left waits in the guest's ring, and the device asks for
//! the guest's attention with a used-buffer interrupt; its handler's
//! InterruptAck (virtio_mmio acknowledges before it looks at the rings)
//! resumes the transmission, so the leftover goes without a new kick.
//!
//! A link of more than two VMs is a learning switch: each port's own
//! (configured) MAC is known from the start and belongs to that port
//! alone, other source MACs (a guest's bridge or macvlan) are learnt per
//! port; a frame to a known MAC goes to that port only, a broadcast,
//! multicast or unknown one to every other port of the link. A frame
//! whose source is another port's own MAC is dropped: no VM can take
//! over a peer's address and receive what is sent to it. Nothing leaves
//! the link.

use super::mmio::{Device, Transport, VirtioMmio, INT_USED};
use super::moderate;
use super::net_hdr::{self, HdrError, NetHdr, Offload, Tso};
use super::queue::{Foreign, GuestMemory};
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
/// Work one transmit exit does at most, in bytes (see [`Budget`]): four
/// of the largest frames read, or written into receivers.
pub const TX_BUDGET: usize = 4 * MAX_FRAME;
/// What reading one descriptor costs, in budget bytes.
pub const DESC_COST: usize = 64;
/// What taking one chain costs, besides its descriptors.
pub const CHAIN_COST: usize = 64;
/// Receive chains one frame may take in one receiver, all its segments
/// together.
pub const FRAME_CHAINS: usize = 256;
/// Work one frame may cost in one receiver, all its segments together:
/// twice what copying the largest frame costs, room for its descriptors
/// when it is spread over small buffers.
pub const FRAME_WORK: usize = 2 * MAX_FRAME;
/// Descriptors a receiver's rx notify reads at most to prepare its
/// posted buffers.
const PREPARE_DESCS: u32 = 4096;
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
    /// Frames the guest sent with another port's own MAC as the source.
    pub dropped_spoofed: AtomicU64,
    /// Frames completed or segmented here for a receiver without the
    /// offload (counted at the receiver).
    pub csum_completed: AtomicU64,
    pub segmented: AtomicU64,
    /// Transmit exits that stopped at [`TX_BUDGET`] with frames left.
    pub budget_stops: AtomicU64,
}

/// The work an exit has left to do, in bytes ([`DESC_COST`] per
/// descriptor read, [`CHAIN_COST`] per chain taken, a byte per byte read
/// or written), and what the frame being delivered to one receiver may
/// still cost ([`FRAME_WORK`], [`FRAME_CHAINS`]). The exit stops taking
/// frames once its budget is spent; a frame's delivery stops (the frame
/// is dropped there) once its own share is, so a frame begun is never
/// cut short by the frames before it, and one exit costs at most its
/// budget plus one frame's share per receiver.
pub struct Budget {
    left: usize,
    frame: usize,
    chains: usize,
}

impl Budget {
    pub const fn new(bytes: usize) -> Self {
        Self {
            left: bytes,
            frame: FRAME_WORK,
            chains: FRAME_CHAINS,
        }
    }
    /// A new frame (or receiver): its share is whole again.
    pub fn next_frame(&mut self) {
        self.frame = FRAME_WORK;
        self.chains = FRAME_CHAINS;
    }
    pub fn charge(&mut self, n: usize) {
        self.left = self.left.saturating_sub(n);
        self.frame = self.frame.saturating_sub(n);
    }
    /// Takes one receive chain from the frame's share; false if none left.
    pub fn take_chain(&mut self) -> bool {
        if self.frame == 0 || self.chains == 0 {
            return false;
        }
        self.chains -= 1;
        true
    }
    pub fn spent(&self) -> bool {
        self.left == 0
    }
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

    /// The port whose own (configured) MAC `mac` is.
    fn owner(&self, mac: &Mac) -> Option<usize> {
        (0..self.ports.len()).find(|&p| self.port(p).is_some_and(|d| &d.device.mac == mac))
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
    pub fn forward(&self, from: usize, o: &Offload, frame: &[u8], b: &mut Budget) -> usize {
        let (Some(dst), Some(src)) = (frame.get(..6), frame.get(6..12)) else {
            return 0;
        };
        let mut s = [0u8; 6];
        s.copy_from_slice(src);
        if s[0] & 1 == 0 {
            match self.owner(&s) {
                Some(p) if p != from => {
                    if let Some(dev) = self.port(from) {
                        dev.device.spoofed(&dev.transport);
                    }
                    return 0;
                }
                Some(_) => {}
                None => {
                    self.learn(s, from);
                }
            }
        }
        let mut d = [0u8; 6];
        d.copy_from_slice(dst);
        let to = if d[0] & 1 == 0 {
            self.owner(&d).or_else(|| self.lookup(&d))
        } else {
            None
        };
        match to {
            Some(p) if p == from => 0,
            Some(p) => self.deliver(p, o, frame, b),
            None => (0..self.ports.len())
                .filter(|&p| p != from)
                .map(|p| self.deliver(p, o, frame, b))
                .sum(),
        }
    }

    fn deliver(&self, slot: usize, o: &Offload, frame: &[u8], b: &mut Budget) -> usize {
        b.next_frame();
        match self.port(slot) {
            Some(dev) => dev.device.receive(&dev.transport, dev.negotiated(), o, frame, b),
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
    pub fn receive(&self, t: &Transport, features: u64, o: &Offload, frame: &[u8], b: &mut Budget) -> usize {
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
                self.take(t, features, &hdr, &[head, &field, tail], b)
            }
            Offload::Tso(tso) => self.segments(t, features, &tso, frame, b),
            Offload::None => self.take(t, features, &hdr, &[frame], b),
        }
    }

    /// Delivers `frame` as segments of `tso.mss` payload bytes, each with
    /// complete headers and checksums. Stops at the first segment the
    /// receiver does not take: the rest would be lost to TCP anyway.
    fn segments(&self, t: &Transport, features: u64, tso: &Tso, frame: &[u8], b: &mut Budget) -> usize {
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
            let w = self.take(t, features, &NetHdr::default(), &[h, seg], b);
            if w == 0 {
                break;
            }
            written += w;
        }
        written
    }

    /// Takes the frame made of `parts` into this VM's receive queue with
    /// header `hdr`, if it has buffers; returns the bytes written. Holds
    /// only this queue's lock. Runs on the sender's CPU: charges `b`,
    /// and touches this VM's RAM only where it needs no scrub (a buffer
    /// elsewhere is unusable: the frame is dropped).
    fn take(&self, t: &Transport, features: u64, hdr: &NetHdr, parts: &[&[u8]], b: &mut Budget) -> usize {
        let c = &self.counters;
        let Some(q) = t.queue(RX) else { return 0 };
        if !t.live() {
            c.dropped_no_buffer.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut guard = q.lock();
        let st = &mut *guard;
        let foreign = Foreign(t.mem());
        let mem: &dyn GuestMemory = &foreign;
        let merge = features & F_MRG_RXBUF != 0;
        // Chains taken for this frame: (head, bytes written). The first
        // one is kept in `st.spare` to receive the header last, when
        // num_buffers is known (5.1.6.4: 1 unless buffers were merged).
        let mut used: [(u16, u32); MAX_MERGE] = [(0, 0); MAX_MERGE];
        let mut n = 0usize;
        // Where the copy stands: part `p`, byte `at` in it; bytes done.
        let (mut p, mut at, mut done) = (0usize, 0usize, 0usize);
        loop {
            if !b.take_chain() {
                break;
            }
            let popped = st.queue.pop_rx(mem, &mut st.chain);
            b.charge(DESC_COST.saturating_mul(st.chain.descs as usize));
            match popped {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    drop(guard);
                    t.fail("virtio-net", RX, e);
                    return 0;
                }
            }
            b.charge(CHAIN_COST);
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
            b.charge(wrote);
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
        let fits = n > 0
            && done == total
            && st.spare.writable as usize >= HDR
            && st.spare.write(mem, 0, &hdr.bytes(n as u16)) == Ok(HDR);
        if fits {
            b.charge(HDR);
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
        // Few prepared buffers left: the driver's next refill kicks again,
        // so its own exit prepares what it posted (prepare_rx).
        let low = st.queue.prepared_ahead() < st.queue.size / 4;
        let kicks = if low { st.queue.quiet(mem, false) } else { Ok(()) };
        let quiet = n == 0 || st.queue.interrupt_suppressed(mem);
        drop(guard);
        if let Err(e) = kicks {
            t.fail("virtio-net", RX, e);
            return 0;
        }
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

    /// Counts a frame sent with another port's own MAC as its source; logs
    /// the first few and then every 4096th.
    fn spoofed(&self, t: &Transport) {
        let n = self.counters.dropped_spoofed.fetch_add(1, Ordering::Relaxed);
        if n < 4 || (n + 1).is_multiple_of(4096) {
            log::info!(
                "VM {} virtio-net: frame dropped, its source is another VM's MAC: {} so far",
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
    /// [`TX_BUDGET`] of work (refused frames and receivers' work included).
    fn transmit(&self, t: &Transport) {
        let Some(q) = t.queue(TX) else { return };
        self.resume.store(false, Ordering::Relaxed);
        let features = t.features();
        let mut buf = self.tx.lock();
        let mut guard = q.lock();
        let st = &mut *guard;
        let mem = t.mem();
        let mut any = false;
        let mut descs = 0usize;
        let mut largest = 0usize;
        let mut budget = Budget::new(TX_BUDGET);
        for _ in 0..st.queue.size {
            if budget.spent() {
                break;
            }
            let popped = st.queue.pop(mem, &mut st.chain);
            budget.charge(CHAIN_COST + DESC_COST.saturating_mul(st.chain.descs as usize));
            match popped {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    drop(guard);
                    t.fail("virtio-net", TX, e);
                    return;
                }
            }
            descs += st.chain.descs as usize;
            let len = st.chain.readable as usize;
            largest = largest.max(len);
            // Read, or refused: charged alike.
            budget.charge(len.min(MAX_FRAME));
            if (HDR + ETH_HDR..=MAX_FRAME).contains(&len) {
                match st.chain.read(mem, 0, &mut buf) {
                    Ok(n) if n == len => {
                        let mut raw = [0u8; 10];
                        raw.copy_from_slice(buf.get(..10).unwrap_or(&[0; 10]));
                        let frame = buf.get(HDR..n).unwrap_or(&[]);
                        match net_hdr::validate(&NetHdr::parse(&raw), frame, features) {
                            Ok(o) => {
                                self.counters.sent.fetch_add(1, Ordering::Relaxed);
                                self.switch.forward(self.slot, &o, frame, &mut budget);
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
        let left = budget.spent() && st.queue.pending(mem).is_ok_and(|n| n > 0);
        let quiet = st.queue.interrupt_suppressed(mem) && !left;
        // Only small frames wait (moderate.rs): a bulk sender's socket
        // counts its frames' bytes until their completion frees them. Nor
        // does half the ring or more finished at once: the driver may have
        // stopped its queue for room and waits for this interrupt.
        let now = left || largest > moderate::SMALL || descs >= usize::from(st.queue.size) / 2;
        drop(guard);
        drop(buf);
        if left {
            self.counters.budget_stops.fetch_add(1, Ordering::Relaxed);
            self.resume.store(true, Ordering::Relaxed);
        }
        if any && !quiet {
            // Otherwise it comes with the next frame delivered to this VM
            // (moderate.rs): the reply to what it just sent, usually.
            if now {
                t.interrupt(INT_USED);
            } else {
                t.interrupt_soon(INT_USED);
            }
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
        // Receive buffers are taken when a frame arrives, on the sender's
        // CPU; here, on this VM's own, they are made ready for it.
        match queue {
            TX => self.transmit(t),
            RX => prepare_net_rx(t),
            _ => {}
        }
    }
    fn enabled(&self, t: &Transport, queue: usize) {
        if queue == RX {
            prepare_net_rx(t);
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

/// On the owning VM's own exit (its rx notify or queue enable): makes the
/// buffers of the receive chains it posted ready (scrubbed), so a peer's
/// delivery, on the peer's CPU, never scrubs. Bounded by
/// [`PREPARE_DESCS`] descriptors.
pub fn prepare_rx(t: &Transport, queue: usize) {
    let Some(q) = t.queue(queue) else { return };
    let mut guard = q.lock();
    let st = &mut *guard;
    st.queue.prepare_rx(t.mem(), &mut st.chain, PREPARE_DESCS);
}

/// [`prepare_rx`] for virtio-net's receive queue, which needs no kick per
/// refill: with at least half the ring prepared ahead, the driver is asked
/// not to kick after its refills (VRING_USED_F_NO_NOTIFY) until a delivery
/// finds fewer than a quarter left ([`NetPort::take`]), so one rx exit
/// serves hundreds of frames instead of one. Buffers posted meanwhile are
/// taken all the same where the driver's RAM is already scrubbed; where it
/// is not, the frame is dropped as for any unready buffer. (vsock keeps a
/// kick per refill: it resumes held packets there.)
fn prepare_net_rx(t: &Transport) {
    let Some(q) = t.queue(RX) else { return };
    let mut guard = q.lock();
    let st = &mut *guard;
    st.queue.prepare_rx(t.mem(), &mut st.chain, PREPARE_DESCS);
    let plenty = st.queue.prepared_ahead() >= st.queue.size / 2;
    let set = st.queue.quiet(t.mem(), plenty);
    drop(guard);
    if let Err(e) = set {
        t.fail("virtio-net", RX, e);
    }
}
