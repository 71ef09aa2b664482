//! The offload half of virtio-net (virtio 1.2, 5.1.6): the `virtio_net_hdr`
//! a sender puts before each frame, checked as hostile input against the
//! frame and the features the sender negotiated, and what the hypervisor
//! does for a receiver that did not negotiate the same offloads: it
//! completes a partial checksum (no GUEST_CSUM), or cuts a TCP segmentation
//! offload frame into segments of `gso_size` (no GUEST_TSO4/6).
//!
//! Pure functions over bytes: nothing here touches guest memory.

pub const F_CSUM: u64 = 1 << 0;
pub const F_GUEST_CSUM: u64 = 1 << 1;
pub const F_GUEST_TSO4: u64 = 1 << 7;
pub const F_GUEST_TSO6: u64 = 1 << 8;
pub const F_HOST_TSO4: u64 = 1 << 11;
pub const F_HOST_TSO6: u64 = 1 << 12;
/// Every offload this device offers.
pub const OFFLOADS: u64 = F_CSUM | F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6 | F_HOST_TSO4 | F_HOST_TSO6;

pub const NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;

const ETH: usize = 14;
const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const TCP_CSUM: u16 = 16;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;
/// The most segments one offload frame may be cut into: with a 1500-byte
/// MTU Linux needs 45 for 64 KiB, with the IPv4 minimum of 576, 123. A
/// smaller `gso_size` is a sender making the hypervisor (or the peer's
/// stack) work per byte: refused.
pub const MAX_SEGMENTS: usize = 128;

/// The fields of `struct virtio_net_hdr` before `num_buffers`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl NetHdr {
    pub fn parse(b: &[u8; 10]) -> Self {
        let [f, g, h0, h1, s0, s1, c0, c1, o0, o1] = *b;
        Self {
            flags: f,
            gso_type: g,
            hdr_len: u16::from_le_bytes([h0, h1]),
            gso_size: u16::from_le_bytes([s0, s1]),
            csum_start: u16::from_le_bytes([c0, c1]),
            csum_offset: u16::from_le_bytes([o0, o1]),
        }
    }

    /// The header with `num_buffers` as a receiver gets it.
    pub fn bytes(&self, num_buffers: u16) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&num_buffers.to_le_bytes());
        b
    }
}

/// Why a transmitted frame's header was refused (the frame is dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HdrError {
    /// A flag other than NEEDS_CSUM (DATA_VALID is the device's to set).
    Flags(u8),
    /// NEEDS_CSUM without VIRTIO_NET_F_CSUM negotiated.
    CsumNotNegotiated,
    /// csum_start + csum_offset + 2 beyond the frame.
    CsumOutside { start: u16, offset: u16 },
    /// A GSO type not offered, or not negotiated, or with ECN.
    GsoType(u8),
    /// GSO without NEEDS_CSUM.
    GsoWithoutCsum,
    /// gso_size 0, or so small the frame would be more than [`MAX_SEGMENTS`].
    GsoSize(u16),
    /// The frame is not TCP over the IP version its gso_type says, with
    /// the checksum fields pointing at the TCP checksum.
    GsoFrame,
    /// GSO with no payload.
    GsoEmpty,
}

/// What a sender's header asks for, checked against its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offload {
    /// A complete frame.
    None,
    /// The checksum from `start` to the end goes at `start + offset`.
    Csum { start: u16, offset: u16 },
    /// TCP segmentation: headers are `hdr_len` bytes (Ethernet, IP, TCP),
    /// then the payload, cut into `mss`-byte segments.
    Tso(Tso),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tso {
    pub v6: bool,
    /// Offset of the TCP header (= csum_start).
    pub l4: u16,
    /// Ethernet + IP + TCP header bytes.
    pub hdr_len: u16,
    pub mss: u16,
}

