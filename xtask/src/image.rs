//! ELF → raw binary conversion and ELF symbol lookup, done in Rust with the `object` crate
//! so building an image needs nothing outside Cargo (no objcopy, no cargo-binutils).

use anyhow::{bail, Context, Result};
use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, Object, ObjectSymbol};

/// Offset of the arm64 Image header magic (Linux `Documentation/arch/arm64/booting.rst`).
pub const IMAGE_MAGIC_OFFSET: usize = 56;
/// The arm64 Image header magic, "ARM\x64".
pub const IMAGE_MAGIC: &[u8; 4] = b"ARM\x64";
/// Offset of the Image header's `image_size` field (u64 LE): bytes the loader must reserve.
pub const IMAGE_SIZE_OFFSET: usize = 16;

/// One file-backed piece of a loadable image, at its load address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub addr: u64,
    pub data: &'a [u8],
}

/// The flat image and the address its first byte loads at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawImage {
    pub base: u64,
    pub bytes: Vec<u8>,
}

/// Lays `segments` out as one flat image starting at the lowest address: gaps are
/// zero-filled and the image ends at the last file-backed byte, so BSS (which the entry
/// code clears) costs nothing in the file. Overlapping segments are an error: one of them
/// would silently lose bytes.
pub fn merge_segments(segments: &[Segment]) -> Result<RawImage> {
    let mut sorted: Vec<_> = segments.iter().filter(|s| !s.data.is_empty()).collect();
    sorted.sort_by_key(|s| s.addr);
    let Some(first) = sorted.first() else {
        bail!("no loadable segment with file contents");
    };
    let base = first.addr;
    let mut bytes = Vec::new();
    let mut end = base;
    for s in sorted {
        if s.addr < end {
            bail!(
                "segments overlap: one at {:#x} starts before the previous one ends at {end:#x}",
                s.addr
            );
        }
        let offset = usize::try_from(s.addr - base).context("image too large")?;
        bytes.resize(offset, 0);
        bytes.extend_from_slice(s.data);
        end = s.addr + s.data.len() as u64;
    }
    Ok(RawImage { base, bytes })
}

/// Converts an AArch64 ELF executable into a raw image from its PT_LOAD segments, placed by
/// physical address (our images are linked with vaddr == paddr).
pub fn elf_to_raw(elf_bytes: &[u8]) -> Result<RawImage> {
    let file = ElfFile64::<Endianness>::parse(elf_bytes).context("not a 64-bit ELF file")?;
    let endian = file.endian();
    let mut segments = Vec::new();
    for ph in file
        .elf_header()
        .program_headers(endian, elf_bytes)
        .context("bad program headers")?
    {
        if ph.p_type(endian) != elf::PT_LOAD || ph.p_filesz(endian) == 0 {
            continue;
        }
        let data = ph
            .data(endian, elf_bytes)
            .map_err(|_| anyhow::anyhow!("segment data lies outside the file"))?;
        segments.push(Segment {
            addr: ph.p_paddr(endian),
            data,
        });
    }
    merge_segments(&segments)
}

/// Checks that `image` starts with an arm64 Image header, which QEMU `-kernel`, U-Boot
/// `booti` and the Raspberry Pi firmware need to load it.
/// A do-nothing arm64 Image (`b .` with the header magic): something for QEMU to boot
/// when only the machine matters (dumping its DTB, smoke-testing a DTB).
pub fn spin_image() -> Vec<u8> {
    let mut image = vec![0u8; 64];
    image[..4].copy_from_slice(&0x1400_0000u32.to_le_bytes()); // b .
    image[IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4].copy_from_slice(IMAGE_MAGIC);
    image
}

pub fn check_image_header(image: &[u8]) -> Result<()> {
    let magic = image.get(IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4);
    if magic != Some(IMAGE_MAGIC.as_slice()) {
        bail!(
            "no arm64 Image header: expected magic \"ARM\\x64\" at offset {IMAGE_MAGIC_OFFSET}, \
             found {magic:02x?}"
        );
    }
    Ok(())
}

