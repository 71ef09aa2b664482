//! `subpage_thief`: owns QEMU virt's last virtio-mmio transport
//! (`/virtio_mmio@a003e00`), which shares its 4 KiB page with seven others;
//! the one just below (`a003c00`) belongs to the `bystander` VM. Under
//! Tessera the page is trapped through the sub-page filter: the guest's own
//! registers answer at their width, every access to the neighbour's
//! registers (MagicValue, DeviceID, Status, QueueSel) or to an unassigned
//! transport in the page is an external abort, and so is a misaligned or
//! straddling access. Then it times reads of its own MagicValue (one exit
//! each) for `cargo xtask bench`.
//!
//! Bare in QEMU (or with the page mapped whole) the neighbour's registers
//! read and write fine: the abort checks fail.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::fmt::Display;
    use tessera_guests::{
        counter, current_el, expect_fault, mpidr, park, println, try_access, Checker, Mmio, EC_DABT_CURRENT,
    };

    // SAFETY: virtio-mmio transports: device registers, no Rust object.
    const OWN: Mmio = unsafe { Mmio::new(0x0a00_3e00) };
    // SAFETY: as above (the bystander's transport).
    const NEIGHBOUR: Mmio = unsafe { Mmio::new(0x0a00_3c00) };
    // SAFETY: as above (an unassigned transport in the same page).
    const UNASSIGNED: Mmio = unsafe { Mmio::new(0x0a00_3000) };

    const MAGIC: u32 = 0x7472_6976; // "virt"
    const VENDOR_QEMU: u32 = 0x554d_4551;
    const BLOCK: u32 = 2;
    const REG_MAGIC: usize = 0x00;
    const REG_VERSION: usize = 0x04;
    const REG_DEVICE_ID: usize = 0x08;
    const REG_VENDOR_ID: usize = 0x0c;
    const REG_QUEUE_SEL: usize = 0x30;
    const REG_STATUS: usize = 0x70;
    const REG_CONFIG: usize = 0x100;
    /// Reads timed for the bench line.
    const TIMED_READS: u64 = 1000;

    tessera_guests::entry!(run);

    fn run() -> ! {
        println!("subpage_thief: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        let mut c = Checker::new("subpage_thief");
        own_window(&mut c);
        neighbour(&mut c);
        bad_accesses(&mut c);
        c.finish();
        time_reads();
        keep_attacking()
    }

    /// Goes on resetting the bystander's device every 100 ms, forever: its
    /// VM may start after this one's checks ran (no order between VMs
    /// without icount), and the scenario asks for a round between the
    /// bystander setting its Status and checking it.
    fn keep_attacking() -> ! {
        for round in 0u64.. {
            let what = match try_access(|| NEIGHBOUR.write32(REG_STATUS, 0)) {
                Ok(()) => "FAIL: the write reached the device",
                Err(_) => "aborted",
            };
            println!("subpage_thief: attack round {round}: neighbour Status write {what}");
            tessera_guests::spin_until(100, || false);
        }
        park()
    }

    fn expect(c: &mut Checker, name: impl Display, want: u64, access: impl FnOnce() -> u64) {
        match try_access(access) {
            Ok(got) => c.check(name, got == want, format_args!("{got:#x}, want {want:#x}")),
            Err(f) => c.check(
                name,
                false,
                format_args!("exception ESR={:#x} FAR={:#x}", f.esr, f.far),
            ),
        };
    }

    fn aborts(c: &mut Checker, name: impl Display, access: impl FnOnce()) {
        match expect_fault(access) {
            Some(f) => c.check(
                name,
                f.ec() == EC_DABT_CURRENT,
                format_args!("ESR={:#x} FAR={:#x}, want a data abort (EC 0x25)", f.esr, f.far),
            ),
            None => c.check(name, false, "no exception: the access reached the device"),
        };
    }

    /// Its own transport: every register it reads answers, at every width.
    fn own_window(c: &mut Checker) {
        expect(c, "subpage_own_magic_read32", u64::from(MAGIC), || {
            u64::from(OWN.read32(REG_MAGIC))
        });
        expect(c, "subpage_own_device_id_read32", u64::from(BLOCK), || {
            u64::from(OWN.read32(REG_DEVICE_ID))
        });
        expect(c, "subpage_own_vendor_read32", u64::from(VENDOR_QEMU), || {
            u64::from(OWN.read32(REG_VENDOR_ID))
        });
        // QEMU's transport registers are 32-bit only; the device's config
        // space (virtio-blk: capacity, 2048 sectors of the 1 MiB disk) takes
        // narrow accesses.
        expect(c, "subpage_own_config_read8", 0x08, || {
            u64::from(OWN.read8(REG_CONFIG + 1))
        });
        expect(c, "subpage_own_config_read16", 0x0800, || {
            u64::from(OWN.read16(REG_CONFIG))
        });
        expect(c, "subpage_own_config_read32", 0x0800, || {
            u64::from(OWN.read32(REG_CONFIG))
        });
        match try_access(|| OWN.read32(REG_VERSION)) {
            Ok(v) => c.check(
                "subpage_own_version_read32",
                v == 1 || v == 2,
                format_args!("version {v}"),
            ),
            Err(f) => c.check(
                "subpage_own_version_read32",
                false,
                format_args!("ESR={:#x}", f.esr),
            ),
        };
        // Writes reach the device: ACKNOWLEDGE reads back, then a reset.
        expect(c, "subpage_own_status_write", 1, || {
            OWN.write32(REG_STATUS, 1);
            u64::from(OWN.read32(REG_STATUS))
        });
        expect(c, "subpage_own_status_reset", 0, || {
            OWN.write32(REG_STATUS, 0);
            u64::from(OWN.read32(REG_STATUS))
        });
    }

    /// The bystander's transport and an unassigned one, in the same page.
    fn neighbour(c: &mut Checker) {
        aborts(c, "subpage_neighbour_magic_read_aborts", || {
            NEIGHBOUR.read32(REG_MAGIC);
        });
        aborts(c, "subpage_neighbour_device_id_read_aborts", || {
            NEIGHBOUR.read32(REG_DEVICE_ID);
        });
        aborts(c, "subpage_neighbour_status_read_aborts", || {
            NEIGHBOUR.read32(REG_STATUS);
        });
        // A reset of the bystander's device, and a queue selection.
        aborts(c, "subpage_neighbour_status_write_aborts", || {
            NEIGHBOUR.write32(REG_STATUS, 0)
        });
        aborts(c, "subpage_neighbour_queue_sel_write_aborts", || {
            NEIGHBOUR.write32(REG_QUEUE_SEL, 0)
        });
        aborts(c, "subpage_neighbour_magic_read8_aborts", || {
            NEIGHBOUR.read8(REG_MAGIC);
        });
        aborts(c, "subpage_unassigned_magic_read_aborts", || {
            UNASSIGNED.read32(REG_MAGIC);
        });
        aborts(c, "subpage_unassigned_status_write_aborts", || {
            UNASSIGNED.write32(REG_STATUS, 0)
        });
    }

    /// The window's edge, and an access the filter cannot decode.
    fn bad_accesses(c: &mut Checker) {
        // The last word below its window (the neighbour's config space):
        // the boundary is exact.
        aborts(c, "subpage_word_below_window_aborts", || {
            NEIGHBOUR.read32(0x1fc);
        });
        // A load pair gives no syndrome (ISV = 0).
        aborts(c, "subpage_own_ldp_aborts", || {
            OWN.ldp(REG_MAGIC);
        });
        // Still working afterwards.
        expect(c, "subpage_own_magic_after", u64::from(MAGIC), || {
            u64::from(OWN.read32(REG_MAGIC))
        });
    }

    /// Cost of one filtered register read (a trap, a check, the device
    /// access, the return) in counter ticks, for `cargo xtask bench`.
    fn time_reads() {
        let start = counter();
        for _ in 0..TIMED_READS {
            OWN.read32(REG_MAGIC);
        }
        let ticks = counter() - start;
        println!(
            "subpage_thief: bench filtered_read {} ticks per {} reads",
            ticks, TIMED_READS
        );
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
