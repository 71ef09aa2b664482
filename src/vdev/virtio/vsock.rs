//! virtio-vsock between VMs (virtio 1.2, 5.10), stream sockets only, with
//! the hypervisor as the switch: no backend VM, no host.
//!
//! A packet VM A queues for transmission has its 44-byte header read once
//! into hypervisor memory and checked: `src_cid` must be A's own CID (a
//! spoofed one is dropped), the type STREAM, the op known, the payload
//! length within the chain, at most [`MAX_PAYLOAD`] and zero for every op
//! but RW. It then goes straight from A's buffer into receive buffers the
//! destination B posted (through a 4 KiB bounce, never a whole packet): a
//! payload larger than B's buffers is split into several RW packets, each
//! with the header's credit fields (`buf_alloc`, `fwd_cnt`) as A wrote
//! them, so the guests' credit-based flow control works end to end.
//!
//! - A `dst_cid` that is not on this link, or a peer whose driver is not
//!   running, is answered with an RST to A (unless the packet is one).
//!   An RST is never lost: when A has no receive buffer for it, the
//!   refused packet stays in A's transmit ring (A's transmit queue stops
//!   there) and is taken again, checked afresh, after A's next
//!   receive-queue notify (Linux kicks after every refill); a held packet
//!   whose peer went away keeps its chain until its RST is given. A's own
//!   traffic waits for A to take packets, as vhost-vsock stops a guest's
//!   transmissions while its replies are pending; no memory is held for
//!   it and a notify costs one chain's look.
//! - B has no receive buffer: the packet is **held**, not dropped and not
//!   waited for. A keeps its chain unanswered in a park slot, one per
//!   (sender, destination); B's next receive-queue notify resumes it. A
//!   further packet from A to B while that slot is taken (and B still
//!   has no room) is refused with an RST to A for its connection: a peer
//!   that stops taking packets costs its senders those connections, never
//!   their traffic to a third VM (no head-of-line blocking) and never
//!   hypervisor memory (at most one held chain per pair of VMs, no data
//!   copied out of guest RAM). Guests that respect the peer's credit
//!   window never see this: Linux posts far more receive buffers than its
//!   default window of 256 KiB.
//! - A VM whose device is reset (reboot, driver reset) leaves no peer
//!   hanging: packets held for it are answered with RSTs, and each peer
//!   connection it had (a bounded table of [`MAX_CONNS`], learnt from its
//!   own transmissions) gets an RST from it (one the peer has no receive
//!   buffer for waits, up to [`MAX_CONNS`] per VM, for its next rx
//!   notify). The VM's driver gets
//!   `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` on its event queue once it is
//!   back, as vhost-vsock does. A VM the hypervisor stops has its device
//!   reset the same way ([`crate::vdev::MmioDevice::stop`]).
//!
//! Work per exit is bounded by a [`Budget`] as for virtio-net: descriptors
//! walked, chains taken, bytes copied, refused packets; one packet's
//! delivery stops at its share (the rest is held), and a transmit exit
//! that stops at its budget with packets left resumes on the guest's
//! InterruptAck. A receiver's RAM is touched only where it needs no
//! scrub: a receive buffer elsewhere is given back untouched and the
//! packet held; the receiver's own rx notify makes its buffers ready.
//!
//! Lock order (no two CPUs can wait on each other): a sender's transmit
//! queue, then its transmit state (park slots, bounce), then any one
//! receive queue; each port's connection table is a leaf taken with no
//! other lock acquired under it. A receive-queue notify takes the
//! senders' locks one sender at a time, holding nothing of its own.

use super::mmio::{Device, Transport, VirtioMmio, INT_USED};
use super::net::{self, Budget, CHAIN_COST, DESC_COST, TX_BUDGET};
use super::queue::{Chain, Foreign, GuestMemory, Queue, QueueError};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use spin::{Mutex, Once};

pub const DEVICE_ID: u32 = 19;
/// struct virtio_vsock_hdr.
pub const HDR: usize = 44;
/// The largest payload one packet may carry (Linux sends at most 64 KiB).
pub const MAX_PAYLOAD: u32 = 64 * 1024;
/// Peer connections remembered per VM, to reset them when it resets.
pub const MAX_CONNS: usize = 64;
const BOUNCE: usize = 4096;
pub const RX: usize = 0;
pub const TX: usize = 1;
pub const EVENT: usize = 2;
pub const TYPE_STREAM: u16 = 1;
pub const OP_REQUEST: u16 = 1;
pub const OP_RST: u16 = 3;
pub const OP_RW: u16 = 5;
const OP_MAX: u16 = 7;
const EVENT_TRANSPORT_RESET: u32 = 0;

