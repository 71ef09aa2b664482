//! Links between VMs (`[[link]]`): the devices each VM on a link gets, its
//! virtual interrupts and DTB nodes, and the VM's RAM as those devices see
//! it. The switches live here, one per `net` link, for the VMs' lifetime.

use super::RamRegion;
use crate::config::links::{LinkConfig, LinkKind};
use crate::vdev::virtio::queue::{GuestMemory, OutsideRam};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// A link device as the guest's DTB describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestLink {
    pub kind: LinkKind,
    pub base: u64,
    pub intid: u32,
    /// shmem: the shared region (guest-physical base, size).
    pub region: Option<(u64, u64)>,
}

impl GuestLink {
    pub fn node_name(&self) -> String {
        match self.kind {
            LinkKind::Shmem => format!("doorbell@{:x}", self.base),
            _ => format!("virtio_mmio@{:x}", self.base),
        }
    }

    /// Its top-level DTB node names.
    pub fn node_names(&self) -> Vec<String> {
        let mut v = alloc::vec![self.node_name()];
        if let Some((base, _)) = self.region {
            v.push(format!("shmem@{base:x}"));
        }
        v
    }
}

/// The virtual interrupts VM `vm` (its index in the config) owns for its links.
pub fn interrupts(links: &[LinkConfig], vm: usize) -> Vec<u32> {
    links
        .iter()
        .filter_map(|l| l.port_of(vm))
        .map(|(_, p)| p.intid)
        .collect()
}

/// The link devices of VM `vm`, for its DTB.
pub fn guest_links(links: &[LinkConfig], vm: usize) -> Vec<GuestLink> {
    links
        .iter()
        .filter_map(|l| {
            let (_, p) = l.port_of(vm)?;
            Some(GuestLink {
                kind: l.kind,
                base: p.ipa,
                intid: p.intid,
                region: (l.kind == LinkKind::Shmem).then_some((p.region_ipa, l.size)),
            })
        })
        .collect()
}

const GIC_SPI: u32 = 0;
const IRQ_EDGE_RISING: u32 = 1;
const IRQ_LEVEL_HIGH: u32 = 4;

/// Writes the link devices' nodes (at the root) into a guest DTB.
pub fn write_dtb(w: &mut vm_fdt::FdtWriter, links: &[GuestLink]) -> Result<(), vm_fdt::Error> {
    for l in links {
        if let Some((base, size)) = l.region {
            let n = w.begin_node(&l.node_name())?;
            w.property_string("compatible", "tessera,doorbell")?;
            w.property_array_u64("reg", &[l.base, 0x1000])?;
            w.property_array_u32(
                "interrupts",
                &[GIC_SPI, l.intid.saturating_sub(32), IRQ_EDGE_RISING],
            )?;
            w.end_node(n)?;
            let n = w.begin_node(&format!("shmem@{base:x}"))?;
            w.property_string("compatible", "tessera,shmem")?;
            w.property_array_u64("reg", &[base, size])?;
            w.end_node(n)?;
            continue;
        }
        let n = w.begin_node(&l.node_name())?;
        w.property_string("compatible", "virtio,mmio")?;
        w.property_array_u64("reg", &[l.base, crate::vdev::virtio::mmio::WINDOW])?;
        // Level, not edge: an edge raised while the guest still has the
        // interrupt active would be lost (the vGIC lists a virtual SPI once;
        // the EOI maintenance of a level line is what samples it again).
        // Edge stalled a vsock transfer in the test suite.
        w.property_array_u32(
            "interrupts",
            &[GIC_SPI, l.intid.saturating_sub(32), IRQ_LEVEL_HIGH],
        )?;
        // The device is the hypervisor: its accesses are coherent.
        w.property_null("dma-coherent")?;
        w.end_node(n)?;
    }
    Ok(())
}

