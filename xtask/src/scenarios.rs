//! The QEMU scenarios `cargo xtask test` runs: one per behaviour, named for what it proves.
//!
//! Adding one is a struct literal in [`all`]: start from [`Scenario::new`] and override
//! what differs, e.g. `Scenario { smp: 2, must: &["..."], ..Scenario::new("name") }`.

use crate::images::Built;
use anyhow::Result;
use std::path::{Path, PathBuf};

#[path = "scenarios_raspi4b.rs"]
mod raspi4b;

/// Lines no scenario may print unless it opts out through [`Scenario::allow`].
pub const GLOBAL_MUST_NOT: &[&str] = &["panicked at", "EL2 exception"];

/// The board of [`Scenario::new`].
pub const VIRT: &str = "qemu-virt";

/// Printed by the hypervisor at the end of a successful boot.
pub const BOOT_COMPLETE: &str = "tessera: boot complete";

/// What QEMU boots.
#[derive(Clone, Copy)]
pub enum Image {
    /// The plain hypervisor, `target/tessera.bin`.
    Hypervisor,
    /// A file relative to the repository root.
    File(&'static str),
    /// Built on the fly from the build outputs (e.g. the hypervisor packed with guests).
    Make(fn(&Built) -> Result<PathBuf>),
}

/// Firmware that finds the image on a boot medium itself (see [`Scenario::firmware`]).
pub struct Firmware {
    /// QEMU's `-bios`.
    pub bios: PathBuf,
    /// The QEMU arguments that attach the boot medium.
    pub args: Vec<String>,
}

#[derive(Clone)]
pub struct Scenario {
    pub name: &'static str,
    /// The board folder (`boards/<board>/`) whose machine runs it; a config's
    /// own board wins.
    pub board: &'static str,
    /// GIC version, CPUs and RAM: 0 or "" means the board's.
    pub gic: u32,
    pub smp: u32,
    pub mem: &'static str,
    /// `-dtb`, relative to the repository root.
    pub dtb: Option<&'static str>,
    /// `-append`: the hypervisor's command line.
    pub append: Option<&'static str>,
    /// Any further QEMU arguments.
    pub extra: &'static [&'static str],
    pub image: Image,
    /// A VM config (relative to the repository root) to check and pack with
    /// the guests; boots that image on this scenario's machine.
    pub config: Option<&'static str>,
    /// Each must appear on some console line.
    pub must: &'static [&'static str],
    /// Bytes typed on the console: each waits for a line containing its
    /// trigger (in order), then is written to QEMU's serial input.
    pub input: &'static [(&'static str, &'static [u8])],
    /// Must appear in this order (each on a line after the previous one's).
    pub sequence: &'static [&'static str],
    /// None may appear on any console line (in addition to [`GLOBAL_MUST_NOT`]).
    pub must_not: &'static [&'static str],
    /// Entries of [`GLOBAL_MUST_NOT`] this scenario expects to see.
    pub allow: &'static [&'static str],
    /// (version, why): skipped, and said so, on an older QEMU whose model cannot run it.
    pub needs_qemu: Option<(&'static str, &'static str)>,
    pub timeout_secs: u64,
    /// Boot firmware (`-bios`, no `-kernel`) with a boot medium made around the image
    /// QEMU would otherwise have been given.
    pub firmware: Option<fn(&Built, &Path) -> Result<Firmware>>,
    /// Type `input` through QEMU's stdio multiplexer, started exactly as `cargo xtask run`
    /// starts it (`Console::Interactive`), rather than into a plain serial pipe.
    pub through_qemu_mux: bool,
    /// Host paths (trees) that must be the same after the scenario, image build and
    /// Debian downloads included, as before it (e.g. `/etc/apt`).
    pub host_unchanged: &'static [&'static str],
}

impl Scenario {
    /// QEMU `virt`, GICv3, 4 CPUs, 1 GiB, the plain hypervisor, 60 s.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            board: VIRT,
            gic: 3,
            smp: 4,
            mem: "1G",
            dtb: None,
            append: None,
            extra: &[],
            image: Image::Hypervisor,
            config: None,
            must: &[],
            sequence: &[],
            input: &[],
            must_not: &[],
            allow: &[],
            needs_qemu: None,
            timeout_secs: 60,
            firmware: None,
            through_qemu_mux: false,
            host_unchanged: &[],
        }
    }

    /// On `board` with its own GIC, CPUs and RAM; otherwise as [`Scenario::new`].
    /// The name should start with the board's.
    pub const fn on(board: &'static str, name: &'static str) -> Self {
        Self {
            board,
            gic: 0,
            smp: 0,
            mem: "",
            ..Self::new(name)
        }
    }

    /// Everything this scenario must not print: its own list plus the global one.
    pub fn forbidden(&self) -> Vec<&'static str> {
        let global = GLOBAL_MUST_NOT.iter().filter(|s| !self.allow.contains(s));
        self.must_not.iter().chain(global).copied().collect()
    }
}

