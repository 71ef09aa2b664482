//! The emulated GICv3 redistributors: one pair of 64 KiB frames per vCPU
//! (RD_base, then SGI_base), the last one flagged in GICR_TYPER.Last.

use super::dist::{id_register, Bank, IIDR_VALUE};
use super::Vgic;
use crate::vdev::{BusError, MmioDevice};
use alloc::sync::Arc;

/// Bytes of guest-physical space per vCPU.
pub const STRIDE: u64 = 0x2_0000;
const SGI_BASE: u64 = 0x1_0000;

/// The 64-bit LPI registers of RD_base: GICR_SETLPIR, CLRLPIR, PROPBASER,
/// PENDBASER, INVLPIR, INVALLR. With GICR_TYPER.PLPIS = 0 (no LPIs) they
/// are RES0: read as zero, writes ignored, at either access width.
/// (GICR_SYNCR, 0xc0, is 32-bit and reads as not busy: 0.)
fn lpi_register(off: u64) -> bool {
    matches!(off, 0x40 | 0x48 | 0x70 | 0x78 | 0xa0 | 0xb0)
}

/// All redistributor frames of a VM, contiguous.
pub struct Redistributors {
    pub vgic: Arc<Vgic>,
}

impl Redistributors {
    fn typer(&self, vcpu: usize) -> u64 {
        let last = vcpu + 1 == self.vgic.nvcpus;
        // Affinity = the vCPU's MPIDR (Aff0 = index); Processor_Number = index.
        ((vcpu as u64) << 32) | ((vcpu as u64) << 8) | (u64::from(last) << 4)
    }
}

impl MmioDevice for Redistributors {
    fn name(&self) -> &str {
        "vGICR"
    }

    fn size(&self) -> u64 {
        STRIDE * self.vgic.nvcpus as u64
    }

    fn read(&self, offset: u64, width: u8, _vcpu: usize) -> Result<u64, BusError> {
        let frame = (offset / STRIDE) as usize;
        let off = offset % STRIDE;
        let g = &self.vgic;
        if off == 0x8 && width == 8 {
            return Ok(self.typer(frame));
        }
        if width == 8 && lpi_register(off) {
            return Ok(0);
        }
        if width == 1 && (SGI_BASE + 0x400..SGI_BASE + 0x420).contains(&off) {
            return Ok(u64::from(g.read_irq_byte(off - SGI_BASE, frame, Bank::Private)));
        }
        if width != 4 || !off.is_multiple_of(4) {
            return Err(BusError);
        }
        Ok(match off {
            0x0000 => 0,
            0x0004 => IIDR_VALUE,
            0x0008 => self.typer(frame) & 0xffff_ffff,
            0x000c => self.typer(frame) >> 32,
            0x0014 if g.state.lock().asleep.get(frame) == Some(&true) => 0b110,
            o if o >= SGI_BASE && (0x080..0xd00).contains(&(o - SGI_BASE)) => {
                g.read_irq_bytes(o - SGI_BASE, 4, frame, Bank::Private)
            }
            o if o < SGI_BASE => id_register(g.version, o).unwrap_or(0),
            _ => 0,
        })
    }

