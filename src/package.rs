//! The package xtask appends to the image: the config blob and the guest
//! images it names (docs/image-format.md).

const MAGIC: &[u8; 8] = b"TSRPKG01";
const HEADER: usize = 24;
const ENTRY: usize = 56;

/// Entry kinds.
pub const KIND_CONFIG: u32 = 1;
pub const KIND_IMAGE: u32 = 2;

/// A parsed package over its bytes.
#[derive(Clone, Copy)]
pub struct Package<'a> {
    bytes: &'a [u8],
    count: usize,
}

/// One entry: its kind, name and contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub kind: u32,
    pub name: &'a str,
    pub data: &'a [u8],
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl<'a> Package<'a> {
    /// Checks the header and that every entry lies inside `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Option<Package<'a>> {
        if bytes.get(..8)? != MAGIC {
            return None;
        }
        let total = usize::try_from(u64_at(bytes, 8)?).ok()?;
        let bytes = bytes.get(..total)?;
        let count = u32_at(bytes, 16)? as usize;
        let p = Package { bytes, count };
        for i in 0..count {
            p.entry(i)?;
        }
        Some(p)
    }

    fn entry(&self, i: usize) -> Option<Entry<'a>> {
        let at = HEADER + i * ENTRY;
        let e = self.bytes.get(at..at + ENTRY)?;
        let name = &e[8..40];
        let len = name.iter().position(|b| *b == 0).unwrap_or(32);
        let off = usize::try_from(u64_at(e, 40)?).ok()?;
        let size = usize::try_from(u64_at(e, 48)?).ok()?;
        Some(Entry {
            kind: u32_at(e, 0)?,
            name: core::str::from_utf8(&name[..len]).ok()?,
            data: self.bytes.get(off..off.checked_add(size)?)?,
        })
    }

    /// All entries.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> + '_ {
        (0..self.count).filter_map(|i| self.entry(i))
    }

    /// The first entry of `kind` called `name`.
    pub fn find(&self, kind: u32, name: &str) -> Option<&'a [u8]> {
        self.entries()
            .find(|e| e.kind == kind && e.name == name)
            .map(|e| e.data)
    }

    /// The config blob.
    pub fn config(&self) -> Option<&'a [u8]> {
        self.entries().find(|e| e.kind == KIND_CONFIG).map(|e| e.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(entries: &[(u32, &str, &[u8])]) -> Vec<u8> {
        let mut head = Vec::new();
        let mut data = Vec::new();
        let data_start = HEADER + entries.len() * ENTRY;
        for (kind, name, bytes) in entries {
            head.extend_from_slice(&kind.to_le_bytes());
            head.extend_from_slice(&0u32.to_le_bytes());
            let mut n = [0u8; 32];
            n[..name.len()].copy_from_slice(name.as_bytes());
            head.extend_from_slice(&n);
            head.extend_from_slice(&((data_start + data.len()) as u64).to_le_bytes());
            head.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            data.extend_from_slice(bytes);
        }
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&((data_start + data.len()) as u64).to_le_bytes());
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend(head);
        out.extend(data);
        out
    }

    #[test]
    fn finds_entries() {
        let p = build(&[
            (KIND_CONFIG, "config", b"cfg"),
            (KIND_IMAGE, "hello", b"\x01\x02"),
        ]);
        let pkg = Package::parse(&p).unwrap();
        assert_eq!(pkg.config(), Some(&b"cfg"[..]));
        assert_eq!(pkg.find(KIND_IMAGE, "hello"), Some(&[1u8, 2][..]));
        assert_eq!(pkg.find(KIND_IMAGE, "nope"), None);
    }

    #[test]
    fn rejects_damage() {
        let mut p = build(&[(KIND_IMAGE, "x", b"abc")]);
        assert!(Package::parse(&p[..p.len() - 1]).is_none());
        p[0] = b'X';
        assert!(Package::parse(&p).is_none());
        let mut q = build(&[(KIND_IMAGE, "x", b"abc")]);
        // Entry offset pointing past the end.
        q[HEADER + 40] = 0xff;
        assert!(Package::parse(&q).is_none());
    }
}
