//! VMSAv8-64 translation tables with a 4 KiB granule, for both regimes the
//! hypervisor builds: its own EL2 stage-1 identity map and each VM's stage-2.
//!
//! Pure logic: table memory comes through [`TableMemory`], so the same code
//! runs on the host in tests (checked against a software walk) and at EL2.
//! It never touches a system register; making tables live is `arch`'s job.

use core::fmt;

const ENTRIES: usize = 512;
const VALID: u64 = 1 << 0;
const TABLE_OR_PAGE: u64 = 1 << 1;
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 0b11 << 8;
const XN: u64 = 1 << 54;
const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Which translation regime the descriptors are for (they differ in how
/// memory type and permissions are encoded).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Regime {
    /// EL2 stage 1 (non-VHE): AttrIndx into MAIR_EL2, AP[2:1].
    El2Stage1,
    /// Stage 2 of the EL1&0 regime: MemAttr and S2AP directly in the descriptor.
    Stage2,
}

/// Memory type of a mapping.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MemType {
    /// Normal memory, inner/outer write-back, inner shareable.
    Normal,
    /// Device-nGnRE: MMIO.
    Device,
}

/// What a mapping allows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Attrs {
    pub mem: MemType,
    pub write: bool,
    pub exec: bool,
}

impl Attrs {
    /// RAM: read, write, execute.
    pub const RAM: Attrs = Attrs {
        mem: MemType::Normal,
        write: true,
        exec: true,
    };
    /// The hypervisor's own data (all RAM but its text, at EL2): read,
    /// write, never execute.
    pub const DATA: Attrs = Attrs {
        mem: MemType::Normal,
        write: true,
        exec: false,
    };
    /// The hypervisor's text (at EL2): read and execute, never write.
    pub const TEXT: Attrs = Attrs {
        mem: MemType::Normal,
        write: false,
        exec: true,
    };
    /// MMIO: read, write, never execute.
    pub const DEVICE: Attrs = Attrs {
        mem: MemType::Device,
        write: true,
        exec: false,
    };
}

/// `[base, end)` without `[hole, hole_end)`: the pieces below and above
/// the hole (either may be empty, `start >= end`).
pub const fn around(base: u64, end: u64, hole: u64, hole_end: u64) -> [(u64, u64); 2] {
    let below_end = if end < hole { end } else { hole };
    let above = if base > hole_end { base } else { hole_end };
    [(base, below_end), (above, end)]
}

/// MAIR_EL2 value matching [`Regime::El2Stage1`]'s AttrIndx use:
/// index 0 normal write-back RA/WA, index 1 Device-nGnRE.
pub const MAIR_EL2: u64 = 0xff | (0x04 << 8);
const ATTRIDX_NORMAL: u64 = 0 << 2;
const ATTRIDX_DEVICE: u64 = 1 << 2;
/// Stage-2 MemAttr[3:0] (Arm ARM D8.5.5).
const S2_MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
const S2_MEMATTR_DEVICE_NGNRE: u64 = 0b0001 << 2;
const S2AP_READ: u64 = 1 << 6;
const S2AP_WRITE: u64 = 1 << 7;
/// EL2 stage 1: AP[1] is RES1 in a one-privilege-level regime; AP[2] = read-only.
const S1_AP1: u64 = 1 << 6;
const S1_AP_RO: u64 = 1 << 7;

impl Regime {
    fn leaf_bits(self, a: Attrs) -> u64 {
        let mut d = AF;
        match self {
            Regime::El2Stage1 => {
                d |= S1_AP1;
                if !a.write {
                    d |= S1_AP_RO;
                }
                d |= match a.mem {
                    MemType::Normal => ATTRIDX_NORMAL | SH_INNER,
                    MemType::Device => ATTRIDX_DEVICE,
                };
            }
            Regime::Stage2 => {
                d |= S2AP_READ;
                if a.write {
                    d |= S2AP_WRITE;
                }
                d |= match a.mem {
                    MemType::Normal => S2_MEMATTR_NORMAL_WB | SH_INNER,
                    MemType::Device => S2_MEMATTR_DEVICE_NGNRE,
                };
            }
        }
        if !a.exec {
            d |= XN;
        }
        d
    }

