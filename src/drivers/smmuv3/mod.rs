//! Arm SMMUv3: stage-2 translation of device DMA, driven from EL2.
//!
//! The driver knows streams, stage-2 tables and VMIDs, not VMs: the VM
//! layer (`vm/smmu.rs`) says which streams translate through which tables.
//! Every stream starts as ABORT (nothing a device does reaches memory until
//! its stream is assigned), the SMMU's global bypass is set to abort before
//! anything else, and every STE change is followed by configuration and TLB
//! invalidation and a CMD_SYNC.
//!
//! Register access goes through [`Mmio`] so the host tests can drive the
//! driver against a model; the tables and queues are normal memory the
//! caller allocates (identity mapped: a slice's address is its physical one).

pub mod cmd;
pub mod event;
pub mod probe;
pub mod ste;
#[cfg(test)]
mod tests;

use cmd::{Command, Ring};
use core::fmt;
use core::ops::Range;
use ste::{Stage2, Ste, STE_WORDS};

// Register offsets (SMMUv3 spec, 6.3). EVENTQ_PROD/CONS live in page 1.
pub const IDR0: usize = 0x00;
pub const IDR1: usize = 0x04;
pub const IDR5: usize = 0x14;
pub const CR0: usize = 0x20;
pub const CR0ACK: usize = 0x24;
pub const CR1: usize = 0x28;
pub const CR2: usize = 0x2c;
pub const GBPA: usize = 0x44;
pub const IRQ_CTRL: usize = 0x50;
pub const IRQ_CTRLACK: usize = 0x54;
pub const GERROR: usize = 0x60;
pub const GERRORN: usize = 0x64;
pub const STRTAB_BASE: usize = 0x80;
pub const STRTAB_BASE_CFG: usize = 0x88;
pub const CMDQ_BASE: usize = 0x90;
pub const CMDQ_PROD: usize = 0x98;
pub const CMDQ_CONS: usize = 0x9c;
pub const EVENTQ_BASE: usize = 0xa0;
pub const EVENTQ_PROD: usize = 0x1_00a8;
pub const EVENTQ_CONS: usize = 0x1_00ac;
/// The register frame: two 64 KiB pages.
pub const FRAME_SIZE: u64 = 0x2_0000;

const CR0_SMMUEN: u32 = 1 << 0;
const CR0_EVENTQEN: u32 = 1 << 2;
const CR0_CMDQEN: u32 = 1 << 3;
const GBPA_ABORT: u32 = 1 << 20;
const GBPA_UPDATE: u32 = 1 << 31;
const IRQ_GERROR: u32 = 1 << 0;
const IRQ_EVENTQ: u32 = 1 << 2;
const GERROR_CMDQ_ERR: u32 = 1 << 0;
/// Queue and table base registers: read-allocate (or write-allocate for the
/// event queue), bit 62.
const BASE_ALLOC: u64 = 1 << 62;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_ffe0;
/// CR1: queues and tables inner/outer write-back, inner shareable.
const CR1_WB_ISH: u32 = 0b01 | (0b01 << 2) | (0b11 << 4) | (0b01 << 6) | (0b01 << 8) | (0b11 << 10);
/// CR2: record C_BAD_STREAMID events (RECINVSID), private TLB maintenance (PTM).
const CR2_RECINVSID_PTM: u32 = (1 << 1) | (1 << 2);
const PROD_OVFLG: u32 = 1 << 31;

/// Largest queues and stream table Tessera allocates (entries, as log2).
pub const MAX_CMDQ_LOG2: u32 = 8;
pub const MAX_EVTQ_LOG2: u32 = 10;
/// A linear stream table for up to 16-bit stream IDs (4 MiB at 64 KiB STEs).
pub const MAX_SID_BITS: u32 = 16;

