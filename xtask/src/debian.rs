//! Debian packages for arm64, fetched with xtask's own apt configuration.
//!
//! Everything xtask takes from Debian (guest kernels, busybox, board DTBs, firmware, guest
//! tools) comes through [`unpacked`]: a package named by suite and name is downloaded with
//! `apt-get download` and unpacked in Rust. apt runs with a configuration of our own
//! (`APT_CONFIG=<target>/debian/<suite>/apt.conf`), one per suite:
//!
//! ```text
//! <target>/debian/<suite>/
//!   apt.conf            Dir::Etc, Dir::State, Dir::Cache... all below here
//!   etc/sources.list    deb [signed-by=<Debian's keyring>] <mirror> <suite> main non-free-firmware
//!   etc/apt.conf.d/ preferences.d/ sources.list.d/ trusted.gpg.d/   empty
//!   state/lists/        the suite's signed package lists (arm64; arch `all` is listed there too)
//!   state/status        empty: apt here knows no installed package
//!   lock                serialises update, download and unpack between callers
//!   pkgs/<name>_<version>/   an unpacked package (renamed into place when complete)
//! ```
//!
//! `APT_CONFIG` is read before anything else, and since it moves `Dir::Etc` (with its
//! `Parts`, `SourceParts`, `Preferences`...) the host's `/etc/apt` (sources, apt.conf.d,
//! preferences, trusted keys) is neither read nor changed, and dpkg's architecture list
//! does not matter (`APT::Architectures` is arm64 here). The same packages therefore come on
//! Debian 12, Debian 13, Ubuntu or any host with `apt-get` and Debian's archive keyring.
//!
//! A suite's lists are fetched (`apt-get update`, of this private state only) when they are
//! missing, older than [`STALE_AFTER`], or lack the package asked for, and again when a
//! download fails (the archive drops a version when a newer one replaces it). Without a
//! network, lists already there are used as they are.
//!
//! `Acquire::Check-Valid-Until` keeps apt's default (checked). The main suites (`bookworm`,
//! `trixie`) carry no `Valid-Until` at all; `-backports` and `-security` do (a week ahead) and
//! are re-signed daily, so a live mirror never trips it. A host reaching a frozen snapshot of
//! the archive instead (as some CI images do, with `Check-Valid-Until "false"` in their own
//! apt.conf.d, which we do not read) sees "Release file ... is expired" for those suites only,
//! and can set `TESSERA_APT_OPTIONS='-o Acquire::Check-Valid-Until=false'`.

use anyhow::{bail, ensure, Context, Result};
use std::cmp::Ordering;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Debian's archive signing keys (package `debian-archive-keyring`; Ubuntu has it too).
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// The command that installs [`KEYRING`].
pub const KEYRING_FIX: &str = "sudo apt-get install debian-archive-keyring";
/// Where packages come from; `TESSERA_DEBIAN_MIRROR` overrides it (a local mirror or proxy).
pub const MIRROR: &str = "http://deb.debian.org/debian";
/// Security updates live in an archive of their own.
pub const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";
/// The components configured for every suite.
pub const COMPONENTS: &[&str] = &["main", "non-free-firmware"];
/// Lists older than this are refreshed (if the network allows) before they are used.
pub const STALE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
/// Extra apt options from the environment, e.g. `-o Acquire::Check-Valid-Until=false`.
const EXTRA_OPTIONS_ENV: &str = "TESSERA_APT_OPTIONS";

/// Fetches Debian package `name` (arch arm64 or all) from `suite` ("bookworm", "trixie",
/// "bookworm-backports"...; components main + non-free-firmware are configured) with xtask's OWN
/// apt configuration under <target>/debian/ (host apt sources never read or changed), unpacks its
/// data (in Rust: ar + tar + xz/zstd/gz) and returns the directory holding the unpacked tree.
/// Cached: a second call is a directory lookup. Concurrent callers (parallel scenarios) are safe.
pub fn unpacked(target_dir: &Path, suite: &str, name: &str) -> Result<PathBuf> {
    let apt = Apt::new(target_dir, suite)?;
    let (pkg, mut updated) = apt.find(name)?;
    let dir = apt.pkg_dir(&pkg);
    if dir.is_dir() {
        return Ok(dir);
    }
    let _lock = apt.lock()?;
    if dir.is_dir() {
        return Ok(dir); // another caller unpacked it while we waited
    }
    let mut pkg = pkg;
    let deb = loop {
        match apt.download(&pkg) {
            Ok(deb) => break deb,
            Err(e) if !updated => {
                // The lists may name a version the archive no longer has.
                eprintln!("xtask: {e:#}\nxtask: refreshing the {suite} package lists");
                apt.update()?;
                updated = true;
                pkg = apt.lookup(name)?.with_context(|| apt.not_found(name))?;
                let dir = apt.pkg_dir(&pkg);
                if dir.is_dir() {
                    return Ok(dir);
                }
            }
            Err(e) => return Err(e),
        }
    };
    let dir = apt.pkg_dir(&pkg);
    let result = unpack_into_place(&deb, &dir);
    let _ = fs::remove_file(&deb);
    if let Some(parent) = deb.parent() {
        let _ = fs::remove_dir(parent);
    }
    result?;
    Ok(dir)
}

