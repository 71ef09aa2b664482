//! Linux guest assets: Debian's arm64 kernel and a busybox initramfs built by xtask.
//!
//! A config's `kernel = "debian:kernel"` / `initrd = "debian:initrd"` stand for the kernel
//! its board pins (`debian_kernel = "<suite>/<package>"` in board.toml, default
//! [`DEFAULT_KERNEL`]) and an initramfs built around it; `debian:<suite>/kernel` and
//! `debian:<suite>/initrd` take that suite's `linux-image-arm64` instead (the tests boot
//! [`TRIXIE_KERNEL`] too). The packages come through [`crate::debian`], with xtask's own apt
//! configuration under `<target>/debian/`: the host's apt sources play no part. From the
//! kernel package and `busybox-static` of the same suite xtask writes, under
//! `<target>/guest-assets/<suite>/<kernel-package>_<version>/`:
//!
//! - `Image`: the raw arm64 kernel (Debian ships it uncompressed; a gzip one is unpacked);
//! - `initrd.cpio.gz`: a gzip newc archive with busybox, an `/init` script, the kernel
//!   modules in [`MODULES`] (plus their dependencies), decompressed (Debian 13 ships
//!   `.ko.xz`, which busybox `insmod` cannot load), and the files of [`GUEST_PACKAGES`];
//! - `assets.stamp`: written last; the directory counts as complete only when it exists.
//!
//! Everything is skipped when the stamp matches, so only a new package version costs a
//! download. Boards whose DTB comes from Debian (`dtb = "debian:<vendor>/<file>.dtb"`) take
//! it from the unpacked kernel package their pin names ([`board_dtb`]). `--kernel FILE` /
//! `--initrd FILE` use one's own instead (either or both).

use crate::{cpio, debian};
use anyhow::{bail, ensure, Context, Result};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Modules loaded by `/init`, in this order after their dependencies: what the VM's
/// virtio-mmio block and network devices need with Debian's kernel (which builds them as
/// modules rather than into the Image).
pub const MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    // vsock over Tessera's virtio-vsock links, and vsock loopback (CID 1).
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    "vsock_loopback",
];

/// The line `/init` prints once userspace is up:
/// `TESSERA-LINUX-UP <hostname> cpus=<n> linux=<kernel release>`.
pub const MARKER: &str = "TESSERA-LINUX-UP";

/// Debian packages (of the kernel's suite) whose files go into the initramfs as the
/// package has them (documentation left out; `lib/`, `bin/`, `sbin/` under `usr/`, as in a
/// merged-/usr system), with everything they depend on in that suite ([`debian::closure`]:
/// the library names differ between suites, e.g. bookworm's `libssl3` is trixie's
/// `libssl3t64`) but for [`GUEST_SKIP`].
pub const GUEST_PACKAGES: &[&str] = &[
    // VSOCK-LISTEN / VSOCK-CONNECT for the vsock links (issue 12).
    "socat", // The bench's TCP rows.
    "iperf3",
];

/// Dependencies of [`GUEST_PACKAGES`] nothing in the guest loads at run time: packaging
/// and service-account tooling (iperf3's maintainer scripts: a whole perl, PAM, dpkg),
/// compiler documentation packages, `libgcc_s` (only for `pthread_cancel`), OpenSSL's
/// legacy provider, `/etc/netconfig`.
pub const GUEST_SKIP: &[&str] = &[
    "init-system-helpers",
    "debconf",
    "adduser",
    "gcc-12-base",
    "gcc-14-base",
    "libgcc-s1",
    "openssl-provider-legacy",
    "libtirpc-common",
];

/// The board DTBs the boards in `boards/` take from Debian's kernel package
/// (`usr/lib/linux-image-<release>/<path>`); the board tests check each is listed.
pub const BOARD_DTBS: &[&str] = &[
    "xilinx/zynqmp-zcu102-rev1.0.dtb",
    "freescale/imx8mp-evk.dtb",
    "broadcom/bcm2711-rpi-4-b.dtb",
];

