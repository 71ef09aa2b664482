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
    /// The VM config to run; `None` means the board's default (`linux.toml`).
    pub config: Option<PathBuf>,
    /// The board folder (`boards/<name>/`); `None`: the config's, else `qemu-virt`.
    pub board: Option<String>,
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
/// What `cargo xtask run` shows when given no config: this file of the board folder.
pub const DEFAULT_CONFIG: &str = "linux.toml";

pub fn run(opts: Options) -> Result<()> {
    // Validate before the (slow) build so a bad option fails at once.
    let board_name = match (&opts.board, &opts.config) {
        (Some(b), _) => b.clone(),
        (None, Some(config)) if !opts.no_config => {
            let parsed = crate::config::parse(config)?;
            let dir = crate::board::board_dir(config, &parsed)?;
            dir.file_name().unwrap_or_default().to_string_lossy().into_owned()
        }
        _ => crate::scenarios::VIRT.to_owned(),
    };
    let board = crate::board::load_board(&crate::board::named_board_dir(&board_name))?;
    let selectable = board.qemu.as_ref().is_none_or(|q| q.gic.is_some());
    if opts.gic.is_some() && !selectable {
        bail!("--gic: board {} has the GIC its QEMU model has", board.name);
    }
    let probe = Machine {
        gic: opts.gic.unwrap_or(3),
        smp: opts.smp.unwrap_or(4),
        gic_selectable: selectable,
        ..Machine::new(PathBuf::new())
    };
    probe.check_topology()?;
    if let Some(image) = &opts.image {
        if !image.is_file() {
            bail!("image {} does not exist", image.display());
        }
    }
    // What the host must have, before the (slow) build: QEMU for this board and, when the
    // config takes anything from Debian, what xtask fetches it with.
    let min = board.qemu.as_ref().and_then(|q| q.qemu_min.as_deref());
    qemu::ensure_version(min)?;
    if !opts.no_config && opts.image.is_none() {
        let config = match &opts.config {
            Some(c) => c.clone(),
            None => crate::board::named_board_dir(&board_name).join(DEFAULT_CONFIG),
        };
        if crate::host_tools::needs_debian(Some(&config), &board_name) {
            crate::host_tools::ensure_debian_fetch()?;
        }
    }
    let built = images::build(opts.debug)?;
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
    let (settings, kernel) = if opts.no_config || opts.image.is_some() {
        let mut m = crate::board::board_machine(&board_name, &built.target_dir)?;
        set(&mut m);
        let kernel = opts.image.clone().unwrap_or_else(|| built.hypervisor_bin.clone());
        (m, kernel)
    } else {
        let config = match &opts.config {
            Some(c) => c.clone(),
            None => crate::board::named_board_dir(&board_name).join(DEFAULT_CONFIG),
        };
        let img = crate::board::build_config_image_on(&config, opts.board.as_deref(), &built, Some(&set))?;
        (img.machine, img.path)
    };
    let qemu = qemu::ensure_version(settings.qemu_min.as_deref())?;
    let mut machine = settings.to_machine(kernel);
    if opts.dtb.is_some() {
        machine.dtb = opts.dtb.clone();
    }
    machine.append = settings.append_for(qemu::installed_version(&qemu), opts.append.as_deref());
    machine.gdb = opts.gdb;
    machine.serial_dir = Some(built.target_dir.join("serial"));
    if !machine.serial_logs().is_empty() {
        std::fs::create_dir_all(built.target_dir.join("serial"))?;
        for (name, file) in machine.serial_logs() {
            eprintln!(
                "xtask: {name} (a UART a VM owns) writes to {}",
                paths::display(&file)
            );
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
            qemu_load_address(board.load_address & !0x3fff_ffff, &image)
        );
    }
    let timeout = (opts.timeout_secs > 0).then(|| Duration::from_secs(opts.timeout_secs));
    let mut cmd = machine.command(&qemu, Console::Interactive);
    cmd.current_dir(paths::root());
    eprintln!("$ {cmd:?}");
    eprintln!("xtask: {}", qemu::CONSOLE_HELP);
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

/// Where QEMU loads an Image with `-kernel`: RAM base (the board's load address rounded
/// down to 1 GiB on the boards we have) plus the header's text_offset, which QEMU
/// (hw/arm/boot.c) honours only when image_size is non-zero, else 0x80000.
fn qemu_load_address(ram_base: u64, image: &[u8]) -> u64 {
    let field = |at: usize| {
        image
            .get(at..at + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let (text_offset, image_size) = (field(8), field(16));
    ram_base + if image_size != 0 { text_offset } else { 0x8_0000 }
}
