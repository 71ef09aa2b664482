//! `dma_thief`: a minimal virtio-blk-pci driver that aims its device's DMA
//! outside its own VM: a disk read into another VM's RAM, into the
//! hypervisor's image, and virtqueues placed in another VM's RAM.
//!
//! First one honest read into its own RAM, which must complete: the
//! driver works, so what fails afterwards fails because of the SMMU. The
//! attacks are only reported (QEMU's virtio-blk completes a read whose
//! data writes were aborted with status 0): what proves them harmless is
//! the hypervisor's SMMU fault lines, the victim's unchanged RAM (`ramsum`)
//! and a last honest read. Bare in QEMU (no SMMU) the attacks land.
//!
//! The scenario places this guest at physical 0x4a00_0000, guest-physical
//! 0x6000_0000 (its own buffers are guest-physical, like any driver's; the
//! addresses it attacks are physical ones outside its guest-physical space),
//! and gives it QEMU virt's PCIe host bridge with one virtio-blk-pci device.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

/// Physical addresses outside this VM: the victim VM's RAM (its `ramsum`
/// region) and the hypervisor's image on QEMU virt.
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
const VICTIM: u64 = 0x4980_0000;
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
const HYPERVISOR: u64 = 0x4020_0000;

#[cfg(target_os = "none")]
mod guest {
    use super::{HYPERVISOR, VICTIM};
    use core::sync::atomic::{fence, Ordering};
    use tessera_guests::{counter, ms_to_ticks, park, println, Checker, Mmio};

    /// QEMU virt's ECAM (highmem) and the BAR address this driver assigns
    /// (the low PCIe MMIO window).
    const ECAM: usize = 0x40_1000_0000;
    const BAR_AT: u64 = 0x1000_0000;

    const QSIZE: u16 = 8;

    /// Rings and request buffers, in this VM's RAM.
    #[repr(C, align(4096))]
    struct Dma {
        desc: [[u64; 2]; QSIZE as usize],
        _pad0: [u8; 0x100 - 16 * QSIZE as usize],
        avail: [u16; 2 + QSIZE as usize],
        _pad1: [u8; 0x100 - 2 * (2 + QSIZE as usize)],
        used: [u32; 1 + 2 * QSIZE as usize],
        _pad2: [u8; 0x200 - 4 * (1 + 2 * QSIZE as usize)],
        header: [u64; 2],
        status: u8,
        _pad3: [u8; 0x1ff - 16],
        data: [u8; 512],
    }

    static mut DMA: Dma = Dma {
        desc: [[0; 2]; QSIZE as usize],
        _pad0: [0; 0x100 - 16 * QSIZE as usize],
        avail: [0; 2 + QSIZE as usize],
        _pad1: [0; 0x100 - 2 * (2 + QSIZE as usize)],
        used: [0; 1 + 2 * QSIZE as usize],
        _pad2: [0; 0x200 - 4 * (1 + 2 * QSIZE as usize)],
        header: [0; 2],
        status: 0,
        _pad3: [0; 0x1ff - 16],
        data: [0; 512],
    };

    fn dma() -> *mut Dma {
        &raw mut DMA
    }

    /// The device's configuration space and its modern virtio structures.
    struct Dev {
        cfg: Mmio,
        common: Mmio,
        notify: Mmio,
    }

    tessera_guests::entry!(run);

    fn run() -> ! {
        println!("dma_thief: start");
        let mut c = Checker::new("dma_thief");
        let Some(dev) = find() else {
            c.fail("dma_thief_find", "no virtio-blk-pci (1af4:1042) on bus 0");
            c.finish();
            park()
        };
        // SAFETY: only the address of this guest's own static is taken.
        let own = unsafe { &raw mut (*dma()).data } as u64;
        let honest = request(&dev, None, own);
        c.check(
            "dma_thief_own_buffer_read_completes",
            honest == Some(0),
            format_args!("status {honest:?}"),
        );
        // The victim fills its region first; keep attacking so the order in
        // which the two VMs start does not matter.
        for round in 0..5 {
            for (what, tag, target) in [
                ("victim RAM", "victim_ram", VICTIM),
                ("the hypervisor", "hypervisor", HYPERVISOR),
            ] {
                let r = request(&dev, None, target);
                println!(
                    "dma_thief: round {round}: disk read into {what} ({tag}) at {target:#x}: status {r:?}"
                );
            }
            let r = request(&dev, Some(VICTIM), own);
            println!("dma_thief: round {round}: virtqueue in victim RAM at {VICTIM:#x}: status {r:?}");
            sleep_ms(100);
        }
        println!("dma_thief: attacks done");
        // The device still serves this VM's own memory.
        let again = request(&dev, None, own);
        c.check(
            "dma_thief_own_buffer_read_completes_after_the_attacks",
            again == Some(0),
            format_args!("status {again:?}"),
        );
        c.finish();
        park()
    }

    fn sleep_ms(ms: u64) {
        let until = counter() + ms_to_ticks(ms);
        while counter() < until {
            core::hint::spin_loop();
        }
    }

