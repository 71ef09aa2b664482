//! `hello`: a liveness probe. Prints where it runs, then `hello: tick N`
//! about every 50 ms of virtual-counter time, forever (single vCPU).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use tessera_guests::{counter, current_el, mpidr, ms_to_ticks, println};

    tessera_guests::entry!(run);

    fn run() -> ! {
        println!("hello: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        let period = ms_to_ticks(50);
        let mut next = counter() + period;
        for tick in 1.. {
            while counter() < next {
                core::hint::spin_loop();
            }
            next += period;
            println!("hello: tick {tick}");
        }
        unreachable!()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
