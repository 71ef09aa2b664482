//! The lines the test harness reads: `PASS name[: detail]`,
//! `FAIL name: why`, and one `RESULT guest: N passed, M failed` at the end.

use crate::println;
use core::fmt::Display;

/// Prints `PASS {name}`.
pub fn pass(name: impl Display) {
    println!("PASS {name}");
}

/// Prints `FAIL {name}: {why}`.
pub fn fail(name: impl Display, why: impl Display) {
    println!("FAIL {name}: {why}");
}

/// Counts checks for the `RESULT` line.
pub struct Checker {
    guest: &'static str,
    passed: u32,
    failed: u32,
}

impl Checker {
    /// A checker for the guest named `guest` (the name in `RESULT guest: …`).
    pub const fn new(guest: &'static str) -> Self {
        Checker {
            guest,
            passed: 0,
            failed: 0,
        }
    }

    /// Prints `PASS {name}: {detail}` if `ok`, else `FAIL {name}: {detail}`;
    /// returns `ok`.
    pub fn check(&mut self, name: impl Display, ok: bool, detail: impl Display) -> bool {
        if ok {
            self.passed += 1;
            println!("PASS {name}: {detail}");
        } else {
            self.failed += 1;
            fail(name, detail);
        }
        ok
    }

    /// Counts and prints a pass without detail.
    pub fn pass(&mut self, name: impl Display) {
        self.passed += 1;
        pass(name);
    }

    /// Counts and prints a failure.
    pub fn fail(&mut self, name: impl Display, why: impl Display) {
        self.failed += 1;
        fail(name, why);
    }

    /// Prints `RESULT {guest}: N passed, M failed`; true if nothing failed.
    pub fn finish(&self) -> bool {
        println!(
            "RESULT {}: {} passed, {} failed",
            self.guest, self.passed, self.failed
        );
        self.failed == 0
    }
}
