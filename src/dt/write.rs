//! Writing a flattened device tree (a guest's): the `vm-fdt` crate's
//! writer interface and byte layout (header, an empty reservation map,
//! structure block, strings block, each property name stored once), without
//! its cost: no C string allocated per name or value, no ordered map of
//! names, no hash set of phandles. A guest DTB has a few dozen nodes, so
//! lookups are short scans.
//!
//! The same checks as that crate's writer, with the same messages: node
//! and property names as the Devicetree Specification (2.2.1, 2.2.4)
//! allows them, no NUL inside a string, properties only in the node opened
//! last, nodes closed in order, one node per phandle.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const END: u32 = 9;
const HEADER_SIZE: usize = 40;
const VERSION: u32 = 17;
const LAST_COMP_VERSION: u32 = 16;
/// As deep as Linux reads.
const MAX_DEPTH: usize = 64;
/// Node (before the `@`) and property names, at most (the specification's).
const NAME_MAX: usize = 31;

/// Why the writer refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    PropertyBeforeBeginNode,
    PropertyAfterEndNode,
    PropertyValueTooLarge,
    TotalSizeTooLarge,
    InvalidString,
    OutOfOrderEndNode,
    UnclosedNode,
    InvalidNodeName,
    InvalidPropertyName,
    NodeDepthTooLarge,
    DuplicatePhandle,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Error::PropertyBeforeBeginNode => "Properties may not be added before beginning a node",
            Error::PropertyAfterEndNode => "Properties may not be added after a node has been ended",
            Error::PropertyValueTooLarge => "Property value size must fit in 32 bits",
            Error::TotalSizeTooLarge => "Total size must fit in 32 bits",
            Error::InvalidString => "Strings cannot contain NUL",
            Error::OutOfOrderEndNode => "Attempted to end a node that was not the most recent",
            Error::UnclosedNode => "Attempted to call finish without ending all nodes",
            Error::InvalidNodeName => "Invalid node name",
            Error::InvalidPropertyName => "Invalid property name",
            Error::NodeDepthTooLarge => "Node depth exceeds FDT_MAX_NODE_DEPTH",
            Error::DuplicatePhandle => "Duplicate phandle value",
        })
    }
}

pub type Result<T> = core::result::Result<T, Error>;

/// An open node, handed back to [`FdtWriter::end_node`].
#[derive(Debug)]
pub struct FdtWriterNode {
    depth: usize,
}

/// The writer.
#[derive(Debug)]
pub struct FdtWriter {
    data: Vec<u8>,
    strings: Vec<u8>,
    /// (offset, length) of each name in `strings`.
    names: Vec<(u32, u32)>,
    phandles: Vec<u32>,
    depth: usize,
    ended: bool,
}

fn node_name_valid(name: &str) -> bool {
    // Empty names are the root's.
    if name.is_empty() {
        return true;
    }
    let mut parts = name.split('@');
    let base = parts.next().unwrap_or("");
    let unit = parts.next();
    if parts.next().is_some() || base.is_empty() || base.len() > NAME_MAX {
        return false;
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, ',' | '.' | '_' | '+' | '-');
    base.starts_with(|c: char| c.is_ascii_alphabetic())
        && base.chars().all(ok)
        && unit.is_none_or(|u| u.chars().all(ok))
}

fn property_name_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b',' | b'.' | b'_' | b'+' | b'?' | b'#' | b'-'))
}

fn no_nul(s: &str) -> Result<&[u8]> {
    if s.as_bytes().contains(&0) {
        Err(Error::InvalidString)
    } else {
        Ok(s.as_bytes())
    }
}

impl FdtWriter {
    pub fn new() -> Result<Self> {
        let mut data = Vec::with_capacity(4096);
        // The header, then an empty reservation map (one zero entry).
        data.resize(HEADER_SIZE + 16, 0);
        Ok(FdtWriter {
            data,
            strings: Vec::with_capacity(512),
            names: Vec::with_capacity(48),
            phandles: Vec::new(),
            depth: 0,
            ended: false,
        })
    }

    fn u32(&mut self, v: u32) {
        self.data.extend_from_slice(&v.to_be_bytes());
    }

    fn align(&mut self) {
        let len = self.data.len().next_multiple_of(4);
        self.data.resize(len, 0);
    }

