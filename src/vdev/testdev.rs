//! A scratch MMIO device for the test suite: 4 KiB that behave like RAM but
//! live behind a stage-2 fault, so every access goes through the MMIO
//! emulation path. Initially byte `i` holds `i & 0xff`.

use super::{BusError, MmioDevice};
use spin::Mutex;

const SIZE: usize = 4096;

pub struct TestDevice {
    bytes: Mutex<[u8; SIZE]>,
}

impl TestDevice {
    pub fn new() -> Self {
        let mut b = [0u8; SIZE];
        for (i, v) in b.iter_mut().enumerate() {
            *v = i as u8;
        }
        Self { bytes: Mutex::new(b) }
    }
}

impl Default for TestDevice {
    fn default() -> Self {
        Self::new()
    }
}

fn span(offset: u64, width: u8) -> Result<core::ops::Range<usize>, BusError> {
    let o = usize::try_from(offset).map_err(|_| BusError)?;
    let w = usize::from(width);
    if !matches!(w, 1 | 2 | 4 | 8) || o % w != 0 || o + w > SIZE {
        return Err(BusError);
    }
    Ok(o..o + w)
}

impl MmioDevice for TestDevice {
    fn name(&self) -> &str {
        "testdev"
    }

    fn size(&self) -> u64 {
        SIZE as u64
    }

    fn reset(&self) {
        *self.bytes.lock() = TestDevice::new().bytes.into_inner();
    }

    fn read(&self, offset: u64, width: u8, _vcpu: usize) -> Result<u64, BusError> {
        let r = span(offset, width)?;
        let b = self.bytes.lock();
        let src = b.get(r).ok_or(BusError)?;
        let mut v = [0u8; 8];
        v.get_mut(..src.len()).ok_or(BusError)?.copy_from_slice(src);
        Ok(u64::from_le_bytes(v))
    }

    fn write(&self, offset: u64, width: u8, value: u64, _vcpu: usize) -> Result<(), BusError> {
        let r = span(offset, width)?;
        let bytes = value.to_le_bytes();
        let src = bytes.get(..r.len()).ok_or(BusError)?;
        self.bytes.lock().get_mut(r).ok_or(BusError)?.copy_from_slice(src);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_pattern_and_widths() {
        let d = TestDevice::new();
        assert_eq!(d.read(0, 8, 0), Ok(0x0706_0504_0302_0100));
        assert_eq!(d.read(4, 4, 0), Ok(0x0706_0504));
        assert_eq!(d.read(2, 2, 0), Ok(0x0302));
        assert_eq!(d.read(0x101, 1, 0), Ok(0x01));
    }

    #[test]
    fn writes_store_little_endian() {
        let d = TestDevice::new();
        d.write(8, 4, 0xffff_ffff_8000_0001, 0).unwrap();
        assert_eq!(d.read(8, 8, 0), Ok(0x0f0e_0d0c_8000_0001));
        d.write(8, 1, 0x80, 0).unwrap();
        assert_eq!(d.read(8, 1, 0), Ok(0x80));
    }

    #[test]
    fn misaligned_or_outside_is_a_bus_error() {
        let d = TestDevice::new();
        assert_eq!(d.read(1, 2, 0), Err(BusError));
        assert_eq!(d.read(4096, 1, 0), Err(BusError));
        assert_eq!(d.read(0, 3, 0), Err(BusError));
        assert_eq!(d.write(4095, 8, 0, 0), Err(BusError));
    }
}
