//! The GICv2 driver on plain memory standing in for its frames: registers
//! hold what was last written, so a test sees which registers the driver
//! wrote and with what.

use super::*;

/// Zeroed stand-ins for GICD, GICC (8 KiB), GICH and GICV, 32-bit aligned.
struct Frames {
    gicd: Vec<u32>,
    gicc: Vec<u32>,
    gich: Vec<u32>,
    gicv: Vec<u32>,
}

const EL2_TIMER_PPI: u32 = 26;
const ISENABLER0: usize = 0x100 / 4;
const ICENABLER0: usize = 0x180 / 4;
const GICC_IAR: usize = 0x0c / 4;
const GICV_IAR: usize = 0x0c / 4;

impl Frames {
    fn new() -> Self {
        Self {
            gicd: vec![0; 0x1000 / 4],
            gicc: vec![0; 0x2000 / 4],
            gich: vec![0; 0x200 / 4],
            gicv: vec![0; 0x2000 / 4],
        }
    }

    /// Runs the HW-deactivation probe on the EL2 timer's PPI with these
    /// frames; every IAR reads `iar`.
    fn probe(&mut self, iar: u32) -> Option<bool> {
        self.gicc[GICC_IAR] = iar;
        self.gicv[GICV_IAR] = iar;
        // SAFETY: the four buffers are as large as the frames' registers
        // and live until the end of this function; nothing else uses them.
        unsafe {
            let g = Gicv2::new(
                self.gicd.as_mut_ptr() as u64,
                self.gicc.as_mut_ptr() as u64,
                self.gich.as_mut_ptr() as u64,
                1,
            );
            g.probe_hw_deactivate_resignals(self.gicv.as_mut_ptr() as u64, EL2_TIMER_PPI, || {}, || {})
        }
    }
}

#[test]
fn probe_leaves_an_enabled_ppi_enabled() {
    // The boot CPU's set-up enabled the EL2 timer's PPI (the console's
    // come-back timer) before the probe ran, and the probe disabled it for
    // good: lines the boot CPU's VM left queued were never printed.
    for iar in [EL2_TIMER_PPI, 1023] {
        let mut f = Frames::new();
        f.gicd[ISENABLER0] = 1 << EL2_TIMER_PPI;
        let got = f.probe(iar);
        assert_eq!(got, (iar == EL2_TIMER_PPI).then_some(true), "IAR {iar}");
        assert_eq!(
            f.gicd[ICENABLER0] & (1 << EL2_TIMER_PPI),
            0,
            "IAR {iar}: PPI disabled"
        );
        assert_ne!(f.gicd[ISENABLER0] & (1 << EL2_TIMER_PPI), 0, "IAR {iar}");
    }
}

#[test]
fn probe_leaves_a_disabled_ppi_disabled() {
    for iar in [EL2_TIMER_PPI, 1023] {
        let mut f = Frames::new();
        f.probe(iar);
        assert_ne!(
            f.gicd[ICENABLER0] & (1 << EL2_TIMER_PPI),
            0,
            "IAR {iar}: PPI left enabled"
        );
    }
}
