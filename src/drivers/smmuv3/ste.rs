//! Stream table entries (Arm SMMUv3 spec, 5.2 "Stream Table Entry").
//!
//! Only the two kinds Tessera writes: ABORT (valid, Config = 0b000: every
//! transaction is terminated) and stage 2 only (Config = 0b110: stage 1
//! bypassed, stage 2 through a VM's tables with its VMID).

/// Words (64-bit) in one STE.
pub const STE_WORDS: usize = 8;

const V: u64 = 1;
const CONFIG_SHIFT: u32 = 1;
const CONFIG_ABORT: u64 = 0b000;
const CONFIG_S2: u64 = 0b110;
/// Word 1, SHCFG[45:44] = 0b01: use the incoming shareability.
const SHCFG_INCOMING: u64 = 1 << 44;
/// Word 2: S2AA64 (bit 51), S2AFFD (53), S2R (58): AArch64 tables, no
/// access-flag faults, record faults in the event queue.
const S2AA64: u64 = 1 << 51;
const S2AFFD: u64 = 1 << 53;
const S2R: u64 = 1 << 58;
/// Word 3: S2TTB[51:4].
const S2TTB_MASK: u64 = 0x000f_ffff_ffff_fff0;

/// What the stage-2 STE of a stream says: the same walk as a CPU's VTCR_EL2
/// and VTTBR_EL2 describe for the owning VM, so device and CPU share one map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage2 {
    /// The stage-2 root table (physical, 16-byte aligned at least).
    pub root: u64,
    pub vmid: u16,
    /// VTCR_EL2 of the VM: T0SZ, SL0, IRGN0, ORGN0, SH0, TG0 and PS sit in
    /// bits [18:0] of both VTCR_EL2 and STE word 2 (bits [50:32]).
    pub vtcr: u64,
}

/// One STE's eight words.
pub type Ste = [u64; STE_WORDS];

/// An STE that aborts every transaction of its stream without an event.
pub const fn abort() -> Ste {
    [V | (CONFIG_ABORT << CONFIG_SHIFT), 0, 0, 0, 0, 0, 0, 0]
}

/// The stage-2 STE for `s2`, with the output size capped at `oas` (the
/// SMMU's IDR5.OAS encoding, the same as VTCR_EL2.PS's).
pub fn stage2(s2: &Stage2, oas: u64) -> Ste {
    let walk = s2.vtcr & 0xffff; // T0SZ .. TG0
    let ps = ((s2.vtcr >> 16) & 0b111).min(oas & 0b111);
    let word2 = u64::from(s2.vmid) | ((walk | (ps << 16)) << 32) | S2AA64 | S2AFFD | S2R;
    [
        V | (CONFIG_S2 << CONFIG_SHIFT),
        SHCFG_INCOMING,
        word2,
        s2.root & S2TTB_MASK,
        0,
        0,
        0,
        0,
    ]
}

/// The configuration an STE holds, decoded (for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    Invalid,
    Abort,
    Bypass,
    Stage2 {
        root: u64,
        vmid: u16,
        t0sz: u8,
        sl0: u8,
        ps: u8,
    },
    Other(u8),
}

pub fn decode(ste: &Ste) -> Decoded {
    if ste[0] & V == 0 {
        return Decoded::Invalid;
    }
    match (ste[0] >> CONFIG_SHIFT) & 0b111 {
        0b000 => Decoded::Abort,
        0b100 => Decoded::Bypass,
        0b110 => Decoded::Stage2 {
            root: ste[3] & S2TTB_MASK,
            vmid: ste[2] as u16,
            t0sz: ((ste[2] >> 32) & 0x3f) as u8,
            sl0: ((ste[2] >> 38) & 0b11) as u8,
            ps: ((ste[2] >> 48) & 0b111) as u8,
        },
        c => Decoded::Other(c as u8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VTCR_EL2 for a 40-bit IPA starting at level 1, 44-bit PS, WB
    /// inner-shareable walks (what `guest::vtcr` writes on QEMU's A72).
    const VTCR_40: u64 = 24 | (0b01 << 6) | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (4 << 16) | (1 << 31);

    #[test]
    fn abort_is_valid_with_config_zero() {
        let s = abort();
        assert_eq!(s[0], 1);
        assert!(s[1..].iter().all(|&w| w == 0));
        assert_eq!(decode(&s), Decoded::Abort);
        assert_eq!(decode(&[0; 8]), Decoded::Invalid);
    }

    #[test]
    fn stage2_fields_sit_where_the_spec_puts_them() {
        let s = stage2(
            &Stage2 {
                root: 0x4123_4000,
                vmid: 7,
                vtcr: VTCR_40,
            },
            5,
        );
        assert_eq!(s[0], 1 | (0b110 << 1));
        assert_eq!(s[1], 1 << 44);
        // S2VMID[15:0], S2T0SZ[37:32], S2SL0[39:38], S2IR0[41:40],
        // S2OR0[43:42], S2SH0[45:44], S2TG[47:46], S2PS[50:48], S2AA64[51],
        // S2AFFD[53], S2R[58].
        assert_eq!(s[2] & 0xffff, 7);
        assert_eq!((s[2] >> 32) & 0x3f, 24);
        assert_eq!((s[2] >> 38) & 3, 1);
        assert_eq!((s[2] >> 40) & 3, 1);
        assert_eq!((s[2] >> 42) & 3, 1);
        assert_eq!((s[2] >> 44) & 3, 3);
        assert_eq!((s[2] >> 46) & 3, 0, "4 KiB granule");
        assert_eq!((s[2] >> 48) & 7, 4);
        assert_eq!(s[2] >> 51 & 1, 1);
        assert_eq!(s[2] >> 52 & 1, 0, "little-endian walks");
        assert_eq!(s[2] >> 53 & 1, 1);
        assert_eq!(s[2] >> 58 & 1, 1);
        // VTCR's RES1 bit 31 and its VS bit 19 are not STE fields.
        assert_eq!((s[2] >> 55) & 0b111, 0, "no S2PTW/S2HD/S2HA");
        assert_eq!(s[2] >> 57 & 1, 0, "S2S: terminate, not stall");
        assert_eq!(s[3], 0x4123_4000);
        assert_eq!(
            decode(&s),
            Decoded::Stage2 {
                root: 0x4123_4000,
                vmid: 7,
                t0sz: 24,
                sl0: 1,
                ps: 4
            }
        );
    }

    #[test]
    fn stage2_output_size_is_capped_by_the_smmu() {
        let s = stage2(
            &Stage2 {
                root: 0x1000,
                vmid: 1,
                vtcr: VTCR_40,
            },
            2,
        );
        assert_eq!((s[2] >> 48) & 7, 2);
        // VTCR.VS (bit 19) must not leak into S2AA64's neighbour fields.
        let s = stage2(
            &Stage2 {
                root: 0x1000,
                vmid: 1,
                vtcr: VTCR_40 | (1 << 19),
            },
            5,
        );
        assert_eq!((s[2] >> 48) & 0xf, 4 | 8, "PS 4 plus S2AA64 only");
    }
}
