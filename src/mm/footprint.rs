//! The hypervisor's own RAM, everything but the VMs' memory: the image
//! (code, data, BSS), the per-CPU stacks, the heap (and the most of it ever
//! in use), the EL2 and stage-2 translation tables, and the guest images it
//! keeps for VM resets. Logged once at boot and read back by `cargo xtask
//! bench` from that line, so its format is fixed here and host-tested.

use core::fmt;

/// All sizes in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Code, read-only data and data, as loaded.
    pub image: u64,
    /// Zero-initialised data.
    pub bss: u64,
    /// Stacks reserved (every possible CPU), and per CPU.
    pub stacks: u64,
    pub stack_each: u64,
    /// CPUs online (whose stacks are in use).
    pub cpus: u64,
    /// The heap region and the most of it ever handed out.
    pub heap: u64,
    pub heap_peak: u64,
    /// The EL2 table pool and the part of it handed out.
    pub el2_tables: u64,
    pub el2_tables_used: u64,
    /// Stage-2 tables taken from free RAM.
    pub stage2_tables: u64,
    /// The guest package (pristine images for VM resets, the configuration).
    pub images: u64,
}

impl Footprint {
    /// Everything reserved for the hypervisor, the kept images included.
    pub fn total(&self) -> u64 {
        self.image + self.bss + self.stacks + self.heap + self.el2_tables + self.stage2_tables + self.images
    }

    /// What is actually in use: the stacks of the CPUs online, the heap's
    /// high-water mark, the table pages handed out.
    pub fn in_use(&self) -> u64 {
        self.image
            + self.bss
            + self.cpus * self.stack_each
            + self.heap_peak
            + self.el2_tables_used
            + self.stage2_tables
            + self.images
    }
}

/// The prefix of the boot line (what `cargo xtask bench` looks for).
pub const LINE: &str = "tessera: hypervisor RAM";

const FIELDS: &[&str] = &[
    "total",
    "in_use",
    "image",
    "bss",
    "stacks",
    "heap",
    "heap_peak",
    "el2_tables",
    "el2_tables_used",
    "stage2_tables",
    "images",
];

impl fmt::Display for Footprint {
    /// `tessera: hypervisor RAM (KiB): total=.. in_use=.. image=.. ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = [
            self.total(),
            self.in_use(),
            self.image,
            self.bss,
            self.stacks,
            self.heap,
            self.heap_peak,
            self.el2_tables,
            self.el2_tables_used,
            self.stage2_tables,
            self.images,
        ];
        write!(f, "{LINE} (KiB):")?;
        for (k, v) in FIELDS.iter().zip(v) {
            write!(f, " {k}={}", v.div_ceil(1024))?;
        }
        write!(
            f,
            " (stacks: {} CPUs online of {} x {} KiB; images: the guest package kept for resets)",
            self.cpus,
            self.stacks / self.stack_each.max(1),
            self.stack_each / 1024
        )
    }
}

/// This boot's footprint; `image_with_package` is the range the boot
/// loader loaded (the Image header's image_size, package included).
#[cfg(target_os = "none")]
pub fn measure(image_with_package: u64, cpus: usize) -> Footprint {
    use crate::arch::aarch64::{mmu, MAX_CPUS, STACK_SIZE};
    extern "C" {
        static _start: u8;
        static __bss_start: u8;
        static __bss_end: u8;
        static __image_end: u8;
    }
    // Linker symbols: only their addresses are taken.
    let (start, bss, bss_end, end) = (
        core::ptr::addr_of!(_start) as u64,
        core::ptr::addr_of!(__bss_start) as u64,
        core::ptr::addr_of!(__bss_end) as u64,
        core::ptr::addr_of!(__image_end) as u64,
    );
    let (el2_used, el2_pool) = mmu::el2_table_pages();
    let stacks = (STACK_SIZE * MAX_CPUS) as u64;
    let heap = super::heap::HEAP_SIZE as u64;
    let el2_tables = el2_pool as u64 * 4096;
    // .noinit holds the stacks, the heap and the EL2 table pool; anything
    // else there counts as BSS.
    let noinit = end - bss_end;
    Footprint {
        image: bss - start,
        bss: (bss_end - bss) + noinit.saturating_sub(stacks + heap + el2_tables),
        stacks,
        stack_each: STACK_SIZE as u64,
        cpus: cpus as u64,
        heap,
        heap_peak: super::heap::peak() as u64,
        el2_tables,
        el2_tables_used: el2_used as u64 * 4096,
        stage2_tables: super::phys::table_bytes(),
        images: image_with_package.saturating_sub(end - start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_every_field_in_kib() {
        let f = Footprint {
            image: 280 * 1024,
            bss: 10 * 1024 + 1,
            stacks: 16 * 32 * 1024,
            stack_each: 32 * 1024,
            cpus: 4,
            heap: 4096 * 1024,
            heap_peak: 100 * 1024,
            el2_tables: 256 * 1024,
            el2_tables_used: 40 * 1024,
            stage2_tables: 24 * 1024,
            images: 1000 * 1024,
        };
        let line = f.to_string();
        assert!(line.starts_with(LINE), "{line}");
        assert!(line.contains(" total=6179 "), "{line}");
        assert!(line.contains(" in_use=1583 "), "{line}");
        assert!(line.contains(" bss=11 "), "rounded up: {line}");
        assert!(line.contains("4 CPUs online of 16 x 32 KiB"), "{line}");
        for k in FIELDS {
            assert!(line.contains(&format!(" {k}=")), "{k}: {line}");
        }
    }
}
