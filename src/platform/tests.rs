//! Discovery against device trees dumped from QEMU (`cargo xtask dtbs`).

use super::*;

fn load(name: &str) -> Platform {
    let path = format!("{}/tests/dtbs/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    super::nops::strip_nops(&mut bytes).expect("well-formed DTB");
    let dtb = Tree::new(&bytes).expect("valid DTB");
    discover(&dtb).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn error(name: &str) -> DiscoverError {
    let path = format!("{}/tests/dtbs/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap();
    discover(&Tree::new(&bytes).unwrap()).unwrap_err()
}

#[test]
fn qemu_virt_gicv3_smp4() {
    let p = load("qemu-virt-gicv3-smp4.dtb");
    assert_eq!(p.cpus.len(), 4);
    assert_eq!(
        p.cpus.iter().map(|c| c.mpidr).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(p.ram, vec![PhysRange::new(0x4000_0000, 1 << 30)]);
    assert_eq!(p.gic.version, GicVersion::V3);
    assert_eq!(p.gic.dist, PhysRange::new(0x0800_0000, 0x1_0000));
    assert_eq!(p.gic.redists[0].base.0, 0x080a_0000);
    assert_eq!(p.gic.maintenance_irq, Some(25));
    assert_eq!(
        p.timer,
        Timer {
            secure_phys: 29,
            phys: 30,
            virt: 27,
            hyp_phys: 26
        }
    );
    assert_eq!(p.console.regs, PhysRange::new(0x0900_0000, 0x1000));
    assert_eq!(p.console.found_by, "stdout-path");
    assert_eq!(p.console.irq, Some(33));
    assert_eq!(p.console.path, "/pl011@9000000");
    assert_eq!(p.psci, Some(Conduit::Smc));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn qemu_virt_gicv2_has_all_frames() {
    let p = load("qemu-virt-gicv2-smp4.dtb");
    assert_eq!(p.gic.version, GicVersion::V2);
    assert_eq!(p.gic.dist.base.0, 0x0800_0000);
    assert_eq!(p.gic.cpu_if.unwrap().base.0, 0x0801_0000);
    assert_eq!(p.gic.hyp_if.unwrap().base.0, 0x0803_0000);
    assert_eq!(p.gic.vcpu_if.unwrap().base.0, 0x0804_0000);
    assert!(p.gic.redists.is_empty());
}

#[test]
fn cpu_counts() {
    assert_eq!(load("qemu-virt-gicv3-smp1.dtb").cpus.len(), 1);
    assert_eq!(load("qemu-virt-gicv3-smp8.dtb").cpus.len(), 8);
    let p = load("qemu-virt-gicv2-smp8.dtb");
    assert_eq!(p.cpus.len(), 8);
    assert_eq!(p.cpu_index(7), Some(7));
    assert_eq!(p.cpu_index(0x100), None);
}

#[test]
fn missing_gic_is_named() {
    let e = error("qemu-virt-nogic.dtb");
    assert!(matches!(e, DiscoverError::InterruptController(_)));
    assert!(e.to_string().contains("missing: interrupt controller"));
}

#[test]
fn missing_stdout_path_falls_back_with_warning() {
    let p = load("qemu-virt-nostdout.dtb");
    assert_eq!(p.console.regs.base.0, 0x0900_0000);
    assert_eq!(p.console.found_by, "compatible");
    assert!(p.warnings.iter().any(|w| w.contains("stdout-path")));
}

#[test]
fn boot_options_parse() {
    let mut p = load("qemu-virt-gicv3-smp4.dtb");
    p.bootargs = "tessera.selftest=el2-fault quiet".into();
    assert_eq!(p.boot_option("tessera.selftest"), Some("el2-fault"));
    assert_eq!(p.boot_option("quiet"), Some(""));
    assert_eq!(p.boot_option("loud"), None);
}

#[test]
fn dtb_as_qemu_passes_it_with_dash_dtb() {
    // Captured from RAM: what QEMU hands over after patching a -dtb file.
    // Its fixups leave FDT_NOP tokens (U-Boot's do too), which the fdt crate
    // trips over unless they are stripped first.
    let p = load("qemu-virt-nostdout-live.dtb");
    assert_eq!(p.cpus.len(), 2);
    assert_eq!(p.ram, vec![PhysRange::new(0x4000_0000, 1 << 30)]);
}

#[test]
fn strip_nops_keeps_the_tree() {
    let path = format!(
        "{}/tests/dtbs/qemu-virt-nostdout-live.dtb",
        env!("CARGO_MANIFEST_DIR")
    );
    let orig = std::fs::read(&path).unwrap();
    let mut b = orig.clone();
    super::nops::strip_nops(&mut b).unwrap();
    let size_struct = |d: &[u8]| u32::from_be_bytes(d[36..40].try_into().unwrap());
    assert_eq!(size_struct(&orig) - size_struct(&b), 54 * 4);
    // Idempotent, and truncated input is refused rather than misread.
    let once = b.clone();
    super::nops::strip_nops(&mut b).unwrap();
    assert_eq!(b, once);
    assert!(super::nops::strip_nops(&mut orig[..100].to_vec()).is_err());
}

#[test]
fn devices_by_exact_path() {
    let path = format!(
        "{}/tests/dtbs/qemu-virt-gicv3-smp4.dtb",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(path).unwrap();
    let dtb = Tree::new(&bytes).unwrap();
    let rtc = super::device(&dtb, "/pl031@9010000").unwrap();
    assert_eq!(rtc.regs, vec![PhysRange::new(0x0901_0000, 0x1000)]);
    assert_eq!(rtc.spis, vec![34]);
    assert!(super::device(&dtb, "/pl031").is_err());
    assert!(super::device(&dtb, "/virtio_mmio@a000000").is_ok());
    assert!(super::device(&dtb, "/nope@0").is_err());
}

// The boards' own device trees (tests/dtbs/README.md says where each comes from).

#[test]
fn zcu102_console_is_the_cadence_uart_of_stdout_path() {
    let p = load("zynqmp-zcu102-rev1.0.dtb");
    assert_eq!(p.console.kind, UartKind::Cadence);
    assert_eq!(p.console.path, "/axi/serial@ff000000");
    assert_eq!(p.console.regs, PhysRange::new(0xff00_0000, 0x1000));
    assert_eq!(p.console.found_by, "stdout-path");
    assert_eq!(p.console.irq, Some(32 + 21));
}

#[test]
fn imx8mp_console_is_uart2_under_two_buses() {
    let p = load("imx8mp-evk.dtb");
    assert_eq!(p.console.kind, UartKind::Imx);
    assert_eq!(p.console.path, "/soc@0/bus@30800000/serial@30890000");
    assert_eq!(p.console.regs, PhysRange::new(0x3089_0000, 0x1_0000));
    assert_eq!(p.console.found_by, "stdout-path");
    assert_eq!(p.console.irq, Some(32 + 27));
}

#[test]
fn versal_console_is_its_first_pl011() {
    let p = load("qemu-xlnx-versal-virt-live.dtb");
    assert_eq!(p.console.kind, UartKind::Pl011);
    assert_eq!(p.console.regs, PhysRange::new(0xff00_0000, 0x1000));
    assert_eq!(p.console.found_by, "stdout-path");
}

#[test]
fn early_console_matches_discovery() {
    for name in [
        "zynqmp-zcu102-rev1.0.dtb",
        "imx8mp-evk.dtb",
        "qemu-xlnx-versal-virt-live.dtb",
        "qemu-virt-gicv3-smp4.dtb",
        "qemu-virt-nostdout.dtb",
    ] {
        let path = format!("{}/tests/dtbs/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap();
        let dtb = Tree::new(&bytes).unwrap();
        let p = discover(&dtb).unwrap();
        assert_eq!(
            early_console(dtb.root()),
            Some((p.console.kind, p.console.regs.base.0)),
            "{name}"
        );
    }
}

fn scan_console(name: &str, drop: &[&str]) -> (Result<Console, DiscoverError>, Vec<String>) {
    let path = format!("{}/tests/dtbs/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap();
    let dtb = Tree::new(&bytes).unwrap();
    let mut scan = Scan::of(&dtb);
    scan.uarts.retain(|(_, f)| !drop.contains(&f.path.as_str()));
    let mut warnings = Vec::new();
    let c = discover_console(&dtb, &scan, &mut warnings);
    (c, warnings)
}

#[test]
fn console_falls_back_from_stdout_path_to_the_next_alias() {
    // zcu102: stdout-path is "serial0:115200n8"; without that UART the
    // next alias, serial1, names the second Cadence UART.
    let (c, w) = scan_console("zynqmp-zcu102-rev1.0.dtb", &["/axi/serial@ff000000"]);
    let c = c.unwrap();
    assert_eq!(c.found_by, "aliases/serial1");
    assert_eq!(c.regs.base.0, 0xff01_0000);
    assert!(w.iter().any(|w| w.contains("stdout-path")), "{w:?}");
}

#[test]
fn disabled_uarts_are_never_the_console() {
    // imx8mp-evk: UART1, UART3 and UART4 have status "disabled" (serial0 is
    // UART1); only UART2, stdout-path's, is usable.
    let (c, _) = scan_console("imx8mp-evk.dtb", &[]);
    assert_eq!(c.unwrap().regs.base.0, 0x3089_0000);
    let (c, _) = scan_console("imx8mp-evk.dtb", &["/soc@0/bus@30800000/serial@30890000"]);
    assert_eq!(c.unwrap_err(), DiscoverError::Console);
}

#[test]
fn virt_secure_on_disabled_memory_and_devices_are_skipped() {
    // secure=on adds secram@e000000 (device_type "memory", status
    // "disabled") and a disabled secure PL011 at 0x9040000.
    let p = load("qemu-virt-secure-gicv3.dtb");
    assert_eq!(p.ram, vec![PhysRange::new(0x4000_0000, 1 << 30)]);
    assert_eq!(p.console.regs.base.0, 0x0900_0000);
    let path = format!(
        "{}/tests/dtbs/qemu-virt-secure-gicv3.dtb",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(path).unwrap();
    let dtb = Tree::new(&bytes).unwrap();
    // The allocation-free reader the EL2 map is built from agrees.
    assert_eq!(
        memory_ranges(dtb.root()).collect::<Vec<_>>(),
        vec![PhysRange::new(0x4000_0000, 1 << 30)]
    );
    // Without stdout-path and aliases the fallback skips the disabled one.
    let mut scan = Scan::of(&dtb);
    assert!(scan.uarts.iter().all(|(_, f)| f.path != "/pl011@9040000"));
    scan.uarts.clear();
    let mut w = Vec::new();
    assert_eq!(
        discover_console(&dtb, &scan, &mut w).unwrap_err(),
        DiscoverError::Console
    );
}

#[test]
fn zcu102_as_debian_ships_it() {
    let p = load("zynqmp-zcu102-rev1.0.dtb");
    assert_eq!(p.model, "ZynqMP ZCU102 Rev1.0");
    // 4 GiB in two banks around the 32-bit MMIO hole (QEMU rewrites /memory
    // to the -m size before the hypervisor sees it).
    assert_eq!(
        p.ram,
        vec![
            PhysRange::new(0, 0x8000_0000),
            PhysRange::new(0x8_0000_0000, 0x8000_0000)
        ]
    );
    assert_eq!(
        p.cpus.iter().map(|c| c.mpidr).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(p.psci, Some(Conduit::Smc));
    assert_eq!(
        p.timer,
        Timer {
            secure_phys: 29,
            phys: 30,
            virt: 27,
            hyp_phys: 26
        }
    );
    let g = &p.gic;
    assert_eq!(g.version, GicVersion::V2);
    assert_eq!(g.path, "/axi/interrupt-controller@f9010000");
    assert_eq!(g.dist, PhysRange::new(0xf901_0000, 0x1_0000));
    // GICC and GICV are 128 KiB with 4 KiB pages aliased every 64 KiB: the
    // 8 KiB window with GICC_DIR behind it starts 60 KiB in.
    assert_eq!(g.cpu_if, Some(PhysRange::new(0xf902_f000, 0x2000)));
    assert_eq!(g.hyp_if, Some(PhysRange::new(0xf904_0000, 0x2_0000)));
    assert_eq!(g.vcpu_if, Some(PhysRange::new(0xf906_f000, 0x2000)));
    assert_eq!(g.maintenance_irq, Some(25));
}

#[test]
fn imx8mp_evk_as_debian_ships_it() {
    let p = load("imx8mp-evk.dtb");
    assert_eq!(p.model, "NXP i.MX8MPlus EVK board");
    assert_eq!(
        p.ram,
        vec![
            PhysRange::new(0x4000_0000, 0xc000_0000),
            PhysRange::new(0x1_0000_0000, 0xc000_0000)
        ]
    );
    assert_eq!(
        p.cpus.iter().map(|c| c.mpidr).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(p.psci, Some(Conduit::Smc));
    assert_eq!(p.timer.virt, 27);
    assert_eq!(p.timer.hyp_phys, 26);
    let g = &p.gic;
    assert_eq!(g.version, GicVersion::V3);
    assert_eq!(g.path, "/soc@0/interrupt-controller@38800000");
    assert_eq!(g.dist, PhysRange::new(0x3880_0000, 0x1_0000));
    assert_eq!(g.redists, vec![PhysRange::new(0x3888_0000, 0xc_0000)]);
    assert_eq!(g.maintenance_irq, Some(25));
    assert!(
        p.reserved
            .iter()
            .all(|r| p.ram.iter().any(|m| m.contains(r.base.0))),
        "{:?}",
        p.reserved
    );
}

#[test]
fn versal_virt_as_qemu_passes_it() {
    let p = load("qemu-xlnx-versal-virt-live.dtb");
    assert_eq!(p.ram, vec![PhysRange::new(0, 0x8000_0000)]);
    assert_eq!(p.cpus.iter().map(|c| c.mpidr).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(p.psci, Some(Conduit::Smc));
    assert_eq!(p.timer.virt, 27);
    let g = &p.gic;
    assert_eq!(g.version, GicVersion::V3);
    assert_eq!(g.dist, PhysRange::new(0xf900_0000, 0x1_0000));
    assert_eq!(g.redists, vec![PhysRange::new(0xf908_0000, 0x8_0000)]);
    assert_eq!(g.maintenance_irq, Some(25));
}

#[test]
fn gic400_cpu_interface_window() {
    // 128 KiB: the aliased wiring; anything else is taken as given.
    assert_eq!(
        contiguous_cpu_interface(PhysRange::new(0xf902_0000, 0x2_0000)),
        PhysRange::new(0xf902_f000, 0x2000)
    );
    for r in [
        PhysRange::new(0x0801_0000, 0x1_0000),
        PhysRange::new(0x0801_0000, 0x2000),
    ] {
        assert_eq!(contiguous_cpu_interface(r), r);
    }
}

#[test]
fn passthrough_devices_under_buses() {
    let bytes =
        |name: &str| std::fs::read(format!("{}/tests/dtbs/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let zcu = bytes("zynqmp-zcu102-rev1.0.dtb");
    let dtb = Tree::new(&zcu).unwrap();
    let uart1 = super::device(&dtb, "/axi/serial@ff010000").unwrap();
    assert_eq!(uart1.regs, vec![PhysRange::new(0xff01_0000, 0x1000)]);
    assert_eq!(uart1.spis, vec![32 + 22]);
    let imx = bytes("imx8mp-evk.dtb");
    let dtb = Tree::new(&imx).unwrap();
    // UART1 and UART3 are disabled in the EVK's tree; a VM may still own
    // them, so lookup by path does not filter on status.
    let uart1 = super::device(&dtb, "/soc@0/bus@30800000/serial@30860000").unwrap();
    assert_eq!(uart1.regs, vec![PhysRange::new(0x3086_0000, 0x1_0000)]);
    assert_eq!(uart1.spis, vec![32 + 26]);
    let uart3 = super::device(&dtb, "/soc@0/bus@30800000/serial@30880000").unwrap();
    assert_eq!(uart3.regs, vec![PhysRange::new(0x3088_0000, 0x1_0000)]);
    assert_eq!(uart3.spis, vec![32 + 28]);
}

/// A Raspberry Pi 4 shaped tree: the UART and GIC sit under /soc, whose
/// `ranges` moves bus 0x7c00_0000.. to CPU 0xfc00_0000.. and bus
/// 0x4000_0000.. to CPU 0xff80_0000.. (BCM2711).
fn offset_bus_dtb() -> Vec<u8> {
    let mut w = vm_fdt::FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    w.property_u32("#address-cells", 2).unwrap();
    w.property_u32("#size-cells", 1).unwrap();
    w.property_string("model", "offset bus").unwrap();
    let chosen = w.begin_node("chosen").unwrap();
    w.property_string("stdout-path", "serial0:115200n8").unwrap();
    w.end_node(chosen).unwrap();
    let aliases = w.begin_node("aliases").unwrap();
    w.property_string("serial0", "/soc/serial@7e201000").unwrap();
    w.end_node(aliases).unwrap();
    let mem = w.begin_node("memory@0").unwrap();
    w.property_string("device_type", "memory").unwrap();
    w.property_array_u32("reg", &[0, 0, 0x3b40_0000]).unwrap();
    w.end_node(mem).unwrap();
    let cpus = w.begin_node("cpus").unwrap();
    w.property_u32("#address-cells", 1).unwrap();
    w.property_u32("#size-cells", 0).unwrap();
    let cpu = w.begin_node("cpu@0").unwrap();
    w.property_string("device_type", "cpu").unwrap();
    w.property_u32("reg", 0).unwrap();
    w.end_node(cpu).unwrap();
    w.end_node(cpus).unwrap();
    let timer = w.begin_node("timer").unwrap();
    w.property_string("compatible", "arm,armv8-timer").unwrap();
    w.property_array_u32(
        "interrupts",
        &[1, 13, 0xf08, 1, 14, 0xf08, 1, 11, 0xf08, 1, 10, 0xf08],
    )
    .unwrap();
    w.end_node(timer).unwrap();
    let soc = w.begin_node("soc").unwrap();
    w.property_u32("#address-cells", 1).unwrap();
    w.property_u32("#size-cells", 1).unwrap();
    w.property_array_u32(
        "ranges",
        &[
            0x7c00_0000,
            0,
            0xfc00_0000,
            0x0380_0000,
            0x4000_0000,
            0,
            0xff80_0000,
            0x0080_0000,
        ],
    )
    .unwrap();
    let uart = w.begin_node("serial@7e201000").unwrap();
    w.property_string("compatible", "arm,pl011").unwrap();
    w.property_array_u32("reg", &[0x7e20_1000, 0x200]).unwrap();
    w.property_array_u32("interrupts", &[0, 121, 4]).unwrap();
    w.end_node(uart).unwrap();
    let gic = w.begin_node("interrupt-controller@40041000").unwrap();
    w.property_string("compatible", "arm,gic-400").unwrap();
    w.property_array_u32(
        "reg",
        &[
            0x4004_1000,
            0x1000,
            0x4004_2000,
            0x2000,
            0x4004_4000,
            0x2000,
            0x4004_6000,
            0x2000,
        ],
    )
    .unwrap();
    w.property_array_u32("interrupts", &[1, 9, 0xf04]).unwrap();
    w.end_node(gic).unwrap();
    // A bus without `ranges`: its children are not memory mapped.
    let i2c = w.begin_node("i2c@7e804000").unwrap();
    w.property_u32("#address-cells", 1).unwrap();
    w.property_u32("#size-cells", 0).unwrap();
    w.property_array_u32("reg", &[0x7e80_4000, 0x1000]).unwrap();
    let dev = w.begin_node("codec@1a").unwrap();
    w.property_array_u32("reg", &[0x1a]).unwrap();
    w.end_node(dev).unwrap();
    w.end_node(i2c).unwrap();
    w.end_node(soc).unwrap();
    w.end_node(root).unwrap();
    w.finish().unwrap()
}

#[test]
fn reg_is_translated_through_bus_ranges() {
    let bytes = offset_bus_dtb();
    let dtb = Tree::new(&bytes).unwrap();
    let p = discover(&dtb).unwrap();
    assert_eq!(p.console.path, "/soc/serial@7e201000");
    assert_eq!(p.console.regs, PhysRange::new(0xfe20_1000, 0x200));
    assert_eq!(p.console.found_by, "stdout-path");
    assert_eq!(early_console(dtb.root()), Some((UartKind::Pl011, 0xfe20_1000)));
    assert_eq!(p.gic.dist, PhysRange::new(0xff84_1000, 0x1000));
    assert_eq!(p.gic.cpu_if, Some(PhysRange::new(0xff84_2000, 0x2000)));
    assert_eq!(p.gic.vcpu_if, Some(PhysRange::new(0xff84_6000, 0x2000)));
    let i2c = super::device(&dtb, "/soc/i2c@7e804000").unwrap();
    assert_eq!(i2c.regs, vec![PhysRange::new(0xfe80_4000, 0x1000)]);
    let codec = super::device(&dtb, "/soc/i2c@7e804000/codec@1a").unwrap_err();
    assert_eq!(
        codec.to_string(),
        "/soc/i2c@7e804000/codec@1a: reg[0] is not memory mapped: /soc/i2c@7e804000 has no `ranges`"
    );
    assert!(matches!(
        super::device(&dtb, "/soc/nothing@0"),
        Err(DeviceError::NotFound(_))
    ));
}

fn dtb_bytes(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/dtbs/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    super::nops::strip_nops(&mut bytes).expect("well-formed DTB");
    bytes
}

#[test]
fn raspi4b_as_qemu_passes_it() {
    let p = load("qemu-raspi4b-live.dtb");
    assert_eq!(p.model, "Raspberry Pi 4 Model B");
    // QEMU fills the firmware's memory node with the first 960 MiB.
    assert_eq!(p.ram, vec![PhysRange::new(0, 0x3c00_0000)]);
    assert!(
        p.reserved.contains(&PhysRange::new(0, 0x1000)),
        "{:?}",
        p.reserved
    );
    // Every CPU through the spin table at 0xd8 + 8 * n; no PSCI node, and
    // none needed, so no warning about it.
    assert_eq!(
        p.cpus.iter().map(|c| (c.mpidr, c.enable)).collect::<Vec<_>>(),
        [0xd8, 0xe0, 0xe8, 0xf0]
            .iter()
            .enumerate()
            .map(|(i, &a)| (i as u64, EnableMethod::SpinTable { release_addr: a }))
            .collect::<Vec<_>>()
    );
    assert_eq!(p.psci, None);
    assert_eq!(p.release_pages(), vec![PhysRange::new(0, 0x1000)]);
    // Bus addresses 0x7e00_0000.. and 0x4000_0000.. through /soc's ranges.
    let g = &p.gic;
    assert_eq!(g.version, GicVersion::V2);
    assert_eq!(g.path, "/soc/interrupt-controller@40041000");
    assert_eq!(g.dist, PhysRange::new(0xff84_1000, 0x1000));
    assert_eq!(g.cpu_if, Some(PhysRange::new(0xff84_2000, 0x2000)));
    assert_eq!(g.hyp_if, Some(PhysRange::new(0xff84_4000, 0x2000)));
    assert_eq!(g.vcpu_if, Some(PhysRange::new(0xff84_6000, 0x2000)));
    assert_eq!(g.maintenance_irq, Some(25));
    assert_eq!(p.timer.virt, 27);
    assert_eq!(p.timer.hyp_phys, 26);
    // stdout-path "serial1:115200n8": the mini UART, SPI 93.
    let c = &p.console;
    assert_eq!(c.kind, UartKind::BcmAux);
    assert_eq!(c.path, "/soc/serial@7e215040");
    assert_eq!(c.regs, PhysRange::new(0xfe21_5040, 0x40));
    assert_eq!(c.irq, Some(32 + 93));
    assert_eq!(c.found_by, "stdout-path");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let bytes = dtb_bytes("qemu-raspi4b-live.dtb");
    let dtb = Tree::new(&bytes).unwrap();
    assert_eq!(early_console(dtb.root()), Some((UartKind::BcmAux, 0xfe21_5040)));
    // uart0, the PL011 a VM owns in boards/raspi4b/linux.toml.
    let uart0 = super::device(&dtb, "/soc/serial@7e201000").unwrap();
    assert_eq!(uart0.regs, vec![PhysRange::new(0xfe20_1000, 0x200)]);
    assert_eq!(uart0.spis, vec![32 + 121]);
    // The second /soc window: the ARM local block at bus 0x4000_0000.
    let local = super::device(&dtb, "/soc/local_intc@40000000").unwrap();
    assert_eq!(local.regs, vec![PhysRange::new(0xff80_0000, 0x100)]);
    // /emmc2bus maps its own bus (0x7e00_0000 -> 0xfe00_0000) with two-cell parents.
    let emmc2 = super::device(&dtb, "/emmc2bus/mmc@7e340000").unwrap();
    assert_eq!(emmc2.regs, vec![PhysRange::new(0xfe34_0000, 0x100)]);
}

#[test]
fn raspi4b_as_debian_ships_it_has_no_memory() {
    // The firmware (or QEMU) fills `memory@0`; Debian's file has `reg = <0 0 0>`.
    assert_eq!(error("bcm2711-rpi-4-b.dtb"), DiscoverError::Memory);
    let bytes = dtb_bytes("bcm2711-rpi-4-b.dtb");
    let dtb = Tree::new(&bytes).unwrap();
    // Its HDMI blocks translate like every other /soc device: board data,
    // not translation, keeps them from VMs (boards/raspi4b/board.toml).
    let hdmi = super::device(&dtb, "/soc/hdmi@7ef00700").unwrap();
    assert_eq!(hdmi.regs.first(), Some(&PhysRange::new(0xfef0_0700, 0x300)));
    assert_eq!(hdmi.regs.len(), 9);
}

/// A CPU node of [`synthetic_dtb`]: name, enable-method, cpu-release-addr bytes.
type CpuNode<'a> = (&'a str, Option<&'a str>, Option<&'a [u8]>);

/// A tree for the CPU and bus tests: `cpus`, and nested buses under /soc.
fn synthetic_dtb(cpus: &[CpuNode]) -> Vec<u8> {
    let mut w = vm_fdt::FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    w.property_u32("#address-cells", 2).unwrap();
    w.property_u32("#size-cells", 1).unwrap();
    let chosen = w.begin_node("chosen").unwrap();
    w.property_string("stdout-path", "/soc/bus@10000000/serial@1000")
        .unwrap();
    w.end_node(chosen).unwrap();
    let mem = w.begin_node("memory@0").unwrap();
    w.property_string("device_type", "memory").unwrap();
    w.property_array_u32("reg", &[0, 0, 0x4000_0000]).unwrap();
    w.end_node(mem).unwrap();
    let cpus_node = w.begin_node("cpus").unwrap();
    w.property_u32("#address-cells", 1).unwrap();
    w.property_u32("#size-cells", 0).unwrap();
    for (i, (name, method, release)) in cpus.iter().enumerate() {
        let cpu = w.begin_node(name).unwrap();
        w.property_string("device_type", "cpu").unwrap();
        w.property_u32("reg", i as u32).unwrap();
        if let Some(m) = method {
            w.property_string("enable-method", m).unwrap();
        }
        if let Some(r) = release {
            w.property("cpu-release-addr", r).unwrap();
        }
        w.end_node(cpu).unwrap();
    }
    w.end_node(cpus_node).unwrap();
    let timer = w.begin_node("timer").unwrap();
    w.property_string("compatible", "arm,armv8-timer").unwrap();
    w.property_array_u32(
        "interrupts",
        &[1, 13, 0xf08, 1, 14, 0xf08, 1, 11, 0xf08, 1, 10, 0xf08],
    )
    .unwrap();
    w.end_node(timer).unwrap();
    let soc = w.begin_node("soc").unwrap();
    w.property_u32("#address-cells", 1).unwrap();
    w.property_u32("#size-cells", 1).unwrap();
    // Two windows: bus 0x1000_0000 (16 MiB) -> CPU 0x8_1000_0000, bus
    // 0x2000_0000 (1 MiB) -> CPU 0x9000_0000.
    w.property_array_u32(
        "ranges",
        &[
            0x1000_0000,
            0x8,
            0x1000_0000,
            0x0100_0000,
            0x2000_0000,
            0,
            0x9000_0000,
            0x10_0000,
        ],
    )
    .unwrap();
    let gic = w.begin_node("interrupt-controller@20000000").unwrap();
    w.property_string("compatible", "arm,gic-400").unwrap();
    w.property_array_u32(
        "reg",
        &[
            0x2000_0000,
            0x1000,
            0x2000_2000,
            0x2000,
            0x2000_4000,
            0x2000,
            0x2000_6000,
            0x2000,
        ],
    )
    .unwrap();
    w.end_node(gic).unwrap();
    // A bus inside: child 0x1000.. -> /soc 0x1000_0000.. (1 MiB).
    let inner = w.begin_node("bus@10000000").unwrap();
    w.property_u32("#address-cells", 1).unwrap();
    w.property_u32("#size-cells", 1).unwrap();
    w.property_array_u32("ranges", &[0, 0x1000_0000, 0x10_0000])
        .unwrap();
    let uart = w.begin_node("serial@1000").unwrap();
    w.property_string("compatible", "arm,pl011").unwrap();
    w.property_array_u32("reg", &[0x1000, 0x1000]).unwrap();
    w.end_node(uart).unwrap();
    // An empty `ranges` inside: identity.
    let flat = w.begin_node("bus@2000").unwrap();
    w.property_u32("#address-cells", 1).unwrap();
    w.property_u32("#size-cells", 1).unwrap();
    w.property("ranges", &[]).unwrap();
    let dev = w.begin_node("dev@2000").unwrap();
    w.property_array_u32("reg", &[0x2000, 0x100]).unwrap();
    w.end_node(dev).unwrap();
    w.end_node(flat).unwrap();
    // One entry inside the window, one past it.
    let half = w.begin_node("dev@f0000").unwrap();
    w.property_array_u32("reg", &[0xf_0000, 0x1000, 0x20_0000, 0x1000])
        .unwrap();
    w.end_node(half).unwrap();
    w.end_node(inner).unwrap();
    // A UART discovery looks at, outside both windows.
    let outside = w.begin_node("dev@30000000").unwrap();
    w.property_string("compatible", "arm,pl011").unwrap();
    w.property_array_u32("reg", &[0x3000_0000, 0x1000]).unwrap();
    w.end_node(outside).unwrap();
    w.end_node(soc).unwrap();
    w.end_node(root).unwrap();
    w.finish().unwrap()
}

const SPIN: Option<&str> = Some("spin-table");

#[test]
fn nested_buses_translate_through_every_level() {
    let release = 0xe0u64.to_be_bytes();
    let bytes = synthetic_dtb(&[("cpu@0", SPIN, Some(&release))]);
    let dtb = Tree::new(&bytes).unwrap();
    let p = discover(&dtb).unwrap();
    // serial@1000 -> bus 0x1000_1000 -> CPU 0x8_1000_1000 (first window).
    assert_eq!(p.console.regs, PhysRange::new(0x8_1000_1000, 0x1000));
    assert_eq!(early_console(dtb.root()), Some((UartKind::Pl011, 0x8_1000_1000)));
    // The GIC through the second window.
    assert_eq!(p.gic.dist, PhysRange::new(0x9000_0000, 0x1000));
    // An empty `ranges` adds nothing.
    let d = super::device(&dtb, "/soc/bus@10000000/bus@2000/dev@2000").unwrap();
    assert_eq!(d.regs, vec![PhysRange::new(0x8_1000_2000, 0x100)]);
    // The UART no window maps is named, not silently dropped.
    assert_eq!(
        p.warnings,
        vec!["/soc/dev@30000000: reg[0] address 0x30000000 is outside every `ranges` window of /soc"]
    );
}

#[test]
fn a_reg_outside_every_range_is_an_error_naming_the_node() {
    let bytes = synthetic_dtb(&[("cpu@0", None, None)]);
    let dtb = Tree::new(&bytes).unwrap();
    let e = super::device(&dtb, "/soc/dev@30000000").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/soc/dev@30000000: reg[0] address 0x30000000 is outside every `ranges` window of /soc"
    );
    // The second entry leaves the inner bus's 1 MiB window: the whole
    // device is refused, not half of it handed out.
    let e = super::device(&dtb, "/soc/bus@10000000/dev@f0000").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/soc/bus@10000000/dev@f0000: reg[1] address 0x200000 is outside every `ranges` window of /soc/bus@10000000"
    );
}

#[test]
fn spin_table_errors_leave_that_cpu_off_and_boot_carries_on() {
    let good = 0xe0u64.to_be_bytes();
    let short = 0xe8u32.to_be_bytes();
    let outside = 0x8000_0000u64.to_be_bytes();
    let bytes = synthetic_dtb(&[
        ("cpu@0", SPIN, Some(&0xd8u64.to_be_bytes())),
        ("cpu@1", SPIN, Some(&good)),
        ("cpu@2", SPIN, None),
        ("cpu@3", SPIN, Some(&short)),
        ("cpu@4", SPIN, Some(&outside)),
        ("cpu@5", Some("brcm,bcm2836-smp"), None),
    ]);
    let dtb = Tree::new(&bytes).unwrap();
    let p = discover(&dtb).unwrap();
    let methods: Vec<EnableMethod> = p.cpus.iter().map(|c| c.enable).collect();
    assert_eq!(
        methods,
        vec![
            EnableMethod::SpinTable { release_addr: 0xd8 },
            EnableMethod::SpinTable { release_addr: 0xe0 },
            EnableMethod::Off,
            EnableMethod::Off,
            EnableMethod::Off,
            EnableMethod::Off,
        ]
    );
    let w = &p.warnings;
    for (cpu, why) in [
        ("/cpus/cpu@2", "without cpu-release-addr"),
        ("/cpus/cpu@3", "4 bytes"),
        ("/cpus/cpu@4", "outside RAM"),
        ("/cpus/cpu@5", "brcm,bcm2836-smp"),
    ] {
        assert!(
            w.iter()
                .any(|w| w.contains(cpu) && w.contains(why) && w.contains("left off")),
            "{cpu}: {w:?}"
        );
    }
    assert!(!w.iter().any(|w| w.contains("PSCI")), "{w:?}");
    assert_eq!(p.release_pages(), vec![PhysRange::new(0, 0x1000)]);
}

#[test]
fn psci_cpus_without_a_psci_node_are_warned_about() {
    let bytes = synthetic_dtb(&[("cpu@0", None, None), ("cpu@1", None, None)]);
    let dtb = Tree::new(&bytes).unwrap();
    let p = discover(&dtb).unwrap();
    assert!(p.cpus.iter().all(|c| c.enable == EnableMethod::Psci));
    assert!(
        p.warnings.iter().any(|w| w.contains("no PSCI node")),
        "{:?}",
        p.warnings
    );
    assert!(p.release_pages().is_empty());
}

/// Raspberry Pi shaped consoles: serial0 the PL011, serial1 (stdout-path)
/// the mini UART, and `bootargs` in /chosen.
fn two_uart_dtb(bootargs: &str) -> Vec<u8> {
    let mut w = vm_fdt::FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    w.property_u32("#address-cells", 2).unwrap();
    w.property_u32("#size-cells", 1).unwrap();
    let chosen = w.begin_node("chosen").unwrap();
    w.property_string("stdout-path", "serial1:115200n8").unwrap();
    w.property_string("bootargs", bootargs).unwrap();
    w.end_node(chosen).unwrap();
    let aliases = w.begin_node("aliases").unwrap();
    w.property_string("serial0", "/soc/serial@7e201000").unwrap();
    w.property_string("serial1", "/soc/serial@7e215040").unwrap();
    w.property_string("serial2", "/soc/serial@7e201400").unwrap();
    w.end_node(aliases).unwrap();
    let mem = w.begin_node("memory@0").unwrap();
    w.property_string("device_type", "memory").unwrap();
    w.property_array_u32("reg", &[0, 0, 0x3c00_0000]).unwrap();
    w.end_node(mem).unwrap();
    let cpus = w.begin_node("cpus").unwrap();
    w.property_u32("#address-cells", 1).unwrap();
    w.property_u32("#size-cells", 0).unwrap();
    let cpu = w.begin_node("cpu@0").unwrap();
    w.property_string("device_type", "cpu").unwrap();
    w.property_u32("reg", 0).unwrap();
    w.end_node(cpu).unwrap();
    w.end_node(cpus).unwrap();
    let timer = w.begin_node("timer").unwrap();
    w.property_string("compatible", "arm,armv8-timer").unwrap();
    w.property_array_u32(
        "interrupts",
        &[1, 13, 0xf08, 1, 14, 0xf08, 1, 11, 0xf08, 1, 10, 0xf08],
    )
    .unwrap();
    w.end_node(timer).unwrap();
    let soc = w.begin_node("soc").unwrap();
    w.property_u32("#address-cells", 1).unwrap();
    w.property_u32("#size-cells", 1).unwrap();
    w.property_array_u32(
        "ranges",
        &[
            0x7e00_0000,
            0,
            0xfe00_0000,
            0x0180_0000,
            0x4000_0000,
            0,
            0xff80_0000,
            0x80_0000,
        ],
    )
    .unwrap();
    for (name, compat, reg, status) in [
        ("serial@7e201000", "arm,pl011", 0x7e20_1000, "okay"),
        ("serial@7e215040", "brcm,bcm2835-aux-uart", 0x7e21_5040, "okay"),
        ("serial@7e201400", "arm,pl011", 0x7e20_1400, "disabled"),
    ] {
        let u = w.begin_node(name).unwrap();
        w.property_string("compatible", compat).unwrap();
        w.property_array_u32("reg", &[reg, 0x40]).unwrap();
        w.property_string("status", status).unwrap();
        w.end_node(u).unwrap();
    }
    let gic = w.begin_node("interrupt-controller@40041000").unwrap();
    w.property_string("compatible", "arm,gic-400").unwrap();
    w.property_array_u32(
        "reg",
        &[
            0x4004_1000,
            0x1000,
            0x4004_2000,
            0x2000,
            0x4004_4000,
            0x2000,
            0x4004_6000,
            0x2000,
        ],
    )
    .unwrap();
    w.end_node(gic).unwrap();
    w.end_node(soc).unwrap();
    w.end_node(root).unwrap();
    w.finish().unwrap()
}

#[test]
fn the_console_boot_argument_overrides_stdout_path() {
    let check = |bootargs: &str, kind, base, found_by: &str| {
        let bytes = two_uart_dtb(bootargs);
        let dtb = Tree::new(&bytes).unwrap();
        let p = discover(&dtb).unwrap();
        assert_eq!(
            (p.console.kind, p.console.regs.base.0, p.console.found_by),
            (kind, base, found_by),
            "{bootargs:?}"
        );
        assert_eq!(early_console(dtb.root()), Some((kind, base)), "{bootargs:?}");
        p.warnings
    };
    // Without it: stdout-path's mini UART.
    let w = check("quiet", UartKind::BcmAux, 0xfe21_5040, "stdout-path");
    assert!(w.is_empty(), "{w:?}");
    // An alias or a path.
    check(
        "a tessera.console=serial0 b",
        UartKind::Pl011,
        0xfe20_1000,
        "tessera.console",
    );
    check(
        "tessera.console=/soc/serial@7e201000",
        UartKind::Pl011,
        0xfe20_1000,
        "tessera.console",
    );
    // A disabled UART, or none at all: said, and the device tree's is kept.
    for bad in ["tessera.console=serial2", "tessera.console=/soc/nothing@0"] {
        let w = check(bad, UartKind::BcmAux, 0xfe21_5040, "stdout-path");
        assert!(
            w.iter()
                .any(|w| w.contains(bad) && w.contains("the device tree's console is used")),
            "{bad}: {w:?}"
        );
    }
}
