//! `cargo xtask dtbs`: regenerates the device trees in `tests/dtbs/` from QEMU's own.
//!
//! The files are committed test data, so CI needs neither this command nor `dtc`. Dumps use
//! `dtb-randomness=off` (no rng-seed/kaslr-seed in /chosen) so regenerating is byte-for-byte
//! reproducible for a given QEMU version.

use crate::host_tools;
use crate::paths;
use crate::qemu::{self, Console, Machine};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Longer than any dump or smoke boot needs; QEMU must never hang xtask.
const QEMU_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a broken DTB must keep QEMU running to count as accepted.
const SMOKE_BOOT: Duration = Duration::from_secs(2);

/// QEMU's DTBs as they are: (gic, smp).
const PLAIN: &[(u32, u32)] = &[(3, 4), (3, 1), (3, 8), (2, 4), (2, 8)];

pub fn regenerate() -> Result<()> {
    let qemu = qemu::ensure_installed()?;
    let dtc = host_tools::ensure_installed("dtc", "device-tree-compiler")?;
    let out_dir = paths::root().join("tests/dtbs");
    fs::create_dir_all(&out_dir)?;
    let work = std::env::temp_dir().join(format!("tessera-dtbs-{}", std::process::id()));
    fs::create_dir_all(&work)?;
    let tools = Tools { qemu, dtc, work };
    let result = generate(&tools, &out_dir);
    let _ = fs::remove_dir_all(&tools.work);
    result
}

struct Tools {
    qemu: PathBuf,
    dtc: PathBuf,
    work: PathBuf,
}

fn generate(t: &Tools, out_dir: &Path) -> Result<()> {
    for &(gic, smp) in PLAIN {
        let dts = t.dump_dts(gic, smp)?;
        save(t, out_dir, &format!("qemu-virt-gicv{gic}-smp{smp}.dtb"), &dts)?;
    }
    let base = t.dump_dts(3, 2)?;
    let nogic = remove_property(&remove_node(&base, "intc@8000000")?, "interrupt-parent");
    let nogic = save(t, out_dir, "qemu-virt-nogic.dtb", &nogic)?;
    let nostdout = remove_property(&base, "stdout-path");
    let nostdout = remove_node(&nostdout, "aliases").unwrap_or(nostdout);
    let nostdout = save(t, out_dir, "qemu-virt-nostdout.dtb", &nostdout)?;
    // QEMU still patches /chosen and /memory of a -dtb: make sure it takes the broken ones.
    for dtb in [nogic, nostdout] {
        t.smoke_boot(&dtb)?;
        println!("  QEMU boots with {}", paths::display(&dtb));
    }
    Ok(())
}

/// Compiles `dts` into `out_dir/name` and prints its size.
fn save(t: &Tools, out_dir: &Path, name: &str, dts: &str) -> Result<PathBuf> {
    let src = t.work.join(format!("{name}.dts"));
    fs::write(&src, dts)?;
    let out = out_dir.join(name);
    t.dtc(&["-I", "dts", "-O", "dtb", "-o"], &out, &src)?;
    println!("{}: {} bytes", paths::display(&out), fs::metadata(&out)?.len());
    Ok(out)
}

