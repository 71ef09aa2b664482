//! Cadence UART (`cdns,uart-r1p12`, `xlnx,xuartps`): the ZynqMP and Zynq-7000
//! UART (Xilinx UG1085 ch. 21, register reference `UART`). Polled transmit,
//! receive with the RX FIFO trigger interrupt.
//!
//! The baud rate generator (BAUDGEN, BAUDDIV and MR.CLKSEL) is left as the
//! firmware programmed it: on a board U-Boot has set the console up, and
//! Tessera does not know the reference clock to compute a divisor from.
//! QEMU ignores the baud rate.

use super::Serial;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! [u32,
    CR [
        TXDIS OFFSET(5) NUMBITS(1) [],
        TXEN OFFSET(4) NUMBITS(1) [],
        RXDIS OFFSET(3) NUMBITS(1) [],
        RXEN OFFSET(2) NUMBITS(1) []
    ],
    MR [
        CHMODE OFFSET(8) NUMBITS(2) [Normal = 0],
        NBSTOP OFFSET(6) NUMBITS(2) [One = 0],
        PAR OFFSET(3) NUMBITS(3) [None = 0b100],
        CHRL OFFSET(1) NUMBITS(2) [Bits8 = 0]
    ],
    /// IER, IDR, IMR and ISR share one layout.
    INT [
        TIMEOUT OFFSET(8) NUMBITS(1) [],
        ROVR OFFSET(5) NUMBITS(1) [],
        RTRIG OFFSET(0) NUMBITS(1) []
    ],
    SR [
        TXFULL OFFSET(4) NUMBITS(1) [],
        RXEMPTY OFFSET(1) NUMBITS(1) []
    ]
];

register_structs! {
    /// The Cadence UART register block.
    pub CadenceRegs {
        (0x00 => cr: ReadWrite<u32, CR::Register>),
        (0x04 => mr: ReadWrite<u32, MR::Register>),
        (0x08 => ier: WriteOnly<u32, INT::Register>),
        (0x0c => idr: WriteOnly<u32, INT::Register>),
        (0x10 => imr: ReadOnly<u32, INT::Register>),
        (0x14 => isr: ReadWrite<u32, INT::Register>),
        (0x18 => baudgen: ReadWrite<u32>),
        (0x1c => rxtout: ReadWrite<u32>),
        (0x20 => rxwm: ReadWrite<u32>),
        (0x24 => _reserved0),
        (0x2c => sr: ReadOnly<u32, SR::Register>),
        (0x30 => fifo: ReadWrite<u32>),
        (0x34 => @END),
    }
}

/// A Cadence UART.
pub struct Cadence {
    regs: *const CadenceRegs,
}

impl Cadence {
    /// # Safety
    /// `base` must be the address of a Cadence UART register block, mapped
    /// as device memory (or the MMU off), and not driven by anyone else
    /// concurrently.
    pub const unsafe fn new(base: usize) -> Self {
        Self {
            regs: base as *const CadenceRegs,
        }
    }

    fn regs(&self) -> &CadenceRegs {
        // SAFETY: `new`'s contract: a valid, mapped register block.
        unsafe { &*self.regs }
    }

    fn rx_empty(&self) -> bool {
        self.regs().sr.is_set(SR::RXEMPTY)
    }
}

impl Serial for Cadence {
    /// Transmitter and receiver on, 8N1 in normal mode, every interrupt
    /// masked. The FIFOs are not reset, so what the firmware queued still
    /// goes out.
    fn init(&self) {
        let r = self.regs();
        r.idr.set(!0);
        r.isr.set(!0);
        r.mr.modify(MR::CHMODE::Normal + MR::NBSTOP::One + MR::PAR::None + MR::CHRL::Bits8);
        r.cr.write(CR::TXEN::SET + CR::RXEN::SET);
    }

    /// Interrupts as soon as one byte waits (RX trigger level 1).
    fn enable_rx_irq(&self) {
        let r = self.regs();
        r.rxwm.set(1);
        r.isr.set(!0);
        r.ier.write(INT::RTRIG::SET + INT::ROVR::SET);
    }

    fn putc(&self, b: u8) {
        let r = self.regs();
        if !super::tx_ready(|| !r.sr.is_set(SR::TXFULL)) {
            return;
        }
        r.fifo.set(u32::from(b));
    }

    /// ISR is sticky (write 1 to clear): once the FIFO is seen empty the RX
    /// bits are cleared, then the FIFO is looked at again, so a byte that
    /// arrived in between is either returned now or raises a new interrupt.
    fn getc(&self) -> Option<u8> {
        let r = self.regs();
        if self.rx_empty() {
            r.isr.write(INT::RTRIG::SET + INT::ROVR::SET + INT::TIMEOUT::SET);
            if self.rx_empty() {
                return None;
            }
        }
        Some(r.fifo.get() as u8)
    }
}
