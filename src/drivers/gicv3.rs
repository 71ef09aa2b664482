//! GICv3 distributor and redistributors (MMIO), as the hypervisor drives them.
//! The CPU interface is system registers: `arch::aarch64::gic`.

#[allow(unused_imports)]
use tock_registers::interfaces::ReadWriteable;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! [u32,
    GICD_CTLR [
        RWP OFFSET(31) NUMBITS(1) [],
        ARE OFFSET(4) NUMBITS(1) [],
        ENABLE_GRP1 OFFSET(1) NUMBITS(1) []
    ],
    GICR_WAKER [
        CHILDREN_ASLEEP OFFSET(2) NUMBITS(1) [],
        PROCESSOR_SLEEP OFFSET(1) NUMBITS(1) []
    ]
];

register_structs! {
    pub GicdRegs {
        (0x0000 => ctlr: ReadWrite<u32, GICD_CTLR::Register>),
        (0x0004 => typer: ReadOnly<u32>),
        (0x0008 => _r0),
        (0x0080 => igroupr: [ReadWrite<u32>; 32]),
        (0x0100 => isenabler: [ReadWrite<u32>; 32]),
        (0x0180 => icenabler: [ReadWrite<u32>; 32]),
        (0x0200 => ispendr: [ReadWrite<u32>; 32]),
        (0x0280 => icpendr: [ReadWrite<u32>; 32]),
        (0x0300 => isactiver: [ReadWrite<u32>; 32]),
        (0x0380 => icactiver: [ReadWrite<u32>; 32]),
        (0x0400 => ipriorityr: [ReadWrite<u32>; 255]),
        (0x07fc => _r1),
        (0x0c00 => icfgr: [ReadWrite<u32>; 64]),
        (0x0d00 => _r2),
        (0x6000 => irouter: [ReadWrite<u64>; 1020]),
        (0x7fe0 => _r3),
        (0x8000 => @END),
    }
}

register_structs! {
    pub GicrRd {
        (0x0000 => ctlr: ReadWrite<u32>),
        (0x0004 => iidr: ReadOnly<u32>),
        (0x0008 => typer: ReadOnly<u64>),
        (0x0010 => _r0),
        (0x0014 => waker: ReadWrite<u32, GICR_WAKER::Register>),
        (0x0018 => _r1),
        (0x10080 => igroupr0: ReadWrite<u32>),
        (0x10084 => _r2),
        (0x10100 => isenabler0: ReadWrite<u32>),
        (0x10104 => _r3),
        (0x10180 => icenabler0: ReadWrite<u32>),
        (0x10184 => _r4),
        (0x10280 => icpendr0: ReadWrite<u32>),
        (0x10284 => _r5),
        (0x10380 => icactiver0: ReadWrite<u32>),
        (0x10384 => _r6),
        (0x10400 => ipriorityr: [ReadWrite<u32>; 8]),
        (0x10420 => @END),
    }
}

/// Priority of every interrupt the hypervisor enables, unless raised to
/// `URGENT` (see `gic_prio`).
const PRIORITY: u32 = super::gic_prio::NORMAL as u32;

pub struct Gicv3 {
    dist: *const GicdRegs,
    /// Each CPU's redistributor (index = logical CPU).
    redists: alloc::vec::Vec<*const GicrRd>,
    mpidrs: alloc::vec::Vec<u64>,
    /// Per CPU, the ICC_SGI1R_EL1 value that targets it (INTID 0).
    sgi_targets: alloc::vec::Vec<u64>,
}

// SAFETY: the register blocks are MMIO shared by design; every register
// written is either per-interrupt with set/clear semantics or written once at
// boot, so concurrent use from several CPUs is what the GIC expects.
unsafe impl Send for Gicv3 {}
// SAFETY: as above.
unsafe impl Sync for Gicv3 {}

impl Gicv3 {
    /// # Safety
    /// `dist` must be the mapped GICD frame and `redist_regions` the mapped
    /// redistributor regions of this GIC.
    pub unsafe fn new(dist: u64, redist_regions: &[(u64, u64)], mpidrs: &[u64]) -> Self {
        let mut redists = alloc::vec![core::ptr::null::<GicrRd>(); mpidrs.len()];
        for &(base, size) in redist_regions {
            let mut frame = base;
            while frame < base + size {
                // SAFETY: inside a mapped redistributor region (caller's contract).
                let rd = unsafe { &*(frame as *const GicrRd) };
                let typer = rd.typer.get();
                let aff = typer >> 32;
                let mpidr = (aff & 0xff_ffff) | ((aff >> 24) << 32);
                if let Some(i) = mpidrs.iter().position(|m| *m == mpidr) {
                    redists[i] = frame as *const GicrRd;
                }
                if typer & (1 << 4) != 0 {
                    break; // Last
                }
                // VLPIS (GICv4) frames are twice as large.
                frame += if typer & (1 << 1) != 0 { 0x4_0000 } else { 0x2_0000 };
            }
        }
        Self {
            dist: dist as *const GicdRegs,
            redists,
            mpidrs: mpidrs.to_vec(),
            sgi_targets: mpidrs.iter().map(|&m| sgi_target(m)).collect(),
        }
    }

    fn d(&self) -> &GicdRegs {
        // SAFETY: `new`'s contract.
        unsafe { &*self.dist }
    }