pub fn all() -> Vec<Scenario> {
    let mut all = vec![
        Scenario {
            must: &["GICv3", "CPUs online: 4/4", BOOT_COMPLETE],
            ..Scenario::new("boot_gicv3_smp4")
        },
        Scenario {
            gic: 2,
            must: &["GICv2", "CPUs online: 4/4", BOOT_COMPLETE],
            ..Scenario::new("boot_gicv2_smp4")
        },
        Scenario {
            smp: 1,
            must: &["CPUs online: 1/1", BOOT_COMPLETE],
            ..Scenario::new("boot_gicv3_smp1")
        },
        Scenario {
            smp: 8,
            must: &["CPUs online: 8/8", BOOT_COMPLETE],
            ..Scenario::new("boot_gicv3_smp8")
        },
        Scenario {
            gic: 2,
            smp: 8,
            must: &["GICv2", "CPUs online: 8/8", BOOT_COMPLETE],
            ..Scenario::new("boot_gicv2_smp8")
        },
        Scenario {
            smp: 2,
            append: Some("tessera.selftest=el2-fault"),
            allow: &["EL2 exception"],
            must: &[
                "EL2 exception",
                "ESR_EL2",
                "ELR_EL2",
                "FAR_EL2",
                "SPSR_EL2",
                "x30",
                "CPU 0",
            ],
            ..Scenario::new("el2_exception_report")
        },
        Scenario {
            smp: 2,
            dtb: Some("tests/dtbs/qemu-virt-nogic.dtb"),
            must: &["missing", "interrupt controller"],
            must_not: &[BOOT_COMPLETE],
            ..Scenario::new("dtb_without_gic_is_reported")
        },
        Scenario {
            smp: 2,
            dtb: Some("tests/dtbs/qemu-virt-nostdout.dtb"),
            must: &["stdout-path", BOOT_COMPLETE],
            ..Scenario::new("dtb_without_console_path_falls_back")
        },
        Scenario {
            config: Some("tests/configs/two_vms.toml"),
            must: &[
                "[left] hello: start at EL1",
                "[right] hello: start at EL1",
                "[left] hello: tick 3",
                "[right] hello: tick 3",
            ],
            ..Scenario::new("two_vms_run_side_by_side")
        },
        Scenario {
            config: Some("tests/configs/psci.toml"),
            must: &[
                "[psci] psci: 3 vCPUs",
                "[psci] RESULT psci: ",
                "VM psci stopped: PSCI SYSTEM_OFF",
            ],
            sequence: &[
                "VM psci stopped: PSCI SYSTEM_OFF",
                "[bystander] hello: tick",
                "[bystander] hello: tick",
            ],
            must_not: &["FAIL", "RESULT psci: 0 passed"],
            ..Scenario::new("psci_cpu_on_off_and_system_off_stop_one_vm")
        },
        Scenario {
            config: Some("tests/configs/isolation.toml"),
            must: &[
                "[attacker] RESULT isolation: ",
                " 0 failed",
                "[victim] hello: tick 5",
            ],
            sequence: &["[attacker] RESULT isolation", "[victim] hello: tick"],
            must_not: &["FAIL"],
            ..Scenario::new("isolation_foreign_memory_aborts_in_guest")
        },
        Scenario {
            config: Some("tests/configs/hostile.toml"),
            must: &[
                "[hostile] RESULT hostile: ",
                " 0 failed",
                "[hostile] hostile: still alive",
            ],
            sequence: &["[hostile] RESULT hostile", "[bystander] hello: tick"],
            must_not: &["FAIL"],
            ..Scenario::new("hostile_guest_is_answered_architecturally")
        },
        Scenario {
            config: Some("tests/configs/reset.toml"),
            sequence: &[
                "[resetter] PASS reset_scrubbed",
                "[resetter] reset: calling SYSTEM_RESET",
                "VM resetter restarting",
                "[resetter] PASS reset_scrubbed",
                "[bystander] hello: tick",
                "VM resetter restarting",
                "[resetter] PASS reset_scrubbed",
            ],
            must: &["[bystander] hello: tick 10"],
            must_not: &["FAIL", "VM bystander stopped", "VM bystander restarting"],
            ..Scenario::new("system_reset_restarts_only_that_vm")
        },
        Scenario {
            config: Some("tests/configs/console.toml"),
            input: &[
                ("[second] echo: ready", b"one\r"),
                ("[first] echo: one", b"\x01\x01\x01"),
                ("console input goes to VM second", b"two\r"),
            ],
            sequence: &[
                "console input goes to VM first",
                "[first] echo: one",
                "console input goes to VM second",
                "[second] echo: two",
            ],
            must_not: &["[second] echo: one", "[first] echo: two", "FAIL"],
            ..Scenario::new("console_input_follows_focus")
        },
        Scenario {
            // As a user types into `cargo xtask run`: through QEMU's stdio multiplexer,
            // the focus keys and a command at once; the command arrives whole.
            config: Some("tests/configs/console.toml"),
            through_qemu_mux: true,
            input: &[
                ("[second] echo: ready", b"one\r"),
                ("[first] echo: one", b"\x01\x01\x01two, whole\r"),
            ],
            sequence: &[
                "console input goes to VM first",
                "[first] echo: one",
                "console input goes to VM second",
                "[second] echo: two, whole",
            ],
            must_not: &[
                "[second] echo: one",
                "[first] echo: two",
                "[first] echo: wo",
                "echo: wo, whole",
                "FAIL",
            ],
            ..Scenario::new("console_focus_key_typed_through_qemu_mux")
        },
        Scenario {
            config: Some("tests/configs/console_after_stop.toml"),
            input: &[("VM psci stopped: PSCI SYSTEM_OFF", b"after\r")],
            sequence: &["VM psci stopped: PSCI SYSTEM_OFF", "[echoer] echo: after"],
            must: &["[echoer] echo: ready"],
            must_not: &["FAIL"],
            ..Scenario::new("console_input_survives_boot_cpu_vm_stopping")
        },
    ];
    for gic in [3, 2] {
        all.extend(interrupt_scenarios(gic));
    }
    for gic in [3, 2] {
        all.extend(vcpu_state_scenarios(gic));
    }
    all.extend([
        linux_pair(3, Kernel::Debian12),
        linux_pair(2, Kernel::Debian12),
        linux_pair(3, Kernel::Debian13),
    ]);
    all.push(linux_demo_typed_through_qemu_mux());
    all.extend(crate::intervm_scenarios::all());
    all.extend([console_flood(3), console_flood(2)]);
    all.extend([
        Scenario {
            config: Some("tests/configs/console_passthrough.toml"),
            sequence: &[
                "console handed to VM owner",
                "hello: start at EL1",
                "hello: tick 3",
            ],
            must_not: &["[owner]", "tessera: boot complete"],
            ..Scenario::new("console_passthrough_owns_the_uart")
        },
        Scenario {
            config: Some("tests/configs/mmio.toml"),
            must: &["[mmio] RESULT mmio: ", " 0 failed"],
            must_not: &["FAIL"],
            ..Scenario::new("mmio_all_widths_and_sign_extension")
        },
        Scenario {
            // `cargo xtask bench --quick`'s Tessera run: a benchmark is no test, so this
            // only checks that the bench guest runs and prints every row (the config
            // adds -icount). The guest always takes 10,000 samples: under a second.
            config: Some(crate::bench::CONFIG),
            must: crate::bench::ROW_PREFIXES,
            must_not: &["FAIL", "unavailable"],
            ..Scenario::new("bench_quick_prints_every_row_gicv3")
        },
        Scenario {
            // QEMU merges the two -machine options: virt,...,secure=on. Its DTB
            // then has secram@e000000, a memory node with status "disabled":
            // counted as RAM, the first VM's memory lands there and EL2 takes
            // a synchronous external abort.
            extra: &["-machine", "secure=on"],
            config: Some("tests/configs/two_vms.toml"),
            must: &[
                "RAM: 1024 MiB in 1 range(s)",
                "[left] hello: tick 3",
                "[right] hello: tick 3",
            ],
            ..Scenario::new("virt_secure_on_disabled_memory_is_not_ram")
        },
        Scenario {
            // Started at EL1: said on the DTB's console UART before anything
            // else is set up (platform::early_console, console::early_print).
            extra: &["-machine", "virtualization=off"],
            smp: 1,
            must: &["tessera: not entered at EL2"],
            must_not: &[BOOT_COMPLETE, "CPUs online"],
            timeout_secs: 10,
            ..Scenario::new("not_entered_at_el2_is_said_on_the_console")
        },
    ]);
    all.extend([subpage(3), subpage(2)]);
    all.extend(board_scenarios());
    all.extend(raspi4b::scenarios());
    all.extend([device_abort(3), device_abort(2)]);
    all.extend([console_burst(3), console_burst(2)]);
    all.extend(crate::media::scenarios::all());
    all.extend(crate::scrub_scenarios::all());
    all.extend(crate::smmu_scenarios::all());
    all.extend(crate::seed_scenarios::all());
    all
}

