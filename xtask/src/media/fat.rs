//! The FAT32 boot partition: formatted and filled in memory with the `fatfs` crate, and
//! read back the same way (what the image tests check).

use anyhow::{bail, Context, Result};
use std::io::{Cursor, Read, Write};

/// Smallest partition made: FAT32 needs at least 65,525 clusters, which at the 512-byte
/// clusters `fatfs` picks below 260 MiB is 32 MiB; twice that leaves room to copy a
/// bigger image onto the card later without repartitioning.
pub const MIN_SIZE: u64 = 64 << 20;
/// Partition sizes are whole MiB.
const MIB: u64 = 1 << 20;

/// One file of the partition: a name in the root directory (8.3 or long) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl File {
    pub fn new(name: &str, bytes: Vec<u8>) -> Self {
        Self {
            name: name.to_owned(),
            bytes,
        }
    }
}

/// The partition size for `files`: their clusters, a quarter on top for the FATs,
/// directories and later edits, rounded up to a MiB, at least [`MIN_SIZE`].
pub fn size_for(files: &[File]) -> u64 {
    let data: u64 = files
        .iter()
        .map(|f| (f.bytes.len() as u64).div_ceil(4096) * 4096)
        .sum();
    (data + data / 4 + 4 * MIB)
        .div_ceil(MIB)
        .max(MIN_SIZE.div_ceil(MIB))
        * MIB
}

/// A FAT32 volume of `size` bytes labelled `label` holding `files` in its root
/// directory. Timestamps are the FAT epoch and the volume ID is fixed, so the same files
/// give the same bytes.
pub fn build(size: u64, label: &str, files: &[File]) -> Result<Vec<u8>> {
    if label.len() > 11
        || !label
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ')
    {
        bail!("FAT volume label {label:?}: at most 11 characters A-Z, 0-9 or space");
    }
    let mut name = [b' '; 11];
    name[..label.len()].copy_from_slice(label.as_bytes());
    let len = usize::try_from(size).context("partition too large")?;
    let mut disk = Cursor::new(vec![0u8; len]);
    let options = fatfs::FormatVolumeOptions::new()
        .fat_type(fatfs::FatType::Fat32)
        .volume_label(name)
        .volume_id(0x5453_5241);
    fatfs::format_volume(&mut disk, options).context("formatting the FAT partition")?;
    {
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new())?;
        for f in files {
            let root = fs.root_dir();
            let mut out = root
                .create_file(&f.name)
                .with_context(|| format!("creating {} on the FAT partition", f.name))?;
            out.truncate()?;
            out.write_all(&f.bytes).with_context(|| {
                format!(
                    "writing {} ({} bytes) to a {size}-byte FAT partition",
                    f.name,
                    f.bytes.len()
                )
            })?;
        }
        fs.unmount().context("closing the FAT partition")?;
    }
    Ok(disk.into_inner())
}

/// What a FAT volume holds in its root directory: its FAT type and each file, in
/// directory order (a reader independent of how [`build`] wrote it, but for the crate).
pub fn read(volume: &[u8]) -> Result<(fatfs::FatType, Vec<File>)> {
    let mut disk = Cursor::new(volume.to_vec());
    let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new()).context("not a FAT volume")?;
    let mut files = Vec::new();
    for entry in fs.root_dir().iter() {
        let entry = entry?;
        if !entry.is_file() {
            continue;
        }
        let mut bytes = Vec::new();
        entry.to_file().read_to_end(&mut bytes)?;
        files.push(File {
            name: entry.file_name(),
            bytes,
        });
    }
    Ok((fs.fat_type(), files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_through_a_fat32_volume() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        let files = vec![
            File::new("config.txt", b"arm_64bit=1\n".to_vec()),
            File::new("bcm2711-rpi-4-b.dtb", vec![0xd0, 0x0d, 0xfe, 0xed]),
            File::new("tessera.bin", big),
            File::new("empty", Vec::new()),
        ];
        let volume = build(size_for(&files), "TESSERA", &files).unwrap();
        assert_eq!(volume.len() as u64, MIN_SIZE);
        // The boot sector's signature and FAT32's file-system type string.
        assert_eq!(&volume[510..512], &[0x55, 0xaa]);
        assert_eq!(&volume[82..90], b"FAT32   ");
        let (fat, read_back) = read(&volume).unwrap();
        assert_eq!(fat, fatfs::FatType::Fat32);
        assert_eq!(read_back, files);
    }

    #[test]
    fn the_same_files_give_the_same_bytes() {
        let files = [File::new("boot.scr", b"x".to_vec())];
        assert_eq!(
            build(MIN_SIZE, "BOOT", &files).unwrap(),
            build(MIN_SIZE, "BOOT", &files).unwrap()
        );
    }

    #[test]
    fn size_grows_with_the_files_and_a_full_volume_is_an_error() {
        let files = [File::new("big", vec![1; 100 << 20])];
        let size = size_for(&files);
        assert!(size > 125 << 20 && size.is_multiple_of(MIB), "{size}");
        assert!(build(size, "BOOT", &files).is_ok());
        let err = build(MIN_SIZE, "BOOT", &files).unwrap_err();
        assert!(format!("{err:#}").contains("writing big"), "{err:#}");
    }

    #[test]
    fn labels_are_checked() {
        assert!(build(MIN_SIZE, "lower", &[]).is_err());
        assert!(build(MIN_SIZE, "TWELVE CHARS", &[]).is_err());
    }
}
