//! Device accesses with a fixed instruction: plain loads and stores of each
//! width through `read_volatile` / `write_volatile`, and the forms whose
//! emulation is easy to get wrong (sign-extending loads, 32-bit loads into a
//! `w` register, stores of the zero register, a load pair) in `asm!`, so the
//! compiler cannot pick another instruction.

use core::arch::asm;
use core::ptr::{read_volatile, write_volatile};

/// A device region at a guest-physical (= virtual, identity-mapped) address.
/// Offsets are not bounds-checked: probing is the point.
#[derive(Clone, Copy, Debug)]
pub struct Mmio {
    base: usize,
}

impl Mmio {
    /// # Safety
    /// No Rust object may live at `base` onwards (it is a device, or memory
    /// this guest does not use), and accessing it must not break the guest
    /// itself. A fault is fine inside [`try_access`](crate::try_access).
    pub const unsafe fn new(base: usize) -> Self {
        Mmio { base }
    }

    /// The region's base address.
    pub fn base(&self) -> usize {
        self.base
    }

    fn at(&self, offset: usize) -> usize {
        self.base + offset
    }
}

macro_rules! plain_access {
    ($($read:ident, $write:ident, $t:ty);* $(;)?) => {$(
        #[doc = concat!("`", stringify!($t), "` load at `offset`.")]
        pub fn $read(&self, offset: usize) -> $t {
            // SAFETY: `new`'s contract: nothing Rust owns lives there.
            unsafe { read_volatile(self.at(offset) as *const $t) }
        }

        #[doc = concat!("`", stringify!($t), "` store at `offset`.")]
        pub fn $write(&self, offset: usize, value: $t) {
            // SAFETY: as for the load.
            unsafe { write_volatile(self.at(offset) as *mut $t, value) }
        }
    )*};
}

impl Mmio {
    plain_access! {
        read8, write8, u8;
        read16, write16, u16;
        read32, write32, u32;
        read64, write64, u64;
    }
}

/// One load instruction; `$template` names the address `{a}` and result `{v}`.
/// The result register is filled with ones first, so bits the load should
/// have cleared but did not show up.
macro_rules! load_insn {
    ($($(#[$doc:meta])* $name:ident: $template:literal;)*) => {$(
        $(#[$doc])*
        pub fn $name(&self, offset: usize) -> u64 {
            let v: u64;
            // SAFETY: `new`'s contract; the asm only loads from `a` and writes `v`.
            unsafe {
                asm!($template, a = in(reg) self.at(offset), v = inout(reg) u64::MAX => v,
                     options(nostack, preserves_flags))
            };
            v
        }
    )*};
}

impl Mmio {
    load_insn! {
        /// `ldrsb x`: the byte sign-extended to 64 bits.
        ldrsb_x: "ldrsb {v}, [{a}]";
        /// `ldrsb w`: the byte sign-extended to 32 bits; bits 63:32 must be 0.
        ldrsb_w: "ldrsb {v:w}, [{a}]";
        /// `ldrsh x`: the halfword sign-extended to 64 bits.
        ldrsh_x: "ldrsh {v}, [{a}]";
        /// `ldrsh w`: the halfword sign-extended to 32 bits; bits 63:32 must be 0.
        ldrsh_w: "ldrsh {v:w}, [{a}]";
        /// `ldrsw x`: the word sign-extended to 64 bits.
        ldrsw_x: "ldrsw {v}, [{a}]";
        /// `ldr w`: the word zero-extended; bits 63:32 must be 0.
        ldr_w: "ldr {v:w}, [{a}]";
    }

    /// `str wzr`: stores 32 zero bits (register 31 is the zero register here,
    /// not SP).
    pub fn str_wzr(&self, offset: usize) {
        // SAFETY: `new`'s contract; the asm only stores to `a`.
        unsafe { asm!("str wzr, [{a}]", a = in(reg) self.at(offset), options(nostack, preserves_flags)) };
    }

    /// `str xzr`: stores 64 zero bits.
    pub fn str_xzr(&self, offset: usize) {
        // SAFETY: `new`'s contract; the asm only stores to `a`.
        unsafe { asm!("str xzr, [{a}]", a = in(reg) self.at(offset), options(nostack, preserves_flags)) };
    }

    /// `ldp x, x`: a load pair, which gives the hypervisor no syndrome to
    /// emulate it from (ESR_EL2.ISV = 0).
    pub fn ldp(&self, offset: usize) -> (u64, u64) {
        let (v1, v2): (u64, u64);
        // SAFETY: `new`'s contract; the asm only loads from `a`.
        unsafe {
            asm!("ldp {v1}, {v2}, [{a}]", a = in(reg) self.at(offset), v1 = out(reg) v1,
                 v2 = out(reg) v2, options(nostack, preserves_flags))
        };
        (v1, v2)
    }
}

/// Emulation-safe accesses: exactly one `ldr`/`str` of the width with a plain
/// base register, no writeback and no pair, so a trapped access always comes
/// with a syndrome the hypervisor can emulate from (ESR_EL2.ISV = 1). The
/// plain `read*`/`write*` above leave the instruction to the compiler, which
/// may pick a post-indexed or paired form. Drivers of emulated devices (the
/// GIC) use these.
macro_rules! isv_access {
    ($($ld:ident, $st:ident, $t:ty, $load:literal, $store:literal);* $(;)?) => {$(
        #[doc = concat!("`", $load, "`: one `", stringify!($t), "` load at `offset`, emulatable.")]
        pub fn $ld(&self, offset: usize) -> $t {
            let v: u64;
            // SAFETY: `new`'s contract; the asm only loads from `a`.
            unsafe { asm!($load, a = in(reg) self.at(offset), v = out(reg) v, options(nostack, preserves_flags)) };
            v as $t
        }

        #[doc = concat!("`", $store, "`: one `", stringify!($t), "` store at `offset`, emulatable.")]
        pub fn $st(&self, offset: usize, value: $t) {
            // SAFETY: `new`'s contract; the asm only stores to `a`.
            unsafe {
                asm!($store, a = in(reg) self.at(offset), v = in(reg) u64::from(value),
                     options(nostack, preserves_flags))
            };
        }
    )*};
}

impl Mmio {
    isv_access! {
        ld8, st8, u8, "ldrb {v:w}, [{a}]", "strb {v:w}, [{a}]";
        ld32, st32, u32, "ldr {v:w}, [{a}]", "str {v:w}, [{a}]";
        ld64, st64, u64, "ldr {v}, [{a}]", "str {v}, [{a}]";
    }
}
