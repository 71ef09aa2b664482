// Forwarded device accesses: one load or store of each width, each listed in
// the EL2 exception table (extable.rs) with a fixup, so that a device that
// answers with an external abort makes the call return an error instead of
// stopping the CPU.
//
// Loads:  x0 = address -> x0 = value (zero-extended), x1 = 0; fixup x0 = 0, x1 = 1.
// Stores: x0 = address, x1 = value -> x0 = 0; fixup x0 = 1.
// Leaf functions: they touch no memory but the device and no stack, so the
// handler resuming at the fixup (with x30 intact) is an ordinary return.

.section .text.devio, "ax"

.macro LOAD name, insn, reg
.balign 4
.global \name
\name:
\name\()_insn:
    \insn   \reg, [x0]
    mov     x1, #0
    ret
.endm

// The DSB waits for the store to complete (for Device-nGnRE memory, until it
// is acknowledged) before the exit returns to the guest, so an asynchronous
// error it raises is pending by the ERET and is taken as the guest's SError
// on this CPU, not as someone else's later.
.macro STORE name, insn, reg
.balign 4
.global \name
\name:
\name\()_insn:
    \insn   \reg, [x0]
    dsb     sy
    mov     x0, #0
    ret
.endm

    LOAD    tessera_devio_read8, ldrb, w0
    LOAD    tessera_devio_read16, ldrh, w0
    LOAD    tessera_devio_read32, ldr, w0
    LOAD    tessera_devio_read64, ldr, x0
    STORE   tessera_devio_write8, strb, w1
    STORE   tessera_devio_write16, strh, w1
    STORE   tessera_devio_write32, str, w1
    STORE   tessera_devio_write64, str, x1

devio_load_failed:
    mov     x0, #0
    mov     x1, #1
    ret

devio_store_failed:
    mov     x0, #1
    ret

// The table: (instruction, fixup) pairs, absolute addresses (relocated at
// entry like every other pointer in the image).
.section .rodata.devio_extable, "a"
.balign 8
.global tessera_extable_start
tessera_extable_start:
    .quad   tessera_devio_read8_insn, devio_load_failed
    .quad   tessera_devio_read16_insn, devio_load_failed
    .quad   tessera_devio_read32_insn, devio_load_failed
    .quad   tessera_devio_read64_insn, devio_load_failed
    .quad   tessera_devio_write8_insn, devio_store_failed
    .quad   tessera_devio_write16_insn, devio_store_failed
    .quad   tessera_devio_write32_insn, devio_store_failed
    .quad   tessera_devio_write64_insn, devio_store_failed
.global tessera_extable_end
tessera_extable_end:
