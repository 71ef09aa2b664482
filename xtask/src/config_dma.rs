//! The config rules about DMA (docs/config.md, "DMA and isolation"):
//! a VM given a DMA-capable device that no SMMU translates can reach any
//! physical address through it, so the config must say so with
//! `dma = "unrestricted"`; a device behind the board's SMMU (a PCIe host
//! bridge with an `iommu-map`, a device with `iommus`) needs nothing, not
//! even identity-mapped RAM: its DMA translates through the VM's stage 2.
//! (A device given to two VMs, the PCIe bridge included, is refused with
//! every other device by `config::check`.)

use std::collections::BTreeMap;

/// What the board's DTB says about a device's DMA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dma {
    /// It can master the bus: a PCIe host bridge, a virtio-mmio transport,
    /// or a node with `iommus`, `iommu-map` or `dma-coherent`.
    pub capable: bool,
    /// Its transactions go through an enabled `arm,smmu-v3` the hypervisor drives.
    pub translated: bool,
}

/// Devices (by path) with their DMA facts.
pub type BoardDma = BTreeMap<String, Dma>;

fn cells(value: &[u8]) -> Vec<u32> {
    value
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The DMA facts of each of `paths` in `fdt`.
pub fn scan<'a>(fdt: &fdt::Fdt, paths: impl IntoIterator<Item = &'a String>) -> BoardDma {
    let smmus: Vec<u32> = fdt
        .all_nodes()
        .filter(|n| {
            n.compatible()
                .is_some_and(|c| c.all().any(|s| s == "arm,smmu-v3"))
        })
        .filter(|n| {
            n.property("status")
                .and_then(|s| s.as_str())
                .is_none_or(|s| s == "okay" || s == "ok")
        })
        .filter_map(|n| n.property("phandle").and_then(|p| p.as_usize()))
        .map(|p| p as u32)
        .collect();
    let mut out = BoardDma::new();
    for path in paths {
        let Some(n) = fdt.find_node(path) else { continue };
        let is = |k: &str| n.property(k).is_some();
        let pci = n.property("device_type").is_some_and(|p| p.value == b"pci\0");
        let virtio = n
            .compatible()
            .is_some_and(|c| c.all().any(|s| s == "virtio,mmio"));
        let capable = pci || virtio || is("iommus") || is("iommu-map") || is("dma-coherent");
        // iommu-map: (rid-base, phandle, iommu-base, length); iommus: (phandle, sid).
        let map = n
            .property("iommu-map")
            .map(|p| cells(p.value))
            .unwrap_or_default();
        let ids = n.property("iommus").map(|p| cells(p.value)).unwrap_or_default();
        let translated = (!map.is_empty() && map.chunks_exact(4).all(|e| smmus.contains(&e[1])))
            || (!ids.is_empty() && ids.chunks_exact(2).all(|e| smmus.contains(&e[0])));
        out.insert(path.clone(), Dma { capable, translated });
    }
    out
}

/// The `dma` field of a VM: (field, message) if its devices break the rule.
pub fn check_vm(dma: Option<&str>, devices: &[String], board: &BoardDma) -> Result<(), (String, String)> {
    let unrestricted = match dma {
        None => false,
        Some("unrestricted") => true,
        Some(other) => {
            return Err((
                "dma".into(),
                format!("{other:?}: the only value is \"unrestricted\" (DMA not translated by an SMMU)"),
            ))
        }
    };
    if unrestricted {
        return Ok(());
    }
    for (i, d) in devices.iter().enumerate() {
        if board.get(d).is_some_and(|f| f.capable && !f.translated) {
            return Err((
                format!("devices[{i}]"),
                format!(
                    "{d} can do DMA and no SMMU translates it: it could read and write any \
                     physical address, the hypervisor's and other VMs' included. Give the VM \
                     dma = \"unrestricted\" to accept that (and identity-mapped RAM so the device \
                     works), or use a device behind the SMMU"
                ),
            ));
        }
    }
    Ok(())
}

/// Identity-mapped RAM exists for DMA that no SMMU translates. A VM whose DMA-capable
/// devices all translate through the SMMU (at least one) needs none, and identity mapping
/// would only hand its devices and drivers the physical layout: refused, naming the first
/// identity region (`identity` lists each memory region's flag in order).
pub fn check_identity(
    dma: Option<&str>,
    devices: &[String],
    identity: &[bool],
    board: &BoardDma,
) -> Result<(), (String, String)> {
    if dma == Some("unrestricted") {
        return Ok(());
    }
    let facts: Vec<Dma> = devices
        .iter()
        .filter_map(|d| board.get(d).copied())
        .filter(|f| f.capable)
        .collect();
    if facts.is_empty() || facts.iter().any(|f| !f.translated) {
        return Ok(());
    }
    match identity.iter().position(|&i| i) {
        Some(i) => Err((
            format!("memory[{i}].identity"),
            "not needed: every DMA-capable device of this VM translates through the SMMU \
             (its DMA uses guest-physical addresses), so leave `identity` out (`ipa` may \
             still place the region)"
                .into(),
        )),
        None => Ok(()),
    }
}

