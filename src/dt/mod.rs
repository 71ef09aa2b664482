//! A flattened device tree reader of our own (Devicetree Specification
//! v0.4, chapter 5): one cursor over the structure block, FDT_NOP tokens
//! skipped wherever they stand, property names compared as bytes against
//! the strings block (nothing is UTF-8 validated unless asked for), and no
//! panic on any input: a malformed blob ends the walk early. It replaced
//! the `fdt` crate, which re-parses every property of a node for each
//! lookup, validates each name as UTF-8, walks the whole tree for each
//! phandle, loses the nodes after an FDT_NOP and can panic on a malformed
//! blob (it stays a dev-dependency: the reference of the host tests).
//!
//! The walk ([`Dt::walk`]) and raw nodes read straight off it
//! ([`Dt::nodes`], [`RawNode::property`]); [`Tree`] (tree.rs) is the index,
//! built from one walk, that the hypervisor answers every question about
//! the board DTB from.

// Everything here reads bytes a boot loader or a config handed us.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable
    )
)]

#[cfg(test)]
mod golden;
pub mod tree;
#[cfg(test)]
mod tree_tests;
pub use tree::{Node, Tree};
#[cfg(test)]
mod proptests;

use alloc::string::String;
use alloc::vec::Vec;

pub const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
/// Deeper nesting than this is treated as malformed (real trees are < 10).
pub const MAX_DEPTH: usize = 32;

/// Why a blob is not a device tree we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtError {
    /// Shorter than its header, or than the size its header gives.
    Truncated,
    BadMagic,
    /// A block outside the blob, or misaligned.
    BadLayout,
    /// Not version 17 compatible.
    Version,
    /// The structure block ends before the root node closes, or holds a
    /// token out of place.
    Structure,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let w: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(w))
}

/// The size a DTB header gives (`totalsize`), if `header` starts with the
/// magic: how many bytes the boot loader handed over.
pub fn blob_size(header: &[u8]) -> Option<usize> {
    (be32(header, 0)? == MAGIC).then_some(be32(header, 4)? as usize)
}

/// A parsed header: the structure and strings blocks.
#[derive(Clone, Copy, Debug)]
pub struct Dt<'a> {
    structs: &'a [u8],
    strings: &'a [u8],
    /// Where the strings block's last NUL is: a name offset up to it has
    /// a terminated name, one past it none.
    last_nul: Option<usize>,
}

/// One step of the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A node opens: its name (unit address included; empty for the root),
    /// its depth (root 0), and where its properties start.
    Begin {
        name: &'a [u8],
        depth: usize,
        at: usize,
    },
    Prop {
        name: &'a [u8],
        value: &'a [u8],
    },
    /// The innermost open node closes.
    End,
}

impl<'a> Dt<'a> {
    /// Checks the header of `blob` (which may be longer than the tree).
    pub fn new(blob: &'a [u8]) -> Result<Self, DtError> {
        let field = |i: usize| be32(blob, 4 * i).ok_or(DtError::Truncated);
        if field(0)? != MAGIC {
            return Err(DtError::BadMagic);
        }
        let total = field(1)? as usize;
        let blob = blob.get(..total).ok_or(DtError::Truncated)?;
        let (off_struct, off_strings) = (field(2)? as usize, field(3)? as usize);
        let (version, last_compatible) = (field(5)?, field(6)?);
        if version < 17 || last_compatible > 17 {
            return Err(DtError::Version);
        }
        let (size_strings, size_struct) = (field(8)? as usize, field(9)? as usize);
        let block = |off: usize, size: usize| {
            off.checked_add(size)
                .and_then(|end| blob.get(off..end))
                .ok_or(DtError::BadLayout)
        };
        if !off_struct.is_multiple_of(4) {
            return Err(DtError::BadLayout);
        }
        let strings = block(off_strings, size_strings)?;
        Ok(Dt {
            structs: block(off_struct, size_struct)?,
            strings,
            last_nul: strings.iter().rposition(|&b| b == 0),
        })
    }

