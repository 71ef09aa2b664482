//! Where things live in the repository and under the Cargo target directory.

use std::path::{Path, PathBuf};

/// The Rust target the hypervisor and the bare-metal guests are built for: soft-float, so
/// EL2 code never touches the FP/SIMD registers that belong to the guest.
pub const TARGET: &str = "aarch64-unknown-none-softfloat";

/// The repository root: xtask always lives in `<root>/xtask`, whatever the current directory.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask's manifest directory has a parent")
}

/// The `cargo` that started us (`$CARGO`), so nested builds use the pinned toolchain.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Raw hypervisor image: `<target>/tessera.bin`.
pub fn hypervisor_bin(target_dir: &Path) -> PathBuf {
    target_dir.join("tessera.bin")
}

/// Raw guest images: `<target>/guests/<name>.bin`.
pub fn guests_dir(target_dir: &Path) -> PathBuf {
    target_dir.join("guests")
}

/// Full console of each QEMU scenario: `<target>/test-logs/<name>.log`.
pub fn test_logs_dir(target_dir: &Path) -> PathBuf {
    target_dir.join("test-logs")
}

/// `path` relative to the repository root when it is inside it, for short messages.
pub fn display(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}
