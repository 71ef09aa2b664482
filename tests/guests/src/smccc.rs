//! SMC Calling Convention conduits: `hvc #0` (how a guest reaches Tessera)
//! and `smc #0` (which Tessera must trap and answer itself).

use core::arch::asm;

/// Calls the hypervisor: function id in w0, arguments in x1..x3; returns
/// x0..x3. x4..x17 are treated as clobbered (SMCCC 1.0 allows it).
pub fn hvc(fid: u32, a1: u64, a2: u64, a3: u64) -> [u64; 4] {
    let (r0, r1, r2, r3): (u64, u64, u64, u64);
    // SAFETY: an SMCCC call changes no guest memory; every register the
    // callee may change is declared as an output or clobber.
    unsafe {
        asm!(
            "hvc #0",
            inout("x0") u64::from(fid) => r0, inout("x1") a1 => r1,
            inout("x2") a2 => r2, inout("x3") a3 => r3,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _,
            out("x9") _, out("x10") _, out("x11") _, out("x12") _, out("x13") _,
            out("x14") _, out("x15") _, out("x16") _, out("x17") _,
            options(nostack),
        )
    };
    [r0, r1, r2, r3]
}

/// Like [`hvc`] but through `smc #0` (under Tessera: trapped by HCR_EL2.TSC).
pub fn smc(fid: u32, a1: u64, a2: u64, a3: u64) -> [u64; 4] {
    let (r0, r1, r2, r3): (u64, u64, u64, u64);
    // SAFETY: as for `hvc`.
    unsafe {
        asm!(
            "smc #0",
            inout("x0") u64::from(fid) => r0, inout("x1") a1 => r1,
            inout("x2") a2 => r2, inout("x3") a3 => r3,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _,
            out("x9") _, out("x10") _, out("x11") _, out("x12") _, out("x13") _,
            out("x14") _, out("x15") _, out("x16") _, out("x17") _,
            options(nostack),
        )
    };
    [r0, r1, r2, r3]
}
