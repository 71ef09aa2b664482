//! The virtual GIC of one VM: distributor state (and GICv3 redistributors)
//! emulated per VM, and a queue of interrupts waiting for each vCPU's list
//! registers. A VM sees and programs only the interrupts it owns: its SGIs,
//! its timer PPIs, its virtual devices' SPIs and its passed-through SPIs.
//! Everything else reads as zero and ignores writes.
//!
//! No hardware access here: what must reach the physical GIC (enabling a
//! passed-through interrupt, routing it, kicking another CPU) goes through
//! [`VgicHost`], so the whole model is tested on the host.

pub mod dist;
pub mod lr;
pub mod redist;
pub mod sgi;

#[cfg(test)]
mod proptests;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use lr::Lr;
use spin::Mutex;

/// Which GIC the guest sees (always the board's).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Version {
    V2,
    V3,
}

/// Who drives an interrupt the VM owns.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Owner {
    /// Raised by the hypervisor (SGIs, emulated devices).
    Virtual,
    /// A physical interrupt with the same number (timer PPIs, passed-through
    /// SPIs): injected with the HW bit.
    Hw,
}

/// What the vGIC needs done outside itself.
pub trait VgicHost: Send + Sync {
    /// `vcpu` has new interrupts queued: get its CPU to fill its list registers.
    fn kick(&self, vcpu: usize);
    /// Mirror the guest enabling/disabling hardware interrupt `intid` (for a
    /// PPI: the one of `vcpu`'s CPU).
    fn hw_enable(&self, intid: u32, vcpu: usize, enable: bool);
    /// Route hardware SPI `intid` to the CPU running `vcpu`.
    fn hw_route(&self, intid: u32, vcpu: usize);
    /// Hardware interrupt `intid`, acknowledged for `vcpu` and waiting in
    /// its queue, was dropped before reaching a list register: finish it
    /// physically, or it would never fire again.
    fn hw_deactivate(&self, intid: u32, vcpu: usize);
    /// The interrupts active in `vcpu`'s list registers (its CPU's, asked
    /// if it is another one; empty if `vcpu` does not run).
    fn active(&self, vcpu: usize) -> lr::ActiveSet;
    /// Sets or clears `intid`'s active state in `vcpu`'s list registers.
    fn set_active(&self, intid: u32, vcpu: usize, active: bool);
}

struct NoHost;
impl VgicHost for NoHost {
    fn kick(&self, _: usize) {}
    fn hw_enable(&self, _: u32, _: usize, _: bool) {}
    fn hw_route(&self, _: u32, _: usize) {}
    fn hw_deactivate(&self, _: u32, _: usize) {}
    fn active(&self, _: usize) -> lr::ActiveSet {
        lr::ActiveSet::EMPTY
    }
    fn set_active(&self, _: u32, _: usize, _: bool) {}
}

/// Default priority of every interrupt (what GIC reset leaves is 0; Linux
/// programs its own).
const RESET_PRIORITY: u8 = 0;
/// Interrupts one vCPU may have queued beyond its list registers. A VM that
/// raises more (an SGI flood) loses the excess; they are counted.
const QUEUE: usize = 64;

#[derive(Clone, Copy, Debug)]
struct Irq {
    enabled: bool,
    /// Pending but not yet handed to a list register.
    pending: bool,
    priority: u8,
    edge: bool,
    group1: bool,
    /// Target vCPU (SPIs).
    target: u8,
    /// Line level of a level-triggered virtual source.
    line: bool,
    /// v3 IROUTER as the guest wrote it.
    router: u64,
}

const IRQ_RESET: Irq = Irq {
    enabled: false,
    pending: false,
    priority: RESET_PRIORITY,
    edge: false,
    group1: false,
    target: 0,
    line: false,
    router: 0,
};

/// An interrupt on its way to a list register.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Queued {
    pub vintid: u32,
    pub hw: bool,
    pub priority: u8,
    pub group1: bool,
    pub eoi: bool,
    pub source: u8,
}

impl Queued {
    #[inline(always)]
    pub fn lr(&self) -> Lr {
        Lr {
            vintid: self.vintid,
            pintid: self.hw.then_some(self.vintid),
            priority: self.priority,
            state: lr::LrState::Pending,
            group1: self.group1,
            eoi: self.eoi,
            source: self.source,
        }
    }
}

struct State {
    ctlr: u32,
    spis: Vec<Irq>,
    private: Vec<[Irq; 32]>,
    /// GICR_WAKER.ProcessorSleep per vCPU (v3).
    asleep: Vec<bool>,
}

/// A ring of interrupts waiting for a list register (FIFO, duplicates merged).
struct Queue {
    items: [Queued; QUEUE],
    head: usize,
    len: usize,
}

const NO_IRQ: Queued = Queued {
    vintid: 1023,
    hw: false,
    priority: 0,
    group1: false,
    eoi: false,
    source: 0,
};

impl Queue {
    const fn new() -> Self {
        Queue {
            items: [NO_IRQ; QUEUE],
            head: 0,
            len: 0,
        }
    }

    fn at(&self, k: usize) -> &Queued {
        self.items.get((self.head + k) % QUEUE).unwrap_or(&NO_IRQ)
    }

    fn push(&mut self, q: Queued) -> bool {
        if (0..self.len).any(|k| {
            let i = self.at(k);
            i.vintid == q.vintid && i.source == q.source
        }) {
            return true;
        }
        if self.len == QUEUE {
            return false;
        }
        let Some(slot) = self.items.get_mut((self.head + self.len) % QUEUE) else {
            return false;
        };
        *slot = q;
        self.len += 1;
        true
    }

