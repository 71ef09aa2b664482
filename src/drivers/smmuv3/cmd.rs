//! Command-queue entries (SMMUv3 spec, 4 "Commands") and the index
//! arithmetic every SMMUv3 queue shares (3.5: a producer and a consumer
//! index of `log2size` bits plus a wrap bit above them).

/// One command: two 64-bit words.
pub type Command = [u64; 2];

const CFGI_STE: u64 = 0x03;
const CFGI_ALL: u64 = 0x04;
const TLBI_EL2_ALL: u64 = 0x20;
const TLBI_S12_VMALL: u64 = 0x28;
const TLBI_NSNH_ALL: u64 = 0x30;
const SYNC: u64 = 0x46;

/// Invalidates the cached STE of stream `sid` (Leaf = 0: with what hangs below it).
pub const fn cfgi_ste(sid: u32) -> Command {
    [CFGI_STE | ((sid as u64) << 32), 0]
}

/// Invalidates every cached STE and CD (CMD_CFGI_STE_RANGE with Range = 31).
pub const fn cfgi_all() -> Command {
    [CFGI_ALL, 31]
}

/// Invalidates every TLB entry of `vmid` (stage 1 and 2).
pub const fn tlbi_s12_vmall(vmid: u16) -> Command {
    [TLBI_S12_VMALL | ((vmid as u64) << 32), 0]
}

pub const fn tlbi_nsnh_all() -> Command {
    [TLBI_NSNH_ALL, 0]
}

pub const fn tlbi_el2_all() -> Command {
    [TLBI_EL2_ALL, 0]
}

/// CMD_SYNC without a completion signal (CS = 0b00): complete when the
/// queue's consumer index has passed it.
pub const fn sync() -> Command {
    [SYNC, 0]
}

/// The opcode of a command (for errors and tests).
pub const fn opcode(c: &Command) -> u8 {
    c[0] as u8
}

/// A queue of `1 << log2size` entries: where the next entry goes, whether
/// it is full or empty, all with the wrap bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    pub log2size: u32,
}

impl Ring {
    pub const fn entries(self) -> u32 {
        1 << self.log2size
    }
    /// The index and wrap bits of a PROD or CONS register value.
    pub const fn mask(self) -> u32 {
        (1 << (self.log2size + 1)) - 1
    }
    pub const fn slot(self, index: u32) -> usize {
        (index & (self.entries() - 1)) as usize
    }
    const fn wrap(self, index: u32) -> u32 {
        index & self.entries()
    }
    pub const fn next(self, index: u32) -> u32 {
        (index.wrapping_add(1)) & self.mask()
    }
    pub const fn is_empty(self, prod: u32, cons: u32) -> bool {
        prod & self.mask() == cons & self.mask()
    }
    /// Full: same slot, opposite wrap bits.
    pub const fn is_full(self, prod: u32, cons: u32) -> bool {
        self.slot(prod) == self.slot(cons) && self.wrap(prod) != self.wrap(cons)
    }
    /// Entries between the consumer and the producer.
    pub const fn used(self, prod: u32, cons: u32) -> u32 {
        prod.wrapping_sub(cons) & self.mask()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_and_operands_follow_the_spec() {
        assert_eq!(cfgi_ste(0x1234), [0x0000_1234_0000_0003, 0]);
        assert_eq!(cfgi_all(), [0x04, 31]);
        assert_eq!(tlbi_s12_vmall(0xbeef), [0x0000_beef_0000_0028, 0]);
        assert_eq!(tlbi_nsnh_all(), [0x30, 0]);
        assert_eq!(tlbi_el2_all(), [0x20, 0]);
        assert_eq!(sync(), [0x46, 0], "CS = none, no MSI");
        assert_eq!(opcode(&sync()), 0x46);
    }

    #[test]
    fn ring_full_empty_and_wrap() {
        let r = Ring { log2size: 2 };
        assert_eq!(r.entries(), 4);
        assert_eq!(r.mask(), 7);
        assert!(r.is_empty(0, 0));
        let mut prod = 0;
        for _ in 0..4 {
            assert!(!r.is_full(prod, 0));
            prod = r.next(prod);
        }
        assert_eq!(prod, 4, "slot 0 with the wrap bit set");
        assert!(r.is_full(prod, 0));
        assert!(!r.is_empty(prod, 0));
        assert_eq!(r.used(prod, 0), 4);
        // The consumer catches up and both wrap back to zero.
        assert!(r.is_empty(prod, 4));
        for _ in 0..4 {
            prod = r.next(prod);
        }
        assert_eq!(prod, 0);
        assert_eq!(r.used(1, 6), 3);
        assert!(r.is_full(1, 5));
        // Bits above the wrap bit (CONS.ERR, PROD.OVFLG) are ignored.
        assert!(r.is_empty(0x8000_0003, 3));
    }
}
