//! The EL2 exception table: the few hypervisor instructions that may take a
//! synchronous external abort on purpose, and where each one continues.
//!
//! The sub-page filter forwards a guest's access to a passed-through device
//! from EL2 ([`super::devio`]). If the device answers with a bus error (an
//! AXI SLVERR/DECERR, or QEMU's answer to an unassigned address), the load or
//! store takes a synchronous external abort at EL2. Without this table that
//! is a "hypervisor exception" and the CPU is parked; with it, the EL2
//! synchronous handler finds the faulting instruction here and resumes at its
//! fixup, which returns an error, and the guest gets the external abort
//! (the idea of Linux's `extable` and Xen's `__ex_table`).
//!
//! Pure logic, tested on the host; the table itself is built by `devio.S`.

use super::esr::{Esr, ExceptionClass};

/// One entry: the address of an instruction that may abort and the address
/// execution continues at if it does.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub insn: u64,
    pub fixup: u64,
}

/// Synchronous external abort, not on a translation table walk.
const DFSC_SYNC_EXTERNAL: u8 = 0x10;
/// Synchronous parity or ECC error on a memory access, not on a walk (only
/// without FEAT_RAS; with it such errors report as 0x10).
const DFSC_SYNC_PARITY: u8 = 0x18;

/// Whether `esr` (as ESR_EL2 for an exception taken from EL2) is a data
/// abort from EL2 itself that the device, not the translation, raised: the
/// only exception the table may fix up. A translation or permission fault
/// on a forwarding instruction is a hypervisor bug and stays one.
pub fn is_external_abort(esr: u64) -> bool {
    let esr = Esr(esr);
    matches!(esr.class(), ExceptionClass::DataAbortSame)
        && esr
            .data_abort()
            .is_some_and(|d| !d.s1ptw && matches!(d.dfsc, DFSC_SYNC_EXTERNAL | DFSC_SYNC_PARITY))
}

/// The fixup for a synchronous exception at `elr` with syndrome `esr`, if
/// `elr` is one of `table`'s instructions and the exception is an external
/// abort.
pub fn fixup(table: &[Entry], esr: u64, elr: u64) -> Option<u64> {
    if !is_external_abort(esr) {
        return None;
    }
    table.iter().find(|e| e.insn == elr).map(|e| e.fixup)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// EC 0x25, IL, ISV clear: what an LDR at EL2 reports.
    fn dabt_el2(dfsc: u64) -> u64 {
        (0x25 << 26) | (1 << 25) | dfsc
    }

    const TABLE: [Entry; 2] = [
        Entry {
            insn: 0x4008_1000,
            fixup: 0x4008_1100,
        },
        Entry {
            insn: 0x4008_1010,
            fixup: 0x4008_1104,
        },
    ];

    #[test]
    fn an_external_abort_on_a_listed_instruction_resumes_at_its_fixup() {
        assert_eq!(fixup(&TABLE, dabt_el2(0x10), 0x4008_1000), Some(0x4008_1100));
        assert_eq!(fixup(&TABLE, dabt_el2(0x10), 0x4008_1010), Some(0x4008_1104));
        // EA and WnR set (a store), FnV set: still the device's answer.
        let store = dabt_el2(0x10) | (1 << 9) | (1 << 6) | (1 << 10);
        assert_eq!(fixup(&TABLE, store, 0x4008_1010), Some(0x4008_1104));
        assert_eq!(fixup(&TABLE, dabt_el2(0x18), 0x4008_1000), Some(0x4008_1100));
    }

    #[test]
    fn other_instructions_are_not_fixed_up() {
        for elr in [0, 0x4008_0ffc, 0x4008_1004, 0x4008_1100, u64::MAX] {
            assert_eq!(fixup(&TABLE, dabt_el2(0x10), elr), None, "{elr:#x}");
        }
        assert_eq!(fixup(&[], dabt_el2(0x10), 0x4008_1000), None);
    }

    #[test]
    fn only_an_external_abort_taken_from_el2_is_fixed_up() {
        let at = 0x4008_1000;
        // Translation (level 3), permission and alignment faults: bugs.
        for dfsc in [0x07, 0x0f, 0x21, 0x11, 0x14, 0x15] {
            assert_eq!(fixup(&TABLE, dabt_el2(dfsc), at), None, "DFSC {dfsc:#x}");
        }
        // An external abort on the stage-1 table walk is not the device.
        assert_eq!(fixup(&TABLE, dabt_el2(0x10) | (1 << 7), at), None);
        // The same DFSC from a lower EL (EC 0x24), an instruction abort
        // (EC 0x21) and an SError (EC 0x2f) are not this table's.
        for ec in [0x24u64, 0x21, 0x2f, 0x00] {
            let esr = (ec << 26) | (1 << 25) | 0x10;
            assert_eq!(fixup(&TABLE, esr, at), None, "EC {ec:#x}");
        }
    }
}