/// The value (address) of the symbol `name` in an ELF file, e.g. `__payload_start`.
pub fn symbol_value(elf_bytes: &[u8], name: &str) -> Result<u64> {
    let file = object::File::parse(elf_bytes).context("not an ELF file")?;
    file.symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| s.address())
        .with_context(|| format!("symbol `{name}` not found"))
}

/// A guest kernel as the hypervisor loads it: an arm64 Image as is, an
/// AArch64 ELF converted to its raw image. Anything else is refused.
pub fn guest_kernel(bytes: &[u8]) -> Result<Vec<u8>> {
    if bytes.len() >= 64 && &bytes[IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4] == IMAGE_MAGIC {
        return Ok(bytes.to_vec());
    }
    if bytes.starts_with(b"\x7fELF") {
        // e_machine at offset 18: EM_AARCH64 = 183.
        if bytes.len() < 20 || u16::from_le_bytes([bytes[18], bytes[19]]) != 183 {
            anyhow::bail!("an ELF file, but not for AArch64");
        }
        return Ok(elf_to_raw(bytes)?.bytes);
    }
    if bytes.starts_with(&[0x1f, 0x8b]) {
        anyhow::bail!("gzip-compressed: decompress it first (gunzip) to get the arm64 Image");
    }
    anyhow::bail!("not an arm64 Image (no \"ARM\\x64\" magic at offset 56) nor an AArch64 ELF")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(addr: u64, data: &[u8]) -> Segment<'_> {
        Segment { addr, data }
    }

    #[test]
    fn merges_in_address_order_and_zero_fills_gaps() {
        let img = merge_segments(&[seg(0x1004, b"cd"), seg(0x1000, b"ab")]).unwrap();
        assert_eq!(img.base, 0x1000);
        assert_eq!(img.bytes, b"ab\0\0cd");
    }

    #[test]
    fn empty_segments_are_ignored_and_nothing_is_an_error() {
        let img = merge_segments(&[seg(0, b""), seg(0x10, b"x")]).unwrap();
        assert_eq!((img.base, img.bytes.as_slice()), (0x10, b"x".as_slice()));
        assert!(merge_segments(&[seg(0, b"")]).is_err());
    }

    #[test]
    fn overlapping_segments_are_rejected() {
        assert!(merge_segments(&[seg(0, b"abcd"), seg(2, b"xy")]).is_err());
        assert!(merge_segments(&[seg(0, b"ab"), seg(2, b"xy")]).is_ok());
    }

    #[test]
    fn image_header_magic() {
        let mut img = vec![0u8; 64];
        assert!(check_image_header(&img).is_err());
        assert!(check_image_header(&img[..10]).is_err());
        img[56..60].copy_from_slice(IMAGE_MAGIC);
        assert!(check_image_header(&img).is_ok());
    }

    /// A minimal ELF64 executable: two PT_LOAD segments with a gap, one BSS-only PT_LOAD,
    /// and a symbol table holding `__payload_start`.
    fn tiny_elf() -> Vec<u8> {
        fn put(buf: &mut Vec<u8>, at: usize, bytes: &[u8]) {
            if buf.len() < at + bytes.len() {
                buf.resize(at + bytes.len(), 0);
            }
            buf[at..at + bytes.len()].copy_from_slice(bytes);
        }
        let (phoff, phnum, shoff, shnum) = (64usize, 3usize, 0x400usize, 4usize);
        let mut b = Vec::new();
        // ELF header.
        put(&mut b, 0, b"\x7fELF\x02\x01\x01");
        put(&mut b, 16, &2u16.to_le_bytes()); // ET_EXEC
        put(&mut b, 18, &183u16.to_le_bytes()); // EM_AARCH64
        put(&mut b, 20, &1u32.to_le_bytes());
        put(&mut b, 32, &(phoff as u64).to_le_bytes());
        put(&mut b, 40, &(shoff as u64).to_le_bytes());
        put(&mut b, 52, &64u16.to_le_bytes());
        put(&mut b, 54, &56u16.to_le_bytes());
        put(&mut b, 56, &(phnum as u16).to_le_bytes());
        put(&mut b, 58, &64u16.to_le_bytes());
        put(&mut b, 60, &(shnum as u16).to_le_bytes());
        put(&mut b, 62, &3u16.to_le_bytes()); // .shstrtab index
                                              // Program headers: (file offset, paddr, filesz, memsz).
        let loads = [
            (0x200u64, 0u64, 4u64, 4u64),
            (0x300, 0x10, 2, 0x100),
            (0, 0x200, 0, 0x80),
        ];
        for (i, (off, addr, filesz, memsz)) in loads.into_iter().enumerate() {
            let p = phoff + i * 56;
            put(&mut b, p, &1u32.to_le_bytes()); // PT_LOAD
            put(&mut b, p + 8, &off.to_le_bytes());
            put(&mut b, p + 16, &addr.to_le_bytes());
            put(&mut b, p + 24, &addr.to_le_bytes());
            put(&mut b, p + 32, &filesz.to_le_bytes());
            put(&mut b, p + 40, &memsz.to_le_bytes());
        }
        put(&mut b, 0x200, b"TESS");
        put(&mut b, 0x300, b"RA");
        // .strtab at 0x320, .symtab (null + one symbol) at 0x340, .shstrtab at 0x380.
        put(&mut b, 0x320, b"\0__payload_start\0");
        put(&mut b, 0x340 + 24, &1u32.to_le_bytes()); // st_name
        put(&mut b, 0x340 + 24 + 4, &[0x10, 0]); // STB_LOCAL STT_NOTYPE, st_other
        put(&mut b, 0x340 + 24 + 6, &0xfff1u16.to_le_bytes()); // SHN_ABS
        put(&mut b, 0x340 + 24 + 8, &0x1_0000u64.to_le_bytes()); // st_value
        put(&mut b, 0x380, b"\0.symtab\0.strtab\0.shstrtab\0");
        // Section headers: (name, type, offset, size, link, entsize).
        let sections = [
            (0u32, 0u32, 0u64, 0u64, 0u32, 0u64),
            (1, 2, 0x340, 48, 2, 24), // .symtab -> .strtab
            (9, 3, 0x320, 17, 0, 0),  // .strtab
            (17, 3, 0x380, 27, 0, 0), // .shstrtab
        ];
        for (i, (name, ty, off, size, link, entsize)) in sections.into_iter().enumerate() {
            let s = shoff + i * 64;
            put(&mut b, s, &name.to_le_bytes());
            put(&mut b, s + 4, &ty.to_le_bytes());
            put(&mut b, s + 24, &off.to_le_bytes());
            put(&mut b, s + 32, &size.to_le_bytes());
            put(&mut b, s + 40, &link.to_le_bytes());
            put(&mut b, s + 44, &1u32.to_le_bytes()); // sh_info: first global symbol
            put(&mut b, s + 56, &entsize.to_le_bytes());
        }
        b
    }

    #[test]
    fn elf_to_raw_skips_bss_and_fills_gaps() {
        let img = elf_to_raw(&tiny_elf()).unwrap();
        assert_eq!(img.base, 0);
        let mut expected = b"TESS".to_vec();
        expected.resize(0x10, 0);
        expected.extend_from_slice(b"RA");
        assert_eq!(img.bytes, expected);
    }

    #[test]
    fn finds_symbols_by_name() {
        let elf = tiny_elf();
        assert_eq!(symbol_value(&elf, "__payload_start").unwrap(), 0x1_0000);
        assert!(symbol_value(&elf, "__nope").is_err());
    }

    #[test]
    fn garbage_is_not_an_elf() {
        assert!(elf_to_raw(b"not an elf").is_err());
        assert!(symbol_value(b"not an elf", "x").is_err());
    }
}
