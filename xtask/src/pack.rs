//! Appends a payload package (guest images, DTBs, configs) to the raw hypervisor image.
//!
//! The layout is described in `docs/image-format.md`; the hypervisor finds the package at
//! its own symbol `__payload_start`, so nothing here needs to know a load address.

use crate::image::{check_image_header, IMAGE_SIZE_OFFSET};
use anyhow::{bail, ensure, Result};

/// Identifies a package: "TSRPKG01" (format version 01).
pub const MAGIC: &[u8; 8] = b"TSRPKG01";
/// Header: magic, total_size u64, count u32, reserved u32.
pub const HEADER_SIZE: usize = 24;
/// Entry: kind u32, reserved u32, name [u8; 32], offset u64, size u64.
pub const ENTRY_SIZE: usize = 56;
/// Entry names are NUL-padded to this many bytes (and always NUL-terminated).
pub const NAME_SIZE: usize = 32;
/// Every blob starts on a page boundary, so the hypervisor can map or copy it page-wise.
pub const BLOB_ALIGN: usize = 4096;

/// One blob to pack. `kind` is defined by the hypervisor (guest image, DTB, ...).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub kind: u32,
    pub name: &'a str,
    pub bytes: &'a [u8],
}

fn align_up(n: usize, align: usize) -> usize {
    n.div_ceil(align) * align
}

/// Builds the packaged image: `hyp_raw`, zero-padded to `payload_start`, then the package,
/// with the Image header's `image_size` raised to cover the whole file (rounded up to
/// 4 KiB), so a boot loader reserves room for the payload as well.
pub fn pack(hyp_raw: &[u8], payload_start: u64, entries: &[Entry]) -> Result<Vec<u8>> {
    check_image_header(hyp_raw)?;
    let start = usize::try_from(payload_start)?;
    ensure!(
        hyp_raw.len() <= start,
        "hypervisor image ({} bytes) runs past __payload_start ({start:#x})",
        hyp_raw.len()
    );
    let mut package = vec![0u8; HEADER_SIZE + entries.len() * ENTRY_SIZE];
    package[..8].copy_from_slice(MAGIC);
    package[16..20].copy_from_slice(&u32::try_from(entries.len())?.to_le_bytes());
    for (i, e) in entries.iter().enumerate() {
        if e.name.len() >= NAME_SIZE || e.name.contains('\0') {
            bail!(
                "payload name {:?} must be under {NAME_SIZE} bytes, without NUL",
                e.name
            );
        }
        let offset = align_up(package.len(), BLOB_ALIGN);
        package.resize(offset, 0);
        package.extend_from_slice(e.bytes);
        let at = HEADER_SIZE + i * ENTRY_SIZE;
        let entry = &mut package[at..at + ENTRY_SIZE];
        entry[0..4].copy_from_slice(&e.kind.to_le_bytes());
        entry[8..8 + e.name.len()].copy_from_slice(e.name.as_bytes());
        entry[40..48].copy_from_slice(&(offset as u64).to_le_bytes());
        entry[48..56].copy_from_slice(&(e.bytes.len() as u64).to_le_bytes());
    }
    let total = package.len() as u64;
    package[8..16].copy_from_slice(&total.to_le_bytes());

    let mut out = hyp_raw.to_vec();
    out.resize(start, 0);
    out.extend_from_slice(&package);
    let image_size = align_up(out.len(), 4096) as u64;
    out[IMAGE_SIZE_OFFSET..IMAGE_SIZE_OFFSET + 8].copy_from_slice(&image_size.to_le_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{IMAGE_MAGIC, IMAGE_MAGIC_OFFSET};

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// An independent reader of the format, as the hypervisor would read it.
    fn parse(package: &[u8]) -> Vec<(u32, String, Vec<u8>)> {
        assert_eq!(&package[..8], MAGIC);
        assert_eq!(u64_at(package, 8), package.len() as u64);
        (0..u32_at(package, 16) as usize)
            .map(|i| {
                let e = &package[HEADER_SIZE + i * ENTRY_SIZE..][..ENTRY_SIZE];
                let name = e[8..40].split(|&c| c == 0).next().unwrap();
                let (offset, size) = (u64_at(e, 40) as usize, u64_at(e, 48) as usize);
                assert_eq!(offset % BLOB_ALIGN, 0, "blob not 4 KiB aligned");
                (
                    u32_at(e, 0),
                    String::from_utf8(name.to_vec()).unwrap(),
                    package[offset..offset + size].to_vec(),
                )
            })
            .collect()
    }

    fn hyp() -> Vec<u8> {
        let mut h = vec![0xaa; 100];
        h[IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4].copy_from_slice(IMAGE_MAGIC);
        h
    }

    #[test]
    fn round_trip() {
        let big = vec![7u8; 5000];
        let entries = [
            Entry {
                kind: 1,
                name: "linux",
                bytes: &big,
            },
            Entry {
                kind: 2,
                name: "linux.dtb",
                bytes: b"dtb",
            },
            Entry {
                kind: 3,
                name: "empty",
                bytes: b"",
            },
        ];
        let out = pack(&hyp(), 0x1_0000, &entries).unwrap();
        let mut expected_hyp = hyp();
        expected_hyp[IMAGE_SIZE_OFFSET..IMAGE_SIZE_OFFSET + 8].copy_from_slice(&out[16..24]);
        assert_eq!(out[..100], expected_hyp, "hypervisor bytes kept but image_size");
        assert!(out[100..0x1_0000].iter().all(|&b| b == 0), "padding is zeroes");
        let image_size = u64_at(&out, IMAGE_SIZE_OFFSET);
        assert_eq!(image_size % 4096, 0);
        assert!(image_size >= out.len() as u64 && image_size - (out.len() as u64) < 4096);
        let parsed = parse(&out[0x1_0000..]);
        let expected: Vec<_> = entries
            .iter()
            .map(|e| (e.kind, e.name.to_owned(), e.bytes.to_vec()))
            .collect();
        assert_eq!(parsed, expected);
    }

    #[test]
    fn no_entries_is_just_a_header() {
        let out = pack(&hyp(), 0x1000, &[]).unwrap();
        assert_eq!(out.len(), 0x1000 + HEADER_SIZE);
        assert!(parse(&out[0x1000..]).is_empty());
    }

    #[test]
    fn rejects_bad_input() {
        let e = |name| {
            [Entry {
                kind: 0,
                name,
                bytes: b"",
            }]
        };
        let long = "n".repeat(NAME_SIZE);
        assert!(pack(&hyp(), 0x1000, &e(&long)).is_err());
        assert!(pack(&hyp(), 0x1000, &e("a\0b")).is_err());
        assert!(pack(&hyp(), 50, &[]).is_err(), "payload_start inside the image");
        assert!(pack(&[0; 100], 0x1000, &[]).is_err(), "no Image header");
    }
}
