//! Bulk copies between hypervisor memory and guest RAM. compiler_builtins'
//! `memcpy` (this target has no FP/SIMD) falls back to assembling each
//! 8-byte word from byte loads when source and destination are not equally
//! aligned, which costs about 2.8 instructions a byte: most of what a
//! 64 KiB inter-VM frame cost. Normal memory takes unaligned accesses
//! (SCTLR_EL2.A is 0), so this copies 128 bytes per loop with `ldp`/`stp`
//! whatever the alignment: about 0.16 instructions a byte.
//!
//! A copy of 2, 4 or 8 bytes is one load and one store: a virtqueue's
//! 16-bit indices are read and published whole (single-copy atomic when
//! aligned, as the rings are), never as two bytes another CPU could see
//! half-updated.

core::arch::global_asm!(
    ".section .text.tessera_copy_bytes, \"ax\"",
    ".global tessera_copy_bytes",
    ".type tessera_copy_bytes, %function",
    // x0 = destination, x1 = source, x2 = length.
    "tessera_copy_bytes:",
    "    cmp     x2, #2",
    "    b.eq    5f",
    "    cmp     x2, #4",
    "    b.eq    6f",
    "    cmp     x2, #8",
    "    b.eq    7f",
    // 128 bytes a loop: 20 instructions, 0.16 a byte.
    "    subs    x2, x2, #128",
    "    b.lo    8f",
    "9:  ldp     x3, x4, [x1]",
    "    ldp     x5, x6, [x1, #16]",
    "    ldp     x7, x8, [x1, #32]",
    "    ldp     x9, x10, [x1, #48]",
    "    stp     x3, x4, [x0]",
    "    stp     x5, x6, [x0, #16]",
    "    stp     x7, x8, [x0, #32]",
    "    stp     x9, x10, [x0, #48]",
    "    ldp     x3, x4, [x1, #64]",
    "    ldp     x5, x6, [x1, #80]",
    "    ldp     x7, x8, [x1, #96]",
    "    ldp     x9, x10, [x1, #112]",
    "    add     x1, x1, #128",
    "    stp     x3, x4, [x0, #64]",
    "    stp     x5, x6, [x0, #80]",
    "    stp     x7, x8, [x0, #96]",
    "    stp     x9, x10, [x0, #112]",
    "    add     x0, x0, #128",
    "    subs    x2, x2, #128",
    "    b.hs    9b",
    "8:  add     x2, x2, #128",
    "    cmp     x2, #64",
    "    b.lo    2f",
    "1:  ldp     x3, x4, [x1]",
    "    ldp     x5, x6, [x1, #16]",
    "    ldp     x7, x8, [x1, #32]",
    "    ldp     x9, x10, [x1, #48]",
    "    add     x1, x1, #64",
    "    sub     x2, x2, #64",
    "    stp     x3, x4, [x0]",
    "    stp     x5, x6, [x0, #16]",
    "    stp     x7, x8, [x0, #32]",
    "    stp     x9, x10, [x0, #48]",
    "    add     x0, x0, #64",
    "    cmp     x2, #64",
    "    b.hs    1b",
    "2:  cmp     x2, #8",
    "    b.lo    3f",
    "    ldr     x3, [x1], #8",
    "    str     x3, [x0], #8",
    "    sub     x2, x2, #8",
    "    b       2b",
    "3:  cbz     x2, 4f",
    "    ldrb    w3, [x1], #1",
    "    strb    w3, [x0], #1",
    "    sub     x2, x2, #1",
    "    b       3b",
    "4:  ret",
    "5:  ldrh    w3, [x1]",
    "    strh    w3, [x0]",
    "    ret",
    "6:  ldr     w3, [x1]",
    "    str     w3, [x0]",
    "    ret",
    "7:  ldr     x3, [x1]",
    "    str     x3, [x0]",
    "    ret",
    ".size tessera_copy_bytes, . - tessera_copy_bytes",
);

unsafe extern "C" {
    fn tessera_copy_bytes(dst: *mut u8, src: *const u8, len: usize);
}

/// Copies `len` bytes from `src` to `dst`.
///
/// # Safety
/// Both ranges are normal memory mapped at EL2 (readable, resp. writable)
/// and do not overlap.
#[inline]
pub unsafe fn copy_bytes(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: the caller's contract; the routine touches only
    // `[src, src + len)` and `[dst, dst + len)` and x0-x10 (caller-saved).
    unsafe { tessera_copy_bytes(dst, src, len) }
}