/// A Debian Linux VM with `$cpus` vCPUs next to the bare-metal VM `uart`, which owns a
/// real UART of the board (its output arrives as `uart1| ...`), from the board's
/// `linux.toml`: Linux reaches its shell, typed input reaches whichever VM has the
/// focus (Ctrl-A three times moves it), and `reboot -f` restarts only Linux while the
/// `uart` VM keeps its timer and keeps printing through its UART.
/// What a Linux VM beside a bare-metal VM owning a UART must never print, on every board
/// that runs that pair (`linux_beside_uart_owner!` and raspi4b's own).
pub(crate) const LINUX_BESIDE_UART_OWNER_MUST_NOT: &[&str] = &[
    "FAIL",
    "Kernel panic",
    "focus-uart: not found",
    "uart: echo: echo",
    "uart: echo: reboot",
    "VM uart stopped",
    "VM uart restarting",
    "VM linux stopped",
];

macro_rules! linux_beside_uart_owner {
    ($board:literal, $name:literal, $cpus:literal) => {
        Scenario {
            config: Some(concat!("boards/", $board, "/linux.toml")),
            input: &[
                (
                    concat!("[linux] TESSERA-LINUX-UP linux cpus=", $cpus),
                    b"echo TT-nproc-$(nproc)-sum-$((40+2))\r",
                ),
                ("[linux] TT-nproc-", b"\x01\x01\x01"),
                ("console input goes to VM uart", b"focus-uart\r"),
                ("[uart] uart: echo: focus-uart", b"\x01\x01\x01"),
                ("console input goes to VM linux", b"reboot -f\r"),
            ],
            sequence: &[
                concat!("[linux] TESSERA-LINUX-UP linux cpus=", $cpus),
                concat!("[linux] TT-nproc-", $cpus, "-sum-42"),
                "console input goes to VM uart",
                "[uart] uart: echo: focus-uart",
                "console input goes to VM linux",
                "VM linux restarting",
                concat!("[linux] TESSERA-LINUX-UP linux cpus=", $cpus),
                "[uart] uart: alive",
                "uart1| uart: alive",
            ],
            must: &[
                "uart1| uart: hello through the passed-through UART",
                "[uart] PASS uart_tx_interrupt",
                "[uart] PASS uart_timer_rate",
                "[uart] RESULT uart: 3 passed, 0 failed",
            ],
            must_not: LINUX_BESIDE_UART_OWNER_MUST_NOT,
            timeout_secs: 240,
            ..Scenario::on($board, $name)
        }
    };
}

