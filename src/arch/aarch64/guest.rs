//! EL2 registers that put a guest in its box: HCR_EL2, stage-2 (VTCR_EL2,
//! VTTBR_EL2), the EL1 reset state a vCPU starts from, entering EL1, and
//! writing an injected exception into the guest's EL1 registers.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{
    Readable, Writeable, CNTHCTL_EL2, CNTVOFF_EL2, ELR_EL1, ESR_EL1, ESR_EL2, FAR_EL1, FAR_EL2, HCR_EL2,
    HPFAR_EL2, ID_AA64MMFR0_EL1, MIDR_EL1, SCTLR_EL1, SPSR_EL1, VBAR_EL1, VBAR_EL2, VMPIDR_EL2, VTCR_EL2,
    VTTBR_EL2,
};
use core::arch::asm;

/// HCR_EL2 while a guest runs (Arm ARM D19.2.48):
/// VM (stage 2 on), SWIO (set/way invalidate is clean+invalidate), FMO/IMO/AMO
/// (physical FIQ/IRQ/SError to EL2), TSC (SMC traps), TIDCP (implementation
/// defined system registers trap), TSW (data cache set/way operations trap:
/// they would reach caches other VMs share), TACR (auxiliary control
/// registers trap), RW (EL1 is AArch64), PTW.
pub const HCR_GUEST: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 2)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 19)
    | (1 << 20)
    | (1 << 21)
    | (1 << 22)
    | (1 << 31);

/// HCR_EL2.VI: a virtual IRQ is pending for EL1 (Arm ARM D19.2.48), taken
/// when the guest's PSTATE.I is clear, ORed with the GIC's virtual IRQ line.
const HCR_VI: u64 = 1 << 7;

/// Asserts (or withdraws) the guest's virtual IRQ through HCR_EL2.VI, for a
/// GIC whose virtual IRQ output is not wired to this CPU. `load_vm` clears it.
pub fn set_virtual_irq(pending: bool) {
    let hcr = HCR_EL2.get();
    let new = if pending { hcr | HCR_VI } else { hcr & !HCR_VI };
    if new != hcr {
        HCR_EL2.set(new);
    }
}

/// SPSR for entering a guest: EL1h, D, A, I, F masked (Linux boot protocol).
pub const SPSR_EL1H_MASKED: u64 = 0x3c5;

/// SCTLR_EL1 reset value: MMU and caches off, RES1 bits set.
const SCTLR_EL1_RESET: u64 = 0x30d0_0800;

/// VTCR_EL2 for a stage-2 table of `ipa_bits` starting at `start_level`.
pub fn vtcr(ipa_bits: u32, start_level: usize) -> u64 {
    let ps = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(6);
    let vmid16 = vmid_bits() == 16;
    let sl0: u64 = match start_level {
        0 => 0b10,
        1 => 0b01,
        _ => 0b00,
    };
    (64 - u64::from(ipa_bits))
        | (sl0 << 6)
        | (0b01 << 8)
        | (0b01 << 10)
        | (0b11 << 12)
        | (ps << 16)
        | (u64::from(vmid16) << 19)
        | (1 << 31)
}

/// VMID width: 16 bits where ID_AA64MMFR1_EL1.VMIDBits says so, else 8.
pub fn vmid_bits() -> u32 {
    let mmfr1: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { asm!("mrs {}, id_aa64mmfr1_el1", out(reg) mmfr1, options(nomem, nostack)) };
    if (mmfr1 >> 4) & 0xf == 2 {
        16
    } else {
        8
    }
}

/// Physical address bits of this CPU.
pub fn pa_bits() -> u32 {
    super::mmu::pa_bits()
}

