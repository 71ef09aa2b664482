//! Bus address translation: a `reg` is in its parent bus's address space,
//! and each bus up to the root maps that space into its own through
//! `ranges` (Devicetree Specification v0.4, 2.3.8). Real boards put their
//! devices under such buses (`/axi` on ZynqMP, `/soc@0/bus@...` on i.MX 8M,
//! `/soc` with an offset window on the Raspberry Pi 4).
//!
//! Pure and allocation free: usable before the heap exists. xtask's config
//! check includes this very file (`#[path]`), so the device regions it
//! checks a config against are the ones the hypervisor maps; each side
//! hands its own nodes in through [`DtNode`] (the hypervisor its
//! `dt::Tree`'s, xtask the `fdt` crate's).

use super::PhysRange;

/// What the translation reads of a device-tree node.
pub trait DtNode<'a>: Copy {
    /// The raw value of property `name`.
    fn prop(&self, name: &str) -> Option<&'a [u8]>;
    /// The node's name, unit address included.
    fn name(&self) -> &'a str;
    /// Its direct children, in order.
    fn children(self) -> impl Iterator<Item = Self>;
}

/// The deepest node path followed (the deepest real board tree is ~6).
pub const MAX_DEPTH: usize = 16;

/// How one bus maps its children's addresses into its parent's space.
#[derive(Clone, Copy, Debug)]
pub struct Bus<'a> {
    /// The bus's own `#address-cells` / `#size-cells` (its children's).
    pub addr_cells: usize,
    pub size_cells: usize,
    /// The bus's parent's `#address-cells`.
    pub parent_addr_cells: usize,
    /// `ranges`: `None` if absent (children not memory mapped), empty for
    /// an identity mapping.
    pub ranges: Option<&'a [u8]>,
}

/// `n` big-endian cells as one number; `None` beyond 64 bits.
pub fn read_cells(bytes: &[u8], n: usize) -> Option<u64> {
    if n > 2 {
        return None;
    }
    let b = bytes.get(..n * 4)?;
    Some(b.chunks_exact(4).fold(0u64, |acc, c| {
        (acc << 32) | u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }))
}

impl Bus<'_> {
    /// Maps `addr` (a child address) into the parent's space, `None` if no
    /// window of `ranges` covers it or there is no `ranges` at all.
    pub fn parent_address(&self, addr: u64) -> Option<u64> {
        let ranges = self.ranges?;
        if ranges.is_empty() {
            return Some(addr);
        }
        let entry = 4 * (self.addr_cells + self.parent_addr_cells + self.size_cells);
        if entry == 0 {
            return None;
        }
        ranges.chunks_exact(entry).find_map(|e| {
            let child = read_cells(e, self.addr_cells)?;
            let parent = read_cells(e.get(4 * self.addr_cells..)?, self.parent_addr_cells)?;
            let size = read_cells(
                e.get(4 * (self.addr_cells + self.parent_addr_cells)..)?,
                self.size_cells,
            )?;
            let off = addr.checked_sub(child)?;
            (off < size).then(|| parent.checked_add(off)).flatten()
        })
    }
}

/// Translates `addr` through `buses`, innermost first, to a CPU address.
pub fn translate<'a>(addr: u64, buses: impl IntoIterator<Item = Bus<'a>>) -> Option<u64> {
    buses.into_iter().try_fold(addr, |a, bus| bus.parent_address(a))
}

fn cells_prop<'a>(n: &impl DtNode<'a>, name: &str) -> Option<usize> {
    n.prop(name).and_then(|v| read_cells(v, 1)).map(|v| v as usize)
}

/// `#address-cells` and `#size-cells` of `n`, with the specification's
/// defaults (2 and 1) where absent.
pub fn cell_sizes<'a>(n: &impl DtNode<'a>) -> (usize, usize) {
    (
        cells_prop(n, "#address-cells").unwrap_or(2),
        cells_prop(n, "#size-cells").unwrap_or(1),
    )
}

/// The buses above a node, innermost first, given its ancestors root first.
/// The root is no bus: its space is the CPU's.
pub fn buses<'s, 'a: 's, N: DtNode<'a>>(ancestors: &'s [N]) -> impl Iterator<Item = Bus<'a>> + 's {
    (1..ancestors.len())
        .rev()
        .map(move |i| bus(&ancestors[i], &ancestors[i - 1]))
}

/// How `node` maps its children's addresses into `parent`'s space.
pub fn bus<'a, N: DtNode<'a>>(node: &N, parent: &N) -> Bus<'a> {
    let (addr_cells, size_cells) = cell_sizes(node);
    Bus {
        addr_cells,
        size_cells,
        parent_addr_cells: cell_sizes(parent).0,
        ranges: node.prop("ranges"),
    }
}

