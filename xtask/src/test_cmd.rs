//! `cargo xtask test`: host unit tests, then the image build, then the QEMU scenarios;
//! ends with `N passed, N failed` and fails if anything did.

use crate::runner::{self, Outcome};
use crate::{images, paths, qemu, scenarios};
use anyhow::{bail, Result};
use std::process::Command;
use std::time::Instant;

pub const HOST_TESTS: &str = "host-unit-tests";

pub struct Options {
    /// Only tests whose name contains this.
    pub filter: Option<String>,
    /// QEMU instances at a time.
    pub jobs: usize,
    /// Skip `cargo test --workspace` on the host.
    pub no_host: bool,
}

/// Runs the selected tests; returns whether all passed.
pub fn test(opts: &Options) -> Result<bool> {
    let selected = |name: &str| opts.filter.as_deref().is_none_or(|f| name.contains(f));
    let scenarios: Vec<_> = scenarios::all()
        .into_iter()
        .filter(|s| selected(s.name))
        .collect();
    if opts.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let host = !opts.no_host && selected(HOST_TESTS);
    if !host && scenarios.is_empty() {
        bail!(
            "no test matches the filter {:?}",
            opts.filter.as_deref().unwrap_or("")
        );
    }

    let mut outcomes = Vec::new();
    if host {
        let outcome = host_unit_tests()?;
        outcome.print();
        outcomes.push(outcome);
    }
    if !scenarios.is_empty() {
        let qemu = qemu::ensure_installed()?;
        let built = images::build(false)?;
        println!(
            "running {} QEMU scenario(s), {} at a time",
            scenarios.len(),
            opts.jobs
        );
        outcomes.extend(runner::run_all(&scenarios, opts.jobs, &qemu, &built));
    }

    let passed = outcomes.iter().filter(|o| o.passed()).count();
    let skipped = outcomes.iter().filter(|o| o.skipped.is_some()).count();
    if skipped > 0 {
        println!("{skipped} skipped (see the SKIP lines: what this host's QEMU cannot run)");
    }
    let failed = outcomes.len() - passed - skipped;
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// `cargo test --workspace` for the host; its output is shown only if it fails.
fn host_unit_tests() -> Result<Outcome> {
    println!("running {HOST_TESTS}: cargo test --workspace");
    let start = Instant::now();
    let out = Command::new(paths::cargo())
        .current_dir(paths::root())
        .args(["test", "--workspace"])
        .output()?;
    let failure = (!out.status.success()).then(|| format!("cargo test --workspace: {}", out.status));
    let details = if failure.is_some() {
        [&out.stdout, &out.stderr]
            .into_iter()
            .flat_map(|o| {
                String::from_utf8_lossy(o)
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(Outcome {
        name: HOST_TESTS.to_owned(),
        duration: start.elapsed(),
        failure,
        details,
        skipped: None,
    })
}
