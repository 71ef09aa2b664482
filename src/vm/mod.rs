//! Virtual machines: creation from the configuration, their vCPUs, and what
//! happens when a guest leaves EL1.

// No panic on a guest path (STYLE.md): what a guest or a config can cause
// is answered with a value. Test code may unwrap and index.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable
    )
)]

pub mod dtb;
#[cfg(test)]
mod dtb_proptests;
pub mod guard;
pub mod inject;
pub mod links;
pub mod mmio;
pub mod passthrough;
pub mod pcie;
pub mod psci;
pub mod seed;
pub mod trap;

#[cfg(target_os = "none")]
pub mod create;
#[cfg(target_os = "none")]
pub mod exit;
#[cfg(target_os = "none")]
pub mod irq;
#[cfg(target_os = "none")]
pub mod lazy;
#[cfg(target_os = "none")]
pub mod pcie_reset;
#[cfg(target_os = "none")]
pub mod smmu;
#[cfg(target_os = "none")]
pub mod vcpu;

#[cfg(target_os = "none")]
pub use create::create_all;

use crate::config::VmConfig;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use mmio::MmioBus;
use psci::{Power, PsciTarget, MPIDR_AFF_MASK};

/// One contiguous piece of a VM's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRegion {
    pub ipa: u64,
    pub pa: u64,
    pub size: u64,
}

/// A VM's boot images (pristine copies in the package) and where they go.
pub struct Images {
    pub kernel: &'static [u8],
    pub kernel_ipa: u64,
    pub initrd: Option<(&'static [u8], u64)>,
    /// A DTB of the config's own stays in the package (no heap copy: it
    /// may be up to 2 MiB); a generated one is owned.
    pub dtb: alloc::borrow::Cow<'static, [u8]>,
    pub dtb_ipa: u64,
    /// Where a generated DTB's seed is rewritten on every start.
    pub seed: Option<seed::SeedSlots>,
}

/// Lifecycle of a VM.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum VmState {
    Running = 0,
    Stopped = 1,
    /// Being restarted (PSCI SYSTEM_RESET): no vCPU may enter it.
    Resetting = 2,
}

/// A virtual CPU, pinned to one physical CPU for the VM's life.
pub struct Vcpu {
    pub index: usize,
    /// The physical CPU (logical index) it runs on.
    pub pcpu: usize,
    /// Its MPIDR affinity as the guest sees it (Aff0 = index).
    pub vmpidr: u64,
    power: AtomicU8,
    /// Whether its CPU is executing guest code (between entry and abandon).
    pub in_guest: core::sync::atomic::AtomicBool,
    entry: AtomicU64,
    context: AtomicU64,
    /// Index of the owning VM in the VM table.
    pub vm: usize,
}

impl Vcpu {
    pub fn new(vm: usize, index: usize, pcpu: usize) -> Self {
        Self {
            index,
            pcpu,
            vmpidr: index as u64,
            power: AtomicU8::new(Power::Off as u8),
            in_guest: core::sync::atomic::AtomicBool::new(false),
            entry: AtomicU64::new(0),
            context: AtomicU64::new(0),
            vm,
        }
    }

    pub fn power(&self) -> Power {
        match self.power.load(Ordering::Acquire) {
            0 => Power::On,
            2 => Power::OnPending,
            _ => Power::Off,
        }
    }

    pub fn set_power(&self, p: Power) {
        self.power.store(p as u8, Ordering::SeqCst);
    }

