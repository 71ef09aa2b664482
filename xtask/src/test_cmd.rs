//! `cargo xtask test`: host unit tests, then the image build, then the QEMU scenarios;
//! ends with `N passed, N failed` and fails if anything did.

use crate::runner::{self, Outcome};
use crate::{host_tools, images, paths, qemu, scenarios};
use anyhow::{bail, Result};
use std::process::Command;
use std::time::Instant;

pub const HOST_TESTS: &str = "host-unit-tests";
/// The lints, warnings as errors: the hypervisor for its target (where the
/// no-panic lints of vm/, vdev/ and the decoders bite) and the host workspace.
pub const CLIPPY: &str = "clippy";
const CLIPPY_RUNS: &[&[&str]] = &[
    &[
        "clippy",
        "-p",
        "tessera",
        "--target",
        paths::TARGET,
        "--",
        "-D",
        "warnings",
    ],
    &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
];

pub struct Options {
    /// Only tests whose name contains this.
    pub filter: Option<String>,
    /// QEMU instances at a time.
    pub jobs: usize,
    /// Skip the host steps: `cargo test --workspace` and clippy.
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
    let lint = !opts.no_host && selected(CLIPPY);
    if !host && !lint && scenarios.is_empty() {
        bail!(
            "no test matches the filter {:?}",
            opts.filter.as_deref().unwrap_or("")
        );
    }

    let mut outcomes = Vec::new();
    if host {
        let outcome = cargo_steps(HOST_TESTS, &[&["test", "--workspace"]])?;
        outcome.print();
        outcomes.push(outcome);
    }
    if lint {
        let outcome = cargo_steps(CLIPPY, CLIPPY_RUNS)?;
        outcome.print();
        outcomes.push(outcome);
    }
    if !scenarios.is_empty() {
        // What the scenarios need from the host, before anything is built.
        let debian = scenarios
            .iter()
            .any(|s| host_tools::needs_debian(s.config.map(|c| paths::root().join(c)).as_deref(), s.board));
        if debian {
            host_tools::ensure_debian_fetch()?;
        }
        let qemu = qemu::ensure_installed()?;
        if let Some(v) = qemu::installed_version(&qemu).filter(|v| *v < (10, 0)) {
            eprintln!(
                "xtask: warning: QEMU {}.{} is older than the 10.0 some board models need; \
                 to run their scenarios: {}",
                v.0,
                v.1,
                host_tools::qemu_fix("10.0")
            );
        }
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

/// Runs `cargo <args>` for each of `runs`, in order, as one test named
/// `name`; the output is shown only for the first run that fails.
fn cargo_steps(name: &str, runs: &[&[&str]]) -> Result<Outcome> {
    let start = Instant::now();
    for args in runs {
        println!("running {name}: cargo {}", args.join(" "));
        let out = Command::new(paths::cargo())
            .current_dir(paths::root())
            .args(*args)
            .output()?;
        if !out.status.success() {
            let details = [&out.stdout, &out.stderr]
                .into_iter()
                .flat_map(|o| {
                    String::from_utf8_lossy(o)
                        .lines()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect();
            return Ok(Outcome {
                name: name.to_owned(),
                duration: start.elapsed(),
                failure: Some(format!("cargo {}: {}", args.join(" "), out.status)),
                details,
                skipped: None,
            });
        }
    }
    Ok(Outcome {
        name: name.to_owned(),
        duration: start.elapsed(),
        failure: None,
        details: Vec::new(),
        skipped: None,
    })
}
