//! The boot of the `uboot_*` scenarios: Debian's U-Boot for QEMU `virt`
//! (`u-boot-qemu`, `qemu_arm64/u-boot.bin`) as the machine's firmware, and the image on
//! a virtio disk written as `cargo xtask image --board qemu-virt` writes it. Nothing
//! is passed with `-kernel`: U-Boot's own boot flow has to find `boot.scr` and run it.

use super::uboot::{DtbSource, UBootMedia};
use super::{disk_image, media_dir, media_of, read_disk, uboot, write_atomically, Media, SUITE};
use crate::board::{board_dtb, board_machine, load_board, named_board_dir, BoardToml};
use crate::images::Built;
use crate::scenarios::{Firmware, VIRT};
use anyhow::{bail, ensure, Context, Result};
use std::fs;
use std::path::Path;

pub const UBOOT_PACKAGE: &str = "u-boot-qemu";
/// U-Boot for QEMU's arm64 `virt` in that package.
pub const UBOOT_BIN: &str = "usr/lib/u-boot/qemu_arm64/u-boot.bin";

/// U-Boot (trixie's 2025.01: bootstd, `bootflow scan`) and a boot disk holding
/// `image` for QEMU `virt`, as qemu-virt's board.toml says: boot.scr hands over U-Boot's
/// own device tree.
pub fn virt_u_boot(built: &Built, image: &Path) -> Result<Firmware> {
    let (board, m) = virt_media()?;
    boot_disk(built, SUITE, image, &board, &m, None, "u-boot")
}

/// The same with bookworm's U-Boot (2023.01), which still boots with the older
/// `distro_bootcmd` scripts: the flow most boards' U-Boot in the field has.
pub fn virt_u_boot_bookworm(built: &Built, image: &Path) -> Result<Firmware> {
    let (board, m) = virt_media()?;
    boot_disk(built, "bookworm", image, &board, &m, None, "u-boot-2023")
}

/// The same with the device tree on the disk, loaded by boot.scr (`dtb = "board"`, as
/// the zcu102 and i.MX 8M Plus cards do): QEMU's own, dumped.
pub fn virt_u_boot_dtb_from_disk(built: &Built, image: &Path) -> Result<Firmware> {
    let (board, m) = virt_media()?;
    let m = UBootMedia {
        dtb: DtbSource::Board,
        ..m
    };
    let machine = board_machine(VIRT, &built.target_dir)?;
    let dtb = board_dtb(&machine, VIRT, &built.target_dir)?;
    let dtb = Some(("qemu-virt.dtb".into(), dtb));
    boot_disk(built, SUITE, image, &board, &m, dtb, "dtb-on-disk")
}

fn virt_media() -> Result<(BoardToml, UBootMedia)> {
    let dir = named_board_dir(VIRT);
    let board = load_board(&dir)?;
    let Media::UBoot(m) = media_of(&dir, &board)? else {
        bail!("{VIRT}: [media] is not kind = \"u-boot\"");
    };
    Ok((board, m))
}

fn boot_disk(
    built: &Built,
    suite: &str,
    image: &Path,
    board: &BoardToml,
    m: &UBootMedia,
    dtb: Option<(String, Vec<u8>)>,
    tag: &str,
) -> Result<Firmware> {
    let bios = crate::debian::unpacked(&built.target_dir, suite, UBOOT_PACKAGE)?.join(UBOOT_BIN);
    ensure!(bios.is_file(), "{UBOOT_PACKAGE} has no {UBOOT_BIN}");
    let tessera = fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    let files = uboot::files(board, m, tessera.clone(), dtb)?;
    let disk = disk_image(&files, Media::UBoot(m.clone()).partition_start())?;
    // What U-Boot will find: the image byte for byte, and a script it accepts.
    let back = read_disk(&disk)?;
    let find = |n: &str| back.iter().find(|f| f.name == n).map(|f| &f.bytes);
    ensure!(
        find(super::IMAGE_NAME) == Some(&tessera),
        "the image on the disk differs"
    );
    super::uimage::parse_script(find("boot.scr").context("no boot.scr on the disk")?)?;

    let stem = image.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
    let file = media_dir(&built.target_dir).join(format!("{VIRT}-{tag}-{stem}.img"));
    write_atomically(&file, &disk)?;
    Ok(Firmware {
        bios,
        args: vec![
            "-drive".into(),
            format!("if=none,id=bootmedium,format=raw,file={}", file.display()),
            "-device".into(),
            "virtio-blk-device,drive=bootmedium".into(),
        ],
    })
}
