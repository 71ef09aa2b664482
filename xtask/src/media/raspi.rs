//! The Raspberry Pi 4's SD card: its boot ROM (the EEPROM bootloader) reads the first
//! FAT partition, starts the GPU firmware `start4.elf` (with `fixup4.dat`, its memory
//! split), which reads `config.txt`, loads the DTB and the kernel and starts the ARM
//! cores through an armstub. Two ways to run Tessera, both from this card:
//!
//! - The firmware's own armstub (the default, what QEMU's `raspi4b` model stands in
//!   for): every core at EL2, core 0 at the image, the others waiting on the spin table
//!   the DTB describes (`enable-method = "spin-table"`, `cpu-release-addr`).
//! - TF-A's BL31 as the armstub (`armstub=bl31.bin`, Debian's `arm-trusted-firmware`,
//!   `rpi4/bl31.bin`): it stays resident at EL3, adds a PSCI node, switches the CPUs'
//!   `enable-method` to PSCI and reserves its own memory in the DTB before it enters
//!   the image at EL2.

use super::{fat, IMAGE_NAME};
use crate::board::BoardToml;
use anyhow::{ensure, Context, Result};
use serde::Deserialize;
use std::fs;
use std::path::Path;

/// Debian's package (component non-free-firmware) with the GPU firmware.
pub const FIRMWARE_PACKAGE: &str = "raspi-firmware";
/// Where that package keeps it.
pub const FIRMWARE_DIR: &str = "usr/lib/raspi-firmware";
/// Debian's TF-A package.
pub const TFA_PACKAGE: &str = "arm-trusted-firmware";
/// Where that package keeps each platform's BL31.
pub const TFA_DIR: &str = "usr/lib/arm-trusted-firmware";
/// TF-A's name on the partition (what `armstub=` names).
pub const ARMSTUB_NAME: &str = "bl31.bin";

/// `[media]` with `kind = "raspi"`.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RaspiMedia {
    /// Files of `raspi-firmware`'s `usr/lib/raspi-firmware/` the board boots with.
    pub firmware: Vec<String>,
    /// The UART lines of config.txt: the console the board's DTB names must be on the
    /// GPIO header at a fixed baud rate.
    #[serde(default)]
    pub uart: Vec<String>,
    /// Where the firmware puts the device tree (`device_tree_address`): inside one of
    /// the board's `reserved` regions, where QEMU's model puts it too.
    pub dtb_address: Option<u64>,
    /// TF-A's BL31 for this board under `usr/lib/arm-trusted-firmware/` (`rpi4/bl31.bin`):
    /// put on the partition as bl31.bin, with config.txt's `armstub=` line commented out.
    pub armstub: Option<String>,
}

/// config.txt: 64-bit, the GIC handed to the non-secure side, the image at the board's
/// load address (2 MiB aligned, as the hypervisor needs; the firmware's arm64 default
/// 0x80000 is not), the board DTB, the UART, and the TF-A line to uncomment.
pub fn config_txt(board: &BoardToml, m: &RaspiMedia, dtb_file: &str) -> String {
    let mut s = format!(
        "# Tessera on the {}: written by `cargo xtask image --board {}`.\n\
         # The firmware starts every core at EL2: core 0 at the image, the others on the\n\
         # spin table of the device tree, which is how Tessera brings them up.\n\
         [pi4]\n\
         arm_64bit=1\n\
         enable_gic=1\n\
         kernel={IMAGE_NAME}\n\
         kernel_address={:#x}\n\
         device_tree={dtb_file}\n",
        board.description.split(':').next().unwrap_or(&board.name),
        board.name,
        board.load_address
    );
    if let Some(at) = m.dtb_address {
        s.push_str(&format!(
            "# The device tree in the board's reserved region, where QEMU puts it too.\n\
             device_tree_address={at:#x}\n"
        ));
    }
    s.push_str(
        "# The DTB is mainline Linux's (Debian's), as in Debian's own config.txt.\n\
         upstream_kernel=1\n",
    );
    for line in &m.uart {
        s.push_str(line);
        s.push('\n');
    }
    if m.armstub.is_some() {
        s.push_str(&format!(
            "# TF-A (Debian's arm-trusted-firmware) instead of the firmware's armstub: PSCI for\n\
             # the cores, added to the device tree with its own memory reserved. Uncomment:\n\
             #armstub={ARMSTUB_NAME}\n"
        ));
    }
    s.push_str("[all]\n");
    s
}

