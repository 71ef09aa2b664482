//! The `scrub_*` scenarios: a VM's RAM scrubbed at first touch (src/vm/lazy.rs).

use crate::scenarios::Scenario;

pub fn all() -> Vec<Scenario> {
    vec![probe(3), probe(2), net(3), net(2)]
}

/// A guest executing from a fresh block, reading all of its fresh RAM, two vCPUs racing into untouched
/// blocks, and a marker in every page before each reset: every boot reads
/// zeros only, both racing writes survive, the bystander never notices.
fn probe(gic: u32) -> Scenario {
    Scenario {
        gic,
        config: Some("tests/configs/scrub_probe.toml"),
        sequence: &[
            "[prober] PASS scrub_fetch_from_fresh_block",
            "[prober] PASS scrub_two_vcpus_one_fresh_block",
            "[prober] PASS scrub_fresh_ram_reads_zero",
            "VM prober restarting",
            "[prober] PASS scrub_fetch_from_fresh_block",
            "[prober] PASS scrub_two_vcpus_one_fresh_block",
            "[prober] PASS scrub_fresh_ram_reads_zero",
            "VM prober restarting",
            "[prober] PASS scrub_fetch_from_fresh_block",
            "[prober] PASS scrub_two_vcpus_one_fresh_block",
            "[prober] PASS scrub_fresh_ram_reads_zero",
            "[bystander] hello: tick",
        ],
        must: &[
            "[bystander] hello: tick 5",
            "first entry of bystander on CPU 3: 16384 KiB of RAM scrubbed before it, 0 KiB left to first touch",
        ],
        must_not: &[
            "FAIL",
            "stopped",
            "VM bystander restarting",
            "first entry of prober on CPU 1: 16384 KiB",
            "first entry of prober on CPU 2: 16384 KiB",
        ],
        timeout_secs: 120,
        ..Scenario::new(if gic == 3 {
            "scrub_fresh_ram_reset_and_racing_vcpus_gicv3"
        } else {
            "scrub_fresh_ram_reset_and_racing_vcpus_gicv2"
        })
    }
}

/// The hypervisor's own path into fresh RAM: a VM sends a frame from, and
/// receives one into, blocks it never touched, then marks them and resets.
/// The peer must get zeros (never the previous run's marker), the VM the
/// peer's bytes (not erased by a later scrub).
fn net(gic: u32) -> Scenario {
    Scenario {
        gic,
        config: Some("tests/configs/scrub_net.toml"),
        sequence: &[
            "[fresh] PASS scrub_net_rx_into_fresh_block",
            "VM fresh restarting",
            "[fresh] PASS scrub_net_rx_into_fresh_block",
            "VM fresh restarting",
            "[fresh] PASS scrub_net_rx_into_fresh_block",
        ],
        must: &["[peer] PASS scrub_net_tx_from_fresh_block_is_zero: 3 frames"],
        must_not: &["FAIL", "stopped", "needs reset"],
        timeout_secs: 120,
        ..Scenario::new(if gic == 3 {
            "scrub_net_hypervisor_touches_fresh_blocks_gicv3"
        } else {
            "scrub_net_hypervisor_touches_fresh_blocks_gicv2"
        })
    }
}
