//! Host tests of the boot media: each board's script and layout from its real
//! board.toml, config.txt, and whole disks read back through the MBR and FAT readers.

use super::*;
use crate::board::{load_board, named_board_dir};
use std::path::PathBuf;

fn board(name: &str) -> (BoardToml, Media) {
    let dir = named_board_dir(name);
    let b = load_board(&dir).unwrap();
    let m = media_of(&dir, &b).unwrap();
    (b, m)
}

fn uboot_media(name: &str) -> (BoardToml, uboot::UBootMedia) {
    match board(name) {
        (b, Media::UBoot(u)) => (b, u),
        (_, m) => panic!("{name}: {m:?}"),
    }
}

const ONE_MIB: u64 = 1 << 20;

fn fake_image(len: usize) -> Vec<u8> {
    let mut img = crate::image::spin_image();
    img.resize(len, 0x77);
    img
}

#[test]
fn every_u_boot_board_has_media_that_fits_its_memory_map() {
    for name in ["qemu-virt", "xlnx-zcu102", "imx8mp-evk", "xlnx-versal-virt"] {
        let (b, u) = uboot_media(name);
        // A Linux demo image is some tens of MiB: it must fit below the device tree.
        uboot::check_layout(&b, &u, 64 << 20).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
}

#[test]
fn qemu_virt_script_loads_the_image_and_boots_u_boots_dtb_from_the_reserved_region() {
    let (b, u) = uboot_media("qemu-virt");
    let s = uboot::script(&b, &u, None).unwrap();
    let lines: Vec<&str> = s.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "echo \"tessera: loading ${prefix}tessera.bin from ${devtype} ${devnum}:${distro_bootpart}\"",
            "load ${devtype} ${devnum}:${distro_bootpart} 0x40200000 ${prefix}tessera.bin",
            "echo \"tessera: the device tree of U-Boot, moved to 0x48000000\"",
            "fdt addr ${fdtcontroladdr}",
            "fdt move ${fdtcontroladdr} 0x48000000 0x100000",
            "setenv fdt_high 0xffffffffffffffff",
            "booti 0x40200000 - 0x48000000",
            "echo \"tessera: booti returned: the image or the device tree was refused\"",
        ]
    );
}

#[test]
fn zcu102_script_loads_debians_dtb_from_the_partition() {
    let (b, u) = uboot_media("xlnx-zcu102");
    let dtb = (
        "zynqmp-zcu102-rev1.0.dtb".to_owned(),
        vec![0xd0, 0x0d, 0xfe, 0xed],
    );
    let files = uboot::files(&b, &u, fake_image(8192), Some(dtb.clone())).unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["boot.scr", "boot.cmd", "tessera.bin", "zynqmp-zcu102-rev1.0.dtb"]
    );
    let script = uimage::parse_script(&files[0].bytes).unwrap();
    assert_eq!(
        script.as_bytes(),
        &files[1].bytes[..],
        "boot.cmd is boot.scr's source"
    );
    for line in [
        "load ${devtype} ${devnum}:${distro_bootpart} 0x200000 ${prefix}tessera.bin",
        "load ${devtype} ${devnum}:${distro_bootpart} 0x8000000 ${prefix}zynqmp-zcu102-rev1.0.dtb",
        "fdt addr 0x8000000",
        "booti 0x200000 - 0x8000000",
    ] {
        assert!(
            script.lines().any(|l| l == line),
            "{line:?} missing from\n{script}"
        );
    }
    assert!(!script.contains("fdtcontroladdr"));
    assert_eq!(files[3].bytes, dtb.1);
}

#[test]
fn the_imx8mp_card_leaves_room_for_flash_bin() {
    // The boot ROM reads flash.bin (SPL, DDR training, TF-A, U-Boot: about 2 MiB) at 32 KiB.
    let (_, m) = board("imx8mp-evk");
    assert_eq!(m.partition_start(), 8 << 20);
    assert_eq!(board("xlnx-zcu102").1.partition_start(), ONE_MIB);
}