/// The default kernel: Debian 12's metapackage, which always depends on the suite's current
/// 6.1 LTS build (`linux-image-6.1.0-<abi>-arm64`), so the pin stays valid when a point
/// release bumps the ABI (and with it the package name).
pub const DEFAULT_KERNEL: &str = "bookworm/linux-image-arm64";
/// The second kernel the tests boot: Debian 13's 6.12 LTS, through the same metapackage.
pub const TRIXIE_KERNEL: &str = "trixie/linux-image-arm64";
const DEFAULT_SUITE: &str = "bookworm";
/// Debian's metapackage that depends on a suite's current arm64 kernel.
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

echo "TESSERA-LINUX-UP $(hostname) cpus=$(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo) linux=$(uname -r)"

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
pub const TEST_SCRIPTS: &[(&str, &str)] = &[
    ("disk", DISK_TEST),
    ("info", INFO_TEST),
    ("work", WORK),
    ("pci", crate::smmu_linux::PCI_TEST),
];

/// `cargo xtask bench`'s workloads inside Linux: a CPU-bound one (sha256sum
/// over a RAM file) and a memory-bound one (a large dd in tmpfs), timed with
/// the guest's own clock (CNTVCT: instructions under -icount), to the
/// microsecond: the kernel log's timestamp of a debug-level line (not
/// printed on the console). Busybox `date` has no `%N` and /proc/uptime
/// counts hundredths, which made a 1.20 s run read 1.19 or 1.21.
const WORK: &str = r#"
now() {
    echo "<7>tessera-work-mark $1" > /dev/kmsg
    dmesg | sed -n "s/^\[ *\([0-9.]*\)\] tessera-work-mark $1\$/\1/p" | tail -n 1
}
dd if=/dev/urandom of=/tmp/f bs=1M count=32 2>/dev/null
T0=$(now a); sha256sum /tmp/f >/dev/null; T1=$(now b)
echo "TT work sha256 $(awk "BEGIN { printf \"%.6f\", $T1 - $T0 }")"
rm /tmp/f
T0=$(now c)
for i in 1 2 3 4 5 6 7 8; do dd if=/dev/zero of=/tmp/g bs=1M count=128 2>/dev/null; rm /tmp/g; done
T1=$(now d)
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
    /// The Debian kernel; default [`DEFAULT_KERNEL`].
    pub pin: Option<KernelPin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assets {
    /// Raw arm64 Linux Image (header magic checked).
    pub kernel: PathBuf,
    /// gzip-compressed cpio newc initramfs.
    pub initrd: PathBuf,
    /// Debian kernel package and version, or `custom` when both files were given.
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
    let pin = opts.pin.clone().unwrap_or_else(KernelPin::default_pin);
    let debian = debian_assets(&target, &pin)?;
    Ok(Assets {
        kernel: user_kernel.unwrap_or(debian.kernel),
        initrd: opts.initrd.clone().unwrap_or(debian.initrd),
        version: debian.version,
    })
}

/// What a config's `debian:` guest images stand for, on one board: resolves
/// `debian:kernel`, `debian:initrd` (the board's pin) and `debian:<suite>/kernel`,
/// `debian:<suite>/initrd`, building each kernel's assets once.
pub struct Resolver {
    target_dir: PathBuf,
    board_pin: KernelPin,
    /// `cargo xtask ... --kernel/--initrd` (TESSERA_KERNEL / TESSERA_INITRD).
    own_kernel: Option<PathBuf>,
    own_initrd: Option<PathBuf>,
    built: std::cell::RefCell<BTreeMap<KernelPin, Option<Assets>>>,
}

impl Resolver {
    /// `board_pin`: the board.toml's `debian_kernel`, if it has one.
    pub fn new(target_dir: &Path, board_pin: Option<&str>) -> Result<Self> {
        let own = |var: &str| std::env::var_os(var).map(PathBuf::from);
        Ok(Self {
            target_dir: target_dir.to_owned(),
            board_pin: board_pin
                .map(KernelPin::parse)
                .transpose()?
                .unwrap_or_else(KernelPin::default_pin),
            own_kernel: own("TESSERA_KERNEL"),
            own_initrd: own("TESSERA_INITRD"),
            built: Default::default(),
        })
    }

