//! The board UARTs the hypervisor's console can drive: one [`Serial`] trait,
//! one driver per UART family, and [`Uart`], the enum the console, the early
//! complaint path and the panic path all hold. Which family a device tree
//! node is comes from its `compatible` ([`Kind::of_compatible`]).

pub mod bcm_aux;
pub mod cadence;
pub mod imx;
pub mod pl011;

use bcm_aux::BcmAux;
use cadence::Cadence;
use core::sync::atomic::{AtomicBool, Ordering};
use imx::Imx;
use pl011::Pl011;

/// What every console UART driver does. Drivers leave the baud rate as the
/// firmware (U-Boot, or nothing on QEMU, which ignores it) set it up.
pub trait Serial {
    /// Transmit and receive on, 8N1, every interrupt masked.
    fn init(&self);
    /// Raise the UART's interrupt while received bytes wait. [`Serial::getc`]
    /// returning `None` leaves it quiet until the next byte arrives.
    fn enable_rx_irq(&self);
    /// Sends one byte, waiting while the transmitter is full, at most
    /// [`TX_SPINS`] polls ([`TX`]): a wedged UART drops the byte instead
    /// of hanging the hypervisor under the console lock.
    fn putc(&self, b: u8);
    /// A received byte, if one is waiting.
    fn getc(&self) -> Option<u8>;
}

/// Polls of a full transmitter before a byte is dropped: far beyond a
/// byte time at any baud rate (~87 us at 115200).
pub const TX_SPINS: u32 = 1 << 20;

/// A bounded wait for room in a transmitter. After one timeout the UART is
/// taken as wedged (a VM switched its clock off, say): later bytes get a
/// single poll each until it takes one again, so printing through a dead
/// UART costs almost nothing.
pub struct TxWait {
    /// True until a wait times out (true, not false, as the resting state:
    /// the static lands in .data, valid even before .bss is cleared).
    healthy: AtomicBool,
}

impl TxWait {
    pub const fn new() -> Self {
        Self {
            healthy: AtomicBool::new(true),
        }
    }

    /// Whether `ready` became true (send the byte) or the wait gave up
    /// (drop it); returns the polls it took too.
    pub fn wait(&self, ready: impl Fn() -> bool) -> (bool, u32) {
        let spins = if self.healthy.load(Ordering::Relaxed) {
            TX_SPINS
        } else {
            1
        };
        for i in 0..spins {
            if ready() {
                self.healthy.store(true, Ordering::Relaxed);
                return (true, i + 1);
            }
            core::hint::spin_loop();
        }
        self.healthy.store(false, Ordering::Relaxed);
        (false, spins)
    }
}

impl Default for TxWait {
    fn default() -> Self {
        Self::new()
    }
}

/// The console's transmit wait (there is one console UART).
pub static TX: TxWait = TxWait::new();

/// [`TX`]'s wait: whether to send the byte.
pub fn tx_ready(ready: impl Fn() -> bool) -> bool {
    TX.wait(ready).0
}

/// A UART family, as named by device tree compatibles.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Pl011,
    Cadence,
    Imx,
    BcmAux,
}

/// Compatibles of each family, most specific first.
const COMPATIBLES: &[(&str, Kind)] = &[
    ("arm,pl011", Kind::Pl011),
    ("cdns,uart-r1p12", Kind::Cadence),
    ("cdns,uart-r1p8", Kind::Cadence),
    ("xlnx,xuartps", Kind::Cadence),
    ("fsl,imx8mp-uart", Kind::Imx),
    ("fsl,imx6q-uart", Kind::Imx),
    ("fsl,imx21-uart", Kind::Imx),
    ("brcm,bcm2835-aux-uart", Kind::BcmAux),
];

impl Kind {
    /// The family a compatible string names, if Tessera drives it.
    pub fn of_compatible(compatible: &str) -> Option<Kind> {
        COMPATIBLES
            .iter()
            .find(|(c, _)| *c == compatible)
            .map(|(_, k)| *k)
    }

    /// Human name for the banner.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pl011 => "PL011",
            Kind::Cadence => "Cadence UART",
            Kind::Imx => "i.MX UART",
            Kind::BcmAux => "BCM2835 mini UART",
        }
    }
}