/// The partition of a Raspberry Pi: the firmware from `firmware_root` (the unpacked
/// raspi-firmware), config.txt, the board DTB, the image, and TF-A's BL31 from
/// `tfa_root` (the unpacked arm-trusted-firmware) when the board names one.
pub fn files(
    board: &BoardToml,
    m: &RaspiMedia,
    tessera: Vec<u8>,
    (dtb_name, dtb): (String, Vec<u8>),
    firmware_root: &Path,
    tfa_root: Option<&Path>,
) -> Result<Vec<fat::File>> {
    ensure!(
        board.load_address.is_multiple_of(2 << 20),
        "{}: load_address {:#x} is not 2 MiB aligned (config.txt kernel_address)",
        board.name,
        board.load_address
    );
    ensure!(
        !m.firmware.is_empty(),
        "{}: [media] firmware lists no file",
        board.name
    );
    if let Some(at) = m.dtb_address {
        super::check_dtb_place(board, at, tessera.len() as u64)?;
    }
    let mut files = Vec::new();
    for name in &m.firmware {
        let path = firmware_root.join(FIRMWARE_DIR).join(name);
        let bytes = fs::read(&path).with_context(|| {
            format!(
                "{}: [media] firmware: {name} is not in Debian's {FIRMWARE_PACKAGE} ({})",
                board.name,
                path.display()
            )
        })?;
        files.push(fat::File::new(name, bytes));
    }
    files.push(fat::File::new(
        "config.txt",
        config_txt(board, m, &dtb_name).into_bytes(),
    ));
    files.push(fat::File::new(&dtb_name, dtb));
    // The firmware puts this line in /chosen/bootargs: the hypervisor's command line
    // (`tessera.console=serial0`, say). Empty: the DTB's stdout-path console.
    files.push(fat::File::new("cmdline.txt", b"\n".to_vec()));
    files.push(fat::File::new(IMAGE_NAME, tessera));
    if let (Some(rel), Some(root)) = (&m.armstub, tfa_root) {
        let path = root.join(TFA_DIR).join(rel);
        let bytes = fs::read(&path).with_context(|| {
            format!(
                "{}: [media] armstub: {rel} is not in Debian's {TFA_PACKAGE} ({})",
                board.name,
                path.display()
            )
        })?;
        files.push(fat::File::new(ARMSTUB_NAME, bytes));
    }
    Ok(files)
}

/// Checks a card's files as the firmware will use them: every firmware file, the DTB
/// config.txt names (a device tree for a Pi 4), the image, and the config.txt lines
/// the boot depends on. What the image scenario reads back from the card.
pub fn check(board: &BoardToml, m: &RaspiMedia, files: &[fat::File]) -> Result<()> {
    let get = |name: &str| files.iter().find(|f| f.name == name).map(|f| f.bytes.as_slice());
    for name in &m.firmware {
        ensure!(get(name).is_some_and(|b| !b.is_empty()), "the card has no {name}");
    }
    let config = get("config.txt").context("the card has no config.txt")?;
    let config = std::str::from_utf8(config).context("config.txt is not text")?;
    let lines: Vec<&str> = config.lines().map(str::trim).collect();
    let value = |key: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    for (key, want) in [
        ("arm_64bit", "1".to_owned()),
        ("enable_gic", "1".to_owned()),
        ("kernel", IMAGE_NAME.to_owned()),
        ("kernel_address", format!("{:#x}", board.load_address)),
    ] {
        ensure!(
            value(key) == Some(want.as_str()),
            "config.txt: {key} is {:?}, not {want}",
            value(key)
        );
    }
    for line in &m.uart {
        ensure!(
            lines.contains(&line.as_str()),
            "config.txt lacks the UART line {line:?}"
        );
    }
    if let Some(at) = m.dtb_address {
        let want = format!("{at:#x}");
        ensure!(
            value("device_tree_address") == Some(want.as_str()),
            "config.txt: device_tree_address is {:?}, not {want}",
            value("device_tree_address")
        );
    }
    let dtb_name = value("device_tree").context("config.txt names no device_tree")?;
    let dtb =
        get(dtb_name).with_context(|| format!("config.txt names {dtb_name}, which is not on the card"))?;
    let fdt = fdt::Fdt::new(dtb).map_err(|e| anyhow::anyhow!("{dtb_name} is not a device tree: {e:?}"))?;
    ensure!(
        fdt.root().compatible().all().any(|c| c == "brcm,bcm2711"),
        "{dtb_name} is not a BCM2711 (Pi 4) device tree"
    );
    let image = get(IMAGE_NAME).context("the card has no image")?;
    crate::image::check_image_header(image)?;
    if m.armstub.is_some() {
        ensure!(
            get(ARMSTUB_NAME).is_some_and(|b| !b.is_empty()),
            "the card has no {ARMSTUB_NAME}"
        );
        ensure!(
            lines.contains(&format!("#armstub={ARMSTUB_NAME}").as_str()),
            "config.txt lacks the commented armstub={ARMSTUB_NAME} line"
        );
    }
    Ok(())
}
