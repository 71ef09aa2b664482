//! A guest that owns a real SoC UART (passed through at its physical address,
//! with its interrupt) next to the virtual console every guest has.
//!
//! [`run`] is the whole guest; each `uart_*` binary only supplies the
//! driver. It prints through the owned UART, takes the UART's own transmit
//! interrupt [`IRQ_ROUNDS`] times, checks that its 1 ms virtual timer keeps
//! its rate, and then stays up: it echoes what is typed on its console
//! (`uart: echo: <line>`) and prints `uart: alive N` every second on both
//! UARTs, so a scenario sees it keep running while a neighbour reboots.

use crate::gic::{self, Trigger, VTIMER_INTID};
use crate::{
    counter, counter_freq, current_el, entry_counter, mpidr, ms_to_ticks, println, spin_until, vtimer,
    Checker, Mmio,
};
use core::sync::atomic::{
    AtomicU32, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};

/// What [`run`] needs of a UART driver. Register access only; no locking
/// (one vCPU uses it).
pub trait OwnedUart {
    /// Name for the log lines (`cadence`, `imx`, `pl011`).
    const NAME: &'static str;
    /// The driver for the UART at `base` (its registers, nothing else).
    fn at(base: usize) -> Self;
    /// Transmitter (and receiver) on, interrupts off.
    fn init(&self);
    /// Sends one byte, waiting while the transmit FIFO is full.
    fn put(&self, byte: u8);
    /// Enables the "transmitter can take data" interrupt, which the UART
    /// raises at once while its FIFO has room.
    fn enable_tx_irq(&self);
    /// Whether the UART's interrupt line is up for the transmit condition;
    /// if so, disables that interrupt again (the handler's job).
    fn take_tx_irq(&self) -> bool;
}

/// Transmit interrupts to take, one after each byte.
pub const IRQ_ROUNDS: u32 = 3;
const TIMER_PERIODS: u64 = 200;
/// How long the periods may take to be handled, beyond their 200 ms: a host
/// under load delays a vCPU, and each late interrupt still arrives.
const SLACK_MS: u64 = 2000;
const ALIVE_EVERY_MS: u32 = 1000;

static UART_IRQS: AtomicU32 = AtomicU32::new(0);
static OTHER_IRQS: AtomicU32 = AtomicU32::new(0);
static TICKS: AtomicU32 = AtomicU32::new(0);
static SPURIOUS_TICKS: AtomicU32 = AtomicU32::new(0);
/// The last CVAL the handler took, the end of the measured window, the
/// interrupts taken for CVALs in it, and the worst CNTVCT-at-entry minus CVAL.
static LAST_CVAL: AtomicU64 = AtomicU64::new(0);
static WINDOW_END: AtomicU64 = AtomicU64::new(0);
static IN_WINDOW: AtomicU32 = AtomicU32::new(0);
static WORST: AtomicU64 = AtomicU64::new(0);
static UART_INTID: AtomicU32 = AtomicU32::new(0);
static UART_BASE: AtomicUsize = AtomicUsize::new(0);

fn on_irq<U: OwnedUart>(intid: u32) {
    if intid == VTIMER_INTID {
        if vtimer::ctl() & vtimer::CTL_ISTATUS == 0 {
            SPURIOUS_TICKS.fetch_add(1, Relaxed);
            return;
        }
        let cval = vtimer::cval();
        WORST.fetch_max(counter().saturating_sub(cval), Relaxed);
        if cval <= WINDOW_END.load(Relaxed) {
            IN_WINDOW.fetch_add(1, Relaxed);
        }
        vtimer::set_cval(cval + ms_to_ticks(1));
        LAST_CVAL.store(cval, Release);
        TICKS.fetch_add(1, Release);
    } else if intid == UART_INTID.load(Relaxed) {
        if U::at(UART_BASE.load(Relaxed)).take_tx_irq() {
            UART_IRQS.fetch_add(1, Release);
        }
    } else {
        OTHER_IRQS.fetch_add(1, Relaxed);
    }
}

fn puts<U: OwnedUart>(uart: &U, s: &str) {
    s.bytes().for_each(|b| {
        if b == b'\n' {
            uart.put(b'\r');
        }
        uart.put(b);
    });
}