/// A VM's RAM as its emulated devices see it: guest-physical ranges wholly
/// inside its RAM regions, nothing else (no MMIO, no other VM's memory, no
/// hypervisor memory, no shared region).
pub struct VmRam {
    regions: Vec<RamRegion>,
    /// The VM's scrub state: a lazy block is scrubbed (and mapped) before
    /// the hypervisor reads or writes it, so it neither hands a peer what a
    /// previous owner left there nor has its own write erased by a later scrub.
    lazy: Option<alloc::sync::Arc<crate::mm::scrub::LazyRam>>,
}

impl VmRam {
    pub fn new(regions: &[RamRegion]) -> Self {
        Self {
            regions: regions.to_vec(),
            lazy: None,
        }
    }

    /// The same, for a VM whose RAM may be scrubbed lazily.
    pub fn with_lazy(mut self, lazy: alloc::sync::Arc<crate::mm::scrub::LazyRam>) -> Self {
        self.lazy = Some(lazy);
        self
    }

    /// Makes `[gpa, gpa + len)` scrubbed before the hypervisor touches it.
    fn ensure_scrubbed(&self, gpa: u64, len: u64) {
        #[cfg(target_os = "none")]
        if let Some(l) = &self.lazy {
            l.touch_range(gpa, len, &crate::vm::lazy::HwBlocks::TOUCH);
        }
        #[cfg(not(target_os = "none"))]
        let _ = (gpa, len, &self.lazy);
    }

    /// The physical address of `gpa` and how many bytes from it are
    /// contiguous in the same region (at most `len`).
    fn piece(&self, gpa: u64, len: u64) -> Option<(u64, u64)> {
        let r = self
            .regions
            .iter()
            .find(|r| gpa >= r.ipa && gpa - r.ipa < r.size)?;
        let off = gpa - r.ipa;
        Some((r.pa + off, (r.size - off).min(len)))
    }

    /// The physical address of `[gpa, gpa + len)` if it lies wholly in one
    /// region (every access of a one-region VM): one region scan, then one
    /// copy, instead of [`Self::pieces`]' check pass and copy pass.
    fn within(&self, gpa: u64, len: u64) -> Option<u64> {
        let r = self
            .regions
            .iter()
            .find(|r| gpa >= r.ipa && gpa - r.ipa < r.size)?;
        let off = gpa - r.ipa;
        (len <= r.size - off).then_some(r.pa + off)
    }

    /// Calls `f(pa, offset, n)` for each physically contiguous piece of
    /// `[gpa, gpa + len)`; `Err` if any byte is not RAM.
    fn pieces(&self, gpa: u64, len: u64, mut f: impl FnMut(u64, usize, usize)) -> Result<(), OutsideRam> {
        gpa.checked_add(len).ok_or(OutsideRam)?;
        let mut done = 0u64;
        // Each piece ends a region, so this loop runs at most once per region.
        for _ in 0..=self.regions.len() {
            if done == len {
                return Ok(());
            }
            let (pa, n) = self.piece(gpa + done, len - done).ok_or(OutsideRam)?;
            f(pa, done as usize, n as usize);
            done += n;
        }
        if done == len {
            Ok(())
        } else {
            Err(OutsideRam)
        }
    }
}

impl GuestMemory for VmRam {
    fn contains(&self, gpa: u64, len: u64) -> bool {
        self.within(gpa, len).is_some() || self.pieces(gpa, len, |_, _, _| {}).is_ok()
    }

    fn ready(&self, gpa: u64, len: u64) -> bool {
        self.contains(gpa, len) && self.lazy.as_ref().is_none_or(|l| l.is_ready(gpa, len))
    }

    fn prepare(&self, gpa: u64, len: u64) {
        if self.contains(gpa, len) {
            self.ensure_scrubbed(gpa, len);
        }
    }

