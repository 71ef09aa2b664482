//! The virtio-mmio transport, version 2 (virtio 1.2, 4.2.2): the register
//! window Linux's `virtio_mmio` driver probes, feature negotiation with
//! `VIRTIO_F_VERSION_1` required, queue setup (validated by
//! [`Queue::enable`]), notification, the interrupt status and its level
//! interrupt, and the device-specific configuration space.
//!
//! Locks: the register lock is taken first and only for register state;
//! each queue has its own lock. A device's queue work (its `notify`) runs
//! without the register lock, so another VM delivering into this device's
//! receive queue takes only that queue's lock, and no two VMs can wait on
//! each other. Status and interrupt status are atomics for the same reason.
//!
//! A queue the guest broke ([`QueueError`]) puts this device, and nothing
//! else, into DEVICE_NEEDS_RESET (4.2.2.1 / 2.1.2): it stops using every
//! queue until the driver resets it, says so with a configuration-change
//! interrupt and logs the reason, rate-limited.

use super::moderate::{Held, Release};
use super::queue::{Chain, GuestMemory, Queue, QueueError, MAX_SIZE};
use crate::vdev::vgic::Vgic;
use crate::vdev::{BusError, MmioDevice};
use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use spin::Mutex;

const MAGIC: u64 = 0x000;
const VERSION: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const VENDOR_ID: u64 = 0x00c;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const QUEUE_NOTIFY: u64 = 0x050;
const INTERRUPT_STATUS: u64 = 0x060;
const INTERRUPT_ACK: u64 = 0x064;
const STATUS: u64 = 0x070;
const QUEUE_DESC_LOW: u64 = 0x080;
const QUEUE_DESC_HIGH: u64 = 0x084;
const QUEUE_DRIVER_LOW: u64 = 0x090;
const QUEUE_DRIVER_HIGH: u64 = 0x094;
const QUEUE_DEVICE_LOW: u64 = 0x0a0;
const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG: u64 = 0x100;
/// The transport's window: one page, so stage 2 never maps it.
pub const WINDOW: u64 = 0x1000;

/// "virt" in little-endian ASCII.
const MAGIC_VALUE: u64 = 0x7472_6976;
/// "TSRA": this hypervisor, as the vendor.
pub const VENDOR: u32 = 0x4152_5354;

pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_NEEDS_RESET: u32 = 0x40;
/// InterruptStatus bits: a used buffer, a configuration change.
pub const INT_USED: u32 = 1;
pub const INT_CONFIG: u32 = 2;

pub const F_VERSION_1: u64 = 1 << 32;

/// What a device model adds to the transport.
pub trait Device: Send + Sync {
    /// Short name for logs ("virtio-net").
    fn name(&self) -> &'static str;
    fn device_id(&self) -> u32;
    /// Features offered besides `VIRTIO_F_VERSION_1`.
    fn features(&self) -> u64;
    fn queues(&self) -> usize;
    /// One byte of the device configuration space.
    fn config(&self, offset: u64) -> u8;
    /// The driver notified queue `queue`; runs on the driver's exit.
    fn notify(&self, t: &Transport, queue: usize);
    /// The device was reset (queues are reset by the transport).
    fn reset(&self) {}
    /// The driver acknowledged interrupts: a device that stopped at its
    /// per-exit budget goes on here (runs on the driver's exit).
    fn resume(&self, _t: &Transport) {}
    /// The driver enabled queue `queue` (QueueReady, on its exit).
    fn enabled(&self, _t: &Transport, _queue: usize) {}
    /// The driver cleared QueueReady of `queue`: the chains it had are
    /// gone with it. Runs with that queue's lock held (the queue already
    /// reset): it must take no queue lock.
    fn disabled(&self, _queue: usize) {}
}

/// A queue and the device's scratch chain for it, under one lock.
pub struct QueueState {
    pub queue: Queue,
    pub chain: Chain,
    /// A second chain, for a device that holds one while taking more.
    pub spare: Chain,
}

struct Regs {
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
}

const REGS_RESET: Regs = Regs {
    device_features_sel: 0,
    driver_features_sel: 0,
    driver_features: 0,
    queue_sel: 0,
};

/// The register lock, held (tests).
#[cfg(test)]
pub struct HeldRegisters<'a>(#[allow(dead_code)] spin::MutexGuard<'a, Regs>);

