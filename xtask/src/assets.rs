//! Linux guest assets: Debian's arm64 kernel and a busybox initramfs built by xtask.
//!
//! `cargo xtask assets` (and `run`/`test`, on demand) fetches two Debian packages for arm64
//! without installing them: `linux-image-<abi>-arm64-unsigned` and `busybox-static`. It uses
//! `apt-get download` and `dpkg-deb -x` into a scratch directory, so the host only gains the
//! arm64 architecture in dpkg's list (and the package lists that come with it). From them it
//! writes, under `<target>/guest-assets/<kernel-package-version>/`:
//!
//! - `Image`: the raw arm64 kernel (Debian ships it uncompressed; a gzip one is unpacked);
//! - `initrd.cpio.gz`: a gzip newc archive with busybox, an `/init` script, and the kernel
//!   modules the VM's virtio-mmio devices need (plus their dependencies), decompressed;
//! - `assets.stamp`: written last; the directory counts as complete only when it exists.
//!
//! Everything is skipped when the stamp is present, so only a new kernel version costs a
//! download. Boards whose DTB comes from the same kernel package (`dtb = "debian:..."` in
//! their board.toml) get [`BOARD_DTBS`] from it too, kept in `<version>/dtbs/` with a stamp
//! of their own (so a cache made before them keeps its Image and initramfs). `--kernel FILE` / `--initrd FILE` use one's own instead (either or both).

use crate::cpio;
use anyhow::{bail, ensure, Context, Result};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Modules loaded by `/init`, in this order after their dependencies: what the VM's
/// virtio-mmio block and network devices need with Debian's kernel (which builds them as
/// modules rather than into the Image).
pub const MODULES: &[&str] = &["virtio_mmio", "virtio_blk", "virtio_net"];

/// The line `/init` prints once userspace is up: `TESSERA-LINUX-UP <hostname> cpus=<n>`.
pub const MARKER: &str = "TESSERA-LINUX-UP";

/// The board DTBs kept from the kernel package (`usr/lib/linux-image-<release>/<path>`).
pub const BOARD_DTBS: &[&str] = &[
    "xilinx/zynqmp-zcu102-rev1.0.dtb",
    "freescale/imx8mp-evk.dtb",
    "broadcom/bcm2711-rpi-4-b.dtb",
];
const DTBS_DIR: &str = "dtbs";

/// Debian's metapackage that depends on the current arm64 kernel.
const KERNEL_META: &str = "linux-image-arm64";
const BUSYBOX_PKG: &str = "busybox-static";
const STAMP: &str = "assets.stamp";
const KERNEL_FILE: &str = "Image";
const INITRD_FILE: &str = "initrd.cpio.gz";
/// Offset and value of the magic in the arm64 Linux Image header.
const IMAGE_MAGIC_OFFSET: usize = 56;
const IMAGE_MAGIC: &[u8; 4] = b"ARM\x64";
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The initramfs's `/init`. Mounts the kernel filesystems, installs busybox's applets, loads
/// the modules listed in `/lib/modules/load-order`, takes its hostname from `tessera.name=`
/// on the kernel command line, prints the marker and keeps a shell on the console.
pub const INIT_SCRIPT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s
export PATH=/sbin:/usr/sbin:/bin:/usr/bin HOME=/root
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts 2>/dev/null

for m in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$m.ko" || echo "tessera-init: insmod $m failed"
done

[ -f /etc/tessera/links.sh ] && . /etc/tessera/links.sh

hostname tessera
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        tessera.name=*) hostname "${arg#tessera.name=}" ;;
    esac
done

echo "TESSERA-LINUX-UP $(hostname) cpus=$(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo)"

# Test scenarios name a script on the kernel command line (tessera.test=NAME).
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        tessera.test=*) sh "/etc/tessera/${arg#tessera.test=}.sh" ;;
    esac
done

while true; do
    setsid cttyhack sh
    echo "tessera-init: shell exited, starting another"
    sleep 1
done
"#;

/// Scripts the test scenarios run inside Linux (`tessera.test=NAME`): they
/// print `TT ...` lines the scenarios look for.
pub const TEST_SCRIPTS: &[(&str, &str)] = &[("disk", DISK_TEST), ("info", INFO_TEST), ("work", WORK)];

/// `cargo xtask bench`'s workloads inside Linux: a CPU-bound one (sha256sum
/// over a RAM file) and a memory-bound one (a large dd in tmpfs), timed with
/// the guest's own clock (CNTVCT: instructions under -icount).
const WORK: &str = r#"
now() { date +%s.%N 2>/dev/null | grep -v N || cut -d' ' -f1 /proc/uptime; }
dd if=/dev/urandom of=/tmp/f bs=1M count=32 2>/dev/null
T0=$(now); sha256sum /tmp/f >/dev/null; T1=$(now)
echo "TT work sha256 $(awk "BEGIN { printf \"%.6f\", $T1 - $T0 }")"
rm /tmp/f
T0=$(now)
for i in 1 2 3 4 5 6 7 8; do dd if=/dev/zero of=/tmp/g bs=1M count=128 2>/dev/null; rm /tmp/g; done
T1=$(now)
echo "TT work dd $(awk "BEGIN { printf \"%.6f\", $T1 - $T0 }")"
echo "TT work done"
"#;

