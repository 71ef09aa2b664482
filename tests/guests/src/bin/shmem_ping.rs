//! `shmem_ping`: bare-metal VMs on a `shmem` link (tests/configs/intervm_shmem.toml).
//! Each finds its index, the region and whether it may write it in its
//! doorbell page at 0x0a80_0000 (Tessera's link 0), and its doorbell
//! interrupt at INTID 112.
//!
//! - index 0 (`ping`): writes message k into the region, rings VM 1, sleeps
//!   in WFI until VM 1 rings back, checks the reply; 1000 rounds, timed
//!   (`BENCH doorbell_rtt` in ticks: from the ring to the answer's wake-up;
//!   `BENCH doorbell`: from the ring to pong's IRQ vector, as the bench
//!   guest's `ipi` row measures an SGI).
//! - index 1 (`pong`): answers each message with its reply; then masks its
//!   doorbell interrupt, and a ring from ping must neither interrupt it nor
//!   be lost: PENDING shows it, and enabling the interrupt delivers it.
//! - index 2 (`reader`, read-only): checks that a store into the region
//!   aborts and that it sees the final message.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::ptr::{read_volatile, write_volatile};
    use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
    use tessera_guests::gic::{self, Trigger};
    use tessera_guests::{
        counter, cpu_index, current_el, expect_fault, mpidr, park, println, spin_until, Checker, Mmio,
        EC_DABT_CURRENT,
    };

    // SAFETY: the doorbell page is MMIO.
    const BELL: Mmio = unsafe { Mmio::new(0x0a80_0000) };
    const INTID: u32 = 112;
    const ROUNDS: u32 = 1000;
    /// Offsets in the region: the message, the reply, the "done" marker.
    const MSG: u64 = 0x0;
    const REPLY: u64 = 0x40;
    const DONE: u64 = 0x80;
    const DONE_MAGIC: u32 = 0x444f_4e45;
    /// pong masked its doorbell interrupt; ping rang it since.
    const MASKED: u64 = 0x100;
    const MASKED_MAGIC: u32 = 0x4d41_534b;
    const RANG: u64 = 0x104;
    const RANG_MAGIC: u32 = 0x5241_4e47;

    /// Rings taken, by the handler.
    static RUNG: AtomicU32 = AtomicU32::new(0);
    /// The counter at the IRQ vector of the last ring taken.
    static RUNG_AT: AtomicU64 = AtomicU64::new(0);
    /// Where pong publishes RUNG_AT for ping.
    const ENTRY: u64 = 0xc0;

    fn on_irq(intid: u32) {
        if intid == INTID {
            RUNG_AT.store(gic::irq_entry_counter(), Ordering::SeqCst);
            let p = BELL.read32(0x0c);
            BELL.write32(0x10, p);
            RUNG.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Region(u64);
    impl Region {
        fn put(&self, off: u64, v: u32) {
            // SAFETY: inside the shared region the doorbell described.
            unsafe { write_volatile((self.0 + off) as *mut u32, v) }
        }
        fn get(&self, off: u64) -> u32 {
            // SAFETY: as for `put`.
            unsafe { read_volatile((self.0 + off) as *const u32) }
        }
        fn put64(&self, off: u64, v: u64) {
            // SAFETY: as for `put`.
            unsafe { write_volatile((self.0 + off) as *mut u64, v) }
        }
        fn get64(&self, off: u64) -> u64 {
            // SAFETY: as for `put`.
            unsafe { read_volatile((self.0 + off) as *const u64) }
        }
    }

    /// Sleeps until the handler has counted more than `seen` rings.
    fn wait_ring(seen: u32) -> u32 {
        gic::wait_for_interrupts_until(|| RUNG.load(Ordering::SeqCst) > seen);
        RUNG.load(Ordering::SeqCst)
    }

    tessera_guests::entry!(run);

    fn run() -> ! {
        println!("shmem_ping: start at EL{}, MPIDR {:#x}", current_el(), mpidr());
        let mut c = Checker::new("shmem_ping");
        let id = BELL.read32(0x00);
        let peers = BELL.read32(0x04);
        let writable = BELL.read32(0x14) == 1;
        let base = u64::from(BELL.read32(0x18)) | u64::from(BELL.read32(0x1c)) << 32;
        let size = u64::from(BELL.read32(0x20)) | u64::from(BELL.read32(0x24)) << 32;
        println!("shmem_ping: VM {id} of {peers}, region {base:#x}+{size:#x}, writable {writable}");
        gic::init_distributor();
        gic::init_cpu();
        gic::set_handler(on_irq);
        gic::set_trigger(INTID, Trigger::Edge);
        gic::set_priority(INTID, 0x80);
        gic::route_spi(INTID, cpu_index());
        gic::enable(INTID);
        gic::irqs_on();
        let r = Region(base);
        match id {
            0 => ping(&mut c, &r),
            1 => pong(&mut c, &r),
            _ => reader(&mut c, &r, writable),
        }
        c.finish();
        park()
    }

    fn ping(c: &mut Checker, r: &Region) {
        // First, before anything is timed (pong spins meanwhile): a ring to
        // a peer that masked its doorbell; pong checks that it is held.
        if spin_until(2_000, || r.get(MASKED) == MASKED_MAGIC) {
            BELL.write32(0x08, 1);
            fence(Ordering::SeqCst);
            r.put(RANG, RANG_MAGIC);
        }
        // Wait (bounded) for VM 1 to be ready: it says so in REPLY.
        let ready = spin_until(10_000, || r.get(REPLY) == 0xffff_ffff);
        c.check("shmem_peer_ready", ready, "VM 1 wrote its ready mark");
        let mut bad = 0u32;
        let mut seen = RUNG.load(Ordering::SeqCst);
        let mut min = u64::MAX;
        let mut max = 0u64;
        let (mut one_min, mut one_max, mut one_sum) = (u64::MAX, 0u64, 0u64);
        let t0 = counter();
        for k in 0..ROUNDS {
            r.put(MSG, k);
            fence(Ordering::SeqCst);
            let t = counter();
            BELL.write32(0x08, 1);
            seen = wait_ring(seen);
            let dt = counter() - t;
            min = min.min(dt);
            max = max.max(dt);
            if r.get(REPLY) != !k {
                bad += 1;
            }
            // One way: this ring to pong's IRQ vector (the `ipi` row's method).
            let one = r.get64(ENTRY).wrapping_sub(t);
            one_min = one_min.min(one);
            one_max = one_max.max(one);
            one_sum = one_sum.wrapping_add(one);
        }
        let total = counter() - t0;
        println!(
            "BENCH doorbell mean={:.3} min={one_min} max={one_max} n={ROUNDS}",
            one_sum as f64 / f64::from(ROUNDS)
        );
        c.check(
            "shmem_messages_answered",
            bad == 0,
            format_args!("{ROUNDS} rounds, {bad} wrong replies"),
        );
        println!(
            "BENCH doorbell_rtt mean={:.3} min={min} max={max} n={ROUNDS}",
            total as f64 / f64::from(ROUNDS)
        );
        r.put(DONE, DONE_MAGIC);
        fence(Ordering::SeqCst);
        BELL.write32(0x08, 2);
        // A ring to a VM not on the link does nothing (and does not fault).
        BELL.write32(0x08, 7);
        c.pass("shmem_ring_off_link_ignored");
    }

    fn pong(c: &mut Checker, r: &Region) {
        masked(c, r);
        let mut seen = RUNG.load(Ordering::SeqCst);
        r.put(REPLY, 0xffff_ffff);
        let mut answered = 0u32;
        while answered < ROUNDS {
            seen = wait_ring(seen);
            let k = r.get(MSG);
            r.put64(ENTRY, RUNG_AT.load(Ordering::SeqCst));
            r.put(REPLY, !k);
            fence(Ordering::SeqCst);
            BELL.write32(0x08, 0);
            answered += 1;
        }
        c.check("shmem_pong_answered", true, format_args!("{answered} messages"));
    }

    /// Masked: a ring must wait in the distributor (pending), not reach
    /// this vCPU, and arrive once the interrupt is enabled again.
    fn masked(c: &mut Checker, r: &Region) {
        gic::disable(INTID);
        let before = RUNG.load(Ordering::SeqCst);
        fence(Ordering::SeqCst);
        r.put(MASKED, MASKED_MAGIC);
        let rang = spin_until(2_000, || r.get(RANG) == RANG_MAGIC);
        // IRQs are unmasked here: a ring that got through would be taken.
        let _ = spin_until(5, || RUNG.load(Ordering::SeqCst) != before);
        let held = RUNG.load(Ordering::SeqCst) == before;
        let pending = BELL.read32(0x0c) & 1 != 0;
        gic::enable(INTID);
        let delivered = spin_until(100, || RUNG.load(Ordering::SeqCst) != before);
        c.check(
            "shmem_masked_doorbell_held_until_enabled",
            rang && held && pending && delivered,
            format_args!(
                "rang {rang}, held while masked {held}, PENDING {pending}, delivered on enable {delivered}"
            ),
        );
    }

    fn reader(c: &mut Checker, r: &Region, writable: bool) {
        c.check("shmem_reader_read_only", !writable, "WRITABLE reads 0");
        match expect_fault(|| r.put(DONE + 4, 1)) {
            Some(f) => c.check(
                "shmem_store_to_read_only_region_aborts",
                f.ec() == EC_DABT_CURRENT,
                format_args!("ESR={:#x} FAR={:#x}", f.esr, f.far),
            ),
            None => c.check("shmem_store_to_read_only_region_aborts", false, "no exception"),
        };
        // In WFI, not polling: a spinning neighbour would inflate what ping
        // measures under icount. ping rings this VM when it is done.
        gic::wait_for_interrupts_until(|| r.get(DONE) == DONE_MAGIC);
        let rung = RUNG.load(Ordering::SeqCst) > 0;
        c.check(
            "shmem_reader_sees_the_final_message",
            rung && r.get(MSG) == ROUNDS - 1,
            format_args!("rung {rung}, done {:#x}, message {}", r.get(DONE), r.get(MSG)),
        );
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
