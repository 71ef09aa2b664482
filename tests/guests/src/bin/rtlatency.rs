//! `rtlatency`: the real-time VM of the Linux demo (boards/qemu-virt/linux.toml). A 1 ms
//! periodic virtual timer forever, each interrupt's latency measured (counter at handler
//! entry minus the CVAL that fired). Quiet so the Linux shells next to it stay usable: it
//! reports the worst latency when Enter is pressed on its console (Ctrl-A three times
//! brings the keyboard here) and otherwise once every [`REPORT_EVERY_MS`].
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
    use tessera_guests::gic::{self, VTIMER_INTID};
    use tessera_guests::{counter, counter_freq, ms_to_ticks, println, vtimer, Mmio};

    const UART: usize = 0x0900_0000;
    const DR: usize = 0x00;
    const FR: usize = 0x18;
    const FR_RXFE: u32 = 1 << 4;
    /// A report without being asked, this often.
    const REPORT_EVERY_MS: u64 = 10 * 60 * 1000;

    /// Interrupts taken since the start.
    static TICKS: AtomicU32 = AtomicU32::new(0);
    /// Worst latency since the last report, and since the start.
    static WORST: AtomicU64 = AtomicU64::new(0);
    static WORST_EVER: AtomicU64 = AtomicU64::new(0);
    static PERIOD: AtomicU64 = AtomicU64::new(0);

    tessera_guests::entry!(run);

    fn on_irq(intid: u32) {
        let now = counter();
        if intid != VTIMER_INTID || vtimer::ctl() & vtimer::CTL_ISTATUS == 0 {
            return;
        }
        let cval = vtimer::cval();
        let late = now.saturating_sub(cval);
        WORST.fetch_max(late, Relaxed);
        WORST_EVER.fetch_max(late, Relaxed);
        TICKS.fetch_add(1, Relaxed);
        // The next period from the one that fired, so a late tick does not shift the rest.
        vtimer::set_cval(cval + PERIOD.load(Relaxed));
    }

    fn us(ticks: u64) -> u64 {
        ticks * 1_000_000 / counter_freq().max(1)
    }

    fn report(why: &str) {
        let worst = WORST.swap(0, Relaxed);
        println!(
            "rtlatency: worst 1 ms timer latency {} us since the last report, {} us since the start \
             ({} ticks; {why})",
            us(worst),
            us(WORST_EVER.load(Relaxed)),
            TICKS.load(Relaxed)
        );
    }

    fn run() -> ! {
        // SAFETY: the VM's virtual PL011; only this vCPU reads it.
        let uart = unsafe { Mmio::new(UART) };
        println!(
            "rtlatency: 1 ms timer running; press Enter here for its worst latency \
             (Ctrl-A three times moves the keyboard between VMs)"
        );
        gic::init_distributor();
        gic::init_cpu();
        gic::set_handler(on_irq);
        gic::enable(VTIMER_INTID);
        let period = ms_to_ticks(1);
        PERIOD.store(period, Relaxed);
        vtimer::arm_at(counter() + period);
        gic::irqs_on();
        let every = ms_to_ticks(REPORT_EVERY_MS);
        let mut next_report = counter() + every;
        loop {
            // Woken by every tick: 1 ms is quick enough to answer a key.
            let seen = TICKS.load(Relaxed);
            gic::wait_for_interrupts_until(|| TICKS.load(Relaxed) != seen);
            let mut asked = false;
            while uart.read32(FR) & FR_RXFE == 0 {
                let b = uart.read32(DR) as u8;
                asked |= b == b'\r' || b == b'\n';
            }
            if asked {
                report("asked");
                next_report = counter() + every;
            } else if counter() >= next_report {
                report("every 10 min");
                next_report += every;
            }
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