    /// The board's pin.
    pub fn board_pin(&self) -> &KernelPin {
        &self.board_pin
    }

    /// The file `spec` (`debian:...`) stands for; `None` (after saying why on stderr) when
    /// it names nothing or the packages could not be had.
    pub fn path(&self, spec: &str) -> Option<PathBuf> {
        let (pin, initrd) = match parse_spec(spec, &self.board_pin) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("xtask: guest assets: {e:#}");
                return None;
            }
        };
        let mut built = self.built.borrow_mut();
        let assets = built.entry(pin.clone()).or_insert_with(|| {
            ensure_assets(&Options {
                kernel: self.own_kernel.clone(),
                initrd: self.own_initrd.clone(),
                target_dir: Some(self.target_dir.clone()),
                pin: Some(pin),
            })
            .map_err(|e| eprintln!("xtask: guest assets: {e:#}"))
            .ok()
        });
        assets.as_ref().map(|a| {
            if initrd {
                a.initrd.clone()
            } else {
                a.kernel.clone()
            }
        })
    }
}

/// `debian:kernel` / `debian:initrd` (the board's pin) or `debian:<suite>/kernel` /
/// `debian:<suite>/initrd` (that suite's metapackage): the pin, and whether the initrd is meant.
pub fn parse_spec(spec: &str, board_pin: &KernelPin) -> Result<(KernelPin, bool)> {
    let rest = spec
        .strip_prefix("debian:")
        .with_context(|| format!("`{spec}` is not a debian: guest image"))?;
    let (suite, what) = match rest.split_once('/') {
        Some((suite, what)) => (Some(suite), what),
        None => (None, rest),
    };
    let initrd = match what {
        "kernel" => false,
        "initrd" => true,
        _ => bail!(
            "`{spec}`: Debian guest images are debian:kernel, debian:initrd, \
             debian:<suite>/kernel and debian:<suite>/initrd"
        ),
    };
    let pin = match suite {
        None => board_pin.clone(),
        Some(suite) => KernelPin {
            suite: suite.to_owned(),
            package: KERNEL_META.to_owned(),
        },
    };
    Ok((pin, initrd))
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

/// A Debian kernel as a board or config pins it: `<suite>/<package>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelPin {
    pub suite: String,
    /// A kernel package (`linux-image-<abi>-arm64`) or a metapackage depending on one.
    pub package: String,
}

impl KernelPin {
    /// `"bookworm/linux-image-arm64"`.
    pub fn parse(s: &str) -> Result<Self> {
        let Some((suite, package)) = s.split_once('/') else {
            bail!("{s:?}: a Debian kernel is given as \"<suite>/<package>\", e.g. {DEFAULT_KERNEL:?}");
        };
        ensure!(
            !suite.is_empty() && !package.is_empty() && !package.contains('/'),
            "{s:?}: a Debian kernel is given as \"<suite>/<package>\", e.g. {DEFAULT_KERNEL:?}"
        );
        Ok(Self {
            suite: suite.to_owned(),
            package: package.to_owned(),
        })
    }

    /// [`DEFAULT_KERNEL`].
    pub fn default_pin() -> Self {
        Self {
            suite: DEFAULT_SUITE.to_owned(),
            package: KERNEL_META.to_owned(),
        }
    }
}

impl std::fmt::Display for KernelPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.suite, self.package)
    }
}

/// The packages behind one [`KernelPin`], as the suite's lists have them today.
struct Packages {
    pin: KernelPin,
    /// e.g. `linux-image-6.1.0-37-arm64-unsigned`.
    kernel: debian::Package,
    busybox: debian::Package,
    extras: Vec<debian::Package>,
}

