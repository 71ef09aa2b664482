//! Entropy for guests: each generated guest DTB gets `/chosen/rng-seed`
//! (64 bytes) and `/chosen/kaslr-seed` (a u64), so a Linux guest's CRNG is
//! ready at boot instead of waiting for the jitter generator.
//!
//! The hypervisor's own seed comes from the board DTB's `/chosen` (`rng-seed`,
//! `kaslr-seed`: QEMU, U-Boot and the RPi firmware provide them) and the
//! CPU's RNDRRS (FEAT_RNG). A guest's seed is HMAC-SHA256 keyed with it over
//! (VM index, start number, counter): one-way, so no guest learns the
//! hypervisor's seed or another guest's. Fresh on every VM start: the bytes
//! are rewritten in the DTB copy each (re)load puts in the VM's RAM.
//!
//! Without any boot entropy no seed is added: the counter alone is no
//! entropy, and a guest must not believe it is.

#[cfg(target_os = "none")]
use alloc::borrow::Cow;
#[cfg(target_os = "none")]
use core::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::dt::Tree;

/// Length of the guest's `/chosen/rng-seed`.
pub const RNG_SEED_LEN: usize = 64;

/// The hypervisor's seed, condensed from every boot entropy source.
pub struct BootSeed([u8; 32]);

/// One guest start's entropy, as it goes into `/chosen`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GuestSeed {
    pub rng: [u8; RNG_SEED_LEN],
    pub kaslr: u64,
}

impl BootSeed {
    /// SHA-256 over the sources present; `None` if there is none.
    pub fn gather(rng_seed: Option<&[u8]>, kaslr_seed: Option<&[u8]>, cpu: &[u64]) -> Option<Self> {
        let rng_seed = rng_seed.filter(|s| !s.is_empty());
        let kaslr_seed = kaslr_seed.filter(|s| !s.is_empty());
        if rng_seed.is_none() && kaslr_seed.is_none() && cpu.is_empty() {
            return None;
        }
        let mut h = Sha256::new();
        h.update(b"tessera boot seed");
        // Length-prefixed, so no two source sets hash the same input.
        for s in [rng_seed.unwrap_or(&[]), kaslr_seed.unwrap_or(&[])] {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s);
        }
        for r in cpu {
            h.update(r.to_le_bytes());
        }
        Some(Self(h.finalize().into()))
    }

    /// The seed of VM `vm`'s start number `start`, at counter value `now`.
    pub fn derive(&self, vm: usize, start: u64, now: u64) -> GuestSeed {
        let mut out = [0u8; RNG_SEED_LEN + 32];
        for (block, chunk) in out.chunks_mut(32).enumerate() {
            // HMAC takes a key of any length: this cannot fail.
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
                continue;
            };
            mac.update(b"tessera guest seed");
            mac.update(&(vm as u64).to_le_bytes());
            mac.update(&start.to_le_bytes());
            mac.update(&now.to_le_bytes());
            mac.update(&[block as u8]);
            chunk.copy_from_slice(&mac.finalize().into_bytes());
        }
        let (rng, rest) = out.split_at(RNG_SEED_LEN);
        let mut seed = GuestSeed {
            rng: [0; RNG_SEED_LEN],
            kaslr: 0,
        };
        seed.rng.copy_from_slice(rng);
        let mut k = [0u8; 8];
        k.copy_from_slice(rest.get(..8).unwrap_or(&[0; 8]));
        seed.kaslr = u64::from_le_bytes(k);
        seed
    }
}

/// Where a generated DTB holds its seed, for rewriting on every start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedSlots {
    vm: usize,
    /// Byte offsets of the `rng-seed` and `kaslr-seed` values in the blob.
    rng: usize,
    kaslr: usize,
}

impl SeedSlots {
    /// The seed properties of `blob`'s `/chosen`, if it has both at full size.
    pub fn find(blob: &[u8], vm: usize) -> Option<Self> {
        let tree = Tree::new(blob).ok()?;
        let chosen = tree.node_at("/chosen")?;
        let at = |name: &str, len: usize| {
            let p = chosen.property(name)?;
            (p.value.len() == len).then(|| p.value.as_ptr() as usize - blob.as_ptr() as usize)
        };
        Some(Self {
            vm,
            rng: at("rng-seed", RNG_SEED_LEN)?,
            kaslr: at("kaslr-seed", 8)?,
        })
    }

    /// Writes `seed` into `blob` (big-endian kaslr-seed, as DT cells are).
    pub fn write(&self, blob: &mut [u8], seed: &GuestSeed) -> Option<()> {
        blob.get_mut(self.rng..self.rng + RNG_SEED_LEN)?
            .copy_from_slice(&seed.rng);
        blob.get_mut(self.kaslr..self.kaslr + 8)?
            .copy_from_slice(&seed.kaslr.to_be_bytes());
        Some(())
    }
}

