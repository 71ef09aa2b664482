//! List registers: the one form a virtual interrupt takes on its way into a
//! guest, in both encodings (GICv3 ICH_LR<n>_EL2, GICv2 GICH_LR<n>), and the
//! placement logic that fills them. Pure: the registers come through
//! [`ListRegs`], so the logic is tested against a fake.

/// State of a list register entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LrState {
    Invalid = 0,
    Pending = 1,
    Active = 2,
    PendingActive = 3,
}

impl LrState {
    fn from_bits(b: u64) -> Self {
        match b & 3 {
            0 => LrState::Invalid,
            1 => LrState::Pending,
            2 => LrState::Active,
            _ => LrState::PendingActive,
        }
    }
}

/// One list register's contents, version independent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Lr {
    pub vintid: u32,
    /// Physical INTID for a hardware interrupt (HW = 1): the guest's
    /// deactivation deactivates it.
    pub pintid: Option<u32>,
    pub priority: u8,
    pub state: LrState,
    pub group1: bool,
    /// Ask for a maintenance interrupt when the guest EOIs it (software
    /// level-triggered interrupts, to re-sample the line).
    pub eoi: bool,
    /// GICv2 SGIs: the sending vCPU (0..7), which the guest reads in GICC_IAR.
    pub source: u8,
}

impl Lr {
    pub const EMPTY: Lr = Lr {
        vintid: 0,
        pintid: None,
        priority: 0,
        state: LrState::Invalid,
        group1: false,
        eoi: false,
        source: 0,
    };

    /// ICH_LR<n>_EL2 (GIC architecture spec 12.4.8 / Arm ARM ICH_LR).
    #[inline(always)]
    pub fn encode_v3(&self) -> u64 {
        let mut v = u64::from(self.vintid)
            | (u64::from(self.priority) << 48)
            | (u64::from(self.group1) << 60)
            | ((self.state as u64) << 62);
        match self.pintid {
            Some(p) => v |= (1 << 61) | (u64::from(p & 0x1fff) << 32),
            None => v |= u64::from(self.eoi) << 41,
        }
        v
    }

    #[inline(always)]
    pub fn decode_v3(v: u64) -> Lr {
        let hw = v & (1 << 61) != 0;
        Lr {
            vintid: v as u32,
            pintid: hw.then_some(((v >> 32) & 0x1fff) as u32),
            priority: (v >> 48) as u8,
            state: LrState::from_bits(v >> 62),
            group1: v & (1 << 60) != 0,
            eoi: !hw && v & (1 << 41) != 0,
            source: 0,
        }
    }

    /// GICH_LR<n> (GICv2 spec 5.3.11): priority keeps its top 5 bits.
    #[inline(always)]
    pub fn encode_v2(&self) -> u32 {
        let mut v = (self.vintid & 0x3ff)
            | (u32::from(self.priority >> 3) << 23)
            | ((self.state as u32) << 28)
            | (u32::from(self.group1) << 30);
        match self.pintid {
            Some(p) => v |= (1 << 31) | ((p & 0x3ff) << 10),
            None => v |= (u32::from(self.eoi) << 19) | (u32::from(self.source & 7) << 10),
        }
        v
    }

    #[inline(always)]
    pub fn decode_v2(v: u32) -> Lr {
        let hw = v & (1 << 31) != 0;
        Lr {
            vintid: v & 0x3ff,
            pintid: hw.then_some((v >> 10) & 0x3ff),
            priority: (((v >> 23) & 0x1f) << 3) as u8,
            state: LrState::from_bits(u64::from(v >> 28)),
            group1: v & (1 << 30) != 0,
            eoi: !hw && v & (1 << 19) != 0,
            source: if hw { 0 } else { ((v >> 10) & 7) as u8 },
        }
    }
}

/// The list registers of the CPU we run on.
pub trait ListRegs {
    fn count(&self) -> usize;
    fn read(&self, i: usize) -> Lr;
    fn write(&mut self, i: usize, lr: Lr);
    /// Bit `i` set when list register `i` is free (ICH_ELRSR_EL2 /
    /// GICH_ELRSR0): invalid, and not waiting for an EOI maintenance.
    fn empty(&self) -> u64 {
        (0..self.count())
            .filter(|&i| {
                let lr = self.read(i);
                lr.state == LrState::Invalid && !(lr.eoi && lr.pintid.is_none())
            })
            .fold(0, |m, i| m | (1 << i))
    }
}

/// What happened to an interrupt offered to the list registers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Placed {
    /// Written to a free list register.
    New,
    /// Already there: merged (pending added to an active one, or already pending).
    Merged,
    /// No room: keep it queued.
    Full,
}

