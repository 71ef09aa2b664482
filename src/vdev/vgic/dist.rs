//! The emulated distributor (GICD), in its GICv2 form or its GICv3 form with
//! affinity routing. Registers with one bit, two bits or one byte per
//! interrupt are handled a byte at a time, so any access width the
//! architecture allows works the same way.

use super::{Version, Vgic};
use crate::vdev::{BusError, MmioDevice};
use alloc::sync::Arc;

const CTLR: u64 = 0x000;
const TYPER: u64 = 0x004;
const IIDR: u64 = 0x008;
const SGIR: u64 = 0xf00;
const IROUTER: u64 = 0x6000;
/// Implementer ARM (0x43b); revision and product 0.
pub const IIDR_VALUE: u64 = 0x0000_043b;

/// Which interrupts a byte-register access may touch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Bank {
    /// Only SGIs/PPIs (GICv3 redistributor).
    Private,
    /// Only SPIs (GICv3 distributor with affinity routing).
    Shared,
    /// Both (GICv2 distributor, banked by the accessing vCPU).
    All,
}

/// The peripheral/component ID registers (0xffd0..0xfffc).
pub fn id_register(version: Version, offset: u64) -> Option<u64> {
    Some(match offset {
        0xffd0 => 0x04,
        0xffe0 => 0x92,
        0xffe4 => 0xb4,
        0xffe8 => match version {
            Version::V3 => 0x3b,
            Version::V2 => 0x2b,
        },
        0xfff0 => 0x0d,
        0xfff4 => 0xf0,
        0xfff8 => 0x05,
        0xfffc => 0xb1,
        0xffd4..=0xfffc => 0,
        _ => return None,
    })
}

impl Vgic {
    fn in_bank(&self, intid: u32, bank: Bank) -> bool {
        match bank {
            Bank::Private => intid < 32,
            Bank::Shared => intid >= 32,
            Bank::All => true,
        }
    }

    /// One byte of a per-interrupt register at GICD-layout offset `off`.
    pub fn read_irq_byte(&self, off: u64, vcpu: usize, bank: Bank) -> u8 {
        self.read_irq_bytes(off, 1, vcpu, bank) as u8
    }

    /// `n` bytes (1 to 8) of per-interrupt registers from GICD-layout
    /// offset `off`, little-endian: the whole access under one lock of the
    /// distributor state. ISACTIVER/ICACTIVER come from the list registers
    /// instead, without the lock (another CPU may be asked).
    pub fn read_irq_bytes(&self, off: u64, n: u64, vcpu: usize, bank: Bank) -> u64 {
        if (0x300..=0x3ff).contains(&off) {
            return (0..n)
                .map(|i| u64::from(self.active_byte(off + i, vcpu, bank)) << (8 * i))
                .sum();
        }
        let s = self.state.lock();
        (0..n)
            .map(|i| u64::from(self.irq_byte_locked(&s, off + i, vcpu, bank)) << (8 * i))
            .sum()
    }

