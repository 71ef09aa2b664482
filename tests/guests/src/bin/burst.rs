//! `burst`: a VM that prints a burst of [`LINES`] lines in the middle of
//! its neighbour `round_flood`'s flood (see there), waiting in WFI between
//! bursts, and after the last burst (its last line `burst: done`) stays in
//! WFI for good. A line of the burst that finds the UART held by the flood
//! waits in this VM's queue; each must still be printed, soon, though this
//! VM prints nothing more for a while (or ever, after the last burst), and
//! the flood stops right after the burst.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use tessera_guests::gic::{self, VTIMER_INTID};
    use tessera_guests::{counter, ms_to_ticks, park, println, vtimer};

    /// Bursts (as many as `round_flood` has rounds).
    const ROUNDS: usize = 12;
    const START_MS: u64 = 500;

    static FIRED: AtomicBool = AtomicBool::new(false);

    fn on_irq(intid: u32) {
        if intid == VTIMER_INTID {
            vtimer::mask();
            FIRED.store(true, Relaxed);
        }
    }

    /// The virtual timer, for [`sleep_until`].
    fn init_timer() {
        gic::init_distributor();
        gic::init_cpu();
        gic::set_handler(on_irq);
        gic::enable(VTIMER_INTID);
        gic::irqs_on();
    }

    /// Waits in WFI until the counter reaches `at`.
    fn sleep_until(at: u64) {
        if counter() >= at {
            return;
        }
        FIRED.store(false, Relaxed);
        vtimer::arm_at(at);
        gic::wait_for_interrupts_until(|| FIRED.load(Relaxed));
    }

    /// Lines per burst (fewer than the hypervisor queues per VM).
    const LINES: usize = 8;
    /// From one burst to when the next is due: longer than the flooder's
    /// quiet, so the next burst comes in the middle of the next flood.
    const EVERY_MS: u64 = 30;

    tessera_guests::entry!(run);

    fn run() -> ! {
        println!("burst: start, {ROUNDS} rounds of {LINES} lines");
        init_timer();
        // The flood starts at START_MS (round_flood.rs).
        let mut next = ms_to_ticks(START_MS + 5);
        for k in 0..ROUNDS {
            sleep_until(next);
            next = counter() + ms_to_ticks(EVERY_MS);
            for j in 1..=LINES {
                println!("burst: round {k} line {j}/{LINES}");
            }
        }
        println!("burst: done");
        park()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
