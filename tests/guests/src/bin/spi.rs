//! `spi`: a passed-through device's interrupt. The PL031 RTC at
//! `0x0901_0000` raises SPI 2 (INTID 34, level-high) when its counter reaches
//! the match register. The guest routes INTID 34 to itself, sets the match to
//! the next second three times and must take each alarm exactly once within
//! 3 s (the handler clears it at the RTC, so the level drops before the EOI).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
    use tessera_guests::gic::{self, Trigger};
    use tessera_guests::{
        counter, counter_freq, cpu_index, current_el, mpidr, park, println, spin_until, Checker, Mmio,
    };

    const RTC_BASE: usize = 0x0901_0000;
    const RTC_INTID: u32 = 34;
    const RTCDR: usize = 0x00;
    const RTCMR: usize = 0x04;
    const RTCCR: usize = 0x0c;
    const RTCIMSC: usize = 0x10;
    const RTCRIS: usize = 0x14;
    const RTCMIS: usize = 0x18;
    const RTCICR: usize = 0x1c;
    const ALARMS: u32 = 3;
    /// The match is at most a second away; 3 s is plenty.
    const WAIT_MS: u64 = 3000;
    /// How long we look for a second (wrong) delivery after the first.
    const SETTLE_MS: u64 = 100;

    static ALARM_COUNT: AtomicU32 = AtomicU32::new(0);
    static ALARM_AT: AtomicU64 = AtomicU64::new(0);
    /// RTCMIS as the handler found it (before clearing).
    static MIS_IN_HANDLER: AtomicU32 = AtomicU32::new(0);
    static OTHER: AtomicU32 = AtomicU32::new(0);

    tessera_guests::entry!(run);

    fn rtc() -> Mmio {
        // SAFETY: the PL031 is a device this VM owns.
        unsafe { Mmio::new(RTC_BASE) }
    }

    fn on_irq(intid: u32) {
        if intid != RTC_INTID {
            OTHER.fetch_add(1, Relaxed);
            return;
        }
        ALARM_AT.store(counter(), Relaxed);
        MIS_IN_HANDLER.store(rtc().ld32(RTCMIS), Relaxed);
        rtc().st32(RTCICR, 1);
        ALARM_COUNT.fetch_add(1, Release);
    }

    fn run() -> ! {
        println!("spi: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        println!("spi: {}", gic::version_name());
        let mut c = Checker::new("spi");
        gic::init_distributor();
        gic::init_cpu();
        gic::set_handler(on_irq);

        let r = rtc();
        r.st32(RTCIMSC, 0);
        r.st32(RTCICR, 1);
        r.st32(RTCCR, 1); // started (it is at reset on QEMU)
        gic::set_trigger(RTC_INTID, Trigger::Level);
        gic::set_priority(RTC_INTID, 0x80);
        gic::route_spi(RTC_INTID, cpu_index());
        gic::enable(RTC_INTID);
        let enabled = gic::is_enabled(RTC_INTID);
        c.check(
            "spi_enable",
            enabled,
            format_args!("INTID {RTC_INTID} reads back enabled: {enabled}"),
        );
        gic::irqs_on();

        for alarm in 1..=ALARMS {
            one_alarm(&mut c, alarm);
        }
        r.st32(RTCIMSC, 0);
        let other = OTHER.load(Relaxed);
        c.check(
            "spi_no_other_interrupts",
            other == 0,
            format_args!("{other} other interrupts"),
        );
        c.finish();
        gic::irqs_off();
        park()
    }

    fn one_alarm(c: &mut Checker, alarm: u32) {
        let r = rtc();
        let before = ALARM_COUNT.load(Acquire);
        let now = r.ld32(RTCDR);
        r.st32(RTCMR, now.wrapping_add(1));
        let armed = counter();
        r.st32(RTCIMSC, 1);
        let came = spin_until(WAIT_MS, || ALARM_COUNT.load(Acquire) > before);
        spin_until(SETTLE_MS, || false);
        let n = ALARM_COUNT.load(Acquire) - before;
        let ms = ALARM_AT.load(Relaxed).saturating_sub(armed) * 1000 / counter_freq();
        if came {
            println!("spi: alarm {alarm} after {ms} ms");
        }
        c.check(
            format_args!(
                "spi_rtc_alarm{}",
                if alarm == 1 {
                    ""
                } else {
                    ["", "", "_2", "_3"][alarm as usize]
                }
            ),
            came && n == 1,
            format_args!("alarm {alarm}: INTID {RTC_INTID} taken {n} times within {WAIT_MS} ms, want 1"),
        );
        let mis = MIS_IN_HANDLER.load(Relaxed);
        let ris = r.ld32(RTCRIS);
        c.check(
            format_args!("spi_rtc_cleared_{alarm}"),
            !came || (mis & 1 == 1 && ris & 1 == 0),
            format_args!("RTCMIS {mis:#x} in the handler, RTCRIS {ris:#x} after the clear"),
        );
        r.st32(RTCIMSC, 0);
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
