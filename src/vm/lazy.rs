//! Scrub on first touch, the hardware side: a lazy block of a VM's RAM
//! (mm/scrub.rs) is scrubbed and mapped in stage 2 at the VM's first
//! stage-2 translation fault there, on the faulting vCPU's own CPU, or when
//! the hypervisor is about to read or write it for one of the VM's devices.
//! The eager rest (image blocks; all of a VM whose devices do DMA) is
//! scrubbed and loaded on the VM's own CPU before its first entry, and again
//! at every reset, which also sends the lazy blocks back to unmapped.
//!
//! Nothing here decides what an abort means for anything but a lazy block:
//! a fault elsewhere goes on to the MMIO emulation or the injected abort.

use super::Vm;
use crate::arch::aarch64::guest;
use crate::mm::scrub::{BlockOps, Touch};

/// Scrubbing, stage-2 slot stores and TLB flushes for one VM's RAM.
pub struct HwBlocks {
    /// The VM's VTTBR, for the TLB flush of a reset (`None`: the caller
    /// never unmaps).
    vttbr: Option<u64>,
}

impl HwBlocks {
    /// For paths that only make blocks present (a device access, a fault).
    pub const TOUCH: HwBlocks = HwBlocks { vttbr: None };
}

impl BlockOps for HwBlocks {
    fn scrub(&self, pa: u64, len: u64) {
        // SAFETY: `pa..pa + len` is one block of a VM's RAM (LazyRam only
        // names its own blocks), identity mapped, and claimed by this CPU:
        // it is mapped to no one until this scrub is done.
        unsafe { crate::mm::phys::zero_to_poc(pa, len) };
        // No instruction-cache maintenance: no CPU holds a line of this
        // block. The block has been unmapped for the VM since its start;
        // each of the VM's CPUs invalidated its own instruction cache when
        // its vCPU entered after that (vcpu::cpu_loop), EL2 never executes
        // from a VM's RAM (mmu::init maps it execute-never), and no other
        // VM maps it. So no first touch broadcasts an invalidation to the
        // CPUs of other VMs.
    }

    fn map(&self, slot: u64, desc: u64) {
        // SAFETY: `slot` is the level-2 entry of this block in the VM's
        // stage-2 tables (recorded when they were built), invalid until now.
        unsafe { crate::mm::phys::set_table_entry(slot, desc) };
    }

    fn unmap(&self, slot: u64) {
        // SAFETY: as for `map`; the reset flushes the VM's TLB before the
        // block is used again ([`BlockOps::flush`]).
        unsafe { crate::mm::phys::set_table_entry(slot, 0) };
    }

    fn flush(&self) {
        if let Some(vttbr) = self.vttbr {
            guest::flush_vm_tlb(vttbr);
        }
    }
}

/// ESR_EL2 DFSC/IFSC: a translation fault at any level (0b0001LL).
const fn translation_fault(esr: u64) -> bool {
    esr & 0x3c == 0x04
}

/// A stage-2 abort (data or instruction) of `vm` at `ipa`: true if it was
/// the first touch of a lazy block, now scrubbed and mapped, so the access
/// is simply retried.
pub fn on_fault(vm: &Vm, ipa: u64) -> bool {
    translation_fault(guest::esr()) && vm.lazy.touch(ipa, &HwBlocks::TOUCH) == Touch::Ready
}

/// Before a vCPU of `vm` enters it: the first time, on this (the VM's own)
/// CPU, its eager RAM is scrubbed and its images loaded. An error means
/// that did not happen: the VM must not run.
pub fn before_entry(vm: &Vm) -> Result<(), alloc::string::String> {
    if !vm.lazy.begin_first_start() {
        return Ok(());
    }
    let loaded = super::create::load_images(&vm.ram, &vm.images, &vm.lazy);
    vm.lazy.end_first_start();
    loaded?;
    let eager: u64 = vm.lazy.eager_ranges().iter().map(|r| r.1).sum();
    log::info!(
        "first entry of {} on CPU {}: {} KiB of RAM scrubbed before it, {} KiB left to first touch",
        vm.name(),
        crate::arch::aarch64::cpu::index(),
        eager >> 10,
        vm.lazy.lazy_bytes() >> 10
    );
    Ok(())
}

/// A reset of `vm` (its vCPUs all out of the guest): lazy blocks unmapped
/// and FRESH again, eager RAM scrubbed and the images reloaded.
pub fn reload(vm: &Vm) -> Result<(), alloc::string::String> {
    vm.lazy.reset(&HwBlocks {
        vttbr: Some(vm.vttbr),
    });
    super::create::load_images(&vm.ram, &vm.images, &vm.lazy)
}
