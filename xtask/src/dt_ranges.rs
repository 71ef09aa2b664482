//! The hypervisor's own device-tree address translation
//! (src/platform/ranges.rs, with the `PhysRange` it returns from
//! src/mm/addr.rs), built into xtask as well: the config check finds each
//! device where the hypervisor maps it, through the same `ranges` code,
//! handed the `fdt` crate's nodes.

#[path = "../../src/mm/addr.rs"]
#[allow(dead_code)]
mod addr;
pub use addr::PhysRange;

#[path = "../../src/platform/ranges.rs"]
#[allow(dead_code)]
pub mod ranges;

impl<'b, 'a> ranges::DtNode<'a> for fdt::node::FdtNode<'b, 'a> {
    fn prop(&self, name: &str) -> Option<&'a [u8]> {
        self.property(name).map(|p| p.value)
    }

    fn name(&self) -> &'a str {
        self.name
    }

    fn children(self) -> impl Iterator<Item = Self> {
        fdt::node::FdtNode::children(self)
    }
}
