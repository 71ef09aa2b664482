//! What a VM may not be given, whatever the config says, decided from the
//! board's DTB: devices whose DMA no SMMU Tessera drives would translate,
//! and the frames of the hypervisor's own devices beyond the GIC and the
//! console UART (`passthrough::forbidden`). Pure (no hardware), so it is
//! tested on the host against real DTBs.

use crate::dt::{Node, Tree};
use crate::platform::{self, ranges};
use alloc::vec::Vec;

/// IOMMUs: an SMMUv3 (Tessera's own, or one it refused, which must stay
/// aborting), and the SMMUv1/v2 families Tessera does not drive (a VM
/// programming one could turn a bus master loose).
pub const IOMMU_COMPATIBLES: &[&str] = &[
    "arm,smmu-v3",
    "arm,mmu-500",
    "arm,smmu-v2",
    "arm,smmu-v1",
    "arm,mmu-400",
    "arm,mmu-401",
];

/// The BCM2835 auxiliary block (AUX_IRQ, AUX_ENABLES), which switches the
/// mini UART's clock: a VM that clears AUX_ENABLES stops the console.
pub const BCM_AUX: &str = "brcm,bcm2835-aux";
/// The mini UART inside it.
pub const BCM_AUX_UART: &str = "brcm,bcm2835-aux-uart";

fn is(node: &Node, compatibles: &[&str]) -> bool {
    node.is_compatible(compatibles)
}

/// The register frames of the hypervisor's devices no VM may be given
/// (every IOMMU; the aux block when the console is the mini UART and the VM
/// is not given the console), as CPU physical ranges, with what they are.
/// What [`hyp_frames`] returns: (what, base, size) of each frame.
type Frames = Vec<(&'static str, u64, u64)>;

/// [`hyp_frames`] of the boot's DTB, walked once per console mode rather than once per VM
/// (the tree and the console do not change after boot).
pub fn hyp_frames_cached(
    dtb: &Tree,
    console_path: &str,
    console_passthrough: bool,
) -> &'static [(&'static str, u64, u64)] {
    static OWN_CONSOLE: spin::Once<Frames> = spin::Once::new();
    static CONSOLE_GIVEN: spin::Once<Frames> = spin::Once::new();
    let slot = if console_passthrough {
        &CONSOLE_GIVEN
    } else {
        &OWN_CONSOLE
    };
    slot.call_once(|| hyp_frames(dtb, console_path, console_passthrough))
}

pub fn hyp_frames(
    dtb: &Tree,
    console_path: &str,
    console_passthrough: bool,
) -> Vec<(&'static str, u64, u64)> {
    let aux_console =
        !console_passthrough && platform::node_at(dtb, console_path).is_some_and(|n| is(&n, &[BCM_AUX_UART]));
    let mut out = Vec::new();
    dtb.with_ancestors(ranges::MAX_DEPTH, |node, ancestors| {
        let what = if is(&node, IOMMU_COMPATIBLES) {
            Some("an IOMMU (the hypervisor's DMA isolation)")
        } else if aux_console && is(&node, &[BCM_AUX]) {
            Some("the aux block of the hypervisor's console")
        } else {
            None
        };
        if let Some(what) = what {
            out.extend(
                ranges::regs(node, ancestors)
                    .filter(|r| r.size != 0)
                    .map(|r| (what, r.base.0, r.size)),
            );
        }
    });
    out
}