#[test]
fn layout_errors_name_the_board_and_what_collides() {
    let (mut b, u) = uboot_media("qemu-virt");
    // 0x40200000 + 126 MiB ends where the device tree at 0x48000000 starts.
    let e = uboot::check_layout(&b, &u, (126 << 20) + 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("qemu-virt") && e.contains("overlaps the device tree"),
        "{e}"
    );
    assert!(uboot::check_layout(&b, &u, 126 << 20).is_ok());
    let outside = uboot::UBootMedia {
        dtb_address: 0x4900_0000,
        ..u.clone()
    };
    let e = uboot::check_layout(&b, &outside, 4096).unwrap_err().to_string();
    assert!(
        e.contains("not inside one of the board's `reserved` regions"),
        "{e}"
    );
    // Half of the 1 MiB room outside the 2 MiB region.
    let straddling = uboot::UBootMedia {
        dtb_address: 0x4818_0000,
        ..u.clone()
    };
    assert!(uboot::check_layout(&b, &straddling, 4096).is_err());
    b.load_address = 0x4010_0000;
    let e = uboot::check_layout(&b, &u, 4096).unwrap_err().to_string();
    assert!(e.contains("not 2 MiB aligned"), "{e}");
}

#[test]
fn a_board_dtb_is_needed_when_the_script_loads_one() {
    let (b, u) = uboot_media("xlnx-zcu102");
    assert!(uboot::files(&b, &u, fake_image(4096), None).is_err());
}

#[test]
fn media_sections_are_checked_like_the_rest_of_board_toml() {
    #[derive(serde::Deserialize)]
    struct WithMedia {
        media: Media,
    }
    let parse = |s: &str| toml::from_str::<WithMedia>(s).map(|f| f.media);
    assert!(parse("[media]\nkind = \"u-boot\"\ndtb = \"u-boot\"\ndtb_address = 0x48000000").is_ok());
    assert!(parse("[media]\nkind = \"floppy\"").is_err());
    assert!(parse("[media]\nkind = \"u-boot\"\ndtb = \"mine\"\ndtb_address = 0").is_err());
    assert!(
        parse("[media]\nkind = \"u-boot\"\ndtb = \"u-boot\"\ndtb_address = 0\ntypo = 1").is_err(),
        "unknown keys are errors"
    );
    assert!(parse("[media]\nkind = \"raspi\"\nfirmware = [\"start4.elf\"]").is_ok());
}

/// A Raspberry Pi 4 board as its board folder describes one (the parts the medium uses).
fn pi4() -> (BoardToml, raspi::RaspiMedia) {
    let b: BoardToml = toml::from_str(
        r#"
        name = "raspi4b"
        description = "Raspberry Pi 4 Model B: 4x Cortex-A72"
        load_address = 0x200000
        dtb = "debian:broadcom/bcm2711-rpi-4-b.dtb"
        [media]
        kind = "raspi"
        firmware = ["start4.elf", "fixup4.dat"]
        uart = ["enable_uart=1"]
        dtb_address = 0x08000000
        armstub = "rpi4/bl31.bin"
        [[reserved]]
        name = "the boot DTB"
        base = 0x08000000
        size = "2M"
        "#,
    )
    .unwrap();
    match b.media.clone() {
        Some(Media::Raspi(r)) => (b, r),
        m => panic!("{m:?}"),
    }
}

/// Fake unpacked `raspi-firmware` and `arm-trusted-firmware` trees.
fn fake_packages(tag: &str) -> (PathBuf, PathBuf) {
    let root = std::env::temp_dir().join(format!("tessera-media-{tag}-{}", std::process::id()));
    let fw = root.join("fw");
    let tfa = root.join("tfa");
    fs::create_dir_all(fw.join(raspi::FIRMWARE_DIR)).unwrap();
    fs::create_dir_all(tfa.join(raspi::TFA_DIR).join("rpi4")).unwrap();
    fs::write(fw.join(raspi::FIRMWARE_DIR).join("start4.elf"), b"start4").unwrap();
    fs::write(fw.join(raspi::FIRMWARE_DIR).join("fixup4.dat"), b"fixup4").unwrap();
    fs::write(tfa.join(raspi::TFA_DIR).join("rpi4/bl31.bin"), b"bl31").unwrap();
    (fw, tfa)
}

