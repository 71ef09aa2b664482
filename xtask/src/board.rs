//! Boards (`boards/<name>/board.toml`: what a device tree cannot say) and
//! building a flashable image from a VM config for one of them.

use crate::config::{self, Board, Resolved};
use crate::images::Built;
use crate::pack::{self, Entry};
use crate::{image, paths, qemu};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct BoardToml {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Where the boot loader places the image (U-Boot `booti`, QEMU `-kernel`).
    pub load_address: u64,
    /// `"qemu"`: ask QEMU for the DTB of the machine being run; otherwise a
    /// `.dtb` file in the board folder.
    pub dtb: String,
    /// RAM nobody may be given besides the hypervisor image itself.
    #[serde(default)]
    pub reserved: Vec<Reserved>,
    #[serde(default)]
    pub qemu: Option<BoardQemu>,
    #[serde(default)]
    pub notes: String,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Reserved {
    pub name: String,
    pub base: u64,
    pub size: config::Size,
}

/// How `xtask run` starts QEMU for this board.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct BoardQemu {
    pub gic: u32,
    pub smp: u32,
    pub mem: String,
}

/// The QEMU machine a config runs on: board defaults, then the config's
/// `[qemu]`, then the command line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MachineSettings {
    pub gic: u32,
    pub smp: u32,
    pub mem: String,
    pub extra: Vec<String>,
}

/// A config built into an image.
pub struct ConfigImage {
    pub path: PathBuf,
    pub machine: MachineSettings,
    pub resolved: Resolved,
}

/// The board folder a config belongs to.
pub fn board_dir(config_path: &Path, parsed: &config::ConfigToml) -> Result<PathBuf> {
    match &parsed.board {
        Some(name) => Ok(paths::root().join("boards").join(name)),
        None => {
            let dir = config_path.parent().unwrap_or(Path::new(".")).to_path_buf();
            if dir.join("board.toml").is_file() {
                Ok(dir)
            } else {
                bail!(
                    "{}: no board: put the config in a board folder (boards/<board>/) or set board = \"<name>\"",
                    paths::display(config_path)
                )
            }
        }
    }
}

pub fn load_board(dir: &Path) -> Result<BoardToml> {
    let path = dir.join("board.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", paths::display(&path), e.message()))
}

/// Settings for a config: board defaults overridden by the config.
pub fn machine_for(board: &BoardToml, parsed: &config::ConfigToml) -> MachineSettings {
    let d = board.qemu.clone().unwrap_or(BoardQemu {
        gic: 3,
        smp: 4,
        mem: "1G".into(),
    });
    MachineSettings {
        gic: parsed.qemu.gic.unwrap_or(d.gic),
        smp: parsed.qemu.smp.unwrap_or(d.smp),
        mem: parsed.qemu.mem.clone().unwrap_or(d.mem),
        extra: parsed.qemu.extra.clone(),
    }
}

/// Creates (or empties) the config's disks in `dir` and adds them to the
/// machine, in order, as virtio-blk devices. Each image gets its own folder,
/// so two runs of one config (GICv2 and GICv3, in parallel) never share a disk.
pub fn add_disks(parsed: &config::ConfigToml, dir: &Path, machine: &mut MachineSettings) -> Result<()> {
    let mut args = Vec::new();
    for (i, disk) in parsed.qemu.disks.iter().enumerate() {
        let file = dir.join(&disk.file);
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent)?;
        }
        let f = fs::File::create(&file).with_context(|| format!("cannot create disk {}", file.display()))?;
        f.set_len(disk.size.0)?;
        args.push("-drive".to_owned());
        args.push(format!("if=none,id=disk{i},format=raw,file={}", file.display()));
        args.push("-device".to_owned());
        args.push(match disk.bus {
            Some(n) => format!("virtio-blk-device,drive=disk{i},bus=virtio-mmio-bus.{n}"),
            None => format!("virtio-blk-device,drive=disk{i}"),
        });
    }
    args.append(&mut machine.extra);
    machine.extra = args;
    Ok(())
}

/// The board's DTB: QEMU's for `machine`, or the board's own file.
pub fn board_dtb(
    dir: &Path,
    board: &BoardToml,
    machine: &MachineSettings,
    target_dir: &Path,
) -> Result<Vec<u8>> {
    if board.dtb != "qemu" {
        let p = dir.join(&board.dtb);
        return fs::read(&p).with_context(|| format!("board DTB {}", p.display()));
    }
    let qemu = qemu::ensure_installed()?;
    let out_dir = target_dir.join("board-dtbs");
    fs::create_dir_all(&out_dir)?;
    let key = format!("{:?}", machine);
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let file = out_dir.join(format!("{}-{hash:016x}.dtb", board.name));
    if !file.is_file() {
        let status = Command::new(&qemu)
            .args(["-machine", &qemu::machine_arg(machine.gic, Some(&file))])
            .args([
                "-cpu",
                "cortex-a72",
                "-smp",
                &machine.smp.to_string(),
                "-m",
                &machine.mem,
                "-nographic",
            ])
            .args(&machine.extra)
            .status()
            .context("running QEMU to dump the board DTB")?;
        if !status.success() || !file.is_file() {
            bail!("QEMU could not dump the board DTB ({status})");
        }
    }
    Ok(fs::read(&file)?)
}

