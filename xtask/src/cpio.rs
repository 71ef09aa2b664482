//! A small writer for the cpio "newc" format (`070701`), the format Linux unpacks an
//! initramfs from. Written here rather than by the host's `cpio` so building a guest
//! initramfs needs nothing outside Cargo, and so the archive is reproducible: every entry is
//! owned by root with mtime 0.
//!
//! Each entry is a 110-byte ASCII header (the magic and 13 eight-digit hex fields), the NUL-
//! terminated name padded to a multiple of 4 bytes (counting the header), then the data padded
//! to a multiple of 4. The archive ends with an entry named `TRAILER!!!`.

use anyhow::{bail, Result};
use std::collections::BTreeSet;
use std::io::Write;

/// File type bits of `st_mode`.
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

/// The fields of one newc header that this writer sets (the rest are zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub ino: u32,
    pub mode: u32,
    pub nlink: u32,
    pub filesize: u32,
    pub rdevmajor: u32,
    pub rdevminor: u32,
    pub name: String,
}

/// Streams a newc archive into `out`. Paths are archive paths like `bin/busybox` (a leading
/// `/` is dropped); missing parent directories are added automatically (mode 0755), since the
/// kernel's unpacker does not create them.
pub struct Writer<W: Write> {
    out: W,
    offset: u64,
    next_ino: u32,
    dirs: BTreeSet<String>,
    names: BTreeSet<String>,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            offset: 0,
            next_ino: 1,
            dirs: BTreeSet::new(),
            names: BTreeSet::new(),
        }
    }

    /// A directory with permission bits `perm` (e.g. `0o755`).
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<()> {
        let path = normalize(path)?;
        if self.dirs.contains(&path) {
            return Ok(());
        }
        self.parents(&path)?;
        self.entry(&path, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[])?;
        self.dirs.insert(path);
        Ok(())
    }

    /// A regular file with permission bits `perm` (e.g. `0o755` for a program).
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        self.entry(&path, S_IFREG | (perm & 0o7777), 1, (0, 0), data)
    }

    /// A symbolic link `path` -> `target` (the target is stored as the link's data).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        self.entry(&path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// A character device node, e.g. `dev/console` (5, 1), which must exist before `/init`
    /// runs for it to get a console.
    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        self.entry(&path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[])
    }

    /// Writes the trailer and returns the sink.
    pub fn finish(mut self) -> Result<W> {
        let header = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            filesize: 0,
            rdevmajor: 0,
            rdevminor: 0,
            name: TRAILER.to_owned(),
        };
        self.write_entry(&header, &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn parents(&mut self, path: &str) -> Result<()> {
        let mut parent = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if !self.dirs.contains(&parent) {
                self.entry(&parent, S_IFDIR | 0o755, 2, (0, 0), &[])?;
                self.dirs.insert(parent.clone());
            }
        }
        Ok(())
    }

    fn entry(&mut self, path: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) -> Result<()> {
        if !self.names.insert(path.to_owned()) {
            bail!("cpio: duplicate entry {path:?}");
        }
        let Ok(filesize) = u32::try_from(data.len()) else {
            bail!("cpio: {path:?} is too large for newc ({} bytes)", data.len());
        };
        let header = Header {
            ino: self.next_ino,
            mode,
            nlink,
            filesize,
            rdevmajor: rdev.0,
            rdevminor: rdev.1,
            name: path.to_owned(),
        };
        self.next_ino += 1;
        self.write_entry(&header, data)
    }

    fn write_entry(&mut self, h: &Header, data: &[u8]) -> Result<()> {
        let mut buf = encode_header(h);
        buf.extend_from_slice(h.name.as_bytes());
        buf.push(0);
        pad4(&mut buf, self.offset);
        buf.extend_from_slice(data);
        pad4(&mut buf, self.offset);
        self.out.write_all(&buf)?;
        self.offset += buf.len() as u64;
        Ok(())
    }
}

/// Drops a leading `/` and rejects empty, `.` and `..` components.
fn normalize(path: &str) -> Result<String> {
    let p = path.trim_start_matches('/');
    if p.is_empty() || p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        bail!("cpio: invalid archive path {path:?}");
    }
    Ok(p.to_owned())
}

/// Pads `buf` (which starts at archive offset `base`) with NULs to a multiple of 4.
fn pad4(buf: &mut Vec<u8>, base: u64) {
    while !(base + buf.len() as u64).is_multiple_of(4) {
        buf.push(0);
    }
}

/// The 110-byte header: magic, then ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
/// devminor, rdevmajor, rdevminor, namesize (with the NUL), check, each as 8 hex digits.
fn encode_header(h: &Header) -> Vec<u8> {
    let namesize = h.name.len() as u32 + 1;
    let fields = [
        h.ino,
        h.mode,
        0,
        0,
        h.nlink,
        0,
        h.filesize,
        0,
        0,
        h.rdevmajor,
        h.rdevminor,
        namesize,
        0,
    ];
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(MAGIC);
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    debug_assert_eq!(out.len(), HEADER_LEN);
    out
}

