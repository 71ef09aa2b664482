//! A PCIe host bridge passed through whole (`devices = ["/pcie@10000000"]`):
//! what the VM owns besides the bridge's `reg` (its ECAM) — the MMIO and
//! I/O windows of its `ranges`, the legacy INTx SPIs of its
//! `interrupt-map`, and the stream IDs its functions' DMA carries (its
//! `iommu-map`, through `iommu-map-mask`) — and the guest's copy of the
//! `interrupt-map`, pointing at the virtual GIC. MSIs are not offered: the
//! guest's bridge has no `msi-parent`/`msi-map` (no virtual ITS yet), and
//! no `iommu-map` (the SMMU belongs to the hypervisor).

use crate::dt::{Node, Tree};
use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::ops::{Range, RangeInclusive};

/// The bridge's resources beyond its `reg`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bridge {
    /// CPU physical (base, size) of each `ranges` window.
    pub windows: Vec<(u64, u64)>,
    /// INTx SPIs (INTIDs), without repeats.
    pub spis: Vec<u32>,
    /// Stream IDs on the SMMU with phandle `smmu` (the `iommu-map` target).
    pub streams: Vec<Range<u32>>,
}

fn be_cells(value: &[u8]) -> Vec<u32> {
    value
        .chunks_exact(4)
        .filter_map(|c| c.try_into().ok().map(u32::from_be_bytes))
        .collect()
}

fn prop_cells(node: &Node, name: &str) -> Option<Vec<u32>> {
    node.property(name).map(|p| be_cells(p.value))
}

fn number(cells: &[u32]) -> u64 {
    cells.iter().fold(0, |acc, &c| (acc << 32) | u64::from(c))
}

/// Whether the node at `path` is a PCI host bridge.
pub fn is_bridge(dtb: &Tree, path: &str) -> bool {
    crate::platform::node_at(dtb, path)
        .and_then(|n| n.property("device_type"))
        .is_some_and(|p| p.value == b"pci\0")
}

/// The resources of the bridge at `path`, or `None` if it is no bridge.
/// Addresses are taken as the root's (QEMU `virt` puts its bridge there).
pub fn bridge(dtb: &Tree, path: &str, smmu: Option<u32>) -> Option<Bridge> {
    if !is_bridge(dtb, path) {
        return None;
    }
    let node = crate::platform::node_at(dtb, path)?;
    let root = dtb.root();
    let parent_ac = root
        .property("#address-cells")
        .and_then(|p| p.as_usize())
        .unwrap_or(2);
    let sc = node
        .property("#size-cells")
        .and_then(|p| p.as_usize())
        .unwrap_or(2);
    let windows = prop_cells(&node, "ranges")
        .map(|c| windows(&c, parent_ac, sc))
        .unwrap_or_default();
    let spis = prop_cells(&node, "interrupt-map")
        .map(|c| intx_spis(dtb, &c))
        .unwrap_or_default();
    let bus = prop_cells(&node, "bus-range").unwrap_or_else(|| alloc::vec![0, 0xff]);
    let rids = (bus.first().copied().unwrap_or(0) << 8)..=((bus.get(1).copied().unwrap_or(0xff) << 8) | 0xff);
    let mask = prop_cells(&node, "iommu-map-mask")
        .and_then(|c| c.first().copied())
        .unwrap_or(u32::MAX);
    let streams = match (smmu, prop_cells(&node, "iommu-map")) {
        (Some(smmu), Some(map)) => stream_ranges(&map, mask, rids, smmu),
        _ => Vec::new(),
    };
    Some(Bridge {
        windows,
        spis,
        streams,
    })
}

/// `ranges` entries: a 3-cell PCI address, a `parent_ac`-cell CPU address,
/// an `sc`-cell size.
pub fn windows(ranges: &[u32], parent_ac: usize, sc: usize) -> Vec<(u64, u64)> {
    ranges
        .chunks_exact(3 + parent_ac + sc)
        .filter_map(|e| {
            let (cpu, size) = e.get(3..)?.split_at_checked(parent_ac)?;
            Some((number(cpu), number(size)))
        })
        .filter(|w| w.1 != 0)
        .collect()
}