/// The packet header, little-endian in guest memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub kind: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

fn le32(b: &[u8; HDR], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

impl Header {
    pub fn parse(b: &[u8; HDR]) -> Self {
        let lo = |at| u64::from(le32(b, at)) | u64::from(le32(b, at + 4)) << 32;
        Self {
            src_cid: lo(0),
            dst_cid: lo(8),
            src_port: le32(b, 16),
            dst_port: le32(b, 20),
            len: le32(b, 24),
            kind: le32(b, 28) as u16,
            op: (le32(b, 28) >> 16) as u16,
            flags: le32(b, 32),
            buf_alloc: le32(b, 36),
            fwd_cnt: le32(b, 40),
        }
    }

    pub fn bytes(&self) -> [u8; HDR] {
        let mut b = [0u8; HDR];
        let fields: [(usize, &[u8]); 10] = [
            (0, &self.src_cid.to_le_bytes()),
            (8, &self.dst_cid.to_le_bytes()),
            (16, &self.src_port.to_le_bytes()),
            (20, &self.dst_port.to_le_bytes()),
            (24, &self.len.to_le_bytes()),
            (28, &self.kind.to_le_bytes()),
            (30, &self.op.to_le_bytes()),
            (32, &self.flags.to_le_bytes()),
            (36, &self.buf_alloc.to_le_bytes()),
            (40, &self.fwd_cnt.to_le_bytes()),
        ];
        for (at, v) in fields {
            if let Some(d) = b.get_mut(at..at + v.len()) {
                d.copy_from_slice(v);
            }
        }
        b
    }

    /// The RST answering this packet, as if from its destination.
    pub fn rst_reply(&self) -> Self {
        Self {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            kind: TYPE_STREAM,
            op: OP_RST,
            ..Self::default()
        }
    }
}

/// Counters of one port, for tests and logs.
#[derive(Default)]
pub struct Counters {
    /// Packets wholly delivered to a peer.
    pub delivered: AtomicU64,
    /// Packets held for a peer with no receive buffer.
    pub parked: AtomicU64,
    /// RSTs the hypervisor answered on a peer's behalf.
    pub rst: AtomicU64,
    /// RSTs owed to this VM that found no receive buffer: the packet they
    /// answer waited for this VM's next receive-queue notify.
    pub rst_deferred: AtomicU64,
    /// RSTs from a reset peer for this VM's connections to it that found
    /// no receive buffer and no room among the [`MAX_CONNS`] that wait.
    pub rst_lost: AtomicU64,
    /// Packets refused: malformed header or length.
    pub bad: AtomicU64,
    /// Packets refused: `src_cid` not this VM's.
    pub spoofed: AtomicU64,
    /// Packets refused: the destination's park slot was taken.
    pub refused_full: AtomicU64,
}

/// One link: its ports (filled in as the VMs are built) and their CIDs.
pub struct VsockLink {
    ports: Vec<Once<Arc<VsockDevice>>>,
    cids: Vec<u32>,
}

impl VsockLink {
    pub fn new(cids: &[u32]) -> Arc<Self> {
        Arc::new(Self {
            ports: cids.iter().map(|_| Once::new()).collect(),
            cids: cids.to_vec(),
        })
    }

    pub fn attach(&self, slot: usize, dev: Arc<VsockDevice>) {
        if let Some(p) = self.ports.get(slot) {
            p.call_once(|| dev);
        }
    }

    pub fn port(&self, slot: usize) -> Option<&Arc<VsockDevice>> {
        self.ports.get(slot).and_then(Once::get)
    }

    fn slot_of(&self, cid: u64) -> Option<usize> {
        self.cids.iter().position(|&c| u64::from(c) == cid)
    }
}

/// A packet of this VM held for a peer with no receive buffer.
#[derive(Default)]
struct Parked {
    busy: bool,
    /// The peer is gone: the packet is answered with an RST, which waits
    /// (its chain with it) for a receive buffer of this VM.
    owed: bool,
    chain: Chain,
    hdr: Header,
    /// Payload bytes already delivered.
    off: u32,
}

struct TxState {
    bounce: Vec<u8>,
    /// The work the exit holding this state has left.
    budget: Budget,
    /// By destination slot.
    parks: Vec<Parked>,
}

/// A peer connection of this VM: (peer slot, this VM's port, peer's port).
type Conn = (usize, u32, u32);

struct Conns {
    list: Vec<Conn>,
    next: usize,
}

/// One VM's end of a vsock link.
pub struct VsockPort {
    cid: u32,
    link: Arc<VsockLink>,
    slot: usize,
    tx: Mutex<TxState>,
    conns: Mutex<Conns>,
    /// A TRANSPORT_RESET event is owed to the driver (after a reset).
    reset_event: AtomicBool,
    /// A transmit exit stopped at its budget: resume on InterruptAck.
    resume: AtomicBool,
    /// An RST owed to this VM found no receive buffer: the packet it
    /// answers waits (left in the transmit ring, or held `owed`) for this
    /// VM's next receive-queue notify.
    rst_wait: AtomicBool,
    /// RSTs from peers that reset, for this VM's connections to them, that
    /// found no receive buffer: given at this VM's next rx notify. At most
    /// [`MAX_CONNS`], no two alike; a leaf lock.
    owed: Mutex<Vec<Header>>,
    pub counters: Counters,
}

/// A VM's vsock device.
pub type VsockDevice = VirtioMmio<VsockPort>;

/// What became of a transmitted chain.
enum Sent {
    /// Done with: back to the driver.
    Used,
    /// Swapped into a park slot.
    Held,
    /// Refused, and this VM has no receive buffer for the RST: the chain
    /// goes back into the ring, taken again after the next rx notify.
    Waiting,
}

enum Delivery {
    Done,
    /// The receiver ran out of buffers; `off` says how far it got.
    Full,
    /// The receiver is not running (or its queue broke).
    Dead,
}

impl VsockPort {
    /// `None` when the hypervisor's heap has no room for the port's state.
    pub fn new(cid: u32, link: Arc<VsockLink>, slot: usize) -> Option<Self> {
        let mut bounce = Vec::new();
        bounce.try_reserve_exact(BOUNCE).ok()?;
        bounce.resize(BOUNCE, 0);
        let n = link.cids.len();
        let mut parks = Vec::new();
        parks.try_reserve_exact(n).ok()?;
        parks.resize_with(n, Parked::default);
        let mut list = Vec::new();
        list.try_reserve_exact(MAX_CONNS).ok()?;
        let mut owed = Vec::new();
        owed.try_reserve_exact(MAX_CONNS).ok()?;
        Some(Self {
            cid,
            link,
            slot,
            tx: Mutex::new(TxState {
                bounce,
                budget: Budget::new(TX_BUDGET),
                parks,
            }),
            conns: Mutex::new(Conns { list, next: 0 }),
            reset_event: AtomicBool::new(false),
            resume: AtomicBool::new(false),
            rst_wait: AtomicBool::new(false),
            owed: Mutex::new(owed),
            counters: Counters::default(),
        })
    }

    pub fn cid(&self) -> u32 {
        self.cid
    }

    /// Gives `hdr` (no payload) to this VM, as from a peer (maybe on the
    /// peer's CPU: bounded by one packet's budget share, and only into
    /// buffers that need no scrub). Takes only this VM's receive queue lock.
    fn inject(&self, t: &Transport, hdr: &Header) -> bool {
        let Some(q) = t.queue(RX) else { return false };
        if !t.live() {
            return false;
        }
        let mut guard = q.lock();
        let st = &mut *guard;
        let foreign = Foreign(t.mem());
        let mem: &dyn GuestMemory = &foreign;
        let mut ok = false;
        let mut any = false;
        let mut b = Budget::new(TX_BUDGET);
        // Buffers too small for a header go back empty; at most the queue's worth.
        for _ in 0..st.queue.size {
            if !b.take_chain() {
                break;
            }
            let popped = st.queue.pop_rx(mem, &mut st.chain);
            b.charge(CHAIN_COST + DESC_COST.saturating_mul(st.chain.descs as usize));
            match popped {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    drop(guard);
                    t.fail("virtio-vsock", RX, e);
                    return false;
                }
            }
            ok = st.chain.writable as usize >= HDR && st.chain.write(mem, 0, &hdr.bytes()).ok() == Some(HDR);
            let len = if ok { HDR as u32 } else { 0 };
            if let Err(e) = st.queue.push_used(mem, st.chain.head, len) {
                drop(guard);
                t.fail("virtio-vsock", RX, e);
                return false;
            }
            any = true;
            if ok {
                break;
            }
        }
        let quiet = st.queue.interrupt_suppressed(mem);
        drop(guard);
        if ok {
            self.track(hdr, true);
        }
        if any && !quiet {
            t.interrupt(INT_USED);
        }
        ok
    }

    /// Answers `hdr`, a packet this VM sent, with an RST from its
    /// destination (never an RST to an RST). False if this VM has no
    /// receive buffer for it: the caller keeps the packet's chain, and
    /// [`Self::rst_wait`] has this VM's next rx notify try again. (Lost,
    /// the RST would leave the VM's socket waiting for ever.)
    fn answer_rst(&self, t: &Transport, hdr: &Header) -> bool {
        if hdr.op == OP_RST {
            return true;
        }
        let rst = hdr.rst_reply();
        let mut given = self.inject(t, &rst);
        if !given {
            // Raised before looking again: a notify for buffers posted
            // after that look sees it (its check follows the post).
            self.rst_wait.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            given = self.inject(t, &rst);
        }
        if given {
            self.counters.rst.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.rst_deferred.fetch_add(1, Ordering::Relaxed);
        }
        given
    }

    /// Gives this VM `rst`, from a peer that reset, for a connection of
    /// this VM's to it: now, or with no receive buffer at this VM's next rx
    /// notify (a lost RST would leave the connection waiting for ever).
    /// Runs on the peer's CPU; O(1) work beyond one inject.
    fn give_rst(&self, t: &Transport, rst: &Header) {
        // A VM whose driver is not running resets before it talks again.
        if !t.live() || self.inject(t, rst) {
            return;
        }
        {
            let mut owed = self.owed.lock();
            if owed.contains(rst) {
                return;
            }
            if owed.len() >= MAX_CONNS {
                self.counters.rst_lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
            owed.push(*rst);
        }
        // Raised before looking again, as in `answer_rst`.
        self.rst_wait.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.give_owed(t);
    }

    /// The RSTs waiting in `owed`, one at a time while this VM has
    /// receive buffers for them. Takes the `owed` lock with nothing else.
    fn give_owed(&self, t: &Transport) {
        for _ in 0..MAX_CONNS {
            let Some(rst) = self.owed.lock().pop() else {
                return;
            };
            if !self.inject(t, &rst) {
                let mut owed = self.owed.lock();
                if owed.len() < MAX_CONNS {
                    owed.push(rst);
                } else {
                    self.counters.rst_lost.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        }
    }

    /// Records (or, for an RST, forgets) the connection `hdr` belongs to.
    /// `incoming`: a packet to this VM (else one it sent).
    fn track(&self, hdr: &Header, incoming: bool) {
        let Some(peer) = self
            .link
            .slot_of(if incoming { hdr.src_cid } else { hdr.dst_cid })
        else {
            return;
        };
        let conn = if incoming {
            (peer, hdr.dst_port, hdr.src_port)
        } else {
            (peer, hdr.src_port, hdr.dst_port)
        };
        let mut c = self.conns.lock();
        let at = c.list.iter().position(|&x| x == conn);
        match (hdr.op == OP_RST, at) {
            (true, Some(i)) => {
                c.list.swap_remove(i);
            }
            (false, None) if !incoming => {
                if c.list.len() < MAX_CONNS {
                    c.list.push(conn);
                } else {
                    let i = c.next % MAX_CONNS;
                    if let Some(e) = c.list.get_mut(i) {
                        *e = conn;
                    }
                    c.next = i + 1;
                }
            }
            _ => {}
        }
    }

    /// Copies the packet `hdr` (payload in `src`'s readable bytes after the
    /// header, from payload offset `*off`) into `dst`'s receive buffers.
    /// Holds the sender's transmit locks; takes `dst`'s receive queue lock.
    fn deliver(
        src_t: &Transport,
        src: &Chain,
        hdr: &Header,
        off: &mut u32,
        bounce: &mut [u8],
        dst: &VsockDevice,
        b: &mut Budget,
    ) -> Delivery {
        let t = &dst.transport;
        let Some(q) = t.queue(RX) else {
            return Delivery::Dead;
        };
        if !t.live() {
            return Delivery::Dead;
        }
        let mut guard = q.lock();
        let st = &mut *guard;
        let foreign = Foreign(t.mem());
        let mem: &dyn GuestMemory = &foreign;
        let mut any = false;
        let mut result = Delivery::Full;
        b.next_frame();
        for _ in 0..st.queue.size {
            // Out of this packet's share: the rest is held.
            if !b.take_chain() {
                break;
            }
            let popped = st.queue.pop_rx(mem, &mut st.chain);
            b.charge(CHAIN_COST + DESC_COST.saturating_mul(st.chain.descs as usize));
            match popped {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    drop(guard);
                    t.fail("virtio-vsock", RX, e);
                    return Delivery::Dead;
                }
            }
            // A buffer not yet made ready by its owner: left in the ring,
            // the packet held until the owner's next rx notify.
            if !st
                .chain
                .segments
                .iter()
                .all(|s| mem.ready(s.addr, u64::from(s.len)))
            {
                st.queue.unpop();
                break;
            }
            let room = (st.chain.writable as usize).saturating_sub(HDR);
            let chunk = (hdr.len.saturating_sub(*off) as usize).min(room);
            let mut h = *hdr;
            h.len = chunk as u32;
            // A buffer with no room for payload the packet has is too small.
            let mut ok = st.chain.writable as usize >= HDR
                && (chunk > 0 || hdr.len <= *off)
                && st.chain.write(mem, 0, &h.bytes()).ok() == Some(HDR);
            let mut done = 0usize;
            while ok && done < chunk {
                let n = (chunk - done).min(bounce.len());
                let Some(b) = bounce.get_mut(..n) else { break };
                let from = HDR + *off as usize + done;
                ok = src.read(src_t.mem(), from, b).ok() == Some(n)
                    && st.chain.write(mem, HDR + done, b).ok() == Some(n);
                done += n;
            }
            let used = if ok { (HDR + chunk) as u32 } else { 0 };
            b.charge(2 * (HDR + done));
            if let Err(e) = st.queue.push_used(mem, st.chain.head, used) {
                drop(guard);
                t.fail("virtio-vsock", RX, e);
                return Delivery::Dead;
            }
            any = true;
            if ok {
                *off += chunk as u32;
                if *off >= hdr.len {
                    result = Delivery::Done;
                    break;
                }
            }
        }
        let quiet = st.queue.interrupt_suppressed(mem);
        drop(guard);
        if any && !quiet {
            t.interrupt(INT_USED);
        }
        if matches!(result, Delivery::Done) {
            dst.device.track(hdr, true);
        }
        result
    }

    /// Checks a packet's header; `Err(true)` if it deserves an RST.
    fn check(&self, chain: &Chain, hdr: &Header) -> Result<(), bool> {
        if hdr.src_cid != u64::from(self.cid) {
            self.counters.spoofed.fetch_add(1, Ordering::Relaxed);
            return Err(false);
        }
        if hdr.kind != TYPE_STREAM {
            self.counters.bad.fetch_add(1, Ordering::Relaxed);
            return Err(false);
        }
        let room = (chain.readable as usize).saturating_sub(HDR);
        let bad_len = hdr.len as usize > room
            || hdr.len > MAX_PAYLOAD
            || (hdr.op != OP_RW && hdr.len != 0)
            || hdr.op == 0
            || hdr.op > OP_MAX;
        if bad_len {
            self.counters.bad.fetch_add(1, Ordering::Relaxed);
            return Err(true);
        }
        Ok(())
    }

    /// Sends the packets the guest queued, up to the queue size and
    /// [`TX_BUDGET`] of work (receivers' included).
    fn transmit(&self, t: &Transport) {
        let Some(q) = t.queue(TX) else { return };
        self.resume.store(false, Ordering::Relaxed);
        let mut guard = q.lock();
        let st = &mut *guard;
        let mut txs = self.tx.lock();
        let tx = &mut *txs;
        let mem = t.mem();
        let mut any = false;
        tx.budget = Budget::new(TX_BUDGET);
        for _ in 0..st.queue.size {
            if tx.budget.spent() {
                break;
            }
            let popped = st.queue.pop(mem, &mut st.chain);
            tx.budget
                .charge(CHAIN_COST + DESC_COST.saturating_mul(st.chain.descs as usize) + HDR);
            match popped {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    drop(txs);
                    drop(guard);
                    return t.fail("virtio-vsock", TX, e);
                }
            }
            let mut raw = [0u8; HDR];
            let got = st.chain.read(mem, 0, &mut raw).unwrap_or(0);
            let hdr = Header::parse(&raw);
            let refused = |rst_given: bool| if rst_given { Sent::Used } else { Sent::Waiting };
            let sent = if got != HDR {
                self.counters.bad.fetch_add(1, Ordering::Relaxed);
                Sent::Used
            } else if let Err(rst) = self.check(&st.chain, &hdr) {
                refused(!rst || self.answer_rst(t, &hdr))
            } else {
                match self.link.slot_of(hdr.dst_cid).filter(|&s| s != self.slot) {
                    None => refused(self.answer_rst(t, &hdr)),
                    Some(to) => match self.send(t, &mut st.queue, &mut st.chain, &hdr, to, tx) {
                        Ok(s) => s,
                        Err(e) => {
                            drop(txs);
                            drop(guard);
                            return t.fail("virtio-vsock", TX, e);
                        }
                    },
                }
            };
            match sent {
                Sent::Used => {
                    if let Err(e) = st.queue.push_used(mem, st.chain.head, 0) {
                        drop(txs);
                        drop(guard);
                        return t.fail("virtio-vsock", TX, e);
                    }
                    any = true;
                }
                Sent::Held => {}
                // Taken again, checked afresh, after this VM's next rx
                // notify (or its next transmit notify): one chain of work
                // per notify while its RST cannot be given.
                Sent::Waiting => {
                    st.queue.unpop();
                    break;
                }
            }
        }
        // Stopped at the budget with packets left: the interrupt (asked
        // for or not) brings the guest's InterruptAck, which resumes.
        let left = tx.budget.spent() && st.queue.pending(mem).is_ok_and(|n| n > 0);
        let quiet = st.queue.interrupt_suppressed(mem) && !left;
        drop(txs);
        drop(guard);
        if left {
            self.resume.store(true, Ordering::Relaxed);
        }
        if (any || left) && !quiet {
            t.interrupt(INT_USED);
        }
    }

    /// Sends a checked packet to slot `to`; [`Sent::Held`] if its chain was
    /// parked (swapped into the park slot: `chain` then holds a spare).
    fn send(
        &self,
        t: &Transport,
        queue: &mut Queue,
        chain: &mut Chain,
        hdr: &Header,
        to: usize,
        tx: &mut TxState,
    ) -> Result<Sent, QueueError> {
        let refused = |rst_given: bool| if rst_given { Sent::Used } else { Sent::Waiting };
        let TxState {
            bounce,
            budget: b,
            parks,
        } = tx;
        let (Some(dst), Some(park)) = (self.link.port(to), parks.get_mut(to)) else {
            return Ok(refused(self.answer_rst(t, hdr)));
        };
        if park.busy {
            // The destination may have room by now.
            self.resume_park(t, queue, park, bounce, dst, b)?;
        }
        if park.busy {
            self.counters.refused_full.fetch_add(1, Ordering::Relaxed);
            return Ok(refused(self.answer_rst(t, hdr)));
        }
        self.track(hdr, false);
        let mut off = 0;
        Ok(match Self::deliver(t, chain, hdr, &mut off, bounce, dst, b) {
            Delivery::Done => {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                Sent::Used
            }
            Delivery::Dead => refused(self.answer_rst(t, hdr)),
            Delivery::Full => {
                self.counters.parked.fetch_add(1, Ordering::Relaxed);
                // Its payload is read later on the receiver's CPU (its rx
                // notify resumes it): make it ready here, on this VM's own
                // CPU, so that read never scrubs this VM's RAM there.
                prepare_readable(t.mem(), chain, HDR + off as usize, HDR + hdr.len as usize);
                core::mem::swap(chain, &mut park.chain);
                park.hdr = *hdr;
                park.off = off;
                park.busy = true;
                park.owed = false;
                Sent::Held
            }
        })
    }

    /// Tries the held packet again; once it is through (or its receiver is
    /// gone and this VM has its RST) its chain goes back to this VM. The
    /// caller holds this VM's transmit queue (`queue`) lock.
    fn resume_park(
        &self,
        t: &Transport,
        queue: &mut Queue,
        park: &mut Parked,
        bounce: &mut [u8],
        dst: &VsockDevice,
        b: &mut Budget,
    ) -> Result<bool, QueueError> {
        if !park.owed {
            let mut off = park.off;
            let r = Self::deliver(t, &park.chain, &park.hdr, &mut off, bounce, dst, b);
            park.off = off;
            match r {
                Delivery::Full => return Ok(false),
                Delivery::Done => {
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Delivery::Dead => park.owed = true,
            }
        }
        self.settle(t, queue, park)
    }

    /// Gives a held chain back to this VM, once its RST (if it is `owed`
    /// one) is given; `Ok(false)` while that waits for a receive buffer.
    fn settle(&self, t: &Transport, queue: &mut Queue, park: &mut Parked) -> Result<bool, QueueError> {
        if park.owed {
            let h = park.hdr;
            if !self.answer_rst(t, &h) {
                return Ok(false);
            }
        }
        park.busy = false;
        park.owed = false;
        queue.push_used(t.mem(), park.chain.head, 0)?;
        Ok(true)
    }

    /// This VM's packet held for slot `to`: resumed (`drop` false: `to`
    /// posted receive buffers) or answered with an RST (`drop`: `to` was
    /// reset). Runs on `to`'s exit, holding nothing of `to`'s.
    fn resume_for(&self, t: &Transport, to: usize, drop_it: bool) {
        let Some(q) = t.queue(TX) else { return };
        let mut guard = q.lock();
        let mut txs = self.tx.lock();
        let TxState {
            bounce,
            budget,
            parks,
        } = &mut *txs;
        let Some(park) = parks.get_mut(to).filter(|p| p.busy) else {
            return;
        };
        let r = match self.link.port(to) {
            Some(dst) if !drop_it => {
                *budget = Budget::new(TX_BUDGET);
                self.resume_park(t, &mut guard.queue, park, bounce, dst, budget)
            }
            _ => {
                park.owed = true;
                self.settle(t, &mut guard.queue, park)
            }
        };
        let quiet = guard.queue.interrupt_suppressed(t.mem());
        drop(txs);
        drop(guard);
        match r {
            Ok(true) if !quiet => t.interrupt(INT_USED),
            Ok(_) => {}
            Err(e) => t.fail("virtio-vsock", TX, e),
        }
    }

    /// Drops this VM's transmit work in flight: held chains, a pending
    /// resume (its queue was reset or turned off). A stale `rst_wait`
    /// left costs one look at the next rx notify.
    fn forget_tx(&self) {
        for p in self.tx.lock().parks.iter_mut() {
            p.busy = false;
            p.owed = false;
        }
        self.resume.store(false, Ordering::Relaxed);
    }

    /// This VM posted receive buffers and an RST owed to it had waited for
    /// one: RSTs from peers that reset are given, its held packets whose
    /// peer is gone get theirs, then the transmit ring goes on from the
    /// packet that waited. On its own exit.
    fn rst_ready(&self, t: &Transport) {
        // Every rx notify comes here: a load, no store, when nothing waits.
        if !self.rst_wait.load(Ordering::SeqCst) || !self.rst_wait.swap(false, Ordering::SeqCst) {
            return;
        }
        self.give_owed(t);
        if let Some(q) = t.queue(TX) {
            let mut guard = q.lock();
            let mut txs = self.tx.lock();
            let mut any = false;
            let mut r = Ok(());
            for park in txs.parks.iter_mut().filter(|p| p.busy && p.owed) {
                match self.settle(t, &mut guard.queue, park) {
                    Ok(done) => any |= done,
                    Err(e) => {
                        r = Err(e);
                        break;
                    }
                }
            }
            let quiet = guard.queue.interrupt_suppressed(t.mem());
            drop(txs);
            drop(guard);
            match r {
                Ok(()) if any && !quiet => t.interrupt(INT_USED),
                Ok(()) => {}
                Err(e) => return t.fail("virtio-vsock", TX, e),
            }
        }
        self.transmit(t);
    }

    /// This VM posted receive buffers: every peer's packet held for it
    /// goes on.
    fn receive_ready(&self) {
        for s in (0..self.link.ports.len()).filter(|&s| s != self.slot) {
            if let Some(peer) = self.link.port(s) {
                peer.device.resume_for(&peer.transport, self.slot, false);
            }
        }
    }

    /// Delivers the TRANSPORT_RESET event owed after a reset, if the driver
    /// posted an event buffer.
    fn event(&self, t: &Transport) {
        if !self.reset_event.swap(false, Ordering::AcqRel) {
            return;
        }
        let Some(q) = t.queue(EVENT) else { return };
        let mut guard = q.lock();
        let st = &mut *guard;
        let mem = t.mem();
        match st.queue.pop(mem, &mut st.chain) {
            Ok(true) => {}
            Ok(false) => {
                self.reset_event.store(true, Ordering::Release);
                return;
            }
            Err(e) => {
                drop(guard);
                return t.fail("virtio-vsock", EVENT, e);
            }
        }
        let id = EVENT_TRANSPORT_RESET.to_le_bytes();
        let n = if st.chain.write(mem, 0, &id).ok() == Some(4) {
            4
        } else {
            0
        };
        let r = st.queue.push_used(mem, st.chain.head, n);
        let quiet = st.queue.interrupt_suppressed(mem);
        drop(guard);
        match r {
            Ok(()) if !quiet => t.interrupt(INT_USED),
            Ok(()) => {}
            Err(e) => t.fail("virtio-vsock", EVENT, e),
        }
    }
}

impl Device for VsockPort {
    fn name(&self) -> &'static str {
        "virtio-vsock"
    }
    fn device_id(&self) -> u32 {
        DEVICE_ID
    }
    /// Stream sockets only: no VIRTIO_VSOCK_F_SEQPACKET.
    fn features(&self) -> u64 {
        0
    }
    fn queues(&self) -> usize {
        3
    }
    /// struct virtio_vsock_config: guest_cid (le64).
    fn config(&self, offset: u64) -> u8 {
        let c = u64::from(self.cid).to_le_bytes();
        usize::try_from(offset)
            .ok()
            .and_then(|o| c.get(o))
            .copied()
            .unwrap_or(0)
    }
    fn notify(&self, t: &Transport, queue: usize) {
        match queue {
            TX => self.transmit(t),
            RX => {
                // On this VM's own CPU: its buffers made ready first.
                net::prepare_rx(t, RX);
                self.rst_ready(t);
                self.receive_ready();
                self.event(t);
            }
            _ => self.event(t),
        }
    }
    /// The queues are already reset: this VM's held packets are gone with
    /// them; peers' packets held for it get RSTs, and so does every peer
    /// connection it had.
    fn enabled(&self, t: &Transport, queue: usize) {
        if queue == RX {
            net::prepare_rx(t, RX);
        }
    }
    /// The transmit queue off: its chains held here go with it (no used
    /// entry for them in the ring the driver sets up next). Called under
    /// that queue's lock, which comes before the transmit state's.
    fn disabled(&self, queue: usize) {
        if queue == TX {
            self.forget_tx();
        }
    }
    fn resume(&self, t: &Transport) {
        if self.resume.load(Ordering::Relaxed) {
            self.transmit(t);
        }
    }
    fn reset(&self) {
        self.forget_tx();
        // Its connections are gone: so are RSTs owed to them.
        self.owed.lock().clear();
        self.rst_wait.store(false, Ordering::SeqCst);
        self.reset_event.store(true, Ordering::Release);
        for s in (0..self.link.ports.len()).filter(|&s| s != self.slot) {
            if let Some(peer) = self.link.port(s) {
                peer.device.resume_for(&peer.transport, self.slot, true);
            }
        }
        let mut conns = [(0usize, 0u32, 0u32); MAX_CONNS];
        let n = {
            let mut c = self.conns.lock();
            let n = c.list.len().min(MAX_CONNS);
            for (d, s) in conns.iter_mut().zip(c.list.drain(..)) {
                *d = s;
            }
            c.next = 0;
            n
        };
        for &(peer, local, remote) in conns.iter().take(n) {
            let (Some(dev), Some(&cid)) = (self.link.port(peer), self.link.cids.get(peer)) else {
                continue;
            };
            let rst = Header {
                src_cid: u64::from(self.cid),
                dst_cid: u64::from(cid),
                src_port: local,
                dst_port: remote,
                kind: TYPE_STREAM,
                op: OP_RST,
                ..Header::default()
            };
            dev.device.give_rst(&dev.transport, &rst);
        }
    }
}

/// Makes bytes `[from, to)` of `chain`'s readable segments (counted from
/// the first readable byte) [`GuestMemory::ready`]: on the owner's CPU.
fn prepare_readable(mem: &dyn GuestMemory, chain: &Chain, from: usize, to: usize) {
    let mut at = 0usize;
    for s in chain.segments.iter().filter(|s| !s.write) {
        let end = at.saturating_add(s.len as usize);
        let (lo, hi) = (at.max(from), end.min(to));
        if lo < hi {
            mem.prepare(s.addr + (lo - at) as u64, (hi - lo) as u64);
        }
        at = end;
        if at >= to {
            break;
        }
    }
}
