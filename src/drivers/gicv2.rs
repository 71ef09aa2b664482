//! GICv2 (GIC-400 and compatibles): distributor, CPU interface, and the
//! virtual interface control frame (GICH) that holds the list registers.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_structs! {
    pub GicdRegs {
        (0x000 => ctlr: ReadWrite<u32>),
        (0x004 => typer: ReadOnly<u32>),
        (0x008 => _r0),
        (0x080 => igroupr: [ReadWrite<u32>; 32]),
        (0x100 => isenabler: [ReadWrite<u32>; 32]),
        (0x180 => icenabler: [ReadWrite<u32>; 32]),
        (0x200 => ispendr: [ReadWrite<u32>; 32]),
        (0x280 => icpendr: [ReadWrite<u32>; 32]),
        (0x300 => isactiver: [ReadWrite<u32>; 32]),
        (0x380 => icactiver: [ReadWrite<u32>; 32]),
        (0x400 => ipriorityr: [ReadWrite<u32>; 255]),
        (0x7fc => _r1),
        (0x800 => itargetsr: [ReadWrite<u32>; 255]),
        (0xbfc => _r2),
        (0xc00 => icfgr: [ReadWrite<u32>; 64]),
        (0xd00 => _r3),
        (0xf00 => sgir: WriteOnly<u32>),
        (0xf04 => @END),
    }
}

register_structs! {
    pub GiccRegs {
        (0x0000 => ctlr: ReadWrite<u32>),
        (0x0004 => pmr: ReadWrite<u32>),
        (0x0008 => bpr: ReadWrite<u32>),
        (0x000c => iar: ReadOnly<u32>),
        (0x0010 => eoir: WriteOnly<u32>),
        (0x0014 => _r0),
        (0x1000 => dir: WriteOnly<u32>),
        (0x1004 => @END),
    }
}

register_structs! {
    pub GichRegs {
        (0x000 => hcr: ReadWrite<u32>),
        (0x004 => vtr: ReadOnly<u32>),
        (0x008 => vmcr: ReadWrite<u32>),
        (0x00c => _r0),
        (0x010 => misr: ReadOnly<u32>),
        (0x014 => _r1),
        (0x020 => eisr0: ReadOnly<u32>),
        (0x024 => _r2),
        (0x030 => elrsr0: ReadOnly<u32>),
        (0x034 => _r3),
        (0x0f0 => apr: ReadWrite<u32>),
        (0x0f4 => _r4),
        (0x100 => lr: [ReadWrite<u32>; 64]),
        (0x200 => @END),
    }
}

register_structs! {
    /// The virtual CPU interface (GICV) as seen at EL2: the current CPU's
    /// virtual interface, as a guest would reach it.
    pub GicvRegs {
        (0x0000 => ctlr: ReadWrite<u32>),
        (0x0004 => pmr: ReadWrite<u32>),
        (0x0008 => bpr: ReadWrite<u32>),
        (0x000c => iar: ReadOnly<u32>),
        (0x0010 => eoir: WriteOnly<u32>),
        (0x0014 => @END),
    }
}

/// GICH_LR fields (IHI 0048B 5.3.11).
const LR_HW: u32 = 1 << 31;
const LR_PENDING: u32 = 1 << 28;
const LR_PINTID_SHIFT: u32 = 10;
/// GICH_VMCR: virtual group 0 on, virtual priority mask wide open.
const VMCR_GRP0_ALL: u32 = 1 | (0x1f << 27);

/// How many polls a probe waits for the GIC to signal an interrupt: far
/// more than a GIC-400 needs to forward one (tens of cycles).
const PROBE_POLLS: usize = 10_000;

/// Priority of every interrupt the hypervisor enables, unless raised to
/// `URGENT` (see `gic_prio`).
const PRIORITY: u32 = super::gic_prio::NORMAL as u32;

