//! `uart_cadence`: owns a Cadence UART (`cdns,uart-r1p12`: the ZCU102's
//! second UART at `0xff01_0000`, SPI 22 = INTID 54) and runs the
//! [owned-UART guest](tessera_guests::owned_uart).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use tessera_guests::owned_uart::{run, OwnedUart};
    use tessera_guests::Mmio;

    const BASE: usize = 0xff01_0000;
    const INTID: u32 = 54;

    // Zynq UltraScale+ TRM (UG1085), UART registers.
    const CR: usize = 0x00;
    const MR: usize = 0x04;
    const IER: usize = 0x08;
    const IDR: usize = 0x0c;
    const ISR: usize = 0x14;
    const BAUDGEN: usize = 0x18;
    const SR: usize = 0x2c;
    const FIFO: usize = 0x30;
    const BAUDDIV: usize = 0x34;
    const CR_RXRES: u32 = 1 << 0;
    const CR_TXRES: u32 = 1 << 1;
    const CR_RXEN: u32 = 1 << 2;
    const CR_TXEN: u32 = 1 << 4;
    /// MR: 8 data bits, no parity, 1 stop bit.
    const MR_8N1: u32 = 0b100 << 3;
    /// SR / ISR / IER / IDR: transmit FIFO empty, transmit FIFO full.
    const TEMPTY: u32 = 1 << 3;
    const TFUL: u32 = 1 << 4;

    struct Cadence(Mmio);

    impl OwnedUart for Cadence {
        const NAME: &'static str = "Cadence";

        fn at(base: usize) -> Self {
            // SAFETY: the UART is a device this VM owns, at its physical address.
            Cadence(unsafe { Mmio::new(base) })
        }

        fn init(&self) {
            self.0.write32(IDR, 0x1fff);
            self.0.write32(ISR, 0x1fff);
            self.0.write32(CR, CR_TXRES | CR_RXRES);
            self.0.write32(MR, MR_8N1);
            // 115200 baud from the 100 MHz reference: 100e6 / (124 * (6 + 1)).
            self.0.write32(BAUDGEN, 124);
            self.0.write32(BAUDDIV, 6);
            self.0.write32(CR, CR_TXEN | CR_RXEN);
        }

        fn put(&self, byte: u8) {
            while self.0.read32(SR) & TFUL != 0 {
                core::hint::spin_loop();
            }
            self.0.write32(FIFO, u32::from(byte));
        }

        fn enable_tx_irq(&self) {
            self.0.write32(IER, TEMPTY);
        }

        fn take_tx_irq(&self) -> bool {
            let pending = self.0.read32(ISR) & TEMPTY != 0;
            self.0.write32(IDR, TEMPTY);
            self.0.write32(ISR, TEMPTY);
            pending
        }
    }

    tessera_guests::entry!(main);

    fn main() -> ! {
        run::<Cadence>(BASE, INTID)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
