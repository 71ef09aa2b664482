//! ESR_EL2 decoding: the exception class and the syndromes (ISS) the
//! hypervisor acts on, plus the value arithmetic of an emulated MMIO access.
//!
//! Pure values in, values out (Arm ARM D19.2.44, "ESR_EL2"; the ISS encodings
//! are under "ISS encoding for an exception from ..."). Nothing here reads a
//! register, and no bit pattern a guest can provoke makes it panic: reserved
//! or unknown encodings decode to their raw fields.

// A decoder of guest-provoked syndromes: no panic (STYLE.md).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable
    )
)]

use core::fmt;

/// A syndrome as read from ESR_EL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Esr(pub u64);

impl Esr {
    /// EC, bits \[31:26\]: why the exception was taken.
    pub const fn ec(self) -> u8 {
        ((self.0 >> 26) & 0x3f) as u8
    }

    /// IL, bit 25: the trapped instruction was 32 bits wide. Also 1 for
    /// classes that have no instruction (aborts with ISV = 0, SError, ...).
    pub const fn il(self) -> bool {
        self.0 & (1 << 25) != 0
    }

    /// Length in bytes of the trapped instruction: 4, or 2 for a 16-bit
    /// T32 one (IL = 0). Branch-free, for the emulation paths.
    #[inline(always)]
    pub const fn insn_len(self) -> u64 {
        2 + ((self.0 >> 24) & 2)
    }

    /// ISS, bits \[24:0\]: the class-specific syndrome.
    pub const fn iss(self) -> u32 {
        (self.0 & 0x1ff_ffff) as u32
    }

    /// The exception class, named.
    pub const fn class(self) -> ExceptionClass {
        ExceptionClass::from_ec(self.ec())
    }

    /// The data-abort syndrome, if this is a data abort (EC 0x24 or 0x25).
    pub const fn data_abort(self) -> Option<DataAbort> {
        match self.class() {
            ExceptionClass::DataAbortLower | ExceptionClass::DataAbortSame => {
                Some(DataAbort::from_iss(self.iss()))
            }
            _ => None,
        }
    }

    /// The instruction-abort syndrome, if this is an instruction abort
    /// (EC 0x20 or 0x21).
    pub const fn instr_abort(self) -> Option<InstrAbort> {
        match self.class() {
            ExceptionClass::InstrAbortLower | ExceptionClass::InstrAbortSame => {
                Some(InstrAbort::from_iss(self.iss()))
            }
            _ => None,
        }
    }

    /// The trapped MSR/MRS/SYS syndrome, if this is EC 0x18.
    pub const fn sysreg_access(self) -> Option<SysRegAccess> {
        match self.class() {
            ExceptionClass::SysReg64 => Some(SysRegAccess::from_iss(self.iss())),
            _ => None,
        }
    }

    /// The trapped WFI/WFE syndrome, if this is EC 0x01.
    pub const fn wfx(self) -> Option<Wfx> {
        match self.class() {
            ExceptionClass::Wfx => Some(Wfx::from_iss(self.iss())),
            _ => None,
        }
    }
}

impl fmt::Display for Esr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.class(), f)
    }
}

/// ESR_ELx.EC (Arm ARM D19.2.44, table "ESR_EL2.EC"). The classes the
/// hypervisor handles or may want to name in a log have a variant; the rest,
/// including every AArch32 trap (HVC32, SMC32, MCR/MRC, ...), are `Other`
/// with the raw EC. [`ExceptionClass::from_ec`] never builds `Other` for an
/// EC that has a variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    /// 0x00: unknown reason (e.g. an UNDEFINED instruction).
    Unknown,
    /// 0x01: trapped WFI or WFE (HCR_EL2.TWI/TWE).
    Wfx,
    /// 0x07: access to SVE, Advanced SIMD or floating point trapped (CPTR_EL2).
    TrappedFp,
    /// 0x0e: illegal execution state (an ERET to a bad SPSR).
    IllegalState,
    /// 0x16: HVC from AArch64.
    Hvc64,
    /// 0x17: SMC from AArch64 trapped by HCR_EL2.TSC.
    Smc64,
    /// 0x18: trapped MSR, MRS or System instruction from AArch64.
    SysReg64,
    /// 0x19: access to SVE functionality trapped.
    Sve,
    /// 0x20: instruction abort from a lower exception level (a guest).
    InstrAbortLower,
    /// 0x21: instruction abort taken without a change of level (EL2 itself).
    InstrAbortSame,
    /// 0x22: PC alignment fault.
    PcAlignment,
    /// 0x24: data abort from a lower exception level (a guest).
    DataAbortLower,
    /// 0x25: data abort taken without a change of level (EL2 itself).
    DataAbortSame,
    /// 0x26: SP alignment fault.
    SpAlignment,
    /// 0x2c: trapped floating-point exception from AArch64.
    FpException64,
    /// 0x2f: SError interrupt.
    SError,
    /// 0x30: breakpoint from a lower exception level.
    BreakpointLower,
    /// 0x31: breakpoint at the same exception level.
    BreakpointSame,
    /// 0x32: software step from a lower exception level.
    SoftwareStepLower,
    /// 0x33: software step at the same exception level.
    SoftwareStepSame,
    /// 0x34: watchpoint from a lower exception level.
    WatchpointLower,
    /// 0x35: watchpoint at the same exception level.
    WatchpointSame,
    /// 0x3c: BRK instruction from AArch64.
    Brk64,
    /// Any other EC, raw (AArch32 traps, features the hypervisor does not use,
    /// reserved values).
    Other(u8),
}