    fn pop(&mut self) -> Option<Queued> {
        if self.len == 0 {
            return None;
        }
        let first = *self.items.get(self.head)?;
        self.head = (self.head + 1) % QUEUE;
        self.len -= 1;
        Some(first)
    }

    fn push_front(&mut self, q: Queued) {
        if self.len == QUEUE {
            return;
        }
        let head = (self.head + QUEUE - 1) % QUEUE;
        let Some(slot) = self.items.get_mut(head) else {
            return;
        };
        *slot = q;
        self.head = head;
        self.len += 1;
    }

    /// Drops every entry for `vintid`, keeping the others in order; in
    /// place, so a guest's register write never allocates.
    /// Returns whether a hardware interrupt's entry was among them.
    fn remove(&mut self, vintid: u32) -> bool {
        let mut kept = 0;
        let mut hw = false;
        for k in 0..self.len {
            let q = *self.at(k);
            if q.vintid != vintid {
                if let Some(slot) = self.items.get_mut((self.head + kept) % QUEUE) {
                    *slot = q;
                }
                kept += 1;
            } else {
                hw |= q.hw;
            }
        }
        self.len = kept;
        hw
    }
}

/// One VM's virtual GIC.
pub struct Vgic {
    pub version: Version,
    pub nvcpus: usize,
    /// SPIs the distributor reports (a multiple of 32).
    pub nspis: u32,
    owners: Vec<Option<Owner>>,
    state: Mutex<State>,
    queues: Vec<Mutex<Queue>>,
    /// Each vCPU's SGI mailbox: the IPI path without a lock.
    sgis: Vec<sgi::SgiBox>,
    /// The virtual SPIs that take the mailbox path ([`sgi::FastSpi`]):
    /// the first [`sgi::MAX_FAST_SPIS`] the hypervisor raises itself.
    fast_spis: Vec<sgi::FastSpi>,
    /// Whether each vCPU's queue may be non-empty, readable without its
    /// lock (the interrupt exit checks it before taking the lock).
    queued: Vec<core::sync::atomic::AtomicBool>,
    host: Box<dyn VgicHost>,
    /// Interrupts lost to a full queue.
    pub dropped: AtomicU64,
    /// GICD_TYPER, fixed at creation (the guest reads it often).
    typer: u64,
}

impl Vgic {
    /// A vGIC for `nvcpus` vCPUs owning `owned` (INTID, owner) interrupts
    /// besides the SGIs. `timer_ppis` are the PPIs injected from hardware.
    pub fn new(version: Version, nvcpus: usize, owned: &[(u32, Owner)], host: Box<dyn VgicHost>) -> Self {
        let max = owned.iter().map(|o| o.0).max().unwrap_or(31).max(31);
        let nspis = (max + 1).div_ceil(32) * 32 - 32;
        let mut owners = alloc::vec![None; (32 + nspis) as usize];
        for o in owners.iter_mut().take(16) {
            *o = Some(Owner::Virtual);
        }
        for &(intid, owner) in owned {
            if let Some(o) = owners.get_mut(intid as usize) {
                *o = Some(owner);
            }
        }
        let mut private = [IRQ_RESET; 32];
        for p in private.iter_mut().take(16) {
            // SGIs are always enabled and edge-triggered on GICv2; GICv3
            // leaves enabling to the guest.
            p.edge = true;
            p.enabled = version == Version::V2;
        }
        Self {
            version,
            nvcpus,
            nspis,
            owners,
            state: Mutex::new(State {
                ctlr: 0,
                spis: alloc::vec![IRQ_RESET; nspis as usize],
                private: alloc::vec![private; nvcpus],
                asleep: alloc::vec![true; nvcpus],
            }),
            queues: (0..nvcpus).map(|_| Mutex::new(Queue::new())).collect(),
            sgis: (0..nvcpus).map(|_| sgi::SgiBox::new()).collect(),
            fast_spis: {
                let mut v: Vec<u32> = owned
                    .iter()
                    .filter(|o| o.0 >= 32 && o.1 == Owner::Virtual)
                    .map(|o| o.0)
                    .collect();
                v.sort_unstable();
                v.dedup();
                v.into_iter()
                    .take(sgi::MAX_FAST_SPIS)
                    .map(sgi::FastSpi::new)
                    .collect()
            },
            queued: (0..nvcpus)
                .map(|_| core::sync::atomic::AtomicBool::new(false))
                .collect(),
            host,
            dropped: AtomicU64::new(0),
            typer: {
                let lines = u64::from((32 + nspis) / 32 - 1);
                let cpus = (nvcpus.clamp(1, 8) as u64 - 1) << 5;
                match version {
                    Version::V3 => lines | cpus | (9 << 19),
                    Version::V2 => lines | cpus,
                }
            },
        }
    }

    /// Runs `f` on `vcpu`'s queue and republishes whether it is empty.
    fn with_queue<R>(&self, vcpu: usize, f: impl FnOnce(&mut Queue) -> R) -> Option<R> {
        let mut q = self.queues.get(vcpu)?.lock();
        let r = f(&mut q);
        if let Some(flag) = self.queued.get(vcpu) {
            flag.store(q.len > 0, Ordering::Release);
        }
        Some(r)
    }

