//! Boards (`boards/<name>/board.toml`: what a device tree cannot say) and
//! building a flashable image from a VM config for one of them.

use crate::config::{self, Board, Resolved};
use crate::images::Built;
use crate::pack::{self, Entry};
use crate::{image, paths, qemu};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
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
    /// Where the board's DTB comes from: `"qemu"` (the model builds it; asked
    /// with `dumpdtb`), `"debian:<vendor>/<file>.dtb"` (from Debian's arm64
    /// kernel package, fetched and cached with the guest kernel), or a `.dtb`
    /// file in the board folder. The latter two are given to QEMU with `-dtb`.
    pub dtb: String,
    /// The Debian kernel of this board's `debian:kernel` / `debian:initrd` and `debian:`
    /// DTB, as `"<suite>/<package>"` (default `bookworm/linux-image-arm64`; see
    /// xtask/src/assets.rs).
    #[serde(default)]
    pub debian_kernel: Option<String>,
    /// Nodes of that DTB the board folder enables (`status = "okay"`), as a
    /// boot loader would with `fdt set <node> status okay`: devices the DTB
    /// leaves disabled that this board's VMs are given.
    #[serde(default)]
    pub enable: Vec<String>,
    /// Nodes of that DTB the board folder disables (`status = "disabled"`),
    /// as `fdt set <node> status disabled` would: devices the board's QEMU
    /// model lacks (a kernel probing them dies) and that no VM may be given.
    #[serde(default)]
    pub disable: Vec<String>,
    /// The hypervisor's console, where the DTB's `stdout-path` is not the
    /// UART the user wires: a node path or an alias, passed as
    /// `tessera.console=` on the hypervisor's command line.
    #[serde(default)]
    pub console: Option<String>,
    /// Properties removed from nodes of that DTB (node path -> names), as
    /// `fdt rm <node> <property>` would: a device's link to a host resource no
    /// VM gets (an i.MX UART's `dmas`: the SDMA engine stays with nobody, and
    /// the UART works without it).
    #[serde(default)]
    pub remove: BTreeMap<String, Vec<String>>,
    /// RAM nobody may be given besides the hypervisor image itself.
    #[serde(default)]
    pub reserved: Vec<Reserved>,
    #[serde(default)]
    pub qemu: Option<BoardQemu>,
    /// The boot medium `cargo xtask image` writes (see docs/flashing.md).
    #[serde(default)]
    pub media: Option<crate::media::Media>,
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

/// How QEMU runs this board.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct BoardQemu {
    /// The `-machine` value (default `virt,virtualization=on`).
    #[serde(default = "virt_model")]
    pub machine: String,
    /// The GIC version, for a model that takes `gic-version=` (`virt`);
    /// absent: the model's GIC is fixed and `--gic` does not apply.
    pub gic: Option<u32>,
    /// `-cpu`, for a model that lets one choose.
    pub cpu: Option<String>,
    pub smp: u32,
    /// Whether `-smp` is passed (a model with a fixed CPU count may take none).
    #[serde(default = "yes")]
    pub smp_arg: bool,
    pub mem: String,
    /// The oldest QEMU with this model, `"major.minor"`.
    pub qemu_min: Option<String>,
    /// QEMU's `-serial` ports in order: `"console"` (the hypervisor's),
    /// `"null"`, or a name: that UART's output goes to `<name>.log` (and into
    /// a scenario's console lines as `<name>| ...`).
    #[serde(default = "console_only")]
    pub serials: Vec<String>,
    /// Further QEMU arguments this model needs (before a config's own).
    #[serde(default)]
    pub args: Vec<String>,
    /// The hypervisor's command line (`-append`, before a run's own) on QEMU
    /// versions older than the key, `"major.minor"`: how it works around a
    /// fault of the older models (the real board and newer QEMU need none).
    #[serde(default)]
    pub append_before: BTreeMap<String, String>,
}

fn virt_model() -> String {
    qemu::VIRT_MODEL.to_owned()
}