/// The candidate of package `name` in `suite` (version, architecture, dependencies), from
/// the private lists (fetched first if need be).
pub fn info(target_dir: &Path, suite: &str, name: &str) -> Result<Package> {
    Ok(Apt::new(target_dir, suite)?.find(name)?.0)
}

/// Like [`info`], but `None` when the lists (fetched if missing or stale) do not have the
/// package, without fetching them again for it: for optional packages.
pub fn listed(target_dir: &Path, suite: &str, name: &str) -> Result<Option<Package>> {
    let apt = Apt::new(target_dir, suite)?;
    apt.refresh_if_needed()?;
    apt.lookup(name)
}

/// The packages `name` depends on in `suite` (`Pre-Depends` and `Depends`, the first of
/// each set of alternatives, without versions or `:arch`), for callers that gather a tool and
/// its libraries. Not recursive: call it again on each result as needed.
pub fn depends(target_dir: &Path, suite: &str, name: &str) -> Result<Vec<String>> {
    Ok(info(target_dir, suite, name)?.depends)
}

/// `roots` and everything they depend on in `suite`, recursively (the first of each set of
/// alternatives), each once, without the packages in `skip` (and what only they pull in):
/// what a tool needs copied next to it, e.g. `closure(t, "bookworm", &["socat"], &[])`.
/// Names the lists do not have (virtual packages) are left out.
pub fn closure(target_dir: &Path, suite: &str, roots: &[&str], skip: &[&str]) -> Result<Vec<Package>> {
    let apt = Apt::new(target_dir, suite)?;
    apt.refresh_if_needed()?;
    closure_with(roots, skip, |name| apt.lookup(name))
}

/// [`closure`] over any package lookup.
fn closure_with(
    roots: &[&str],
    skip: &[&str],
    lookup: impl Fn(&str) -> Result<Option<Package>>,
) -> Result<Vec<Package>> {
    let mut seen: Vec<String> = skip.iter().map(|s| s.to_string()).collect();
    let mut todo: Vec<String> = roots.iter().rev().map(|s| s.to_string()).collect();
    let mut out = Vec::new();
    while let Some(name) = todo.pop() {
        if seen.contains(&name) {
            continue;
        }
        seen.push(name.clone());
        if let Some(pkg) = lookup(&name)? {
            todo.extend(pkg.depends.iter().rev().cloned());
            out.push(pkg);
        }
    }
    Ok(out)
}

/// Checks what [`unpacked`] needs from the host, naming the command that fixes each gap.
pub fn check_prerequisites() -> Result<()> {
    ensure!(
        crate::host_tools::find("apt-get").is_some(),
        "`apt-get` not found: xtask fetches Debian's arm64 packages with apt (any Debian or \
         Ubuntu host has it; elsewhere install apt, or pass --kernel FILE and --initrd FILE)"
    );
    ensure!(
        Path::new(KEYRING).is_file(),
        "Debian's archive keyring {KEYRING} is missing (xtask checks Debian's package lists \
         with it); install it with:\n    {KEYRING_FIX}"
    );
    Ok(())
}

/// One package of a suite's lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// `arm64` or `all`.
    pub architecture: String,
    /// Names from `Pre-Depends` and `Depends` (see [`depends`]).
    pub depends: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// The private apt configuration of one suite

struct Apt {
    suite: String,
    root: PathBuf,
}