    /// Back to reset state (VM reset): everything disabled, nothing queued.
    /// Hardware interrupts the guest had enabled are disabled physically.
    pub fn reset(&self) {
        let fresh = Vgic::new(self.version, self.nvcpus, &[], Box::new(NoHost));
        let enabled_hw: Vec<(u32, usize)> = {
            let mut s = self.state.lock();
            let mut hw = Vec::new();
            for (v, p) in s.private.iter().enumerate() {
                for (i, irq) in p.iter().enumerate() {
                    if irq.enabled && self.owner(i as u32) == Some(Owner::Hw) {
                        hw.push((i as u32, v));
                    }
                }
            }
            for (k, irq) in s.spis.iter().enumerate() {
                if irq.enabled && self.owner(32 + k as u32) == Some(Owner::Hw) {
                    hw.push((32 + k as u32, usize::from(irq.target)));
                }
            }
            let f = fresh.state.into_inner();
            s.ctlr = 0;
            s.private = f.private;
            for irq in s.spis.iter_mut() {
                *irq = IRQ_RESET;
            }
            s.asleep = f.asleep;
            for v in 0..self.nvcpus {
                if let Some(b) = self.sgis.get(v) {
                    b.clear();
                }
                if let Some(b) = self.spi_box(v) {
                    b.clear();
                }
                self.mirror_sgis(&s, v);
            }
            self.mirror_spis(&s);
            hw
        };
        for v in 0..self.nvcpus {
            // Hardware interrupts still waiting for a list register are
            // active physically: finish them (those in list registers are
            // finished by `reset_vcpu_interface` on their CPU).
            let mut waiting = Vec::new();
            self.with_queue(v, |q| {
                while let Some(e) = q.pop() {
                    if e.hw {
                        waiting.push(e.vintid);
                    }
                }
            });
            for intid in waiting {
                self.host.hw_deactivate(intid, v);
            }
        }
        for (intid, vcpu) in enabled_hw {
            self.host.hw_enable(intid, vcpu, false);
        }
    }

    /// Who owns `intid` in this VM, if anyone.
    pub fn owner(&self, intid: u32) -> Option<Owner> {
        self.owners.get(intid as usize).copied().flatten()
    }