#[cfg(target_os = "none")]
static BOOT: spin::Once<Option<BootSeed>> = spin::Once::new();
/// Counts VM starts (creation and every reset), so no two share a seed.
#[cfg(target_os = "none")]
static STARTS: AtomicU64 = AtomicU64::new(0);

#[cfg(target_os = "none")]
/// Gathers the boot seed once: the board DTB's `/chosen` and the CPU's RNG.
pub fn init(board: &Tree) {
    BOOT.call_once(|| {
        let chosen = board.node_at("/chosen");
        let prop = |name: &str| chosen.and_then(|c| c.property(name)).map(|p| p.value);
        let cpu: alloc::vec::Vec<u64> = (0..4)
            .filter_map(|_| crate::arch::aarch64::cpu::random())
            .collect();
        let seed = BootSeed::gather(prop("rng-seed"), prop("kaslr-seed"), &cpu);
        if seed.is_none() {
            log::info!("no boot entropy: guests get no rng-seed");
        }
        seed
    });
}

#[cfg(target_os = "none")]
/// A fresh seed for a start of VM `vm`; `None` without boot entropy.
pub fn next(vm: usize) -> Option<GuestSeed> {
    let boot = BOOT.get()?.as_ref()?;
    let start = STARTS.fetch_add(1, Ordering::Relaxed);
    Some(boot.derive(vm, start, crate::arch::aarch64::cpu::counter()))
}

