//! `uart_pl011`: owns a PL011 (Versal's second UART at `0xff01_0000`, SPI 19
//! = INTID 51) and runs the [owned-UART guest](tessera_guests::owned_uart).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use tessera_guests::owned_pl011::Pl011;
    use tessera_guests::owned_uart::run;

    const BASE: usize = 0xff01_0000;
    const INTID: u32 = 51;

    tessera_guests::entry!(main);

    fn main() -> ! {
        run::<Pl011>(BASE, INTID)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