    /// The state of `intid` (banked for `vcpu`) if the VM owns it.
    fn irq_in<'s>(&self, s: &'s super::State, intid: u32, vcpu: usize) -> Option<&'s super::Irq> {
        self.owner(intid)?;
        if intid < 32 {
            s.private.get(vcpu).and_then(|p| p.get(intid as usize))
        } else {
            s.spis.get(intid as usize - 32)
        }
    }

    /// One byte of a per-interrupt register other than the active ones.
    fn irq_byte_locked(&self, s: &super::State, off: u64, vcpu: usize, bank: Bank) -> u8 {
        let bit_regs = |base: u64| ((off - base) * 8) as u32;
        let irq = |intid: u32| self.irq_in(s, intid, vcpu).filter(|_| self.in_bank(intid, bank));
        let mut out = 0u8;
        match off {
            0x080..=0x2ff => {
                let reg = off & !0x7f;
                let first = bit_regs(reg);
                for b in 0..8 {
                    let v = irq(first + b).map(|i| match reg {
                        0x080 => i.group1,
                        0x100 | 0x180 => i.enabled,
                        _ => i.pending,
                    });
                    if v == Some(true) {
                        out |= 1 << b;
                    }
                }
            }
            0x400..=0x7ff => {
                out = irq((off - 0x400) as u32).map_or(0, |i| i.priority & 0xf8);
            }
            0x800..=0xbff if self.version == Version::V2 => {
                let intid = (off - 0x800) as u32;
                if intid < 32 {
                    // Read-only: the accessing CPU's own bit.
                    if self.owner(intid).is_some() {
                        out = 1 << vcpu.min(7);
                    }
                } else {
                    out = irq(intid).map_or(0, |i| 1u8 << i.target.min(7));
                }
            }
            0xc00..=0xcff => {
                let first = ((off - 0xc00) * 4) as u32;
                for k in 0..4 {
                    if irq(first + k).is_some_and(|i| i.edge) {
                        out |= 2 << (2 * k);
                    }
                }
            }
            _ => {}
        }
        out
    }

    /// One byte of ISACTIVER/ICACTIVER: active where a list register says
    /// so, asked once per vCPU the byte's interrupts are listed on.
    fn active_byte(&self, off: u64, vcpu: usize, bank: Bank) -> u8 {
        let first = ((off & 0x7f) * 8) as u32;
        let mut out = 0u8;
        let mut asked: Option<(usize, super::lr::ActiveSet)> = None;
        for b in 0..8 {
            let intid = first + b;
            if !self.in_bank(intid, bank) {
                continue;
            }
            let Some(t) = self.lr_vcpu(intid, vcpu) else {
                continue;
            };
            let set = match asked {
                Some((v, set)) if v == t => set,
                _ => {
                    let set = self.host.active(t);
                    asked = Some((t, set));
                    set
                }
            };
            if set.contains(intid) {
                out |= 1 << b;
            }
        }
        out
    }

    /// Writes `n` bytes (1 to 8) of per-interrupt registers from offset
    /// `off`: groups, priorities and trigger modes under one lock of the
    /// distributor state; enables, pendings, actives and targets a byte at
    /// a time, since they reach outside the vGIC (the physical GIC, a kick)
    /// and that happens without the lock.
    pub fn write_irq_bytes(&self, off: u64, n: u64, value: u64, vcpu: usize, bank: Bank) {
        let plain = matches!(off, 0x080..=0x0ff | 0x400..=0x7ff | 0xc00..=0xcff);
        if !plain {
            for i in 0..n {
                self.write_irq_byte(off + i, (value >> (8 * i)) as u8, vcpu, bank);
            }
            return;
        }
        let mut s = self.state.lock();
        for i in 0..n {
            self.plain_byte_locked(&mut s, off + i, (value >> (8 * i)) as u8, vcpu, bank);
        }
        // SGI groups and priorities are mirrored in the mailbox, fast SPIs'
        // with their trigger too.
        if vcpu < self.nvcpus && (bank != Bank::Shared) {
            self.mirror_sgis(&s, vcpu);
        }
        self.mirror_spis(&s);
    }

    /// One byte of IGROUPR, IPRIORITYR or ICFGR, the state locked.
    fn plain_byte_locked(&self, s: &mut super::State, off: u64, value: u8, vcpu: usize, bank: Bank) {
        let mut set = |intid: u32, f: &mut dyn FnMut(&mut super::Irq)| {
            if self.in_bank(intid, bank) {
                if let Some(i) = self.irq(s, intid, vcpu) {
                    f(i);
                }
            }
        };
        match off {
            0x080..=0x0ff => {
                let first = ((off - 0x080) * 8) as u32;
                for b in 0..8 {
                    set(first + b, &mut |i| i.group1 = value & (1 << b) != 0);
                }
            }
            0x400..=0x7ff => set((off - 0x400) as u32, &mut |i| i.priority = value),
            0xc00..=0xcff => {
                let first = ((off - 0xc00) * 4) as u32;
                for k in 0..4 {
                    // SGIs are always edge-triggered.
                    if first + k >= 16 {
                        set(first + k, &mut |i| i.edge = value & (2 << (2 * k)) != 0);
                    }
                }
            }
            _ => {}
        }
    }

    /// Writes one byte of a per-interrupt register.
    pub fn write_irq_byte(&self, off: u64, value: u8, vcpu: usize, bank: Bank) {
        match off {
            0x300..=0x3ff => {
                let active = off < 0x380;
                let first = ((off & 0x7f) * 8) as u32;
                for b in 0..8 {
                    let intid = first + b;
                    if value & (1 << b) == 0 || !self.in_bank(intid, bank) {
                        continue;
                    }
                    if let Some(t) = self.lr_vcpu(intid, vcpu) {
                        self.host.set_active(intid, t, active);
                    }
                }
            }
            0x080..=0x2ff => {
                let reg = off & !0x7f;
                let first = ((off - reg) * 8) as u32;
                for b in 0..8 {
                    let intid = first + b;
                    let set = value & (1 << b) != 0;
                    if !self.in_bank(intid, bank) {
                        continue;
                    }
                    match (reg, set) {
                        (0x080, _) => {
                            self.with_irq(intid, vcpu, |i| i.group1 = set);
                        }
                        (0x100, true) => self.set_enabled(intid, vcpu, true),
                        (0x180, true) => self.set_enabled(intid, vcpu, false),
                        (0x200, true) => self.set_pending(intid, vcpu, true),
                        (0x280, true) => self.set_pending(intid, vcpu, false),
                        _ => {}
                    }
                }
            }
            0x400..=0x7ff => {
                let intid = (off - 0x400) as u32;
                if self.in_bank(intid, bank) {
                    self.with_irq(intid, vcpu, |i| i.priority = value);
                }
            }
            0x820..=0xbff if self.version == Version::V2 => {
                let intid = (off - 0x800) as u32;
                // The lowest CPU named that this VM has; naming none keeps the target.
                let mask = value & ((1u16 << self.nvcpus.min(8)) - 1) as u8;
                if mask != 0 && self.in_bank(intid, bank) && self.owner(intid).is_some() {
                    self.set_target(intid, mask.trailing_zeros() as usize);
                }
            }
            0xc00..=0xcff => {
                let first = ((off - 0xc00) * 4) as u32;
                for k in 0..4 {
                    let intid = first + k;
                    // SGIs are always edge-triggered.
                    if intid >= 16 && self.in_bank(intid, bank) {
                        let edge = value & (2 << (2 * k)) != 0;
                        self.with_irq(intid, vcpu, |i| i.edge = edge);
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn set_ctlr(&self, value: u32) {
        let kicks: alloc::vec::Vec<usize> = {
            let mut s = self.state.lock();
            s.ctlr = value & 3;
            for v in 0..self.nvcpus {
                self.mirror_sgis(&s, v);
            }
            self.mirror_spis(&s);
            // Enabling a group releases what was latched pending.
            let mut kicks = alloc::vec::Vec::new();
            for v in 0..self.nvcpus {
                for intid in 0..32 {
                    if s.private
                        .get(v)
                        .and_then(|p| p.get(intid))
                        .is_some_and(|i| i.pending)
                    {
                        kicks.extend(self.deliver(&mut s, intid as u32, v, 0));
                    }
                }
            }
            for k in 0..s.spis.len() {
                if s.spis.get(k).is_some_and(|i| i.pending) {
                    kicks.extend(self.deliver(&mut s, 32 + k as u32, 0, 0));
                }
            }
            kicks
        };
        for k in kicks {
            self.host.kick(k);
        }
    }

    fn irouter_write(&self, intid: u32, value: u64) {
        if intid < 32 || self.owner(intid).is_none() {
            return;
        }
        self.with_irq(intid, 0, |i| i.router = value & 0x00ff_80ff_ffff);
        let aff0 = (value & 0xff) as usize;
        let upper = value & 0xff_0000_ff00 & !0xff;
        if value & (1 << 31) != 0 {
            self.set_target(intid, 0);
        } else if upper == 0 && value & 0xffff00 == 0 && aff0 < self.nvcpus {
            self.set_target(intid, aff0);
        }
    }
}

/// The GICD frame of a VM.
pub struct Distributor {
    pub vgic: Arc<Vgic>,
}

impl Distributor {
    fn read32(&self, off: u64, vcpu: usize) -> u64 {
        let g = &self.vgic;
        match off {
            CTLR => {
                let ctlr = u64::from(g.state.lock().ctlr);
                match g.version {
                    // ARE and DS read as one: affinity routing, one security state.
                    Version::V3 => ctlr | (1 << 4) | (1 << 6),
                    Version::V2 => ctlr,
                }
            }
            TYPER => g.typer,
            IIDR => IIDR_VALUE,
            0x080..=0xcff => {
                let bank = if g.version == Version::V3 {
                    Bank::Shared
                } else {
                    Bank::All
                };
                g.read_irq_bytes(off, 4, vcpu, bank)
            }
            _ => id_register(g.version, off).unwrap_or(0),
        }
    }

    fn write32(&self, off: u64, value: u32, vcpu: usize) {
        let g = &self.vgic;
        match off {
            CTLR => g.set_ctlr(value),
            SGIR if g.version == Version::V2 => self.sgir(value, vcpu),
            0x080..=0xcff => {
                let bank = if g.version == Version::V3 {
                    Bank::Shared
                } else {
                    Bank::All
                };
                g.write_irq_bytes(off, 4, u64::from(value), vcpu, bank);
            }
            _ => {}
        }
    }
}

impl Distributor {
    /// A GICv2 GICD_SGIR write: SGIs to this VM's own vCPUs only.
    #[inline(always)]
    fn sgir(&self, value: u32, vcpu: usize) {
        let g = &self.vgic;
        let intid = value & 0xf;
        let all = (1u64 << g.nvcpus.min(8)) - 1;
        let targets = match (value >> 24) & 3 {
            0 => u64::from((value >> 16) & 0xff) & all,
            1 => all & !(1 << vcpu),
            2 => 1 << vcpu,
            _ => 0,
        };
        g.send_sgi(intid, vcpu, targets);
    }
}

impl MmioDevice for Distributor {
    fn name(&self) -> &str {
        "vGICD"
    }

    fn size(&self) -> u64 {
        0x1_0000
    }

    fn read(&self, offset: u64, width: u8, vcpu: usize) -> Result<u64, BusError> {
        let g = &self.vgic;
        if g.version == Version::V3 && (IROUTER..IROUTER + 8 * 1020).contains(&offset) {
            let intid = ((offset - IROUTER) / 8) as u32;
            let v = g
                .with_irq(intid, 0, |i| i.router)
                .filter(|_| intid >= 32)
                .unwrap_or(0);
            return Ok(if offset % 8 == 4 {
                v >> 32
            } else if width == 8 {
                v
            } else {
                v & 0xffff_ffff
            });
        }
        match width {
            1 if (0x400..0xc00).contains(&offset) => {
                let bank = if g.version == Version::V3 {
                    Bank::Shared
                } else {
                    Bank::All
                };
                Ok(u64::from(g.read_irq_byte(offset, vcpu, bank)))
            }
            4 if offset.is_multiple_of(4) => Ok(self.read32(offset, vcpu)),
            _ => Err(BusError),
        }
    }

    fn write(&self, offset: u64, width: u8, value: u64, vcpu: usize) -> Result<(), BusError> {
        let g = &self.vgic;
        // GICv2's IPI register first: the guest's most frequent write here.
        if offset == SGIR && width == 4 && g.version == Version::V2 {
            self.sgir(value as u32, vcpu);
            return Ok(());
        }
        if g.version == Version::V3 && (IROUTER..IROUTER + 8 * 1020).contains(&offset) {
            let intid = ((offset - IROUTER) / 8) as u32;
            let old = g.with_irq(intid, 0, |i| i.router).unwrap_or(0);
            let new = match (width, offset % 8) {
                (8, 0) => value,
                (4, 0) => (old & !0xffff_ffff) | (value & 0xffff_ffff),
                (4, 4) => (old & 0xffff_ffff) | (value << 32),
                _ => return Err(BusError),
            };
            g.irouter_write(intid, new);
            return Ok(());
        }
        match width {
            1 if (0x400..0xc00).contains(&offset) => {
                let bank = if g.version == Version::V3 {
                    Bank::Shared
                } else {
                    Bank::All
                };
                g.write_irq_bytes(offset, 1, value, vcpu, bank);
                Ok(())
            }
            4 if offset.is_multiple_of(4) => {
                self.write32(offset, value as u32, vcpu);
                Ok(())
            }
            _ => Err(BusError),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::vgic;
    use super::*;

    fn dist(version: Version, n: usize) -> (Distributor, super::super::tests::Recorder) {
        let (g, r) = vgic(version, n);
        (Distributor { vgic: Arc::new(g) }, r)
    }

    #[test]
    fn active_state_comes_from_the_list_registers() {
        // The recorder's vCPU v has INTIDs 5 + v and 33 active.
        let (d, r) = dist(Version::V2, 2);
        // Banked SGIs/PPIs: vCPU 1 sees its own SGI 6 active, not vCPU 0's 5.
        assert_eq!(d.read(0x300, 4, 1).unwrap(), 1 << 6);
        assert_eq!(d.read(0x380, 4, 0).unwrap(), 1 << 5);
        // SPI 33 (owned, targets vCPU 0); SPI 35 is nobody's.
        assert_eq!(d.read(0x304, 4, 1).unwrap(), 1 << 1);
        // Writes reach the vCPU whose list registers hold it.
        d.write(0x304, 4, (1 << 1) | (1 << 3), 1).unwrap();
        d.write(0x380, 4, 1 << 27, 1).unwrap();
        d.write(0x380, 4, 1 << 23, 1).unwrap(); // PPI 23 is not the VM's
        let log = r.0.lock().unwrap().clone();
        assert!(log.contains(&"set_active 33 0 true".to_string()), "{log:?}");
        assert!(log.contains(&"set_active 27 1 false".to_string()), "{log:?}");
        assert!(!log
            .iter()
            .any(|l| l.starts_with("set_active 35") || l.starts_with("set_active 23")));

        let (d, _) = dist(Version::V3, 2);
        // GICv3: the distributor holds only SPIs.
        assert_eq!(d.read(0x300, 4, 0).unwrap(), 0);
        assert_eq!(d.read(0x304, 4, 0).unwrap(), 1 << 1);
    }

    #[test]
    fn typer_iidr_pidr2() {
        let (d, _) = dist(Version::V3, 2);
        let typer = d.read(TYPER, 4, 0).unwrap();
        assert_eq!(typer & 0x1f, 1, "ITLinesNumber: 64 INTIDs");
        assert_eq!((typer >> 5) & 7, 1);
        assert_eq!((typer >> 19) & 0x1f, 9);
        assert_eq!(d.read(0xffe8, 4, 0).unwrap() >> 4, 3);
        assert_eq!(d.read(CTLR, 4, 0).unwrap() & 0x10, 0x10, "ARE reads as one");
        let (d2, _) = dist(Version::V2, 2);
        assert_eq!(d2.read(0xffe8, 4, 0).unwrap() >> 4, 2);
    }

    #[test]
    fn only_owned_spis_can_be_enabled_or_pended() {
        let (d, r) = dist(Version::V3, 1);
        d.write(CTLR, 4, 2, 0).unwrap();
        // INTID 32..63 in ISENABLER1: set all of them.
        d.write(0x104, 4, 0xffff_ffff, 0).unwrap();
        assert_eq!(
            d.read(0x104, 4, 0).unwrap(),
            (1 << 1) | (1 << 2),
            "only 33 and 34"
        );
        d.write(0x204, 4, 0xffff_ffff, 0).unwrap();
        assert_eq!(d.read(0x204, 4, 0).unwrap() & !0b110, 0);
        assert!(r.0.lock().unwrap().contains(&"hw_enable 34 0 true".to_string()));
        assert!(!r.0.lock().unwrap().iter().any(|l| l.contains(" 35 ")));
    }

    #[test]
    fn v3_distributor_leaves_private_interrupts_to_the_redistributor() {
        let (d, _) = dist(Version::V3, 1);
        d.write(0x100, 4, 0xffff_ffff, 0).unwrap();
        assert_eq!(d.read(0x100, 4, 0).unwrap(), 0);
    }

    #[test]
    fn priorities_bytewise_and_config() {
        let (d, _) = dist(Version::V2, 2);
        d.write(0x400 + 33, 1, 0xa5, 0).unwrap();
        assert_eq!(d.read(0x400 + 33, 1, 0).unwrap(), 0xa0);
        assert_eq!(d.read(0x420, 4, 0).unwrap(), 0xa0 << 8);
        d.write(0x400 + 35, 1, 0xff, 0).unwrap();
        assert_eq!(d.read(0x400 + 35, 1, 0).unwrap(), 0, "not owned");
        d.write(0xc08, 4, 0b1000, 0).unwrap();
        assert_eq!(d.read(0xc08, 4, 0).unwrap(), 0b1000, "33 edge");
    }

    #[test]
    fn irouter_and_itargets_route_to_vcpus() {
        let (d, r) = dist(Version::V3, 2);
        d.write(IROUTER + 8 * 34, 8, 1, 0).unwrap();
        assert_eq!(d.read(IROUTER + 8 * 34, 8, 0).unwrap(), 1);
        assert!(r.0.lock().unwrap().contains(&"hw_route 34 1".to_string()));
        // An MPIDR the VM does not have keeps the old target.
        d.write(IROUTER + 8 * 34, 8, 0x100, 0).unwrap();
        assert_eq!(d.vgic.with_irq(34, 0, |i| i.target), Some(1));
        let (d2, r2) = dist(Version::V2, 2);
        d2.write(0x800 + 34, 1, 0b10, 0).unwrap();
        assert_eq!(d2.read(0x800 + 34, 1, 0).unwrap(), 0b10);
        assert_eq!(d2.read(0x820, 4, 0).unwrap() >> 16 & 0xff, 0b10);
        assert!(r2.0.lock().unwrap().contains(&"hw_route 34 1".to_string()));
    }

    #[test]
    fn v2_sgir_targets() {
        let (d, _) = dist(Version::V2, 3);
        d.write(CTLR, 4, 1, 0).unwrap();
        // All but self from vCPU 1.
        d.write(SGIR, 4, (1 << 24) | 5, 1).unwrap();
        assert_eq!(d.vgic.pop(0).map(|q| (q.vintid, q.source)), Some((5, 1)));
        assert_eq!(d.vgic.pop(2).map(|q| q.vintid), Some(5));
        assert!(d.vgic.pop(1).is_none());
        // A target list naming CPUs the VM lacks reaches only those it has.
        d.write(SGIR, 4, (0xf0 << 16) | 6, 0).unwrap();
        assert!((0..3).all(|v| d.vgic.pop(v).is_none()));
    }

    #[test]
    fn bad_widths_are_bus_errors() {
        let (d, _) = dist(Version::V3, 1);
        assert_eq!(d.read(0x101, 4, 0), Err(BusError));
        assert_eq!(d.read(0x100, 2, 0), Err(BusError));
        assert_eq!(d.write(IROUTER + 2, 2, 0, 0), Err(BusError));
    }
}
