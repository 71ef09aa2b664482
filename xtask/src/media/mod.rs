//! `cargo xtask image`: the boot medium a user flashes for a board. One MBR disk image
//! with one FAT32 partition holding the Tessera image (its VMs packed in) and what the
//! board's boot firmware needs to start it:
//!
//! - U-Boot boards: `boot.scr`, which U-Boot's distro boot / bootstd runs from the first
//!   FAT partition it finds; it loads the image to the board's load address and `booti`s
//!   it with a device tree (see [`uboot`]).
//! - The Raspberry Pi 4: the GPU firmware from Debian's `raspi-firmware`, `config.txt`
//!   and the board DTB, plus TF-A's `bl31.bin` for the PSCI path (see [`raspi`]).
//!
//! What goes where is board data: the `[media]` section of `boards/<board>/board.toml`.
//! Packages come from Debian's archive through [`crate::debian`], never from the host's
//! apt sources.

pub mod fat;
pub mod mbr;
pub mod qemu_boot;
pub mod raspi;
pub mod scenarios;
pub mod uboot;
pub mod uimage;

use crate::board::{self, BoardToml};
use crate::{images, paths};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::fs;
use std::path::{Path, PathBuf};

/// The Debian release boot firmware comes from (`u-boot-qemu`, `raspi-firmware`,
/// `arm-trusted-firmware`).
pub const SUITE: &str = "trixie";
/// The image's name on the partition (what `boot.scr` and `config.txt` load).
pub const IMAGE_NAME: &str = "tessera.bin";
/// The FAT volume label.
const LABEL: &str = "TESSERA";
/// Room the device tree gets at a board's `[media] dtb_address` (`fdt move`'s length
/// on U-Boot boards): QEMU's and the boards' DTBs are under 128 KiB, U-Boot's `booti`
/// and the Raspberry Pi firmware add to it, and the hypervisor reads all of it.
pub const DTB_ROOM: u64 = 1 << 20;
/// The MBR disk signature ("ARST"): fixed, so one set of files gives one image.
const DISK_ID: u32 = 0x5453_5241;

/// A board's boot medium: the `[media]` section of its board.toml.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Media {
    /// U-Boot runs `boot.scr` from the partition.
    UBoot(uboot::UBootMedia),
    /// The Raspberry Pi firmware reads `config.txt` from the partition.
    Raspi(raspi::RaspiMedia),
}

/// The board's `[media]`, or an error saying where to add it.
pub fn media_of(dir: &Path, board: &BoardToml) -> Result<Media> {
    match &board.media {
        Some(m) => Ok(m.clone()),
        None => bail!(
            "board {} has no boot medium: add a [media] section to {} (see docs/flashing.md)",
            board.name,
            paths::display(&dir.join("board.toml"))
        ),
    }
}

pub struct Options {
    pub board: String,
    /// The VM config packed into the image (default `boards/<board>/linux.toml`).
    pub config: Option<PathBuf>,
    /// Where to write the disk image (default `target/media/<board>-<config>.img`).
    pub output: Option<PathBuf>,
}

/// Builds the hypervisor and the config's image for the board, then its boot medium;
/// returns where it was written.
pub fn image(opts: &Options) -> Result<PathBuf> {
    let dir = board::named_board_dir(&opts.board);
    let board = board::load_board(&dir)?;
    let media = media_of(&dir, &board)?;
    let config = opts.config.clone().unwrap_or_else(|| dir.join("linux.toml"));
    let built = images::build(false)?;
    let img = board::build_config_image_on(&config, Some(&opts.board), &built, None)?;
    let tessera = fs::read(&img.path)?;
    let files = files_for(&built.target_dir, &board, &media, &img.machine, tessera)?;
    let disk = disk_image(&files, media.partition_start())?;
    let stem = config.file_stem().and_then(|s| s.to_str()).unwrap_or("config");
    let out = match &opts.output {
        Some(o) => o.clone(),
        None => media_dir(&built.target_dir).join(format!("{}-{stem}.img", board.name)),
    };
    write_atomically(&out, &disk)?;
    println!(
        "{}: {} MiB, one FAT32 partition:",
        paths::display(&out),
        disk.len() >> 20
    );
    for f in &files {
        println!("  {:<24} {:>10} bytes", f.name, f.bytes.len());
    }
    println!(
        "write it to the card or disk (all of it, not a partition): \
         sudo dd if={} of=/dev/sdX bs=4M conv=fsync; see docs/flashing.md",
        paths::display(&out)
    );
    Ok(out)
}

