//! The index against the `fdt` crate on every board DTB at hand, and what
//! it does with damaged ones.

use super::tests::{dtb, with_nops};
use super::*;
use crate::platform::ranges::DtNode;
use std::format;
use std::string::ToString;

/// Every DTB in tests/dtbs/, and the board DTBs xtask generated into
/// target/board-dtbs/ (if any were built).
fn all_boards() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["tests/dtbs", "target/board-dtbs"] {
        let Ok(rd) = std::fs::read_dir(format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"))) else {
            continue;
        };
        let mut names: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        names.sort();
        for p in names
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "dtb"))
        {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    assert!(out.len() >= 10);
    out
}

/// A node's path, properties and child names.
type Seen = (String, Vec<(String, Vec<u8>)>, Vec<String>);

/// (path, properties, child names) of every node, depth first, from the
/// `fdt` crate.
fn theirs(blob: &[u8]) -> Vec<Seen> {
    fn visit(n: fdt::node::FdtNode, path: String, out: &mut Vec<Seen>) {
        let props = n
            .properties()
            .map(|p| (p.name.to_string(), p.value.to_vec()))
            .collect();
        let kids: Vec<_> = n.children().collect();
        out.push((
            if path.is_empty() {
                "/".to_string()
            } else {
                path.clone()
            },
            props,
            kids.iter().map(|c| c.name.to_string()).collect(),
        ));
        for c in kids {
            visit(c, format!("{path}/{}", c.name), out);
        }
    }
    let f = fdt::Fdt::new(blob).unwrap();
    let mut out = Vec::new();
    visit(f.find_node("/").unwrap(), String::new(), &mut out);
    out
}

fn ours(t: &Tree) -> Vec<Seen> {
    t.nodes()
        .map(|n| {
            (
                n.path(),
                n.properties()
                    .map(|p| (p.name.to_string(), p.value.to_vec()))
                    .collect(),
                n.children().map(|c| c.name.to_string()).collect(),
            )
        })
        .collect()
}

#[test]
fn the_index_holds_what_the_fdt_crate_reads_on_every_board() {
    for (name, blob) in all_boards() {
        let t = Tree::new(&blob).unwrap();
        // The crate loses nodes after NOPs, or panics: it reads the blob
        // with them taken out, the index the blob as it is.
        let mut stripped = blob.clone();
        crate::platform::nops::strip_nops(&mut stripped).unwrap();
        let f = fdt::Fdt::new(&stripped).unwrap();
        assert_eq!(ours(&t), theirs(&stripped), "{name}");
        // Compatible lists of every node, in the same depth-first order
        // (the crate's own path lookup can panic on a tree with NOPs).
        let mut compat: Vec<Vec<&str>> = Vec::new();
        fn visit<'a>(n: fdt::node::FdtNode<'_, 'a>, out: &mut Vec<Vec<&'a str>>) {
            out.push(n.compatible().map(|c| c.all().collect()).unwrap_or_default());
            for c in n.children() {
                visit(c, out);
            }
        }
        visit(f.find_node("/").unwrap(), &mut compat);
        assert_eq!(t.total_size(), f.total_size(), "{name}");
        let theirs_rsv: Vec<_> = f
            .memory_reservations()
            .map(|r| (r.address() as u64, r.size() as u64))
            .collect();
        assert_eq!(t.memory_reservations().collect::<Vec<_>>(), theirs_rsv, "{name}");
        for n in t.nodes() {
            // Path lookup, parent links, single-property lookup.
            assert_eq!(t.node_at(&n.path()), Some(n), "{name}: {}", n.path());
            for p in n.properties() {
                assert_eq!(n.property(p.name).map(|q| q.value), Some(p.value), "{name}");
                assert_eq!(n.prop(p.name), Some(p.value));
            }
            let anc = n.ancestors();
            assert_eq!(anc.last().copied(), n.parent());
            if let Some(ph) = n.u32("phandle") {
                let theirs = f.find_phandle(ph).unwrap();
                assert_eq!(t.find_phandle(ph).unwrap().name, theirs.name, "{name}: {ph:#x}");
            }
            let ours: Vec<&str> = n.compatible().map(|c| c.all().collect()).unwrap_or_default();
            assert_eq!(ours, compat[n.index()], "{name}: {}", n.path());
            assert_eq!(
                n.compatible().map(|c| c.first()),
                compat[n.index()].first().copied()
            );
        }
        assert!(t.find_phandle(0xdead_beef).is_none());
        assert!(t.node_at("/no-such-node").is_none());
    }
}

#[test]
fn nops_anywhere_change_nothing_in_the_index() {
    for (name, blob) in all_boards() {
        let nops = with_nops(&blob);
        assert_eq!(
            ours(&Tree::new(&nops).unwrap()),
            ours(&Tree::new(&blob).unwrap()),
            "{name}"
        );
    }
}

#[test]
fn a_damaged_structure_is_an_error_naming_the_last_node_read() {
    let blob = dtb("qemu-virt-gicv3-smp4.dtb");
    let field = |i: usize| u32::from_be_bytes(blob[4 * i..4 * i + 4].try_into().unwrap()) as usize;
    let mut cut = blob.clone();
    cut[36..40].copy_from_slice(&((field(9) / 2) as u32 & !3).to_be_bytes());
    let e = Tree::new(&cut).err().unwrap();
    assert_eq!(e.error, DtError::Structure);
    assert!(e.after.starts_with('/') && e.after.len() > 1, "{e:?}");
    assert!(format!("{e}").contains(&e.after));
    // A token out of place: the first property's tag made garbage.
    let mut bad = blob.clone();
    let s = field(2);
    // Root's BEGIN_NODE, its empty name padded to a word, then a PROP.
    assert_eq!(&bad[s + 8..s + 12], &3u32.to_be_bytes());
    bad[s + 8..s + 12].copy_from_slice(&7u32.to_be_bytes());
    assert_eq!(Tree::new(&bad).err().unwrap().after, "/");
    assert_eq!(Tree::new(&blob[..20]).err().unwrap().error, DtError::Truncated);
}

#[test]
fn what_runs_before_the_heap_agrees_with_the_index() {
    for (name, blob) in all_boards() {
        let t = Tree::new(&blob).unwrap();
        let raw = Dt::new(&blob).unwrap().root().unwrap();
        assert_eq!(
            crate::platform::early_console(raw),
            crate::platform::early_console(t.root()),
            "{name}"
        );
        assert_eq!(
            crate::platform::memory_ranges(raw).collect::<Vec<_>>(),
            crate::platform::memory_ranges(t.root()).collect::<Vec<_>>(),
            "{name}"
        );
        assert_eq!(blob_size(&blob), Some(t.total_size()));
    }
    assert_eq!(blob_size(&[0xd0, 0x0d, 0xfe, 0xef, 0, 0, 0, 8]), None);
}

#[test]
fn the_pre_found_properties_are_the_ones_named() {
    let blob = dtb("imx8mp-evk.dtb");
    let t = Tree::new(&blob).unwrap();
    for (k, name) in tree::KNOWN.iter().enumerate() {
        assert_eq!(tree::known(name.as_bytes()), Some(k));
    }
    assert_eq!(tree::known(b"regs"), None);
    // A known property found the slow way agrees with the index.
    let raw = Dt::new(&blob).unwrap();
    for (n, r) in t.nodes().zip(raw.nodes()) {
        for name in tree::KNOWN {
            assert_eq!(
                n.property(name).map(|p| p.value),
                r.property(name),
                "{}",
                n.path()
            );
        }
    }
}
