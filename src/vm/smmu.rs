//! DMA isolation: each VM's streams translate through that VM's own
//! stage-2 tables on the SMMU (the CPU's map, shared, with the VM's VMID);
//! every other stream aborts.
//!
//! Streams are assigned when a VM is built, aborted at the start of its
//! reset (nothing its devices still do reaches the RAM being scrubbed) and
//! assigned again before it restarts. Event records and global errors are
//! logged on the CPU that takes the SMMU's interrupts, per VM and
//! rate-limited; nothing here stops or waits for a VM.

use super::{RateLimit, Vm};
use crate::arch::aarch64::{cpu, mmu, MAX_CPUS};
use crate::drivers::gic;
use crate::drivers::smmuv3::{
    abort_bypass, event, probe, ste::Stage2, Features, Hw, Smmu, Tables, FRAME_SIZE,
};
use crate::dt::Tree;
use crate::mm::{FrameAllocator, PhysAddr, PhysRange};
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;
use log::{error, info, warn};
use spin::{Mutex, Once};

static SMMU: Mutex<Option<Smmu<Hw>>> = Mutex::new(None);
static FOUND: Once<probe::Found> = Once::new();

/// A VM's streams.
struct Owner {
    vm: usize,
    name: String,
    s2: Stage2,
    sids: Vec<Range<u32>>,
}

static OWNERS: Mutex<Vec<Owner>> = Mutex::new(Vec::new());
/// Event lines per VM (by index), and for streams nobody owns (the last).
static EVENT_LOG: [RateLimit; MAX_CPUS + 1] = [const { RateLimit::new() }; MAX_CPUS + 1];
/// Events handled per interrupt: a flood is bounded work on that CPU.
const EVENTS_PER_IRQ: usize = 1024;

/// Whether the board has an SMMU Tessera drives.
pub fn present() -> bool {
    SMMU.lock().is_some()
}

/// Finds the SMMU, takes it over (every stream aborts) and takes its
/// interrupts on this CPU. Without one, DMA is not translated (xtask then
/// demands `dma = "unrestricted"` of a VM with DMA-capable devices).
pub fn init(dtb: &Tree, frames: &mut FrameAllocator) {
    let Some(found) = probe::find(dtb) else { return };
    if let Err(e) = mmu::map_device(PhysRange::new(found.base, FRAME_SIZE.max(found.size))) {
        error!("SMMU at {:#x}: cannot map its registers: {e}", found.base);
        return;
    }
    // SAFETY: mapped as device memory just above; the SMMU is driven only
    // through this module's lock.
    let hw = unsafe { Hw::new(found.base) };
    // Before anything can fail: with bypass on (the reset state), devices
    // behind it would reach physical memory untranslated.
    if let Err(e) = abort_bypass(&hw) {
        error!("SMMU {}: cannot set its global bypass to abort: {e}", found.path);
    }
    let features = Features::read(&hw);
    let (st, cq, eq) = features.words();
    let mut alloc = |words: usize| -> Option<&'static mut [u64]> {
        let bytes = ((words * 8) as u64).max(4096);
        let pa = frames.alloc(bytes, bytes).ok()?;
        // SAFETY: frames just taken from the allocator (so owned by nobody
        // else, for the hypervisor's life), identity mapped as normal
        // memory at EL2, `bytes` >= `words * 8` long and page aligned.
        Some(unsafe { core::slice::from_raw_parts_mut(pa.0 as *mut u64, words) })
    };
    let (Some(strtab), Some(cmdq), Some(evtq)) = (alloc(st), alloc(cq), alloc(eq)) else {
        error!(
            "SMMU at {:#x}: no memory for its stream table and queues",
            found.base
        );
        return;
    };
    let table_pa = PhysAddr(strtab.as_ptr() as u64);
    match Smmu::init(hw, features, Tables { strtab, cmdq, evtq }) {
        Ok(s) => {
            info!(
                "SMMU {}: SMMUv3 at {:#x}, {}-bit stream IDs (linear table at {:#x}), every stream aborts until assigned",
                found.path, found.base, features.sid_bits, table_pa.0
            );
            *SMMU.lock() = Some(s);
        }
        Err(e) => {
            error!(
                "SMMU {}: {e}; not used: devices behind it are given only to VMs with dma = \"unrestricted\"",
                found.path
            );
            return;
        }
    }
    let g = gic::get();
    for irq in [found.eventq_irq, found.gerror_irq].into_iter().flatten() {
        g.set_edge(irq);
        g.route(irq, cpu::index());
        g.set_priority(irq, cpu::index(), gic::URGENT);
        g.set_enabled(irq, cpu::index(), true);
    }
    FOUND.call_once(|| found);
}