/// Disk round trip, clock and interrupt checks; reboots once (the disk
/// remembers that it did, since RAM is scrubbed on reset).
const DISK_TEST: &str = r#"
echo "TT nproc=$(nproc)"
common_checks
MARK=$(dd if=/dev/vda bs=512 skip=16384 count=1 2>/dev/null | head -c 8)
if [ "$MARK" = "REBOOTED" ]; then
    echo "TT second boot: reboot -f brought $(hostname) back"
    i=0
    while [ $i -lt 600 ]; do echo "TT alive $i"; sleep 1; i=$((i+1)); done
fi
dd if=/dev/urandom of=/tmp/a bs=1M count=4 2>/dev/null
A=$(sha256sum /tmp/a | cut -d' ' -f1)
dd if=/tmp/a of=/dev/vda bs=1M conv=fsync 2>/dev/null
sync
echo 3 > /proc/sys/vm/drop_caches
B=$(dd if=/dev/vda bs=1M count=4 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ "$A" = "$B" ]; then echo "TT ok disk sha256 $A"; else echo "TT FAIL disk sha256 $A != $B"; fi
T0=$(cut -d' ' -f1 /proc/uptime); sleep 1; T1=$(cut -d' ' -f1 /proc/uptime)
awk "BEGIN { d = $T1 - $T0; if (d >= 0.95 && d < 1.5) print \"TT ok sleep 1 took \" d \" s\"; else print \"TT FAIL sleep 1 took \" d \" s\" }"
echo REBOOTED | dd of=/dev/vda bs=512 seek=16384 conv=fsync 2>/dev/null
sync
echo "TT rebooting"
reboot -f
"#;

/// Device checks for a second Linux VM; then waits at its shell.
const INFO_TEST: &str = r#"
echo "TT nproc=$(nproc)"
common_checks
if dd if=/dev/vda of=/dev/null bs=1M count=1 2>/dev/null; then echo "TT ok own disk readable"; else echo "TT FAIL own disk"; fi
echo "TT ready"
"#;

/// Shared by the test scripts: interrupts counting, devices seen.
const COMMON: &str = r#"
common_checks() {
    for name in arch_timer virtio; do
        n=$(awk -v k=$name '$0 ~ k { for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i } END { print s + 0 }' /proc/interrupts)
        if [ "$n" -gt 0 ]; then echo "TT ok $name interrupts $n"; else echo "TT FAIL no $name interrupts"; fi
    done
    grep -iE 'virtio|pl031|9010000' /proc/iomem | sed 's/^ */TT iomem /'
    ls /proc/device-tree | grep -E 'virtio|pl0' | sed 's/^/TT dt /'
}
"#;

/// Changes to the init script or the test scripts rebuild the initramfs.
fn init_hash() -> u64 {
    let scripts = TEST_SCRIPTS.iter().flat_map(|(n, s)| n.bytes().chain(s.bytes()));
    INIT_SCRIPT
        .bytes()
        .chain(COMMON.bytes())
        .chain(scripts)
        .chain(crate::guest_links::hash_input().into_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
}

#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Use this kernel (raw or gzip arm64 Image) instead of Debian's.
    pub kernel: Option<PathBuf>,
    /// Use this initramfs instead of the one built here.
    pub initrd: Option<PathBuf>,
    /// The Cargo target directory; default `$CARGO_TARGET_DIR` or `<repo>/target`.
    pub target_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assets {
    /// Raw arm64 Linux Image (header magic checked).
    pub kernel: PathBuf,
    /// gzip-compressed cpio newc initramfs.
    pub initrd: PathBuf,
    /// Debian kernel package version, or `custom` when both files were given.
    pub version: String,
}

/// Returns a kernel and an initramfs, fetching and building Debian's when not given or cached.
pub fn ensure_assets(opts: &Options) -> Result<Assets> {
    // Scenarios run on several threads and share one work directory: one
    // build at a time (the later callers then find the cache).
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let target = match &opts.target_dir {
        Some(t) => t.clone(),
        None => default_target_dir(),
    };
    let base = target.join("guest-assets");
    let user_kernel = opts
        .kernel
        .as_deref()
        .map(|k| user_kernel(k, &base.join("custom")))
        .transpose()?;
    if let Some(initrd) = &opts.initrd {
        ensure!(initrd.is_file(), "--initrd {}: no such file", initrd.display());
    }
    if let (Some(kernel), Some(initrd)) = (&user_kernel, &opts.initrd) {
        return Ok(Assets {
            kernel: kernel.clone(),
            initrd: initrd.clone(),
            version: "custom".to_owned(),
        });
    }
    let debian = debian_assets(&base)?;
    Ok(Assets {
        kernel: user_kernel.unwrap_or(debian.kernel),
        initrd: opts.initrd.clone().unwrap_or(debian.initrd),
        version: debian.version,
    })
}

pub fn default_target_dir() -> PathBuf {
    // Cargo reads a relative CARGO_TARGET_DIR from the current directory.
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => std::path::absolute(&dir).unwrap_or_else(|_| dir.into()),
        None => crate::paths::root().join("target"),
    }
}

