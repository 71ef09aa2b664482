//! `conlat`: a console bystander that times itself. Prints [`LINES`] numbered
//! lines, one per millisecond (waiting in WFI for its virtual timer in
//! between), timing each `println` (the trapped UART writes, whatever the
//! hypervisor does in them) with the virtual counter, then its worst and
//! 95th-percentile print latency, its five slowest prints and a `RESULT`
//! line: the check fails if the 95th percentile is above [`MAX_P95_US`].
//! The worst print is reported, not checked: under QEMU's round-robin TCG
//! (icount) a vCPU can be descheduled in the middle of a print while its
//! spinning neighbours run for tens of milliseconds, which no hypervisor
//! can prevent and which hits at most a print or two.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use tessera_guests::gic::{self, VTIMER_INTID};
    use tessera_guests::{counter, counter_freq, ms_to_ticks, println, vtimer, Checker};

    /// Lines printed (and timed).
    pub const LINES: usize = 200;
    /// The 95th-percentile print the check accepts, in microseconds of
    /// counter time (a print is about 15 us when the bystander pays only for
    /// its own line).
    const MAX_P95_US: u64 = 1_000;

    static FIRED: AtomicBool = AtomicBool::new(false);

    tessera_guests::entry!(run);

    fn on_irq(intid: u32) {
        if intid == VTIMER_INTID {
            vtimer::mask();
            FIRED.store(true, Relaxed);
        }
    }

    fn sleep_ticks(ticks: u64) {
        FIRED.store(false, Relaxed);
        vtimer::arm_at(counter() + ticks);
        gic::wait_for_interrupts_until(|| FIRED.load(Relaxed));
    }

    fn us(ticks: u64) -> u64 {
        ticks * 1_000_000 / counter_freq().max(1)
    }

    fn run() -> ! {
        println!("conlat: start, {LINES} lines");
        let mut c = Checker::new("conlat");
        gic::init_distributor();
        gic::init_cpu();
        gic::set_handler(on_irq);
        gic::enable(VTIMER_INTID);
        gic::irqs_on();

        let mut took = [0u64; LINES];
        let period = ms_to_ticks(1);
        for (k, t) in took.iter_mut().enumerate() {
            sleep_ticks(period);
            let start = counter();
            println!("conlat: line {k}/{LINES} at {start}");
            *t = counter() - start;
        }
        vtimer::stop();
        let mut order = [0usize; LINES];
        for (k, o) in order.iter_mut().enumerate() {
            *o = k;
        }
        order.sort_unstable_by_key(|&k| core::cmp::Reverse(took[k]));
        for &k in &order[..5] {
            println!("conlat: slow print: line {k} took {} us", us(took[k]));
        }
        took.sort_unstable();
        let worst = us(took[LINES - 1]);
        let p95 = us(took[LINES * 95 / 100]);
        let median = us(took[LINES / 2]);
        println!(
            "conlat: print latency over {LINES} lines: median {median} us, p95 {p95} us, worst {worst} us"
        );
        c.check(
            "conlat_p95_print",
            p95 <= MAX_P95_US,
            format_args!("95th-percentile print {p95} us, want at most {MAX_P95_US} us"),
        );
        c.finish();
        loop {
            sleep_ticks(ms_to_ticks(100));
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