    /// The whole tree, token by token, from the root.
    pub fn walk(&self) -> Walk<'a> {
        Walk {
            dt: *self,
            at: 0,
            depth: 0,
            done: false,
            clean: false,
        }
    }

    /// The value of property `name` among the properties whose tokens
    /// start at `at` (one node's, NOPs skipped): names are compared as
    /// bytes in place in the strings block.
    pub fn find_prop(&self, at: usize, name: &[u8]) -> Option<&'a [u8]> {
        self.find_prop_named(at, name).map(|(_, v)| v)
    }

    /// [`Dt::find_prop`], with the name as the strings block holds it.
    pub fn find_prop_named(&self, mut at: usize, name: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
        let s = self.structs;
        loop {
            let token = be32(s, at)?;
            at += 4;
            match token {
                NOP => {}
                PROP => {
                    let (len, off) = (be32(s, at)? as usize, be32(s, at + 4)? as usize);
                    let start = at + 8;
                    let value = s.get(start..start.checked_add(len)?)?;
                    at = (start + len).next_multiple_of(4);
                    if self.name_is(off, name) {
                        return self.strings.get(off..off + name.len()).map(|n| (n, value));
                    }
                }
                _ => return None,
            }
        }
    }

    /// Every node once, in document order.
    pub fn nodes(&self) -> impl Iterator<Item = RawNode<'a>> + '_ {
        let dt = *self;
        self.walk().filter_map(move |e| match e {
            Event::Begin { name, depth, at } => Some(RawNode { dt, name, depth, at }),
            _ => None,
        })
    }

    /// The root node.
    pub fn root(&self) -> Option<RawNode<'a>> {
        self.nodes().next()
    }

    /// The node at absolute `path` ("/", "/soc/serial@0"): each component
    /// matches a node name exactly, or its name without the unit address.
    pub fn find(&self, path: &str) -> Option<RawNode<'a>> {
        let mut want = path.split('/').filter(|c| !c.is_empty());
        let mut next = want.next();
        let mut matched = 0; // depth of the deepest node on the path so far
        for n in self.nodes() {
            if n.depth == 0 {
                if next.is_none() {
                    return Some(n);
                }
                continue;
            }
            if n.depth <= matched {
                // Left the subtree that had to hold the rest of the path.
                return None;
            }
            if n.depth == matched + 1 && next.is_some_and(|c| component_matches(c, n.name)) {
                matched += 1;
                next = want.next();
                if next.is_none() {
                    return Some(n);
                }
            }
        }
        None
    }

    /// (phandle, path) of every node that has one, sorted by phandle: one
    /// walk, for any number of lookups.
    pub fn phandles(&self) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        let mut path = String::new();
        let mut lens: Vec<usize> = Vec::new();
        for e in self.walk() {
            match e {
                Event::Begin { name, depth, .. } => {
                    lens.truncate(depth);
                    path.truncate(lens.last().copied().unwrap_or(0));
                    if depth > 0 {
                        path.push('/');
                        path.push_str(core::str::from_utf8(name).unwrap_or("?"));
                    }
                    lens.push(path.len());
                }
                Event::Prop { name, value } if name == b"phandle" || name == b"linux,phandle" => {
                    if let (Some(ph), false) = (be32(value, 0), out.iter().any(|(_, p)| *p == path)) {
                        out.push((
                            ph,
                            if path.is_empty() {
                                String::from("/")
                            } else {
                                path.clone()
                            },
                        ));
                    }
                }
                _ => {}
            }
        }
        out.sort_unstable_by_key(|e| e.0);
        out
    }

    /// (phandle, node) of every node that has one, sorted by phandle.
    pub fn phandle_nodes(&self) -> Vec<(u32, RawNode<'a>)> {
        let mut out: Vec<(u32, RawNode<'a>)> = self
            .nodes()
            .filter_map(|n| Some((n.u32("phandle").or_else(|| n.u32("linux,phandle"))?, n)))
            .collect();
        out.sort_unstable_by_key(|e| e.0);
        out
    }

    /// Whether the name at `off` in the strings block is `name`.
    pub(crate) fn name_is(&self, off: usize, name: &[u8]) -> bool {
        let Some(end) = off.checked_add(name.len()) else {
            return false;
        };
        // The first byte decides for most names, without a call to memcmp.
        self.strings.get(off) == name.first()
            && self.strings.get(end) == Some(&0)
            && self.strings.get(off..end) == Some(name)
    }

    /// The first byte of the name at `off` (0 for an empty one).
    pub(crate) fn name_start(&self, off: usize) -> u8 {
        self.strings.get(off).copied().unwrap_or(0)
    }

    fn string(&self, off: usize) -> Option<&'a [u8]> {
        let rest = self.strings.get(off..)?;
        let len = rest.iter().position(|&b| b == 0)?;
        rest.get(..len)
    }
}

