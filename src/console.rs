//! The hypervisor's own console: the board UART behind a `spin` lock, and the
//! `log` backend on top of it. A whole line is written under the lock, so
//! lines from several CPUs never interleave.

use crate::arch::aarch64::cpu;
use crate::drivers::uart::{Kind, Uart};
use crate::vdev::mux::{Input, Mux};
use crate::vdev::outbuf::{Line, OutBuf};
use crate::vdev::vuart::VirtualUart;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::AtomicBool;
use core::sync::atomic::{AtomicU64, Ordering};
use log::{LevelFilter, Log, Metadata, Record};
use spin::Mutex;

static UART: Mutex<Option<Uart>> = Mutex::new(None);
/// The VMs' virtual consoles, in the order focus visits them.
static CONSOLES: Mutex<Vec<Arc<VirtualUart>>> = Mutex::new(Vec::new());
static MUX: Mutex<Mux> = Mutex::new(Mux::new(0));
/// Prefix VM lines with the VM's name (config `console_prefix`).
static PREFIX: AtomicBool = AtomicBool::new(true);
static BOOT_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Takes over the `kind` UART at `base` (already mapped) and installs the
/// logger.
pub fn init(kind: Kind, base: usize, boot_counter: u64) {
    BOOT_COUNTER.store(boot_counter, Ordering::Relaxed);
    // SAFETY: `base` is the platform console, mapped as device memory by the
    // caller; from here on only this module drives it, under UART's lock.
    let uart = unsafe { Uart::new(kind, base) };
    uart.init();
    *UART.lock() = Some(uart);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(LevelFilter::Info);
}

/// Writes before `init`, or when the lock may be held by a dead context (a
/// panic or an exception report): waits a bounded time for the lock, then
/// writes anyway rather than hang.
pub fn emergency_print(args: core::fmt::Arguments) {
    for _ in 0..1_000_000 {
        if let Some(mut g) = UART.try_lock() {
            if let Some(u) = g.as_mut() {
                let _ = u.write_fmt(args);
            }
            return;
        }
        core::hint::spin_loop();
    }
    // SAFETY: the lock is stuck; forcing it lets the report out. Output may
    // interleave with the stuck writer, which is better than silence.
    unsafe { UART.force_unlock() };
    if let Some(u) = UART.lock().as_mut() {
        let _ = u.write_fmt(args);
    }
}

/// Prints on the `kind` UART at `base` without locks or the MMU: the one
/// way to say something before the console is set up (for example, not
/// entered at EL2). The UART is used as the firmware left it, plus
/// transmit enabled (QEMU's models reset with it off).
pub fn early_print(kind: Kind, base: usize, s: &str) {
    // SAFETY: only used while this CPU is the only one running and the MMU is
    // off or maps `base` as device memory.
    let uart = unsafe { Uart::new(kind, base) };
    uart.init();
    uart.write_str(s);
}

/// Reads a byte from the console, if one is waiting.
pub fn getc() -> Option<u8> {
    UART.lock().as_ref().and_then(|u| u.getc())
}

/// Microseconds since entry.
pub fn uptime_us() -> u64 {
    let ticks = cpu::counter().wrapping_sub(BOOT_COUNTER.load(Ordering::Relaxed));
    let freq = cpu::counter_freq().max(1);
    ticks * 1_000_000 / freq
}

struct Logger;
static LOGGER: Logger = Logger;

impl Log for Logger {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, record: &Record) {
        if !owned() {
            return;
        }
        let us = uptime_us();
        let level = match record.level() {
            log::Level::Error => "ERROR ",
            log::Level::Warn => "WARN ",
            _ => "",
        };
        if let Some(u) = UART.lock().as_mut() {
            let _ = writeln!(
                u,
                "[{:5}.{:06}] {}{}",
                us / 1_000_000,
                us % 1_000_000,
                level,
                record.args()
            );
        }
        drain();
    }

    fn flush(&self) {}
}