/// The image (payload included) is loaded at `load_address`: no fixed VM
/// memory may sit there. `file` is the config, for the message.
pub fn check_image_overlap(
    file: &Path,
    resolved: &Resolved,
    load_address: u64,
    image_len: u64,
) -> Result<()> {
    let image_end = load_address.saturating_add(image_len);
    for vm in &resolved.vms {
        for (i, &(_, size, phys, _)) in vm.memory.iter().enumerate() {
            if let Some(p) = phys {
                if p < image_end && load_address < p.saturating_add(size) {
                    bail!(
                        "{}: vm \"{}\": memory[{i}].base: {p:#x}..{:#x} overlaps the hypervisor image at {load_address:#x}..{image_end:#x}",
                        paths::display(file),
                        vm.name,
                        p.saturating_add(size),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Checks `config_path` and packs it with its images into
/// `target/images/<config>.bin`. `override_machine` replaces the config's QEMU
/// settings (the test suite runs one config on GICv2 and GICv3).
pub fn build_config_image(
    config_path: &Path,
    built: &Built,
    override_machine: Option<&dyn Fn(&mut MachineSettings)>,
) -> Result<ConfigImage> {
    let parsed = config::parse(config_path)?;
    let dir = board_dir(config_path, &parsed)?;
    let board = load_board(&dir)?;
    let mut machine = machine_for(&board, &parsed);
    if let Some(f) = override_machine {
        f(&mut machine);
    }
    // The disks must exist for QEMU to describe the machine (and to run it).
    let stem = config_path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("config");
    let disk_dir = built
        .target_dir
        .join("disks")
        .join(format!("{stem}-gic{}-smp{}", machine.gic, machine.smp));
    add_disks(&parsed, &disk_dir, &mut machine)?;
    let dtb = board_dtb(&dir, &board, &machine, &built.target_dir)?;
    let reserved = board
        .reserved
        .iter()
        .map(|r| (r.name.clone(), r.base, r.size.0))
        .collect();
    let b: Board = config::board_from_dtb(&dtb, reserved)?;
    let assets = std::cell::OnceCell::new();
    let guest = |name: &str| match name {
        "debian:kernel" | "debian:initrd" => {
            let a = assets.get_or_init(|| {
                // `cargo xtask run/build/test --kernel/--initrd` set these.
                let own = |var: &str| std::env::var_os(var).map(PathBuf::from);
                crate::assets::ensure_assets(&crate::assets::Options {
                    target_dir: Some(built.target_dir.clone()),
                    kernel: own("TESSERA_KERNEL"),
                    initrd: own("TESSERA_INITRD"),
                })
                .map_err(|e| eprintln!("xtask: guest assets: {e:#}"))
                .ok()
            });
            a.as_ref().map(|a| {
                if name == "debian:kernel" {
                    a.kernel.clone()
                } else {
                    a.initrd.clone()
                }
            })
        }
        _ => built.guest(name).ok().map(|g| g.bin.clone()),
    };
    let resolved = config::load(config_path, &parsed, &b, &guest)?;

    let entries = config::package_entries(&resolved)?;
    let hyp = fs::read(&built.hypervisor_bin)?;
    let elf = fs::read(&built.hypervisor_elf)?;
    let payload_start = image::symbol_value(&elf, "__payload_start")?;
    let refs: Vec<Entry> = entries
        .iter()
        .map(|(k, n, b)| Entry {
            kind: *k,
            name: n,
            bytes: b,
        })
        .collect();
    let packed = pack::pack(&hyp, payload_start, &refs)?;

    // The last check; nothing has been written before it (the board DTB dump
    // above is a cache, not an image).
    check_image_overlap(config_path, &resolved, board.load_address, packed.len() as u64)?;
    let out_dir = built.target_dir.join("images");
    fs::create_dir_all(&out_dir)?;
    let path = out_dir.join(format!("{stem}-gic{}-smp{}.bin", machine.gic, machine.smp));
    fs::write(&path, &packed)?;
    Ok(ConfigImage {
        path,
        machine,
        resolved,
    })
}
