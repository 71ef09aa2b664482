//! Tessera's host-side tool, as a library so each piece (ELF conversion, payload packing,
//! QEMU scenarios) can be reused and unit-tested; `main.rs` is only the command line.

pub mod args;
pub mod assets;
pub mod bench;
pub mod bench_links;
pub mod bench_vsock;
pub mod board;
pub mod board_console;
#[cfg(test)]
mod board_tests;
pub mod config;
pub mod config_dma;
pub mod config_hyp;
#[cfg(test)]
mod config_proptests;
#[cfg(test)]
mod config_tests;
pub mod cpio;
pub mod debian;
pub mod dt_ranges;
pub mod dtbs;
pub mod fdt_patch;
pub mod guest_links;
pub mod host_tools;
pub mod image;
pub mod images;
pub mod intervm_scenarios;
pub mod links;
pub mod media;
pub mod pack;
pub mod paths;
pub mod qemu;
pub mod run_cmd;
pub mod runner;
pub mod scenarios;
pub mod scrub_scenarios;
pub mod seed_scenarios;
pub mod smmu_linux;
pub mod smmu_scenarios;
pub mod soak;
pub mod test_cmd;