    fn read_ready(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutsideRam> {
        let len = buf.len() as u64;
        match self.within(gpa, len) {
            Some(pa) if self.lazy.as_ref().is_none_or(|l| l.is_ready(gpa, len)) => {
                read_phys(pa, buf);
                Ok(())
            }
            Some(_) => Err(OutsideRam),
            None if self.ready(gpa, len) => self.read(gpa, buf),
            None => Err(OutsideRam),
        }
    }

    fn write_ready(&self, gpa: u64, data: &[u8]) -> Result<(), OutsideRam> {
        let len = data.len() as u64;
        match self.within(gpa, len) {
            Some(pa) if self.lazy.as_ref().is_none_or(|l| l.is_ready(gpa, len)) => {
                write_phys(pa, data);
                Ok(())
            }
            Some(_) => Err(OutsideRam),
            None if self.ready(gpa, len) => self.write(gpa, data),
            None => Err(OutsideRam),
        }
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutsideRam> {
        let len = buf.len() as u64;
        if let Some(pa) = self.within(gpa, len) {
            self.ensure_scrubbed(gpa, len);
            read_phys(pa, buf);
            return Ok(());
        }
        // Checked whole before any byte moves.
        if !self.contains(gpa, buf.len() as u64) {
            return Err(OutsideRam);
        }
        self.ensure_scrubbed(gpa, buf.len() as u64);
        self.pieces(gpa, buf.len() as u64, |pa, off, n| {
            if let Some(dst) = buf.get_mut(off..off + n) {
                read_phys(pa, dst);
            }
        })
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), OutsideRam> {
        let len = data.len() as u64;
        if let Some(pa) = self.within(gpa, len) {
            self.ensure_scrubbed(gpa, len);
            write_phys(pa, data);
            return Ok(());
        }
        if !self.contains(gpa, data.len() as u64) {
            return Err(OutsideRam);
        }
        self.ensure_scrubbed(gpa, data.len() as u64);
        self.pieces(gpa, data.len() as u64, |pa, off, n| {
            if let Some(src) = data.get(off..off + n) {
                write_phys(pa, src);
            }
        })
    }
}

#[cfg(target_os = "none")]
fn read_phys(pa: u64, dst: &mut [u8]) {
    // SAFETY: `pa..pa + dst.len()` lies in one of the VM's RAM regions
    // (checked by `pieces`): RAM the frame allocator gave this VM for its
    // whole life, identity mapped at EL2.
    unsafe { crate::mm::phys::copy_from(pa, dst) }
}

#[cfg(target_os = "none")]
fn write_phys(pa: u64, src: &[u8]) {
    // SAFETY: as for `read_phys`.
    unsafe { crate::mm::phys::copy_to(pa, src) }
}

// Host tests have no physical memory: the copies are only counted.
#[cfg(not(target_os = "none"))]
fn read_phys(_pa: u64, dst: &mut [u8]) {
    dst.fill(0);
}

#[cfg(not(target_os = "none"))]
fn write_phys(_pa: u64, _src: &[u8]) {}

#[cfg(target_os = "none")]
pub use self::switches::{attach, init, shared_regions};

#[cfg(target_os = "none")]
mod switches {
    use super::VmRam;
    use crate::config::links::{LinkConfig, LinkKind};
    use crate::mm::FrameAllocator;
    use crate::vdev::shmem::DoorbellLink;
    use crate::vdev::vgic::Vgic;
    use crate::vdev::virtio::net::{NetDevice, NetPort, Switch};
    use crate::vdev::virtio::vsock::{VsockDevice, VsockLink, VsockPort};
    use crate::vm::mmio::MmioBus;
    use crate::vm::RamRegion;
    use alloc::boxed::Box;
    use alloc::format;
    use alloc::string::String;
    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use spin::Once;

    /// The switch of each `net` link (None for other kinds), by link index.
    static SWITCHES: Once<Vec<Option<Arc<Switch>>>> = Once::new();
    /// Each `vsock` link's switch (None for other kinds), by link index.
    static VSOCKS: Once<Vec<Option<Arc<VsockLink>>>> = Once::new();
    /// A shmem link's doorbells and the physical base of its region.
    type Shared = (Arc<DoorbellLink>, u64);
    /// Each `shmem` link's (None for other kinds), by link index.
    static SHMEM: Once<Vec<Option<Shared>>> = Once::new();

    /// Builds the links' switches and allocates their shared regions (once,
    /// before any VM is built). A region that does not fit is logged; its
    /// VMs are then not started.
    pub fn init(links: &[LinkConfig], frames: &mut FrameAllocator) {
        SWITCHES.call_once(|| {
            links
                .iter()
                .map(|l| (l.kind == LinkKind::Net).then(|| Switch::new(l.ports.len())))
                .collect()
        });
        VSOCKS.call_once(|| {
            links
                .iter()
                .map(|l| {
                    (l.kind == LinkKind::Vsock)
                        .then(|| VsockLink::new(&l.ports.iter().map(|p| p.cid).collect::<Vec<_>>()))
                })
                .collect()
        });
        SHMEM.call_once(|| {
            links
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    if l.kind != LinkKind::Shmem {
                        return None;
                    }
                    let pa = match frames.alloc(l.size, 0x1000) {
                        Ok(pa) => pa.0,
                        Err(e) => {
                            log::error!("link {i}: shared region of {} KiB: {e}", l.size >> 10);
                            return None;
                        }
                    };
                    // SAFETY: just allocated to this link, identity mapped;
                    // no VM maps it yet.
                    unsafe { crate::mm::phys::zero_to_poc(pa, l.size) };
                    Some((DoorbellLink::new(l.ports.len()), pa))
                })
                .collect()
        });
    }

