//! `scrub_probe`: a hostile reader of its own fresh RAM (16 MiB). Each boot:
//! it first jumps into an untouched block (an instruction fetch is a first
//! touch too: it must execute the scrub's zeros, a UDF, not take an
//! abort); then both vCPUs write to the same untouched 2 MiB block at the same moment,
//! four blocks in a row (the block must be scrubbed once: both writes
//! survive, the rest reads zero); then it reads every word of its RAM
//! outside its image and DTB (all zero but those two words per block);
//! then it writes a marker into every page of that RAM and asks for
//! SYSTEM_RESET. A later boot that finds any marker sees its previous run.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::ptr::{read_volatile, write_volatile};
    use core::sync::atomic::{AtomicU32, Ordering};
    use tessera_guests::{branch_to, expect_fault, park, println, psci, start_cpu, EC_UNKNOWN};

    const RAM_SIZE: u64 = 16 << 20;
    const BLOCK: u64 = 2 << 20;
    /// The first block both vCPUs race into (4 MiB in: past the image's block).
    const RACE_FIRST: u64 = 2;
    const ROUNDS: u64 = 4;
    const MARKER: u64 = 0x5052_4556_5255_4e21;
    const MINE: u64 = 0x1111_0000_0000_0000;
    const THEIRS: u64 = 0x2222_0000_0000_0000;

    /// Round the secondary is to race in, and rounds it finished (BSS:
    /// part of the image, zero at every boot).
    static GO: AtomicU32 = AtomicU32::new(0);
    static DONE: AtomicU32 = AtomicU32::new(0);

    extern "C" {
        static __image_start: u8;
        static __image_end: u8;
    }

    fn base() -> u64 {
        (&raw const __image_start as u64) & !(BLOCK - 1)
    }

    fn race_block(r: u64) -> u64 {
        base() + (RACE_FIRST + r) * BLOCK
    }

    fn get(a: u64) -> u64 {
        // SAFETY: callers pass 8-byte aligned addresses inside this VM's RAM.
        unsafe { read_volatile(a as *const u64) }
    }

    fn put(a: u64, v: u64) {
        // SAFETY: as for `get`; never inside the image.
        unsafe { write_volatile(a as *mut u64, v) }
    }

    /// Guest-physical ranges that are not fresh RAM: the image and the DTB.
    fn loaded() -> [(u64, u64); 2] {
        let start = &raw const __image_start as u64;
        let end = &raw const __image_end as u64;
        let dtb = base() + RAM_SIZE - BLOCK;
        let size = u32::from_be(
            // SAFETY: the DTB header's totalsize, inside RAM.
            unsafe { read_volatile((dtb + 4) as *const u32) },
        );
        [(start, end), (dtb, dtb + u64::from(size))]
    }

    fn is_loaded(l: &[(u64, u64); 2], a: u64) -> bool {
        l.iter().any(|&(s, e)| a >= s && a < e)
    }

    tessera_guests::entry!(run);

    fn run() -> ! {
        println!("scrub_probe: boot");
        // Block 1, never touched yet this boot, where every page carried a
        // marker word before the reset.
        let target = base() + BLOCK + 0x800;
        // SAFETY: RAM of this VM; whatever is there faults or is a UDF.
        match expect_fault(|| unsafe { branch_to(target) }) {
            Some(f) if f.ec() == EC_UNKNOWN && f.elr == target => {
                println!("PASS scrub_fetch_from_fresh_block: UDF at {target:#x}")
            }
            Some(f) => println!(
                "FAIL scrub_fetch_from_fresh_block: ESR {:#x} ELR {:#x}, want EC 0 at {target:#x}",
                f.esr, f.elr
            ),
            None => println!("FAIL scrub_fetch_from_fresh_block: no exception"),
        }
        if start_cpu(1, secondary) != 0 {
            println!("FAIL scrub_probe: CPU_ON failed");
            park()
        }
        let mut ok = true;
        for r in 0..ROUNDS {
            let b = race_block(r);
            GO.store(r as u32 + 1, Ordering::Release);
            put(b, MINE | r);
            while DONE.load(Ordering::Acquire) <= r as u32 {
                core::hint::spin_loop();
            }
            let (mine, theirs) = (get(b), get(b + 8));
            if mine != MINE | r || theirs != THEIRS | r {
                println!("FAIL scrub_two_vcpus_one_fresh_block: round {r}: {mine:#x} {theirs:#x}");
                ok = false;
            }
        }
        if ok {
            println!("PASS scrub_two_vcpus_one_fresh_block: {ROUNDS} blocks, both writes kept");
        }
        // Every word of fresh RAM reads zero (the race words aside).
        let l = loaded();
        let (mut bad, mut first) = (0u64, 0u64);
        let mut a = base();
        while a < base() + RAM_SIZE {
            if is_loaded(&l, a) {
                a += 8;
                continue;
            }
            let raced = (0..ROUNDS).any(|r| a == race_block(r) || a == race_block(r) + 8);
            if !raced && get(a) != 0 {
                if bad == 0 {
                    first = a;
                }
                bad += 1;
            }
            a += 8;
        }
        if bad == 0 {
            println!("PASS scrub_fresh_ram_reads_zero: every word outside the image and DTB");
        } else {
            println!(
                "FAIL scrub_fresh_ram_reads_zero: {bad} non-zero words, first at {first:#x} = {:#x}",
                get(first)
            );
        }
        // A marker in every page, for the next boot to (not) find.
        let mut p = base();
        while p < base() + RAM_SIZE {
            if !is_loaded(&l, p + 0x800) {
                put(p + 0x800, MARKER);
            }
            p += 4096;
        }
        println!("scrub_probe: calling SYSTEM_RESET");
        let r = psci::system_reset();
        println!("FAIL scrub_probe: SYSTEM_RESET returned {r}");
        park()
    }

    fn secondary(_: usize) -> ! {
        for r in 0..ROUNDS {
            while GO.load(Ordering::Acquire) <= r as u32 {
                core::hint::spin_loop();
            }
            put(race_block(r) + 8, THEIRS | r);
            DONE.store(r as u32 + 1, Ordering::Release);
        }
        park()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
