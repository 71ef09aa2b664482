//! Finding the SMMU in the board's device tree.

use crate::dt::Tree;
use alloc::string::String;

/// An SMMUv3 the device tree describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub path: String,
    pub base: u64,
    pub size: u64,
    /// Its phandle: what `iommu-map` and `iommus` point at.
    pub phandle: Option<u32>,
    /// The event queue's and the global errors' SPIs (INTIDs), from
    /// `interrupt-names` ("eventq", "gerror"), if wired.
    pub eventq_irq: Option<u32>,
    pub gerror_irq: Option<u32>,
}

pub const COMPATIBLE: &str = "arm,smmu-v3";

/// The first enabled `arm,smmu-v3` node (under enabled ancestors only).
pub fn find(dtb: &Tree) -> Option<Found> {
    let node = dtb.nodes().skip(1).find(|n| {
        n.is_compatible(&[COMPATIBLE]) && n.is_okay() && n.ancestors().iter().all(|a| a.is_okay())
    })?;
    let path = node.path();
    let dev = crate::platform::device(dtb, &path).ok()?;
    let reg = dev.regs.first()?;
    let spi = |name: &str| {
        let names = node.property("interrupt-names")?;
        let index = names
            .value
            .split(|&b| b == 0)
            .position(|n| n == name.as_bytes())?;
        // `device` keeps SPIs only; the SMMU's are all SPIs.
        dev.spis.get(index).copied()
    };
    Some(Found {
        base: reg.base.0,
        size: reg.size,
        phandle: node
            .property("phandle")
            .and_then(|p| p.as_usize())
            .map(|p| p as u32),
        eventq_irq: spi("eventq"),
        gerror_irq: spi("gerror"),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_virts_smmu_is_found_with_its_interrupts() {
        let path = format!("{}/tests/dtbs/qemu-virt-smmuv3.dtb", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(path).unwrap();
        let dtb = Tree::new(&bytes).unwrap();
        let s = find(&dtb).unwrap();
        assert_eq!(s.path, "/smmuv3@9050000");
        assert_eq!((s.base, s.size), (0x905_0000, 0x2_0000));
        assert_eq!(s.eventq_irq, Some(32 + 0x4a));
        assert_eq!(s.gerror_irq, Some(32 + 0x4d));
        assert!(s.phandle.is_some());
        // Without iommu=smmuv3 there is none.
        let path = format!(
            "{}/tests/dtbs/qemu-virt-gicv3-smp4.dtb",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(find(&Tree::new(&bytes).unwrap()), None);
    }
}
