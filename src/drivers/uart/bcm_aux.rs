//! The BCM2835/BCM2711 auxiliary "mini UART" (`brcm,bcm2835-aux-uart`;
//! BCM2835 ARM Peripherals, ch. 2.2): an 8250-like UART with 32-bit
//! registers, the Raspberry Pi's default console. Polled transmit, receive
//! with the RX interrupt.
//!
//! The UART's eleven registers sit 0x40 into the aux block, whose own first
//! two registers are AUX_IRQ and AUX_ENABLES (bit 0: the mini UART's clock
//! and registers on). The device tree's `reg` names the UART part; the
//! enable register is reached at a fixed offset below it.
//!
//! The baud rate (AUX_MU_BAUD, derived from the VPU core clock) is left as
//! the firmware set it: the Raspberry Pi firmware programs it for
//! `enable_uart=1`; QEMU ignores it.

use super::Serial;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! [u32,
    /// AUX_ENABLES.
    ENABLES [
        MINI_UART OFFSET(0) NUMBITS(1) []
    ],
    /// AUX_MU_IIR: bit 0 clear while an interrupt is pending (8250 style).
    IIR [
        NOT_PENDING OFFSET(0) NUMBITS(1) []
    ],
    /// AUX_MU_LCR.
    LCR [
        DATA OFFSET(0) NUMBITS(2) [Bits8 = 0b11],
        DLAB OFFSET(7) NUMBITS(1) []
    ],
    /// AUX_MU_LSR.
    LSR [
        TX_EMPTY OFFSET(5) NUMBITS(1) [],
        DATA_READY OFFSET(0) NUMBITS(1) []
    ],
    /// AUX_MU_CNTL.
    CNTL [
        TX_EN OFFSET(1) NUMBITS(1) [],
        RX_EN OFFSET(0) NUMBITS(1) []
    ]
];

register_structs! {
    /// The mini UART's registers (from the aux block's offset 0x40).
    pub MiniUartRegs {
        (0x00 => io: ReadWrite<u32>),
        (0x04 => ier: ReadWrite<u32>),
        (0x08 => iir: ReadWrite<u32, IIR::Register>),
        (0x0c => lcr: ReadWrite<u32, LCR::Register>),
        (0x10 => mcr: ReadWrite<u32>),
        (0x14 => lsr: ReadOnly<u32, LSR::Register>),
        (0x18 => msr: ReadOnly<u32>),
        (0x1c => scratch: ReadWrite<u32>),
        (0x20 => cntl: ReadWrite<u32, CNTL::Register>),
        (0x24 => stat: ReadOnly<u32>),
        (0x28 => baud: ReadWrite<u32>),
        (0x2c => @END),
    }
}

/// AUX_ENABLES, relative to the mini UART's registers.
const AUX_ENABLES_OFFSET: usize = 0x40 - 0x04;

/// AUX_MU_IER with only the receive interrupt enabled: bit 0, as in an
/// 8250 (the datasheet swaps bits 0 and 1; its errata corrects that, and
/// says bits 3:2 must be set too for the interrupt to reach the core).
/// QEMU's model (hw/char/bcm2835_aux.c) takes bit 0 as receive as well and
/// ignores bits 3:2. Bit 1, the transmit interrupt, stays clear: it would
/// hold the line up whenever the transmitter has room.
pub const IER_RX: u32 = 0b1101;

/// A mini UART.
pub struct BcmAux {
    regs: *const MiniUartRegs,
    enables: *const ReadWrite<u32, ENABLES::Register>,
}

impl BcmAux {
    /// # Safety
    /// `base` must be the address of a mini UART's registers inside a
    /// BCM2835-style aux block, that block (from `base - 0x40`) mapped as
    /// device memory (or the MMU off), and not driven by anyone else
    /// concurrently.
    pub const unsafe fn new(base: usize) -> Self {
        Self {
            regs: base as *const MiniUartRegs,
            enables: base.wrapping_sub(AUX_ENABLES_OFFSET) as *const _,
        }
    }

    fn regs(&self) -> &MiniUartRegs {
        // SAFETY: `new`'s contract: a valid, mapped register block.
        unsafe { &*self.regs }
    }

    fn enables(&self) -> &ReadWrite<u32, ENABLES::Register> {
        // SAFETY: `new`'s contract: the aux block around the UART is mapped.
        unsafe { &*self.enables }
    }
}

impl Serial for BcmAux {
    /// The UART on in the aux block (the SPI masters' enables kept),
    /// 8-bit words, transmit and receive on, interrupts masked.
    fn init(&self) {
        self.enables().modify(ENABLES::MINI_UART::SET);
        let r = self.regs();
        r.ier.set(0);
        r.lcr.write(LCR::DATA::Bits8);
        r.cntl.write(CNTL::TX_EN::SET + CNTL::RX_EN::SET);
    }

    /// Raises its interrupt while received data waits.
    fn enable_rx_irq(&self) {
        self.regs().ier.set(IER_RX);
    }

    /// Sends one byte, waiting while the transmit FIFO is full.
    fn putc(&self, b: u8) {
        let r = self.regs();
        while !r.lsr.is_set(LSR::TX_EMPTY) {
            core::hint::spin_loop();
        }
        r.io.set(u32::from(b));
    }

    /// A received byte, if one is waiting.
    fn getc(&self) -> Option<u8> {
        let r = self.regs();
        if r.lsr.is_set(LSR::DATA_READY) {
            Some(r.io.get() as u8)
        } else {
            None
        }
    }
}
