// Entry of a test guest: the boot vCPU (through the arm64 Image header) and
// the secondaries (PSCI CPU_ON). Both arrive at EL1h with the MMU off, so only
// PC-relative addressing until the relocations below have been applied.

// arm64 Linux Image header (Documentation/arch/arm64/booting.rst), so the
// hypervisor, QEMU -kernel and U-Boot booti all load a guest alike.
.section .text.head, "ax"
.global _start
_start:
    b       primary_entry           // code0
    .long   0                       // code1
    .quad   0                       // text_offset: at the start of RAM
    .quad   __image_size            // image_size, BSS included
    .quad   0xa                     // flags: LE, 4 KiB pages, placement anywhere
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5 (no PE header)

.section .text.boot, "ax"
primary_entry:
    mrs     x20, cntvct_el0         // the guest's 2nd instruction: rt::entry_counter()
    mov     x19, x0                 // DTB address or 0 (unused so far)

    // Entered once only: a second entry (a vCPU started at the image start)
    // would relocate twice and clear the BSS under the running guest. The flag
    // is in .data and written with the MMU off, so it is in memory for any
    // vCPU that arrives with its MMU off.
    adrp    x0, booted
    add     x0, x0, :lo12:booted
    ldr     x1, [x0]
    cbnz    x1, park_early
    mov     x1, #1
    str     x1, [x0]

    // Apply R_AARCH64_RELATIVE relocations: linked at 0, so the load address
    // is the delta. Anything else in .rela.dyn is a build error: park.
    adr     x21, _start
    adrp    x0, __rela_start
    add     x0, x0, :lo12:__rela_start
    adrp    x1, __rela_end
    add     x1, x1, :lo12:__rela_end
1:  cmp     x0, x1
    b.hs    2f
    ldp     x2, x3, [x0], #16       // r_offset, r_info
    ldr     x4, [x0], #8            // r_addend
    cmp     x3, #1027               // R_AARCH64_RELATIVE
    b.ne    park_early
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
    bl      cpu_setup
    mov     x0, x19
    mov     x1, x20
    bl      tessera_rt_primary      // never returns
    b       park_early

// PSCI CPU_ON entry point; x0 = context id = this vCPU's index.
.global tessera_secondary_entry
tessera_secondary_entry:
    cmp     x0, #{max_cpus}
    b.hs    park_early              // no stack for it
    bl      cpu_setup
    bl      tessera_rt_secondary    // x0 still the index; never returns
    b       park_early

// x0 = vCPU index (preserved): SP = top of its stack, TPIDR_EL1 = index,
// VBAR_EL1 = our vectors, SError unmasked so a stray one is reported.
cpu_setup:
    mov     x2, #{stack_size}
    madd    x1, x0, x2, x2
    adrp    x3, __stacks
    add     x3, x3, :lo12:__stacks
    add     sp, x3, x1
    msr     tpidr_el1, x0
    adrp    x1, tessera_vectors
    add     x1, x1, :lo12:tessera_vectors
    msr     vbar_el1, x1
    isb
    msr     daifclr, #4
    ret

park_early:
    wfe
    b       park_early

.section .data.boot, "aw"
.balign 8
booted:
    .quad   0

.section .bss.stacks, "aw", %nobits
.balign 4096
__stacks:
    .space  {stack_size} * {max_cpus}
