//! U-Boot's legacy image format (`include/image.h`, `struct legacy_img_hdr`) for one
//! thing: a boot script (`boot.scr`), as `mkimage -A arm64 -O linux -T script -C none`
//! makes it, so the host needs no `u-boot-tools`.
//!
//! Layout: a 64-byte big-endian header (magic, header CRC-32, time, data size, load and
//! entry address, data CRC-32, OS, arch, type, compression, 32-byte name), then the data:
//! for a script, a zero-terminated list of big-endian sizes (one entry) and the script text.

use anyhow::{bail, ensure, Result};

pub const MAGIC: u32 = 0x2705_1956;
pub const HEADER_SIZE: usize = 64;
const NAME_SIZE: usize = 32;
pub const OS_LINUX: u8 = 5;
pub const ARCH_ARM64: u8 = 22;
pub const TYPE_SCRIPT: u8 = 6;
pub const COMP_NONE: u8 = 0;

/// `script` as a boot.scr named `name`. The timestamp is 0 (mkimage's with
/// SOURCE_DATE_EPOCH=0) so the same script gives the same bytes.
pub fn script(name: &str, script: &str) -> Result<Vec<u8>> {
    ensure!(
        name.len() < NAME_SIZE && name.is_ascii(),
        "image name {name:?}: at most {} ASCII characters",
        NAME_SIZE - 1
    );
    let text = script.as_bytes();
    let mut data = Vec::with_capacity(8 + text.len());
    data.extend_from_slice(&u32::try_from(text.len())?.to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(text);

    let mut h = [0u8; HEADER_SIZE];
    h[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    // 4..8 header CRC, 8..12 time, load 16..20 and entry point 20..24 stay 0.
    h[12..16].copy_from_slice(&u32::try_from(data.len())?.to_be_bytes());
    h[24..28].copy_from_slice(&crc32fast::hash(&data).to_be_bytes());
    h[28] = OS_LINUX;
    h[29] = ARCH_ARM64;
    h[30] = TYPE_SCRIPT;
    h[31] = COMP_NONE;
    h[32..32 + name.len()].copy_from_slice(name.as_bytes());
    let hcrc = crc32fast::hash(&h);
    h[4..8].copy_from_slice(&hcrc.to_be_bytes());

    let mut out = h.to_vec();
    out.extend_from_slice(&data);
    Ok(out)
}

/// The script text of a boot.scr, after checking everything U-Boot's `source` checks:
/// magic, both CRCs, the type, and the size list.
pub fn parse_script(image: &[u8]) -> Result<String> {
    let Some(h) = image.get(..HEADER_SIZE) else {
        bail!("{} bytes: shorter than a legacy image header", image.len());
    };
    let be = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    ensure!(be(0) == MAGIC, "bad magic {:#x}", be(0));
    let mut zeroed = [0u8; HEADER_SIZE];
    zeroed.copy_from_slice(h);
    zeroed[4..8].fill(0);
    ensure!(crc32fast::hash(&zeroed) == be(4), "header CRC mismatch");
    ensure!(h[30] == TYPE_SCRIPT, "image type {} is not a script", h[30]);
    ensure!(h[31] == COMP_NONE, "compressed script (compression {})", h[31]);
    let data = &image[HEADER_SIZE..];
    ensure!(
        data.len() == be(12) as usize,
        "data size {} but {} bytes follow",
        be(12),
        data.len()
    );
    ensure!(crc32fast::hash(data) == be(24), "data CRC mismatch");
    ensure!(data.len() >= 8, "no size list");
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    ensure!(data[4..8] == [0; 4], "more than one part in a script image");
    let text = data
        .get(8..8 + len)
        .ok_or_else(|| anyhow::anyhow!("script runs past the data"))?;
    Ok(String::from_utf8(text.to_vec())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "echo hi\nbooti 0x40200000 - 0x48000000\n";

    #[test]
    fn crc32_is_the_ieee_one_u_boot_uses() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    }

    /// The bytes `SOURCE_DATE_EPOCH=0 mkimage -A arm64 -O linux -T script -C none
    /// -n "Tessera boot script" -d t.cmd t.scr` (u-boot-tools 2023.01) wrote for SCRIPT.
    #[test]
    fn same_bytes_as_mkimage() {
        let img = script("Tessera boot script", SCRIPT).unwrap();
        let mut expected = vec![
            0x27, 0x05, 0x19, 0x56, 0xf1, 0x0b, 0xd4, 0x3d, 0, 0, 0, 0, 0, 0, 0,
            0x2e, // magic hcrc time size
            0, 0, 0, 0, 0, 0, 0, 0, 0xa8, 0xa1, 0xfc, 0x70, 0x05, 0x16, 0x06,
            0x00, // load ep dcrc os arch type comp
        ];
        let mut name = b"Tessera boot script".to_vec();
        name.resize(32, 0);
        expected.extend_from_slice(&name);
        expected.extend_from_slice(&[0, 0, 0, 0x26, 0, 0, 0, 0]);
        expected.extend_from_slice(SCRIPT.as_bytes());
        assert_eq!(img, expected);
        assert_eq!(parse_script(&img).unwrap(), SCRIPT);
    }

    #[test]
    fn corrupted_scripts_are_refused() {
        let img = script("s", SCRIPT).unwrap();
        for at in [0, 5, 30, 70, img.len() - 1] {
            let mut bad = img.clone();
            bad[at] ^= 1;
            assert!(parse_script(&bad).is_err(), "flipped byte {at}");
        }
        assert!(parse_script(&img[..img.len() - 1]).is_err());
        assert!(parse_script(&img[..10]).is_err());
        assert!(script(&"n".repeat(32), SCRIPT).is_err());
    }
}
