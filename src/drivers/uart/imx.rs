//! i.MX UART (`fsl,imx21-uart` and the compatible `fsl,imx6q-uart`,
//! `fsl,imx8mp-uart`; i.MX 8M Plus reference manual, chapter "UART").
//! Polled transmit, receive with the "receiver ready" interrupt.
//!
//! The baud rate (UBIR, UBMR and UFCR.RFDIV) is left as the firmware
//! programmed it: on a board U-Boot has set the console up, and Tessera does
//! not know the module clock. QEMU ignores the baud rate.

use super::Serial;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! [u32,
    URXD [
        CHARRDY OFFSET(15) NUMBITS(1) [],
        DATA OFFSET(0) NUMBITS(8) []
    ],
    UCR1 [
        TRDYEN OFFSET(13) NUMBITS(1) [],
        IDEN OFFSET(12) NUMBITS(1) [],
        RRDYEN OFFSET(9) NUMBITS(1) [],
        TXMPTYEN OFFSET(6) NUMBITS(1) [],
        RTSDEN OFFSET(5) NUMBITS(1) [],
        UARTEN OFFSET(0) NUMBITS(1) []
    ],
    UCR2 [
        IRTS OFFSET(14) NUMBITS(1) [],
        PREN OFFSET(8) NUMBITS(1) [],
        STPB OFFSET(6) NUMBITS(1) [],
        WS OFFSET(5) NUMBITS(1) [],
        ATEN OFFSET(3) NUMBITS(1) [],
        TXEN OFFSET(2) NUMBITS(1) [],
        RXEN OFFSET(1) NUMBITS(1) [],
        /// Software reset, active low: must be written as 1.
        SRST OFFSET(0) NUMBITS(1) []
    ],
    UCR3 [
        /// Must be set on i.MX 6 and later (RM: "RXD Muxed Input Selected").
        RXDMUXSEL OFFSET(2) NUMBITS(1) []
    ],
    UCR4 [
        TCEN OFFSET(3) NUMBITS(1) [],
        DREN OFFSET(0) NUMBITS(1) []
    ],
    UFCR [
        RXTL OFFSET(0) NUMBITS(6) []
    ],
    USR2 [
        RDR OFFSET(0) NUMBITS(1) []
    ],
    UTS [
        RXEMPTY OFFSET(5) NUMBITS(1) [],
        TXFULL OFFSET(4) NUMBITS(1) []
    ]
];

register_structs! {
    /// The i.MX UART register block.
    pub ImxRegs {
        (0x00 => urxd: ReadOnly<u32, URXD::Register>),
        (0x04 => _reserved0),
        (0x40 => utxd: WriteOnly<u32>),
        (0x44 => _reserved1),
        (0x80 => ucr1: ReadWrite<u32, UCR1::Register>),
        (0x84 => ucr2: ReadWrite<u32, UCR2::Register>),
        (0x88 => ucr3: ReadWrite<u32, UCR3::Register>),
        (0x8c => ucr4: ReadWrite<u32, UCR4::Register>),
        (0x90 => ufcr: ReadWrite<u32, UFCR::Register>),
        (0x94 => usr1: ReadWrite<u32>),
        (0x98 => usr2: ReadWrite<u32, USR2::Register>),
        (0x9c => _reserved2),
        (0xb4 => uts: ReadWrite<u32, UTS::Register>),
        (0xb8 => @END),
    }
}

/// An i.MX UART.
pub struct Imx {
    regs: *const ImxRegs,
}

impl Imx {
    /// # Safety
    /// `base` must be the address of an i.MX UART register block, mapped as
    /// device memory (or the MMU off), and not driven by anyone else
    /// concurrently.
    pub const unsafe fn new(base: usize) -> Self {
        Self {
            regs: base as *const ImxRegs,
        }
    }

    fn regs(&self) -> &ImxRegs {
        // SAFETY: `new`'s contract: a valid, mapped register block.
        unsafe { &*self.regs }
    }
}

impl Serial for Imx {
    /// UART, transmitter and receiver on, 8 data bits, one stop bit, no
    /// parity, every interrupt masked. No software reset: that would drop
    /// what the firmware still has in the transmit FIFO.
    fn init(&self) {
        let r = self.regs();
        r.ucr1.write(UCR1::UARTEN::SET);
        r.ucr2.modify(
            UCR2::SRST::SET
                + UCR2::RXEN::SET
                + UCR2::TXEN::SET
                + UCR2::WS::SET
                + UCR2::IRTS::SET
                + UCR2::STPB::CLEAR
                + UCR2::PREN::CLEAR
                + UCR2::ATEN::CLEAR,
        );
        r.ucr3.modify(UCR3::RXDMUXSEL::SET);
        r.ucr4.modify(UCR4::DREN::CLEAR + UCR4::TCEN::CLEAR);
    }

    /// "Receiver ready" interrupts while the RX FIFO holds at least one
    /// byte (RXTL = 1); it drops by itself once the FIFO is read empty.
    fn enable_rx_irq(&self) {
        let r = self.regs();
        r.ufcr.modify(UFCR::RXTL.val(1));
        r.ucr1.modify(UCR1::RRDYEN::SET);
    }

    fn putc(&self, b: u8) {
        let r = self.regs();
        if !super::tx_ready(|| !r.uts.is_set(UTS::TXFULL)) {
            return;
        }
        r.utxd.set(u32::from(b));
    }

    fn getc(&self) -> Option<u8> {
        let r = self.regs();
        if !r.usr2.is_set(USR2::RDR) {
            return None;
        }
        Some(r.urxd.read(URXD::DATA) as u8)
    }
}
