//! The driver against a model of the SMMU's registers and command consumer.

use super::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::vec::Vec;

#[derive(Default)]
struct Model {
    regs: HashMap<usize, u64>,
    /// Commands consumed, in order.
    seen: Vec<Command>,
    /// Consume at most this many commands per PROD write (None: all).
    per_write: Option<usize>,
    /// Stop at (and flag) the first command with this opcode.
    reject: Option<u8>,
    barriers: usize,
}

struct Fake(RefCell<Model>);

const IDR1_SID16_CMDQ8_EVTQ7: u32 = 16 | (7 << 16) | (8 << 21);

impl Fake {
    fn new() -> Self {
        let f = Fake(RefCell::new(Model::default()));
        {
            let mut m = f.0.borrow_mut();
            m.regs.insert(IDR0, 1 | (0b10 << 2));
            m.regs.insert(IDR1, u64::from(IDR1_SID16_CMDQ8_EVTQ7));
            m.regs.insert(IDR5, 4);
        }
        f
    }

    fn consume(m: &mut Model) {
        let base = m.regs.get(&CMDQ_BASE).copied().unwrap_or(0);
        let ring = Ring {
            log2size: (base & 0x1f) as u32,
        };
        let q = (base & ADDR_MASK) as *const u64;
        let prod = m.regs.get(&CMDQ_PROD).copied().unwrap_or(0) as u32;
        let mut cons = m.regs.get(&CMDQ_CONS).copied().unwrap_or(0) as u32;
        let gerror_pending =
            (m.regs.get(&GERROR).copied().unwrap_or(0) ^ m.regs.get(&GERRORN).copied().unwrap_or(0)) & 1;
        let mut n = 0;
        while gerror_pending == 0 && !ring.is_empty(prod, cons) && m.per_write.is_none_or(|p| n < p) {
            let slot = ring.slot(cons);
            // SAFETY (test): the driver's command queue, alive for the test.
            let c = unsafe { [*q.add(slot * 2), *q.add(slot * 2 + 1)] };
            if Some(cmd::opcode(&c)) == m.reject {
                m.reject = None;
                let g = m.regs.get(&GERROR).copied().unwrap_or(0) ^ 1;
                m.regs.insert(GERROR, g);
                m.regs.insert(CMDQ_CONS, u64::from(cons | (1 << 24)));
                return;
            }
            m.seen.push(c);
            cons = ring.next(cons);
            n += 1;
        }
        m.regs.insert(CMDQ_CONS, u64::from(cons));
    }
}

impl Mmio for &Fake {
    fn read32(&self, offset: usize) -> u32 {
        let mut m = self.0.borrow_mut();
        if offset == CMDQ_CONS {
            // The model consumes whenever it is asked where it is.
            Fake::consume(&mut m);
        }
        m.regs.get(&offset).copied().unwrap_or(0) as u32
    }
    fn write32(&self, offset: usize, value: u32) {
        let mut m = self.0.borrow_mut();
        m.regs.insert(offset, u64::from(value));
        match offset {
            CR0 => {
                m.regs.insert(CR0ACK, u64::from(value));
            }
            IRQ_CTRL => {
                m.regs.insert(IRQ_CTRLACK, u64::from(value));
            }
            GBPA => {
                m.regs.insert(GBPA, u64::from(value & !GBPA_UPDATE));
            }
            CMDQ_PROD => Fake::consume(&mut m),
            GERRORN => Fake::consume(&mut m),
            _ => {}
        }
    }
    fn write64(&self, offset: usize, value: u64) {
        self.0.borrow_mut().regs.insert(offset, value);
    }
    fn barrier(&self) {
        self.0.borrow_mut().barriers += 1;
    }
}

fn leak(words: usize) -> &'static mut [u64] {
    // Aligned to its size, as the SMMU wants its tables and queues.
    let layout = std::alloc::Layout::from_size_align(words * 8, (words * 8).max(64)).unwrap();
    // SAFETY (test): a fresh allocation of that layout, never freed.
    unsafe { std::slice::from_raw_parts_mut(std::alloc::alloc_zeroed(layout) as *mut u64, words) }
}

fn driver(fake: &Fake, cmdq_log2: Option<u32>) -> Smmu<&Fake> {
    let mut f = Features::read(&fake);
    if let Some(l) = cmdq_log2 {
        f.cmdq_log2 = l;
    }
    let (st, cq, eq) = f.words();
    Smmu::init(
        fake,
        f,
        Tables {
            strtab: leak(st),
            cmdq: leak(cq),
            evtq: leak(eq),
        },
    )
    .unwrap()
}

#[test]
fn init_aborts_bypass_and_every_stream_then_enables() {
    let fake = Fake::new();
    let s = driver(&fake, None);
    assert_eq!(s.streams(), 1 << 16);
    for sid in [0, 8, 0xffff] {
        assert_eq!(s.ste(sid), Some(ste::Decoded::Abort));
    }
    let m = fake.0.borrow();
    assert_eq!(m.regs[&GBPA] as u32 & GBPA_ABORT, GBPA_ABORT);
    assert_eq!(m.regs[&CR0ACK] as u32, CR0_SMMUEN | CR0_CMDQEN | CR0_EVENTQEN);
    assert_eq!(m.regs[&IRQ_CTRLACK] as u32, IRQ_GERROR | IRQ_EVENTQ);
    assert_eq!(m.regs[&STRTAB_BASE_CFG], 16, "linear, 16-bit stream IDs");
    let ops: Vec<u8> = m.seen.iter().map(cmd::opcode).collect();
    assert_eq!(ops, [0x04, 0x30, 0x20, 0x46]);
}

