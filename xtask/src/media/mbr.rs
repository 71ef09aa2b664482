//! A DOS (MBR) partition table with one bootable partition: what the Raspberry Pi's boot
//! ROM and U-Boot's `part`/distro boot look for on an SD card or disk.

use anyhow::{bail, ensure, Result};

pub const SECTOR: u64 = 512;
/// Where the partition starts unless the board needs room before it: 1 MiB in,
/// aligned to SD cards' erase blocks, as every partitioning tool does.
pub const FIRST_LBA: u64 = 2048;
/// Partition type "W95 FAT32 (LBA)".
pub const FAT32_LBA: u8 = 0x0c;
const BOOTABLE: u8 = 0x80;
/// CHS fields of a partition that is addressed by LBA only.
const CHS_UNUSED: [u8; 3] = [0xfe, 0xff, 0xff];

/// One entry of the partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub bootable: bool,
    pub kind: u8,
    pub first_lba: u64,
    pub sectors: u64,
}

impl Partition {
    pub fn byte_range(&self) -> std::ops::Range<usize> {
        let start = (self.first_lba * SECTOR) as usize;
        start..start + (self.sectors * SECTOR) as usize
    }
}

/// A whole disk: the MBR (signature `disk_id`), then `volume` as its only partition,
/// bootable, of type `kind`, starting at sector `first_lba` (at least [`FIRST_LBA`]:
/// the gap stays zero, for a boot loader the boot ROM reads at a fixed offset).
pub fn disk(volume: &[u8], kind: u8, disk_id: u32, first_lba: u64) -> Result<Vec<u8>> {
    ensure!(
        first_lba >= FIRST_LBA && first_lba.is_multiple_of(FIRST_LBA),
        "the partition starts at sector {first_lba}: it must be a whole MiB, 1 MiB or more, in"
    );
    ensure!(
        !volume.is_empty() && (volume.len() as u64).is_multiple_of(SECTOR),
        "a partition is a whole number of sectors, not {} bytes",
        volume.len()
    );
    let sectors = u32::try_from(volume.len() as u64 / SECTOR)?;
    let mut out = vec![0u8; usize::try_from(first_lba * SECTOR)?];
    out[440..444].copy_from_slice(&disk_id.to_le_bytes());
    let e = &mut out[446..462];
    e[0] = BOOTABLE;
    e[1..4].copy_from_slice(&CHS_UNUSED);
    e[4] = kind;
    e[5..8].copy_from_slice(&CHS_UNUSED);
    e[8..12].copy_from_slice(&u32::try_from(first_lba)?.to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
    out[510] = 0x55;
    out[511] = 0xaa;
    out.extend_from_slice(volume);
    Ok(out)
}

/// The used entries of the MBR at the start of `disk`, each checked to lie on it.
pub fn parse(disk: &[u8]) -> Result<Vec<Partition>> {
    let Some(mbr) = disk.get(..512) else {
        bail!("{} bytes: too short for an MBR", disk.len());
    };
    ensure!(
        mbr[510..512] == [0x55, 0xaa],
        "no MBR boot signature (55 aa) at offset 510"
    );
    let mut parts = Vec::new();
    for (i, e) in mbr[446..510].chunks_exact(16).enumerate() {
        let le = |b: &[u8]| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let p = Partition {
            bootable: e[0] == BOOTABLE,
            kind: e[4],
            first_lba: le(&e[8..12]),
            sectors: le(&e[12..16]),
        };
        if p.kind == 0 {
            continue;
        }
        ensure!(
            e[0] & 0x7f == 0,
            "partition {}: status byte {:#x} is neither 0 nor 0x80",
            i + 1,
            e[0]
        );
        ensure!(
            (p.first_lba + p.sectors) * SECTOR <= disk.len() as u64,
            "partition {} ends past the disk's {} bytes",
            i + 1,
            disk.len()
        );
        parts.push(p);
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bootable_partition_one_mib_in() {
        let volume = vec![0x5a; 4096];
        let d = disk(&volume, FAT32_LBA, 0x1234_5678, FIRST_LBA).unwrap();
        assert_eq!(d.len(), (1 << 20) + 4096);
        assert_eq!(&d[440..444], &[0x78, 0x56, 0x34, 0x12], "disk signature");
        // The entry exactly as fdisk would show it: 80 fe ff ff 0c fe ff ff, LBA 2048, 8 sectors.
        assert_eq!(
            d[446..462],
            [0x80, 0xfe, 0xff, 0xff, 0x0c, 0xfe, 0xff, 0xff, 0x00, 0x08, 0, 0, 8, 0, 0, 0]
        );
        assert!(
            d[462..510].iter().all(|&b| b == 0),
            "the other three entries are empty"
        );
        let parts = parse(&d).unwrap();
        assert_eq!(
            parts,
            [Partition {
                bootable: true,
                kind: FAT32_LBA,
                first_lba: 2048,
                sectors: 8
            }]
        );
        assert_eq!(&d[parts[0].byte_range()], &volume[..]);
    }

    #[test]
    fn room_for_a_boot_loader_before_the_partition() {
        let d = disk(&[7; 512], FAT32_LBA, 0, 8 * FIRST_LBA).unwrap();
        assert_eq!(d.len(), (8 << 20) + 512);
        assert!(d[512..8 << 20].iter().all(|&b| b == 0));
        assert_eq!(parse(&d).unwrap()[0].first_lba, 8 * 2048);
    }

    #[test]
    fn bad_tables_are_refused() {
        assert!(
            disk(&[0; 100], FAT32_LBA, 0, FIRST_LBA).is_err(),
            "not whole sectors"
        );
        assert!(disk(&[], FAT32_LBA, 0, FIRST_LBA).is_err());
        assert!(disk(&[0; 512], FAT32_LBA, 0, 64).is_err(), "inside the first MiB");
        assert!(disk(&[0; 512], FAT32_LBA, 0, 3000).is_err(), "not a whole MiB");
        let mut d = disk(&[0; 512], FAT32_LBA, 0, FIRST_LBA).unwrap();
        assert!(parse(&d[..100]).is_err());
        d.truncate(d.len() - 1);
        assert!(parse(&d).is_err(), "partition past the end");
        let mut d = disk(&[0; 512], FAT32_LBA, 0, FIRST_LBA).unwrap();
        d[511] = 0;
        assert!(parse(&d).is_err(), "no signature");
    }
}