pub struct Gicv2 {
    dist: *const GicdRegs,
    cpu: *const GiccRegs,
    hyp: *const GichRegs,
    /// Each CPU's interface mask (from its banked ITARGETSR0).
    /// Each CPU's GICD_ITARGETSR bit, learnt in `init_cpu`; atomics, so
    /// an SGI to another CPU (a guest's IPI) takes no lock.
    masks: alloc::vec::Vec<core::sync::atomic::AtomicU8>,
}

// SAFETY: MMIO shared by design; GICC and GICH are banked per CPU, so each
// CPU only ever reaches its own through the same address.
unsafe impl Send for Gicv2 {}
// SAFETY: as above.
unsafe impl Sync for Gicv2 {}

impl Gicv2 {
    /// # Safety
    /// The three addresses must be the mapped GICD, GICC (8 KiB) and GICH frames.
    pub unsafe fn new(dist: u64, cpu: u64, hyp: u64, ncpus: usize) -> Self {
        Self {
            dist: dist as *const GicdRegs,
            cpu: cpu as *const GiccRegs,
            hyp: hyp as *const GichRegs,
            masks: (0..ncpus).map(|_| core::sync::atomic::AtomicU8::new(0)).collect(),
        }
    }

    fn d(&self) -> &GicdRegs {
        // SAFETY: `new`'s contract.
        unsafe { &*self.dist }
    }
    fn c(&self) -> &GiccRegs {
        // SAFETY: `new`'s contract.
        unsafe { &*self.cpu }
    }
    fn h(&self) -> &GichRegs {
        // SAFETY: `new`'s contract.
        unsafe { &*self.hyp }
    }

    /// Number of list registers.
    pub fn lr_count(&self) -> usize {
        ((self.h().vtr.get() & 0x3f) + 1) as usize
    }
    pub fn lr(&self, i: usize) -> u32 {
        self.h().lr[i].get()
    }
    pub fn set_lr(&self, i: usize, v: u32) {
        self.h().lr[i].set(v)
    }
    /// GICH_HCR: En, plus UIE (maintenance when the list registers run dry).
    pub fn set_hcr(&self, underflow: bool) {
        self.h().hcr.set(1 | (u32::from(underflow) << 1))
    }
    pub fn misr(&self) -> u32 {
        self.h().misr.get()
    }
    pub fn eisr(&self) -> u32 {
        self.h().eisr0.get()
    }
    /// Free list registers (bit set = free).
    pub fn elrsr(&self) -> u32 {
        self.h().elrsr0.get()
    }
    /// Back to reset for a starting vCPU: no active priorities, default VMCR.
    pub fn reset_virtual(&self) {
        self.h().apr.set(0);
        self.h().vmcr.set(0);
    }

    pub fn lines(&self) -> u32 {
        32 * ((self.d().typer.get() & 0x1f) + 1)
    }

    /// Distributor: every SPI group 1, disabled, inactive, to the boot CPU.
    /// Group 1 because that is the non-secure group on a GIC with the
    /// security extensions, and because a guest's deactivation through the
    /// HW bit only reaches group 1 interrupts on some GICs (QEMU 7.2's among
    /// them). On a GIC without security extensions, GICC_CTLR.AckCtl lets
    /// GICC_IAR acknowledge them.
    pub fn init_distributor(&self) {
        let d = self.d();
        d.ctlr.set(0);
        let lines = self.lines().min(1020);
        let me = (d.itargetsr[0].get() & 0xff) * 0x0101_0101;
        for n in 1..(lines / 32) as usize {
            d.igroupr[n].set(!0);
            d.icenabler[n].set(!0);
            d.icpendr[n].set(!0);
            d.icactiver[n].set(!0);
        }
        for n in 8..(lines / 4) as usize {
            d.ipriorityr[n].set(PRIORITY * 0x0101_0101);
            d.itargetsr[n].set(me);
        }
        d.ctlr.set(0b11);
    }

