//! EL1 exception handling: every exception is recorded in the vCPU's slot;
//! one provoked on purpose inside [`try_access`] is stepped over, anything
//! else is reported as `FAIL unexpected exception: …` and parks the vCPU.
//!
//! Stepping over: a synchronous exception at an instruction of our own code
//! resumes at the next instruction (ELR + 4). One at a PC outside our code
//! came from a branch into nowhere (`blr` to a faulting or garbage address:
//! an instruction abort has ELR == FAR, a UDF there has ELR == the target),
//! so it resumes at the link register instead, as if the call had returned.
//!
//! IRQs go to [`gic`](crate::gic)'s handler hook instead.

use crate::cpu::{cpu_index, park};
use crate::{println, Fault, MAX_CPUS};
use core::arch::asm;
use core::sync::atomic::{compiler_fence, AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};

/// The registers `vectors.S` saves on the stack; edited to change where the
/// `eret` goes.
#[repr(C)]
pub struct Frame {
    x: [u64; 31],
    elr: u64,
    spsr: u64,
    /// IRQ vectors only: CNTVCT_EL0 read at the vector's third instruction.
    irq_entry_counter: u64,
}

/// Vector offsets / 0x80 that `try_access` may recover from: synchronous
/// and SError from the current EL on SP_EL1 (the only ones our code causes).
const SYNC_CURRENT: u64 = 4;
const SERROR_CURRENT: u64 = 7;

const VECTOR_NAMES: [&str; 16] = [
    "sync SP_EL0",
    "IRQ SP_EL0",
    "FIQ SP_EL0",
    "SError SP_EL0",
    "sync",
    "IRQ",
    "FIQ",
    "SError",
    "sync lower EL",
    "IRQ lower EL",
    "FIQ lower EL",
    "SError lower EL",
    "sync AArch32",
    "IRQ AArch32",
    "FIQ AArch32",
    "SError AArch32",
];

/// Per-vCPU state shared between `try_access` and the vector.
struct Slot {
    expecting: AtomicBool,
    taken: AtomicBool,
    esr: AtomicU64,
    far: AtomicU64,
    elr: AtomicU64,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            expecting: AtomicBool::new(false),
            taken: AtomicBool::new(false),
            esr: AtomicU64::new(0),
            far: AtomicU64::new(0),
            elr: AtomicU64::new(0),
        }
    }
}

static SLOTS: [Slot; MAX_CPUS] = [const { Slot::new() }; MAX_CPUS];

/// Runs `f`, catching the first exception it takes. Returns `f`'s value, or
/// the fault if one was taken (`f` still ran to its end: the faulting
/// instruction was stepped over, its destination register left unchanged).
/// Not reentrant. Asm inside `f` must not be `nomem`, or the compiler may move
/// it out of the window.
pub fn try_access<T>(f: impl FnOnce() -> T) -> Result<T, Fault> {
    let slot = &SLOTS[cpu_index()];
    slot.taken.store(false, Relaxed);
    slot.expecting.store(true, Relaxed);
    compiler_fence(SeqCst);
    let value = f();
    compiler_fence(SeqCst);
    slot.expecting.store(false, Relaxed);
    if slot.taken.load(Relaxed) {
        Err(Fault {
            esr: slot.esr.load(Relaxed),
            far: slot.far.load(Relaxed),
            elr: slot.elr.load(Relaxed),
        })
    } else {
        Ok(value)
    }
}

/// Runs `f` and returns the exception it took, if any (see [`try_access`]).
pub fn expect_fault(f: impl FnOnce()) -> Option<Fault> {
    try_access(f).err()
}

/// Whether `pc` lies in this image's code (linker/guest.ld).
fn in_own_code(pc: u64) -> bool {
    extern "C" {
        static __text_start: u8;
        static __text_end: u8;
    }
    let (start, end) = (&raw const __text_start as u64, &raw const __text_end as u64);
    (start..end).contains(&pc)
}

fn sysreg_esr_far() -> (u64, u64) {
    let (esr, far): (u64, u64);
    // SAFETY: reading ESR_EL1 and FAR_EL1 has no side effects.
    unsafe {
        asm!("mrs {}, esr_el1", "mrs {}, far_el1", out(reg) esr, out(reg) far,
             options(nomem, nostack, preserves_flags))
    };
    (esr, far)
}

/// Vector offsets / 0x80 of IRQs at the current EL (SP_EL0, SP_EL1).
const IRQ_SP0: u64 = 1;
const IRQ_CURRENT: u64 = 5;

/// Called by `vectors.S` with the saved frame and the vector number.
#[no_mangle]
extern "C" fn tessera_exception(frame: &mut Frame, kind: u64) {
    if kind == IRQ_CURRENT || kind == IRQ_SP0 {
        crate::gic::handle_irq(frame.irq_entry_counter);
        return;
    }
    let (esr, far) = sysreg_esr_far();
    let slot = &SLOTS[cpu_index()];
    let recoverable = kind == SYNC_CURRENT || kind == SERROR_CURRENT;
    if recoverable && slot.expecting.load(Relaxed) {
        if !slot.taken.load(Relaxed) {
            slot.esr.store(esr, Relaxed);
            slot.far.store(far, Relaxed);
            slot.elr.store(frame.elr, Relaxed);
            slot.taken.store(true, Relaxed);
        }
        // An SError is asynchronous: ELR is already where to go on.
        if kind == SYNC_CURRENT {
            frame.elr = if in_own_code(frame.elr) {
                frame.elr + 4
            } else {
                frame.x[30]
            };
        }
        return;
    }
    let vector = VECTOR_NAMES[kind as usize & 15];
    println!(
        "FAIL unexpected exception: ESR={esr:#x} FAR={far:#x} ELR={:#x} ({vector}, vCPU {})",
        frame.elr,
        cpu_index()
    );
    park()
}

/// Branches with link to `addr` (`blr`), for provoking an instruction abort or
/// an undefined instruction there inside [`try_access`]: the vector resumes
/// at the link register, so this returns as if `addr` had returned at once.
///
/// # Safety
/// `addr` must not hold code that could run: it should fault at its first
/// instruction (unmapped, or zeros = UDF).
pub unsafe fn branch_to(addr: u64) {
    // SAFETY: per the contract the target faults at once, and the vector
    // returns to x30 with every other register as it was; x0-x17 and x30 are
    // still declared clobbered, as for a call.
    unsafe {
        asm!(
            "blr {t}",
            t = in(reg) addr,
            out("x0") _, out("x1") _, out("x2") _, out("x3") _, out("x4") _, out("x5") _,
            out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
            out("x30") _,
        )
    };
}