/// Reads a newc archive back into (header, data) pairs, up to and without the trailer. Used by
/// the tests and to check a freshly written initramfs.
pub fn parse(mut buf: &[u8]) -> Result<Vec<(Header, Vec<u8>)>> {
    let start_len = buf.len();
    let mut entries = Vec::new();
    loop {
        let offset = start_len - buf.len();
        if !offset.is_multiple_of(4) {
            bail!("cpio: entry at offset {offset} is not 4-byte aligned");
        }
        if buf.len() < HEADER_LEN || &buf[..6] != MAGIC {
            bail!("cpio: no newc header at offset {offset}");
        }
        let field = |i: usize| -> Result<u32> {
            let s = std::str::from_utf8(&buf[6 + 8 * i..14 + 8 * i])?;
            Ok(u32::from_str_radix(s, 16)?)
        };
        let (ino, mode, nlink, filesize) = (field(0)?, field(1)?, field(4)?, field(6)?);
        let (rdevmajor, rdevminor, namesize) = (field(9)?, field(10)?, field(11)? as usize);
        let name_end = HEADER_LEN + namesize;
        let data_start = name_end.next_multiple_of(4);
        let data_end = data_start + filesize as usize;
        if buf.len() < data_end || namesize == 0 || buf[name_end - 1] != 0 {
            bail!("cpio: truncated or malformed entry at offset {offset}");
        }
        let name = String::from_utf8(buf[HEADER_LEN..name_end - 1].to_vec())?;
        if name == TRAILER {
            return Ok(entries);
        }
        let header = Header {
            ino,
            mode,
            nlink,
            filesize,
            rdevmajor,
            rdevminor,
            name,
        };
        entries.push((header, buf[data_start..data_end].to_vec()));
        buf = &buf[data_end.next_multiple_of(4).min(buf.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let h = Header {
            ino: 0x12,
            mode: S_IFREG | 0o755,
            nlink: 1,
            filesize: 5,
            rdevmajor: 0,
            rdevminor: 0,
            name: "init".into(),
        };
        let bytes = encode_header(&h);
        assert_eq!(bytes.len(), 110);
        let s = std::str::from_utf8(&bytes).unwrap();
        assert!(s.starts_with("07070100000012000081ED"));
        // namesize ("init" + NUL) is the 12th field.
        assert_eq!(&s[6 + 8 * 11..6 + 8 * 12], "00000005");
    }

    #[test]
    fn round_trip_and_alignment() {
        let mut w = Writer::new(Vec::new());
        w.dir("/dev", 0o755).unwrap();
        w.char_dev("dev/console", 0o600, 5, 1).unwrap();
        w.file("/init", 0o755, b"#!/bin/sh\n").unwrap();
        w.file("lib/modules/a.ko", 0o644, &[1, 2, 3]).unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));

        let entries = parse(&out).unwrap();
        let names: Vec<&str> = entries.iter().map(|(h, _)| h.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/a.ko",
                "bin",
                "bin/sh"
            ]
        );
        let get = |n: &str| entries.iter().find(|(h, _)| h.name == n).unwrap();
        let (init, data) = get("init");
        assert_eq!(init.mode, 0o100755);
        assert_eq!(data, b"#!/bin/sh\n");
        let (console, _) = get("dev/console");
        assert_eq!(
            (console.mode, console.rdevmajor, console.rdevminor),
            (0o020600, 5, 1)
        );
        let (dir, _) = get("lib/modules");
        assert_eq!((dir.mode, dir.nlink), (0o040755, 2));
        let (link, target) = get("bin/sh");
        assert_eq!(link.mode, 0o120777);
        assert_eq!(target, b"busybox");
        let (ko, data) = get("lib/modules/a.ko");
        assert_eq!((ko.filesize, data.as_slice()), (3, &[1u8, 2, 3][..]));
        // Inode numbers are unique.
        let mut inos: Vec<u32> = entries.iter().map(|(h, _)| h.ino).collect();
        inos.dedup();
        assert_eq!(inos.len(), entries.len());
    }

    #[test]
    fn every_name_length_pads_correctly() {
        // Header + name + NUL must be padded to 4 whatever the name length, and so must the data.
        for n in 1..9 {
            for len in 0..6 {
                let name = "x".repeat(n);
                let mut w = Writer::new(Vec::new());
                w.file(&name, 0o644, &vec![0xAA; len]).unwrap();
                let out = w.finish().unwrap();
                let entries = parse(&out).unwrap();
                assert_eq!(entries.len(), 1);
                assert_eq!(entries[0].0.name, name);
                assert_eq!(entries[0].1, vec![0xAA; len]);
            }
        }
    }

    #[test]
    fn rejects_bad_paths_and_duplicates() {
        let mut w = Writer::new(Vec::new());
        assert!(w.file("", 0o644, b"").is_err());
        assert!(w.file("a/../b", 0o644, b"").is_err());
        assert!(w.file("a//b", 0o644, b"").is_err());
        w.file("a", 0o644, b"").unwrap();
        assert!(w.file("/a", 0o644, b"").is_err());
        // A directory given twice is fine (it may also have been added as a parent).
        w.dir("d/e", 0o755).unwrap();
        w.dir("d", 0o755).unwrap();
    }
}
