//! `round_flood`: a console flooder that stops. In each of `ROUNDS`
//! rounds it floods lines until it notices that another CPU ran in the
//! middle of its flood (under QEMU's round-robin icount TCG, one CPU runs at
//! a time and a CPU that computes is only descheduled at QEMU's 100 ms kick,
//! perhaps in the middle of printing a line, holding the UART): that was
//! the `burst` VM printing its burst. It then stops at once, is silent for
//! [`QUIET_MS`] and prints one marker, `round_flood: round K end`. Every
//! line of the burst must be printed before that marker, also those that
//! found the UART held by the flood. The flood's bytes are raw 8-bit C1
//! bytes, each printed escaped as four characters, so that the flood holds
//! the UART for a good part of its time.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use tessera_guests::Mmio;
    use tessera_guests::{counter, ms_to_ticks, park, println};

    /// Rounds (as many as `burst` prints bursts).
    const ROUNDS: usize = 12;
    /// When the first round starts on the counter every VM shares (the
    /// virtual counter has no offset); `burst` starts its first burst 5 ms
    /// later.
    const START_MS: u64 = 500;

    use tessera_guests::vtimer::{init_sleep as init_timer, sleep_until};

    const UART: usize = 0x0900_0000;
    const DR: usize = 0x00;
    /// Silence between the burst and the marker.
    const QUIET_MS: u64 = 20;
    /// Bytes per flood line.
    const FILL: usize = 120;
    /// A pause longer than this between two of its UART writes means
    /// another CPU ran meanwhile (one write is well under a microsecond).
    const GAP_US: u64 = 50;

    tessera_guests::entry!(run);

    fn run() -> ! {
        println!("round_flood: start");
        init_timer();
        // SAFETY: the VM's virtual PL011; only this (single) vCPU writes it.
        let uart = unsafe { Mmio::new(UART) };
        let mut line = [0x9bu8; FILL + 1];
        line[FILL] = b'\n';
        let gap = ms_to_ticks(1) * GAP_US / 1000;
        // Both VMs are up and waiting by then: the first gap is the first
        // burst.
        sleep_until(ms_to_ticks(START_MS));
        for k in 0..ROUNDS {
            let mut last = counter();
            'flood: loop {
                for &b in &line {
                    uart.write32(DR, u32::from(b));
                    let now = counter();
                    if now - last > gap {
                        break 'flood;
                    }
                    last = now;
                }
            }
            // End the cut flood line, then the quiet, then the marker.
            uart.write32(DR, u32::from(b'\n'));
            sleep_until(counter() + ms_to_ticks(QUIET_MS));
            println!("round_flood: round {k} end");
        }
        park()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
