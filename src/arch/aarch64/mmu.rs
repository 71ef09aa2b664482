//! The hypervisor's EL2 stage-1 translation: an identity map of RAM (normal,
//! write-back) plus the MMIO the hypervisor drives (Device-nGnRE), mapped on
//! demand. Everything else faults, so a stray pointer is caught at once.

use super::devio;
use super::zero_plan::ZeroPlan;
use crate::mm::pagetable::{Attrs, MapError, PageTable, Regime, TableMemory, MAIR_EL2};
use crate::mm::PhysRange;
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{
    Readable, Writeable, ID_AA64MMFR0_EL1, MAIR_EL2 as MAIR, SCTLR_EL2, TCR_EL2, TTBR0_EL2,
};
use core::arch::asm;
use spin::Mutex;

/// 48 pages (192 KiB): the `virt` map takes 6, a board with many devices a few more.
const POOL_PAGES: usize = 48;

#[repr(C, align(4096))]
struct Pool([[u64; 512]; POOL_PAGES]);

/// Not zeroed at entry (`.noinit`): each page is zeroed when handed out.
#[link_section = ".noinit.tables"]
static mut POOL: core::mem::MaybeUninit<Pool> = core::mem::MaybeUninit::uninit();

/// Table pages for the EL2 map, from a fixed pool in BSS (so the map can be
/// built before any allocator exists).
struct El2TableMemory {
    used: usize,
}

impl TableMemory for El2TableMemory {
    fn alloc_tables(&mut self, pages: usize) -> Result<u64, MapError> {
        let first = self.used.next_multiple_of(pages);
        if first + pages > POOL_PAGES {
            return Err(MapError::NoMemory);
        }
        self.used = first + pages;
        let base = core::ptr::addr_of!(POOL) as u64 + first as u64 * 4096;
        // SAFETY: pool pages [first, first + pages) were never handed out
        // before; nothing else references them.
        unsafe { core::ptr::write_bytes(base as *mut u8, 0, pages * 4096) };
        Ok(base)
    }

    fn table(&mut self, pa: u64) -> &mut [u64; 512] {
        // SAFETY: `pa` came from `alloc_tables`, so it is a pool page, which is
        // identity mapped (or the MMU is off); the caller holds the only
        // reference to the map (the EL2 lock, or boot before other CPUs run).
        unsafe { &mut *(pa as *mut [u64; 512]) }
    }
}

struct El2Map {
    table: PageTable,
    mem: El2TableMemory,
}

/// EL2 translation-table pages: (handed out, in the pool).
pub fn el2_table_pages() -> (usize, usize) {
    let used = EL2_MAP.lock().as_ref().map_or(0, |m| m.mem.used);
    (used, POOL_PAGES)
}

static EL2_MAP: Mutex<Option<El2Map>> = Mutex::new(None);
/// TTBR0_EL2 value, for secondaries (read with their MMU off: cleaned to PoC).
static mut ROOT: u64 = 0;

