//! What a synchronous exit means, decided from the syndrome alone: a pure
//! function from ESR_EL2 (and the VM's PSCI conduit) to an [`Action`] that
//! `exit.rs` carries out. Host-tested here; nothing in it touches a register.
//!
//! The hot hypercall (HVC #0 from a VM whose conduit is `hvc`) never comes
//! here: `vectors.S` sends it straight to `exit::hvc_exit`. CPUs running a VM
//! whose conduit is `smc` install vectors without that shortcut, so their
//! HVCs are decided here like every other exit.

use crate::arch::aarch64::esr::{self, DataAbort, Esr, ExceptionClass, SysRegAccess};
use crate::arch::aarch64::pmu::PmuReg;
use crate::config::PsciConduit;

/// Why an UNDEFINED exception is injected (for the log line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Undef {
    /// HVC or SMC that is not the VM's PSCI conduit: on the machine the VM
    /// is described as, that instruction does nothing architected (HVC with
    /// EL2 not enabled is UNDEFINED; SMC without EL3 is UNDEFINED).
    NotConduit,
    /// A system register or instruction the VM may not use.
    SysReg,
    /// An exception class Tessera does not handle.
    Exit,
}

/// Why a data abort is answered with an injected external abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortWhy {
    /// ISV = 0: the access cannot be emulated from the syndrome.
    NotDecodable,
    /// A table walk, cache maintenance or an external abort the hardware
    /// reported: not a device access.
    NotDeviceAccess,
}

impl AbortWhy {
    pub const fn message(self) -> &'static str {
        match self {
            AbortWhy::NotDecodable => "not decodable (ISV=0)",
            AbortWhy::NotDeviceAccess => {
                "not a device access (table walk, cache maintenance or external abort)"
            }
        }
    }
}

/// What the exit path does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// An SMCCC call to answer, after moving the PC on by `advance` (4 for
    /// a trapped SMC, which returns to itself; 0 for HVC).
    Call { advance: u64 },
    /// A call that is no SMCCC call (a non-zero immediate): x0 =
    /// NOT_SUPPORTED, PC moved on by `advance`.
    NotSupported { advance: u64 },
    /// Inject an UNDEFINED instruction exception.
    Undefined(Undef),
    /// An access to emulate at the faulting IPA (or abort, if no device
    /// takes it there).
    Mmio(DataAbort),
    /// Inject a data abort.
    DataAbort { write: bool, why: AbortWhy },
    /// Inject an instruction abort.
    InstrAbort,
    /// Done by doing nothing: PC moves on by 4 (WFI/WFE, set/way).
    Skip,
    /// Generate SGIs from register `rt` (ICC_SGI*R_EL1 write).
    Sgi { rt: u8 },
    /// Read a PMU register into `rt`.
    PmuRead { reg: PmuReg, rt: u8 },
    /// Write register `rt` to a PMU register.
    PmuWrite { reg: PmuReg, rt: u8 },
}

/// Decides a synchronous exit from `esr` for a VM whose conduit is
/// `conduit`; `pmu_trapped` says whether PMU accesses trap on this CPU.
pub const fn decide(esr: Esr, conduit: PsciConduit, pmu_trapped: bool) -> Action {
    let iss = esr.iss();
    match esr.class() {
        ExceptionClass::Hvc64 => call(conduit, PsciConduit::Hvc, esr::hvc_imm(iss), 0),
        // A trapped SMC returns to the SMC itself (Arm ARM D1.10.4).
        ExceptionClass::Smc64 => call(conduit, PsciConduit::Smc, esr::hvc_imm(iss), 4),
        ExceptionClass::DataAbortLower => data_abort(iss),
        ExceptionClass::InstrAbortLower => Action::InstrAbort,
        ExceptionClass::SysReg64 => sysreg(SysRegAccess::from_iss(iss), pmu_trapped),
        ExceptionClass::Wfx => Action::Skip,
        _ => Action::Undefined(Undef::Exit),
    }
}

