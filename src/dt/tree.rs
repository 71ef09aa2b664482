//! The board DTB read once into an index: every node with its name, its
//! parent, first child and next sibling, and where its properties start;
//! the phandles sorted for binary search; the memory reservations. Every
//! later question (a VM's device, a node's ancestors for `ranges`, the
//! foreign nodes of a page, an SMMU's phandle, a copy into a guest DTB) is
//! answered from it without walking the tree again. A property lookup reads
//! the node's own few properties only, comparing names as bytes against
//! the strings block.
//!
//! Built by one pass of [`super::Dt::walk`], so FDT_NOP tokens anywhere are
//! skipped and a damaged blob is an error naming the last node read, never
//! a panic.

use super::{be32, Dt, DtError, Event, Step, Walk};
use crate::platform::ranges;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// No such node (the root's parent, a leaf's first child, the last
/// sibling's next).
const NONE: u32 = u32::MAX;
/// A node or property name that is not UTF-8 (it matches nothing asked).
const NOT_UTF8: &str = "\u{fffd}";

/// The properties nearly every question reads (address translation,
/// discovery, the foreign-node scan): found while indexing, so a lookup of
/// one of them reads no property list.
pub(super) const KNOWN: [&str; 8] = [
    "reg",
    "ranges",
    "compatible",
    "status",
    "#address-cells",
    "#size-cells",
    "device_type",
    "interrupts",
];

/// [`known`] of the name at `off` in `dt`'s strings block, compared in
/// place (the first byte rules out most names).
fn known_at(dt: &Dt, off: usize) -> Option<usize> {
    let candidates: &[usize] = match dt.name_start(off) {
        b'r' => &[0, 1],
        b'c' => &[2],
        b's' => &[3],
        b'#' => &[4, 5],
        b'd' => &[6],
        b'i' => &[7],
        _ => return None,
    };
    candidates
        .iter()
        .copied()
        .find(|&k| KNOWN.get(k).is_some_and(|n| dt.name_is(off, n.as_bytes())))
}

pub(super) fn known(name: &[u8]) -> Option<usize> {
    // A match compares the length first: most names are none of these.
    match name {
        b"reg" => Some(0),
        b"ranges" => Some(1),
        b"compatible" => Some(2),
        b"status" => Some(3),
        b"#address-cells" => Some(4),
        b"#size-cells" => Some(5),
        b"device_type" => Some(6),
        b"interrupts" => Some(7),
        _ => None,
    }
}

/// Where a value is in the structure block: (offset, length); offset
/// `NONE` for a property the node does not have.
type Span = (u32, u32);
const ABSENT: Span = (NONE, 0);

#[derive(Clone, Copy, Debug)]
struct Entry<'a> {
    name: &'a str,
    /// Offset in the structure block of the node's first property token.
    at: u32,
    parent: u32,
    first_child: u32,
    next_sibling: u32,
    /// The first value of each of the [`KNOWN`] properties.
    known: [Span; KNOWN.len()],
}

/// A parsed device tree.
pub struct Tree<'a> {
    dt: Dt<'a>,
    blob: &'a [u8],
    nodes: Vec<Entry<'a>>,
    /// (phandle, node), sorted by phandle; a repeated phandle keeps the
    /// first node that has it.
    phandles: Vec<(u32, u32)>,
}

/// Why a blob was not indexed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeError {
    pub error: DtError,
    /// The path of the last node read before the damage ("" if none).
    pub after: String,
}

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error {
            DtError::Truncated => write!(f, "device tree truncated"),
            DtError::BadMagic => write!(f, "not a device tree (bad magic)"),
            DtError::BadLayout => write!(f, "device tree blocks outside the blob"),
            DtError::Version => write!(f, "device tree version is not 17 compatible"),
            DtError::Structure => write!(
                f,
                "device tree structure block damaged after node {}",
                if self.after.is_empty() { "/" } else { &self.after }
            ),
        }
    }
}

fn utf8(b: &[u8]) -> &str {
    core::str::from_utf8(b).unwrap_or(NOT_UTF8)
}

