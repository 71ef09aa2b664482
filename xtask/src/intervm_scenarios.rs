//! The `intervm_*` scenarios: links between VMs (xtask/src/links.rs).

use crate::scenarios::Scenario;

pub fn all() -> Vec<Scenario> {
    vec![
        net_linux_pair(3),
        net_linux_pair(2),
        demo_ping(),
        hostile_queue(3),
        hostile_queue(2),
        shmem(3),
        shmem(2),
        vsock_linux_pair(3, false),
        vsock_linux_pair(2, false),
        vsock_linux_pair(3, true),
        vsock_hostile(3),
        vsock_hostile(2),
    ]
}

/// A guest attacking its vsock device on the Linux pair's link: spoofing,
/// bogus CIDs and lengths answered or dropped, an RST that waits for a
/// receive buffer, a broken queue resetting its device only, a receive
/// queue never posted to; the pair's transfers and
/// the receiver's reboot work as without it.
fn vsock_hostile(gic: u32) -> Scenario {
    Scenario {
        gic,
        config: Some("tests/configs/intervm_vsock_hostile.toml"),
        must: &[
            "VM hostile: vsock link 0 at 0xa800000 (INTID 112), CID 5",
            "[hostile] RESULT vsock_hostile: 9 passed, 0 failed",
            "[hostile] vsock_hostile: still alive 10",
            "VM linux1 restarting",
            "VM hostile virtio-vsock: queue 1: descriptor chain longer than the queue (a cycle); device needs reset (1 so far)",
        ],
        sequence: &[
            "[linux1] TT ok vsock sha256 match round 1 67108864 bytes",
            "[linux1] TT rebooting",
            "[linux0] TT ok idle vsock connection reset after the peer went away",
            "[linux1] TT ok vsock sha256 match round 2 67108864 bytes",
            "[linux0] TT alive vsock",
        ],
        must_not: &[
            "FAIL",
            "VM linux0 virtio-vsock: queue",
            "VM linux1 virtio-vsock: queue",
            "Kernel panic",
            "VM linux0 stopped",
            "VM linux1 stopped",
            "VM hostile stopped",
        ],
        timeout_secs: 900,
        ..Scenario::new(if gic == 3 {
            "intervm_vsock_hostile_beside_linux_pair_gicv3"
        } else {
            "intervm_vsock_hostile_beside_linux_pair_gicv2"
        })
    }
}

/// Two Debian kernels on a vsock link: a CID not on the link refused, 64
/// MiB over socat with matching sha256, a `reboot -f` of the receiver that
/// resets an idle connection to it, and the link again after it.
/// `trixie`: Debian 13's 6.12 kernels instead of Debian 12's 6.1.
fn vsock_linux_pair(gic: u32, trixie: bool) -> Scenario {
    Scenario {
        gic,
        config: Some(if trixie {
            "tests/configs/intervm_vsock_6_12.toml"
        } else {
            "tests/configs/intervm_vsock.toml"
        }),
        must: &[
            "VM linux0: vsock link 0 at 0xa800000 (INTID 112), CID 3",
            "VM linux1: vsock link 0 at 0xa800000 (INTID 112), CID 4",
            "[linux0] TT ok CID 99 not on the link",
            "[linux1] TT vsock done",
            "VM linux1 restarting",
            "[outsider] RESULT link_outsider: 2 passed, 0 failed",
        ],
        sequence: &[
            "[linux1] TT ok vsock sha256 match round 1 67108864 bytes",
            "[linux1] TT rebooting",
            // Reset by the hypervisor as it resets linux1's device, which
            // it logs only after that ("VM linux1 restarting").
            "[linux0] TT ok idle vsock connection reset after the peer went away",
            "[linux1] TT ok vsock sha256 match round 2 67108864 bytes",
            "[linux0] TT alive vsock",
        ],
        must_not: &[
            "FAIL",
            "needs reset",
            "Kernel panic",
            "VM linux0 stopped",
            "VM linux1 stopped",
            "VM outsider: vsock link",
        ],
        timeout_secs: 900,
        ..Scenario::new(match (gic, trixie) {
            (3, true) => "intervm_vsock_linux_pair_gicv3_6_12",
            (3, false) => "intervm_vsock_linux_pair_gicv3",
            _ => "intervm_vsock_linux_pair_gicv2",
        })
    }
}

/// Two bare-metal VMs exchange messages through a shared region and
/// doorbells; a third maps it read-only.
fn shmem(gic: u32) -> Scenario {
    Scenario {
        gic,
        config: Some("tests/configs/intervm_shmem.toml"),
        must: &[
            "VM ping: shmem link 0: region 0x50000000+0x10000 (rw), doorbell 0 at 0xa800000 (INTID 112)",
            "VM reader: shmem link 0: region 0x50000000+0x10000 (ro), doorbell 2 at 0xa800000 (INTID 112)",
            "[ping] PASS shmem_messages_answered: 1000 rounds, 0 wrong replies",
            "[ping] BENCH doorbell_rtt mean=",
            "[ping] RESULT shmem_ping: 3 passed, 0 failed",
            "[pong] PASS shmem_masked_doorbell_held_until_enabled",
            "[pong] RESULT shmem_ping: 2 passed, 0 failed",
            "[reader] PASS shmem_store_to_read_only_region_aborts",
            "[reader] RESULT shmem_ping: 3 passed, 0 failed",
        ],
        must_not: &["FAIL", "stopped"],
        timeout_secs: 120,
        ..Scenario::new(if gic == 3 {
            "intervm_shmem_doorbell_gicv3"
        } else {
            "intervm_shmem_doorbell_gicv2"
        })
    }
}

