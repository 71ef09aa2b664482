//! `psci`: PSCI 1.1 and SMCCC over `hvc` as Tessera presents them to a VM.
//! Starts every secondary vCPU it owns (that is how it learns how many),
//! stops one with CPU_OFF and restarts it, checks the error codes, prints
//! `RESULT psci: …` and finally calls SYSTEM_OFF.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicBool, Ordering};
    use tessera_guests::psci::{self, ALREADY_ON, INVALID_ADDRESS, INVALID_PARAMETERS, NOT_SUPPORTED};
    use tessera_guests::{
        counter, cpu_index, current_el, gic, hvc, mpidr, ms_to_ticks, park, println, secondary_entry_address,
        spin_until, start_cpu, try_access, Checker, MAX_CPUS,
    };

    const SMCCC_VERSION: u32 = 0x8000_0000;
    const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    const SMCCC_ARCH_WORKAROUND_1: u32 = 0x8000_8000;
    /// A PSCI-range function id no PSCI version defines.
    const UNKNOWN_PSCI_FID: u32 = 0xC400_ABCD;
    /// An MPIDR no VM has (Aff0 = 0x63).
    const FOREIGN_MPIDR: u64 = 0x63;
    /// An entry point outside any VM's RAM.
    const BAD_ENTRY: u64 = 0x10;
    /// How long a vCPU gets to come up or go down.
    const TIMEOUT_MS: u64 = 1000;

    /// Set by secondary K once it runs.
    static UP: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
    /// Set by the boot vCPU to make secondary K call CPU_OFF.
    static STOP: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

    tessera_guests::entry!(run);

    fn run() -> ! {
        println!("psci: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        let mut c = Checker::new("psci");

        let v = psci::version();
        c.check("psci_version", v == 0x10001, format_args!("{v:#x}, want 0x10001"));
        let f = psci::features(psci::CPU_ON);
        c.check("psci_features_cpu_on", f == 0, format_args!("{f}, want 0"));
        let f = psci::features(UNKNOWN_PSCI_FID);
        c.check(
            "psci_features_unknown",
            f == NOT_SUPPORTED,
            format_args!("{f}, want -1"),
        );
        check_smccc(&mut c);
        let m = psci::migrate_info_type();
        c.check("psci_migrate_info_type", m == 2, format_args!("{m}, want 2"));

        let cpus = start_secondaries(&mut c);
        println!("psci: {cpus} vCPUs");
        let r = psci::cpu_on(FOREIGN_MPIDR, secondary_entry_address(), 1);
        c.check(
            "psci_cpu_on_foreign",
            r == INVALID_PARAMETERS,
            format_args!("{r}, want -2"),
        );
        if cpus >= 2 {
            check_on_off(&mut c);
        } else {
            c.fail("psci_cpu_off", "needs a second vCPU");
        }

        check_suspend_with_pending(&mut c);

        c.finish();
        psci::system_off();
        println!("FAIL psci: SYSTEM_OFF returned");
        park()
    }

    /// CPU_SUSPEND with an interrupt already pending (IRQs masked here, so
    /// it is not taken) must return at once, not sleep until some unrelated
    /// interrupt: the hypervisor's WFI at EL2 would not wake for it.
    fn check_suspend_with_pending(c: &mut Checker) {
        const SGI: u32 = 3;
        gic::init_distributor();
        gic::init_cpu();
        gic::enable(SGI);
        gic::send_sgi(SGI, gic::SgiTarget::List(1 << cpu_index()));
        let t0 = counter();
        let r = psci::cpu_suspend(0, 0, 0);
        let took = counter() - t0;
        c.check("psci_cpu_suspend_returns", r == 0, format_args!("{r}, want 0"));
        c.check(
            "psci_cpu_suspend_with_pending_irq",
            took < ms_to_ticks(100),
            format_args!("returned after {took} ticks"),
        );
        let irq = gic::ack();
        c.check(
            "psci_cpu_suspend_irq_still_pending",
            irq.intid() == SGI,
            format_args!("acknowledged {}, want {SGI}", irq.intid()),
        );
        if !irq.is_spurious() {
            gic::eoi(irq);
        }
        gic::disable(SGI);
    }

    /// SMCCC_VERSION and ARCH_FEATURES, which a hypervisor may not forward.
    fn check_smccc(c: &mut Checker) {
        match try_access(|| hvc(SMCCC_VERSION, 0, 0, 0)[0] as i64) {
            Ok(v) => c.check(
                "smccc_version",
                v >= 0x10001,
                format_args!("{v:#x}, want >= 0x10001"),
            ),
            Err(e) => c.check("smccc_version", false, format_args!("exception ESR={:#x}", e.esr)),
        };
        let fid = u64::from(SMCCC_ARCH_WORKAROUND_1);
        match try_access(|| hvc(SMCCC_ARCH_FEATURES, fid, 0, 0)[0] as i64) {
            Ok(r) => c.check(
                "smccc_arch_features_workaround_1",
                r == 0 || r == NOT_SUPPORTED,
                format_args!("{r}, want 0 or -1"),
            ),
            Err(e) => c.check(
                "smccc_arch_features_workaround_1",
                false,
                format_args!("exception ESR={:#x}", e.esr),
            ),
        };
    }

    /// CPU_ON for MPIDR 1, 2, … until INVALID_PARAMETERS: the VM's vCPUs.
    /// Returns how many vCPUs the VM has, this one included.
    fn start_secondaries(c: &mut Checker) -> usize {
        let mut cpus = 1;
        for (k, up) in UP.iter().enumerate().skip(1) {
            let r = start_cpu(k, secondary);
            if r == INVALID_PARAMETERS {
                break;
            }
            if !c.check("psci_cpu_on", r == 0, format_args!("vCPU {k}: {r}, want 0")) {
                break;
            }
            let came_up = spin_until(TIMEOUT_MS, || up.load(Ordering::Acquire));
            c.check("psci_cpu_up", came_up, format_args!("vCPU {k}"));
            cpus += 1;
        }
        cpus
    }

    /// AFFINITY_INFO, ALREADY_ON, CPU_OFF and CPU_ON of an OFF vCPU (1).
    fn check_on_off(c: &mut Checker) {
        let a = psci::affinity_info(1, 0);
        c.check("psci_affinity_info_on", a == 0, format_args!("{a}, want 0 (ON)"));
        let r = psci::cpu_on(1, secondary_entry_address(), 1);
        c.check(
            "psci_cpu_on_already_on",
            r == ALREADY_ON,
            format_args!("{r}, want -4"),
        );

        UP[1].store(false, Ordering::Release);
        STOP[1].store(true, Ordering::Release);
        let off = spin_until(TIMEOUT_MS, || psci::affinity_info(1, 0) == 1);
        c.check("psci_cpu_off", off, "AFFINITY_INFO(1) reaches 1 (OFF)");

        let r = psci::cpu_on(1, BAD_ENTRY, 1);
        c.check(
            "psci_cpu_on_bad_entry",
            r == INVALID_ADDRESS,
            format_args!("{r}, want -9"),
        );
        let r = start_cpu(1, secondary);
        c.check("psci_cpu_on_again", r == 0, format_args!("{r}, want 0"));
        let up = spin_until(TIMEOUT_MS, || UP[1].load(Ordering::Acquire));
        c.check("psci_cpu_up_again", up, "vCPU 1");
    }

    macro_rules! rd {
        ($r:literal) => {{
            let v: u64;
            // SAFETY: reading a register of this vCPU.
            unsafe { core::arch::asm!(concat!("mrs {}, ", $r), out(reg) v, options(nomem, nostack)) };
            v
        }};
    }
    macro_rules! wr {
        ($r:literal, $v:expr) => {{
            let v: u64 = $v;
            // SAFETY: state of this vCPU only; no memory effects.
            unsafe { core::arch::asm!(concat!("msr ", $r, ", {}"), "isb", in(reg) v, options(nomem, nostack)) };
        }};
    }

    /// A vCPU that CPU_ON starts (again) sees none of what it left before
    /// CPU_OFF: FPSR, CSSELR, the virtual timer's compare value, MDSCR, a
    /// breakpoint, the PMU's selection register.
    fn check_fresh_state(k: usize) {
        // FP/SIMD on at EL1 to read FPSR (CPACR_EL1 resets to trapping it).
        wr!("cpacr_el1", 3 << 20);
        let state = [
            ("fpsr", rd!("s3_3_c4_c4_1")),
            ("csselr", rd!("csselr_el1")),
            ("cntv_cval", rd!("cntv_cval_el0")),
            ("mdscr", rd!("mdscr_el1")),
            ("dbgbvr0", rd!("dbgbvr0_el1")),
            ("pmselr", rd!("pmselr_el0")),
        ];
        for (name, v) in state {
            if v != 0 {
                println!("FAIL psci_cpu_on_fresh_state: cpu {k}: {name} = {v:#x} survived CPU_OFF");
            }
        }
        wr!("s3_3_c4_c4_1", 0x1f); // FPSR
        wr!("csselr_el1", 2);
        wr!("cntv_cval_el0", u64::MAX / 2);
        wr!("mdscr_el1", 1 << 12);
        wr!("dbgbvr0_el1", 0x4000_1000);
        wr!("pmselr_el0", 2);
    }

    /// A secondary: reports, then waits to be told to power itself off.
    fn secondary(k: usize) -> ! {
        println!("psci: cpu {k} up, MPIDR {:#x}", mpidr());
        check_fresh_state(k);
        UP[k].store(true, Ordering::Release);
        while !STOP[k].load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
        STOP[k].store(false, Ordering::Relaxed);
        let r = psci::cpu_off();
        println!("FAIL psci: cpu {k}: CPU_OFF returned {r}");
        park()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
