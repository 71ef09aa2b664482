//! Every board DTB question the hypervisor asks, answered for every DTB in
//! `tests/dtbs/` and compared with the answers recorded in
//! `tests/golden/dt/` (written by the code that walked the tree with the
//! `fdt` crate): platform discovery, the early console, each node's
//! device (`reg`, SPIs), PCIe bridge and IOMMU links, the guest DTB
//! generated with that node passed through (its bytes, hashed), the
//! foreign regions and the hypervisor's frames. `TESSERA_BLESS=1 cargo
//! test golden` rewrites the records.

use crate::vm::{dtb, guard, passthrough, pcie};
use std::fmt::Write;
use std::format;
use std::string::String;
use std::vec::Vec;

/// FNV-1a: enough to tell two guest DTBs apart.
fn hash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Paths of every node with a `reg`, from our reader.
fn reg_paths(blob: &[u8]) -> Vec<String> {
    let dt = super::Dt::new(blob).unwrap();
    let mut out = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    for e in dt.walk() {
        match e {
            super::Event::Begin { name, depth, .. } => {
                stack.truncate(depth);
                stack.push(String::from_utf8(name.to_vec()).unwrap());
            }
            super::Event::Prop { name: b"reg", .. } if stack.len() > 1 => {
                out.push(stack.join("/"));
            }
            _ => {}
        }
    }
    out
}

const RAM: [dtb::GuestRegion; 1] = [dtb::GuestRegion::new(0x4000_0000, 0x100_0000)];

pub(super) fn spec<'a>(host: &'a super::Tree<'a>, passthrough: &'a [&'a str]) -> dtb::GuestDtbSpec<'a> {
    dtb::GuestDtbSpec {
        name: "golden",
        vcpus: 2,
        memory: &RAM,
        gic: dtb::GuestGic::V3 {
            dist: dtb::GuestRegion::new(0x0800_0000, 0x1_0000),
            redist: dtb::GuestRegion::new(0x080a_0000, 0x4_0000),
        },
        timer_ppis: [29, 30, 27, 26],
        psci_method: "smc",
        console: Some(dtb::GuestConsole {
            base: crate::mm::addr::GuestPhysAddr(0x0900_0000),
            intid: 33,
        }),
        bootargs: "console=ttyAMA0",
        initrd: None,
        passthrough,
        host: Some(host),
        seed: None,
    }
}

/// The record of one DTB.
fn answers(blob: &[u8]) -> String {
    let host = super::Tree::new(blob).unwrap();
    let mut o = String::new();
    let p = crate::platform::discover(&host);
    writeln!(o, "discover: {p:?}").unwrap();
    writeln!(
        o,
        "early_console: {:?}",
        crate::platform::early_console(host.root())
    )
    .unwrap();
    let mem: Vec<_> = crate::platform::memory_ranges(host.root()).collect();
    writeln!(o, "memory_ranges: {mem:?}").unwrap();
    writeln!(o, "smmu: {:?}", crate::drivers::smmuv3::probe::find(&host)).unwrap();
    writeln!(o, "foreign(none): {:?}", passthrough::foreign_regs(&host, &[])).unwrap();
    if let Ok(p) = &p {
        for given in [false, true] {
            let f = guard::hyp_frames(&host, &p.console.path, given);
            writeln!(o, "hyp_frames({given}): {f:?}").unwrap();
        }
    }
    let paths = reg_paths(blob);
    for path in &paths {
        let dev = crate::platform::device(&host, path);
        writeln!(o, "{path}: device {dev:?}").unwrap();
        writeln!(o, "{path}: bridge {:?}", pcie::bridge(&host, path, Some(1))).unwrap();
        writeln!(o, "{path}: iommus {:?}", guard::iommu_phandles(&host, path)).unwrap();
        let one = [path.as_str()];
        match dtb::generate(&spec(&host, &one)) {
            Ok(g) => writeln!(o, "{path}: guest {:016x} ({} bytes)", hash(&g), g.len()).unwrap(),
            Err(e) => writeln!(o, "{path}: guest error {e}").unwrap(),
        }
        if let Ok(d) = dev {
            let regs: Vec<(u64, u64)> = d.regs.iter().map(|r| (r.base.0, r.size)).collect();
            writeln!(o, "{path}: plan {:?}", passthrough::plan(&host, &one, &regs)).unwrap();
        }
    }
    o
}

#[test]
fn board_dtb_answers_match_the_record() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dtbs");
    let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/dt");
    let bless = std::env::var_os("TESSERA_BLESS").is_some();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".dtb"))
        .collect();
    names.sort();
    assert!(names.len() >= 10);
    for n in names {
        let blob = std::fs::read(format!("{dir}/{n}")).unwrap();
        let got = answers(&blob);
        // The boot no longer strips NOPs: the answers must not change
        // with one before every token.
        assert_eq!(answers(&super::tests::with_nops(&blob)), got, "{n} with NOPs");
        let file = format!("{golden}/{n}.txt");
        if bless {
            std::fs::create_dir_all(golden).unwrap();
            std::fs::write(&file, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&file).unwrap_or_else(|_| panic!("no record {file}"));
        for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
            assert_eq!(g, w, "{n} line {}", i + 1);
        }
        assert_eq!(got.lines().count(), want.lines().count(), "{n}");
    }
}