    /// This CPU's banked registers, CPU interface and virtual interface.
    pub fn init_cpu(&self, cpu: usize) {
        let d = self.d();
        let mask = (d.itargetsr[0].get() & 0xff) as u8;
        if let Some(m) = self.masks.get(cpu) {
            m.store(mask, core::sync::atomic::Ordering::Release);
        }
        d.igroupr[0].set(!0);
        d.icenabler[0].set(!0);
        d.icpendr[0].set(!0);
        d.icactiver[0].set(!0);
        for n in 0..8 {
            d.ipriorityr[n].set(PRIORITY * 0x0101_0101);
        }
        let c = self.c();
        c.pmr.set(u32::from(super::gic_prio::PMR_ALL));
        c.bpr.set(0);
        // Both groups on, AckCtl, EOImode 1 (both banks): EOIR drops
        // priority, DIR deactivates.
        c.ctlr.set(0b111 | (1 << 9) | (1 << 10));
        self.h().hcr.set(1);
    }

    pub fn ack(&self) -> u32 {
        self.c().iar.get()
    }
    pub fn eoi(&self, iar: u32) {
        self.c().eoir.set(iar)
    }
    pub fn deactivate(&self, iar: u32) {
        self.c().dir.set(iar)
    }

    /// Makes SPI `intid` edge-triggered (GICD_ICFGR: Int_config[1] = 1).
    pub fn set_edge(&self, intid: u32) {
        if (32..self.lines()).contains(&intid) {
            let r = &self.d().icfgr[(intid / 16) as usize];
            r.set(r.get() | (0b10 << (2 * (intid % 16))));
        }
    }

    /// Whether `intid` is enabled (SGIs/PPIs: the calling CPU's banked
    /// copy).
    pub fn enabled(&self, intid: u32) -> bool {
        intid < self.lines() && self.d().isenabler[(intid / 32) as usize].get() & (1 << (intid % 32)) != 0
    }

    pub fn set_enabled(&self, intid: u32, on: bool) {
        let bit = 1 << (intid % 32);
        let n = (intid / 32) as usize;
        if intid < self.lines() {
            if on {
                self.d().isenabler[n].set(bit)
            } else {
                self.d().icenabler[n].set(bit)
            }
        }
    }

    /// Sets the priority of `intid` (SGIs/PPIs: the calling CPU's banked
    /// copy). Only at initialisation, before anything else writes these.
    pub fn set_priority(&self, intid: u32, prio: u8) {
        if intid < self.lines() {
            let r = &self.d().ipriorityr[(intid / 4) as usize];
            let shift = 8 * (intid % 4);
            r.set((r.get() & !(0xff << shift)) | (u32::from(prio) << shift));
        }
    }

    /// Interrupts below priority `pmr` (numerically at or above) are not
    /// signalled to this CPU.
    pub fn set_pmr(&self, pmr: u8) {
        self.c().pmr.set(u32::from(pmr));
    }

    /// Clears `intid`'s active state (SGIs/PPIs: the calling CPU's banked
    /// copy). Harmless if it is not active.
    pub fn clear_active(&self, intid: u32) {
        if intid < self.lines() {
            self.d().icactiver[(intid / 32) as usize].set(1 << (intid % 32));
        }
    }

    /// Makes SPI `intid` pending again (it goes to wherever it is routed).
    pub fn set_pending_spi(&self, intid: u32) {
        if (32..self.lines()).contains(&intid) {
            self.d().ispendr[(intid / 32) as usize].set(1 << (intid % 32));
        }
    }

    pub fn route(&self, intid: u32, cpu: usize) {
        if !(32..self.lines()).contains(&intid) {
            return;
        }
        let Some(mask) = self.mask(cpu) else {
            return;
        };
        // GICD_ITARGETSR is byte-accessible: one byte store per interrupt, so
        // two CPUs routing neighbouring SPIs of different VMs cannot undo each
        // other the way a read-modify-write of the shared word could.
        let byte = (self.dist as usize + 0x800 + intid as usize) as *mut u8;
        // SAFETY: `intid < lines()`, so the byte lies inside the mapped GICD's
        // ITARGETSR array (`new`'s contract), and it is a device register.
        unsafe { byte.write_volatile(mask) };
    }