/// A guest breaking its virtqueues on the Linux pair's link: only its own
/// device goes into DEVICE_NEEDS_RESET (logged, rate-limited), the pair's
/// transfers and the receiver's reboot work as without it.
fn hostile_queue(gic: u32) -> Scenario {
    Scenario {
        gic,
        config: Some("tests/configs/intervm_hostile.toml"),
        must: &[
            "[hostile] RESULT vq_hostile: 27 passed, 0 failed",
            "VM hostile virtio-net: frame dropped, its source is another VM's MAC: 1 so far",
            "VM hostile virtio-net: frame dropped, its header is refused (Flags(2)): 1 so far",
            "[hostile] vq_hostile: still alive 10",
            "VM hostile virtio-net: queue 1: descriptor chain longer than the queue (a cycle); device needs reset (1 so far)",
            "VM hostile virtio-net: queue 1: descriptor 0: buffer 0x9000000+0x40 not in the VM's RAM; device needs reset",
            "[linux0] TT ping 5 packets transmitted, 5 packets received",
        ],
        sequence: &[
            "[linux1] TT ok net sha256 match round 1 67108864 bytes",
            "VM linux1 restarting",
            "[linux0] TT ok ping peer round 2",
            "[linux1] TT ok net sha256 match round 2 67108864 bytes",
            "[linux0] TT alive ping",
        ],
        must_not: &[
            "FAIL",
            // Their devices never need a reset (a frame dropped while a
            // receive ring is still empty is logged too, and is fine).
            "VM linux0 virtio-net: queue",
            "VM linux1 virtio-net: queue",
            "Kernel panic",
            "VM linux0 stopped",
            "VM linux1 stopped",
            "VM hostile stopped",
        ],
        timeout_secs: 900,
        ..Scenario::new(if gic == 3 {
            "intervm_hostile_queue_beside_linux_pair_gicv3"
        } else {
            "intervm_hostile_queue_beside_linux_pair_gicv2"
        })
    }
}

/// The default `cargo xtask run` demo has the links (net and vsock): typed
/// into linux0's shell, a ping reaches linux1 at the address the initramfs
/// gave it.
fn demo_ping() -> Scenario {
    Scenario {
        config: Some("boards/qemu-virt/linux.toml"),
        input: &[(
            "[linux0] TESSERA-LINUX-UP linux0",
            b"until ping -c 1 -W 1 10.0.0.2 >/dev/null; do sleep 1; done; ping -c 3 10.0.0.2 | sed 's/^/TT-demo /'\r",
        )],
        must: &[
            "[linux0] tessera-init: link eth0 02:54:53:00:00:01 10.0.0.1/24",
            "[linux1] tessera-init: link eth0 02:54:53:00:00:02 10.0.0.2/24",
            "VM linux0: vsock link 1 at 0xa801000 (INTID 113), CID 3",
            "VM linux1: vsock link 1 at 0xa801000 (INTID 113), CID 4",
            "[linux0] TT-demo 3 packets transmitted, 3 packets received, 0% packet loss",
        ],
        must_not: &["needs reset", "Kernel panic", "VM linux0 stopped", "VM linux1 stopped"],
        timeout_secs: 300,
        ..Scenario::new("intervm_demo_linux_pair_pings")
    }
}

/// Two Debian kernels on a net link: ping, 64 MiB over TCP with matching
/// sha256, a `reboot -f` of the receiver, and the link again after it.
fn net_linux_pair(gic: u32) -> Scenario {
    Scenario {
        gic,
        config: Some("tests/configs/intervm_net.toml"),
        must: &[
            "VM linux0: net link 0 at 0xa800000 (INTID 112), MAC 02:54:53:00:00:01",
            "VM linux1: net link 0 at 0xa800000 (INTID 112), MAC 02:54:53:00:00:02",
            "[linux0] tessera-init: link eth0 02:54:53:00:00:01 10.0.0.1/24",
            "[linux1] tessera-init: link eth0 02:54:53:00:00:02 10.0.0.2/24",
            "[linux0] TT ping 5 packets transmitted, 5 packets received",
            "[rt] timer: cpu 0 worst latency",
            "[linux1] TT net done",
            "[outsider] RESULT link_outsider: 2 passed, 0 failed",
        ],
        sequence: &[
            "[linux0] TT ok ping peer round 1",
            "[linux1] TT ok net sha256 match round 1 67108864 bytes",
            "[linux1] TT rebooting",
            "VM linux1 restarting",
            "[linux0] TT ok ping peer round 2",
            "[linux1] TT ok net sha256 match round 2 67108864 bytes",
            "[linux0] TT alive ping",
        ],
        must_not: &[
            "FAIL",
            "needs reset",
            "Kernel panic",
            "VM linux0 stopped",
            "VM linux1 stopped",
            "VM outsider: net link",
            "VM rt: net link",
        ],
        timeout_secs: 900,
        ..Scenario::new(if gic == 3 {
            "intervm_net_linux_pair_gicv3"
        } else {
            "intervm_net_linux_pair_gicv2"
        })
    }
}