/// Loads a VM's stage 2 and trap configuration on this CPU and resets the
/// EL1 state its vCPU starts from. `smc_conduit`: the VM calls PSCI with
/// SMC, so HVC gets no fast path (vectors.S).
pub fn load_vm(vttbr: u64, vtcr: u64, vmpidr: u64, smc_conduit: bool) {
    extern "C" {
        static el2_vectors: u8;
        static el2_vectors_smc: u8;
    }
    let vectors = if smc_conduit {
        &raw const el2_vectors_smc
    } else {
        &raw const el2_vectors
    };
    VBAR_EL2.set(vectors as u64);
    VTCR_EL2.set(vtcr);
    VTTBR_EL2.set(vttbr);
    HCR_EL2.set(HCR_GUEST);
    let midr = MIDR_EL1.get();
    // SAFETY: VPIDR_EL2 only changes what the guest reads as MIDR_EL1.
    unsafe { asm!("msr vpidr_el2, {}", in(reg) midr, options(nomem, nostack)) };
    // Bit 31 of MPIDR is RES1; Aff0 = vCPU index, no multithreading.
    VMPIDR_EL2.set((1 << 31) | vmpidr);
    // EL1 may use the physical counter and timer; the virtual counter runs
    // with no offset so every VM sees the same time base.
    CNTHCTL_EL2.set(0b11);
    CNTVOFF_EL2.set(0);
    // SAFETY: CPTR_EL2 = RES1 bits only: no FP/SIMD traps (the guest owns
    // the FP registers; EL2 is built soft-float and never uses them).
    unsafe { asm!("msr cptr_el2, {}", in(reg) 0x33ffu64, options(nomem, nostack)) };
    // PMU and debug registers stay with the guest: each CPU runs only this
    // vCPU, so they hold no one else's state. All PMU counters belong to
    // EL1 (HPMN = PMCR_EL0.N); what else MDCR_EL2 sets is `mdcr_guest`.
    // SAFETY: MDCR_EL2 only decides what EL1/EL0 debug and PMU accesses trap
    // and whether the PMU counts at EL2.
    unsafe { asm!("msr mdcr_el2, {}", in(reg) mdcr_guest(), options(nomem, nostack)) };
    reset_el1();
    barrier::isb(barrier::SY);
    // SAFETY: invalidating this VMID's stage-1+2 TLB entries on this CPU.
    unsafe { asm!("tlbi vmalls12e1", "dsb nsh", "isb", options(nostack)) };
}

/// ID_AA64DFR0_EL1: debug and PMU features.
fn dfr0() -> u64 {
    let v: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { asm!("mrs {}, id_aa64dfr0_el1", out(reg) v, options(nomem, nostack)) };
    v
}

/// MDCR_EL2 for a guest on this CPU (see [`super::pmu::mdcr_guest`]).
fn mdcr_guest() -> u64 {
    let dfr0 = dfr0();
    let pmcr = if super::pmu::has_pmu(dfr0) {
        super::pmu::hw::pmcr()
    } else {
        0
    };
    super::pmu::mdcr_guest(dfr0, pmcr)
}

/// Whether guest PMU accesses trap here (see [`super::pmu`]).
pub fn pmu_trapped() -> bool {
    mdcr_guest() & super::pmu::MDCR_TPM != 0
}

/// Event counters of this CPU's PMU (PMCR_EL0.N), 0 without one.
pub fn pmu_counters() -> u64 {
    if super::pmu::has_pmu(dfr0()) {
        super::pmu::counters(super::pmu::hw::pmcr())
    } else {
        0
    }
}

/// Everything a (re)starting vCPU can reach to its reset state: the EL1
/// system registers, FP/SIMD, the debug and PMU registers, the EL1 timers.
/// A vCPU that starts again (CPU_ON after CPU_OFF, SYSTEM_RESET) must not
/// see what its previous life left there (Arm ARM: a PE's Warm reset).
/// What is not reset here is trapped while the guest runs: SVE/SME
/// (CPTR_EL2), pointer-authentication keys (HCR_EL2.APK/API clear), MTE
/// tag control (HCR_EL2.ATA clear), IMPLEMENTATION DEFINED and auxiliary
/// registers (TIDCP, TACR); the GIC's virtual CPU interface is reset by
/// `irq::reset_vcpu_interface`.
pub fn reset_el1() {
    reset_el1_sysregs();
    // SAFETY: CPTR_EL2 no longer traps FP/SIMD (`load_vm` wrote it first),
    // so EL2 may write the registers; they belong to this CPU's vCPU.
    unsafe { guest_zero_fp() };
    reset_debug(dfr0());
    if super::pmu::has_pmu(dfr0()) {
        super::pmu::hw::reset();
    }
}

