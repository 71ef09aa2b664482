//! `timer`: the virtual timer's interrupt (PPI 27) on every vCPU. Each vCPU
//! runs a 1 ms periodic timer (CVAL += period in the handler) for 200
//! periods of counter time and must take 190..=210 interrupts; the worst
//! latency (counter at handler entry minus the CVAL that fired) is printed.
//! After `RESULT timer: …` vCPU 0 goes on at 10 ms forever, printing
//! `timer: alive N` every 100 interrupts (N = interrupts so far).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{
        AtomicBool, AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
    };
    use tessera_guests::gic::{self, VTIMER_INTID};
    use tessera_guests::{
        counter, cpu_index, current_el, mpidr, ms_to_ticks, park, println, spin_until, start_secondaries,
        vtimer, Checker, MAX_CPUS,
    };

    const PERIODS: u64 = 200;
    const MIN_TICKS: u32 = 190;
    const MAX_TICKS: u32 = 210;
    /// Interrupts between two `timer: alive` lines.
    const ALIVE_EVERY: u32 = 100;

    /// Per vCPU: timer period in counter ticks.
    static PERIOD: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
    /// Per vCPU: last CVAL to take; the handler stops the timer after it.
    static END: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
    /// Per vCPU: interrupts taken with the timer condition true.
    static COUNT: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
    /// Per vCPU: interrupts taken with the condition false (a stale injection).
    static SPURIOUS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
    /// Per vCPU: worst CNTVCT-at-entry minus CVAL.
    static WORST: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
    /// Per vCPU: the handler stopped the timer after END.
    static DONE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
    /// Per vCPU: set up and waiting for GO.
    static READY: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
    /// Interrupts other than the timer's, any vCPU.
    static OTHER: AtomicU32 = AtomicU32::new(0);
    /// Counter value at which every vCPU starts its first period.
    static GO_AT: AtomicU64 = AtomicU64::new(0);
    static GO: AtomicBool = AtomicBool::new(false);

    tessera_guests::entry!(run);

    fn on_irq(intid: u32) {
        let now = counter();
        let k = cpu_index();
        if intid != VTIMER_INTID {
            OTHER.fetch_add(1, Relaxed);
            return;
        }
        if vtimer::ctl() & vtimer::CTL_ISTATUS == 0 {
            SPURIOUS[k].fetch_add(1, Relaxed);
            return;
        }
        let cval = vtimer::cval();
        WORST[k].fetch_max(now.saturating_sub(cval), Relaxed);
        COUNT[k].fetch_add(1, Relaxed);
        let next = cval + PERIOD[k].load(Relaxed);
        if next > END[k].load(Relaxed) {
            vtimer::stop();
            DONE[k].store(true, Release);
        } else {
            vtimer::set_cval(next);
        }
    }

    fn run() -> ! {
        println!("timer: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        println!("timer: {}", gic::version_name());
        let mut c = Checker::new("timer");
        gic::init_distributor();
        gic::init_cpu();
        gic::set_handler(on_irq);

        let cpus = start_secondaries(secondary);
        let all_ready = spin_until(1000, || READY[1..cpus].iter().all(|r| r.load(Acquire)));
        c.check("timer_cpus_up", all_ready, format_args!("{cpus} vCPUs"));

        // Everyone starts at the same counter value, a little ahead.
        GO_AT.store(counter() + ms_to_ticks(5), Relaxed);
        GO.store(true, Release);
        measure(0);
        let period = ms_to_ticks(1);
        let window_ms = PERIODS + 100;
        spin_until(window_ms, || DONE[..cpus].iter().all(|d| d.load(Acquire)));

        for k in 0..cpus {
            let n = COUNT[k].load(Relaxed);
            let spurious = SPURIOUS[k].load(Relaxed);
            println!("timer: cpu {k} took {n} ticks in {PERIODS} periods");
            println!("timer: cpu {k} worst latency {} ticks", WORST[k].load(Relaxed));
            c.check(
                format_args!("timer_rate_cpu{k}"),
                (MIN_TICKS..=MAX_TICKS).contains(&n) && spurious == 0,
                format_args!(
                    "{n} interrupts in {PERIODS} periods of {period} ticks (want {MIN_TICKS}..={MAX_TICKS}), \
                     {spurious} with the timer condition false"
                ),
            );
        }
        let other = OTHER.load(Relaxed);
        c.check(
            "timer_no_other_interrupts",
            other == 0,
            format_args!("{other} other interrupts"),
        );
        c.finish();

        alive()
    }

    /// vCPU 0 after the RESULT line: a 10 ms timer forever.
    fn alive() -> ! {
        let k = cpu_index();
        COUNT[k].store(0, Relaxed);
        let period = ms_to_ticks(10);
        PERIOD[k].store(period, Relaxed);
        END[k].store(u64::MAX, Relaxed);
        vtimer::arm_at(counter() + period);
        let mut next_line = ALIVE_EVERY;
        loop {
            gic::wait_for_interrupts_until(|| COUNT[k].load(Relaxed) >= next_line);
            println!("timer: alive {next_line}");
            next_line += ALIVE_EVERY;
        }
    }

    /// One vCPU's measurement: 200 periods from GO_AT.
    fn measure(k: usize) {
        while !GO.load(Acquire) {
            core::hint::spin_loop();
        }
        let start = GO_AT.load(Relaxed);
        let period = ms_to_ticks(1);
        PERIOD[k].store(period, Relaxed);
        END[k].store(start + PERIODS * period, Relaxed);
        gic::enable(VTIMER_INTID);
        vtimer::arm_at(start + period);
        gic::irqs_on();
        // Spinning, not WFI, so a timer that never fires ends in a FAIL
        // line rather than a silent hang.
        let window_ms = (PERIODS * period) / ms_to_ticks(1) + 5 + 100;
        if !spin_until(window_ms, || DONE[k].load(Acquire)) {
            vtimer::stop();
        }
    }

    fn secondary(k: usize) -> ! {
        gic::init_cpu();
        READY[k].store(true, Release);
        measure(k);
        gic::irqs_off();
        park()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
