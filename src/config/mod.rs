//! The static configuration: which VMs exist and what each one owns.
//!
//! xtask checks the user's TOML against the board and writes it as a small
//! flattened device tree (`compatible = "tessera,config-v1"`), packed into the
//! image with the guest images (docs/image-format.md). The hypervisor never
//! parses TOML; it reads that blob here with the same reader (`crate::dt`) it
//! uses for the board, the way Xen dom0less describes its domains in the DT.

use crate::dt::{Node, Tree};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

pub mod links;
#[cfg(test)]
mod tests;

/// Default guest-physical base of a VM's RAM (what QEMU `virt` guests expect).
pub const DEFAULT_RAM_IPA: u64 = 0x4000_0000;

/// How a VM calls PSCI.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PsciConduit {
    Hvc,
    Smc,
}

/// What the VM's console is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConsoleKind {
    /// An emulated PL011 multiplexed onto the physical console.
    Virtual,
    /// The physical UART itself, owned outright.
    Passthrough,
    None,
}

/// One region of guest RAM.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MemoryConfig {
    /// Guest-physical base (equal to `phys` for identity regions).
    pub ipa: u64,
    pub size: u64,
    /// Fixed physical base, or `None` to let the hypervisor choose.
    pub phys: Option<u64>,
    /// Guest-physical equals physical (for DMA-capable devices).
    pub identity: bool,
}

/// One VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub name: String,
    /// Physical CPU indices (positions in the board's CPU list), one vCPU each.
    pub cpus: Vec<usize>,
    pub memory: Vec<MemoryConfig>,
    /// Package entry names.
    pub kernel: String,
    pub initrd: Option<String>,
    pub dtb: Option<String>,
    pub bootargs: String,
    pub console: ConsoleKind,
    pub psci: PsciConduit,
    /// Host device-tree paths of passed-through devices.
    pub devices: Vec<String>,
    /// Guest-physical base of the scratch MMIO test device, if any (tests only).
    pub test_device: Option<u64>,
    /// `dma = "unrestricted"`: the VM is trusted with DMA no SMMU
    /// translates (so it may be given a device behind an SMMU Tessera
    /// cannot drive).
    pub dma_unrestricted: bool,
    /// `scrub = "boot"`: all of the VM's RAM is scrubbed before it enters,
    /// none at first touch (no stage-2 faults once it runs).
    pub scrub_at_boot: bool,
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub vms: Vec<VmConfig>,
    /// Prefix each VM's console lines with its name.
    pub console_prefix: bool,
    /// Links between VMs (`[[link]]`).
    pub links: Vec<links::LinkConfig>,
}

/// A config blob that does not say what the hypervisor needs. xtask checks
/// configs before packing, so this means a mismatched or damaged image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub vm: Option<String>,
    pub what: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.vm {
            Some(vm) => write!(f, "config: VM {vm}: {}", self.what),
            None => write!(f, "config: {}", self.what),
        }
    }
}

fn err(vm: Option<&str>, what: impl Into<String>) -> ConfigError {
    ConfigError {
        vm: vm.map(|s| s.to_string()),
        what: what.into(),
    }
}

fn cells(n: &Node, name: &str) -> Option<Vec<u32>> {
    let v = n.property(name)?.value;
    Some(
        v.chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

fn string(n: &Node, name: &str) -> Option<String> {
    n.property(name)?.as_str().map(|s| s.to_string())
}

fn string_list(n: &Node, name: &str) -> Vec<String> {
    match n.property(name) {
        Some(p) => p
            .value
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .filter_map(|s| core::str::from_utf8(s).ok())
            .map(|s| s.to_string())
            .collect(),
        None => Vec::new(),
    }
}

fn u64_of(hi: u32, lo: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo)
}

impl Config {
    /// Reads a config blob written by xtask.
    pub fn parse(blob: &[u8]) -> Result<Config, ConfigError> {
        let fdt = Tree::new(blob).map_err(|e| err(None, alloc::format!("not a config blob ({e})")))?;
        let root = fdt.root();
        if string(&root, "compatible").as_deref() != Some("tessera,config-v1") {
            return Err(err(None, "not a tessera,config-v1 blob"));
        }
        let console_prefix = cells(&root, "console-prefix")
            .and_then(|c| c.first().copied())
            .unwrap_or(1)
            != 0;
        let mut vms = Vec::new();
        for n in root.children().filter(|n| n.name.starts_with("vm@")) {
            vms.push(Self::parse_vm(&n)?);
        }
        if vms.is_empty() {
            return Err(err(None, "no VMs"));
        }
        let links = links::parse(&root, vms.len())?;
        Ok(Config {
            vms,
            console_prefix,
            links,
        })
    }

    fn parse_vm(n: &Node) -> Result<VmConfig, ConfigError> {
        let name = string(n, "name").ok_or_else(|| err(Some(n.name), "no name"))?;
        let vm = Some(name.as_str());
        let cpus: Vec<usize> = cells(n, "cpus")
            .unwrap_or_default()
            .into_iter()
            .map(|c| c as usize)
            .collect();
        if cpus.is_empty() {
            return Err(err(vm, "no CPUs"));
        }
        let mem = cells(n, "memory").unwrap_or_default();
        if mem.is_empty() || !mem.len().is_multiple_of(7) {
            return Err(err(vm, "memory must be (ipa, size, phys, flags) entries"));
        }
        let memory = mem
            .chunks_exact(7)
            .map(|c| {
                let phys = u64_of(c[4], c[5]);
                MemoryConfig {
                    ipa: u64_of(c[0], c[1]),
                    size: u64_of(c[2], c[3]),
                    phys: (c[6] & 2 != 0).then_some(phys),
                    identity: c[6] & 1 != 0,
                }
            })
            .collect();
        let console = match string(n, "console").as_deref() {
            None | Some("virtual") => ConsoleKind::Virtual,
            Some("passthrough") => ConsoleKind::Passthrough,
            Some("none") => ConsoleKind::None,
            Some(other) => return Err(err(vm, alloc::format!("unknown console {other:?}"))),
        };
        let psci = match string(n, "psci").as_deref() {
            None | Some("hvc") => PsciConduit::Hvc,
            Some("smc") => PsciConduit::Smc,
            Some(other) => return Err(err(vm, alloc::format!("unknown PSCI conduit {other:?}"))),
        };
        Ok(VmConfig {
            kernel: string(n, "kernel").ok_or_else(|| err(vm, "no kernel"))?,
            initrd: string(n, "initrd"),
            dtb: string(n, "dtb"),
            bootargs: string(n, "bootargs").unwrap_or_default(),
            console,
            psci,
            devices: string_list(n, "devices"),
            test_device: cells(n, "test-device")
                .filter(|c| c.len() == 2)
                .map(|c| u64_of(c[0], c[1])),
            dma_unrestricted: n.property("dma-unrestricted").is_some(),
            scrub_at_boot: n.property("scrub-at-boot").is_some(),
            name,
            cpus,
            memory,
        })
    }
}