    /// Decodes the attributes of a leaf descriptor (for walks and tests).
    pub fn decode(self, desc: u64) -> Attrs {
        let exec = desc & XN == 0;
        match self {
            Regime::El2Stage1 => Attrs {
                mem: if desc & (0b111 << 2) == ATTRIDX_DEVICE {
                    MemType::Device
                } else {
                    MemType::Normal
                },
                write: desc & S1_AP_RO == 0,
                exec,
            },
            Regime::Stage2 => Attrs {
                mem: if desc & (0b1111 << 2) == S2_MEMATTR_DEVICE_NGNRE {
                    MemType::Device
                } else {
                    MemType::Normal
                },
                write: desc & S2AP_WRITE != 0,
                exec,
            },
        }
    }
}

/// Where table pages come from and how to reach them.
pub trait TableMemory {
    /// `pages` zeroed, physically contiguous 4 KiB tables aligned to their
    /// total size; returns the physical address of the first.
    fn alloc_tables(&mut self, pages: usize) -> Result<u64, MapError>;
    /// The table page at physical address `pa` (which this memory handed out).
    fn table(&mut self, pa: u64) -> &mut [u64; ENTRIES];
}

/// Why a mapping could not be made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MapError {
    /// Address or size not 4 KiB aligned.
    Unaligned,
    /// The range does not fit the table's input address size.
    OutOfRange,
    /// Part of the range is already mapped differently.
    AlreadyMapped { va: u64 },
    /// No memory left for translation tables.
    NoMemory,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::Unaligned => write!(f, "address or size not 4 KiB aligned"),
            MapError::OutOfRange => write!(f, "range beyond the input address size"),
            MapError::AlreadyMapped { va } => write!(f, "{va:#x} is already mapped differently"),
            MapError::NoMemory => write!(f, "out of memory for translation tables"),
        }
    }
}

/// A translation table tree.
#[derive(Debug)]
pub struct PageTable {
    regime: Regime,
    root: u64,
    start_level: usize,
    input_bits: u32,
}

/// Bits of input address resolved below `level` (12 at level 3).
const fn shift(level: usize) -> u32 {
    12 + 9 * (3 - level as u32)
}

impl PageTable {
    /// Chooses the start level and number of concatenated root tables for an
    /// input address size of `input_bits` (Arm ARM D8.2: 4 KiB granule). Stage
    /// 2 may concatenate up to 16 root tables instead of adding a level.
    pub fn geometry(regime: Regime, input_bits: u32) -> (usize, usize) {
        let concat_bits = if regime == Regime::Stage2 { 4 } else { 0 };
        // Start at level 1 unless the input size needs level 0; never lower
        // (keeps the SL0/T0SZ combinations to the two everybody supports).
        let level = if input_bits > shift(0) + concat_bits { 0 } else { 1 };
        let bits_here = input_bits.saturating_sub(shift(level));
        let pages = if bits_here > 9 {
            1usize << (bits_here - 9)
        } else {
            1
        };
        (level, pages)
    }

    /// An empty tree for `input_bits` of input address (VA or IPA).
    pub fn new(regime: Regime, input_bits: u32, mem: &mut impl TableMemory) -> Result<Self, MapError> {
        let (start_level, pages) = Self::geometry(regime, input_bits);
        let root = mem.alloc_tables(pages)?;
        Ok(Self {
            regime,
            root,
            start_level,
            input_bits,
        })
    }

    /// Physical address of the root table (for TTBR0_EL2 / VTTBR_EL2).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The level the walk starts at.
    pub fn start_level(&self) -> usize {
        self.start_level
    }

    /// Input address size in bits.
    pub fn input_bits(&self) -> u32 {
        self.input_bits
    }