impl ExceptionClass {
    /// Names an EC. Values above 0x3f (not produced by [`Esr::ec`]) are
    /// `Other` too.
    pub const fn from_ec(ec: u8) -> Self {
        match ec {
            0x00 => Self::Unknown,
            0x01 => Self::Wfx,
            0x07 => Self::TrappedFp,
            0x0e => Self::IllegalState,
            0x16 => Self::Hvc64,
            0x17 => Self::Smc64,
            0x18 => Self::SysReg64,
            0x19 => Self::Sve,
            0x20 => Self::InstrAbortLower,
            0x21 => Self::InstrAbortSame,
            0x22 => Self::PcAlignment,
            0x24 => Self::DataAbortLower,
            0x25 => Self::DataAbortSame,
            0x26 => Self::SpAlignment,
            0x2c => Self::FpException64,
            0x2f => Self::SError,
            0x30 => Self::BreakpointLower,
            0x31 => Self::BreakpointSame,
            0x32 => Self::SoftwareStepLower,
            0x33 => Self::SoftwareStepSame,
            0x34 => Self::WatchpointLower,
            0x35 => Self::WatchpointSame,
            0x3c => Self::Brk64,
            other => Self::Other(other),
        }
    }

    /// The EC value back.
    pub const fn ec(self) -> u8 {
        match self {
            Self::Unknown => 0x00,
            Self::Wfx => 0x01,
            Self::TrappedFp => 0x07,
            Self::IllegalState => 0x0e,
            Self::Hvc64 => 0x16,
            Self::Smc64 => 0x17,
            Self::SysReg64 => 0x18,
            Self::Sve => 0x19,
            Self::InstrAbortLower => 0x20,
            Self::InstrAbortSame => 0x21,
            Self::PcAlignment => 0x22,
            Self::DataAbortLower => 0x24,
            Self::DataAbortSame => 0x25,
            Self::SpAlignment => 0x26,
            Self::FpException64 => 0x2c,
            Self::SError => 0x2f,
            Self::BreakpointLower => 0x30,
            Self::BreakpointSame => 0x31,
            Self::SoftwareStepLower => 0x32,
            Self::SoftwareStepSame => 0x33,
            Self::WatchpointLower => 0x34,
            Self::WatchpointSame => 0x35,
            Self::Brk64 => 0x3c,
            Self::Other(ec) => ec,
        }
    }

    /// A short human name for logs. `Other` ECs that are well known get
    /// their name too; the rest are "other".
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown reason",
            Self::Wfx => "WFI/WFE",
            Self::TrappedFp => "FP/SIMD access",
            Self::IllegalState => "illegal execution state",
            Self::Hvc64 => "HVC",
            Self::Smc64 => "SMC",
            Self::SysReg64 => "MSR/MRS/SYS",
            Self::Sve => "SVE access",
            Self::InstrAbortLower => "instruction abort (lower EL)",
            Self::InstrAbortSame => "instruction abort (same EL)",
            Self::PcAlignment => "PC alignment",
            Self::DataAbortLower => "data abort (lower EL)",
            Self::DataAbortSame => "data abort (same EL)",
            Self::SpAlignment => "SP alignment",
            Self::FpException64 => "FP exception",
            Self::SError => "SError",
            Self::BreakpointLower => "breakpoint (lower EL)",
            Self::BreakpointSame => "breakpoint (same EL)",
            Self::SoftwareStepLower => "software step (lower EL)",
            Self::SoftwareStepSame => "software step (same EL)",
            Self::WatchpointLower => "watchpoint (lower EL)",
            Self::WatchpointSame => "watchpoint (same EL)",
            Self::Brk64 => "BRK",
            Self::Other(0x03..=0x06) | Self::Other(0x0c) => "AArch32 coprocessor access",
            Self::Other(0x11) => "SVC (AArch32)",
            Self::Other(0x12) => "HVC (AArch32)",
            Self::Other(0x13) => "SMC (AArch32)",
            Self::Other(0x15) => "SVC",
            Self::Other(_) => "other",
        }
    }
}

impl fmt::Display for ExceptionClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Other(ec) => write!(f, "{} (EC {:#04x})", self.name(), ec),
            _ => f.write_str(self.name()),
        }
    }
}

/// Fault status codes (DFSC/IFSC, ISS\[5:0\]) shared by data and instruction
/// aborts (Arm ARM D19.2.44, ISS encodings for data/instruction aborts).
mod fsc {
    /// Synchronous external abort, not on a translation table walk.
    pub const SYNC_EXTERNAL: u8 = 0x10;
    /// Translation fault at level -1 (FEAT_LPA2).
    const TRANSLATION_LEVEL_MINUS_1: u8 = 0x2b;

    pub const fn is_translation(fsc: u8) -> bool {
        matches!(fsc, 0x04..=0x07) || fsc == TRANSLATION_LEVEL_MINUS_1
    }