fn yes() -> bool {
    true
}

fn console_only() -> Vec<String> {
    vec!["console".to_owned()]
}

impl Default for BoardQemu {
    fn default() -> Self {
        Self {
            machine: virt_model(),
            gic: Some(3),
            cpu: Some(qemu::VIRT_CPU.to_owned()),
            smp: 4,
            smp_arg: true,
            mem: "1G".into(),
            qemu_min: None,
            serials: console_only(),
            args: Vec::new(),
            append_before: BTreeMap::new(),
        }
    }
}

/// The QEMU machine a config runs on: board defaults, then the config's
/// `[qemu]`, then the command line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MachineSettings {
    pub gic: u32,
    pub smp: u32,
    pub mem: String,
    pub extra: Vec<String>,
    /// The board's model: `-machine`, `-cpu`, serial ports, `-dtb`.
    pub model: String,
    pub gic_selectable: bool,
    pub cpu: Option<String>,
    pub smp_arg: bool,
    pub serials: Vec<String>,
    /// The DTB QEMU is given (`-dtb`), once [`prepare_dtb`] has made it.
    pub dtb: Option<PathBuf>,
    pub qemu_min: Option<String>,
    /// The board's `append_before`.
    pub append_before: Vec<(String, String)>,
    /// The board's `console`.
    pub console: Option<String>,
}

impl MachineSettings {
    /// The hypervisor's command line on QEMU `version` (unknown: as on the
    /// oldest): what the board needs there, then `own`.
    pub fn append_for(&self, version: Option<(u32, u32)>, own: Option<&str>) -> Option<String> {
        let console = self.console.as_ref().map(|c| format!("tessera.console={c}"));
        let words: Vec<&str> = console
            .as_deref()
            .into_iter()
            .chain(
                self.append_before
                    .iter()
                    .filter(|(before, _)| match (version, qemu::parse_version(before)) {
                        (Some(v), Some(b)) => v < b,
                        _ => true,
                    })
                    .map(|(_, args)| args.as_str()),
            )
            .chain(own)
            .collect();
        (!words.is_empty()).then(|| words.join(" "))
    }

    /// The QEMU machine booting `kernel` with these settings.
    pub fn to_machine(&self, kernel: PathBuf) -> qemu::Machine {
        qemu::Machine {
            model: self.model.clone(),
            gic_selectable: self.gic_selectable,
            cpu: self.cpu.clone(),
            smp_arg: self.smp_arg,
            serials: self.serials.iter().map(|s| qemu::Serial::parse(s)).collect(),
            gic: self.gic,
            smp: self.smp,
            mem: self.mem.clone(),
            dtb: self.dtb.clone(),
            extra: self.extra.clone(),
            ..qemu::Machine::new(kernel)
        }
    }
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
        Some(name) => Ok(named_board_dir(name)),
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

/// `boards/<name>/`.
pub fn named_board_dir(name: &str) -> PathBuf {
    paths::root().join("boards").join(name)
}

/// The boards under `boards/`, by name.
pub fn board_names() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(paths::root().join("boards"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("board.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub fn load_board(dir: &Path) -> Result<BoardToml> {
    let path = dir.join("board.toml");
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (boards: {})",
            paths::display(&path),
            board_names().join(", ")
        )
    })?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", paths::display(&path), e.message()))
}

/// Settings for a config: board defaults overridden by the config.
pub fn machine_for(board: &BoardToml, parsed: &config::ConfigToml) -> MachineSettings {
    let d = board.qemu.clone().unwrap_or_default();
    MachineSettings {
        gic: parsed.qemu.gic.or(d.gic).unwrap_or(3),
        smp: parsed.qemu.smp.unwrap_or(d.smp),
        mem: parsed.qemu.mem.clone().unwrap_or(d.mem),
        extra: d.args.iter().chain(&parsed.qemu.extra).cloned().collect(),
        model: d.machine,
        gic_selectable: d.gic.is_some(),
        cpu: d.cpu,
        smp_arg: d.smp_arg,
        serials: d.serials,
        dtb: None,
        qemu_min: d.qemu_min,
        append_before: d.append_before.into_iter().collect(),
        console: board.console.clone(),
    }
}

