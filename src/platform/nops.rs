//! Removing FDT_NOP tokens. Boot loaders edit device trees in place and
//! overwrite what they delete with NOPs (QEMU's `-dtb` fixups, U-Boot's
//! `fdt` commands); the `fdt` crate 0.1 loses nodes that follow some of
//! them. The hypervisor's own reader (`crate::dt`) reads through NOPs, so
//! this is test code now: the `fdt` crate, the host tests' reference, is
//! handed blobs compacted by it.

const FDT_MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

/// The DTB is not well formed.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

fn be32(b: &[u8], at: usize) -> Result<u32, Malformed> {
    let s = b.get(at..at + 4).ok_or(Malformed)?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Strips every NOP token from the structure block of `dtb`, moving the rest
/// down and shrinking `size_dt_struct`. The strings block is not moved.
pub fn strip_nops(dtb: &mut [u8]) -> Result<(), Malformed> {
    if be32(dtb, 0)? != FDT_MAGIC {
        return Err(Malformed);
    }
    let total = be32(dtb, 4)? as usize;
    let start = be32(dtb, 8)? as usize;
    let size = be32(dtb, 36)? as usize;
    let end = start.checked_add(size).ok_or(Malformed)?;
    if total > dtb.len() || end > total {
        return Err(Malformed);
    }
    let (mut r, mut w) = (start, start);
    loop {
        if r + 4 > end {
            return Err(Malformed);
        }
        let token = be32(dtb, r)?;
        let len = match token {
            NOP => {
                r += 4;
                continue;
            }
            BEGIN_NODE => {
                let name = dtb[r + 4..end].iter().position(|b| *b == 0).ok_or(Malformed)?;
                4 + (name + 1).next_multiple_of(4)
            }
            PROP => 12 + (be32(dtb, r + 4)? as usize).next_multiple_of(4),
            END_NODE | END => 4,
            _ => return Err(Malformed),
        };
        if r + len > end {
            return Err(Malformed);
        }
        if r != w {
            dtb.copy_within(r..r + len, w);
        }
        r += len;
        w += len;
        if token == END {
            break;
        }
    }
    dtb[36..40].copy_from_slice(&((w - start) as u32).to_be_bytes());
    Ok(())
}
