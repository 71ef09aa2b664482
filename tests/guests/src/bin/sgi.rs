//! `sgi`: software-generated interrupts between the VM's vCPUs. vCPU 0 sends
//! SGI 1 to each other vCPU by target list, SGI 2 to all but itself, SGI 3 to
//! CPUs the VM does not have (Aff0 / interface 9 on GICv3, 7 on GICv2, and
//! the first index past its last vCPU); then each secondary in turn sends SGI 4 back to
//! vCPU 0. Every SGI must arrive exactly where it was sent, once. Finally the
//! IPI latency vCPU 0 -> vCPU 1 (SGI 5) over 1000 round trips is printed.
//! Secondaries sleep in WFI; SGI 6 is the doorbell that wakes them for a
//! command. SGI 7 checks the active state: it reads active (ISACTIVER) in
//! its handler and not after, ICACTIVER ends it, and on GICv3 vCPU 0 sees
//! it active in vCPU 1's redistributor while vCPU 1 handles it. Needs at
//! least 2 vCPUs.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{
        AtomicBool, AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
    };
    use tessera_guests::gic::{self, SgiTarget, Version};
    use tessera_guests::{
        counter, cpu_index, current_el, mpidr, ms_to_ticks, park, println, spin_until, start_secondaries,
        Checker, MAX_CPUS,
    };

    const SGI_TARGETED: u32 = 1;
    const SGI_BROADCAST: u32 = 2;
    const SGI_NOWHERE: u32 = 3;
    const SGI_BACK: u32 = 4;
    const SGI_PING: u32 = 5;
    const SGI_DOORBELL: u32 = 6;
    const SGI_ACTIVE: u32 = 7;
    /// Never enabled on any vCPU.
    const SGI_DISABLED: u32 = 9;
    const ROUNDS: u32 = 1000;
    /// How long an SGI gets to arrive.
    const WAIT_MS: u64 = 100;
    /// How long we keep looking for duplicates once the expected ones came.
    const SETTLE_MS: u64 = 5;

    /// Per vCPU, per SGI: how many it took.
    static COUNTS: [[AtomicU32; 16]; MAX_CPUS] = [const { [const { AtomicU32::new(0) }; 16] }; MAX_CPUS];
    /// Interrupts that are no SGI, any vCPU.
    static OTHER: AtomicU32 = AtomicU32::new(0);
    static UP: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
    /// Per vCPU: set by vCPU 0 (then SGI 6) to make it send SGI 4 to vCPU 0.
    static SEND_BACK: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
    /// Counter value at the last SGI 5's handler entry (on vCPU 1).
    static PING_AT: AtomicU64 = AtomicU64::new(0);
    /// SGI 7's handler: 1 + whether it read active there (0: not run).
    static ACTIVE_IN_HANDLER: AtomicU32 = AtomicU32::new(0);
    /// SGI 7's handler: 1 + whether it still read active after ICACTIVER.
    static ACTIVE_AFTER_CLEAR: AtomicU32 = AtomicU32::new(0);
    /// Make SGI 7's handler write ICACTIVER.
    static CLEAR_IN_HANDLER: AtomicBool = AtomicBool::new(false);
    /// SGI 7's handler on vCPU 1 is running and waits for RELEASE.
    static HELD: AtomicBool = AtomicBool::new(false);
    static RELEASE: AtomicBool = AtomicBool::new(false);

    tessera_guests::entry!(run);

    fn on_irq(intid: u32) {
        if intid == SGI_PING {
            PING_AT.store(counter(), Relaxed);
        }
        if intid == SGI_ACTIVE {
            if cpu_index() == 0 {
                ACTIVE_IN_HANDLER.store(1 + u32::from(gic::is_active(SGI_ACTIVE)), Release);
                if CLEAR_IN_HANDLER.load(Acquire) {
                    gic::clear_active(SGI_ACTIVE);
                    ACTIVE_AFTER_CLEAR.store(1 + u32::from(gic::is_active(SGI_ACTIVE)), Release);
                }
            } else {
                HELD.store(true, Release);
                spin_until(WAIT_MS, || RELEASE.load(Acquire));
                HELD.store(false, Release);
            }
        }
        match COUNTS[cpu_index()].get(intid as usize) {
            Some(n) => {
                n.fetch_add(1, Release);
            }
            None => {
                OTHER.fetch_add(1, Relaxed);
            }
        }
    }

    fn count(cpu: usize, sgi: u32) -> u32 {
        COUNTS[cpu][sgi as usize].load(Acquire)
    }

    /// Enables the SGIs this guest uses on this vCPU.
    fn enable_sgis() {
        for sgi in SGI_TARGETED..=SGI_ACTIVE {
            gic::enable(sgi);
        }
    }

    fn run() -> ! {
        println!("sgi: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        println!("sgi: {}", gic::version_name());
        let mut c = Checker::new("sgi");
        gic::init_distributor();
        gic::init_cpu();
        gic::set_handler(on_irq);
        enable_sgis();
        gic::irqs_on();

        let cpus = start_secondaries(secondary);
        println!("sgi: {cpus} vCPUs");
        if cpus < 2 {
            c.fail("sgi_vcpus", "needs at least 2 vCPUs, the VM has 1");
            c.finish();
            park();
        }
        let up = spin_until(1000, || UP[1..cpus].iter().all(|u| u.load(Acquire)));
        c.check("sgi_cpus_up", up, format_args!("{cpus} vCPUs"));

        targeted(&mut c, cpus);
        broadcast(&mut c, cpus);
        nowhere(&mut c, cpus);
        disabled(&mut c);
        back(&mut c, cpus);
        latency(&mut c);
        active_state(&mut c);

        let other = OTHER.load(Relaxed);
        c.check(
            "sgi_no_other_interrupts",
            other == 0,
            format_args!("{other} interrupts that are no SGI"),
        );
        c.finish();
        gic::irqs_off();
        park()
    }

    /// SGI 7: active while handled, inactive after, ICACTIVER ends it; and
    /// (GICv3) visible in another vCPU's redistributor.
    fn active_state(c: &mut Checker) {
        let me = SgiTarget::List(1);
        gic::send_sgi(SGI_ACTIVE, me);
        spin_until(WAIT_MS, || ACTIVE_IN_HANDLER.load(Acquire) != 0);
        let seen = ACTIVE_IN_HANDLER.swap(0, Relaxed);
        c.check(
            "sgi_active_while_handled",
            seen == 2,
            format_args!("ISACTIVER bit {}", i64::from(seen) - 1),
        );
        let after = gic::is_active(SGI_ACTIVE);
        c.check(
            "sgi_inactive_after_eoi",
            !after,
            format_args!("ISACTIVER bit {}", u8::from(after)),
        );

        CLEAR_IN_HANDLER.store(true, Release);
        gic::send_sgi(SGI_ACTIVE, me);
        spin_until(WAIT_MS, || ACTIVE_AFTER_CLEAR.load(Acquire) != 0);
        CLEAR_IN_HANDLER.store(false, Release);
        let cleared = ACTIVE_AFTER_CLEAR.load(Acquire);
        c.check(
            "sgi_icactiver_clears_active",
            cleared == 1,
            format_args!("ISACTIVER bit {} after ICACTIVER", i64::from(cleared) - 1),
        );
        // The interrupt still works afterwards.
        ACTIVE_IN_HANDLER.store(0, Relaxed);
        gic::send_sgi(SGI_ACTIVE, me);
        let again = spin_until(WAIT_MS, || ACTIVE_IN_HANDLER.load(Acquire) != 0);
        c.check("sgi_taken_after_icactiver", again, "SGI 7 taken again");

        if gic::version() != Version::V3 {
            return;
        }
        RELEASE.store(false, Release);
        gic::send_sgi(SGI_ACTIVE, SgiTarget::List(1 << 1));
        let held = spin_until(WAIT_MS, || HELD.load(Acquire));
        let remote = gic::is_active_on(1, SGI_ACTIVE);
        RELEASE.store(true, Release);
        c.check(
            "sgi_active_on_other_vcpu",
            held && remote == Some(true),
            format_args!("handler running: {held}, vCPU 1's ISACTIVER0 bit 7: {remote:?}"),
        );
        spin_until(WAIT_MS, || !HELD.load(Acquire));
        spin_until(SETTLE_MS, || false);
        let remote = gic::is_active_on(1, SGI_ACTIVE);
        c.check(
            "sgi_inactive_on_other_vcpu_after",
            remote == Some(false),
            format_args!("vCPU 1's ISACTIVER0 bit 7: {remote:?}"),
        );
    }

    /// SGI 1 to each secondary by its own target-list bit.
    fn targeted(c: &mut Checker, cpus: usize) {
        for k in 1..cpus {
            gic::send_sgi(SGI_TARGETED, SgiTarget::List(1 << k));
        }
        spin_until(WAIT_MS, || (1..cpus).all(|k| count(k, SGI_TARGETED) >= 1));
        spin_until(SETTLE_MS, || false);
        for k in 0..cpus {
            let n = count(k, SGI_TARGETED);
            let want = u32::from(k != 0);
            c.check(
                format_args!("sgi_targeted_cpu{k}"),
                n == want,
                format_args!("vCPU {k} took SGI {SGI_TARGETED} {n} times, want {want}"),
            );
        }
    }

    /// SGI 2 to all but self.
    fn broadcast(c: &mut Checker, cpus: usize) {
        gic::send_sgi(SGI_BROADCAST, SgiTarget::AllButSelf);
        spin_until(WAIT_MS, || (1..cpus).all(|k| count(k, SGI_BROADCAST) >= 1));
        spin_until(SETTLE_MS, || false);
        for k in 1..cpus {
            let n = count(k, SGI_BROADCAST);
            c.check(
                format_args!("sgi_broadcast_cpu{k}"),
                n == 1,
                format_args!("vCPU {k} took SGI {SGI_BROADCAST} {n} times, want 1"),
            );
        }
        let n = count(0, SGI_BROADCAST);
        c.check(
            "sgi_broadcast_not_self",
            n == 0,
            format_args!("the sender took SGI {SGI_BROADCAST} {n} times, want 0"),
        );
    }

    /// SGI 3 to a CPU the VM does not have: Aff0 9 (GICv3), interface 7 (GICv2).
    fn nowhere(c: &mut Checker, cpus: usize) {
        let bit = match gic::version() {
            Version::V3 => 9,
            Version::V2 => 7,
        };
        if cpus > bit {
            c.fail("sgi_nonexistent_target", format_args!("the VM has CPU {bit}"));
            return;
        }
        // Also the first index past the VM's last vCPU: under Tessera that
        // may be another VM's CPU.
        gic::send_sgi(SGI_NOWHERE, SgiTarget::List(1 << bit));
        gic::send_sgi(SGI_NOWHERE, SgiTarget::List(1 << cpus));
        spin_until(WAIT_MS, || false);
        let total: u32 = (0..cpus).map(|k| count(k, SGI_NOWHERE)).sum();
        c.check(
            "sgi_nonexistent_target",
            total == 0,
            format_args!("SGI {SGI_NOWHERE} to target bits {bit} and {cpus} was taken {total} times, want 0"),
        );
    }

    /// SGI 9 to vCPU 1, which never enabled it: GICv3 keeps it pending in
    /// the redistributor, it is not taken (the one-target IPI path must
    /// not skip the enable). GICv2's SGIs are always enabled (GICD_ISENABLER0
    /// reads as ones for them, IHI 0048B 4.3.5 allows it): there it is taken.
    fn disabled(c: &mut Checker) {
        gic::send_sgi(SGI_DISABLED, SgiTarget::List(1 << 1));
        // Long enough for a loaded host to run vCPU 1 (GICv2 returns as
        // soon as it is taken; on GICv3 it must not be taken at all).
        spin_until(10 * WAIT_MS, || count(1, SGI_DISABLED) != 0);
        let n = count(1, SGI_DISABLED);
        let want = match gic::version() {
            Version::V3 => 0,
            Version::V2 => 1,
        };
        c.check(
            "sgi_to_a_disabled_sgi_waits",
            n == want,
            format_args!(
                "vCPU 1 took SGI {SGI_DISABLED} (never enabled) {n} times, want {want} on {}",
                gic::version_name()
            ),
        );
    }

    /// Each secondary in turn sends SGI 4 to vCPU 0.
    fn back(c: &mut Checker, cpus: usize) {
        for (k, send_back) in SEND_BACK.iter().enumerate().take(cpus).skip(1) {
            send_back.store(true, Release);
            gic::send_sgi(SGI_DOORBELL, SgiTarget::List(1 << k));
            let want = k as u32;
            spin_until(WAIT_MS, || count(0, SGI_BACK) >= want);
            spin_until(SETTLE_MS, || false);
            let n = count(0, SGI_BACK);
            c.check(
                format_args!("sgi_back_from_cpu{k}"),
                n == want,
                format_args!("vCPU 0 has taken SGI {SGI_BACK} {n} times, want {want}"),
            );
        }
        let stray: u32 = (1..cpus).map(|k| count(k, SGI_BACK)).sum();
        c.check(
            "sgi_back_only_to_cpu0",
            stray == 0,
            format_args!("secondaries took SGI {SGI_BACK} {stray} times, want 0"),
        );
    }

    /// SGI 5 to vCPU 1, 1000 times, each waited for.
    fn latency(c: &mut Checker) {
        let (mut min, mut max, mut sum, mut lost) = (u64::MAX, 0u64, 0u64, 0u32);
        let timeout = ms_to_ticks(WAIT_MS);
        for i in 0..ROUNDS {
            let before = count(1, SGI_PING);
            let sent = counter();
            gic::send_sgi(SGI_PING, SgiTarget::List(1 << 1));
            while count(1, SGI_PING) == before {
                if counter() - sent > timeout {
                    break;
                }
                core::hint::spin_loop();
            }
            if count(1, SGI_PING) == before {
                lost += 1;
                if lost == 1 {
                    println!("sgi: ping {i} never arrived");
                }
                continue;
            }
            let t = PING_AT.load(Relaxed).saturating_sub(sent);
            min = min.min(t);
            max = max.max(t);
            sum += t;
        }
        let got = u64::from(ROUNDS - lost);
        let mean = sum.checked_div(got).unwrap_or(0);
        if got == 0 {
            min = 0;
        }
        println!("sgi: ipi latency min {min} mean {mean} max {max} ticks");
        c.check(
            "sgi_ipi_rounds",
            lost == 0,
            format_args!("{got} of {ROUNDS} SGIs to vCPU 1 arrived within {WAIT_MS} ms"),
        );
    }

    fn secondary(k: usize) -> ! {
        gic::init_cpu();
        enable_sgis();
        UP[k].store(true, Release);
        loop {
            gic::wait_for_interrupts_until(|| SEND_BACK[k].load(Acquire));
            SEND_BACK[k].store(false, Relaxed);
            gic::send_sgi(SGI_BACK, SgiTarget::List(1));
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
