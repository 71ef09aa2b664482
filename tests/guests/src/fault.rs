//! What an exception provoked on purpose looked like (host-buildable).

/// ESR_EL1.EC of an unknown / undefined instruction.
pub const EC_UNKNOWN: u64 = 0x00;
/// ESR_EL1.EC of an instruction abort taken without a change of EL.
pub const EC_IABT_CURRENT: u64 = 0x21;
/// ESR_EL1.EC of a data abort taken without a change of EL.
pub const EC_DABT_CURRENT: u64 = 0x25;

/// An exception taken inside [`try_access`](crate::try_access): the syndrome,
/// fault address and exception link register as EL1 saw them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// ESR_EL1.
    pub esr: u64,
    /// FAR_EL1 (only meaningful for aborts).
    pub far: u64,
    /// ELR_EL1: the instruction that faulted.
    pub elr: u64,
}

impl Fault {
    /// Exception class, ESR_EL1[31:26].
    pub fn ec(&self) -> u64 {
        (self.esr >> 26) & 0x3f
    }

    /// Fault status code of an abort, ESR_EL1.ISS[5:0] (0x10: synchronous
    /// external abort; 0x04..=0x07: translation fault at level 0..=3).
    pub fn fsc(&self) -> u64 {
        self.esr & 0x3f
    }
}