    /// Level 0 (0x08, 0x0c) exists only with FEAT_LPA2; matching it is
    /// harmless on other CPUs, which never report it.
    pub const fn is_access_flag(fsc: u8) -> bool {
        matches!(fsc, 0x08..=0x0b)
    }

    pub const fn is_permission(fsc: u8) -> bool {
        matches!(fsc, 0x0c..=0x0f)
    }

    /// The lookup level for codes that carry one in their low two bits:
    /// address size, translation, access flag and permission faults, and
    /// external aborts, parity/ECC errors and granule protection faults on a
    /// table walk. Level -1 (FEAT_LPA2) codes do not fit a `u8` and give
    /// `None`, as do codes without a level.
    pub const fn level(fsc: u8) -> Option<u8> {
        match fsc {
            0x00..=0x0f | 0x14..=0x17 | 0x1c..=0x1f | 0x24..=0x27 => Some(fsc & 0b11),
            _ => None,
        }
    }
}

/// Whether `bit` of `iss` is set.
const fn bit(iss: u32, bit: u32) -> bool {
    (iss >> bit) & 1 != 0
}

/// The syndrome of a data abort, EC 0x24/0x25 (Arm ARM D19.2.44, "ISS
/// encoding for an exception from a Data Abort").
///
/// `sas`, `sse`, `srt`, `sf` and `ar` are valid only when `isv` is set; with
/// ISV = 0 (e.g. load/store pair, post-indexed or writeback forms, SIMD
/// registers, or a fault on a stage 1 walk) they are reported as decoded
/// from the bits, which the architecture makes RES0, and the access cannot
/// be emulated from the syndrome alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbort {
    /// ISV, bit 24: the instruction syndrome (bits \[23:14\]) is valid.
    pub isv: bool,
    /// SAS, bits \[23:22\], as the access size in bytes: 1, 2, 4 or 8.
    pub sas: u8,
    /// SSE, bit 21: a load sign-extends the value.
    pub sse: bool,
    /// SRT, bits \[20:16\]: the transfer register. 31 is XZR/WZR here (loads
    /// and stores cannot name SP as their data register).
    pub srt: u8,
    /// SF, bit 15: the transfer register is 64 bits (Xn), else 32 (Wn).
    pub sf: bool,
    /// AR, bit 14: acquire/release semantics.
    pub ar: bool,
    /// FnV, bit 10: FAR_EL2 is not valid.
    pub fnv: bool,
    /// EA, bit 9: external abort type (implementation defined).
    pub ea: bool,
    /// CM, bit 8: from a cache maintenance or address translation
    /// instruction.
    pub cm: bool,
    /// S1PTW, bit 7: stage 2 fault on a stage 1 translation table walk.
    pub s1ptw: bool,
    /// WnR, bit 6: the access was a write.
    pub wnr: bool,
    /// DFSC, bits \[5:0\]: data fault status code.
    pub dfsc: u8,
}

/// Whether a data abort's ISS describes a plain access that missed stage 2
/// and can be emulated: syndrome valid (ISV), not on a stage-1 table walk
/// (S1PTW) or from cache maintenance (CM), and a translation, access-flag
/// or permission fault (DFSC 0b0001xx to 0b0011xx). One mask test, as it is
/// on every emulated device access.
#[inline(always)]
pub const fn is_device_access(iss: u32) -> bool {
    const ISV: u32 = 1 << 24;
    const CM: u32 = 1 << 8;
    const S1PTW: u32 = 1 << 7;
    // DFSC - 4 < 12, i.e. 0x04..=0x0f, in one compare.
    iss & (ISV | CM | S1PTW) == ISV && (iss & 0x3f).wrapping_sub(4) < 12
}

impl DataAbort {
    /// Decodes an ISS of EC 0x24/0x25. Bits outside the data-abort ISS
    /// layout (and ISS2) are ignored.
    pub const fn from_iss(iss: u32) -> Self {
        Self {
            isv: bit(iss, 24),
            sas: 1 << ((iss >> 22) & 0b11),
            sse: bit(iss, 21),
            srt: ((iss >> 16) & 0x1f) as u8,
            sf: bit(iss, 15),
            ar: bit(iss, 14),
            fnv: bit(iss, 10),
            ea: bit(iss, 9),
            cm: bit(iss, 8),
            s1ptw: bit(iss, 7),
            wnr: bit(iss, 6),
            dfsc: (iss & 0x3f) as u8,
        }
    }

    /// The transfer register is XZR/WZR (SRT = 31): loads discard the value,
    /// stores write zero.
    pub const fn is_zero_register(&self) -> bool {
        self.srt == 31
    }

    /// A translation fault at any level: at stage 2 this is a guest access
    /// to an unmapped IPA, e.g. an emulated device.
    pub const fn is_translation_fault(&self) -> bool {
        fsc::is_translation(self.dfsc)
    }

    /// A permission fault at any level.
    pub const fn is_permission_fault(&self) -> bool {
        fsc::is_permission(self.dfsc)
    }

    /// An access flag fault at any level.
    pub const fn is_access_flag_fault(&self) -> bool {
        fsc::is_access_flag(self.dfsc)
    }