/// The GIC SPIs an `interrupt-map` routes to (entries: 3-cell unit
/// address, 1-cell pin, parent phandle, the parent's `#address-cells`
/// unit address, its `#interrupt-cells` specifier). Stops at an entry
/// whose parent it cannot size.
pub fn intx_spis(dtb: &Tree, map: &[u32]) -> Vec<u32> {
    let mut out = BTreeSet::new();
    let mut rest = map;
    while let Some(&phandle) = rest.get(4) {
        let Some((ac, ic)) = parent_cells(dtb, phandle) else {
            break;
        };
        let Some(spec) = rest.get(5 + ac..5 + ac + ic) else {
            break;
        };
        if let [0, spi, _] = *spec {
            out.insert(spi + 32);
        }
        rest = rest.get(5 + ac + ic..).unwrap_or_default();
    }
    out.into_iter().collect()
}

fn parent_cells(dtb: &Tree, phandle: u32) -> Option<(usize, usize)> {
    let p = dtb.find_phandle(phandle)?;
    let ac = p
        .property("#address-cells")
        .and_then(|v| v.as_usize())
        .unwrap_or(0);
    let ic = p.property("#interrupt-cells").and_then(|v| v.as_usize())?;
    Some((ac, ic))
}

/// The guest's `interrupt-map`: each entry's parent becomes the virtual GIC
/// (`gic_phandle`, two address cells, as the guest's GIC node says), its
/// specifier kept. `None` if an entry points at anything but a 3-cell GIC.
pub fn guest_interrupt_map(dtb: &Tree, map: &[u32], gic_phandle: u32) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    let mut rest = map;
    while !rest.is_empty() {
        let head = rest.get(..5)?;
        let (ac, ic) = parent_cells(dtb, *head.get(4)?)?;
        if ic != 3 {
            return None;
        }
        let spec = rest.get(5 + ac..5 + ac + 3)?;
        out.extend_from_slice(head.get(..4)?);
        out.extend_from_slice(&[gic_phandle, 0, 0]);
        out.extend_from_slice(spec);
        rest = rest.get(5 + ac + 3..)?;
    }
    Some(out)
}

/// The most ranges of requester IDs a mask may split the bus range into
/// before the rest is left out (a mask clearing low bits in the middle makes
/// one range per kept ID; `0xfff8` over 256 buses is 8,192). IDs left out
/// carry no stream: their DMA stays aborting.
const MAX_ID_RANGES: usize = 1 << 13;

/// The stream IDs requester IDs `rids` carry on the IOMMU `smmu`, by the
/// `iommu-map` binding: a requester ID is masked with `mask`, then the
/// first entry (rid-base, phandle, iommu-base, length) whose
/// `[rid-base, rid-base + length)` holds it maps it to
/// `iommu-base + (id - rid-base)`. IDs no entry maps, or that an entry maps
/// to another IOMMU, carry no stream of `smmu`. Coalesced, ascending.
///
/// Range arithmetic throughout: the masked IDs as ranges, each entry's
/// share of them (what no earlier entry holds), shifted to stream IDs. A
/// stream ID past `u32::MAX - 1` (where the mapping wraps) is dropped.
pub fn stream_ranges(map: &[u32], mask: u32, rids: RangeInclusive<u32>, smmu: u32) -> Vec<Range<u32>> {
    let ids = masked_ids(
        u64::from(*rids.start())..u64::from(*rids.end()) + 1,
        u64::from(mask),
    );
    // Each entry's part of the ID space: its window less every earlier one.
    let mut claims: Vec<(Range<u64>, u64)> = Vec::new();
    let mut taken: Vec<Range<u64>> = Vec::new();
    for e in map.chunks_exact(4) {
        let &[base, phandle, sid, len] = e else { continue };
        let window = u64::from(base)..u64::from(base) + u64::from(len);
        let mut pieces = alloc::vec![window.clone()];
        for t in &taken {
            pieces = pieces.into_iter().flat_map(|p| subtract(p, t)).collect();
        }
        if phandle == smmu {
            // sid - base, modulo 2^32 as the binding's u32 arithmetic.
            let shift = u64::from(sid.wrapping_sub(base));
            claims.extend(pieces.into_iter().map(|p| (p, shift)));
        }
        if !window.is_empty() {
            taken.push(window);
        }
    }
    let mut sids: Vec<Range<u64>> = Vec::new();
    for id in &ids {
        for (claim, shift) in &claims {
            let lo = id.start.max(claim.start);
            let hi = id.end.min(claim.end);
            if lo >= hi {
                continue;
            }
            // Shifted modulo 2^32: a range that wraps splits in two.
            let (lo, hi) = ((lo + shift) & 0xffff_ffff, (lo + shift) % (1 << 32) + (hi - lo));
            if hi > 1 << 32 {
                sids.push(lo..1 << 32);
                sids.push(0..hi - (1 << 32));
            } else {
                sids.push(lo..hi);
            }
        }
    }
    coalesce(&mut sids)
        .into_iter()
        .filter_map(|r| {
            let end = u32::try_from(r.end).unwrap_or(u32::MAX);
            let start = u32::try_from(r.start).ok()?;
            (start < end).then_some(start..end)
        })
        .collect()
}