#[cfg(target_os = "none")]
/// The DTB to load for this start: `dtb` with a fresh seed if it has slots.
pub fn fresh(dtb: &[u8], slots: Option<SeedSlots>) -> Cow<'_, [u8]> {
    let Some((slots, seed)) = slots.and_then(|s| Some((s, next(s.vm)?))) else {
        return Cow::Borrowed(dtb);
    };
    let mut copy = dtb.to_vec();
    match slots.write(&mut copy, &seed) {
        Some(()) => Cow::Owned(copy),
        None => Cow::Borrowed(dtb),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot() -> BootSeed {
        BootSeed::gather(Some(&[0x5a; 64]), Some(&[1, 2, 3, 4, 5, 6, 7, 8]), &[]).unwrap()
    }

    #[test]
    fn no_source_no_seed() {
        assert!(BootSeed::gather(None, None, &[]).is_none());
        assert!(BootSeed::gather(Some(&[]), Some(&[]), &[]).is_none());
        assert!(BootSeed::gather(None, None, &[7]).is_some());
        assert!(BootSeed::gather(None, Some(&[1; 8]), &[]).is_some());
    }

    #[test]
    fn vms_and_starts_differ() {
        let b = boot();
        let a = b.derive(0, 0, 100);
        assert_eq!(a, b.derive(0, 0, 100));
        let others = [b.derive(1, 0, 100), b.derive(0, 1, 100), b.derive(0, 0, 101)];
        for o in &others {
            assert_ne!(a.rng, o.rng);
            assert_ne!(a.kaslr, o.kaslr);
        }
        assert_ne!(a.rng[..32], a.rng[32..]);
    }

    #[test]
    fn sources_change_the_seed() {
        let a = boot().derive(0, 0, 0);
        let b = BootSeed::gather(Some(&[0x5b; 64]), Some(&[1, 2, 3, 4, 5, 6, 7, 8]), &[])
            .unwrap()
            .derive(0, 0, 0);
        let c = BootSeed::gather(Some(&[0x5a; 64]), Some(&[1, 2, 3, 4, 5, 6, 7, 8]), &[9])
            .unwrap()
            .derive(0, 0, 0);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn the_boot_seed_is_not_in_a_guest_seed() {
        let b = boot();
        let s = b.derive(0, 0, 0);
        let mut out = s.rng.to_vec();
        out.extend_from_slice(&s.kaslr.to_be_bytes());
        for needle in [&b.0[..8], &[0x5a; 8][..], &[1, 2, 3, 4, 5, 6, 7, 8][..]] {
            assert!(!out.windows(needle.len()).any(|w| w == needle));
        }
    }

    mod dtb {
        use super::boot;
        use crate::dt::Tree;
        use crate::mm::addr::GuestPhysAddr;
        use crate::vm::dtb::{generate, DtbError, GuestConsole, GuestDtbSpec, GuestGic, GuestRegion};
        use crate::vm::seed::{GuestSeed, SeedSlots};
        use vm_fdt::FdtWriter;

        const RAM: [GuestRegion; 1] = [GuestRegion::new(0x4000_0000, 0x1000_0000)];
        const HOST_RNG: [u8; 32] = [0xc3; 32];

        /// A board DTB with a seed in /chosen and one device.
        fn host() -> Vec<u8> {
            let mut w = FdtWriter::new().unwrap();
            let root = w.begin_node("").unwrap();
            w.property_u32("#address-cells", 2).unwrap();
            w.property_u32("#size-cells", 2).unwrap();
            let chosen = w.begin_node("chosen").unwrap();
            w.property("rng-seed", &HOST_RNG).unwrap();
            w.property_u64("kaslr-seed", 0x1122_3344_5566_7788).unwrap();
            w.end_node(chosen).unwrap();
            let dev = w.begin_node("rtc@9010000").unwrap();
            w.property_string("compatible", "arm,pl031").unwrap();
            w.property_array_u64("reg", &[0x901_0000, 0x1000]).unwrap();
            w.end_node(dev).unwrap();
            w.end_node(root).unwrap();
            w.finish().unwrap()
        }

        fn spec<'a>(
            host: &'a Tree<'a>,
            pass: &'a [&'a str],
            seed: Option<&'a GuestSeed>,
        ) -> GuestDtbSpec<'a> {
            GuestDtbSpec {
                name: "vm",
                vcpus: 1,
                memory: &RAM,
                gic: GuestGic::V3 {
                    dist: GuestRegion::new(0x0800_0000, 0x1_0000),
                    redist: GuestRegion::new(0x080a_0000, 0x2_0000),
                },
                timer_ppis: [29, 30, 27, 26],
                psci_method: "hvc",
                console: Some(GuestConsole {
                    base: GuestPhysAddr(0x0900_0000),
                    intid: 33,
                }),
                bootargs: "console=ttyAMA0",
                initrd: None,
                passthrough: pass,
                host: Some(host),
                seed,
            }
        }

        fn chosen_prop(blob: &[u8], name: &str) -> Option<Vec<u8>> {
            let fdt = fdt::Fdt::new(blob).unwrap();
            let chosen = fdt.find_node("/chosen").unwrap();
            chosen.property(name).map(|p| p.value.to_vec())
        }

        #[test]
        fn a_seed_goes_into_chosen_and_is_rewritable() {
            let h = host();
            let host = Tree::new(&h).unwrap();
            let b = boot();
            let (s0, s1) = (b.derive(0, 0, 5), b.derive(1, 1, 5));
            let vm0 = generate(&spec(&host, &["/rtc@9010000"], Some(&s0))).unwrap();
            let vm1 = generate(&spec(&host, &["/rtc@9010000"], Some(&s1))).unwrap();
            assert_eq!(chosen_prop(&vm0, "rng-seed").unwrap(), s0.rng);
            assert_eq!(chosen_prop(&vm0, "kaslr-seed").unwrap(), s0.kaslr.to_be_bytes());
            assert_ne!(chosen_prop(&vm0, "rng-seed"), chosen_prop(&vm1, "rng-seed"));
            assert_ne!(chosen_prop(&vm0, "kaslr-seed"), chosen_prop(&vm1, "kaslr-seed"));
            // A restart: the slots take the next seed in place.
            let mut again = vm0.clone();
            let next = b.derive(0, 2, 9);
            SeedSlots::find(&vm0, 0)
                .unwrap()
                .write(&mut again, &next)
                .unwrap();
            assert_eq!(chosen_prop(&again, "rng-seed").unwrap(), next.rng);
            assert_eq!(
                chosen_prop(&again, "kaslr-seed").unwrap(),
                next.kaslr.to_be_bytes()
            );
            assert_eq!(again.len(), vm0.len());
        }

        #[test]
        fn no_seed_no_property() {
            let h = host();
            let host = Tree::new(&h).unwrap();
            let blob = generate(&spec(&host, &[], None)).unwrap();
            assert_eq!(chosen_prop(&blob, "rng-seed"), None);
            assert_eq!(chosen_prop(&blob, "kaslr-seed"), None);
            assert_eq!(SeedSlots::find(&blob, 0), None);
        }

        /// Neither the board's /chosen seeds nor the boot seed reach a guest DTB.
        #[test]
        fn the_boards_seed_stays_out() {
            let h = host();
            let host = Tree::new(&h).unwrap();
            let b = boot();
            let s = b.derive(0, 0, 0);
            for seed in [None, Some(&s)] {
                let blob = generate(&spec(&host, &["/rtc@9010000"], seed)).unwrap();
                let kaslr = 0x1122_3344_5566_7788u64.to_be_bytes();
                for needle in [&HOST_RNG[..8], &kaslr[..], &b.0[..8]] {
                    assert!(!blob.windows(needle.len()).any(|w| w == needle));
                }
            }
            assert_eq!(
                generate(&spec(&host, &["/chosen"], Some(&s))),
                Err(DtbError::DuplicateNode("chosen".into()))
            );
        }
    }
}