/// QEMU virt with `iommu=smmuv3` (tests/dtbs/qemu-virt-smmuv3.dtb), for the
/// host tests of the `smmu_` configs.
#[cfg(test)]
pub fn smmu_board(reserved: Vec<(String, u64, u64)>) -> crate::config::Board {
    let path = format!(
        "{}/../tests/dtbs/qemu-virt-smmuv3.dtb",
        env!("CARGO_MANIFEST_DIR")
    );
    crate::config::board_from_dtb(&std::fs::read(path).unwrap(), reserved).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(name: &str) -> (Vec<u8>, BoardDma) {
        let path = format!("{}/../tests/dtbs/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(path).unwrap();
        let fdt = fdt::Fdt::new(&bytes).unwrap();
        let paths: Vec<String> = ["/pcie@10000000", "/virtio_mmio@a003e00", "/pl031@9010000"]
            .map(String::from)
            .to_vec();
        let d = scan(&fdt, &paths);
        (bytes, d)
    }

    #[test]
    fn the_bridge_behind_the_smmu_needs_nothing() {
        let (_, d) = board("qemu-virt-smmuv3.dtb");
        assert_eq!(
            d["/pcie@10000000"],
            Dma {
                capable: true,
                translated: true
            }
        );
        assert_eq!(check_vm(None, &["/pcie@10000000".into()], &d), Ok(()));
    }

    #[test]
    fn the_bridge_without_an_smmu_needs_dma_unrestricted() {
        let (_, d) = board("qemu-virt-gicv3-smp4.dtb");
        assert_eq!(
            d["/pcie@10000000"],
            Dma {
                capable: true,
                translated: false
            }
        );
        let e = check_vm(None, &["/pl031@9010000".into(), "/pcie@10000000".into()], &d).unwrap_err();
        assert_eq!(e.0, "devices[1]");
        assert!(e.1.contains("no SMMU translates it"), "{}", e.1);
        assert_eq!(
            check_vm(Some("unrestricted"), &["/pcie@10000000".into()], &d),
            Ok(())
        );
    }

    #[test]
    fn virtio_mmio_is_never_translated() {
        let (_, d) = board("qemu-virt-smmuv3.dtb");
        assert_eq!(
            d["/virtio_mmio@a003e00"],
            Dma {
                capable: true,
                translated: false
            }
        );
        assert!(check_vm(None, &["/virtio_mmio@a003e00".into()], &d).is_err());
        // An RTC does no DMA.
        assert_eq!(d["/pl031@9010000"], Dma::default());
        assert_eq!(check_vm(None, &["/pl031@9010000".into()], &d), Ok(()));
    }

    #[test]
    fn identity_is_refused_where_the_smmu_makes_it_unneeded() {
        let (_, d) = board("qemu-virt-smmuv3.dtb");
        let bridge = ["/pcie@10000000".to_string()];
        let e = check_identity(None, &bridge, &[false, true], &d).unwrap_err();
        assert_eq!(e.0, "memory[1].identity");
        assert!(e.1.contains("not needed"), "{}", e.1);
        assert_eq!(check_identity(None, &bridge, &[false], &d), Ok(()));
        // Untranslated DMA still needs it; no DMA at all is not this rule's business.
        let both = ["/pcie@10000000".to_string(), "/virtio_mmio@a003e00".to_string()];
        assert_eq!(check_identity(None, &both, &[true], &d), Ok(()));
        assert_eq!(
            check_identity(None, &["/pl031@9010000".into()], &[true], &d),
            Ok(())
        );
        assert_eq!(check_identity(Some("unrestricted"), &bridge, &[true], &d), Ok(()));
        // Without an SMMU the bridge is untranslated: identity stays allowed.
        let (_, plain) = board("qemu-virt-gicv3-smp4.dtb");
        assert_eq!(check_identity(None, &bridge, &[true], &plain), Ok(()));
    }

    #[test]
    fn the_config_check_refuses_identity_behind_the_smmu_naming_the_region() {
        let root = crate::paths::root();
        let text = std::fs::read_to_string(root.join("tests/configs/smmu_dma.toml")).unwrap();
        let mut cfg: crate::config::ConfigToml = toml::from_str(&text).unwrap();
        let board = smmu_board(vec![]);
        // A bare arm64 Image header stands in for the guest images: only the rules are
        // under test.
        let image = std::env::temp_dir().join(format!("tessera-identity-{}.bin", std::process::id()));
        let mut header = vec![0u8; 64];
        header[56..60].copy_from_slice(b"ARM\x64");
        std::fs::write(&image, &header).unwrap();
        let guest = |_: &str| Some(image.clone());
        if let Err(e) = crate::config::check("smmu_dma.toml", root, &cfg, &board, &guest) {
            panic!("{e:?}");
        }
        cfg.vms[0].memory[0].ipa = None;
        cfg.vms[0].memory[0].identity = true;
        let e = crate::config::check("smmu_dma.toml", root, &cfg, &board, &guest).unwrap_err();
        assert_eq!(e.file, "smmu_dma.toml");
        assert_eq!(e.vm.as_deref(), Some("attacker"));
        assert_eq!(e.field, "memory[0].identity");
        assert!(e.message.contains("not needed"), "{}", e.message);
        let _ = std::fs::remove_file(&image);
    }

    #[test]
    fn dma_takes_one_value() {
        let e = check_vm(Some("trusted"), &[], &BoardDma::new()).unwrap_err();
        assert_eq!(e.0, "dma");
    }
}