impl Tools {
    /// QEMU's DTB for a `virt` machine, decompiled. Going through source also drops the
    /// 1 MiB of padding QEMU leaves in its dump.
    fn dump_dts(&self, gic: u32, smp: u32) -> Result<String> {
        let dtb = self.work.join(format!("gicv{gic}-smp{smp}.dtb"));
        let machine = format!("{},dtb-randomness=off", qemu::machine_arg(gic, Some(&dtb)));
        let mut cmd = Command::new(&self.qemu);
        cmd.args(["-machine", &machine, "-cpu", "cortex-a72"])
            .args(["-smp", &smp.to_string(), "-m", "1G", "-display", "none"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().with_context(|| format!("cannot start {cmd:?}"))?;
        match qemu::wait_with_deadline(&mut child, Some(QEMU_TIMEOUT))? {
            Some(status) if status.success() => {}
            _ => bail!("{cmd:?} did not dump a DTB"),
        }
        let dts = self.work.join(format!("gicv{gic}-smp{smp}.dts"));
        self.dtc(&["-I", "dtb", "-O", "dts", "-o"], &dts, &dtb)?;
        Ok(fs::read_to_string(&dts)?)
    }

    /// Runs dtc quietly (QEMU's own tree already trips a few of its style warnings).
    fn dtc(&self, args: &[&str], out: &Path, input: &Path) -> Result<()> {
        let output = Command::new(&self.dtc)
            .arg("-q")
            .args(args)
            .arg(out)
            .arg(input)
            .output()
            .context("cannot run dtc")?;
        if !output.status.success() {
            bail!(
                "dtc failed on {}:\n{}",
                input.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Boots a do-nothing Image with `dtb` and checks QEMU is still running after a moment.
    fn smoke_boot(&self, dtb: &Path) -> Result<()> {
        let kernel = self.work.join("spin.bin");
        fs::write(&kernel, crate::image::spin_image())?;
        let machine = Machine {
            smp: 2,
            dtb: Some(dtb.to_owned()),
            ..Machine::new(kernel)
        };
        let mut cmd = machine.command(&self.qemu, Console::Captured);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("cannot start {cmd:?}"))?;
        if let Some(status) = qemu::wait_with_deadline(&mut child, Some(SMOKE_BOOT))? {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            bail!("QEMU rejects {} ({status}): {err}", dtb.display());
        }
        Ok(())
    }
}

/// Removes the node `name` (e.g. `intc@8000000`, at any depth) and all its children from
/// dtc's source output, where each node opens with `name {` and closes with `};`.
fn remove_node(dts: &str, name: &str) -> Result<String> {
    let mut out = String::with_capacity(dts.len());
    let mut depth = 0usize;
    let mut found = false;
    for line in dts.lines() {
        let t = line.trim();
        let opens_it = t
            .strip_suffix('{')
            .map(str::trim)
            .is_some_and(|head| head == name || head.rsplit_once(':').is_some_and(|(_, n)| n.trim() == name));
        if depth == 0 && opens_it {
            found = true;
        }
        if found && (depth > 0 || opens_it) {
            depth += line.matches('{').count();
            depth -= line.matches('}').count().min(depth);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !found {
        bail!("no node `{name}` in the device tree");
    }
    Ok(out)
}

/// Removes every property `name` (`name = ...;` or `name;`) wherever it appears.
fn remove_property(dts: &str, name: &str) -> String {
    dts.lines()
        .filter(|line| {
            let t = line.trim();
            let rest = t.strip_prefix(name);
            !rest.is_some_and(|r| r == ";" || r.trim_start().starts_with('='))
        })
        .flat_map(|line| [line, "\n"])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DTS: &str = "/ {\n\tinterrupt-parent = <0x8003>;\n\tintc@8000000 {\n\t\tphandle = <0x8003>;\n\t\tits@8080000 {\n\t\t\tmsi-controller;\n\t\t};\n\t};\n\tintc@8000000x {\n\t};\n\tchosen {\n\t\tstdout-path = \"/pl011@9000000\";\n\t\tstdout-path-extra;\n\t};\n};\n";

    #[test]
    fn removes_a_node_with_its_children_only() {
        let out = remove_node(DTS, "intc@8000000").unwrap();
        assert!(!out.contains("phandle") && !out.contains("its@"));
        assert!(out.contains("intc@8000000x {") && out.contains("chosen {"));
        assert_eq!(out.matches('{').count(), out.matches('}').count());
        assert!(remove_node(DTS, "aliases").is_err());
    }

    #[test]
    fn removes_properties_by_exact_name() {
        let out = remove_property(DTS, "stdout-path");
        assert!(!out.contains("stdout-path = "));
        assert!(out.contains("stdout-path-extra;"));
        assert!(!remove_property(DTS, "interrupt-parent").contains("interrupt-parent"));
    }
}
