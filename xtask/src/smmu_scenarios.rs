//! The `smmu_` scenarios: DMA isolation with QEMU's SMMUv3 in stage-2 mode
//! (the configs add `-machine iommu=smmuv3 -global arm-smmuv3.stage=2` and
//! their PCIe devices with `[qemu] extra`).

use crate::scenarios::Scenario;

pub fn all() -> Vec<Scenario> {
    vec![Scenario {
        config: Some("tests/configs/smmu_linux.toml"),
        must: &[
            "every stream aborts until assigned",
            "VM linux0: 65536 SMMU stream(s) 0x0..0x10000 through its stage 2",
            "[linux0] TT ok virtio interrupts",
            "[linux0] TT ok disk sha256",
            "[linux0] TT ok net address 10.0.2.15/24 on eth0",
            "VM linux0: SMMU streams aborted and re-established in",
            "[linux0] TT ok second boot disk sha256",
            "[bystander] hello: tick",
        ],
        sequence: &[
            "[linux0] TT ok disk sha256",
            "[linux0] TT rebooting",
            "VM linux0 restarting",
            "[linux0] TT second boot",
            "[linux0] TT ok second boot disk sha256",
            "[linux0] TT ok net address",
            "[linux0] TT second boot done",
        ],
        must_not: &[
            "FAIL",
            "Kernel panic",
            "SMMU: F_",
            "SMMU: C_",
            "VM linux0 stopped",
            "VM bystander stopped",
        ],
        timeout_secs: 300,
        ..Scenario::new("smmu_linux_pcie_disk_and_net_through_stage2_non_identity")
    }]
}
