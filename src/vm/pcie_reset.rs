//! Stopping a VM's PCIe bus masters at its reset: before its images are
//! loaded again, every function behind the PCIe host bridges it owns has
//! bus mastering (and memory and I/O decoding) turned off through the
//! bridge's ECAM, so DMA the old guest programmed cannot land in the new
//! images (with an SMMU, its streams also abort meanwhile; without one,
//! this is all that stops it). The next guest enumerates and enables them
//! again.

use super::Vm;
use crate::arch::aarch64::mmu;
use crate::drivers::pci_ecam::{self, Hw};
use crate::dt::Tree;
use crate::mm::PhysRange;
use alloc::vec::Vec;
use core::ops::RangeInclusive;
use log::error;
use spin::Mutex;

struct Ecam {
    vm: usize,
    base: u64,
    size: u64,
    buses: RangeInclusive<u8>,
}

static ECAMS: Mutex<Vec<Ecam>> = Mutex::new(Vec::new());

/// Maps the ECAM window of each PCIe host bridge `vm` owns at EL2, for
/// [`quiesce`].
pub fn register(vm: &Vm, dtb: &Tree) {
    for path in vm
        .config
        .devices
        .iter()
        .filter(|p| super::pcie::is_bridge(dtb, p))
    {
        let Some(reg) = crate::platform::device(dtb, path)
            .ok()
            .and_then(|d| d.regs.first().copied())
        else {
            continue;
        };
        let bus = crate::platform::node_at(dtb, path)
            .and_then(|n| n.property("bus-range"))
            .map(|p| {
                p.value
                    .chunks_exact(4)
                    .filter_map(|c| c.try_into().ok().map(u32::from_be_bytes))
                    .collect::<Vec<u32>>()
            })
            .unwrap_or_default();
        let first = bus.first().copied().unwrap_or(0).min(0xff) as u8;
        let last = bus.get(1).copied().unwrap_or(0xff).min(0xff) as u8;
        // The window covers 1 MiB per bus from the first.
        let buses = first..=last.min(first.saturating_add(((reg.size >> 20).max(1) - 1).min(0xff) as u8));
        if let Err(e) = mmu::map_device(PhysRange::new(reg.base.0, reg.size)) {
            error!(
                "VM {}: {path}: cannot map its ECAM at EL2 ({e}); its bus masters are not stopped at reset",
                vm.name()
            );
            continue;
        }
        ECAMS.lock().push(Ecam {
            vm: vm.index,
            base: reg.base.0,
            size: reg.size,
            buses,
        });
    }
}

/// Turns off bus mastering on every function behind `vm`'s bridges;
/// returns how many functions were mastering (or decoding).
pub fn quiesce(vm: &Vm) -> usize {
    let mut n = 0;
    for e in ECAMS.lock().iter().filter(|e| e.vm == vm.index) {
        // SAFETY: mapped as device memory by `register`, this bridge's ECAM.
        let hw = unsafe { Hw::new(e.base, e.size) };
        n += pci_ecam::stop_bus_masters(&hw, e.buses.clone());
    }
    n
}