/// `a` less `b`: nothing, one or two ranges.
fn subtract(a: Range<u64>, b: &Range<u64>) -> impl Iterator<Item = Range<u64>> {
    let left = a.start..a.end.min(b.start);
    let right = a.start.max(b.end)..a.end;
    [left, right].into_iter().filter(|r| !r.is_empty())
}

/// Sorts and merges overlapping or touching ranges.
fn coalesce(v: &mut [Range<u64>]) -> Vec<Range<u64>> {
    v.sort_unstable_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in v.iter() {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r.clone()),
        }
    }
    out
}

/// `{id & mask : id in ids}` as coalesced ascending ranges, without
/// visiting each ID: `ids` splits into aligned power-of-two blocks; a block
/// `[p, p + 2^k)` masks to `(p & mask) + s + [0, 2^t)` for each submask `s`
/// of the block's mask bits above its `t` lowest contiguous ones.
fn masked_ids(ids: Range<u64>, mask: u64) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    let mut at = ids.start;
    'blocks: while at < ids.end {
        let align = if at == 0 { 63 } else { at.trailing_zeros() };
        let fit = 63 - (ids.end - at).leading_zeros();
        let k = align.min(fit);
        let low = mask & ((1 << k) - 1);
        let t = low.trailing_ones();
        let high = low & !((1u64 << t) - 1);
        let base = at & mask;
        let mut s = 0u64;
        loop {
            if out.len() >= MAX_ID_RANGES {
                break 'blocks;
            }
            out.push(base + s..base + s + (1 << t));
            if s == high {
                break;
            }
            // The next submask of `high`, ascending.
            s = s.wrapping_sub(high) & high;
        }
        at += 1 << k;
    }
    coalesce(&mut out)
}

