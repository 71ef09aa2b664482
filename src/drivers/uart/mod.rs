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
    /// Sends one byte, waiting while the transmitter is full.
    fn putc(&self, b: u8);
    /// A received byte, if one is waiting.
    fn getc(&self) -> Option<u8>;
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

    /// Writes a string, turning `\n` into `\r\n`.
    pub fn write_str(&self, s: &str) {
        let u = self.serial();
        for b in s.bytes() {
            if b == b'\n' {
                u.putc(b'\r');
            }
            u.putc(b);
        }
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
