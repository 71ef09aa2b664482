//! Which passed-through devices share a 4 KiB page with anything their VM
//! was not given, and so will be trapped through the hypervisor's sub-page
//! filter instead of mapped: one line per device for the build output, and
//! a warning for a device whose every register access then costs an exit.
//!
//! The rule itself is the hypervisor's own `src/vdev/page_share.rs`,
//! included here, so the report and what the hypervisor does at boot (from
//! the live DTB) cannot drift apart.

#[path = "../../src/vdev/page_share.rs"]
mod page_share;

use super::Board;
use std::collections::HashMap;

/// A board node with MMIO `reg`s, by its path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub path: String,
    pub regs: Vec<(u64, u64)>,
    pub compatible: Vec<String>,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageNote {
    pub vm: String,
    pub device: String,
    /// Trapped through the sub-page filter (else mapped directly).
    pub filtered: bool,
    pub text: String,
    /// Set for a filtered device that will pay one exit per register access.
    pub warning: Option<String>,
}

/// Why a device would be slow behind the filter, if it is one that is
/// accessed on every I/O (a queue notify register, a NIC or disk controller).
pub fn hot_device(node: &Node) -> Option<&'static str> {
    let name = node.path.rsplit('/').next().unwrap_or("");
    let compatible = |s: &str| node.compatible.iter().any(|c| c.contains(s));
    if compatible("virtio,mmio") || name.starts_with("virtio") {
        Some("a virtio-mmio transport (queue notify and interrupt acknowledge registers)")
    } else if name.starts_with("ethernet") || compatible("ethernet") || compatible("gem") {
        Some("a network controller")
    } else if ["mmc", "sdhci", "sata", "ahci", "nvme", "ufs"]
        .iter()
        .any(|p| name.starts_with(p) || compatible(p))
    {
        Some("a block-device controller")
    } else if name.starts_with("usb") || compatible("xhci") || compatible("ehci") || compatible("dwc") {
        Some("a USB controller")
    } else {
        None
    }
}