/// `c` names `name`: exactly, or `name` without its unit address.
fn component_matches(c: &str, name: &[u8]) -> bool {
    let c = c.as_bytes();
    name == c || (!c.contains(&b'@') && name.split(|&b| b == b'@').next() == Some(c))
}

/// The cursor of [`Dt::walk`].
pub struct Walk<'a> {
    pub(super) dt: Dt<'a>,
    pub(super) at: usize,
    pub(super) depth: usize,
    pub(super) done: bool,
    /// The root closed (what follows is only NOPs and FDT_END to check).
    pub(super) clean: bool,
}

impl Walk<'_> {
    /// Whether the walk ended where a well-formed tree ends: the root
    /// closed, then FDT_END.
    pub fn clean(&self) -> bool {
        self.clean && self.done
    }
}

/// A step of the walk with a property's name left as its offset in the
/// strings block (checked to be a terminated string): what skipping
/// properties, or matching a few known names in place, needs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step<'a> {
    Begin { name: &'a [u8], at: usize },
    Prop { name_off: usize, value: &'a [u8] },
    End,
}

impl<'a> Iterator for Walk<'a> {
    type Item = Event<'a>;

    fn next(&mut self) -> Option<Event<'a>> {
        let depth = self.depth;
        match self.step()? {
            Step::Begin { name, at } => Some(Event::Begin { name, depth, at }),
            // step() checked the name is terminated: string() finds it.
            Step::Prop { name_off, value } => Some(Event::Prop {
                name: self.dt.string(name_off).unwrap_or(&[]),
                value,
            }),
            Step::End => Some(Event::End),
        }
    }
}

impl<'a> Walk<'a> {
    /// The next token that is not a NOP.
    pub(crate) fn step(&mut self) -> Option<Step<'a>> {
        let s = self.dt.structs;
        // Every token moves the cursor on by at least 4 bytes, so this ends.
        while !self.done {
            let Some(token) = be32(s, self.at) else { break };
            self.at += 4;
            match token {
                NOP => {}
                BEGIN_NODE => {
                    let rest = s.get(self.at..).unwrap_or(&[]);
                    let Some(len) = rest.iter().position(|&b| b == 0) else {
                        break;
                    };
                    let name = rest.get(..len).unwrap_or(&[]);
                    self.at = (self.at + len + 1).next_multiple_of(4);
                    if self.depth >= MAX_DEPTH {
                        break;
                    }
                    self.depth += 1;
                    return Some(Step::Begin { name, at: self.at });
                }
                PROP => {
                    let (Some(len), Some(off)) = (be32(s, self.at), be32(s, self.at + 4)) else {
                        break;
                    };
                    let start = self.at + 8;
                    let Some(value) = start.checked_add(len as usize).and_then(|end| s.get(start..end))
                    else {
                        break;
                    };
                    let name_off = off as usize;
                    if self.dt.last_nul.is_none_or(|last| name_off > last) {
                        break;
                    }
                    self.at = (start + len as usize).next_multiple_of(4);
                    // A property outside any node is malformed.
                    if self.depth == 0 {
                        break;
                    }
                    return Some(Step::Prop { name_off, value });
                }
                END_NODE => {
                    if self.depth == 0 {
                        break;
                    }
                    self.depth -= 1;
                    if self.depth == 0 {
                        // The root closed: only FDT_END (or NOPs) may follow.
                        self.done = true;
                        self.clean = self.ends_here();
                    }
                    return Some(Step::End);
                }
                _ => break, // FDT_END, or garbage
            }
        }
        self.done = true;
        None
    }
}

impl Walk<'_> {
    /// Only NOPs, then FDT_END, from the cursor on.
    fn ends_here(&self) -> bool {
        let mut at = self.at;
        loop {
            match be32(self.dt.structs, at) {
                Some(NOP) => at += 4,
                Some(END) => return true,
                _ => return false,
            }
        }
    }
}