/// A user's kernel: used as is when it is a raw Image, unpacked next to the cache when gzip.
fn user_kernel(path: &Path, out_dir: &Path) -> Result<PathBuf> {
    let data = fs::read(path).with_context(|| format!("--kernel {}", path.display()))?;
    if !data.starts_with(&GZIP_MAGIC) {
        check_image(&data).with_context(|| format!("--kernel {}", path.display()))?;
        return Ok(path.to_owned());
    }
    let image = gunzip(&data).with_context(|| format!("--kernel {}", path.display()))?;
    check_image(&image).with_context(|| format!("--kernel {} (after gunzip)", path.display()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let out = out_dir.join(format!("{name}.Image"));
    write_atomic(&out, &image)?;
    Ok(out)
}

/// Checks the arm64 Image header magic.
pub fn check_image(data: &[u8]) -> Result<()> {
    let magic = data.get(IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4);
    ensure!(
        magic == Some(&IMAGE_MAGIC[..]),
        "not an arm64 Linux Image (no \"ARM\\x64\" magic at offset {IMAGE_MAGIC_OFFSET})"
    );
    Ok(())
}

/// Returns `data` itself when it is a raw Image, or gunzipped when it starts with gzip magic.
pub fn raw_image(data: Vec<u8>) -> Result<Vec<u8>> {
    let image = if data.starts_with(&GZIP_MAGIC) {
        gunzip(&data)?
    } else {
        data
    };
    check_image(&image)?;
    Ok(image)
}

fn gunzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    GzDecoder::new(data)
        .read_to_end(&mut out)
        .context("gunzip failed")?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Debian packages

/// The two packages to fetch, resolved against apt's lists.
struct Packages {
    /// e.g. `linux-image-6.1.0-37-arm64-unsigned`.
    kernel: String,
    kernel_version: String,
    busybox_version: String,
}

impl Packages {
    fn stamp(&self) -> String {
        format!(
            "{}:arm64 {}\n{BUSYBOX_PKG}:arm64 {}\nmodules {}\ninit {:016x}\n",
            self.kernel,
            self.kernel_version,
            self.busybox_version,
            MODULES.join(" "),
            init_hash()
        )
    }
}

fn debian_assets(base: &Path) -> Result<Assets> {
    remove_stale_work_dirs(base);
    let pkgs = match resolve_packages() {
        Ok(p) => p,
        Err(e) => {
            // Without apt (or offline), a complete cache is still good enough.
            if let Some(cached) = newest_cached(base) {
                eprintln!(
                    "xtask: warning: {e:#}\nxtask: using cached guest assets {}",
                    cached.version
                );
                return Ok(cached);
            }
            return Err(e);
        }
    };
    let dir = base.join(sanitize(&pkgs.kernel_version));
    let assets = Assets {
        kernel: dir.join(KERNEL_FILE),
        initrd: dir.join(INITRD_FILE),
        version: pkgs.kernel_version.clone(),
    };
    let stamp = pkgs.stamp();
    if fs::read_to_string(dir.join(STAMP)).ok().as_deref() == Some(stamp.as_str())
        && assets.kernel.is_file()
        && assets.initrd.is_file()
    {
        return Ok(assets);
    }

    eprintln!(
        "xtask: building guest assets from {}:arm64 {} and {BUSYBOX_PKG}:arm64 {}",
        pkgs.kernel, pkgs.kernel_version, pkgs.busybox_version
    );
    // A scratch directory of our own, so two xtasks at once do not trip over each other.
    let work = base.join(format!(".work-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    let _ = fs::remove_file(dir.join(STAMP));
    let result = build_from_debs(&pkgs, &work, &dir, &assets);
    let _ = fs::remove_dir_all(&work);
    result?;
    write_atomic(&dir.join(STAMP), stamp.as_bytes())?;
    Ok(assets)
}

/// The board DTB `rel` (one of [`BOARD_DTBS`], e.g. `xilinx/zynqmp-zcu102-rev1.0.dtb`) from
/// the current Debian kernel package, downloading the package if the cache lacks it.
pub fn board_dtb(target_dir: &Path, rel: &str) -> Result<PathBuf> {
    ensure!(
        BOARD_DTBS.contains(&rel),
        "debian:{rel}: xtask keeps only {} from the kernel package",
        BOARD_DTBS.join(", ")
    );
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let base = target_dir.join("guest-assets");
    let pkgs = match resolve_packages() {
        Ok(p) => p,
        Err(e) => {
            // Offline: any version's copy will do.
            let cached = fs::read_dir(&base).ok().and_then(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path().join(DTBS_DIR).join(rel))
                    .find(|p| p.is_file())
            });
            return cached.ok_or(e);
        }
    };
    let dtbs = base.join(sanitize(&pkgs.kernel_version)).join(DTBS_DIR);
    let stamp = dtbs_stamp(&pkgs);
    let file = dtbs.join(rel);
    if fs::read_to_string(dtbs.join(STAMP)).ok().as_deref() == Some(stamp.as_str()) && file.is_file() {
        return Ok(file);
    }
    eprintln!(
        "xtask: fetching the board DTBs from {}:arm64 {}",
        pkgs.kernel, pkgs.kernel_version
    );
    let work = base.join(format!(".work-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    let result = (|| {
        let debs = work.join("debs");
        let root = work.join("root");
        fs::create_dir_all(&debs)?;
        fs::create_dir_all(&root)?;
        download(&[format!("{}:arm64={}", pkgs.kernel, pkgs.kernel_version)], &debs)?;
        for deb in fs::read_dir(&debs)? {
            let deb = deb?.path();
            if deb.extension().is_some_and(|e| e == "deb") {
                let mut cmd = Command::new("dpkg-deb");
                cmd.arg("-x").arg(&deb).arg(&root);
                output(&mut cmd, "run `dpkg-deb` (from the dpkg package)")?;
            }
        }
        let (release, _) = find_vmlinuz(&root)?;
        keep_board_dtbs(&root, &release, &dtbs)
    })();
    let _ = fs::remove_dir_all(&work);
    result?;
    write_atomic(&dtbs.join(STAMP), stamp.as_bytes())?;
    ensure!(file.is_file(), "{} has no {rel}", pkgs.kernel);
    Ok(file)
}

fn dtbs_stamp(pkgs: &Packages) -> String {
    format!(
        "{}:arm64 {}\n{}\n",
        pkgs.kernel,
        pkgs.kernel_version,
        BOARD_DTBS.join("\n")
    )
}

/// Copies [`BOARD_DTBS`] out of an unpacked kernel package into `dtbs`.
fn keep_board_dtbs(root: &Path, release: &str, dtbs: &Path) -> Result<()> {
    let from = root.join("usr/lib").join(format!("linux-image-{release}"));
    for rel in BOARD_DTBS {
        let src = from.join(rel);
        let data = fs::read(&src).with_context(|| format!("no {} in the kernel package", src.display()))?;
        let dst = dtbs.join(rel);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent)?;
        }
        write_atomic(&dst, &data)?;
    }
    Ok(())
}

