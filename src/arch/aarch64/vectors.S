// EL2 exception vectors (Arm ARM D1.10.2: 16 entries of 0x80 bytes, the table
// 2 KiB aligned). Every entry saves the interrupted context as a `TrapFrame`
// on the current CPU's stack and calls into Rust; lower-EL entries return to
// the guest through `exception_return`.

.equ FRAME_SIZE, 272                 // 31 x-registers, ELR, SPSR, padding

// Only the registers the AAPCS lets Rust code clobber (x0-x18, x30) and the
// return state: enough for exits that never look at x19-x29, which Rust
// preserves for us. The interrupt exits use this.
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

// The registers of SAVE_CALLER without the return state: for the
// interrupt exit, which takes no exception and changes neither ELR_EL2 nor
// SPSR_EL2, so they stay in the CPU (the frame's fields are stale there).
.macro SAVE_CALLER_REGS
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
    str     x30, [sp, #16 * 15]
.endm

// A lower-EL synchronous exception: x0-x3 saved, x1 = ESR_EL2, then on to
// `next`, which saves what its exits need.
.macro LOWER_SYNC next
.balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #16 * 0]
    stp     x2, x3, [sp, #16 * 1]
    mrs     x1, esr_el2
    b       \next
.endm

// The caller-saved registers after LOWER_SYNC's x0-x3, and x30.
.macro SAVE_X4_X30
    stp     x4, x5, [sp, #16 * 2]
    stp     x6, x7, [sp, #16 * 3]
    stp     x8, x9, [sp, #16 * 4]
    stp     x10, x11, [sp, #16 * 5]
    stp     x12, x13, [sp, #16 * 6]
    stp     x14, x15, [sp, #16 * 7]
    stp     x16, x17, [sp, #16 * 8]
    str     x18, [sp, #16 * 9]
    str     x30, [sp, #16 * 15]
.endm

.macro RESTORE_X4_X30
    ldp     x4, x5, [sp, #16 * 2]
    ldp     x6, x7, [sp, #16 * 3]
    ldp     x8, x9, [sp, #16 * 4]
    ldp     x10, x11, [sp, #16 * 5]
    ldp     x12, x13, [sp, #16 * 6]
    ldp     x14, x15, [sp, #16 * 7]
    ldp     x16, x17, [sp, #16 * 8]
    ldr     x18, [sp, #16 * 9]
    ldr     x30, [sp, #16 * 15]
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

// A synchronous exception from EL2 itself: `el2_sync` either resumes at an
// exception-table fixup (a forwarded device access the device aborted) or
// reports it and parks the CPU.
.macro CURRENT_SYNC
.balign 0x80
    SAVE_FRAME
    mov     x0, sp
    bl      el2_sync
    b       exception_return
.endm

.macro LOWER handler
.balign 0x80
    SAVE_FRAME
    mov     x0, sp
    bl      \handler
    b       exception_return
.endm

// The table, twice: `el2_vectors` for CPUs whose VM calls PSCI through
// HVC (its hypercalls take the short way in `guest_sync_hvc`), and
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
    CURRENT_SYNC
    UNEXPECTED 5
    UNEXPECTED 6
    UNEXPECTED 7
    // Lower EL, AArch64: the guests.
    LOWER_SYNC \sync
.balign 0x80
    SAVE_CALLER_REGS
    b       guest_irq
    LOWER   lower_fiq
    LOWER   lower_serror
    // Lower EL, AArch32: EL1 is always AArch64 (HCR_EL2.RW = 1), but a guest
    // may run 32-bit EL0 code, and exits from there arrive here. The frame is
    // the same (r0-r14 are x0-x14), so the same handlers take them.
    LOWER_SYNC \sync
.balign 0x80
    SAVE_CALLER_REGS
    b       guest_irq
    LOWER   lower_fiq
    LOWER   lower_serror
.endm

.section .text.vectors, "ax"
    TABLE   el2_vectors, guest_sync_hvc
    TABLE   el2_vectors_smc, guest_sync

// A synchronous exit from a VM whose conduit is HVC: hypercalls (EC 0x16)
// that need nothing but x0 and the syndrome (`hvc_fast`: version queries,
// calls nobody implements) are answered with x4-x18 and x30 saved around
// the call and nothing else: ELR_EL2 and SPSR_EL2 stay in the CPU, as
// `hvc_fast` takes no exception and changes neither. Every other hypercall
// gets the whole frame.
guest_sync_hvc:
    lsr     x2, x1, #26
    cmp     x2, #0x16
    b.ne    guest_sync
    SAVE_X4_X30
    bl      hvc_fast                // x0, ESR -> x0 = answer, x1 = answered
    cbz     x1, 1f
    RESTORE_X4_X30
    ldr     x1, [sp, #8]
    ldp     x2, x3, [sp, #16 * 1]
    add     sp, sp, #FRAME_SIZE
    eret
1:  mrs     x0, elr_el2
    mrs     x1, spsr_el2
    str     x0, [sp, #16 * 15 + 8]
    str     x1, [sp, #16 * 16]
    SAVE_CALLEE
    mov     x0, sp
    mrs     x1, esr_el2
    bl      hvc_exit
    b       exception_return

// Every other synchronous exit (x1 = ESR): first with the caller-saved
// frame only, for the frequent exits whose register is not one of x19-x29:
// an SGI (a system register trap, EC 0x18, that `sgi_exit_short` takes:
// no exception, ELR_EL2 and SPSR_EL2 stay in the CPU and the PC moves on
// here) and an emulated device access (a data abort, EC 0x24,
// `mmio_exit_short`); everything else, or an SGI that `sgi_exit_short`
// declines, gets the whole frame and `lower_sync`.
guest_sync:
    SAVE_X4_X30
    lsr     x2, x1, #26
    cmp     x2, #0x24
    b.ne    7f
    // A data abort whose register, if it names one (ISV), is not one of
    // x19-x29.
    mrs     x0, elr_el2
    mrs     x3, spsr_el2
    str     x0, [sp, #16 * 15 + 8]
    str     x3, [sp, #16 * 16]
    mov     x0, sp
    tbz     x1, #24, 1f
    ubfx    x2, x1, #16, #5
    sub     x2, x2, #19
    cmp     x2, #11
    b.lo    3f
1:  bl      mmio_exit_short
    b       return_caller
7:  cmp     x2, #0x18
    b.eq    4f
5:  mrs     x0, elr_el2
    mrs     x3, spsr_el2
    str     x0, [sp, #16 * 15 + 8]
    str     x3, [sp, #16 * 16]
3:  SAVE_CALLEE
    mov     x0, sp
    bl      lower_sync
    b       exception_return
4:  mov     x0, sp
    bl      sgi_exit_short          // frame, ESR -> w0 = handled
    cbz     w0, 6f
    mrs     x0, elr_el2
    add     x0, x0, #4
    msr     elr_el2, x0
    RESTORE_X4_X30
    ldp     x0, x1, [sp, #16 * 0]
    ldp     x2, x3, [sp, #16 * 1]
    add     sp, sp, #FRAME_SIZE
    eret
6:  b       5b

// A physical interrupt: the handler never reads guest registers, takes
// no exception and leaves ELR_EL2 and SPSR_EL2 alone (it returns, or
// abandons the guest for good). It must never make a forwarded device
// access (`devio`): the one EL2 exception the hypervisor survives would
// leave ELR_EL2 pointing at its fixup.
guest_irq:
    mov     x0, sp
    bl      lower_irq
    ldr     x30, [sp, #16 * 15]
    b       return_regs


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
    // Fall through.

// x0-x18 back and `eret` (ELR_EL2, SPSR_EL2 and x30 already in place).
return_regs:
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
