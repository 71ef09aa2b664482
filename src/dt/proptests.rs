//! Fuzzing the reader: random blobs, and real board DTBs with bytes
//! overwritten, truncated or with NOPs added, must never panic, every walk
//! must end, and what survives must be consistent.

use super::tests::{dtb, with_nops, BOARDS};
use super::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x00d7_feed),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Uses every entry point on `blob`; returns the number of nodes walked.
fn exercise(blob: &[u8]) -> usize {
    let Ok(dt) = Dt::new(blob) else { return 0 };
    let mut nodes = 0;
    for n in dt.nodes() {
        nodes += 1;
        let _ = n.name_str();
        let _ = n.props().count();
        let _ = n.property("reg");
        let _ = n.u32("#address-cells");
        let _ = n.children().count();
    }
    // A walk never yields more events than the structure block has words.
    assert!(dt.walk().count() <= blob.len() / 4 + 1);
    for (_, path) in dt.phandles() {
        let _ = dt.find(&path);
    }
    let _ = dt.find("/soc/serial@0");
    let _ = dt.root().map(|r| r.children().count());
    nodes
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn random_blobs_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        exercise(&bytes);
        // With a valid header in front.
        let mut b = dtb("qemu-virt-gicv3-smp1.dtb")[..40].to_vec();
        b.extend_from_slice(&bytes);
        exercise(&b);
    }

    #[test]
    fn damaged_board_dtbs_never_panic(
        board in 0..BOARDS.len(),
        hits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        cut in any::<prop::sample::Index>(),
        nops in any::<bool>(),
    ) {
        let mut blob = dtb(BOARDS[board]);
        if nops {
            blob = with_nops(&blob);
        }
        let whole = exercise(&blob);
        prop_assert!(whole > 0);
        for (at, v) in &hits {
            let i = at.index(blob.len());
            blob[i] = *v;
        }
        exercise(&blob);
        exercise(&blob[..cut.index(blob.len())]);
    }
}
