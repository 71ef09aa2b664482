//! The hypervisor's own device-tree address translation
//! (src/platform/ranges.rs, with the `PhysRange` it returns from
//! src/mm/addr.rs), built into xtask as well: the config check finds each
//! device where the hypervisor maps it, through the same `ranges` code.

#[path = "../../src/mm/addr.rs"]
#[allow(dead_code)]
mod addr;
pub use addr::PhysRange;

#[path = "../../src/platform/ranges.rs"]
#[allow(dead_code)]
pub mod ranges;
