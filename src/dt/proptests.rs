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
    if let Some(raw) = dt.root() {
        let _ = crate::platform::early_console(raw);
        let _ = crate::platform::memory_ranges(raw).count();
    }
    exercise_tree(blob);
    nodes
}

/// Every question the hypervisor asks of a board DTB, on whatever `blob`
/// indexes to: none may panic, and the index must be consistent.
fn exercise_tree(blob: &[u8]) {
    let Ok(t) = Tree::new(blob) else { return };
    let n = t.nodes().count();
    assert!(n >= 1 && n <= blob.len() / 8 + 1);
    for node in t.nodes() {
        let anc = node.ancestors();
        assert!(anc.len() < MAX_DEPTH);
        assert_eq!(anc.first().map(|r| r.index()), (node.index() > 0).then_some(0));
        for c in node.children() {
            assert_eq!(c.parent(), Some(node));
        }
        let _ = node.properties().count();
        let _ = node.compatible().map(|c| c.all().count());
        let _ = node.is_okay();
    }
    for (_, path) in Dt::new(blob).map(|d| d.phandles()).unwrap_or_default() {
        let _ = t.node_at(&path);
    }
    let _ = t.memory_reservations().take(64).count();
    let p = crate::platform::discover(&t);
    let _ = crate::platform::early_console(t.root());
    let _ = crate::drivers::smmuv3::probe::find(&t);
    let _ = crate::vm::passthrough::foreign_regs(&t, &["/pl011@9000000"]);
    if let Ok(p) = &p {
        let _ = crate::vm::guard::hyp_frames(&t, &p.console.path, false);
    }
    for node in t.nodes().skip(1).take(24) {
        let path = node.path();
        let _ = crate::platform::device(&t, &path);
        let _ = crate::vm::pcie::bridge(&t, &path, Some(1));
        let _ = crate::vm::guard::iommu_phandles(&t, &path);
        let one = [path.as_str()];
        let _ = crate::vm::dtb::generate(&super::golden::spec(&t, &one));
    }
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