/// The real boards' QEMU models, each with its own DTB (Debian's or the model's):
/// the hypervisor comes up on every CPU, and Linux and a bare-metal VM that owns a
/// real UART share the board.
fn board_scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            must: &["GICv2", "CPUs online: 4/4", BOOT_COMPLETE],
            ..Scenario::on("xlnx-zcu102", "xlnx-zcu102_boot_all_cpus_online")
        },
        Scenario {
            must: &["GICv3", "CPUs online: 4/4", BOOT_COMPLETE],
            ..Scenario::on("imx8mp-evk", "imx8mp-evk_boot_all_cpus_online")
        },
        Scenario {
            must: &["GICv3", "CPUs online: 2/2", BOOT_COMPLETE],
            ..Scenario::on("xlnx-versal-virt", "xlnx-versal-virt_boot_all_cpus_online")
        },
        linux_beside_uart_owner!("xlnx-zcu102", "xlnx-zcu102_linux_smp2_beside_uart_owner", "2"),
        // Before QEMU 10.1 the model does not wire the GIC's virtual IRQ to the CPUs: the
        // board folder has the hypervisor assert it (`tessera.virq=hcr`).
        linux_beside_uart_owner!("imx8mp-evk", "imx8mp-evk_linux_smp2_beside_uart_owner", "2"),
        Scenario {
            // What needs no interrupt inside a guest: console input through the i.MX UART's
            // receive interrupt at EL2, the focus moving, a VM polling its console.
            config: Some("tests/configs/imx8mp_console.toml"),
            input: &[
                ("[second] echo: ready", b"one\r"),
                ("[first] echo: one", b"\x01\x01\x01"),
                ("console input goes to VM second", b"two\r"),
            ],
            sequence: &[
                "console input goes to VM first",
                "[first] echo: one",
                "console input goes to VM second",
                "[second] echo: two",
            ],
            must_not: &["[second] echo: one", "[first] echo: two", "FAIL"],
            ..Scenario::on("imx8mp-evk", "imx8mp-evk_console_input_follows_focus")
        },
        linux_beside_uart_owner!(
            "xlnx-versal-virt",
            "xlnx-versal-virt_linux_beside_uart_owner",
            "1"
        ),
        Scenario {
            // GICv3 with security extensions: the kick that brings up the second vCPU
            // must get past the priority mask under the non-secure view.
            config: Some("boards/xlnx-versal-virt/linux_smp2.toml"),
            must: &[
                "[linux] TESSERA-LINUX-UP linux cpus=2",
                "smp: Brought up 1 node, 2 CPUs",
            ],
            must_not: &["failed to come online", "Kernel panic", "FAIL"],
            timeout_secs: 120,
            ..Scenario::on("xlnx-versal-virt", "xlnx-versal-virt_linux_smp2_alone")
        },
    ]
}