    fn r(&self, cpu: usize) -> Option<&GicrRd> {
        let p = *self.redists.get(cpu)?;
        // SAFETY: found inside a mapped region in `new`.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// Number of INTIDs the distributor implements.
    pub fn lines(&self) -> u32 {
        32 * ((self.d().typer.get() & 0x1f) + 1)
    }

    fn wait_rwp(&self) {
        while self.d().ctlr.is_set(GICD_CTLR::RWP) {
            core::hint::spin_loop();
        }
    }

    /// Distributor: every SPI group 1, disabled, inactive, routed to the boot
    /// CPU; affinity routing and group 1 on.
    pub fn init_distributor(&self, boot_cpu: usize) {
        let d = self.d();
        d.ctlr.set(0);
        self.wait_rwp();
        let lines = self.lines().min(1020);
        for n in 1..(lines / 32) as usize {
            d.igroupr[n].set(!0);
            d.icenabler[n].set(!0);
            d.icpendr[n].set(!0);
            d.icactiver[n].set(!0);
        }
        for n in 8..(lines / 4) as usize {
            d.ipriorityr[n].set(PRIORITY * 0x0101_0101);
        }
        for intid in 32..lines as usize {
            d.irouter[intid].set(self.mpidrs[boot_cpu]);
        }
        d.ctlr.write(GICD_CTLR::ARE::SET + GICD_CTLR::ENABLE_GRP1::SET);
        self.wait_rwp();
    }

    /// This CPU's redistributor: awake, SGIs/PPIs group 1, all disabled.
    pub fn init_redistributor(&self, cpu: usize) -> bool {
        let Some(r) = self.r(cpu) else { return false };
        r.waker.set(r.waker.get() & !(1 << 1));
        while r.waker.is_set(GICR_WAKER::CHILDREN_ASLEEP) {
            core::hint::spin_loop();
        }
        r.igroupr0.set(!0);
        r.icenabler0.set(!0);
        r.icpendr0.set(!0);
        r.icactiver0.set(!0);
        for p in &r.ipriorityr {
            p.set(PRIORITY * 0x0101_0101);
        }
        true
    }

    /// Enables or disables `intid`; SGIs/PPIs are those of `cpu`.
    pub fn set_enabled(&self, intid: u32, cpu: usize, on: bool) {
        let bit = 1 << (intid % 32);
        if intid < 32 {
            if let Some(r) = self.r(cpu) {
                if on {
                    r.isenabler0.set(bit)
                } else {
                    r.icenabler0.set(bit)
                }
            }
        } else if intid < self.lines() {
            let n = (intid / 32) as usize;
            if on {
                self.d().isenabler[n].set(bit)
            } else {
                self.d().icenabler[n].set(bit)
            }
        }
    }

    /// Sets the priority of `intid` (SGIs/PPIs: those of `cpu`). Only at
    /// initialisation, before anything else writes these registers.
    /// Makes SPI `intid` edge-triggered (GICD_ICFGR: Int_config[1] = 1).
    pub fn set_edge(&self, intid: u32) {
        if (32..self.lines()).contains(&intid) {
            let r = &self.d().icfgr[(intid / 16) as usize];
            r.set(r.get() | (0b10 << (2 * (intid % 16))));
        }
    }

    pub fn set_priority(&self, intid: u32, cpu: usize, prio: u8) {
        if intid < 32 {
            if let Some(rd) = self.r(cpu) {
                let r = &rd.ipriorityr[(intid / 4) as usize];
                let shift = 8 * (intid % 4);
                r.set((r.get() & !(0xff << shift)) | (u32::from(prio) << shift));
            }
        } else if intid < self.lines() {
            let r = &self.d().ipriorityr[(intid / 4) as usize];
            let shift = 8 * (intid % 4);
            r.set((r.get() & !(0xff << shift)) | (u32::from(prio) << shift));
        }
    }

    /// Clears `intid`'s active state (SGIs/PPIs: those of `cpu`). Harmless
    /// if it is not active.
    pub fn clear_active(&self, intid: u32, cpu: usize) {
        let bit = 1 << (intid % 32);
        if intid < 32 {
            if let Some(r) = self.r(cpu) {
                r.icactiver0.set(bit);
            }
        } else if intid < self.lines() {
            self.d().icactiver[(intid / 32) as usize].set(bit);
        }
    }

    /// Makes SPI `intid` pending again (it goes to wherever it is routed).
    pub fn set_pending_spi(&self, intid: u32) {
        if (32..self.lines()).contains(&intid) {
            self.d().ispendr[(intid / 32) as usize].set(1 << (intid % 32));
        }
    }

    /// Routes SPI `intid` to `cpu`.
    pub fn route(&self, intid: u32, cpu: usize) {
        if (32..self.lines()).contains(&intid) {
            if let Some(m) = self.mpidrs.get(cpu) {
                self.d().irouter[intid as usize].set(*m);
            }
        }
    }

    /// The ICC_SGI1R_EL1 value that sends SGI `intid` to `cpu`.
    #[inline]
    pub fn sgi_value(&self, intid: u32, cpu: usize) -> u64 {
        // An unknown CPU gets an empty target list: the SGI goes nowhere.
        self.sgi_targets
            .get(cpu)
            .map_or(0, |t| t | u64::from(intid & 0xf) << 24)
    }
}

/// The ICC_SGI1R_EL1 value that targets the CPU with MPIDR `m` (INTID 0).
fn sgi_target(m: u64) -> u64 {
    let aff0 = m & 0xff;
    ((m >> 32) & 0xff) << 48
        | ((m >> 16) & 0xff) << 32
        | ((m >> 8) & 0xff) << 16
        | (1 << (aff0 % 16))
        | (aff0 / 16) << 44
}