/// An HVC or SMC (`insn`) with immediate `imm`: only the VM's own conduit
/// answers, and only with immediate 0 (SMCCC 1.1 §2.5: other immediates are
/// not SMCCC calls), answered NOT_SUPPORTED the same way for both.
pub const fn call(conduit: PsciConduit, insn: PsciConduit, imm: u16, advance: u64) -> Action {
    if !matches!(
        (conduit, insn),
        (PsciConduit::Hvc, PsciConduit::Hvc) | (PsciConduit::Smc, PsciConduit::Smc)
    ) {
        Action::Undefined(Undef::NotConduit)
    } else if imm != 0 {
        Action::NotSupported { advance }
    } else {
        Action::Call { advance }
    }
}

/// A stage-2 data abort: an access to emulate, or an abort to inject.
#[inline(always)]
pub const fn data_abort(iss: u32) -> Action {
    let da = DataAbort::from_iss(iss);
    if esr::is_device_access(iss) {
        Action::Mmio(da)
    } else {
        Action::DataAbort {
            write: da.wnr,
            why: if !da.isv {
                AbortWhy::NotDecodable
            } else {
                AbortWhy::NotDeviceAccess
            },
        }
    }
}

/// A trapped MSR/MRS/SYS.
pub const fn sysreg(acc: SysRegAccess, pmu_trapped: bool) -> Action {
    let key = acc.encoding();
    // Set/way cache maintenance (HCR_EL2.TSW): it would reach caches shared
    // with other VMs. Stage 2 keeps VM memory coherent, so a guest that
    // uses it (firmware-style code) loses nothing: ignore.
    if key == esr::DC_ISW || key == esr::DC_CSW || key == esr::DC_CISW {
        return Action::Skip;
    }
    // SGIs (trapped because HCR_EL2.IMO is set): only to the VM's own
    // vCPUs. The registers are write-only: reads are UNDEFINED.
    if key == esr::ICC_SGI1R_EL1 || key == esr::ICC_SGI0R_EL1 || key == esr::ICC_ASGI1R_EL1 {
        return if acc.read {
            Action::Undefined(Undef::SysReg)
        } else {
            Action::Sgi { rt: acc.rt }
        };
    }
    if pmu_trapped {
        if let Some(reg) = PmuReg::decode(key) {
            return match (acc.read, reg.read_only(), reg.write_only()) {
                (true, _, true) | (false, true, _) => Action::Undefined(Undef::SysReg),
                (true, _, _) => Action::PmuRead { reg, rt: acc.rt },
                (false, _, _) => Action::PmuWrite { reg, rt: acc.rt },
            };
        }
    }
    Action::Undefined(Undef::SysReg)
}

/// ESR_EL2.SSE of a data abort.
const SSE: u32 = 1 << 21;

/// The bits a load of `1 << (i & 3)` bytes leaves in a W (`i & 4` clear)
/// or X register, without sign extension.
#[inline(always)]
pub fn load_mask(i: u32) -> u64 {
    const MASKS: [u64; 8] = [
        0xff,
        0xffff,
        0xffff_ffff,
        0xffff_ffff,
        0xff,
        0xffff,
        0xffff_ffff,
        u64::MAX,
    ];
    MASKS.get((i & 7) as usize).copied().unwrap_or(0)
}