/// The IOMMU phandles the node at `path` names: every `iommu-map` entry's
/// (rid-base, phandle, iommu-base, length; `#iommu-cells` = 1, as for an
/// SMMUv3) and the first cell of `iommus` (the phandle, whatever the
/// specifier). Empty for a device no IOMMU sits in front of.
pub fn iommu_phandles(dtb: &Tree, path: &str) -> Vec<u32> {
    let Some(node) = platform::node_at(dtb, path) else {
        return Vec::new();
    };
    let cells = |name: &str| -> Vec<u32> {
        node.property(name)
            .map(|p| {
                p.value
                    .chunks_exact(4)
                    .filter_map(|c| c.try_into().ok().map(u32::from_be_bytes))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out: Vec<u32> = cells("iommu-map")
        .chunks_exact(4)
        .filter_map(|e| e.get(1).copied())
        .collect();
    out.extend(cells("iommus").first().copied());
    out
}

/// Why the device at `path` may not be given to a VM that is not trusted
/// with untranslated DMA: it sits behind an IOMMU, and that IOMMU is not the
/// one Tessera drives (`smmu`: the phandle of the operational SMMU, if any).
/// With the SMMU refused (no stage 2, not coherent) or absent, the device's
/// DMA would reach physical memory untranslated: the hypervisor's included.
pub fn untranslated_dma(dtb: &Tree, path: &str, smmu: Option<u32>) -> Option<&'static str> {
    let phandles = iommu_phandles(dtb, path);
    if phandles.is_empty() {
        return None;
    }
    match smmu {
        None => Some("its SMMU is not operational (see the SMMU line above)"),
        Some(s) if phandles.iter().any(|&p| p != s) => Some("it sits behind an IOMMU Tessera does not drive"),
        Some(_) => None,
    }
}

/// Programming models of devices that never master the bus themselves
/// (UARTs, RTCs, GPIO blocks, watchdogs: a DMA engine serving them is a node
/// of its own). Anything else may do DMA as far as the hypervisor knows.
const NEVER_MASTERS: &[&str] = &[
    "arm,pl011",
    "arm,sbsa-uart",
    "arm,pl031",
    "arm,pl061",
    "arm,sp805",
    "cdns,uart-r1p8",
    "cdns,uart-r1p12",
    "xlnx,xuartps",
    "brcm,bcm2835-aux-uart",
    "fsl,imx21-uart",
    "fsl,imx6q-uart",
    "ns16550a",
];

/// True if the node at `path` is one of [`NEVER_MASTERS`] and nothing
/// says it does DMA (`iommus`, `iommu-map`, `dma-coherent`): its VM's RAM
/// may then be scrubbed at first touch. False for anything else, and for a
/// path the DTB lacks.
pub fn never_masters(dtb: &Tree, path: &str) -> bool {
    let Some(node) = platform::node_at(dtb, path) else {
        return false;
    };
    let dma = ["iommus", "iommu-map", "dma-coherent"]
        .iter()
        .any(|p| node.property(p).is_some());
    !dma && is(&node, NEVER_MASTERS)
}

/// The first of `spis` (a VM's hardware interrupts) that is one of the
/// hypervisor's own (`hyp`: INTID and what it is). Rerouted to the guest,
/// the hypervisor would lose it (the SMMU's event queue, the console's
/// input) and the guest would see interrupts of a device it does not own.
pub fn irq_clash(spis: &[u32], hyp: &[(u32, &'static str)]) -> Option<(u32, &'static str)> {
    spis.iter().find_map(|s| hyp.iter().find(|h| h.0 == *s).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dtb(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/dtbs/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn a_bridge_behind_a_refused_smmu_is_untranslated() {
        let bytes = dtb("qemu-virt-smmuv3.dtb");
        let fdt = crate::dt::Tree::new(&bytes).unwrap();
        assert_eq!(iommu_phandles(&fdt, "/pcie@10000000"), [0x8007]);
        assert!(untranslated_dma(&fdt, "/pcie@10000000", None).is_some());
        assert!(untranslated_dma(&fdt, "/pcie@10000000", Some(0x1234)).is_some());
        assert_eq!(untranslated_dma(&fdt, "/pcie@10000000", Some(0x8007)), None);
        // No IOMMU in front of it: nothing to say (config_dma's business).
        assert_eq!(untranslated_dma(&fdt, "/pl031@9010000", None), None);
    }

    #[test]
    fn only_uarts_rtcs_and_gpio_leave_a_vm_scrubbed_at_first_touch() {
        let bytes = dtb("qemu-virt-smmuv3.dtb");
        let virt = crate::dt::Tree::new(&bytes).unwrap();
        assert!(never_masters(&virt, "/pl031@9010000"));
        assert!(never_masters(&virt, "/pl011@9000000"));
        assert!(never_masters(&virt, "/pl061@9030000"));
        // Bus masters, or unknown: scrubbed before the VM enters.
        assert!(!never_masters(&virt, "/pcie@10000000"));
        assert!(!never_masters(&virt, "/virtio_mmio@a000000"));
        assert!(!never_masters(&virt, "/fw-cfg@9020000"));
        assert!(!never_masters(&virt, "/no/such/node"));
        let bytes = dtb("zynqmp-zcu102-rev1.0.dtb");
        let zcu = crate::dt::Tree::new(&bytes).unwrap();
        assert!(never_masters(&zcu, "/axi/serial@ff010000"));
        // GEM Ethernet: a DMA master behind the SMMU.
        assert!(!never_masters(&zcu, "/axi/ethernet@ff0e0000"));
        let bytes = dtb("imx8mp-evk.dtb");
        let evk = crate::dt::Tree::new(&bytes).unwrap();
        assert!(never_masters(&evk, "/soc@0/bus@30800000/serial@30890000"));
        assert!(!never_masters(&evk, "/soc@0/bus@30800000/mmc@30b50000"));
    }

    #[test]
    fn a_device_sharing_the_smmus_or_the_consoles_spi_is_refused() {
        let hyp = [
            (106, "the SMMU's event queue"),
            (109, "the SMMU's global errors"),
            (33, "the console"),
        ];
        assert_eq!(
            irq_clash(&[40, 109], &hyp),
            Some((109, "the SMMU's global errors"))
        );
        assert_eq!(irq_clash(&[33], &hyp).map(|c| c.0), Some(33));
        assert_eq!(irq_clash(&[40, 41], &hyp), None);
        assert_eq!(irq_clash(&[], &hyp), None);
    }

    #[test]
    fn the_smmu_frame_is_the_hypervisors() {
        let bytes = dtb("qemu-virt-smmuv3.dtb");
        let fdt = crate::dt::Tree::new(&bytes).unwrap();
        let f = hyp_frames(&fdt, "/pl011@9000000", false);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].1, f[0].2), (0x905_0000, 0x2_0000));
        let smmu = platform::device(&fdt, "/smmuv3@9050000").unwrap().regs;
        let regs: Vec<(u64, u64)> = smmu.iter().map(|r| (r.base.0, r.size)).collect();
        assert!(crate::vm::passthrough::clash(&regs, &f).is_some());
        assert!(hyp_frames(&fdt, "/pl011@9000000", true).len() == 1);
    }

    #[test]
    fn the_mini_uarts_aux_block_is_the_hypervisors_when_it_is_the_console() {
        let bytes = dtb("bcm2711-rpi-4-b.dtb");
        let fdt = crate::dt::Tree::new(&bytes).unwrap();
        let f = hyp_frames(&fdt, "/soc/serial@7e215040", false);
        assert!(
            f.iter()
                .any(|&(w, b, _)| w.contains("aux block") && b == 0xfe21_5000),
            "{f:x?}"
        );
        // Given the console, the VM may have the aux block; with a PL011
        // console, the aux block is nobody's business.
        assert!(hyp_frames(&fdt, "/soc/serial@7e215040", true).is_empty());
        assert!(hyp_frames(&fdt, "/soc/serial@7e201000", false).is_empty());
    }
}
