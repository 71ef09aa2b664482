//! The [owned-UART guest](crate::owned_uart)'s PL011 driver, shared by the
//! binaries that own one (each only says where it is).

use crate::owned_uart::OwnedUart;
use crate::Mmio;

// Arm PrimeCell UART (PL011) TRM.
const DR: usize = 0x00;
const FR: usize = 0x18;
const LCR_H: usize = 0x2c;
const CR: usize = 0x30;
const IMSC: usize = 0x38;
const MIS: usize = 0x40;
const ICR: usize = 0x44;
const FR_TXFF: u32 = 1 << 5;
/// LCR_H: 8 bits, FIFOs on.
const LCR_H_8_FIFO: u32 = (0b11 << 5) | (1 << 4);
/// CR: UART, transmitter and receiver enabled.
const CR_ON: u32 = (1 << 0) | (1 << 8) | (1 << 9);
/// IMSC / MIS / ICR: transmit interrupt.
const TX: u32 = 1 << 5;

/// A PL011 the guest owns.
pub struct Pl011(Mmio);

impl OwnedUart for Pl011 {
    const NAME: &'static str = "PL011";

    fn at(base: usize) -> Self {
        // SAFETY: the UART is a device this VM owns, at its physical address.
        Pl011(unsafe { Mmio::new(base) })
    }

    fn init(&self) {
        self.0.write32(CR, 0);
        self.0.write32(IMSC, 0);
        self.0.write32(ICR, 0x7ff);
        self.0.write32(LCR_H, LCR_H_8_FIFO);
        self.0.write32(CR, CR_ON);
    }

    fn put(&self, byte: u8) {
        while self.0.read32(FR) & FR_TXFF != 0 {
            core::hint::spin_loop();
        }
        self.0.write32(DR, u32::from(byte));
    }

    fn enable_tx_irq(&self) {
        self.0.write32(IMSC, TX);
    }

    fn take_tx_irq(&self) -> bool {
        let pending = self.0.read32(MIS) & TX != 0;
        self.0.write32(IMSC, 0);
        self.0.write32(ICR, TX);
        pending
    }
}