fn build_from_debs(pkgs: &Packages, work: &Path, dir: &Path, assets: &Assets) -> Result<()> {
    let debs = work.join("debs");
    let root = work.join("root");
    fs::create_dir_all(&debs)?;
    fs::create_dir_all(&root)?;
    download(
        &[
            format!("{}:arm64={}", pkgs.kernel, pkgs.kernel_version),
            format!("{BUSYBOX_PKG}:arm64={}", pkgs.busybox_version),
        ],
        &debs,
    )?;
    for deb in fs::read_dir(&debs)? {
        let deb = deb?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            let mut cmd = Command::new("dpkg-deb");
            cmd.arg("-x").arg(&deb).arg(&root);
            output(&mut cmd, "run `dpkg-deb` (from the dpkg package)")?;
        }
    }

    // The kernel: boot/vmlinuz-<release>.
    let (release, vmlinuz) = find_vmlinuz(&root)?;
    // The board DTBs of the same package, while it is unpacked.
    let dtbs = dir.join(DTBS_DIR);
    keep_board_dtbs(&root, &release, &dtbs)?;
    write_atomic(&dtbs.join(STAMP), dtbs_stamp(pkgs).as_bytes())?;
    let data = fs::read(&vmlinuz)?;
    let image = raw_image(data).with_context(|| format!("{}", vmlinuz.display()))?;

    // Modules of the same release.
    let moddir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(&release))
        .find(|d| d.is_dir())
        .with_context(|| format!("no lib/modules/{release}/ in {}", pkgs.kernel))?;
    let modules = load_order(&moddir, MODULES)?;

    let busybox_path = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.is_file())
        .context("no bin/busybox in busybox-static")?;
    let busybox = fs::read(&busybox_path)?;

    let mut loaded = Vec::new();
    for (name, rel) in &modules {
        loaded.push((name.clone(), read_module(&moddir.join(rel))?));
    }
    let initrd = initramfs(&busybox, &loaded)?;

    fs::create_dir_all(dir)?;
    write_atomic(&assets.kernel, &image)?;
    write_atomic(&assets.initrd, &initrd)?;
    eprintln!(
        "xtask: kernel {release}: {} bytes; initramfs: {} bytes, modules: {}",
        image.len(),
        initrd.len(),
        modules
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

/// Makes sure apt can see arm64 packages, then picks the kernel and busybox packages.
fn resolve_packages() -> Result<Packages> {
    for tool in ["dpkg", "apt-get", "apt-cache", "dpkg-deb"] {
        if crate::host_tools::find(tool).is_none() {
            bail!(
                "`{tool}` not found: fetching Debian's arm64 kernel needs a Debian or Ubuntu \
                 host with apt; elsewhere pass --kernel FILE and --initrd FILE"
            );
        }
    }
    let foreign = output(
        Command::new("dpkg").arg("--print-foreign-architectures"),
        "list dpkg's architectures",
    )?;
    let mut updated = false;
    if !foreign.split_whitespace().any(|a| a == "arm64") {
        if !is_root() {
            bail!(
                "dpkg does not know the arm64 architecture; enable it with\n    \
                 sudo dpkg --add-architecture arm64 && sudo apt-get update\n\
                 (this only lets apt download arm64 packages; nothing is installed), \
                 or pass --kernel FILE and --initrd FILE"
            );
        }
        eprintln!("xtask: running `dpkg --add-architecture arm64` (nothing arm64 gets installed)");
        output(
            Command::new("dpkg").args(["--add-architecture", "arm64"]),
            "add the arm64 architecture",
        )?;
        apt_update()?;
        updated = true;
    }
    // Both packages' candidates in one `apt-cache` call (each call costs most of a second).
    let first = [format!("{KERNEL_META}:arm64"), format!("{BUSYBOX_PKG}:arm64")];
    let mut info = apt_show(&first)?;
    let complete =
        |i: &BTreeMap<String, Paragraph>| i.contains_key(KERNEL_META) && i.contains_key(BUSYBOX_PKG);
    if !updated && !complete(&info) {
        apt_update()?;
        info = apt_show(&first)?;
    }
    let (Some(meta), Some(busybox)) = (info.get(KERNEL_META), info.get(BUSYBOX_PKG)) else {
        bail!(
            "apt has no {} even after `apt-get update`: check that /etc/apt/sources.list(.d) \
             has a Debian archive for arm64 (an `Architectures:` line may exclude it); or pass \
             --kernel FILE and --initrd FILE",
            first.join(" or ")
        );
    };

    // linux-image-arm64 depends on the signed linux-image-<abi>-arm64; we want the unsigned
    // twin (same Image, no EFI signature; the signed one is only a fallback).
    let signed = kernel_dependency(&meta.depends).with_context(|| {
        format!(
            "no linux-image-* in the Depends of {KERNEL_META}:arm64: {:?}",
            meta.depends
        )
    })?;
    let unsigned = format!("{signed}-unsigned");
    let kernels = apt_show(&[format!("{unsigned}:arm64"), format!("{signed}:arm64")])?;
    let (kernel, kernel_version) = match (kernels.get(&unsigned), kernels.get(&signed)) {
        (Some(p), _) => (unsigned, p.version.clone()),
        (None, Some(p)) => {
            eprintln!("xtask: warning: {unsigned}:arm64 not available, using {signed}");
            (signed, p.version.clone())
        }
        (None, None) => bail!("apt has neither {unsigned}:arm64 nor {signed}:arm64"),
    };
    Ok(Packages {
        kernel,
        kernel_version,
        busybox_version: busybox.version.clone(),
    })
}

/// The fields we use of one package's `apt-cache show` paragraph.
#[derive(Debug, Default, PartialEq, Eq)]
struct Paragraph {
    version: String,
    depends: String,
}

/// `apt-cache show --no-all-versions PKG...`: the candidate of each package apt knows, by
/// package name (without `:arch`). Unknown packages are simply missing.
fn apt_show(pkgs: &[String]) -> Result<BTreeMap<String, Paragraph>> {
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions"])
        .args(pkgs)
        .stdin(Stdio::null())
        .output()
        .context("cannot start `apt-cache show`")?;
    // apt-cache exits 100 when it finds none of them; that is just an empty answer.
    Ok(parse_show(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_show(show: &str) -> BTreeMap<String, Paragraph> {
    let mut found = BTreeMap::new();
    for para in show.split("\n\n") {
        let mut name = None;
        let mut p = Paragraph::default();
        for line in para.lines() {
            if let Some((key, value)) = line.split_once(':') {
                match key {
                    "Package" => name = Some(value.trim().to_owned()),
                    "Version" => p.version = value.trim().to_owned(),
                    "Depends" => p.depends = value.trim().to_owned(),
                    _ => {}
                }
            }
        }
        if let Some(name) = name.filter(|_| !p.version.is_empty()) {
            found.entry(name).or_insert(p);
        }
    }
    found
}

fn apt_update() -> Result<()> {
    if !is_root() {
        bail!(
            "apt's package lists have no arm64 kernel; run\n    sudo apt-get update\n\
             or pass --kernel FILE and --initrd FILE"
        );
    }
    eprintln!("xtask: running `apt-get update` (once, for the arm64 package lists)");
    let status = Command::new("apt-get")
        .args(["-q", "update"])
        .stdin(Stdio::null())
        .status()
        .context("cannot start `apt-get update`")?;
    ensure!(
        status.success(),
        "`apt-get update` failed ({status}): check the network and /etc/apt/sources.list(.d); \
         on a non-Debian or offline host pass --kernel FILE and --initrd FILE"
    );
    Ok(())
}

/// The first `linux-image-*` package in a `Depends:` field.
fn kernel_dependency(depends: &str) -> Option<String> {
    depends
        .split([',', '|'])
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .map(|d| d.split(':').next().unwrap_or(""))
        .find(|d| d.starts_with("linux-image-"))
        .map(str::to_owned)
}

/// `apt-get download` into `dir`. As root apt drops to the `_apt` user, which cannot write
/// into `target/`; tell it to stay root (it only downloads and verifies, installs nothing).
fn download(pkgs: &[String], dir: &Path) -> Result<()> {
    let mut cmd = Command::new("apt-get");
    cmd.arg("-q");
    if is_root() {
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    cmd.arg("download")
        .args(pkgs)
        .current_dir(dir)
        .stdin(Stdio::null());
    eprintln!("xtask: apt-get download {}", pkgs.join(" "));
    output(&mut cmd, "download the packages").with_context(|| {
        "`apt-get download` failed: check the network, or run `apt-get update` if the lists \
         are stale; or pass --kernel FILE and --initrd FILE"
    })?;
    Ok(())
}

fn find_vmlinuz(root: &Path) -> Result<(String, PathBuf)> {
    let boot = root.join("boot");
    let mut found = Vec::new();
    for entry in fs::read_dir(&boot).context("no boot/ in the kernel package")? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            found.push((release.to_owned(), path));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("no boot/vmlinuz-* in the kernel package"),
        _ => bail!("several boot/vmlinuz-* in the kernel package: {found:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Kernel modules

/// `wanted` modules and their dependencies, each after everything it needs: (module name,
/// path relative to `moddir`). Dependencies come from `<moddir>/modules.dep` when there is
/// one; Debian's packages have none (their postinst runs `depmod`), so otherwise they are read
/// from each module's `.modinfo` section (`depends=`), as `depmod` itself would. Modules built
/// into the kernel (`modules.builtin`) are left out.
pub fn load_order(moddir: &Path, wanted: &[&str]) -> Result<Vec<(String, String)>> {
    let builtin = fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    let dep = match fs::read_to_string(moddir.join("modules.dep")) {
        Ok(dep) => dep,
        Err(_) => modules_dep_from_modinfo(moddir, &builtin, wanted)?,
    };
    resolve_modules(&dep, &builtin, wanted)
}

/// A `modules.dep` covering `wanted` and everything they need, from the modules' `.modinfo`.
fn modules_dep_from_modinfo(moddir: &Path, builtin: &str, wanted: &[&str]) -> Result<String> {
    // Every module file under moddir: name -> relative path.
    let mut index = BTreeMap::new();
    let mut dirs = vec![moddir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().contains(".ko") {
                let rel = path.strip_prefix(moddir)?.to_string_lossy().into_owned();
                index.insert(module_name(&rel), rel);
            }
        }
    }
    let builtin: BTreeSet<String> = builtin.lines().map(|l| module_name(l.trim())).collect();
    let mut dep = String::new();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = wanted.iter().map(|w| w.replace('-', "_")).collect();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) || builtin.contains(&name) {
            continue;
        }
        let Some(rel) = index.get(&name) else {
            continue; // resolve_modules reports it
        };
        let data = read_module(&moddir.join(rel))?;
        let depends = modinfo(&data, "depends").with_context(|| format!("{rel}: bad .modinfo"))?;
        let mut paths = Vec::new();
        for d in depends
            .iter()
            .flat_map(|d| d.split(','))
            .filter(|d| !d.is_empty())
        {
            let d = d.replace('-', "_");
            match index.get(&d) {
                Some(p) => paths.push(p.as_str()),
                None if builtin.contains(&d) => {}
                None => bail!("{rel} needs module {d}, which the kernel package does not have"),
            }
            todo.push(d);
        }
        dep.push_str(&format!("{rel}: {}\n", paths.join(" ")));
    }
    Ok(dep)
}

/// The values of `key` in a module's `.modinfo` section (NUL-separated `key=value` strings).
fn modinfo(ko: &[u8], key: &str) -> Result<Vec<String>> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(ko).context("not an ELF file")?;
    let section = file.section_by_name(".modinfo").context("no .modinfo section")?;
    let prefix = format!("{key}=");
    Ok(section
        .data()?
        .split(|b| *b == 0)
        .filter_map(|s| {
            std::str::from_utf8(s)
                .ok()?
                .strip_prefix(&prefix)
                .map(str::to_owned)
        })
        .collect())
}

/// [`load_order`] on the text of `modules.dep` and `modules.builtin`.
pub fn resolve_modules(dep: &str, builtin: &str, wanted: &[&str]) -> Result<Vec<(String, String)>> {
    // path -> its dependencies' paths
    let mut deps: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut by_name: BTreeMap<String, &str> = BTreeMap::new();
    for line in dep.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        deps.insert(path.trim(), rest.split_whitespace().collect());
        by_name.insert(module_name(path.trim()), path.trim());
    }
    let builtin: BTreeSet<String> = builtin.lines().map(|l| module_name(l.trim())).collect();

    fn visit<'a>(
        path: &'a str,
        deps: &BTreeMap<&'a str, Vec<&'a str>>,
        done: &mut BTreeSet<&'a str>,
        stack: &mut Vec<&'a str>,
        order: &mut Vec<(String, String)>,
    ) -> Result<()> {
        if done.contains(path) {
            return Ok(());
        }
        ensure!(
            !stack.contains(&path),
            "modules.dep has a dependency cycle through {path}"
        );
        stack.push(path);
        for d in deps.get(path).map(Vec::as_slice).unwrap_or_default() {
            ensure!(
                deps.contains_key(d),
                "modules.dep: {path} needs {d}, which it does not list"
            );
            visit(d, deps, done, stack, order)?;
        }
        stack.pop();
        done.insert(path);
        order.push((module_name(path), path.to_owned()));
        Ok(())
    }

    let (mut done, mut stack, mut order) = (BTreeSet::new(), Vec::new(), Vec::new());
    for want in wanted {
        let want = want.replace('-', "_");
        match by_name.get(&want) {
            Some(path) => visit(path, &deps, &mut done, &mut stack, &mut order)?,
            None if builtin.contains(&want) => {}
            None => bail!("kernel module {want} is neither in modules.dep nor built in"),
        }
    }
    Ok(order)
}

/// `kernel/drivers/net/virtio_net.ko.xz` -> `virtio_net` (dashes as underscores, as the
/// kernel names modules).
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// A module file as busybox `insmod` can load it: plain ELF. Debian 12 ships plain `.ko`;
/// compressed ones would need a decoder here.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if name.ends_with(".ko.gz") {
        return gunzip(&data).with_context(|| name.to_string());
    }
    ensure!(
        name.ends_with(".ko") && data.starts_with(b"\x7fELF"),
        "{name}: only plain (or gzip) kernel modules are supported, and busybox insmod \
         cannot load compressed ones; this kernel package needs a decoder added in xtask"
    );
    Ok(data)
}