impl<'a> Tree<'a> {
    /// Indexes `blob` (which may be longer than the tree) in one pass.
    pub fn new(blob: &'a [u8]) -> Result<Self, TreeError> {
        let dt = Dt::new(blob).map_err(|error| TreeError {
            error,
            after: String::new(),
        })?;
        let mut t = Tree {
            dt,
            blob,
            // Real trees spend about a hundred bytes of structure per node.
            nodes: Vec::with_capacity(dt.structs.len() / 96),
            phandles: Vec::new(),
        };
        // Open nodes, innermost last, each with its last child so far.
        let mut open: Vec<(u32, u32)> = Vec::new();
        let mut walk = dt.walk();
        while let Some(step) = walk.step() {
            match step {
                Step::Begin { name, at } => {
                    let i = t.nodes.len() as u32;
                    let parent = match open.last_mut() {
                        Some((p, last)) => {
                            let prev = core::mem::replace(last, i);
                            let link = if prev == NONE {
                                t.nodes.get_mut(*p as usize).map(|e| &mut e.first_child)
                            } else {
                                t.nodes.get_mut(prev as usize).map(|e| &mut e.next_sibling)
                            };
                            if let Some(link) = link {
                                *link = i;
                            }
                            *p
                        }
                        None => NONE,
                    };
                    t.nodes.push(Entry {
                        name: utf8(name),
                        at: at as u32,
                        parent,
                        first_child: NONE,
                        next_sibling: NONE,
                        known: [ABSENT; KNOWN.len()],
                    });
                    open.push((i, NONE));
                }
                Step::Prop { name_off, value }
                    if matches!(dt.name_start(name_off), b'p' | b'l')
                        && (dt.name_is(name_off, b"phandle") || dt.name_is(name_off, b"linux,phandle")) =>
                {
                    // A node's properties come together: one entry per node.
                    if let (Some(&(node, _)), Some(ph), 4) = (open.last(), be32(value, 0), value.len()) {
                        if t.phandles.last().is_none_or(|&(_, n)| n != node) {
                            t.phandles.push((ph, node));
                        }
                    }
                }
                Step::Prop { name_off, value } => {
                    let node = open.last().and_then(|&(n, _)| t.nodes.get_mut(n as usize));
                    if let (Some(e), Some(k)) = (node, known_at(&dt, name_off)) {
                        // The value lies inside the structure block.
                        let off = (value.as_ptr() as usize).wrapping_sub(dt.structs.as_ptr() as usize);
                        if let Some(slot) = e.known.get_mut(k).filter(|s| s.0 == NONE) {
                            *slot = (off as u32, value.len() as u32);
                        }
                    }
                }
                Step::End => {
                    open.pop();
                }
            }
        }
        if !walk.clean() {
            let after = t.nodes.len().checked_sub(1).map(|i| t.node(i as u32).path());
            return Err(TreeError {
                error: DtError::Structure,
                after: after.unwrap_or_default(),
            });
        }
        // Stable: the first node with a repeated phandle wins.
        t.phandles.sort_by_key(|e| e.0);
        Ok(t)
    }

    /// The blob's `totalsize`.
    pub fn total_size(&self) -> usize {
        be32(self.blob, 4).map_or(0, |s| s as usize)
    }

    fn node(&self, i: u32) -> Node<'_, 'a> {
        let name = self.nodes.get(i as usize).map_or("", |e| e.name);
        Node { tree: self, i, name }
    }

    fn get(&self, i: u32) -> Option<Node<'_, 'a>> {
        (i != NONE && (i as usize) < self.nodes.len()).then(|| self.node(i))
    }

    /// The root node (a tree always has one).
    pub fn root(&self) -> Node<'_, 'a> {
        self.node(0)
    }