/// Puts `lr` (state Pending) into the list registers. An interrupt already
/// present (same INTID and, for GICv2 SGIs, same source) is merged rather
/// than listed twice, which the architecture forbids.
#[inline(always)]
pub fn place(regs: &mut impl ListRegs, lr: Lr) -> Placed {
    let all = (1u64 << regs.count()) - 1;
    let empty = regs.empty() & all;
    // Only listed interrupts can be duplicates: usually there are none, and
    // this reads no list register at all.
    let mut used = !empty & all;
    while used != 0 {
        let i = used.trailing_zeros() as usize;
        used &= used - 1;
        let cur = regs.read(i);
        if cur.state != LrState::Invalid && cur.vintid == lr.vintid && cur.source == lr.source {
            if cur.state == LrState::Active && cur.pintid.is_none() {
                regs.write(
                    i,
                    Lr {
                        state: LrState::PendingActive,
                        ..cur
                    },
                );
            }
            return Placed::Merged;
        }
    }
    if empty == 0 {
        return Placed::Full;
    }
    regs.write(empty.trailing_zeros() as usize, lr);
    Placed::New
}

/// What the hypervisor does about the guest's virtual IRQ when it asserts
/// it by software (HCR_EL2.VI), for a GIC whose virtual IRQ output does not
/// reach the CPU; see [`soft_virq`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SoftVirq {
    /// HCR_EL2.VI.
    pub assert: bool,
    /// ICH_HCR_EL2.NPIE: an exit once the guest has taken every Pending one.
    pub npie: bool,
}

/// Decides [`SoftVirq`] from the list registers, and makes sure the guest
/// leaves through an exit once it has taken what VI signals:
/// - VI while some list register is Pending, or Pending and active (its
///   pending half is taken once the active one is finished);
/// - NPIE while some list register is Pending: its maintenance interrupt
///   (ICH_MISR_EL2.NP) comes when the guest acknowledged them all. Not for
///   Pending and active alone: QEMU counts only Pending there, and NP would
///   then stay asserted, an exit storm;
/// - so a software Pending-and-active entry gets its EOI bit: the guest's
///   last deactivation of it ends in an EOI maintenance interrupt.
///
/// The guest's acknowledge reads the list registers whatever the wire, so
/// a pending one its priority mask hides reads as spurious (1023).
pub fn soft_virq(regs: &mut impl ListRegs) -> SoftVirq {
    let all = (1u64 << regs.count()) - 1;
    let mut used = !regs.empty() & all;
    let mut out = SoftVirq {
        assert: false,
        npie: false,
    };
    while used != 0 {
        let i = used.trailing_zeros() as usize;
        used &= used - 1;
        let lr = regs.read(i);
        match lr.state {
            LrState::Pending => {
                out.assert = true;
                out.npie = true;
            }
            LrState::PendingActive => {
                out.assert = true;
                if lr.pintid.is_none() && !lr.eoi {
                    regs.write(i, Lr { eoi: true, ..lr });
                }
            }
            LrState::Active | LrState::Invalid => {}
        }
    }
    out
}

/// Most list registers a CPU has (ICH_VTR_EL2.ListRegs is 4 bits).
pub const MAX_LRS: usize = 16;
/// "No interrupt" in an [`ActiveSet`].
pub const NONE: u32 = 1023;

/// The virtual INTIDs active (or pending and active) in one CPU's list
/// registers at one moment: what GICD/GICR_ISACTIVER report.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ActiveSet(pub [u32; MAX_LRS]);

impl ActiveSet {
    pub const EMPTY: ActiveSet = ActiveSet([NONE; MAX_LRS]);

    pub fn contains(&self, vintid: u32) -> bool {
        vintid != NONE && self.0.contains(&vintid)
    }
}

/// The active interrupts in `regs`.
pub fn active_set(regs: &impl ListRegs) -> ActiveSet {
    let mut set = ActiveSet::EMPTY;
    for (i, slot) in set.0.iter_mut().enumerate().take(regs.count()) {
        let lr = regs.read(i);
        if matches!(lr.state, LrState::Active | LrState::PendingActive) {
            *slot = lr.vintid;
        }
    }
    set
}

/// What [`change_active`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ActiveChange {
    /// Not listed, or already in the asked state, or a hardware interrupt
    /// asked to become active (its active state is the physical one's):
    /// nothing changed.
    None,
    /// Changed. `deactivate` names the physical interrupt that the guest
    /// would have deactivated through the HW bit (or the EOI maintenance) and
    /// that must now be deactivated physically; `eoi`: a software
    /// level-triggered interrupt whose line is to be sampled again.
    Changed { deactivate: Option<u32>, eoi: bool },
}