    fn irq<'a>(&self, s: &'a mut State, intid: u32, vcpu: usize) -> Option<&'a mut Irq> {
        self.owner(intid)?;
        if intid < 32 {
            s.private.get_mut(vcpu).and_then(|p| p.get_mut(intid as usize))
        } else {
            s.spis.get_mut(intid as usize - 32)
        }
    }

    fn group_enabled(&self, s: &State, group1: bool) -> bool {
        s.ctlr & if group1 { 2 } else { 1 } != 0
    }

    /// Republishes SGI `intid` of `vcpu` to its mailbox (see [`sgi`]):
    /// called with the state locked after anything that may change whether
    /// it is deliverable, its priority or its group.
    fn mirror_sgi(&self, s: &State, intid: u32, vcpu: usize) {
        let (Some(b), Some(irq)) = (
            self.sgis.get(vcpu),
            s.private.get(vcpu).and_then(|p| p.get(intid as usize)),
        ) else {
            return;
        };
        let ready = intid < 16 && irq.enabled && self.group_enabled(s, irq.group1);
        b.mirror(intid, ready, irq.priority, irq.group1);
    }

    /// [`Self::mirror_sgi`] for all SGIs of `vcpu` (GICD_CTLR changed).
    fn mirror_sgis(&self, s: &State, vcpu: usize) {
        for intid in 0..16 {
            self.mirror_sgi(s, intid, vcpu);
        }
    }

    /// Republishes every fast SPI (see [`sgi::FastSpi`]): called with the
    /// state locked after anything that may change whether one is
    /// deliverable, its target, priority, group or trigger. A few words.
    fn mirror_spis(&self, s: &State) {
        for f in &self.fast_spis {
            let Some(irq) = s.spis.get((f.intid as usize).wrapping_sub(32)) else {
                continue;
            };
            let ready = irq.enabled && self.group_enabled(s, irq.group1);
            let target = usize::from(irq.target).min(self.nvcpus.saturating_sub(1));
            f.mirror(ready, target, irq.priority, irq.group1, !irq.edge);
        }
    }

    /// The fast SPI slot of `intid`, if it has one.
    #[inline(always)]
    fn fast_slot(&self, intid: u32) -> Option<usize> {
        self.fast_spis.iter().position(|f| f.intid == intid)
    }

    /// Fast SPI slot `k`.
    #[inline(always)]
    pub fn fast_spi(&self, k: usize) -> Option<&sgi::FastSpi> {
        self.fast_spis.get(k)
    }

    /// `vcpu`'s posted fast SPIs.
    #[inline(always)]
    pub fn spi_box(&self, vcpu: usize) -> Option<&sgi::SpiBox> {
        self.sgis.get(vcpu).map(|b| &b.spis)
    }

    /// Posts fast SPI `intid` without the lock if it is deliverable now:
    /// `None` if it is not (or has no slot), else the target vCPU and
    /// whether it must be kicked.
    #[inline(always)]
    fn post_fast(&self, intid: u32) -> Option<(usize, bool)> {
        let k = self.fast_slot(intid)?;
        let t = self.fast_spis.get(k)?.ready_target()?;
        Some((t, self.spi_box(t)?.post(k)))
    }

    /// Queues `intid` for its target if it can be delivered now; otherwise
    /// leaves it latched pending. Returns the vCPU to kick.
    fn deliver(&self, s: &mut State, intid: u32, vcpu: usize, source: u8) -> Option<usize> {
        let ctlr_ok = |g| self.group_enabled(s, g);
        let irq = if intid < 32 {
            s.private.get(vcpu).and_then(|p| p.get(intid as usize))
        } else {
            s.spis.get(intid as usize - 32)
        };
        let irq = *irq?;
        if !irq.enabled || !ctlr_ok(irq.group1) {
            return None;
        }
        let target = if intid < 32 {
            vcpu
        } else {
            usize::from(irq.target).min(self.nvcpus - 1)
        };
        let q = Queued {
            vintid: intid,
            hw: false,
            priority: irq.priority,
            group1: irq.group1,
            eoi: !irq.edge && self.owner(intid) == Some(Owner::Virtual),
            source,
        };
        if self.with_queue(target, |queue| queue.push(q)) == Some(false) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(i) = self.irq(s, intid, vcpu) {
            i.pending = false;
        }
        Some(target)
    }

    /// Makes a virtual interrupt pending (an SGI from `source`, an emulated
    /// device's edge). `vcpu` selects the banked copy of SGIs/PPIs.
    pub fn raise(&self, intid: u32, vcpu: usize, source: u8) {
        if intid >= 32 {
            if let Some((t, kick)) = self.post_fast(intid) {
                if kick {
                    self.host.kick(t);
                }
                return;
            }
        }
        self.raise_locked(intid, vcpu, source)
    }

    /// [`Self::raise`] on the locked path only: pending in the distributor
    /// state, queued if deliverable, else latched.
    pub fn raise_locked(&self, intid: u32, vcpu: usize, source: u8) {
        let kick = {
            let mut s = self.state.lock();
            match self.irq(&mut s, intid, vcpu) {
                Some(irq) => irq.pending = true,
                None => return,
            }
            self.deliver(&mut s, intid, vcpu, source)
        };
        if let Some(t) = kick {
            self.host.kick(t);
        }
    }

    /// [`Self::raise`], out of the SGI fast path.
    #[cold]
    #[inline(never)]
    fn raise_cold(&self, intid: u32, vcpu: usize, source: u8) {
        self.raise(intid, vcpu, source)
    }

    /// Sets the line of a level-triggered virtual source (SPIs only).
    pub fn set_line(&self, intid: u32, level: bool) {
        let kick = {
            let mut s = self.state.lock();
            let Some(irq) = self.irq(&mut s, intid, 0) else {
                return;
            };
            let was = irq.line;
            irq.line = level;
            if !level {
                irq.pending = false;
                None
            } else if !was {
                irq.pending = true;
                self.deliver(&mut s, intid, 0, 0)
            } else {
                None
            }
        };
        if let Some(t) = kick {
            self.host.kick(t);
        }
    }

    /// A new edge on a still-high line of an edge-configured virtual SPI
    /// (its source has more events); nothing for a level-configured one.
    pub fn retrigger(&self, intid: u32) {
        let kick = {
            let mut s = self.state.lock();
            match self.irq(&mut s, intid, 0) {
                Some(irq) if irq.edge && irq.line && intid >= 32 => {
                    irq.pending = true;
                    self.deliver(&mut s, intid, 0, 0)
                }
                _ => None,
            }
        };
        if let Some(t) = kick {
            self.host.kick(t);
        }
    }

    /// The guest EOIed a level-triggered virtual interrupt: if its line is
    /// still high, it is pending again.
    pub fn eoi(&self, intid: u32, vcpu: usize) {
        let kick = {
            let mut s = self.state.lock();
            match self.irq(&mut s, intid, vcpu) {
                Some(irq) if irq.line && !irq.edge => self.deliver(&mut s, intid, vcpu, 0),
                _ => None,
            }
        };
        if let Some(t) = kick {
            self.host.kick(t);
        }
    }

    /// A hardware interrupt this VM owns fired on `vcpu`'s CPU: what to put
    /// in a list register, or `None` if the guest has it disabled (the caller
    /// then masks it physically and deactivates it).
    #[inline]
    pub fn hw_fired(&self, intid: u32, vcpu: usize) -> Option<Queued> {
        // SGIs and the hypervisor's own interrupts are never a guest's
        // hardware interrupt: decided before taking the lock.
        if self.owner(intid) != Some(Owner::Hw) {
            return None;
        }
        let s = self.state.lock();
        let group_ok = |g| s.ctlr & if g { 2 } else { 1 } != 0;
        let irq = if intid < 32 {
            s.private.get(vcpu)?.get(intid as usize)?
        } else {
            s.spis.get(intid as usize - 32)?
        };
        if !irq.enabled || !group_ok(irq.group1) {
            return None;
        }
        Some(Queued {
            vintid: intid,
            hw: true,
            priority: irq.priority,
            group1: irq.group1,
            eoi: false,
            source: 0,
        })
    }

    /// Next interrupt queued for `vcpu`.
    pub fn pop(&self, vcpu: usize) -> Option<Queued> {
        if let Some(t) = self.sgis.get(vcpu)?.take() {
            return Some(Queued {
                vintid: t.sgi,
                hw: false,
                priority: t.priority,
                group1: t.group1,
                eoi: false,
                source: t.lane,
            });
        }
        if let Some(f) = self
            .spi_box(vcpu)
            .and_then(|b| b.take())
            .and_then(|k| self.fast_spis.get(k))
        {
            // Not deliverable any more (disabled, or a reset, since the
            // post): latched in the distributor, as the locked path would.
            match f.entry_if_ready() {
                Some(e) => {
                    return Some(Queued {
                        vintid: e.intid,
                        hw: false,
                        priority: e.priority,
                        group1: e.group1,
                        eoi: e.eoi,
                        source: 0,
                    })
                }
                None => self.raise_locked(f.intid, vcpu, 0),
            }
        }
        if !self.queued.get(vcpu)?.load(Ordering::Acquire) {
            return None;
        }
        self.with_queue(vcpu, |q| q.pop()).flatten()
    }

    /// Puts back what did not fit in the list registers.
    pub fn unpop(&self, vcpu: usize, q: Queued) {
        self.with_queue(vcpu, |queue| queue.push_front(q));
    }

    /// Queues a hardware interrupt that found no free list register.
    pub fn queue_hw(&self, vcpu: usize, q: Queued) {
        if self.with_queue(vcpu, |queue| queue.push(q)) == Some(false) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `vcpu`'s SGI mailbox.
    #[inline(always)]
    pub fn sgi_box(&self, vcpu: usize) -> Option<&sgi::SgiBox> {
        self.sgis.get(vcpu)
    }

    /// Whether `vcpu`'s locked queue (not its SGI mailbox) may hold something.
    #[inline(always)]
    pub fn queue_nonempty(&self, vcpu: usize) -> bool {
        self.queued.get(vcpu).is_some_and(|q| q.load(Ordering::Acquire))
    }

    /// Whether `vcpu` has interrupts waiting for a list register.
    #[inline(always)]
    pub fn has_queued(&self, vcpu: usize) -> bool {
        self.queued.get(vcpu).is_some_and(|q| q.load(Ordering::Acquire))
            || self.sgis.get(vcpu).is_some_and(|b| b.any())
            || self.spi_box(vcpu).is_some_and(|b| b.any())
    }

    /// Delivers a guest SGI (from ICC_SGI1R_EL1 or GICD_SGIR) to each vCPU
    /// in `targets` (a bit mask of vCPU indices).
    /// An SGI that is deliverable goes into the target's mailbox without
    /// a lock; one that is not (disabled, its group disabled, or from a
    /// GICv2 source beyond the mailbox's lanes) is latched under the lock.
    pub fn send_sgi(&self, intid: u32, from: usize, targets: u64) {
        let mut kicks = self.post_sgis(intid, from, targets);
        while kicks != 0 {
            self.host.kick(kicks.trailing_zeros() as usize);
            kicks &= kicks - 1;
        }
    }

    /// [`Self::send_sgi`] without the kicks: returns the vCPUs (a bit mask)
    /// whose CPU must be kicked, for a caller that kicks them itself.
    #[inline(always)]
    pub fn post_sgis(&self, intid: u32, from: usize, targets: u64) -> u64 {
        let intid = intid & 0xf;
        // GICv3 SGIs carry no source; GICv2 ones carry the sender's number.
        let lane = match self.version {
            Version::V3 => 0,
            Version::V2 => from,
        };
        let all = if self.nvcpus >= 64 {
            !0
        } else {
            (1u64 << self.nvcpus) - 1
        };
        let mut left = targets & all;
        let mut kicks = 0;
        while left != 0 {
            let t = left.trailing_zeros() as usize;
            left &= left - 1;
            match self.sgis.get(t).and_then(|b| b.post(intid, lane)) {
                Some(true) => kicks |= 1 << t,
                Some(false) => {}
                None => self.raise_cold(intid, t, from as u8),
            }
        }
        kicks
    }

    // Register-level helpers used by `dist` and `redist`.

    fn set_enabled(&self, intid: u32, vcpu: usize, on: bool) {
        let (hw, kick) = {
            let mut s = self.state.lock();
            let Some(irq) = self.irq(&mut s, intid, vcpu) else {
                return;
            };
            if irq.enabled == on || (intid < 16 && self.version == Version::V2) {
                return;
            }
            irq.enabled = on;
            let pending = irq.pending;
            let target = if intid < 32 { vcpu } else { usize::from(irq.target) };
            if intid < 16 {
                self.mirror_sgi(&s, intid, vcpu);
            } else if intid >= 32 && !self.fast_spis.is_empty() {
                self.mirror_spis(&s);
            }
            let kick = if on && pending {
                self.deliver(&mut s, intid, vcpu, 0)
            } else {
                None
            };
            ((self.owner(intid) == Some(Owner::Hw)).then_some(target), kick)
        };
        if let Some(target) = hw {
            self.host.hw_enable(intid, target, on);
        }
        if let Some(t) = kick {
            self.host.kick(t);
        }
    }

    fn set_pending(&self, intid: u32, vcpu: usize, on: bool) {
        if on {
            self.raise(intid, vcpu, 0);
        } else {
            let mut s = self.state.lock();
            let target = match self.irq(&mut s, intid, vcpu) {
                Some(irq) => {
                    irq.pending = false;
                    if intid < 32 {
                        vcpu
                    } else {
                        usize::from(irq.target)
                    }
                }
                None => return,
            };
            drop(s);
            if intid < 16 {
                if let Some(b) = self.sgis.get(vcpu) {
                    b.cancel(intid);
                }
            } else if let Some(k) = self.fast_slot(intid) {
                for b in &self.sgis {
                    b.spis.cancel(k);
                }
            }
            let target = target.min(self.nvcpus - 1);
            if self.with_queue(target, |q| q.remove(intid)) == Some(true) {
                self.host.hw_deactivate(intid, target);
            }
        }
    }

    /// The vCPU whose list registers would hold `intid` (as seen from
    /// `vcpu`, for the banked SGIs/PPIs), if the VM owns it.
    fn lr_vcpu(&self, intid: u32, vcpu: usize) -> Option<usize> {
        let target = self.with_irq(intid, vcpu, |i| usize::from(i.target))?;
        Some(if intid < 32 {
            vcpu
        } else {
            target.min(self.nvcpus - 1)
        })
    }

    fn with_irq<R>(&self, intid: u32, vcpu: usize, f: impl FnOnce(&mut Irq) -> R) -> Option<R> {
        let mut s = self.state.lock();
        let r = self.irq(&mut s, intid, vcpu).map(f);
        if intid < 16 {
            self.mirror_sgi(&s, intid, vcpu);
        } else if intid >= 32 && !self.fast_spis.is_empty() {
            self.mirror_spis(&s);
        }
        r
    }

    fn set_target(&self, intid: u32, vcpu: usize) {
        let vcpu = vcpu.min(self.nvcpus - 1);
        let changed = self.with_irq(intid, 0, |irq| {
            let changed = usize::from(irq.target) != vcpu;
            irq.target = vcpu as u8;
            changed
        });
        if changed == Some(true) && self.owner(intid) == Some(Owner::Hw) {
            self.host.hw_route(intid, vcpu);
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::sync::{Arc, Mutex as StdMutex};

    #[test]
    fn queue_remove_keeps_the_rest_in_order_across_the_wrap() {
        let q = |vintid| Queued {
            vintid,
            hw: false,
            priority: 0xa0,
            group1: true,
            eoi: false,
            source: 0,
        };
        let mut queue = Queue::new();
        // Move the head near the end so the entries wrap around the ring.
        for i in 0..(QUEUE as u32 - 2) {
            assert!(queue.push(q(100 + i)));
            queue.pop();
        }
        for v in [40, 41, 40, 42, 43, 40] {
            let _ = queue.push(q(v));
        }
        queue.push_front(q(40));
        queue.remove(40);
        let left: Vec<u32> = core::iter::from_fn(|| queue.pop()).map(|e| e.vintid).collect();
        assert_eq!(left, [41, 42, 43]);
        queue.remove(7); // nothing to remove, nothing breaks
        assert!(queue.pop().is_none());
    }

    /// Records what the vGIC asked of the hardware.
    #[derive(Default, Clone)]
    pub struct Recorder(pub Arc<StdMutex<Vec<String>>>);

    impl VgicHost for Recorder {
        fn kick(&self, vcpu: usize) {
            self.0.lock().unwrap().push(format!("kick {vcpu}"));
        }
        fn hw_enable(&self, intid: u32, vcpu: usize, enable: bool) {
            self.0
                .lock()
                .unwrap()
                .push(format!("hw_enable {intid} {vcpu} {enable}"));
        }
        fn hw_route(&self, intid: u32, vcpu: usize) {
            self.0.lock().unwrap().push(format!("hw_route {intid} {vcpu}"));
        }
        fn hw_deactivate(&self, intid: u32, vcpu: usize) {
            self.0
                .lock()
                .unwrap()
                .push(format!("hw_deactivate {intid} {vcpu}"));
        }
        /// vCPU v's list registers hold INTIDs 5 + v and 33 active.
        fn active(&self, vcpu: usize) -> lr::ActiveSet {
            let mut set = lr::ActiveSet::EMPTY;
            set.0[0] = 5 + vcpu as u32;
            set.0[1] = 33;
            set
        }
        fn set_active(&self, intid: u32, vcpu: usize, active: bool) {
            self.0
                .lock()
                .unwrap()
                .push(format!("set_active {intid} {vcpu} {active}"));
        }
    }

    pub fn vgic(version: Version, nvcpus: usize) -> (Vgic, Recorder) {
        let r = Recorder::default();
        let owned = [
            (27, Owner::Hw),
            (30, Owner::Hw),
            (33, Owner::Virtual),
            (34, Owner::Hw),
        ];
        (Vgic::new(version, nvcpus, &owned, Box::new(r.clone())), r)
    }

    #[test]
    fn spis_are_counted_in_32s() {
        let (g, _) = vgic(Version::V3, 2);
        assert_eq!(g.nspis, 32);
        assert_eq!(g.owner(34), Some(Owner::Hw));
        assert_eq!(g.owner(35), None);
        assert_eq!(g.owner(5), Some(Owner::Virtual));
        assert_eq!(g.owner(23), None);
    }

    #[test]
    fn dropped_hardware_entries_are_deactivated_physically() {
        let (g, r) = vgic(Version::V3, 2);
        g.state.lock().ctlr = 2;
        g.with_irq(34, 0, |i| i.group1 = true);
        g.set_enabled(34, 0, true);
        let q = g.hw_fired(34, 0).unwrap();
        // Acknowledged physically, no free list register: queued.
        g.queue_hw(0, q);
        g.set_pending(34, 0, false);
        assert!(g.pop(0).is_none());
        assert!(r.0.lock().unwrap().contains(&"hw_deactivate 34 0".to_string()));

        // The same at VM reset, for what is still queued.
        g.set_enabled(34, 0, true);
        g.queue_hw(0, g.hw_fired(34, 0).unwrap());
        r.0.lock().unwrap().clear();
        g.reset();
        assert!(r.0.lock().unwrap().contains(&"hw_deactivate 34 0".to_string()));
        assert!(!g.has_queued(0));
    }

    #[test]
    fn pending_while_disabled_is_delivered_on_enable() {
        let (g, r) = vgic(Version::V3, 2);
        g.state.lock().ctlr = 2;
        g.with_irq(33, 0, |i| i.group1 = true);
        g.raise(33, 0, 0);
        assert!(g.pop(0).is_none());
        g.set_enabled(33, 0, true);
        let q = g.pop(0).unwrap();
        assert_eq!(q.vintid, 33);
        assert!(!q.hw);
        assert!(r.0.lock().unwrap().contains(&"kick 0".to_string()));
    }

    /// The lock-free SPI path (a doorbell's ring) never delivers what the
    /// locked path would hold back: a disabled SPI, one of a disabled
    /// group, one cleared by ICPENDR; and it goes to the SPI's target.
    #[test]
    fn fast_spis_keep_every_distributor_rule() {
        let (g, r) = vgic(Version::V3, 2);
        // Group 1 on, SPI 33 in group 1, still disabled: latched, not posted.
        g.set_ctlr(2);
        g.with_irq(33, 0, |i| i.group1 = true);
        g.raise(33, 0, 0);
        assert!(!g.has_queued(0) && !g.has_queued(1), "disabled: nothing posted");
        assert!(r.0.lock().unwrap().iter().all(|l| !l.starts_with("kick")));
        // Enabling releases the latched one (the locked path).
        g.set_enabled(33, 0, true);
        assert_eq!(g.pop(0).map(|q| q.vintid), Some(33));
        // Now ready: the mailbox, to its target, with a kick.
        g.set_target(33, 1);
        r.0.lock().unwrap().clear();
        g.raise(33, 0, 0);
        assert!(g.spi_box(1).is_some_and(|b| b.any()), "posted to vCPU 1");
        assert!(!g.has_queued(0));
        assert_eq!(*r.0.lock().unwrap(), ["kick 1".to_string()]);
        // ICPENDR drops it from the mailbox.
        g.set_pending(33, 0, false);
        assert!(g.pop(1).is_none(), "cleared pending: nothing delivered");
        // Its group disabled: latched again, not posted.
        g.set_ctlr(0);
        g.raise(33, 0, 0);
        assert!(!g.has_queued(1), "group disabled: nothing posted");
        g.set_ctlr(2);
        let q = g.pop(1).unwrap();
        assert_eq!((q.vintid, q.group1, q.hw), (33, true, false));
        // A level-configured virtual SPI keeps its EOI maintenance.
        g.with_irq(33, 0, |i| i.edge = false);
        g.raise(33, 0, 0);
        assert!(g.pop(1).unwrap().eoi);
        g.with_irq(33, 0, |i| i.edge = true);
        g.raise(33, 0, 0);
        assert!(!g.pop(1).unwrap().eoi);
        // Disabled again: no more posts.
        g.set_enabled(33, 0, false);
        g.raise(33, 0, 0);
        assert!(!g.has_queued(1));
        // Posted while enabled, disabled before its vCPU drained it: not
        // delivered, but latched and delivered on enable.
        g.set_enabled(33, 0, true);
        assert!(g.pop(1).is_some(), "the latched one from just above");
        g.raise(33, 0, 0);
        assert!(g.spi_box(1).is_some_and(|b| b.any()));
        g.set_enabled(33, 0, false);
        assert!(g.pop(1).is_none(), "disabled since the post: not delivered");
        g.set_enabled(33, 0, true);
        assert_eq!(
            g.pop(1).map(|q| q.vintid),
            Some(33),
            "latched, delivered on enable"
        );
        // A VM reset forgets what was posted.
        g.set_enabled(33, 0, true);
        g.raise(33, 0, 0);
        assert!(g.has_queued(1));
        g.reset();
        assert!(!g.has_queued(1));
    }

    #[test]
    fn spis_go_to_their_target() {
        let (g, _) = vgic(Version::V3, 3);
        g.state.lock().ctlr = 3;
        g.set_target(33, 2);
        g.set_enabled(33, 0, true);
        g.raise(33, 0, 0);
        assert!(g.pop(0).is_none());
        assert_eq!(g.pop(2).unwrap().vintid, 33);
    }

    #[test]
    fn hardware_interrupts_mirror_enable_and_route() {
        let (g, r) = vgic(Version::V3, 2);
        g.state.lock().ctlr = 3;
        g.set_enabled(27, 1, true);
        g.set_target(34, 1);
        g.set_enabled(34, 0, true);
        let log = r.0.lock().unwrap().clone();
        assert_eq!(
            log,
            vec!["hw_enable 27 1 true", "hw_route 34 1", "hw_enable 34 1 true"]
        );
        assert!(g.hw_fired(27, 1).unwrap().hw);
        assert!(g.hw_fired(27, 0).is_none(), "vCPU 0 never enabled its timer");
        g.set_enabled(34, 0, false);
        assert!(g.hw_fired(34, 1).is_none());
    }

    #[test]
    fn unowned_interrupts_are_ignored() {
        let (g, r) = vgic(Version::V3, 1);
        g.state.lock().ctlr = 3;
        g.set_enabled(35, 0, true);
        g.raise(35, 0, 0);
        g.set_enabled(23, 0, true);
        assert!(g.pop(0).is_none());
        assert!(r.0.lock().unwrap().is_empty());
        assert!(g.hw_fired(35, 0).is_none());
    }

    #[test]
    fn level_lines_reassert_after_eoi() {
        let (g, _) = vgic(Version::V2, 1);
        g.state.lock().ctlr = 1;
        g.set_enabled(33, 0, true);
        g.set_line(33, true);
        let q = g.pop(0).unwrap();
        assert!(q.eoi, "level virtual interrupts ask for EOI maintenance");
        g.eoi(33, 0);
        assert_eq!(g.pop(0).unwrap().vintid, 33);
        g.set_line(33, false);
        g.eoi(33, 0);
        assert!(g.pop(0).is_none());
    }

    #[test]
    fn edge_lines_fire_once_per_rise_and_on_retrigger() {
        let (g, _) = vgic(Version::V2, 1);
        g.state.lock().ctlr = 1;
        g.set_enabled(33, 0, true);
        g.with_irq(33, 0, |i| i.edge = true);
        g.set_line(33, true);
        let q = g.pop(0).unwrap();
        assert!(!q.eoi, "edge virtual interrupts need no EOI maintenance");
        // Still high: no new edge, and an EOI does not replay it.
        g.set_line(33, true);
        g.eoi(33, 0);
        assert!(g.pop(0).is_none());
        // Acknowledged with events left: a new edge.
        g.retrigger(33);
        assert_eq!(g.pop(0).unwrap().vintid, 33);
        // Low: a retrigger is nothing; the next rise is an edge.
        g.set_line(33, false);
        g.retrigger(33);
        assert!(g.pop(0).is_none());
        g.set_line(33, true);
        assert_eq!(g.pop(0).unwrap().vintid, 33);
        // Level-configured: retrigger adds nothing, EOI reasserts.
        g.with_irq(33, 0, |i| i.edge = false);
        g.retrigger(33);
        assert!(g.pop(0).is_none());
    }

    #[test]
    fn sgi_floods_are_bounded_and_counted() {
        let (g, _) = vgic(Version::V3, 2);
        g.state.lock().ctlr = 2;
        for i in 0..16 {
            g.with_irq(i, 1, |irq| {
                irq.enabled = true;
                irq.group1 = true
            });
        }
        for n in 0..1000 {
            g.send_sgi(n % 16, 0, 0b10);
        }
        // Duplicates coalesce: at most one of each SGI is queued.
        let mut seen = 0;
        while g.pop(1).is_some() {
            seen += 1;
        }
        assert_eq!(seen, 16);
        assert!(g.pop(0).is_none());
    }

    #[test]
    fn reset_forgets_everything_and_masks_hardware() {
        let (g, r) = vgic(Version::V3, 2);
        g.state.lock().ctlr = 3;
        g.set_enabled(34, 0, true);
        g.set_enabled(33, 0, true);
        g.raise(33, 0, 0);
        g.reset();
        assert!(g.pop(0).is_none());
        assert_eq!(g.state.lock().ctlr, 0);
        assert_eq!(g.with_irq(33, 0, |i| i.enabled), Some(false));
        assert_eq!(r.0.lock().unwrap().last().unwrap(), "hw_enable 34 0 false");
    }

    #[test]
    fn the_sgi_mailbox_follows_enable_group_and_ctlr() {
        let (g, r) = vgic(Version::V3, 2);
        let enable = |on: bool| g.set_enabled(3, 1, on);
        g.with_irq(3, 1, |i| {
            i.group1 = true;
            i.priority = 0x40
        });
        enable(true);
        // Group 1 not enabled in GICD_CTLR yet: latched, not delivered.
        g.send_sgi(3, 0, 0b10);
        assert!(!g.has_queued(1));
        g.set_ctlr(2);
        let q = g.pop(1).unwrap();
        assert_eq!((q.vintid, q.priority, q.group1), (3, 0x40, true));
        // Deliverable: straight into the mailbox, one kick for two sends.
        r.0.lock().unwrap().clear();
        g.send_sgi(3, 0, 0b10);
        g.send_sgi(3, 0, 0b10);
        assert_eq!(*r.0.lock().unwrap(), ["kick 1"]);
        assert!(g.sgi_box(1).unwrap().any());
        assert_eq!(g.pop(1).map(|q| q.vintid), Some(3));
        assert!(g.pop(1).is_none());
        // Disabled: latched pending again, delivered on enable.
        enable(false);
        g.send_sgi(3, 0, 0b10);
        assert!(!g.has_queued(1));
        enable(true);
        assert_eq!(g.pop(1).map(|q| q.vintid), Some(3));
        // ICPENDR drops a posted one.
        g.send_sgi(3, 0, 0b10);
        g.set_pending(3, 1, false);
        assert!(g.pop(1).is_none());
        // The group disabled: latched.
        g.set_ctlr(0);
        g.send_sgi(3, 0, 0b10);
        assert!(!g.has_queued(1));
    }

    #[test]
    fn gicv2_sgis_keep_their_source_beyond_the_mailbox_lanes() {
        let (g, _) = vgic(Version::V2, 6);
        g.set_ctlr(1);
        g.send_sgi(2, 5, 0b1);
        g.send_sgi(2, 1, 0b1);
        let mut got: Vec<(u32, u8)> = core::iter::from_fn(|| g.pop(0))
            .map(|q| (q.vintid, q.source))
            .collect();
        got.sort();
        assert_eq!(got, [(2, 1), (2, 5)]);
    }

    #[test]
    fn sgis_to_vcpus_outside_the_vm_are_dropped() {
        let (g, _) = vgic(Version::V2, 2);
        g.state.lock().ctlr = 1;
        g.send_sgi(3, 0, 0b1100);
        assert!(g.pop(0).is_none() && g.pop(1).is_none());
        g.send_sgi(3, 1, 0b01);
        let q = g.pop(0).unwrap();
        assert_eq!((q.vintid, q.source), (3, 1));
    }
}
