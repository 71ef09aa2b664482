//! What a synchronous exception injected into a guest's EL1 looks like: the
//! EL1 registers the architecture would have written, and where the guest
//! resumes (Arm ARM D1.10, "Exception entry"; vector offsets D1.10.2).
//!
//! Pure values in, values out: the caller reads the guest's state, calls
//! [`inject`] and writes the result into ELR_EL1, SPSR_EL1, ESR_EL1, FAR_EL1,
//! ELR_EL2 and SPSR_EL2. No register access here, and no input panics.
//!
//! Only AArch64 EL1 is a target: Tessera guests run their kernel in AArch64.
//! An AArch32 EL0 below it is handled as the lower-EL AArch32 source.

/// The guest state at the trap, as EL2 sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestState {
    /// ELR_EL2: the instruction that trapped (not yet stepped over).
    pub pc: u64,
    /// SPSR_EL2: the guest's PSTATE at the trap.
    pub pstate: u64,
    /// The guest's VBAR_EL1.
    pub vbar_el1: u64,
}

/// The exception to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injected {
    /// An UNDEFINED instruction: EC 0x00 (unknown reason), ISS 0.
    Undefined,
    /// A synchronous external abort on a data access to `far` nobody
    /// emulates (DFSC 0b010000).
    DataAbort { far: u64, write: bool },
    /// A synchronous external abort on an instruction fetch from `far`
    /// (IFSC 0b010000).
    InstrAbort { far: u64 },
}

/// The registers to write so that the guest takes the exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    /// ELR_EL1: the faulting instruction, so that the guest may retry it.
    pub elr_el1: u64,
    /// SPSR_EL1: the guest's PSTATE at the fault.
    pub spsr_el1: u64,
    /// ESR_EL1: the syndrome.
    pub esr_el1: u64,
    /// FAR_EL1 for aborts; `None` leaves FAR_EL1 alone (UNKNOWN for EC 0x00).
    pub far_el1: Option<u64>,
    /// New ELR_EL2: the EL1 vector entry.
    pub new_pc: u64,
    /// New SPSR_EL2: PSTATE at the vector entry.
    pub new_pstate: u64,
}

/// Where the exception comes from, as the vector table distinguishes it
/// (Arm ARM D1.10.2, table "Vector offsets from vector table base address").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// EL1 using SP_EL0 (M\[3:0\] = 0b0100).
    El1t,
    /// EL1 using SP_EL1 (M\[3:0\] = 0b0101).
    El1h,
    /// EL0 in AArch64 (M\[3:0\] = 0b0000).
    El0Aarch64,
    /// AArch32 (M\[4\] = 1), which under an AArch64 EL1 can only be EL0.
    Aarch32,
}

impl Source {
    /// A trapped guest can only be at EL1t, EL1h or EL0 (there is no nested
    /// virtualization, so never EL2). Anything else, including reserved M
    /// values, is treated as a lower AArch64 level, as KVM does.
    const fn of(pstate: u64) -> Self {
        if pstate & SPSR_M4_AARCH32 != 0 {
            Self::Aarch32
        } else {
            match pstate & 0xf {
                MODE_EL1T => Self::El1t,
                MODE_EL1H => Self::El1h,
                _ => Self::El0Aarch64,
            }
        }
    }

    /// Offset of the synchronous entry from VBAR_EL1.
    const fn vector_offset(self) -> u64 {
        match self {
            Self::El1t => 0x000,
            Self::El1h => 0x200,
            Self::El0Aarch64 => 0x400,
            Self::Aarch32 => 0x600,
        }
    }

    /// The exception is taken without a change of level (the "same EL"
    /// abort classes).
    const fn is_el1(self) -> bool {
        matches!(self, Self::El1t | Self::El1h)
    }
}

