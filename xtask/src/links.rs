//! `[[link]]`: communication between VMs, checked before anything is built.
//!
//! ```toml
//! [[link]]
//! kind = "net"                     # "net", "vsock" or "shmem"
//! vms = ["linux0", "linux1"]
//! macs = ["02:54:53:00:00:01", "02:54:53:00:00:02"]   # optional, net only
//! ```
//! Link `k` (in file order) appears in each of its VMs as one 4 KiB device
//! page at `0x0a80_0000 + k * 0x1000` (a virtio-mmio transport, or the
//! doorbell of a shmem link) raising virtual SPI `80 + k` (INTID `112 + k`).
//! Default MACs are `02:54:53:LL:00:PP` (locally administered; link LL,
//! position PP on it); default vsock CIDs are 3, 4, ... in `vms` order.

use crate::config::{Board, ConfigError, ResolvedVm, Size};
use anyhow::{anyhow, Result};
use serde::Deserialize;

/// Guest-physical base of link 0's device page, and the stride.
pub const LINK_BASE: u64 = 0x0a80_0000;
pub const LINK_STRIDE: u64 = 0x1000;
/// INTID of link 0's interrupt (SPI 80): above what QEMU virt's devices use.
pub const LINK_INTID: u32 = 112;
pub const MAX_LINKS: usize = 32;
/// The window all link pages live in, for the other checks.
pub const LINK_WINDOW: (u64, u64) = (LINK_BASE, LINK_STRIDE * MAX_LINKS as u64);

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Net,
    Vsock,
    Shmem,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct LinkToml {
    pub kind: Kind,
    pub vms: Vec<String>,
    /// net: one MAC per VM, "xx:xx:xx:xx:xx:xx".
    #[serde(default)]
    pub macs: Vec<String>,
    /// vsock: one CID per VM (default 3, 4, ...).
    #[serde(default)]
    pub cids: Vec<u32>,
    /// shmem: the region's size.
    pub size: Option<Size>,
    /// shmem: the guest-physical address it appears at in every VM.
    pub ipa: Option<u64>,
    /// shmem: "rw" or "ro" per VM (default "rw").
    #[serde(default)]
    pub access: Vec<String>,
}

