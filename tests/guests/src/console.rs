//! `print!` / `println!` on the console UART. A line is written under a spin
//! lock so lines from different vCPUs never interleave. The lock remembers its
//! owner, so an exception report from inside a print on the same vCPU still
//! gets out instead of deadlocking.

use crate::cpu::cpu_index;
use crate::uart::Uart;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};

const FREE: usize = usize::MAX;
/// Index of the vCPU holding the console, or FREE.
static OWNER: AtomicUsize = AtomicUsize::new(FREE);

/// Holds the console lock until dropped (a no-op guard when re-entered).
struct Guard {
    release: bool,
}

fn lock() -> Guard {
    let me = cpu_index();
    if OWNER.load(Ordering::Relaxed) == me {
        return Guard { release: false };
    }
    while OWNER
        .compare_exchange_weak(FREE, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    Guard { release: true }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.release {
            OWNER.store(FREE, Ordering::Release);
        }
    }
}

/// Backend of [`print!`](crate::print).
pub fn print(args: fmt::Arguments) {
    let _guard = lock();
    let _ = Uart.write_fmt(args);
}

/// Backend of [`println!`](crate::println): the text and its newline under one
/// lock.
pub fn print_line(args: fmt::Arguments) {
    let _guard = lock();
    let _ = Uart.write_fmt(args);
    Uart.put(b'\n');
}

/// Prints to the guest console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::console::print(format_args!($($arg)*)));
}

/// Prints a whole line to the guest console (never interleaved with another
/// vCPU's line).
#[macro_export]
macro_rules! println {
    () => ($crate::console::print_line(format_args!("")));
    ($($arg:tt)*) => ($crate::console::print_line(format_args!($($arg)*)));
}