impl Apt {
    fn new(target_dir: &Path, suite: &str) -> Result<Self> {
        check_suite_name(suite)?;
        check_prerequisites()?;
        let target_dir = std::path::absolute(target_dir).unwrap_or_else(|_| target_dir.to_owned());
        let apt = Apt {
            suite: suite.to_owned(),
            root: target_dir.join("debian").join(suite),
        };
        apt.write_config()?;
        Ok(apt)
    }

    fn conf(&self) -> PathBuf {
        self.root.join("apt.conf")
    }

    fn lists(&self) -> PathBuf {
        self.root.join("state/lists")
    }

    fn pkg_dir(&self, pkg: &Package) -> PathBuf {
        self.root
            .join("pkgs")
            .join(format!("{}_{}", pkg.name, sanitize(&pkg.version)))
    }

    /// Writes the configuration files (when they differ: concurrent callers write the same).
    fn write_config(&self) -> Result<()> {
        for d in [
            "etc/apt.conf.d",
            "etc/preferences.d",
            "etc/sources.list.d",
            "etc/trusted.gpg.d",
            "state/lists/partial",
            "cache/archives/partial",
            "log",
            "pkgs",
        ] {
            fs::create_dir_all(self.root.join(d))
                .with_context(|| format!("creating {}", self.root.join(d).display()))?;
        }
        let mirror = std::env::var("TESSERA_DEBIAN_MIRROR").ok();
        let sources = sources_list(&self.suite, mirror.as_deref());
        write_if_changed(&self.root.join("etc/sources.list"), &sources)?;
        write_if_changed(&self.conf(), &apt_conf(&self.root))?;
        let status = self.root.join("state/status");
        if !status.exists() {
            write_if_changed(&status, "")?;
        }
        Ok(())
    }