/// Checks the header `h` of `frame` (Ethernet onwards) sent by a driver
/// that negotiated `features`.
pub fn validate(h: &NetHdr, frame: &[u8], features: u64) -> Result<Offload, HdrError> {
    if h.flags & !NEEDS_CSUM != 0 {
        return Err(HdrError::Flags(h.flags));
    }
    let csum = h.flags & NEEDS_CSUM != 0;
    // GSO requires the checksum feature too (5.1.3.1).
    let can_csum = features & F_CSUM != 0;
    if csum && !can_csum {
        return Err(HdrError::CsumNotNegotiated);
    }
    if csum {
        let end = usize::from(h.csum_start) + usize::from(h.csum_offset) + 2;
        if end > frame.len() {
            return Err(HdrError::CsumOutside {
                start: h.csum_start,
                offset: h.csum_offset,
            });
        }
    }
    let v6 = match h.gso_type {
        GSO_NONE => {
            return Ok(if csum {
                Offload::Csum {
                    start: h.csum_start,
                    offset: h.csum_offset,
                }
            } else {
                Offload::None
            })
        }
        GSO_TCPV4 if can_csum && features & F_HOST_TSO4 != 0 => false,
        GSO_TCPV6 if can_csum && features & F_HOST_TSO6 != 0 => true,
        t => return Err(HdrError::GsoType(t)),
    };
    if !csum {
        return Err(HdrError::GsoWithoutCsum);
    }
    let l4 = tcp_offset(frame, v6).ok_or(HdrError::GsoFrame)?;
    if usize::from(h.csum_start) != l4 || h.csum_offset != TCP_CSUM {
        return Err(HdrError::GsoFrame);
    }
    let thl = frame
        .get(l4 + 12)
        .map(|b| usize::from(b >> 4) * 4)
        .ok_or(HdrError::GsoFrame)?;
    let hdr_len = l4 + thl;
    if thl < 20 || hdr_len > frame.len() {
        return Err(HdrError::GsoFrame);
    }
    let payload = frame.len() - hdr_len;
    if payload == 0 {
        return Err(HdrError::GsoEmpty);
    }
    let mss = usize::from(h.gso_size);
    if mss == 0 || payload.div_ceil(mss) > MAX_SEGMENTS {
        return Err(HdrError::GsoSize(h.gso_size));
    }
    // Both fit in u16: hdr_len <= 14 + 60 + 60, l4 < hdr_len.
    Ok(Offload::Tso(Tso {
        v6,
        l4: l4 as u16,
        hdr_len: hdr_len as u16,
        mss: h.gso_size,
    }))
}

/// The offset of the TCP header in an Ethernet frame carrying TCP over
/// IPv4 (`v6` false) or IPv6 without extension headers.
fn tcp_offset(frame: &[u8], v6: bool) -> Option<usize> {
    let et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(ETH..)?;
    let (want, l4, proto) = if v6 {
        (ETH_IPV6, ETH + 40, *ip.get(6)?)
    } else {
        let ihl = usize::from(ip.first()? & 0xf) * 4;
        if ihl < 20 {
            return None;
        }
        (ETH_IPV4, ETH + ihl, *ip.get(9)?)
    };
    let version = ip.first()? >> 4;
    (et == want && version == if v6 { 6 } else { 4 } && proto == IPPROTO_TCP && l4 + 20 <= frame.len())
        .then_some(l4)
}

/// The ones' complement sum (RFC 1071) of `data` added to `sum`, as if
/// `data` started at an even offset. Not folded.
pub fn sum(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        if let [a, b, c, d] = *w {
            acc += u64::from(u32::from_be_bytes([a, b, c, d]));
        }
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    if let Some(t) = tail.get_mut(..rest.len()) {
        t.copy_from_slice(rest);
    }
    acc + u64::from(u32::from_be_bytes(tail))
}

/// Folds a sum to 16 bits and complements it: the checksum field.
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Completes a partial checksum: the field at `start + offset` holds the
/// pseudo-header sum (as Linux leaves it); the result covers `[start..]`.
/// Returns the field's new bytes (`start` in the frame was checked by
/// [`validate`]).
pub fn complete(frame: &[u8], start: u16) -> [u8; 2] {
    let c = frame.get(usize::from(start)..).map_or(0, |d| fold(sum(0, d)));
    // 0 and 0xffff are the same in ones' complement; UDP reserves 0.
    let c = if c == 0 { 0xffff } else { c };
    c.to_be_bytes()
}

