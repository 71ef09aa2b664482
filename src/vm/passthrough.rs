//! Which of a VM's passed-through device pages are mapped and which are
//! trapped through the sub-page filter, decided from the board's DTB with
//! the rule of [`crate::vdev::page_share`]. Pure (no hardware), so the
//! decision the hypervisor acts on is tested on the host against real DTBs.

use crate::dt::Tree;
use crate::platform::{ranges, Platform};
use crate::vdev::page_share::{self, Run};
use alloc::vec::Vec;

/// What no passed-through device may overlap, whatever the config says:
/// the hypervisor's own devices (every GIC frame, and the console unless
/// the VM is given it) and RAM (a "device" there would hand the VM memory
/// the frame allocator gives to others, or the hypervisor itself).
pub fn forbidden(p: &Platform, console_passthrough: bool) -> Vec<(&'static str, u64, u64)> {
    let g = &p.gic;
    let gic = [Some(g.dist), g.cpu_if, g.hyp_if, g.vcpu_if]
        .into_iter()
        .flatten()
        .chain(g.redists.iter().copied())
        .map(|r| ("the GIC", r.base.0, r.size));
    let console = (!console_passthrough).then_some((
        "the hypervisor's console",
        p.console.regs.base.0,
        p.console.regs.size,
    ));
    let ram = p.ram.iter().map(|r| ("RAM", r.base.0, r.size));
    gic.chain(console).chain(ram).collect()
}

