//! How [`super::mmu::zero_to_poc`] splits a byte range for DC ZVA: a head
//! and a tail zeroed with stores, whole blocks between them, most of those
//! in groups for the unrolled loop. Pure arithmetic, host-tested, so the
//! asm only ever sees aligned, in-range block addresses whatever the CPU's
//! DC ZVA block (DCZID_EL0) and cache line (CTR_EL0) sizes are.

/// `[start, end)` cut at DC ZVA block boundaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZeroPlan {
    /// `[start, first)`: before the first whole block, zeroed with stores.
    pub first: u64,
    /// `[first, groups)`: whole groups of blocks, the unrolled loop.
    pub groups: u64,
    /// `[groups, last)`: the remaining whole blocks, one at a time;
    /// `[last, end)` is zeroed with stores.
    pub last: u64,
}

impl ZeroPlan {
    /// The plan for `[start, start + len)` with `block`-byte blocks (a
    /// power of two), `group` blocks per loop iteration; `None` when the
    /// range holds no whole block (or wraps), so stores do all of it.
    pub fn new(start: u64, len: u64, block: u64, group: u64) -> Option<Self> {
        if !block.is_power_of_two() || group == 0 {
            return None;
        }
        let end = start.checked_add(len)?;
        let first = start.checked_add(block - 1)? & !(block - 1);
        let last = end & !(block - 1);
        if first >= last {
            return None;
        }
        let span = block.checked_mul(group)?;
        let groups = first + (last - first) / span * span;
        Some(Self { first, groups, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_tile_the_range_at_block_boundaries_for_any_block_size() {
        for shift in 2..=11 {
            let block = 4u64 << shift.min(9);
            for group in [1u64, 16, 32] {
                for start in [0u64, 1, 63, 64, 4095, 0x4000_0000, 0x4000_0000 + 17] {
                    for len in [
                        0u64,
                        1,
                        block - 1,
                        block,
                        block + 1,
                        3 * block + 5,
                        1 << 20,
                        (1 << 24) + 9,
                    ] {
                        let end = start + len;
                        let Some(p) = ZeroPlan::new(start, len, block, group) else {
                            // No whole block inside: stores cover it all.
                            assert!((start + block - 1) & !(block - 1) >= end & !(block - 1));
                            continue;
                        };
                        assert!(start <= p.first && p.first < p.groups.max(p.first + 1));
                        assert!(p.first <= p.groups && p.groups <= p.last && p.last <= end);
                        assert_eq!(p.first % block, 0);
                        assert_eq!(p.last % block, 0);
                        assert!(p.first - start < block, "head shorter than a block");
                        assert!(end - p.last < block, "tail shorter than a block");
                        assert_eq!((p.groups - p.first) % (block * group), 0);
                        assert!(p.last - p.groups < block * group, "fewer than a group left");
                    }
                }
            }
        }
    }

    #[test]
    fn a_wrapping_range_or_a_bad_block_size_is_left_to_stores() {
        assert_eq!(ZeroPlan::new(u64::MAX - 10, 100, 64, 16), None);
        assert_eq!(ZeroPlan::new(0, 4096, 48, 16), None);
        assert_eq!(ZeroPlan::new(0, 4096, 64, 0), None);
        assert_eq!(
            ZeroPlan::new(0x4000_0010, 0x1000, 64, 16),
            Some(ZeroPlan {
                first: 0x4000_0040,
                groups: 0x4000_0c40,
                last: 0x4000_1000
            })
        );
    }
}
