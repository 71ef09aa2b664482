//! Links the hypervisor with its own linker script when built for the target.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rerun-if-changed=linker/tessera.ld");
    if target.starts_with("aarch64-unknown-none") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker/tessera.ld");
    }
}