#[test]
fn pi4_config_txt_has_the_lines_the_firmware_needs() {
    let (b, r) = pi4();
    let text = raspi::config_txt(&b, &r, "bcm2711-rpi-4-b.dtb");
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("# ")).collect();
    assert_eq!(
        lines,
        [
            "[pi4]",
            "arm_64bit=1",
            "enable_gic=1",
            "kernel=tessera.bin",
            "kernel_address=0x200000",
            "device_tree=bcm2711-rpi-4-b.dtb",
            "device_tree_address=0x8000000",
            "upstream_kernel=1",
            "enable_uart=1",
            "#armstub=bl31.bin",
            "[all]",
        ]
    );
    assert!(
        text.starts_with("# Tessera on the Raspberry Pi 4 Model B"),
        "{text}"
    );
    let plain = raspi::RaspiMedia { armstub: None, ..r };
    assert!(!raspi::config_txt(&b, &plain, "x.dtb").contains("armstub"));
}

#[test]
fn pi4_sd_card_holds_firmware_config_dtb_image_and_tf_a() {
    let (b, r) = pi4();
    let (fw, tfa) = fake_packages("pi4");
    let image = fake_image(3 << 20);
    let dtb = ("bcm2711-rpi-4-b.dtb".to_owned(), b"dtb".to_vec());
    let files = raspi::files(&b, &r, image.clone(), dtb, &fw, Some(&tfa)).unwrap();
    let disk = disk_image(&files, ONE_MIB).unwrap();
    let back = read_disk(&disk).unwrap();
    let get = |n: &str| back.iter().find(|f| f.name == n).map(|f| f.bytes.clone());
    assert_eq!(get("start4.elf").as_deref(), Some(&b"start4"[..]));
    assert_eq!(get("fixup4.dat").as_deref(), Some(&b"fixup4"[..]));
    assert_eq!(get("bcm2711-rpi-4-b.dtb").as_deref(), Some(&b"dtb"[..]));
    assert_eq!(get("bl31.bin").as_deref(), Some(&b"bl31"[..]));
    assert_eq!(get("tessera.bin"), Some(image));
    let config = String::from_utf8(get("config.txt").unwrap()).unwrap();
    assert!(config.contains("\nkernel=tessera.bin\n"), "{config}");
    assert_eq!(get("cmdline.txt").as_deref(), Some(&b"\n"[..]));
    assert_eq!(back.len(), 7);
    let _ = fs::remove_dir_all(fw.parent().unwrap());
}

/// A device tree with only the root's compatible, as a Pi 4's has it.
fn tiny_dtb(compatible: &[&str]) -> Vec<u8> {
    let mut w = vm_fdt::FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    w.property_string_list("compatible", compatible.iter().map(|s| s.to_string()).collect())
        .unwrap();
    w.end_node(root).unwrap();
    w.finish().unwrap()
}

#[test]
fn the_card_check_accepts_what_files_writes_and_names_what_is_wrong() {
    let (b, r) = pi4();
    let (fw, tfa) = fake_packages("check");
    let dtb = tiny_dtb(&["raspberrypi,4-model-b", "brcm,bcm2711"]);
    let card = |dtb: &[u8]| {
        let d = ("bcm2711-rpi-4-b.dtb".to_owned(), dtb.to_vec());
        raspi::files(&b, &r, fake_image(4096), d, &fw, Some(&tfa)).unwrap()
    };
    let good = card(&dtb);
    raspi::check(&b, &r, &good).unwrap();
    let err = |files: &[fat::File]| format!("{:#}", raspi::check(&b, &r, files).unwrap_err());
    let without =
        |name: &str| -> Vec<fat::File> { good.iter().filter(|f| f.name != name).cloned().collect() };
    assert!(err(&without("fixup4.dat")).contains("no fixup4.dat"));
    assert!(err(&without("bcm2711-rpi-4-b.dtb")).contains("not on the card"));
    assert!(err(&without("tessera.bin")).contains("no image"));
    assert!(err(&card(&tiny_dtb(&["linux,dummy-virt"]))).contains("not a BCM2711"));
    let edited = |from: &str, to: &str| -> Vec<fat::File> {
        let mut files = good.clone();
        let c = files.iter_mut().find(|f| f.name == "config.txt").unwrap();
        c.bytes = String::from_utf8(c.bytes.clone())
            .unwrap()
            .replace(from, to)
            .into_bytes();
        files
    };
    assert!(err(&edited("kernel_address=0x200000", "kernel_address=0x80000")).contains("kernel_address"));
    assert!(err(&edited("arm_64bit=1", "arm_64bit=0")).contains("arm_64bit"));
    assert!(err(&edited("device_tree_address=", "#device_tree_address=")).contains("device_tree_address"));
    assert!(err(&edited("enable_uart=1\n", "")).contains("UART line"));
    assert!(err(&edited("#armstub", "# armstub")).contains("armstub"));
    let _ = fs::remove_dir_all(fw.parent().unwrap());
}

