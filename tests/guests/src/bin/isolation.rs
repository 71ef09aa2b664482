//! `isolation`: loads, stores and an instruction fetch outside the VM's own
//! memory and devices must each give the guest an abort (stage 2 faults
//! injected by Tessera), never data and never a hang.
//!
//! Only passes under the hypervisor: bare in QEMU most probes hit real RAM
//! or devices. The isolation scenario places this guest identity-mapped at
//! 0x4a00_0000 with 16 MiB of RAM.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

/// Guest-physical addresses this VM must not reach (each probed with a 64-bit
/// load and a 64-bit store).
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
static PROBES: [u64; 8] = [
    0x0000_0000,    // flash on QEMU virt; nothing in the VM's map
    0x0a00_0000,    // a virtio-mmio device nobody gave this VM
    0x4020_0000,    // where QEMU puts the hypervisor
    0x4800_0000,    // where QEMU puts the boot DTB
    0x4900_0000,    // another VM's RAM in the isolation scenario
    0x7fff_f000,    // the top of the low RAM window
    0x1_0000_0000,  // above 4 GiB
    0x80_0000_0000, // 512 GiB: high PCIe window on QEMU virt
];

/// Another VM's RAM: fetching an instruction there must abort.
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
const FETCH_PROBE: u64 = 0x4900_0000;

#[cfg(target_os = "none")]
mod guest {
    use super::{FETCH_PROBE, PROBES};
    use tessera_guests::{
        branch_to, current_el, expect_fault, mpidr, park, println, Checker, Fault, Mmio, EC_DABT_CURRENT,
        EC_IABT_CURRENT,
    };

    /// Written by the store probes: recognisable if it ever shows up elsewhere.
    const PATTERN: u64 = 0x5445_5353_4552_4121; // "TESSERA!"

    tessera_guests::entry!(run);

    fn run() -> ! {
        println!("isolation: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        let mut c = Checker::new("isolation");
        // The fetch first, so a bare run has not yet stored PATTERN there.
        // SAFETY: FETCH_PROBE is outside this VM, so the fetch aborts; bare it
        // is zeroed QEMU RAM, whose first word is a UDF.
        let fetch = expect_fault(|| unsafe { branch_to(FETCH_PROBE) });
        report(&mut c, "isolation_fetch", FETCH_PROBE, fetch, EC_IABT_CURRENT);
        for &addr in &PROBES {
            // SAFETY: under the hypervisor none of the probes is memory of
            // this guest. Bare, a store may land in QEMU RAM nobody uses or,
            // at 0x4020_0000, on this image's Image header, unused after boot.
            let probe = unsafe { Mmio::new(addr as usize) };
            let read = expect_fault(|| {
                probe.read64(0);
            });
            report(&mut c, "isolation_read", addr, read, EC_DABT_CURRENT);
            let write = expect_fault(|| probe.write64(0, PATTERN));
            report(&mut c, "isolation_write", addr, write, EC_DABT_CURRENT);
        }
        c.finish();
        park()
    }

    fn report(c: &mut Checker, what: &str, addr: u64, fault: Option<Fault>, want_ec: u64) {
        let name = format_args!("{what}_{addr:#x}");
        match fault {
            Some(f) => c.check(
                name,
                f.ec() == want_ec,
                format_args!(
                    "ESR={:#x} FAR={:#x} EC={:#x}, want EC={want_ec:#x}",
                    f.esr,
                    f.far,
                    f.ec()
                ),
            ),
            None => c.check(name, false, "no exception"),
        };
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
