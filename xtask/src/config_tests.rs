//! The bad-config suite and the good configs, checked on the host against the
//! committed QEMU `virt` DTB (no QEMU, no built guests).
//!
//! Every `tests/configs/bad/*.toml` starts with one or more `# expect: <text>`
//! lines; checking it must fail with an error holding each of them and the
//! file's name. A config that fails `config::check` never reaches packing, so
//! `board::build_config_image` writes no image for it (its only write is the
//! image itself, after the last check, `board::check_image_overlap`).

use crate::board::{self, check_image_overlap};
use crate::config::{self, Board, Resolved};
use crate::paths;
use anyhow::Result;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A plausible packed image length for the overlap check: the hypervisor
/// plus a few small guests is well under this.
const IMAGE_LEN: u64 = 2 << 20;

/// What `xtask` downloads or builds for `debian:<asset>` kernels and initrds
/// (`debian:kernel`, `debian:<suite>/initrd`...).
fn is_debian_asset(spec: &str) -> bool {
    crate::assets::parse_spec(spec, &crate::assets::KernelPin::default_pin()).is_ok()
}

fn board_toml() -> board::BoardToml {
    board::load_board(&paths::root().join("boards/qemu-virt")).unwrap()
}

/// QEMU virt, GICv3, 4 CPUs, 1 GiB, with board.toml's reserved regions.
fn qemu_board() -> Board {
    let dtb = fs::read(paths::root().join("tests/dtbs/qemu-virt-gicv3-smp4.dtb")).unwrap();
    let reserved = board_toml()
        .reserved
        .iter()
        .map(|r| (r.name.clone(), r.base, r.size.0))
        .collect();
    config::board_from_dtb(&dtb, reserved).unwrap()
}

/// The test guests xtask can build: `tests/guests/src/bin/<name>.rs`.
fn guest_names() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(paths::root().join("tests/guests/src/bin"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "rs").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    assert!(names.iter().any(|n| n == "hello"), "{names:?}");
    names
}

/// A minimal arm64 Image standing in for every built guest; one file per call
/// (tests run in parallel and a file being rewritten reads as empty).
fn fake_guest_image() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("tessera-config-tests-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("guest{}.bin", NEXT.fetch_add(1, Ordering::Relaxed)));
    let mut img = vec![0u8; 64];
    img[crate::image::IMAGE_MAGIC_OFFSET..][..4].copy_from_slice(crate::image::IMAGE_MAGIC);
    fs::write(&path, img).unwrap();
    path
}