/// The phandle of the SMMU Tessera drives, if one is operational.
pub fn operational() -> Option<u32> {
    FOUND.get().and_then(|f| f.phandle)
}

/// The SPIs the SMMU interrupts this hypervisor through, with what they are.
pub fn irqs() -> Vec<(u32, &'static str)> {
    let Some(f) = FOUND.get() else {
        return Vec::new();
    };
    [
        (f.eventq_irq, "the SMMU's event queue interrupt"),
        (f.gerror_irq, "the SMMU's global error interrupt"),
    ]
    .into_iter()
    .filter_map(|(i, w)| i.map(|i| (i, w)))
    .collect()
}

/// The streams of the devices at `paths`: a PCIe bridge's `iommu-map`, a
/// device's `iommus` (one cell: the stream ID).
pub fn streams_of(dtb: &Tree, paths: &[&str]) -> Vec<Range<u32>> {
    let Some(smmu) = FOUND.get().and_then(|f| f.phandle) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for path in paths {
        if let Some(b) = super::pcie::bridge(dtb, path, Some(smmu)) {
            out.extend(b.streams);
        } else if let Some(p) = crate::platform::node_at(dtb, path).and_then(|n| n.property("iommus")) {
            let cells: Vec<u32> = p
                .value
                .chunks_exact(4)
                .filter_map(|c| c.try_into().ok().map(u32::from_be_bytes))
                .collect();
            for pair in cells.chunks_exact(2) {
                if let [phandle, sid] = *pair {
                    if phandle == smmu {
                        out.push(sid..sid + 1);
                    }
                }
            }
        }
    }
    out
}

/// Routes the streams of `vm`'s devices through its stage 2. A stream that
/// cannot be assigned stays aborting: the device fails, nothing else.
pub fn assign(vm: &Vm, dtb: &Tree) {
    let paths: Vec<&str> = vm.config.devices.iter().map(|d| d.as_str()).collect();
    let sids = streams_of(dtb, &paths);
    if sids.is_empty() {
        return;
    }
    let s2 = Stage2 {
        root: vm.vttbr & 0x0000_ffff_ffff_fffe,
        vmid: vm.vmid,
        vtcr: vm.vtcr,
    };
    let mut guard = SMMU.lock();
    let Some(smmu) = guard.as_mut() else { return };
    let mut n = 0;
    for r in &sids {
        match smmu.assign(r.clone(), &s2) {
            Ok(()) => n += r.len(),
            Err(e) => error!(
                "VM {}: SMMU streams {:#x}..{:#x}: {e}; they abort",
                vm.name(),
                r.start,
                r.end
            ),
        }
    }
    drop(guard);
    info!(
        "VM {}: {n} SMMU stream(s) {} through its stage 2 (VMID {})",
        vm.name(),
        sids.iter()
            .map(|r| alloc::format!("{:#x}..{:#x}", r.start, r.end))
            .collect::<Vec<_>>()
            .join(" "),
        vm.vmid
    );
    OWNERS.lock().push(Owner {
        vm: vm.index,
        name: vm.name().into(),
        s2,
        sids,
    });
}

/// The start of `vm`'s reset: its streams abort, so no DMA its devices
/// still have in flight reaches the RAM about to be scrubbed. Returns the
/// counter ticks it took.
pub fn quiesce(vm: &Vm) -> u64 {
    each_owned(vm, |smmu, o, r| smmu.abort(r, o.s2.vmid))
}

/// The end of `vm`'s reset: its streams translate through its stage 2
/// again, caches invalidated. Returns the counter ticks it took.
pub fn restore(vm: &Vm) -> u64 {
    each_owned(vm, |smmu, o, r| smmu.assign(r, &o.s2))
}

