//! `devabort`: owns QEMU virt's fw_cfg (`/fw-cfg@9020000`, `reg` 0x18
//! bytes), whose page Tessera traps through the sub-page filter because the
//! rest of it is a gap. Inside that window QEMU answers some accesses with an
//! external abort: the selector register (`+0x08`) only takes 16-bit
//! writes, and `+0x0c..0x10` is unassigned. The hypervisor forwards those
//! accesses to the hardware from EL2, the hardware aborts, and the guest
//! must get a synchronous external abort (EC 0x25, DFSC 0x10), not a
//! stopped CPU. Around the aborts fw_cfg keeps working: the signature
//! `QEMU` reads through the data register before and after, so the vCPU
//! and the device are alive.
//!
//! Bare in QEMU the same checks pass (the aborts are the device's); under a
//! hypervisor that parks the CPU on an EL2 external abort the RESULT line
//! never comes.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::fmt::Display;
    use tessera_guests::{
        current_el, expect_fault, mpidr, park, println, try_access, Checker, Mmio, EC_DABT_CURRENT,
    };

    // SAFETY: QEMU's fw_cfg registers: device memory, no Rust object.
    const FW_CFG: Mmio = unsafe { Mmio::new(0x0902_0000) };
    const DATA: usize = 0x00;
    const SELECTOR: usize = 0x08;
    const HOLE: usize = 0x0c;
    /// FW_CFG_SIGNATURE: "QEMU".
    const KEY_SIGNATURE: u16 = 0x0000;
    const ROUNDS: usize = 100;

    tessera_guests::entry!(run);

    fn run() -> ! {
        println!("devabort: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        let mut c = Checker::new("devabort");
        signature(&mut c, "devabort_signature_before");
        aborts(&mut c, "devabort_selector_read16_aborts", SELECTOR, || {
            FW_CFG.read16(SELECTOR);
        });
        aborts(&mut c, "devabort_selector_write32_aborts", SELECTOR, || {
            FW_CFG.write32(SELECTOR, 0);
        });
        aborts(&mut c, "devabort_hole_read32_aborts", HOLE, || {
            FW_CFG.read32(HOLE);
        });
        aborts(&mut c, "devabort_hole_read8_aborts", HOLE + 3, || {
            FW_CFG.read8(HOLE + 3);
        });
        aborts(&mut c, "devabort_hole_write32_aborts", HOLE, || {
            FW_CFG.write32(HOLE, 0x1234_5678);
        });
        let mut ok = 0;
        for _ in 0..ROUNDS {
            let f = expect_fault(|| {
                FW_CFG.read32(HOLE);
            });
            ok += usize::from(f.is_some_and(|f| f.ec() == EC_DABT_CURRENT && f.fsc() == 0x10));
        }
        c.check(
            "devabort_repeated_aborts",
            ok == ROUNDS,
            format_args!("{ok} of {ROUNDS} reads aborted"),
        );
        signature(&mut c, "devabort_signature_after");
        c.finish();
        park()
    }

    /// An access at `offset` of fw_cfg: a synchronous external abort that
    /// reports the guest's own address in FAR_EL1.
    fn aborts(c: &mut Checker, name: impl Display, offset: usize, access: impl FnOnce()) {
        let want_far = (FW_CFG.base() + offset) as u64;
        match expect_fault(access) {
            Some(f) => c.check(
                name,
                f.ec() == EC_DABT_CURRENT && f.fsc() == 0x10 && f.far == want_far,
                format_args!(
                    "ESR={:#x} FAR={:#x}, want a synchronous external abort (EC 0x25, DFSC 0x10) at {want_far:#x}",
                    f.esr, f.far
                ),
            ),
            None => c.check(name, false, "no exception"),
        };
    }

    /// Selects the signature item and reads its four bytes.
    fn signature(c: &mut Checker, name: &str) {
        let got = try_access(|| {
            // The selector is big-endian; key 0 reads the same either way.
            FW_CFG.write16(SELECTOR, KEY_SIGNATURE.to_be());
            [0; 4].map(|_: u8| FW_CFG.read8(DATA))
        });
        match got {
            Ok(b) => c.check(name, &b == b"QEMU", format_args!("{b:02x?}, want \"QEMU\"")),
            Err(f) => c.check(
                name,
                false,
                format_args!("exception ESR={:#x} FAR={:#x}", f.esr, f.far),
            ),
        };
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
