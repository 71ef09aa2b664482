//! The `rngseed_*` scenario: guests' CRNG seeded from their DTB (src/vm/seed.rs).

use crate::scenarios::Scenario;

pub fn all() -> Vec<Scenario> {
    vec![linux_crng_seeded()]
}

/// QEMU's DTB carries `/chosen/rng-seed` (dtb-randomness is on in scenarios),
/// so both Debian guests find a seed of their own in the DTB Tessera writes
/// them and report the CRNG ready while the kernel is still at time zero,
/// before any interrupt or jitter entropy could have done it.
fn linux_crng_seeded() -> Scenario {
    Scenario {
        config: Some("boards/qemu-virt/linux.toml"),
        must: &[
            "[linux0] [    0.000000] random: crng init done",
            "[linux1] [    0.000000] random: crng init done",
            "[linux0] TESSERA-LINUX-UP linux0",
            "[linux1] TESSERA-LINUX-UP linux1",
        ],
        must_not: &[
            "no boot entropy",
            "Kernel panic",
            "VM linux0 stopped",
            "VM linux1 stopped",
        ],
        timeout_secs: 300,
        ..Scenario::new("rngseed_linux_pair_crng_ready_at_boot")
    }
}