    /// The shared regions VM `vm` maps: (guest-physical, physical, size, writable).
    pub fn shared_regions(links: &[LinkConfig], vm: usize) -> Result<Vec<(u64, u64, u64, bool)>, String> {
        let shmem = SHMEM.get().map(Vec::as_slice).unwrap_or(&[]);
        let mut out = Vec::new();
        for (i, l) in links.iter().enumerate() {
            let Some((_, p)) = l.port_of(vm) else { continue };
            if l.kind != LinkKind::Shmem {
                continue;
            }
            let Some(Some((_, pa))) = shmem.get(i) else {
                return Err(format!("link {i}: its shared region could not be allocated"));
            };
            out.push((p.region_ipa, *pa, l.size, p.writable));
        }
        Ok(out)
    }

    /// Gives VM `vm` (config index, named `name`) its link devices on `mmio`.
    pub fn attach(
        vm: usize,
        name: &str,
        links: &[LinkConfig],
        ram: &[RamRegion],
        lazy: &Arc<crate::mm::scrub::LazyRam>,
        vgic: &Arc<Vgic>,
        mmio: &mut MmioBus,
    ) -> Result<(), String> {
        let switches = SWITCHES.get().map(Vec::as_slice).unwrap_or(&[]);
        for (i, link) in links.iter().enumerate() {
            let Some((slot, port)) = link.port_of(vm) else {
                continue;
            };
            match link.kind {
                LinkKind::Net => {
                    let Some(Some(switch)) = switches.get(i) else {
                        return Err(format!("link {i}: no switch"));
                    };
                    let Some(net_port) = NetPort::new(port.mac, switch.clone(), slot) else {
                        return Err(format!(
                            "link {i}: no room in the hypervisor's heap for the port's {} KiB frame buffer",
                            crate::vdev::virtio::net::MAX_FRAME >> 10
                        ));
                    };
                    let dev = Arc::new(NetDevice::new(
                        name,
                        net_port,
                        Box::new(VmRam::new(ram).with_lazy(lazy.clone())),
                        Some((vgic.clone(), port.intid)),
                    ));
                    mmio.add(port.ipa, Box::new(dev.clone()))
                        .map_err(|a| format!("link {i}: device overlaps at {a:#x}"))?;
                    // Its transmit completions wait for the next frame in.
                    dev.transport.moderate(dev.clone());
                    switch.attach(slot, dev);
                    log::info!(
                        "VM {name}: net link {i} at {:#x} (INTID {}), MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                        port.ipa,
                        port.intid,
                        port.mac[0],
                        port.mac[1],
                        port.mac[2],
                        port.mac[3],
                        port.mac[4],
                        port.mac[5]
                    );
                }
                LinkKind::Shmem => {
                    let shmem = SHMEM.get().map(Vec::as_slice).unwrap_or(&[]);
                    let Some(Some((bells, _))) = shmem.get(i) else {
                        return Err(format!("link {i}: its shared region could not be allocated"));
                    };
                    let target: Arc<dyn crate::vdev::shmem::Ringer> = vgic.clone();
                    let bell = bells
                        .doorbell(
                            slot,
                            target,
                            port.intid,
                            (port.region_ipa, link.size),
                            port.writable,
                        )
                        .ok_or_else(|| format!("link {i}: more than 32 VMs"))?;
                    mmio.add(port.ipa, Box::new(bell))
                        .map_err(|a| format!("link {i}: doorbell overlaps at {a:#x}"))?;
                    log::info!(
                        "VM {name}: shmem link {i}: region {:#x}+{:#x} ({}), doorbell {slot} at {:#x} (INTID {})",
                        port.region_ipa,
                        link.size,
                        if port.writable { "rw" } else { "ro" },
                        port.ipa,
                        port.intid
                    );
                }
                LinkKind::Vsock => {
                    let vsocks = VSOCKS.get().map(Vec::as_slice).unwrap_or(&[]);
                    let Some(Some(vlink)) = vsocks.get(i) else {
                        return Err(format!("link {i}: no vsock switch"));
                    };
                    let Some(vport) = VsockPort::new(port.cid, vlink.clone(), slot) else {
                        return Err(format!(
                            "link {i}: no room in the hypervisor's heap for the vsock port"
                        ));
                    };
                    let dev = Arc::new(VsockDevice::new(
                        name,
                        vport,
                        Box::new(VmRam::new(ram)),
                        Some((vgic.clone(), port.intid)),
                    ));
                    mmio.add(port.ipa, Box::new(dev.clone()))
                        .map_err(|a| format!("link {i}: device overlaps at {a:#x}"))?;
                    vlink.attach(slot, dev);
                    log::info!(
                        "VM {name}: vsock link {i} at {:#x} (INTID {}), CID {}",
                        port.ipa,
                        port.intid,
                        port.cid
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::links::PortConfig;

    fn port(vm: usize, ipa: u64, intid: u32) -> PortConfig {
        PortConfig {
            vm,
            ipa,
            intid,
            mac: [2, 0, 0, 0, 0, vm as u8],
            cid: 3,
            region_ipa: 0,
            writable: false,
        }
    }

    #[test]
    fn a_vm_gets_only_the_links_it_is_named_in() {
        let links = [
            LinkConfig {
                kind: LinkKind::Net,
                size: 0,
                ports: alloc::vec![port(0, 0x0a80_0000, 112), port(2, 0x0a80_0000, 112)],
            },
            LinkConfig {
                kind: LinkKind::Net,
                size: 0,
                ports: alloc::vec![port(1, 0x0a80_1000, 113), port(2, 0x0a80_1000, 113)],
            },
        ];
        assert_eq!(interrupts(&links, 0), [112]);
        assert_eq!(interrupts(&links, 1), [113]);
        assert_eq!(interrupts(&links, 2), [112, 113]);
        assert!(interrupts(&links, 3).is_empty());
        let g = guest_links(&links, 2);
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].node_name(), "virtio_mmio@a801000");
    }

    #[test]
    fn device_memory_is_the_vms_ram_and_nothing_else() {
        let ram = VmRam::new(&[
            RamRegion {
                ipa: 0x4000_0000,
                pa: 0x8000_0000,
                size: 0x10_0000,
            },
            RamRegion {
                ipa: 0x4010_0000,
                pa: 0x9000_0000,
                size: 0x10_0000,
            },
        ]);
        assert!(ram.contains(0x4000_0000, 0x20_0000));
        // Spanning the two regions is fine: they are contiguous in the guest.
        assert!(ram.contains(0x400f_fff0, 0x20));
        let mut pieces = Vec::new();
        ram.pieces(0x400f_fff0, 0x20, |pa, off, n| pieces.push((pa, off, n)))
            .unwrap();
        assert_eq!(pieces, [(0x800f_fff0, 0, 0x10), (0x9000_0000, 0x10, 0x10)]);
        assert!(!ram.contains(0x3fff_fff0, 0x20));
        assert!(!ram.contains(0x401f_fff0, 0x20));
        assert!(!ram.contains(0x0900_0000, 4));
        assert!(!ram.contains(u64::MAX - 4, 16));
        assert!(ram.contains(0x4000_0000, 0));
        let mut b = [1u8; 4];
        assert_eq!(ram.read(0x0900_0000, &mut b), Err(OutsideRam));
        assert_eq!(b, [1; 4], "nothing copied");
        // The one-region shortcut: only a range wholly inside one region.
        assert_eq!(ram.within(0x4000_0010, 0x10), Some(0x8000_0010));
        assert_eq!(ram.within(0x4010_0000, 0x10_0000), Some(0x9000_0000));
        assert_eq!(
            ram.within(0x400f_fff0, 0x20),
            None,
            "spans two: the piecewise path"
        );
        assert_eq!(ram.within(0x401f_fff0, 0x20), None);
        assert_eq!(ram.within(u64::MAX - 4, 16), None);
        assert_eq!(ram.read_ready(0x401f_fffe, &mut b), Err(OutsideRam));
        assert_eq!(ram.write_ready(0x3fff_fffe, &b), Err(OutsideRam));
        assert_eq!(b, [1; 4], "nothing copied");
        assert_eq!(ram.read_ready(0x400f_fffe, &mut b), Ok(()), "spanning, piecewise");
    }

    #[test]
    fn another_vms_view_refuses_unscrubbed_blocks_and_scrubs_nothing() {
        use crate::vdev::virtio::queue::Foreign;
        let lazy = alloc::sync::Arc::new(crate::mm::scrub::LazyRam::new(
            &[(0x4000_0000, 0x8000_0000, 4 << 20)],
            true,
        ));
        let region = RamRegion {
            ipa: 0x4000_0000,
            pa: 0x8000_0000,
            size: 4 << 20,
        };
        let ram = VmRam::new(&[region]).with_lazy(lazy.clone());
        assert!(ram.contains(0x4000_0000, 64));
        assert!(!ram.ready(0x4000_0000, 64));
        let peer = Foreign(&ram);
        assert_eq!(peer.write(0x4000_0000, &[1; 64]), Err(OutsideRam));
        let mut b = [0u8; 4];
        assert_eq!(peer.read(0x4000_0000, &mut b), Err(OutsideRam));
        assert!(!lazy.is_ready(0x4000_0000, 64), "the block is still fresh");
        assert!(peer.contains(0x4000_0000, 64), "yet it is the VM's RAM");
    }

    #[test]
    fn link_nodes_are_virtio_mmio_with_their_spi() {
        let mut w = vm_fdt::FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        write_dtb(
            &mut w,
            &[GuestLink {
                kind: LinkKind::Net,
                base: 0x0a80_0000,
                intid: 112,
                region: None,
            }],
        )
        .unwrap();
        w.end_node(root).unwrap();
        let blob = w.finish().unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        let n = fdt.find_node("/virtio_mmio@a800000").unwrap();
        assert_eq!(n.property("compatible").unwrap().as_str(), Some("virtio,mmio"));
        let irq: Vec<u8> = n.property("interrupts").unwrap().value.to_vec();
        assert_eq!(irq, [0, 0, 0, 0, 0, 0, 0, 80, 0, 0, 0, 4]);
        assert!(n.property("dma-coherent").is_some());
    }
}
