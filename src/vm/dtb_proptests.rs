//! Property tests of the guest-DTB generator on random specs: any vCPU
//! count, RAM layout, timer and console interrupts, PSCI method, command
//! line, initrd and passed-through paths (real and bogus) of QEMU's DTBs.
//! `generate` never panics; what it refuses breaks one of its rules; what
//! it accepts parses back with `fdt` and says exactly what the spec said.
//! Fixed seed and case count, so `cargo test` runs the same cases each time.

use super::dtb::*;
use crate::mm::addr::GuestPhysAddr;
use fdt::Fdt;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::collections::BTreeSet;
use std::string::String;
use std::vec::Vec;

const QEMU_V3: &[u8] = include_bytes!("../../tests/dtbs/qemu-virt-gicv3-smp4.dtb");
const QEMU_V2: &[u8] = include_bytes!("../../tests/dtbs/qemu-virt-gicv2-smp4.dtb");

/// Paths a config might name: devices of QEMU `virt`, nodes the generator
/// writes itself, and paths that are not there.
const PATHS: &[&str] = &[
    "/pl031@9010000",
    "/pl061@9030000",
    "/virtio_mmio@a000000",
    "/virtio_mmio@a003e00",
    "/fw-cfg@9020000",
    "/pl011@9000000",
    "/flash@0",
    "/pcie@10000000",
    "/platform-bus@c000000",
    "/gpio-keys",
    "/pmu",
    "/intc@8000000",
    "/memory@40000000",
    "/psci",
    "/timer",
    "/cpus",
    "/chosen",
    "/apb-pclk",
    "/cpus/cpu@0",
    "/virtio_mmio",
    "/nonexistent@0",
    "virtio_mmio@a000000",
    "/",
    "",
    "//",
];

fn config() -> Config {
    Config {
        cases: 768,
        rng_seed: RngSeed::Fixed(0xd7b0_9e4e),
        failure_persistence: None,
        ..Config::default()
    }
}

#[derive(Clone, Debug)]
struct Spec {
    name: String,
    vcpus: usize,
    memory: Vec<GuestRegion>,
    v3: bool,
    timer_ppis: [u32; 4],
    psci: &'static str,
    console: Option<GuestConsole>,
    bootargs: String,
    initrd: Option<GuestRegion>,
    passthrough: Vec<&'static str>,
    /// 0: no host DTB, 1: GICv3 board, 2: GICv2 board.
    host: u8,
}

fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0x4000_0000u64),
        Just(0x4800_0000),
        Just(0x0900_0000),
        Just(0x0800_0000),
        (0u64..1 << 40).prop_map(|a| a & !0xfff),
        any::<u64>(),
    ]
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(0x1000),
        Just(0x800_0000),
        1u64..1 << 36,
        any::<u64>()
    ]
}

fn region() -> impl Strategy<Value = GuestRegion> {
    (addr(), size()).prop_map(|(b, s)| GuestRegion::new(b, s))
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (
            "[a-z0-9_-]{0,12}",
            prop_oneof![4 => 1usize..=4, 1 => 0usize..=12, 1 => Just(300usize)],
            proptest::collection::vec(region(), 0..4),
            any::<bool>(),
            proptest::array::uniform4(prop_oneof![8 => 16u32..32, 1 => 0u32..64]),
            prop_oneof![Just("hvc"), Just("smc"), Just("HVC"), Just("")],
        ),
        (
            proptest::option::of((addr(), prop_oneof![4 => 32u32..64, 1 => 0u32..1100]).prop_map(
                |(base, intid)| GuestConsole {
                    base: GuestPhysAddr(base),
                    intid,
                },
            )),
            prop_oneof![6 => "[ -~]{0,60}", 1 => "[ -~]{0,8}\0[ -~]{0,8}"],
            proptest::option::of(region()),
            proptest::collection::vec(proptest::sample::select(PATHS), 0..4),
            0u8..3,
        ),
    )
        .prop_map(
            |(
                (name, vcpus, memory, v3, timer_ppis, psci),
                (console, bootargs, initrd, passthrough, host),
            )| Spec {
                name,
                vcpus,
                memory,
                v3,
                timer_ppis,
                psci,
                console,
                bootargs,
                initrd,
                passthrough,
                host,
            },
        )
}

fn gic(v3: bool) -> GuestGic {
    if v3 {
        GuestGic::V3 {
            dist: GuestRegion::new(0x0800_0000, 0x1_0000),
            redist: GuestRegion::new(0x080a_0000, 0x2_0000),
        }
    } else {
        GuestGic::V2 {
            dist: GuestRegion::new(0x0800_0000, 0x1_0000),
            cpu: GuestRegion::new(0x0801_0000, 0x1_0000),
        }
    }
}

/// Whether the spec breaks one of the rules `generate` checks before writing.
fn breaks_a_rule(s: &Spec) -> bool {
    let max = if s.v3 { 256 } else { 8 };
    s.vcpus == 0
        || s.vcpus > max
        || s.memory.is_empty()
        || s.memory.iter().any(|r| r.size == 0)
        || !matches!(s.psci, "hvc" | "smc")
        || s.timer_ppis.iter().any(|&i| !(16..32).contains(&i))
        || s.console.is_some_and(|c| !(32..1020).contains(&c.intid))
        || s.initrd.is_some_and(|r| r.base.0.checked_add(r.size).is_none())
}

