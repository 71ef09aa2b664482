//! The board's interrupt controller, whichever version it is: one facade
//! over the GICv2 and GICv3 drivers for the rest of the hypervisor.

use super::gicv2::Gicv2;
use super::gicv3::Gicv3;
use crate::arch::aarch64::gic as icc;
use spin::Once;

/// SGI the hypervisor sends between its CPUs ("look at your vCPU's queue").
pub const KICK_SGI: u32 = 8;

pub use super::gic_prio::{PMR_ALL, PMR_URGENT_ONLY, URGENT};

pub enum PhysGic {
    V2(Gicv2),
    V3(Gicv3),
}

static GIC: Once<PhysGic> = Once::new();

/// Installs the driver (boot CPU, once) and initialises the distributor.
pub fn init(gic: PhysGic, boot_cpu: usize) -> &'static PhysGic {
    let g = GIC.call_once(|| gic);
    match g {
        PhysGic::V2(v2) => v2.init_distributor(),
        PhysGic::V3(v3) => v3.init_distributor(boot_cpu),
    }
    g
}

/// The installed GIC. Only valid after [`init`].
pub fn get() -> &'static PhysGic {
    GIC.get().expect("GIC initialised at boot")
}

/// Whether the GIC is up (secondaries check before using it).
pub fn ready() -> bool {
    GIC.get().is_some()
}

impl PhysGic {
    /// This CPU's redistributor / banked registers and CPU interface; turns
    /// the virtual CPU interface on and enables the hypervisor's own SGI and
    /// the maintenance interrupt.
    pub fn init_cpu(&self, cpu: usize, maintenance: u32) {
        match self {
            PhysGic::V2(g) => g.init_cpu(cpu),
            PhysGic::V3(g) => {
                g.init_redistributor(cpu);
                // SRE for EL2 and (Enable) for EL1, no bypass.
                icc::set_icc_sre_el2(0xf);
                aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
                icc::set_icc_pmr(u64::from(PMR_ALL));
                icc::set_icc_bpr1(0);
                // EOImode = 1: EOIR drops priority, DIR deactivates.
                icc::set_icc_ctlr(1 << 1);
                icc::set_icc_igrpen1(1);
                icc::set_ich_vmcr(0);
                icc::set_ich_hcr(1);
                aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
            }
        }
        self.set_priority(KICK_SGI, cpu, URGENT);
        self.set_enabled(KICK_SGI, cpu, true);
        self.set_enabled(maintenance, cpu, true);
    }

    /// Acknowledges the highest-priority pending interrupt: (INTID, raw value
    /// to hand back to `eoi`/`deactivate`). INTID 1020-1023 means none.
    #[inline]
    pub fn ack(&self) -> (u32, u32) {
        match self {
            PhysGic::V2(g) => {
                let iar = g.ack();
                (iar & 0x3ff, iar)
            }
            PhysGic::V3(_) => {
                let iar = icc::icc_iar1() as u32;
                (iar & 0xff_ffff, iar)
            }
        }
    }

    /// Priority drop.
    #[inline]
    pub fn eoi(&self, raw: u32) {
        match self {
            PhysGic::V2(g) => g.eoi(raw),
            PhysGic::V3(_) => icc::icc_eoir1(u64::from(raw)),
        }
    }

    /// Deactivation.
    #[inline]
    pub fn deactivate(&self, raw: u32) {
        match self {
            PhysGic::V2(g) => g.deactivate(raw),
            PhysGic::V3(_) => icc::icc_dir(u64::from(raw)),
        }
    }

    /// Enables or disables `intid` (SGIs/PPIs: those of `cpu`; on GICv2 only
    /// the calling CPU's banked copy can be reached, which is `cpu` for every
    /// caller).
    pub fn set_enabled(&self, intid: u32, cpu: usize, on: bool) {
        match self {
            PhysGic::V2(g) => g.set_enabled(intid, on),
            PhysGic::V3(g) => g.set_enabled(intid, cpu, on),
        }
    }

    /// Makes SPI `intid` edge-triggered (an SMMU's wired interrupts pulse).
    pub fn set_edge(&self, intid: u32) {
        match self {
            PhysGic::V2(g) => g.set_edge(intid),
            PhysGic::V3(g) => g.set_edge(intid),
        }
    }

    /// Sets the priority of `intid` (SGIs/PPIs: those of `cpu`, which on
    /// GICv2 must be the calling CPU).
    pub fn set_priority(&self, intid: u32, cpu: usize, prio: u8) {
        match self {
            PhysGic::V2(g) => g.set_priority(intid, prio),
            PhysGic::V3(g) => g.set_priority(intid, cpu, prio),
        }
    }

    /// This CPU's priority mask: only interrupts of a priority numerically
    /// below `pmr` are signalled.
    pub fn set_pmr(&self, pmr: u8) {
        match self {
            PhysGic::V2(g) => g.set_pmr(pmr),
            PhysGic::V3(_) => {
                icc::set_icc_pmr(u64::from(pmr));
                aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
            }
        }
    }

    /// Clears `intid`'s active state without an acknowledge on this CPU
    /// (SGIs/PPIs: those of `cpu`, which on GICv2 must be the calling CPU).
    pub fn clear_active(&self, intid: u32, cpu: usize) {
        match self {
            PhysGic::V2(g) => {
                if intid >= 32 || cpu == crate::arch::aarch64::cpu::index() {
                    g.clear_active(intid)
                }
            }
            PhysGic::V3(g) => g.clear_active(intid, cpu),
        }
    }

    /// Makes SPI `intid` pending again at its current target.
    pub fn set_pending_spi(&self, intid: u32) {
        match self {
            PhysGic::V2(g) => g.set_pending_spi(intid),
            PhysGic::V3(g) => g.set_pending_spi(intid),
        }
    }

    /// Routes SPI `intid` to `cpu`.
    pub fn route(&self, intid: u32, cpu: usize) {
        match self {
            PhysGic::V2(g) => g.route(intid, cpu),
            PhysGic::V3(g) => g.route(intid, cpu),
        }
    }

    /// Sends SGI `intid` to `cpu`.
    pub fn send_sgi(&self, intid: u32, cpu: usize) {
        match self {
            PhysGic::V2(g) => g.send_sgi(intid, cpu),
            PhysGic::V3(g) => {
                aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISHST);
                icc::icc_sgi1r(g.sgi_value(intid, cpu));
                aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
            }
        }
    }
}