/// Physical address bits this CPU supports (ID_AA64MMFR0_EL1.PARange).
pub fn pa_bits() -> u32 {
    match ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange) {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

fn tcr_el2() -> u64 {
    let ps = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(5);
    // T0SZ = 16 (48-bit VA), walks inner/outer write-back and inner shareable,
    // 4 KiB granule, PS = the CPU's PA size; bits 31 and 23 are RES1.
    16 | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (ps << 16) | (1 << 23) | (1 << 31)
}

/// Builds the identity map of `ram` and `image` and turns the MMU and caches
/// on for the boot CPU. Runs with the MMU off and no other CPU up.
///
/// W^X at EL2: the image's text (`image.base` up to `text_end`, page
/// aligned by the linker script) is the only executable memory, and it is
/// read-only; all other RAM, the VMs' included, is never executable here, so
/// the hypervisor can neither be made to run guest-written bytes nor fetch
/// (even speculatively) from a VM's RAM into its instruction cache.
pub fn init(
    ram: impl Iterator<Item = PhysRange>,
    image: PhysRange,
    text_end: u64,
    written: &[PhysRange],
) -> Result<(), MapError> {
    let mut mem = El2TableMemory { used: 0 };
    let mut table = PageTable::new(Regime::El2Stage1, 48, &mut mem)?;
    let text = image.base.align_down(4096).0;
    let text_end = (text_end + 4095) & !4095;
    for r in ram {
        let base = r.base.align_down(4096).0;
        let end = (r.end() + 4095) & !4095;
        for (b, e) in crate::mm::pagetable::around(base, end, text, text_end) {
            if b < e {
                table.map(b, b, e - b, Attrs::DATA, &mut mem)?;
            }
        }
    }
    table.map(text, text, text_end - text, Attrs::TEXT, &mut mem)?;
    let end = (image.end() + 4095) & !4095;
    // The image lies in RAM on every real board; map the rest anyway in case not.
    if text_end < end && table.translate(text_end, &mut mem).is_none() {
        table.map(text_end, text_end, end - text_end, Attrs::DATA, &mut mem)?;
    }
    // SAFETY: single CPU, MMU off: nobody else reads ROOT yet.
    unsafe { ROOT = table.root() };
    // Data written with the MMU off went straight to memory; drop any stale
    // lines for what was written (image, BSS, tables, the boot stack) before
    // caches come on. The heap and the other stacks were not touched.
    for r in written {
        invalidate_dcache(r.base.0, r.end());
    }
    enable();
    *EL2_MAP.lock() = Some(El2Map { table, mem });
    Ok(())
}

/// Turns the MMU on for a secondary CPU with the boot CPU's tables.
pub fn enable_secondary() {
    enable();
}

fn enable() {
    // SAFETY: ROOT is written once by the boot CPU before any secondary starts
    // and cleaned to PoC by `clean_for_secondaries`.
    let root = unsafe { core::ptr::addr_of!(ROOT).read_volatile() };
    MAIR.set(MAIR_EL2);
    TCR_EL2.set(tcr_el2());
    TTBR0_EL2.set(root);
    barrier::isb(barrier::SY);
    // SAFETY: TLB and I-cache maintenance have no memory-safety effect.
    unsafe {
        asm!(
            "tlbi alle2",
            "dsb nsh",
            "ic iallu",
            "dsb nsh",
            "isb",
            options(nostack)
        );
    }
    SCTLR_EL2.set(super::SCTLR_EL2_RES1 | (1 << 0) | (1 << 2) | (1 << 3) | (1 << 12));
    barrier::isb(barrier::SY);
}

/// Maps an MMIO range the hypervisor drives (idempotent for the same range).
pub fn map_device(range: PhysRange) -> Result<(), MapError> {
    let base = range.base.align_down(4096).0;
    let end = (range.end() + 4095) & !4095;
    let mut guard = EL2_MAP.lock();
    let map = guard.as_mut().ok_or(MapError::NoMemory)?;
    map.table
        .map(base, base, end - base, Attrs::DEVICE, &mut map.mem)?;
    // New entries only replace invalid ones: no TLB maintenance needed, just
    // make the writes visible to the walker before the mapping is used.
    barrier::dsb(barrier::ISHST);
    barrier::isb(barrier::SY);
    Ok(())
}

/// Makes translation-table stores visible to every CPU's table walker.
pub fn table_write_barrier() {
    barrier::dsb(barrier::ISHST);
}

/// Invalidates this CPU's instruction cache to PoU (no broadcast): before a
/// vCPU enters fresh on this CPU, so none of its lines is of a previous run.
pub fn invalidate_icache_local() {
    // SAFETY: instruction-cache invalidation has no effect on memory.
    unsafe { asm!("ic iallu", "dsb nsh", "isb", options(nostack)) };
}

/// Invalidates every CPU's instruction cache (inner shareable) to PoU: after
/// memory was scrubbed for a guest, no stale line of its previous contents
/// may be fetched instead of what is now in memory.
pub fn invalidate_icache_all() {
    // SAFETY: instruction-cache invalidation has no effect on memory.
    unsafe { asm!("ic ialluis", "dsb ish", "isb", options(nostack)) };
}

fn dcache_line() -> u64 {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    4 << ((ctr >> 16) & 0xf)
}

/// Invalidates data cache lines covering `[start, end)` to PoC.
fn invalidate_dcache(start: u64, end: u64) {
    let line = dcache_line();
    let mut a = start & !(line - 1);
    while a < end {
        // SAFETY: discards cache lines for memory we own whose up-to-date
        // contents are already in memory (written with the MMU off).
        unsafe { asm!("dc ivac, {}", in(reg) a, options(nostack)) };
        a += line;
    }
    barrier::dsb(barrier::SY);
}

/// Cleans `[start, end)` to PoC, so CPUs that start with their MMU (and so
/// caches) off read what this CPU wrote.
pub fn clean_dcache(start: u64, end: u64) {
    let line = dcache_line();
    let mut a = start & !(line - 1);
    while a < end {
        // SAFETY: cleaning writes dirty lines back; contents are unchanged.
        unsafe { asm!("dc cvac, {}", in(reg) a, options(nostack)) };
        a += line;
    }
    barrier::dsb(barrier::SY);
}

/// Cleans and invalidates `[start, end)` to PoC: memory holds the data and
/// no cache line of it is left for a guest's non-cacheable (MMU off)
/// writes to be shadowed by once its MMU is on.
pub fn clean_invalidate_dcache(start: u64, end: u64) {
    clean_invalidate_lines(start, end, dcache_line());
    barrier::dsb(barrier::SY);
}

/// DC CIVAC on every `line`-byte cache line touching `[start, end)`; the
/// caller issues the DSB.
fn clean_invalidate_lines(start: u64, end: u64, line: u64) {
    let mut a = start & !(line - 1);
    while a < end {
        // SAFETY: cleaning writes dirty lines back first; contents unchanged.
        unsafe { asm!("dc civac, {}", in(reg) a, options(nostack)) };
        a += line;
    }
}

/// Zeroes `[start, start + len)` a cache-line block at a time with DC ZVA
/// where the CPU allows it (a 16 MiB VM scrub is then about 260k
/// instructions instead of a million stores). The range must be normal
/// memory, mapped, and owned by the caller.
///
/// # Safety
/// As for `core::ptr::write_bytes` over the range.
pub unsafe fn zero(start: u64, len: u64) {
    // SAFETY: the caller's contract.
    unsafe { zero_blocks::<false>(start, len) }
}

/// [`zero`], then [`clean_invalidate_dcache`], in one pass where a DC ZVA block is one
/// cache line: each line is zeroed and written back while it is at hand,
/// about half the instructions of two passes. For memory handed to a guest
/// that starts with its MMU off.
///
/// # Safety
/// As for [`zero`].
pub unsafe fn zero_to_poc(start: u64, len: u64) {
    // SAFETY: the caller's contract.
    unsafe { zero_blocks::<true>(start, len) }
}

/// Blocks per iteration of the unrolled DC ZVA loops.
const GROUP: u64 = 32;

/// Both of the above; `CLEAN` also cleans the range to PoC. DCZID_EL0 and
/// CTR_EL0 are read once; [`ZeroPlan`] cuts the range at block boundaries,
/// whatever the two sizes are. When a DC ZVA block is one cache line (the
/// usual case) each line is zeroed and cleaned while it is at hand: three
/// instructions a line (DC ZVA, DC CIVAC, the add that makes the next
/// address, as DC takes no offset) plus 2/32 for the loop. Otherwise the
/// blocks are zeroed first and every line of the range cleaned after.
///
/// # Safety
/// As for [`zero`].
unsafe fn zero_blocks<const CLEAN: bool>(start: u64, len: u64) {
    let dczid: u64;
    // SAFETY: reading DCZID_EL0 has no side effects.
    unsafe { asm!("mrs {}, dczid_el0", out(reg) dczid, options(nomem, nostack)) };
    let block = 4u64 << (dczid & 0xf);
    let line = dcache_line();
    let end = start + len;
    // DCZID_EL0.DZP: DC ZVA is prohibited.
    let plan = if dczid & (1 << 4) != 0 {
        None
    } else {
        ZeroPlan::new(start, len, block, GROUP)
    };
    let Some(p) = plan else {
        // SAFETY: the caller's contract.
        unsafe { core::ptr::write_bytes(start as *mut u8, 0, len as usize) };
        if CLEAN {
            clean_invalidate_lines(start, end, line);
            barrier::dsb(barrier::SY);
        }
        return;
    };
    let fused = CLEAN && block == line;
    // SAFETY: the caller's contract, for each part (the plan keeps every
    // block inside the range); DC CIVAC leaves contents unchanged.
    unsafe {
        core::ptr::write_bytes(start as *mut u8, 0, (p.first - start) as usize);
        if p.groups > p.first {
            if fused {
                asm!(
                    "2:",
                    ".rept 32",
                    "dc zva, {a}",
                    "dc civac, {a}",
                    "add {a}, {a}, {b}",
                    ".endr",
                    "cmp {a}, {e}",
                    "b.lo 2b",
                    a = inout(reg) p.first => _,
                    b = in(reg) block,
                    e = in(reg) p.groups,
                    options(nostack)
                );
            } else {
                asm!(
                    "2:",
                    ".rept 32",
                    "dc zva, {a}",
                    "add {a}, {a}, {b}",
                    ".endr",
                    "cmp {a}, {e}",
                    "b.lo 2b",
                    a = inout(reg) p.first => _,
                    b = in(reg) block,
                    e = in(reg) p.groups,
                    options(nostack)
                );
            }
        }
        let mut a = p.groups;
        while a < p.last {
            asm!("dc zva, {}", in(reg) a, options(nostack));
            if fused {
                asm!("dc civac, {}", in(reg) a, options(nostack));
            }
            a += block;
        }
        core::ptr::write_bytes(p.last as *mut u8, 0, (end - p.last) as usize);
    }
    if fused {
        clean_invalidate_lines(start, p.first, line);
        clean_invalidate_lines(p.last, end, line);
        barrier::dsb(barrier::SY);
    } else if CLEAN {
        clean_invalidate_lines(start, end, line);
        barrier::dsb(barrier::SY);
    }
}

/// Copies `len` bytes from `src` to `dst` and cleans it to PoC (and out of
/// the cache), in one pass: 256 bytes per iteration with load/store pairs,
/// each destination line cleaned as it is written, the destination pointer
/// advanced by the first store's writeback (9.5 instructions per 64 bytes,
/// against some thirty for `memcpy` and a cleaning pass). For images handed
/// to a guest that starts with its MMU off.
///
/// # Safety
/// As for `core::ptr::copy_nonoverlapping(src, dst, len)`; `dst` normal
/// memory.
pub unsafe fn copy_to_poc(dst: u64, src: u64, len: u64) {
    let line = dcache_line();
    let end = dst + len;
    // The body: whole 256-byte chunks from a 64-byte aligned destination,
    // where a cache line is 64 bytes (else all of it the plain way).
    let first = if line == 64 {
        ((dst + 63) & !63).min(end)
    } else {
        end
    };
    let body = (end - first) & !255;
    let head = first - dst;
    // SAFETY: the caller's contract, split into three parts.
    unsafe {
        core::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, head as usize);
        if body != 0 {
            // {t} trails one line behind: each line's first store moves it on.
            asm!(
                "1:",
                ".rept 4",
                "ldp {a}, {b}, [{s}], #16",
                "ldp {c}, {d}, [{s}], #16",
                "stp {a}, {b}, [{t}, #64]!",
                "stp {c}, {d}, [{t}, #16]",
                "ldp {a}, {b}, [{s}], #16",
                "ldp {c}, {d}, [{s}], #16",
                "stp {a}, {b}, [{t}, #32]",
                "stp {c}, {d}, [{t}, #48]",
                "dc civac, {t}",
                ".endr",
                "cmp {t}, {e}",
                "b.ne 1b",
                s = inout(reg) src + head => _,
                t = inout(reg) first - 64 => _,
                e = in(reg) first + body - 64,
                a = out(reg) _,
                b = out(reg) _,
                c = out(reg) _,
                d = out(reg) _,
                options(nostack)
            );
        }
        let done = head + body;
        core::ptr::copy_nonoverlapping(
            (src + done) as *const u8,
            (dst + done) as *mut u8,
            (len - done) as usize,
        );
    }
    clean_invalidate_dcache(dst, first);
    clean_invalidate_dcache(first + body, end);
}