    /// A synchronous external abort not on a table walk (DFSC 0b010000).
    pub const fn is_sync_external_abort(&self) -> bool {
        self.dfsc == fsc::SYNC_EXTERNAL
    }

    /// The translation level of the fault, for codes that report one (see
    /// the table walk faults in DFSC). `None` for level -1 and for codes
    /// without a level.
    pub const fn fault_level(&self) -> Option<u8> {
        fsc::level(self.dfsc)
    }
}

/// The syndrome of an instruction abort, EC 0x20/0x21 (Arm ARM D19.2.44,
/// "ISS encoding for an exception from an Instruction Abort").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstrAbort {
    /// IFSC, bits \[5:0\]: instruction fault status code.
    pub ifsc: u8,
    /// S1PTW, bit 7: stage 2 fault on a stage 1 translation table walk.
    pub s1ptw: bool,
    /// FnV, bit 10: FAR_EL2 is not valid.
    pub fnv: bool,
    /// EA, bit 9: external abort type (implementation defined).
    pub ea: bool,
}

impl InstrAbort {
    /// Decodes an ISS of EC 0x20/0x21.
    pub const fn from_iss(iss: u32) -> Self {
        Self {
            ifsc: (iss & 0x3f) as u8,
            s1ptw: bit(iss, 7),
            fnv: bit(iss, 10),
            ea: bit(iss, 9),
        }
    }

    /// A translation fault at any level.
    pub const fn is_translation_fault(&self) -> bool {
        fsc::is_translation(self.ifsc)
    }

    /// A permission fault at any level.
    pub const fn is_permission_fault(&self) -> bool {
        fsc::is_permission(self.ifsc)
    }

    /// An access flag fault at any level.
    pub const fn is_access_flag_fault(&self) -> bool {
        fsc::is_access_flag(self.ifsc)
    }

    /// A synchronous external abort not on a table walk (IFSC 0b010000).
    pub const fn is_sync_external_abort(&self) -> bool {
        self.ifsc == fsc::SYNC_EXTERNAL
    }

    /// The translation level of the fault; see [`DataAbort::fault_level`].
    pub const fn fault_level(&self) -> Option<u8> {
        fsc::level(self.ifsc)
    }
}

/// Builds the matching key of a System register or System instruction from
/// its encoding, as written `S<op0>_<op1>_C<crn>_C<crm>_<op2>`. The key has
/// the bit layout of the EC 0x18 ISS with Rt and Direction cleared, so
/// [`SysRegAccess::encoding`] and this function agree. Out-of-range
/// arguments are truncated to their field widths.
pub const fn sysreg(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> u32 {
    ((op0 as u32 & 0b11) << 20)
        | ((op2 as u32 & 0b111) << 17)
        | ((op1 as u32 & 0b111) << 14)
        | ((crn as u32 & 0xf) << 10)
        | ((crm as u32 & 0xf) << 1)
}

/// ICC_SGI1R_EL1 (S3_0_C12_C11_5): generate a Group 1 SGI.
pub const ICC_SGI1R_EL1: u32 = sysreg(3, 0, 12, 11, 5);
/// ICC_ASGI1R_EL1 (S3_0_C12_C11_6): generate a Group 1 SGI, other Security
/// state.
pub const ICC_ASGI1R_EL1: u32 = sysreg(3, 0, 12, 11, 6);
/// ICC_SGI0R_EL1 (S3_0_C12_C11_7): generate a Group 0 SGI.
pub const ICC_SGI0R_EL1: u32 = sysreg(3, 0, 12, 11, 7);
/// OSLAR_EL1 (S2_0_C1_C0_4): OS lock access (trapped by MDCR_EL2.TDOSA).
pub const OSLAR_EL1: u32 = sysreg(2, 0, 1, 0, 4);
/// OSLSR_EL1 (S2_0_C1_C1_4): OS lock status (trapped by MDCR_EL2.TDOSA).
pub const OSLSR_EL1: u32 = sysreg(2, 0, 1, 1, 4);
/// OSDLR_EL1 (S2_0_C1_C3_4): OS double lock (trapped by MDCR_EL2.TDOSA).
pub const OSDLR_EL1: u32 = sysreg(2, 0, 1, 3, 4);
/// DC ISW (op0 1: a System instruction, not a register): invalidate by
/// set/way. Trapped to EL2 as EC 0x18 by HCR_EL2.TSW.
pub const DC_ISW: u32 = sysreg(1, 0, 7, 6, 2);
/// DC CSW: clean by set/way (HCR_EL2.TSW).
pub const DC_CSW: u32 = sysreg(1, 0, 7, 10, 2);
/// DC CISW: clean and invalidate by set/way (HCR_EL2.TSW).
pub const DC_CISW: u32 = sysreg(1, 0, 7, 14, 2);

/// A trapped MSR, MRS or System instruction, EC 0x18 (Arm ARM D19.2.44, "ISS
/// encoding for an exception from MSR, MRS, or System instruction execution
/// in AArch64 state").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    /// Op0, bits \[21:20\].
    pub op0: u8,
    /// Op1, bits \[16:14\].
    pub op1: u8,
    /// CRn, bits \[13:10\].
    pub crn: u8,
    /// CRm, bits \[4:1\].
    pub crm: u8,
    /// Op2, bits \[19:17\].
    pub op2: u8,
    /// Rt, bits \[9:5\]: the general register; 31 is XZR.
    pub rt: u8,
    /// Direction, bit 0: 1 is a read (MRS, or SYSL), 0 a write (MSR, SYS).
    pub read: bool,
}