#[test]
fn the_pi_device_tree_goes_to_a_reserved_region_clear_of_the_image() {
    let (b, mut r) = pi4();
    let (fw, tfa) = fake_packages("dtbplace");
    let dtb = || ("d.dtb".to_owned(), Vec::new());
    // 0x200000 + 126 MiB reaches 0x8000000.
    // The error, without printing a whole card if there is none.
    let refusal = |r: Result<Vec<fat::File>>| match r {
        Ok(_) => panic!("the card was written"),
        Err(e) => format!("{e:#}"),
    };
    let e = refusal(raspi::files(
        &b,
        &r,
        fake_image((126 << 20) + 1),
        dtb(),
        &fw,
        Some(&tfa),
    ));
    assert!(e.contains("overlaps the device tree"), "{e}");
    r.dtb_address = Some(0x0900_0000);
    let e = refusal(raspi::files(&b, &r, fake_image(64), dtb(), &fw, Some(&tfa)));
    assert!(e.contains("reserved"), "{e}");
    r.dtb_address = None;
    let files = raspi::files(&b, &r, fake_image(64), dtb(), &fw, Some(&tfa)).unwrap();
    let config = &files.iter().find(|f| f.name == "config.txt").unwrap().bytes;
    assert!(!String::from_utf8_lossy(config).contains("device_tree_address"));
    let _ = fs::remove_dir_all(fw.parent().unwrap());
}

#[test]
fn missing_firmware_is_an_error_naming_the_file_and_package() {
    let (b, mut r) = pi4();
    r.firmware.push("start4x.elf".into());
    let (fw, tfa) = fake_packages("missing");
    let dtb = ("d.dtb".to_owned(), Vec::new());
    let e = raspi::files(&b, &r, fake_image(64), dtb, &fw, Some(&tfa)).unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("start4x.elf") && e.contains("raspi-firmware"), "{e}");
    let _ = fs::remove_dir_all(fw.parent().unwrap());
}

#[test]
fn a_u_boot_disk_reads_back_through_mbr_and_fat() {
    let (b, u) = uboot_media("qemu-virt");
    let image = fake_image(1 << 20);
    let files = uboot::files(&b, &u, image.clone(), None).unwrap();
    let disk = disk_image(&files, ONE_MIB).unwrap();
    let parts = mbr::parse(&disk).unwrap();
    assert_eq!(parts.len(), 1);
    assert!(parts[0].bootable && parts[0].kind == mbr::FAT32_LBA && parts[0].first_lba == 2048);
    let back = read_disk(&disk).unwrap();
    assert_eq!(back, files);
    assert_eq!(disk_image(&files, ONE_MIB).unwrap(), disk, "reproducible");
    assert!(disk_image(&files, ONE_MIB + 512).is_err());
}

#[test]
fn a_firmware_boot_has_no_kernel_option() {
    let m = crate::qemu::Machine {
        bios: Some(PathBuf::from("/fw/u-boot.bin")),
        append: Some("ignored".into()),
        ..crate::qemu::Machine::new(PathBuf::from("tessera.bin"))
    };
    let args: Vec<String> = m
        .command(Path::new("qemu"), crate::qemu::Console::Captured)
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert!(
        args.windows(2).any(|w| w == ["-bios", "/fw/u-boot.bin"]),
        "{args:?}"
    );
    assert!(!args.iter().any(|a| a == "-kernel" || a == "-append"), "{args:?}");
}

#[test]
fn images_are_written_with_holes_but_read_back_whole() {
    let dir = std::env::temp_dir().join(format!("tessera-sparse-{}", std::process::id()));
    let file = dir.join("disk.img");
    let mut bytes = vec![0u8; 3 * 4096 + 100];
    bytes[5000] = 1;
    bytes[3 * 4096 + 99] = 2;
    write_atomically(&file, &bytes).unwrap();
    assert_eq!(fs::read(&file).unwrap(), bytes);
    let _ = fs::remove_dir_all(&dir);
}