#[cfg(test)]
// Expected stream lists are written as literals, one range included.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn with_dtb(f: impl FnOnce(&Tree)) {
        let path = format!("{}/tests/dtbs/qemu-virt-smmuv3.dtb", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(path).unwrap();
        f(&Tree::new(&bytes).unwrap());
    }

    #[test]
    fn qemu_virts_bridge_windows_intx_and_streams() {
        with_dtb(|dtb| {
            let smmu = crate::drivers::smmuv3::probe::find(dtb).unwrap().phandle;
            let b = bridge(dtb, "/pcie@10000000", smmu).unwrap();
            assert_eq!(
                b.windows,
                [
                    (0x3eff_0000, 0x1_0000),
                    (0x1000_0000, 0x2eff_0000),
                    (0x80_0000_0000, 0x80_0000_0000)
                ]
            );
            assert_eq!(b.spis, [35, 36, 37, 38]);
            assert_eq!(b.streams, [0..0x1_0000]);
            // Another IOMMU's phandle: no stream of ours.
            assert!(bridge(dtb, "/pcie@10000000", Some(0xdead))
                .unwrap()
                .streams
                .is_empty());
            assert_eq!(bridge(dtb, "/pl031@9010000", smmu), None);
        });
    }

    #[test]
    fn the_guest_interrupt_map_points_at_the_virtual_gic() {
        with_dtb(|dtb| {
            let node = crate::platform::node_at(dtb, "/pcie@10000000").unwrap();
            let map = prop_cells(&node, "interrupt-map").unwrap();
            let g = guest_interrupt_map(dtb, &map, 1).unwrap();
            assert_eq!(g.len(), map.len(), "QEMU's GIC has two address cells too");
            assert_eq!(&g[..10], &[0, 0, 0, 1, 1, 0, 0, 0, 3, 4]);
            assert!(g.chunks_exact(10).all(|e| e[4] == 1));
            // A map whose parent has no #interrupt-cells is refused.
            assert_eq!(
                guest_interrupt_map(dtb, &[0, 0, 0, 1, 0xdead, 0, 0, 0, 3, 4], 1),
                None
            );
            assert_eq!(guest_interrupt_map(dtb, &map[..7], 1), None);
        });
    }

    /// The guest's copy of the bridge: its windows and interrupt-map (to
    /// the virtual GIC), no MSI controller and no IOMMU.
    #[test]
    fn the_guest_dtb_bridge_has_intx_but_no_msi_and_no_iommu() {
        use crate::vm::dtb::{generate, GuestDtbSpec, GuestGic, GuestRegion, GIC_PHANDLE};
        with_dtb(|host| {
            let spec = GuestDtbSpec {
                name: "pci",
                vcpus: 1,
                memory: &[GuestRegion::new(0x4000_0000, 0x1000_0000)],
                gic: GuestGic::V3 {
                    dist: GuestRegion::new(0x0800_0000, 0x1_0000),
                    redist: GuestRegion::new(0x080a_0000, 0x2_0000),
                },
                timer_ppis: [29, 30, 27, 26],
                psci_method: "hvc",
                console: None,
                bootargs: "",
                initrd: None,
                passthrough: &["/pcie@10000000"],
                host: Some(host),
                seed: None,
            };
            let blob = generate(&spec).unwrap();
            let g = Tree::new(&blob).unwrap();
            let node = g.node_at("/pcie@10000000").unwrap();
            for gone in ["msi-map", "msi-parent", "iommu-map", "iommu-map-mask"] {
                assert!(node.property(gone).is_none(), "{gone} in the guest's bridge");
            }
            let host_node = crate::platform::node_at(host, "/pcie@10000000").unwrap();
            for same in ["ranges", "interrupt-map-mask", "bus-range", "reg"] {
                assert_eq!(
                    node.property(same).unwrap().value,
                    host_node.property(same).unwrap().value,
                    "{same}"
                );
            }
            let map = prop_cells(&node, "interrupt-map").unwrap();
            assert_eq!(map.len(), 16 * 10);
            assert!(map.chunks_exact(10).all(|e| e[4] == GIC_PHANDLE));
            // The phandle is the guest GIC's.
            let gic = g.find_phandle(GIC_PHANDLE).unwrap();
            assert!(gic.property("interrupt-controller").is_some());
        });
    }

    #[test]
    fn stream_ids_follow_mask_and_length() {
        const SMMU: u32 = 7;
        // Identity over the whole bus range.
        assert_eq!(
            stream_ranges(&[0, SMMU, 0, 0x1_0000], u32::MAX, 0..=0xffff, SMMU),
            [0..0x1_0000]
        );
        // An offset and a length shorter than the bus range: bus 0 only.
        assert_eq!(
            stream_ranges(&[0, SMMU, 0x100, 0x100], u32::MAX, 0..=0xffff, SMMU),
            [0x100..0x200]
        );
        // A mask that drops the function number: one stream per device.
        let r = stream_ranges(&[0, SMMU, 0, 0x100], 0xf8, 0..=0xff, SMMU);
        assert_eq!(r.len(), 32);
        assert_eq!((r[0].clone(), r[1].clone()), (0..1, 8..9));
        // Two entries, the second for another IOMMU: only the first counts;
        // the first entry that holds an ID wins.
        let map = [0, SMMU, 0x40, 0x10, 0x10, 9, 0, 0x10];
        assert_eq!(stream_ranges(&map, u32::MAX, 0..=0x1f, SMMU), [0x40..0x50]);
        let map = [0, SMMU, 0x40, 0x10, 0x8, SMMU, 0x80, 0x10];
        assert_eq!(
            stream_ranges(&map, u32::MAX, 0..=0x1f, SMMU),
            [0x40..0x50, 0x88..0x90]
        );
        // Bus range 1..=1 only.
        assert_eq!(
            stream_ranges(&[0, SMMU, 0, 0x1_0000], u32::MAX, 0x100..=0x1ff, SMMU),
            [0x100..0x200]
        );
    }

    /// The binding read literally, one requester ID at a time.
    fn stream_ranges_by_id(map: &[u32], mask: u32, rids: RangeInclusive<u32>, smmu: u32) -> Vec<Range<u32>> {
        let entries: Vec<&[u32]> = map.chunks_exact(4).collect();
        let masked: BTreeSet<u32> = rids.map(|rid| rid & mask).collect();
        let mut sids = BTreeSet::new();
        for id in masked {
            let hit = entries
                .iter()
                .find(|e| id >= e[0] && u64::from(id) < u64::from(e[0]) + u64::from(e[3]));
            if let Some(e) = hit.filter(|e| e[1] == smmu) {
                sids.insert(e[2].wrapping_add(id - e[0]));
            }
        }
        let mut out: Vec<Range<u32>> = Vec::new();
        for sid in sids {
            match out.last_mut() {
                Some(r) if r.end == sid => r.end = sid + 1,
                _ => out.push(sid..sid + 1),
            }
        }
        out
    }

    /// Overlapping entries (the first wins, also when it is another
    /// IOMMU's), entries mapping onto the same stream IDs, and masks that
    /// clear bits in the middle of the requester ID.
    #[test]
    fn stream_ids_of_overlapping_entries_under_masks() {
        const SMMU: u32 = 7;
        // 0x00..0x20 -> 0x100.., 0x10..0x30 -> 0x200.. (its first half is
        // the first entry's), 0x18..0x28 another IOMMU's (all taken before),
        // 0x30..0x38 -> 0x110.. (overlaps the first entry's streams).
        let map = [
            0, SMMU, 0x100, 0x20, 0x10, SMMU, 0x200, 0x20, 0x18, 9, 0, 0x10, 0x30, SMMU, 0x110, 0x8,
        ];
        assert_eq!(
            stream_ranges(&map, u32::MAX, 0..=0xff, SMMU),
            [0x100..0x120, 0x210..0x220]
        );
        // Bit 3 masked away: IDs 0..8, 0x10..0x18, 0x20..0x28, 0x30..0x38.
        assert_eq!(
            stream_ranges(&map, !0x8, 0..=0xff, SMMU),
            [0x100..0x108, 0x110..0x118, 0x210..0x218]
        );
        // The bus number masked away: every bus's IDs land on bus 0.
        assert_eq!(
            stream_ranges(&map, 0xff, 0x100..=0x3ff, SMMU),
            [0x100..0x120, 0x210..0x220]
        );
        // Another IOMMU's entry first: nothing of ours there.
        let map = [0, 9, 0, 0x100, 0, SMMU, 0, 0x1_0000];
        assert_eq!(stream_ranges(&map, u32::MAX, 0..=0xffff, SMMU), [0x100..0x1_0000]);
        for (map, mask, rids) in [
            (
                &[0, SMMU, 0x100, 0x20, 0x10, SMMU, 0x200, 0x20, 0x18, 9, 0, 0x10][..],
                0x7ff6,
                0..=0xffff,
            ),
            (&[0, SMMU, 0, 0x1_0000][..], 0xfff8, 0..=0xffff),
            (&[0x300, SMMU, 0xffff_ff00, 0x200][..], 0x5a5, 0x100..=0x4ff),
        ] {
            assert_eq!(
                stream_ranges(map, mask, rids.clone(), SMMU),
                stream_ranges_by_id(map, mask, rids, SMMU),
                "{map:x?} mask {mask:#x}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 256,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_0015),
            failure_persistence: None,
            ..Default::default()
        })]
        /// Range arithmetic agrees with the ID-by-ID reading for random maps
        /// (small windows, overlapping, two IOMMUs), masks and bus ranges.
        #[test]
        fn stream_ranges_match_the_binding_id_by_id(
            entries in proptest::collection::vec((0u32..0x600, proptest::bool::ANY, 0u32..0x800, 0u32..0x300), 0..5),
            mask in proptest::prop_oneof![proptest::strategy::Just(u32::MAX), 0u32..0x1000, proptest::num::u32::ANY],
            bus in (0u32..6, 0u32..3),
        ) {
            const SMMU: u32 = 7;
            let map: Vec<u32> = entries
                .iter()
                .flat_map(|&(base, ours, sid, len)| [base, if ours { SMMU } else { 9 }, sid, len])
                .collect();
            let rids = (bus.0 << 8)..=(((bus.0 + bus.1) << 8) | 0xff);
            proptest::prop_assert_eq!(
                stream_ranges(&map, mask, rids.clone(), SMMU),
                stream_ranges_by_id(&map, mask, rids, SMMU)
            );
        }
    }
}