/// Zeroes breakpoint n < `$brps` and watchpoint n < `$wrps` value/control
/// pairs; the register names carry n, so each is its own instruction.
macro_rules! zero_debug_pairs {
    ($brps:expr, $wrps:expr; $($n:literal)*) => {
        $(
            if $n < $brps {
                // SAFETY: breakpoint $n exists (ID_AA64DFR0_EL1.BRPs); it
                // belongs to this CPU's vCPU.
                unsafe {
                    asm!(
                        concat!("msr dbgbcr", stringify!($n), "_el1, xzr"),
                        concat!("msr dbgbvr", stringify!($n), "_el1, xzr"),
                        options(nomem, nostack)
                    )
                };
            }
            if $n < $wrps {
                // SAFETY: as above, watchpoint $n (ID_AA64DFR0_EL1.WRPs).
                unsafe {
                    asm!(
                        concat!("msr dbgwcr", stringify!($n), "_el1, xzr"),
                        concat!("msr dbgwvr", stringify!($n), "_el1, xzr"),
                        options(nomem, nostack)
                    )
                };
            }
        )*
    };
}

/// Debug state to reset: every breakpoint and watchpoint disabled and
/// zero, MDSCR_EL1 (single step, MDE, KDE) clear, the OS lock set as after
/// a Cold reset (OSLSR_EL1.OSLK resets to 1; Linux clears it at boot).
fn reset_debug(dfr0: u64) {
    let brps = ((dfr0 >> 12) & 0xf) + 1;
    let wrps = ((dfr0 >> 20) & 0xf) + 1;
    zero_debug_pairs!(brps, wrps; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    // SAFETY: the vCPU's debug control registers; architectural reset values.
    unsafe {
        asm!(
            "msr mdscr_el1, xzr",
            "msr mdccint_el1, xzr",
            "msr oseccr_el1, xzr",
            "msr osdlr_el1, xzr",
            "msr oslar_el1, {one}",
            "msr dbgclaimclr_el1, {claims}",
            one = in(reg) 1u64,
            claims = in(reg) 0xffu64,
            options(nomem, nostack)
        )
    };
}

/// EL1 system registers to their reset state for a (re)starting vCPU.
fn reset_el1_sysregs() {
    SCTLR_EL1.set(SCTLR_EL1_RESET);
    VBAR_EL1.set(0);
    // SAFETY: these EL1 registers belong to the vCPU on this CPU, which is
    // not running; the values are architectural reset states.
    unsafe {
        asm!(
            "msr cpacr_el1, xzr",
            "msr tcr_el1, xzr",
            "msr mair_el1, xzr",
            "msr ttbr0_el1, xzr",
            "msr ttbr1_el1, xzr",
            "msr cntv_ctl_el0, xzr",
            "msr cntp_ctl_el0, xzr",
            "msr cntv_cval_el0, xzr",
            "msr cntp_cval_el0, xzr",
            "msr csselr_el1, xzr",
            "msr cntkctl_el1, xzr",
            "msr contextidr_el1, xzr",
            "msr tpidr_el1, xzr",
            "msr tpidr_el0, xzr",
            "msr tpidrro_el0, xzr",
            "msr sp_el1, xzr",
            "msr sp_el0, xzr",
            "msr elr_el1, xzr",
            "msr spsr_el1, xzr",
            "msr esr_el1, xzr",
            "msr far_el1, xzr",
            "msr afsr0_el1, xzr",
            "msr afsr1_el1, xzr",
            "msr amair_el1, xzr",
            "msr par_el1, xzr",
            options(nostack)
        );
    }
}

/// Invalidates every TLB entry of the VM whose VTTBR this is, on all CPUs.
pub fn flush_vm_tlb(vttbr: u64) {
    let saved = VTTBR_EL2.get();
    VTTBR_EL2.set(vttbr);
    barrier::isb(barrier::SY);
    // SAFETY: TLB maintenance for the VMID just loaded; no memory effects.
    unsafe {
        asm!(
            "dsb ishst",
            "tlbi vmalls12e1is",
            "dsb ish",
            "isb",
            options(nostack)
        )
    };
    VTTBR_EL2.set(saved);
    barrier::isb(barrier::SY);
}

/// ESR_EL2 of the exception being handled.
#[inline(always)]
pub fn esr() -> u64 {
    ESR_EL2.get()
}

/// FAR_EL2 of the exception being handled.
#[inline(always)]
pub fn far() -> u64 {
    FAR_EL2.get()
}

/// The faulting IPA of a stage-2 abort: HPFAR_EL2.FIPA with FAR's page offset.
pub fn fault_ipa() -> u64 {
    ((HPFAR_EL2.get() & 0x0fff_ffff_fff0) << 8) | (FAR_EL2.get() & 0xfff)
}

/// The guest's VBAR_EL1.
pub fn vbar_el1() -> u64 {
    VBAR_EL1.get()
}

/// Writes the EL1 side of an injected exception.
pub fn write_el1_exception(elr: u64, spsr: u64, esr: u64, far: Option<u64>) {
    ELR_EL1.set(elr);
    SPSR_EL1.set(spsr);
    ESR_EL1.set(esr);
    if let Some(f) = far {
        FAR_EL1.set(f);
    }
}

extern "C" {
    /// Zeroes V0-V31, FPCR and FPSR (in the asm below); needs
    /// CPTR_EL2.TFP clear.
    fn guest_zero_fp();
    fn guest_enter(entry: u64, x0: u64, spsr: u64, stack_top: u64) -> !;
    fn restart_on(stack_top: u64, f: extern "C" fn() -> !) -> !;
}

/// Drops into the guest at `entry` with `x0` and every other register zero.
/// The frame is built at the top of this CPU's stack, where every later exit
/// saves the guest's registers.
pub fn enter(entry: u64, x0: u64, spsr: u64, stack_top: u64) -> ! {
    // SAFETY: `stack_top` is this CPU's stack top; nothing on the current
    // stack is needed again (the caller never returns).
    unsafe { guest_enter(entry, x0, spsr, stack_top) }
}

/// Abandons the current stack (a vCPU that powered off) and runs `f` from
/// the top of this CPU's stack.
pub fn restart(stack_top: u64, f: extern "C" fn() -> !) -> ! {
    // SAFETY: as for `enter`: the current stack's contents are dead.
    unsafe { restart_on(stack_top, f) }
}

core::arch::global_asm!(
    ".section .text.guest, \"ax\"",
    ".global guest_enter",
    "guest_enter:",
    "    sub     sp, x3, #272",
    "    mov     x4, sp",
    "    mov     x5, #17",
    "1:  stp     xzr, xzr, [x4], #16",
    "    subs    x5, x5, #1",
    "    b.ne    1b",
    "    str     x1, [sp]",
    "    str     x0, [sp, #248]",
    "    str     x2, [sp, #256]",
    "    b       exception_return",
    ".global guest_zero_fp",
    "guest_zero_fp:",
    // EL2 is built soft-float: only this routine touches FP/SIMD.
    "    .arch_extension fp",
    "    .arch_extension simd",
    "    movi    v0.2d, #0",
    "    movi    v1.2d, #0",
    "    movi    v2.2d, #0",
    "    movi    v3.2d, #0",
    "    movi    v4.2d, #0",
    "    movi    v5.2d, #0",
    "    movi    v6.2d, #0",
    "    movi    v7.2d, #0",
    "    movi    v8.2d, #0",
    "    movi    v9.2d, #0",
    "    movi    v10.2d, #0",
    "    movi    v11.2d, #0",
    "    movi    v12.2d, #0",
    "    movi    v13.2d, #0",
    "    movi    v14.2d, #0",
    "    movi    v15.2d, #0",
    "    movi    v16.2d, #0",
    "    movi    v17.2d, #0",
    "    movi    v18.2d, #0",
    "    movi    v19.2d, #0",
    "    movi    v20.2d, #0",
    "    movi    v21.2d, #0",
    "    movi    v22.2d, #0",
    "    movi    v23.2d, #0",
    "    movi    v24.2d, #0",
    "    movi    v25.2d, #0",
    "    movi    v26.2d, #0",
    "    movi    v27.2d, #0",
    "    movi    v28.2d, #0",
    "    movi    v29.2d, #0",
    "    movi    v30.2d, #0",
    "    movi    v31.2d, #0",
    "    msr     fpcr, xzr",
    "    msr     fpsr, xzr",
    "    ret",
    ".global restart_on",
    "restart_on:",
    "    mov     sp, x0",
    "    br      x1",
);