/// Everything `build_config_image` checks, minus QEMU and the real packing.
fn check_file(path: &Path, board: &Board, guest: &Path, guests: &[String]) -> Result<Resolved> {
    let parsed = config::parse(path)?;
    // `guest:<name>` is looked up as `<name>`; the Debian assets by their full spec.
    let known = |name: &str| guests.iter().any(|g| g == name) || is_debian_asset(name);
    let lookup = |name: &str| known(name).then(|| guest.to_path_buf());
    let resolved = config::load(path, &parsed, board, &lookup)?;
    check_image_overlap(path, &resolved, board_toml().load_address, IMAGE_LEN)?;
    Ok(resolved)
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_bad_config_fails_with_its_expected_message() {
    let board = qemu_board();
    let guest = fake_guest_image();
    let guests = guest_names();
    let files = toml_files(&paths::root().join("tests/configs/bad"));
    assert!(files.len() >= 20, "only {} bad configs", files.len());
    let mut failures = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        let expect: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect:"))
            .map(str::trim)
            .collect();
        let name = f.file_name().unwrap().to_str().unwrap();
        if expect.is_empty() || expect.iter().any(|e| e.is_empty()) {
            failures.push(format!("{name}: no (or an empty) `# expect:` line"));
            continue;
        }
        match check_file(f, &board, &guest, &guests) {
            Ok(_) => failures.push(format!("{name}: passed the checks")),
            Err(e) => {
                let msg = format!("{e:#}");
                if !msg.contains(&format!("tests/configs/bad/{name}")) {
                    failures.push(format!("{name}: error does not name the file: {msg}"));
                }
                for x in &expect {
                    if !msg.contains(x) {
                        failures.push(format!("{name}: expected {x:?} in: {msg}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// `memory_overlaps_hypervisor.toml` is the one bad config `check` accepts:
/// only the packed image length tells it apart.
#[test]
fn hypervisor_overlap_is_only_caught_with_the_image() {
    let board = qemu_board();
    let path = paths::root().join("tests/configs/bad/memory_overlaps_hypervisor.toml");
    let parsed = config::parse(&path).unwrap();
    let guest = fake_guest_image();
    let resolved = config::load(&path, &parsed, &board, &|_| Some(guest.clone())).unwrap();
    assert!(check_image_overlap(&path, &resolved, 0x4020_0000, IMAGE_LEN).is_err());
}

fn resolved_with(fixed: &[(u64, u64)]) -> Resolved {
    Resolved {
        vms: vec![config::ResolvedVm {
            name: "vm".into(),
            cpus: vec![1],
            memory: fixed
                .iter()
                .map(|&(b, s)| (b, s, Some(b), true))
                .chain([(0x4000_0000, 0x100_0000, None, false)])
                .collect(),
            kernel: vec![],
            initrd: None,
            dtb: None,
            bootargs: String::new(),
            console: config::Console::Virtual,
            psci: config::Psci::Hvc,
            devices: vec![],
            test_device: None,
            dma_unrestricted: false,
            scrub_at_boot: false,
        }],
        console_prefix: true,
        qemu: Default::default(),
        pages: vec![],
        links: vec![],
    }
}

#[test]
fn image_overlap_rule() {
    let f = Path::new("boards/x/c.toml");
    let load = 0x4020_0000;
    let len = 0x10_0000; // image at 0x40200000..0x40300000
    let ok = |fixed: &[(u64, u64)]| check_image_overlap(f, &resolved_with(fixed), load, len);
    // Only chosen-at-boot memory, or fixed memory touching the image's ends.
    assert!(ok(&[]).is_ok());
    assert!(ok(&[(0x4000_0000, 0x20_0000)]).is_ok());
    assert!(ok(&[(0x4030_0000, 0x100_0000)]).is_ok());
    // Over its start, inside it, over its end, around it.
    for r in [
        (0x4010_0000, 0x20_0000),
        (0x4020_1000, 0x1000),
        (0x402f_f000, 0x10_0000),
        (0x4000_0000, 0x100_0000),
    ] {
        let e = ok(&[(0x5000_0000, 0x1000), r]).unwrap_err().to_string();
        assert!(
            e.starts_with("boards/x/c.toml: vm \"vm\": memory[1].base: ")
                && e.contains("overlaps the hypervisor image at 0x40200000..0x40300000"),
            "{e}"
        );
    }
    // No overflow at the top of the address space.
    assert!(ok(&[(u64::MAX - 0xfff, 0x1000)]).is_ok());
    assert!(check_image_overlap(f, &resolved_with(&[(0x4020_0000, 0x1000)]), load, u64::MAX).is_err());
}

#[test]
fn good_configs_pass() {
    let board = qemu_board();
    let guest = fake_guest_image();
    let guests = guest_names();
    let mut files = toml_files(&paths::root().join("tests/configs"));
    files.extend(
        toml_files(&paths::root().join("boards/qemu-virt"))
            .into_iter()
            .filter(|p| p.file_name().unwrap() != "board.toml"),
    );
    assert!(files.len() >= 5, "{files:?}");
    for f in &files {
        // The SMMU configs run on `virt` with `iommu=smmuv3`.
        let smmu = fs::read_to_string(f).unwrap().contains("iommu=smmuv3");
        let board = if smmu {
            crate::config_dma::smmu_board(board.reserved.clone())
        } else {
            board.clone()
        };
        let r = check_file(f, &board, &guest, &guests).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
        assert!(!r.vms.is_empty());
        // And the blob the hypervisor gets is well formed.
        let blob = config::blob(&r).unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        assert_eq!(
            fdt.all_nodes().filter(|n| n.name.starts_with("vm@")).count(),
            r.vms.len()
        );
    }
}

/// Every `guest:<name>` in a good config is a guest xtask can build.
#[test]
fn good_configs_name_real_guests() {
    let guests = guest_names();
    let mut files = toml_files(&paths::root().join("tests/configs"));
    files.extend(toml_files(&paths::root().join("boards/qemu-virt")));
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        for (_, rest) in text.match_indices("\"guest:").map(|(i, _)| ((), &text[i + 7..])) {
            let name = &rest[..rest.find('"').unwrap()];
            assert!(guests.iter().any(|g| g == name), "{}: guest:{name}", f.display());
        }
    }
}
