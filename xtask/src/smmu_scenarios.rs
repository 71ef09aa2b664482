//! The `smmu_` scenarios: DMA isolation with QEMU's SMMUv3 in stage-2 mode
//! (the configs add `-machine iommu=smmuv3 -global arm-smmuv3.stage=2` and
//! their PCIe devices with `[qemu] extra`).

use crate::scenarios::Scenario;

pub fn all() -> Vec<Scenario> {
    vec![hostile_dma(3), hostile_dma(2), linux(3), linux(2)]
}

/// `dma_thief` aims its device's DMA at the victim's RAM and the
/// hypervisor: every attempt faults on the SMMU (logged for the attacker),
/// the attacker's own read works, and the victim's RAM stays unchanged.
fn hostile_dma(gic: u32) -> Scenario {
    Scenario {
        gic,
        config: Some("tests/configs/smmu_dma.toml"),
        must: &[
            "VM attacker: 65536 SMMU stream(s) 0x0..0x10000 through its stage 2",
            "[attacker] PASS dma_thief_own_buffer_read_completes",
            // virtio-blk-pci at 00:02.0; the data writes of a read into the
            // victim and into the hypervisor, the ring reads in the victim.
            "VM attacker: SMMU: F_TRANSLATION from stream 0x10: write(s) at 0x49800000..=0x498001fc",
            "VM attacker: SMMU: F_TRANSLATION from stream 0x10: write(s) at 0x40200000..=0x402001fc",
            "VM attacker: SMMU: F_TRANSLATION from stream 0x10: read(s) at 0x4980",
            " (stage 2: not the VM's memory): aborted",
            "[attacker] RESULT dma_thief: 2 passed, 0 failed",
            "[victim] ramsum: tick 40 unchanged",
        ],
        sequence: &[
            "[victim] ramsum: ready",
            "[attacker] dma_thief: attacks done",
            "[victim] ramsum: tick",
        ],
        must_not: &[
            "FAIL",
            "VM victim stopped",
            "VM attacker stopped",
            "which no VM owns",
        ],
        timeout_secs: 120,
        ..Scenario::new(if gic == 3 {
            "smmu_hostile_dma_faults_and_the_victims_ram_is_unchanged_gicv3"
        } else {
            "smmu_hostile_dma_faults_and_the_victims_ram_is_unchanged_gicv2"
        })
    }
}

/// A Debian Linux VM with non-identity RAM owning the PCIe bridge: its
/// virtio-blk-pci disk round trip and virtio-net-pci DHCP lease go through
/// the SMMU; after `reboot -f` (the VM's reset: streams aborted, then
/// assigned again) both work again. INTx through the virtual GIC `gic`.
fn linux(gic: u32) -> Scenario {
    Scenario {
        gic,
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
        ..Scenario::new(if gic == 3 {
            "smmu_linux_pcie_disk_and_net_through_stage2_non_identity_gicv3"
        } else {
            "smmu_linux_pcie_disk_and_net_through_stage2_non_identity_gicv2"
        })
    }
}