    pub fn begin_node(&mut self, name: &str) -> Result<FdtWriterNode> {
        if self.depth >= MAX_DEPTH {
            return Err(Error::NodeDepthTooLarge);
        }
        let bytes = no_nul(name)?;
        if !node_name_valid(name) {
            return Err(Error::InvalidNodeName);
        }
        self.u32(BEGIN_NODE);
        self.data.extend_from_slice(bytes);
        self.data.push(0);
        self.align();
        self.depth += 1;
        self.ended = false;
        Ok(FdtWriterNode { depth: self.depth })
    }

    pub fn end_node(&mut self, node: FdtWriterNode) -> Result<()> {
        if node.depth != self.depth {
            return Err(Error::OutOfOrderEndNode);
        }
        self.u32(END_NODE);
        self.depth -= 1;
        self.ended = true;
        Ok(())
    }

    /// The offset of `name` in the strings block, added if new.
    fn intern(&mut self, name: &[u8]) -> Result<u32> {
        let strings = &self.strings;
        let found = self
            .names
            .iter()
            .find(|&&(off, len)| strings.get(off as usize..off as usize + len as usize) == Some(name));
        if let Some(&(off, _)) = found {
            return Ok(off);
        }
        let off = u32::try_from(self.strings.len()).map_err(|_| Error::TotalSizeTooLarge)?;
        self.strings.extend_from_slice(name);
        self.strings.push(0);
        self.names.push((off, name.len() as u32));
        Ok(off)
    }

    /// Property `name` with raw value `val`.
    pub fn property(&mut self, name: &str, val: &[u8]) -> Result<()> {
        if self.ended {
            return Err(Error::PropertyAfterEndNode);
        }
        if self.depth == 0 {
            return Err(Error::PropertyBeforeBeginNode);
        }
        let bytes = no_nul(name)?;
        if !property_name_valid(name) {
            return Err(Error::InvalidPropertyName);
        }
        let len = u32::try_from(val.len()).map_err(|_| Error::PropertyValueTooLarge)?;
        let off = self.intern(bytes)?;
        self.u32(PROP);
        self.u32(len);
        self.u32(off);
        self.data.extend_from_slice(val);
        self.align();
        Ok(())
    }

    pub fn property_null(&mut self, name: &str) -> Result<()> {
        self.property(name, &[])
    }

    /// One string, NUL-terminated.
    pub fn property_string(&mut self, name: &str, val: &str) -> Result<()> {
        self.property_strs(name, &[val])
    }

    /// A string list, each NUL-terminated.
    pub fn property_string_list(&mut self, name: &str, values: Vec<String>) -> Result<()> {
        let v: Vec<&str> = values.iter().map(String::as_str).collect();
        self.property_strs(name, &v)
    }

    /// [`FdtWriter::property_string_list`] of borrowed strings.
    pub fn property_strs(&mut self, name: &str, values: &[&str]) -> Result<()> {
        let mut bytes = Vec::with_capacity(values.iter().map(|s| s.len() + 1).sum());
        for s in values {
            bytes.extend_from_slice(no_nul(s)?);
            bytes.push(0);
        }
        self.property(name, &bytes)
    }

    pub fn property_u32(&mut self, name: &str, val: u32) -> Result<()> {
        self.property(name, &val.to_be_bytes())
    }

    pub fn property_u64(&mut self, name: &str, val: u64) -> Result<()> {
        self.property(name, &val.to_be_bytes())
    }

    pub fn property_array_u32(&mut self, name: &str, cells: &[u32]) -> Result<()> {
        let v: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
        self.property(name, &v)
    }

    pub fn property_array_u64(&mut self, name: &str, cells: &[u64]) -> Result<()> {
        let v: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
        self.property(name, &v)
    }

    /// `phandle`, refused if another node has the same.
    pub fn property_phandle(&mut self, val: u32) -> Result<()> {
        if self.phandles.contains(&val) {
            return Err(Error::DuplicatePhandle);
        }
        self.phandles.push(val);
        self.property("phandle", &val.to_be_bytes())
    }

