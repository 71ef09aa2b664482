//! How each CPU is started (`enable-method` of its `/cpus` node): PSCI
//! CPU_ON, or a spin table (Devicetree Specification v0.4, 3.8.1; Linux
//! Documentation/arch/arm64/booting.rst 5): the firmware parks the CPU in
//! a loop reading a 64-bit `cpu-release-addr`, which the boot CPU writes
//! with the entry point and signals with `sev`. The Raspberry Pi 4's
//! firmware (its armstub) and QEMU's `raspi4b` do the latter.
//!
//! Which method the board uses is the board's business; guests always get
//! Tessera's virtual PSCI.

use crate::mm::PhysRange;
use alloc::format;
use alloc::string::String;

/// How one CPU is brought up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnableMethod {
    /// PSCI CPU_ON through the board's firmware (no `enable-method`, or
    /// `"psci"`).
    Psci,
    /// Write the entry point to this physical address, clean it to the
    /// point of coherency, `sev`.
    SpinTable { release_addr: u64 },
    /// Not startable: the reason was reported as a warning at discovery.
    Off,
}

/// The enable method a CPU node describes, or why it cannot be used.
/// `enable_method` and `release_addr` are the raw property values (absent:
/// `None`); `ram` is the board's RAM, where a release address must lie.
pub fn parse(
    path: &str,
    enable_method: Option<&[u8]>,
    release_addr: Option<&[u8]>,
    ram: &[PhysRange],
) -> Result<EnableMethod, String> {
    let method = match enable_method {
        None => return Ok(EnableMethod::Psci),
        Some(raw) => core::str::from_utf8(raw)
            .ok()
            .map(|s| s.trim_end_matches('\0'))
            .ok_or_else(|| format!("{path}: enable-method is not a string; CPU left off"))?,
    };
    match method {
        "psci" => Ok(EnableMethod::Psci),
        "spin-table" => {
            let raw = release_addr.ok_or_else(|| {
                format!("{path}: enable-method \"spin-table\" without cpu-release-addr; CPU left off")
            })?;
            let bytes: [u8; 8] = raw.try_into().map_err(|_| {
                format!(
                    "{path}: cpu-release-addr has {} bytes, not a 64-bit address (two cells); CPU left off",
                    raw.len()
                )
            })?;
            let addr = u64::from_be_bytes(bytes);
            if addr == 0 || !addr.is_multiple_of(8) {
                return Err(format!(
                    "{path}: cpu-release-addr {addr:#x} is not a non-zero, 8-byte aligned address; CPU left off"
                ));
            }
            if !ram.iter().any(|r| r.contains(addr) && r.contains(addr + 7)) {
                return Err(format!(
                    "{path}: cpu-release-addr {addr:#x} is outside RAM; CPU left off"
                ));
            }
            Ok(EnableMethod::SpinTable { release_addr: addr })
        }
        other => Err(format!(
            "{path}: enable-method \"{other}\" is not one Tessera uses (psci, spin-table); CPU left off"
        )),
    }
}

/// The 4 KiB page holding a release address: the firmware's spin code and
/// the table live there and keep being read by parked CPUs, so no VM may
/// be given it.
pub fn release_page(release_addr: u64) -> PhysRange {
    PhysRange::new(release_addr & !0xfff, 0x1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram() -> Vec<PhysRange> {
        vec![PhysRange::new(0, 0x3c00_0000)]
    }

    #[test]
    fn spin_table_with_a_release_address_in_ram() {
        let addr = 0xe0u64.to_be_bytes();
        assert_eq!(
            parse("/cpus/cpu@1", Some(b"spin-table\0"), Some(&addr), &ram()),
            Ok(EnableMethod::SpinTable { release_addr: 0xe0 })
        );
        assert_eq!(release_page(0xe0), PhysRange::new(0, 0x1000));
        assert_eq!(release_page(0x1234_5678), PhysRange::new(0x1234_5000, 0x1000));
    }

    #[test]
    fn psci_is_the_default() {
        assert_eq!(parse("/cpus/cpu@1", None, None, &ram()), Ok(EnableMethod::Psci));
        assert_eq!(
            parse("/cpus/cpu@1", Some(b"psci\0"), None, &ram()),
            Ok(EnableMethod::Psci)
        );
    }

    #[test]
    fn missing_release_address_is_named() {
        let e = parse("/cpus/cpu@2", Some(b"spin-table\0"), None, &ram()).unwrap_err();
        assert!(
            e.contains("/cpus/cpu@2") && e.contains("without cpu-release-addr"),
            "{e}"
        );
        assert!(e.contains("left off"), "{e}");
    }

    #[test]
    fn bad_release_addresses_are_named() {
        let one_cell = 0xe8u32.to_be_bytes();
        let e = parse("/cpus/cpu@2", Some(b"spin-table\0"), Some(&one_cell), &ram()).unwrap_err();
        assert!(e.contains("4 bytes"), "{e}");
        for (addr, why) in [
            (0u64, "non-zero"),
            (0xe4, "aligned"),
            (0x4000_0000, "outside RAM"),
            (0x3c00_0000 - 4, "aligned"),
            (0x3c00_0000 - 8 + 8, "outside RAM"),
        ] {
            let e = parse(
                "/cpus/cpu@3",
                Some(b"spin-table\0"),
                Some(&addr.to_be_bytes()),
                &ram(),
            )
            .unwrap_err();
            assert!(e.contains("/cpus/cpu@3") && e.contains(why), "{addr:#x}: {e}");
        }
        // The last 8 bytes of RAM are fine.
        let last = (0x3c00_0000u64 - 8).to_be_bytes();
        assert!(parse("/cpus/cpu@3", Some(b"spin-table\0"), Some(&last), &ram()).is_ok());
    }

    #[test]
    fn unknown_methods_are_named() {
        let e = parse("/cpus/cpu@1", Some(b"brcm,bcm2836-smp\0"), None, &ram()).unwrap_err();
        assert!(e.contains("brcm,bcm2836-smp") && e.contains("left off"), "{e}");
        let e = parse("/cpus/cpu@1", Some(&[0xff, 0]), None, &ram()).unwrap_err();
        assert!(e.contains("not a string"), "{e}");
    }
}
