//! Enabling device-tree nodes in a flattened device tree, as U-Boot's
//! `fdt set <node> status okay` would: what a board folder does when the
//! board's DTB leaves a device disabled that the board's VMs are given (the
//! i.MX 8M Plus EVK's UART1, wired on QEMU's model, is `disabled` in Debian's DTB).
//!
//! The tree is rewritten token by token (the `status` value changes length);
//! the memory reservation block and the strings block are kept as they are.

use anyhow::{bail, ensure, Context, Result};

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
const HEADER_LEN: usize = 40;

fn be32(b: &[u8], at: usize) -> Result<u32> {
    let bytes = b.get(at..at + 4).context("DTB truncated")?;
    Ok(u32::from_be_bytes(bytes.try_into()?))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Returns `dtb` with `status = "okay"` in each node of `paths` (full paths,
/// e.g. `/soc@0/bus@30800000/serial@30860000`). A node without `status` is
/// already enabled and left alone; a path that is not in the tree is an error.
pub fn enable_nodes(dtb: &[u8], paths: &[String]) -> Result<Vec<u8>> {
    edit(dtb, paths, &[])
}

/// [`enable_nodes`], and removes the properties listed per node in `remove`: (node path,
/// property names), as `fdt rm <node> <property>` would (e.g. a UART's `dmas`, when the
/// DMA engine stays with nobody).
pub fn edit(dtb: &[u8], enable: &[String], remove: &[(String, Vec<String>)]) -> Result<Vec<u8>> {
    edit_with_disable(dtb, enable, &[], remove)
}

/// [`edit`], and gives each node of `disable` `status = "disabled"` (added
/// where it has no `status`), as `fdt set <node> status disabled` would: a
/// device of the board's DTB that the board's model lacks and that no VM
/// may be given (the Raspberry Pi 4's HDMI blocks on QEMU's `raspi4b`).
pub fn edit_with_disable(
    dtb: &[u8],
    enable: &[String],
    disable: &[String],
    remove: &[(String, Vec<String>)],
) -> Result<Vec<u8>> {
    if enable.is_empty() && disable.is_empty() && remove.is_empty() {
        return Ok(dtb.to_vec());
    }
    if let Some(both) = enable.iter().find(|p| disable.contains(p)) {
        bail!("{both} is both enabled and disabled");
    }
    rewrite(dtb, enable, disable, remove)
}

/// Returns `dtb` without its NOP tokens, which QEMU leaves where it deleted nodes (its
/// own `/memory`, say) and which the `fdt` crate cannot walk over.
pub fn without_nops(dtb: &[u8]) -> Result<Vec<u8>> {
    rewrite(dtb, &[], &[], &[])
}

fn rewrite(
    dtb: &[u8],
    paths: &[String],
    disable: &[String],
    remove: &[(String, Vec<String>)],
) -> Result<Vec<u8>> {
    ensure!(be32(dtb, 0)? == MAGIC, "not a flattened device tree");
    let off_struct = be32(dtb, 8)? as usize;
    let off_strings = be32(dtb, 12)? as usize;
    let off_rsvmap = be32(dtb, 16)? as usize;
    let size_strings = be32(dtb, 32)? as usize;
    let size_struct = be32(dtb, 36)? as usize;
    let strings = dtb
        .get(off_strings..off_strings + size_strings)
        .context("DTB strings block out of bounds")?;
    let name_at = |off: usize| -> Result<&[u8]> {
        let s = strings.get(off..).context("property name out of bounds")?;
        Ok(&s[..s
            .iter()
            .position(|&c| c == 0)
            .context("unterminated property name")?])
    };

    // Where "status" is in the strings block, appended if nowhere.
    let mut strings = strings.to_vec();
    let status_off = if disable.is_empty() {
        0
    } else {
        match strings.windows(7).position(|w| w == b"status\0") {
            Some(at) => at,
            None => {
                strings.extend_from_slice(b"status\0");
                strings.len() - 7
            }
        }
    };
    let strings = &strings[..];
    let mut found_off = vec![false; disable.len()];

    let mut out_struct = Vec::with_capacity(size_struct + 16);
    let mut path: Vec<String> = Vec::new();
    let mut found = vec![false; paths.len()];
    let mut found_rm = vec![false; remove.len()];
    let mut p = off_struct;
    let end = off_struct + size_struct;
    loop {
        ensure!(p < end, "DTB structure block has no END token");
        let token = be32(dtb, p)?;
        match token {
            BEGIN_NODE => {
                let rest = dtb.get(p + 4..end).context("node name out of bounds")?;
                let len = rest
                    .iter()
                    .position(|&c| c == 0)
                    .context("unterminated node name")?;
                let name = String::from_utf8_lossy(&rest[..len]).into_owned();
                let next = p + 4 + align4(len + 1);
                out_struct.extend_from_slice(&dtb[p..next]);
                path.push(name);
                let full = full_path(&path);
                if let Some(i) = paths.iter().position(|q| *q == full) {
                    found[i] = true;
                }
                if let Some(i) = remove.iter().position(|(q, _)| *q == full) {
                    found_rm[i] = true;
                }
                if let Some(i) = disable.iter().position(|q| *q == full) {
                    found_off[i] = true;
                    // Its own `status`, if any, is dropped below.
                    let value = b"disabled\0";
                    out_struct.extend_from_slice(&PROP.to_be_bytes());
                    out_struct.extend_from_slice(&(value.len() as u32).to_be_bytes());
                    out_struct.extend_from_slice(&(status_off as u32).to_be_bytes());
                    out_struct.extend_from_slice(value);
                    out_struct.resize(align4(out_struct.len()), 0);
                }
                p = next;
            }
            END_NODE => {
                path.pop();
                out_struct.extend_from_slice(&dtb[p..p + 4]);
                p += 4;
            }
            PROP => {
                let len = be32(dtb, p + 4)? as usize;
                let nameoff = be32(dtb, p + 8)? as usize;
                let next = p + 12 + align4(len);
                ensure!(next <= end, "property out of bounds");
                let here = full_path(&path);
                let name = name_at(nameoff)?;
                let in_target = paths.contains(&here);
                let removed = remove
                    .iter()
                    .any(|(q, names)| *q == here && names.iter().any(|n| n.as_bytes() == name));
                let disabled = name == b"status" && disable.contains(&here);
                if removed || disabled {
                    // Dropped (a disabled node's own status was replaced above).
                } else if in_target && name == b"status" {
                    let value = b"okay\0";
                    out_struct.extend_from_slice(&PROP.to_be_bytes());
                    out_struct.extend_from_slice(&(value.len() as u32).to_be_bytes());
                    out_struct.extend_from_slice(&(nameoff as u32).to_be_bytes());
                    out_struct.extend_from_slice(value);
                    out_struct.resize(align4(out_struct.len()), 0);
                } else {
                    out_struct.extend_from_slice(&dtb[p..next]);
                }
                p = next;
            }
            NOP => p += 4,
            END => {
                out_struct.extend_from_slice(&dtb[p..p + 4]);
                break;
            }
            t => bail!("unknown DTB token {t:#x} at {p:#x}"),
        }
    }
    if let Some(i) = found.iter().position(|f| !f) {
        bail!("the board DTB has no node {}", paths[i]);
    }
    if let Some(i) = found_rm.iter().position(|f| !f) {
        bail!("the board DTB has no node {}", remove[i].0);
    }
    if let Some(i) = found_off.iter().position(|f| !f) {
        bail!("the board DTB has no node {}", disable[i]);
    }

    // Header, reservation map (up to its terminating zero entry), structure, strings.
    let mut rsv_end = off_rsvmap;
    loop {
        let entry = dtb
            .get(rsv_end..rsv_end + 16)
            .context("reservation map out of bounds")?;
        rsv_end += 16;
        if entry.iter().all(|&b| b == 0) {
            break;
        }
    }
    let rsvmap = &dtb[off_rsvmap..rsv_end];
    let mut out = dtb[..HEADER_LEN].to_vec();
    let new_rsvmap = align8(HEADER_LEN);
    out.resize(new_rsvmap, 0);
    out.extend_from_slice(rsvmap);
    let new_struct = out.len();
    out.extend_from_slice(&out_struct);
    let new_strings = out.len();
    out.extend_from_slice(strings);
    let total = out.len();
    let mut set = |at: usize, v: usize| out[at..at + 4].copy_from_slice(&(v as u32).to_be_bytes());
    set(4, total);
    set(8, new_struct);
    set(12, new_strings);
    set(16, new_rsvmap);
    set(32, strings.len());
    set(36, out_struct.len());
    Ok(out)
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

fn full_path(path: &[String]) -> String {
    let parts: Vec<&str> = path.iter().skip(1).map(String::as_str).collect();
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UART1: &str = "/soc@0/bus@30800000/serial@30860000";

    fn status<'a>(fdt: &'a fdt::Fdt, path: &str) -> Option<&'a str> {
        fdt.find_node(path)?.property("status")?.as_str()
    }

    #[test]
    fn enables_a_disabled_uart_of_the_imx8mp_evk_and_nothing_else() {
        let dtb = std::fs::read(crate::paths::root().join("tests/dtbs/imx8mp-evk.dtb")).unwrap();
        let before = fdt::Fdt::new(&dtb).unwrap();
        assert_eq!(status(&before, UART1), Some("disabled"));
        let patched = enable_nodes(&dtb, &[UART1.to_owned()]).unwrap();
        let after = fdt::Fdt::new(&patched).unwrap();
        assert_eq!(status(&after, UART1), Some("okay"));
        let uart3 = "/soc@0/bus@30800000/serial@30880000";
        assert_eq!(status(&after, uart3), Some("disabled"));
        assert_eq!(before.all_nodes().count(), after.all_nodes().count());
        assert_eq!(
            after.chosen().stdout().map(|s| s.name),
            before.chosen().stdout().map(|s| s.name)
        );
        assert!(enable_nodes(&dtb, &["/soc@0/nonexistent".to_owned()]).is_err());
        let rm = [(UART1.to_owned(), vec!["dmas".to_owned(), "dma-names".to_owned()])];
        let edited = edit(&dtb, &[UART1.to_owned()], &rm).unwrap();
        let after = fdt::Fdt::new(&edited).unwrap();
        let uart = after.find_node(UART1).unwrap();
        assert!(uart.property("dmas").is_none() && uart.property("dma-names").is_none());
        assert_eq!(status(&after, UART1), Some("okay"));
        assert!(uart.property("clocks").is_some());
        let uart3 = after.find_node(uart3).unwrap();
        assert!(uart3.property("dmas").is_some());
        assert_eq!(enable_nodes(&dtb, &[]).unwrap(), dtb);
    }

    #[test]
    fn disables_nodes_with_and_without_a_status() {
        let dtb = std::fs::read(crate::paths::root().join("tests/dtbs/bcm2711-rpi-4-b.dtb")).unwrap();
        let clock = "/soc/clock@7ef00000".to_owned();
        let hdmi = "/soc/hdmi@7ef00700".to_owned();
        let before = fdt::Fdt::new(&dtb).unwrap();
        assert_eq!(status(&before, &clock), None, "Debian's DTB gives it no status");
        assert_eq!(status(&before, &hdmi), Some("okay"));
        let patched = edit_with_disable(&dtb, &[], &[clock.clone(), hdmi.clone()], &[]).unwrap();
        let after = fdt::Fdt::new(&patched).unwrap();
        assert_eq!(status(&after, &clock), Some("disabled"));
        assert_eq!(status(&after, &hdmi), Some("disabled"));
        for path in [&clock, &hdmi] {
            let node = after.find_node(path).unwrap();
            let statuses = node.properties().filter(|p| p.name == "status").count();
            assert_eq!(statuses, 1, "{path}: one status property");
            assert!(node.property("reg").is_some() && node.property("compatible").is_some());
        }
        assert_eq!(before.all_nodes().count(), after.all_nodes().count());
        assert_eq!(status(&after, "/soc/serial@7e215040"), Some("okay"));
        assert!(edit_with_disable(&dtb, &[], &["/soc/nothing@0".to_owned()], &[]).is_err());
        let uart0 = "/soc/serial@7e201000".to_owned();
        assert_eq!(status(&after, &uart0), Some("okay"));
        let both = std::slice::from_ref(&uart0);
        assert!(edit_with_disable(&dtb, both, both, &[]).is_err());
        // A tree whose strings lack "status" gets it appended.
        let mut w = vm_fdt::FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        let dev = w.begin_node("dev@0").unwrap();
        w.property_u32("reg", 0).unwrap();
        w.end_node(dev).unwrap();
        w.end_node(root).unwrap();
        let tiny = w.finish().unwrap();
        let patched = edit_with_disable(&tiny, &[], &["/dev@0".to_owned()], &[]).unwrap();
        let after = fdt::Fdt::new(&patched).unwrap();
        assert_eq!(status(&after, "/dev@0"), Some("disabled"));
        assert!(after.find_node("/dev@0").unwrap().property("reg").is_some());
    }

    #[test]
    fn nops_are_dropped_and_the_tree_kept() {
        let dtb = std::fs::read(crate::paths::root().join("tests/dtbs/zynqmp-zcu102-rev1.0.dtb")).unwrap();
        // Turn the first property after the root node into NOPs, as QEMU's delete does.
        let off_struct = be32(&dtb, 8).unwrap() as usize;
        let mut with_nops = dtb.clone();
        let name_end = with_nops[off_struct + 4..].iter().position(|&c| c == 0).unwrap();
        let prop = off_struct + 4 + align4(name_end + 1);
        let len = be32(&dtb, prop + 4).unwrap() as usize;
        for w in (prop..prop + 12 + align4(len)).step_by(4) {
            with_nops[w..w + 4].copy_from_slice(&NOP.to_be_bytes());
        }
        let clean = without_nops(&with_nops).unwrap();
        assert_eq!(clean.len(), dtb.len() - 12 - align4(len));
        let fdt = fdt::Fdt::new(&clean).unwrap();
        assert_eq!(
            fdt.all_nodes().count(),
            fdt::Fdt::new(&dtb).unwrap().all_nodes().count()
        );
    }
}
