// Boot entry for the primary and secondary CPUs.
//
// Runs with the MMU off, at whatever address the boot loader chose: only
// PC-relative addressing until the relocations below have been applied.

// arm64 Linux Image header (Documentation/arch/arm64/booting.rst), so that
// QEMU -kernel, U-Boot booti and the Raspberry Pi firmware all load us alike.
.section .text.head, "ax"
.global _start
_start:
    b       primary_entry           // code0
    .long   0                       // code1
    .quad   0                       // text_offset: anywhere 2 MiB aligned
    .quad   __image_size            // image_size, BSS included
    .quad   0xa                     // flags: LE, 4 KiB pages, placement anywhere
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5 (no PE header)

.section .text.boot, "ax"
primary_entry:
    mov     x19, x0                 // DTB physical address
    mrs     x20, CurrentEL
    ubfx    x20, x20, #2, #2        // exception level we were entered at

    // Apply R_AARCH64_RELATIVE relocations: linked at 0, so the load address
    // is the delta. Anything else in .rela.dyn is a build error: park. So is
    // one into text (below __text_end), which stays exactly as loaded.
    adr     x21, _start
    adrp    x0, __rela_start
    add     x0, x0, :lo12:__rela_start
    adrp    x1, __rela_end
    add     x1, x1, :lo12:__rela_end
    adrp    x5, __text_end
    add     x5, x5, :lo12:__text_end
    sub     x5, x5, x21             // its link-time offset
1:  cmp     x0, x1
    b.hs    2f
    ldp     x2, x3, [x0], #16       // r_offset, r_info
    ldr     x4, [x0], #8            // r_addend
    cmp     x3, #1027               // R_AARCH64_RELATIVE
    b.ne    park_early
    cmp     x2, x5
    b.lo    park_early
    add     x4, x4, x21
    str     x4, [x2, x21]
    b       1b
2:
    // Clear BSS (page aligned at both ends by the linker script).
    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
3:  cmp     x0, x1
    b.hs    4f
    stp     xzr, xzr, [x0], #16
    b       3b
4:
    mov     x0, #0
    bl      set_cpu_stack
    cmp     x20, #2
    b.ne    5f
    bl      set_el2_state
5:
    mov     x0, x19
    mov     x1, x20
    bl      primary_main            // never returns
    b       park_early

// PSCI CPU_ON entry point; x0 = context id = our CPU index.
.global secondary_entry
secondary_entry:
    mov     x19, x0
    bl      set_cpu_stack
    bl      set_el2_state
    mov     x0, x19
    bl      secondary_main          // never returns
    b       park_early

// Spin-table entry: the firmware's parking loop jumps here at EL2 with the
// MMU off and x0 = 0. Our stack slot is the index of our MPIDR (affinity
// fields) in SPIN_MPIDRS, which the boot CPU cleaned to PoC before the
// release (spin_table.rs); a CPU that is not listed parks.
.global spin_table_entry
spin_table_entry:
    mrs     x1, mpidr_el1
    ldr     x2, =0xff00ffffff
    and     x1, x1, x2
    adrp    x2, SPIN_MPIDRS
    add     x2, x2, :lo12:SPIN_MPIDRS
    mov     x0, #0
6:  cmp     x0, #{max_cpus}
    b.hs    park_early
    ldr     x3, [x2, x0, lsl #3]
    cmp     x3, x1
    b.eq    secondary_entry
    add     x0, x0, #1
    b       6b

// x0 = CPU index: SP_EL2 = top of that CPU's stack, TPIDR_EL2 = index.
set_cpu_stack:
    mov     x2, #{stack_size}
    madd    x1, x0, x2, x2
    adrp    x3, __stacks
    add     x3, x3, :lo12:__stacks
    add     sp, x3, x1
    ret

// EL2 basics every CPU needs before Rust: our vectors, the MMU off with a
// known SCTLR_EL2, and no VHE.
set_el2_state:
    msr     tpidr_el2, x19
    adrp    x1, el2_vectors
    add     x1, x1, :lo12:el2_vectors
    msr     vbar_el2, x1
    ldr     x1, ={sctlr_el2_mmu_off}
    msr     sctlr_el2, x1
    msr     hcr_el2, xzr
    isb
    ret

park_early:
    wfe
    b       park_early

.section .noinit.stacks, "aw", %nobits
.balign 4096
.global __stacks
__stacks:
    .space  {stack_size} * {max_cpus}