    /// Every node, in document order.
    pub fn nodes(&self) -> impl Iterator<Item = Node<'_, 'a>> + '_ {
        (0..self.nodes.len() as u32).map(|i| self.node(i))
    }

    /// Calls `f(node, ancestors)` for every node but the root, in document
    /// order, its ancestors root first; nodes deeper than `max_depth` are
    /// left out.
    pub fn with_ancestors(&self, max_depth: usize, mut f: impl FnMut(Node<'_, 'a>, &[Node<'_, 'a>])) {
        let mut chain: Vec<Node<'_, 'a>> = Vec::new();
        for n in self.nodes().skip(1) {
            let parent = self.nodes.get(n.index()).map_or(NONE, |e| e.parent);
            while chain.last().is_some_and(|c| c.i != parent) {
                chain.pop();
            }
            if chain.is_empty() {
                chain.push(self.root());
            }
            if chain.len() <= max_depth {
                f(n, &chain);
            }
            chain.push(n);
        }
    }

    /// The node at absolute `path`, every component matching a node name
    /// exactly (unit address included; no aliases).
    pub fn node_at(&self, path: &str) -> Option<Node<'_, 'a>> {
        let mut n = self.root();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            n = n.children().find(|c| c.name == part)?;
        }
        Some(n)
    }

    /// The node with this phandle.
    pub fn find_phandle(&self, phandle: u32) -> Option<Node<'_, 'a>> {
        let at = self.phandles.partition_point(|e| e.0 < phandle);
        let &(ph, node) = self.phandles.get(at)?;
        (ph == phandle).then(|| self.get(node)).flatten()
    }

    /// The `/memreserve/` entries (address, size), up to the terminating
    /// empty one or the end of the blob.
    pub fn memory_reservations(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let start = be32(self.blob, 16).map_or(usize::MAX, |o| o as usize);
        let be64 =
            |at: usize| Some((u64::from(be32(self.blob, at)?) << 32) | u64::from(be32(self.blob, at + 4)?));
        (0..)
            .map_while(move |k: usize| {
                let at = start.checked_add(k.checked_mul(16)?)?;
                Some((be64(at)?, be64(at.checked_add(8)?)?))
            })
            .take_while(|&(a, s)| (a, s) != (0, 0))
    }
}

/// One node of a [`Tree`].
#[derive(Clone, Copy)]
pub struct Node<'t, 'a> {
    tree: &'t Tree<'a>,
    i: u32,
    /// Unit address included; empty for the root.
    pub name: &'a str,
}

impl fmt::Debug for Node<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Node({})", self.path())
    }
}

impl PartialEq for Node<'_, '_> {
    fn eq(&self, other: &Self) -> bool {
        core::ptr::eq(self.tree, other.tree) && self.i == other.i
    }
}

/// One property: its name and raw value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prop<'a> {
    pub name: &'a str,
    pub value: &'a [u8],
}

impl<'a> Prop<'a> {
    /// The value as one string (trailing NULs dropped), if UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.value)
            .ok()
            .map(|s| s.trim_end_matches('\0'))
    }

    /// A one- or two-cell value as a number.
    pub fn as_usize(&self) -> Option<usize> {
        match self.value.len() {
            4 | 8 => ranges::read_cells(self.value, self.value.len() / 4).map(|v| v as usize),
            _ => None,
        }
    }

    /// The first cell, if the value is whole cells.
    pub fn first_cell(&self) -> Option<u32> {
        be32(self.value, 0).filter(|_| self.value.len().is_multiple_of(4))
    }

    /// The value as big-endian cells (a trailing partial cell left out).
    pub fn cells(&self) -> impl Iterator<Item = u32> + 'a {
        let v = self.value;
        (0..v.len() / 4).filter_map(move |k| be32(v, 4 * k))
    }
}

/// A `compatible` list.
#[derive(Clone, Copy, Debug)]
pub struct Compatible<'a>(&'a [u8]);

impl<'a> Compatible<'a> {
    /// Every string, in order (up to one that is not UTF-8).
    pub fn all(self) -> impl Iterator<Item = &'a str> {
        let v = self.0.strip_suffix(b"\0").unwrap_or(self.0);
        let none = v.is_empty();
        v.split(|&b| b == 0)
            .filter(move |_| !none)
            .map_while(|s| core::str::from_utf8(s).ok())
    }

    /// The first string ("" if none).
    pub fn first(self) -> &'a str {
        self.all().next().unwrap_or("")
    }
}

