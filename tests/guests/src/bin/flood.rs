//! `flood`: a hostile console neighbour. Prints long lines as fast as the
//! virtual UART takes them, forever, and mixes in terminal control
//! sequences that, sent raw, would forge a `[bystander]` line and a
//! hypervisor "VM bystander stopped" log line, erase lines, retitle the
//! terminal, and use 8-bit (raw and UTF-8 encoded) C1 CSI. Writes the data
//! register directly, without the guest console's formatting, so it can send
//! any byte.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use tessera_guests::Mmio;

    const UART: usize = 0x0900_0000;
    const DR: usize = 0x00;
    /// Bytes of filler per flood line (the virtual UART keeps 240).
    const FILL: usize = 200;

    /// Control sequences sent every [`FORGE_EVERY`] lines, one after the other.
    const FORGED: [&[u8]; 6] = [
        b"\x1b[2K\x1b[1G[bystander] conlat: FORGED line\n",
        b"\x08\x08\x08\x08\x08\x08\x08\x08[    0.500000] VM bystander stopped: PSCI SYSTEM_OFF (forged)\n",
        b"junk\r[bystander] conlat: FORGED after a bare CR\n",
        b"\x1b]0;owned by flood\x07\x1b[1A\x1b[2K title and cursor-up\n",
        b"\x9b2K raw 8-bit CSI\n",
        "\u{9b}2K UTF-8 encoded CSI\n".as_bytes(),
    ];
    const FORGE_EVERY: u64 = 64;

    tessera_guests::entry!(run);

    fn send(uart: &Mmio, bytes: &[u8]) {
        for &b in bytes {
            uart.write32(DR, u32::from(b));
        }
    }

    /// `n` in decimal, without formatting machinery.
    fn send_number(uart: &Mmio, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        send(uart, &digits[i..]);
    }

    fn run() -> ! {
        // SAFETY: the VM's virtual PL011; only this (single) vCPU writes it.
        let uart = unsafe { Mmio::new(UART) };
        send(&uart, b"flood: start\n");
        let mut filler = [0u8; FILL];
        for (i, b) in filler.iter_mut().enumerate() {
            *b = b'a' + (i % 26) as u8;
        }
        for n in 0u64.. {
            if n % FORGE_EVERY == 0 {
                for f in FORGED {
                    send(&uart, f);
                }
            }
            send(&uart, b"flood: ");
            send_number(&uart, n);
            send(&uart, b" ");
            send(&uart, &filler);
            send(&uart, b"\n");
        }
        unreachable!()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
