//! Which pages of a VM's passed-through devices it may map directly, and
//! which must be trapped through the sub-page filter ([`super::subpage`]).
//!
//! Stage 2 maps whole 4 KiB pages. A page is the VM's *outright* only if
//! (1) no `reg` of any device-tree node the VM was not given touches it, and
//! (2) the `reg`s of the VM's own devices cover every byte of it (a gap could
//! hold registers the device tree does not describe). Every other page the
//! VM's devices touch is trapped, and only accesses inside the VM's own
//! windows reach the hardware.
//!
//! Pure logic, no allocation beyond a `Vec`, no hardware: the hypervisor
//! decides with it from the live device tree when it builds a VM, and
//! xtask's config check includes this very file (`#[path]`) to report the
//! same decision at build time. The hypervisor never trusts xtask's report.

extern crate alloc;
use alloc::vec::Vec;

/// The stage-2 granule.
pub const PAGE: u64 = 0x1000;

/// `[start, end)` of an address range, saturating at the top.
fn end_of(r: (u64, u64)) -> u64 {
    r.0.saturating_add(r.1)
}

fn page_down(a: u64) -> u64 {
    a & !(PAGE - 1)
}

fn page_up(a: u64) -> u64 {
    a.checked_next_multiple_of(PAGE).unwrap_or(page_down(u64::MAX))
}

/// The whole pages `r` touches, `[start, end)`; empty for a zero size.
pub fn page_span(r: (u64, u64)) -> (u64, u64) {
    if r.1 == 0 {
        return (page_down(r.0), page_down(r.0));
    }
    (page_down(r.0), page_up(end_of(r)))
}

/// Whether the page at `page` is owned outright by a VM whose devices have
/// the `reg`s `own`, when the nodes it was not given have the `reg`s `others`.
pub fn page_owned(page: u64, own: &[(u64, u64)], others: &[(u64, u64)]) -> bool {
    let p = (page_down(page), PAGE);
    if others.iter().any(|&o| o.1 != 0 && overlaps(o, p)) {
        return false;
    }
    // Walk the page from its start: each step jumps to the end of an own
    // `reg` containing the cursor; a byte no `reg` contains is a gap.
    let (mut at, end) = (p.0, end_of(p));
    while at < end {
        match own
            .iter()
            .filter(|&&r| r.1 != 0 && r.0 <= at && at < end_of(r))
            .map(|&r| end_of(r))
            .max()
        {
            Some(next) => at = next,
            None => return false,
        }
    }
    true
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < end_of(b) && b.0 < end_of(a)
}

/// A run of pages, `[start, end)`, all handled the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub start: u64,
    pub end: u64,
    /// Trapped through the sub-page filter (else mapped directly).
    pub filtered: bool,
}

/// Every page the `own` `reg`s touch, in address order, as maximal runs of
/// mapped or filtered pages. `others` are the `reg`s of every node the VM
/// was not given (other VMs' devices, unassigned devices, the hypervisor's).
pub fn plan(own: &[(u64, u64)], others: &[(u64, u64)]) -> Vec<Run> {
    // The pages touched, merged into disjoint spans.
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for &r in own.iter().filter(|r| r.1 != 0) {
        add(&mut spans, page_span(r));
    }
    // Filtered: pages another node touches, and the pages holding an own
    // `reg`'s unaligned start or end unless own `reg`s fill them. Pages in
    // between are inside one own `reg` and touched by no one else.
    let mut bad: Vec<(u64, u64)> = Vec::new();
    for &o in others.iter().filter(|o| o.1 != 0) {
        let (o0, o1) = page_span(o);
        for &(s0, s1) in &spans {
            if o0 < s1 && s0 < o1 {
                add(&mut bad, (o0.max(s0), o1.min(s1)));
            }
        }
    }
    for &r in own.iter().filter(|r| r.1 != 0) {
        for edge in [r.0, end_of(r).saturating_sub(1)] {
            let p = page_down(edge);
            if !page_owned(p, own, others) {
                add(&mut bad, (p, p.saturating_add(PAGE)));
            }
        }
    }
    let mut runs = Vec::new();
    for (s0, s1) in spans {
        let mut at = s0;
        for &(b0, b1) in bad.iter().filter(|b| b.0 < s1 && s0 < b.1) {
            if at < b0 {
                runs.push(Run {
                    start: at,
                    end: b0,
                    filtered: false,
                });
            }
            runs.push(Run {
                start: b0.max(at),
                end: b1.min(s1),
                filtered: true,
            });
            at = b1.min(s1);
        }
        if at < s1 {
            runs.push(Run {
                start: at,
                end: s1,
                filtered: false,
            });
        }
    }
    runs
}