/// A passed-through device's `reg` window the hypervisor forwards guest
/// accesses to (the sub-page filter): mapped Device-nGnRE in the EL2 map by
/// [`DeviceWindow::map`], so holding one proves the accesses below are
/// to mapped device memory.
pub struct DeviceWindow {
    base: u64,
    size: u64,
}

impl DeviceWindow {
    /// Maps the pages of `range` as device memory at EL2 and returns the window.
    pub fn map(range: PhysRange) -> Result<Self, MapError> {
        map_device(range)?;
        Ok(Self {
            base: range.base.0,
            size: range.size,
        })
    }

    /// The address of an access of `width` at `offset`, if it is 1, 2, 4
    /// or 8 bytes, naturally aligned and wholly inside the window.
    fn at(&self, offset: u64, width: u8) -> Option<u64> {
        let w = u64::from(width);
        let ok = matches!(width, 1 | 2 | 4 | 8)
            && offset.is_multiple_of(w)
            && offset < self.size
            && w <= self.size - offset;
        ok.then_some(self.base + offset)
    }

    /// One load of exactly `width` bytes at `offset` (zero-extended).
    /// `None` for an access outside the window, and when the device answers
    /// with an external abort ([`devio`]: the exception table turns it into
    /// an error instead of an EL2 exception).
    pub fn read(&self, offset: u64, width: u8) -> Option<u64> {
        let a = self.at(offset, width)?;
        // SAFETY: `a` is inside the window, which `map` mapped as device
        // memory in the EL2 map, and aligned to `width`, so it is a single
        // device access of that width with no Rust object behind it; the
        // device belongs to the VM whose access this is.
        unsafe { devio::read(a, width) }.ok()
    }

    /// One store of the low `width` bytes of `value` at `offset`, complete
    /// when it returns. `None` as for [`Self::read`].
    ///
    /// A device may instead report a write's error asynchronously, as an
    /// SError (Arm ARM DDI 0487, "Asynchronous exception types": an SError
    /// need not be precise, i.e. attributable to the instruction). EL2 runs with
    /// PSTATE.A masked, so it stays pending until the ERET to the guest,
    /// where (HCR_EL2.AMO set) it is taken to EL2 as the guest's SError and
    /// that VM is stopped with a logged reason ([`crate::vm`]'s
    /// `lower_serror`): the VM whose access it was, since this CPU runs no
    /// one else's. We do not unmask SError at EL2 to catch it at the store:
    /// without FEAT_RAS (ESB, DISR_EL1, ESR_EL2.IESB) nothing promises it
    /// arrives within any window, and an SError taken at an arbitrary EL2
    /// instruction cannot be resumed safely.
    pub fn write(&self, offset: u64, width: u8, value: u64) -> Option<()> {
        let a = self.at(offset, width)?;
        // SAFETY: as for `read`.
        unsafe { devio::write(a, width, value) }.ok()
    }
}