/// Runs the guest on the `U` UART at `base` whose interrupt is `intid`.
pub fn run<U: OwnedUart>(base: usize, intid: u32) -> ! {
    let uart = &U::at(base);
    println!(
        "uart: start at EL{}, MPIDR {:#x}; owns a {} UART at {base:#x}, INTID {intid}",
        current_el(),
        mpidr(),
        U::NAME
    );
    println!("uart: {}", gic::version_name());
    // Under -icount shift=0 a nanosecond is an instruction: the hypervisor's boot cost.
    let entry = entry_counter();
    let ns = u128::from(entry) * 1_000_000_000 / u128::from(counter_freq().max(1));
    println!("uart: first instruction at counter {entry}, {ns} ns after reset");
    let mut c = Checker::new("uart");
    UART_BASE.store(base, Relaxed);
    UART_INTID.store(intid, Relaxed);
    gic::init_distributor();
    gic::init_cpu();
    gic::set_handler(on_irq::<U>);

    uart.init();
    puts(uart, "uart: hello through the passed-through UART\n");
    gic::set_trigger(intid, Trigger::Level);
    gic::set_priority(intid, 0x80);
    gic::route_spi(intid, 0);
    gic::enable(intid);
    gic::enable(VTIMER_INTID);
    gic::irqs_on();

    // Its own interrupt: one transmit interrupt after each byte.
    let mut taken = 0;
    for round in 1..=IRQ_ROUNDS {
        uart.put(b'0' + round as u8);
        uart.enable_tx_irq();
        if spin_until(100, || UART_IRQS.load(Acquire) >= round) {
            taken += 1;
        }
    }
    puts(uart, "\n");
    c.check(
        "uart_tx_interrupt",
        taken == IRQ_ROUNDS,
        format_args!("took {taken} of {IRQ_ROUNDS} transmit interrupts on INTID {intid}"),
    );

    // Its timer keeps its rate: one interrupt for each of 200 1 ms periods, none
    // lost, however late the host runs this vCPU.
    let start = counter() + ms_to_ticks(2);
    let end = start + ms_to_ticks(TIMER_PERIODS);
    WINDOW_END.store(end, Relaxed);
    vtimer::arm_at(start + ms_to_ticks(1));
    spin_until(TIMER_PERIODS + SLACK_MS, || LAST_CVAL.load(Acquire) >= end);
    let n = IN_WINDOW.load(Relaxed);
    let spurious = SPURIOUS_TICKS.load(Relaxed);
    let worst_us = WORST.load(Relaxed) * 1_000_000 / counter_freq().max(1);
    c.check(
        "uart_timer_rate",
        u64::from(n) == TIMER_PERIODS && spurious == 0,
        format_args!(
            "{n} timer interrupts for {TIMER_PERIODS} periods of 1 ms (want {TIMER_PERIODS}), \
             {spurious} spurious, worst latency {worst_us} us"
        ),
    );
    let other = OTHER_IRQS.load(Relaxed);
    c.check(
        "uart_no_other_interrupts",
        other == 0,
        format_args!("{other} others"),
    );
    c.finish();

    // Stay up: echo the console, a sign of life every second on both UARTs.
    // SAFETY: the VM's virtual PL011; only this vCPU reads it.
    let console = unsafe { Mmio::new(0x0900_0000) };
    const FR: usize = 0x18;
    const FR_RXFE: u32 = 1 << 4;
    println!("uart: ready");
    let mut line = [0u8; 80];
    let mut len = 0;
    let mut next_alive = TICKS.load(Acquire) + ALIVE_EVERY_MS;
    let mut alive = 0u32;
    loop {
        let seen = TICKS.load(Acquire);
        gic::wait_for_interrupts_until(|| TICKS.load(Acquire) != seen);
        while console.read32(FR) & FR_RXFE == 0 {
            let b = console.read32(0) as u8;
            if b == b'\r' || b == b'\n' {
                let text = core::str::from_utf8(&line[..len]).unwrap_or("<not utf-8>");
                println!("uart: echo: {text}");
                len = 0;
            } else if len < line.len() {
                line[len] = b;
                len += 1;
            }
        }
        if TICKS.load(Acquire) >= next_alive {
            alive += 1;
            next_alive += ALIVE_EVERY_MS;
            println!("uart: alive {alive}");
            puts(uart, "uart: alive\n");
        }
    }
}
