//! The config checker on mutated TOML: random byte edits of the good configs
//! (`boards/qemu-virt/*.toml`, `tests/configs/*.toml`) and random field edits
//! (a value replaced by one of another type or an extreme one, a key removed,
//! a VM duplicated). Whatever the file says, checking it never panics and
//! ends either in a resolved config or in an error naming the file.
//! Fixed seed and case count, so `cargo test` runs the same cases each time.

use crate::board::{self, check_image_overlap};
use crate::config::{self, Board};
use crate::paths;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

fn proptest_config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0xc0_4f19_7e57),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Everything the checks need, loaded once.
struct Fixture {
    board: Board,
    /// QEMU virt with `iommu=smmuv3`, for the configs that ask for it.
    smmu_board: config::Board,
    load_address: u64,
    guest: PathBuf,
    dir: PathBuf,
    /// (name, text) of each good config.
    configs: Vec<(String, String)>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let root = paths::root();
        let board_toml = board::load_board(&root.join("boards/qemu-virt")).unwrap();
        let dtb = fs::read(root.join("tests/dtbs/qemu-virt-gicv3-smp4.dtb")).unwrap();
        let reserved = board_toml
            .reserved
            .iter()
            .map(|r| (r.name.clone(), r.base, r.size.0))
            .collect();
        let board = config::board_from_dtb(&dtb, reserved).unwrap();
        let smmu_board = crate::config_dma::smmu_board(board.reserved.clone());
        let dir = std::env::temp_dir().join(format!("tessera-config-proptests-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        // A minimal arm64 Image standing in for every guest and asset.
        let guest = dir.join("guest.bin");
        let mut img = vec![0u8; 64];
        img[crate::image::IMAGE_MAGIC_OFFSET..][..4].copy_from_slice(crate::image::IMAGE_MAGIC);
        fs::write(&guest, img).unwrap();
        let mut configs = Vec::new();
        for d in ["tests/configs", "boards/qemu-virt"] {
            let mut files: Vec<PathBuf> = fs::read_dir(root.join(d))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml") && !p.ends_with("board.toml"))
                .collect();
            files.sort();
            for f in files {
                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                configs.push((name, fs::read_to_string(&f).unwrap()));
            }
        }
        assert!(configs.len() >= 5, "{} good configs", configs.len());
        Fixture {
            board,
            smmu_board,
            load_address: board_toml.load_address,
            guest,
            dir,
            configs,
        }
    })
}

/// Checks `bytes` as a config file the way `build_config_image` does, short of
/// QEMU and packing: parse, resolve against the board, the image overlap,
/// then the blob. `Err` holds the message.
fn check_bytes(name: &str, bytes: &[u8]) -> Result<(), String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let f = fixture();
    // One file per case: tests run in parallel.
    let path = f
        .dir
        .join(format!("{}-{name}", NEXT.fetch_add(1, Ordering::Relaxed)));
    fs::write(&path, bytes).unwrap();
    let result = (|| -> anyhow::Result<()> {
        let parsed = config::parse(&path)?;
        let lookup = |_: &str| Some(f.guest.clone());
        let smmu = parsed.qemu.extra.iter().any(|a| a.contains("iommu=smmuv3"));
        let board = if smmu { &f.smmu_board } else { &f.board };
        let resolved = config::load(&path, &parsed, board, &lookup)?;
        check_image_overlap(&path, &resolved, f.load_address, 2 << 20)?;
        config::blob(&resolved)?;
        Ok(())
    })();
    let _ = fs::remove_file(&path);
    result.map_err(|e| {
        let msg = format!("{e:#}");
        assert!(
            msg.contains(&paths::display(&path)),
            "the error does not name {}: {msg}",
            path.display()
        );
        msg
    })
}

