//! Property tests of the virtqueue parser against a hostile driver: random
//! descriptor tables, random avail rings and indices, random sizes. Whatever
//! the guest wrote, the parser never panics, never loops (each pop reads at
//! most `size` descriptors, each once), and every chain it hands out lies in
//! the VM's RAM with its lengths adding up; a well-formed random set of
//! chains is accepted exactly as the driver wrote it.
//! Fixed seed and case count, so `cargo test` runs the same cases each time.

use super::queue::testmem::VecMemory;
use super::queue::{Chain, GuestMemory, OutsideRam, Queue, QueueError};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::sync::atomic::{AtomicU32, Ordering};
use std::vec::Vec;

const RAM: u64 = 0x4000_0000;
const RAM_SIZE: usize = 0x4_0000;
const DESC: u64 = RAM;
const AVAIL: u64 = RAM + 0x1000;
const USED: u64 = RAM + 0x2000;

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x7172_7565),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Counts the descriptor reads, to prove each pop is bounded.
struct Counting {
    mem: VecMemory,
    desc_reads: AtomicU32,
}

impl GuestMemory for Counting {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutsideRam> {
        if (DESC..DESC + 0x1000).contains(&gpa) {
            self.desc_reads.fetch_add(1, Ordering::Relaxed);
        }
        self.mem.read(gpa, buf)
    }
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), OutsideRam> {
        self.mem.write(gpa, data)
    }
    fn contains(&self, gpa: u64, len: u64) -> bool {
        self.mem.contains(gpa, len)
    }
}

/// Addresses a hostile descriptor may name: in RAM, at its edges, MMIO,
/// far away, near the top of the address space.
fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (0u64..RAM_SIZE as u64).prop_map(|o| RAM + o),
        1 => Just(RAM + RAM_SIZE as u64 - 1),
        1 => Just(RAM - 1),
        1 => Just(0x0900_0000u64),
        1 => Just(0x0800_0000u64),
        1 => any::<u64>(),
        1 => (0u64..64).prop_map(|o| u64::MAX - o),
    ]
}

fn len() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..0x2000, 1 => Just(u32::MAX), 1 => any::<u32>()]
}

/// Flags: mostly plain and NEXT/WRITE combinations, sometimes INDIRECT or junk.
fn flags() -> impl Strategy<Value = u16> {
    prop_oneof![6 => 0u16..4, 1 => 0u16..8, 1 => any::<u16>()]
}

fn desc() -> impl Strategy<Value = (u64, u32, u16, u16)> {
    (
        addr(),
        len(),
        flags(),
        prop_oneof![3 => 0u16..16, 1 => any::<u16>()],
    )
}

fn size() -> impl Strategy<Value = u16> {
    prop_oneof![Just(1u16), Just(2), Just(4), Just(8), Just(16)]
}

fn write_desc(mem: &VecMemory, i: u16, (addr, len, flags, next): (u64, u32, u16, u16)) {
    let mut d = Vec::new();
    d.extend_from_slice(&addr.to_le_bytes());
    d.extend_from_slice(&len.to_le_bytes());
    d.extend_from_slice(&flags.to_le_bytes());
    d.extend_from_slice(&next.to_le_bytes());
    mem.put(DESC + 16 * u64::from(i), &d);
}

fn queue(size: u16, mem: &dyn GuestMemory) -> Queue {
    let mut q = Queue::new(size, DESC, AVAIL, USED);
    q.enable(mem).unwrap();
    q
}