    /// The blob.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        if self.depth > 0 {
            return Err(Error::UnclosedNode);
        }
        self.u32(END);
        let total = self
            .data
            .len()
            .checked_add(self.strings.len())
            .ok_or(Error::TotalSizeTooLarge)?;
        let word = |v: usize| u32::try_from(v).map_err(|_| Error::TotalSizeTooLarge);
        let off_struct = HEADER_SIZE + 16;
        let header = [
            MAGIC,
            word(total)?,
            word(off_struct)?,
            word(self.data.len())?,
            word(HEADER_SIZE)?,
            VERSION,
            LAST_COMP_VERSION,
            0, // boot_cpuid_phys
            word(self.strings.len())?,
            word(self.data.len() - off_struct)?,
        ];
        for (slot, v) in self.data.chunks_exact_mut(4).zip(header) {
            slot.copy_from_slice(&v.to_be_bytes());
        }
        self.data.append(&mut self.strings);
        Ok(self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};
    use std::string::ToString;

    /// One writer call.
    #[derive(Clone, Debug)]
    enum Op {
        Begin(String),
        End,
        Prop(String, Vec<u8>),
        Str(String, String),
        List(String, Vec<String>),
        U32(String, u32),
        U64(String, u64),
        A32(String, Vec<u32>),
        A64(String, Vec<u64>),
        Null(String),
        Phandle(u32),
    }

    fn name() -> impl Strategy<Value = String> {
        // Mostly valid names, often repeated; now and then an invalid one.
        prop_oneof![
            8 => Just("reg".to_string()),
            8 => Just("compatible".to_string()),
            8 => Just("#address-cells".to_string()),
            8 => "[a-z#,][a-z0-9,._+?#-]{0,8}",
            1 => Just("a-property-name-longer-than-31-chars".to_string()),
            1 => Just("bad name".to_string()),
            1 => Just("nul\0inside".to_string()),
        ]
    }

    fn node_name() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => Just("cpus".to_string()),
            4 => Just("serial@9000000".to_string()),
            8 => "[a-z][a-z0-9,._+-]{0,6}(@[0-9a-f]{1,4})?",
            1 => Just(String::new()),
            1 => Just("a@b@c".to_string()),
            1 => Just("9bad".to_string()),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => node_name().prop_map(Op::Begin),
            1 => Just(Op::End),
            1 => (name(), proptest::collection::vec(any::<u8>(), 0..12)).prop_map(|(n, v)| Op::Prop(n, v)),
            1 => (name(), prop_oneof![9 => "[a-z]{0,5}", 1 => "[a-z\0]{1,5}"]).prop_map(|(n, v)| Op::Str(n, v)),
            1 => (name(), proptest::collection::vec("[a-z,]{0,5}", 0..3)).prop_map(|(n, v)| Op::List(n, v)),
            1 => (name(), any::<u32>()).prop_map(|(n, v)| Op::U32(n, v)),
            1 => (name(), any::<u64>()).prop_map(|(n, v)| Op::U64(n, v)),
            1 => (name(), proptest::collection::vec(any::<u32>(), 0..4)).prop_map(|(n, v)| Op::A32(n, v)),
            1 => (name(), proptest::collection::vec(any::<u64>(), 0..3)).prop_map(|(n, v)| Op::A64(n, v)),
            1 => name().prop_map(Op::Null),
            1 => (0u32..4).prop_map(Op::Phandle),
        ]
    }

    /// Runs `ops` on both writers (nodes ended in order by a stack);
    /// returns each one's outcome as bytes or the error's message.
    fn both(
        ops: &[Op],
    ) -> (
        core::result::Result<Vec<u8>, String>,
        core::result::Result<Vec<u8>, String>,
    ) {
        fn run<W, N, E: fmt::Display>(
            w: &mut W,
            ops: &[Op],
            begin: impl Fn(&mut W, &str) -> core::result::Result<N, E>,
            end: impl Fn(&mut W, N) -> core::result::Result<(), E>,
            prop: impl Fn(&mut W, &Op) -> core::result::Result<(), E>,
        ) -> core::result::Result<(), String> {
            let mut open = Vec::new();
            for op in ops {
                match op {
                    Op::Begin(n) => open.push(begin(w, n).map_err(|e| e.to_string())?),
                    Op::End => {
                        if let Some(n) = open.pop() {
                            end(w, n).map_err(|e| e.to_string())?;
                        }
                    }
                    other => prop(w, other).map_err(|e| e.to_string())?,
                }
            }
            while let Some(n) = open.pop() {
                end(w, n).map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        let mut ours = FdtWriter::new().unwrap();
        let mine = run(
            &mut ours,
            ops,
            |w, n| w.begin_node(n),
            |w, n| w.end_node(n),
            |w, op| match op {
                Op::Prop(n, v) => w.property(n, v),
                Op::Str(n, v) => w.property_string(n, v),
                Op::List(n, v) => w.property_string_list(n, v.clone()),
                Op::U32(n, v) => w.property_u32(n, *v),
                Op::U64(n, v) => w.property_u64(n, *v),
                Op::A32(n, v) => w.property_array_u32(n, v),
                Op::A64(n, v) => w.property_array_u64(n, v),
                Op::Null(n) => w.property_null(n),
                Op::Phandle(v) => w.property_phandle(*v),
                Op::Begin(_) | Op::End => Ok(()),
            },
        )
        .and_then(|()| ours.finish().map_err(|e| e.to_string()));
        let mut theirs = vm_fdt::FdtWriter::new().unwrap();
        let reference = run(
            &mut theirs,
            ops,
            |w, n| w.begin_node(n),
            |w, n| w.end_node(n),
            |w, op| match op {
                Op::Prop(n, v) => w.property(n, v),
                Op::Str(n, v) => w.property_string(n, v),
                Op::List(n, v) => w.property_string_list(n, v.clone()),
                Op::U32(n, v) => w.property_u32(n, *v),
                Op::U64(n, v) => w.property_u64(n, *v),
                Op::A32(n, v) => w.property_array_u32(n, v),
                Op::A64(n, v) => w.property_array_u64(n, v),
                Op::Null(n) => w.property_null(n),
                Op::Phandle(v) => w.property_phandle(*v),
                Op::Begin(_) | Op::End => Ok(()),
            },
        )
        .and_then(|()| theirs.finish().map_err(|e| e.to_string()));
        (mine, reference)
    }

    proptest! {
        #![proptest_config(Config {
            cases: 512,
            rng_seed: RngSeed::Fixed(0x0bad_f00d),
            failure_persistence: None,
            ..Config::default()
        })]

        #[test]
        fn writes_what_vm_fdt_writes(ops in proptest::collection::vec(op(), 0..20), props_first in any::<bool>()) {
            // Inside a root node, mostly: properties first, then children.
            let mut all = std::vec![Op::Begin(String::new())];
            if props_first {
                all.extend(ops.iter().filter(|o| !matches!(o, Op::Begin(_) | Op::End)).cloned());
            }
            all.extend(ops);
            let (mine, reference) = both(&all);
            prop_assert_eq!(mine, reference);
        }
    }

    /// The comparison above means something only if many of its cases
    /// get as far as a blob.
    #[test]
    fn most_generated_cases_write_a_blob() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = proptest::collection::vec(op(), 0..20);
        let mut ok = 0;
        for _ in 0..200 {
            let mut ops = std::vec![Op::Begin(String::new())];
            ops.extend(strategy.new_tree(&mut runner).unwrap().current());
            ok += usize::from(both(&ops).0.is_ok());
        }
        assert!(ok >= 50, "{ok} of 200");
    }

    #[test]
    fn a_tree_reads_back() {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        let n = w.begin_node("serial@9000000").unwrap();
        w.property_strs("compatible", &["arm,pl011", "arm,primecell"])
            .unwrap();
        w.property_array_u64("reg", &[0x900_0000, 0x1000]).unwrap();
        w.property_phandle(1).unwrap();
        w.end_node(n).unwrap();
        assert_eq!(w.property_u32("late", 1), Err(Error::PropertyAfterEndNode));
        let m = w.begin_node("other").unwrap();
        assert_eq!(w.property_phandle(1), Err(Error::DuplicatePhandle));
        w.end_node(m).unwrap();
        w.end_node(root).unwrap();
        let blob = w.finish().unwrap();
        let t = crate::dt::Tree::new(&blob).unwrap();
        let s = t.node_at("/serial@9000000").unwrap();
        assert!(s.is_compatible(&["arm,primecell"]));
        assert_eq!(t.find_phandle(1), Some(s));
        assert_eq!(t.root().u32("#address-cells"), Some(2));
    }
}