impl SysRegAccess {
    /// Decodes an ISS of EC 0x18.
    pub const fn from_iss(iss: u32) -> Self {
        Self {
            op0: ((iss >> 20) & 0b11) as u8,
            op2: ((iss >> 17) & 0b111) as u8,
            op1: ((iss >> 14) & 0b111) as u8,
            crn: ((iss >> 10) & 0xf) as u8,
            rt: ((iss >> 5) & 0x1f) as u8,
            crm: ((iss >> 1) & 0xf) as u8,
            read: bit(iss, 0),
        }
    }

    /// The register's key, to compare with [`sysreg`] and the named consts.
    pub const fn encoding(&self) -> u32 {
        sysreg(self.op0, self.op1, self.crn, self.crm, self.op2)
    }
}

/// A trapped WFI or WFE, EC 0x01 (Arm ARM D19.2.44, "ISS encoding for an
/// exception from a WF* instruction").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wfx {
    /// TI bit 0: WFE (or WFET), else WFI (or WFIT).
    pub is_wfe: bool,
}

impl Wfx {
    /// Decodes an ISS of EC 0x01.
    pub const fn from_iss(iss: u32) -> Self {
        Self { is_wfe: bit(iss, 0) }
    }
}

/// The immediate of an HVC (EC 0x16), ISS\[15:0\]. The same field holds the
/// SMC immediate for EC 0x17.
pub const fn hvc_imm(iss: u32) -> u16 {
    (iss & 0xffff) as u16
}

/// All ones in the low `bytes` bytes (`bytes` is 1, 2, 4 or 8; larger
/// values give all ones).
const fn size_mask(bytes: u8) -> u64 {
    if bytes >= 8 {
        u64::MAX
    } else {
        (1u64 << (bytes as u32 * 8)) - 1
    }
}

/// The value to put in the destination register of an emulated load of
/// `da.sas` bytes that read `data` (Arm ARM C6, LDR/LDRS*: a load zero- or
/// sign-extends to the register width, and writing Wn clears Xn\[63:32\]).
///
/// `data` is masked to the access size; with SSE it is sign-extended to 64
/// bits (SF) or to 32 bits and then zero-extended (!SF). Any !SF result has
/// its upper 32 bits clear. The caller discards the result when SRT is 31.
pub const fn load_result(data: u64, da: &DataAbort) -> u64 {
    let bits = da.sas as u32 * 8;
    let mut value = data & size_mask(da.sas);
    if da.sse && bits < 64 {
        let shift = 64 - bits;
        value = (((value << shift) as i64) >> shift) as u64;
    }
    if !da.sf {
        value &= 0xffff_ffff;
    }
    value
}