/// Registers a VM's virtual console for input; the first one gets the focus.
pub fn register(uart: Arc<VirtualUart>) {
    let mut c = CONSOLES.lock();
    c.push(uart);
    *MUX.lock() = Mux::new(c.len());
}

/// Whether VM lines carry their VM's name.
pub fn set_prefix(on: bool) {
    PREFIX.store(on, Ordering::Relaxed);
}

/// Says where typed input goes and how to move it.
pub fn announce_focus() {
    let c = CONSOLES.lock();
    if let Some(u) = c.get(MUX.lock().focus()) {
        log::info!(
            "console input goes to VM {} (press Ctrl-A three times to switch)",
            u.vm()
        );
    }
}

/// The physical UART has input: hand it to the VM with the focus. Runs on
/// whichever CPU takes the console interrupt; a VM that does not read its
/// input loses the excess, nobody waits for it.
pub fn on_input() {
    while let Some(b) = getc() {
        let action = MUX.lock().feed(b);
        match action {
            Input::Deliver { vm, bytes, len } => {
                let target = CONSOLES.lock().get(vm).cloned();
                if let Some(u) = target {
                    u.push_input(&bytes[..usize::from(len)]);
                }
            }
            Input::Focus { .. } => announce_focus(),
            Input::Held => {}
        }
    }
}

/// Enables the console's receive interrupt.
pub fn enable_input() {
    if let Some(u) = UART.lock().as_ref() {
        u.enable_rx_irq();
    }
}

/// Lines from VMs waiting for the UART.
static PENDING: Mutex<OutBuf> = Mutex::new(OutBuf::new());

/// Queues one line of a VM's console output and, if the UART is free,
/// prints everything queued. A VM never waits for the UART: if another CPU
/// holds it, that CPU prints this line too before letting go.
pub fn vm_line(vm: &str, line: &[u8]) {
    if !owned() {
        return;
    }
    PENDING.lock().push(vm, line);
    drain();
}

/// Prints queued VM lines while this CPU can get the UART.
///
/// At most one queue's worth of lines per call, so a VM that prints without
/// pause cannot keep another VM's CPU here: what is left is printed by the
/// next line queued, whoever queues it.
fn drain() {
    let mut budget = crate::vdev::outbuf::SLOTS;
    loop {
        let Some(mut guard) = UART.try_lock() else { return };
        while budget > 0 {
            let Some(line) = PENDING.lock().pop() else { break };
            budget -= 1;
            if let Some(u) = guard.as_mut() {
                print_line(u, &line);
            }
        }
        let dropped = PENDING.lock().take_dropped();
        if dropped > 0 {
            if let Some(u) = guard.as_mut() {
                let _ = writeln!(
                    u,
                    "[tessera] {dropped} console line(s) dropped: VMs printed faster than the UART"
                );
            }
        }
        drop(guard);
        // A line queued after the last pop and before the unlock would wait
        // for the next one: look again now that the UART is free.
        if budget == 0 || PENDING.lock().is_empty() {
            return;
        }
    }
}

/// One VM line, prefixed with its VM's name. Invalid UTF-8 is shown as
/// replacement characters, never trusted.
fn print_line(u: &mut Uart, line: &Line) {
    if PREFIX.load(Ordering::Relaxed) {
        let _ = u.write_str("[");
        let _ = u.write_str(core::str::from_utf8(line.vm()).unwrap_or("?"));
        let _ = u.write_str("] ");
    }
    for chunk in line.text().utf8_chunks() {
        let _ = u.write_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            let _ = u.write_str("\u{fffd}");
        }
    }
    let _ = u.write_str("\n");
}

/// Whether a VM owns the board UART (console = "passthrough").
static HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// Gives the board UART to a VM for good: the hypervisor prints a last line
/// and stays silent from then on (its log lines are dropped), and takes no
/// console input.
pub fn hand_over(vm: &str) {
    log::info!("console handed to VM {vm}: the hypervisor stays silent from here on");
    HANDED_OVER.store(true, Ordering::Release);
}

/// Whether the hypervisor still owns the console.
pub fn owned() -> bool {
    !HANDED_OVER.load(Ordering::Acquire)
}
