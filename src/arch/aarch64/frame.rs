//! The register frame the EL2 vectors push on the stack (`vectors.S`).

// Indexed by guest-chosen register numbers: no panic (STYLE.md).
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

/// Everything an exception entry saves: the general registers and the
/// return state. Layout is shared with `vectors.S`; do not reorder.
#[repr(C)]
#[derive(Clone, Debug, Default)]
pub struct TrapFrame {
    /// x0..x30.
    pub x: [u64; 31],
    /// ELR_EL2: where the exception returns to.
    pub elr: u64,
    /// SPSR_EL2: the PSTATE to return with.
    pub spsr: u64,
    _pad: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 272);

impl TrapFrame {
    /// Reads general register `n`, where 31 is XZR (reads as zero).
    pub fn reg(&self, n: usize) -> u64 {
        self.x.get(n).copied().unwrap_or(0)
    }

    /// Writes general register `n`; writes to 31 (XZR) are discarded.
    pub fn set_reg(&mut self, n: usize, value: u64) {
        if let Some(x) = self.x.get_mut(n) {
            *x = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xzr_reads_zero_and_ignores_writes() {
        let mut f = TrapFrame::default();
        f.set_reg(31, 7);
        assert_eq!(f.reg(31), 0);
        f.set_reg(30, 9);
        assert_eq!(f.reg(30), 9);
    }

    #[test]
    fn layout_matches_vectors_s() {
        let f = TrapFrame::default();
        let base = &f as *const _ as usize;
        assert_eq!(&f.elr as *const _ as usize - base, 248);
        assert_eq!(&f.spsr as *const _ as usize - base, 256);
    }
}
