//! `soak_flood`: the noisy neighbour of `cargo xtask soak`, forever. An
//! interrupt storm: the virtual timer left asserted (CVAL in the past, EOIed
//! but never cleared, as in `storm`), and each of its interrupts sends this
//! vCPU an SGI. A console flood: each timer interrupt prints a full-length
//! line (240 bytes with the counts), as fast as the virtual UART takes them.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use tessera_guests::gic::{self, SgiTarget, VTIMER_INTID};
    use tessera_guests::{cpu_index, current_el, println, vtimer};

    const SGI: u32 = 12;
    static TIMER: AtomicU64 = AtomicU64::new(0);
    static SGIS: AtomicU64 = AtomicU64::new(0);

    tessera_guests::entry!(run);

    fn on_irq(intid: u32) {
        match intid {
            VTIMER_INTID => {
                let n = TIMER.fetch_add(1, Relaxed) + 1;
                gic::send_sgi(SGI, SgiTarget::List(1 << cpu_index()));
                // Padded to the virtual UART's 240-byte line.
                println!(
                    "soak_flood: line {n:>10} sgis {:>10} {:x<200}",
                    SGIS.load(Relaxed),
                    ""
                );
            }
            SGI => {
                SGIS.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }

    fn run() -> ! {
        println!("soak_flood: start at EL{}, {}", current_el(), gic::version_name());
        gic::init_distributor();
        gic::init_cpu();
        gic::set_handler(on_irq);
        gic::enable(VTIMER_INTID);
        gic::enable(SGI);
        gic::irqs_on();
        vtimer::arm_at(0);
        loop {
            core::hint::spin_loop();
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
