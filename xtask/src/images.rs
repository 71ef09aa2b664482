//! `cargo xtask build`: builds the hypervisor and the test guests for the target, then
//! turns each ELF into the raw image a boot loader (or QEMU `-kernel`) loads.

use crate::image::{check_image_header, elf_to_raw};
use crate::paths::{self, TARGET};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const HYPERVISOR_PACKAGE: &str = "tessera";
pub const GUESTS_PACKAGE: &str = "tessera-guests";

/// What `build` produced, handed to scenarios that assemble their own images.
#[derive(Debug, Clone)]
pub struct Built {
    pub target_dir: PathBuf,
    pub hypervisor_elf: PathBuf,
    pub hypervisor_bin: PathBuf,
    /// Every binary of the test-guests package, converted.
    pub guests: Vec<Guest>,
}

/// A test guest: its `tessera-guests` bin name, its ELF and its raw image.
#[derive(Debug, Clone)]
pub struct Guest {
    pub name: String,
    pub elf: PathBuf,
    pub bin: PathBuf,
}

impl Built {
    /// The raw image of the guest `name`, or an error naming the guests that exist.
    pub fn guest(&self, name: &str) -> Result<&Guest> {
        self.guests.iter().find(|g| g.name == name).with_context(|| {
            let names: Vec<_> = self.guests.iter().map(|g| g.name.as_str()).collect();
            format!("no test guest `{name}` (have: {})", names.join(", "))
        })
    }
}

/// Builds everything; `debug` selects the dev profile for the hypervisor (guests are
/// always release: they are test fixtures, not what is being debugged).
pub fn build(debug: bool) -> Result<Built> {
    let meta = Metadata::load()?;
    let profile = if debug { "debug" } else { "release" };

    cargo_build(HYPERVISOR_PACKAGE, !debug)?;
    let hypervisor_elf = meta.target_dir.join(TARGET).join(profile).join("tessera");
    let hypervisor_bin = paths::hypervisor_bin(&meta.target_dir);
    let raw = convert(&hypervisor_elf, &hypervisor_bin)?;
    check_image_header(&raw)
        .with_context(|| format!("{} is not bootable", paths::display(&hypervisor_elf)))?;

    let mut guests = Vec::new();
    if let Some(bins) = &meta.guest_bins {
        if bins.is_empty() {
            eprintln!("xtask: {GUESTS_PACKAGE} has no binaries yet");
        } else {
            cargo_build(GUESTS_PACKAGE, true)?;
        }
        let out_dir = paths::guests_dir(&meta.target_dir);
        fs::create_dir_all(&out_dir)?;
        for name in bins {
            let elf = meta.target_dir.join(TARGET).join("release").join(name);
            let bin = out_dir.join(format!("{name}.bin"));
            convert(&elf, &bin)?;
            guests.push(Guest {
                name: name.clone(),
                elf,
                bin,
            });
        }
    }
    Ok(Built {
        target_dir: meta.target_dir,
        hypervisor_elf,
        hypervisor_bin,
        guests,
    })
}

fn cargo_build(package: &str, release: bool) -> Result<()> {
    let mut cmd = Command::new(paths::cargo());
    cmd.current_dir(paths::root())
        .args(["build", "-p", package, "--target", TARGET]);
    if release {
        cmd.arg("--release");
    }
    crate::host_tools::run_checked(&mut cmd)
}

/// Writes the raw image of `elf` to `bin`, prints its size, and returns it.
fn convert(elf: &Path, bin: &Path) -> Result<Vec<u8>> {
    let bytes = fs::read(elf).with_context(|| format!("cannot read {}", elf.display()))?;
    let raw = elf_to_raw(&bytes).with_context(|| format!("converting {}", elf.display()))?;
    fs::write(bin, &raw.bytes).with_context(|| format!("cannot write {}", bin.display()))?;
    println!(
        "{}: {} bytes ({:.1} KiB), loads at {:#x}",
        paths::display(bin),
        raw.bytes.len(),
        raw.bytes.len() as f64 / 1024.0,
        raw.base
    );
    Ok(raw.bytes)
}

/// The parts of `cargo metadata` we need.
struct Metadata {
    target_dir: PathBuf,
    /// `None` when the guests package does not exist (no `tests/guests/Cargo.toml`).
    guest_bins: Option<Vec<String>>,
}

impl Metadata {
    fn load() -> Result<Self> {
        let out = Command::new(paths::cargo())
            .current_dir(paths::root())
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .context("cannot run cargo metadata")?;
        if !out.status.success() {
            bail!("cargo metadata failed:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        let json: Value = serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
        let target_dir = json["target_directory"]
            .as_str()
            .context("cargo metadata has no target_directory")?
            .into();
        let has_guests = paths::root().join("tests/guests/Cargo.toml").is_file();
        let guest_bins = has_guests.then(|| bins_of(&json, GUESTS_PACKAGE));
        Ok(Self {
            target_dir,
            guest_bins,
        })
    }
}

/// Names of the `bin` targets of `package` in `cargo metadata` output.
fn bins_of(json: &Value, package: &str) -> Vec<String> {
    let packages = json["packages"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let Some(pkg) = packages.iter().find(|p| p["name"] == package) else {
        return Vec::new();
    };
    let targets = pkg["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut names: Vec<String> = targets
        .iter()
        .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_bin_targets_of_a_package() {
        let json: Value = serde_json::from_str(
            r#"{"packages": [
                {"name": "tessera", "targets": [{"name": "tessera", "kind": ["bin"]}]},
                {"name": "tessera-guests", "targets": [
                    {"name": "timer", "kind": ["bin"]},
                    {"name": "common", "kind": ["lib"]},
                    {"name": "hello", "kind": ["bin"]}]}
            ]}"#,
        )
        .unwrap();
        assert_eq!(bins_of(&json, "tessera-guests"), ["hello", "timer"]);
        assert!(bins_of(&json, "absent").is_empty());
    }
}