#[derive(Clone, Debug)]
enum ByteEdit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    /// Copy a range of the file over another place.
    Splice(usize, usize, usize),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    let interesting = prop_oneof![
        any::<u8>(),
        proptest::sample::select(&b"[]{}=\",.#\n\\'0x-_ 9eMG"[..]),
    ];
    prop_oneof![
        3 => (any::<usize>(), interesting.clone()).prop_map(|(i, b)| ByteEdit::Flip(i, b)),
        3 => (any::<usize>(), interesting).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        2 => (any::<usize>(), 1usize..40).prop_map(|(i, n)| ByteEdit::Delete(i, n)),
        1 => (any::<usize>(), 1usize..60, any::<usize>()).prop_map(|(a, n, b)| ByteEdit::Splice(a, n, b)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &ByteEdit) {
    if bytes.is_empty() {
        return;
    }
    let len = bytes.len();
    match *edit {
        ByteEdit::Flip(i, b) => bytes[i % len] = b,
        ByteEdit::Insert(i, b) => bytes.insert(i % (len + 1), b),
        ByteEdit::Delete(i, n) => {
            let at = i % len;
            bytes.drain(at..(at + n).min(len));
        }
        ByteEdit::Splice(a, n, b) => {
            let from = a % len;
            let piece: Vec<u8> = bytes[from..(from + n).min(len)].to_vec();
            let to = b % (len + 1);
            bytes.splice(to..to, piece);
        }
    }
}

/// A value a field might be set to: other types, extremes, near misses.
fn toml_value() -> impl Strategy<Value = toml::Value> {
    use toml::Value;
    let leaf = prop_oneof![
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(i64::MAX),
            Just(i64::MIN),
            Just(0x4000_0000),
            Just(0x0900_0000),
            Just(0xffff_ffff_f000),
            any::<i64>(),
        ]
        .prop_map(Value::Integer),
        prop_oneof![
            Just(String::new()),
            Just("16M".to_owned()),
            Just("0x1000".to_owned()),
            Just("18446744073709551615G".to_owned()),
            Just("guest:hello".to_owned()),
            Just("guest:nope".to_owned()),
            Just("debian:kernel".to_owned()),
            Just("virtual".to_owned()),
            Just("passthrough".to_owned()),
            Just("smc".to_owned()),
            Just("/pl011@9000000".to_owned()),
            Just("/virtio_mmio@a003c00".to_owned()),
            Just("/".to_owned()),
            Just("../../etc/passwd".to_owned()),
            "[ -~]{0,30}",
        ]
        .prop_map(Value::String),
        any::<bool>().prop_map(Value::Boolean),
        Just(Value::Float(1.5)),
    ];
    let nested = leaf.clone().prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Table(m.into_iter().collect())),
        ]
    });
    prop_oneof![6 => leaf, 1 => nested]
}

/// The same kind of value, changed: the edits that get past parsing and
/// into the rules.
fn tweak(old: &toml::Value, new: toml::Value, delta: i64) -> toml::Value {
    use toml::Value;
    match (old, &new) {
        (Value::Integer(i), Value::Integer(_)) if delta % 3 == 0 => Value::Integer(i.wrapping_add(delta)),
        (Value::Integer(i), _) if delta % 3 == 1 => {
            Value::Integer(i.wrapping_mul(1 + delta.rem_euclid(4096)))
        }
        (Value::String(_), Value::String(_)) | (Value::Integer(_), Value::Integer(_)) => new,
        (Value::Boolean(b), _) => Value::Boolean(!b),
        _ => old.clone(),
    }
}

#[derive(Clone, Debug)]
enum FieldEdit {
    /// Replace the value at the n-th leaf (depth first) with this one.
    Set(usize, toml::Value),
    /// Change the n-th leaf's value, keeping its type where it can.
    Tweak(usize, toml::Value, i64),
    /// Remove the n-th leaf's key (or array element).
    Remove(usize),
    /// Append a copy of the n-th VM.
    DuplicateVm(usize),
}

fn field_edit() -> impl Strategy<Value = FieldEdit> {
    prop_oneof![
        3 => (any::<usize>(), toml_value()).prop_map(|(i, v)| FieldEdit::Set(i, v)),
        6 => (any::<usize>(), toml_value(), prop_oneof![-0x2000i64..0x2000, any::<i64>()])
            .prop_map(|(i, v, d)| FieldEdit::Tweak(i, v, d)),
        2 => any::<usize>().prop_map(FieldEdit::Remove),
        1 => any::<usize>().prop_map(FieldEdit::DuplicateVm),
    ]
}

