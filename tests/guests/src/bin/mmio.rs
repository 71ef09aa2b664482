//! `mmio`: Tessera's MMIO emulation, against the test device it emulates at
//! 0x0b00_0000 (4 KiB that behave like little-endian RAM, byte i initially
//! i & 0xff). Loads and stores of every width, sign-extending loads, the zero
//! register as a source, 32-bit loads clearing the upper half, a load pair
//! the hypervisor cannot decode (it must inject an abort), and every
//! general register as the one an access names.
//!
//! Only passes under the hypervisor: bare in QEMU nothing answers at
//! 0x0b00_0000, so every access faults and is reported as a FAIL.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::fmt::Display;
    use tessera_guests::{
        current_el, expect_fault, mpidr, park, println, try_access, Checker, Fault, Mmio, EC_DABT_CURRENT,
    };

    // SAFETY: the test device is MMIO, not memory any Rust object lives in.
    const DEV: Mmio = unsafe { Mmio::new(0x0b00_0000) };

    tessera_guests::entry!(run);

    fn run() -> ! {
        println!("mmio: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        let mut c = Checker::new("mmio");
        check_initial(&mut c);
        check_write_read(&mut c);
        check_sign_extension(&mut c);
        check_zero_register(&mut c);
        check_undecodable(&mut c);
        check_every_register(&mut c);
        c.finish();
        park()
    }

    // Every general register as the target of an emulated store and load
    // (x0 = an address on the test device), then every register checked
    // again after the later exits: whichever frame the exit saved, the
    // guest's registers are all its own afterwards. Returns a bit mask:
    // bit n = a load through xn gave the wrong value, bit 32 + n = xn
    // changed after its own round trip (x8-x10 are the scratch registers).
    core::arch::global_asm!(
        ".global mmio_every_register",
        "mmio_every_register:",
        "    stp     x29, x30, [sp, #-112]!",
        "    stp     x19, x20, [sp, #16]",
        "    stp     x21, x22, [sp, #32]",
        "    stp     x23, x24, [sp, #48]",
        "    stp     x25, x26, [sp, #64]",
        "    stp     x27, x28, [sp, #80]",
        "    str     x0, [sp, #96]",
        "    str     xzr, [sp, #104]",
        ".irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30",
        "    .if \\n == 8",
        "    ldr     x9, [sp, #96]",
        "    mov     x\\n, #(0x700 + \\n)",
        "    str     x\\n, [x9]",
        "    mov     x\\n, #0",
        "    ldr     x\\n, [x9]",
        "    .else",
        "    ldr     x8, [sp, #96]",
        "    mov     x\\n, #(0x700 + \\n)",
        "    str     x\\n, [x8]",
        "    mov     x\\n, #0",
        "    ldr     x\\n, [x8]",
        "    .endif",
        "    cmp     x\\n, #(0x700 + \\n)",
        "    b.eq    1f",
        "    .if \\n == 10",
        "    ldr     x11, [sp, #104]",
        "    orr     x11, x11, #(1 << \\n)",
        "    str     x11, [sp, #104]",
        "    .else",
        "    ldr     x10, [sp, #104]",
        "    orr     x10, x10, #(1 << \\n)",
        "    str     x10, [sp, #104]",
        "    .endif",
        "1:",
        ".endr",
        ".irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30",
        "    .if \\n < 8 || \\n > 10",
        "    cmp     x\\n, #(0x700 + \\n)",
        "    b.eq    1f",
        "    ldr     x10, [sp, #104]",
        "    orr     x10, x10, #(1 << (32 + \\n))",
        "    str     x10, [sp, #104]",
        "1:",
        "    .endif",
        ".endr",
        "    ldr     x0, [sp, #104]",
        "    ldp     x19, x20, [sp, #16]",
        "    ldp     x21, x22, [sp, #32]",
        "    ldp     x23, x24, [sp, #48]",
        "    ldp     x25, x26, [sp, #64]",
        "    ldp     x27, x28, [sp, #80]",
        "    ldp     x29, x30, [sp], #112",
        "    ret",
    );

    extern "C" {
        fn mmio_every_register(addr: usize) -> u64;
    }

    /// [`mmio_every_register`] on the test device.
    fn check_every_register(c: &mut Checker) {
        // SAFETY: the function saves and restores what the AAPCS asks and
        // only touches the test device and its own stack frame.
        expect(c, "mmio_every_register", 0, || unsafe {
            mmio_every_register(0x0b00_0040)
        });
    }

    /// `ldp` gives the hypervisor no syndrome (ESR_EL2.ISV = 0): it must
    /// inject an abort. Only counts if a plain load there works, so a missing
    /// device does not pass.
    fn check_undecodable(c: &mut Checker) {
        if let Err(f) = try_access(|| DEV.read64(0)) {
            c.fail(
                "mmio_ldp_aborts",
                format_args!("plain load faults too: ESR={:#x}", f.esr),
            );
            return;
        }
        match expect_fault(|| {
            DEV.ldp(0);
        }) {
            Some(f) => c.check(
                "mmio_ldp_aborts",
                f.ec() == EC_DABT_CURRENT,
                format_args!("ESR={:#x} FAR={:#x}, want EC=0x25", f.esr, f.far),
            ),
            None => c.check("mmio_ldp_aborts", false, "no exception"),
        };
    }

    /// Checks one access (or sequence) that must not fault and must give `want`.
    fn expect(c: &mut Checker, name: impl Display, want: u64, access: impl FnOnce() -> u64) {
        match try_access(access) {
            Ok(got) => c.check(name, got == want, format_args!("{got:#x}, want {want:#x}")),
            Err(Fault { esr, far, .. }) => {
                c.check(name, false, format_args!("exception ESR={esr:#x} FAR={far:#x}"))
            }
        };
    }

    /// The initial contents: byte i = i & 0xff, read at each width.
    fn check_initial(c: &mut Checker) {
        expect(c, "mmio_read8_0x0", 0x00, || u64::from(DEV.read8(0x0)));
        expect(c, "mmio_read8_0x7", 0x07, || u64::from(DEV.read8(0x7)));
        expect(c, "mmio_read16_0x2", 0x0302, || u64::from(DEV.read16(0x2)));
        expect(c, "mmio_read32_0x4", 0x0706_0504, || u64::from(DEV.read32(0x4)));
        expect(c, "mmio_read64_0x8", 0x0f0e_0d0c_0b0a_0908, || DEV.read64(0x8));
        expect(c, "mmio_read8_0x1ff", 0xff, || u64::from(DEV.read8(0x1ff)));
    }

    /// A store of each width, read back at its width and bytewise.
    fn check_write_read(c: &mut Checker) {
        expect(c, "mmio_write8", 0xa5, || {
            DEV.write8(0x20, 0xa5);
            u64::from(DEV.read8(0x20))
        });
        expect(c, "mmio_write16", 0xbeef, || {
            DEV.write16(0x22, 0xbeef);
            u64::from(DEV.read16(0x22))
        });
        expect(c, "mmio_write32", 0xdead_beef, || {
            DEV.write32(0x24, 0xdead_beef);
            u64::from(DEV.read32(0x24))
        });
        expect(c, "mmio_write64", 0x0123_4567_89ab_cdef, || {
            DEV.write64(0x28, 0x0123_4567_89ab_cdef);
            DEV.read64(0x28)
        });
        // Little-endian: the low byte of the 64-bit store is at 0x28.
        expect(c, "mmio_write64_byte_order", 0xef, || u64::from(DEV.read8(0x28)));
        // Narrow stores leave their neighbours alone.
        expect(c, "mmio_write8_neighbours", 0x2324_22a5, || {
            DEV.write32(0x20, 0x2324_2221);
            DEV.write8(0x20, 0xa5);
            u64::from(DEV.read32(0x20))
        });
    }

    /// Sign-extending loads of negative values, both register widths.
    fn check_sign_extension(c: &mut Checker) {
        expect(c, "mmio_ldrsb_x", 0xffff_ffff_ffff_ff80, || {
            DEV.write8(0x10, 0x80);
            DEV.ldrsb_x(0x10)
        });
        expect(c, "mmio_ldrsb_w", 0x0000_0000_ffff_ff80, || DEV.ldrsb_w(0x10));
        expect(c, "mmio_ldrsh_x", 0xffff_ffff_ffff_8001, || {
            DEV.write16(0x12, 0x8001);
            DEV.ldrsh_x(0x12)
        });
        expect(c, "mmio_ldrsh_w", 0x0000_0000_ffff_8001, || DEV.ldrsh_w(0x12));
        expect(c, "mmio_ldrsw_x", 0xffff_ffff_8000_0001, || {
            DEV.write32(0x14, 0x8000_0001);
            DEV.ldrsw_x(0x14)
        });
        // A plain 32-bit load into a w register clears bits 63:32.
        expect(c, "mmio_ldr_w_clears_upper", 0x8000_0001, || DEV.ldr_w(0x14));
    }

    /// Register 31 as the source of a store is the zero register.
    fn check_zero_register(c: &mut Checker) {
        expect(c, "mmio_str_wzr", 0, || {
            DEV.write32(0x30, 0xffff_ffff);
            DEV.str_wzr(0x30);
            u64::from(DEV.read32(0x30))
        });
        expect(c, "mmio_str_xzr", 0, || {
            DEV.write64(0x38, u64::MAX);
            DEV.str_xzr(0x38);
            DEV.read64(0x38)
        });
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
