//! PCI configuration space through a host bridge's ECAM window: just
//! enough to stop every function's DMA (a VM's reset must not let a device
//! it programmed keep writing into the images loaded for its next boot).
//!
//! Access goes through [`ConfigSpace`] so the host tests can drive the walk
//! against a model; on the board, [`Hw`] uses the abort-surviving accessors
//! (a real bridge may answer an absent function with an external abort).

use core::ops::RangeInclusive;

const VENDOR_ID: usize = 0x00;
const COMMAND: usize = 0x04;
const HEADER_TYPE: usize = 0x0e;
/// Command: I/O space, memory space, bus master enable.
pub const CMD_IO_MEM_MASTER: u16 = 0b111;
const MULTI_FUNCTION: u16 = 0x80;

/// 16-bit accesses at ECAM offsets; `None`: the access aborted.
pub trait ConfigSpace {
    fn read16(&self, offset: usize) -> Option<u16>;
    fn write16(&self, offset: usize, value: u16) -> Option<()>;
}

/// The ECAM offset of function `bus:dev.func`'s register `reg`.
pub const fn offset(bus: u8, dev: u8, func: u8, reg: usize) -> usize {
    ((bus as usize) << 20) | ((dev as usize & 0x1f) << 15) | ((func as usize & 7) << 12) | reg
}

/// Clears I/O, memory and bus master enable in the Command register of
/// every function present (vendor ID not 0xffff) on `buses`, where the
/// window starts at bus `first` (the `bus-range` start). Returns how many
/// functions were stopped. Only Command is written (16 bits): Status, its
/// neighbour, is write-one-to-clear and is left alone.
pub fn stop_bus_masters(cfg: &impl ConfigSpace, buses: RangeInclusive<u8>) -> usize {
    let first = *buses.start();
    let mut n = 0;
    for bus in buses {
        let b = bus - first;
        for dev in 0..32u8 {
            for func in 0..8u8 {
                let at = |reg| offset(b, dev, func, reg);
                let Some(vendor) = cfg.read16(at(VENDOR_ID)) else {
                    break;
                };
                if vendor == 0xffff {
                    // No function 0: no device at all.
                    if func == 0 {
                        break;
                    }
                    continue;
                }
                if let Some(cmd) = cfg.read16(at(COMMAND)) {
                    if cmd & CMD_IO_MEM_MASTER != 0
                        && cfg.write16(at(COMMAND), cmd & !CMD_IO_MEM_MASTER).is_some()
                    {
                        n += 1;
                    }
                }
                let multi = cfg
                    .read16(at(HEADER_TYPE))
                    .is_some_and(|h| h & MULTI_FUNCTION != 0);
                if func == 0 && !multi {
                    break;
                }
            }
        }
    }
    n
}

/// An ECAM window mapped as device memory at EL2.
#[cfg(target_os = "none")]
pub struct Hw {
    base: u64,
    size: u64,
}

#[cfg(target_os = "none")]
impl Hw {
    /// # Safety
    /// `base..base + size` is a PCI host bridge's ECAM window, mapped as
    /// device memory at EL2.
    pub unsafe fn new(base: u64, size: u64) -> Self {
        Self { base, size }
    }

    fn at(&self, offset: usize) -> Option<u64> {
        let o = offset as u64;
        (o + 2 <= self.size).then_some(self.base + o)
    }
}

#[cfg(target_os = "none")]
impl ConfigSpace for Hw {
    fn read16(&self, offset: usize) -> Option<u16> {
        let a = self.at(offset)?;
        // SAFETY: inside the mapped window (checked), 2-byte aligned (the
        // offsets are even); config reads have no effect on memory.
        unsafe { crate::arch::aarch64::devio::read(a, 2) }
            .ok()
            .map(|v| v as u16)
    }
    fn write16(&self, offset: usize, value: u16) -> Option<()> {
        let a = self.at(offset)?;
        // SAFETY: as above; a Command write only stops the function.
        unsafe { crate::arch::aarch64::devio::write(a, 2, u64::from(value)) }.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// (bus, dev, func) -> (command, header type).
    type Functions = HashMap<(u8, u8, u8), (u16, u16)>;

    /// Functions present; absent ones read all ones.
    struct Model {
        fns: RefCell<Functions>,
        writes: RefCell<Vec<(usize, u16)>>,
    }

    fn split(offset: usize) -> ((u8, u8, u8), usize) {
        (
            (
                (offset >> 20) as u8,
                ((offset >> 15) & 0x1f) as u8,
                ((offset >> 12) & 7) as u8,
            ),
            offset & 0xfff,
        )
    }

    impl ConfigSpace for Model {
        fn read16(&self, offset: usize) -> Option<u16> {
            let (f, reg) = split(offset);
            Some(match (self.fns.borrow().get(&f), reg) {
                (None, _) => 0xffff,
                (Some(_), VENDOR_ID) => 0x1af4,
                (Some(&(cmd, _)), COMMAND) => cmd,
                (Some(&(_, h)), HEADER_TYPE) => h,
                _ => 0,
            })
        }
        fn write16(&self, offset: usize, value: u16) -> Option<()> {
            let (f, reg) = split(offset);
            self.writes.borrow_mut().push((offset, value));
            if let Some(e) = self.fns.borrow_mut().get_mut(&f) {
                if reg == COMMAND {
                    e.0 = value;
                }
            }
            Some(())
        }
    }

    #[test]
    fn every_present_function_stops_mastering_and_only_command_is_written() {
        let m = Model {
            fns: RefCell::new(HashMap::from([
                // Host bridge, nothing enabled.
                ((0, 0, 0), (0, 0)),
                // virtio-blk: memory + bus master, plus an interrupt-disable bit kept.
                ((0, 2, 0), (0x0406, 0)),
                // A multi-function device: functions 0 and 3.
                ((0, 4, 0), (0x0007, 0x80)),
                ((0, 4, 3), (0x0004, 0)),
                // Behind a bridge on bus 1.
                ((1, 0, 0), (0x0002, 0)),
                // Function 5 of a single-function device: not scanned.
                ((0, 6, 0), (0, 0)),
                ((0, 6, 5), (0x0004, 0)),
            ])),
            writes: RefCell::new(Vec::new()),
        };
        assert_eq!(stop_bus_masters(&m, 0..=1), 4);
        let f = m.fns.borrow();
        assert_eq!(f[&(0, 2, 0)].0, 0x0400);
        assert_eq!(f[&(0, 4, 0)].0, 0);
        assert_eq!(f[&(0, 4, 3)].0, 0);
        assert_eq!(f[&(1, 0, 0)].0, 0);
        assert_eq!(
            f[&(0, 6, 5)].0,
            0x0004,
            "not a function of a single-function device"
        );
        assert!(m.writes.borrow().iter().all(|&(o, _)| o & 0xfff == COMMAND));
    }

    #[test]
    fn a_bus_range_not_starting_at_zero_is_relative_to_the_window() {
        let m = Model {
            fns: RefCell::new(HashMap::from([((0, 1, 0), (0x0004, 0))])),
            writes: RefCell::new(Vec::new()),
        };
        // Buses 0x20..=0x21: the window's first MiB is bus 0x20.
        assert_eq!(stop_bus_masters(&m, 0x20..=0x21), 1);
        assert_eq!(m.writes.borrow()[0].0, offset(0, 1, 0, COMMAND));
    }
}
