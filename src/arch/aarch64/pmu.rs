//! The PMU as a guest sees it: never counting while the hypervisor runs.
//!
//! A counter that ticks at EL2 lets EL1 time the hypervisor's work (a side
//! channel). With FEAT_PMUv3p5, MDCR_EL2.HPMD stops the event counters and
//! HCCD the cycle counter at EL2, and the guest keeps the PMU untrapped.
//! Older PMUs (Cortex-A72's PMUv3, QEMU's default here) cannot say so: every
//! PMU access traps (MDCR_EL2.TPM) and is passed through, except that the
//! NSH bit of the event filters (count at EL2) is kept clear. NSH is RES0 for
//! a machine without EL2, which is what a VM is.
//!
//! The decisions here are pure and host-tested; the register accesses are
//! in [`hw`] (target only).

use super::esr::sysreg;

/// MDCR_EL2.HPMN, bits \[4:0\]: counters below it belong to EL1.
const HPMN_MASK: u64 = 0x1f;
/// MDCR_EL2.TPM: PMU accesses from EL1 and EL0 trap to EL2.
pub const MDCR_TPM: u64 = 1 << 6;
/// MDCR_EL2.HPMD: event counting prohibited at EL2 (FEAT_PMUv3p1).
pub const MDCR_HPMD: u64 = 1 << 17;
/// MDCR_EL2.HCCD: cycle counting prohibited at EL2 (FEAT_PMUv3p5).
pub const MDCR_HCCD: u64 = 1 << 23;
/// PMEVTYPER<n>_EL0.NSH / PMCCFILTR_EL0.NSH: count at (non-secure) EL2.
pub const FILTER_NSH: u64 = 1 << 27;

/// ID_AA64DFR0_EL1.PMUVer values (Arm ARM D19.2.60).
const PMUVER_V3P1: u64 = 4;
const PMUVER_V3P5: u64 = 6;
const PMUVER_IMPDEF: u64 = 0xf;

/// The PMU version field of ID_AA64DFR0_EL1, bits \[11:8\].
pub const fn pmuver(dfr0: u64) -> u64 {
    (dfr0 >> 8) & 0xf
}

/// Whether an architected PMU (PMUv3 or later) is present.
pub const fn has_pmu(dfr0: u64) -> bool {
    let v = pmuver(dfr0);
    v != 0 && v != PMUVER_IMPDEF
}

/// PMCR_EL0.N, bits \[15:11\]: how many event counters there are.
pub const fn counters(pmcr: u64) -> u64 {
    (pmcr >> 11) & 0x1f
}

/// MDCR_EL2 while a guest runs: every counter the guest's, and none counting
/// at EL2 (HPMD + HCCD where the PMU has them, else trap and filter).
pub const fn mdcr_guest(dfr0: u64, pmcr: u64) -> u64 {
    let hpmn = counters(pmcr) & HPMN_MASK;
    if !has_pmu(dfr0) {
        return hpmn;
    }
    let v = pmuver(dfr0);
    if v >= PMUVER_V3P5 {
        hpmn | MDCR_HPMD | MDCR_HCCD
    } else if v >= PMUVER_V3P1 {
        // HPMD alone leaves the cycle counter running at EL2 unless the
        // guest sets PMCR_EL0.DP: the filters must be policed too.
        hpmn | MDCR_HPMD | MDCR_TPM
    } else {
        hpmn | MDCR_TPM
    }
}

/// A PMU register a guest access trapped on (MDCR_EL2.TPM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmuReg {
    Pmcr,
    Pmcntenset,
    Pmcntenclr,
    Pmovsclr,
    Pmswinc,
    Pmselr,
    Pmceid0,
    Pmceid1,
    Pmccntr,
    Pmxevtyper,
    Pmxevcntr,
    Pmuserenr,
    Pmintenset,
    Pmintenclr,
    Pmovsset,
    /// PMEVCNTR<n>_EL0.
    Pmevcntr(u8),
    /// PMEVTYPER<n>_EL0 (n < 31).
    Pmevtyper(u8),
    Pmccfiltr,
}