/// Rounds of tests/guests/src/bin/burst.rs and round_flood.rs.
const BURST_ROUNDS: usize = 12;

/// A VM's burst of lines in the middle of a neighbour's flood, which stops
/// right after: every line of each burst is printed before the flooder's
/// marker 20 ms later (its CPU comes back for the lines that found the UART
/// held by the flood), also of the last burst, after which the VM never
/// prints again. Under icount, so where the flood holds the UART when the
/// burst comes is the same on every run.
fn console_burst(gic: u32) -> Scenario {
    let mut sequence: Vec<&'static str> = Vec::new();
    for k in 0..BURST_ROUNDS {
        sequence.push(format!("[burst] burst: round {k} line 8/8").leak());
        if k + 1 == BURST_ROUNDS {
            sequence.push("[burst] burst: done");
        }
        sequence.push(format!("[flood] round_flood: round {k} end").leak());
    }
    Scenario {
        gic,
        config: Some("tests/configs/console_burst.toml"),
        extra: &["-icount", "shift=0,sleep=off"],
        must: &["[burst] burst: done"],
        sequence: sequence.leak(),
        must_not: &["FAIL", "of VM burst dropped"],
        timeout_secs: 120,
        ..Scenario::new(if gic == 3 {
            "console_burst_is_printed_though_its_vm_goes_quiet_gicv3"
        } else {
            "console_burst_is_printed_though_its_vm_goes_quiet_gicv2"
        })
    }
}

/// The interrupt scenarios, the same checks on GIC version `gic` (2 or 3).
fn interrupt_scenarios(gic: u32) -> [Scenario; 4] {
    let v3 = gic == 3;
    let pick = |a: &'static str, b: &'static str| if v3 { a } else { b };
    [
        Scenario {
            gic,
            config: Some("tests/configs/irq_timer.toml"),
            // Deterministic time: the rate check must not depend on host load.
            extra: &["-icount", "shift=0,sleep=off"],
            must: &[
                "[timer] RESULT timer: 4 passed, 0 failed",
                "[timer2] RESULT timer: 4 passed, 0 failed",
            ],
            sequence: if v3 {
                &["[timer] timer: GICv3"]
            } else {
                &["[timer] timer: GICv2"]
            },
            must_not: &["FAIL"],
            ..Scenario::new(pick(
                "irq_timer_ticks_on_every_vcpu_gicv3",
                "irq_timer_ticks_on_every_vcpu_gicv2",
            ))
        },
        Scenario {
            gic,
            config: Some("tests/configs/irq_sgi.toml"),
            must: &[
                "[sgi] RESULT sgi: ",
                " 0 failed",
                "[sgi] sgi: ipi latency",
                "[hello] hello: tick 3",
            ],
            sequence: if v3 {
                &["[sgi] sgi: GICv3"]
            } else {
                &["[sgi] sgi: GICv2"]
            },
            must_not: &["FAIL"],
            ..Scenario::new(pick(
                "irq_sgis_reach_only_own_vcpus_gicv3",
                "irq_sgis_reach_only_own_vcpus_gicv2",
            ))
        },
        Scenario {
            gic,
            config: Some("tests/configs/irq_spi.toml"),
            must: &[
                "[rtc] RESULT spi: 8 passed, 0 failed",
                "[thief] RESULT spi_thief: 4 passed, 0 failed",
            ],
            must_not: &["FAIL"],
            timeout_secs: 90,
            ..Scenario::new(pick(
                "irq_passthrough_spi_reaches_only_its_owner_gicv3",
                "irq_passthrough_spi_reaches_only_its_owner_gicv2",
            ))
        },
        Scenario {
            gic,
            config: Some("tests/configs/irq_storm.toml"),
            must: &[
                "[storm] RESULT storm: 8 passed, 0 failed",
                "[timer] RESULT timer: 4 passed, 0 failed",
            ],
            sequence: &[
                "[storm] storm: still alive",
                "[timer] timer: alive",
                "[storm] storm: still alive",
                "[timer] timer: alive",
            ],
            must_not: &["FAIL"],
            timeout_secs: 120,
            ..Scenario::new(pick(
                "irq_storm_slows_only_itself_gicv3",
                "irq_storm_slows_only_itself_gicv2",
            ))
        },
    ]
}

