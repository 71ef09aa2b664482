//! `spi_thief`: tries to take INTID 34, the PL031 RTC's SPI, which another VM
//! owns. It enables it, makes it pending, routes it to itself and sets its
//! priority, then reads the enable and pending bits back: under Tessera an
//! SPI the VM does not own must read as 0 and never be delivered (it waits
//! 4 s for one while the owner takes its alarms). Bare in QEMU the GIC is
//! real and these checks fail: that is expected.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicU32, Ordering::Relaxed};
    use tessera_guests::gic;
    use tessera_guests::{cpu_index, current_el, mpidr, park, println, spin_until, Checker};

    const RTC_INTID: u32 = 34;
    /// Covers the owner's three alarms (about 3 s from boot).
    const WAIT_MS: u64 = 4000;

    static STOLEN: AtomicU32 = AtomicU32::new(0);
    static OTHER: AtomicU32 = AtomicU32::new(0);

    tessera_guests::entry!(run);

    fn on_irq(intid: u32) {
        if intid == RTC_INTID {
            STOLEN.fetch_add(1, Relaxed);
            // Do not let a level interrupt we cannot clear storm us.
            gic::disable(RTC_INTID);
        } else {
            OTHER.fetch_add(1, Relaxed);
        }
    }

    fn run() -> ! {
        println!("spi_thief: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        println!("spi_thief: {}", gic::version_name());
        let mut c = Checker::new("spi_thief");
        gic::init_distributor();
        gic::init_cpu();
        gic::set_handler(on_irq);

        gic::set_priority(RTC_INTID, 0x80);
        gic::route_spi(RTC_INTID, cpu_index());
        gic::enable(RTC_INTID);
        gic::set_pending(RTC_INTID);
        let enabled = gic::is_enabled(RTC_INTID);
        let pending = gic::is_pending(RTC_INTID);
        println!(
            "spi_thief: INTID {RTC_INTID} priority {:#x}, route {:#x}",
            gic::priority(RTC_INTID),
            gic::route_of(RTC_INTID)
        );
        c.check(
            "thief_cannot_enable",
            !enabled,
            format_args!("ISENABLER bit of INTID {RTC_INTID} reads {}", u8::from(enabled)),
        );
        c.check(
            "thief_cannot_pend",
            !pending,
            format_args!("ISPENDR bit of INTID {RTC_INTID} reads {}", u8::from(pending)),
        );

        gic::irqs_on();
        spin_until(WAIT_MS, || false);
        gic::irqs_off();
        let stolen = STOLEN.load(Relaxed);
        c.check(
            "thief_never_sees_rtc",
            stolen == 0,
            format_args!("took INTID {RTC_INTID} {stolen} times in {WAIT_MS} ms"),
        );
        let other = OTHER.load(Relaxed);
        c.check(
            "thief_no_other_interrupts",
            other == 0,
            format_args!("{other} other interrupts"),
        );
        c.finish();
        park()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
