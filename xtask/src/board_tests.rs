//! The config checker's view of real boards: Debian's DTBs (tests/dtbs/) and the
//! device-tree rules they need (status, `ranges`).

use crate::config::board_from_dtb;

fn dtb(name: &str) -> Vec<u8> {
    std::fs::read(crate::paths::root().join("tests/dtbs").join(name)).unwrap()
}

#[test]
fn zcu102_devices_are_the_enabled_ones_at_their_addresses() {
    let b = board_from_dtb(&dtb("zynqmp-zcu102-rev1.0.dtb"), vec![]).unwrap();
    assert_eq!(b.cpus, [0, 1, 2, 3]);
    assert_eq!(b.ram, [(0, 0x8000_0000), (0x8_0000_0000, 0x8000_0000)]);
    // stdout-path is "serial0:115200n8": the alias stands for its node, so a
    // config naming that node as a device is caught as the console.
    assert_eq!(b.console.as_deref(), Some("/axi/serial@ff000000"));
    assert_eq!(b.devices["/axi/serial@ff010000"], [(0xff01_0000, 0x1000)]);
    assert_eq!(b.devices["/axi/serial@ff000000"], [(0xff00_0000, 0x1000)]);
    // status = "disabled" in Debian's DTB: not a device a VM can be given.
    assert!(!b.devices.contains_key("/axi/timer@ff140000"));
    assert!(b.devices.contains_key("/axi/interrupt-controller@f9010000"));
}

#[test]
fn imx8mp_devices_are_translated_through_the_soc_buses() {
    let raw = dtb("imx8mp-evk.dtb");
    let b = board_from_dtb(&raw, vec![]).unwrap();
    assert_eq!(b.cpus, [0, 1, 2, 3]);
    let console = "/soc@0/bus@30800000/serial@30890000";
    assert_eq!(b.console.as_deref(), Some(console));
    assert_eq!(b.devices[console], [(0x3089_0000, 0x1_0000)]);
    // UART1 is disabled in Debian's DTB until the board folder enables it.
    let uart1 = "/soc@0/bus@30800000/serial@30860000";
    assert!(!b.devices.contains_key(uart1));
    let enabled = crate::fdt_patch::enable_nodes(&raw, &[uart1.to_owned()]).unwrap();
    let b = board_from_dtb(&enabled, vec![]).unwrap();
    assert_eq!(b.devices[uart1], [(0x3086_0000, 0x1_0000)]);
}

/// A tree with what real boards have: a disabled memory node (QEMU `virt,secure=on`'s
/// secure RAM), a disabled bus hiding its children, and a bus whose `ranges` moves
/// its children's addresses.
fn synthetic() -> Vec<u8> {
    let mut w = vm_fdt::FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    w.property_u32("#address-cells", 2).unwrap();
    w.property_u32("#size-cells", 2).unwrap();
    let cpus = w.begin_node("cpus").unwrap();
    w.property_u32("#address-cells", 1).unwrap();
    w.property_u32("#size-cells", 0).unwrap();
    let cpu = w.begin_node("cpu@0").unwrap();
    w.property_string("device_type", "cpu").unwrap();
    w.property_u32("reg", 0).unwrap();
    w.end_node(cpu).unwrap();
    w.end_node(cpus).unwrap();
    for (name, base, size, status) in [
        ("memory@40000000", 0x4000_0000u64, 0x4000_0000u64, None),
        ("memory@e000000", 0x0e00_0000, 0x0100_0000, Some("disabled")),
    ] {
        let m = w.begin_node(name).unwrap();
        w.property_string("device_type", "memory").unwrap();
        w.property_array_u64("reg", &[base, size]).unwrap();
        if let Some(s) = status {
            w.property_string("status", s).unwrap();
        }
        w.end_node(m).unwrap();
    }
    // A bus at 0x1_0000_0000 whose children count from 0.
    let bus = w.begin_node("bus@100000000").unwrap();
    w.property_string("compatible", "simple-bus").unwrap();
    w.property_u32("#address-cells", 1).unwrap();
    w.property_u32("#size-cells", 1).unwrap();
    w.property_array_u32("ranges", &[0, 1, 0, 0x10_0000]).unwrap();
    let dev = w.begin_node("serial@2000").unwrap();
    w.property_string("compatible", "ns16550a").unwrap();
    w.property_array_u32("reg", &[0x2000, 0x100]).unwrap();
    w.end_node(dev).unwrap();
    w.end_node(bus).unwrap();
    // A disabled bus: its (okay) child is not available either.
    let off = w.begin_node("bus@20000000").unwrap();
    w.property_string("compatible", "simple-bus").unwrap();
    w.property_string("status", "disabled").unwrap();
    w.property_u32("#address-cells", 1).unwrap();
    w.property_u32("#size-cells", 1).unwrap();
    w.property_null("ranges").unwrap();
    let dev = w.begin_node("serial@20001000").unwrap();
    w.property_string("compatible", "ns16550a").unwrap();
    w.property_string("status", "okay").unwrap();
    w.property_array_u32("reg", &[0x2000_1000, 0x100]).unwrap();
    w.end_node(dev).unwrap();
    w.end_node(off).unwrap();
    // No `ranges`: not memory-mapped, so not a device to pass through.
    let i2c = w.begin_node("i2c@30000000").unwrap();
    w.property_string("compatible", "some-i2c").unwrap();
    w.property_array_u64("reg", &[0x3000_0000, 0x1000]).unwrap();
    w.property_u32("#address-cells", 1).unwrap();
    w.property_u32("#size-cells", 0).unwrap();
    let eeprom = w.begin_node("eeprom@50").unwrap();
    w.property_string("compatible", "atmel,24c02").unwrap();
    w.property_u32("reg", 0x50).unwrap();
    w.end_node(eeprom).unwrap();
    w.end_node(i2c).unwrap();
    w.end_node(root).unwrap();
    w.finish().unwrap()
}

