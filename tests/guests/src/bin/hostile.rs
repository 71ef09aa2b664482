//! `hostile`: a guest doing what no well-behaved guest does. Unknown HVC and
//! SMC calls must get NOT_SUPPORTED, IMPLEMENTATION DEFINED registers and
//! garbage code an undefined-instruction exception (or nothing), a flood of
//! hypercalls correct answers, and the guest must live on: after its RESULT
//! line it prints `hostile: still alive` about every 100 ms, forever.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::arch::asm;
    use tessera_guests::psci::{self, NOT_SUPPORTED};
    use tessera_guests::{
        branch_to, counter, current_el, expect_fault, hvc, mpidr, ms_to_ticks, println, smc, try_access,
        Checker, EC_UNKNOWN,
    };

    /// Function ids no SMCCC service defines (vendor-specific hypervisor
    /// range, an SMC64 id past the standard ranges, a non-SMCCC value, all
    /// ones).
    const UNKNOWN_HVC_FIDS: [u32; 4] = [0x8600_0000, 0xC500_0000, 0x0000_0042, 0xFFFF_FFFF];
    /// SiP service call 0: nothing implements it for a VM.
    const UNKNOWN_SMC_FID: u32 = 0x8200_0000;
    const HYPERCALL_FLOOD: u32 = 100_000;

    /// Zeros (UDF) inside our own RAM to jump into.
    static GARBAGE: [u32; 4] = [0; 4];

    tessera_guests::entry!(run);

    fn run() -> ! {
        println!("hostile: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        let mut c = Checker::new("hostile");
        for fid in UNKNOWN_HVC_FIDS {
            let r = try_access(|| hvc(fid, 0, 0, 0)[0] as i64);
            check_not_supported(&mut c, format_args!("hostile_hvc_{fid:#x}"), r);
        }
        let r = try_access(|| hvc_imm1(psci::VERSION));
        check_not_supported(&mut c, "hostile_hvc_imm1", r);
        let r = try_access(|| smc(UNKNOWN_SMC_FID, 0, 0, 0)[0] as i64);
        check_not_supported(&mut c, "hostile_smc_unknown", r);
        check_impdef_sysreg(&mut c);
        check_hypercall_flood(&mut c);
        let garbage = &raw const GARBAGE as u64;
        // SAFETY: GARBAGE is zeros, a UDF at its first word.
        let fault = expect_fault(|| unsafe { branch_to(garbage) });
        match fault {
            Some(f) => c.check(
                "hostile_jump_to_garbage",
                f.ec() == EC_UNKNOWN && f.elr == garbage,
                format_args!("ESR={:#x} ELR={:#x}, want EC=0 at {garbage:#x}", f.esr, f.elr),
            ),
            None => c.check("hostile_jump_to_garbage", false, "no exception"),
        };
        c.finish();

        let period = ms_to_ticks(100);
        let mut next = counter() + period;
        loop {
            while counter() < next {
                core::hint::spin_loop();
            }
            next += period;
            println!("hostile: still alive");
        }
    }

    fn check_not_supported(
        c: &mut Checker,
        name: impl core::fmt::Display,
        result: Result<i64, tessera_guests::Fault>,
    ) {
        match result {
            Ok(r) => c.check(name, r == NOT_SUPPORTED, format_args!("{r}, want -1")),
            Err(f) => c.check(name, false, format_args!("exception ESR={:#x}, want -1", f.esr)),
        };
    }

    /// `hvc #1`: an immediate SMCCC does not use, carrying a valid function id.
    fn hvc_imm1(fid: u32) -> i64 {
        let r: u64;
        // SAFETY: like an SMCCC call, it may change only the registers
        // declared as outputs.
        unsafe {
            asm!(
                "hvc #1",
                inout("x0") u64::from(fid) => r,
                out("x1") _, out("x2") _, out("x3") _, out("x4") _, out("x5") _, out("x6") _,
                out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                options(nostack),
            )
        };
        r as i64
    }

    /// S3_1_C15_C2_0 (CPUACTLR_EL1 on Cortex-A57/A72): read, then write the
    /// value back. Either UNDEFINED (EC 0) or accepted is architected.
    fn check_impdef_sysreg(c: &mut Checker) {
        let mut value: u64 = 0;
        let read = expect_fault(|| {
            // SAFETY: reading a CPU control register has no memory effect;
            // not `nomem`, so it stays inside the expect_fault window.
            unsafe { asm!("mrs {:x}, s3_1_c15_c2_0", out(reg) value, options(nostack)) };
        });
        report_sysreg(c, "hostile_impdef_read", read);
        let write = expect_fault(|| {
            // SAFETY: writes back the value just read (0 if the read was
            // refused), so a CPU that implements it is left as it was.
            unsafe { asm!("msr s3_1_c15_c2_0, {:x}", in(reg) value, options(nostack)) };
        });
        report_sysreg(c, "hostile_impdef_write", write);
    }

    fn report_sysreg(c: &mut Checker, name: &str, fault: Option<tessera_guests::Fault>) {
        match fault {
            None => c.check(name, true, "no exception (register implemented)"),
            Some(f) => c.check(
                name,
                f.ec() == EC_UNKNOWN,
                format_args!("exception ESR={:#x} EC={:#x}, want EC=0", f.esr, f.ec()),
            ),
        };
    }

    /// Many PSCI_VERSION calls in a row: every answer right, none lost.
    fn check_hypercall_flood(c: &mut Checker) {
        let start = counter();
        let wrong = (0..HYPERCALL_FLOOD)
            .filter(|_| psci::version() != 0x10001)
            .count();
        let ticks = counter() - start;
        println!("hostile: {HYPERCALL_FLOOD} PSCI_VERSION calls took {ticks} counter ticks");
        c.check(
            "hostile_hypercall_flood",
            wrong == 0,
            format_args!("{wrong} of {HYPERCALL_FLOOD} answers not 0x10001"),
        );
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