/// The value an emulated store of `da.sas` bytes writes: the source register
/// `reg` masked to the access size. Pass 0 for SRT = 31 (XZR).
pub const fn store_value(reg: u64, da: &DataAbort) -> u64 {
    reg & size_mask(da.sas)
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::string::ToString;

    #[test]
    fn only_plain_stage2_misses_are_device_accesses() {
        let isv = 1 << 24;
        for level in 0..4 {
            assert!(is_device_access(isv | 0x04 | level), "translation fault L{level}");
            assert!(is_device_access(isv | 0x08 | level), "access flag fault L{level}");
            assert!(is_device_access(isv | 0x0c | level), "permission fault L{level}");
            assert!(!is_device_access(isv | level), "address size fault L{level}");
        }
        assert!(!is_device_access(0x07), "ISV = 0");
        assert!(!is_device_access(isv | (1 << 7) | 0x07), "stage-1 table walk");
        assert!(!is_device_access(isv | (1 << 8) | 0x07), "cache maintenance");
        assert!(!is_device_access(isv | 0x10), "synchronous external abort");
        assert!(!is_device_access(isv | 0x21), "alignment fault");
    }

    /// An ISV = 1 data-abort ISS from its fields, written out independently of
    /// the decoder.
    fn da_iss(sas_log2: u32, sse: bool, srt: u32, sf: bool, ar: bool, wnr: bool) -> u32 {
        (1 << 24)
            | (sas_log2 << 22)
            | ((sse as u32) << 21)
            | (srt << 16)
            | ((sf as u32) << 15)
            | ((ar as u32) << 14)
            | ((wnr as u32) << 6)
            | 0x07 // translation fault, level 3
    }

    /// What LDR/LDRS* of each width put in the register, by Rust casts.
    fn expected_load(data: u64, bytes: u8, sse: bool, sf: bool) -> u64 {
        let v = match (bytes, sse) {
            (1, false) => data as u8 as u64,
            (2, false) => data as u16 as u64,
            (4, false) => data as u32 as u64,
            (1, true) => data as u8 as i8 as i64 as u64,
            (2, true) => data as u16 as i16 as i64 as u64,
            (4, true) => data as u32 as i32 as i64 as u64,
            (_, _) => data,
        };
        if sf {
            v
        } else {
            v as u32 as u64
        }
    }

    const PATTERNS: [u64; 8] = [
        0,
        u64::MAX,
        0x0123_4567_89ab_cdef,
        0xfedc_ba98_7654_3210,
        0x80,
        0x8000,
        0x8000_0000,
        0x7f7f_7f7f_7f7f_7f7f,
    ];

    #[test]
    fn every_ec_decodes_and_round_trips() {
        for ec in 0u8..=63 {
            let esr = Esr(((ec as u64) << 26) | (1 << 25) | 0x1ff_ffff);
            assert_eq!(esr.ec(), ec);
            let class = esr.class();
            assert_eq!(class.ec(), ec, "{class:?}");
            assert_eq!(ExceptionClass::from_ec(class.ec()), class);
            // A named EC is never `Other`.
            if let ExceptionClass::Other(raw) = class {
                assert_eq!(raw, ec);
            }
            assert!(!esr.to_string().is_empty());
            assert!(esr.il());
            assert_eq!(esr.iss(), 0x1ff_ffff);
        }
    }

    #[test]
    fn named_classes_have_their_ec() {
        use ExceptionClass::*;
        let table = [
            (0x00, Unknown),
            (0x01, Wfx),
            (0x07, TrappedFp),
            (0x16, Hvc64),
            (0x17, Smc64),
            (0x18, SysReg64),
            (0x19, Sve),
            (0x20, InstrAbortLower),
            (0x21, InstrAbortSame),
            (0x22, PcAlignment),
            (0x24, DataAbortLower),
            (0x25, DataAbortSame),
            (0x26, SpAlignment),
            (0x2f, SError),
            (0x30, BreakpointLower),
            (0x32, SoftwareStepLower),
            (0x34, WatchpointLower),
            (0x3c, Brk64),
            (0x12, Other(0x12)), // HVC32
            (0x13, Other(0x13)), // SMC32
            (0x03, Other(0x03)), // MCR/MRC cp15
        ];
        for (ec, class) in table {
            assert_eq!(ExceptionClass::from_ec(ec), class);
        }
    }

    #[test]
    fn ec_above_six_bits_is_other() {
        for ec in 64u8..=255 {
            assert_eq!(ExceptionClass::from_ec(ec), ExceptionClass::Other(ec));
        }
    }

    #[test]
    fn esr_fields_ignore_iss2_and_upper_bits() {
        let esr = Esr(0xffff_ffff_0000_0000 | (0x24 << 26));
        assert_eq!(esr.ec(), 0x24);
        assert!(!esr.il());
        assert_eq!(esr.iss(), 0);
    }

    #[test]
    fn data_abort_isv_fields_exhaustive() {
        for sas_log2 in 0..4u32 {
            for sse in [false, true] {
                for sf in [false, true] {
                    for srt in 0..32u32 {
                        for wnr in [false, true] {
                            for ar in [false, true] {
                                let iss = da_iss(sas_log2, sse, srt, sf, ar, wnr);
                                let esr = Esr((0x24 << 26) | (1 << 25) | iss as u64);
                                let da = esr.data_abort().unwrap();
                                let bytes = 1u8 << sas_log2;
                                assert!(da.isv);
                                assert_eq!(da.sas, bytes);
                                assert_eq!(da.sse, sse);
                                assert_eq!(da.srt as u32, srt);
                                assert_eq!(da.is_zero_register(), srt == 31);
                                assert_eq!(da.sf, sf);
                                assert_eq!(da.ar, ar);
                                assert_eq!(da.wnr, wnr);
                                assert!(!da.fnv && !da.ea && !da.cm && !da.s1ptw);
                                assert_eq!(da.dfsc, 0x07);
                                for data in PATTERNS {
                                    assert_eq!(
                                        load_result(data, &da),
                                        expected_load(data, bytes, sse, sf),
                                        "data {data:#x} {da:?}"
                                    );
                                    let stored = store_value(data, &da);
                                    let expected = match bytes {
                                        1 => data as u8 as u64,
                                        2 => data as u16 as u64,
                                        4 => data as u32 as u64,
                                        _ => data,
                                    };
                                    assert_eq!(stored, expected);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn load_result_examples() {
        let da = |iss| DataAbort::from_iss(iss);
        // LDRSB x0: 0x80 -> -128 in 64 bits.
        assert_eq!(
            load_result(0x80, &da(da_iss(0, true, 0, true, false, false))),
            0xffff_ffff_ffff_ff80
        );
        // LDRSB w0: -128 in 32 bits, upper half clear.
        assert_eq!(
            load_result(0x80, &da(da_iss(0, true, 0, false, false, false))),
            0xffff_ff80
        );
        // LDRH w0 of a value with garbage above the access size.
        assert_eq!(
            load_result(0xdead_beef, &da(da_iss(1, false, 0, false, false, false))),
            0xbeef
        );
        // LDRSW x0: 0x8000_0000 -> sign-extended.
        assert_eq!(
            load_result(0x8000_0000, &da(da_iss(2, true, 0, true, false, false))),
            0xffff_ffff_8000_0000
        );
    }

    #[test]
    fn data_abort_every_iss_decodes() {
        // Every ISS, with and without ISV: decoding and the helpers never
        // panic, and the fields stay in range.
        for iss in 0..=0x1ff_ffffu32 {
            let da = DataAbort::from_iss(iss);
            assert!(matches!(da.sas, 1 | 2 | 4 | 8));
            assert!(da.srt <= 31 && da.dfsc <= 0x3f);
            let _ = (
                da.is_translation_fault(),
                da.is_permission_fault(),
                da.is_access_flag_fault(),
                da.fault_level(),
            );
            let _ = load_result(u64::MAX, &da);
            let _ = store_value(u64::MAX, &da);
        }
    }

    #[test]
    fn fault_status_codes() {
        let d = |dfsc: u32| DataAbort::from_iss(dfsc);
        for level in 0..4u32 {
            let t = d(0x04 | level);
            assert!(t.is_translation_fault() && !t.is_permission_fault());
            assert!(!t.is_access_flag_fault());
            assert_eq!(t.fault_level(), Some(level as u8));

            let a = d(0x08 | level);
            assert!(a.is_access_flag_fault() && !a.is_translation_fault());
            assert_eq!(a.fault_level(), Some(level as u8));

            let p = d(0x0c | level);
            assert!(p.is_permission_fault() && !p.is_access_flag_fault());
            assert_eq!(p.fault_level(), Some(level as u8));

            // Synchronous external abort on a table walk.
            assert_eq!(d(0x14 | level).fault_level(), Some(level as u8));
        }
        // Level -1 translation fault (FEAT_LPA2).
        assert!(d(0x2b).is_translation_fault());
        assert_eq!(d(0x2b).fault_level(), None);
        // Synchronous external abort, alignment fault, TLB conflict: no level.
        assert!(d(0x10).is_sync_external_abort());
        for code in [0x10, 0x11, 0x18, 0x21, 0x30, 0x31] {
            let x = d(code);
            assert_eq!(x.fault_level(), None, "{code:#x}");
            assert!(!x.is_translation_fault() && !x.is_permission_fault());
            assert!(!x.is_access_flag_fault());
        }
    }

    #[test]
    fn real_data_abort_with_syndrome() {
        // 0x93c08007 = 0b100100_1_1_11_0_00000_1_0_0_00_0_0_0_0_0_000111:
        // EC 0x24 (data abort from a guest), IL 1, ISV 1, SAS 0b11 (8
        // bytes), SSE 0, SRT 0, SF 1, AR 0, VNCR 0, SET 0, FnV/EA/CM/S1PTW 0,
        // WnR 0 (read),
        // DFSC 0b000111 (translation fault, level 3): `ldr x0, [xN]` from an
        // unmapped IPA.
        let esr = Esr(0x93c0_8007);
        assert_eq!(esr.class(), ExceptionClass::DataAbortLower);
        assert!(esr.il());
        let da = esr.data_abort().unwrap();
        assert_eq!(
            da,
            DataAbort {
                isv: true,
                sas: 8,
                sse: false,
                srt: 0,
                sf: true,
                ar: false,
                fnv: false,
                ea: false,
                cm: false,
                s1ptw: false,
                wnr: false,
                dfsc: 0x07,
            }
        );
        assert!(da.is_translation_fault());
        assert_eq!(da.fault_level(), Some(3));
        assert_eq!(esr.to_string(), "data abort (lower EL)");
    }

    #[test]
    fn real_data_abort_write_without_syndrome() {
        // 0x92000046: EC 0x24, IL 1, ISS 0x46 = ISV 0, WnR 1, DFSC 0b000110
        // (translation fault, level 2).
        let da = Esr(0x9200_0046).data_abort().unwrap();
        assert!(!da.isv && da.wnr);
        assert_eq!(da.dfsc, 0x06);
        assert!(da.is_translation_fault());
        assert_eq!(da.fault_level(), Some(2));
    }

    #[test]
    fn real_data_abort_external_same_el() {
        // 0x96000050: EC 0x25 (data abort at EL2 itself), IL 1, ISS 0x50 =
        // ISV 0, WnR 1, DFSC 0b010000 (synchronous external abort).
        let esr = Esr(0x9600_0050);
        assert_eq!(esr.class(), ExceptionClass::DataAbortSame);
        let da = esr.data_abort().unwrap();
        assert!(!da.isv && da.wnr);
        assert!(da.is_sync_external_abort());
        assert_eq!(da.fault_level(), None);
    }

    #[test]
    fn real_hvc_and_smc() {
        // 0x5a000000: EC 0x16 (HVC64), IL 1, imm16 0: `hvc #0`.
        let hvc = Esr(0x5a00_0000);
        assert_eq!(hvc.class(), ExceptionClass::Hvc64);
        assert!(hvc.il());
        assert_eq!(hvc_imm(hvc.iss()), 0);
        assert_eq!(hvc_imm(Esr(0x5a00_1234).iss()), 0x1234);
        // 0x5e000000: EC 0x17 (SMC64), IL 1: `smc #0`.
        let smc = Esr(0x5e00_0000);
        assert_eq!(smc.class(), ExceptionClass::Smc64);
        assert_eq!(hvc.data_abort(), None);
        assert_eq!(smc.sysreg_access(), None);
    }

    #[test]
    fn real_sysreg_trap() {
        // 0x62300080 = 0b011000_1_000_11_000_000_0000_00100_0000_0:
        // EC 0x18, IL 1, Op0 3, Op2 0, Op1 0, CRn 0, Rt 4, CRm 0,
        // Direction 0 (write): `msr S3_0_C0_C0_0, x4`.
        let esr = Esr(0x6230_0080);
        assert_eq!(esr.class(), ExceptionClass::SysReg64);
        let sr = esr.sysreg_access().unwrap();
        assert_eq!(
            sr,
            SysRegAccess {
                op0: 3,
                op1: 0,
                crn: 0,
                crm: 0,
                op2: 0,
                rt: 4,
                read: false,
            }
        );
        assert_eq!(sr.encoding(), sysreg(3, 0, 0, 0, 0));
    }

    #[test]
    fn sysreg_fields_exhaustive() {
        for op0 in 0..4u32 {
            for op1 in 0..8u32 {
                for crn in 0..16u32 {
                    for crm in 0..16u32 {
                        for op2 in 0..8u32 {
                            for (rt, read) in [(0u32, true), (17, false), (31, true)] {
                                let iss = (op0 << 20)
                                    | (op2 << 17)
                                    | (op1 << 14)
                                    | (crn << 10)
                                    | (rt << 5)
                                    | (crm << 1)
                                    | read as u32;
                                let sr = SysRegAccess::from_iss(iss);
                                assert_eq!(
                                    (sr.op0, sr.op1, sr.crn, sr.crm, sr.op2, sr.rt, sr.read),
                                    (op0 as u8, op1 as u8, crn as u8, crm as u8, op2 as u8, rt as u8, read)
                                );
                                assert_eq!(
                                    sr.encoding(),
                                    sysreg(op0 as u8, op1 as u8, crn as u8, crm as u8, op2 as u8)
                                );
                                // Rt and Direction are not part of the key.
                                assert_eq!(sr.encoding(), iss & !0x3e1);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn sysreg_keys_are_distinct_and_decode() {
        let keys = [
            ICC_SGI1R_EL1,
            ICC_ASGI1R_EL1,
            ICC_SGI0R_EL1,
            OSLAR_EL1,
            OSLSR_EL1,
            OSDLR_EL1,
            DC_ISW,
            DC_CSW,
            DC_CISW,
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // `msr ICC_SGI1R_EL1, x1`, as it traps with HCR_EL2.IMO or
        // ICH_HCR_EL2.TC: op0 3, op1 0, CRn 12, CRm 11, op2 5.
        let iss = (3 << 20) | (5 << 17) | (12 << 10) | (1 << 5) | (11 << 1);
        let sr = SysRegAccess::from_iss(iss);
        assert_eq!(sr.encoding(), ICC_SGI1R_EL1);
        assert_eq!(sr.rt, 1);
        assert!(!sr.read);
        // `dc cisw, x3` trapped by HCR_EL2.TSW.
        let iss = (1 << 20) | (2 << 17) | (7 << 10) | (3 << 5) | (14 << 1);
        assert_eq!(SysRegAccess::from_iss(iss).encoding(), DC_CISW);
        // Arguments wider than their fields are truncated, not a panic.
        assert_eq!(sysreg(0xff, 0xff, 0xff, 0xff, 0xff), sysreg(3, 7, 15, 15, 7));
    }

    #[test]
    fn wfx() {
        assert_eq!(Esr(0x0600_0000).wfx(), Some(Wfx { is_wfe: false }));
        assert_eq!(Esr(0x0600_0001).wfx(), Some(Wfx { is_wfe: true }));
        // WFET (TI 0b11) is a WFE, WFIT (0b10) a WFI.
        assert!(Wfx::from_iss(0b11).is_wfe);
        assert!(!Wfx::from_iss(0b10).is_wfe);
    }

    #[test]
    fn instruction_abort() {
        // EC 0x20, IL 1, S1PTW 1, IFSC 0b000101 (translation fault level 1).
        let esr = Esr((0x20 << 26) | (1 << 25) | (1 << 7) | 0x05);
        let ia = esr.instr_abort().unwrap();
        assert_eq!(
            ia,
            InstrAbort {
                ifsc: 0x05,
                s1ptw: true,
                fnv: false,
                ea: false,
            }
        );
        assert!(ia.is_translation_fault());
        assert_eq!(ia.fault_level(), Some(1));
        assert_eq!(esr.data_abort(), None);
        let ia = InstrAbort::from_iss((1 << 10) | (1 << 9) | 0x10);
        assert!(ia.fnv && ia.ea && !ia.s1ptw && ia.is_sync_external_abort());
        for iss in 0..=0x1ff_ffffu32 {
            let ia = InstrAbort::from_iss(iss);
            assert!(ia.ifsc <= 0x3f);
            let _ = ia.fault_level();
        }
    }

    #[test]
    fn display_names() {
        assert_eq!(Esr(0x5a00_0000).to_string(), "HVC");
        assert_eq!(Esr(0x12 << 26).to_string(), "HVC (AArch32) (EC 0x12)");
        assert_eq!(Esr(0x3f << 26).to_string(), "other (EC 0x3f)");
    }
}