/// One node: its name and where its properties are.
#[derive(Clone, Copy, Debug)]
pub struct RawNode<'a> {
    dt: Dt<'a>,
    pub name: &'a [u8],
    pub depth: usize,
    at: usize,
}

impl<'a> RawNode<'a> {
    /// The name as text, if it is UTF-8.
    pub fn name_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.name).ok()
    }

    /// The node's own properties (name, value), NOPs between them skipped.
    pub fn props(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        let mut w = Walk {
            dt: self.dt,
            at: self.at,
            depth: 1,
            done: false,
            clean: false,
        };
        core::iter::from_fn(move || match w.next()? {
            Event::Prop { name, value } => Some((name, value)),
            _ => None,
        })
    }

    /// The value of property `name`.
    pub fn property(&self, name: &str) -> Option<&'a [u8]> {
        self.props().find(|(n, _)| *n == name.as_bytes()).map(|(_, v)| v)
    }

    /// Property `name` as one big-endian cell.
    pub fn u32(&self, name: &str) -> Option<u32> {
        self.property(name)
            .filter(|v| v.len() == 4)
            .and_then(|v| be32(v, 0))
    }

    /// The direct children, in order (each found by skipping the subtree
    /// before it).
    pub fn children(&self) -> impl Iterator<Item = RawNode<'a>> {
        let dt = self.dt;
        let mine = self.depth;
        let mut w = Walk {
            dt,
            at: self.at,
            depth: 1,
            done: false,
            clean: false,
        };
        // Properties are skipped without reading their names.
        core::iter::from_fn(move || loop {
            let before = w.depth;
            match w.step()? {
                Step::Begin { name, at } if before == 1 => {
                    return Some(RawNode {
                        dt,
                        name,
                        depth: mine + 1,
                        at,
                    })
                }
                // Back at this node's level: it closed.
                Step::End if w.depth == 0 => return None,
                _ => {}
            }
        })
    }
}

/// Raw nodes read straight off the blob, for what runs before the heap
/// exists (the EL2 map's RAM, the early console): each child list is a
/// walk, so a [`Tree`] answers everything later.
impl<'a> crate::platform::ranges::DtNode<'a> for RawNode<'a> {
    fn prop(&self, name: &str) -> Option<&'a [u8]> {
        self.dt.find_prop(self.at, name.as_bytes())
    }

    fn name(&self) -> &'a str {
        core::str::from_utf8(self.name).unwrap_or("\u{fffd}")
    }

    fn children(self) -> impl Iterator<Item = Self> {
        RawNode::children(&self)
    }
}

/// The first cell of a value that is whole cells (as `vm::dtb` reads them).
fn first_cell(v: &[u8]) -> Option<u32> {
    if !v.len().is_multiple_of(4) {
        return None;
    }
    be32(v, 0)
}

/// What the guest DTB generator asks of a node a phandle names (an
/// interrupt parent, a clock provider).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub interrupt_cells: Option<u32>,
    pub clock_cells: Option<u32>,
    /// `compatible`, raw (NUL-separated strings).
    compatible: Vec<u8>,
}

impl Target {
    /// From a node of a [`Tree`].
    pub fn of(n: &Node) -> Self {
        let cell = |name| n.property(name).and_then(|p| first_cell(p.value));
        Target {
            interrupt_cells: cell("#interrupt-cells"),
            clock_cells: cell("#clock-cells"),
            compatible: n
                .property("compatible")
                .map(|p| p.value.to_vec())
                .unwrap_or_default(),
        }
    }

    #[cfg(test)]
    fn of_node(n: &RawNode) -> Self {
        let cell = |name| n.property(name).and_then(first_cell);
        Target {
            interrupt_cells: cell("#interrupt-cells"),
            clock_cells: cell("#clock-cells"),
            compatible: n.property("compatible").map(<[u8]>::to_vec).unwrap_or_default(),
        }
    }

    /// Whether one of its compatible strings is in `any`.
    pub fn is_compatible(&self, any: &[&str]) -> bool {
        self.compatible
            .split(|&b| b == 0)
            .any(|c| any.iter().any(|a| a.as_bytes() == c))
    }
}