/// Number of leaves (non-table, non-array values, and empty containers).
fn leaves(v: &toml::Value) -> usize {
    match v {
        toml::Value::Table(t) if !t.is_empty() => t.values().map(leaves).sum(),
        toml::Value::Array(a) if !a.is_empty() => a.iter().map(leaves).sum(),
        _ => 1,
    }
}

/// Replaces leaf `n` with `set(old)`, or removes it when `set` gives `None`.
fn edit_leaf(v: &mut toml::Value, mut n: usize, set: &dyn Fn(&toml::Value) -> Option<toml::Value>) -> bool {
    match v {
        toml::Value::Table(t) if !t.is_empty() => {
            let keys: Vec<String> = t.keys().cloned().collect();
            for k in keys {
                let child = t.get_mut(&k).unwrap();
                let c = leaves(child);
                if n < c {
                    if c == 1 && !matches!(child, toml::Value::Table(x) if !x.is_empty()) {
                        match set(child) {
                            Some(new) => *child = new,
                            None => {
                                t.remove(&k);
                            }
                        }
                        return true;
                    }
                    return edit_leaf(child, n, set);
                }
                n -= c;
            }
            false
        }
        toml::Value::Array(a) if !a.is_empty() => {
            for i in 0..a.len() {
                let c = leaves(&a[i]);
                if n < c {
                    if c == 1 && !matches!(&a[i], toml::Value::Table(x) if !x.is_empty()) {
                        match set(&a[i]) {
                            Some(new) => a[i] = new,
                            None => {
                                a.remove(i);
                            }
                        }
                        return true;
                    }
                    return edit_leaf(&mut a[i], n, set);
                }
                n -= c;
            }
            false
        }
        _ => false,
    }
}

fn apply_field(doc: &mut toml::Value, edit: &FieldEdit) {
    let n = leaves(doc).max(1);
    match edit {
        FieldEdit::Set(i, v) => {
            edit_leaf(doc, i % n, &|_| Some(v.clone()));
        }
        FieldEdit::Tweak(i, v, d) => {
            edit_leaf(doc, i % n, &|old| Some(tweak(old, v.clone(), *d)));
        }
        FieldEdit::Remove(i) => {
            edit_leaf(doc, i % n, &|_| None);
        }
        FieldEdit::DuplicateVm(i) => {
            if let Some(toml::Value::Array(vms)) = doc.get_mut("vm") {
                if !vms.is_empty() {
                    let copy = vms[i % vms.len()].clone();
                    vms.push(copy);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(proptest_config(1000))]

    #[test]
    fn byte_mutated_configs_are_checked_without_panicking(
        which in any::<usize>(),
        edits in proptest::collection::vec(byte_edit(), 1..6),
    ) {
        let f = fixture();
        let (name, text) = &f.configs[which % f.configs.len()];
        let mut bytes = text.clone().into_bytes();
        for e in &edits {
            apply(&mut bytes, e);
        }
        let _ = check_bytes(name, &bytes);
    }

    #[test]
    fn field_mutated_configs_are_checked_without_panicking(
        which in any::<usize>(),
        edits in proptest::collection::vec(field_edit(), 1..4),
    ) {
        let f = fixture();
        let (name, text) = &f.configs[which % f.configs.len()];
        let mut doc: toml::Value = toml::from_str(text).unwrap();
        for e in &edits {
            apply_field(&mut doc, e);
        }
        let Ok(out) = toml::to_string(&doc) else {
            return Ok(()); // e.g. a table edited into a value after arrays of tables
        };
        let _ = check_bytes(name, out.as_bytes());
    }
}

/// The fixture's configs pass unmutated (else the mutations test nothing).
#[test]
fn unmutated_configs_pass() {
    let f = fixture();
    for (name, text) in &f.configs {
        if let Err(e) = check_bytes(name, text.as_bytes()) {
            panic!("{name}: {e}");
        }
    }
}