/// SPSR.M\[4\]: the state was AArch32.
const SPSR_M4_AARCH32: u64 = 1 << 4;
/// M\[3:0\] of EL1 with SP_EL0.
const MODE_EL1T: u64 = 0b0100;
/// M\[3:0\] of EL1 with SP_EL1.
const MODE_EL1H: u64 = 0b0101;
/// N, Z, C, V: bits \[31:28\] in both the AArch64 and AArch32 SPSR layouts.
const SPSR_NZCV: u64 = 0xf << 28;
/// PAN: bit 22 in both layouts.
const SPSR_PAN: u64 = 1 << 22;
/// DIT in an AArch64 SPSR.
const SPSR_DIT: u64 = 1 << 24;
/// DIT in an AArch32 SPSR.
const SPSR32_DIT: u64 = 1 << 21;
/// D, A, I, F: bits \[9:6\].
const SPSR_DAIF: u64 = 0xf << 6;

/// ESR.IL: 1 for every exception injected here. The architecture makes IL
/// RES1 for EC 0x00, for instruction aborts and for data aborts with ISV = 0
/// (Arm ARM D19.2.44), whatever the instruction width.
const ESR_IL: u64 = 1 << 25;
/// ESR data abort ISS.WnR.
const ISS_WNR: u64 = 1 << 6;
/// DFSC/IFSC: synchronous external abort, not on a translation table walk.
const FSC_SYNC_EXTERNAL: u64 = 0b01_0000;

const EC_UNKNOWN: u64 = 0x00;
const EC_IABT_LOWER: u64 = 0x20;
const EC_IABT_SAME: u64 = 0x21;
const EC_DABT_LOWER: u64 = 0x24;
const EC_DABT_SAME: u64 = 0x25;

