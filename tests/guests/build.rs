//! Links the guest programs with `linker/guest.ld` when built for the target
//! (host builds of the stubs use the normal host link).
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let script = std::path::Path::new(&dir).join("../../linker/guest.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    if target.starts_with("aarch64-unknown-none") {
        let script = script.canonicalize().expect("linker/guest.ld exists");
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    }
}