/// Writes into `out` (at least `t.hdr_len` bytes) the headers of segment
/// `index` of `frame`, whose payload is `payload` bytes from `at`:
/// IP lengths, IPv4 ID and header checksum, TCP sequence, flags and a
/// complete TCP checksum over the headers and `seg` (the payload bytes).
pub fn segment_headers(
    frame: &[u8],
    t: &Tso,
    index: usize,
    at: usize,
    seg: &[u8],
    last: bool,
    out: &mut [u8],
) -> Option<()> {
    let hl = usize::from(t.hdr_len);
    let l4 = usize::from(t.l4);
    let h = out.get_mut(..hl)?;
    h.copy_from_slice(frame.get(..hl)?);
    let tcp_len = hl - l4 + seg.len();
    let mut pseudo = 0u64;
    if t.v6 {
        let plen = u16::try_from(tcp_len).ok()?;
        h.get_mut(ETH + 4..ETH + 6)?.copy_from_slice(&plen.to_be_bytes());
        pseudo = sum(pseudo, h.get(ETH + 8..ETH + 40)?);
    } else {
        let tot = u16::try_from(l4 - ETH + tcp_len).ok()?;
        h.get_mut(ETH + 2..ETH + 4)?.copy_from_slice(&tot.to_be_bytes());
        let id = u16::from_be_bytes([*h.get(ETH + 4)?, *h.get(ETH + 5)?]).wrapping_add(index as u16);
        h.get_mut(ETH + 4..ETH + 6)?.copy_from_slice(&id.to_be_bytes());
        h.get_mut(ETH + 10..ETH + 12)?.copy_from_slice(&[0, 0]);
        let c = fold(sum(0, h.get(ETH..l4)?));
        h.get_mut(ETH + 10..ETH + 12)?.copy_from_slice(&c.to_be_bytes());
        pseudo = sum(pseudo, h.get(ETH + 12..ETH + 20)?);
    }
    pseudo += u64::from(IPPROTO_TCP) + tcp_len as u64;
    let tcp = h.get_mut(l4..)?;
    let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?).wrapping_add((at - hl) as u32);
    tcp.get_mut(4..8)?.copy_from_slice(&seq.to_be_bytes());
    let flags = tcp.get_mut(13)?;
    if !last {
        *flags &= !(TCP_FIN | TCP_PSH);
    }
    if index != 0 {
        *flags &= !TCP_CWR;
    }
    tcp.get_mut(16..18)?.copy_from_slice(&[0, 0]);
    // The header is an even number of bytes (4 * data offset): the
    // payload's sum continues at an even offset.
    let c = fold(sum(sum(pseudo, tcp), seg));
    tcp.get_mut(16..18)?.copy_from_slice(&c.to_be_bytes());
    Some(())
}

/// The header a receiver that negotiated `features` gets for a frame sent
/// with `o`, and whether the hypervisor must first complete the checksum
/// (`Csum`) or segment the frame (`Tso`) for it.
pub fn for_receiver(o: &Offload, features: u64) -> (NetHdr, Offload) {
    let guest_csum = features & F_GUEST_CSUM != 0;
    match *o {
        Offload::None => (NetHdr::default(), Offload::None),
        Offload::Csum { start, offset } if guest_csum => (
            NetHdr {
                flags: NEEDS_CSUM,
                csum_start: start,
                csum_offset: offset,
                ..NetHdr::default()
            },
            Offload::None,
        ),
        Offload::Csum { .. } => (NetHdr::default(), *o),
        Offload::Tso(t) => {
            let tso = if t.v6 { F_GUEST_TSO6 } else { F_GUEST_TSO4 };
            if guest_csum && features & tso != 0 {
                let h = NetHdr {
                    flags: NEEDS_CSUM,
                    gso_type: if t.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
                    hdr_len: t.hdr_len,
                    gso_size: t.mss,
                    csum_start: t.l4,
                    csum_offset: TCP_CSUM,
                };
                (h, Offload::None)
            } else {
                // Segments get complete checksums: valid for any receiver.
                (NetHdr::default(), *o)
            }
        }
    }
}

/// Frames for the tests: Ethernet + IPv4/IPv6 + TCP with a payload.
#[cfg(test)]
pub mod testframe {
    use super::*;
    use std::vec::Vec;