impl PmuReg {
    /// The PMU register with sysreg key `key` (see [`sysreg`]), if any.
    pub const fn decode(key: u32) -> Option<PmuReg> {
        // PMEVCNTR<n>: S3_3_C14_C(8+n[4:3])_n[2:0]; PMEVTYPER<n>: C(12+..);
        // n = 31 in the PMEVTYPER range is PMCCFILTR_EL0.
        let op0 = (key >> 20) & 3;
        let op2 = (key >> 17) & 7;
        let op1 = (key >> 14) & 7;
        let crn = (key >> 10) & 0xf;
        let crm = (key >> 1) & 0xf;
        if op0 == 3 && op1 == 3 && crn == 14 && crm >= 8 {
            let n = (((crm & 3) << 3) | op2) as u8;
            return Some(if crm < 12 {
                if n == 31 {
                    return None;
                }
                PmuReg::Pmevcntr(n)
            } else if n == 31 {
                PmuReg::Pmccfiltr
            } else {
                PmuReg::Pmevtyper(n)
            });
        }
        Some(match key {
            k if k == sysreg(3, 3, 9, 12, 0) => PmuReg::Pmcr,
            k if k == sysreg(3, 3, 9, 12, 1) => PmuReg::Pmcntenset,
            k if k == sysreg(3, 3, 9, 12, 2) => PmuReg::Pmcntenclr,
            k if k == sysreg(3, 3, 9, 12, 3) => PmuReg::Pmovsclr,
            k if k == sysreg(3, 3, 9, 12, 4) => PmuReg::Pmswinc,
            k if k == sysreg(3, 3, 9, 12, 5) => PmuReg::Pmselr,
            k if k == sysreg(3, 3, 9, 12, 6) => PmuReg::Pmceid0,
            k if k == sysreg(3, 3, 9, 12, 7) => PmuReg::Pmceid1,
            k if k == sysreg(3, 3, 9, 13, 0) => PmuReg::Pmccntr,
            k if k == sysreg(3, 3, 9, 13, 1) => PmuReg::Pmxevtyper,
            k if k == sysreg(3, 3, 9, 13, 2) => PmuReg::Pmxevcntr,
            k if k == sysreg(3, 3, 9, 14, 0) => PmuReg::Pmuserenr,
            k if k == sysreg(3, 0, 9, 14, 1) => PmuReg::Pmintenset,
            k if k == sysreg(3, 0, 9, 14, 2) => PmuReg::Pmintenclr,
            k if k == sysreg(3, 3, 9, 14, 3) => PmuReg::Pmovsset,
            _ => return None,
        })
    }

    /// PMXEVTYPER/PMXEVCNTR as the counter PMSELR_EL0 (`pmselr`) selects
    /// (SEL 31: the cycle counter's filter); others unchanged. What names no
    /// counter is `None` (CONSTRAINED UNPREDICTABLE: UNDEFINED here).
    pub const fn resolve(self, pmselr: u64) -> Option<PmuReg> {
        let sel = (pmselr & 0x1f) as u8;
        match self {
            PmuReg::Pmxevtyper if sel == 31 => Some(PmuReg::Pmccfiltr),
            PmuReg::Pmxevtyper => Some(PmuReg::Pmevtyper(sel)),
            PmuReg::Pmxevcntr if sel == 31 => None,
            PmuReg::Pmxevcntr => Some(PmuReg::Pmevcntr(sel)),
            other => Some(other),
        }
    }

    /// Whether the register exists on a PMU with `n` event counters:
    /// PMEVCNTR<n>/PMEVTYPER<n> beyond PMCR_EL0.N are UNDEFINED.
    pub const fn exists(self, n: u64) -> bool {
        match self {
            PmuReg::Pmevcntr(i) | PmuReg::Pmevtyper(i) => (i as u64) < n,
            _ => true,
        }
    }

    /// The value to write for a guest's `value`: event filters lose NSH.
    pub const fn sanitize(self, value: u64) -> u64 {
        match self {
            PmuReg::Pmevtyper(_) | PmuReg::Pmccfiltr | PmuReg::Pmxevtyper => value & !FILTER_NSH,
            _ => value,
        }
    }

    /// Read-only registers (writes are UNDEFINED): the event maps.
    pub const fn read_only(self) -> bool {
        matches!(self, PmuReg::Pmceid0 | PmuReg::Pmceid1)
    }

    /// Write-only (reads are UNDEFINED): the software increment.
    pub const fn write_only(self) -> bool {
        matches!(self, PmuReg::Pmswinc)
    }
}

/// Register accesses for [`PmuReg`] and the PMU's reset.
#[cfg(target_os = "none")]
pub mod hw {
    use super::{counters, PmuReg};
    use core::arch::asm;

    macro_rules! rd {
        ($r:literal) => {{
            let v: u64;
            // SAFETY: reading a PMU register at EL2 has no memory effects.
            unsafe { asm!(concat!("mrs {}, ", $r), out(reg) v, options(nomem, nostack)) };
            v
        }};
    }
    macro_rules! wr {
        ($r:literal, $v:expr) => {{
            // SAFETY: the PMU belongs to the vCPU on this CPU (MDCR_EL2.HPMN
            // gives it every counter); no memory effects.
            unsafe { asm!(concat!("msr ", $r, ", {}"), in(reg) $v, options(nomem, nostack)) };
        }};
    }

