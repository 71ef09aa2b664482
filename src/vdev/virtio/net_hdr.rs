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