/// The report for `vms`: (VM name, device paths it is given, including a
/// passed-through console).
pub fn report(board: &Board, vms: &[(String, Vec<String>)]) -> Vec<PageNote> {
    let owner: HashMap<&str, &str> = vms
        .iter()
        .flat_map(|(vm, devs)| devs.iter().map(move |d| (d.as_str(), vm.as_str())))
        .collect();
    let node = |path: &str| board.nodes.iter().find(|n| n.path == path);
    let mut out = Vec::new();
    for (vm, devs) in vms {
        let mine = |n: &Node| devs.contains(&n.path);
        let own: Vec<(u64, u64)> = board
            .nodes
            .iter()
            .filter(|n| mine(n))
            .flat_map(|n| n.regs.clone())
            .collect();
        let others: Vec<(u64, u64)> = board
            .nodes
            .iter()
            .filter(|n| !mine(n))
            .flat_map(|n| n.regs.clone())
            .collect();
        let runs = page_share::plan(&own, &others);
        for d in devs {
            let Some(dev) = node(d) else { continue };
            let spans: Vec<(u64, u64)> = dev.regs.iter().map(|&r| page_share::page_span(r)).collect();
            let touches = |(s, e): (u64, u64)| spans.iter().any(|&(a, b)| a < e && s < b);
            let filtered: Vec<u64> = runs
                .iter()
                .filter(|r| r.filtered && touches((r.start, r.end)))
                .flat_map(|r| (r.start..r.end).step_by(page_share::PAGE as usize))
                .filter(|&p| touches((p, p + page_share::PAGE)))
                .collect();
            if filtered.is_empty() {
                out.push(PageNote {
                    vm: vm.clone(),
                    device: d.clone(),
                    filtered: false,
                    text: format!("vm {vm}: {d} owns its page(s) {}: mapped directly", pages(&spans)),
                    warning: None,
                });
                continue;
            }
            let in_filtered = |r: (u64, u64)| {
                let (a, b) = page_share::page_span(r);
                filtered.iter().any(|&p| a <= p && p < b)
            };
            // Other VMs' devices first: they are what the filter protects.
            let mut sharers: Vec<(u8, String)> = board
                .nodes
                .iter()
                .filter(|n| n.path != *d && n.regs.iter().any(|&r| in_filtered(r)))
                .map(|n| match owner.get(n.path.as_str()) {
                    Some(o) if *o == vm.as_str() => (1, format!("{} (this VM)", n.path)),
                    Some(o) => (0, format!("{} (vm {o})", n.path)),
                    None if board.console.as_deref() == Some(n.path.as_str()) => {
                        (2, format!("{} (the hypervisor's console)", n.path))
                    }
                    None => (3, format!("{} (unassigned)", n.path)),
                })
                .collect();
            sharers.sort_by_key(|s| s.0);
            let sharers: Vec<String> = sharers.into_iter().map(|s| s.1).collect();
            let at = match filtered.as_slice() {
                [p] => format!("page {p:#x}"),
                many => format!(
                    "pages {}",
                    many.iter()
                        .map(|p| format!("{p:#x}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let why = if sharers.is_empty() {
                format!("does not fill {at} (the rest of it is not described)")
            } else {
                format!("shares {at} with {}", list(&sharers))
            };
            let warning = hot_device(dev).map(|what| {
                format!(
                    "vm {vm}: {d} is {what}: behind the sub-page filter every register access is \
                     one exit to the hypervisor; give the VM every node in {at} or use a device \
                     in a page of its own to map it directly"
                )
            });
            out.push(PageNote {
                vm: vm.clone(),
                device: d.clone(),
                filtered: true,
                text: format!(
                    "vm {vm}: {d} {why}: trapped through the sub-page filter (only its own reg \
                     window reaches the device, the rest of the page aborts)"
                ),
                warning,
            });
        }
    }
    out
}

/// `a..b` page ranges.
fn pages(spans: &[(u64, u64)]) -> String {
    spans
        .iter()
        .map(|(a, b)| format!("{a:#x}..{b:#x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first few names of a list, then how many more.
fn list(names: &[String]) -> String {
    const SHOWN: usize = 4;
    if names.len() <= SHOWN {
        names.join(", ")
    } else {
        format!("{} and {} more", names[..SHOWN].join(", "), names.len() - SHOWN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU virt's 32 transports (0x200 apart) plus a page-aligned device.
    fn board() -> Board {
        let mut nodes: Vec<Node> = (0..32u64)
            .map(|i| {
                let base = 0xa00_0000 + i * 0x200;
                Node {
                    path: format!("/virtio_mmio@{base:x}"),
                    regs: vec![(base, 0x200)],
                    compatible: vec!["virtio,mmio".into()],
                }
            })
            .collect();
        nodes.push(Node {
            path: "/pl061@9030000".into(),
            regs: vec![(0x903_0000, 0x1000)],
            compatible: vec!["arm,pl061".into()],
        });
        nodes.push(Node {
            path: "/pl031@9010000".into(),
            regs: vec![(0x901_0000, 0x100)],
            compatible: vec!["arm,pl031".into()],
        });
        Board {
            nodes,
            ..Default::default()
        }
    }

    fn vm(name: &str, devs: &[&str]) -> (String, Vec<String>) {
        (name.into(), devs.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn a_transport_sharing_a_page_with_another_vm_is_filtered_and_named() {
        let r = report(
            &board(),
            &[
                vm("linux0", &["/virtio_mmio@a003e00"]),
                vm("linux1", &["/virtio_mmio@a003c00"]),
            ],
        );
        assert_eq!(r.len(), 2);
        assert!(r[0].filtered);
        assert!(
            r[0].text.starts_with(
                "vm linux0: /virtio_mmio@a003e00 shares page 0xa003000 with /virtio_mmio@a003c00 (vm linux1), \
                 /virtio_mmio@a003000 (unassigned), /virtio_mmio@a003200 (unassigned), \
                 /virtio_mmio@a003400 (unassigned) and 3 more"
            ),
            "{}",
            r[0].text
        );
        assert!(
            r[1].text.contains("with /virtio_mmio@a003e00 (vm linux0), "),
            "{}",
            r[1].text
        );
        assert!(
            r[0].text.ends_with("the rest of the page aborts)"),
            "{}",
            r[0].text
        );
    }

    #[test]
    fn the_vms_own_devices_in_the_page_are_named_as_its_own() {
        let r = report(
            &board(),
            &[vm("a", &["/virtio_mmio@a003e00", "/virtio_mmio@a003c00"])],
        );
        assert!(r.iter().all(|n| n.filtered));
        assert!(
            r[0].text.contains("with /virtio_mmio@a003c00 (this VM), "),
            "{}",
            r[0].text
        );
    }

    #[test]
    fn a_hot_device_behind_the_filter_gets_a_warning() {
        let r = report(&board(), &[vm("a", &["/virtio_mmio@a003e00"])]);
        let w = r[0].warning.as_deref().unwrap();
        assert!(w.contains("virtio-mmio") && w.contains("one exit"), "{w}");
    }

    #[test]
    fn a_quiet_device_behind_the_filter_gets_no_warning() {
        // The RTC's reg is 0x100: the rest of its page is not described.
        let r = report(&board(), &[vm("a", &["/pl031@9010000"])]);
        assert!(r[0].filtered);
        assert!(
            r[0].text.contains("does not fill page 0x9010000"),
            "{}",
            r[0].text
        );
        assert_eq!(r[0].warning, None);
    }

    #[test]
    fn a_device_owning_its_page_is_mapped_directly() {
        let r = report(&board(), &[vm("a", &["/pl061@9030000"])]);
        assert!(!r[0].filtered);
        assert_eq!(
            r[0].text,
            "vm a: /pl061@9030000 owns its page(s) 0x9030000..0x9031000: mapped directly"
        );
    }

    #[test]
    fn a_vm_given_every_transport_of_a_page_maps_them_directly() {
        let devs: Vec<String> = (0..8)
            .map(|i| format!("/virtio_mmio@{:x}", 0xa00_2000 + i * 0x200))
            .collect();
        let r = report(&board(), &[("a".into(), devs)]);
        assert_eq!(r.len(), 8);
        assert!(r.iter().all(|n| !n.filtered && n.warning.is_none()), "{r:?}");
    }

    #[test]
    fn hot_devices_are_recognised_by_compatible_or_node_name() {
        let n = |path: &str, c: &str| Node {
            path: path.into(),
            regs: vec![],
            compatible: vec![c.into()],
        };
        assert!(hot_device(&n("/virtio_mmio@a000000", "virtio,mmio")).is_some());
        assert!(hot_device(&n("/axi/ethernet@ff0e0000", "cdns,zynqmp-gem")).is_some());
        assert!(hot_device(&n("/soc/mmc@30b40000", "fsl,imx8mm-usdhc")).is_some());
        assert!(hot_device(&n("/pl031@9010000", "arm,pl031")).is_none());
    }
}
