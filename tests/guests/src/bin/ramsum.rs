//! `ramsum`: a victim that watches its own RAM. Fills 64 KiB at
//! [`REGION`] (inside its RAM, past its image) with a pattern, prints its
//! checksum, and about every 50 ms checks it again, printing
//! `ramsum: tick N unchanged` or a FAIL line naming the first changed word.
//!
//! The `smmu_dma` scenario places it identity-mapped at 0x4900_0000 (16 MiB)
//! next to `dma_thief`, which aims a device's DMA at [`REGION`].
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg_attr(not(target_os = "none"), allow(dead_code))]
const REGION: usize = 0x4980_0000;
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
const WORDS: usize = 64 * 1024 / 8;

#[cfg(target_os = "none")]
mod guest {
    use super::{REGION, WORDS};
    use tessera_guests::{counter, fail, ms_to_ticks, println, Mmio};

    tessera_guests::entry!(run);

    fn pattern(i: usize) -> u64 {
        (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5241_4d53_554d_2121
    }

    fn run() -> ! {
        // SAFETY: 64 KiB of this VM's RAM past its image, stack and BSS
        // (the image is well under 8 MiB), used by nothing else.
        let ram = unsafe { Mmio::new(REGION) };
        let mut sum = 0u64;
        for i in 0..WORDS {
            ram.write64(i * 8, pattern(i));
            sum = sum.wrapping_add(pattern(i));
        }
        println!("ramsum: ready, checksum {sum:#018x} over {REGION:#x}+64K");
        let period = ms_to_ticks(50);
        let mut next = counter() + period;
        for tick in 1u64.. {
            while counter() < next {
                core::hint::spin_loop();
            }
            next += period;
            let now = (0..WORDS).fold(0u64, |s, i| s.wrapping_add(ram.read64(i * 8)));
            if now == sum {
                println!("ramsum: tick {tick} unchanged");
            } else {
                let first = (0..WORDS).find(|&i| ram.read64(i * 8) != pattern(i)).unwrap_or(0);
                fail(
                    "ramsum_unchanged",
                    format_args!(
                        "checksum {now:#018x} != {sum:#018x}; first change at {:#x}",
                        REGION + first * 8
                    ),
                );
            }
        }
        unreachable!()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
