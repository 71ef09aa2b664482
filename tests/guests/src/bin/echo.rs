//! `echo`: reads lines from its console and prints them back, so a scenario
//! can see which VM the typed input reached.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use tessera_guests::{println, Mmio};

    const UART: usize = 0x0900_0000;
    const DR: usize = 0x00;
    const FR: usize = 0x18;
    const FR_RXFE: u32 = 1 << 4;

    tessera_guests::entry!(run);

    fn run() -> ! {
        // SAFETY: the VM's virtual PL011; only this vCPU reads it.
        let uart = unsafe { Mmio::new(UART) };
        println!("echo: ready");
        let mut line = [0u8; 80];
        let mut len = 0;
        loop {
            if uart.read32(FR) & FR_RXFE != 0 {
                core::hint::spin_loop();
                continue;
            }
            let b = uart.read32(DR) as u8;
            if b == b'\r' || b == b'\n' {
                let text = core::str::from_utf8(&line[..len]).unwrap_or("<not utf-8>");
                println!("echo: {text}");
                len = 0;
            } else if len < line.len() {
                line[len] = b;
                len += 1;
            }
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
