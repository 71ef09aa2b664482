//! What a VM's RAM scrub must cover: everything but the bytes its images
//! are about to overwrite. Pure range arithmetic, host-tested.

use alloc::vec::Vec;

/// The parts of `[base, base + size)` that none of the `covered` (start,
/// length) ranges overlap, in order.
pub fn uncovered(base: u64, size: u64, covered: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let end = base + size;
    let mut cuts: Vec<(u64, u64)> = covered
        .iter()
        .map(|&(s, l)| (s.max(base), s.saturating_add(l).min(end)))
        .filter(|&(s, e)| s < e)
        .collect();
    // A few images: an insertion sort (no sort routine in the image).
    for i in 1..cuts.len() {
        let mut j = i;
        while j > 0 && cuts.get(j - 1) > cuts.get(j) {
            cuts.swap(j - 1, j);
            j -= 1;
        }
    }
    let mut out = Vec::new();
    let mut at = base;
    for (s, e) in cuts {
        if s > at {
            out.push((at, s - at));
        }
        at = at.max(e);
    }
    if at < end {
        out.push((at, end - at));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_around_images_in_any_order_and_overlapping() {
        let covered = [(0x5000, 0x1000), (0x1000, 0x800), (0x1400, 0x800)];
        assert_eq!(
            uncovered(0x0, 0x8000, &covered),
            [(0x0, 0x1000), (0x1c00, 0x3400), (0x6000, 0x2000)]
        );
    }

    #[test]
    fn images_outside_or_across_the_edges_are_clipped() {
        assert_eq!(
            uncovered(0x1000, 0x1000, &[(0x0, 0x1100), (0x1f00, 0x1000)]),
            [(0x1100, 0xe00)]
        );
        assert_eq!(
            uncovered(0x1000, 0x1000, &[(0x3000, 0x10), (0x0, 0)]),
            [(0x1000, 0x1000)]
        );
        assert!(uncovered(0x1000, 0x1000, &[(0x1000, 0x1000)]).is_empty());
        assert_eq!(
            uncovered(0x1000, 0x1000, &[(u64::MAX - 1, 10)]),
            [(0x1000, 0x1000)]
        );
    }
}
