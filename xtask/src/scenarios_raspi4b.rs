//! The Raspberry Pi 4 on QEMU's `raspi4b`: Debian's DTB with bus `ranges`,
//! CPUs released through the firmware's spin table, the mini UART as the
//! hypervisor's console and the PL011 uart0 owned by a bare-metal VM.

use super::{Scenario, BOOT_COMPLETE};

const BOARD: &str = "raspi4b";

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            must: &[
                "CPUs online: 4/4 (boot CPU MPIDR 0x0; spin table)",
                "CPU 3 online (MPIDR 0x3, EL2)",
                "GICv2 (/soc/interrupt-controller@40041000): GICD 0xff841000",
                "console: BCM2835 mini UART at 0xfe215040 (/soc/serial@7e215040, via stdout-path)",
                BOOT_COMPLETE,
            ],
            must_not: &["WARN", "did not report in", "left off"],
            timeout_secs: 30,
            ..Scenario::on(BOARD, "raspi4b_boot_all_cpus_online_through_spin_table")
        },
        Scenario {
            // cpu@2's release address is one past RAM, cpu@3 has none: each is
            // named and left parked in the firmware's loop, and boot carries on.
            dtb: Some("tests/dtbs/bcm2711-rpi-4-b-bad-spin-table.dtb"),
            must: &[
                "WARN /cpus/cpu@2: cpu-release-addr 0x3c000000 is outside RAM; CPU left off",
                "WARN /cpus/cpu@3: enable-method \"spin-table\" without cpu-release-addr; CPU left off",
                "CPU 1 online (MPIDR 0x1, EL2)",
                "CPUs online: 2/4 (boot CPU MPIDR 0x0; spin table)",
                BOOT_COMPLETE,
            ],
            must_not: &["CPU 2 online", "CPU 3 online", "did not report in"],
            timeout_secs: 30,
            ..Scenario::on(BOARD, "raspi4b_bad_spin_tables_leave_their_cpus_off")
        },
        Scenario {
            // The boot argument moves the console to uart0, QEMU's first -serial.
            append: Some("tessera.console=serial0"),
            must: &[
                "uart0| ",
                "console: PL011 at 0xfe201000 (/soc/serial@7e201000, via tessera.console)",
                "CPUs online: 4/4",
                BOOT_COMPLETE,
            ],
            must_not: &["WARN"],
            timeout_secs: 30,
            ..Scenario::on(BOARD, "raspi4b_console_boot_argument_picks_uart0")
        },
        Scenario {
            // With the console moved to uart0 the VM configured to own uart0 is
            // refused it at boot, while its neighbours run.
            config: Some("boards/raspi4b/demo.toml"),
            append: Some("tessera.console=serial0"),
            must: &[
                "console: PL011 at 0xfe201000 (/soc/serial@7e201000, via tessera.console)",
                "ERROR VM uart: not started: device range 0xfe201000+0x200 overlaps the hypervisor's console",
                "[ticker] ",
                BOOT_COMPLETE,
            ],
            must_not: &["[uart] uart: start"],
            timeout_secs: 60,
            ..Scenario::on(BOARD, "raspi4b_console_on_uart0_is_refused_to_its_vm")
        },
        Scenario {
            // A 2-vCPU Linux on Tessera's virtual PSCI (the board has none) next
            // to the VM owning uart0: Linux reaches its shell, typed input
            // follows the focus (Ctrl-A three times), and `reboot -f` restarts
            // only Linux while the uart VM keeps its timer and keeps printing.
            config: Some("boards/raspi4b/linux.toml"),
            input: &[
                (
                    "[linux] TESSERA-LINUX-UP linux cpus=2",
                    b"echo TT-nproc-$(nproc)-sum-$((40+2))\r",
                ),
                ("[linux] TT-nproc-", b"\x01\x01\x01"),
                ("console input goes to VM uart", b"focus-uart\r"),
                ("[uart] uart: echo: focus-uart", b"\x01\x01\x01"),
                ("console input goes to VM linux", b"reboot -f\r"),
            ],
            sequence: &[
                "CPUs online: 4/4 (boot CPU MPIDR 0x0; spin table)",
                "[linux] TESSERA-LINUX-UP linux cpus=2",
                "[linux] TT-nproc-2-sum-42",
                "console input goes to VM uart",
                "[uart] uart: echo: focus-uart",
                "console input goes to VM linux",
                "VM linux restarting",
                "[linux] TESSERA-LINUX-UP linux cpus=2",
                "[uart] uart: alive",
                "uart0| uart: alive",
            ],
            must: &[
                "uart0| uart: hello through the passed-through UART",
                "[uart] PASS uart_tx_interrupt",
                "[uart] PASS uart_timer_rate",
                "[uart] RESULT uart: 3 passed, 0 failed",
                "smp: Brought up 1 node, 2 CPUs",
            ],
            must_not: super::LINUX_BESIDE_UART_OWNER_MUST_NOT,
            timeout_secs: 240,
            ..Scenario::on(BOARD, "raspi4b_linux_smp2_beside_uart0_owner")
        },
    ]
}
