//! GICv3 CPU-interface system registers: the physical interface (ICC_*)
//! the hypervisor uses and the virtual interface control (ICH_*) it uses to
//! drive its guests. Raw encodings, so no assembler feature is needed.

use core::arch::asm;

macro_rules! sysreg_rw {
    ($(#[$m:meta])* $get:ident, $set:ident, $enc:literal) => {
        $(#[$m])*
        #[inline(always)]
        pub fn $get() -> u64 {
            let v: u64;
            // SAFETY: reading a GIC CPU-interface register has no memory effects.
            unsafe { asm!(concat!("mrs {}, ", $enc), out(reg) v, options(nomem, nostack)) };
            v
        }
        #[inline(always)]
        pub fn $set(v: u64) {
            // SAFETY: writing a GIC CPU-interface register only affects
            // interrupt state of this CPU, which the hypervisor owns.
            unsafe { asm!(concat!("msr ", $enc, ", {}"), in(reg) v, options(nomem, nostack)) };
        }
    };
}

sysreg_rw!(
    /// ICC_IAR1_EL1: acknowledge (read) — the write half is unused.
    icc_iar1, _icc_iar1_w, "s3_0_c12_c12_0"
);
sysreg_rw!(
    /// ICC_EOIR1_EL1: priority drop (EOImode = 1) — write only.
    _icc_eoir1_r, icc_eoir1, "s3_0_c12_c12_1"
);
sysreg_rw!(
    /// ICC_DIR_EL1: deactivate — write only.
    _icc_dir_r, icc_dir, "s3_0_c12_c11_1"
);
sysreg_rw!(icc_pmr, set_icc_pmr, "s3_0_c4_c6_0");
sysreg_rw!(icc_bpr1, set_icc_bpr1, "s3_0_c12_c12_3");
sysreg_rw!(icc_ctlr, set_icc_ctlr, "s3_0_c12_c12_4");
sysreg_rw!(icc_igrpen1, set_icc_igrpen1, "s3_0_c12_c12_7");
sysreg_rw!(_icc_sgi1r_r, icc_sgi1r, "s3_0_c12_c11_5");
sysreg_rw!(icc_sre_el2, set_icc_sre_el2, "s3_4_c12_c9_5");
sysreg_rw!(ich_hcr, set_ich_hcr, "s3_4_c12_c11_0");
sysreg_rw!(ich_vtr, _set_ich_vtr, "s3_4_c12_c11_1");
sysreg_rw!(ich_misr, _set_ich_misr, "s3_4_c12_c11_2");
sysreg_rw!(ich_eisr, _set_ich_eisr, "s3_4_c12_c11_3");
sysreg_rw!(ich_elrsr, _set_ich_elrsr, "s3_4_c12_c11_5");
sysreg_rw!(ich_vmcr, set_ich_vmcr, "s3_4_c12_c11_7");
sysreg_rw!(ich_ap0r0, set_ich_ap0r0, "s3_4_c12_c8_0");
sysreg_rw!(ich_ap1r0, set_ich_ap1r0, "s3_4_c12_c9_0");

/// Sends the SGI that ICC_SGI1R_EL1 value `v` names, after the stores
/// before it (the mailbox bits it announces) are visible to the target.
#[inline(always)]
pub fn send_sgi1r(v: u64) {
    // SAFETY: generating an SGI only signals another CPU's hypervisor;
    // the barriers order memory, no memory is accessed.
    unsafe {
        asm!(
            "dsb ishst",
            "msr s3_0_c12_c11_5, {}",
            "isb",
            in(reg) v,
            options(nostack)
        )
    };
}

/// [`send_sgi1r`] without the ISB, for an exit that returns to its guest
/// right after: the ERET is a context synchronization event, so the write
/// takes effect by then at the latest. Nowhere a CPU may wait or spin after.
#[inline(always)]
pub fn send_sgi1r_before_eret(v: u64) {
    // SAFETY: as for `send_sgi1r`.
    unsafe {
        asm!(
            "dsb ishst",
            "msr s3_0_c12_c11_5, {}",
            in(reg) v,
            options(nostack)
        )
    };
}

/// Writes list register 0 (the first free one after an exit that found
/// none in use).
#[inline(always)]
pub fn set_ich_lr0(v: u64) {
    // SAFETY: as in `set_ich_lr`.
    unsafe { asm!("msr s3_4_c12_c12_0, {}", in(reg) v, options(nomem, nostack)) }
}

/// Reads list register `n` (0..16).
#[inline(always)]
pub fn ich_lr(n: usize) -> u64 {
    macro_rules! rd {
        ($e:literal) => {{
            let v: u64;
            // SAFETY: reading a list register has no memory effects.
            unsafe { asm!(concat!("mrs {}, ", $e), out(reg) v, options(nomem, nostack)) };
            v
        }};
    }
    match n {
        0 => rd!("s3_4_c12_c12_0"),
        1 => rd!("s3_4_c12_c12_1"),
        2 => rd!("s3_4_c12_c12_2"),
        3 => rd!("s3_4_c12_c12_3"),
        4 => rd!("s3_4_c12_c12_4"),
        5 => rd!("s3_4_c12_c12_5"),
        6 => rd!("s3_4_c12_c12_6"),
        7 => rd!("s3_4_c12_c12_7"),
        8 => rd!("s3_4_c12_c13_0"),
        9 => rd!("s3_4_c12_c13_1"),
        10 => rd!("s3_4_c12_c13_2"),
        11 => rd!("s3_4_c12_c13_3"),
        12 => rd!("s3_4_c12_c13_4"),
        13 => rd!("s3_4_c12_c13_5"),
        14 => rd!("s3_4_c12_c13_6"),
        _ => rd!("s3_4_c12_c13_7"),
    }
}

/// Writes list register `n` (0..16).
#[inline(always)]
pub fn set_ich_lr(n: usize, v: u64) {
    macro_rules! wr {
        ($e:literal) => {
            // SAFETY: a list register only affects this CPU's virtual
            // interrupts, which belong to the vCPU the hypervisor runs here.
            unsafe { asm!(concat!("msr ", $e, ", {}"), in(reg) v, options(nomem, nostack)) }
        };
    }
    match n {
        0 => wr!("s3_4_c12_c12_0"),
        1 => wr!("s3_4_c12_c12_1"),
        2 => wr!("s3_4_c12_c12_2"),
        3 => wr!("s3_4_c12_c12_3"),
        4 => wr!("s3_4_c12_c12_4"),
        5 => wr!("s3_4_c12_c12_5"),
        6 => wr!("s3_4_c12_c12_6"),
        7 => wr!("s3_4_c12_c12_7"),
        8 => wr!("s3_4_c12_c13_0"),
        9 => wr!("s3_4_c12_c13_1"),
        10 => wr!("s3_4_c12_c13_2"),
        11 => wr!("s3_4_c12_c13_3"),
        12 => wr!("s3_4_c12_c13_4"),
        13 => wr!("s3_4_c12_c13_5"),
        14 => wr!("s3_4_c12_c13_6"),
        _ => wr!("s3_4_c12_c13_7"),
    }
}

/// Unmasks IRQs at EL2 (used only while a CPU idles waiting for work).
pub fn irq_enable() {
    // SAFETY: changes PSTATE.I only.
    unsafe { asm!("msr daifclr, #2", options(nomem, nostack)) };
}

/// Masks IRQs at EL2.
pub fn irq_disable() {
    // SAFETY: changes PSTATE.I only.
    unsafe { asm!("msr daifset, #2", options(nomem, nostack)) };
}