/// Register access to one SMMU.
pub trait Mmio {
    fn read32(&self, offset: usize) -> u32;
    fn write32(&self, offset: usize, value: u32);
    fn write64(&self, offset: usize, value: u64);
    /// Orders this CPU's writes to normal memory (tables, queues) before
    /// its next register write, and completes them for the SMMU's walker.
    fn barrier(&self);
}

/// What the SMMU offers (IDR0, IDR1, IDR5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    pub stage2: bool,
    pub aarch64_tables: bool,
    pub sid_bits: u32,
    pub cmdq_log2: u32,
    pub evtq_log2: u32,
    /// IDR5.OAS, encoded like VTCR_EL2.PS.
    pub oas: u64,
}

impl Features {
    pub fn read(m: &impl Mmio) -> Self {
        let idr0 = m.read32(IDR0);
        let idr1 = m.read32(IDR1);
        Self {
            stage2: idr0 & 1 != 0,
            aarch64_tables: (idr0 >> 2) & 0b10 != 0,
            sid_bits: (idr1 & 0x3f).min(MAX_SID_BITS),
            cmdq_log2: ((idr1 >> 21) & 0x1f).min(MAX_CMDQ_LOG2),
            evtq_log2: ((idr1 >> 16) & 0x1f).min(MAX_EVTQ_LOG2),
            oas: u64::from(m.read32(IDR5) & 0b111),
        }
    }

    /// 64-bit words of the stream table, the command queue and the event queue.
    pub fn words(&self) -> (usize, usize, usize) {
        (
            (1usize << self.sid_bits) * STE_WORDS,
            (1usize << self.cmdq_log2) * 2,
            (1usize << self.evtq_log2) * 4,
        )
    }
}

/// The memory the SMMU reads and writes, sized by [`Features::words`] and
/// aligned to its size (32 bytes at least); the address of each slice is
/// its physical address.
pub struct Tables {
    pub strtab: &'static mut [u64],
    pub cmdq: &'static mut [u64],
    pub evtq: &'static mut [u64],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    NoStage2,
    NoAArch64Tables,
    /// A table or queue of the wrong size.
    BadTables,
    /// The SMMU did not acknowledge (the register) in time.
    Timeout(&'static str),
    /// The command queue stopped at a command it rejected (CONS.ERR).
    Command {
        opcode: u8,
        err: u32,
    },
    /// A stream beyond the stream table.
    NoSuchStream(u32),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoStage2 => write!(f, "no stage-2 translation (IDR0.S2P = 0)"),
            Error::NoAArch64Tables => write!(f, "no AArch64 translation tables (IDR0.TTF)"),
            Error::BadTables => write!(f, "stream table or queues of the wrong size"),
            Error::Timeout(what) => write!(f, "no answer from {what}"),
            Error::Command { opcode, err } => {
                write!(f, "command {opcode:#04x} rejected (CMDQ_CONS.ERR {err:#x})")
            }
            Error::NoSuchStream(sid) => write!(f, "stream {sid:#x} beyond the stream table"),
        }
    }
}

/// How long to poll an acknowledgement or the command queue.
const SPINS: u32 = 1_000_000;

pub struct Smmu<M: Mmio> {
    mmio: M,
    features: Features,
    strtab: &'static mut [u64],
    cmdq: &'static mut [u64],
    cmd: Ring,
    /// The producer index as this driver last advanced it.
    cmd_prod: u32,
    evtq: &'static mut [u64],
    evt: Ring,
}