/// The machine of board `name` without a config (the hypervisor alone), its
/// DTB prepared: what the boot scenarios of a board run.
pub fn board_machine(name: &str, target_dir: &Path) -> Result<MachineSettings> {
    let dir = named_board_dir(name);
    let board = load_board(&dir)?;
    let empty: config::ConfigToml = toml::from_str("").context("an empty config")?;
    let mut machine = machine_for(&board, &empty);
    prepare_dtb(&dir, &board, &mut machine, target_dir)?;
    Ok(machine)
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
            _ if disk.pci => {
                format!("virtio-blk-pci,drive=disk{i},disable-legacy=on,iommu_platform=on")
            }
            Some(n) => format!("virtio-blk-device,drive=disk{i},bus=virtio-mmio-bus.{n}"),
            None => format!("virtio-blk-device,drive=disk{i}"),
        });
    }
    args.append(&mut machine.extra);
    machine.extra = args;
    Ok(())
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Makes the DTB QEMU is given for a board with its own (Debian's or the
/// board folder's, with the board's `enable` applied) and sets `machine.dtb`.
/// A board whose model builds its DTB gets none.
pub fn prepare_dtb(
    dir: &Path,
    board: &BoardToml,
    machine: &mut MachineSettings,
    target_dir: &Path,
) -> Result<()> {
    if board.dtb == "qemu" {
        if !board.enable.is_empty() || !board.disable.is_empty() {
            bail!(
                "{}: `enable` and `disable` need a board DTB file, not dtb = \"qemu\"",
                board.name
            );
        }
        return Ok(());
    }
    let source = match board.dtb.strip_prefix("debian:") {
        Some(rel) => {
            let pin = crate::assets::Resolver::new(target_dir, board.debian_kernel.as_deref())?;
            crate::assets::board_dtb(target_dir, pin.board_pin(), rel)?
        }
        None => dir.join(&board.dtb),
    };
    let bytes = fs::read(&source).with_context(|| format!("board DTB {}", source.display()))?;
    let remove: Vec<(String, Vec<String>)> = board.remove.clone().into_iter().collect();
    let patched = crate::fdt_patch::edit_with_disable(&bytes, &board.enable, &board.disable, &remove)
        .with_context(|| format!("editing {} as board.toml says", source.display()))?;
    let out_dir = target_dir.join("board-dtbs");
    fs::create_dir_all(&out_dir)?;
    let file = out_dir.join(format!("{}-boot-{:016x}.dtb", board.name, fnv(&patched)));
    if fs::read(&file).ok().as_deref() != Some(&patched[..]) {
        let tmp = unique_tmp(&file);
        fs::write(&tmp, &patched)?;
        fs::rename(&tmp, &file)?;
    }
    machine.dtb = Some(file);
    Ok(())
}

/// The board's DTB as the hypervisor finds it in `x0` on QEMU: QEMU's dump
/// (`dumpdtb`) of the machine booting an image, after it patched `/memory`,
/// `/chosen` and PSCI into the board's own DTB (if any; see [`prepare_dtb`]).
pub fn board_dtb(machine: &MachineSettings, board_name: &str, target_dir: &Path) -> Result<Vec<u8>> {
    let qemu = qemu::ensure_version(machine.qemu_min.as_deref())?;
    let out_dir = target_dir.join("board-dtbs");
    fs::create_dir_all(&out_dir)?;
    let key = format!("{:?}", machine);
    let file = out_dir.join(format!("{board_name}-{:016x}.dtb", fnv(key.as_bytes())));
    if !file.is_file() {
        // QEMU patches the DTB only when it loads a kernel: a branch-to-self Image will do.
        let spin = out_dir.join("spin.bin");
        if !spin.is_file() {
            let tmp = unique_tmp(&spin);
            fs::write(&tmp, image::spin_image())?;
            fs::rename(&tmp, &spin)?;
        }
        let tmp = unique_tmp(&file);
        let m = machine.to_machine(spin);
        let mut cmd = Command::new(&qemu);
        cmd.args(["-machine", &m.machine_arg(Some(&tmp))]);
        if let Some(cpu) = &m.cpu {
            cmd.args(["-cpu", cpu]);
        }
        if m.smp_arg {
            cmd.args(["-smp", &m.smp.to_string()]);
        }
        cmd.args(["-m", &m.mem, "-display", "none", "-monitor", "none"]);
        for _ in &m.serials {
            cmd.args(["-serial", "null"]);
        }
        cmd.arg("-kernel").arg(&m.kernel);
        if let Some(dtb) = &m.dtb {
            cmd.arg("-dtb").arg(dtb);
        }
        cmd.args(&m.extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        let mut child = cmd.spawn().context("running QEMU to dump the board DTB")?;
        let status = qemu::wait_with_deadline(&mut child, Some(std::time::Duration::from_secs(60)))?;
        if !status.is_some_and(|s| s.success()) || !tmp.is_file() {
            let _ = fs::remove_file(&tmp);
            bail!("QEMU could not dump the board DTB ({status:?}): {cmd:?}");
        }
        fs::rename(&tmp, &file)?;
    }
    crate::fdt_patch::without_nops(&fs::read(&file)?).with_context(|| format!("{}", file.display()))
}

/// A temporary name next to `path`, unique to this call: scenarios run on
/// several threads of one process, so the PID alone is not (two threads
/// dumping the same board DTB used one temporary file, and one found it gone).
fn unique_tmp(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_extension(format!("tmp{}-{n}", std::process::id()))
}

/// What tells two images of one config apart: `gic3-smp4`, or `smp4` where the model's
/// GIC is fixed.
fn machine_variant(m: &MachineSettings) -> String {
    if m.gic_selectable {
        format!("gic{}-smp{}", m.gic, m.smp)
    } else {
        format!("smp{}", m.smp)
    }
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
    build_config_image_on(config_path, None, built, override_machine)
}

/// [`build_config_image`] on `board` (a folder under `boards/`) whatever board the config
/// names or sits in (`None`: that one).
pub fn build_config_image_on(
    config_path: &Path,
    board: Option<&str>,
    built: &Built,
    override_machine: Option<&dyn Fn(&mut MachineSettings)>,
) -> Result<ConfigImage> {
    let parsed = config::parse(config_path)?;
    let dir = match board {
        Some(name) => named_board_dir(name),
        None => board_dir(config_path, &parsed)?,
    };
    let board = load_board(&dir)?;
    let mut machine = machine_for(&board, &parsed);
    if let Some(f) = override_machine {
        f(&mut machine);
    }
    prepare_dtb(&dir, &board, &mut machine, &built.target_dir)?;
    // The disks must exist for QEMU to describe the machine (and to run it).
    let stem = config_path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("config");
    let variant = machine_variant(&machine);
    let disk_dir = built
        .target_dir
        .join("disks")
        .join(format!("{}-{stem}-{variant}", board.name));
    add_disks(&parsed, &disk_dir, &mut machine)?;
    let dtb = board_dtb(&machine, &board.name, &built.target_dir)?;
    let reserved = board
        .reserved
        .iter()
        .map(|r| (r.name.clone(), r.base, r.size.0))
        .collect();
    let mut b: Board = config::board_from_dtb(&dtb, reserved)?;
    if let Some(c) = &board.console {
        b.console = Some(
            crate::board_console::resolve(&dtb, c)
                .with_context(|| format!("{}: console = {c:?}", paths::display(&dir.join("board.toml"))))?,
        );
    }
    let debian = crate::assets::Resolver::new(&built.target_dir, board.debian_kernel.as_deref())?;
    let guest = |name: &str| match name {
        // `cargo xtask run/build/test --kernel/--initrd` replace these (see assets.rs).
        _ if name.starts_with("debian:") => debian.path(name),
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
    let path = out_dir.join(format!("{}-{stem}-{variant}.bin", board.name));
    fs::write(&path, &packed)?;
    Ok(ConfigImage {
        path,
        machine,
        resolved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_folders_parse_and_name_themselves() {
        for name in super::board_names() {
            let dir = super::named_board_dir(&name);
            let board = super::load_board(&dir).unwrap();
            assert_eq!(board.name, name);
            assert!(dir.join("linux.toml").is_file(), "{name} has no linux.toml");
            if let Some(rel) = board.dtb.strip_prefix("debian:") {
                assert!(crate::assets::BOARD_DTBS.contains(&rel), "{name}: {rel}");
            }
        }
    }

    /// The QEMU command line of each board's default machine, as `run` and `test` build it.
    fn command_line(board: &str) -> String {
        let board = load_board(&named_board_dir(board)).unwrap();
        let empty: config::ConfigToml = toml::from_str("").unwrap();
        let mut m = machine_for(&board, &empty).to_machine(PathBuf::from("img"));
        m.serial_dir = Some(PathBuf::from("/logs"));
        let args: Vec<String> = m
            .command(Path::new("qemu"), qemu::Console::Captured)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        args.join(" ")
    }

    #[test]
    fn each_board_gets_its_own_machine_and_serial_ports() {
        let virt = command_line("qemu-virt");
        assert!(
            virt.starts_with("-machine virt,virtualization=on,gic-version=3 -cpu cortex-a72 -smp 4 -m 1G")
        );
        let zcu = command_line("xlnx-zcu102");
        assert!(
            zcu.starts_with("-machine xlnx-zcu102,virtualization=on -smp 4 -m 2G"),
            "{zcu}"
        );
        assert!(
            zcu.contains("-serial stdio -serial file:/logs/uart1.log"),
            "{zcu}"
        );
        assert!(zcu.contains("-audio none"), "{zcu}");
        // The EVK's console is the second UART QEMU wires up.
        let imx = command_line("imx8mp-evk");
        assert!(imx.starts_with("-machine imx8mp-evk -smp 4 -m 2G"), "{imx}");
        assert!(
            imx.contains("-serial file:/logs/uart1.log -serial stdio"),
            "{imx}"
        );
        // Versal's model fixes its CPU count and refuses -smp 2.
        let versal = command_line("xlnx-versal-virt");
        assert!(versal.starts_with("-machine xlnx-versal-virt -m 2G"), "{versal}");
        for line in [&zcu, &imx, &versal] {
            assert!(!line.contains("-cpu") && !line.contains("gic-version"), "{line}");
        }
    }

    #[test]
    fn imx8mp_asks_for_software_virq_only_before_qemu_10_1() {
        let board = load_board(&named_board_dir("imx8mp-evk")).unwrap();
        let empty: config::ConfigToml = toml::from_str("").unwrap();
        let m = machine_for(&board, &empty);
        let opt = "tessera.virq=hcr";
        assert_eq!(m.append_for(Some((10, 0)), None).as_deref(), Some(opt));
        assert_eq!(
            m.append_for(Some((10, 0)), Some("tessera.selftest=x")).as_deref(),
            Some("tessera.virq=hcr tessera.selftest=x")
        );
        assert_eq!(
            m.append_for(None, None).as_deref(),
            Some(opt),
            "unknown: as the oldest"
        );
        assert_eq!(m.append_for(Some((10, 1)), None), None);
        assert_eq!(m.append_for(Some((11, 0)), Some("a")).as_deref(), Some("a"));
        // Nobody else needs it.
        for name in ["qemu-virt", "xlnx-zcu102", "xlnx-versal-virt"] {
            let board = load_board(&named_board_dir(name)).unwrap();
            assert_eq!(
                machine_for(&board, &empty).append_for(Some((10, 0)), None),
                None,
                "{name}"
            );
        }
    }
}