// ---------------------------------------------------------------------------------------
// The initramfs

/// The gzip cpio initramfs: busybox, `/init`, `/dev/console`, and `modules` (name, plain ELF)
/// under `/lib/modules/` with `load-order` listing them in order.
pub fn initramfs(busybox: &[u8], modules: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut w = cpio::Writer::new(Vec::new());
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "root",
        "etc",
        "lib/modules",
    ] {
        w.dir(d, 0o755)?;
    }
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.char_dev("dev/null", 0o666, 1, 3)?;
    w.file("bin/busybox", 0o755, busybox)?;
    w.symlink("bin/sh", "busybox")?;
    w.file("init", 0o755, INIT_SCRIPT.as_bytes())?;
    w.file("etc/hostname", 0o644, b"tessera\n")?;
    w.dir("etc/tessera", 0o755)?;
    for (name, body) in TEST_SCRIPTS {
        let script = format!("{COMMON}{body}");
        w.file(&format!("etc/tessera/{name}.sh"), 0o755, script.as_bytes())?;
    }
    for (path, mode, body) in crate::guest_links::files() {
        w.file(&path, mode, body.as_bytes())?;
    }
    let mut order = String::new();
    for (name, data) in modules {
        w.file(&format!("lib/modules/{name}.ko"), 0o644, data)?;
        order.push_str(name);
        order.push('\n');
    }
    w.file("lib/modules/load-order", 0o644, order.as_bytes())?;
    let cpio = w.finish()?;
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&cpio)?;
    Ok(gz.finish()?)
}