    fn mask(&self, cpu: usize) -> Option<u8> {
        self.masks
            .get(cpu)
            .map(|m| m.load(core::sync::atomic::Ordering::Acquire))
    }

    #[inline]
    pub fn send_sgi(&self, intid: u32, cpu: usize) {
        if let Some(mask) = self.mask(cpu) {
            self.d().sgir.set((u32::from(mask) << 16) | (intid & 0xf));
        }
    }

    /// Polls GICC_IAR for `intid`: its raw IAR once it is signalled (others
    /// that turn up meanwhile are completed), `None` if it is not.
    fn wait_signalled(&self, intid: u32) -> Option<u32> {
        for _ in 0..PROBE_POLLS {
            let iar = self.ack();
            match iar & 0x3ff {
                id if id == intid => return Some(iar),
                1020..=1023 => core::hint::spin_loop(),
                _ => {
                    self.eoi(iar);
                    self.deactivate(iar);
                }
            }
        }
        None
    }

    /// Whether this GIC signals a level interrupt again when a guest
    /// deactivates it through a HW list register while its line is still
    /// asserted, as the architecture says (IHI 0048B 5.4.1: the physical
    /// interrupt is deactivated, and a level interrupt that is still
    /// asserted becomes pending). QEMU's GICv2 model does not (QEMU 7.2 and
    /// 10.0 alike), and a guest's timer then goes silent.
    ///
    /// Does what a guest would, on this CPU: the level source is `ppi`,
    /// raised by `raise` and lowered by `lower` (the EL2 timer); it is
    /// acknowledged physically, listed with the HW bit, acknowledged and
    /// EOId through the GICV frame at `gicv` (mapped at EL2), and then GICC
    /// is watched for it. `None` if the probe itself could not run (the
    /// interrupt never arrived, or the virtual interface did not offer
    /// it). Boot CPU, IRQs masked, no guest yet; the PPI is left enabled or
    /// disabled as it was found (the EL2 timer is the hypervisor's own, and
    /// its CPU set-up may have enabled it already), not pending and not
    /// active; list register 0 and GICH_VMCR are left empty and reset.
    ///
    /// # Safety
    /// `gicv` must be this GIC's virtual CPU interface, mapped as device
    /// memory.
    pub unsafe fn probe_hw_deactivate_resignals(
        &self,
        gicv: u64,
        ppi: u32,
        raise: impl FnOnce(),
        lower: impl FnOnce(),
    ) -> Option<bool> {
        // SAFETY: the caller's contract.
        let v = unsafe { &*(gicv as *const GicvRegs) };
        let h = self.h();
        let was_enabled = self.enabled(ppi);
        self.set_enabled(ppi, true);
        raise();
        let first = self.wait_signalled(ppi);
        let mut listed = false;
        let mut again = None;
        if let Some(first) = first {
            self.eoi(first);
            h.vmcr.set(VMCR_GRP0_ALL);
            h.lr[0].set(LR_HW | LR_PENDING | (ppi << LR_PINTID_SHIFT) | ppi);
            let viar = v.iar.get();
            listed = viar & 0x3ff == ppi;
            if listed {
                v.eoir.set(viar);
                again = self.wait_signalled(ppi);
            }
        }
        lower();
        if let Some(iar) = again {
            self.eoi(iar);
            self.deactivate(iar);
        }
        // Whatever the model did with the first activation, end it.
        self.clear_active(ppi);
        self.set_enabled(ppi, was_enabled);
        self.d().icpendr[0].set(1 << ppi);
        h.lr[0].set(0);
        self.reset_virtual();
        listed.then_some(again.is_some())
    }
}

#[cfg(test)]
#[path = "gicv2_tests.rs"]
mod tests;