    /// The table page and slot for `va` in the table at `table`, at `level`.
    /// A concatenated root spans several pages, so its index may exceed 511.
    fn slot(&self, table: u64, va: u64, level: usize) -> (u64, usize) {
        let idx = if level == self.start_level {
            (va >> shift(level)) as usize
        } else {
            ((va >> shift(level)) & 0x1ff) as usize
        };
        (table + (idx / ENTRIES) as u64 * 4096, idx % ENTRIES)
    }

    /// Maps `[va, va + size)` to `[pa, pa + size)` with the largest blocks
    /// alignment allows (1 GiB, 2 MiB, then 4 KiB pages). Re-mapping a range
    /// with an identical mapping is allowed; anything else already mapped is
    /// an error and leaves earlier parts of this call mapped.
    pub fn map(
        &mut self,
        va: u64,
        pa: u64,
        size: u64,
        attrs: Attrs,
        mem: &mut impl TableMemory,
    ) -> Result<(), MapError> {
        if !va.is_multiple_of(4096) || !pa.is_multiple_of(4096) || !size.is_multiple_of(4096) {
            return Err(MapError::Unaligned);
        }
        let end = va.checked_add(size).ok_or(MapError::OutOfRange)?;
        if self.input_bits < 64 && end > 1u64 << self.input_bits {
            return Err(MapError::OutOfRange);
        }
        let leaf = self.regime.leaf_bits(attrs);
        let (mut va, mut pa) = (va, pa);
        while va < end {
            let remaining = end - va;
            // Largest level at which a block fits: level 1 (1 GiB) or 2 (2 MiB), else a page.
            let mut level = 3;
            for l in [1usize, 2] {
                let bs = 1u64 << shift(l);
                if l >= self.start_level && va % bs == 0 && pa % bs == 0 && remaining >= bs {
                    level = l;
                    break;
                }
            }
            let desc = pa | leaf | VALID | if level == 3 { TABLE_OR_PAGE } else { 0 };
            self.set_leaf(va, level, desc, mem)?;
            let step = 1u64 << shift(level);
            va += step;
            pa += step;
        }
        Ok(())
    }

    fn set_leaf(
        &mut self,
        va: u64,
        level: usize,
        desc: u64,
        mem: &mut impl TableMemory,
    ) -> Result<(), MapError> {
        let mut table = self.root;
        let mut l = self.start_level;
        loop {
            let (tpa, slot) = self.slot(table, va, l);
            let entry = mem.table(tpa)[slot];
            if l == level {
                if entry & VALID != 0 && entry != desc {
                    return Err(MapError::AlreadyMapped { va });
                }
                mem.table(tpa)[slot] = desc;
                return Ok(());
            }
            if entry & VALID == 0 {
                let next = mem.alloc_tables(1)?;
                mem.table(tpa)[slot] = next | VALID | TABLE_OR_PAGE;
                table = next;
            } else if entry & TABLE_OR_PAGE == 0 {
                // A block already covers this range.
                return Err(MapError::AlreadyMapped { va });
            } else {
                table = entry & ADDR_MASK;
            }
            l += 1;
        }
    }

    /// A valid 2 MiB block descriptor (level 2) for `pa` with `attrs`: what
    /// a slot from [`Self::block_slots`] is set to when its block is mapped.
    pub fn block_desc(&self, pa: u64, attrs: Attrs) -> u64 {
        (pa & ADDR_MASK) | self.regime.leaf_bits(attrs) | VALID
    }

