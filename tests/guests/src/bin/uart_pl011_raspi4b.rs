//! `uart_pl011_raspi4b`: owns the Raspberry Pi 4's PL011 `uart0`
//! (`/soc/serial@7e201000`, CPU address `0xfe20_1000`, SPI 121 = INTID 153)
//! and runs the [owned-UART guest](tessera_guests::owned_uart).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use tessera_guests::owned_pl011::Pl011;
    use tessera_guests::owned_uart::run;

    const BASE: usize = 0xfe20_1000;
    const INTID: u32 = 153;

    tessera_guests::entry!(main);

    fn main() -> ! {
        run::<Pl011>(BASE, INTID)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
