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
    use tessera_guests::{counter, ms_to_ticks, park, println};

    /// Bursts (as many as `round_flood` has rounds).
    const ROUNDS: usize = 12;
    const START_MS: u64 = 500;

    use tessera_guests::vtimer::{init_sleep as init_timer, sleep_until};

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
