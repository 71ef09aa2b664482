//! The guest side of `[[link]]` in the initramfs xtask builds: `/init`
//! sources [`LINKS_SH`] to bring up every link interface with an address,
//! and the `intervm_*` scenarios run the scripts in [`SCRIPTS`]
//! (`tessera.test=NAME`), which print `TT ...` lines.
//!
//! Addresses: `tessera.ip=ADDR/BITS` on the kernel command line sets the
//! first link interface's; otherwise a default MAC `02:54:53:LL:00:PP`
//! (link LL, position PP on it, see xtask/src/links.rs) gives `10.0.LL.PP/24`.

/// Sourced by `/init` after the modules are loaded.
pub const LINKS_SH: &str = r#"
ip link set lo up 2>/dev/null
tessera_ip=
for arg in $(cat /proc/cmdline); do
    case "$arg" in tessera.ip=*) tessera_ip="${arg#tessera.ip=}" ;; esac
done
for d in /sys/class/net/*; do
    i=${d##*/}
    # Tessera's link devices report vendor "TSRA".
    [ "$(cat $d/device/vendor 2>/dev/null)" = "0x41525354" ] || continue
    a=$tessera_ip
    tessera_ip=
    if [ -z "$a" ]; then
        IFS=: read m0 m1 m2 ll m4 pp < $d/address
        [ "$m0:$m1:$m2:$m4" = "02:54:53:00" ] && a="10.0.$((0x$ll)).$((0x$pp))/24"
    fi
    ip link set "$i" up
    if [ -n "$a" ]; then
        ip addr add "$a" dev "$i"
        echo "tessera-init: link $i $(cat $d/address) $a"
    else
        echo "tessera-init: link $i $(cat $d/address) up, no address (give tessera.ip=ADDR/BITS)"
    fi
done
"#;

/// Scripts the `intervm_*` scenarios run inside Linux.
pub const SCRIPTS: &[(&str, &str)] = &[
    ("net_send", NET_SEND),
    ("net_recv", NET_RECV),
    ("net_bench", NET_BENCH),
    ("net_sink", NET_SINK),
    ("vsock_send", VSOCK_SEND),
    ("vsock_recv", VSOCK_RECV),
    ("vsock_bench", VSOCK_BENCH),
    ("vsock_sink", VSOCK_SINK),
];

/// Shared by the scripts: wait (bounded) for the peer, time things.
const NET_COMMON: &str = r#"
# Microseconds from adjtimex (busybox's date has no %N, /proc/uptime is 10 ms).
now() { adjtimex 2>/dev/null | awk '/tv_sec/ { s = $2 } /tv_usec/ { u = $2 } END { if (s) printf "%d.%06d\n", s, u }' | grep . || cut -d' ' -f1 /proc/uptime; }
# Waits until $1 answers a ping (at most $2 tries of one second).
wait_peer() {
    n=0
    while [ $n -lt $2 ]; do
        ping -c 1 -W 1 "$1" >/dev/null 2>&1 && return 0
        n=$((n+1))
    done
    return 1
}
"#;

/// linux0: pings the peer, sends it a 64 MiB file over TCP (then its
/// sha256 and the round on a second port); twice, the peer rebooting in
/// between; then keeps pinging.
const NET_SEND: &str = r#"
PEER=10.0.0.2
MIB=${tessera_mib:-64}
for arg in $(cat /proc/cmdline); do case "$arg" in tessera.mib=*) MIB="${arg#tessera.mib=}" ;; esac; done
dd if=/dev/urandom of=/tmp/a bs=1M count=$MIB 2>/dev/null
SHA=$(sha256sum /tmp/a | cut -d' ' -f1)
echo "TT net file $MIB MiB sha256 $SHA"
for round in 1 2; do
    if [ $round = 2 ]; then
        # The peer reboots after round 1: wait until it is gone, then back.
        n=0
        while [ $n -lt 60 ] && ping -c 1 -W 1 $PEER >/dev/null 2>&1; do n=$((n+1)); sleep 1; done
    fi
    if wait_peer $PEER 600; then echo "TT ok ping peer round $round"; else echo "TT FAIL no ping reply round $round"; fi
    ping -c 5 $PEER | grep -E 'transmitted|min/avg' | sed 's/^/TT ping /'
    T0=$(now)
    n=0
    until nc $PEER 5000 < /tmp/a; do n=$((n+1)); [ $n -gt 120 ] && break; sleep 1; done
    T1=$(now)
    echo "TT net sent round $round in $(awk "BEGIN { print $T1 - $T0 }") s"
    n=0
    until echo "$SHA $round" | nc $PEER 5001; do n=$((n+1)); [ $n -gt 120 ] && break; sleep 1; done