fn cells(v: &[u8]) -> Vec<u32> {
    v.chunks_exact(4)
        .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
        .collect()
}

fn u64s(v: &[u8]) -> Vec<u64> {
    v.chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_dtbs_parse_back_and_match_the_spec(s in spec()) {
        let host_blob = match s.host {
            1 => Some(QEMU_V3),
            2 => Some(QEMU_V2),
            _ => None,
        };
        let host = host_blob.map(|b| crate::dt::Tree::new(b).unwrap());
        let spec = GuestDtbSpec {
            name: &s.name,
            vcpus: s.vcpus,
            memory: &s.memory,
            gic: gic(s.v3),
            timer_ppis: s.timer_ppis,
            psci_method: s.psci,
            console: s.console,
            bootargs: &s.bootargs,
            initrd: s.initrd,
            passthrough: &s.passthrough,
            host: host.as_ref(),
            seed: None,
        };
        let result = generate(&spec);
        if breaks_a_rule(&s) {
            prop_assert!(result.is_err(), "accepted a spec that breaks a rule");
            return Ok(());
        }
        let blob = match result {
            Ok(b) => b,
            Err(e) => {
                // Only what the rules above do not cover may be refused:
                // passthrough trouble, clashing node names, a NUL.
                let allowed = match &e {
                    DtbError::DuplicateNode(_) => true,
                    DtbError::Writer(_) => s.bootargs.contains('\0'),
                    DtbError::NoHostDtb => !s.passthrough.is_empty() && s.host == 0,
                    DtbError::NoSuchDevice(p)
                    | DtbError::UnsupportedInterrupts(p)
                    | DtbError::UnsupportedReg(p)
                    | DtbError::BadClocks(p)
                    | DtbError::UnsupportedProperty { path: p, .. } => {
                        // The device or one of its children.
                        s.passthrough.iter().any(|q| p == q || p.starts_with(&std::format!("{q}/")))
                    }
                    _ => false,
                };
                prop_assert!(allowed, "refused with {:?}", e);
                return Ok(());
            }
        };
        let fdt = Fdt::new(&blob).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let root = fdt.find_node("/").unwrap();
        let mut names = BTreeSet::new();
        for child in root.children() {
            prop_assert!(names.insert(child.name), "two top-level nodes named {}", child.name);
        }
        // CPUs 0..n with MPIDR Aff0 = index.
        let cpus: Vec<u32> = fdt
            .find_node("/cpus")
            .unwrap()
            .children()
            .map(|c| cells(c.property("reg").unwrap().value)[0])
            .collect();
        prop_assert_eq!(cpus, (0..s.vcpus as u32).collect::<Vec<_>>());
        // One memory node per region, with its range.
        for r in &s.memory {
            let node = root
                .children()
                .find(|n| n.name == std::format!("memory@{:x}", r.base.0))
                .unwrap();
            prop_assert_eq!(u64s(node.property("reg").unwrap().value), std::vec![r.base.0, r.size]);
        }
        let psci = fdt.find_node("/psci").unwrap();
        prop_assert_eq!(psci.property("method").unwrap().as_str(), Some(s.psci));
        let timer = cells(fdt.find_node("/timer").unwrap().property("interrupts").unwrap().value);
        let ppis: Vec<u32> = timer.chunks(3).map(|c| c[1] + 16).collect();
        prop_assert_eq!(ppis, s.timer_ppis.to_vec());
        let chosen = fdt.find_node("/chosen").unwrap();
        let bootargs = chosen.property("bootargs").and_then(|p| p.as_str()).unwrap_or("");
        prop_assert_eq!(bootargs, s.bootargs.as_str());
        if let Some(r) = s.initrd {
            let start = u64s(chosen.property("linux,initrd-start").unwrap().value);
            let end = u64s(chosen.property("linux,initrd-end").unwrap().value);
            prop_assert_eq!((start, end), (std::vec![r.base.0], std::vec![r.base.0 + r.size]));
        }
        if let Some(c) = s.console {
            let node = root
                .children()
                .find(|n| n.name == std::format!("pl011@{:x}", c.base.0))
                .unwrap();
            prop_assert_eq!(cells(node.property("interrupts").unwrap().value), std::vec![0, c.intid - 32, 4]);
        }
        for p in &s.passthrough {
            let name = p.rsplit('/').next().unwrap();
            prop_assert!(names.contains(name), "{} not in the guest DTB", p);
        }
    }
}

/// Found by the property test above: passing through a host node named like
/// one the generator writes itself (`/psci`, `/timer`, ...) gave the guest
/// two top-level nodes of that name instead of `DuplicateNode`.
#[test]
fn passing_through_a_node_the_generator_writes_is_refused() {
    let host = crate::dt::Tree::new(QEMU_V3).unwrap();
    let memory = [GuestRegion::new(0x4000_0000, 0x1000)];
    for path in ["/psci", "/timer", "/cpus", "/chosen", "/apb-pclk"] {
        let passthrough = [path];
        let spec = GuestDtbSpec {
            name: "vm",
            vcpus: 1,
            memory: &memory,
            gic: gic(true),
            timer_ppis: [29, 30, 27, 26],
            psci_method: "hvc",
            console: None,
            bootargs: "",
            initrd: None,
            passthrough: &passthrough,
            host: Some(&host),
            seed: None,
        };
        assert_eq!(
            generate(&spec),
            Err(DtbError::DuplicateNode(path[1..].into())),
            "{path}"
        );
    }
}