/// [`esr::load_result`] with the common case (no sign extension) as one
/// mask; the same value either way (host-tested below).
#[inline(always)]
pub fn load_value(data: u64, iss: u32) -> u64 {
    if iss & SSE == 0 {
        data & load_mask((iss >> 22) & 3 | ((iss >> 15) & 1) << 2)
    } else {
        esr::load_result(data, &esr::DataAbort::from_iss(iss))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::aarch64::esr::sysreg as key;

    const HVC: u64 = 0x16 << 26 | 1 << 25;
    const SMC: u64 = 0x17 << 26 | 1 << 25;
    const SYSREG: u64 = 0x18 << 26 | 1 << 25;
    const DABT: u64 = 0x24 << 26 | 1 << 25;

    fn d(esr: u64, conduit: PsciConduit) -> Action {
        decide(Esr(esr), conduit, true)
    }

    /// The ISS of a trapped MSR (write) or MRS (read) of `key` with `rt`.
    fn sys(key: u32, rt: u8, read: bool) -> u64 {
        SYSREG | u64::from(key) | u64::from(rt) << 5 | u64::from(read)
    }

    #[test]
    fn only_the_conduit_answers() {
        use PsciConduit::{Hvc, Smc};
        assert_eq!(d(HVC, Hvc), Action::Call { advance: 0 });
        assert_eq!(d(SMC, Smc), Action::Call { advance: 4 });
        assert_eq!(d(SMC, Hvc), Action::Undefined(Undef::NotConduit));
        assert_eq!(d(HVC, Smc), Action::Undefined(Undef::NotConduit));
        // Not the conduit beats a non-zero immediate.
        assert_eq!(d(SMC | 1, Hvc), Action::Undefined(Undef::NotConduit));
        assert_eq!(d(HVC | 0xffff, Smc), Action::Undefined(Undef::NotConduit));
    }

    #[test]
    fn non_zero_immediates_are_not_smccc_calls() {
        use PsciConduit::{Hvc, Smc};
        assert_eq!(d(HVC | 1, Hvc), Action::NotSupported { advance: 0 });
        assert_eq!(d(HVC | 0xffff, Hvc), Action::NotSupported { advance: 0 });
        assert_eq!(d(SMC | 1, Smc), Action::NotSupported { advance: 4 });
        assert_eq!(d(SMC | 0x8000, Smc), Action::NotSupported { advance: 4 });
    }

    #[test]
    fn set_way_maintenance_is_skipped() {
        for k in [esr::DC_ISW, esr::DC_CSW, esr::DC_CISW] {
            assert_eq!(d(sys(k, 3, false), PsciConduit::Hvc), Action::Skip);
        }
    }

    #[test]
    fn sgi_register_writes_send_sgis_and_reads_are_undefined() {
        for k in [esr::ICC_SGI1R_EL1, esr::ICC_SGI0R_EL1, esr::ICC_ASGI1R_EL1] {
            assert_eq!(d(sys(k, 7, false), PsciConduit::Hvc), Action::Sgi { rt: 7 });
            assert_eq!(d(sys(k, 31, false), PsciConduit::Hvc), Action::Sgi { rt: 31 });
            assert_eq!(
                d(sys(k, 7, true), PsciConduit::Hvc),
                Action::Undefined(Undef::SysReg)
            );
        }
    }

    #[test]
    fn unknown_system_registers_are_undefined() {
        for k in [
            key(3, 1, 15, 2, 0), // CPUACTLR_EL1 (IMPLEMENTATION DEFINED)
            key(3, 0, 1, 0, 1),  // ACTLR_EL1 (HCR_EL2.TACR)
            esr::OSLAR_EL1,
            key(3, 3, 9, 12, 0), // PMCR_EL0 while the PMU is not trapped
        ] {
            for read in [false, true] {
                assert_eq!(
                    decide(Esr(sys(k, 1, read)), PsciConduit::Hvc, false),
                    Action::Undefined(Undef::SysReg),
                    "{k:#x}"
                );
            }
        }
    }

    #[test]
    fn trapped_pmu_registers_are_passed_through() {
        let pmcr = key(3, 3, 9, 12, 0);
        assert_eq!(
            d(sys(pmcr, 2, true), PsciConduit::Hvc),
            Action::PmuRead {
                reg: PmuReg::Pmcr,
                rt: 2
            }
        );
        let filt = key(3, 3, 14, 15, 7);
        assert_eq!(
            d(sys(filt, 4, false), PsciConduit::Hvc),
            Action::PmuWrite {
                reg: PmuReg::Pmccfiltr,
                rt: 4
            }
        );
        // PMCEID0 is read-only, PMSWINC write-only.
        let ceid0 = key(3, 3, 9, 12, 6);
        let swinc = key(3, 3, 9, 12, 4);
        assert_eq!(
            d(sys(ceid0, 1, false), PsciConduit::Hvc),
            Action::Undefined(Undef::SysReg)
        );
        assert_eq!(
            d(sys(swinc, 1, true), PsciConduit::Hvc),
            Action::Undefined(Undef::SysReg)
        );
        assert_eq!(
            d(sys(swinc, 1, false), PsciConduit::Hvc),
            Action::PmuWrite {
                reg: PmuReg::Pmswinc,
                rt: 1
            }
        );
    }

    #[test]
    fn data_abort_classes() {
        const ISV: u64 = 1 << 24;
        const WNR: u64 = 1 << 6;
        // A 4-byte store of w3 that missed stage 2 (translation fault, level 3).
        let store = DABT | ISV | 2 << 22 | 3 << 16 | WNR | 0x07;
        match d(store, PsciConduit::Hvc) {
            Action::Mmio(da) => assert!(da.wnr && da.sas == 4 && da.srt == 3),
            other => panic!("{other:?}"),
        }
        // Permission and access-flag faults are device accesses too.
        assert!(matches!(d(DABT | ISV | 0x0f, PsciConduit::Hvc), Action::Mmio(_)));
        assert!(matches!(d(DABT | ISV | 0x0b, PsciConduit::Hvc), Action::Mmio(_)));
        // ISV = 0 (e.g. a post-indexed load): not decodable.
        assert_eq!(
            d(DABT | 0x07, PsciConduit::Hvc),
            Action::DataAbort {
                write: false,
                why: AbortWhy::NotDecodable
            }
        );
        // A stage-1 walk (S1PTW), cache maintenance (CM), an external abort
        // (DFSC 0x10) and an alignment fault (0x21): never emulated.
        for iss in [
            ISV | 1 << 7 | 0x07,
            ISV | 1 << 8 | 0x07,
            ISV | 0x10,
            ISV | 0x21,
            ISV | WNR | 0x03,
        ] {
            let a = d(DABT | iss, PsciConduit::Hvc);
            assert_eq!(
                a,
                Action::DataAbort {
                    write: iss & WNR != 0,
                    why: AbortWhy::NotDeviceAccess
                },
                "{iss:#x}"
            );
        }
    }

    #[test]
    fn other_classes() {
        assert_eq!(d(0x01 << 26, PsciConduit::Hvc), Action::Skip);
        assert_eq!(d(0x20 << 26, PsciConduit::Hvc), Action::InstrAbort);
        for ec in [
            0x00u64, 0x07, 0x0e, 0x19, 0x22, 0x26, 0x2c, 0x30, 0x32, 0x34, 0x3c, 0x12, 0x13, 0x3f,
        ] {
            assert_eq!(
                d(ec << 26, PsciConduit::Hvc),
                Action::Undefined(Undef::Exit),
                "EC {ec:#x}"
            );
        }
    }

    /// The one-mask load value agrees with the architectural rule for every
    /// size, SSE and SF, on values with the top bits of each size set.
    #[test]
    fn load_value_matches_load_result() {
        for size in 0..4u32 {
            for sse in [0, SSE] {
                for sf in [0, 1u32 << 15] {
                    let iss = 1 << 24 | size << 22 | sse | sf | 3 << 16;
                    let da = esr::DataAbort::from_iss(iss);
                    for data in [
                        0u64,
                        0x80,
                        0xff,
                        0x8000,
                        0xffff_8080,
                        0x8000_0000,
                        u64::MAX,
                        0x1234_5678_9abc_def0,
                    ] {
                        assert_eq!(
                            load_value(data, iss),
                            esr::load_result(data, &da),
                            "size {size} sse {sse} sf {sf} data {data:#x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn store_mask_is_the_access_size() {
        for size in 0..4u32 {
            let iss = 1 << 24 | size << 22 | 1 << 15;
            let da = esr::DataAbort::from_iss(iss);
            assert_eq!(load_mask(size | 4), esr::store_value(u64::MAX, &da));
        }
    }
}