done
i=0
while [ $i -lt 600 ]; do
    ping -c 1 -W 2 $PEER >/dev/null 2>&1 && echo "TT alive ping $i"
    sleep 1
    i=$((i+1))
done
"#;

/// linux1: receives the file, checks it against the sha256 sent after it,
/// and reboots after round 1.
const NET_RECV: &str = r#"
echo "TT net listening"
nc -l -p 5000 > /tmp/recv
GOT=$(sha256sum /tmp/recv | cut -d' ' -f1)
set -- $(nc -l -p 5001)
if [ "$GOT" = "$1" ]; then
    echo "TT ok net sha256 match round $2 $(wc -c < /tmp/recv) bytes"
else
    echo "TT FAIL net sha256 round $2: got $GOT want $1"
fi
rm -f /tmp/recv
if [ "$2" = 1 ]; then echo "TT rebooting"; reboot -f; fi
echo "TT net done"
"#;

/// `cargo xtask bench` (linux0): ping and TCP to the peer and over loopback,
/// timed with the guest clock (instructions under icount). TCP is iperf3's
/// own figure (the receiver's) for 32 MiB in 128 KiB writes, in MB/s.
const NET_BENCH: &str = r#"
PEER=10.0.0.2
# No entropy source: the first /dev/urandom read runs the kernel's jitter
# generator until the CRNG is ready (iperf3 reads it); until then every
# syscall pays for an unseeded get_random_u16. Both before timing anything.
head -c 1 /dev/urandom > /dev/null
wait_peer $PEER 600 || echo "TT FAIL no ping reply"
avg() { ping -c 20 "$1" | sed -n 's/.*min\/avg\/max = [0-9.]*\/\([0-9.]*\)\/.*/\1/p'; }
# The peer's server is up (its CRNG ready) before anything is timed: its
# instructions count in this VM's clock too.
n=0
until iperf3 -c $PEER -p 5201 -n 1K > /dev/null 2>&1; do n=$((n+1)); [ $n -gt 120 ] && break; sleep 1; done
echo "TT bench ping_lo_ms $(avg 127.0.0.1)"
echo "TT bench ping_link_ms $(avg $PEER)"
tcp() {
    n=0
    until iperf3 -c "$1" -p "$2" -n 32M -f M > /tmp/iperf 2>&1; do n=$((n+1)); [ $n -gt 60 ] && break; sleep 1; done
    awk '/receiver/ { for (i = 1; i < NF; i++) if ($(i + 1) == "MBytes/sec") printf "%.3f", $i * 1.048576 }' /tmp/iperf
}
iperf3 -s -p 5202 -D
sleep 1
echo "TT bench tcp_lo_mbs $(tcp 127.0.0.1 5202)"
P0=$(cat /sys/class/net/eth0/statistics/tx_packets)
echo "TT bench tcp_link_mbs $(tcp $PEER 5201)"
P1=$(cat /sys/class/net/eth0/statistics/tx_packets)
echo "TT bench link mtu $(cat /sys/class/net/eth0/mtu), $((P1 - P0)) frames sent for 32 MiB"
echo "TT bench done"
"#;

/// `cargo xtask bench` (linux1): the iperf3 server of the link's row.
const NET_SINK: &str = r#"
head -c 1 /dev/urandom > /dev/null
iperf3 -s -p 5201
"#;

/// linux0 (CID 3) on a vsock link: a CID not on the link is refused; a
/// 64 MiB file goes to linux1 (CID 4) over `socat` twice, linux1 rebooting
/// in between; an idle connection open across that reboot is reset, not
/// left hanging. Then keeps the link busy.
const VSOCK_SEND: &str = r#"
PEER=4
MIB=64
for arg in $(cat /proc/cmdline); do case "$arg" in tessera.mib=*) MIB="${arg#tessera.mib=}" ;; esac; done
# vc PORT: retry a connect until the peer listens (bounded).
vc() { n=0; until socat -u "$2" VSOCK-CONNECT:$PEER:$1; do n=$((n+1)); [ $n -gt 300 ] && return 1; sleep 1; done; }
dd if=/dev/urandom of=/tmp/a bs=1M count=$MIB 2>/dev/null
SHA=$(sha256sum /tmp/a | cut -d' ' -f1)
echo "TT vsock file $MIB MiB sha256 $SHA"
if timeout 20 socat -u - VSOCK-CONNECT:99:5000 < /dev/null 2>/tmp/e; then
    echo "TT FAIL connect to CID 99 (not on the link) succeeded"
