//! Boot media for U-Boot boards: `boot.scr` next to the image on a FAT partition.
//!
//! U-Boot's distro boot (`distro_bootcmd`) and its successor bootstd (`bootflow scan`)
//! both look for `boot.scr` in `/` and `/boot/` of each partition of each boot device,
//! and set `devtype`, `devnum`, `distro_bootpart` and `prefix` to where they found it
//! before running it. The script loads the image from there to the board's load address
//! and starts it with `booti`, handing over a device tree that sits in one of the board's
//! `reserved` regions, so the hypervisor never gives a VM the memory under it (U-Boot
//! would otherwise put it near the top of RAM, wherever its own allocator says).

use super::{fat, uimage, DTB_ROOM, IMAGE_NAME};
use crate::board::BoardToml;
use anyhow::{bail, ensure, Result};
use serde::Deserialize;

/// Which device tree `booti` passes.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DtbSource {
    /// The one U-Boot runs with (`$fdtcontroladdr`: on QEMU the machine's own), copied
    /// to `dtb_address`.
    UBoot,
    /// The board folder's DTB (board.toml `dtb`, its `enable`/`remove` edits applied),
    /// put on the partition and loaded to `dtb_address`: the one QEMU's model is tested with.
    Board,
}

/// `[media]` with `kind = "u-boot"`.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UBootMedia {
    pub dtb: DtbSource,
    /// Where the device tree goes: inside one of the board's `reserved` regions.
    pub dtb_address: u64,
    /// Where on the card the partition starts (default 1 MiB): room before it for a
    /// boot loader the SoC's boot ROM reads at a fixed offset (i.MX 8M: `flash.bin`
    /// at 32 KiB).
    #[serde(default)]
    pub partition_start: Option<crate::config::Size>,
}

/// The device tree cannot move: U-Boot's `fdt_high` "never relocate".
const NO_RELOCATION: &str = "0xffffffffffffffff";
/// booti places an image whose header says "anywhere" at the 2 MiB boundary it is on.
const IMAGE_ALIGN: u64 = 2 << 20;

/// The script for `board`: load the image (and the board DTB when the board says so),
/// then `booti` it. `dtb_file` is the DTB's name on the partition.
pub fn script(board: &BoardToml, m: &UBootMedia, dtb_file: Option<&str>) -> Result<String> {
    let load = board.load_address;
    let dtb = m.dtb_address;
    let from = "${devtype} ${devnum}:${distro_bootpart}";
    let mut s = format!(
        "# Tessera on {}: written by `cargo xtask image --board {}`.\n\
         # U-Boot's distro boot or bootstd runs it from the partition it found it on.\n\
         echo \"tessera: loading ${{prefix}}{IMAGE_NAME} from {from}\"\n\
         load {from} {load:#x} ${{prefix}}{IMAGE_NAME}\n",
        board.name, board.name
    );
    match (m.dtb, dtb_file) {
        (DtbSource::UBoot, _) => s.push_str(&format!(
            "# U-Boot's own device tree, moved into the board's reserved region (U-Boot\n\
             # 2023.01 moves only the working tree: `fdt addr` makes it that).\n\
             echo \"tessera: the device tree of U-Boot, moved to {dtb:#x}\"\n\
             fdt addr ${{fdtcontroladdr}}\n\
             fdt move ${{fdtcontroladdr}} {dtb:#x} {DTB_ROOM:#x}\n"
        )),
        (DtbSource::Board, Some(name)) => s.push_str(&format!(
            "echo \"tessera: loading ${{prefix}}{name} to {dtb:#x}\"\n\
             load {from} {dtb:#x} ${{prefix}}{name}\n\
             fdt addr {dtb:#x}\n"
        )),
        (DtbSource::Board, None) => {
            bail!(
                "{}: [media] dtb = \"board\" needs a DTB file (board.toml `dtb`)",
                board.name
            )
        }
    }
    s.push_str(&format!(
        "# booti must leave it where it is (and fixes /memory and /chosen up in place).\n\
         setenv fdt_high {NO_RELOCATION}\n\
         booti {load:#x} - {dtb:#x}\n\
         echo \"tessera: booti returned: the image or the device tree was refused\"\n"
    ));
    Ok(s)
}

/// Checks the board data against the image: the image on a 2 MiB boundary and clear of
/// the device tree, which lies wholly inside a `reserved` region.
pub fn check_layout(board: &BoardToml, m: &UBootMedia, image_len: u64) -> Result<()> {
    let name = &board.name;
    ensure!(
        board.load_address.is_multiple_of(IMAGE_ALIGN),
        "{name}: load_address {:#x} is not 2 MiB aligned: booti would move the image",
        board.load_address
    );
    super::check_dtb_place(board, m.dtb_address, image_len)
}

/// The partition of a U-Boot board: `boot.scr`, the image, and the board DTB if the
/// script loads it. `board_dtb` is (name, bytes) of the board folder's DTB, if it has one.
pub fn files(
    board: &BoardToml,
    m: &UBootMedia,
    tessera: Vec<u8>,
    board_dtb: Option<(String, Vec<u8>)>,
) -> Result<Vec<fat::File>> {
    check_layout(board, m, tessera.len() as u64)?;
    let dtb = board_dtb.filter(|_| m.dtb == DtbSource::Board);
    let text = script(board, m, dtb.as_ref().map(|(n, _)| n.as_str()))?;
    let mut files = vec![
        fat::File::new("boot.scr", uimage::script("Tessera boot script", &text)?),
        fat::File::new("boot.cmd", text.into_bytes()),
        fat::File::new(IMAGE_NAME, tessera),
    ];
    if let Some((name, bytes)) = dtb {
        files.push(fat::File::new(&name, bytes));
    }
    Ok(files)
}