impl<'t, 'a> Node<'t, 'a> {
    fn entry(&self) -> Option<&'t Entry<'a>> {
        self.tree.nodes.get(self.i as usize)
    }

    /// The node's position in document order (its identity in the tree).
    pub fn index(&self) -> usize {
        self.i as usize
    }

    pub fn parent(&self) -> Option<Node<'t, 'a>> {
        self.tree.get(self.entry()?.parent)
    }

    /// The direct children, in order.
    pub fn children(&self) -> impl Iterator<Item = Node<'t, 'a>> + 't {
        let tree = self.tree;
        let mut next = self.entry().map_or(NONE, |e| e.first_child);
        core::iter::from_fn(move || {
            let n = tree.get(next)?;
            next = n.entry().map_or(NONE, |e| e.next_sibling);
            Some(n)
        })
    }

    /// The ancestors, root first, its parent last (empty for the root).
    pub fn ancestors(&self) -> Vec<Node<'t, 'a>> {
        let mut out = Vec::new();
        let mut p = self.parent();
        // A parent always comes before its child, so this ends.
        while let Some(n) = p {
            p = n.parent().filter(|q| q.i < n.i);
            out.push(n);
        }
        out.reverse();
        out
    }

    /// The absolute path ("/" for the root).
    pub fn path(&self) -> String {
        let mut p = String::new();
        for n in self.ancestors().iter().skip(1).chain(core::iter::once(self)) {
            if n.i != 0 {
                p.push('/');
                p.push_str(n.name);
            }
        }
        if p.is_empty() {
            p.push('/');
        }
        p
    }

    /// The node's own properties, in order.
    pub fn properties(&self) -> impl Iterator<Item = Prop<'a>> + 't {
        let mut w = Walk {
            dt: self.tree.dt,
            at: self.entry().map_or(usize::MAX, |e| e.at as usize),
            depth: 1,
            done: false,
            clean: false,
        };
        core::iter::from_fn(move || match w.next()? {
            Event::Prop { name, value } => Some(Prop {
                name: utf8(name),
                value,
            }),
            _ => None,
        })
    }

    /// Property `name`.
    pub fn property(&self, name: &str) -> Option<Prop<'a>> {
        let e = self.entry()?;
        if let Some(k) = known(name.as_bytes()) {
            let &(off, len) = e.known.get(k)?;
            let start = (off != NONE).then_some(off as usize)?;
            let value = self
                .tree
                .dt
                .structs
                .get(start..start.checked_add(len as usize)?)?;
            return Some(Prop {
                name: KNOWN.get(k)?,
                value,
            });
        }
        let (name, value) = self.tree.dt.find_prop_named(e.at as usize, name.as_bytes())?;
        Some(Prop {
            name: utf8(name),
            value,
        })
    }

    /// Property `name` as a string.
    pub fn str(&self, name: &str) -> Option<&'a str> {
        self.property(name).and_then(|p| p.as_str())
    }

    /// The first cell of property `name`.
    pub fn u32(&self, name: &str) -> Option<u32> {
        self.property(name).and_then(|p| p.first_cell())
    }

    pub fn compatible(&self) -> Option<Compatible<'a>> {
        self.property("compatible").map(|p| Compatible(p.value))
    }

    /// Whether one of its compatible strings is in `any`.
    pub fn is_compatible(&self, any: &[&str]) -> bool {
        // As bytes: no UTF-8 check of strings that are compared anyway.
        self.property("compatible").is_some_and(|p| {
            p.value
                .split(|&b| b == 0)
                .any(|c| !c.is_empty() && any.iter().any(|a| a.as_bytes() == c))
        })
    }

    /// No `status`, or "okay" (or the older "ok").
    pub fn is_okay(&self) -> bool {
        self.str("status").is_none_or(|s| s == "okay" || s == "ok")
    }
}

impl<'t, 'a> ranges::DtNode<'a> for Node<'t, 'a> {
    fn prop(&self, name: &str) -> Option<&'a [u8]> {
        self.property(name).map(|p| p.value)
    }

    fn name(&self) -> &'a str {
        self.name
    }

    fn children(self) -> impl Iterator<Item = Self> {
        Node::children(&self)
    }
}