// ---------------------------------------------------------------------------------------
// Helpers

/// The newest complete `<base>/<version>/`, for a host where apt cannot be asked.
fn newest_cached(base: &Path) -> Option<Assets> {
    let mut best: Option<(std::time::SystemTime, Assets)> = None;
    for entry in fs::read_dir(base).ok()? {
        let dir = entry.ok()?.path();
        let Ok(meta) = fs::metadata(dir.join(STAMP)) else {
            continue;
        };
        let assets = Assets {
            kernel: dir.join(KERNEL_FILE),
            initrd: dir.join(INITRD_FILE),
            version: dir.file_name()?.to_string_lossy().into_owned(),
        };
        let time = meta.modified().ok()?;
        if assets.kernel.is_file() && assets.initrd.is_file() && best.as_ref().is_none_or(|(t, _)| time > *t)
        {
            best = Some((time, assets));
        }
    }
    best.map(|(_, a)| a)
}

/// Removes the scratch directories of xtasks that are gone (interrupted mid-build).
fn remove_stale_work_dirs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(".work-") {
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// A version as a directory name (`1:2.3` -> `1_2.3`).
fn sanitize(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-~".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes `path` through a temporary file and a rename, so a reader never sees half a file.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    // Unique per call: scenarios run on several threads of one process.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp-{}-{n}", std::process::id()));
    fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Runs `cmd`, returning its stdout; on failure the error names the command, what it was
