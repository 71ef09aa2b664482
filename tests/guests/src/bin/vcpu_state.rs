//! `vcpu_state`: proves a vCPU starts every boot in its reset state. Each
//! boot it first reads everything a previous boot could have left behind —
//! FP/SIMD registers and FPCR/FPSR, a breakpoint and a watchpoint, MDSCR_EL1
//! and the OS lock, the PMU's counters, enables, filters and EL0 access,
//! both EL1 timers' compare values and controls, CSSELR_EL1 — and reports
//! `PASS vcpu_state_clean` or one `FAIL` per dirty register; then it dirties
//! all of it and calls SYSTEM_RESET. The scenario wants two clean boots in
//! a row, so the second proves the reset cleaned up after the first.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::arch::asm;
    use tessera_guests::{current_el, mpidr, println, psci};

    tessera_guests::entry!(run);

    core::arch::global_asm!(
        ".arch_extension fp",
        ".arch_extension simd",
        // x0: 34 words: V0-V31 low halves ORed with high halves, FPCR, FPSR.
        ".global vcpu_state_read_fp",
        "vcpu_state_read_fp:",
        ".irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
        "    mov     x1, v\\n\\().d[0]",
        "    mov     x2, v\\n\\().d[1]",
        "    orr     x1, x1, x2",
        "    str     x1, [x0], #8",
        ".endr",
        "    mrs     x1, fpcr",
        "    mrs     x2, fpsr",
        "    stp     x1, x2, [x0]",
        "    ret",
        // Fills V0-V31 with non-zero patterns, sets FPCR and FPSR bits.
        ".global vcpu_state_dirty_fp",
        "vcpu_state_dirty_fp:",
        ".irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
        "    mov     x1, #(0x100 + \\n)",
        "    dup     v\\n\\().2d, x1",
        ".endr",
        // FPCR: FZ, RMode = toward zero; FPSR: every cumulative flag.
        "    mov     x1, #(1 << 24 | 3 << 22)",
        "    msr     fpcr, x1",
        "    mov     x1, #0x9f",
        "    msr     fpsr, x1",
        "    ret",
    );

    extern "C" {
        fn vcpu_state_read_fp(out: *mut [u64; 34]);
        fn vcpu_state_dirty_fp();
    }

    macro_rules! rd {
        ($r:literal) => {{
            let v: u64;
            // SAFETY: reading a system register this guest owns.
            unsafe { asm!(concat!("mrs {}, ", $r), out(reg) v, options(nomem, nostack)) };
            v
        }};
    }
    macro_rules! wr {
        ($r:literal, $v:expr) => {{
            let v: u64 = $v;
            // SAFETY: state of this guest's own vCPU; no memory effects.
            unsafe { asm!(concat!("msr ", $r, ", {}"), "isb", in(reg) v, options(nomem, nostack)) };
        }};
    }

    fn run() -> ! {
        println!("vcpu_state: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        // FP/SIMD at EL1 (CPACR_EL1 resets to trapping it).
        wr!("cpacr_el1", 3 << 20);
        let mut dirty = 0;
        let mut check = |name: &str, value: u64, clean: u64| {
            if value != clean {
                println!("FAIL vcpu_state_{name}: {value:#x} survived the reset, want {clean:#x}");
                dirty += 1;
            }
        };

        let mut fp = [0u64; 34];
        // SAFETY: `fp` has the 34 words the routine writes.
        unsafe { vcpu_state_read_fp(&mut fp) };
        let v_regs = fp.iter().take(32).fold(0, |a, v| a | v);
        check("v0_v31", v_regs, 0);
        check("fpcr", fp[32], 0);
        check("fpsr", fp[33], 0);

        check("dbgbvr0", rd!("dbgbvr0_el1"), 0);
        check("dbgbcr0", rd!("dbgbcr0_el1"), 0);
        check("dbgwvr0", rd!("dbgwvr0_el1"), 0);
        check("dbgwcr0", rd!("dbgwcr0_el1"), 0);
        check("mdscr", rd!("mdscr_el1"), 0);
        check("oslsr_oslk", rd!("oslsr_el1") & 2, 2);

        check("pmcr_e", rd!("pmcr_el0") & 1, 0);
        check("pmcntenset", rd!("pmcntenset_el0"), 0);
        check("pmintenset", rd!("pmintenset_el1"), 0);
        check("pmovsset", rd!("pmovsset_el0"), 0);
        check("pmuserenr", rd!("pmuserenr_el0"), 0);
        check("pmccfiltr", rd!("pmccfiltr_el0"), 0);
        check("pmccntr", rd!("pmccntr_el0"), 0);
        check("pmevtyper0", rd!("pmevtyper0_el0"), 0);
        check("pmevcntr0", rd!("pmevcntr0_el0"), 0);
        check("pmselr", rd!("pmselr_el0"), 0);

        check("cntv_cval", rd!("cntv_cval_el0"), 0);
        check("cntv_ctl", rd!("cntv_ctl_el0") & 3, 0);
        check("cntp_cval", rd!("cntp_cval_el0"), 0);
        check("cntp_ctl", rd!("cntp_ctl_el0") & 3, 0);
        check("csselr", rd!("csselr_el1"), 0);
        check("tpidr_el0", rd!("tpidr_el0"), 0);
        check("contextidr", rd!("contextidr_el1"), 0);

        if dirty == 0 {
            println!("PASS vcpu_state_clean: FP, debug, PMU, timers and CSSELR in reset state");
        }

        // Now leave a mess behind.
        // SAFETY: only this vCPU's FP/SIMD registers change.
        unsafe { vcpu_state_dirty_fp() };
        wr!("oslar_el1", 0);
        wr!("dbgbvr0_el1", 0x4000_1000);
        // Disabled (E = 0), but every other field set.
        wr!("dbgbcr0_el1", 0x1e6);
        wr!("dbgwvr0_el1", 0x4000_2000);
        wr!("dbgwcr0_el1", 0x1ff6);
        // MDE and TDCC: no debug exception without KDE and enabled points.
        wr!("mdscr_el1", (1 << 15) | (1 << 12));
        wr!("pmselr_el0", 3);
        wr!("pmevtyper0_el0", 0x11);
        wr!("pmevcntr0_el0", 0x1234);
        wr!("pmccfiltr_el0", 1 << 30);
        wr!("pmccntr_el0", 0x5678);
        wr!("pmintenset_el1", 1);
        wr!("pmovsset_el0", 1 << 31);
        wr!("pmuserenr_el0", 1);
        wr!("pmcntenset_el0", (1 << 31) | 1);
        wr!("pmcr_el0", 1);
        wr!("cntv_cval_el0", u64::MAX / 2);
        wr!("cntv_ctl_el0", 3);
        wr!("cntp_cval_el0", u64::MAX / 2);
        wr!("cntp_ctl_el0", 3);
        wr!("csselr_el1", 2);
        wr!("tpidr_el0", 0x7e57);
        wr!("contextidr_el1", 0x42);
        println!("vcpu_state: dirtied, calling SYSTEM_RESET");
        let r = psci::system_reset();
        println!("FAIL vcpu_state: SYSTEM_RESET returned {r}");
        tessera_guests::park()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
