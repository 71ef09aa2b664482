//! The script the `smmu_` Linux scenarios run inside the guest
//! (`tessera.test=pci`): a VM owning the PCIe host bridge behind the SMMU
//! writes and reads back its virtio-blk-pci disk, takes a DHCP lease on its
//! virtio-net-pci NIC, reboots, and does both again after the reset.

pub const PCI_TEST: &str = r#"
echo "TT nproc=$(nproc)"
common_checks
for d in /sys/bus/pci/devices/*; do echo "TT pci $(basename $d) $(cat $d/vendor):$(cat $d/device)"; done
net() {
    printf '#!/bin/sh\n[ "$1" = bound ] && ip addr add "$ip/$mask" dev "$interface"\nexit 0\n' > /tmp/dhcp.sh
    chmod +x /tmp/dhcp.sh
    ip link set eth0 up || echo "TT FAIL net no eth0"
    udhcpc -i eth0 -n -q -t 10 -s /tmp/dhcp.sh >/dev/null 2>&1 || echo "TT FAIL net no DHCP lease"
    ADDR=$(ip -4 addr show eth0 | awk '/inet / { print $2 }')
    if [ -n "$ADDR" ]; then echo "TT ok net address $ADDR on eth0"; else echo "TT FAIL net no address on eth0"; fi
}
MARK=$(dd if=/dev/vda bs=512 skip=16384 count=1 2>/dev/null | head -c 8)
if [ "$MARK" = "REBOOTED" ]; then
    echo "TT second boot: reboot -f brought $(hostname) back"
    A=$(dd if=/dev/vda bs=512 skip=16385 count=1 2>/dev/null | head -c 64)
    B=$(dd if=/dev/vda bs=1M count=4 2>/dev/null | sha256sum | cut -d' ' -f1)
    if [ "$A" = "$B" ]; then echo "TT ok second boot disk sha256 $B"; else echo "TT FAIL second boot disk sha256 $A != $B"; fi
    net
    echo "TT second boot done"
else
    net
    dd if=/dev/urandom of=/tmp/a bs=1M count=4 2>/dev/null
    A=$(sha256sum /tmp/a | cut -d' ' -f1)
    dd if=/tmp/a of=/dev/vda bs=1M conv=fsync 2>/dev/null
    sync
    echo 3 > /proc/sys/vm/drop_caches
    B=$(dd if=/dev/vda bs=1M count=4 2>/dev/null | sha256sum | cut -d' ' -f1)
    if [ "$A" = "$B" ]; then echo "TT ok disk sha256 $A"; else echo "TT FAIL disk sha256 $A != $B"; fi
    echo -n "$A" | dd of=/dev/vda bs=512 seek=16385 conv=fsync 2>/dev/null
    echo REBOOTED | dd of=/dev/vda bs=512 seek=16384 conv=fsync 2>/dev/null
    sync
    echo "TT rebooting"
    reboot -f
fi
"#;