    /// Builds the tables down to level 2 for `[va, va + size)` (2 MiB
    /// aligned) without mapping anything, and returns the physical address
    /// of each 2 MiB block's level-2 slot, in order: a block is mapped later
    /// by one store of [`Self::block_desc`] there, with no allocation (the
    /// stage-2 fault path). Every slot must still be invalid.
    pub fn block_slots(
        &mut self,
        va: u64,
        size: u64,
        mem: &mut impl TableMemory,
    ) -> Result<alloc::vec::Vec<u64>, MapError> {
        const BLOCK: u64 = 1 << 21;
        if !va.is_multiple_of(BLOCK) || !size.is_multiple_of(BLOCK) || self.start_level > 2 {
            return Err(MapError::Unaligned);
        }
        let end = va.checked_add(size).ok_or(MapError::OutOfRange)?;
        if self.input_bits < 64 && end > 1u64 << self.input_bits {
            return Err(MapError::OutOfRange);
        }
        let mut out = alloc::vec::Vec::with_capacity((size / BLOCK) as usize);
        let mut at = va;
        while at < end {
            let mut table = self.root;
            let mut l = self.start_level;
            loop {
                let (tpa, slot) = self.slot(table, at, l);
                let entry = mem.table(tpa)[slot];
                if l == 2 {
                    if entry & VALID != 0 {
                        return Err(MapError::AlreadyMapped { va: at });
                    }
                    out.push(tpa + slot as u64 * 8);
                    break;
                }
                if entry & VALID == 0 {
                    let next = mem.alloc_tables(1)?;
                    mem.table(tpa)[slot] = next | VALID | TABLE_OR_PAGE;
                    table = next;
                } else if entry & TABLE_OR_PAGE == 0 {
                    return Err(MapError::AlreadyMapped { va: at });
                } else {
                    table = entry & ADDR_MASK;
                }
                l += 1;
            }
            at += BLOCK;
        }
        Ok(out)
    }

