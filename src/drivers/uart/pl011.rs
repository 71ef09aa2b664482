//! Arm PrimeCell PL011 UART (DDI 0183): polled transmit, receive with the
//! RX and RX-timeout interrupts. The baud rate (IBRD/FBRD) is left as the
//! firmware set it.

use super::Serial;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! [u32,
    FR [
        TXFE OFFSET(7) NUMBITS(1) [],
        RXFF OFFSET(6) NUMBITS(1) [],
        TXFF OFFSET(5) NUMBITS(1) [],
        RXFE OFFSET(4) NUMBITS(1) [],
        BUSY OFFSET(3) NUMBITS(1) []
    ],
    LCR_H [
        WLEN OFFSET(5) NUMBITS(2) [Bits8 = 0b11],
        FEN OFFSET(4) NUMBITS(1) []
    ],
    CR [
        RXE OFFSET(9) NUMBITS(1) [],
        TXE OFFSET(8) NUMBITS(1) [],
        UARTEN OFFSET(0) NUMBITS(1) []
    ]
];

register_structs! {
    /// The PL011 register block.
    pub Pl011Regs {
        (0x00 => dr: ReadWrite<u32>),
        (0x04 => rsr: ReadWrite<u32>),
        (0x08 => _reserved0),
        (0x18 => fr: ReadOnly<u32, FR::Register>),
        (0x1c => _reserved1),
        (0x2c => lcr_h: ReadWrite<u32, LCR_H::Register>),
        (0x30 => cr: ReadWrite<u32, CR::Register>),
        (0x34 => ifls: ReadWrite<u32>),
        (0x38 => imsc: ReadWrite<u32>),
        (0x3c => _reserved2),
        (0x44 => icr: WriteOnly<u32>),
        (0x48 => @END),
    }
}

/// A PL011.
pub struct Pl011 {
    regs: *const Pl011Regs,
}

impl Pl011 {
    /// # Safety
    /// `base` must be the address of a PL011 register block, mapped as device
    /// memory (or the MMU off), and not driven by anyone else concurrently.
    pub const unsafe fn new(base: usize) -> Self {
        Self {
            regs: base as *const Pl011Regs,
        }
    }

    fn regs(&self) -> &Pl011Regs {
        // SAFETY: `new`'s contract: a valid, mapped register block.
        unsafe { &*self.regs }
    }
}

impl Serial for Pl011 {
    /// Enables transmit and receive with 8-bit words and FIFOs, masks all
    /// interrupts. The baud rate set by the firmware is kept.
    fn init(&self) {
        let r = self.regs();
        r.imsc.set(0);
        r.icr.set(0x7ff);
        r.lcr_h.write(LCR_H::WLEN::Bits8 + LCR_H::FEN::SET);
        r.cr.write(CR::UARTEN::SET + CR::TXE::SET + CR::RXE::SET);
    }

    /// Raises its interrupt while received data waits (RX and RX timeout).
    fn enable_rx_irq(&self) {
        let r = self.regs();
        r.icr.set(0x7ff);
        r.imsc.set((1 << 4) | (1 << 6));
    }

    /// Sends one byte, waiting while the transmit FIFO is full.
    fn putc(&self, b: u8) {
        let r = self.regs();
        if !super::tx_ready(|| !r.fr.is_set(FR::TXFF)) {
            return;
        }
        r.dr.set(u32::from(b));
    }

    /// A received byte, if one is waiting.
    fn getc(&self) -> Option<u8> {
        let r = self.regs();
        if r.fr.is_set(FR::RXFE) {
            None
        } else {
            Some(r.dr.get() as u8)
        }
    }
}