/// The device-independent half: registers, queues, interrupt, guest RAM.
pub struct Transport {
    vm: String,
    regs: Mutex<Regs>,
    status: AtomicU32,
    int_status: AtomicU32,
    queues: Vec<Mutex<QueueState>>,
    mem: Box<dyn GuestMemory + Send + Sync>,
    irq: Option<(Arc<Vgic>, u32)>,
    /// Queue errors seen (for the rate-limited log line).
    errors: AtomicU64,
    offered: u64,
    /// The features agreed when FEATURES_OK was accepted: read by other
    /// VMs' exits without the register lock (which a driver may hold while
    /// it waits for a queue lock).
    agreed: AtomicU64,
    /// Used-buffer bits held back for the next interrupt (moderate.rs).
    held: Held,
}

impl Transport {
    /// The VM's own RAM the queues and buffers must lie in.
    pub fn mem(&self) -> &dyn GuestMemory {
        &*self.mem
    }

    /// Holds the register lock, as a driver mid-access does (tests).
    #[cfg(test)]
    pub fn hold_registers(&self) -> HeldRegisters<'_> {
        HeldRegisters(self.regs.lock())
    }

    /// Features both sides agreed on (0 until FEATURES_OK is accepted).
    pub fn features(&self) -> u64 {
        self.agreed.load(Ordering::Acquire)
    }

    /// The VM this device belongs to.
    pub fn vm(&self) -> &str {
        &self.vm
    }

    /// Queue `index` (its lock).
    pub fn queue(&self, index: usize) -> Option<&Mutex<QueueState>> {
        self.queues.get(index)
    }

    /// Whether the driver finished setup and the device is usable.
    pub fn live(&self) -> bool {
        let s = self.status.load(Ordering::Acquire);
        s & STATUS_DRIVER_OK != 0 && s & STATUS_NEEDS_RESET == 0
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    /// Raises InterruptStatus bits and the (level) interrupt. The release
    /// fence orders the used-ring writes before the injection.
    pub fn interrupt(&self, bits: u32) {
        fence(Ordering::SeqCst);
        let bits = bits | self.held.take();
        self.int_status.fetch_or(bits, Ordering::SeqCst);
        self.line();
    }

    /// Raises `bits` with the next interrupt this device raises anyway, or
    /// within [`super::moderate::HOLD_US`] (see moderate.rs); at once when
    /// an interrupt is already pending (the driver's handler will see them)
    /// or the device cannot hold bits.
    pub fn interrupt_soon(&self, bits: u32) {
        if self.int_status.load(Ordering::SeqCst) != 0 || !self.held.hold(bits) {
            self.interrupt(bits);
        }
    }

    /// Lets this device hold interrupts: `dev` is the device this
    /// transport is part of (build time).
    pub fn moderate(&self, dev: Arc<dyn Release>) {
        self.held.register(dev);
    }

    /// Raises the bits held, if any (the holding CPU's timer fired).
    pub fn release_held(&self) {
        let bits = self.held.take();
        if bits != 0 {
            self.interrupt(bits);
        }
    }

    #[cfg(test)]
    pub fn held_for_test(&self) -> &Held {
        &self.held
    }

    /// Bits the driver did not acknowledge are still pending: a new edge for
    /// a guest that configured the interrupt edge-triggered (no effect on a
    /// level one, whose line stays high).
    fn retrigger(&self) {
        if let Some((vgic, intid)) = &self.irq {
            vgic.retrigger(*intid);
        }
    }

    fn line(&self) {
        if let Some((vgic, intid)) = &self.irq {
            vgic.set_line(*intid, self.int_status.load(Ordering::SeqCst) != 0);
        }
    }

    /// The guest broke a queue of `device`: only this device stops, until
    /// the driver resets it.
    pub fn fail(&self, device: &str, queue: usize, e: QueueError) {
        let old = self.status.fetch_or(STATUS_NEEDS_RESET, Ordering::SeqCst);
        if old & STATUS_NEEDS_RESET != 0 {
            return;
        }
        let n = self.errors.fetch_add(1, Ordering::Relaxed);
        if n < 4 || n.is_multiple_of(1024) {
            log::warn!(
                "VM {} {device}: queue {queue}: {e}; device needs reset ({} so far)",
                self.vm,
                n + 1
            );
        }
        self.interrupt(INT_CONFIG);
    }

    fn reset(&self) {
        *self.regs.lock() = REGS_RESET;
        self.agreed.store(0, Ordering::Release);
        for q in &self.queues {
            q.lock().queue.reset();
        }
        self.status.store(0, Ordering::SeqCst);
        self.held.clear();
        self.int_status.store(0, Ordering::SeqCst);
        self.line();
    }
}

