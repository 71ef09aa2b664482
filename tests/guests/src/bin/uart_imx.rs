//! `uart_imx`: owns an i.MX UART (`fsl,imx6q-uart`: the i.MX 8M Plus EVK's
//! UART1 at `0x3086_0000`, SPI 26 = INTID 58) and runs the
//! [owned-UART guest](tessera_guests::owned_uart).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use tessera_guests::owned_uart::{run, OwnedUart};
    use tessera_guests::Mmio;

    const BASE: usize = 0x3086_0000;
    const INTID: u32 = 58;

    // i.MX 8M Plus reference manual, UART chapter.
    const UTXD: usize = 0x40;
    const UCR1: usize = 0x80;
    const UCR2: usize = 0x84;
    const UCR3: usize = 0x88;
    const UCR4: usize = 0x8c;
    const USR1: usize = 0x94;
    const UTS: usize = 0xb4;
    const UCR1_UARTEN: u32 = 1 << 0;
    /// UCR1.TRDYEN / USR1.TRDY: the transmit FIFO is below its threshold.
    const TRDY: u32 = 1 << 13;
    /// UCR2: not in software reset, receiver and transmitter on, 8 bits, ignore RTS.
    const UCR2_ON: u32 = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 5) | (1 << 14);
    /// UCR3.RXDMUXSEL, which the manual says must be set.
    const UCR3_RXDMUXSEL: u32 = 1 << 2;
    const UTS_TXFULL: u32 = 1 << 4;

    struct Imx(Mmio);

    impl OwnedUart for Imx {
        const NAME: &'static str = "i.MX";

        fn at(base: usize) -> Self {
            // SAFETY: the UART is a device this VM owns, at its physical address.
            Imx(unsafe { Mmio::new(base) })
        }

        fn init(&self) {
            self.0.write32(UCR1, UCR1_UARTEN);
            self.0.write32(UCR2, UCR2_ON);
            self.0.write32(UCR3, UCR3_RXDMUXSEL);
            self.0.write32(UCR4, 0);
        }

        fn put(&self, byte: u8) {
            while self.0.read32(UTS) & UTS_TXFULL != 0 {
                core::hint::spin_loop();
            }
            self.0.write32(UTXD, u32::from(byte));
        }

        fn enable_tx_irq(&self) {
            self.0.write32(UCR1, UCR1_UARTEN | TRDY);
        }

        fn take_tx_irq(&self) -> bool {
            let pending = self.0.read32(UCR1) & self.0.read32(USR1) & TRDY != 0;
            self.0.write32(UCR1, UCR1_UARTEN);
            pending
        }
    }

    tessera_guests::entry!(main);

    fn main() -> ! {
        run::<Imx>(BASE, INTID)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
