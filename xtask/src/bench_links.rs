//! `cargo xtask bench` rows of the links between VMs (issue 12), under the
//! same `-icount shift=0,sleep=off` as the other rows:
//!
//! - `doorbell`: a shmem doorbell ring, from the write to the peer VM's IRQ
//!   vector (tests/configs/intervm_shmem.toml), next to the `ipi` row (an
//!   SGI between two vCPUs of one VM, measured the same way): the floor for
//!   an interrupt from one CPU to another under the hypervisor; and
//!   `doorbell_rtt`, ring to the answer's wake-up.
//! - Linux on a net link (tests/configs/intervm_bench.toml): ping round trip
//!   to the peer against ping of 127.0.0.1 inside the VM, and TCP throughput
//!   (iperf3, 32 MiB in 128 KiB writes, the receiver's figure) to the peer
//!   against loopback inside the VM, the ceiling of the guest's own stack on
//!   this CPU. Times are the guest's clock, which under icount counts
//!   instructions of every CPU, so both sides of either transfer are paid
//!   for. Both VMs' CRNGs are made ready first (xtask/src/guest_links.rs:
//!   without an entropy source every syscall would pay for an unseeded
//!   get_random_u16, and iperf3's /dev/urandom read for the jitter
//!   generator).

use crate::bench::{capture, parse, tessera_command, Sample, INSTRUCTIONS_PER_TICK};
use crate::images::Built;
use crate::{board, paths};
use anyhow::Result;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

pub const SHMEM_CONFIG: &str = "tests/configs/intervm_shmem.toml";
pub const NET_CONFIG: &str = "tests/configs/intervm_bench.toml";
const SHMEM_DONE: &str = "[reader] RESULT shmem_ping";
const NET_DONE: &str = "TT bench done";
const TIMEOUT: Duration = Duration::from_secs(500);
/// Targets of issue 12.
pub const DOORBELL_PLUS: f64 = 200.0;
pub const PING_TIMES: f64 = 2.0;
pub const TCP_FRACTION: f64 = 0.5;

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// `TT bench NAME VALUE` from a console.
pub fn figure(lines: &[String], name: &str) -> Option<f64> {
    let tag = format!("TT bench {name} ");
    lines
        .iter()
        .find_map(|l| l.split_once(&tag).and_then(|(_, v)| v.trim().parse().ok()))
}

/// Runs the link rows; `ipi` is the Tessera `ipi` row (instructions, GICv3).
pub fn run(qemu: &Path, built: &Built, logs: &Path, ipi: Option<f64>, linux: bool) -> Result<Value> {
    println!("Links between VMs (GICv3):");
    let img = board::build_config_image(&paths::root().join(SHMEM_CONFIG), built, None)?;
    let c = capture(
        tessera_command(qemu, &img)?,
        &logs.join("links-shmem.log"),
        SHMEM_DONE,
        TIMEOUT,
    )?;
    let rows = parse(&c.lines);
    let instr = |name: &str| match rows.get(name) {
        Some(Sample::Measured { mean, .. }) => Some(mean * INSTRUCTIONS_PER_TICK),
        _ => None,
    };
    let (bell, rtt) = (instr("doorbell"), instr("doorbell_rtt"));
    match (bell, ipi) {
        (Some(b), Some(i)) => println!(
            "  doorbell (ring to the peer VM's IRQ vector): {b:.0} instructions; ipi row {i:.0}; target <= ipi + {DOORBELL_PLUS}: {}",
            verdict(b <= i + DOORBELL_PLUS)
        ),
        (Some(b), None) => println!("  doorbell: {b:.0} instructions (no ipi row to compare)"),
        _ => println!("  doorbell: no figure (log in {})", paths::display(&logs.join("links-shmem.log"))),
    }
    if let Some(r) = rtt {
        println!("  doorbell_rtt (ring, answer, wake-up): {r:.0} instructions");
    }
    let mut net = Value::Null;
    let mut vsock = Value::Null;
    if linux {
        let img = board::build_config_image(&paths::root().join(NET_CONFIG), built, None)?;
        let c = capture(
            tessera_command(qemu, &img)?,
            &logs.join("links-net.log"),
            NET_DONE,
            TIMEOUT,
        )?;
        let f = |n: &str| figure(&c.lines, n);
        let (pl, pk, tl, tk) = (
            f("ping_lo_ms"),
            f("ping_link_ms"),
            f("tcp_lo_mbs"),
            f("tcp_link_mbs"),
        );
        match (pl, pk) {
            (Some(l), Some(k)) => println!(
                "  ping round trip: link {k:.3} ms, loopback {l:.3} ms, ratio {:.2}, target <= {PING_TIMES}x loopback: {}",
                k / l,
                verdict(k <= l * PING_TIMES)
            ),
            _ => println!("  ping: no figures (log in {})", paths::display(&logs.join("links-net.log"))),
        }
        match (tl, tk) {
            (Some(l), Some(k)) => println!(
                "  TCP throughput (iperf3, 32 MiB): link {k:.1} MB/s, loopback {l:.1} MB/s, ratio {:.2}, target >= {TCP_FRACTION}: {}",
                k / l,
                verdict(k >= l * TCP_FRACTION)
            ),
            _ => println!("  TCP: no figures (log in {})", paths::display(&logs.join("links-net.log"))),
        }
        vsock = crate::bench_vsock::run(qemu, built, logs)?;
        net = json!({
            "config": NET_CONFIG, "ping_link_ms": pk, "ping_loopback_ms": pl,
            "tcp_link_mbs": tk, "tcp_loopback_mbs": tl,
            "ping_target": format!("<= {PING_TIMES}x loopback"), "tcp_target": format!(">= {TCP_FRACTION}x loopback"),
        });
    }
    Ok(json!({
        "doorbell": { "config": SHMEM_CONFIG, "instructions": bell, "round_trip_instructions": rtt,
                      "ipi_instructions": ipi, "target": format!("<= ipi + {DOORBELL_PLUS}") },
        "net": net,
        "vsock": vsock,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_read_from_tt_bench_lines() {
        let lines = vec![
            "[linux0] TT bench ping_lo_ms 0.123".to_owned(),
            "[linux0] TT bench tcp_link_mbs 42.5".to_owned(),
        ];
        assert_eq!(figure(&lines, "ping_lo_ms"), Some(0.123));
        assert_eq!(figure(&lines, "tcp_link_mbs"), Some(42.5));
        assert_eq!(figure(&lines, "ping_link_ms"), None);
    }
}