/// The partition's files for `board`: the packed image `tessera` and what its boot
/// firmware needs; `machine` is the one the image was built for (its DTB is the board's).
pub fn files_for(
    target_dir: &Path,
    board: &BoardToml,
    media: &Media,
    machine: &board::MachineSettings,
    tessera: Vec<u8>,
) -> Result<Vec<fat::File>> {
    let board_dtb = machine
        .dtb
        .as_ref()
        .map(|p| Ok::<_, anyhow::Error>((dtb_file_name(board)?, fs::read(p)?)))
        .transpose()?;
    match media {
        Media::UBoot(u) => uboot::files(board, u, tessera, board_dtb),
        Media::Raspi(r) => {
            let Some(dtb) = board_dtb else {
                bail!(
                    "{}: the Raspberry Pi firmware needs the board's DTB file (board.toml `dtb`)",
                    board.name
                );
            };
            let firmware = crate::debian::unpacked(target_dir, SUITE, raspi::FIRMWARE_PACKAGE)?;
            let tfa = match &r.armstub {
                Some(_) => Some(crate::debian::unpacked(target_dir, SUITE, raspi::TFA_PACKAGE)?),
                None => None,
            };
            raspi::files(board, r, tessera, dtb, &firmware, tfa.as_deref())
        }
    }
}

/// Checks where the boot firmware is told to put the device tree: wholly inside one of
/// the board's `reserved` regions (so no config can give a VM that memory), and clear of
/// the image at the load address.
pub fn check_dtb_place(board: &BoardToml, dtb: u64, image_len: u64) -> Result<()> {
    let name = &board.name;
    let dtb_end = dtb + DTB_ROOM;
    let in_reserved = board
        .reserved
        .iter()
        .any(|r| r.base <= dtb && dtb_end <= r.base.saturating_add(r.size.0));
    if !in_reserved {
        bail!(
            "{name}: [media] dtb_address {dtb:#x}..{dtb_end:#x} is not inside one of the board's `reserved` \
             regions: a VM could be given the memory under the device tree"
        );
    }
    let image_end = board.load_address + image_len;
    if board.load_address < dtb_end && dtb < image_end {
        bail!(
            "{name}: the image at {:#x}..{image_end:#x} overlaps the device tree at {dtb:#x}..{dtb_end:#x} \
             ([media] dtb_address)",
            board.load_address
        );
    }
    Ok(())
}

/// The board DTB's name on the partition: its file name (`bcm2711-rpi-4-b.dtb`).
fn dtb_file_name(board: &BoardToml) -> Result<String> {
    let rel = board.dtb.strip_prefix("debian:").unwrap_or(&board.dtb);
    Path::new(rel)
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .with_context(|| format!("{}: dtb {:?} has no file name", board.name, board.dtb))
}

impl Media {
    /// Where the boot partition starts on the disk, in bytes.
    pub fn partition_start(&self) -> u64 {
        match self {
            Media::UBoot(u) => u.partition_start.map(|s| s.0),
            Media::Raspi(_) => None,
        }
        .unwrap_or(mbr::FIRST_LBA * mbr::SECTOR)
    }
}

/// An MBR disk with one bootable FAT32 partition holding `files`, starting
/// `partition_start` bytes in.
pub fn disk_image(files: &[fat::File], partition_start: u64) -> Result<Vec<u8>> {
    if !partition_start.is_multiple_of(1 << 20) {
        bail!("[media] partition_start {partition_start:#x} is not a whole MiB");
    }
    let volume = fat::build(fat::size_for(files), LABEL, files)?;
    mbr::disk(&volume, mbr::FAT32_LBA, DISK_ID, partition_start / mbr::SECTOR)
}

/// The files of the first partition of a disk made by [`disk_image`].
pub fn read_disk(disk: &[u8]) -> Result<Vec<fat::File>> {
    let parts = mbr::parse(disk)?;
    let Some(first) = parts.first() else {
        bail!("the partition table is empty");
    };
    let (fat, files) = fat::read(&disk[first.byte_range()])?;
    if fat != fatfs::FatType::Fat32 {
        bail!("the boot partition is {fat:?}, not FAT32");
    }
    Ok(files)
}

/// `<target>/media/`: boot media built by `image` and by the scenarios.
pub fn media_dir(target_dir: &Path) -> PathBuf {
    target_dir.join("media")
}

/// Writes through a temporary file, so a reader (QEMU in a parallel scenario, a user's
/// `dd`) never sees half an image. Blocks of zeros are left as holes: the file takes
/// only what it holds on the host, and `bmaptool create` maps just those blocks.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    write_sparse(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Writes `bytes` to a new file `path`, seeking over 4 KiB blocks of zeros.
fn write_sparse(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    const BLOCK: usize = 4096;
    let mut f = fs::File::create(path)?;
    for (i, block) in bytes.chunks(BLOCK).enumerate() {
        if block.iter().any(|&b| b != 0) {
            f.seek(SeekFrom::Start((i * BLOCK) as u64))?;
            f.write_all(block)?;
        }
    }
    f.set_len(bytes.len() as u64)?;
    f.sync_all()
}

#[cfg(test)]
mod tests;
