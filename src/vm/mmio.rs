//! A VM's emulated MMIO: which device answers which guest-physical window.

use crate::vdev::MmioDevice;
use alloc::boxed::Box;
use alloc::vec::Vec;

/// Up to this many windows, [`MmioBus::find`] scans instead of searching.
const LINEAR: usize = 6;

/// One emulated window.
pub struct Region {
    pub base: u64,
    pub size: u64,
    pub device: Box<dyn MmioDevice>,
}

/// The emulated windows of one VM, sorted by base, never overlapping.
#[derive(Default)]
pub struct MmioBus {
    regions: Vec<Region>,
}

impl MmioBus {
    /// Adds `device` at `base`; refuses a window that overlaps another.
    pub fn add(&mut self, base: u64, device: Box<dyn MmioDevice>) -> Result<(), u64> {
        let size = device.size();
        if self
            .regions
            .iter()
            .any(|r| base < r.base + r.size && r.base < base + size)
        {
            return Err(base);
        }
        let at = self.regions.partition_point(|r| r.base < base);
        self.regions.insert(at, Region { base, size, device });
        Ok(())
    }

    /// The device decoding `ipa` and the offset into its window, from this
    /// VM's own sorted windows without a lock: a scan of the first few (the
    /// vGIC and the UART come first: the scan beats a search there), a
    /// binary search where there are many.
    #[inline]
    pub fn find(&self, ipa: u64) -> Option<(&dyn MmioDevice, u64)> {
        if self.regions.len() <= LINEAR {
            // `wrapping_sub`: below the base wraps to a huge offset.
            return self.regions.iter().find_map(|r| {
                let offset = ipa.wrapping_sub(r.base);
                (offset < r.size).then_some((r.device.as_ref(), offset))
            });
        }
        let after = self.regions.partition_point(|r| r.base <= ipa);
        let r = self.regions.get(after.checked_sub(1)?)?;
        let offset = ipa.checked_sub(r.base)?;
        (offset < r.size).then_some((r.device.as_ref(), offset))
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The VM stopped: each device lets go of what other VMs wait on
    /// ([`MmioDevice::stop`]).
    pub fn stop(&self) {
        for r in &self.regions {
            r.device.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vdev::testdev::TestDevice;

    #[test]
    fn routes_by_window_and_refuses_overlap() {
        let mut bus = MmioBus::default();
        bus.add(0x0b00_0000, Box::new(TestDevice::new())).unwrap();
        bus.add(0x0a00_0000, Box::new(TestDevice::new())).unwrap();
        assert_eq!(
            bus.add(0x0b00_0800, Box::new(TestDevice::new())),
            Err(0x0b00_0800)
        );
        let (_, off) = bus.find(0x0b00_0ffc).unwrap();
        assert_eq!(off, 0xffc);
        assert!(bus.find(0x0b00_1000).is_none());
        assert!(bus.find(0x09ff_ffff).is_none());
        assert_eq!(bus.regions()[0].base, 0x0a00_0000);
    }

    #[test]
    fn finds_every_window_among_many_and_nothing_between() {
        let mut bus = MmioBus::default();
        // TestDevice windows are 4 KiB; every other page, added out of order.
        for k in [7u64, 0, 3, 9, 1, 5, 8, 2, 6, 4] {
            bus.add(0x1000_0000 + k * 0x2000, Box::new(TestDevice::new()))
                .unwrap();
        }
        for k in 0..10u64 {
            let base = 0x1000_0000 + k * 0x2000;
            assert_eq!(bus.find(base).map(|(_, o)| o), Some(0));
            assert_eq!(bus.find(base + 0xfff).map(|(_, o)| o), Some(0xfff));
            assert!(bus.find(base + 0x1000).is_none(), "gap after window {k}");
        }
        assert!(bus.find(0).is_none());
        assert!(bus.find(u64::MAX).is_none());
    }
}
