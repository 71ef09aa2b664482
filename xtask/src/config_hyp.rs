//! The hypervisor's own devices no VM may be given, beyond the GIC and the
//! console (`config::check`): every IOMMU (an SMMU frame in a VM's hands
//! would let it turn DMA isolation off), and the Raspberry Pi's aux block
//! when the console is its mini UART (clearing AUX_ENABLES stops the
//! console). The hypervisor refuses the same frames (src/vm/guard.rs).

use crate::config::Board;

/// IOMMU compatibles, as src/vm/guard.rs lists them.
pub const IOMMU_COMPATIBLES: &[&str] = &[
    "arm,smmu-v3",
    "arm,mmu-500",
    "arm,smmu-v2",
    "arm,smmu-v1",
    "arm,mmu-400",
    "arm,mmu-401",
];
const BCM_AUX: &str = "brcm,bcm2835-aux";
const BCM_AUX_UART: &str = "brcm,bcm2835-aux-uart";

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

/// Why device `d` (a path in `board`) may not be given to a VM
/// (`console_passthrough`: the VM is given the console).
pub fn check_device(d: &str, board: &Board, console_passthrough: bool) -> Result<(), String> {
    let has = |path: &str, c: &[&str]| {
        board
            .nodes
            .iter()
            .any(|n| n.path == path && n.compatible.iter().any(|s| c.contains(&s.as_str())))
    };
    let aux_console =
        !console_passthrough && board.console.as_deref().is_some_and(|c| has(c, &[BCM_AUX_UART]));
    let regs = board.devices.get(d).cloned().unwrap_or_default();
    for n in &board.nodes {
        let what = if n
            .compatible
            .iter()
            .any(|s| IOMMU_COMPATIBLES.contains(&s.as_str()))
        {
            "an IOMMU the hypervisor keeps for DMA isolation"
        } else if aux_console && n.compatible.iter().any(|s| s == BCM_AUX) {
            "the aux block of the hypervisor's console (mini UART); use console = \"passthrough\" to give it to a VM"
        } else {
            continue;
        };
        if n.path == d || regs.iter().any(|&r| n.regs.iter().any(|&h| overlaps(r, h))) {
            return Err(format!("{d} is (or overlaps) {} {what}", n.path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(name: &str) -> Board {
        let path = format!("{}/../tests/dtbs/{name}", env!("CARGO_MANIFEST_DIR"));
        crate::config::board_from_dtb(&std::fs::read(path).unwrap(), vec![]).unwrap()
    }

    #[test]
    fn the_smmu_is_never_given_to_a_vm() {
        let b = board("qemu-virt-smmuv3.dtb");
        let e = check_device("/smmuv3@9050000", &b, false).unwrap_err();
        assert!(e.contains("IOMMU"), "{e}");
        assert!(check_device("/smmuv3@9050000", &b, true).is_err());
        assert_eq!(check_device("/pcie@10000000", &b, false), Ok(()));
        assert_eq!(check_device("/pl031@9010000", &b, false), Ok(()));
    }

    #[test]
    fn the_aux_block_stays_with_a_mini_uart_console() {
        let b = board("bcm2711-rpi-4-b.dtb");
        assert_eq!(b.console.as_deref(), Some("/soc/serial@7e215040"));
        let e = check_device("/soc/aux@7e215000", &b, false).unwrap_err();
        assert!(e.contains("aux block"), "{e}");
        assert_eq!(check_device("/soc/aux@7e215000", &b, true), Ok(()));
    }

    #[test]
    fn the_config_check_refuses_the_smmu_naming_file_vm_and_field() {
        let root = crate::paths::root();
        let text = std::fs::read_to_string(root.join("tests/configs/smmu_dma.toml")).unwrap();
        let mut cfg: crate::config::ConfigToml = toml::from_str(&text).unwrap();
        cfg.vms[0].devices.push("/smmuv3@9050000".into());
        let board = crate::config_dma::smmu_board(vec![]);
        let e = crate::config::check("smmu_dma.toml", root, &cfg, &board, &|_| None).unwrap_err();
        assert_eq!(e.file, "smmu_dma.toml");
        assert_eq!(e.vm.as_deref(), Some("attacker"));
        assert_eq!(e.field, "devices[1]");
        assert!(e.message.contains("IOMMU"), "{}", e.message);
    }
}
