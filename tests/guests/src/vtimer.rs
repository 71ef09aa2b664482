//! The EL1 virtual timer (CNTV_*_EL0), whose interrupt is PPI
//! [`INTID`](crate::gic::VTIMER_INTID) 27. It compares CVAL with the virtual
//! counter ([`counter`](crate::counter)); the interrupt is level: asserted
//! while enabled, unmasked and CNTVCT >= CVAL.

use core::arch::asm;

/// CNTV_CTL_EL0.ENABLE.
pub const CTL_ENABLE: u64 = 1 << 0;
/// CNTV_CTL_EL0.IMASK: condition still tracked, interrupt not asserted.
pub const CTL_IMASK: u64 = 1 << 1;
/// CNTV_CTL_EL0.ISTATUS (read-only): the condition holds.
pub const CTL_ISTATUS: u64 = 1 << 2;

/// CNTV_CVAL_EL0: the compare value.
pub fn cval() -> u64 {
    let v: u64;
    // SAFETY: reading CNTV_CVAL_EL0 has no side effects.
    unsafe { asm!("mrs {}, cntv_cval_el0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// CNTV_CTL_EL0.
pub fn ctl() -> u64 {
    let v: u64;
    // SAFETY: reading CNTV_CTL_EL0 has no side effects.
    unsafe { asm!("mrs {}, cntv_ctl_el0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Sets CNTV_CVAL_EL0 (the timer keeps its enable/mask).
pub fn set_cval(cval: u64) {
    // SAFETY: only the virtual timer's compare value changes; the ISB makes
    // the new condition take effect before what follows.
    unsafe { asm!("msr cntv_cval_el0, {}", "isb", in(reg) cval, options(nostack, preserves_flags)) };
}

/// Writes CNTV_CTL_EL0 (ENABLE, IMASK).
pub fn set_ctl(ctl: u64) {
    // SAFETY: only the virtual timer's control changes.
    unsafe { asm!("msr cntv_ctl_el0, {}", "isb", in(reg) ctl, options(nostack, preserves_flags)) };
}

/// Fires at counter value `cval`: CVAL, then enabled and unmasked.
pub fn arm_at(cval: u64) {
    set_cval(cval);
    set_ctl(CTL_ENABLE);
}

/// Enabled but masked: the interrupt line drops.
pub fn mask() {
    set_ctl(CTL_ENABLE | CTL_IMASK);
}

/// Disabled.
pub fn stop() {
    set_ctl(0);
}

/// Set by [`on_sleep_irq`] when the timer [`sleep_until`] armed fired.
static FIRED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn on_sleep_irq(intid: u32) {
    if intid == crate::gic::VTIMER_INTID {
        mask();
        FIRED.store(true, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Sets up the GIC and the virtual timer interrupt for [`sleep_until`]; the
/// guest's interrupt handler is then this module's.
pub fn init_sleep() {
    crate::gic::init_distributor();
    crate::gic::init_cpu();
    crate::gic::set_handler(on_sleep_irq);
    crate::gic::enable(crate::gic::VTIMER_INTID);
    crate::gic::irqs_on();
}

/// Waits in WFI until the counter reaches `at` (after [`init_sleep`]).
pub fn sleep_until(at: u64) {
    use core::sync::atomic::Ordering::Relaxed;
    if crate::counter() >= at {
        return;
    }
    FIRED.store(false, Relaxed);
    arm_at(at);
    crate::gic::wait_for_interrupts_until(|| FIRED.load(Relaxed));
}
