//! `conduit`: only the VM's own PSCI conduit answers, and every call it
//! answers keeps the registers SMCCC 1.1 says the callee preserves.
//!
//! The guest runs in two VMs, one per conduit. It finds which of `hvc #0`
//! and `smc #0` answers PSCI_VERSION (exactly one must; the other must be an
//! UNDEFINED instruction at that instruction), prints `conduit: hvc` or
//! `conduit: smc`, checks that immediate #1 of its conduit is no call
//! (NOT_SUPPORTED) and of the other one UNDEFINED, and then that x4-x30,
//! SP_EL0 and SP_EL1 survive PSCI_VERSION, PSCI_FEATURES, an unknown
//! function, failing CPU_ONs, SMCCC_VERSION and SMCCC_ARCH_FEATURES.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::arch::asm;
    use tessera_guests::psci::{self, NOT_SUPPORTED};
    use tessera_guests::{current_el, hvc, mpidr, park, println, smc, try_access, Checker, EC_UNKNOWN};

    const SMCCC_VERSION: u32 = 0x8000_0000;
    const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Insn {
        Hvc,
        Smc,
    }

    impl Insn {
        fn name(self) -> &'static str {
            match self {
                Insn::Hvc => "hvc",
                Insn::Smc => "smc",
            }
        }
        fn other(self) -> Insn {
            match self {
                Insn::Hvc => Insn::Smc,
                Insn::Smc => Insn::Hvc,
            }
        }
    }

    fn call0(insn: Insn, fid: u32, a1: u64) -> Result<i64, tessera_guests::Fault> {
        try_access(|| match insn {
            Insn::Hvc => hvc(fid, a1, 0, 0)[0] as i64,
            Insn::Smc => smc(fid, a1, 0, 0)[0] as i64,
        })
    }

    /// `hvc #1` / `smc #1` with `fid` in x0.
    fn call_imm1(insn: Insn, fid: u32) -> Result<i64, tessera_guests::Fault> {
        try_access(|| {
            let mut r = u64::from(fid);
            // SAFETY: an SMCCC-like call: only the declared registers change.
            unsafe {
                match insn {
                    Insn::Hvc => asm!(
                        "hvc #1",
                        inout("x0") r,
                        out("x1") _, out("x2") _, out("x3") _, out("x4") _, out("x5") _, out("x6") _,
                        out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                        out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                        options(nostack),
                    ),
                    Insn::Smc => asm!(
                        "smc #1",
                        inout("x0") r,
                        out("x1") _, out("x2") _, out("x3") _, out("x4") _, out("x5") _, out("x6") _,
                        out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                        out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                        options(nostack),
                    ),
                }
            }
            r as i64
        })
    }

    tessera_guests::entry!(run);

    fn run() -> ! {
        println!("conduit: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        let mut c = Checker::new("conduit");
        let hvc_r = call0(Insn::Hvc, psci::VERSION, 0);
        let smc_r = call0(Insn::Smc, psci::VERSION, 0);
        let conduit = match (hvc_r, smc_r) {
            (Ok(0x10001), Err(f)) => {
                c.check(
                    "conduit_other_undefined",
                    f.ec() == EC_UNKNOWN,
                    format_args!("smc: ESR={:#x}", f.esr),
                );
                Insn::Hvc
            }
            (Err(f), Ok(0x10001)) => {
                c.check(
                    "conduit_other_undefined",
                    f.ec() == EC_UNKNOWN,
                    format_args!("hvc: ESR={:#x}", f.esr),
                );
                Insn::Smc
            }
            (h, s) => {
                c.fail(
                    "conduit_exactly_one",
                    format_args!("hvc answered {:?}, smc answered {:?}", h.ok(), s.ok()),
                );
                c.finish();
                park()
            }
        };
        println!("conduit: {}", conduit.name());
        match call_imm1(conduit, psci::VERSION) {
            Ok(r) => c.check(
                "conduit_imm1_not_supported",
                r == NOT_SUPPORTED,
                format_args!("{r}, want -1"),
            ),
            Err(f) => c.check(
                "conduit_imm1_not_supported",
                false,
                format_args!("ESR={:#x}, want -1", f.esr),
            ),
        };
        match call_imm1(conduit.other(), psci::VERSION) {
            Ok(r) => c.check(
                "conduit_other_imm1_undefined",
                false,
                format_args!("answered {r}"),
            ),
            Err(f) => c.check(
                "conduit_other_imm1_undefined",
                f.ec() == EC_UNKNOWN,
                format_args!("ESR={:#x}, want EC 0", f.esr),
            ),
        };

        for (name, fid, a1) in [
            ("psci_version", psci::VERSION, 0),
            ("psci_features", psci::FEATURES, u64::from(psci::CPU_ON)),
            ("unknown_fid", 0xC400_ABCD, 0),
            ("cpu_on_foreign", psci::CPU_ON, 0x63),
            ("cpu_on_already_on", psci::CPU_ON, 0),
            ("smccc_version", SMCCC_VERSION, 0),
            ("smccc_arch_features", SMCCC_ARCH_FEATURES, 0x8000_8000),
        ] {
            check_preserved(&mut c, conduit, name, fid, a1);
        }
        c.finish();
        println!("conduit: done");
        park()
    }

    core::arch::global_asm!(
        // conduit_regs_call(fid, insn (0 hvc, 1 smc), a1, out: *mut [u64; 34])
        // Sets x4-x30 to 0x7e57_0000_0000_00nn and SP_EL0 to a pattern,
        // calls, and stores x0-x30, SP and SP_EL0 (and SP before) in `out`.
        ".global conduit_regs_call",
        "conduit_regs_call:",
        "    sub     sp, sp, #112",
        "    stp     x19, x20, [sp, #0]",
        "    stp     x21, x22, [sp, #16]",
        "    stp     x23, x24, [sp, #32]",
        "    stp     x25, x26, [sp, #48]",
        "    stp     x27, x28, [sp, #64]",
        "    stp     x29, x30, [sp, #80]",
        "    str     x3, [sp, #96]",
        "    mov     x9, sp",
        "    str     x9, [x3, #8 * 33]",
        "    mrs     x9, sp_el0",
        "    str     x9, [sp, #104]",
        "    movz    x9, #0x5e0",
        "    movk    x9, #0x7e57, lsl #48",
        "    msr     sp_el0, x9",
        "    mov     x9, x1",
        "    mov     x1, x2",
        "    mov     x2, xzr",
        "    mov     x3, xzr",
        "    cbnz    x9, 1f",
        ".irp n,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30",
        "    movz    x\\n, #\\n",
        "    movk    x\\n, #0x7e57, lsl #48",
        ".endr",
        "    hvc     #0",
        "    b       2f",
        "1:",
        ".irp n,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30",
        "    movz    x\\n, #\\n",
        "    movk    x\\n, #0x7e57, lsl #48",
        ".endr",
        "    smc     #0",
        "2:",
        // Only SP is trusted to find `out` again: that it survived is checked.
        "    str     x30, [sp, #-16]!",
        "    ldr     x30, [sp, #16 + 96]",
        "    stp     x0, x1, [x30, #0]",
        "    stp     x2, x3, [x30, #16]",
        "    stp     x4, x5, [x30, #32]",
        "    stp     x6, x7, [x30, #48]",
        "    stp     x8, x9, [x30, #64]",
        "    stp     x10, x11, [x30, #80]",
        "    stp     x12, x13, [x30, #96]",
        "    stp     x14, x15, [x30, #112]",
        "    stp     x16, x17, [x30, #128]",
        "    stp     x18, x19, [x30, #144]",
        "    stp     x20, x21, [x30, #160]",
        "    stp     x22, x23, [x30, #176]",
        "    stp     x24, x25, [x30, #192]",
        "    stp     x26, x27, [x30, #208]",
        "    stp     x28, x29, [x30, #224]",
        "    ldr     x9, [sp], #16",
        "    str     x9, [x30, #240]",
        "    mov     x9, sp",
        "    str     x9, [x30, #8 * 31]",
        "    mrs     x9, sp_el0",
        "    str     x9, [x30, #8 * 32]",
        "    ldr     x9, [sp, #104]",
        "    msr     sp_el0, x9",
        "    ldp     x19, x20, [sp, #0]",
        "    ldp     x21, x22, [sp, #16]",
        "    ldp     x23, x24, [sp, #32]",
        "    ldp     x25, x26, [sp, #48]",
        "    ldp     x27, x28, [sp, #64]",
        "    ldp     x29, x30, [sp, #80]",
        "    add     sp, sp, #112",
        "    ret",
    );

    extern "C" {
        fn conduit_regs_call(fid: u64, insn: u64, a1: u64, out: *mut [u64; 34]);
    }

    /// One call through `conduit`: x4-x30, SP_EL1 and SP_EL0 as before.
    fn check_preserved(c: &mut Checker, conduit: Insn, name: &str, fid: u32, a1: u64) {
        let mut out = [0u64; 34];
        let insn = u64::from(conduit == Insn::Smc);
        // SAFETY: the routine follows the AAPCS (x19-x30 and SP restored)
        // and writes only the 34 words of `out`.
        unsafe { conduit_regs_call(u64::from(fid), insn, a1, &mut out) };
        let mut bad = None;
        for (n, v) in out.iter().enumerate().take(31).skip(4) {
            if *v != 0x7e57_0000_0000_0000 | n as u64 {
                bad = Some(format_args!("x{n} = {v:#x}").to_string_in());
                break;
            }
        }
        let sp_ok = out[31] == out[33];
        let sp_el0_ok = out[32] == 0x7e57_0000_0000_05e0;
        c.check(
            format_args!("smccc_preserves_regs_{name}"),
            bad.is_none() && sp_ok && sp_el0_ok,
            format_args!(
                "x0 = {:#x}; {}; SP {:#x} (was {:#x}); SP_EL0 {:#x}",
                out[0],
                bad.as_ref().map_or("x4-x30 kept", |b| b.as_str()),
                out[31],
                out[33],
                out[32]
            ),
        );
    }

    /// A small fixed string for one line of detail, without an allocator.
    struct Line {
        buf: [u8; 48],
        len: usize,
    }

    impl Line {
        fn as_str(&self) -> &str {
            core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
        }
    }

    impl core::fmt::Write for Line {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let n = s.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            Ok(())
        }
    }

    trait ToLine {
        fn to_string_in(self) -> Line;
    }

    impl ToLine for core::fmt::Arguments<'_> {
        fn to_string_in(self) -> Line {
            let mut l = Line { buf: [0; 48], len: 0 };
            let _ = core::fmt::write(&mut l, self);
            l
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
