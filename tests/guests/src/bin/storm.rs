//! `storm`: misbehaves with interrupts, to show that it only slows itself.
//! (a) A level interrupt left asserted: the virtual timer fires (CVAL in the
//!     past) and the handler EOIs it without clearing or masking the timer,
//!     so it fires again at once; after 200 ms of counter time the handler
//!     masks it. (b) An SGI acknowledged and never EOIed keeps the running
//!     priority up: SGIs of equal priority must wait, higher ones preempt, and
//!     the late EOI lets the waiting one in. (c) A flood of 100,000 SGIs to
//!     itself. After `RESULT storm: …` the level storm of (a) runs forever,
//!     and the handler prints `storm: still alive` every ~100 ms.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{
        AtomicBool, AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
    };
    use tessera_guests::gic::{self, SgiTarget, VTIMER_INTID};
    use tessera_guests::{
        counter, cpu_index, current_el, mpidr, ms_to_ticks, println, spin_until, vtimer, Checker,
    };

    /// Acknowledged, never EOIed (until the end of (b)); low priority.
    const SGI_HELD: u32 = 8;
    /// Same priority as SGI_HELD: must wait for its EOI.
    const SGI_EQUAL: u32 = 9;
    /// Higher priority: must preempt.
    const SGI_HIGHER: u32 = 10;
    /// The flood.
    const SGI_FLOOD: u32 = 11;
    const LOW: u8 = 0xc0;
    const HIGH: u8 = 0x40;
    const STORM_MS: u64 = 200;
    const FLOOD: u32 = 100_000;
    const ALIVE_MS: u64 = 100;

    static COUNTS: [AtomicU32; 32] = [const { AtomicU32::new(0) }; 32];
    static OTHER: AtomicU32 = AtomicU32::new(0);
    /// The level storm stops (timer masked) at this counter value.
    static STORM_END: AtomicU64 = AtomicU64::new(0);
    static STORM_DONE: AtomicBool = AtomicBool::new(false);
    /// Forever phase: next counter value at which to print `still alive`.
    static NEXT_ALIVE: AtomicU64 = AtomicU64::new(u64::MAX);

    tessera_guests::entry!(run);

    fn on_irq(intid: u32) {
        match COUNTS.get(intid as usize) {
            Some(n) => {
                n.fetch_add(1, Release);
            }
            None => {
                OTHER.fetch_add(1, Relaxed);
                return;
            }
        }
        match intid {
            VTIMER_INTID => {
                // Leave the timer asserted; only the deadlines change things.
                let now = counter();
                if now >= STORM_END.load(Relaxed) && !STORM_DONE.load(Relaxed) {
                    vtimer::mask();
                    STORM_DONE.store(true, Release);
                }
                if now >= NEXT_ALIVE.load(Relaxed) {
                    NEXT_ALIVE.store(now + ms_to_ticks(ALIVE_MS), Relaxed);
                    println!("storm: still alive");
                }
            }
            SGI_HELD => gic::hold_eoi(),
            _ => {}
        }
    }

    fn count(intid: u32) -> u32 {
        COUNTS[intid as usize].load(Acquire)
    }

    fn run() -> ! {
        println!("storm: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        println!("storm: {}", gic::version_name());
        let mut c = Checker::new("storm");
        gic::init_distributor();
        gic::init_cpu();
        gic::set_handler(on_irq);
        for (sgi, prio) in [(SGI_HELD, LOW), (SGI_EQUAL, LOW), (SGI_HIGHER, HIGH)] {
            gic::set_priority(sgi, prio);
        }
        for intid in [VTIMER_INTID, SGI_HELD, SGI_EQUAL, SGI_HIGHER, SGI_FLOOD] {
            gic::enable(intid);
        }
        gic::irqs_on();

        level_storm(&mut c);
        never_eoi(&mut c);
        flood(&mut c);
        let other = OTHER.load(Relaxed);
        c.check(
            "storm_no_other_interrupts",
            other == 0,
            format_args!("{other} other interrupts"),
        );
        c.finish();

        // Forever: the level storm again, the handler reporting.
        NEXT_ALIVE.store(counter() + ms_to_ticks(ALIVE_MS), Relaxed);
        STORM_END.store(u64::MAX, Relaxed);
        vtimer::arm_at(0);
        loop {
            core::hint::spin_loop();
        }
    }

    /// (a) The virtual timer asserted for 200 ms, EOIed but never cleared.
    fn level_storm(c: &mut Checker) {
        let start = counter();
        STORM_END.store(start + ms_to_ticks(STORM_MS), Relaxed);
        let mut main_loops = 0u64;
        vtimer::arm_at(0);
        let done = spin_until(STORM_MS + 1000, || {
            main_loops += 1;
            STORM_DONE.load(Acquire)
        });
        let n = count(VTIMER_INTID);
        let ms = (counter() - start) / ms_to_ticks(1);
        println!("storm: level storm took {n} interrupts in {STORM_MS} ms");
        println!("storm: main loop ran {main_loops} times meanwhile, {ms} ms in all");
        c.check(
            "storm_level_storm",
            done && n > 0,
            format_args!("{n} timer interrupts, stopped by the handler: {done}"),
        );
        let pending = spin_until(10, || !gic::is_pending(VTIMER_INTID));
        c.check(
            "storm_level_storm_masked",
            pending,
            "the masked timer's PPI is no longer pending",
        );
        vtimer::stop();
    }

    /// (b) An SGI left active.
    fn never_eoi(c: &mut Checker) {
        let me = SgiTarget::List(1 << cpu_index());
        gic::send_sgi(SGI_HELD, me);
        let taken = spin_until(100, || count(SGI_HELD) == 1);
        c.check(
            "storm_held_sgi_taken",
            taken,
            format_args!("SGI {SGI_HELD} (priority {LOW:#x}) taken, not EOIed"),
        );
        let rpr = gic::running_priority();
        println!("storm: running priority {rpr:#x} with SGI {SGI_HELD} active");

        gic::send_sgi(SGI_EQUAL, me);
        spin_until(50, || count(SGI_EQUAL) > 0);
        let n = count(SGI_EQUAL);
        c.check(
            "storm_equal_priority_blocked",
            n == 0,
            format_args!(
                "SGI {SGI_EQUAL} (priority {LOW:#x}) taken {n} times while SGI {SGI_HELD} is active, want 0"
            ),
        );

        gic::send_sgi(SGI_HIGHER, me);
        let n_ok = spin_until(100, || count(SGI_HIGHER) == 1);
        c.check(
            "storm_higher_priority_preempts",
            n_ok,
            format_args!("SGI {SGI_HIGHER} (priority {HIGH:#x}) taken while SGI {SGI_HELD} is active"),
        );

        match gic::take_held() {
            Some(irq) => gic::eoi(irq),
            None => c.fail("storm_held_sgi_eoi", "no interrupt was held"),
        }
        let released = spin_until(100, || count(SGI_EQUAL) == 1);
        c.check(
            "storm_eoi_releases",
            released,
            format_args!("SGI {SGI_EQUAL} taken once SGI {SGI_HELD} was EOIed"),
        );
        println!(
            "storm: running priority {:#x} after the EOI",
            gic::running_priority()
        );
    }

    /// (c) 100,000 SGIs to itself as fast as it can.
    fn flood(c: &mut Checker) {
        let me = SgiTarget::List(1 << cpu_index());
        let start = counter();
        for _ in 0..FLOOD {
            gic::send_sgi(SGI_FLOOD, me);
        }
        let ms = (counter() - start) / ms_to_ticks(1);
        spin_until(10, || false);
        let n = count(SGI_FLOOD);
        println!("storm: flood of {FLOOD} SGIs in {ms} ms, took {n}");
        c.check(
            "storm_flood",
            (1..=FLOOD).contains(&n),
            format_args!("{n} of {FLOOD} SGIs taken (coalescing allowed)"),
        );
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