#[test]
fn disabled_memory_is_not_ram() {
    let b = board_from_dtb(&synthetic(), vec![]).unwrap();
    assert_eq!(b.ram, [(0x4000_0000, 0x4000_0000)]);
}

#[test]
fn devices_follow_ranges_and_status() {
    let b = board_from_dtb(&synthetic(), vec![]).unwrap();
    assert_eq!(b.devices["/bus@100000000/serial@2000"], [(0x1_0000_2000, 0x100)]);
    assert!(!b.devices.keys().any(|k| k.starts_with("/bus@20000000")));
    assert_eq!(b.devices["/i2c@30000000"], [(0x3000_0000, 0x1000)]);
    assert!(!b.devices.contains_key("/i2c@30000000/eeprom@50"));
}

#[test]
fn rpi4_devices_are_translated_and_its_console_alias_resolved() {
    // QEMU raspi4b's tree: memory filled, stdout-path "serial1:115200n8".
    let b = board_from_dtb(&dtb("qemu-raspi4b-live.dtb"), vec![]).unwrap();
    assert_eq!(b.cpus, [0, 1, 2, 3]);
    assert_eq!(b.ram, [(0, 0x3c00_0000)]);
    assert_eq!(b.console.as_deref(), Some("/soc/serial@7e215040"));
    assert_eq!(b.devices["/soc/serial@7e215040"], [(0xfe21_5040, 0x40)]);
    assert_eq!(b.devices["/soc/serial@7e201000"], [(0xfe20_1000, 0x200)]);
    assert_eq!(b.devices["/soc/local_intc@40000000"], [(0xff80_0000, 0x100)]);
    assert_eq!(b.devices["/emmc2bus/mmc@7e340000"], [(0xfe34_0000, 0x100)]);
    // Disabled in Debian's DTB: no device.
    assert!(!b.devices.contains_key("/soc/serial@7e201400"));
    // The board folder's `disable` keeps the HDMI blocks from every VM.
    let hdmi = "/soc/hdmi@7ef00700".to_owned();
    assert!(b.devices.contains_key(&hdmi));
    let raw = dtb("qemu-raspi4b-live.dtb");
    let off = crate::fdt_patch::edit_with_disable(&raw, &[], std::slice::from_ref(&hdmi), &[]).unwrap();
    let b = board_from_dtb(&off, vec![]).unwrap();
    assert!(!b.devices.contains_key(&hdmi));
}

#[test]
fn rpi4_board_folder_disables_every_hdmi_node() {
    let board = crate::board::load_board(&crate::board::named_board_dir("raspi4b")).unwrap();
    let fdt_bytes = dtb("bcm2711-rpi-4-b.dtb");
    let fdt = fdt::Fdt::new(&fdt_bytes).unwrap();
    let soc = fdt.find_node("/soc").unwrap();
    let mut hdmi_block: Vec<String> = soc
        .children()
        .filter(|c| c.name.contains("@7ef"))
        .map(|c| format!("/soc/{}", c.name))
        .collect();
    hdmi_block.sort();
    let mut disabled = board.disable.clone();
    disabled.sort();
    assert_eq!(hdmi_block.len(), 6, "{hdmi_block:?}");
    assert_eq!(disabled, hdmi_block);
}