impl Packages {
    fn stamp(&self) -> String {
        let mut s = format!(
            "pin {}\n{} {}\n{BUSYBOX_PKG} {}\nmodules {}\ninit {:016x}\n",
            self.pin,
            self.kernel.name,
            self.kernel.version,
            self.busybox.version,
            MODULES.join(" "),
            init_hash()
        );
        for p in &self.extras {
            s.push_str(&format!("package {} {}\n", p.name, p.version));
        }
        s
    }
}

/// The kernel package a pin names: a metapackage is followed through its `linux-image-*`
/// dependency (at most a few levels), and the `-unsigned` twin of a signed kernel is taken
/// when the suite has it (the same Image and modules, without the EFI signature).
fn kernel_package(target: &Path, pin: &KernelPin) -> Result<debian::Package> {
    let mut pkg = debian::info(target, &pin.suite, &pin.package)?;
    for _ in 0..4 {
        match pkg.depends.iter().find(|d| d.starts_with("linux-image-")) {
            Some(next) => pkg = debian::info(target, &pin.suite, &next.clone())?,
            None => break,
        }
    }
    if !pkg.name.ends_with("-unsigned") {
        if let Some(unsigned) = debian::listed(target, &pin.suite, &format!("{}-unsigned", pkg.name))? {
            return Ok(unsigned);
        }
    }
    Ok(pkg)
}

fn resolve_packages(target: &Path, pin: &KernelPin) -> Result<Packages> {
    let kernel = kernel_package(target, pin)?;
    let busybox = debian::info(target, &pin.suite, BUSYBOX_PKG)?;
    let extras = debian::closure(target, &pin.suite, GUEST_PACKAGES, GUEST_SKIP)?;
    Ok(Packages {
        pin: pin.clone(),
        kernel,
        busybox,
        extras,
    })
}

fn debian_assets(target: &Path, pin: &KernelPin) -> Result<Assets> {
    let base = target.join("guest-assets").join(&pin.suite);
    let pkgs = match resolve_packages(target, pin) {
        Ok(p) => p,
        Err(e) => {
            // Without apt (or its lists), a complete cache is still good enough.
            if let Some(cached) = newest_cached(&base) {
                eprintln!(
                    "xtask: warning: {e:#}\nxtask: using cached guest assets {}",
                    cached.version
                );
                return Ok(cached);
            }
            return Err(e);
        }
    };
    let dir = base.join(format!(
        "{}_{}",
        pkgs.kernel.name,
        debian::sanitize(&pkgs.kernel.version)
    ));
    let assets = Assets {
        kernel: dir.join(KERNEL_FILE),
        initrd: dir.join(INITRD_FILE),
        version: format!("{} {}", pkgs.kernel.name, pkgs.kernel.version),
    };
    let stamp = pkgs.stamp();
    if fs::read_to_string(dir.join(STAMP)).ok().as_deref() == Some(stamp.as_str())
        && assets.kernel.is_file()
        && assets.initrd.is_file()
    {
        return Ok(assets);
    }
    eprintln!(
        "xtask: building guest assets from Debian {} {} {} and {BUSYBOX_PKG} {}",
        pin.suite, pkgs.kernel.name, pkgs.kernel.version, pkgs.busybox.version
    );
    let _ = fs::remove_file(dir.join(STAMP));
    build_from_packages(target, &pkgs, &dir, &assets)?;
    write_atomic(&dir.join(STAMP), stamp.as_bytes())?;
    Ok(assets)
}

/// The board DTB `rel` (e.g. `xilinx/zynqmp-zcu102-rev1.0.dtb`) from the kernel package
/// `pin` names (the board's), downloading the package if need be.
pub fn board_dtb(target_dir: &Path, pin: &KernelPin, rel: &str) -> Result<PathBuf> {
    ensure!(
        !rel.split('/').any(|c| c.is_empty() || c == "." || c == ".."),
        "debian:{rel}: not a DTB path inside the kernel package"
    );
    let kernel = kernel_package(target_dir, pin)?;
    let root = debian::unpacked(target_dir, &pin.suite, &kernel.name)?;
    let (release, _) = find_vmlinuz(&root)?;
    let file = root
        .join("usr/lib")
        .join(format!("linux-image-{release}"))
        .join(rel);
    ensure!(
        file.is_file(),
        "Debian {} {} {} has no DTB {rel}",
        pin.suite,
        kernel.name,
        kernel.version
    );
    Ok(file)
}

