//! Polled PL011 transmitter at the guest's console address: only the data
//! register and the flag register's TXFF bit are used, which is all a
//! virtual UART must provide.

use core::fmt;
use core::ptr::{read_volatile, write_volatile};

/// Guest-physical address of the console PL011 (as on QEMU `virt`).
const BASE: usize = 0x0900_0000;
/// UARTDR: write a byte to send it.
const DR: usize = 0x00;
/// UARTFR: flags.
const FR: usize = 0x18;
/// UARTFR.TXFF: transmit FIFO full.
const FR_TXFF: u32 = 1 << 5;

/// The console UART (a unit type: there is only one).
pub struct Uart;

impl Uart {
    /// Sends one byte, waiting while the FIFO is full.
    pub fn put(&mut self, byte: u8) {
        // SAFETY: BASE is the console PL011, identity mapped as device memory;
        // FR and DR are 32-bit registers, and nothing else in the guest
        // aliases them as Rust memory.
        unsafe {
            while read_volatile((BASE + FR) as *const u32) & FR_TXFF != 0 {
                core::hint::spin_loop();
            }
            write_volatile((BASE + DR) as *mut u32, u32::from(byte));
        }
    }
}

impl fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|b| self.put(b));
        Ok(())
    }
}