    /// A TCP frame as Linux hands one over for offload: the TCP checksum
    /// field holds the pseudo-header sum (CHECKSUM_PARTIAL).
    pub fn tcp(v6: bool, opts: usize, payload: &[u8], flags: u8) -> Vec<u8> {
        let mut f = std::vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        f.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
        let thl = 20 + opts;
        let tcp_len = thl + payload.len();
        let pseudo = if v6 {
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(tcp_len as u16).to_be_bytes());
            f.extend_from_slice(&[IPPROTO_TCP, 64]);
            f.extend((0..32).map(|i| i as u8));
            sum(0, &f[ETH + 8..ETH + 40])
        } else {
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
            f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, IPPROTO_TCP, 0, 0]);
            f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            let c = fold(sum(0, &f[ETH..ETH + 20]));
            f[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
            sum(0, &f[ETH + 12..ETH + 20])
        };
        let pseudo = !fold(pseudo + u64::from(IPPROTO_TCP) + tcp_len as u64);
        f.extend_from_slice(&[0x13, 0x88, 0x14, 0x51]);
        f.extend_from_slice(&0x1000_0000u32.to_be_bytes());
        f.extend_from_slice(&0u32.to_be_bytes());
        f.extend_from_slice(&[((thl / 4) as u8) << 4, flags, 0xff, 0xff]);
        f.extend_from_slice(&pseudo.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend(std::iter::repeat_n(1u8, opts));
        f.extend_from_slice(payload);
        f
    }

    /// Whether the TCP checksum of a complete frame is right.
    pub fn tcp_ok(f: &[u8]) -> bool {
        let v6 = f[12] == 0x86;
        let l4 = if v6 {
            ETH + 40
        } else {
            ETH + usize::from(f[ETH] & 0xf) * 4
        };
        let tcp_len = f.len() - l4;
        let p = if v6 {
            sum(0, &f[ETH + 8..ETH + 40])
        } else {
            sum(0, &f[ETH + 12..ETH + 20])
        };
        fold(sum(p + u64::from(IPPROTO_TCP) + tcp_len as u64, &f[l4..])) == 0
    }

    pub fn hdr(flags: u8, gso_type: u8, gso_size: u16, start: u16, offset: u16) -> NetHdr {
        NetHdr {
            flags,
            gso_type,
            hdr_len: 0,
            gso_size,
            csum_start: start,
            csum_offset: offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testframe::{hdr, tcp, tcp_ok};
    use super::*;
    use std::vec::Vec;

    const ALL: u64 = OFFLOADS;
    const PSH_FIN: u8 = TCP_PSH | TCP_FIN;

    #[test]
    fn a_plain_frame_needs_nothing() {
        let f = tcp(false, 0, b"abc", 0);
        assert_eq!(validate(&NetHdr::default(), &f, 0), Ok(Offload::None));
    }

    #[test]
    fn flags_other_than_needs_csum_are_refused() {
        let f = tcp(false, 0, b"abc", 0);
        for flags in [2, 4, 0x80, 3] {
            assert_eq!(
                validate(&hdr(flags, 0, 0, 34, 16), &f, ALL),
                Err(HdrError::Flags(flags))
            );
        }
    }

    #[test]
    fn needs_csum_without_the_feature_is_refused() {
        let f = tcp(false, 0, b"abc", 0);
        assert_eq!(
            validate(&hdr(NEEDS_CSUM, 0, 0, 34, 16), &f, ALL & !F_CSUM),
            Err(HdrError::CsumNotNegotiated)
        );
    }

    #[test]
    fn a_checksum_field_beyond_the_frame_is_refused() {
        let f = tcp(false, 0, b"", 0);
        let n = f.len() as u16;
        assert_eq!(
            validate(&hdr(NEEDS_CSUM, 0, 0, n - 2, 0), &f, ALL),
            Ok(Offload::Csum {
                start: n - 2,
                offset: 0
            })
        );
        for (start, offset) in [(n - 1, 0), (n, 0), (0, n - 1), (0xffff, 0xffff), (34, 0xfff0)] {
            assert_eq!(
                validate(&hdr(NEEDS_CSUM, 0, 0, start, offset), &f, ALL),
                Err(HdrError::CsumOutside { start, offset })
            );
        }
    }

    #[test]
    fn gso_types_not_offered_or_not_negotiated_are_refused() {
        let f = tcp(false, 0, &[7; 3000], 0);
        for t in [3, 5, 0x81, 0x84, 2, 0xff] {
            assert_eq!(
                validate(&hdr(NEEDS_CSUM, t, 1000, 34, 16), &f, ALL),
                Err(HdrError::GsoType(t))
            );
        }
        assert_eq!(
            validate(&hdr(NEEDS_CSUM, GSO_TCPV4, 1000, 34, 16), &f, ALL & !F_HOST_TSO4),
            Err(HdrError::GsoType(GSO_TCPV4))
        );
        // TSO needs the checksum feature as well.
        assert_eq!(
            validate(&hdr(0, GSO_TCPV4, 1000, 34, 16), &f, F_HOST_TSO4),
            Err(HdrError::GsoType(GSO_TCPV4))
        );
        assert_eq!(
            validate(&hdr(0, GSO_TCPV4, 1000, 34, 16), &f, ALL),
            Err(HdrError::GsoWithoutCsum)
        );
    }

    #[test]
    fn gso_size_zero_or_too_small_is_refused() {
        let f = tcp(false, 0, &[7; 3000], 0);
        assert_eq!(
            validate(&hdr(NEEDS_CSUM, GSO_TCPV4, 0, 34, 16), &f, ALL),
            Err(HdrError::GsoSize(0))
        );
        assert_eq!(
            validate(&hdr(NEEDS_CSUM, GSO_TCPV4, 23, 34, 16), &f, ALL),
            Err(HdrError::GsoSize(23))
        );
        assert!(validate(&hdr(NEEDS_CSUM, GSO_TCPV4, 24, 34, 16), &f, ALL).is_ok());
    }

    #[test]
    fn a_gso_frame_must_be_tcp_over_the_ip_it_claims() {
        let f4 = tcp(false, 0, &[7; 3000], 0);
        let f6 = tcp(true, 0, &[7; 3000], 0);
        // IPv6 frame sent as TCPv4, and the other way round.
        assert_eq!(
            validate(&hdr(NEEDS_CSUM, GSO_TCPV4, 1000, 54, 16), &f6, ALL),
            Err(HdrError::GsoFrame)
        );
        assert_eq!(
            validate(&hdr(NEEDS_CSUM, GSO_TCPV6, 1000, 34, 16), &f4, ALL),
            Err(HdrError::GsoFrame)
        );
        // UDP inside, a short IHL, the checksum pointing elsewhere.
        let mut udp = f4.clone();
        udp[ETH + 9] = 17;
        assert_eq!(
            validate(&hdr(NEEDS_CSUM, GSO_TCPV4, 1000, 34, 16), &udp, ALL),
            Err(HdrError::GsoFrame)
        );
        let mut ihl = f4.clone();
        ihl[ETH] = 0x44;
        assert_eq!(
            validate(&hdr(NEEDS_CSUM, GSO_TCPV4, 1000, 34, 16), &ihl, ALL),
            Err(HdrError::GsoFrame)
        );
        assert_eq!(
            validate(&hdr(NEEDS_CSUM, GSO_TCPV4, 1000, 34, 6), &f4, ALL),
            Err(HdrError::GsoFrame)
        );
        assert_eq!(
            validate(&hdr(NEEDS_CSUM, GSO_TCPV4, 1000, 30, 20), &f4, ALL),
            Err(HdrError::GsoFrame)
        );
        // A TCP data offset below 5, or past the frame.
        let mut doff = f4.clone();
        doff[34 + 12] = 0x40;
        assert_eq!(
            validate(&hdr(NEEDS_CSUM, GSO_TCPV4, 1000, 34, 16), &doff, ALL),
            Err(HdrError::GsoFrame)
        );
        let short = tcp(false, 40, b"", 0);
        let cut = &short[..short.len() - 8];
        assert_eq!(
            validate(&hdr(NEEDS_CSUM, GSO_TCPV4, 1000, 34, 16), cut, ALL),
            Err(HdrError::GsoFrame)
        );
        // Headers only: nothing to segment.
        assert_eq!(
            validate(&hdr(NEEDS_CSUM, GSO_TCPV4, 1000, 34, 16), &short, ALL),
            Err(HdrError::GsoEmpty)
        );
    }

    #[test]
    fn a_good_tso_frame_is_taken_with_its_header_length() {
        let f = tcp(true, 12, &[7; 3000], 0);
        assert_eq!(
            validate(&hdr(NEEDS_CSUM, GSO_TCPV6, 1448, 54, 16), &f, ALL),
            Ok(Offload::Tso(Tso {
                v6: true,
                l4: 54,
                hdr_len: 54 + 32,
                mss: 1448
            }))
        );
    }

    #[test]
    fn a_completed_checksum_verifies() {
        for v6 in [false, true] {
            for len in [0, 1, 2, 3, 1000, 1001] {
                let mut f = tcp(v6, 0, &(0..len).map(|i| (i * 7) as u8).collect::<Vec<_>>(), 0);
                let l4 = if v6 { 54 } else { 34 };
                let field = complete(&f, l4 as u16);
                f[l4 + 16..l4 + 18].copy_from_slice(&field);
                assert!(tcp_ok(&f), "v6 {v6} len {len}");
            }
        }
    }

    #[test]
    fn segments_carry_their_own_lengths_sequence_flags_and_checksums() {
        for v6 in [false, true] {
            let payload: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
            let f = tcp(v6, 12, &payload, PSH_FIN | TCP_CWR | 0x10);
            let l4 = if v6 { 54 } else { 34 };
            let gso = if v6 { GSO_TCPV6 } else { GSO_TCPV4 };
            let Ok(Offload::Tso(t)) = validate(&hdr(NEEDS_CSUM, gso, 1000, l4, 16), &f, ALL) else {
                panic!("refused")
            };
            let hl = usize::from(t.hdr_len);
            let mut joined = Vec::new();
            let chunks: Vec<_> = f[hl..].chunks(1000).collect();
            for (i, seg) in chunks.iter().enumerate() {
                let mut out = [0u8; 160];
                let last = i + 1 == chunks.len();
                segment_headers(&f, &t, i, hl + 1000 * i, seg, last, &mut out).unwrap();
                let mut s = out[..hl].to_vec();
                s.extend_from_slice(seg);
                assert!(tcp_ok(&s), "segment {i} checksum");
                let l4 = usize::from(t.l4);
                let seq = u32::from_be_bytes(s[l4 + 4..l4 + 8].try_into().unwrap());
                assert_eq!(seq, 0x1000_0000 + 1000 * i as u32);
                let fl = s[l4 + 13];
                assert_eq!(fl & PSH_FIN != 0, last, "PSH/FIN only on the last");
                assert_eq!(fl & TCP_CWR != 0, i == 0, "CWR only on the first");
                assert_ne!(fl & 0x10, 0, "ACK on every segment");
                if v6 {
                    assert_eq!(usize::from(u16::from_be_bytes([s[18], s[19]])), s.len() - 54);
                } else {
                    assert_eq!(usize::from(u16::from_be_bytes([s[16], s[17]])), s.len() - ETH);
                    assert_eq!(fold(sum(0, &s[ETH..l4])), 0, "IPv4 header checksum");
                    assert_eq!(u16::from_be_bytes([s[18], s[19]]), 0x1234 + i as u16, "IPv4 ID");
                }
                joined.extend_from_slice(seg);
            }
            assert_eq!(joined, payload);
        }
    }

    #[test]
    fn receivers_get_what_they_negotiated() {
        let csum = Offload::Csum {
            start: 34,
            offset: 16,
        };
        let tso = Offload::Tso(Tso {
            v6: false,
            l4: 34,
            hdr_len: 54,
            mss: 1448,
        });
        assert_eq!(
            for_receiver(&Offload::None, ALL),
            (NetHdr::default(), Offload::None)
        );
        assert_eq!(
            for_receiver(&csum, F_GUEST_CSUM),
            (hdr(NEEDS_CSUM, 0, 0, 34, 16), Offload::None)
        );
        assert_eq!(for_receiver(&csum, 0), (NetHdr::default(), csum));
        let (h, work) = for_receiver(&tso, F_GUEST_CSUM | F_GUEST_TSO4);
        assert_eq!(
            (h.gso_type, h.gso_size, h.hdr_len, h.flags),
            (GSO_TCPV4, 1448, 54, NEEDS_CSUM)
        );
        assert_eq!(work, Offload::None);
        // TSO6 only, or TSO4 without GUEST_CSUM: segmented here.
        assert_eq!(for_receiver(&tso, F_GUEST_CSUM | F_GUEST_TSO6).1, tso);
        assert_eq!(for_receiver(&tso, F_GUEST_TSO4).1, tso);
    }
}