#[test]
fn a_device_without_stage2_is_refused() {
    let fake = Fake::new();
    fake.0.borrow_mut().regs.insert(IDR0, 0b10 << 2 | 0b10);
    let f = Features::read(&&fake);
    let (st, cq, eq) = f.words();
    let r = Smmu::init(
        &fake,
        f,
        Tables {
            strtab: leak(st),
            cmdq: leak(cq),
            evtq: leak(eq),
        },
    );
    assert_eq!(r.err(), Some(Error::NoStage2));
}

#[test]
fn assign_writes_stage2_then_invalidates_and_syncs() {
    let fake = Fake::new();
    let mut s = driver(&fake, None);
    let s2 = Stage2 {
        root: 0x4800_0000,
        vmid: 3,
        vtcr: 24 | (1 << 6) | (4 << 16),
    };
    s.assign(8..10, &s2).unwrap();
    assert!(matches!(
        s.ste(8),
        Some(ste::Decoded::Stage2 {
            vmid: 3,
            root: 0x4800_0000,
            ..
        })
    ));
    assert!(matches!(s.ste(9), Some(ste::Decoded::Stage2 { .. })));
    assert_eq!(s.ste(10), Some(ste::Decoded::Abort));
    let seen = fake.0.borrow().seen.clone();
    let tail: Vec<Command> = seen[seen.len() - 4..].to_vec();
    assert_eq!(
        tail,
        [
            cmd::cfgi_ste(8),
            cmd::cfgi_ste(9),
            cmd::tlbi_s12_vmall(3),
            cmd::sync()
        ]
    );
    // A whole bus at once: one CFGI_ALL instead of 256 commands.
    s.assign(0..256, &s2).unwrap();
    let seen = fake.0.borrow().seen.clone();
    assert_eq!(
        seen[seen.len() - 3..],
        [cmd::cfgi_all(), cmd::tlbi_s12_vmall(3), cmd::sync()]
    );
    s.abort(0..256, 3).unwrap();
    assert_eq!(s.ste(8), Some(ste::Decoded::Abort));
    assert_eq!(
        s.assign(0xffff..0x1_0001, &s2),
        Err(Error::NoSuchStream(0x1_0000))
    );
}

#[test]
fn the_command_queue_wraps_around_many_times() {
    let fake = Fake::new();
    // Four entries; the model consumes one command per PROD write, so the
    // driver meets a full queue and waits for room again and again.
    let mut s = driver(&fake, Some(2));
    fake.0.borrow_mut().per_write = Some(1);
    fake.0.borrow_mut().seen.clear();
    for sid in 0..37u32 {
        s.submit(cmd::cfgi_ste(sid)).unwrap();
    }
    fake.0.borrow_mut().per_write = None;
    s.sync().unwrap();
    let seen = fake.0.borrow().seen.clone();
    let want: Vec<Command> = (0..37).map(cmd::cfgi_ste).chain([cmd::sync()]).collect();
    assert_eq!(seen, want, "every command once, in order, across the wrap");
}

#[test]
fn a_rejected_command_is_reported_and_the_queue_goes_on() {
    let fake = Fake::new();
    let mut s = driver(&fake, None);
    fake.0.borrow_mut().reject = Some(0x28);
    let r = s.assign(
        1..2,
        &Stage2 {
            root: 0x1000,
            vmid: 9,
            vtcr: 24,
        },
    );
    assert_eq!(r, Err(Error::Command { opcode: 0x28, err: 1 }));
    // Replaced by a CMD_SYNC and acknowledged: the next sync completes.
    s.sync().unwrap();
}

#[test]
fn events_are_drained_with_overflow_acknowledged() {
    let fake = Fake::new();
    let mut s = driver(&fake, None);
    let base = fake.0.borrow().regs[&EVENTQ_BASE];
    let q = (base & ADDR_MASK) as *mut u64;
    for i in 0..3u64 {
        // SAFETY (test): the driver's event queue, alive for the test.
        unsafe {
            *q.add(i as usize * 4) = 0x10 | ((8 + i) << 32);
            *q.add(i as usize * 4 + 1) = 1 << 39;
            *q.add(i as usize * 4 + 2) = 0x5000_0000 + i;
        }
    }
    fake.0
        .borrow_mut()
        .regs
        .insert(EVENTQ_PROD, u64::from(3 | PROD_OVFLG));
    let mut got = Vec::new();
    // Bounded: two now, the third on the next call.
    assert_eq!(s.drain_events(2, |e| got.push(e)), (2, true));
    assert_eq!(fake.0.borrow().regs[&EVENTQ_CONS] as u32, 2 | PROD_OVFLG);
    assert_eq!(s.drain_events(8, |e| got.push(e)), (1, false));
    assert_eq!(got.iter().map(|e| e.sid).collect::<Vec<_>>(), [8, 9, 10]);
    assert!(got.iter().all(|e| e.stage2 && e.id == 0x10));
    assert_eq!(got[2].addr, 0x5000_0002);
    assert_eq!(s.drain_events(8, |_| panic!("no more")), (0, false));
}

#[test]
fn global_errors_are_acknowledged_once() {
    let fake = Fake::new();
    let mut s = driver(&fake, None);
    fake.0.borrow_mut().regs.insert(GERROR, 1 << 2);
    assert_eq!(s.take_gerror(), 1 << 2);
    assert_eq!(s.take_gerror(), 0);
}
