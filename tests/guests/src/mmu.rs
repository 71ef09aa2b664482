//! The guest's EL1 stage 1: a flat identity map in 1 GiB blocks over a 40-bit
//! address space. The gigabyte holding the image is Normal write-back memory
//! (executable); everything else is Device-nGnRnE and never executable.
//!
//! Why turn the MMU on at all: with it off every data access is Device
//! memory, where exclusives (the console lock, atomics) are not guaranteed to
//! work on real cores. The map covers every address the tests probe (up to
//! 2^40), so a fault there comes from stage 2, not from this map.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

const VA_BITS: u32 = 40;
const GIB_SHIFT: u32 = 30;

/// MAIR_EL1: Attr0 Device-nGnRnE, Attr1 Normal inner/outer write-back
/// read/write-allocate.
const MAIR: u64 = 0xff << 8;
const VALID_TABLE: u64 = 0b11;
const VALID_BLOCK: u64 = 0b01;
const ATTR_DEVICE: u64 = 0 << 2;
const ATTR_NORMAL: u64 = 1 << 2;
const INNER_SHAREABLE: u64 = 0b11 << 8;
const ACCESS_FLAG: u64 = 1 << 10;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;

/// SCTLR_EL1: the Armv8.0 RES1 bits (11, 20, 22, 23, 28, 29), M (MMU), C
/// (data cache), SA (stack alignment check), I (instruction cache).
const SCTLR: u64 = 0x30D0_0800 | (1 << 0) | (1 << 2) | (1 << 3) | (1 << 12);

#[repr(C, align(4096))]
struct Table([AtomicU64; 512]);

impl Table {
    const fn new() -> Self {
        Table([const { AtomicU64::new(0) }; 512])
    }

    fn address(&self) -> u64 {
        self.0.as_ptr() as u64
    }
}

/// Level 0 (two entries used for 40 bits) and the two level-1 tables.
static LEVEL0: Table = Table::new();
static LEVEL1: [Table; 2] = [Table::new(), Table::new()];

/// Physical address bits (ID_AA64MMFR0_EL1.PARange), capped at 48.
fn pa_range() -> (u64, u32) {
    let mmfr0: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { asm!("mrs {}, id_aa64mmfr0_el1", out(reg) mmfr0, options(nomem, nostack, preserves_flags)) };
    let field = (mmfr0 & 0xf).min(5);
    (field, [32, 36, 40, 42, 44, 48][field as usize])
}

/// Fills the tables; `image` is any address in the image. Run once by the
/// boot vCPU with the MMU off, before any other vCPU starts.
pub fn build(image: u64) {
    let (_, pa_bits) = pa_range();
    let limit = 1u64 << pa_bits.min(VA_BITS);
    for (i, table) in LEVEL1.iter().enumerate() {
        LEVEL0.0[i].store(table.address() | VALID_TABLE, Relaxed);
        for (j, entry) in table.0.iter().enumerate() {
            let base = ((i * 512 + j) as u64) << GIB_SHIFT;
            if base >= limit {
                break; // beyond the PA size: an address size fault anyway
            }
            let attrs = if base >> GIB_SHIFT == image >> GIB_SHIFT {
                ATTR_NORMAL | INNER_SHAREABLE
            } else {
                ATTR_DEVICE | PXN | UXN
            };
            entry.store(base | attrs | ACCESS_FLAG | VALID_BLOCK, Relaxed);
        }
    }
}

/// Turns this vCPU's MMU and caches on with the tables from [`build`].
pub fn enable() {
    let (ips, _) = pa_range();
    // T0SZ = 24 (40-bit VA, walk starts at level 0), walks write-back inner
    // shareable, 4 KiB granule; EPD1: no TTBR1 walks (TG1 = 4 KiB for form).
    let tcr = (64 - u64::from(VA_BITS))
        | (0b01 << 8)
        | (0b01 << 10)
        | (0b11 << 12)
        | (1 << 23)
        | (0b10 << 30)
        | (ips << 32);
    // SAFETY: the tables identity-map this image as normal memory, so the
    // instruction after the SCTLR write, the stack and all data keep their
    // addresses; the TLB is invalidated before the switch.
    unsafe {
        asm!(
            "dsb ish",
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            "msr sctlr_el1, {sctlr}",
            "isb",
            "ic iallu",
            "dsb nsh",
            "isb",
            mair = in(reg) MAIR,
            tcr = in(reg) tcr,
            ttbr = in(reg) LEVEL0.address(),
            sctlr = in(reg) SCTLR,
            options(nostack),
        )
    };
}
