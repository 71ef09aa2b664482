//! What the EL2 vectors call. Exceptions taken from EL2 itself are bugs in the
//! hypervisor: they get a full report and stop that CPU, except an external
//! abort on a forwarded device access, which the exception table
//! ([`super::extable`]) turns into an error for the guest. Exceptions from
//! the guests go to the VM layer.
//!
//! An SError taken at EL2 (vector 7) cannot happen while EL2 keeps PSTATE.A
//! masked, as it always does: a device's asynchronous error stays pending
//! until the ERET and is then the guest's SError (`lower_serror` stops that
//! VM with a logged reason). Should one arrive anyway, the report says so.

use super::cpu;
use super::frame::TrapFrame;
use crate::console::emergency_print;
use aarch64_cpu::registers::{Readable, ESR_EL2, FAR_EL2};

const KINDS: [&str; 16] = [
    "Synchronous, current EL with SP_EL0",
    "IRQ, current EL with SP_EL0",
    "FIQ, current EL with SP_EL0",
    "SError, current EL with SP_EL0",
    "Synchronous, current EL with SP_EL2",
    "IRQ, current EL with SP_EL2",
    "FIQ, current EL with SP_EL2",
    "SError, current EL with SP_EL2",
    "Synchronous, lower EL (AArch64)",
    "IRQ, lower EL (AArch64)",
    "FIQ, lower EL (AArch64)",
    "SError, lower EL (AArch64)",
    "Synchronous, lower EL (AArch32)",
    "IRQ, lower EL (AArch32)",
    "FIQ, lower EL (AArch32)",
    "SError, lower EL (AArch32)",
];

/// Prints everything known about an exception nobody expected, then parks
/// this CPU. Other CPUs carry on.
pub fn report(frame: &TrapFrame, kind: usize) -> ! {
    let esr = ESR_EL2.get();
    let far = FAR_EL2.get();
    emergency_print(format_args!(
        "\n*** EL2 exception on CPU {}: {}\n    ESR_EL2  {:#018x} (EC {:#04x}, IL {}, ISS {:#09x})\n    ELR_EL2  {:#018x}\n    FAR_EL2  {:#018x}\n    SPSR_EL2 {:#018x}\n",
        cpu::index(),
        KINDS.get(kind).copied().unwrap_or("unknown vector"),
        esr,
        (esr >> 26) & 0x3f,
        (esr >> 25) & 1,
        esr & 0x1ff_ffff,
        frame.elr,
        far,
        frame.spsr,
    ));
    for row in 0..8 {
        let mut line = [0u8; 128];
        let mut w = Buf {
            buf: &mut line,
            len: 0,
        };
        for col in 0..4 {
            let n = row * 4 + col;
            if n < 31 {
                let _ = core::fmt::write(&mut w, format_args!("    x{:<2} {:#018x}", n, frame.x[n]));
            }
        }
        let len = w.len;
        emergency_print(format_args!(
            "{}\n",
            core::str::from_utf8(&line[..len]).unwrap_or("")
        ));
    }
    emergency_print(format_args!("*** CPU {} stopped\n", cpu::index()));
    cpu::park()
}

struct Buf<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// A synchronous exception taken from EL2: a listed device access the
/// device aborted continues at its fixup; anything else is reported.
#[no_mangle]
extern "C" fn el2_sync(frame: &mut TrapFrame) {
    match super::extable::fixup(super::devio::table(), ESR_EL2.get(), frame.elr) {
        Some(fixup) => frame.elr = fixup,
        None => report(frame, 4),
    }
}

#[no_mangle]
extern "C" fn el2_unexpected(frame: &TrapFrame, kind: u64) -> ! {
    report(frame, kind as usize)
}