fn build_from_packages(target: &Path, pkgs: &Packages, dir: &Path, assets: &Assets) -> Result<()> {
    let suite = &pkgs.pin.suite;
    let root = debian::unpacked(target, suite, &pkgs.kernel.name)?;
    let busybox_root = debian::unpacked(target, suite, BUSYBOX_PKG)?;
    let extra_roots = pkgs
        .extras
        .iter()
        .map(|p| debian::unpacked(target, suite, &p.name))
        .collect::<Result<Vec<_>>>()?;

    // The kernel: boot/vmlinuz-<release>.
    let (release, vmlinuz) = find_vmlinuz(&root)?;
    let data = fs::read(&vmlinuz)?;
    let image = raw_image(data).with_context(|| format!("{}", vmlinuz.display()))?;

    // Modules of the same release.
    let moddir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(&release))
        .find(|d| d.is_dir())
        .with_context(|| format!("no lib/modules/{release}/ in {}", pkgs.kernel.name))?;
    let modules = load_order(&moddir, MODULES)?;

    let busybox_path = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| busybox_root.join(p))
        .find(|p| p.is_file())
        .context("no bin/busybox in busybox-static")?;
    let busybox = fs::read(&busybox_path)?;

    let mut loaded = Vec::new();
    for (name, rel) in &modules {
        loaded.push((name.clone(), read_module(&moddir.join(rel))?));
    }
    let initrd = initramfs(&busybox, &loaded, &extra_roots)?;

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

/// A module file as busybox `insmod` can load it: plain ELF. Debian 12 ships plain `.ko`,
/// Debian 13 `.ko.xz`, Ubuntu `.ko.zst`; those are decompressed here.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let plain = debian::decompress(&data).with_context(|| name.to_string())?;
    ensure!(
        plain.starts_with(b"\x7fELF"),
        "{name}: not a kernel module (no ELF header after decompression)"
    );
    Ok(plain)
}

// ---------------------------------------------------------------------------------------
// The initramfs

/// The gzip cpio initramfs: busybox, `/init`, `/dev/console`, `modules` (name, plain ELF)
/// under `/lib/modules/` with `load-order` listing them in order, and the files of the
/// unpacked Debian packages `trees` (see [`GUEST_PACKAGES`]). `/lib` is a link to
/// `usr/lib`, as in a merged-/usr Debian, so a program's `/lib/ld-linux-aarch64.so.1` and
/// a library's absolute links resolve whichever way its package ships them.
pub fn initramfs(busybox: &[u8], modules: &[(String, Vec<u8>)], trees: &[PathBuf]) -> Result<Vec<u8>> {
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
        "usr/lib/modules",
    ] {
        w.dir(d, 0o755)?;
    }
    w.symlink("lib", "usr/lib")?;
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
        w.file(&format!("usr/lib/modules/{name}.ko"), 0o644, data)?;
        order.push_str(name);
        order.push('\n');
    }
    w.file("usr/lib/modules/load-order", 0o644, order.as_bytes())?;
    let mut taken = BTreeSet::new();
    for tree in trees {
        add_tree(&mut w, tree, &mut taken)?;
    }
    let cpio = w.finish()?;
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&cpio)?;
    Ok(gz.finish()?)
}