#[test]
fn a_board_console_is_passed_as_tessera_console() {
    let mut board = crate::board::load_board(&crate::board::named_board_dir("raspi4b")).unwrap();
    let empty: crate::config::ConfigToml = toml::from_str("").unwrap();
    // The folder keeps stdout-path's mini UART: nothing to pass.
    let m = crate::board::machine_for(&board, &empty);
    assert_eq!(m.append_for(Some((10, 0)), None), None);
    board.console = Some("serial0".into());
    let m = crate::board::machine_for(&board, &empty);
    assert_eq!(
        m.append_for(Some((10, 0)), Some("tessera.selftest=x")).as_deref(),
        Some("tessera.console=serial0 tessera.selftest=x")
    );
    // What the config check then takes for the console.
    let dtb = dtb("qemu-raspi4b-live.dtb");
    assert_eq!(
        crate::board_console::resolve(&dtb, "serial0").unwrap(),
        "/soc/serial@7e201000"
    );
}

/// The raspi4b board as the config check sees it: QEMU's live tree with the
/// board folder's `disable` applied and its `reserved` regions.
fn rpi4_board() -> crate::config::Board {
    let dir = crate::board::named_board_dir("raspi4b");
    let board = crate::board::load_board(&dir).unwrap();
    let raw = dtb("qemu-raspi4b-live.dtb");
    let dtb = crate::fdt_patch::edit_with_disable(&raw, &[], &board.disable, &[]).unwrap();
    let reserved = board
        .reserved
        .iter()
        .map(|r| (r.name.clone(), r.base, r.size.0))
        .collect();
    board_from_dtb(&dtb, reserved).unwrap()
}

/// Checks `toml` (one VM, bare-metal) against the raspi4b board.
fn check_rpi4(toml: &str) -> anyhow::Result<crate::config::Resolved> {
    let dir = std::env::temp_dir().join(format!("tessera-rpi4-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = &N;
    let file = dir.join(format!(
        "cfg{}-{}.toml",
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        toml.len()
    ));
    std::fs::write(&file, format!("board = \"raspi4b\"\n{toml}")).unwrap();
    let guest = file.with_extension("bin");
    let mut img = vec![0u8; 64];
    img[crate::image::IMAGE_MAGIC_OFFSET..][..4].copy_from_slice(crate::image::IMAGE_MAGIC);
    std::fs::write(&guest, img).unwrap();
    let parsed = crate::config::parse(&file)?;
    let r = crate::config::load(&file, &parsed, &rpi4_board(), &|_| Some(guest.clone()));
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&guest);
    r
}

#[test]
fn rpi4_configs_keep_to_what_the_hypervisor_may_give() {
    let vm = |extra: &str| {
        format!("[[vm]]\nname = \"v\"\ncpus = [2]\nkernel = \"guest:hello\"\nmemory = [{{ size = \"16M\" }}]\n{extra}\n")
    };
    // uart0, translated: fine.
    check_rpi4(&vm("devices = [\"/soc/serial@7e201000\"]")).unwrap();
    // The mini UART is the console (stdout-path's alias resolved).
    let e = format!(
        "{:#}",
        check_rpi4(&vm("devices = [\"/soc/serial@7e215040\"]")).unwrap_err()
    );
    assert!(e.contains("is the hypervisor's console"), "{e}");
    // The HDMI block is disabled by the board folder.
    let e = format!(
        "{:#}",
        check_rpi4(&vm("devices = [\"/soc/hdmi@7ef00700\"]")).unwrap_err()
    );
    assert!(
        e.contains("the board has no device \"/soc/hdmi@7ef00700\""),
        "{e}"
    );
    // Fixed memory on the spin table's page, or in the real firmware's VideoCore memory.
    for (base, what) in [
        ("0x0", "the firmware's spin table"),
        ("0x3b000000", "the VideoCore's memory"),
    ] {
        let cfg = format!(
            "[[vm]]\nname = \"v\"\ncpus = [2]\nkernel = \"guest:hello\"\nmemory = [{{ base = {base}, size = \"16M\", identity = true }}]\n"
        );
        let e = format!("{:#}", check_rpi4(&cfg).unwrap_err());
        assert!(e.contains(what), "{base}: {e}");
    }
}
