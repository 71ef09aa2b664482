//! Property tests of the emulated devices behind [`MmioDevice`] (the virtual
//! UART, the test device) and of the MMIO bus that routes to them: random
//! offsets, widths, values and call sequences. Whatever the guest does,
//! nothing panics, registers keep their architected widths, and the devices
//! behave like their models. The vGIC has its own in `vgic/proptests.rs`.
//! Fixed seed and case count, so `cargo test` runs the same cases each time.

use super::testdev::TestDevice;
use super::vuart::VirtualUart;
use super::{BusError, MmioDevice};
use crate::vm::mmio::MmioBus;
use alloc::boxed::Box;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::cell::RefCell;
use std::vec::Vec;

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0xde71_ce55),
        failure_persistence: None,
        ..Config::default()
    }
}

fn width() -> impl Strategy<Value = u8> {
    prop_oneof![4 => Just(4u8), 3 => Just(1u8), 2 => Just(2u8), 2 => Just(8u8), 1 => any::<u8>()]
}

fn value() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        any::<u8>().prop_map(u64::from),
        any::<u64>()
    ]
}

thread_local! {
    /// Lines the virtual UART under test finished, per test thread.
    static LINES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn capture(_vm: &str, line: &[u8]) {
    LINES.with(|l| l.borrow_mut().push(line.to_vec()));
}

fn take_lines() -> Vec<Vec<u8>> {
    LINES.with(|l| core::mem::take(&mut *l.borrow_mut()))
}

#[derive(Clone, Debug)]
enum UartOp {
    Read { offset: u64, width: u8 },
    Write { offset: u64, width: u8, value: u64 },
    Input(Vec<u8>),
    Reset,
}

fn uart_offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => (0u64..0x13).prop_map(|r| r * 4),
        2 => 0xfd0u64..0x1000,
        1 => 0u64..0x1000,
        1 => any::<u64>(),
    ]
}

fn uart_op() -> impl Strategy<Value = UartOp> {
    prop_oneof![
        4 => (uart_offset(), width()).prop_map(|(offset, width)| UartOp::Read { offset, width }),
        6 => (uart_offset(), width(), value())
            .prop_map(|(offset, width, value)| UartOp::Write { offset, width, value }),
        1 => proptest::collection::vec(any::<u8>(), 0..100).prop_map(UartOp::Input),
        1 => Just(UartOp::Reset),
    ]
}

/// PL011 registers at 0x000..0x04c and the IDs, each at most 16 bits wide.
const PL011_MAX_BITS: u32 = 16;

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn virtual_uart_survives_any_access_sequence(ops in proptest::collection::vec(uart_op(), 1..150)) {
        take_lines();
        let u = VirtualUart::new("proptest", capture);
        let ids: Vec<u64> = (0xfe0..0x1000).step_by(4).map(|o| u.read(o, 4, 0).unwrap()).collect();
        for op in ops {
            match op {
                UartOp::Read { offset, width } => {
                    if let Ok(v) = u.read(offset, width, 0) {
                        prop_assert!(v >> PL011_MAX_BITS == 0, "{:#x} read {:#x}", offset, v);
                    }
                }
                UartOp::Write { offset, width, value } => {
                    let _ = u.write(offset, width, value, 0);
                }
                UartOp::Input(bytes) => u.push_input(&bytes),
                UartOp::Reset => u.reset(),
            }
        }
        for line in take_lines() {
            prop_assert!(line.len() <= 240, "a line of {} bytes", line.len());
            prop_assert!(!line.contains(&b'\n'));
        }
        let after: Vec<u64> = (0xfe0..0x1000).step_by(4).map(|o| u.read(o, 4, 0).unwrap()).collect();
        prop_assert_eq!(after, ids, "the ID registers are read-only");
    }

    /// Printable output comes out as it went in, cut into lines at the
    /// newlines and every 240 bytes; a carriage return right before a
    /// newline is part of the line ending, any other is kept.
    #[test]
    fn virtual_uart_output_is_lossless(text in proptest::collection::vec(
        prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\n'), 1 => Just(b'\r')], 0..1200),
        width in prop_oneof![Just(1u8), Just(4u8)],
    ) {
        take_lines();
        let u = VirtualUart::new("proptest", capture);
        for &b in &text {
            u.write(0, width, u64::from(b) | 0xab00, 0).unwrap();
        }
        u.write(0, width, u64::from(b'\n'), 0).unwrap();
        let lines = take_lines();
        let mut expected: Vec<Vec<u8>> = Vec::new();
        let mut cur = Vec::new();
        // A CR right before a newline ends the line with it; any other is kept.
        let mut cr = false;
        for &b in text.iter().chain(b"\n") {
            let mut bytes: Vec<u8> = Vec::new();
            match b {
                b'\n' => {
                    cr = false;
                    expected.push(core::mem::take(&mut cur));
                    continue;
                }
                b'\r' => {
                    if cr {
                        bytes.push(b'\r');
                    }
                    cr = true;
                }
                _ => {
                    if core::mem::take(&mut cr) {
                        bytes.push(b'\r');
                    }
                    bytes.push(b);
                }
            }
            for k in bytes {
                if cur.len() == 240 {
                    expected.push(core::mem::take(&mut cur));
                }
                cur.push(k);
            }
        }
        prop_assert_eq!(lines, expected);
    }

    /// Input is read back in order, the overflow of the 64-byte FIFO is
    /// dropped, and the flags say when it is empty.
    #[test]
    fn virtual_uart_input_is_a_bounded_fifo(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8),
        reads in proptest::collection::vec(0usize..80, 1..8),
    ) {
        let u = VirtualUart::new("proptest", capture);
        let mut model: std::collections::VecDeque<u8> = Default::default();
        for (chunk, n) in chunks.iter().zip(reads.iter().cycle()) {
            u.push_input(chunk);
            for &b in chunk {
                if model.len() < 64 {
                    model.push_back(b);
                }
            }
            for _ in 0..*n {
                let empty = u.read(0x18, 4, 0).unwrap() & (1 << 4) != 0;
                prop_assert_eq!(empty, model.is_empty());
                let got = u.read(0, 4, 0).unwrap();
                prop_assert_eq!(got, u64::from(model.pop_front().unwrap_or(0)));
            }
        }
    }
}