/// One VM's end of a checked link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPort {
    /// Index of the VM in the config.
    pub vm: u32,
    pub ipa: u64,
    pub intid: u32,
    pub mac: [u8; 6],
    pub cid: u32,
    pub writable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedLink {
    pub kind: Kind,
    pub size: u64,
    pub region_ipa: u64,
    pub ports: Vec<ResolvedPort>,
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

/// Parses "02:54:53:00:00:01".
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Checks `links` against the resolved VMs and the board.
pub fn check(
    file: &str,
    links: &[LinkToml],
    vms: &[ResolvedVm],
    board: &Board,
) -> Result<Vec<ResolvedLink>, ConfigError> {
    let err = |vm: Option<&str>, field: String, message: String| ConfigError {
        file: file.to_owned(),
        vm: vm.map(str::to_owned),
        field,
        message,
    };
    if links.len() > MAX_LINKS {
        return Err(err(None, "link".into(), format!("at most {MAX_LINKS} links")));
    }
    let mut out = Vec::new();
    let mut macs_seen: Vec<([u8; 6], String)> = Vec::new();
    // A guest kernel drives one vsock device (its single guest-to-host
    // transport): a VM is on one vsock link at most.
    let mut vsock_vms: Vec<(String, usize)> = Vec::new();
    for (k, l) in links.iter().enumerate() {
        let f = |s: &str| format!("link[{k}].{s}");
        if l.vms.len() < 2 {
            return Err(err(None, f("vms"), "a link joins at least two VMs".into()));
        }
        let only = |what: &str, set: bool, kind: Kind| -> Result<(), ConfigError> {
            if set && l.kind != kind {
                return Err(err(
                    None,
                    f(what),
                    format!("only a {:?} link has {what}", kind).to_lowercase(),
                ));
            }
            Ok(())
        };
        only("macs", !l.macs.is_empty(), Kind::Net)?;
        only("cids", !l.cids.is_empty(), Kind::Vsock)?;
        only("size", l.size.is_some(), Kind::Shmem)?;
        only("ipa", l.ipa.is_some(), Kind::Shmem)?;
        only("access", !l.access.is_empty(), Kind::Shmem)?;
        for (what, n) in [
            ("macs", l.macs.len()),
            ("cids", l.cids.len()),
            ("access", l.access.len()),
        ] {
            if n != 0 && n != l.vms.len() {
                return Err(err(
                    None,
                    f(what),
                    format!(
                        "{n} entries for {} VMs: give one per VM, in `vms` order",
                        l.vms.len()
                    ),
                ));
            }
        }
        let ipa = LINK_BASE + LINK_STRIDE * k as u64;
        let intid = LINK_INTID + k as u32;
        let (size, region_ipa) = match l.kind {
            Kind::Shmem => {
                let size = l.size.map(|s| s.0).unwrap_or(0);
                if size == 0 || size % 4096 != 0 {
                    return Err(err(
                        None,
                        f("size"),
                        "a shmem link needs a size, a non-zero multiple of 4 KiB".into(),
                    ));
                }
                let Some(at) = l.ipa else {
                    return Err(err(
                        None,
                        f("ipa"),
                        "a shmem link needs the guest-physical address of its region".into(),
                    ));
                };
                if at % 4096 != 0 || at.checked_add(size).is_none() {
                    return Err(err(
                        None,
                        f("ipa"),
                        format!("{at:#x} is not 4 KiB aligned or the region wraps"),
                    ));
                }
                (size, at)
            }
            _ => (0, 0),
        };
        let mut ports = Vec::new();
        let mut cids_seen = Vec::new();
        for (j, name) in l.vms.iter().enumerate() {
            let field = format!("link[{k}].vms[{j}]");
            let Some(vi) = vms.iter().position(|v| &v.name == name) else {
                return Err(err(None, field, format!("no VM named {name:?}")));
            };
            if l.vms[..j].contains(name) {
                return Err(err(Some(name), field, "named twice on this link".into()));
            }
            let vm = &vms[vi];
            // The device page and the region must be free in this VM.
            let mut claims = vec![("its device page".to_owned(), (ipa, LINK_STRIDE))];
            if l.kind == Kind::Shmem {
                claims.push(("its shared region".to_owned(), (region_ipa, size)));
            }
            for (what, range) in &claims {
                for (i, &(mi, ms, mphys, mid)) in vm.memory.iter().enumerate() {
                    if (!mid || mphys.is_some()) && overlaps(*range, (mi, ms)) {
                        return Err(err(
                            Some(name),
                            field.clone(),
                            format!("{what} at {:#x} overlaps the VM's memory[{i}]", range.0),
                        ));
                    }
                }
                for d in &vm.devices {
                    for &(db, ds) in board.devices.get(d).map(Vec::as_slice).unwrap_or(&[]) {
                        if overlaps(*range, (db, ds)) {
                            return Err(err(
                                Some(name),
                                field.clone(),
                                format!("{what} at {:#x} overlaps its device {d}", range.0),
                            ));
                        }
                    }
                }
                for (what2, wb, ws) in crate::config::EMULATED_WINDOWS {
                    if overlaps(*range, (*wb, *ws)) {
                        return Err(err(Some(name), field.clone(), format!("{what} overlaps {what2}")));
                    }
                }
                if let Some(t) = vm.test_device {
                    if overlaps(*range, (t, 0x1000)) {
                        return Err(err(
                            Some(name),
                            field.clone(),
                            format!("{what} overlaps its test device"),
                        ));
                    }
                }
            }
            if l.kind == Kind::Shmem && overlaps((region_ipa, size), LINK_WINDOW) {
                return Err(err(
                    None,
                    f("ipa"),
                    "the region overlaps the link device pages at 0xa800000".into(),
                ));
            }
            let mac = match l.macs.get(j) {
                Some(s) => {
                    let m = parse_mac(s).ok_or_else(|| {
                        err(
                            Some(name),
                            format!("link[{k}].macs[{j}]"),
                            format!("{s:?} is not a MAC like \"02:54:53:00:00:01\""),
                        )
                    })?;
                    if m[0] & 1 != 0 || m == [0; 6] {
                        return Err(err(
                            Some(name),
                            format!("link[{k}].macs[{j}]"),
                            format!("{s} is not a unicast MAC"),
                        ));
                    }
                    m
                }
                None => [0x02, 0x54, 0x53, k as u8, 0, j as u8 + 1],
            };
            if l.kind == Kind::Net {
                if let Some((_, other)) = macs_seen.iter().find(|(m, _)| *m == mac) {
                    return Err(err(
                        Some(name),
                        format!("link[{k}].macs[{j}]"),
                        format!("the same MAC as {other}"),
                    ));
                }
                macs_seen.push((mac, format!("{name} on link[{k}]")));
            }
            let cid = l.cids.get(j).copied().unwrap_or(3 + j as u32);
            if l.kind == Kind::Vsock {
                if let Some((_, other)) = vsock_vms.iter().find(|(n, _)| n == name) {
                    return Err(err(
                        Some(name),
                        field.clone(),
                        format!("already on vsock link[{other}]: a VM is on one vsock link at most"),
                    ));
                }
                vsock_vms.push((name.clone(), k));
                // 0-2 are the hypervisor, local and host; -1 is "any".
                if cid < 3 || cid == u32::MAX {
                    return Err(err(
                        Some(name),
                        format!("link[{k}].cids[{j}]"),
                        format!("{cid} is reserved: use 3 or more"),
                    ));
                }
                if cids_seen.contains(&cid) {
                    return Err(err(
                        Some(name),
                        format!("link[{k}].cids[{j}]"),
                        format!("CID {cid} is taken on this link"),
                    ));
                }
                cids_seen.push(cid);
            }
            let writable = match l.access.get(j).map(String::as_str) {
                None | Some("rw") => true,
                Some("ro") => false,
                Some(other) => {
                    return Err(err(
                        Some(name),
                        format!("link[{k}].access[{j}]"),
                        format!("{other:?}: use \"rw\" or \"ro\""),
                    ))
                }
            };
            ports.push(ResolvedPort {
                vm: vi as u32,
                ipa,
                intid,
                mac,
                cid,
                writable,
            });
        }
        out.push(ResolvedLink {
            kind: l.kind,
            size,
            region_ipa,
            ports,
        });
    }
    Ok(out)
}

/// Writes the `link@N` nodes of the config blob (`src/config/links.rs`).
pub fn write_blob(w: &mut vm_fdt::FdtWriter, links: &[ResolvedLink]) -> Result<()> {
    let e = |e: vm_fdt::Error| anyhow!("writing the config blob: {e}");
    for (i, l) in links.iter().enumerate() {
        let n = w.begin_node(&format!("link@{i}")).map_err(e)?;
        let kind = match l.kind {
            Kind::Net => "net",
            Kind::Vsock => "vsock",
            Kind::Shmem => "shmem",
        };
        w.property_string("kind", kind).map_err(e)?;
        w.property_array_u32("size", &[(l.size >> 32) as u32, l.size as u32])
            .map_err(e)?;
        let mut cells = Vec::new();
        for p in &l.ports {
            let (a, b, c) = match l.kind {
                Kind::Net => (
                    u32::from(u16::from_be_bytes([p.mac[0], p.mac[1]])),
                    u32::from_be_bytes([p.mac[2], p.mac[3], p.mac[4], p.mac[5]]),
                    0,
                ),
                Kind::Vsock => (p.cid, 0, 0),
                Kind::Shmem => (
                    (l.region_ipa >> 32) as u32,
                    l.region_ipa as u32,
                    u32::from(p.writable),
                ),
            };
            cells.extend_from_slice(&[p.vm, (p.ipa >> 32) as u32, p.ipa as u32, p.intid, a, b, c, 0]);
        }
        w.property_array_u32("ports", &cells).map_err(e)?;
        w.end_node(n).map_err(e)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Console, Psci, DEFAULT_RAM_IPA};

    fn vm(name: &str) -> ResolvedVm {
        ResolvedVm {
            name: name.into(),
            cpus: vec![1],
            memory: vec![(DEFAULT_RAM_IPA, 16 << 20, None, false)],
            kernel: vec![],
            initrd: None,
            dtb: None,
            bootargs: String::new(),
            console: Console::Virtual,
            psci: Psci::Hvc,
            devices: vec![],
            test_device: None,
            dma_unrestricted: false,
            scrub_at_boot: false,
        }
    }

    fn vms() -> Vec<ResolvedVm> {
        vec![vm("a"), vm("b"), vm("c")]
    }

    fn link(text: &str) -> Vec<LinkToml> {
        #[derive(Deserialize)]
        struct T {
            link: Vec<LinkToml>,
        }
        toml::from_str::<T>(text).unwrap().link
    }

    fn check_one(text: &str) -> Result<Vec<ResolvedLink>, ConfigError> {
        check("t.toml", &link(text), &vms(), &Board::default())
    }

    fn error(text: &str) -> String {
        check_one(text).unwrap_err().to_string()
    }

    #[test]
    fn a_net_link_gets_its_page_interrupt_and_default_macs() {
        let l = check_one(
            "[[link]]\nkind = \"net\"\nvms = [\"a\", \"c\"]\n[[link]]\nkind = \"net\"\nvms = [\"b\", \"c\"]",
        )
        .unwrap();
        assert_eq!(l[0].ports[0].vm, 0);
        assert_eq!(l[0].ports[1].vm, 2);
        assert_eq!(l[1].ports[0].ipa, 0x0a80_1000);
        assert_eq!(l[1].ports[1].intid, 113);
        assert_eq!(l[0].ports[1].mac, [2, 0x54, 0x53, 0, 0, 2]);
        assert_eq!(l[1].ports[0].mac, [2, 0x54, 0x53, 1, 0, 1]);
    }

    #[test]
    fn macs_are_parsed_and_checked() {
        let l = check_one("[[link]]\nkind = \"net\"\nvms = [\"a\", \"b\"]\nmacs = [\"02:00:00:00:00:0a\", \"02:00:00:00:00:0b\"]").unwrap();
        assert_eq!(l[0].ports[1].mac, [2, 0, 0, 0, 0, 0xb]);
        assert!(
            error("[[link]]\nkind = \"net\"\nvms = [\"a\", \"b\"]\nmacs = [\"02:00:00:00:00:0a\"]")
                .contains("link[0].macs: 1 entries for 2 VMs")
        );
        assert!(error(
            "[[link]]\nkind = \"net\"\nvms = [\"a\", \"b\"]\nmacs = [\"02:00:00:00:00:0a\", \"zz\"]"
        )
        .contains("link[0].macs[1]"));
        assert!(error("[[link]]\nkind = \"net\"\nvms = [\"a\", \"b\"]\nmacs = [\"03:00:00:00:00:0a\", \"02:00:00:00:00:0b\"]").contains("not a unicast MAC"));
        assert!(error("[[link]]\nkind = \"net\"\nvms = [\"a\", \"b\"]\nmacs = [\"02:00:00:00:00:0a\", \"02:00:00:00:00:0a\"]").contains("the same MAC"));
    }

    #[test]
    fn vms_must_exist_be_distinct_and_at_least_two() {
        assert!(error("[[link]]\nkind = \"net\"\nvms = [\"a\"]").contains("at least two VMs"));
        assert!(error("[[link]]\nkind = \"net\"\nvms = [\"a\", \"zz\"]")
            .contains("link[0].vms[1]: no VM named \"zz\""));
        assert!(error("[[link]]\nkind = \"net\"\nvms = [\"a\", \"a\"]").contains("named twice"));
    }

    #[test]
    fn fields_of_another_kind_are_refused() {
        assert!(
            error("[[link]]\nkind = \"net\"\nvms = [\"a\", \"b\"]\ncids = [3, 4]")
                .contains("only a vsock link has cids")
        );
        assert!(error("[[link]]\nkind = \"vsock\"\nvms = [\"a\", \"b\"]\nmacs = [\"02:00:00:00:00:0a\", \"02:00:00:00:00:0b\"]").contains("only a net link"));
        assert!(
            error("[[link]]\nkind = \"net\"\nvms = [\"a\", \"b\"]\nsize = \"4K\"")
                .contains("only a shmem link")
        );
    }

    #[test]
    fn vsock_cids_default_to_3_4_5_and_are_checked() {
        let l = check_one("[[link]]\nkind = \"vsock\"\nvms = [\"a\", \"b\", \"c\"]").unwrap();
        assert_eq!(l[0].kind, Kind::Vsock);
        assert_eq!(l[0].ports.iter().map(|p| p.cid).collect::<Vec<_>>(), [3, 4, 5]);
        let l =
            check_one("[[link]]\nkind = \"vsock\"\nvms = [\"a\", \"b\"]\ncids = [10, 0xfffffffe]").unwrap();
        assert_eq!(l[0].ports[1].cid, 0xffff_fffe);
        for bad in ["0", "1", "2", "0xffffffff"] {
            let e = error(&format!(
                "[[link]]\nkind = \"vsock\"\nvms = [\"a\", \"b\"]\ncids = [{bad}, 4]"
            ));
            assert!(
                e.contains("t.toml") && e.contains("link[0].cids[0]") && e.contains("reserved"),
                "{e}"
            );
        }
        assert!(
            error("[[link]]\nkind = \"vsock\"\nvms = [\"a\", \"b\"]\ncids = [3]")
                .contains("link[0].cids: 1 entries for 2 VMs")
        );
        assert!(
            error("[[link]]\nkind = \"vsock\"\nvms = [\"a\", \"b\"]\ncids = [3, 4, 5]")
                .contains("link[0].cids: 3 entries for 2 VMs")
        );
        let e = error("[[link]]\nkind = \"vsock\"\nvms = [\"a\", \"b\"]\n[[link]]\nkind = \"vsock\"\nvms = [\"c\", \"b\"]");
        assert!(
            e.contains("link[1].vms[1]") && e.contains("already on vsock link[0]"),
            "{e}"
        );
        assert!(
            error("[[link]]\nkind = \"vsock\"\nvms = [\"a\", \"b\"]\ncids = [2, 4]").contains("reserved")
        );
        assert!(error("[[link]]\nkind = \"vsock\"\nvms = [\"a\", \"b\"]\ncids = [7, 7]").contains("taken"));
    }

    #[test]
    fn a_shmem_region_needs_size_and_address_and_must_not_overlap() {
        let l = check_one("[[link]]\nkind = \"shmem\"\nvms = [\"a\", \"b\"]\nsize = \"64K\"\nipa = 0x7000_0000\naccess = [\"rw\", \"ro\"]").unwrap();
        assert_eq!((l[0].size, l[0].region_ipa), (0x1_0000, 0x7000_0000));
        assert!(l[0].ports[0].writable && !l[0].ports[1].writable);
        assert!(
            error("[[link]]\nkind = \"shmem\"\nvms = [\"a\", \"b\"]\nipa = 0x7000_0000")
                .contains("needs a size")
        );
        assert!(
            error("[[link]]\nkind = \"shmem\"\nvms = [\"a\", \"b\"]\nsize = \"64K\"")
                .contains("needs the guest-physical address")
        );
        assert!(
            error("[[link]]\nkind = \"shmem\"\nvms = [\"a\", \"b\"]\nsize = \"64K\"\nipa = 0x4000_0000")
                .contains("overlaps the VM's memory[0]")
        );
        assert!(error("[[link]]\nkind = \"shmem\"\nvms = [\"a\", \"b\"]\nsize = \"64K\"\nipa = 0x7000_0000\naccess = [\"rw\", \"wo\"]").contains("link[0].access[1]"));
    }

    #[test]
    fn the_device_page_must_be_free_in_every_vm() {
        let mut v = vms();
        v[1].memory.push((0x0a80_0000, 0x20_0000, None, false));
        let e = check(
            "t.toml",
            &link("[[link]]\nkind = \"net\"\nvms = [\"a\", \"b\"]"),
            &v,
            &Board::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains(
                "vm \"b\": link[0].vms[1]: its device page at 0xa800000 overlaps the VM's memory[1]"
            ),
            "{e}"
        );
    }

    #[test]
    fn the_blob_carries_eight_cells_per_port() {
        let l = check_one("[[link]]\nkind = \"net\"\nvms = [\"a\", \"b\"]").unwrap();
        let mut w = vm_fdt::FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        write_blob(&mut w, &l).unwrap();
        w.end_node(root).unwrap();
        let blob = w.finish().unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        let n = fdt.find_node("/link@0").unwrap();
        assert_eq!(n.property("kind").unwrap().as_str(), Some("net"));
        let cells: Vec<u32> = n
            .property("ports")
            .unwrap()
            .value
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(
            cells,
            [
                0,
                0,
                0x0a80_0000,
                112,
                0x0254,
                0x5300_0001,
                0,
                0,
                1,
                0,
                0x0a80_0000,
                112,
                0x0254,
                0x5300_0002,
                0,
                0
            ]
        );
    }
}