/// GICD/GICR_ISACTIVER (`active`) or ICACTIVER (`!active`) for `vintid` in
/// `regs`. `hw_owned`: `vintid` is a hardware interrupt even without the
/// HW bit (listed with EOI maintenance instead).
pub fn change_active(regs: &mut impl ListRegs, vintid: u32, active: bool, hw_owned: bool) -> ActiveChange {
    for i in 0..regs.count() {
        let lr = regs.read(i);
        if lr.state == LrState::Invalid || lr.vintid != vintid {
            continue;
        }
        let hw = lr.pintid.or(hw_owned.then_some(vintid));
        let new = match (lr.state, active) {
            (LrState::Pending, true) if hw.is_none() => LrState::PendingActive,
            (LrState::Active, false) => LrState::Invalid,
            (LrState::PendingActive, false) => LrState::Pending,
            _ => return ActiveChange::None,
        };
        let (deactivate, eoi) = if active {
            (None, false)
        } else {
            (hw, hw.is_none() && lr.eoi && new == LrState::Invalid)
        };
        regs.write(
            i,
            if new == LrState::Invalid {
                Lr::EMPTY
            } else {
                Lr { state: new, ..lr }
            },
        );
        return ActiveChange::Changed { deactivate, eoi };
    }
    ActiveChange::None
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(Vec<Lr>);
    impl ListRegs for Fake {
        fn count(&self) -> usize {
            self.0.len()
        }
        fn read(&self, i: usize) -> Lr {
            self.0[i]
        }
        fn write(&mut self, i: usize, lr: Lr) {
            self.0[i] = lr;
        }
    }

    fn sw(vintid: u32) -> Lr {
        Lr {
            vintid,
            priority: 0xa0,
            state: LrState::Pending,
            group1: true,
            ..Lr::EMPTY
        }
    }

    #[test]
    fn v3_round_trip_and_fields() {
        let hw = Lr {
            pintid: Some(27),
            ..sw(27)
        };
        let v = hw.encode_v3();
        assert_eq!(v >> 62, 1);
        assert_ne!(v & (1 << 61), 0);
        assert_eq!((v >> 32) & 0x1fff, 27);
        assert_eq!((v >> 48) & 0xff, 0xa0);
        assert_eq!(Lr::decode_v3(v), hw);
        let level = Lr { eoi: true, ..sw(33) };
        assert_ne!(level.encode_v3() & (1 << 41), 0);
        assert_eq!(Lr::decode_v3(level.encode_v3()), level);
    }

    #[test]
    fn v2_round_trip_and_fields() {
        let sgi = Lr {
            source: 3,
            priority: 0xa8,
            ..sw(5)
        };
        let v = sgi.encode_v2();
        assert_eq!(v & 0x3ff, 5);
        assert_eq!((v >> 10) & 7, 3);
        assert_eq!((v >> 23) & 0x1f, 0xa8 >> 3);
        assert_eq!(Lr::decode_v2(v), sgi);
        let hw = Lr {
            pintid: Some(30),
            ..sw(30)
        };
        assert_eq!(hw.encode_v2() >> 31, 1);
        assert_eq!(Lr::decode_v2(hw.encode_v2()), hw);
    }

    #[test]
    fn active_state_in_list_registers() {
        let mut f = Fake(vec![Lr::EMPTY; 4]);
        f.0[0] = Lr {
            state: LrState::Active,
            ..sw(40)
        };
        f.0[1] = sw(41);
        f.0[2] = Lr {
            state: LrState::Active,
            pintid: Some(27),
            ..sw(27)
        };
        f.0[3] = Lr {
            state: LrState::PendingActive,
            ..sw(42)
        };
        let set = active_set(&f);
        assert!(set.contains(40) && set.contains(27) && set.contains(42));
        assert!(!set.contains(41) && !set.contains(NONE));
        // ISACTIVER: a pending software interrupt becomes pending+active;
        // an active one stays; a hardware one is left to the hardware.
        assert_eq!(
            change_active(&mut f, 41, true, false),
            ActiveChange::Changed {
                deactivate: None,
                eoi: false
            }
        );
        assert_eq!(f.0[1].state, LrState::PendingActive);
        assert_eq!(change_active(&mut f, 40, true, false), ActiveChange::None);
        assert_eq!(change_active(&mut f, 99, true, false), ActiveChange::None);
        // ICACTIVER: active -> gone, pending+active -> pending, and the
        // hardware interrupt is deactivated physically.
        assert_eq!(
            change_active(&mut f, 27, false, true),
            ActiveChange::Changed {
                deactivate: Some(27),
                eoi: false
            }
        );
        assert_eq!(f.0[2], Lr::EMPTY);
        assert_eq!(
            change_active(&mut f, 42, false, false),
            ActiveChange::Changed {
                deactivate: None,
                eoi: false
            }
        );
        assert_eq!(f.0[3].state, LrState::Pending);
        assert!(!active_set(&f).contains(42));
        // A level-triggered software interrupt waiting for its EOI
        // maintenance: its line is sampled again.
        f.0[0].eoi = true;
        assert_eq!(
            change_active(&mut f, 40, false, false),
            ActiveChange::Changed {
                deactivate: None,
                eoi: true
            }
        );
    }

    #[test]
    fn an_lr_waiting_for_eoi_maintenance_is_not_reused() {
        let mut regs = Fake(vec![
            Lr {
                eoi: true,
                state: LrState::Invalid,
                ..sw(33)
            },
            Lr::EMPTY,
        ]);
        assert_eq!(place(&mut regs, sw(5)), Placed::New);
        assert_eq!(regs.0[1].vintid, 5);
        assert_eq!(regs.0[0].vintid, 33, "the EOI maintenance entry survives");
    }

    #[test]
    fn soft_virq_follows_the_list_registers() {
        const OFF: SoftVirq = SoftVirq {
            assert: false,
            npie: false,
        };
        const ON: SoftVirq = SoftVirq {
            assert: true,
            npie: true,
        };
        let active = |lr: Lr| Lr {
            state: LrState::Active,
            ..lr
        };
        let mut regs = Fake(vec![Lr::EMPTY; 4]);
        assert_eq!(soft_virq(&mut regs), OFF, "nothing listed");
        // The timer PPI with the HW bit.
        let timer = Lr {
            pintid: Some(27),
            ..sw(27)
        };
        assert_eq!(place(&mut regs, timer), Placed::New);
        assert_eq!(soft_virq(&mut regs), ON);
        // The guest acknowledged it: active only, nothing left to signal.
        regs.0[0] = active(regs.0[0]);
        assert_eq!(soft_virq(&mut regs), OFF);
        // An SGI, acknowledged, then sent again while active.
        assert_eq!(place(&mut regs, sw(1)), Placed::New);
        assert_eq!(soft_virq(&mut regs), ON);
        regs.0[1] = active(regs.0[1]);
        assert_eq!(soft_virq(&mut regs), OFF);
        assert_eq!(place(&mut regs, sw(1)), Placed::Merged);
        assert_eq!(regs.0[1].state, LrState::PendingActive);
        // VI on, no NPIE (NP would stay asserted), and an EOI maintenance
        // once the guest has finished both halves.
        let pa = soft_virq(&mut regs);
        assert_eq!(
            pa,
            SoftVirq {
                assert: true,
                npie: false
            }
        );
        assert!(regs.0[1].eoi && regs.0[1].pintid.is_none());
        assert_eq!(soft_virq(&mut regs), pa, "marked once, same answer");
        // Its active half finished: Pending again, NPIE back.
        regs.0[1].state = LrState::Pending;
        assert_eq!(soft_virq(&mut regs), ON);
        // Finished (invalid) and waiting for its EOI maintenance: nothing.
        regs.0[1].state = LrState::Invalid;
        assert_eq!(soft_virq(&mut regs), OFF);
        // A pending interrupt in the last list register counts too.
        regs.0[3] = sw(40);
        assert_eq!(soft_virq(&mut regs), ON);
    }

    #[test]
    fn placement_fills_merges_and_reports_full() {
        let mut regs = Fake(vec![Lr::EMPTY; 2]);
        assert_eq!(place(&mut regs, sw(1)), Placed::New);
        assert_eq!(place(&mut regs, sw(1)), Placed::Merged);
        regs.0[0].state = LrState::Active;
        assert_eq!(place(&mut regs, sw(1)), Placed::Merged);
        assert_eq!(regs.0[0].state, LrState::PendingActive);
        assert_eq!(place(&mut regs, sw(2)), Placed::New);
        assert_eq!(place(&mut regs, sw(3)), Placed::Full);
        // A GICv2 SGI from another source is a different interrupt.
        regs.0[1] = Lr::EMPTY;
        assert_eq!(place(&mut regs, Lr { source: 2, ..sw(1) }), Placed::New);
    }
}
