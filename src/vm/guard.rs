//! What a VM may not be given, whatever the config says, decided from the
//! board's DTB: devices whose DMA no SMMU Tessera drives would translate.
//! Pure (no hardware), so it is tested on the host against real DTBs.

use crate::platform;
use alloc::vec::Vec;

/// The IOMMU phandles the node at `path` names: every `iommu-map` entry's
/// (rid-base, phandle, iommu-base, length; `#iommu-cells` = 1, as for an
/// SMMUv3) and the first cell of `iommus` (the phandle, whatever the
/// specifier). Empty for a device no IOMMU sits in front of.
pub fn iommu_phandles(dtb: &fdt::Fdt, path: &str) -> Vec<u32> {
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
pub fn untranslated_dma(dtb: &fdt::Fdt, path: &str, smmu: Option<u32>) -> Option<&'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dtb(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/dtbs/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn a_bridge_behind_a_refused_smmu_is_untranslated() {
        let bytes = dtb("qemu-virt-smmuv3.dtb");
        let fdt = fdt::Fdt::new(&bytes).unwrap();
        assert_eq!(iommu_phandles(&fdt, "/pcie@10000000"), [0x8007]);
        assert!(untranslated_dma(&fdt, "/pcie@10000000", None).is_some());
        assert!(untranslated_dma(&fdt, "/pcie@10000000", Some(0x1234)).is_some());
        assert_eq!(untranslated_dma(&fdt, "/pcie@10000000", Some(0x8007)), None);
        // No IOMMU in front of it: nothing to say (config_dma's business).
        assert_eq!(untranslated_dma(&fdt, "/pl031@9010000", None), None);
    }
}