/// A vCPU's state and its VM's lifecycle under attack, on GIC version `gic`.
fn vcpu_state_scenarios(gic: u32) -> Vec<Scenario> {
    let v3 = gic == 3;
    let pick = |a: &'static str, b: &'static str| if v3 { a } else { b };
    let mut all = vec![
        Scenario {
            gic,
            config: Some("tests/configs/vcpu_state.toml"),
            sequence: &[
                "[dirty] PASS vcpu_state_clean",
                "[dirty] vcpu_state: dirtied, calling SYSTEM_RESET",
                "VM dirty restarting",
                "[dirty] PASS vcpu_state_clean",
                "[dirty] vcpu_state: dirtied, calling SYSTEM_RESET",
                "VM dirty restarting",
                "[dirty] PASS vcpu_state_clean",
                "[bystander] hello: tick",
            ],
            must: &["[bystander] hello: tick 5"],
            must_not: &[
                "FAIL",
                "VM bystander stopped",
                "VM dirty stopped",
                "UNDEFINED injected",
            ],
            ..Scenario::new(pick(
                "vcpu_state_is_reset_by_system_reset_gicv3",
                "vcpu_state_is_reset_by_system_reset_gicv2",
            ))
        },
        Scenario {
            gic,
            config: Some("tests/configs/conduit.toml"),
            must: &[
                "[hvcvm] conduit: hvc",
                "[smcvm] conduit: smc",
                "[hvcvm] RESULT conduit: 10 passed, 0 failed",
                "[smcvm] RESULT conduit: 10 passed, 0 failed",
                "[bystander] hello: tick 3",
            ],
            must_not: &["FAIL", "VM bystander stopped"],
            ..Scenario::new(pick(
                "smccc_only_own_conduit_answers_and_preserves_regs_gicv3",
                "smccc_only_own_conduit_answers_and_preserves_regs_gicv2",
            ))
        },
        Scenario {
            gic,
            config: Some("tests/configs/double_reset.toml"),
            sequence: &[
                "[racer] double_reset: boot",
                "VM racer restarting",
                "[racer] double_reset: boot",
                "VM racer restarting",
                "[racer] double_reset: boot",
                "VM racer restarting",
                "[racer] double_reset: boot",
                "[bystander] hello: tick",
            ],
            must: &["[bystander] hello: tick 300"],
            // Not "VM bystander" alone: under load the console may report
            // "console line(s) of VM bystander dropped", which is no reset.
            must_not: &[
                "FAIL",
                "VM racer stopped",
                "VM bystander stopped",
                "VM bystander restarting",
            ],
            ..Scenario::new(pick(
                "system_reset_from_two_vcpus_at_once_resets_once_gicv3",
                "system_reset_from_two_vcpus_at_once_resets_once_gicv2",
            ))
        },
    ];
    if !v3 {
        // `hostile_guest_is_answered_architecturally` is the GICv3 run.
        all.push(Scenario {
            gic,
            config: Some("tests/configs/hostile.toml"),
            must: &[
                "[hostile] RESULT hostile: ",
                " 0 failed",
                "[hostile] hostile: still alive",
            ],
            sequence: &["[hostile] RESULT hostile", "[bystander] hello: tick"],
            must_not: &["FAIL"],
            ..Scenario::new("hostile_guest_is_answered_architecturally_gicv2")
        });
    }
    all
}

/// What xtask must leave as it was on the host while it fetches Debian packages: apt's
/// configuration and sources (and dpkg's architecture list, which `dpkg
/// --add-architecture` used to change).
const HOST_APT: &[&str] = &["/etc/apt", "/var/lib/dpkg/arch"];

macro_rules! linux_pair_must {
    ($series:literal) => {
        [
            concat!("[linux0] TESSERA-LINUX-UP linux0 cpus=2 linux=", $series, "."),
            concat!("[linux1] TESSERA-LINUX-UP linux1 cpus=1 linux=", $series, "."),
            "[linux0] TT nproc=2",
            "[linux0] TT ok arch_timer interrupts",
            "[linux0] TT ok virtio interrupts",
            "[linux1] TT ok arch_timer interrupts",
            "[linux1] TT ok virtio interrupts",
            "[linux0] TT iomem 0a003e00",
            "[linux1] TT iomem 0a003c00",
            "[linux0] TT dt virtio_mmio@a003e00",
            "[linux1] TT dt virtio_mmio@a003c00",
            "[linux0] TT ok disk sha256",
            "[linux0] TT ok sleep 1 took",
            "[linux1] TT ok own disk readable",
            "[rt] timer: cpu 0 worst latency",
        ]
    };
}
const LINUX_PAIR_MUST_6_1: [&str; 15] = linux_pair_must!("6.1");
const LINUX_PAIR_MUST_6_12: [&str; 15] = linux_pair_must!("6.12");