    /// An `apt-get` (or `apt-cache`) with our configuration and nothing of the host's.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("APT_CONFIG", self.conf())
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        cmd.arg("-q");
        if crate::host_tools::is_root() {
            // As root apt drops to the `_apt` user for downloads, who may not write (or even
            // reach) target/; it only downloads and verifies here, so it may stay root.
            cmd.args(["-o", "APT::Sandbox::User=root"]);
        }
        if let Ok(extra) = std::env::var(EXTRA_OPTIONS_ENV) {
            cmd.args(extra.split_whitespace());
        }
        cmd
    }

    /// Takes the suite's lock (released when the file is dropped). Threads and processes
    /// both wait: each call opens the file anew, and flock locks belong to the open file.
    fn lock(&self) -> Result<fs::File> {
        let path = self.root.join("lock");
        let file = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(file)
    }

    /// The package from the lists, fetching them first when missing or stale or when they
    /// lack it. Also returns whether the lists were fetched in this call.
    fn find(&self, name: &str) -> Result<(Package, bool)> {
        let mut updated = self.refresh_if_needed()?;
        if let Some(pkg) = self.lookup(name)? {
            return Ok((pkg, updated));
        }
        if !updated {
            let _lock = self.lock()?;
            self.update()?;
            updated = true;
            if let Some(pkg) = self.lookup(name)? {
                return Ok((pkg, updated));
            }
        }
        bail!(self.not_found(name))
    }

    /// Fetches the lists when missing, or when stale and the network allows; returns
    /// whether it fetched them.
    fn refresh_if_needed(&self) -> Result<bool> {
        let mut updated = false;
        if self.lists_state() != ListsState::Fresh {
            let _lock = self.lock()?;
            // Someone may have fetched them while we waited for the lock.
            match self.lists_state() {
                ListsState::Fresh => {}
                ListsState::Missing => {
                    self.update()?;
                    updated = true;
                }
                ListsState::Stale => {
                    // One try per process: offline, every later call uses the lists as they are.
                    static TRIED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
                    let mut tried = TRIED.lock().unwrap_or_else(|e| e.into_inner());
                    if !tried.contains(&self.root) {
                        tried.push(self.root.clone());
                        match self.update() {
                            Ok(()) => updated = true,
                            Err(e) => eprintln!(
                                "xtask: warning: {e:#}\nxtask: using the {} package lists as they are",
                                self.suite
                            ),
                        }
                    }
                }
            }
        }
        Ok(updated)
    }

    fn not_found(&self, name: &str) -> String {
        format!(
            "Debian {} ({}) has no arm64 or all package {name}",
            self.suite,
            COMPONENTS.join(", ")
        )
    }

    fn lists_state(&self) -> ListsState {
        let Ok(meta) = fs::metadata(self.root.join("state/updated")) else {
            return ListsState::Missing;
        };
        if self.packages_files().is_empty() {
            return ListsState::Missing;
        }
        let age = meta.modified().ok().and_then(|t| t.elapsed().ok());
        match age {
            Some(age) if age > STALE_AFTER => ListsState::Stale,
            _ => ListsState::Fresh,
        }
    }

    fn packages_files(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(self.lists()) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with("_binary-arm64_Packages"))
            })
            .collect();
        files.sort();
        files
    }

    /// `apt-get update` of this suite's private lists. The caller holds the lock.
    fn update(&self) -> Result<()> {
        eprintln!(
            "xtask: fetching the Debian {} package lists (into {})",
            self.suite,
            crate::paths::display(&self.lists())
        );
        let mut cmd = self.command("apt-get");
        cmd.arg("update");
        let out = cmd.output().context("cannot start `apt-get update`")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // apt-get update exits 0 on some failed sources (it warns instead): any `E:` or
        // `W: Failed to fetch` line means the lists may be incomplete.
        let failed = !out.status.success()
            || stderr
                .lines()
                .any(|l| l.starts_with("E:") || l.contains("Failed to fetch"));
        if failed {
            bail!(
                "`apt-get update` of xtask's own Debian {} lists failed ({}); check the network \
                 (or set TESSERA_DEBIAN_MIRROR):\n{}",
                self.suite,
                out.status,
                stderr.trim_end()
            );
        }
        fs::write(self.root.join("state/updated"), b"")
            .with_context(|| format!("writing {}/state/updated", self.root.display()))?;
        Ok(())
    }

    /// The package in the lists as they are, if there.
    fn lookup(&self, name: &str) -> Result<Option<Package>> {
        let mut best: Option<Package> = None;
        for file in self.packages_files() {
            let text = fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            for pkg in find_in_packages(&text, name) {
                if best
                    .as_ref()
                    .is_none_or(|b| compare_versions(&pkg.version, &b.version) == Ordering::Greater)
                {
                    best = Some(pkg);
                }
            }
        }
        Ok(best)
    }

    /// `apt-get download name=version` into a directory of its own; returns the .deb.
    fn download(&self, pkg: &Package) -> Result<PathBuf> {
        let dir = self.root.join(format!("download-{}", unique()));
        fs::create_dir_all(&dir)?;
        eprintln!(
            "xtask: downloading Debian {} {} {} ({})",
            self.suite, pkg.name, pkg.version, pkg.architecture
        );
        let mut cmd = self.command("apt-get");
        cmd.arg("download")
            .arg(format!("{}={}", pkg.name, pkg.version))
            .current_dir(&dir);
        let out = cmd.output().context("cannot start `apt-get download`")?;
        if !out.status.success() {
            let _ = fs::remove_dir_all(&dir);
            bail!(
                "`apt-get download {}={}` failed ({}):\n{}",
                pkg.name,
                pkg.version,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
        let prefix = format!("{}_", pkg.name);
        let deb = fs::read_dir(&dir)?.flatten().map(|e| e.path()).find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".deb")
            })
        });
        match deb {
            Some(deb) => Ok(deb),
            None => {
                let _ = fs::remove_dir_all(&dir);
                bail!("`apt-get download {}` left no .deb", pkg.name)
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum ListsState {
    Missing,
    Stale,
    Fresh,
}

/// Suite names become paths and apt arguments: lowercase letters, digits and dashes only.
fn check_suite_name(suite: &str) -> Result<()> {
    ensure!(
        !suite.is_empty()
            && !suite.starts_with('-')
            && suite
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "{suite:?} is not a Debian suite name (e.g. bookworm, trixie, bookworm-backports)"
    );
    Ok(())
}

/// The one-line sources list of `suite`: `-security` suites from the security archive,
/// every other from `mirror` (default [`MIRROR`]).
pub fn sources_list(suite: &str, mirror: Option<&str>) -> String {
    let uri = if suite.ends_with("-security") {
        SECURITY_MIRROR
    } else {
        mirror.unwrap_or(MIRROR)
    };
    format!(
        "# Written by xtask (xtask/src/debian.rs); regenerated on every run.\n\
         deb [arch=arm64 signed-by={KEYRING}] {uri} {suite} {}\n",
        COMPONENTS.join(" ")
    )
}

/// The apt.conf given as `APT_CONFIG`: every directory apt reads or writes below `root`.
pub fn apt_conf(root: &Path) -> String {
    let r = root.display();
    format!(
        "// Written by xtask (xtask/src/debian.rs): apt reads this first, so the host's\n\
         // /etc/apt is never read (nor written) when xtask fetches Debian packages.\n\
         Dir::Etc \"{r}/etc\";\n\
         Dir::Etc::Main \"apt.conf\";\n\
         Dir::Etc::Parts \"apt.conf.d\";\n\
         Dir::Etc::SourceList \"sources.list\";\n\
         Dir::Etc::SourceParts \"sources.list.d\";\n\
         Dir::Etc::Preferences \"preferences\";\n\
         Dir::Etc::PreferencesParts \"preferences.d\";\n\
         Dir::Etc::Trusted \"trusted.gpg\";\n\
         Dir::Etc::TrustedParts \"trusted.gpg.d\";\n\
         Dir::State \"{r}/state\";\n\
         Dir::State::Lists \"lists\";\n\
         Dir::State::status \"{r}/state/status\";\n\
         Dir::Cache \"{r}/cache\";\n\
         Dir::Log \"{r}/log\";\n\
         APT::Architecture \"arm64\";\n\
         APT::Architectures {{ \"arm64\"; }};\n\
         Acquire::Languages \"none\";\n\
         Acquire::GzipIndexes \"false\";\n\
         Acquire::IndexTargets::deb::DEP-11::DefaultEnabled \"false\";\n\
         Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled \"false\";\n\
         Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled \"false\";\n\
         Acquire::Retries \"3\";\n"
    )
}

// ---------------------------------------------------------------------------------------
// Package lists

/// The paragraphs of a `Packages` file for package `name`.
pub fn find_in_packages(text: &str, name: &str) -> Vec<Package> {
    let needle = format!("Package: {name}\n");
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find(&needle) {
        let start = from + pos;
        from = start + needle.len();
        if start != 0 && !text[..start].ends_with('\n') {
            continue; // e.g. "Source-Package: ..." or the tail of another field
        }
        let end = text[start..].find("\n\n").map_or(text.len(), |e| start + e);
        if let Some(pkg) = parse_paragraph(&text[start..end]) {
            found.push(pkg);
        }
    }
    found
}

/// One paragraph (`Field: value` lines, continuation lines start with a space).
fn parse_paragraph(para: &str) -> Option<Package> {
    let mut fields: Vec<(&str, String)> = Vec::new();
    for line in para.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            fields.push((k, v.trim().to_owned()));
        }
    }
    let get = |k: &str| fields.iter().find(|(f, _)| *f == k).map(|(_, v)| v.as_str());
    let mut depends = Vec::new();
    for field in ["Pre-Depends", "Depends"] {
        depends.extend(get(field).map(dependency_names).unwrap_or_default());
    }
    Some(Package {
        name: get("Package")?.to_owned(),
        version: get("Version")?.to_owned(),
        architecture: get("Architecture").unwrap_or("arm64").to_owned(),
        depends,
    })
}

