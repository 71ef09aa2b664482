//! The sub-page filter: the emulated front of passed-through devices that
//! do not own their pages outright ([`super::page_share`]). Stage 2 leaves
//! such pages unmapped, so every access traps here; an access that lies
//! wholly inside one of the VM's own `reg` windows, naturally aligned and
//! 1, 2, 4 or 8 bytes wide, is performed on the hardware at the same address
//! and width; anything else (a neighbour's registers, a gap, a straddling or
//! misaligned access) is refused, and the guest gets an external abort.
//!
//! The decision is pure ([`decide`]); the hardware access is the
//! [`WindowIo`] the VM layer hands in (a volatile accessor in `arch/`), so
//! this module touches no register itself and is tested on the host.

use super::{BusError, MmioDevice};
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The hardware behind one window: `offset` is from the window's base and
/// the access is already checked to lie inside it, naturally aligned.
pub trait WindowIo: Send + Sync {
    fn read(&self, offset: u64, width: u8) -> Result<u64, BusError>;
    fn write(&self, offset: u64, width: u8, value: u64) -> Result<(), BusError>;
}

/// One of the VM's own `reg` windows inside the filtered pages.
pub struct Window<T> {
    /// Physical (= guest-physical) base and size.
    pub base: u64,
    pub size: u64,
    pub io: T,
}

/// What to do with one trapped access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Perform it on window `window` at `offset` from the window's base.
    Forward { window: usize, offset: u64 },
    /// Not a width the bus has (1, 2, 4, 8) or not naturally aligned.
    BadAccess,
    /// Not wholly inside one of the VM's windows.
    Outside,
}

/// Decides an access of `width` bytes at physical `addr` against `windows`
/// (base, size).
pub fn decide(windows: impl Iterator<Item = (u64, u64)>, addr: u64, width: u8) -> Decision {
    let w = u64::from(width);
    if !matches!(width, 1 | 2 | 4 | 8) || !addr.is_multiple_of(w) {
        return Decision::BadAccess;
    }
    for (i, (base, size)) in windows.enumerate() {
        if addr >= base && addr - base < size && w <= size - (addr - base) {
            return Decision::Forward {
                window: i,
                offset: addr - base,
            };
        }
    }
    Decision::Outside
}

/// One run of filtered pages of one VM and its windows in them.
pub struct SubpageFilter<T> {
    /// The VM's name, for the access count logged at each reset.
    vm: String,
    base: u64,
    size: u64,
    windows: Vec<Window<T>>,
    /// Trapped accesses since the VM (re)started, and how many were refused:
    /// what the filter costs the VM, in exits.
    accesses: AtomicU64,
    refused: AtomicU64,
}

