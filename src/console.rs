//! The hypervisor's own console: the board UART behind a `spin` lock, and the
//! `log` backend on top of it. A whole line is written under the lock, so
//! lines from several CPUs never interleave.

use crate::arch::aarch64::{cpu, hyptimer};
use crate::drivers::uart::{Kind, Uart};
use crate::vdev::escape;
use crate::vdev::mux::{Input, Mux};
use crate::vdev::outbuf::{Line, Queue, Turn};
use crate::vdev::vuart::VirtualUart;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::AtomicBool;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use log::{LevelFilter, Log, Metadata, Record};
use spin::{Mutex, RwLock};

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
        {
            // Ahead of any VM line not yet started: log lines keep their
            // order and wait for at most the one VM line being printed.
            let _first = Priority::claim();
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
        }
        let _ = drain(Turn::new(None));
    }

    fn flush(&self) {}
}

/// Registers a VM's virtual console for input; the first one gets the focus.
pub fn register(uart: Arc<VirtualUart>) {
    {
        let mut queues = QUEUES.write();
        if !queues.iter().any(|(name, _)| name == uart.vm()) {
            queues.push((uart.vm().into(), Mutex::new(Queue::new(uart.vm()))));
        }
    }
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
    // Typed bytes are read ahead of VM lines not yet started.
    let _first = Priority::claim();
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

/// Lines from VMs waiting for the UART: one queue per VM, each behind its
/// own lock, so a VM queueing a line contends with nobody but a CPU taking
/// one of its lines. The list only grows, at each VM's first line (boot).
static QUEUES: RwLock<Vec<(String, Mutex<Queue>)>> = RwLock::new(Vec::new());
/// Where the round robin of [`Turn`] stands; used only with the UART held.
static CURSOR: AtomicUsize = AtomicUsize::new(0);
/// CPUs waiting for the UART with priority (a hypervisor log line, console
/// input): VM lines are not started while it is non-zero, so those wait for
/// at most the one VM line being printed.
static PRIORITY: AtomicUsize = AtomicUsize::new(0);

/// Holds [`PRIORITY`] up while alive.
struct Priority;

impl Priority {
    fn claim() -> Self {
        PRIORITY.fetch_add(1, Ordering::AcqRel);
        Self
    }
}

impl Drop for Priority {
    fn drop(&mut self) {
        PRIORITY.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Queues one line of a VM's console output in that VM's queue and prints
/// what this VM's turn allows (see [`crate::vdev::outbuf`]). A VM never
/// waits for the UART: if another CPU holds it, the line waits in the queue
/// for this VM's next line, another CPU's share, or this CPU's coming back
/// a millisecond later, whichever is first.
pub fn vm_line(vm: &str, line: &[u8]) {
    if !owned() {
        return;
    }
    let me = {
        let queues = QUEUES.read();
        let me = queues.iter().position(|(name, _)| name == vm);
        if let Some(q) = me.and_then(|i| queues.get(i)) {
            q.1.lock().push(line);
        }
        me
    };
    let me = me.unwrap_or_else(|| queue_for(vm, line));
    come_back_if_left(drain(Turn::new(Some(me))), me);
}

/// How long a CPU leaves its VM's queued lines before it comes back for
/// them: long enough for whoever holds the UART to finish a line or two.
const COME_BACK_US: u64 = 1_000;
/// The queue each CPU comes back for when its hypervisor timer fires
/// ([`NOBODY`] if none). Only that CPU uses its entry, with IRQs masked.
static LEFT: [AtomicUsize; crate::arch::aarch64::MAX_CPUS] =
    [const { AtomicUsize::new(NOBODY) }; crate::arch::aarch64::MAX_CPUS];
const NOBODY: usize = usize::MAX;

/// Lines of queue `me` are `left` after its turn: this CPU comes back for
/// them when its hypervisor timer fires, so they never wait for someone else
/// to print (see [`crate::vdev::outbuf`]).
fn come_back_if_left(left: bool, me: usize) {
    if left {
        if let Some(slot) = LEFT.get(cpu::index()) {
            slot.store(me, Ordering::Relaxed);
            hyptimer::arm_in(
                hyptimer::Use::Console,
                cpu::counter_freq() * COME_BACK_US / 1_000_000,
            );
        }
    }
}

/// This CPU's hypervisor timer fired: print what its VM left queued, and
/// come back again if the UART is still busy. Rare: kept out of line, off
/// the interrupt paths it is called from.
#[inline(never)]
pub fn on_come_back_timer() {
    let me = LEFT
        .get(cpu::index())
        .map_or(NOBODY, |slot| slot.swap(NOBODY, Ordering::Relaxed));
    if me != NOBODY && owned() {
        come_back_if_left(drain(Turn::new(Some(me))), me);
    }
}

/// Makes VM `vm`'s queue (normally done by [`register`]) with `line` in it;
/// returns its index.
fn queue_for(vm: &str, line: &[u8]) -> usize {
    let mut queues = QUEUES.write();
    let i = match queues.iter().position(|(name, _)| name == vm) {
        Some(i) => i,
        None => {
            queues.push((vm.into(), Mutex::new(Queue::new(vm))));
            queues.len() - 1
        }
    };
    if let Some(q) = queues.get(i) {
        q.1.lock().push(line);
    }
    i
}

/// Prints queued VM lines as far as `turn` allows, one line per hold of the
/// UART so a log line or console input gets in between. Returns whether
/// lines of the turn's own VM are left ([`Turn::come_back`]).
fn drain(mut turn: Turn) -> bool {
    let prefix = PREFIX.load(Ordering::Relaxed);
    let queues = QUEUES.read();
    let n = queues.len();
    let pop = |i: usize| queues.get(i).and_then(|q| q.1.lock().pop());
    let waiting = |i: usize| queues.get(i).is_some_and(|q| !q.1.lock().is_empty());
    loop {
        if PRIORITY.load(Ordering::Acquire) > 0 {
            return turn.come_back(waiting);
        }
        let Some(mut guard) = UART.try_lock() else {
            return turn.come_back(waiting);
        };
        let mut cursor = CURSOR.load(Ordering::Relaxed);
        let next = turn.next(&mut cursor, n, pop);
        CURSOR.store(cursor, Ordering::Relaxed);
        let Some(line) = next else {
            drop(guard);
            // A line queued after the last look and before the unlock found
            // the UART busy: look again now that it is free.
            if turn.may_print(n, waiting) {
                continue;
            }
            return turn.come_back(waiting);
        };
        if let Some(u) = guard.as_mut() {
            print_line(u, &line, prefix);
        }
    }
}

/// One VM line, prefixed with its VM's name unless `prefix` is off, with
/// every terminal control shown escaped (also without the prefix: lines of
/// all VMs and the hypervisor share the terminal, and a control could
/// rewrite what another printed). Then, if its VM lost lines, how many.
fn print_line(u: &mut impl Write, line: &Line, prefix: bool) {
    let vm = core::str::from_utf8(line.vm()).unwrap_or("?");
    if prefix {
        let _ = write!(u, "[{vm}] ");
    }
    let _ = escape::write_escaped(u, line.text());
    let _ = u.write_str("\n");
    if line.dropped > 0 {
        let _ = writeln!(
            u,
            "[tessera] {} console line(s) of VM {vm} dropped: it printed faster than the UART",
            line.dropped
        );
    }
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