    /// Software walk: the output address and attributes `va` translates to.
    pub fn translate(&self, va: u64, mem: &mut impl TableMemory) -> Option<(u64, Attrs)> {
        if self.input_bits < 64 && va >> self.input_bits != 0 {
            return None;
        }
        let mut table = self.root;
        let mut l = self.start_level;
        loop {
            let (tpa, slot) = self.slot(table, va, l);
            let entry = mem.table(tpa)[slot];
            if entry & VALID == 0 {
                return None;
            }
            let is_table = l < 3 && entry & TABLE_OR_PAGE != 0;
            if !is_table {
                if l == 3 && entry & TABLE_OR_PAGE == 0 {
                    return None; // reserved encoding at level 3
                }
                let mask = (1u64 << shift(l)) - 1;
                let out = (entry & ADDR_MASK & !mask) | (va & mask);
                return Some((out, self.regime.decode(entry)));
            }
            table = entry & ADDR_MASK;
            l += 1;
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Table memory on the host: pages in a map, handed out from a fake base.
    #[derive(Default)]
    pub struct HostTables {
        pages: HashMap<u64, Box<[u64; ENTRIES]>>,
        next: u64,
        pub limit: Option<usize>,
    }

    impl TableMemory for HostTables {
        fn alloc_tables(&mut self, pages: usize) -> Result<u64, MapError> {
            if let Some(l) = self.limit {
                if self.pages.len() + pages > l {
                    return Err(MapError::NoMemory);
                }
            }
            let align = pages as u64 * 4096;
            let base = (0x8000_0000 + self.next + align - 1) & !(align - 1);
            for i in 0..pages as u64 {
                self.pages.insert(base + i * 4096, Box::new([0; ENTRIES]));
            }
            self.next = base + align - 0x8000_0000;
            Ok(base)
        }
        fn table(&mut self, pa: u64) -> &mut [u64; ENTRIES] {
            self.pages
                .get_mut(&pa)
                .expect("walk reached a page that was never allocated")
        }
    }

    impl HostTables {
        fn count(&self) -> usize {
            self.pages.len()
        }
    }

    #[test]
    fn geometry_follows_input_size() {
        assert_eq!(PageTable::geometry(Regime::El2Stage1, 48), (0, 1));
        assert_eq!(PageTable::geometry(Regime::El2Stage1, 39), (1, 1));
        assert_eq!(PageTable::geometry(Regime::Stage2, 40), (1, 2));
        assert_eq!(PageTable::geometry(Regime::Stage2, 42), (1, 8));
        assert_eq!(PageTable::geometry(Regime::Stage2, 44), (0, 1));
        assert_eq!(PageTable::geometry(Regime::Stage2, 36), (1, 1));
    }

    #[test]
    fn maps_with_largest_blocks_and_walks_back() {
        let mut m = HostTables::default();
        let mut pt = PageTable::new(Regime::Stage2, 40, &mut m).unwrap();
        // 1 GiB + 2 MiB + 4 KiB, all aligned for blocks where possible.
        let size = (1 << 30) + (2 << 20) + 4096;
        pt.map(0x4000_0000, 0x8000_0000, size, Attrs::RAM, &mut m)
            .unwrap();
        // root (2 pages) + one L2 table + one L3 table.
        assert_eq!(m.count(), 4);
        for off in [0u64, 0x1234, (1 << 30) - 8, 1 << 30, (1 << 30) + (2 << 20) + 4095] {
            let (pa, a) = pt.translate(0x4000_0000 + off, &mut m).unwrap();
            assert_eq!(pa, 0x8000_0000 + off);
            assert_eq!(a, Attrs::RAM);
        }
        assert_eq!(pt.translate(0x4000_0000 + size, &mut m), None);
        assert_eq!(pt.translate(0x3fff_ffff, &mut m), None);
    }

    #[test]
    fn block_slots_prepare_tables_and_one_store_maps_a_block() {
        let mut m = HostTables::default();
        let mut pt = PageTable::new(Regime::Stage2, 40, &mut m).unwrap();
        // 6 MiB across a 1 GiB boundary: two level-2 tables.
        let va = 0x7fc0_0000;
        let slots = pt.block_slots(va, 6 << 20, &mut m).unwrap();
        assert_eq!(slots.len(), 3);
        assert_eq!(m.count(), 2 + 2);
        for i in 0..3u64 {
            assert_eq!(
                pt.translate(va + i * (2 << 20), &mut m),
                None,
                "nothing mapped yet"
            );
        }
        // Map the middle block by one store into its slot.
        let s = slots[1];
        let desc = pt.block_desc(0x9020_0000, Attrs::RAM);
        m.table(s & !0xfff)[((s & 0xfff) / 8) as usize] = desc;
        assert_eq!(
            pt.translate(va + (2 << 20) + 0x1234, &mut m),
            Some((0x9020_1234, Attrs::RAM))
        );
        assert_eq!(pt.translate(va, &mut m), None);
        assert_eq!(pt.translate(va + (4 << 20), &mut m), None);
        // A mapped slot is refused; unaligned requests too.
        assert_eq!(
            pt.block_slots(va + (2 << 20), 2 << 20, &mut m),
            Err(MapError::AlreadyMapped { va: va + (2 << 20) })
        );
        assert_eq!(
            pt.block_slots(va + 4096, 2 << 20, &mut m),
            Err(MapError::Unaligned)
        );
    }

    #[test]
    fn misaligned_pa_forces_pages() {
        let mut m = HostTables::default();
        let mut pt = PageTable::new(Regime::El2Stage1, 48, &mut m).unwrap();
        pt.map(0x20_0000, 0x20_1000, 2 << 20, Attrs::DEVICE, &mut m)
            .unwrap();
        // root L0, L1, L2, L3
        assert_eq!(m.count(), 4);
        let (pa, a) = pt.translate(0x3f_ffff, &mut m).unwrap();
        assert_eq!(pa, 0x40_0fff);
        assert_eq!(a, Attrs::DEVICE);
    }

    #[test]
    fn concatenated_root_reaches_high_half() {
        let mut m = HostTables::default();
        let mut pt = PageTable::new(Regime::Stage2, 40, &mut m).unwrap();
        let va = (1u64 << 40) - (1 << 30);
        pt.map(va, 0x1_0000_0000, 1 << 30, Attrs::RAM, &mut m).unwrap();
        assert_eq!(pt.translate(va + 5, &mut m).unwrap().0, 0x1_0000_0005);
    }

    #[test]
    fn identical_remap_is_allowed_different_is_not() {
        let mut m = HostTables::default();
        let mut pt = PageTable::new(Regime::Stage2, 40, &mut m).unwrap();
        pt.map(0x900_0000, 0x900_0000, 0x1000, Attrs::DEVICE, &mut m)
            .unwrap();
        pt.map(0x900_0000, 0x900_0000, 0x1000, Attrs::DEVICE, &mut m)
            .unwrap();
        assert_eq!(
            pt.map(0x900_0000, 0xa00_0000, 0x1000, Attrs::DEVICE, &mut m),
            Err(MapError::AlreadyMapped { va: 0x900_0000 })
        );
        pt.map(0x4000_0000, 0x4000_0000, 2 << 20, Attrs::RAM, &mut m)
            .unwrap();
        assert_eq!(
            pt.map(0x4000_1000, 0x4000_1000, 0x1000, Attrs::RAM, &mut m),
            Err(MapError::AlreadyMapped { va: 0x4000_1000 })
        );
    }

    #[test]
    fn rejects_unaligned_and_out_of_range() {
        let mut m = HostTables::default();
        let mut pt = PageTable::new(Regime::Stage2, 36, &mut m).unwrap();
        assert_eq!(
            pt.map(0x1001, 0, 0x1000, Attrs::RAM, &mut m),
            Err(MapError::Unaligned)
        );
        assert_eq!(
            pt.map(1 << 36, 0, 0x1000, Attrs::RAM, &mut m),
            Err(MapError::OutOfRange)
        );
        assert_eq!(pt.translate(1 << 36, &mut m), None);
    }

    #[test]
    fn exhaustion_is_an_error() {
        let mut m = HostTables {
            limit: Some(2),
            ..Default::default()
        };
        let mut pt = PageTable::new(Regime::Stage2, 39, &mut m).unwrap();
        assert_eq!(pt.map(0, 0, 0x1000, Attrs::RAM, &mut m), Err(MapError::NoMemory));
    }

    #[test]
    fn encodings_decode_back() {
        for regime in [Regime::El2Stage1, Regime::Stage2] {
            for mem in [MemType::Normal, MemType::Device] {
                for write in [false, true] {
                    for exec in [false, true] {
                        let a = Attrs { mem, write, exec };
                        assert_eq!(regime.decode(regime.leaf_bits(a)), a);
                    }
                }
            }
        }
        // Stage-2 device memory is nGnRE with no write for read-only.
        let d = Regime::Stage2.leaf_bits(Attrs {
            mem: MemType::Device,
            write: false,
            exec: false,
        });
        assert_eq!(d & (0xf << 2), 0b0001 << 2);
        assert_eq!(d & (0b11 << 6), 0b01 << 6);
        assert_ne!(d & XN, 0);
    }

    #[test]
    fn around_cuts_a_hole_out_of_a_range() {
        let real = |p: [(u64, u64); 2]| p.into_iter().filter(|(b, e)| b < e).collect::<std::vec::Vec<_>>();
        // Text inside RAM: below and above it.
        assert_eq!(
            real(around(0x4000_0000, 0x8000_0000, 0x4020_0000, 0x4030_0000)),
            [(0x4000_0000, 0x4020_0000), (0x4030_0000, 0x8000_0000)]
        );
        // RAM wholly below or above the text: all of it.
        assert_eq!(real(around(0x1000, 0x2000, 0x4000, 0x5000)), [(0x1000, 0x2000)]);
        assert_eq!(real(around(0x6000, 0x7000, 0x4000, 0x5000)), [(0x6000, 0x7000)]);
        // Text at either edge, or covering all of it.
        assert_eq!(real(around(0x4000, 0x8000, 0x4000, 0x5000)), [(0x5000, 0x8000)]);
        assert_eq!(real(around(0x4000, 0x8000, 0x7000, 0x8000)), [(0x4000, 0x7000)]);
        assert!(real(around(0x4000, 0x5000, 0x3000, 0x6000)).is_empty());
    }
}