proptest! {
    #![proptest_config(config(512))]

    /// Garbage everywhere: bounded, no panic, and whatever comes out is sane.
    #[test]
    fn hostile_rings_are_bounded_and_what_is_accepted_is_in_ram(
        size in size(),
        descs in proptest::collection::vec(desc(), 16),
        // Heads mostly inside the queue, so chains get walked.
        ring in proptest::collection::vec(prop_oneof![6 => 0u16..16, 1 => any::<u16>()], 16),
        avail_idx in prop_oneof![0u16..20, any::<u16>()],
        steps in 1usize..24,
    ) {
        let m = Counting { mem: VecMemory::new(RAM, RAM_SIZE), desc_reads: AtomicU32::new(0) };
        for (i, d) in descs.iter().enumerate() {
            write_desc(&m.mem, i as u16, *d);
        }
        for (i, h) in ring.iter().enumerate() {
            m.mem.put(AVAIL + 4 + 2 * i as u64, &h.to_le_bytes());
        }
        m.mem.put(AVAIL + 2, &avail_idx.to_le_bytes());
        let mut q = queue(size, &m);
        let mut c = Chain::default();
        for _ in 0..steps {
            let before = m.desc_reads.load(Ordering::Relaxed);
            let r = q.pop(&m, &mut c);
            let reads = m.desc_reads.load(Ordering::Relaxed) - before;
            prop_assert!(reads <= u32::from(size), "{reads} descriptor reads for size {size}");
            match r {
                Ok(false) => break,
                Ok(true) => {
                    prop_assert!(c.segments.len() <= usize::from(size));
                    prop_assert!(c.head < size);
                    let mut readable = 0u64;
                    let mut writable = 0u64;
                    let mut seen_write = false;
                    for s in &c.segments {
                        prop_assert!(m.contains(s.addr, u64::from(s.len)));
                        prop_assert!(!seen_write || s.write, "readable after writable");
                        seen_write |= s.write;
                        if s.write { writable += u64::from(s.len) } else { readable += u64::from(s.len) }
                    }
                    prop_assert_eq!(readable, u64::from(c.readable));
                    prop_assert_eq!(writable, u64::from(c.writable));
                    q.push_used(&m, c.head, 0).unwrap();
                }
                Err(QueueError::IndexJump { .. }) => {
                    prop_assert!(avail_idx > size);
                    break;
                }
                Err(_) => break,
            }
        }
    }

    /// Well-formed chains (random lengths, random order of descriptors) come
    /// out exactly as written, in order, and go back in the used ring.
    #[test]
    fn well_formed_chains_are_accepted_exactly(
        size in prop_oneof![Just(16u16), Just(32)],
        chains in proptest::collection::vec(
            proptest::collection::vec((0u32..0x800, any::<bool>()), 1..4), 1..4),
        perm_seed in any::<u64>(),
    ) {
        let mem = VecMemory::new(RAM, RAM_SIZE);
        let mut q = queue(size, &mem);
        // Hand out descriptor slots in a scrambled order.
        let mut slots: Vec<u16> = (0..size).collect();
        let mut x = perm_seed | 1;
        for i in (1..slots.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            slots.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut next_slot = 0usize;
        let mut expected = Vec::new();
        for (k, chain) in chains.iter().enumerate() {
            // Readable first, as the spec requires.
            let mut chain = chain.clone();
            chain.sort_by_key(|&(_, w)| w);
            let ids: Vec<u16> = chain.iter().map(|_| { next_slot += 1; slots[next_slot - 1] }).collect();
            for (j, &(l, w)) in chain.iter().enumerate() {
                let last = j + 1 == chain.len();
                let flags = u16::from(!last) | if w { 2 } else { 0 };
                let next = if last { 0 } else { ids[j + 1] };
                write_desc(&mem, ids[j], (RAM + 0x8000 + 0x800 * j as u64, l, flags, next));
            }
            mem.put(AVAIL + 4 + 2 * k as u64, &ids[0].to_le_bytes());
            expected.push((ids[0], chain));
        }
        mem.put(AVAIL + 2, &(chains.len() as u16).to_le_bytes());
        let mut c = Chain::default();
        for (k, (head, chain)) in expected.iter().enumerate() {
            prop_assert_eq!(q.pop(&mem, &mut c), Ok(true));
            prop_assert_eq!(c.head, *head);
            let got: Vec<(u32, bool)> = c.segments.iter().map(|s| (s.len, s.write)).collect();
            prop_assert_eq!(&got, chain);
            q.push_used(&mem, c.head, 7).unwrap();
            prop_assert_eq!(mem.get(USED + 2, 2), ((k + 1) as u16).to_le_bytes().to_vec());
        }
        prop_assert_eq!(q.pop(&mem, &mut c), Ok(false));
    }
}
