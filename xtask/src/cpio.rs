//! The guest initramfs as a cpio "newc" archive (`070701`), the format Linux unpacks an
//! initramfs from, written here rather than by the host's `cpio` so building it needs
//! nothing outside Cargo, and so it is reproducible: every entry is owned by root with
//! mtime 0. The `cpio` crate encodes and decodes the entries (110-byte ASCII headers, names
//! and data padded to 4 bytes, the `TRAILER!!!` entry); this module adds what an initramfs
//! needs on top: parent directories before their contents (the kernel's unpacker does not
//! create them), unique inode numbers, no duplicate or escaping paths.

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::io::{Read, Write};

/// File type bits of `st_mode`.
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;

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
    next_ino: u32,
    dirs: BTreeSet<String>,
    names: BTreeSet<String>,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
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
        ::cpio::newc::trailer(&mut self.out)?;
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
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut w = ::cpio::newc::Builder::new(path)
            .ino(ino)
            .mode(mode)
            .nlink(nlink)
            .rdev_major(rdev.0)
            .rdev_minor(rdev.1)
            .write(&mut self.out, filesize);
        w.write_all(data)?;
        w.finish()?;
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

/// Reads a newc archive back into (header, data) pairs, up to and without the trailer,
/// with the `cpio` crate's reader. Used by the tests.
pub fn parse(mut buf: &[u8]) -> Result<Vec<(Header, Vec<u8>)>> {
    let mut entries = Vec::new();
    loop {
        let offset = entries.len();
        let mut r = ::cpio::newc::Reader::new(buf).with_context(|| format!("cpio: entry {offset}"))?;
        let e = r.entry();
        if e.is_trailer() {
            return Ok(entries);
        }
        let header = Header {
            ino: e.ino(),
            mode: e.mode(),
            nlink: e.nlink(),
            filesize: e.file_size(),
            rdevmajor: e.rdev_major(),
            rdevminor: e.rdev_minor(),
            name: e.name().to_owned(),
        };
        let mut data = Vec::new();
        r.read_to_end(&mut data)?;
        if data.len() != header.filesize as usize {
            bail!("cpio: {:?} is truncated", header.name);
        }
        buf = r.finish()?;
        entries.push((header, data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let mut w = Writer::new(Vec::new());
        w.file("init", 0o755, b"12345").unwrap();
        let out = w.finish().unwrap();
        let s = std::str::from_utf8(&out[..110]).unwrap();
        let field = |i: usize| u32::from_str_radix(&s[6 + 8 * i..14 + 8 * i], 16).unwrap();
        assert_eq!(&s[..6], "070701");
        // ino, mode, uid, gid, nlink, mtime, filesize.
        let fields: Vec<u32> = (0..7).map(field).collect();
        assert_eq!(fields, [1, 0o100755, 0, 0, 1, 0, 5]);
        // namesize ("init" + NUL) is the 12th field; then the name, padded to 4.
        assert_eq!(&s[6 + 8 * 11..6 + 8 * 12], "00000005");
        assert_eq!(&out[110..116], b"init\0\0");
        assert_eq!(&out[116..121], b"12345");
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