/// `libc6 (>= 2.34), libssl3t64 | libssl3, foo:any` -> `[libc6, libssl3t64, foo]`.
pub fn dependency_names(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter_map(|alternatives| {
            let first = alternatives.split('|').next()?.trim();
            let name = first.split([' ', '(', '[', '<']).next()?;
            let name = name.split(':').next()?;
            (!name.is_empty()).then(|| name.to_owned())
        })
        .collect()
}

/// Debian version order (deb-version(7)): epoch, then upstream version and revision, each
/// compared as alternating non-digit runs (letters before other characters, `~` before
/// anything, even the end) and numbers.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((upstream, revision)) => (epoch, upstream, revision),
            None => (epoch, rest, ""),
        }
    }
    fn order(c: Option<u8>) -> i32 {
        match c {
            Some(b'~') => -1,
            None => 0,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(c) => i32::from(c) + 256,
        }
    }
    fn part(a: &str, b: &str) -> Ordering {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            // The non-digit prefix.
            while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
                let ca = a.get(i).copied().filter(|c| !c.is_ascii_digit());
                let cb = b.get(j).copied().filter(|c| !c.is_ascii_digit());
                let o = order(ca).cmp(&order(cb));
                if o != Ordering::Equal {
                    return o;
                }
                if ca.is_some() {
                    i += 1;
                }
                if cb.is_some() {
                    j += 1;
                }
            }
            // The number (leading zeros do not count).
            let num = |s: &[u8], k: &mut usize| {
                while *k < s.len() && s[*k] == b'0' {
                    *k += 1;
                }
                let start = *k;
                while *k < s.len() && s[*k].is_ascii_digit() {
                    *k += 1;
                }
                start..*k
            };
            let ra = num(a, &mut i);
            let rb = num(b, &mut j);
            let o = ra.len().cmp(&rb.len()).then_with(|| a[ra].cmp(&b[rb]));
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb).then_with(|| part(ua, ub)).then_with(|| part(ra, rb))
}

