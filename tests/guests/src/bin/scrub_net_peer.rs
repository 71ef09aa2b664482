//! `scrub_net_peer`: the other end of `scrub_net_fresh`'s link. Sends a
//! broadcast frame with a known payload every 20 ms and checks every frame
//! it receives: the fresh VM's come from RAM it never touched, so their
//! payload bytes must all be zero.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::cell::UnsafeCell;
    use core::ptr::{read_volatile, write_volatile};
    use tessera_guests::vnet::{Vnet, HDR};
    use tessera_guests::{counter, ms_to_ticks, park, println};

    const FRAME: u32 = HDR as u32 + 14 + 64;
    const WANT: u32 = 3;

    /// Queues (0..0x8000), eight receive buffers and one to send (from 0x8000).
    #[repr(C, align(4096))]
    struct Area(UnsafeCell<[u8; 0x10000]>);
    // SAFETY: one vCPU; the device is the only other party.
    unsafe impl Sync for Area {}
    static AREA: Area = Area(UnsafeCell::new([0; 0x10000]));

    tessera_guests::entry!(run);

    fn run() -> ! {
        let area = AREA.0.get() as u64;
        // SAFETY: AREA is this guest's own, used only here and by the driver.
        let Some(mut net) = (unsafe { Vnet::new(area) }) else {
            println!("FAIL scrub_net: device setup");
            park()
        };
        let buf = |i: u64| area + 0x8000 + i * 0x800;
        for i in 0..8 {
            net.offer(0, buf(i), 0x800);
        }
        let out = buf(15);
        for i in 0..FRAME as u64 {
            let b = match i {
                12..=17 => 0xff,
                // A source MAC of its own (locally administered).
                18 => 0x02,
                23 => 0x99,
                _ if i >= HDR + 14 => 0xa5 ^ (i - HDR - 14) as u8,
                _ => 0,
            };
            // SAFETY: inside AREA.
            unsafe { write_volatile((out + i) as *mut u8, b) };
        }
        let (mut zero_frames, mut next) = (0u32, counter());
        loop {
            if counter() >= next {
                net.offer(1, out, FRAME);
                while net.next_used(1).is_none() {
                    core::hint::spin_loop();
                }
                next = counter() + ms_to_ticks(20);
            }
            while let Some((addr, len)) = net.next_used(0) {
                // SAFETY: a receive buffer inside AREA.
                let byte = |i: u64| unsafe { read_volatile((addr + i) as *const u8) };
                match (HDR + 14..u64::from(len)).find(|&i| byte(i) != 0) {
                    None => {
                        zero_frames += 1;
                        if zero_frames == WANT {
                            println!("PASS scrub_net_tx_from_fresh_block_is_zero: {WANT} frames");
                        }
                    }
                    Some(i) => println!(
                        "FAIL scrub_net_tx_from_fresh_block_is_zero: {len}-byte frame, byte {i} is {:#x}",
                        byte(i)
                    ),
                }
                net.offer(0, addr, 0x800);
            }
            if net.status() & 0x40 != 0 {
                println!("FAIL scrub_net_peer: device needs reset");
                park()
            }
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
