//! A virtual PL011 (the guest's console at `0x0900_0000`). Output is collected
//! into lines and handed to a sink (the console multiplexer), so a guest's
//! bytes never block anybody: a line longer than the buffer is cut, never
//! waited on. The register model follows the PL011 TRM (DDI 0183) closely
//! enough for Linux's `amba-pl011` driver and earlycon.

use super::vgic::Vgic;
use super::{BusError, MmioDevice};
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

/// Where finished lines go: (VM name, line without its newline).
pub type Sink = fn(&str, &[u8]);

const LINE: usize = 240;

const DR: u64 = 0x000;
const RSR: u64 = 0x004;
const FR: u64 = 0x018;
const IBRD: u64 = 0x024;
const FBRD: u64 = 0x028;
const LCR_H: u64 = 0x02c;
const CR: u64 = 0x030;
const IFLS: u64 = 0x034;
const IMSC: u64 = 0x038;
const RIS: u64 = 0x03c;
const MIS: u64 = 0x040;
const ICR: u64 = 0x044;
const DMACR: u64 = 0x048;

const FR_TXFE: u64 = 1 << 7;
const FR_RXFE: u64 = 1 << 4;
const INT_TX: u64 = 1 << 5;

/// PrimeCell peripheral and cell IDs at 0xfe0..0xffc: a PL011 r1p5.
const IDS: [u64; 8] = [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// The line being assembled. Its lock is held while the finished line goes
/// to the sink (which may print it): only this VM's own vCPUs wait on it.
struct Tx {
    line: [u8; LINE],
    len: usize,
    /// A CR came last: dropped if a newline follows, kept otherwise.
    cr: bool,
}

/// Everything else: never held while printing, so console input (and the
/// guest's own reads) never wait for a line to go out.
struct State {
    ibrd: u64,
    fbrd: u64,
    lcr_h: u64,
    cr: u64,
    ifls: u64,
    imsc: u64,
    dmacr: u64,
    rx: [u8; RX],
    rx_len: usize,
    /// Input bytes dropped because the guest did not read them in time.
    pub rx_dropped: u64,
}

const RX: usize = 64;
const INT_RX: u64 = 1 << 4;
const INT_RT: u64 = 1 << 6;

impl State {
    fn ris(&self) -> u64 {
        INT_TX | if self.rx_len > 0 { INT_RX | INT_RT } else { 0 }
    }
    fn level(&self) -> bool {
        self.ris() & self.imsc != 0
    }
}

pub struct VirtualUart {
    vm: String,
    sink: Sink,
    tx: Mutex<Tx>,
    state: Mutex<State>,
    /// The interrupt line, once wired to the VM's vGIC.
    irq: Option<(Arc<Vgic>, u32)>,
    /// FR as the state last left it, written under the state lock: the
    /// guest's polling of FR (every byte it prints) takes no lock.
    fr: AtomicU64,
}

impl VirtualUart {
    pub fn new(vm: &str, sink: Sink) -> Self {
        Self {
            vm: vm.into(),
            sink,
            tx: Mutex::new(Tx {
                line: [0; LINE],
                len: 0,
                cr: false,
            }),
            state: Mutex::new(State {
                ibrd: 0,
                fbrd: 0,
                lcr_h: 0,
                cr: 0x300,
                ifls: 0x12,
                imsc: 0,
                dmacr: 0,
                rx: [0; RX],
                rx_len: 0,
                rx_dropped: 0,
            }),
            irq: None,
            fr: AtomicU64::new(FR_TXFE | FR_RXFE),
        }
    }

    /// Republishes FR after `s.rx_len` changed (the state locked).
    fn publish_fr(&self, s: &State) {
        let fr = FR_TXFE | if s.rx_len == 0 { FR_RXFE } else { 0 };
        self.fr.store(fr, Ordering::Release);
    }

    fn signal(&self, level: bool) {
        if let Some((vgic, intid)) = &self.irq {
            vgic.set_line(*intid, level);
        }
    }

    /// Input from the console multiplexer. Bytes the guest has not read when
    /// the FIFO is full are dropped (and counted), never waited for.
    pub fn push_input(&self, bytes: &[u8]) {
        let level = {
            let mut s = self.state.lock();
            for &b in bytes {
                let n = s.rx_len;
                if let Some(slot) = s.rx.get_mut(n) {
                    *slot = b;
                    s.rx_len += 1;
                } else {
                    s.rx_dropped += 1;
                }
            }
            self.publish_fr(&s);
            s.level()
        };
        self.signal(level);
    }

    /// The VM this console belongs to.
    pub fn vm(&self) -> &str {
        &self.vm
    }

    /// Wires the UART's interrupt output to `intid` of `vgic`.
    pub fn with_irq(mut self, vgic: Arc<Vgic>, intid: u32) -> Self {
        self.irq = Some((vgic, intid));
        self
    }

    /// One byte written to DR: a newline (or a full buffer) hands the line
    /// to the sink, with the TX lock held so this VM's lines keep their order.
    /// A CR right before the newline is part of the line ending; any other
    /// CR is the guest's and kept, to be shown escaped.
    fn put(&self, b: u8) {
        let mut t = self.tx.lock();
        let t = &mut *t;
        match b {
            b'\n' => {
                t.cr = false;
                (self.sink)(&self.vm, t.line.get(..t.len).unwrap_or(&[]));
                t.len = 0;
            }
            b'\r' => {
                if t.cr {
                    self.keep(t, b'\r');
                }
                t.cr = true;
            }
            _ => {
                if core::mem::take(&mut t.cr) {
                    self.keep(t, b'\r');
                }
                self.keep(t, b);
            }
        }
    }

    /// Adds a byte to the line, first handing on a full one.
    fn keep(&self, t: &mut Tx, b: u8) {
        if t.len >= LINE {
            (self.sink)(&self.vm, &t.line);
            t.len = 0;
        }
        if let Some(slot) = t.line.get_mut(t.len) {
            *slot = b;
            t.len += 1;
        }
    }
}

impl MmioDevice for VirtualUart {
    fn name(&self) -> &str {
        "pl011 (virtual)"
    }

    fn size(&self) -> u64 {
        0x1000
    }

    fn read(&self, offset: u64, _width: u8, _vcpu: usize) -> Result<u64, BusError> {
        if offset == FR {
            return Ok(self.fr.load(Ordering::Acquire));
        }
        let mut s = self.state.lock();
        if offset == DR {
            if s.rx_len == 0 {
                return Ok(0);
            }
            let b = s.rx[0];
            let n = s.rx_len;
            s.rx.copy_within(1..n, 0);
            s.rx_len -= 1;
            self.publish_fr(&s);
            let level = s.level();
            drop(s);
            self.signal(level);
            return Ok(u64::from(b));
        }
        Ok(match offset {
            RSR => 0,
            IBRD => s.ibrd,
            FBRD => s.fbrd,
            LCR_H => s.lcr_h,
            CR => s.cr,
            IFLS => s.ifls,
            IMSC => s.imsc,
            // The transmitter is always ready: TX is pending whenever asked.
            RIS => s.ris(),
            MIS => s.ris() & s.imsc,
            DMACR => s.dmacr,
            0xfe0..=0xffc if offset.is_multiple_of(4) => {
                IDS.get(((offset - 0xfe0) / 4) as usize).copied().unwrap_or(0)
            }
            _ => 0,
        })
    }

    fn write(&self, offset: u64, _width: u8, value: u64, _vcpu: usize) -> Result<(), BusError> {
        if offset == DR {
            // Outside the register lock; the interrupt level does not
            // depend on what is sent (the transmitter is always ready).
            self.put(value as u8);
            return Ok(());
        }
        let level = {
            let mut s = self.state.lock();
            self.write_reg(&mut s, offset, value);
            s.level()
        };
        self.signal(level);
        Ok(())
    }

    fn reset(&self) {
        {
            let mut t = self.tx.lock();
            t.len = 0;
            t.cr = false;
        }
        let mut s = self.state.lock();
        s.rx_len = 0;
        self.publish_fr(&s);
        s.imsc = 0;
        s.cr = 0x300;
        drop(s);
        self.signal(false);
    }
}

impl VirtualUart {
    fn write_reg(&self, s: &mut State, offset: u64, value: u64) {
        match offset {
            IBRD => s.ibrd = value & 0xffff,
            FBRD => s.fbrd = value & 0x3f,
            LCR_H => s.lcr_h = value & 0xff,
            CR => s.cr = value & 0xffff,
            IFLS => s.ifls = value & 0x3f,
            IMSC => s.imsc = value & 0x7ff,
            DMACR => s.dmacr = value & 0x7,
            _ => {} // DR goes to `put`; RSR/ICR clear nothing we keep; IDs are read-only.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    static LINES: StdMutex<Vec<(String, Vec<u8>)>> = StdMutex::new(Vec::new());

    fn capture(vm: &str, line: &[u8]) {
        LINES.lock().unwrap().push((vm.into(), line.to_vec()));
    }

    #[test]
    fn lines_reach_the_sink_and_long_lines_are_cut() {
        let u = VirtualUart::new("vmtest", capture);
        for b in b"hi\r\n" {
            u.write(DR, 4, u64::from(*b), 0).unwrap();
        }
        for _ in 0..LINE + 5 {
            u.write(DR, 1, u64::from(b'x'), 0).unwrap();
        }
        u.write(DR, 1, u64::from(b'\n'), 0).unwrap();
        let lines: Vec<_> = LINES
            .lock()
            .unwrap()
            .iter()
            .filter(|(v, _)| v == "vmtest")
            .cloned()
            .collect();
        assert_eq!(lines[0].1, b"hi");
        assert_eq!(lines[1].1.len(), LINE);
        assert_eq!(lines[2].1.len(), 5);
    }

    #[test]
    fn input_is_read_in_order_and_bounded() {
        let u = VirtualUart::new("rx", capture);
        assert_eq!(u.read(FR, 4, 0).unwrap() & FR_RXFE, FR_RXFE);
        u.push_input(b"ok");
        assert_eq!(u.read(FR, 4, 0).unwrap() & FR_RXFE, 0);
        assert_eq!(u.read(RIS, 4, 0).unwrap() & INT_RX, INT_RX);
        assert_eq!(u.read(DR, 4, 0), Ok(u64::from(b'o')));
        assert_eq!(u.read(DR, 4, 0), Ok(u64::from(b'k')));
        assert_eq!(u.read(FR, 4, 0).unwrap() & FR_RXFE, FR_RXFE);
        u.push_input(&[b'x'; RX + 10]);
        assert_eq!(u.state.lock().rx_dropped, 10);
    }

    #[test]
    fn flags_and_ids() {
        let u = VirtualUart::new("ids", capture);
        assert_eq!(u.read(FR, 4, 0), Ok(FR_TXFE | FR_RXFE));
        assert_eq!(u.read(0xfe0, 4, 0), Ok(0x11));
        assert_eq!(u.read(0xffc, 4, 0), Ok(0xb1));
        u.write(IMSC, 4, 0x20, 0).unwrap();
        assert_eq!(u.read(MIS, 4, 0), Ok(0x20));
    }

    #[test]
    fn crlf_ends_a_line_and_other_crs_are_kept() {
        let u = VirtualUart::new("crs", capture);
        for b in b"a\r\n\rb\r\r\nc\rd\n\r" {
            u.write(DR, 1, u64::from(*b), 0).unwrap();
        }
        u.write(DR, 1, u64::from(b'\n'), 0).unwrap();
        let lines: Vec<_> = LINES
            .lock()
            .unwrap()
            .iter()
            .filter(|(v, _)| v == "crs")
            .map(|(_, l)| l.clone())
            .collect();
        assert_eq!(lines, [&b"a"[..], b"\rb\r", b"c\rd", b""]);
    }

    static PROBED: StdMutex<Option<Arc<VirtualUart>>> = StdMutex::new(None);
    static INPUT_FREE: StdMutex<Vec<bool>> = StdMutex::new(Vec::new());

    /// A sink that checks, while the line is being printed, that console
    /// input could get into the UART without waiting.
    fn probe(_: &str, _: &[u8]) {
        if let Some(u) = PROBED.lock().unwrap().as_ref() {
            INPUT_FREE.lock().unwrap().push(u.state.try_lock().is_some());
        }
    }

    #[test]
    fn input_never_waits_for_output_being_printed() {
        let u = Arc::new(VirtualUart::new("probe", probe));
        *PROBED.lock().unwrap() = Some(u.clone());
        for b in b"line\n" {
            u.write(DR, 1, u64::from(*b), 0).unwrap();
        }
        *PROBED.lock().unwrap() = None;
        assert_eq!(*INPUT_FREE.lock().unwrap(), [true]);
        u.push_input(b"k");
        assert_eq!(u.read(DR, 4, 0), Ok(u64::from(b'k')));
    }
}
