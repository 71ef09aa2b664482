//! `reset`: proves PSCI SYSTEM_RESET restarts only this VM, from pristine
//! images, with its RAM scrubbed. At each boot it checks that a marker it
//! wrote before the previous reset is gone, writes it, ticks three times and
//! asks for a reset.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::ptr::{addr_of, addr_of_mut};
    use tessera_guests::{counter, current_el, mpidr, ms_to_ticks, println, psci};

    /// In .data: its initial value comes from the image, so a reload
    /// restores it; a VM restarted without reloading would keep the new one.
    static mut GENERATION: u64 = 0x1111_1111;
    /// Far into RAM, outside the image: only a scrub clears it.
    const MARKER_OFFSET: u64 = 8 << 20;
    const MARKER: u64 = 0x5245_5345_5421_2121;

    tessera_guests::entry!(run);

    fn run() -> ! {
        println!("reset: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        let base = (run as *const () as u64) & !((2 << 20) - 1);
        let marker = (base + MARKER_OFFSET) as *mut u64;
        // SAFETY: `marker` is inside this VM's 16 MiB of RAM, unused by the image.
        let (old_marker, gen) = unsafe { (marker.read_volatile(), addr_of!(GENERATION).read_volatile()) };
        if old_marker == MARKER || gen != 0x1111_1111 {
            println!("FAIL reset: state survived the reset (marker {old_marker:#x}, generation {gen:#x})");
        } else {
            println!("PASS reset_scrubbed: RAM and data are pristine");
        }
        // SAFETY: as above; GENERATION is only touched by this vCPU.
        unsafe {
            marker.write_volatile(MARKER);
            addr_of_mut!(GENERATION).write_volatile(0x2222_2222);
        }
        let period = ms_to_ticks(50);
        let mut next = counter() + period;
        for tick in 1..=3 {
            while counter() < next {
                core::hint::spin_loop();
            }
            next += period;
            println!("reset: tick {tick}");
        }
        println!("reset: calling SYSTEM_RESET");
        let r = psci::system_reset();
        println!("FAIL reset: SYSTEM_RESET returned {r}");
        tessera_guests::park()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