impl<M: Mmio> Smmu<M> {
    /// Takes the SMMU over: global bypass to abort, every stream to ABORT,
    /// queues up, caches invalidated, interrupts (event queue, global
    /// errors) on, translation on.
    pub fn init(mmio: M, features: Features, tables: Tables) -> Result<Self, Error> {
        if !features.stage2 {
            return Err(Error::NoStage2);
        }
        if !features.aarch64_tables {
            return Err(Error::NoAArch64Tables);
        }
        let (st, cq, eq) = features.words();
        if tables.strtab.len() != st || tables.cmdq.len() != cq || tables.evtq.len() != eq {
            return Err(Error::BadTables);
        }
        // Whatever ran before us: traffic aborts while the SMMU is off.
        mmio.write32(GBPA, GBPA_ABORT | GBPA_UPDATE);
        wait(&mmio, GBPA, GBPA_UPDATE, 0, "GBPA.UPDATE")?;
        mmio.write32(CR0, 0);
        wait(&mmio, CR0ACK, !0, 0, "CR0ACK (disable)")?;
        mmio.write32(IRQ_CTRL, 0);
        wait(&mmio, IRQ_CTRLACK, !0, 0, "IRQ_CTRLACK")?;

        for e in tables.strtab.chunks_exact_mut(STE_WORDS) {
            e.copy_from_slice(&ste::abort());
        }
        tables.cmdq.fill(0);
        tables.evtq.fill(0);
        let mut s = Self {
            cmd: Ring {
                log2size: features.cmdq_log2,
            },
            evt: Ring {
                log2size: features.evtq_log2,
            },
            mmio,
            features,
            strtab: tables.strtab,
            cmdq: tables.cmdq,
            cmd_prod: 0,
            evtq: tables.evtq,
        };
        let m = &s.mmio;
        m.barrier();
        m.write32(CR1, CR1_WB_ISH);
        m.write32(CR2, CR2_RECINVSID_PTM);
        m.write64(STRTAB_BASE, BASE_ALLOC | (s.strtab.as_ptr() as u64 & ADDR_MASK));
        // FMT = 0 (linear), LOG2SIZE = the stream ID width.
        m.write32(STRTAB_BASE_CFG, features.sid_bits);
        m.write64(
            CMDQ_BASE,
            BASE_ALLOC | (s.cmdq.as_ptr() as u64 & ADDR_MASK) | u64::from(s.cmd.log2size),
        );
        m.write32(CMDQ_PROD, 0);
        m.write32(CMDQ_CONS, 0);
        m.write64(
            EVENTQ_BASE,
            BASE_ALLOC | (s.evtq.as_ptr() as u64 & ADDR_MASK) | u64::from(s.evt.log2size),
        );
        m.write32(EVENTQ_PROD, 0);
        m.write32(EVENTQ_CONS, 0);
        s.enable(CR0_CMDQEN)?;
        for c in [cmd::cfgi_all(), cmd::tlbi_nsnh_all(), cmd::tlbi_el2_all()] {
            s.submit(c)?;
        }
        s.sync()?;
        s.enable(CR0_CMDQEN | CR0_EVENTQEN)?;
        s.mmio.write32(IRQ_CTRL, IRQ_GERROR | IRQ_EVENTQ);
        wait(&s.mmio, IRQ_CTRLACK, !0, IRQ_GERROR | IRQ_EVENTQ, "IRQ_CTRLACK")?;
        s.enable(CR0_CMDQEN | CR0_EVENTQEN | CR0_SMMUEN)?;
        Ok(s)
    }

    fn enable(&mut self, bits: u32) -> Result<(), Error> {
        self.mmio.write32(CR0, bits);
        wait(&self.mmio, CR0ACK, !0, bits, "CR0ACK")
    }

    pub fn features(&self) -> Features {
        self.features
    }

    /// Streams the table covers.
    pub fn streams(&self) -> u32 {
        1 << self.features.sid_bits
    }

    /// Queues a command; publishes the queue when it fills up.
    pub fn submit(&mut self, c: Command) -> Result<(), Error> {
        let slot = self.cmd.slot(self.cmd_prod) * 2;
        if let Some(entry) = self.cmdq.get_mut(slot..slot + 2) {
            entry.copy_from_slice(&c);
        }
        self.cmd_prod = self.cmd.next(self.cmd_prod);
        let cons = self.mmio.read32(CMDQ_CONS);
        if self.cmd.is_full(self.cmd_prod, cons) {
            self.publish();
            self.wait_for_room()?;
        }
        Ok(())
    }