    /// PMCR_EL0.
    pub fn pmcr() -> u64 {
        rd!("pmcr_el0")
    }

    /// Runs `f` with PMSELR_EL0 = `n`, restoring the guest's selection.
    fn selected<T>(n: u8, f: impl FnOnce() -> T) -> T {
        let saved = rd!("pmselr_el0");
        wr!("pmselr_el0", u64::from(n));
        aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
        let r = f();
        wr!("pmselr_el0", saved);
        r
    }

    /// Reads `reg` for the guest.
    pub fn read(reg: PmuReg) -> u64 {
        match reg {
            PmuReg::Pmcr => rd!("pmcr_el0"),
            PmuReg::Pmcntenset | PmuReg::Pmcntenclr => rd!("pmcntenset_el0"),
            PmuReg::Pmovsclr | PmuReg::Pmovsset => rd!("pmovsclr_el0"),
            PmuReg::Pmswinc => 0,
            PmuReg::Pmselr => rd!("pmselr_el0"),
            PmuReg::Pmceid0 => rd!("pmceid0_el0"),
            PmuReg::Pmceid1 => rd!("pmceid1_el0"),
            PmuReg::Pmccntr => rd!("pmccntr_el0"),
            PmuReg::Pmxevtyper => rd!("pmxevtyper_el0"),
            PmuReg::Pmxevcntr => rd!("pmxevcntr_el0"),
            PmuReg::Pmuserenr => rd!("pmuserenr_el0"),
            PmuReg::Pmintenset | PmuReg::Pmintenclr => rd!("pmintenset_el1"),
            PmuReg::Pmevcntr(n) => selected(n, || rd!("pmxevcntr_el0")),
            PmuReg::Pmevtyper(n) => selected(n, || rd!("pmxevtyper_el0")),
            PmuReg::Pmccfiltr => rd!("pmccfiltr_el0"),
        }
    }

    /// Writes `reg` for the guest (`value` already sanitized).
    pub fn write(reg: PmuReg, value: u64) {
        match reg {
            PmuReg::Pmcr => wr!("pmcr_el0", value),
            PmuReg::Pmcntenset => wr!("pmcntenset_el0", value),
            PmuReg::Pmcntenclr => wr!("pmcntenclr_el0", value),
            PmuReg::Pmovsclr => wr!("pmovsclr_el0", value),
            PmuReg::Pmovsset => wr!("pmovsset_el0", value),
            PmuReg::Pmswinc => wr!("pmswinc_el0", value),
            PmuReg::Pmselr => wr!("pmselr_el0", value),
            PmuReg::Pmceid0 | PmuReg::Pmceid1 => {}
            PmuReg::Pmccntr => wr!("pmccntr_el0", value),
            PmuReg::Pmxevtyper => wr!("pmxevtyper_el0", value),
            PmuReg::Pmxevcntr => wr!("pmxevcntr_el0", value),
            PmuReg::Pmuserenr => wr!("pmuserenr_el0", value),
            PmuReg::Pmintenset => wr!("pmintenset_el1", value),
            PmuReg::Pmintenclr => wr!("pmintenclr_el1", value),
            PmuReg::Pmevcntr(n) => selected(n, || wr!("pmxevcntr_el0", value)),
            PmuReg::Pmevtyper(n) => selected(n, || wr!("pmxevtyper_el0", value)),
            PmuReg::Pmccfiltr => wr!("pmccfiltr_el0", value),
        }
    }

