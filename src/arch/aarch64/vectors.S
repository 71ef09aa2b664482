// EL2 exception vectors (Arm ARM D1.10.2: 16 entries of 0x80 bytes, the table
// 2 KiB aligned). Every entry saves the interrupted context as a `TrapFrame`
// on the current CPU's stack and calls into Rust; lower-EL entries return to
// the guest through `exception_return`.

.equ FRAME_SIZE, 272                 // 31 x-registers, ELR, SPSR, padding

// Only the registers the AAPCS lets Rust code clobber (x0-x18, x30) and the
// return state: enough for exits that never look at x19-x29, which Rust
// preserves for us. The hypercall and interrupt exits use this.
.macro SAVE_CALLER
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #16 * 0]
    stp     x2, x3, [sp, #16 * 1]
    stp     x4, x5, [sp, #16 * 2]
    stp     x6, x7, [sp, #16 * 3]
    stp     x8, x9, [sp, #16 * 4]
    stp     x10, x11, [sp, #16 * 5]
    stp     x12, x13, [sp, #16 * 6]
    stp     x14, x15, [sp, #16 * 7]
    stp     x16, x17, [sp, #16 * 8]
    str     x18, [sp, #16 * 9]
    mrs     x0, elr_el2
    mrs     x1, spsr_el2
    stp     x30, x0, [sp, #16 * 15]
    str     x1, [sp, #16 * 16]
.endm

// The rest of the frame, for exits that read or write any guest register.
.macro SAVE_CALLEE
    str     x19, [sp, #16 * 9 + 8]
    stp     x20, x21, [sp, #16 * 10]
    stp     x22, x23, [sp, #16 * 11]
    stp     x24, x25, [sp, #16 * 12]
    stp     x26, x27, [sp, #16 * 13]
    stp     x28, x29, [sp, #16 * 14]
.endm

// The whole TrapFrame.
.macro SAVE_FRAME
    SAVE_CALLER
    SAVE_CALLEE
.endm

.macro UNEXPECTED kind
.balign 0x80
    SAVE_FRAME
    mov     x0, sp
    mov     x1, #\kind
    bl      el2_unexpected
    b       .
.endm

.macro LOWER handler
.balign 0x80
    SAVE_FRAME
    mov     x0, sp
    bl      \handler
    b       exception_return
.endm

// The table, twice: `el2_vectors` for CPUs whose VM calls PSCI through
// HVC (its hypercalls take the short way in `guest_sync`), and
// `el2_vectors_smc` for VMs whose conduit is SMC, where an HVC is no call
// and is decided like any other exit.
.macro TABLE name, sync
.balign 0x800
.global \name
\name:
    // Current EL with SP_EL0: EL2 never uses SP_EL0.
    UNEXPECTED 0
    UNEXPECTED 1
    UNEXPECTED 2
    UNEXPECTED 3
    // Current EL with SP_EL2: a fault in the hypervisor itself.
    UNEXPECTED 4
    UNEXPECTED 5
    UNEXPECTED 6
    UNEXPECTED 7
    // Lower EL, AArch64: the guests.
.balign 0x80
    SAVE_CALLER
    b       \sync
.balign 0x80
    SAVE_CALLER
    b       guest_irq
    LOWER   lower_fiq
    LOWER   lower_serror
    // Lower EL, AArch32: EL1 is always AArch64 (HCR_EL2.RW = 1), but a guest
    // may run 32-bit EL0 code, and exits from there arrive here. The frame is
    // the same (r0-r14 are x0-x14), so the same handlers take them.
.balign 0x80
    SAVE_CALLER
    b       \sync
.balign 0x80
    SAVE_CALLER
    b       guest_irq
    LOWER   lower_fiq
    LOWER   lower_serror
.endm

.section .text.vectors, "ax"
    TABLE   el2_vectors, guest_sync
    TABLE   el2_vectors_smc, guest_sync_slow

// A synchronous exit: hypercalls (EC 0x16) touch only x0-x3 and take the
// short way; everything else saves the whole frame first.
guest_sync:
    mrs     x1, esr_el2
    lsr     x2, x1, #26
    cmp     x2, #0x16
    b.ne    1f
    mov     x0, sp
    bl      hvc_exit
    b       return_caller
1:
guest_sync_slow:
    SAVE_CALLEE
    mov     x0, sp
    bl      lower_sync
    b       exception_return

// A physical interrupt: the handler never reads guest registers.
guest_irq:
    mov     x0, sp
    bl      lower_irq
    b       return_caller


// Restores the TrapFrame at SP and returns to where it points: x19-x29,
// then the rest as after SAVE_CALLER.
.global exception_return
exception_return:
    ldr     x19, [sp, #16 * 9 + 8]
    ldp     x20, x21, [sp, #16 * 10]
    ldp     x22, x23, [sp, #16 * 11]
    ldp     x24, x25, [sp, #16 * 12]
    ldp     x26, x27, [sp, #16 * 13]
    ldp     x28, x29, [sp, #16 * 14]
    // Fall through.

// Returns after SAVE_CALLER: x19-x29 still hold the guest's values.
return_caller:
    ldp     x30, x0, [sp, #16 * 15]
    ldr     x1, [sp, #16 * 16]
    msr     elr_el2, x0
    msr     spsr_el2, x1
    ldp     x0, x1, [sp, #16 * 0]
    ldp     x2, x3, [sp, #16 * 1]
    ldp     x4, x5, [sp, #16 * 2]
    ldp     x6, x7, [sp, #16 * 3]
    ldp     x8, x9, [sp, #16 * 4]
    ldp     x10, x11, [sp, #16 * 5]
    ldp     x12, x13, [sp, #16 * 6]
    ldp     x14, x15, [sp, #16 * 7]
    ldp     x16, x17, [sp, #16 * 8]
    ldr     x18, [sp, #16 * 9]
    add     sp, sp, #FRAME_SIZE
    eret
