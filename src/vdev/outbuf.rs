//! Console lines of VMs waiting for the board UART: one bounded queue per
//! VM, so a VM that prints faster than the UART fills and overflows only its
//! own queue (the excess dropped and counted for that VM alone).
//!
//! Who prints what: a CPU that queues a line and finds the UART free takes a
//! [`Turn`], which allows at most [`OWN`] lines of its own VM and [`SHARE`]
//! lines of other VMs, these picked round robin. Each VM's CPU thus pays for
//! its own output; the small share makes sure that a line queued while
//! another CPU held the UART is printed by the next one to print, even when
//! its VM prints nothing more, and a flooder that is the only one printing
//! still prints its neighbours' lines one for one with its own. No CPU ever
//! prints more than `OWN + SHARE` lines per line it queued. A CPU never
//! waits for the UART either: when its turn ends with lines of its own VM
//! still queued (the UART was busy, or the budget spent), it comes back for
//! them shortly ([`Turn::come_back`]; the console arms the hypervisor timer
//! of that CPU), so a VM that goes quiet right after a burst still sees
//! every line printed, on its own CPU's time.
//!
//! Pure data structure, tested on the host.

use alloc::vec::Vec;

/// Longest VM name kept with a line.
pub const NAME: usize = 24;
/// Longest line kept (the virtual UART cuts longer ones).
pub const LINE: usize = 240;
/// Lines one VM can have waiting.
pub const SLOTS: usize = 16;
/// Lines of its own VM one turn prints: more than the one it queued, so a
/// backlog left while the UART was busy shrinks.
pub const OWN: usize = 4;
/// Lines of other VMs one turn prints.
pub const SHARE: usize = 1;
/// A VM's dropped lines are reported after this many of its lines printed
/// (or as soon as its queue is empty), not after each one.
const REPORT_EVERY: u32 = 16;

/// One VM's name, as kept with its lines.
#[derive(Clone, Copy)]
pub struct Name {
    bytes: [u8; NAME],
    len: u8,
}

