//! `cargo xtask run`: build, then boot the hypervisor in QEMU interactively.

use crate::qemu::{self, Console, Machine};
use crate::{images, paths};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::Duration;

pub struct Options {
    pub gic: Option<u32>,
    pub smp: Option<u32>,
    pub mem: Option<String>,
    /// The VM config to run; `None` means the board's demo.
    pub config: Option<PathBuf>,
    /// Boot the hypervisor without any VM.
    pub no_config: bool,
    pub gdb: bool,
    pub append: Option<String>,
    pub dtb: Option<PathBuf>,
    /// Seconds before QEMU is stopped; 0 means never.
    pub timeout_secs: u64,
    /// Boot this image instead of the freshly built `target/tessera.bin`.
    pub image: Option<PathBuf>,
    pub debug: bool,
}

pub const DEFAULT_TIMEOUT_SECS: u64 = 1800;
/// What `cargo xtask run` shows when given no config.
pub const DEFAULT_CONFIG: &str = "boards/qemu-virt/linux.toml";

pub fn run(opts: Options) -> Result<()> {
    let qemu = qemu::ensure_installed()?;
    // Validate before the (slow) build so a bad option fails at once.
    let mut machine = Machine {
        gic: opts.gic.unwrap_or(3),
        smp: opts.smp.unwrap_or(4),
        mem: opts.mem.clone().unwrap_or_else(|| "1G".to_owned()),
        dtb: opts.dtb,
        append: opts.append,
        gdb: opts.gdb,
        ..Machine::new(opts.image.clone().unwrap_or_default())
    };
    machine.check_topology()?;
    if opts.image.is_some() {
        machine.check_files()?;
    }
    let built = images::build(opts.debug)?;
    if opts.image.is_none() {
        machine.kernel = built.hypervisor_bin.clone();
        if !opts.no_config {
            let config = opts
                .config
                .clone()
                .unwrap_or_else(|| paths::root().join(DEFAULT_CONFIG));
            let set = |m: &mut crate::board::MachineSettings| {
                if let Some(g) = opts.gic {
                    m.gic = g;
                }
                if let Some(n) = opts.smp {
                    m.smp = n;
                }
                if let Some(mem) = &opts.mem {
                    m.mem = mem.clone();
                }
            };
            let img = crate::board::build_config_image(&config, &built, Some(&set))?;
            machine.gic = img.machine.gic;
            machine.smp = img.machine.smp;
            machine.mem = img.machine.mem.clone();
            machine.extra.extend(img.machine.extra.iter().cloned());
            machine.check_topology()?;
            machine.kernel = img.path;
        }
    }
    machine.validate()?;

    if opts.gdb {
        let image = std::fs::read(&machine.kernel)?;
        println!(
            "QEMU waits for a debugger on localhost:1234; attach with:\n  \
             gdb-multiarch -ex 'target remote :1234' -ex 'add-symbol-file {} -o {:#x}'\n\
             (the image is linked at 0 and runs where QEMU loads it)",
            paths::display(&built.hypervisor_elf),
            qemu_load_address(&image)
        );
    }
    let timeout = (opts.timeout_secs > 0).then(|| Duration::from_secs(opts.timeout_secs));
    let mut cmd = machine.command(&qemu, Console::Interactive);
    cmd.current_dir(paths::root());
    eprintln!("$ {cmd:?}");
    let mut child = cmd.spawn().with_context(|| format!("cannot start {cmd:?}"))?;
    match qemu::wait_with_deadline(&mut child, timeout)? {
        None => bail!(
            "QEMU stopped after the {} s time limit (--timeout 0 for none)",
            opts.timeout_secs
        ),
        Some(status) if !status.success() => bail!("QEMU exited with {status}"),
        Some(_) => Ok(()),
    }
}

/// Where QEMU `virt` loads an Image with `-kernel`: RAM base plus the header's text_offset,
/// which QEMU (hw/arm/boot.c) honours only when image_size is non-zero, else 0x80000.
fn qemu_load_address(image: &[u8]) -> u64 {
    const RAM_BASE: u64 = 0x4000_0000;
    let field = |at: usize| {
        image
            .get(at..at + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let (text_offset, image_size) = (field(8), field(16));
    RAM_BASE + if image_size != 0 { text_offset } else { 0x8_0000 }
}
