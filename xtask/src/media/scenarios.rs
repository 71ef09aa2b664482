//! The QEMU scenarios of the boot media: what a user of a U-Boot board does (flash the
//! disk image, power on) run for real on QEMU `virt`.

use crate::scenarios::{Scenario, BOOT_COMPLETE};

pub fn all() -> Vec<Scenario> {
    vec![Scenario {
        // The default bare-metal demo, packed into the image on the disk; U-Boot's
        // bootstd finds boot.scr on the virtio disk by itself.
        config: Some("boards/qemu-virt/demo.toml"),
        firmware: Some(super::qemu_boot::virt_u_boot),
        must: &[
            "tessera: loading /tessera.bin from virtio 0:1",
            "CPUs online: 4/4",
            BOOT_COMPLETE,
            "[ticker0] hello: start at EL1",
            "[ticker1] hello: start at EL1",
            "[ticker0] hello: tick 3",
            "[ticker1] hello: tick 3",
            "[hostile] hostile: still alive",
        ],
        sequence: &[
            "U-Boot 20",
            "tessera: loading",
            "Tessera",
            BOOT_COMPLETE,
            "[ticker0] hello: tick 3",
        ],
        must_not: &["booti returned", "FAIL", "Kernel panic"],
        timeout_secs: 60,
        ..Scenario::new("uboot_boot_scr_from_virtio_disk_starts_the_demo")
    }]
}
