//! The EL2 (hypervisor) physical timer, CNTHP_*_EL2: the hypervisor's own,
//! never a guest's (the guests have the virtual and EL1 physical timers).
//! Each CPU keeps one deadline per [`Use`]; the timer is set for the
//! earliest, and [`expired`] says which passed.

use super::{cpu, MAX_CPUS};
use aarch64_cpu::registers::{Writeable, CNTHP_CTL_EL2};
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

/// Its interrupt: the non-secure EL2 physical timer's PPI, INTID 26 as the
/// Arm Base System Architecture assigns it (and QEMU virt, every board
/// we run, wires it).
pub const INTID: u32 = 26;

/// What a CPU's hypervisor timer is armed for.
#[derive(Clone, Copy)]
pub enum Use {
    /// The console comes back for lines its VM left queued.
    Console = 0,
    /// Held transmit-completion interrupts (vdev/virtio/moderate.rs).
    Interrupts = 1,
}
const USES: usize = 2;
const NEVER: u64 = u64::MAX;

impl Use {
    pub const fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// Per CPU and use: the counter value it is due at. Only that CPU touches
/// its own, with IRQs masked.
static DUE: [[AtomicU64; USES]; MAX_CPUS] = [const { [const { AtomicU64::new(NEVER) }; USES] }; MAX_CPUS];

/// Fires for `what` when the physical counter reaches `counter + ticks`, or
/// earlier if it was already due earlier.
pub fn arm_in(what: Use, ticks: u64) {
    let Some(due) = DUE.get(cpu::index()) else { return };
    let at = cpu::counter().saturating_add(ticks);
    if let Some(d) = due.get(what as usize) {
        if at < d.load(Ordering::Relaxed) {
            d.store(at, Ordering::Relaxed);
        }
    }
    program(due);
}

/// The uses whose deadline has passed, as [`Use::bit`]s; their deadlines
/// are cleared and the timer set for the rest, or stopped (its level then
/// drops, before the interrupt is deactivated or the guest resumes).
pub fn expired() -> u32 {
    let Some(due) = DUE.get(cpu::index()) else {
        stop();
        return 0;
    };
    let now = cpu::counter();
    let mut fired = 0;
    for (i, d) in due.iter().enumerate() {
        if d.load(Ordering::Relaxed) <= now {
            d.store(NEVER, Ordering::Relaxed);
            fired |= 1 << i;
        }
    }
    program(due);
    fired
}

/// Forgets every deadline of this CPU and stops its timer (bring-up).
pub fn disarm() {
    if let Some(due) = DUE.get(cpu::index()) {
        for d in due {
            d.store(NEVER, Ordering::Relaxed);
        }
    }
    stop();
}

fn program(due: &[AtomicU64; USES]) {
    let next = due
        .iter()
        .map(|d| d.load(Ordering::Relaxed))
        .min()
        .unwrap_or(NEVER);
    if next == NEVER {
        stop();
        return;
    }
    // SAFETY: CNTHP_CVAL_EL2 only sets when this CPU's EL2 timer fires.
    unsafe { asm!("msr cnthp_cval_el2, {}", in(reg) next, options(nomem, nostack, preserves_flags)) };
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET + CNTHP_CTL_EL2::IMASK::CLEAR);
}

fn stop() {
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::CLEAR + CNTHP_CTL_EL2::IMASK::SET);
}