/// The `reg` entries of a node whose ancestors (root first, its parent
/// last) are `ancestors`, as CPU physical ranges. Entries that do not
/// translate (a bus without `ranges`, an address outside every window, an
/// address wider than 64 bits) are left out.
pub fn regs<'s, 'a: 's, N: DtNode<'a> + 's>(
    node: N,
    ancestors: &'s [N],
) -> impl Iterator<Item = PhysRange> + 's {
    let (ac, sc) = ancestors.last().map(cell_sizes).unwrap_or((2, 1));
    let reg = node.prop("reg").unwrap_or(&[]);
    split_reg(reg, ac, sc).filter_map(move |r| {
        let cpu = translate(r.base.0, buses(ancestors))?;
        Some(PhysRange::new(cpu, r.size))
    })
}

/// Why a `reg` entry has no CPU address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Untranslatable {
    /// The bus at `ancestors[bus]` has no `ranges`: its children are not
    /// memory mapped (an I2C or SPI controller, say).
    NoRanges { bus: usize },
    /// No window of the `ranges` of the bus at `ancestors[bus]` covers
    /// `addr` (an address in that bus's child space).
    OutsideRanges { bus: usize, addr: u64 },
    /// An address or size wider than 64 bits, or a `reg` whose length is
    /// not a whole number of entries.
    Malformed,
}

/// `addr` in the space of `ancestors`' last node's children, as a CPU
/// address, or which bus on the way does not map it.
pub fn translate_checked<'a, N: DtNode<'a>>(addr: u64, ancestors: &[N]) -> Result<u64, Untranslatable> {
    let mut a = addr;
    for i in (1..ancestors.len()).rev() {
        let bus = bus(&ancestors[i], &ancestors[i - 1]);
        if bus.ranges.is_none() {
            return Err(Untranslatable::NoRanges { bus: i });
        }
        a = bus
            .parent_address(a)
            .ok_or(Untranslatable::OutsideRanges { bus: i, addr: a })?;
    }
    Ok(a)
}

/// Every `reg` entry of a node (ancestors root first, its parent last) as
/// a CPU physical range, or why that entry has none.
pub fn regs_checked<'s, 'a: 's, N: DtNode<'a> + 's>(
    node: N,
    ancestors: &'s [N],
) -> impl Iterator<Item = Result<PhysRange, Untranslatable>> + 's {
    let (ac, sc) = ancestors.last().map(cell_sizes).unwrap_or((2, 1));
    let reg = node.prop("reg").unwrap_or(&[]);
    let entry = 4 * (ac + sc);
    let ragged = entry == 0 || !reg.len().is_multiple_of(entry) || ac > 2 || sc > 2;
    let entries = if entry == 0 {
        [].chunks_exact(1)
    } else {
        reg.chunks_exact(entry)
    };
    let bad = ragged.then_some(Err(Untranslatable::Malformed));
    bad.into_iter()
        .chain(entries.filter(move |_| !ragged).map(move |e| {
            let addr = read_cells(e, ac).ok_or(Untranslatable::Malformed)?;
            let size = read_cells(e.get(4 * ac..).unwrap_or(&[]), sc).ok_or(Untranslatable::Malformed)?;
            Ok(PhysRange::new(translate_checked(addr, ancestors)?, size))
        }))
}

/// A raw `reg` value as (address, size) pairs of `ac` and `sc` cells, in
/// the parent bus's address space. Entries wider than 64 bits are left out.
pub fn split_reg(reg: &[u8], ac: usize, sc: usize) -> impl Iterator<Item = PhysRange> + '_ {
    let entry = 4 * (ac + sc);
    let chunks = if entry == 0 {
        [].chunks_exact(1)
    } else {
        reg.chunks_exact(entry)
    };
    chunks.filter_map(move |e| {
        let addr = read_cells(e, ac)?;
        let size = read_cells(e.get(4 * ac..)?, sc)?;
        Some(PhysRange::new(addr, size))
    })
}

/// Whether a path component names `name`: exactly when it has a unit
/// address, by base name otherwise (as `fdt`'s own lookup does).
fn component_matches(component: &str, name: &str) -> bool {
    if component.contains('@') {
        name == component
    } else {
        name.split('@').next() == Some(component)
    }
}