    fn write(&self, offset: u64, width: u8, value: u64, _vcpu: usize) -> Result<(), BusError> {
        let frame = (offset / STRIDE) as usize;
        let off = offset % STRIDE;
        let g = &self.vgic;
        if width == 1 && (SGI_BASE + 0x400..SGI_BASE + 0x420).contains(&off) {
            g.write_irq_bytes(off - SGI_BASE, 1, value, frame, Bank::Private);
            return Ok(());
        }
        if width == 8 && lpi_register(off) {
            return Ok(());
        }
        if width != 4 || !off.is_multiple_of(4) {
            return Err(BusError);
        }
        match off {
            0x0014 => {
                if let Some(asleep) = g.state.lock().asleep.get_mut(frame) {
                    *asleep = value & 0b10 != 0;
                }
            }
            o if o >= SGI_BASE && (0x080..0xd00).contains(&(o - SGI_BASE)) => {
                g.write_irq_bytes(o - SGI_BASE, 4, value, frame, Bank::Private);
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::vgic;
    use super::super::Version;
    use super::*;

    #[test]
    fn typer_names_each_vcpu_and_the_last() {
        let (g, _) = vgic(Version::V3, 3);
        let r = Redistributors { vgic: Arc::new(g) };
        assert_eq!(r.size(), 3 * STRIDE);
        assert_eq!(r.read(8, 8, 0).unwrap(), 0);
        assert_eq!(r.read(STRIDE + 8, 8, 0).unwrap(), (1 << 32) | (1 << 8));
        let t2 = r.read(2 * STRIDE + 8, 8, 0).unwrap();
        assert_eq!(t2 >> 32, 2);
        assert_ne!(t2 & (1 << 4), 0, "Last");
        assert_eq!(r.read(2 * STRIDE + 0xc, 4, 0).unwrap(), 2);
        assert_eq!(r.read(0xffe8, 4, 0).unwrap() >> 4, 3);
    }

    #[test]
    fn private_active_state_per_frame() {
        // The recorder's vCPU v has INTIDs 5 + v and 33 active.
        let (g, r) = vgic(Version::V3, 2);
        let r2 = Redistributors { vgic: Arc::new(g) };
        assert_eq!(r2.read(SGI_BASE + 0x300, 4, 0).unwrap(), 1 << 5);
        assert_eq!(r2.read(STRIDE + SGI_BASE + 0x380, 4, 0).unwrap(), 1 << 6);
        r2.write(STRIDE + SGI_BASE + 0x380, 4, 1 << 6, 0).unwrap();
        assert!(r.0.lock().unwrap().contains(&"set_active 6 1 false".to_string()));
    }

    #[test]
    fn lpi_registers_are_raz_wi_without_lpis() {
        let (g, _) = vgic(Version::V3, 2);
        let r = Redistributors { vgic: Arc::new(g) };
        assert_eq!(r.read(8, 8, 0).unwrap() & 1, 0, "PLPIS = 0");
        for frame in [0, STRIDE] {
            for off in [0x40u64, 0x48, 0x70, 0x78, 0xa0, 0xb0] {
                r.write(frame + off, 8, u64::MAX, 0).unwrap();
                assert_eq!(r.read(frame + off, 8, 0).unwrap(), 0, "{off:#x}");
                r.write(frame + off, 4, u64::MAX, 0).unwrap();
                assert_eq!(r.read(frame + off, 4, 0).unwrap(), 0, "{off:#x}");
                assert_eq!(r.read(frame + off + 4, 4, 0).unwrap(), 0, "{off:#x}+4");
            }
            // GICR_SYNCR: never busy.
            assert_eq!(r.read(frame + 0xc0, 4, 0).unwrap(), 0);
        }
        // Other 64-bit accesses still abort: the frame has no other
        // 64-bit registers.
        assert!(r.read(0x10, 8, 0).is_err());
    }

    #[test]
    fn waker_and_private_enables_per_frame() {
        let (g, rec) = vgic(Version::V3, 2);
        let r = Redistributors { vgic: Arc::new(g) };
        assert_eq!(r.read(0x14, 4, 0).unwrap(), 0b110);
        r.write(0x14, 4, 0, 0).unwrap();
        assert_eq!(r.read(0x14, 4, 0).unwrap(), 0);
        // Enable SGIs 0-15 and the virtual timer (27) in vCPU 1's frame.
        r.write(STRIDE + SGI_BASE + 0x100, 4, 0xffff | (1 << 27) | (1 << 23), 1)
            .unwrap();
        assert_eq!(
            r.read(STRIDE + SGI_BASE + 0x100, 4, 0).unwrap(),
            0xffff | (1 << 27),
            "PPI 23 is not the VM's"
        );
        assert_eq!(
            r.read(SGI_BASE + 0x100, 4, 0).unwrap(),
            0,
            "vCPU 0's copy untouched"
        );
        assert!(rec.0.lock().unwrap().contains(&"hw_enable 27 1 true".to_string()));
        r.write(STRIDE + SGI_BASE + 0x41b, 1, 0x80, 1).unwrap();
        assert_eq!(r.read(STRIDE + SGI_BASE + 0x418, 4, 0).unwrap(), 0x80 << 24);
    }
}