    fn publish(&mut self) {
        self.mmio.barrier();
        self.mmio.write32(CMDQ_PROD, self.cmd_prod);
    }

    fn wait_for_room(&mut self) -> Result<(), Error> {
        for _ in 0..SPINS {
            let cons = self.check_cmdq()?;
            if !self.cmd.is_full(self.cmd_prod, cons) {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(Error::Timeout("the command queue"))
    }

    /// CMDQ_CONS, or the error the queue stopped at (which is then
    /// overwritten by a CMD_SYNC and acknowledged, so the queue goes on).
    fn check_cmdq(&mut self) -> Result<u32, Error> {
        let cons = self.mmio.read32(CMDQ_CONS);
        let pending = self.mmio.read32(GERROR) ^ self.mmio.read32(GERRORN);
        if pending & GERROR_CMDQ_ERR == 0 {
            return Ok(cons);
        }
        let slot = self.cmd.slot(cons) * 2;
        let mut opcode = 0;
        if let Some(entry) = self.cmdq.get_mut(slot..slot + 2) {
            opcode = entry[0] as u8;
            entry.copy_from_slice(&cmd::sync());
        }
        self.mmio.barrier();
        self.mmio
            .write32(GERRORN, self.mmio.read32(GERRORN) ^ GERROR_CMDQ_ERR);
        Err(Error::Command {
            opcode,
            err: (cons >> 24) & 0x7f,
        })
    }

    /// Issues a CMD_SYNC and waits until the SMMU has consumed it, i.e.
    /// completed every command before it.
    pub fn sync(&mut self) -> Result<(), Error> {
        self.submit(cmd::sync())?;
        self.publish();
        for _ in 0..SPINS {
            let cons = self.check_cmdq()?;
            if self.cmd.is_empty(self.cmd_prod, cons) {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(Error::Timeout("CMD_SYNC"))
    }

    fn write_ste(&mut self, sid: u32, e: &Ste) -> Result<(), Error> {
        let at = sid as usize * STE_WORDS;
        let slot = self
            .strtab
            .get_mut(at..at + STE_WORDS)
            .ok_or(Error::NoSuchStream(sid))?;
        // Word 0 (valid, config) last: until it changes, the SMMU keeps
        // using the old configuration, which ignores the other words.
        slot[1..].copy_from_slice(&e[1..]);
        self.mmio.barrier();
        slot[0] = e[0];
        Ok(())
    }

    /// Invalidates the configuration cached for `sids` and the TLB entries
    /// of `vmid`, and waits for both.
    fn invalidate(&mut self, sids: Range<u32>, vmid: u16) -> Result<(), Error> {
        self.mmio.barrier();
        if sids.len() > 16 {
            self.submit(cmd::cfgi_all())?;
        } else {
            for sid in sids {
                self.submit(cmd::cfgi_ste(sid))?;
            }
        }
        self.submit(cmd::tlbi_s12_vmall(vmid))?;
        self.sync()
    }

    /// Streams `sids` translate through stage 2 `s2` from now on.
    pub fn assign(&mut self, sids: Range<u32>, s2: &Stage2) -> Result<(), Error> {
        self.check_range(&sids)?;
        let e = ste::stage2(s2, self.features.oas);
        for sid in sids.clone() {
            self.write_ste(sid, &e)?;
        }
        self.invalidate(sids, s2.vmid)
    }

    /// Streams `sids` abort from now on (once this returns, no transaction
    /// of theirs reaches memory); `vmid`'s TLB entries are dropped. Only
    /// word 0 is written: an ABORT STE ignores the others.
    pub fn abort(&mut self, sids: Range<u32>, vmid: u16) -> Result<(), Error> {
        self.check_range(&sids)?;
        let word0 = ste::abort()[0];
        for sid in sids.clone() {
            let at = sid as usize * STE_WORDS;
            *self.strtab.get_mut(at).ok_or(Error::NoSuchStream(sid))? = word0;
        }
        self.invalidate(sids, vmid)
    }

    fn check_range(&self, sids: &Range<u32>) -> Result<(), Error> {
        if sids.end > self.streams() {
            return Err(Error::NoSuchStream(sids.end - 1));
        }
        Ok(())
    }

    /// The STE of stream `sid`, decoded.
    pub fn ste(&self, sid: u32) -> Option<ste::Decoded> {
        let at = sid as usize * STE_WORDS;
        let words: &[u64] = self.strtab.get(at..at + STE_WORDS)?;
        let mut e = [0u64; STE_WORDS];
        e.copy_from_slice(words);
        Some(ste::decode(&e))
    }

    /// Hands at most `max` new event records to `f`; returns how many, and
    /// whether the queue had overflowed (events were lost) since last time.
    pub fn drain_events(&mut self, max: usize, mut f: impl FnMut(event::Event)) -> (usize, bool) {
        let prod = self.mmio.read32(EVENTQ_PROD);
        let mut cons = self.mmio.read32(EVENTQ_CONS);
        let overflow = (prod ^ cons) & PROD_OVFLG != 0;
        let mut n = 0;
        while n < max && !self.evt.is_empty(prod, cons) {
            let at = self.evt.slot(cons) * 4;
            if let Some(w) = self.evtq.get(at..at + 4) {
                f(event::decode(&[w[0], w[1], w[2], w[3]]));
            }
            cons = self.evt.next(cons);
            n += 1;
        }
        // Acknowledge an overflow by copying the producer's flag.
        self.mmio
            .write32(EVENTQ_CONS, (cons & self.evt.mask()) | (prod & PROD_OVFLG));
        (n, overflow)
    }

    /// Global errors active now (GERROR ^ GERRORN), acknowledged; a command
    /// queue error is left to the command path that meets it.
    pub fn take_gerror(&mut self) -> u32 {
        let g = self.mmio.read32(GERROR);
        let n = self.mmio.read32(GERRORN);
        let active = (g ^ n) & !GERROR_CMDQ_ERR;
        if active != 0 {
            self.mmio.write32(GERRORN, n ^ active);
        }
        active
    }
}

/// Polls `reg` until `(value & mask) == want`.
fn wait(m: &impl Mmio, reg: usize, mask: u32, want: u32, what: &'static str) -> Result<(), Error> {
    for _ in 0..SPINS {
        if m.read32(reg) & mask == want {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(Error::Timeout(what))
}

/// The SMMU's registers at an EL2 device mapping.
#[cfg(target_os = "none")]
pub struct Hw {
    base: usize,
}

#[cfg(target_os = "none")]
impl Hw {
    /// # Safety
    /// `base` is an SMMUv3 register frame ([`FRAME_SIZE`] bytes) mapped as
    /// device memory at EL2, driven by nothing else.
    pub unsafe fn new(base: u64) -> Self {
        Self { base: base as usize }
    }
}

#[cfg(target_os = "none")]
impl Mmio for Hw {
    fn read32(&self, offset: usize) -> u32 {
        // SAFETY: inside the mapped frame (offsets are this module's constants).
        unsafe { ((self.base + offset) as *const u32).read_volatile() }
    }
    fn write32(&self, offset: usize, value: u32) {
        // SAFETY: as above.
        unsafe { ((self.base + offset) as *mut u32).write_volatile(value) }
    }
    fn write64(&self, offset: usize, value: u64) {
        // SAFETY: as above; the 64-bit registers are 8-byte aligned.
        unsafe { ((self.base + offset) as *mut u64).write_volatile(value) }
    }
    fn barrier(&self) {
        aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);
    }
}