/// The Debian kernels the Linux scenarios boot (assets.rs: DEFAULT_KERNEL, TRIXIE_KERNEL).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// Debian 12's 6.1 LTS, the boards' default.
    Debian12,
    /// Debian 13's 6.12 LTS (modules come as .ko.xz).
    Debian13,
}

/// Two Debian kernels side by side with a bare-metal timer VM, on GIC version `gic`;
/// the Debian packages come with xtask's own apt configuration, and the host's `/etc/apt`
/// is checked to be the same afterwards.
fn linux_pair(gic: u32, kernel: Kernel) -> Scenario {
    let (config, must): (_, &'static [&'static str]) = match kernel {
        Kernel::Debian12 => ("tests/configs/linux_pair.toml", &LINUX_PAIR_MUST_6_1),
        Kernel::Debian13 => ("tests/configs/linux_pair_6_12.toml", &LINUX_PAIR_MUST_6_12),
    };
    Scenario {
        gic,
        config: Some(config),
        host_unchanged: HOST_APT,
        input: &[
            ("[linux0] TT second boot", b"\x01\x01\x01"),
            ("console input goes to VM linux1", b"poweroff -f\r"),
        ],
        must,
        sequence: &[
            "[linux0] TT rebooting",
            "VM linux0 restarting",
            "[linux0] TESSERA-LINUX-UP linux0",
            "[linux0] TT second boot",
            "VM linux1 stopped: PSCI SYSTEM_OFF",
            "[rt] timer: alive",
            "[linux0] TT alive",
        ],
        must_not: &[
            "FAIL",
            "[linux0] TT iomem 0a003c00",
            "[linux1] TT iomem 0a003e00",
            "[linux0] TT dt virtio_mmio@a003c00",
            "[linux1] TT dt virtio_mmio@a003e00",
            "TT dt pl031",
            "TT dt pl061",
            "VM rt stopped",
            "VM linux0 stopped",
            "Kernel panic",
        ],
        timeout_secs: 240,
        ..Scenario::new(match (gic, kernel) {
            (3, Kernel::Debian12) => "linux_pair_side_by_side_gicv3_6_1",
            (_, Kernel::Debian12) => "linux_pair_side_by_side_gicv2_6_1",
            (3, Kernel::Debian13) => "linux_pair_side_by_side_gicv3_6_12",
            (_, Kernel::Debian13) => "linux_pair_side_by_side_gicv2_6_12",
        })
    }
}

/// The default Linux demo (`boards/qemu-virt/linux.toml`) in QEMU started exactly as
/// `cargo xtask run` starts it, its stdin going through QEMU's multiplexer: Ctrl-A three
/// times and a command typed at once reach the next VM whole (with QEMU's escape key left
/// at Ctrl-A, its multiplexer ate one Ctrl-A and the `e` of `echo`); three more and Enter
/// bring the `rt` VM's latency report, which it does not print unasked.
fn linux_demo_typed_through_qemu_mux() -> Scenario {
    Scenario {
        config: Some("boards/qemu-virt/linux.toml"),
        through_qemu_mux: true,
        host_unchanged: HOST_APT,
        input: &[
            ("[linux1] TESSERA-LINUX-UP linux1", b"\x01\x01\x01echo typed-$((6*7))\r"),
            ("[linux1] typed-42", b"\x01\x01\x01\r"),
        ],
        must: &[
            "[linux0] TESSERA-LINUX-UP linux0 cpus=2 linux=6.1.",
            "[rt] rtlatency: 1 ms timer running; press Enter here",
        ],
        sequence: &[
            "console input goes to VM linux0",
            "[linux1] TESSERA-LINUX-UP linux1",
            "console input goes to VM linux1",
            "[linux1] typed-42",
            "console input goes to VM rt",
            "[rt] rtlatency: worst 1 ms timer latency",
        ],
        must_not: &[
            "FAIL",
            "Kernel panic",
            "cho: not found",
            "[linux0] typed",
            "[rt] rtlatency: worst 1 ms timer latency 0 us since the last report, 0 us since the start (0 ticks",
        ],
        timeout_secs: 240,
        ..Scenario::new("linux_demo_focus_key_typed_through_qemu_mux")
    }
}

/// Lines the `conlat` bystander prints.
const CONLAT_LINES: usize = 200;

