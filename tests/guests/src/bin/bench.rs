//! `bench`: the microbenchmarks of `cargo xtask bench`. Runs the same way
//! under Tessera (a VM with 2 vCPUs and the PL031 passed through) and bare in
//! QEMU `virt` at EL1, both under `-icount shift=0,sleep=off`, where CNTVCT_EL0
//! (62.5 MHz) advances one tick every 16 guest instructions and runs repeat
//! exactly. Prints one line per row, all in counter ticks:
//!
//! ```text
//! BENCH <row> mean=<ticks, 3 decimals> min=<ticks> max=<ticks> n=<samples>
//! BENCH <row> unavailable: <why>
//! BENCH done
//! ```
//!
//! Round trips (`hvc_*`, `mmio_*`): a loop that reads the counter once per
//! iteration, so the per-sample differences add up to the loop's total time
//! exactly; the same loop with an empty body (row `overhead`) is subtracted:
//! its mean from the mean, rounded to whole ticks from min and max.
//!
//! Interrupt latencies (`vtimer_*`, `ipi`, `spi_pl031`): "handler entry" is
//! the counter read at the third instruction of the runtime's IRQ vector
//! (`gic::irq_entry_counter`), before the context save and the acknowledge;
//! "EOI" is the counter read right after the vector's EOI returned
//! (`gic::last_eoi_counter`).
//!
//! vCPU 1 only takes the IPI, sleeping in WFI with IRQs unmasked the rest of
//! the time. Under `-icount` QEMU runs the CPUs one at a time and switches
//! only when the running one stops (WFI) or its time slice ends, so whoever
//! waits for another vCPU waits in WFI, woken by an SGI back ("pong"); the
//! IPI latency therefore includes the sender's few instructions from the
//! send to its WFI (the same natively and under Tessera).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::arch::asm;
    use core::hint::black_box;
    use core::sync::atomic::{
        AtomicBool, AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
    };
    use tessera_guests::gic::{self, SgiTarget, Trigger, VTIMER_INTID};
    use tessera_guests::{
        counter, current_el, entry_counter, hvc, park, println, psci, start_cpu, try_access, vtimer, Mmio,
    };

    /// Samples per microbenchmark.
    const ITERS: u32 = 10_000;
    /// The timer is armed this many ticks ahead: enough to be back in the
    /// wait loop before it fires (arming takes well under 10 ticks).
    const TIMER_LEAD: u64 = 200;
    /// Iterations of the CPU-bound loop.
    const CPU_LOOP: u64 = 10_000_000;
    /// A sample not completed within this many ticks is lost (and reported).
    const TIMEOUT: u64 = 625_000; // 10 ms
    /// SMCCC function id no service owns (vendor-specific hypervisor range, SMC32).
    const FID_UNOWNED: u32 = 0x8600_0000;
    const UART_BASE: usize = 0x0900_0000;
    const UART_FR: usize = 0x18;
    const GICD_BASE: usize = 0x0800_0000;
    const GICD_TYPER: usize = 0x004;
    /// A virtio-mmio transport among seven unassigned ones in its page:
    /// under Tessera trapped through the sub-page filter.
    const VIRTIO_FILTERED: usize = 0x0a00_3e00;
    const VIRTIO_MAGIC: u32 = 0x7472_6976;
    const RTC_BASE: usize = 0x0901_0000;
    const RTC_INTID: u32 = 34;
    const RTCDR: usize = 0x00;
    const RTCMR: usize = 0x04;
    const RTCCR: usize = 0x0c;
    const RTCIMSC: usize = 0x10;
    const RTCICR: usize = 0x1c;
    const SGI_PING: u32 = 1;
    /// vCPU 1 -> vCPU 0: "up", then the answer to each ping.
    const SGI_PONG: u32 = 2;

    /// Interrupts taken, per source, and the handler-entry counter of the last.
    static TIMER_FIRED: AtomicU32 = AtomicU32::new(0);
    static TIMER_AT: AtomicU64 = AtomicU64::new(0);
    static PINGS: AtomicU32 = AtomicU32::new(0);
    static PING_AT: AtomicU64 = AtomicU64::new(0);
    static PONGS: AtomicU32 = AtomicU32::new(0);
    static RTC_FIRED: AtomicU32 = AtomicU32::new(0);
    static RTC_AT: AtomicU64 = AtomicU64::new(0);
    static OTHER: AtomicU32 = AtomicU32::new(0);
    static SECONDARY_UP: AtomicBool = AtomicBool::new(false);

    tessera_guests::entry!(run);

    /// Per-sample statistics in counter ticks.
    #[derive(Clone, Copy)]
    struct Stats {
        n: u64,
        sum: u64,
        min: u64,
        max: u64,
        lost: u32,
    }

    impl Stats {
        const fn new() -> Self {
            Stats {
                n: 0,
                sum: 0,
                min: u64::MAX,
                max: 0,
                lost: 0,
            }
        }

        fn add(&mut self, t: u64) {
            self.n += 1;
            self.sum += t;
            self.min = self.min.min(t);
            self.max = self.max.max(t);
        }

        /// Mean in thousandths of a tick.
        fn mean_milli(&self) -> u64 {
            (self.sum * 1000).checked_div(self.n).unwrap_or(0)
        }

        /// Prints the row, less `overhead`'s mean (round trips).
        fn print(&self, row: &str, overhead: Option<&Stats>) {
            if self.lost != 0 {
                println!(
                    "FAIL bench: {row}: {} samples lost (no interrupt within {TIMEOUT} ticks)",
                    self.lost
                );
            }
            if self.n == 0 {
                println!("BENCH {row} unavailable: no sample completed");
                return;
            }
            let o = overhead.map_or(0, Stats::mean_milli);
            let mean = self.mean_milli().saturating_sub(o);
            let whole = (o + 500) / 1000;
            println!(
                "BENCH {row} mean={}.{:03} min={} max={} n={}",
                mean / 1000,
                mean % 1000,
                self.min.saturating_sub(whole),
                self.max.saturating_sub(whole),
                self.n
            );
        }
    }

    /// A passed-through register read through the sub-page filter (a
    /// virtio-mmio MagicValue) and mapped directly (the PL031's data
    /// register, alone in its page). Under icount a mapped read costs the
    /// same for any device: QEMU's device model runs outside guest time.
    fn passthrough_reads(overhead: &Stats) {
        // SAFETY: a virtio-mmio transport's registers; MagicValue reads
        // have no side effects.
        let virtio = unsafe { Mmio::new(VIRTIO_FILTERED) };
        match try_access(|| virtio.ld32(0)) {
            Ok(VIRTIO_MAGIC) => round_trips(|| {
                black_box(virtio.ld32(0));
            })
            .print("mmio_virtio_filtered", Some(overhead)),
            other => println!(
                "BENCH mmio_virtio_filtered unavailable: MagicValue {:x?}",
                other.map_err(|f| f.esr)
            ),
        }
        match try_access(|| rtc().ld32(RTCDR)) {
            Ok(_) => round_trips(|| {
                black_box(rtc().ld32(RTCDR));
            })
            .print("mmio_pl031_direct", Some(overhead)),
            Err(f) => println!("BENCH mmio_pl031_direct unavailable: RTCDR read ESR {:#x}", f.esr),
        }
    }

    /// `op` ITERS times; each sample is the counter difference across one
    /// iteration, the end of one being the start of the next.
    #[inline(always)]
    fn round_trips(mut op: impl FnMut()) -> Stats {
        let mut s = Stats::new();
        let mut prev = counter();
        for _ in 0..ITERS {
            op();
            let now = counter();
            s.add(now - prev);
            prev = now;
        }
        s
    }

    fn on_irq(intid: u32) {
        let at = gic::irq_entry_counter();
        match intid {
            VTIMER_INTID => {
                vtimer::stop();
                TIMER_AT.store(at, Relaxed);
                TIMER_FIRED.fetch_add(1, Release);
            }
            SGI_PING => {
                PING_AT.store(at, Relaxed);
                PINGS.fetch_add(1, Release);
                gic::send_sgi(SGI_PONG, SgiTarget::List(1));
            }
            SGI_PONG => {
                PONGS.fetch_add(1, Release);
            }
            RTC_INTID => {
                rtc().st32(RTCICR, 1);
                RTC_AT.store(at, Relaxed);
                RTC_FIRED.fetch_add(1, Release);
            }
            _ => {
                OTHER.fetch_add(1, Relaxed);
            }
        }
    }

    fn rtc() -> Mmio {
        // SAFETY: the PL031 is a device this VM owns (or the real one, bare).
        unsafe { Mmio::new(RTC_BASE) }
    }

    /// Spins until `count` moves past `before` or `deadline` passes.
    fn wait_for(count: &AtomicU32, before: u32, deadline: u64) -> bool {
        loop {
            if count.load(Acquire) != before {
                return true;
            }
            if counter() > deadline {
                return false;
            }
            core::hint::spin_loop();
        }
    }

    fn run() -> ! {
        println!(
            "bench: start at EL{}, {}, {ITERS} samples per row",
            current_el(),
            gic::version_name()
        );
        gic::init_distributor();
        gic::init_cpu();
        gic::set_handler(on_irq);
        gic::enable(VTIMER_INTID);
        gic::enable(SGI_PONG);
        gic::irqs_on();
        let r = start_cpu(1, secondary);
        // vCPU 1 sends a pong once up; sleep, so that it gets to run.
        let up = r == 0 && {
            gic::wait_for_interrupts_until(|| SECONDARY_UP.load(Acquire));
            true
        };
        if !up {
            println!("FAIL bench: vCPU 1 did not start (CPU_ON returned {r})");
        }

        // SAFETY: no-op asm; it only keeps the loop from being optimized away.
        let overhead = round_trips(|| unsafe { asm!("", options(nostack)) });
        overhead.print("overhead", None);

        if try_access(|| hvc(FID_UNOWNED, 0, 0, 0)).is_ok() {
            round_trips(|| {
                black_box(hvc(FID_UNOWNED, 0, 0, 0));
            })
            .print("hvc_unknown", Some(&overhead));
        } else {
            println!("BENCH hvc_unknown unavailable: HVC is UNDEFINED without EL2");
        }
        round_trips(|| {
            black_box(psci::version());
        })
        .print("hvc_psci_version", Some(&overhead));

        // SAFETY: device registers read without side effects.
        let (uart, gicd) = unsafe { (Mmio::new(UART_BASE), Mmio::new(GICD_BASE)) };
        round_trips(|| {
            black_box(uart.ld32(UART_FR));
        })
        .print("mmio_uart_fr", Some(&overhead));
        round_trips(|| {
            black_box(gicd.ld32(GICD_TYPER));
        })
        .print("mmio_gicd_typer", Some(&overhead));

        passthrough_reads(&overhead);
        vtimer_latency();
        if up {
            ipi_latency();
        } else {
            println!("BENCH ipi unavailable: no vCPU 1");
        }
        spi_latency();
        cpu_loop();

        let e = entry_counter();
        println!("BENCH guest_entry mean={e}.000 min={e} max={e} n=1");
        let other = OTHER.load(Relaxed);
        if other != 0 {
            println!("FAIL bench: {other} unexpected interrupts");
        }
        println!("BENCH done");
        gic::irqs_off();
        park()
    }

    /// CNTV_CVAL deadline to the IRQ vector, and to the EOI returning.
    fn vtimer_latency() {
        let (mut to_handler, mut to_eoi) = (Stats::new(), Stats::new());
        for _ in 0..ITERS {
            let before = TIMER_FIRED.load(Acquire);
            let cval = counter() + TIMER_LEAD;
            vtimer::arm_at(cval);
            if wait_for(&TIMER_FIRED, before, cval + TIMEOUT) {
                to_handler.add(TIMER_AT.load(Relaxed) - cval);
                to_eoi.add(gic::last_eoi_counter() - cval);
            } else {
                vtimer::stop();
                to_handler.lost += 1;
            }
        }
        to_handler.print("vtimer_to_handler", None);
        to_eoi.print("vtimer_to_eoi", None);
    }

    /// vCPU 0's counter just before it sends SGI 1 to vCPU 1, to vCPU 1's
    /// IRQ vector; vCPU 1 waits in WFI, vCPU 0 too until the pong.
    fn ipi_latency() {
        let mut s = Stats::new();
        for _ in 0..ITERS {
            let before = PONGS.load(Acquire);
            let sent = counter();
            gic::send_sgi(SGI_PING, SgiTarget::List(1 << 1));
            gic::wait_for_interrupts_until(|| PONGS.load(Acquire) != before);
            s.add(PING_AT.load(Relaxed) - sent);
        }
        s.print("ipi", None);
    }

    /// The PL031's match interrupt (SPI 2, INTID 34): writing RTCMR with the
    /// current RTCDR raises it at once; counter just before that write to the
    /// IRQ vector.
    fn spi_latency() {
        let r = rtc();
        r.st32(RTCIMSC, 0);
        r.st32(RTCICR, 1);
        r.st32(RTCCR, 1);
        gic::set_trigger(RTC_INTID, Trigger::Level);
        gic::route_spi(RTC_INTID, 0);
        gic::enable(RTC_INTID);
        if !gic::is_enabled(RTC_INTID) {
            println!("BENCH spi_pl031 unavailable: INTID {RTC_INTID} cannot be enabled (no PL031 here)");
            return;
        }
        r.st32(RTCIMSC, 1);
        let mut s = Stats::new();
        let mut retries = 0u32;
        let mut i = 0;
        while i < ITERS {
            let before = RTC_FIRED.load(Acquire);
            let now = r.ld32(RTCDR);
            let t0 = counter();
            r.st32(RTCMR, now);
            if wait_for(&RTC_FIRED, before, t0 + TIMEOUT) {
                s.add(RTC_AT.load(Relaxed) - t0);
                i += 1;
            } else if retries < 3 {
                // The RTC's second ticked between the read and the write.
                retries += 1;
            } else {
                s.lost += 1;
                i += 1;
            }
        }
        r.st32(RTCIMSC, 0);
        gic::disable(RTC_INTID);
        s.print("spi_pl031", None);
    }

    /// A fixed integer loop; one sample of its total time.
    fn cpu_loop() {
        let t0 = counter();
        let mut x = black_box(0x1234_5678_9abc_def0u64);
        for i in 0..black_box(CPU_LOOP) {
            x = (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i).rotate_left(17);
        }
        black_box(x);
        let t = counter() - t0;
        println!("BENCH cpu_loop mean={t}.000 min={t} max={t} n=1");
    }

    fn secondary(_k: usize) -> ! {
        gic::init_cpu();
        gic::enable(SGI_PING);
        SECONDARY_UP.store(true, Release);
        gic::send_sgi(SGI_PONG, SgiTarget::List(1));
        gic::irqs_on();
        loop {
            // SAFETY: WFI only waits; IRQs are unmasked, so they are taken.
            unsafe { asm!("wfi", options(nomem, nostack)) };
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