/// The first of `regs` that overlaps one of `forbidden`, and what it hits.
pub fn clash(
    regs: &[(u64, u64)],
    forbidden: &[(&'static str, u64, u64)],
) -> Option<((u64, u64), &'static str)> {
    let end = |b: u64, s: u64| b.saturating_add(s);
    regs.iter().filter(|r| r.1 != 0).find_map(|&(b, s)| {
        forbidden
            .iter()
            .find(|f| b < end(f.1, f.2) && f.1 < end(b, s))
            .map(|f| ((b, s), f.0))
    })
}

/// The `reg`s (non-empty, as CPU physical addresses: translated through the
/// buses' `ranges` like the VM's own) of every node of `dtb` except those at
/// the paths `own` (the VM's devices): other VMs', unassigned ones, disabled
/// ones, the hypervisor's, buses and controllers alike.
pub fn foreign_regs(dtb: &Tree, own: &[&str]) -> Vec<(u64, u64)> {
    let own: Vec<usize> = own
        .iter()
        .filter_map(|p| dtb.node_at(p))
        .map(|n| n.index())
        .collect();
    let mut out = Vec::new();
    // Deeper than any real board: what lies below cannot be translated.
    dtb.with_ancestors(ranges::MAX_DEPTH, |node, ancestors| {
        if !own.contains(&node.index()) {
            out.extend(
                ranges::regs(node, ancestors)
                    .filter(|r| r.size != 0)
                    .map(|r| (r.base.0, r.size)),
            );
        }
    });
    out
}

/// The pages the devices at `paths` (whose `reg`s are `regs`) touch, as runs
/// mapped directly or filtered. Nothing to decide (and no walk over the
/// whole tree) for a VM without devices.
pub fn plan(dtb: &Tree, paths: &[&str], regs: &[(u64, u64)]) -> Vec<Run> {
    if regs.is_empty() {
        return Vec::new();
    }
    page_share::plan(regs, &foreign_regs(dtb, paths))
}

/// When a VM's RAM is scrubbed (src/vm/lazy.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScrubPlan {
    /// Block by block at first touch: nothing of the VM masters the bus.
    Lazy,
    /// At first touch, and all of it at the first trapped access that
    /// reaches one of its bus-mastering devices (each reachable only through
    /// the sub-page filter), before that access does.
    BeforeDeviceAccess,
    /// All of it before the VM enters.
    Eager,
}

/// The plan for a VM that asks for its scrub at boot (`boot`), accepts
/// untranslated DMA (`dma_unrestricted`), whose possibly bus-mastering
/// devices have the `reg`s `dma_regs` and whose pages are laid out as
/// `runs`; `bridge`: one of them is a PCIe host bridge (its BARs and bus
/// mastering are not behind the filter). A bus master with a single page
/// mapped directly could be driven without a trap: eager.
pub fn scrub_plan(
    boot: bool,
    dma_unrestricted: bool,
    dma_regs: &[(u64, u64)],
    bridge: bool,
    runs: &[Run],
) -> ScrubPlan {
    let regs: Vec<(u64, u64)> = dma_regs.iter().copied().filter(|r| r.1 != 0).collect();
    if boot || bridge {
        return ScrubPlan::Eager;
    }
    if regs.is_empty() {
        return if dma_unrestricted {
            ScrubPlan::Eager
        } else {
            ScrubPlan::Lazy
        };
    }
    let overlap = |(b, s): (u64, u64), r: &Run| {
        let (lo, hi) = (b.max(r.start), b.saturating_add(s).min(r.end));
        hi.saturating_sub(lo)
    };
    // Runs are disjoint: a reg is wholly trapped if the filtered ones cover
    // all its bytes.
    let trapped = regs.iter().all(|&reg| {
        runs.iter()
            .filter(|r| r.filtered)
            .map(|r| overlap(reg, r))
            .sum::<u64>()
            == reg.1
    });
    if trapped {
        ScrubPlan::BeforeDeviceAccess
    } else {
        ScrubPlan::Eager
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform;

    fn with_dtb(f: impl FnOnce(&Tree)) {
        let path = format!(
            "{}/tests/dtbs/qemu-virt-gicv3-smp4.dtb",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(path).unwrap();
        f(&Tree::new(&bytes).unwrap());
    }

    fn regs(dtb: &Tree, paths: &[&str]) -> Vec<(u64, u64)> {
        paths
            .iter()
            .flat_map(|p| platform::device(dtb, p).unwrap().regs)
            .map(|r| (r.base.0, r.size))
            .collect()
    }

    #[test]
    fn a_vm_whose_bus_masters_are_all_trapped_is_scrubbed_at_their_first_access() {
        with_dtb(|dtb| {
            // The bench VM: a mapped RTC (never masters), a filtered transport.
            let paths = ["/pl031@9010000", "/virtio_mmio@a003e00"];
            let runs = plan(dtb, &paths, &regs(dtb, &paths));
            let virtio = regs(dtb, &["/virtio_mmio@a003e00"]);
            assert_eq!(
                scrub_plan(false, true, &virtio, false, &runs),
                ScrubPlan::BeforeDeviceAccess
            );
            // scrub = "boot", or a PCIe bridge among them: eager.
            assert_eq!(scrub_plan(true, true, &virtio, false, &runs), ScrubPlan::Eager);
            assert_eq!(scrub_plan(false, true, &virtio, true, &runs), ScrubPlan::Eager);
            // No bus master: lazy, unless the config accepts untranslated DMA.
            assert_eq!(scrub_plan(false, false, &[], false, &runs), ScrubPlan::Lazy);
            assert_eq!(scrub_plan(false, true, &[], false, &runs), ScrubPlan::Eager);
            // A whole page of transports is mapped: drivable without a trap.
            let page: Vec<alloc::string::String> = (0..8)
                .map(|i| alloc::format!("/virtio_mmio@{:x}", 0xa00_2000 + i * 0x200))
                .collect();
            let page: Vec<&str> = page.iter().map(|s| s.as_str()).collect();
            let mapped = regs(dtb, &page);
            let runs = plan(dtb, &page, &mapped);
            assert_eq!(scrub_plan(false, true, &mapped, false, &runs), ScrubPlan::Eager);
            // A bus master half in a filtered run, half mapped: eager.
            let half = [
                Run {
                    start: 0x1000,
                    end: 0x2000,
                    filtered: true,
                },
                Run {
                    start: 0x2000,
                    end: 0x3000,
                    filtered: false,
                },
            ];
            assert_eq!(
                scrub_plan(false, true, &[(0x1800, 0x1000)], false, &half),
                ScrubPlan::Eager
            );
            assert_eq!(
                scrub_plan(false, true, &[(0x1800, 0x800)], false, &half),
                ScrubPlan::BeforeDeviceAccess
            );
        });
    }

    #[test]
    fn the_demos_old_transports_are_filtered_in_the_live_tree() {
        with_dtb(|dtb| {
            for own in ["/virtio_mmio@a003e00", "/virtio_mmio@a003c00"] {
                let foreign = foreign_regs(dtb, &[own]);
                let mine = regs(dtb, &[own]);
                assert!(!foreign.contains(&mine[0]), "{own} counted as foreign");
                assert!(foreign.contains(&(0xa00_3000, 0x200)));
                let runs = plan(dtb, &[own], &mine);
                assert_eq!(
                    runs,
                    [Run {
                        start: 0xa00_3000,
                        end: 0xa00_4000,
                        filtered: true
                    }]
                );
            }
        });
    }

    #[test]
    fn a_whole_page_of_transports_is_mapped_in_the_live_tree() {
        with_dtb(|dtb| {
            let paths: Vec<alloc::string::String> = (0..8)
                .map(|i| alloc::format!("/virtio_mmio@{:x}", 0xa00_2000 + i * 0x200))
                .collect();
            let paths: Vec<&str> = paths.iter().map(|s| s.as_str()).collect();
            let runs = plan(dtb, &paths, &regs(dtb, &paths));
            assert_eq!(
                runs,
                [Run {
                    start: 0xa00_2000,
                    end: 0xa00_3000,
                    filtered: false
                }]
            );
        });
    }

    #[test]
    fn the_gic_the_console_and_ram_are_never_passed_through() {
        let path = format!(
            "{}/tests/dtbs/qemu-virt-gicv2-smp4.dtb",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut bytes = std::fs::read(path).unwrap();
        platform::nops::strip_nops(&mut bytes).unwrap();
        let dtb = Tree::new(&bytes).unwrap();
        let p = platform::discover(&dtb).unwrap();
        let f = forbidden(&p, false);
        // GICv2's virtual CPU interface, the hypervisor's PL011, RAM.
        assert_eq!(clash(&[(0x804_0000, 0x2000)], &f).map(|c| c.1), Some("the GIC"));
        assert_eq!(
            clash(&[(0x900_0000, 0x1000)], &f).map(|c| c.1),
            Some("the hypervisor's console")
        );
        assert_eq!(clash(&[(0x4800_0000, 0x1000)], &f).map(|c| c.1), Some("RAM"));
        assert_eq!(
            clash(&regs(&dtb, &["/virtio_mmio@a003e00", "/pl031@9010000"]), &f),
            None
        );
        // A VM given the console may have it.
        assert_eq!(clash(&[(0x900_0000, 0x1000)], &forbidden(&p, true)), None);
    }

    #[test]
    fn the_page_aligned_rtc_is_mapped_and_no_devices_means_no_plan() {
        with_dtb(|dtb| {
            let rtc = ["/pl031@9010000"];
            let runs = plan(dtb, &rtc, &regs(dtb, &rtc));
            assert_eq!(
                runs,
                [Run {
                    start: 0x901_0000,
                    end: 0x901_1000,
                    filtered: false
                }]
            );
            assert!(plan(dtb, &[], &[]).is_empty());
        });
    }

    /// A bus that moves its children (Raspberry Pi 4 style `ranges`): the
    /// neighbour's `reg` is translated like the VM's own, so the shared page
    /// is still seen as shared (untranslated, it would lie 0x8000_0000 away
    /// and the page would be mapped whole).
    #[test]
    fn foreign_regs_are_translated_through_bus_ranges() {
        let mut w = vm_fdt::FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 1).unwrap();
        let soc = w.begin_node("soc").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 1).unwrap();
        w.property_array_u32("ranges", &[0x7e00_0000, 0, 0xfe00_0000, 0x0100_0000])
            .unwrap();
        for (name, at) in [("a@7e201000", 0x7e20_1000u32), ("b@7e201200", 0x7e20_1200)] {
            let n = w.begin_node(name).unwrap();
            w.property_array_u32("reg", &[at, 0x200]).unwrap();
            w.end_node(n).unwrap();
        }
        w.end_node(soc).unwrap();
        w.end_node(root).unwrap();
        let blob = w.finish().unwrap();
        let dtb = Tree::new(&blob).unwrap();
        let own = "/soc/a@7e201000";
        let foreign = foreign_regs(&dtb, &[own]);
        assert_eq!(foreign, [(0xfe20_1200, 0x200)]);
        let mine = regs(&dtb, &[own]);
        assert_eq!(mine, [(0xfe20_1000, 0x200)]);
        assert_eq!(
            plan(&dtb, &[own], &mine),
            [Run {
                start: 0xfe20_1000,
                end: 0xfe20_2000,
                filtered: true
            }]
        );
    }
}
