//! `subpage_owner`: the bystander next to `subpage_thief`. It owns the
//! virtio-mmio transport `/virtio_mmio@a003c00` (with a virtio-blk disk),
//! in the same 4 KiB page as the thief's. It sets its device's Status to
//! ACKNOWLEDGE | DRIVER, waits while the thief tries to reset it, then checks
//! the device is still its own: same Status, magic and device ID.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use tessera_guests::{current_el, mpidr, park, println, spin_until, try_access, Checker, Mmio};

    // SAFETY: a virtio-mmio transport: device registers, no Rust object.
    const OWN: Mmio = unsafe { Mmio::new(0x0a00_3c00) };
    const MAGIC: u32 = 0x7472_6976;
    const BLOCK: u32 = 2;
    const REG_MAGIC: usize = 0x00;
    const REG_DEVICE_ID: usize = 0x08;
    const REG_STATUS: usize = 0x70;
    const ACK_DRIVER: u32 = 1 | 2;
    /// Long enough for the thief (started at the same time) to finish.
    const WAIT_MS: u64 = 3000;

    tessera_guests::entry!(run);

    fn read(reg: usize) -> Option<u32> {
        try_access(|| OWN.read32(reg)).ok()
    }

    fn run() -> ! {
        println!("subpage_owner: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        let mut c = Checker::new("subpage_owner");
        let set = try_access(|| {
            OWN.write32(REG_STATUS, 0);
            OWN.write32(REG_STATUS, ACK_DRIVER);
            OWN.read32(REG_STATUS)
        });
        c.check(
            "owner_status_set",
            set == Ok(ACK_DRIVER),
            format_args!("{set:x?}"),
        );
        println!("subpage_owner: status set, waiting {WAIT_MS} ms");
        spin_until(WAIT_MS, || false);
        let status = read(REG_STATUS);
        c.check(
            "owner_status_unchanged",
            status == Some(ACK_DRIVER),
            format_args!("Status {status:x?}, want {ACK_DRIVER:#x}"),
        );
        let magic = read(REG_MAGIC);
        c.check("owner_magic", magic == Some(MAGIC), format_args!("{magic:x?}"));
        let id = read(REG_DEVICE_ID);
        c.check("owner_device_id", id == Some(BLOCK), format_args!("{id:x?}"));
        c.finish();
        park()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