/// Computes the exception entry to the guest's EL1 for `what`, taken at
/// `state` (Arm ARM D1.10, pseudocode `AArch64.TakeException`).
///
/// The new PSTATE (SPSR_EL2 for the ERET into the vector) is:
/// - M = EL1h (0b0101), AArch64;
/// - D, A, I, F set;
/// - N, Z, C, V and DIT unchanged: exception entry does not touch them;
/// - PAN unchanged. The architecture sets PAN when SCTLR_EL1.SPAN is 0 (and
///   FEAT_PAN exists); we do not read SCTLR_EL1, and copying is exact when
///   SPAN is 1 or PAN was already set. Setting it unconditionally could break
///   a guest that does not use PAN;
/// - SS, IL, UAO, BTYPE and the AArch32 IT/T bits 0, as on any entry;
/// - SSBS (SCTLR_EL1.DSSBS), TCO (1 with FEAT_MTE) and ALLINT 0: guests are
///   not given those features, so 0 is what the architecture would give or
///   at worst the conservative value.
pub const fn inject(state: &GuestState, what: Injected) -> Injection {
    let source = Source::of(state.pstate);
    let (ec, iss, far) = match what {
        Injected::Undefined => (EC_UNKNOWN, 0, None),
        Injected::DataAbort { far, write } => {
            let ec = if source.is_el1() {
                EC_DABT_SAME
            } else {
                EC_DABT_LOWER
            };
            let wnr = if write { ISS_WNR } else { 0 };
            (ec, FSC_SYNC_EXTERNAL | wnr, Some(far))
        }
        Injected::InstrAbort { far } => {
            let ec = if source.is_el1() {
                EC_IABT_SAME
            } else {
                EC_IABT_LOWER
            };
            (ec, FSC_SYNC_EXTERNAL, Some(far))
        }
    };

    let old = state.pstate;
    let dit = match source {
        // AArch32 keeps DIT at bit 21; it lands at bit 24 in AArch64.
        Source::Aarch32 => {
            if old & SPSR32_DIT != 0 {
                SPSR_DIT
            } else {
                0
            }
        }
        _ => old & SPSR_DIT,
    };
    let new_pstate = (old & (SPSR_NZCV | SPSR_PAN)) | dit | SPSR_DAIF | MODE_EL1H;

    Injection {
        elr_el1: state.pc,
        spsr_el1: old,
        esr_el1: (ec << 26) | ESR_IL | iss,
        far_el1: far,
        // VBAR_EL1[10:0] are RES0: the table is 2 KiB aligned.
        new_pc: (state.vbar_el1 & !0x7ff) | source.vector_offset(),
        new_pstate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VBAR: u64 = 0xffff_8000_1001_0800;
    const PC: u64 = 0xffff_8000_1234_5678;
    const FAR: u64 = 0x0900_0ff8;

    /// Every mode a guest can trap from: (M[4:0], vector offset, from EL1).
    const SOURCES: [(u64, u64, bool); 4] = [
        (0b0_0100, 0x000, true),  // EL1t
        (0b0_0101, 0x200, true),  // EL1h
        (0b0_0000, 0x400, false), // EL0t
        (0b1_0000, 0x600, false), // AArch32 User
    ];

    const KINDS: [Injected; 4] = [
        Injected::Undefined,
        Injected::DataAbort {
            far: FAR,
            write: false,
        },
        Injected::DataAbort {
            far: FAR,
            write: true,
        },
        Injected::InstrAbort { far: PC },
    ];

    fn ec(esr: u64) -> u64 {
        (esr >> 26) & 0x3f
    }

    #[test]
    fn every_source_and_kind() {
        for (mode, offset, from_el1) in SOURCES {
            for what in KINDS {
                // Flags, PAN and DAIF bits set in the old state so that what
                // is kept and what is forced both show.
                for extra in [0, (0xf << 28) | (1 << 22) | (0b1010 << 6)] {
                    let pstate = mode | extra;
                    let state = GuestState {
                        pc: PC,
                        pstate,
                        vbar_el1: VBAR,
                    };
                    let inj = inject(&state, what);
                    let ctx = (mode, what, extra);

                    assert_eq!(inj.new_pc, VBAR + offset, "{ctx:?}");
                    assert_eq!(inj.elr_el1, PC);
                    assert_eq!(inj.spsr_el1, pstate);

                    // Mode EL1h, AArch64, all of DAIF masked.
                    assert_eq!(inj.new_pstate & 0x1f, 0b0_0101, "{ctx:?}");
                    assert_eq!(inj.new_pstate & (0xf << 6), 0xf << 6);
                    // Flags and PAN are carried over, nothing else is set.
                    assert_eq!(
                        inj.new_pstate,
                        (pstate & ((0xf << 28) | (1 << 22))) | (0xf << 6) | 0b0101,
                        "{ctx:?}"
                    );

                    let esr = inj.esr_el1;
                    assert_eq!(esr >> 32, 0);
                    assert_ne!(esr & (1 << 25), 0, "IL");
                    match what {
                        Injected::Undefined => {
                            assert_eq!(esr, 1 << 25);
                            assert_eq!(inj.far_el1, None);
                        }
                        Injected::DataAbort { far, write } => {
                            assert_eq!(ec(esr), if from_el1 { 0x25 } else { 0x24 });
                            // ISV 0, WnR as the access, DFSC 0b010000.
                            let iss = esr & 0x1ff_ffff;
                            assert_eq!(iss, 0x10 | if write { 1 << 6 } else { 0 });
                            assert_eq!(inj.far_el1, Some(far));
                        }
                        Injected::InstrAbort { far } => {
                            assert_eq!(ec(esr), if from_el1 { 0x21 } else { 0x20 });
                            assert_eq!(esr & 0x1ff_ffff, 0x10);
                            assert_eq!(inj.far_el1, Some(far));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn data_abort_from_el1h_whole_register() {
        // `str w1, [x0]` at EL1h to an unemulated IPA, flags Z and C set.
        let state = GuestState {
            pc: PC,
            pstate: 0x6000_03c5,
            vbar_el1: VBAR,
        };
        let inj = inject(
            &state,
            Injected::DataAbort {
                far: FAR,
                write: true,
            },
        );
        assert_eq!(
            inj,
            Injection {
                elr_el1: PC,
                spsr_el1: 0x6000_03c5,
                esr_el1: 0x9600_0050,
                far_el1: Some(FAR),
                new_pc: VBAR + 0x200,
                new_pstate: 0x6000_03c5,
            }
        );
    }

    #[test]
    fn entry_clears_step_illegal_and_aarch32_bits() {
        // AArch64 EL0 with SS (21), IL (20), UAO (23), TCO (25), SSBS (12),
        // BTYPE (11:10) set: none survives the entry.
        let noisy = (1 << 21) | (1 << 20) | (1 << 23) | (1 << 25) | (1 << 12) | (0b11 << 10);
        let state = GuestState {
            pc: PC,
            pstate: noisy,
            vbar_el1: VBAR,
        };
        let inj = inject(&state, Injected::Undefined);
        assert_eq!(inj.new_pstate, 0x3c5);
        assert_eq!(inj.spsr_el1, noisy);

        // AArch32 User, Thumb, IT bits, E, GE: cleared, back in AArch64.
        let a32 = 0b1_0000 | (1 << 5) | (0b11 << 25) | (0x3f << 10) | (1 << 9) | (0xf << 16);
        let inj = inject(
            &GuestState {
                pc: PC,
                pstate: a32,
                vbar_el1: VBAR,
            },
            Injected::Undefined,
        );
        assert_eq!(inj.new_pstate, 0x3c5);
    }

    #[test]
    fn dit_is_kept_from_either_layout() {
        let el1h = GuestState {
            pc: PC,
            pstate: 0b0101 | (1 << 24),
            vbar_el1: VBAR,
        };
        assert_ne!(inject(&el1h, Injected::Undefined).new_pstate & (1 << 24), 0);
        // AArch32 DIT is bit 21 (bit 24 is J there, RES0).
        let a32 = GuestState {
            pc: PC,
            pstate: 0b1_0000 | (1 << 21),
            vbar_el1: VBAR,
        };
        assert_eq!(inject(&a32, Injected::Undefined).new_pstate, (1 << 24) | 0x3c5);
    }

    #[test]
    fn vbar_low_bits_are_ignored() {
        let state = GuestState {
            pc: PC,
            pstate: 0b0101,
            vbar_el1: 0x4008_0000 | 0x7ff,
        };
        assert_eq!(inject(&state, Injected::Undefined).new_pc, 0x4008_0000 + 0x200);
    }

    #[test]
    fn unusual_modes_are_lower_el() {
        // EL2h, EL3h and the reserved EL0/EL1 encodings cannot be a trapped
        // guest's state; they take the lower-EL AArch64 vector rather than
        // panic.
        for m in [0b1001, 0b1101, 0b0001, 0b0110, 0b0111] {
            let state = GuestState {
                pc: PC,
                pstate: m,
                vbar_el1: VBAR,
            };
            let inj = inject(&state, Injected::InstrAbort { far: PC });
            assert_eq!(inj.new_pc, VBAR + 0x400, "{m:#b}");
            assert_eq!(ec(inj.esr_el1), 0x20);
        }
    }

    #[test]
    fn arbitrary_inputs_do_not_panic() {
        // xorshift64: a deterministic spread over all 64-bit patterns.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..100_000 {
            let state = GuestState {
                pc: next(),
                pstate: next(),
                vbar_el1: next(),
            };
            let far = next();
            for what in [
                Injected::Undefined,
                Injected::DataAbort {
                    far,
                    write: far & 1 != 0,
                },
                Injected::InstrAbort { far },
            ] {
                let inj = inject(&state, what);
                assert_eq!(inj.new_pstate & 0x3df, 0x3c5);
                assert_eq!(inj.new_pc & !0x7ff, state.vbar_el1 & !0x7ff);
                assert_eq!(inj.new_pc & 0x1ff, 0);
            }
        }
    }
}