/// Adds `[a, b)` to `set` (sorted, disjoint ranges that do not touch),
/// joining it with every range it overlaps or touches. (No sort: the sets
/// are small, and a sort would cost the image a few KiB.)
fn add(set: &mut Vec<(u64, u64)>, (mut a, mut b): (u64, u64)) {
    let at = set.partition_point(|r| r.1 < a);
    let mut end = at;
    while let Some(&(c, d)) = set.get(end) {
        if c > b {
            break;
        }
        a = a.min(c);
        b = b.max(d);
        end += 1;
    }
    set.drain(at..end);
    set.insert(at, (a, b));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU virt's 32 virtio-mmio transports, 0x200 apart from 0xa000000.
    fn transport(i: u64) -> (u64, u64) {
        (0xa00_0000 + i * 0x200, 0x200)
    }

    fn all_transports_but(mine: &[u64]) -> Vec<(u64, u64)> {
        (0..32).filter(|i| !mine.contains(i)).map(transport).collect()
    }

    #[test]
    fn a_transport_sharing_its_page_with_another_vms_is_filtered() {
        // linux0 owns a003e00; linux1's a003c00 sits in the same page.
        let runs = plan(&[transport(31)], &all_transports_but(&[31]));
        assert_eq!(
            runs,
            [Run {
                start: 0xa00_3000,
                end: 0xa00_4000,
                filtered: true
            }]
        );
    }

    #[test]
    fn a_sub_page_device_alone_in_its_page_is_still_filtered() {
        // Nothing else in the page, but the 0xe00 bytes around the window
        // are not described: they may hold registers of something else.
        assert!(!page_owned(0x900_0000, &[(0x900_0000, 0x200)], &[]));
        let runs = plan(&[(0x900_0000, 0x200)], &[]);
        assert!(runs.iter().all(|r| r.filtered));
    }

    #[test]
    fn a_page_aligned_device_nobody_else_touches_is_mapped() {
        let runs = plan(
            &[(0x900_0000, 0x2000)],
            &[(0x800_0000, 0x1_0000), (0x900_2000, 0x1000)],
        );
        assert_eq!(
            runs,
            [Run {
                start: 0x900_0000,
                end: 0x900_2000,
                filtered: false
            }]
        );
    }

    #[test]
    fn owning_every_node_of_a_page_maps_it() {
        let mine: Vec<u64> = (24..32).collect();
        let own: Vec<(u64, u64)> = mine.iter().map(|&i| transport(i)).collect();
        let runs = plan(&own, &all_transports_but(&mine));
        assert_eq!(
            runs,
            [Run {
                start: 0xa00_3000,
                end: 0xa00_4000,
                filtered: false
            }]
        );
    }

    #[test]
    fn only_the_shared_pages_of_a_large_device_are_filtered() {
        // 16 KiB from 0x1000_0800: its first and last pages are partial, one
        // middle page is also claimed by a node inside the window.
        let own = [(0x1000_0800, 0x4000)];
        let others = [(0x1000_0000, 0x800), (0x1000_2100, 0x10)];
        assert_eq!(
            plan(&own, &others),
            [
                Run {
                    start: 0x1000_0000,
                    end: 0x1000_1000,
                    filtered: true
                },
                Run {
                    start: 0x1000_1000,
                    end: 0x1000_2000,
                    filtered: false
                },
                Run {
                    start: 0x1000_2000,
                    end: 0x1000_3000,
                    filtered: true
                },
                Run {
                    start: 0x1000_3000,
                    end: 0x1000_4000,
                    filtered: false
                },
                Run {
                    start: 0x1000_4000,
                    end: 0x1000_5000,
                    filtered: true
                },
            ]
        );
    }

    #[test]
    fn page_spans_cover_whole_pages() {
        assert_eq!(page_span(transport(31)), (0xa00_3000, 0xa00_4000));
        assert_eq!(page_span((0x1ff0, 0x20)), (0x1000, 0x3000));
        assert_eq!(page_span((0x1000, 0)), (0x1000, 0x1000));
    }

    #[test]
    fn ranges_added_in_any_order_join_when_they_overlap_or_touch() {
        let mut set = Vec::new();
        for r in [
            (0x5000, 0x6000),
            (0x1000, 0x2000),
            (0x3000, 0x4000),
            (0x2000, 0x3000),
            (0x8000, 0x9000),
        ] {
            add(&mut set, r);
        }
        assert_eq!(set, [(0x1000, 0x4000), (0x5000, 0x6000), (0x8000, 0x9000)]);
        add(&mut set, (0x3800, 0x8800));
        assert_eq!(set, [(0x1000, 0x9000)]);
    }

    #[test]
    fn zero_sized_and_top_of_space_regs_do_not_overflow() {
        assert!(plan(&[(0x1000, 0)], &[]).is_empty());
        let runs = plan(&[(u64::MAX - 0x10, 0x100)], &[]);
        assert!(runs.iter().all(|r| r.filtered && r.start <= r.end));
    }
}
