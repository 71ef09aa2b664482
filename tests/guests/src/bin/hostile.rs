//! `hostile`: a guest doing what no well-behaved guest does. Unknown HVC and
//! SMC calls must get NOT_SUPPORTED, IMPLEMENTATION DEFINED registers and
//! garbage code an undefined-instruction exception (or nothing), a flood of
//! hypercalls correct answers, SMC (not this VM's conduit) UNDEFINED,
//! CPU_SUSPEND with invalid power states an error, the PMU must not count
//! cycles spent in the hypervisor, the GICv3 LPI registers read as zero,
//! and the guest must live on: after its RESULT line it prints
//! `hostile: still alive` about every 100 ms, forever.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::arch::asm;
    use tessera_guests::psci::{self, INVALID_ADDRESS, INVALID_PARAMETERS, NOT_SUPPORTED};
    use tessera_guests::{
        branch_to, counter, current_el, expect_fault, gic, hvc, mpidr, ms_to_ticks, println, smc, try_access,
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
        // This VM's conduit is HVC: SMC is no call here, as on a machine
        // without EL3.
        for (name, fid) in [
            ("hostile_smc_unknown", UNKNOWN_SMC_FID),
            ("hostile_smc_psci", psci::VERSION),
        ] {
            match try_access(|| smc(fid, 0, 0, 0)[0] as i64) {
                Ok(r) => c.check(name, false, format_args!("answered {r}, want UNDEFINED")),
                Err(f) => c.check(
                    name,
                    f.ec() == EC_UNKNOWN,
                    format_args!("ESR={:#x}, want EC 0", f.esr),
                ),
            };
        }
        check_impdef_sysreg(&mut c);
        check_hypercall_flood(&mut c);
        check_suspend_power_states(&mut c);
        check_pmu_not_counting_el2(&mut c);
        check_gicr_lpi_registers(&mut c);
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

    /// CPU_SUSPEND power_state values no VM offers (original format:
    /// reserved bits, StateIDs, power levels), and a power down without a
    /// valid entry point.
    fn check_suspend_power_states(c: &mut Checker) {
        for (name, ps) in [
            ("reserved_bit31", 1u64 << 31),
            ("reserved_bit17", 1 << 17),
            ("state_id", 0x1),
            ("power_level_1", 1 << 24),
            ("power_level_3", 3 << 24),
        ] {
            let r = psci::cpu_suspend(ps, 0x4000_0000, 0);
            c.check(
                format_args!("hostile_cpu_suspend_{name}"),
                r == INVALID_PARAMETERS,
                format_args!("power_state {ps:#x}: {r}, want -2"),
            );
        }
        let r = psci::cpu_suspend(1 << 16, 0x10, 0);
        c.check(
            "hostile_cpu_suspend_powerdown_bad_entry",
            r == INVALID_ADDRESS,
            format_args!("{r}, want -9"),
        );
    }

    macro_rules! rd {
        ($r:literal) => {{
            let v: u64;
            // SAFETY: reading a PMU register of this vCPU.
            unsafe { asm!(concat!("mrs {}, ", $r), out(reg) v, options(nostack)) };
            v
        }};
    }
    macro_rules! wr {
        ($r:literal, $v:expr) => {{
            let v: u64 = $v;
            // SAFETY: the PMU of this vCPU; no memory effects.
            unsafe { asm!(concat!("msr ", $r, ", {}"), "isb", in(reg) v, options(nostack)) };
        }};
    }

    /// PMCCNTR_EL0 and PMEVCNTR0_EL0 (CPU_CYCLES) over 1000 PSCI_VERSION
    /// calls with `filter` in PMCCFILTR_EL0 and PMEVTYPER0_EL0.
    fn cycles_over_hypercalls(filter: u64) -> (u64, u64) {
        const CPU_CYCLES: u64 = 0x11;
        wr!("pmcr_el0", 0);
        wr!("pmccfiltr_el0", filter);
        wr!("pmevtyper0_el0", filter | CPU_CYCLES);
        wr!("pmcntenset_el0", (1 << 31) | 1);
        // E, and P and C to zero the counters.
        wr!("pmcr_el0", 0b111);
        let (c0, e0) = (rd!("pmccntr_el0"), rd!("pmevcntr0_el0"));
        for _ in 0..1000 {
            psci::version();
        }
        let (c1, e1) = (rd!("pmccntr_el0"), rd!("pmevcntr0_el0"));
        wr!("pmcr_el0", 0);
        wr!("pmcntenclr_el0", (1 << 31) | 1);
        (c1 - c0, e1.wrapping_sub(e0) & 0xffff_ffff)
    }

    /// With PMCCFILTR_EL0.NSH / PMEVTYPER0_EL0.NSH set (count at EL2), the
    /// counters must not grow more than without: what the hypervisor does
    /// for this VM is not this VM's to time. Without icount QEMU's cycle
    /// counter follows the host's clock, so a busy host inflates any one
    /// run: the runs with and without NSH alternate and each side keeps
    /// its least, so both sides sample the same stretches of host load.
    fn check_pmu_not_counting_el2(c: &mut Checker) {
        const NSH: u64 = 1 << 27;
        let least = |a: (u64, u64), b: (u64, u64)| (a.0.min(b.0), a.1.min(b.1));
        let (mut base, mut nsh) = ((u64::MAX, u64::MAX), (u64::MAX, u64::MAX));
        for _ in 0..9 {
            base = least(base, cycles_over_hypercalls(0));
            nsh = least(nsh, cycles_over_hypercalls(NSH));
        }
        println!("hostile: PMU over 1000 hypercalls: without NSH {base:?}, with NSH {nsh:?}");
        c.check(
            "hostile_pmu_cycle_counter_not_at_el2",
            nsh.0 <= base.0 * 3 / 2 + 1000,
            format_args!("PMCCNTR {} with NSH, {} without", nsh.0, base.0),
        );
        c.check(
            "hostile_pmu_event_counter_not_at_el2",
            nsh.1 <= base.1 * 3 / 2 + 1000,
            format_args!("PMEVCNTR0 {} with NSH, {} without", nsh.1, base.1),
        );
        let f = rd!("pmccfiltr_el0");
        c.check(
            "hostile_pmu_nsh_reads_zero",
            f & NSH == 0,
            format_args!("PMCCFILTR_EL0 {f:#x}"),
        );
    }

    /// GICv3 without LPIs (GICR_TYPER.PLPIS = 0): GICR_PROPBASER,
    /// PENDBASER, SETLPIR, CLRLPIR, INVLPIR, INVALLR are RAZ/WI at 64 bits
    /// and GICR_SYNCR reads 0, not an abort.
    fn check_gicr_lpi_registers(c: &mut Checker) {
        let Some(rd) = gic::rd_frame() else {
            return; // GICv2: no redistributors.
        };
        for (name, off) in [
            ("setlpir", 0x40),
            ("clrlpir", 0x48),
            ("propbaser", 0x70),
            ("pendbaser", 0x78),
            ("invlpir", 0xa0),
            ("invallr", 0xb0),
        ] {
            let r = try_access(|| {
                rd.st64(off, 0x1234_5000_0000_0fff);
                rd.ld64(off)
            });
            c.check(
                format_args!("hostile_gicr_{name}_raz_wi"),
                matches!(r, Ok(0)),
                format_args!("{:?}", r.map_err(|f| f.esr)),
            );
        }
        let r = try_access(|| rd.ld32(0xc0));
        c.check(
            "hostile_gicr_syncr_not_busy",
            matches!(r, Ok(0)),
            format_args!("{:?}", r.map_err(|f| f.esr)),
        );
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
