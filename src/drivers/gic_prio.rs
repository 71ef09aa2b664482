//! The physical interrupt priorities the hypervisor uses, chosen so that they
//! order the same way under every view of priority a GIC can give it.
//!
//! With security extensions (GICv3 GICD_CTLR.DS = 0, GICv2 with the
//! Security Extensions) a Non-secure write of priority `p` to
//! GICD/GICR_IPRIORITYR is stored as `(p >> 1) | 0x80`: Non-secure
//! interrupts live in the lower-priority half (GICv3 architecture
//! specification, IHI 0069, 4.8.6 "Software accesses of interrupt
//! priority", and figure 4-5). The CPU interface's mask ICC_PMR_EL1 is
//! shifted the same way only when Non-secure state does not own Group 0
//! (SCR_EL3.FIQ = 1, a board behind TF-A); with SCR_EL3.FIQ = 0 (QEMU
//! booting the hypervisor directly, `xlnx-versal-virt`) the PMR is written
//! as given while priorities are still shifted (IHI 0069 4.8.6, "Non-secure
//! accesses to ICC_PMR_EL1 and ICC_RPR_EL1"; Linux's
//! `gic_nonsecure_priorities` handles the same case). GICv2's GICC_PMR
//! always follows the Non-secure view. The values must also survive the
//! implemented priority bits: at least 5 on a GIC with two security states,
//! 4 with one (IHI 0069 4.8.1), the low bits reading as zero.
//!
//! The old choice (urgent 0x80, everything else 0xa0, waiting mask 0x90)
//! broke under "priorities shifted, PMR not": the urgent kick was stored as
//! 0xc0, behind a mask of 0x90, so a waiting CPU never woke and a 2-vCPU
//! guest on Versal lost its second CPU.

/// Priority of the interrupts a CPU must see even while it waits with no
/// guest to run: the kick and the console's input.
pub const URGENT: u8 = 0x20;

/// Priority of everything else the hypervisor enables (guests' hardware
/// interrupts, the maintenance interrupt, timers).
pub const NORMAL: u8 = 0xe0;

/// The priority mask a waiting CPU sets: only `URGENT` interrupts wake it,
/// so a stopped guest's timer or device cannot keep it spinning.
pub const PMR_URGENT_ONLY: u8 = 0xc0;

/// The priority mask that lets every enabled interrupt through.
pub const PMR_ALL: u8 = 0xff;

/// How a GIC stores what the hypervisor writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// No security extensions (GICD_CTLR.DS = 1): as written.
    Single,
    /// Non-secure, priorities shifted, PMR as written (SCR_EL3.FIQ = 0).
    NonSecurePrioritiesOnly,
    /// Non-secure, priorities and PMR shifted (SCR_EL3.FIQ = 1; GICv2).
    NonSecure,
}

/// The priority the GIC holds after a write of `p`, with `bits` implemented.
pub fn stored_priority(view: View, p: u8, bits: u32) -> u8 {
    let v = match view {
        View::Single => p,
        View::NonSecurePrioritiesOnly | View::NonSecure => (p >> 1) | 0x80,
    };
    v & implemented(bits)
}

/// The mask the CPU interface holds after a write of `m`.
pub fn stored_pmr(view: View, m: u8, bits: u32) -> u8 {
    let v = match view {
        View::Single | View::NonSecurePrioritiesOnly => m,
        View::NonSecure => (m >> 1) | 0x80,
    };
    v & implemented(bits)
}

fn implemented(bits: u32) -> u8 {
    !(0xffu8.checked_shr(bits).unwrap_or(0))
}

/// Whether an interrupt written with priority `p` is signalled to a CPU
/// that wrote mask `m`: its priority must be strictly higher (numerically
/// lower) than the mask.
pub fn signalled(view: View, p: u8, m: u8, bits: u32) -> bool {
    stored_priority(view, p, bits) < stored_pmr(view, m, bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIEWS: [View; 3] = [View::Single, View::NonSecurePrioritiesOnly, View::NonSecure];

    /// Every view, with every priority width the architecture allows there.
    fn cases() -> impl Iterator<Item = (View, u32)> {
        VIEWS.into_iter().flat_map(|v| {
            let min = if v == View::Single { 4 } else { 5 };
            (min..=8).map(move |b| (v, b))
        })
    }

    #[test]
    fn a_waiting_cpu_sees_urgent_interrupts_only() {
        for (view, bits) in cases() {
            assert!(signalled(view, URGENT, PMR_URGENT_ONLY, bits), "{view:?} {bits}");
            assert!(!signalled(view, NORMAL, PMR_URGENT_ONLY, bits), "{view:?} {bits}");
        }
    }

    #[test]
    fn a_running_cpu_sees_everything() {
        for (view, bits) in cases() {
            assert!(signalled(view, URGENT, PMR_ALL, bits), "{view:?} {bits}");
            assert!(signalled(view, NORMAL, PMR_ALL, bits), "{view:?} {bits}");
        }
    }

    #[test]
    fn urgent_outranks_normal_everywhere() {
        for (view, bits) in cases() {
            assert!(
                stored_priority(view, URGENT, bits) < stored_priority(view, NORMAL, bits),
                "{view:?} {bits}"
            );
        }
    }

    #[test]
    fn the_old_values_fail_where_versal_failed() {
        // 0x80 / 0xa0 / 0x90: fine without security, masked with it.
        assert!(signalled(View::Single, 0x80, 0x90, 5));
        assert!(!signalled(View::NonSecurePrioritiesOnly, 0x80, 0x90, 5));
    }

    #[test]
    fn the_views_shift_as_the_specification_says() {
        assert_eq!(stored_priority(View::NonSecurePrioritiesOnly, 0x80, 8), 0xc0);
        assert_eq!(stored_pmr(View::NonSecurePrioritiesOnly, 0x90, 8), 0x90);
        assert_eq!(stored_pmr(View::NonSecure, 0x90, 8), 0xc8);
        assert_eq!(stored_priority(View::Single, 0xa7, 5), 0xa0);
        assert_eq!(stored_pmr(View::Single, 0xff, 4), 0xf0);
    }
}