impl<T: WindowIo> SubpageFilter<T> {
    /// A filter decoding `[base, base + size)` (whole pages) that forwards
    /// to `windows` (clipped to that range by the caller).
    pub fn new(vm: &str, base: u64, size: u64, windows: Vec<Window<T>>) -> Self {
        Self {
            vm: vm.into(),
            base,
            size,
            windows,
            accesses: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// (trapped accesses, of them refused) since the VM (re)started.
    pub fn counts(&self) -> (u64, u64) {
        (self.accesses.load(Relaxed), self.refused.load(Relaxed))
    }

    fn decide(&self, offset: u64, width: u8) -> Decision {
        self.accesses.fetch_add(1, Relaxed);
        let d = match self.base.checked_add(offset) {
            Some(addr) => decide(self.windows.iter().map(|w| (w.base, w.size)), addr, width),
            None => Decision::Outside,
        };
        if !matches!(d, Decision::Forward { .. }) {
            self.refused.fetch_add(1, Relaxed);
        }
        d
    }
}

impl<T: WindowIo> MmioDevice for SubpageFilter<T> {
    fn name(&self) -> &str {
        "sub-page filter"
    }

    fn size(&self) -> u64 {
        self.size
    }

    /// The filter has no state of its own (the device behind it keeps its
    /// state, as a mapped one would); its counts start again. Silent: the
    /// VM reset reports [`MmioDevice::trapped`] rate-limited, so a VM that
    /// resets in a loop cannot fill the console with these lines.
    fn reset(&self) {
        self.accesses.store(0, Relaxed);
        self.refused.store(0, Relaxed);
    }

    fn trapped(&self) -> Option<(u64, u64)> {
        Some(self.counts())
    }

    fn read(&self, offset: u64, width: u8, _vcpu: usize) -> Result<u64, BusError> {
        match self.decide(offset, width) {
            Decision::Forward { window, offset } => {
                self.windows.get(window).ok_or(BusError)?.io.read(offset, width)
            }
            Decision::BadAccess | Decision::Outside => Err(BusError),
        }
    }

    fn write(&self, offset: u64, width: u8, value: u64, _vcpu: usize) -> Result<(), BusError> {
        match self.decide(offset, width) {
            Decision::Forward { window, offset } => self
                .windows
                .get(window)
                .ok_or(BusError)?
                .io
                .write(offset, width, value),
            Decision::BadAccess | Decision::Outside => Err(BusError),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use spin::Mutex;

    /// A window of fake registers recording every access it is given.
    struct Fake {
        log: Mutex<Vec<(bool, u64, u8, u64)>>,
    }

    impl Fake {
        fn new() -> Self {
            Self {
                log: Mutex::new(Vec::new()),
            }
        }
    }

    impl WindowIo for &'static Fake {
        fn read(&self, offset: u64, width: u8) -> Result<u64, BusError> {
            self.log.lock().push((false, offset, width, 0));
            Ok(0x7472_6976)
        }
        fn write(&self, offset: u64, width: u8, value: u64) -> Result<(), BusError> {
            self.log.lock().push((true, offset, width, value));
            Ok(())
        }
    }

    /// linux0's transport at 0xa003e00 in the filtered page 0xa003000.
    fn filter() -> (SubpageFilter<&'static Fake>, &'static Fake) {
        let fake: &'static Fake = Box::leak(Box::new(Fake::new()));
        let w = Window {
            base: 0xa00_3e00,
            size: 0x200,
            io: fake,
        };
        (SubpageFilter::new("linux0", 0xa00_3000, 0x1000, vec![w]), fake)
    }

    #[test]
    fn accesses_inside_the_window_reach_the_hardware_at_their_width() {
        let (f, fake) = filter();
        assert_eq!(f.read(0xe00, 4, 0), Ok(0x7472_6976));
        f.write(0xe70, 4, 0xf, 0).unwrap();
        f.read(0xf00, 1, 0).unwrap();
        f.read(0xffe, 2, 0).unwrap();
        f.read(0xff8, 8, 0).unwrap();
        assert_eq!(
            *fake.log.lock(),
            [
                (false, 0, 4, 0),
                (true, 0x70, 4, 0xf),
                (false, 0x100, 1, 0),
                (false, 0x1fe, 2, 0),
                (false, 0x1f8, 8, 0)
            ]
        );
    }

    #[test]
    fn the_neighbours_registers_are_refused_and_never_touched() {
        let (f, fake) = filter();
        // linux1's transport at 0xa003c00: MagicValue, DeviceID, Status, QueueSel.
        for off in [0xc00, 0xc08, 0xc70, 0xc30] {
            assert_eq!(f.read(off, 4, 0), Err(BusError));
            assert_eq!(f.write(off, 4, 0, 0), Err(BusError));
        }
        // The byte just below the window, the unassigned rest of the page.
        assert_eq!(f.read(0xdfc, 4, 0), Err(BusError));
        assert_eq!(f.read(0x000, 4, 0), Err(BusError));
        assert!(fake.log.lock().is_empty());
        assert_eq!(f.counts(), (10, 10));
        f.read(0xe00, 4, 0).unwrap();
        assert_eq!(f.counts(), (11, 10));
        f.reset();
        assert_eq!(f.counts(), (0, 0));
    }

    #[test]
    fn misaligned_odd_width_and_straddling_accesses_are_refused() {
        let (f, fake) = filter();
        assert_eq!(f.read(0xe01, 4, 0), Err(BusError));
        assert_eq!(f.read(0xe02, 4, 0), Err(BusError));
        assert_eq!(f.read(0xe00, 3, 0), Err(BusError));
        assert_eq!(f.read(0xe00, 16, 0), Err(BusError));
        assert_eq!(f.write(0xe04, 8, 0, 0), Err(BusError));
        // Straddling the window's start from the neighbour's side.
        assert_eq!(decide([(0x1004, 0x8)].into_iter(), 0x1000, 8), Decision::Outside);
        // Beyond the filter's page, and wrapping the address space.
        assert_eq!(f.read(u64::MAX - 3, 4, 0), Err(BusError));
        assert!(fake.log.lock().is_empty());
    }

    #[test]
    fn several_windows_in_one_page_each_forward_to_their_own_device() {
        assert_eq!(
            decide([(0x3c00, 0x200), (0x3e00, 0x200)].into_iter(), 0x3e04, 4),
            Decision::Forward { window: 1, offset: 4 }
        );
        assert_eq!(
            decide([(0x3c00, 0x200), (0x3e00, 0x200)].into_iter(), 0x3dfc, 4),
            Decision::Forward {
                window: 0,
                offset: 0x1fc
            }
        );
        assert_eq!(
            decide([(0x3c00, 0x200)].into_iter(), 0x3e00, 4),
            Decision::Outside
        );
    }
}