/// The node `phandle` names in `host`, as a [`Target`].
pub fn phandle_target(host: &Tree, phandle: u32) -> Option<Target> {
    host.find_phandle(phandle).map(|n| Target::of(&n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;
    use std::string::ToString;

    pub(super) fn dtb(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/dtbs/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    pub(super) const BOARDS: &[&str] = &[
        "qemu-virt-gicv3-smp4.dtb",
        "qemu-virt-gicv2-smp8.dtb",
        "imx8mp-evk.dtb",
        "qemu-virt-nostdout-live.dtb",
    ];

    /// Every node's path and every property, from our reader.
    pub(super) fn ours(blob: &[u8]) -> Vec<String> {
        let dt = Dt::new(blob).unwrap();
        let mut out = Vec::new();
        let mut stack: Vec<String> = Vec::new();
        for e in dt.walk() {
            match e {
                Event::Begin { name, depth, .. } => {
                    stack.truncate(depth);
                    stack.push(String::from_utf8(name.to_vec()).unwrap());
                    out.push(format!("node {}", stack.join("/")));
                }
                Event::Prop { name, value } => out.push(format!(
                    "prop {} {} {:?}",
                    stack.join("/"),
                    std::str::from_utf8(name).unwrap(),
                    value
                )),
                Event::End => {}
            }
        }
        out
    }

    /// The same from the `fdt` crate.
    fn theirs(blob: &[u8]) -> Vec<String> {
        fn visit(n: fdt::node::FdtNode, path: &str, out: &mut Vec<String>) {
            let path = if path.is_empty() && n.name == "/" {
                String::new()
            } else {
                format!("{path}/{}", n.name)
            };
            out.push(format!("node {}", if path.is_empty() { "" } else { &path[1..] }));
            for p in n.properties() {
                out.push(format!(
                    "prop {} {} {:?}",
                    if path.is_empty() { "" } else { &path[1..] },
                    p.name,
                    p.value
                ));
            }
            for c in n.children() {
                visit(c, &path, out);
            }
        }
        let f = fdt::Fdt::new(blob).unwrap();
        let mut out = Vec::new();
        visit(f.find_node("/").unwrap(), "", &mut out);
        out
    }

    #[test]
    fn reads_every_node_and_property_the_fdt_crate_reads() {
        for b in BOARDS {
            let blob = dtb(b);
            assert_eq!(ours(&blob), theirs(&blob), "{b}");
        }
    }

    #[test]
    fn finds_nodes_by_path_and_phandle() {
        let blob = dtb("qemu-virt-gicv3-smp4.dtb");
        let dt = Dt::new(&blob).unwrap();
        let f = fdt::Fdt::new(&blob).unwrap();
        assert_eq!(dt.find("/").unwrap().depth, 0);
        let uart = dt.find("/pl011@9000000").unwrap();
        assert_eq!(uart.name, b"pl011@9000000");
        assert!(uart.property("compatible").unwrap().starts_with(b"arm,pl011"));
        assert_eq!(dt.find("/cpus/cpu@1").unwrap().depth, 2);
        assert!(dt.find("/cpus/cpu@9").is_none());
        assert!(dt.find("/nothing").is_none());
        let index = dt.phandles();
        assert!(!index.is_empty());
        for (ph, path) in &index {
            let ours = dt.find(path).unwrap();
            let theirs = f.find_phandle(*ph).unwrap();
            assert_eq!(ours.name_str().unwrap(), theirs.name, "phandle {ph:#x} at {path}");
            assert_eq!(ours.u32("phandle"), Some(*ph));
        }
        let root = dt.root().unwrap();
        let names: Vec<_> = root
            .children()
            .map(|c| c.name_str().unwrap().to_string())
            .collect();
        let expect: Vec<_> = f
            .find_node("/")
            .unwrap()
            .children()
            .map(|c| c.name.to_string())
            .collect();
        assert_eq!(names, expect);
    }

    #[test]
    fn phandle_targets_agree_with_the_fdt_crate() {
        for b in BOARDS {
            let blob = dtb(b);
            let dt = Dt::new(&blob).unwrap();
            let tree = Tree::new(&blob).unwrap();
            let f = fdt::Fdt::new(&blob).unwrap();
            for (ph, n) in dt.phandle_nodes() {
                let theirs = f.find_phandle(ph).unwrap();
                let cell = |name| theirs.property(name).and_then(|p| first_cell(p.value));
                let theirs = Target {
                    interrupt_cells: cell("#interrupt-cells"),
                    clock_cells: cell("#clock-cells"),
                    compatible: theirs
                        .property("compatible")
                        .map(|p| p.value.to_vec())
                        .unwrap_or_default(),
                };
                assert_eq!(Target::of_node(&n), theirs, "{b}: phandle {ph:#x}");
                assert_eq!(phandle_target(&tree, ph), Some(theirs));
            }
            assert_eq!(phandle_target(&tree, 0xdead_beef), None);
        }
        let t = Target {
            compatible: b"arm,gic-v3\0arm,other\0".to_vec(),
            ..Target::default()
        };
        assert!(t.is_compatible(&["x", "arm,other"]));
        assert!(!t.is_compatible(&["arm,gic"]));
    }

    /// Inserts an FDT_NOP before every token of the structure block.
    pub(super) fn with_nops(blob: &[u8]) -> Vec<u8> {
        let field = |i: usize| be32(blob, 4 * i).unwrap() as usize;
        let (off_struct, size_struct) = (field(2), field(9));
        let dt = Dt::new(blob).unwrap();
        // Token boundaries, from a walk over the original.
        let mut starts = Vec::new();
        let mut w = dt.walk();
        loop {
            let before = w.at;
            if w.next().is_none() {
                break;
            }
            starts.push(before);
        }
        let s = &blob[off_struct..off_struct + size_struct];
        let mut structs = Vec::new();
        let mut last = 0;
        for &at in &starts {
            structs.extend_from_slice(&s[last..at]);
            structs.extend_from_slice(&NOP.to_be_bytes());
            last = at;
        }
        structs.extend_from_slice(&s[last..]);
        let grow = structs.len() - size_struct;
        // Header, reservation map and structs, then the strings moved on.
        let mut out = blob[..off_struct].to_vec();
        out.extend_from_slice(&structs);
        out.extend_from_slice(&blob[off_struct + size_struct..]);
        let set = |out: &mut Vec<u8>, i: usize, v: usize| {
            out[4 * i..4 * i + 4].copy_from_slice(&(v as u32).to_be_bytes())
        };
        set(&mut out, 1, field(1) + grow);
        set(&mut out, 9, size_struct + grow);
        if field(3) > off_struct {
            set(&mut out, 3, field(3) + grow);
        }
        out
    }

    #[test]
    fn nop_tokens_anywhere_lose_nothing() {
        for b in BOARDS {
            let blob = dtb(b);
            let nops = with_nops(&blob);
            assert!(nops.len() > blob.len());
            assert_eq!(ours(&nops), ours(&blob), "{b}");
            let dt = Dt::new(&nops).unwrap();
            assert_eq!(dt.nodes().count(), Dt::new(&blob).unwrap().nodes().count());
            assert!(dt.find("/chosen").is_some() || !b.contains("virt"));
        }
    }

    #[test]
    fn malformed_headers_are_errors() {
        let blob = dtb("qemu-virt-gicv3-smp4.dtb");
        assert_eq!(Dt::new(&blob[..20]).unwrap_err(), DtError::Truncated);
        assert_eq!(Dt::new(&blob[..blob.len() / 2]).unwrap_err(), DtError::Truncated);
        let mut bad = blob.clone();
        bad[0] = 0;
        assert_eq!(Dt::new(&bad).unwrap_err(), DtError::BadMagic);
        let mut bad = blob.clone();
        bad[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(Dt::new(&bad).unwrap_err(), DtError::BadLayout);
        let mut bad = blob.clone();
        bad[20..24].copy_from_slice(&16u32.to_be_bytes());
        assert_eq!(Dt::new(&bad).unwrap_err(), DtError::Version);
    }

    #[test]
    fn a_tree_cut_short_ends_the_walk() {
        let blob = dtb("qemu-virt-gicv3-smp4.dtb");
        let field = |i: usize| be32(&blob, 4 * i).unwrap() as usize;
        let mut cut = blob.clone();
        // Claim a structure block of half its size: the walk stops inside.
        cut[36..40].copy_from_slice(&((field(9) / 2) as u32 & !3).to_be_bytes());
        let dt = Dt::new(&cut).unwrap();
        let n = dt.nodes().count();
        assert!(n > 0 && n < Dt::new(&blob).unwrap().nodes().count());
    }
}
