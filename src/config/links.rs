//! Links between VMs in the config blob: one `link@N` node per `[[link]]`
//! xtask checked. Each names its kind and, per VM on it, where that VM sees
//! the link's device and which virtual interrupt it raises:
//!
//! ```text
//! link@0 {
//!     kind = "net";                 // "net" | "vsock" | "shmem"
//!     size = <hi lo>;               // shmem: the region's size
//!     ports = <vm ipa-hi ipa-lo intid a b c d> ...;
//! };
//! ```
//! `a b c d` per kind: net `mac-hi16 mac-lo32 0 0`; vsock `cid 0 0 0`;
//! shmem `region-ipa-hi region-ipa-lo writable 0`.

use super::{cells, err, string, u64_of, ConfigError};
use crate::dt::Node;
use alloc::vec::Vec;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Net,
    Vsock,
    Shmem,
}

/// One VM's end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// Index of the VM in the config.
    pub vm: usize,
    /// Guest-physical base of its device page (virtio-mmio transport or doorbell).
    pub ipa: u64,
    /// The virtual interrupt (INTID) its device raises.
    pub intid: u32,
    pub mac: [u8; 6],
    pub cid: u32,
    /// shmem: where the region appears and whether the VM may write it.
    pub region_ipa: u64,
    pub writable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    pub kind: LinkKind,
    /// shmem: the region's size in bytes.
    pub size: u64,
    pub ports: Vec<PortConfig>,
}

const PORT_CELLS: usize = 8;

/// Reads every `link@N` node under `root`; `vms` is how many VMs there are.
pub fn parse(root: &Node, vms: usize) -> Result<Vec<LinkConfig>, ConfigError> {
    let mut links = Vec::new();
    for n in root.children().filter(|n| n.name.starts_with("link@")) {
        let kind = match string(&n, "kind").as_deref() {
            Some("net") => LinkKind::Net,
            Some("vsock") => LinkKind::Vsock,
            Some("shmem") => LinkKind::Shmem,
            other => {
                return Err(err(
                    None,
                    alloc::format!("{}: unknown link kind {other:?}", n.name),
                ))
            }
        };
        let size = cells(&n, "size")
            .and_then(|c| Some(u64_of(*c.first()?, *c.get(1)?)))
            .unwrap_or(0);
        let raw = cells(&n, "ports").unwrap_or_default();
        if raw.is_empty() || !raw.len().is_multiple_of(PORT_CELLS) {
            return Err(err(
                None,
                alloc::format!("{}: ports must be {PORT_CELLS}-cell entries", n.name),
            ));
        }
        let mut ports = Vec::new();
        for c in raw.chunks_exact(PORT_CELLS) {
            let &[vm, ih, il, intid, a, b, cc, _] = c else {
                continue;
            };
            if vm as usize >= vms {
                return Err(err(None, alloc::format!("{}: VM {vm} does not exist", n.name)));
            }
            let mut mac = [0u8; 6];
            mac[..2].copy_from_slice(&(a as u16).to_be_bytes());
            mac[2..].copy_from_slice(&b.to_be_bytes());
            ports.push(PortConfig {
                vm: vm as usize,
                ipa: u64_of(ih, il),
                intid,
                mac,
                cid: a,
                region_ipa: u64_of(a, b),
                writable: cc != 0,
            });
        }
        links.push(LinkConfig { kind, size, ports });
    }
    Ok(links)
}

impl LinkConfig {
    /// This link's port of VM `vm`, and its index on the link.
    pub fn port_of(&self, vm: usize) -> Option<(usize, &PortConfig)> {
        self.ports.iter().enumerate().find(|(_, p)| p.vm == vm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_fdt::FdtWriter;

    fn blob(kind: &str, ports: &[u32]) -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        let n = w.begin_node("link@0").unwrap();
        w.property_string("kind", kind).unwrap();
        w.property_array_u32("size", &[0, 0x1000]).unwrap();
        w.property_array_u32("ports", ports).unwrap();
        w.end_node(n).unwrap();
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn a_net_link_reads_back_with_its_macs() {
        let b = blob(
            "net",
            &[
                0,
                0,
                0x0a80_0000,
                112,
                0x0254,
                0x5300_0000,
                0,
                0,
                1,
                0,
                0x0a80_0000,
                112,
                0x0254,
                0x5300_0001,
                0,
                0,
            ],
        );
        let fdt = crate::dt::Tree::new(&b).unwrap();
        let links = parse(&fdt.root(), 2).unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].kind, LinkKind::Net);
        assert_eq!(links[0].ports[1].mac, [0x02, 0x54, 0x53, 0, 0, 1]);
        assert_eq!(links[0].ports[1].ipa, 0x0a80_0000);
        assert_eq!(links[0].port_of(1).unwrap().0, 1);
        assert!(links[0].port_of(2).is_none());
    }

    #[test]
    fn a_link_to_a_missing_vm_or_of_unknown_kind_is_refused() {
        let b = blob("net", &[5, 0, 0x0a80_0000, 112, 0, 0, 0, 0]);
        let fdt = crate::dt::Tree::new(&b).unwrap();
        assert!(parse(&fdt.root(), 2).is_err());
        let b = blob("tube", &[0, 0, 0x0a80_0000, 112, 0, 0, 0, 0]);
        let fdt = crate::dt::Tree::new(&b).unwrap();
        assert!(parse(&fdt.root(), 2).is_err());
        let b = blob("shmem", &[0, 0, 0x0a80_0000, 112, 0, 0x5000_0000, 1]);
        let fdt = crate::dt::Tree::new(&b).unwrap();
        assert!(parse(&fdt.root(), 2).is_err());
    }
}