    /// Off -> OnPending with an entry point, atomically.
    pub fn request_on(&self, entry: u64, context: u64) -> Result<(), Power> {
        // Claim first, then publish entry/context, then mark pending: the
        // target reads them only after seeing OnPending.
        const CLAIMED: u8 = 3;
        match self
            .power
            .compare_exchange(Power::Off as u8, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.entry.store(entry, Ordering::Relaxed);
                self.context.store(context, Ordering::Relaxed);
                self.power.store(Power::OnPending as u8, Ordering::Release);
                Ok(())
            }
            Err(3) => Err(Power::OnPending),
            Err(v) => Err(if v == Power::On as u8 {
                Power::On
            } else {
                Power::OnPending
            }),
        }
    }

    /// OnPending -> On, atomically; false if it was turned off meanwhile.
    pub fn claim_on(&self) -> bool {
        self.power
            .compare_exchange(
                Power::OnPending as u8,
                Power::On as u8,
                Ordering::SeqCst,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// The pending entry point and context id.
    pub fn boot_args(&self) -> (u64, u64) {
        (
            self.entry.load(Ordering::Relaxed),
            self.context.load(Ordering::Relaxed),
        )
    }
}

/// A virtual machine.
pub struct Vm {
    pub index: usize,
    pub vmid: u16,
    pub config: VmConfig,
    pub vcpus: Vec<Vcpu>,
    pub ram: Vec<RamRegion>,
    pub mmio: MmioBus,
    pub vgic: alloc::sync::Arc<crate::vdev::vgic::Vgic>,
    /// VTTBR_EL2 (root table and VMID) and VTCR_EL2 for this VM.
    pub vttbr: u64,
    pub vtcr: u64,
    /// Where vCPU 0 starts and what it gets in x0.
    pub entry: u64,
    pub x0: u64,
    pub images: Images,
    /// Which of its RAM is scrubbed (lazy blocks at first touch).
    pub lazy: alloc::sync::Arc<crate::mm::scrub::LazyRam>,
    state: AtomicU8,
    /// Guest faults logged so far (logging is rate-limited per VM).
    pub faults_logged: AtomicUsize,
}

impl Vm {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn state(&self) -> VmState {
        match self.state.load(Ordering::Acquire) {
            0 => VmState::Running,
            2 => VmState::Resetting,
            _ => VmState::Stopped,
        }
    }

    pub fn set_state(&self, s: VmState) {
        self.state.store(s as u8, Ordering::SeqCst);
    }

    /// Stops the VM; false if it was stopped already.
    pub fn stop(&self) -> bool {
        self.state.swap(VmState::Stopped as u8, Ordering::SeqCst) != VmState::Stopped as u8
    }

    /// Moves the VM from state `from` to `to` if it is in `from`: one
    /// caller wins a race (two vCPUs resetting, or one resetting while
    /// another powers the VM off).
    pub fn claim_state(&self, from: VmState, to: VmState) -> bool {
        self.state
            .compare_exchange(from as u8, to as u8, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// The physical address of guest-physical `ipa`, if it is RAM of this VM.
    pub fn ram_pa(&self, ipa: u64) -> Option<u64> {
        self.ram
            .iter()
            .find(|r| ipa >= r.ipa && ipa - r.ipa < r.size)
            .map(|r| r.pa + (ipa - r.ipa))
    }

    /// Whether to log another guest fault (first 16 per VM, then every 1024th).
    pub fn should_log_fault(&self) -> bool {
        let n = self.faults_logged.fetch_add(1, Ordering::Relaxed);
        n < 16 || n.is_multiple_of(1024)
    }
}

/// A log line that may repeat without bound (a VM in a reset loop): the
/// first [`RateLimit::BURST`] are written, then at most one per period,
/// carrying how many were held back since the last one written.
pub struct RateLimit {
    seen: AtomicU64,
    last: AtomicU64,
    held: AtomicU64,
}

impl RateLimit {
    pub const BURST: u64 = 8;

    pub const fn new() -> Self {
        Self {
            seen: AtomicU64::new(0),
            last: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// At time `now` (any monotonic unit, `period` in the same): `Some(n)`
    /// to write the line, noting `n` held back since the previous one;
    /// `None` to hold this one back.
    pub fn check(&self, now: u64, period: u64) -> Option<u64> {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        let last = self.last.load(Ordering::Relaxed);
        if n < Self::BURST || now.wrapping_sub(last) >= period {
            self.last.store(now, Ordering::Relaxed);
            Some(self.held.swap(0, Ordering::Relaxed))
        } else {
            self.held.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl PsciTarget for Vm {
    fn vcpu_by_mpidr(&self, mpidr: u64) -> Option<usize> {
        self.vcpus.iter().position(|v| v.vmpidr == mpidr & MPIDR_AFF_MASK)
    }

    fn power(&self, vcpu: usize) -> Power {
        // A vCPU the VM does not have is never on.
        self.vcpus.get(vcpu).map_or(Power::Off, Vcpu::power)
    }

    fn request_on(&self, vcpu: usize, entry: u64, context: u64) -> Result<(), Power> {
        // A vCPU the VM does not have cannot be started.
        let v = self.vcpus.get(vcpu).ok_or(Power::Off)?;
        v.request_on(entry, context)?;
        // Its CPU waits for a kick (`irq::wait_for_kick`).
        #[cfg(target_os = "none")]
        irq::kick_cpu(v.pcpu);
        Ok(())
    }

    fn valid_entry(&self, entry: u64) -> bool {
        entry.is_multiple_of(4) && self.ram_pa(entry).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimit;

    #[test]
    fn a_burst_then_one_line_per_period_with_a_count() {
        let r = RateLimit::new();
        for t in 0..RateLimit::BURST {
            assert_eq!(r.check(t, 100), Some(0), "burst line {t}");
        }
        // 4,000 more within the same period: all held back.
        let held = (0..4000)
            .filter(|k| r.check(10 + k / 1000, 100).is_none())
            .count();
        assert_eq!(held, 4000);
        // The next period's first line says how many were held back.
        assert_eq!(r.check(107, 100), Some(4000));
        assert_eq!(r.check(108, 100), None);
        assert_eq!(r.check(207, 100), Some(1));
    }
}