    /// The PMU to its reset state for a (re)starting vCPU: disabled, every
    /// counter, filter, enable, overflow and EL0-access bit zero.
    pub fn reset() {
        wr!("pmcr_el0", 0u64);
        wr!("pmcntenclr_el0", u64::from(u32::MAX));
        wr!("pmintenclr_el1", u64::from(u32::MAX));
        wr!("pmovsclr_el0", u64::from(u32::MAX));
        wr!("pmuserenr_el0", 0u64);
        wr!("pmccfiltr_el0", 0u64);
        wr!("pmccntr_el0", 0u64);
        for n in 0..counters(pmcr()) {
            wr!("pmselr_el0", n);
            aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
            wr!("pmxevtyper_el0", 0u64);
            wr!("pmxevcntr_el0", 0u64);
        }
        wr!("pmselr_el0", 0u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A72_DFR0: u64 = 0x1030_5106;
    const PMCR_N6: u64 = 6 << 11;

    #[test]
    fn old_pmus_trap_and_new_ones_prohibit_el2_counting() {
        assert_eq!(mdcr_guest(A72_DFR0, PMCR_N6), 6 | MDCR_TPM);
        let v3p1 = (A72_DFR0 & !0xf00) | (4 << 8);
        assert_eq!(mdcr_guest(v3p1, PMCR_N6), 6 | MDCR_TPM | MDCR_HPMD);
        let v3p5 = (A72_DFR0 & !0xf00) | (6 << 8);
        assert_eq!(mdcr_guest(v3p5, PMCR_N6), 6 | MDCR_HPMD | MDCR_HCCD);
        let v3p7 = (A72_DFR0 & !0xf00) | (7 << 8);
        assert_eq!(mdcr_guest(v3p7, PMCR_N6) & MDCR_TPM, 0);
        // No PMU, or an IMPLEMENTATION DEFINED one: nothing to police.
        assert_eq!(mdcr_guest(A72_DFR0 & !0xf00, PMCR_N6), 6);
        assert_eq!(mdcr_guest(A72_DFR0 | 0xf00, PMCR_N6), 6);
    }

    #[test]
    fn decodes_every_pmu_register() {
        assert_eq!(PmuReg::decode(sysreg(3, 3, 9, 12, 0)), Some(PmuReg::Pmcr));
        assert_eq!(PmuReg::decode(sysreg(3, 3, 9, 13, 0)), Some(PmuReg::Pmccntr));
        assert_eq!(PmuReg::decode(sysreg(3, 0, 9, 14, 2)), Some(PmuReg::Pmintenclr));
        assert_eq!(PmuReg::decode(sysreg(3, 3, 9, 14, 0)), Some(PmuReg::Pmuserenr));
        // PMEVCNTR0, PMEVCNTR30, PMEVTYPER5, PMCCFILTR.
        assert_eq!(PmuReg::decode(sysreg(3, 3, 14, 8, 0)), Some(PmuReg::Pmevcntr(0)));
        assert_eq!(
            PmuReg::decode(sysreg(3, 3, 14, 11, 6)),
            Some(PmuReg::Pmevcntr(30))
        );
        assert_eq!(PmuReg::decode(sysreg(3, 3, 14, 11, 7)), None);
        assert_eq!(
            PmuReg::decode(sysreg(3, 3, 14, 12, 5)),
            Some(PmuReg::Pmevtyper(5))
        );
        assert_eq!(PmuReg::decode(sysreg(3, 3, 14, 15, 7)), Some(PmuReg::Pmccfiltr));
        // Not PMU registers.
        assert_eq!(PmuReg::decode(sysreg(3, 0, 1, 0, 0)), None);
        assert_eq!(PmuReg::decode(sysreg(3, 3, 14, 0, 2)), None); // CNTVCT_EL0
        assert_eq!(PmuReg::decode(sysreg(3, 3, 9, 14, 4)), None);
    }

    #[test]
    fn event_filters_never_count_at_el2() {
        let all = u64::from(u32::MAX);
        for r in [PmuReg::Pmevtyper(0), PmuReg::Pmccfiltr, PmuReg::Pmxevtyper] {
            assert_eq!(r.sanitize(all) & FILTER_NSH, 0, "{r:?}");
            assert_eq!(r.sanitize(all), all & !FILTER_NSH);
        }
        assert_eq!(PmuReg::Pmccntr.sanitize(all), all);
    }

    #[test]
    fn selected_counter_accesses_resolve() {
        assert_eq!(PmuReg::Pmxevtyper.resolve(31), Some(PmuReg::Pmccfiltr));
        assert_eq!(PmuReg::Pmxevtyper.resolve(3), Some(PmuReg::Pmevtyper(3)));
        assert_eq!(PmuReg::Pmxevcntr.resolve(0x23), Some(PmuReg::Pmevcntr(3)));
        assert_eq!(PmuReg::Pmxevcntr.resolve(31), None);
        assert_eq!(PmuReg::Pmcr.resolve(31), Some(PmuReg::Pmcr));
    }

    #[test]
    fn counters_beyond_n_do_not_exist() {
        assert!(PmuReg::Pmevcntr(5).exists(6));
        assert!(!PmuReg::Pmevcntr(6).exists(6));
        assert!(!PmuReg::Pmevtyper(30).exists(6));
        assert!(PmuReg::Pmccfiltr.exists(0));
    }
}