    fn cfg_of(dev: usize) -> Mmio {
        // SAFETY: the ECAM of a bridge this VM owns; no Rust object there.
        unsafe { Mmio::new(ECAM + (dev << 15)) }
    }

    /// Bus 0's virtio-blk-pci: BAR 4 placed, memory and bus mastering on,
    /// the common and notify structures found through the capability list.
    fn find() -> Option<Dev> {
        let cfg = (0..32).map(cfg_of).find(|c| c.read32(0) == 0x1042_1af4)?;
        cfg.write32(0x20, BAR_AT as u32);
        cfg.write32(0x24, (BAR_AT >> 32) as u32);
        cfg.write16(0x04, 0b110);
        let mut cap = usize::from(cfg.read8(0x34));
        let (mut common, mut notify) = (None, None);
        for _ in 0..48 {
            if cap == 0 {
                break;
            }
            if cfg.read8(cap) == 0x09 && cfg.read8(cap + 4) == 4 {
                let at = BAR_AT as usize + cfg.read32(cap + 8) as usize;
                match cfg.read8(cap + 3) {
                    1 => common = Some(at),
                    2 => notify = Some(at),
                    _ => {}
                }
            }
            cap = usize::from(cfg.read8(cap + 1));
        }
        // SAFETY: inside BAR 4 of the device, just placed in this VM's window.
        let (common, notify) = unsafe { (Mmio::new(common?), Mmio::new(notify?)) };
        Some(Dev { cfg, common, notify })
    }

    /// Resets the device, sets queue 0 up (its rings in this VM's RAM, or
    /// all three at `rings`), submits one 512-byte disk read into `buffer`,
    /// and waits up to 200 ms: the status byte, or `None` if it never came.
    fn request(dev: &Dev, rings: Option<u64>, buffer: u64) -> Option<u8> {
        let c = &dev.common;
        c.write8(0x14, 0);
        let t0 = counter();
        while c.read8(0x14) != 0 && counter() - t0 < ms_to_ticks(100) {}
        c.write8(0x14, 1 | 2);
        // VIRTIO_F_VERSION_1 and VIRTIO_F_ACCESS_PLATFORM (feature bits 32, 33).
        c.write32(0x08, 1);
        c.write32(0x0c, 0b11);
        c.write32(0x08, 0);
        c.write32(0x0c, 0);
        c.write8(0x14, 1 | 2 | 8);
        if c.read8(0x14) & 8 == 0 {
            return None;
        }
        let d = dma();
        // SAFETY: this guest's own statics; the device is reset, so it does
        // not access them meanwhile.
        let (desc, avail, used, status) = unsafe {
            (*d).used = [0; 1 + 2 * QSIZE as usize];
            (*d).avail = [0; 2 + QSIZE as usize];
            (*d).status = 0xff;
            (*d).header = [0, 0]; // VIRTIO_BLK_T_IN, sector 0
            (*d).desc[0] = [&raw const (*d).header as u64, desc_word(16, 1, 1)];
            (*d).desc[1] = [buffer, desc_word(512, 1 | 2, 2)];
            (*d).desc[2] = [&raw const (*d).status as u64, desc_word(1, 2, 0)];
            (*d).avail[2] = 0;
            (*d).avail[1] = 1;
            (
                &raw const (*d).desc as u64,
                &raw const (*d).avail as u64,
                &raw const (*d).used as u64,
                &raw const (*d).status,
            )
        };
        c.write16(0x16, 0);
        let size = c.read16(0x18).min(QSIZE);
        if size < QSIZE {
            return None;
        }
        c.write16(0x18, QSIZE);
        let (dq, aq, uq) = match rings {
            Some(at) => (at, at + 0x1000, at + 0x2000),
            None => (desc, avail, used),
        };
        c.write64(0x20, dq);
        c.write64(0x28, aq);
        c.write64(0x30, uq);
        c.write16(0x1c, 1);
        c.write8(0x14, 1 | 2 | 4 | 8);
        fence(Ordering::SeqCst);
        let off = usize::from(c.read16(0x1e));
        let mult = dev.cfg.read32(notify_cap(dev) + 16) as usize;
        dev.notify.write16(off * mult, 0);
        let t0 = counter();
        while counter() - t0 < ms_to_ticks(200) {
            // SAFETY: a byte of this guest's own statics the device writes.
            let s = unsafe { core::ptr::read_volatile(status) };
            if s != 0xff {
                return Some(s);
            }
        }
        None
    }

    /// A descriptor's second word: length, flags (NEXT 1, WRITE 2), next.
    fn desc_word(len: u32, flags: u16, next: u16) -> u64 {
        u64::from(len) | (u64::from(flags) << 32) | (u64::from(next) << 48)
    }

    fn notify_cap(dev: &Dev) -> usize {
        let mut cap = usize::from(dev.cfg.read8(0x34));
        for _ in 0..48 {
            if cap == 0 || (dev.cfg.read8(cap) == 0x09 && dev.cfg.read8(cap + 3) == 2) {
                break;
            }
            cap = usize::from(dev.cfg.read8(cap + 1));
        }
        cap
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