/// Two console floods with forged control sequences next to a bystander that
/// times its prints, on GIC version `gic`: the bystander's 95th-percentile
/// print stays its own line's cost (checked by the guest), every one of its
/// lines appears in order and none is dropped, and every control comes out
/// escaped. Under icount, so the figures are the same on every run. (Whether
/// the flooders lose lines depends on where QEMU's round robin preempts a
/// vCPU that holds the UART, so it is not asserted; the host tests cover it.)
fn console_flood(gic: u32) -> Scenario {
    let must: &'static [&'static str] = &[
        "[bystander] RESULT conlat: 1 passed, 0 failed",
        "[bystander] conlat: print latency over",
        // Every control the flood sent, shown escaped.
        "[flood] ^[[2K^[[1G[bystander] conlat: FORGED line",
        "[flood] ^H^H^H^H^H^H^H^H[    0.500000] VM bystander stopped",
        "[flood] junk^M[bystander] conlat: FORGED after a bare CR",
        "[flood] ^[]0;owned by flood^G^[[1A^[[2K title",
        "[flood] \\x9b2K raw 8-bit CSI",
        "[flood] \\u{9b}2K UTF-8 encoded CSI",
    ];
    // Every bystander line, none lost, in order (a sequence is checked
    // against one entry per line: cheap beside the flood).
    let sequence: Vec<&'static str> = (0..CONLAT_LINES)
        .map(|k| &*format!("[bystander] conlat: line {k}/{CONLAT_LINES} at ").leak())
        .collect();
    Scenario {
        gic,
        config: Some("tests/configs/console_flood.toml"),
        extra: &["-icount", "shift=0,sleep=off"],
        must,
        sequence: sequence.leak(),
        must_not: &[
            "FAIL",
            // Raw controls reaching the terminal: ESC, BS, BEL, a bare CR, C1 CSI.
            "\x1b",
            "\x08",
            "\x07",
            "\r",
            "\u{9b}",
            "of VM bystander dropped",
        ],
        timeout_secs: 120,
        ..Scenario::new(if gic == 3 {
            "console_flood_is_paid_by_the_flooder_gicv3"
        } else {
            "console_flood_is_paid_by_the_flooder_gicv2"
        })
    }
}

/// A VM attacking the virtio-mmio transport next to its own, in the same
/// page, owned by a bystander: the sub-page filter, on GIC version `gic`.
fn subpage(gic: u32) -> Scenario {
    Scenario {
        gic,
        config: Some("tests/configs/subpage.toml"),
        must: &[
            "trapped through the sub-page filter",
            "[thief] RESULT subpage_thief: 20 passed, 0 failed",
            "[bystander] RESULT subpage_owner: 4 passed, 0 failed",
            "[thief] subpage_thief: bench filtered_read",
        ],
        sequence: &[
            // A reset attempt between the bystander setting its Status
            // and checking it, whichever VM started first.
            "[bystander] subpage_owner: status set",
            "[thief] subpage_thief: attack round",
            "[bystander] PASS owner_status_unchanged",
        ],
        must_not: &["FAIL", "VM thief stopped", "VM bystander stopped"],
        ..Scenario::new(if gic == 3 {
            "subpage_neighbour_transport_aborts_gicv3"
        } else {
            "subpage_neighbour_transport_aborts_gicv2"
        })
    }
}

/// A device that answers a forwarded access with an external abort: the
/// guest gets a synchronous external abort and the CPU runs on (the EL2
/// exception table), its neighbour unaffected.
fn device_abort(gic: u32) -> Scenario {
    Scenario {
        gic,
        config: Some("tests/configs/devabort.toml"),
        must: &[
            "[devabort] RESULT devabort: 8 passed, 0 failed",
            "[devabort] PASS devabort_signature_after",
        ],
        sequence: &["[devabort] RESULT devabort", "[bystander] hello: tick 5"],
        must_not: &["FAIL", "VM devabort stopped", "CPU 1 stopped"],
        ..Scenario::new(if gic == 3 {
            "device_external_abort_reaches_the_guest_gicv3"
        } else {
            "device_external_abort_reaches_the_guest_gicv2"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_every_scenario_checks_something() {
        let all = all();
        let names: HashSet<_> = all.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), all.len());
        assert!(all.iter().all(|s| !s.must.is_empty() || !s.sequence.is_empty()));
    }

    #[test]
    fn board_scenarios_are_named_for_their_board() {
        for s in all().iter().filter(|s| s.board != VIRT) {
            assert!(s.name.starts_with(s.board), "{} on {}", s.name, s.board);
            assert!(crate::board::named_board_dir(s.board)
                .join("board.toml")
                .is_file());
        }
    }

    #[test]
    fn referenced_dtbs_exist() {
        for s in all() {
            if let Some(dtb) = s.dtb {
                assert!(crate::paths::root().join(dtb).is_file(), "{}: {dtb}", s.name);
            }
        }
    }

    #[test]
    fn opting_out_removes_only_that_global() {
        let s = Scenario {
            must_not: &["x"],
            allow: &["EL2 exception"],
            ..Scenario::new("t")
        };
        assert_eq!(s.forbidden(), ["x", "panicked at"]);
    }
}