fn each_owned(
    vm: &Vm,
    f: impl Fn(&mut Smmu<Hw>, &Owner, Range<u32>) -> Result<(), crate::drivers::smmuv3::Error>,
) -> u64 {
    let t0 = cpu::counter();
    let owners = OWNERS.lock();
    let Some(o) = owners.iter().find(|o| o.vm == vm.index) else {
        return 0;
    };
    let mut guard = SMMU.lock();
    let Some(smmu) = guard.as_mut() else { return 0 };
    for r in &o.sids {
        if let Err(e) = f(smmu, o, r.clone()) {
            error!("VM {}: SMMU streams {:#x}..{:#x}: {e}", o.name, r.start, r.end);
        }
    }
    cpu::counter() - t0
}

/// Consecutive events of one stream, kind and direction within one page,
/// logged as one line (a device's burst faults word by word).
struct Burst {
    e: event::Event,
    count: usize,
    last: u64,
}

/// Whether `intid` is the SMMU's; if so it has been served.
pub fn on_irq(intid: u32) -> bool {
    let Some(f) = FOUND.get() else { return false };
    if Some(intid) != f.eventq_irq && Some(intid) != f.gerror_irq {
        return false;
    }
    let mut bursts: Vec<Burst> = Vec::new();
    let (mut overflow, mut gerror) = (false, 0);
    if let Some(smmu) = SMMU.lock().as_mut() {
        let (_, o) = smmu.drain_events(EVENTS_PER_IRQ, |e| match bursts.last_mut() {
            Some(b)
                if b.e.sid == e.sid
                    && b.e.id == e.id
                    && b.e.write == e.write
                    && b.e.stage2 == e.stage2
                    && b.e.addr >> 12 == e.addr >> 12 =>
            {
                b.count += 1;
                b.last = b.last.max(e.addr);
                b.e.addr = b.e.addr.min(e.addr);
            }
            _ => bursts.push(Burst {
                e,
                count: 1,
                last: e.addr,
            }),
        });
        overflow = o;
        gerror = smmu.take_gerror();
    }
    let owners = OWNERS.lock();
    let now = cpu::counter();
    let period = cpu::counter_freq();
    for b in &bursts {
        let e = &b.e;
        let owner = owners.iter().find(|o| o.sids.iter().any(|r| r.contains(&e.sid)));
        let slot = owner.map_or(MAX_CPUS, |o| o.vm.min(MAX_CPUS));
        let Some(held) = EVENT_LOG.get(slot).and_then(|l| l.check(now, period)) else {
            continue;
        };
        let more = if held > 0 {
            alloc::format!(" ({held} more lines not logged)")
        } else {
            String::new()
        };
        let what = if (0x10..=0x13).contains(&e.id) {
            alloc::format!(
                ": {} at {:#x}..={:#x} ({}){}",
                if e.write { "write(s)" } else { "read(s)" },
                e.addr,
                b.last,
                b.count,
                if e.stage2 {
                    " (stage 2: not the VM's memory)"
                } else {
                    ""
                }
            )
        } else {
            alloc::format!(" ({} event(s))", b.count)
        };
        match owner {
            Some(o) => warn!(
                "VM {}: SMMU: {} from stream {:#x}{what}: aborted{more}",
                o.name,
                event::name(e.id),
                e.sid
            ),
            None => warn!(
                "SMMU: {} from stream {:#x}, which no VM owns{what}: aborted{more}",
                event::name(e.id),
                e.sid
            ),
        }
    }
    if overflow || gerror != 0 {
        if let Some(held) = EVENT_LOG.get(MAX_CPUS).and_then(|l| l.check(now, period)) {
            let names: Vec<&str> = event::gerror_names(gerror).collect();
            warn!(
                "SMMU: {}global error {:#x} ({}): events were lost{}",
                if overflow { "event queue overflow; " } else { "" },
                gerror,
                names.join(" "),
                if held > 0 {
                    alloc::format!(" ({held} more lines not logged)")
                } else {
                    String::new()
                }
            );
        }
    }
    true
}
