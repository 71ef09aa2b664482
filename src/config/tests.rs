//! The config blob as xtask writes it, read back.

use super::*;
use vm_fdt::FdtWriter;

struct Vm<'a> {
    name: &'a str,
    cpus: &'a [u32],
    memory: &'a [(u64, u64, Option<u64>, bool)],
    console: Option<&'a str>,
    psci: Option<&'a str>,
}

fn blob(vms: &[Vm], compatible: &str) -> Vec<u8> {
    let mut w = FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    w.property_string("compatible", compatible).unwrap();
    w.property_u32("console-prefix", 0).unwrap();
    for (i, vm) in vms.iter().enumerate() {
        let n = w.begin_node(&format!("vm@{i}")).unwrap();
        w.property_string("name", vm.name).unwrap();
        w.property_array_u32("cpus", vm.cpus).unwrap();
        let mut mem = Vec::new();
        for (ipa, size, phys, identity) in vm.memory {
            let flags = u32::from(*identity) | if phys.is_some() { 2 } else { 0 };
            let p = phys.unwrap_or(0);
            mem.extend_from_slice(&[(ipa >> 32) as u32, *ipa as u32, (size >> 32) as u32, *size as u32]);
            mem.extend_from_slice(&[(p >> 32) as u32, p as u32, flags]);
        }
        w.property_array_u32("memory", &mem).unwrap();
        w.property_string("kernel", "hello").unwrap();
        w.property_string_list(
            "devices",
            vec!["/pl031@9010000".into(), "/virtio_mmio@a000000".into()],
        )
        .unwrap();
        w.property_array_u32("test-device", &[0, 0x0b00_0000]).unwrap();
        if i == 0 {
            w.property_null("dma-unrestricted").unwrap();
        }
        if let Some(c) = vm.console {
            w.property_string("console", c).unwrap();
        }
        if let Some(p) = vm.psci {
            w.property_string("psci", p).unwrap();
        }
        w.end_node(n).unwrap();
    }
    w.end_node(root).unwrap();
    w.finish().unwrap()
}

fn one(console: Option<&str>, psci: Option<&str>) -> Vec<u8> {
    blob(
        &[Vm {
            name: "a",
            cpus: &[1, 2],
            memory: &[(0x4000_0000, 16 << 20, None, false)],
            console,
            psci,
        }],
        "tessera,config-v1",
    )
}

#[test]
fn reads_every_field() {
    let b = blob(
        &[
            Vm {
                name: "linux0",
                cpus: &[0, 1],
                memory: &[
                    (0x4000_0000, 256 << 20, None, false),
                    (0x4800_0000, 2 << 20, Some(0x4800_0000), true),
                ],
                console: Some("virtual"),
                psci: Some("smc"),
            },
            Vm {
                name: "rt",
                cpus: &[3],
                memory: &[(0x4000_0000, 16 << 20, None, false)],
                console: None,
                psci: None,
            },
        ],
        "tessera,config-v1",
    );
    let c = Config::parse(&b).unwrap();
    assert!(!c.console_prefix);
    assert_eq!(c.vms.len(), 2);
    let v = &c.vms[0];
    assert_eq!(v.name, "linux0");
    assert_eq!(v.cpus, vec![0, 1]);
    assert_eq!(
        v.memory[0],
        MemoryConfig {
            ipa: 0x4000_0000,
            size: 256 << 20,
            phys: None,
            identity: false
        }
    );
    assert_eq!(
        v.memory[1],
        MemoryConfig {
            ipa: 0x4800_0000,
            size: 2 << 20,
            phys: Some(0x4800_0000),
            identity: true
        }
    );
    assert_eq!(v.psci, PsciConduit::Smc);
    assert_eq!(v.console, ConsoleKind::Virtual);
    assert_eq!(
        v.devices,
        vec!["/pl031@9010000".to_string(), "/virtio_mmio@a000000".to_string()]
    );
    assert_eq!(v.test_device, Some(0x0b00_0000));
    assert!(v.dma_unrestricted);
    assert_eq!(c.vms[1].psci, PsciConduit::Hvc);
    assert!(!c.vms[1].dma_unrestricted);
}

#[test]
fn rejects_unknown_values_and_blobs() {
    assert!(Config::parse(&one(Some("telnet"), None))
        .unwrap_err()
        .to_string()
        .contains("unknown console"));
    assert!(Config::parse(&one(None, Some("svc")))
        .unwrap_err()
        .to_string()
        .contains("unknown PSCI conduit"));
    assert!(Config::parse(&blob(&[], "tessera,config-v1")).is_err());
    let wrong = blob(
        &[Vm {
            name: "a",
            cpus: &[1],
            memory: &[(0, 4096, None, false)],
            console: None,
            psci: None,
        }],
        "something-else",
    );
    assert!(Config::parse(&wrong).is_err());
    assert!(Config::parse(b"not a dtb at all").is_err());
}

#[test]
fn a_vm_needs_cpus_and_memory() {
    let no_cpus = blob(
        &[Vm {
            name: "a",
            cpus: &[],
            memory: &[(0, 4096, None, false)],
            console: None,
            psci: None,
        }],
        "tessera,config-v1",
    );
    assert_eq!(Config::parse(&no_cpus).unwrap_err().vm.as_deref(), Some("a"));
    let no_mem = blob(
        &[Vm {
            name: "a",
            cpus: &[0],
            memory: &[],
            console: None,
            psci: None,
        }],
        "tessera,config-v1",
    );
    assert!(Config::parse(&no_mem).is_err());
}
