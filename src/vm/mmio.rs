//! A VM's emulated MMIO: which device answers which guest-physical window.

use crate::vdev::MmioDevice;
use alloc::boxed::Box;
use alloc::vec::Vec;

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

    /// The device decoding `ipa` and the offset into its window.
    #[inline]
    pub fn find(&self, ipa: u64) -> Option<(&dyn MmioDevice, u64)> {
        self.regions
            .iter()
            .find(|r| ipa >= r.base && ipa - r.base < r.size)
            .map(|r| (r.device.as_ref(), ipa - r.base))
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions
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
}