/// Follows an absolute `path` from the root: the node and its ancestors,
/// root first, in `chain[..depth]`; calls `f(node, &chain[..depth])`.
pub fn with_node<'a, N: DtNode<'a>, R>(root: N, path: &str, f: impl FnOnce(N, &[N]) -> R) -> Option<R> {
    let mut chain = [root; MAX_DEPTH];
    let mut depth = 0;
    let mut node = root;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if depth >= MAX_DEPTH {
            return None;
        }
        chain[depth] = node;
        depth += 1;
        node = node.children().find(|c| component_matches(part, c.name()))?;
    }
    Some(f(node, &chain[..depth]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(cells: &[u32]) -> Vec<u8> {
        cells.iter().flat_map(|c| c.to_be_bytes()).collect()
    }

    #[test]
    fn cells_read_big_endian_up_to_two() {
        assert_eq!(read_cells(&be(&[0x12]), 1), Some(0x12));
        assert_eq!(read_cells(&be(&[0x1, 0x2]), 2), Some(0x1_0000_0002));
        assert_eq!(read_cells(&be(&[0x1]), 2), None, "too short");
        assert_eq!(read_cells(&be(&[0, 0, 1]), 3), None, "wider than 64 bits");
        assert_eq!(read_cells(&[], 0), Some(0));
    }

    #[test]
    fn empty_ranges_is_identity_and_absent_is_untranslatable() {
        let identity = Bus {
            addr_cells: 1,
            size_cells: 1,
            parent_addr_cells: 2,
            ranges: Some(&[]),
        };
        assert_eq!(identity.parent_address(0x3089_0000), Some(0x3089_0000));
        let none = Bus {
            ranges: None,
            ..identity
        };
        assert_eq!(none.parent_address(0x3089_0000), None);
    }

    #[test]
    fn windows_offset_and_bound_addresses() {
        // Raspberry Pi 4 style: /soc maps bus 0x7c00_0000 (64 MiB) to CPU
        // 0xfc00_0000 and bus 0x4000_0000 (8 MiB) to 0xff80_0000;
        // #address-cells 1 below, 2 above, #size-cells 1.
        let ranges = be(&[
            0x7c00_0000,
            0,
            0xfc00_0000,
            0x0400_0000,
            0x4000_0000,
            0,
            0xff80_0000,
            0x0080_0000,
        ]);
        let soc = Bus {
            addr_cells: 1,
            size_cells: 1,
            parent_addr_cells: 2,
            ranges: Some(&ranges),
        };
        assert_eq!(soc.parent_address(0x7e20_1000), Some(0xfe20_1000));
        assert_eq!(soc.parent_address(0x7c00_0000), Some(0xfc00_0000));
        assert_eq!(soc.parent_address(0x4000_0040), Some(0xff80_0040));
        assert_eq!(soc.parent_address(0x8000_0000), None, "past the first window");
        assert_eq!(soc.parent_address(0x4080_0000), None, "one past the second");
        assert_eq!(soc.parent_address(0x1000), None, "below every window");
    }

    #[test]
    fn translation_composes_innermost_first() {
        // A bus at child 0x1000 -> parent 0x10_0000, inside one that adds
        // 0x8000_0000 (2-cell parent addresses).
        let inner_r = be(&[0x1000, 0x10_0000, 0x1000]);
        let outer_r = be(&[0, 0, 0x8000_0000, 0x1000_0000]);
        let inner = Bus {
            addr_cells: 1,
            size_cells: 1,
            parent_addr_cells: 1,
            ranges: Some(&inner_r),
        };
        let outer = Bus {
            addr_cells: 1,
            size_cells: 1,
            parent_addr_cells: 2,
            ranges: Some(&outer_r),
        };
        assert_eq!(translate(0x1010, [inner, outer]), Some(0x8010_0010));
        assert_eq!(translate(0x1010, [outer, inner]), None, "order matters");
        assert_eq!(translate(0x2000, [inner, outer]), None);
        assert_eq!(translate(0x42, []), Some(0x42), "the root is the CPU's space");
    }

    #[test]
    fn split_reg_honours_cell_counts() {
        let reg = be(&[0, 0xff00_0000, 0, 0x1000, 0, 0xff01_0000, 0, 0x1000]);
        let r: Vec<PhysRange> = split_reg(&reg, 2, 2).collect();
        assert_eq!(
            r,
            vec![
                PhysRange::new(0xff00_0000, 0x1000),
                PhysRange::new(0xff01_0000, 0x1000)
            ]
        );
        let r: Vec<PhysRange> = split_reg(&be(&[0x3089_0000, 0x1_0000]), 1, 1).collect();
        assert_eq!(r, vec![PhysRange::new(0x3089_0000, 0x1_0000)]);
        assert_eq!(split_reg(&be(&[1, 2, 3]), 0, 0).count(), 0);
    }
}