/// for, and its stderr.
fn output(cmd: &mut Command, what: &str) -> Result<String> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{shown}` (to {what})"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}), trying to {what}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apt_show() {
        let show = "Package: linux-image-arm64\nSource: linux-signed-arm64 (6.1.140+1)\n\
                    Version: 6.1.140-1\nDepends: linux-image-6.1.0-37-arm64 (= 6.1.140-1)\n\
                    Description: x\n more\n\nPackage: busybox-static\n\
                    Version: 1:1.35.0-4+b3\nDescription: y\n";
        let found = parse_show(show);
        assert_eq!(found.len(), 2);
        let meta = &found["linux-image-arm64"];
        assert_eq!(meta.version, "6.1.140-1");
        assert_eq!(
            kernel_dependency(&meta.depends).as_deref(),
            Some("linux-image-6.1.0-37-arm64")
        );
        assert_eq!(found["busybox-static"].version, "1:1.35.0-4+b3");
        assert!(parse_show("").is_empty());
    }

    #[test]
    fn finds_the_kernel_dependency() {
        let d = "foo (>= 1), linux-image-6.1.0-9-arm64:arm64 | bar";
        assert_eq!(kernel_dependency(d).as_deref(), Some("linux-image-6.1.0-9-arm64"));
        assert_eq!(kernel_dependency("foo"), None);
    }

    #[test]
    fn module_names() {
        assert_eq!(module_name("kernel/drivers/net/virtio_net.ko"), "virtio_net");
        assert_eq!(module_name("kernel/net/core/failover.ko.xz"), "failover");
        assert_eq!(module_name("kernel/drivers/a/b-c.ko.zst"), "b_c");
    }

    #[test]
    fn modules_come_after_their_dependencies() {
        let dep = "\
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/fs/other.ko:
";
        let order = resolve_modules(dep, "", MODULES).unwrap();
        let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert_eq!(names.len(), 7, "{names:?}");
        assert!(pos("virtio") < pos("virtio_mmio") && pos("virtio_ring") < pos("virtio_mmio"));
        assert!(pos("failover") < pos("net_failover") && pos("net_failover") < pos("virtio_net"));
        assert_eq!(order[pos("failover")].1, "kernel/net/core/failover.ko");
        // Built-in modules are skipped; unknown ones are an error.
        let order = resolve_modules("", "kernel/drivers/virtio/virtio_mmio.ko\n", &["virtio_mmio"]);
        assert!(order.unwrap().is_empty());
        assert!(resolve_modules(dep, "", &["nope"]).is_err());
        assert!(resolve_modules("a.ko: b.ko\nb.ko: a.ko\n", "", &["a"]).is_err());
    }

    #[test]
    fn image_magic_and_gzip() {
        let mut image = vec![0u8; 64];
        image[56..60].copy_from_slice(b"ARM\x64");
        assert!(check_image(&image).is_ok());
        assert!(check_image(&[0u8; 64]).is_err());
        assert!(check_image(&[]).is_err());
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&image).unwrap();
        assert_eq!(raw_image(gz.finish().unwrap()).unwrap(), image);
        assert_eq!(raw_image(image.clone()).unwrap(), image);
    }

    #[test]
    fn initramfs_contents() {
        let modules = vec![("failover".to_owned(), b"\x7fELF1".to_vec())];
        let gz = initramfs(b"BUSYBOX", &modules).unwrap();
        let cpio = gunzip(&gz).unwrap();
        let entries = cpio::parse(&cpio).unwrap();
        let get = |n: &str| {
            entries
                .iter()
                .find(|(h, _)| h.name == n)
                .map(|(h, d)| (h.mode, d))
        };
        let (mode, init) = get("init").unwrap();
        assert_eq!(mode, 0o100755);
        assert!(init.starts_with(b"#!/bin/busybox sh\n"));
        assert!(String::from_utf8_lossy(init).contains(MARKER));
        assert_eq!(get("bin/busybox").unwrap().1, b"BUSYBOX");
        assert_eq!(get("lib/modules/failover.ko").unwrap().1, b"\x7fELF1");
        assert_eq!(get("lib/modules/load-order").unwrap().1, b"failover\n");
        for d in ["dev", "proc", "sys", "tmp", "root", "etc", "lib/modules"] {
            assert_eq!(get(d).unwrap().0, 0o040755, "{d}");
        }
    }

    #[test]
    fn sanitizes_versions() {
        assert_eq!(sanitize("1:1.35.0-4+b3"), "1_1.35.0-4+b3");
        assert_eq!(sanitize("6.1.140-1"), "6.1.140-1");
    }
}