/// A virtio-mmio device: the transport and its device model.
pub struct VirtioMmio<D> {
    pub transport: Transport,
    pub device: D,
}

impl<D: Device> VirtioMmio<D> {
    /// A device of VM `vm` over its RAM `mem`, interrupting through `irq`.
    pub fn new(
        vm: &str,
        device: D,
        mem: Box<dyn GuestMemory + Send + Sync>,
        irq: Option<(Arc<Vgic>, u32)>,
    ) -> Self {
        let offered = device.features() | F_VERSION_1;
        let queues = (0..device.queues())
            .map(|_| {
                Mutex::new(QueueState {
                    queue: Queue::default(),
                    chain: Chain::default(),
                    spare: Chain::default(),
                })
            })
            .collect();
        Self {
            transport: Transport {
                vm: vm.into(),
                regs: Mutex::new(REGS_RESET),
                status: AtomicU32::new(0),
                int_status: AtomicU32::new(0),
                queues,
                mem,
                irq,
                errors: AtomicU64::new(0),
                offered,
                agreed: AtomicU64::new(0),
                held: Held::default(),
            },
            device,
        }
    }

    /// Features both sides agreed on (0 until FEATURES_OK is accepted).
    /// Takes no lock.
    pub fn negotiated(&self) -> u64 {
        self.transport.agreed.load(Ordering::Acquire)
    }

    fn queue_reg(&self, sel: u32, f: impl FnOnce(&mut Queue) -> u64) -> u64 {
        match self.transport.queue(sel as usize) {
            Some(q) => f(&mut q.lock().queue),
            None => 0,
        }
    }

    fn read_reg(&self, offset: u64) -> u64 {
        let t = &self.transport;
        let r = t.regs.lock();
        match offset {
            MAGIC => MAGIC_VALUE,
            VERSION => 2,
            DEVICE_ID => u64::from(self.device.device_id()),
            VENDOR_ID => u64::from(VENDOR),
            DEVICE_FEATURES => match r.device_features_sel {
                0 => t.offered & 0xffff_ffff,
                1 => t.offered >> 32,
                _ => 0,
            },
            QUEUE_NUM_MAX if (r.queue_sel as usize) < t.queues.len() => u64::from(MAX_SIZE),
            QUEUE_READY => self.queue_reg(r.queue_sel, |q| u64::from(q.ready)),
            QUEUE_NUM => self.queue_reg(r.queue_sel, |q| u64::from(q.size)),
            INTERRUPT_STATUS => u64::from(t.int_status.load(Ordering::SeqCst)),
            STATUS => u64::from(t.status.load(Ordering::SeqCst)),
            CONFIG_GENERATION => 0,
            _ => 0,
        }
    }

    fn write_reg(&self, offset: u64, v: u32) {
        let t = &self.transport;
        if offset == QUEUE_NOTIFY {
            // The queue work runs without the register lock.
            if t.live() && (v as usize) < t.queues.len() {
                self.device.notify(t, v as usize);
            }
            return;
        }
        if offset == STATUS {
            return self.write_status(v);
        }
        let mut r = t.regs.lock();
        let setup = t.status.load(Ordering::SeqCst) & STATUS_FEATURES_OK == 0;
        let sel = r.queue_sel;
        // Queue addresses and size change only while the queue is off.
        let set = |f: &dyn Fn(&mut Queue)| {
            if let Some(q) = t.queue(sel as usize) {
                let q = &mut q.lock().queue;
                if !q.ready {
                    f(q);
                }
            }
        };
        let lo = |a: u64| (a & !0xffff_ffff) | u64::from(v);
        let hi = |a: u64| (a & 0xffff_ffff) | (u64::from(v) << 32);
        match offset {
            DEVICE_FEATURES_SEL => r.device_features_sel = v,
            DRIVER_FEATURES_SEL => r.driver_features_sel = v,
            DRIVER_FEATURES if setup => match r.driver_features_sel {
                0 => r.driver_features = (r.driver_features & !0xffff_ffff) | u64::from(v),
                1 => r.driver_features = (r.driver_features & 0xffff_ffff) | (u64::from(v) << 32),
                _ => {}
            },
            QUEUE_SEL => r.queue_sel = v,
            QUEUE_NUM => set(&|q| q.size = v as u16),
            QUEUE_DESC_LOW => set(&|q| q.desc = lo(q.desc)),
            QUEUE_DESC_HIGH => set(&|q| q.desc = hi(q.desc)),
            QUEUE_DRIVER_LOW => set(&|q| q.avail = lo(q.avail)),
            QUEUE_DRIVER_HIGH => set(&|q| q.avail = hi(q.avail)),
            QUEUE_DEVICE_LOW => set(&|q| q.used = lo(q.used)),
            QUEUE_DEVICE_HIGH => set(&|q| q.used = hi(q.used)),
            QUEUE_READY => {
                drop(r);
                self.write_ready(sel as usize, v);
            }
            INTERRUPT_ACK => {
                drop(r);
                let left = t.int_status.fetch_and(!v, Ordering::SeqCst) & !v;
                t.line();
                if left != 0 {
                    t.retrigger();
                }
                if t.live() {
                    self.device.resume(t);
                }
            }
            _ => {}
        }
    }

