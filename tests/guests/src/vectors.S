// EL1 exception vectors (Arm ARM D1.10.2: 16 entries of 0x80 bytes, the table
// 2 KiB aligned). Every entry saves the interrupted context as a `Frame` on
// the current stack, calls `tessera_exception(frame, kind)` and, if that
// returns, restores the (possibly edited) frame and returns with `eret`.
// The IRQ entries also read CNTVCT_EL0 at their third instruction (the first
// two make room and free x0/x1) into the frame's padding word, for latency
// measurements (`gic::irq_entry_counter`); exception entry is context
// synchronizing, so no ISB is needed before it.

.equ FRAME_SIZE, 272                 // 31 x-registers, ELR, SPSR, padding

.macro ENTRY kind
.balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #16 * 0]
    mov     x1, #\kind
    b       exception_common
.endm

.macro ENTRY_IRQ kind
.balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #16 * 0]
    mrs     x0, cntvct_el0
    str     x0, [sp, #16 * 16 + 8]      // Frame::irq_entry_counter
    mov     x1, #\kind
    b       exception_common
.endm

.section .text.vectors, "ax"
.balign 0x800
.global tessera_vectors
tessera_vectors:
    ENTRY 0                          // current EL, SP_EL0: sync
    ENTRY_IRQ 1                      //   IRQ
    ENTRY 2                          //   FIQ
    ENTRY 3                          //   SError
    ENTRY 4                          // current EL, SP_EL1: sync
    ENTRY_IRQ 5                      //   IRQ
    ENTRY 6                          //   FIQ
    ENTRY 7                          //   SError
    ENTRY 8                          // lower EL, AArch64 (never: no EL0 code)
    ENTRY 9
    ENTRY 10
    ENTRY 11
    ENTRY 12                         // lower EL, AArch32 (never)
    ENTRY 13
    ENTRY 14
    ENTRY 15

exception_common:
    stp     x2, x3, [sp, #16 * 1]
    stp     x4, x5, [sp, #16 * 2]
    stp     x6, x7, [sp, #16 * 3]
    stp     x8, x9, [sp, #16 * 4]
    stp     x10, x11, [sp, #16 * 5]
    stp     x12, x13, [sp, #16 * 6]
    stp     x14, x15, [sp, #16 * 7]
    stp     x16, x17, [sp, #16 * 8]
    stp     x18, x19, [sp, #16 * 9]
    stp     x20, x21, [sp, #16 * 10]
    stp     x22, x23, [sp, #16 * 11]
    stp     x24, x25, [sp, #16 * 12]
    stp     x26, x27, [sp, #16 * 13]
    stp     x28, x29, [sp, #16 * 14]
    mrs     x2, elr_el1
    mrs     x3, spsr_el1
    stp     x30, x2, [sp, #16 * 15]
    str     x3, [sp, #16 * 16]
    mov     x0, sp
    bl      tessera_exception

    ldr     x3, [sp, #16 * 16]
    ldp     x30, x2, [sp, #16 * 15]
    msr     elr_el1, x2
    msr     spsr_el1, x3
    ldp     x0, x1, [sp, #16 * 0]
    ldp     x2, x3, [sp, #16 * 1]
    ldp     x4, x5, [sp, #16 * 2]
    ldp     x6, x7, [sp, #16 * 3]
    ldp     x8, x9, [sp, #16 * 4]
    ldp     x10, x11, [sp, #16 * 5]
    ldp     x12, x13, [sp, #16 * 6]
    ldp     x14, x15, [sp, #16 * 7]
    ldp     x16, x17, [sp, #16 * 8]
    ldp     x18, x19, [sp, #16 * 9]
    ldp     x20, x21, [sp, #16 * 10]
    ldp     x22, x23, [sp, #16 * 11]
    ldp     x24, x25, [sp, #16 * 12]
    ldp     x26, x27, [sp, #16 * 13]
    ldp     x28, x29, [sp, #16 * 14]
    add     sp, sp, #FRAME_SIZE
    eret
