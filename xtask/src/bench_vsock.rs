//! `cargo xtask bench`'s vsock row (issue 12): stream throughput over the
//! vsock link between two Linux VMs (32 MiB from `dd` through `socat`,
//! tests/configs/intervm_vsock_bench.toml) next to the same over vsock
//! loopback (CID 1, `vsock_loopback`) inside one VM, the ceiling of the
//! guest's own vsock stack on this CPU. Times are the guest's clock under
//! `-icount shift=0,sleep=off`, like the net rows of
//! [`crate::bench_links`].

use crate::bench::{capture, tessera_command};
use crate::bench_links::{figure, TCP_FRACTION};
use crate::images::Built;
use crate::{board, paths};
use anyhow::Result;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

pub const CONFIG: &str = "tests/configs/intervm_vsock_bench.toml";
const DONE: &str = "TT bench done";
const TIMEOUT: Duration = Duration::from_secs(500);

/// The line the bench prints for the figures (MB/s), and their ratio.
pub fn describe(link: Option<f64>, lo: Option<f64>) -> (String, Option<f64>) {
    match (link, lo) {
        (Some(k), Some(l)) if l > 0.0 => (
            format!(
                "  vsock stream (32 MiB, socat): link {k:.1} MB/s, loopback {l:.1} MB/s, ratio {:.2}, target >= {TCP_FRACTION}: {}",
                k / l,
                if k >= l * TCP_FRACTION { "met" } else { "MISSED" }
            ),
            Some(k / l),
        ),
        _ => ("  vsock: no figures".to_owned(), None),
    }
}

pub fn run(qemu: &Path, built: &Built, logs: &Path) -> Result<Value> {
    let img = board::build_config_image(&paths::root().join(CONFIG), built, None)?;
    let log = logs.join("links-vsock.log");
    let c = capture(tessera_command(qemu, &img)?, &log, DONE, TIMEOUT)?;
    let (link, lo) = (
        figure(&c.lines, "vsock_link_mbs"),
        figure(&c.lines, "vsock_lo_mbs"),
    );
    let (line, ratio) = describe(link, lo);
    if ratio.is_some() {
        println!("{line}");
    } else {
        println!("{line} (log in {})", paths::display(&log));
    }
    Ok(json!({
        "config": CONFIG, "vsock_link_mbs": link, "vsock_loopback_mbs": lo, "ratio": ratio,
        "target": format!(">= {TCP_FRACTION}x loopback"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_gives_the_ratio_and_the_verdict() {
        let (l, r) = describe(Some(30.0), Some(40.0));
        assert_eq!(r, Some(0.75));
        assert!(
            l.contains("link 30.0 MB/s, loopback 40.0 MB/s, ratio 0.75") && l.ends_with("met"),
            "{l}"
        );
        assert!(describe(Some(10.0), Some(40.0)).0.ends_with("MISSED"));
        assert_eq!(describe(None, Some(1.0)).1, None);
    }
}