    fn write_ready(&self, index: usize, v: u32) {
        let t = &self.transport;
        let Some(q) = t.queue(index) else { return };
        let mut q = q.lock();
        if v & 1 == 0 {
            // Addresses and size stay for the driver to read back.
            let kept = Queue::new(q.queue.size, q.queue.desc, q.queue.avail, q.queue.used);
            q.queue = kept;
            self.device.disabled(index);
        } else if !q.queue.ready {
            let enabled = q.queue.enable(t.mem());
            drop(q);
            match enabled {
                Ok(()) => self.device.enabled(t, index),
                Err(e) => t.fail(self.device.name(), index, e),
            }
        }
    }

    fn write_status(&self, v: u32) {
        let t = &self.transport;
        if v == 0 {
            t.reset();
            self.device.reset();
            return;
        }
        let old = t.status.load(Ordering::SeqCst);
        let mut new = (old & STATUS_NEEDS_RESET) | (v & !STATUS_NEEDS_RESET);
        if v & STATUS_FEATURES_OK != 0 && old & STATUS_FEATURES_OK == 0 {
            // 3.1.1: the device refuses features it did not offer, and this
            // one requires VIRTIO_F_VERSION_1 (no legacy interface).
            let f = t.regs.lock().driver_features;
            if f & !t.offered != 0 || f & F_VERSION_1 == 0 {
                new &= !STATUS_FEATURES_OK;
            } else {
                t.agreed.store(f, Ordering::Release);
            }
        }
        if new & STATUS_DRIVER_OK != 0 && new & STATUS_FEATURES_OK == 0 {
            new &= !STATUS_DRIVER_OK;
        }
        t.status.store(new, Ordering::SeqCst);
    }
}

impl<D: Device> Release for VirtioMmio<D> {
    fn release(&self) {
        self.transport.release_held();
    }
}

impl<D: Device> MmioDevice for VirtioMmio<D> {
    fn name(&self) -> &str {
        self.device.name()
    }

    fn size(&self) -> u64 {
        WINDOW
    }

    fn read(&self, offset: u64, width: u8, _vcpu: usize) -> Result<u64, BusError> {
        if offset >= CONFIG {
            let w = u64::from(width);
            if !matches!(width, 1 | 2 | 4) || !offset.is_multiple_of(w) || offset + w > WINDOW {
                return Err(BusError);
            }
            let v = (0..w).fold(0u64, |v, i| {
                v | u64::from(self.device.config(offset - CONFIG + i)) << (8 * i)
            });
            return Ok(v);
        }
        if width != 4 || !offset.is_multiple_of(4) {
            return Err(BusError);
        }
        Ok(self.read_reg(offset))
    }

    fn write(&self, offset: u64, width: u8, value: u64, _vcpu: usize) -> Result<(), BusError> {
        if offset >= CONFIG {
            // Nothing in these devices' configuration is writable.
            return Ok(());
        }
        if width != 4 || !offset.is_multiple_of(4) {
            return Err(BusError);
        }
        self.write_reg(offset, value as u32);
        Ok(())
    }

    fn reset(&self) {
        self.transport.reset();
        self.device.reset();
    }

    /// A stopped VM's device is reset: no longer live, it takes nothing
    /// from its peers (a frame for it is dropped, a packet refused) and
    /// releases what they hold for it.
    fn stop(&self) {
        MmioDevice::reset(self);
    }
}