/// A console UART of any supported family.
pub enum Uart {
    Pl011(Pl011),
    Cadence(Cadence),
    Imx(Imx),
    BcmAux(BcmAux),
}

// SAFETY: a `Uart` is a pointer to MMIO that the holder owns; the console
// serialises access with its lock, and the early/emergency paths run when
// no one else prints (see `console`).
unsafe impl Send for Uart {}

impl Uart {
    /// # Safety
    /// `base` must be the address of a `kind` register block, mapped as
    /// device memory (or the MMU off), and not driven concurrently by
    /// anyone else.
    pub const unsafe fn new(kind: Kind, base: usize) -> Self {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            match kind {
                Kind::Pl011 => Uart::Pl011(Pl011::new(base)),
                Kind::Cadence => Uart::Cadence(Cadence::new(base)),
                Kind::Imx => Uart::Imx(Imx::new(base)),
                Kind::BcmAux => Uart::BcmAux(BcmAux::new(base)),
            }
        }
    }

    fn serial(&self) -> &dyn Serial {
        match self {
            Uart::Pl011(u) => u,
            Uart::Cadence(u) => u,
            Uart::Imx(u) => u,
            Uart::BcmAux(u) => u,
        }
    }

    pub fn init(&self) {
        self.serial().init()
    }

    pub fn enable_rx_irq(&self) {
        self.serial().enable_rx_irq()
    }

    pub fn getc(&self) -> Option<u8> {
        self.serial().getc()
    }

    /// Writes a string, turning `\n` into `\r\n`. One match per string,
    /// not a dynamic call per byte: each family's `putc` is inlined into
    /// its own loop.
    pub fn write_str(&self, s: &str) {
        match self {
            Uart::Pl011(u) => put_str(u, s),
            Uart::Cadence(u) => put_str(u, s),
            Uart::Imx(u) => put_str(u, s),
            Uart::BcmAux(u) => put_str(u, s),
        }
    }
}

/// [`Uart::write_str`] for one family.
#[inline(always)]
fn put_str(u: &impl Serial, s: &str) {
    for b in s.bytes() {
        if b == b'\n' {
            u.putc(b'\r');
        }
        u.putc(b);
    }
}

impl core::fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        Uart::write_str(self, s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wedged_transmitter_drops_bytes_and_costs_one_poll_each_after() {
        use core::cell::Cell;
        let t = TxWait::new();
        let polls = Cell::new(0u32);
        let never = || {
            polls.set(polls.get() + 1);
            false
        };
        assert_eq!(t.wait(never), (false, TX_SPINS), "bounded, not forever");
        assert_eq!(polls.get(), TX_SPINS);
        assert_eq!(t.wait(never), (false, 1), "wedged: one poll");
        // It comes back: the next byte goes out and the full wait returns.
        assert_eq!(t.wait(|| true), (true, 1));
        let third = Cell::new(0);
        let soon = || {
            third.set(third.get() + 1);
            third.get() == 3
        };
        assert_eq!(t.wait(soon), (true, 3));
    }

    #[test]
    fn compatibles_name_their_family() {
        assert_eq!(Kind::of_compatible("arm,pl011"), Some(Kind::Pl011));
        assert_eq!(Kind::of_compatible("cdns,uart-r1p12"), Some(Kind::Cadence));
        assert_eq!(Kind::of_compatible("xlnx,xuartps"), Some(Kind::Cadence));
        assert_eq!(Kind::of_compatible("fsl,imx8mp-uart"), Some(Kind::Imx));
        assert_eq!(Kind::of_compatible("fsl,imx21-uart"), Some(Kind::Imx));
        assert_eq!(Kind::of_compatible("brcm,bcm2835-aux-uart"), Some(Kind::BcmAux));
        assert_eq!(
            Kind::of_compatible("brcm,bcm2835-aux"),
            None,
            "the aux block itself"
        );
        assert_eq!(Kind::of_compatible("xlnx,zynqmp-uart"), None);
        assert_eq!(Kind::of_compatible("ns16550a"), None);
    }
}
