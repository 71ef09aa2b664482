//! The QEMU scenarios of the boot media: what a user of a U-Boot board does (flash the
//! disk image, power on) run for real on QEMU `virt`, and the Raspberry Pi 4's SD card
//! read back and checked, its image booted on QEMU's `raspi4b`.

use super::{
    disk_image, files_for, media_dir, media_of, raspi, read_disk, write_atomically, Media, IMAGE_NAME,
};
use crate::board::{build_config_image_on, load_board, named_board_dir};
use crate::images::Built;
use crate::scenarios::{Image, Scenario, BOOT_COMPLETE};
use anyhow::{bail, ensure, Context, Result};
use std::fs;
use std::path::PathBuf;

const PI4: &str = "raspi4b";

pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            // The default bare-metal demo, packed into the image on the disk; U-Boot's
            // bootstd finds boot.scr on the virtio disk by itself.
            firmware: Some(super::qemu_boot::virt_u_boot),
            must: with_demo(&["tessera: the device tree of U-Boot, moved to 0x48000000"]),
            ..uboot_demo("uboot_boot_scr_from_virtio_disk_starts_the_demo")
        },
        Scenario {
            // Debian 12's U-Boot: distro_bootcmd instead of bootstd finds the script.
            firmware: Some(super::qemu_boot::virt_u_boot_bookworm),
            must: with_demo(&["U-Boot 2023.01", "Found U-Boot script /boot.scr"]),
            ..uboot_demo("uboot_2023_distro_bootcmd_runs_boot_scr")
        },
        Scenario {
            // The device tree from the partition, as the zcu102 and i.MX 8M Plus cards
            // have it, loaded by boot.scr into the reserved region.
            firmware: Some(super::qemu_boot::virt_u_boot_dtb_from_disk),
            must: with_demo(&["tessera: loading /qemu-virt.dtb to 0x48000000"]),
            ..uboot_demo("uboot_boot_scr_loads_the_dtb_from_the_disk")
        },
        Scenario {
            // The card of `cargo xtask image --board raspi4b` read back and checked, and
            // the image read off it booted (QEMU's model plays the firmware).
            image: Image::Make(pi4_card_image),
            must: &[
                "CPUs online: 4/4 (boot CPU MPIDR 0x0; spin table)",
                BOOT_COMPLETE,
                "[ticker] hello: tick 3",
                "[echo] echo: ready",
                "uart0| uart: hello through the passed-through UART",
            ],
            timeout_secs: 60,
            ..Scenario::on(PI4, "raspi4b_sd_card_holds_firmware_config_and_a_booting_image")
        },
    ]
}

/// What the demo prints once U-Boot's boot.scr has started it.
const DEMO_UP: [&str; 8] = [
    "tessera: loading /tessera.bin from virtio 0:1",
    "CPUs online: 4/4",
    BOOT_COMPLETE,
    "[ticker0] hello: start at EL1",
    "[ticker1] hello: start at EL1",
    "[ticker0] hello: tick 3",
    "[ticker1] hello: tick 3",
    "[hostile] hostile: still alive",
];

/// `lines` and [`DEMO_UP`].
fn with_demo(lines: &[&'static str]) -> &'static [&'static str] {
    [lines, &DEMO_UP[..]].concat().leak()
}

/// QEMU virt booting boards/qemu-virt/demo.toml through U-Boot.
fn uboot_demo(name: &'static str) -> Scenario {
    Scenario {
        config: Some("boards/qemu-virt/demo.toml"),
        sequence: &[
            "U-Boot 20",
            "tessera: loading",
            "Starting kernel",
            "Tessera",
            BOOT_COMPLETE,
            "[ticker0] hello: tick 3",
        ],
        must_not: &["booti returned", "FAIL", "ERROR", "Bad Linux ARM64 Image magic"],
        timeout_secs: 60,
        ..Scenario::new(name)
    }
}

/// The raspi4b card scenario's image: `cargo xtask image --board raspi4b` for the
/// board's bare-metal demo, written to disk, read back through the MBR and the FAT
/// reader and checked ([`raspi::check`]); the image QEMU then boots is the one read off
/// the card (QEMU's `raspi4b` plays the firmware, which it cannot run).
pub fn pi4_card_image(built: &Built) -> Result<PathBuf> {
    let dir = named_board_dir(PI4);
    let board = load_board(&dir)?;
    let Media::Raspi(m) = media_of(&dir, &board)? else {
        bail!("{PI4}: [media] is not kind = \"raspi\"");
    };
    let config = dir.join("demo.toml");
    let img = build_config_image_on(&config, Some(PI4), built, None)?;
    let tessera = fs::read(&img.path)?;
    let media = Media::Raspi(m.clone());
    let files = files_for(&built.target_dir, &board, &media, &img.machine, tessera.clone())?;
    let card = media_dir(&built.target_dir).join(format!("{PI4}-demo.img"));
    write_atomically(&card, &disk_image(&files, media.partition_start())?)?;
    let back = read_disk(&fs::read(&card)?).with_context(|| format!("reading {}", card.display()))?;
    raspi::check(&board, &m, &back).with_context(|| format!("checking {}", card.display()))?;
    let on_card = back
        .iter()
        .find(|f| f.name == IMAGE_NAME)
        .context("no image on the card")?;
    ensure!(
        on_card.bytes == tessera,
        "the image on the card differs from the one built"
    );
    let out = media_dir(&built.target_dir).join(format!("{PI4}-demo-from-card.bin"));
    write_atomically(&out, &on_card.bytes)?;
    Ok(out)
}