#[derive(Clone, Debug)]
enum MemOp {
    Read { offset: u64, width: u8 },
    Write { offset: u64, width: u8, value: u64 },
    Reset,
}

fn mem_offset() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0u64..0x1010, 1 => any::<u64>()]
}

fn mem_op() -> impl Strategy<Value = MemOp> {
    prop_oneof![
        4 => (mem_offset(), width()).prop_map(|(offset, width)| MemOp::Read { offset, width }),
        4 => (mem_offset(), width(), value())
            .prop_map(|(offset, width, value)| MemOp::Write { offset, width, value }),
        1 => Just(MemOp::Reset),
    ]
}

/// What a test-device access may do: aligned, 1/2/4/8 bytes, inside 4 KiB.
fn valid(offset: u64, width: u8) -> bool {
    matches!(width, 1 | 2 | 4 | 8) && offset.is_multiple_of(u64::from(width)) && offset < 4096
}

/// A plain little-endian model of a 4 KiB device, plus a device that answers
/// a window of any size, for the bus.
struct Window(u64);

impl MmioDevice for Window {
    fn name(&self) -> &str {
        "window"
    }
    fn size(&self) -> u64 {
        self.0
    }
    fn read(&self, offset: u64, _width: u8, _vcpu: usize) -> Result<u64, BusError> {
        Ok(offset)
    }
    fn write(&self, _offset: u64, _width: u8, _value: u64, _vcpu: usize) -> Result<(), BusError> {
        Ok(())
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn test_device_behaves_like_memory(ops in proptest::collection::vec(mem_op(), 1..200)) {
        let d = TestDevice::new();
        let fresh: Vec<u8> = (0..4096).map(|i| i as u8).collect();
        let mut model = fresh.clone();
        for op in ops {
            match op {
                MemOp::Read { offset, width } => {
                    let r = d.read(offset, width, 0);
                    if valid(offset, width) {
                        let o = offset as usize;
                        let mut b = [0u8; 8];
                        b[..usize::from(width)].copy_from_slice(&model[o..o + usize::from(width)]);
                        prop_assert_eq!(r, Ok(u64::from_le_bytes(b)));
                    } else {
                        prop_assert_eq!(r, Err(BusError));
                    }
                }
                MemOp::Write { offset, width, value } => {
                    let r = d.write(offset, width, value, 0);
                    if valid(offset, width) {
                        prop_assert_eq!(r, Ok(()));
                        let o = offset as usize;
                        let w = usize::from(width);
                        model[o..o + w].copy_from_slice(&value.to_le_bytes()[..w]);
                    } else {
                        prop_assert_eq!(r, Err(BusError));
                    }
                }
                MemOp::Reset => {
                    d.reset();
                    model.clone_from(&fresh);
                }
            }
        }
    }

    /// The bus keeps windows disjoint and routes every address to the one
    /// window holding it, with an offset inside it.
    #[test]
    fn mmio_bus_routes_each_address_to_its_window(
        windows in proptest::collection::vec((0u64..1 << 20, 1u64..0x4000), 1..16),
        probes in proptest::collection::vec(0u64..(1 << 20) + 0x4000, 1..64),
    ) {
        let mut bus = MmioBus::default();
        let mut added: Vec<(u64, u64)> = Vec::new();
        for (base, size) in windows {
            let overlaps = added.iter().any(|&(b, s)| base < b + s && b < base + size);
            let r = bus.add(base, Box::new(Window(size)));
            prop_assert_eq!(r.is_err(), overlaps, "window {:#x}+{:#x}", base, size);
            if !overlaps {
                added.push((base, size));
            }
        }
        let regions = bus.regions();
        prop_assert!(regions.windows(2).all(|w| w[0].base + w[0].size <= w[1].base), "sorted, disjoint");
        for ipa in probes {
            let expect = added.iter().find(|&&(b, s)| ipa >= b && ipa < b + s);
            match (bus.find(ipa), expect) {
                (Some((dev, off)), Some(&(b, s))) => {
                    prop_assert_eq!(off, ipa - b);
                    prop_assert!(off < s);
                    prop_assert_eq!(dev.size(), s);
                    prop_assert_eq!(dev.read(off, 4, 0), Ok(off));
                }
                (None, None) => {}
                (got, want) => prop_assert!(false, "{:#x}: {:?} vs {:?}", ipa, got.map(|g| g.1), want),
            }
        }
    }
}
