//! The console multiplexer's input side: which VM the keyboard talks to.
//! Ctrl-A pressed three times in a row moves the focus to the next VM (as
//! Xen's console does); anything else goes to the VM that has the focus.
//! Pure logic, so it is tested on the host.

/// Ctrl-A.
pub const ESCAPE: u8 = 0x01;
const PRESSES: u8 = 3;

/// What to do with the bytes typed so far.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Input {
    /// Give these bytes (1 to 3) to the focused VM.
    Deliver { vm: usize, bytes: [u8; 3], len: u8 },
    /// The focus moved to `vm`: announce it.
    Focus { vm: usize },
    /// Held back: maybe the start of the escape.
    Held,
}

/// Focus state over `count` VMs with a console.
#[derive(Debug)]
pub struct Mux {
    count: usize,
    focus: usize,
    escapes: u8,
}

impl Mux {
    pub const fn new(count: usize) -> Self {
        Self {
            count,
            focus: 0,
            escapes: 0,
        }
    }

    pub fn focus(&self) -> usize {
        self.focus
    }

    /// Feeds one typed byte.
    pub fn feed(&mut self, b: u8) -> Input {
        if self.count == 0 {
            return Input::Held;
        }
        if b == ESCAPE {
            self.escapes += 1;
            if self.escapes == PRESSES {
                self.escapes = 0;
                self.focus = (self.focus + 1) % self.count;
                return Input::Focus { vm: self.focus };
            }
            return Input::Held;
        }
        // Ctrl-As that did not make an escape are passed on, then the byte.
        let mut bytes = [ESCAPE; 3];
        let held = self.escapes as usize;
        if let Some(slot) = bytes.get_mut(held) {
            *slot = b;
        }
        self.escapes = 0;
        Input::Deliver {
            vm: self.focus,
            bytes,
            len: held as u8 + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_goes_to_the_focused_vm() {
        let mut m = Mux::new(3);
        assert_eq!(
            m.feed(b'a'),
            Input::Deliver {
                vm: 0,
                bytes: [b'a', 1, 1],
                len: 1
            }
        );
    }

    #[test]
    fn three_ctrl_a_switch_focus_and_wrap() {
        let mut m = Mux::new(2);
        assert_eq!(m.feed(ESCAPE), Input::Held);
        assert_eq!(m.feed(ESCAPE), Input::Held);
        assert_eq!(m.feed(ESCAPE), Input::Focus { vm: 1 });
        assert_eq!(
            m.feed(b'x'),
            Input::Deliver {
                vm: 1,
                bytes: [b'x', 1, 1],
                len: 1
            }
        );
        for _ in 0..2 {
            m.feed(ESCAPE);
        }
        assert_eq!(m.feed(ESCAPE), Input::Focus { vm: 0 });
    }

    #[test]
    fn fewer_ctrl_a_are_passed_through() {
        let mut m = Mux::new(2);
        m.feed(ESCAPE);
        m.feed(ESCAPE);
        assert_eq!(
            m.feed(b'q'),
            Input::Deliver {
                vm: 0,
                bytes: [ESCAPE, ESCAPE, b'q'],
                len: 3
            }
        );
        assert_eq!(m.focus(), 0);
    }

    #[test]
    fn no_consoles_no_delivery() {
        let mut m = Mux::new(0);
        assert_eq!(m.feed(b'a'), Input::Held);
    }
}
