//! `scrub_net_fresh`: the hypervisor's path into fresh RAM. Each boot, on
//! its net link: posts a receive buffer in a 2 MiB block it has not touched
//! and waits for the peer's frame there (its bytes must be the peer's, not
//! erased by a scrub at this guest's first read); then sends a frame
//! straight out of another untouched block (the peer checks it is all
//! zero); then writes a marker over both buffers and resets. Without
//! scrubbing on the hypervisor's first touch, the second boot would send
//! the first boot's marker.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::cell::UnsafeCell;
    use core::ptr::{read_volatile, write_volatile};
    use tessera_guests::vnet::{Vnet, HDR};
    use tessera_guests::{counter, ms_to_ticks, park, println, psci};

    const BLOCK: u64 = 2 << 20;
    const MARKER: u64 = 0x5052_4556_5255_4e21;

    #[repr(C, align(4096))]
    struct Area(UnsafeCell<[u8; 0x8000]>);
    // SAFETY: one vCPU; the device is the only other party.
    unsafe impl Sync for Area {}
    static AREA: Area = Area(UnsafeCell::new([0; 0x8000]));

    extern "C" {
        static __image_start: u8;
    }

    tessera_guests::entry!(run);

    fn run() -> ! {
        let base = (&raw const __image_start as u64) & !(BLOCK - 1);
        let (rx, tx) = (base + 5 * BLOCK, base + 6 * BLOCK);
        // SAFETY: AREA is this guest's own, used only by the driver.
        let Some(mut net) = (unsafe { Vnet::new(AREA.0.get() as u64) }) else {
            println!("FAIL scrub_net: device setup");
            park()
        };
        net.offer(0, rx, 2048);
        let deadline = counter() + ms_to_ticks(20_000);
        let got = loop {
            if let Some(u) = net.next_used(0) {
                break Some(u);
            }
            if counter() > deadline {
                break None;
            }
            core::hint::spin_loop();
        };
        match got {
            Some((_, len)) => {
                // SAFETY: the receive buffer, in this VM's RAM.
                let byte = |i: u64| unsafe { read_volatile((rx + HDR + 14 + i) as *const u8) };
                match (0..64).find(|&i| byte(i) != 0xa5 ^ i as u8) {
                    None => println!("PASS scrub_net_rx_into_fresh_block: {len} bytes, the peer's"),
                    Some(i) => println!("FAIL scrub_net_rx_into_fresh_block: byte {i} is {:#x}", byte(i)),
                }
            }
            None => println!("FAIL scrub_net_rx_into_fresh_block: no frame within 20 s"),
        }
        // The headers from the image (a broadcast from this VM's MAC), the
        // payload straight out of a block this boot never touched.
        let head = AREA.0.get() as u64 + 0x7000;
        for i in 0..HDR + 14 {
            let b = if (HDR..HDR + 6).contains(&i) { 0xff } else { 0 };
            // SAFETY: inside AREA, past the driver's queues.
            unsafe { write_volatile((head + i) as *mut u8, b) };
        }
        // SAFETY: as above.
        unsafe { write_volatile((head + HDR + 6) as *mut u8, 0x02) };
        net.offer_chain(1, &[(head, HDR as u32 + 14), (tx, 64)]);
        while net.next_used(1).is_none() {
            core::hint::spin_loop();
        }
        for a in [rx, tx] {
            for w in 0..512u64 {
                // SAFETY: both buffers' blocks are this VM's RAM.
                unsafe { write_volatile((a + w * 8) as *mut u64, MARKER) };
            }
        }
        println!("scrub_net_fresh: calling SYSTEM_RESET");
        let r = psci::system_reset();
        println!("FAIL scrub_net_fresh: SYSTEM_RESET returned {r}");
        park()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