// ---------------------------------------------------------------------------------------
// Unpacking a .deb

/// Unpacks `deb`'s data into a scratch directory next to `dir`, then renames it to `dir`:
/// a reader sees the whole tree or none of it.
fn unpack_into_place(deb: &Path, dir: &Path) -> Result<()> {
    let parent = dir.parent().context("package directory has no parent")?;
    fs::create_dir_all(parent)?;
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let tmp = parent.join(format!(".{name}.tmp-{}", unique()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let result = fs::File::open(deb)
        .with_context(|| format!("opening {}", deb.display()))
        .and_then(|f| unpack_deb(f, &tmp))
        .with_context(|| format!("unpacking {}", deb.display()));
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Err(e) = fs::rename(&tmp, dir) {
        let _ = fs::remove_dir_all(&tmp);
        // Someone else's complete copy is as good as ours.
        ensure!(
            dir.is_dir(),
            "renaming {} to {}: {e}",
            tmp.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Unpacks the `data.tar[.xz|.zst|.gz]` member of a .deb (an ar archive) into `dest`.
pub fn unpack_deb(deb: impl Read, dest: &Path) -> Result<()> {
    let mut ar = ar::Archive::new(deb);
    let mut saw_version = false;
    while let Some(entry) = ar.next_entry() {
        let entry = entry.context("not a .deb (bad ar archive)")?;
        let member = String::from_utf8_lossy(entry.header().identifier())
            .trim_end_matches('/')
            .to_owned();
        if member == "debian-binary" {
            saw_version = true;
            continue;
        }
        let Some(compression) = member.strip_prefix("data.tar") else {
            continue;
        };
        ensure!(saw_version, "not a .deb (no debian-binary before {member})");
        let reader: Box<dyn Read + '_> = match compression {
            "" => Box::new(entry),
            ".xz" => Box::new(liblzma::read::XzDecoder::new(entry)),
            ".zst" => Box::new(
                ruzstd::decoding::StreamingDecoder::new(entry)
                    .map_err(|e| anyhow::anyhow!("{member}: {e}"))?,
            ),
            ".gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            other => bail!("{member}: compression {other:?} is not supported"),
        };
        let mut tar = tar::Archive::new(reader);
        tar.set_preserve_permissions(true);
        tar.set_preserve_ownerships(false);
        tar.set_unpack_xattrs(false);
        tar.set_overwrite(true);
        tar.unpack(dest)
            .with_context(|| format!("{member}: bad tar archive"))?;
        return Ok(());
    }
    bail!("not a .deb (no data.tar member)")
}

/// Decompresses `data` when it starts with xz, zstd or gzip magic; returns it as is otherwise.
/// (Kernel modules come as `.ko.xz` in Debian 13 and `.ko.zst` in Ubuntu.)
pub fn decompress(data: &[u8]) -> Result<Vec<u8>> {
    const XZ: &[u8] = b"\xfd7zXZ\0";
    const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
    const GZIP: &[u8] = &[0x1f, 0x8b];
    let mut out = Vec::new();
    if data.starts_with(XZ) {
        liblzma::read::XzDecoder::new(data)
            .read_to_end(&mut out)
            .context("bad xz data")?;
    } else if data.starts_with(ZSTD) {
        ruzstd::decoding::StreamingDecoder::new(data)
            .map_err(|e| anyhow::anyhow!("bad zstd data: {e}"))?
            .read_to_end(&mut out)
            .context("bad zstd data")?;
    } else if data.starts_with(GZIP) {
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .context("bad gzip data")?;
    } else {
        out = data.to_vec();
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Helpers

/// A version as a directory name (`1:2.3` -> `1_2.3`).
pub fn sanitize(version: &str) -> String {
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

/// Unique per call and process: scenarios run on several threads of one xtask.
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("tmp-{}", unique()));
    fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
#[path = "debian_tests.rs"]
mod tests;