else
    echo "TT ok CID 99 not on the link: $(tail -c 80 /tmp/e)"
fi
for round in 1 2; do
    T0=$(now)
    vc 5000 OPEN:/tmp/a || echo "TT FAIL vsock send round $round"
    T1=$(now)
    echo "TT vsock sent round $round in $(awk "BEGIN { print $T1 - $T0 }") s"
    if [ $round = 1 ]; then
        # An idle connection to linux1, open while it reboots: it must end.
        ( socat -d -d -u VSOCK-CONNECT:$PEER:5002 - > /dev/null 2> /tmp/idle.log
          if grep -q "starting data transfer loop" /tmp/idle.log; then
              echo "TT ok idle vsock connection reset after the peer went away"
          else
              echo "TT FAIL idle vsock connection never opened: $(tail -c 120 /tmp/idle.log)"
          fi ) &
        sleep 2
    fi
    echo "$SHA $round" > /tmp/s
    vc 5001 OPEN:/tmp/s || echo "TT FAIL vsock sha round $round"
done
i=0
while [ $i -lt 600 ]; do
    echo hello | socat -u - VSOCK-CONNECT:$PEER:5003 2>/dev/null && echo "TT alive vsock $i"
    # CID 5: not on the pair's link, or a VM that never takes a packet.
    timeout 10 socat -u - VSOCK-CONNECT:5:1 < /dev/null 2>/dev/null
    sleep 1
    i=$((i+1))
done
"#;

/// linux1 (CID 4): receives the file, checks it against the sha256 sent
/// after it, keeps an idle connection open and reboots after round 1.
const VSOCK_RECV: &str = r#"
echo "TT vsock listening"
sleep 100000 | socat -u - VSOCK-LISTEN:5002 &
socat -u VSOCK-LISTEN:5000 CREATE:/tmp/recv
GOT=$(sha256sum /tmp/recv | cut -d' ' -f1)
set -- $(socat -u VSOCK-LISTEN:5001 -)
if [ "$GOT" = "$1" ]; then
    echo "TT ok vsock sha256 match round $2 $(wc -c < /tmp/recv) bytes"
else
    echo "TT FAIL vsock sha256 round $2: got $GOT want $1"
fi
rm -f /tmp/recv
if [ "$2" = 1 ]; then echo "TT rebooting"; reboot -f; fi
echo "TT vsock done"
while true; do socat -u VSOCK-LISTEN:5003 - > /dev/null; done
"#;

/// `cargo xtask bench` (linux0): 32 MiB through `socat` to the peer (CID 4)
/// and over vsock loopback (CID 1) inside the VM.
const VSOCK_BENCH: &str = r#"
vs() {
    n=0
    until socat -u /dev/null VSOCK-CONNECT:$1:$2 2>/dev/null; do n=$((n+1)); [ $n -gt 300 ] && break; sleep 1; done
    # The listener loop restarts socat after the probe: a transfer it
    # refused (timed at nearly nothing) is tried again, not reported.
    n=0
    T0=$(now)
    until dd if=/dev/zero bs=64k count=512 2>/dev/null | socat -u - VSOCK-CONNECT:$1:$2 2>/dev/null; do
        n=$((n+1)); [ $n -gt 300 ] && break; sleep 1; T0=$(now)
    done
    T1=$(now)
    awk "BEGIN { printf \"%.3f\", 32 * 1.048576 / ($T1 - $T0) }"
}
( while true; do socat -u VSOCK-LISTEN:6001 - > /dev/null; done ) &
echo "TT bench vsock_lo_mbs $(vs 1 6001)"
echo "TT bench vsock_link_mbs $(vs 4 6000)"
echo "TT bench done"
"#;

/// `cargo xtask bench` (linux1): sinks every connection to port 6000.
const VSOCK_SINK: &str = r#"
while true; do socat -u VSOCK-LISTEN:6000 - > /dev/null; done
"#;

/// What goes into the initramfs besides `assets.rs`'s own files:
/// (path, mode, contents).
pub fn files() -> Vec<(String, u32, String)> {
    let mut v = vec![("etc/tessera/links.sh".to_owned(), 0o644, LINKS_SH.to_owned())];
    for (name, body) in SCRIPTS {
        v.push((
            format!("etc/tessera/{name}.sh"),
            0o755,
            format!("{NET_COMMON}{body}"),
        ));
    }
    v
}

/// Bytes that must rebuild the cached initramfs when they change.
pub fn hash_input() -> String {
    files().into_iter().map(|(p, _, s)| p + &s).collect()
}