/// Where a package's file goes in the initramfs: `lib/`, `bin/`, `sbin/` under `usr/`
/// (a merged-/usr layout, whichever way the package has them), documentation nowhere.
pub fn initramfs_path(rel: &str) -> Option<String> {
    const LEFT_OUT: &[&str] = &[
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/lintian",
        "usr/share/locale",
        "usr/share/bug",
        // Nothing the guest tools run needs iconv modules or OpenSSL's plug-ins.
        "usr/lib/aarch64-linux-gnu/gconv",
        "usr/lib/aarch64-linux-gnu/engines-3",
        "usr/lib/aarch64-linux-gnu/ossl-modules",
    ];
    let rel = rel.trim_start_matches("./").trim_start_matches('/');
    if rel.is_empty()
        || LEFT_OUT
            .iter()
            .any(|d| rel == *d || rel.starts_with(&format!("{d}/")))
    {
        return None;
    }
    for top in ["lib", "bin", "sbin"] {
        if rel == top {
            return Some(format!("usr/{top}"));
        }
        if let Some(rest) = rel.strip_prefix(&format!("{top}/")) {
            return Some(format!("usr/{top}/{rest}"));
        }
    }
    Some(rel.to_owned())
}

/// Adds the files, links and directories of the unpacked package `tree` to `w`; the first
/// package to bring a path wins (`taken`: the paths added so far).
fn add_tree(w: &mut cpio::Writer<Vec<u8>>, tree: &Path, taken: &mut BTreeSet<String>) -> Result<()> {
    let mut todo = vec![tree.to_owned()];
    while let Some(dir) = todo.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let rel = path.strip_prefix(tree)?.to_string_lossy().into_owned();
            let Some(to) = initramfs_path(&rel) else {
                continue;
            };
            let meta = fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                w.dir(&to, 0o755)?;
                todo.push(path);
                continue;
            }
            if !taken.insert(to.clone()) {
                continue;
            }
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path)?;
                w.symlink(&to, &target.to_string_lossy())?;
            } else if meta.is_file() {
                use std::os::unix::fs::PermissionsExt;
                let data = fs::read(&path)?;
                w.file(&to, meta.permissions().mode() & 0o7777, &data)?;
            }
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_pins_and_specs() {
        let board = KernelPin::parse("bookworm/linux-image-arm64").unwrap();
        assert_eq!(board, KernelPin::default_pin());
        assert_eq!(KernelPin::parse(DEFAULT_KERNEL).unwrap(), board);
        assert_eq!(KernelPin::parse(TRIXIE_KERNEL).unwrap().suite, "trixie");
        assert_eq!(board.to_string(), DEFAULT_KERNEL);
        for bad in ["bookworm", "/x", "x/", "a/b/c", ""] {
            assert!(KernelPin::parse(bad).is_err(), "{bad:?}");
        }
        let own = KernelPin::parse("bookworm-backports/linux-image-6.12.9-arm64").unwrap();
        assert_eq!(parse_spec("debian:kernel", &own).unwrap(), (own.clone(), false));
        assert_eq!(parse_spec("debian:initrd", &own).unwrap(), (own.clone(), true));
        let trixie = KernelPin::parse(TRIXIE_KERNEL).unwrap();
        assert_eq!(
            parse_spec("debian:trixie/kernel", &own).unwrap(),
            (trixie.clone(), false)
        );
        assert_eq!(parse_spec("debian:trixie/initrd", &own).unwrap(), (trixie, true));
        for bad in ["debian:Image", "debian:trixie/dtb", "guest:kernel", "debian:"] {
            assert!(parse_spec(bad, &own).is_err(), "{bad}");
        }
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
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/net/vmw_vsock/vsock_loopback.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko
kernel/fs/other.ko:
";
        let order = resolve_modules(dep, "", MODULES).unwrap();
        let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert_eq!(names.len(), 14, "{names:?}");
        assert!(pos("vsock") < pos("vmw_vsock_virtio_transport_common"));
        assert!(pos("vmw_vsock_virtio_transport_common") < pos("vmw_vsock_virtio_transport"));
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
        let gz = initramfs(b"BUSYBOX", &modules, &[]).unwrap();
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
        assert_eq!(get("usr/lib/modules/failover.ko").unwrap().1, b"\x7fELF1");
        assert_eq!(get("usr/lib/modules/load-order").unwrap().1, b"failover\n");
        // /init reads /lib/modules/: lib is a link to usr/lib.
        assert_eq!(get("lib").unwrap(), (0o120777, &b"usr/lib".to_vec()));
        for d in ["dev", "proc", "sys", "tmp", "root", "etc", "usr/lib/modules"] {
            assert_eq!(get(d).unwrap().0, 0o040755, "{d}");
        }
    }

    #[test]
    fn package_files_land_in_a_merged_usr_layout() {
        assert_eq!(
            initramfs_path("./usr/bin/socat").as_deref(),
            Some("usr/bin/socat")
        );
        assert_eq!(
            initramfs_path("lib/aarch64-linux-gnu/libc.so.6").as_deref(),
            Some("usr/lib/aarch64-linux-gnu/libc.so.6")
        );
        assert_eq!(initramfs_path("bin/true").as_deref(), Some("usr/bin/true"));
        assert_eq!(initramfs_path("sbin").as_deref(), Some("usr/sbin"));
        assert_eq!(initramfs_path("library/x").as_deref(), Some("library/x"));
        assert_eq!(initramfs_path("usr/share/doc/socat/copyright"), None);
        assert_eq!(initramfs_path("usr/share/man"), None);
        assert_eq!(
            initramfs_path("usr/share/docs").as_deref(),
            Some("usr/share/docs")
        );
        assert_eq!(initramfs_path("./"), None);
    }

    #[test]
    fn package_trees_go_into_the_initramfs() {
        let tree = std::env::temp_dir().join(format!("xtask-assets-tree-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tree);
        for d in ["lib/aarch64-linux-gnu", "usr/bin", "usr/share/doc/tool"] {
            fs::create_dir_all(tree.join(d)).unwrap();
        }
        fs::write(tree.join("lib/aarch64-linux-gnu/libt.so.1.2"), b"LIB").unwrap();
        std::os::unix::fs::symlink("libt.so.1.2", tree.join("lib/aarch64-linux-gnu/libt.so.1")).unwrap();
        fs::write(tree.join("usr/bin/tool"), b"TOOL").unwrap();
        fs::write(tree.join("usr/share/doc/tool/copyright"), b"C").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(tree.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let gz = initramfs(b"BUSYBOX", &[], &[tree.clone(), tree.clone()]).unwrap();
        fs::remove_dir_all(&tree).unwrap();
        let entries = cpio::parse(&gunzip(&gz).unwrap()).unwrap();
        let get = |n: &str| {
            entries
                .iter()
                .find(|(h, _)| h.name == n)
                .map(|(h, d)| (h.mode, d.clone()))
        };
        assert_eq!(get("usr/bin/tool"), Some((0o100755, b"TOOL".to_vec())));
        assert_eq!(
            get("usr/lib/aarch64-linux-gnu/libt.so.1.2"),
            Some((0o100644, b"LIB".to_vec()))
        );
        assert_eq!(
            get("usr/lib/aarch64-linux-gnu/libt.so.1"),
            Some((0o120777, b"libt.so.1.2".to_vec()))
        );
        assert_eq!(get("lib"), Some((0o120777, b"usr/lib".to_vec())));
        assert!(get("usr/share/doc/tool/copyright").is_none());
    }

    #[test]
    fn compressed_modules_are_loaded_plain() {
        let dir = std::env::temp_dir().join(format!("xtask-assets-ko-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let elf = b"\x7fELF\x02\x01 module".to_vec();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&elf).unwrap();
        fs::write(dir.join("a.ko.xz"), xz.finish().unwrap()).unwrap();
        fs::write(dir.join("b.ko"), &elf).unwrap();
        fs::write(dir.join("c.ko"), b"not elf").unwrap();
        assert_eq!(read_module(&dir.join("a.ko.xz")).unwrap(), elf);
        assert_eq!(read_module(&dir.join("b.ko")).unwrap(), elf);
        assert!(read_module(&dir.join("c.ko")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
