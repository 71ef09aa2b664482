//! A bounded queue of console lines waiting for the board UART. VMs put
//! their lines here and never wait for the UART itself; whoever holds the
//! UART drains it. When it is full, new lines are dropped and counted.
//! Pure data structure, tested on the host.

/// Longest VM name kept with a line.
pub const NAME: usize = 24;
/// Longest line kept (the virtual UART cuts longer ones).
pub const LINE: usize = 240;
/// Lines that can wait.
pub const SLOTS: usize = 64;

#[derive(Clone, Copy)]
struct Slot {
    name: [u8; NAME],
    name_len: u8,
    line: [u8; LINE],
    len: u8,
}

const EMPTY: Slot = Slot {
    name: [0; NAME],
    name_len: 0,
    line: [0; LINE],
    len: 0,
};

/// A line taken out of the queue.
pub struct Line {
    slot: Slot,
}

impl Line {
    pub fn vm(&self) -> &[u8] {
        &self.slot.name[..usize::from(self.slot.name_len)]
    }
    pub fn text(&self) -> &[u8] {
        &self.slot.line[..usize::from(self.slot.len)]
    }
}

/// The queue: a ring of [`SLOTS`] lines.
pub struct OutBuf {
    slots: [Slot; SLOTS],
    head: usize,
    len: usize,
    /// Lines dropped since the last [`OutBuf::take_dropped`].
    dropped: u64,
}

impl OutBuf {
    pub const fn new() -> Self {
        Self {
            slots: [EMPTY; SLOTS],
            head: 0,
            len: 0,
            dropped: 0,
        }
    }

    /// Queues a line (both cut to size); drops and counts it when full.
    pub fn push(&mut self, vm: &str, line: &[u8]) {
        if self.len == SLOTS {
            self.dropped += 1;
            return;
        }
        let mut s = EMPTY;
        let n = vm.len().min(NAME);
        s.name[..n].copy_from_slice(&vm.as_bytes()[..n]);
        s.name_len = n as u8;
        let l = line.len().min(LINE);
        s.line[..l].copy_from_slice(&line[..l]);
        s.len = l as u8;
        self.slots[(self.head + self.len) % SLOTS] = s;
        self.len += 1;
    }

    /// The oldest line, if any.
    pub fn pop(&mut self) -> Option<Line> {
        if self.len == 0 {
            return None;
        }
        let slot = self.slots[self.head];
        self.head = (self.head + 1) % SLOTS;
        self.len -= 1;
        Some(Line { slot })
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Lines dropped since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        core::mem::take(&mut self.dropped)
    }
}

impl Default for OutBuf {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_order_and_cuts() {
        let mut b = OutBuf::new();
        b.push("a-very-long-vm-name-that-goes-on", b"one");
        b.push("b", &[b'x'; 300]);
        let l = b.pop().unwrap();
        assert_eq!(l.vm().len(), NAME);
        assert_eq!(l.text(), b"one");
        assert_eq!(b.pop().unwrap().text().len(), LINE);
        assert!(b.pop().is_none());
    }

    #[test]
    fn full_drops_and_counts() {
        let mut b = OutBuf::new();
        for i in 0..SLOTS + 5 {
            b.push("v", format!("{i}").as_bytes());
        }
        assert_eq!(b.take_dropped(), 5);
        assert_eq!(b.take_dropped(), 0);
        assert_eq!(b.pop().unwrap().text(), b"0");
        b.push("v", b"again");
        let mut last = None;
        while let Some(l) = b.pop() {
            last = Some(l.text().to_vec());
        }
        assert_eq!(last.unwrap(), b"again");
    }
}
