//! `link_outsider`: a VM named on no link. Where the VMs on link 0 find its
//! device (0x0a80_0000) this one must find nothing: a load and a store there
//! abort, like any address the VM was not given.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use tessera_guests::{current_el, expect_fault, mpidr, park, println, Checker, Mmio, EC_DABT_CURRENT};

    // SAFETY: probing is the point; nothing of this guest lives there.
    const LINK0: Mmio = unsafe { Mmio::new(0x0a80_0000) };

    tessera_guests::entry!(run);

    fn run() -> ! {
        println!("link_outsider: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        let mut c = Checker::new("link_outsider");
        for (name, fault) in [
            (
                "outsider_link_device_load_aborts",
                expect_fault(|| {
                    LINK0.read32(0);
                }),
            ),
            (
                "outsider_link_device_store_aborts",
                expect_fault(|| LINK0.write32(0x70, 0)),
            ),
        ] {
            match fault {
                Some(f) => c.check(
                    name,
                    f.ec() == EC_DABT_CURRENT,
                    format_args!("ESR={:#x} FAR={:#x}", f.esr, f.far),
                ),
                None => c.check(name, false, "no abort: something answered"),
            };
        }
        c.finish();
        park()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