impl Name {
    fn new(vm: &str) -> Self {
        let mut bytes = [0; NAME];
        let n = vm.len().min(NAME);
        for (d, s) in bytes.iter_mut().zip(vm.as_bytes()) {
            *d = *s;
        }
        Self { bytes, len: n as u8 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// A line taken out of a queue, and what its VM lost so far.
pub struct Line {
    name: Name,
    text: [u8; LINE],
    len: u8,
    /// Lines of this VM dropped and not yet reported: say so after this one.
    pub dropped: u64,
}

impl Line {
    pub fn vm(&self) -> &[u8] {
        self.name.as_bytes()
    }
    pub fn text(&self) -> &[u8] {
        self.text.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// One VM's waiting lines, oldest first.
pub struct Queue {
    name: Name,
    /// [`SLOTS`] lines on the heap: the queue itself stays small, so
    /// registering a console moves a few words, not 4 KiB, each time the
    /// queue is built, locked and pushed.
    lines: Vec<[u8; LINE]>,
    lens: [u8; SLOTS],
    head: usize,
    len: usize,
    /// Lines dropped and not yet reported.
    dropped: u64,
    /// Lines printed since the last report.
    since_report: u32,
}

impl Queue {
    /// An empty queue for VM `vm` (the name cut to [`NAME`] bytes).
    pub fn new(vm: &str) -> Self {
        Self {
            name: Name::new(vm),
            lines: alloc::vec![[0; LINE]; SLOTS],
            lens: [0; SLOTS],
            head: 0,
            len: 0,
            dropped: 0,
            since_report: 0,
        }
    }

    /// Whether this is the queue of VM `vm`.
    pub fn is_for(&self, vm: &str) -> bool {
        self.name.as_bytes() == Name::new(vm).as_bytes()
    }

    /// Queues a line (cut to [`LINE`]); drops and counts it when full.
    pub fn push(&mut self, line: &[u8]) {
        if self.len == SLOTS {
            self.dropped += 1;
            return;
        }
        let at = (self.head + self.len) % SLOTS;
        let (Some(dst), Some(len)) = (self.lines.get_mut(at), self.lens.get_mut(at)) else {
            return;
        };
        let n = line.len().min(LINE);
        for (d, s) in dst.iter_mut().zip(line) {
            *d = *s;
        }
        *len = n as u8;
        self.len += 1;
    }

    /// The oldest line, with the drop count due to be reported after it.
    pub fn pop(&mut self) -> Option<Line> {
        if self.len == 0 {
            return None;
        }
        let text = *self.lines.get(self.head)?;
        let len = *self.lens.get(self.head)?;
        self.head = (self.head + 1) % SLOTS;
        self.len -= 1;
        self.since_report = self.since_report.saturating_add(1);
        let mut dropped = 0;
        if self.dropped > 0 && (self.len == 0 || self.since_report >= REPORT_EVERY) {
            dropped = core::mem::take(&mut self.dropped);
            self.since_report = 0;
        }
        Some(Line {
            name: self.name,
            text,
            len,
            dropped,
        })
    }

    /// Lines waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What one print call may still print. The queues are numbered `0..n`;
/// `pop(i)` takes the oldest line of queue `i`, `waiting(i)` says whether it
/// has one. The caller keeps them behind whatever locks it needs and the
/// round-robin `cursor` with them (it holds the UART while it uses a turn).
#[derive(Clone, Copy, Debug)]
pub struct Turn {
    /// The queue of the VM whose line started the call (none for the
    /// hypervisor's own log lines).
    me: Option<usize>,
    own: usize,
    share: usize,
}

impl Turn {
    /// A turn for the VM with queue `me`, or for the hypervisor (`None`:
    /// only the share of other VMs' lines).
    pub const fn new(me: Option<usize>) -> Self {
        Self {
            me,
            own: if me.is_some() { OWN } else { 0 },
            share: SHARE,
        }
    }

    /// The next line this turn may print, and charges it: its own VM's
    /// oldest first, then one of the other VMs', round robin from `cursor`
    /// (left just past the queue served).
    pub fn next(
        &mut self,
        cursor: &mut usize,
        n: usize,
        mut pop: impl FnMut(usize) -> Option<Line>,
    ) -> Option<Line> {
        if self.own > 0 {
            if let Some(line) = self.me.and_then(&mut pop) {
                self.own -= 1;
                return Some(line);
            }
        }
        if self.share == 0 || n == 0 {
            return None;
        }
        for k in 0..n {
            let i = (*cursor + k) % n;
            if Some(i) == self.me {
                continue;
            }
            if let Some(line) = pop(i) {
                *cursor = (i + 1) % n;
                self.share -= 1;
                return Some(line);
            }
        }
        None
    }

    /// After this turn: whether lines of its own VM are still queued, so
    /// its CPU must come back for them. Lines of other VMs are their own
    /// CPUs' to come back for, and the hypervisor's turn (no VM) leaves
    /// none of its own.
    pub fn come_back(&self, waiting: impl Fn(usize) -> bool) -> bool {
        self.me.is_some_and(waiting)
    }

    /// Whether [`Turn::next`] would give a line.
    pub fn may_print(&self, n: usize, waiting: impl Fn(usize) -> bool) -> bool {
        let own = self.own > 0 && self.me.is_some_and(&waiting);
        let other = self.share > 0 && (0..n).any(|i| Some(i) != self.me && waiting(i));
        own || other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The queues of all VMs, found by name as the console finds them.
    #[derive(Default)]
    struct OutBuf {
        queues: Vec<Queue>,
        cursor: usize,
    }

    impl OutBuf {
        fn new() -> Self {
            Self::default()
        }

        fn push(&mut self, vm: &str, line: &[u8]) -> usize {
            let i = match self.queues.iter().position(|q| q.is_for(vm)) {
                Some(i) => i,
                None => {
                    self.queues.push(Queue::new(vm));
                    self.queues.len() - 1
                }
            };
            self.queues[i].push(line);
            i
        }

        fn next(&mut self, turn: &mut Turn) -> Option<Line> {
            let queues = &mut self.queues;
            turn.next(&mut self.cursor, queues.len(), |i| queues.get_mut(i)?.pop())
        }

        fn has_work(&self, turn: &Turn) -> bool {
            turn.may_print(self.queues.len(), |i| !self.queues[i].is_empty())
        }

        fn len(&self) -> usize {
            self.queues.iter().map(Queue::len).sum()
        }

        fn is_empty(&self) -> bool {
            self.len() == 0
        }
    }

    fn text(l: &Line) -> String {
        String::from_utf8(l.text().to_vec()).unwrap()
    }

    fn vm(l: &Line) -> String {
        String::from_utf8(l.vm().to_vec()).unwrap()
    }

    /// Everything `turn` prints, as "vm:text".
    fn run(b: &mut OutBuf, mut turn: Turn) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(l) = b.next(&mut turn) {
            out.push(format!("{}:{}", vm(&l), text(&l)));
        }
        out
    }

    #[test]
    fn lines_and_names_are_cut() {
        let mut b = OutBuf::new();
        let me = b.push("a-very-long-vm-name-that-goes-on", b"one");
        b.push("a-very-long-vm-name-that-goes-on", &[b'x'; 300]);
        let mut t = Turn::new(Some(me));
        let l = b.next(&mut t).unwrap();
        assert_eq!(l.vm().len(), NAME);
        assert_eq!(l.text(), b"one");
        assert_eq!(b.next(&mut t).unwrap().text().len(), LINE);
        assert!(b.next(&mut t).is_none());
        assert!(b.is_empty());
    }

    #[test]
    fn own_lines_come_first_in_order_and_are_bounded() {
        let mut b = OutBuf::new();
        for i in 0..OWN + 2 {
            b.push("a", format!("{i}").as_bytes());
        }
        let me = b.push("a", b"last");
        let got = run(&mut b, Turn::new(Some(me)));
        let want: Vec<_> = (0..OWN).map(|i| format!("a:{i}")).collect();
        assert_eq!(got, want);
        assert_eq!(b.len(), 3);
        let got = run(&mut b, Turn::new(Some(me)));
        assert_eq!(got, ["a:4", "a:5", "a:last"]);
    }

    #[test]
    fn a_turn_prints_at_most_its_share_of_other_vms() {
        let mut b = OutBuf::new();
        for i in 0..SLOTS {
            b.push("flood", format!("f{i}").as_bytes());
        }
        let me = b.push("quiet", b"q0");
        // The quiet VM's turn: its own line, then the share, no more.
        assert_eq!(run(&mut b, Turn::new(Some(me))), ["quiet:q0", "flood:f0"]);
        // The hypervisor's turn: only the share.
        assert_eq!(run(&mut b, Turn::new(None)), ["flood:f1"]);
        assert_eq!(b.len(), SLOTS - 2);
    }

    #[test]
    fn the_share_goes_round_robin() {
        let mut b = OutBuf::new();
        for v in ["a", "b", "c"] {
            b.push(v, b"1");
            b.push(v, b"2");
        }
        let me = b.push("d", b"x");
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.extend(run(&mut b, Turn::new(Some(me))));
        }
        assert_eq!(seen, ["d:x", "a:1", "b:1", "c:1", "a:2", "b:2", "c:2"]);
    }

    #[test]
    fn a_full_queue_drops_for_its_vm_only_and_reports_once() {
        let mut b = OutBuf::new();
        let quiet = b.push("quiet", b"q0");
        let flood = b.push("flood", b"f0");
        for i in 1..SLOTS + 10 {
            b.push("flood", format!("f{i}").as_bytes());
        }
        b.push("quiet", b"q1");
        // Quiet lost nothing and is told nothing.
        let mut t = Turn::new(Some(quiet));
        for want in ["q0", "q1"] {
            let l = b.next(&mut t).unwrap();
            assert_eq!((text(&l).as_str(), l.dropped), (want, 0));
        }
        // Flood lost exactly its excess: reported once, with its last line.
        let mut dropped = Vec::new();
        let mut printed = 0;
        while !b.is_empty() {
            let mut t = Turn::new(Some(flood));
            while let Some(l) = b.next(&mut t) {
                assert_eq!(vm(&l), "flood");
                printed += 1;
                if l.dropped > 0 {
                    dropped.push((printed, l.dropped));
                }
            }
        }
        assert_eq!(printed, SLOTS);
        assert_eq!(dropped, [(SLOTS, 10)]);
    }

    #[test]
    fn drops_in_a_long_flood_are_reported_now_and_then() {
        let mut b = OutBuf::new();
        let flood = b.push("flood", b"start");
        let mut reports = 0;
        let mut total = 0;
        for round in 0..100 {
            // Faster than the UART: five lines queued per turn of four.
            for i in 0..5 {
                b.push("flood", format!("{round}.{i}").as_bytes());
            }
            let mut t = Turn::new(Some(flood));
            while let Some(l) = b.next(&mut t) {
                if l.dropped > 0 {
                    reports += 1;
                    total += l.dropped;
                }
            }
        }
        assert!((20..=30).contains(&reports), "{reports} reports");
        assert!(total > 0);
    }

    #[test]
    fn a_flooder_printing_alone_still_prints_the_bystander() {
        // The bystander's lines were all queued while the UART was busy;
        // only the flooder prints from then on. Every bystander line comes
        // out, one per flooder turn, and none is dropped.
        let mut b = OutBuf::new();
        let flood = b.push("flood", b"f");
        for i in 0..SLOTS {
            b.push("bystander", format!("b{i}").as_bytes());
        }
        let mut seen = Vec::new();
        for i in 0..SLOTS {
            b.push("flood", format!("f{i}").as_bytes());
            let mut t = Turn::new(Some(flood));
            while let Some(l) = b.next(&mut t) {
                assert_eq!(l.dropped, 0);
                if vm(&l) == "bystander" {
                    seen.push(text(&l));
                }
            }
        }
        let want: Vec<_> = (0..SLOTS).map(|i| format!("b{i}")).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn one_flooder_cannot_starve_another_vm() {
        // Three VMs; "flood" queues a line on every step and takes every
        // turn it can, "rare" prints one line every 10 steps and only ever
        // prints in its own turn half of the time (otherwise the UART was
        // busy and the line waits). Every rare line is printed within one
        // step, none dropped, and no turn prints more than OWN + SHARE.
        let mut b = OutBuf::new();
        let flood = b.push("flood", b"-");
        let rare = b.push("rare", b"r-");
        let mut waiting = 1u32;
        let mut rare_printed = 0;
        for step in 0..1000 {
            b.push("flood", b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
            b.push("other", b"o");
            if step % 10 == 0 {
                b.push("rare", format!("r{step}").as_bytes());
                waiting += 1;
                if step % 20 == 0 {
                    let mut t = Turn::new(Some(rare));
                    let mut n = 0;
                    while let Some(l) = b.next(&mut t) {
                        n += 1;
                        if vm(&l) == "rare" {
                            rare_printed += 1;
                            waiting -= 1;
                            assert_eq!(l.dropped, 0);
                        }
                    }
                    assert!(n <= OWN + SHARE);
                }
            }
            for _ in 0..2 {
                let mut t = Turn::new(Some(flood));
                let mut n = 0;
                while let Some(l) = b.next(&mut t) {
                    n += 1;
                    if vm(&l) == "rare" {
                        rare_printed += 1;
                        waiting -= 1;
                        assert_eq!(l.dropped, 0);
                    }
                }
                assert!(n <= OWN + SHARE);
            }
            assert_eq!(waiting, 0, "step {step}");
        }
        assert_eq!(rare_printed, 101);
    }

    #[test]
    fn a_line_that_found_the_uart_busy_brings_its_cpu_back() {
        let mut b = OutBuf::new();
        let me = b.push("quiet", b"q0");
        // The UART was held elsewhere: the turn printed nothing.
        let turn = Turn::new(Some(me));
        assert!(turn.come_back(|i| !b.queues[i].is_empty()));
        // Coming back, it prints its line and need not come again.
        let mut again = Turn::new(Some(me));
        assert_eq!(run_turn(&mut b, &mut again), ["quiet:q0"]);
        assert!(!again.come_back(|i| !b.queues[i].is_empty()));
    }

    #[test]
    fn a_burst_beyond_the_budget_brings_its_cpu_back_until_it_is_out() {
        let mut b = OutBuf::new();
        let mut me = 0;
        for i in 0..SLOTS {
            me = b.push("burst", format!("{i}").as_bytes());
        }
        let mut printed = Vec::new();
        let mut visits = 0;
        loop {
            let mut turn = Turn::new(Some(me));
            printed.extend(run_turn(&mut b, &mut turn));
            visits += 1;
            if !turn.come_back(|i| !b.queues[i].is_empty()) {
                break;
            }
            assert!(visits < SLOTS, "never done");
        }
        let want: Vec<_> = (0..SLOTS).map(|i| format!("burst:{i}")).collect();
        assert_eq!(printed, want);
        assert_eq!(visits, SLOTS.div_ceil(OWN));
    }

    #[test]
    fn only_its_own_lines_bring_a_cpu_back() {
        let mut b = OutBuf::new();
        let me = b.push("quiet", b"q0");
        for i in 0..SLOTS {
            b.push("flood", format!("f{i}").as_bytes());
        }
        let mut turn = Turn::new(Some(me));
        assert_eq!(run_turn(&mut b, &mut turn), ["quiet:q0", "flood:f0"]);
        // The flooder's lines are left, but they are the flooder's CPU's.
        assert!(!b.is_empty());
        assert!(!turn.come_back(|i| !b.queues[i].is_empty()));
        // Nor does the hypervisor's own turn ever come back.
        let mut hyp = Turn::new(None);
        run_turn(&mut b, &mut hyp);
        assert!(!hyp.come_back(|i| !b.queues[i].is_empty()));
    }

    /// Like [`run`], keeping the turn for [`Turn::come_back`].
    fn run_turn(b: &mut OutBuf, turn: &mut Turn) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(l) = b.next(turn) {
            out.push(format!("{}:{}", vm(&l), text(&l)));
        }
        out
    }

    #[test]
    fn has_work_matches_next() {
        let mut b = OutBuf::new();
        let a = b.push("a", b"1");
        assert!(b.has_work(&Turn::new(Some(a))));
        assert!(b.has_work(&Turn::new(None)));
        assert!(b.next(&mut Turn::new(Some(a))).is_some());
        assert!(!b.has_work(&Turn::new(Some(a))));
        assert!(!b.has_work(&Turn::new(None)));
        b.push("a", b"2");
        b.push("a", b"3");
        let c = b.push("c", b"1");
        let mut t = Turn::new(Some(c));
        assert!(b.next(&mut t).is_some()); // c's own
        assert!(b.next(&mut t).is_some()); // a's, the share
        assert!(!b.has_work(&t));
        assert!(b.next(&mut t).is_none());
        assert!(b.has_work(&Turn::new(Some(a))));
    }
}
