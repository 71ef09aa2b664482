//! virtio-net between VMs (virtio 1.2, 5.1), switched by the hypervisor
//! with no backend VM. Each VM on a `net` link has one [`NetPort`]; a
//! frame the guest queues for transmission is copied, on that guest's own
//! exit, into hypervisor memory (read once), then into a receive buffer the
//! peer posted. A peer with no buffer posted loses the frame: the sender
//! never waits for it. Work per exit is bounded by the transmit queue's
//! size (the avail index cannot run further ahead) and the frame size.
//!
//! A link of more than two VMs is a learning switch: source MACs are
//! learnt per port; a frame to a known MAC goes to that port only, a
//! broadcast, multicast or unknown one to every other port of the link.
//! Nothing leaves the link.

use super::mmio::{Device, Transport, VirtioMmio, INT_USED};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
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
/// The largest frame a port carries: header + Ethernet header + MTU.
pub const MAX_FRAME: usize = HDR + ETH_HDR + MTU as usize;
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
}

/// One VM's end of a net link.
pub struct NetPort {
    mac: Mac,
    switch: Arc<Switch>,
    slot: usize,
    /// The transmit bounce buffer: the frame, read once.
    tx: Mutex<Vec<u8>>,
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

    /// Forwards `frame` (Ethernet, no virtio header) from port `from`.
    pub fn forward(&self, from: usize, frame: &[u8]) {
        let (Some(dst), Some(src)) = (frame.get(..6), frame.get(6..12)) else {
            return;
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
            Some(p) if p == from => {}
            Some(p) => self.deliver(p, frame),
            None => {
                for p in (0..self.ports.len()).filter(|&p| p != from) {
                    self.deliver(p, frame);
                }
            }
        }
    }

    fn deliver(&self, slot: usize, frame: &[u8]) {
        if let Some(dev) = self.port(slot) {
            dev.device.receive(&dev.transport, dev.negotiated(), frame);
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
            counters: Counters::default(),
        })
    }

    /// Takes `frame` into this VM's receive queue, if it has buffers.
    /// Runs on the sender's CPU, holding only this queue's lock.
    pub fn receive(&self, t: &Transport, features: u64, frame: &[u8]) {
        let c = &self.counters;
        let Some(q) = t.queue(RX) else { return };
        if !t.live() {
            c.dropped_no_buffer.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut guard = q.lock();
        let st = &mut *guard;
        let mem = t.mem();
        let merge = features & F_MRG_RXBUF != 0;
        // Chains taken for this frame: (head, bytes written). The first
        // one is kept in `st.spare` to receive the header last, when
        // num_buffers is known (5.1.6.4: 1 unless buffers were merged).
        let mut used: [(u16, u32); MAX_MERGE] = [(0, 0); MAX_MERGE];
        let mut n = 0usize;
        let mut left = frame;
        loop {
            match st.queue.pop(mem, &mut st.chain) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    drop(guard);
                    return t.fail("virtio-net", RX, e);
                }
            }
            let off = if n == 0 { HDR } else { 0 };
            let room = (st.chain.writable as usize).saturating_sub(off);
            let (part, rest) = left.split_at(left.len().min(room));
            let wrote = st.chain.write(mem, off, part).unwrap_or(0);
            left = rest;
            if let Some(u) = used.get_mut(n) {
                *u = (st.chain.head, (off + wrote) as u32);
            }
            if n == 0 {
                core::mem::swap(&mut st.chain, &mut st.spare);
            }
            n += 1;
            if left.is_empty() || !merge || n == MAX_MERGE {
                break;
            }
        }
        let fits = n > 0 && left.is_empty() && st.spare.writable as usize >= HDR;
        if fits {
            let mut hdr = [0u8; HDR];
            hdr[10..12].copy_from_slice(&(n as u16).to_le_bytes());
            let _ = st.spare.write(mem, 0, &hdr);
            c.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            // No buffer, or too little room: the frame is lost, never
            // waited for; buffers taken go back empty.
            self.dropped(t);
        }
        for &(head, len) in used.iter().take(n) {
            if let Err(e) = st.queue.push_used(mem, head, if fits { len } else { 0 }) {
                drop(guard);
                return t.fail("virtio-net", RX, e);
            }
        }
        let quiet = n == 0 || st.queue.interrupt_suppressed(mem);
        drop(guard);
        if !quiet {
            t.interrupt(INT_USED);
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

    /// Sends every frame the guest queued (at most the queue size).
    fn transmit(&self, t: &Transport) {
        let Some(q) = t.queue(TX) else { return };
        let mut buf = self.tx.lock();
        let mut guard = q.lock();
        let st = &mut *guard;
        let mem = t.mem();
        let mut any = false;
        for _ in 0..st.queue.size {
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
                        self.counters.sent.fetch_add(1, Ordering::Relaxed);
                        self.switch.forward(self.slot, buf.get(HDR..n).unwrap_or(&[]));
                    }
                    _ => {
                        self.counters.dropped_bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            } else {
                self.counters.dropped_bad.fetch_add(1, Ordering::Relaxed);
            }
            if let Err(e) = st.queue.push_used(mem, st.chain.head, 0) {
                drop(guard);
                t.fail("virtio-net", TX, e);
                return;
            }
            any = true;
        }
        let quiet = st.queue.interrupt_suppressed(mem);
        drop(guard);
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
        F_MAC | F_STATUS | F_MTU | F_MRG_RXBUF
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
}
