//! Property tests of the virtio-net offload header checks against a hostile
//! sender: random header fields over random frames and over well-formed TCP
//! frames with random corruption. Whatever the sender wrote, validation never
//! panics; an accepted checksum request lies inside the frame; an accepted
//! segmentation request yields at most MAX_SEGMENTS segments whose headers
//! are built without failure and whose checksums verify, carrying the payload
//! unchanged; a completed checksum always verifies.
//! Fixed seed and case count, so `cargo test` runs the same cases each time.

use super::net_hdr::testframe::{tcp, tcp_ok};
use super::net_hdr::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::vec::Vec;

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x6e65_7468),
        failure_persistence: None,
        ..Config::default()
    }
}

fn header() -> impl Strategy<Value = NetHdr> {
    (
        prop_oneof![Just(0u8), Just(NEEDS_CSUM), any::<u8>()],
        prop_oneof![Just(GSO_NONE), Just(GSO_TCPV4), Just(GSO_TCPV6), any::<u8>()],
        any::<u16>(),
        prop_oneof![0u16..3000, any::<u16>()],
        prop_oneof![0u16..200, any::<u16>()],
        prop_oneof![0u16..40, any::<u16>()],
    )
        .prop_map(
            |(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)| NetHdr {
                flags,
                gso_type,
                hdr_len,
                gso_size,
                csum_start,
                csum_offset,
            },
        )
}

/// A TCP frame (v4 or v6, with options and a payload), then up to four
/// bytes overwritten anywhere, and maybe cut short.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        0usize..11,
        prop::collection::vec(any::<u8>(), 0..4000),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        prop::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(v6, opts, payload, pokes, cut)| {
            let mut f = tcp(v6, opts * 4, &payload, 0x18);
            for (i, b) in pokes {
                let n = f.len();
                f[i.index(n)] = b;
            }
            if let Some(c) = cut {
                let n = f.len();
                f.truncate(c.index(n + 1));
            }
            f
        })
}

/// Checks what `validate` accepted, segmenting and completing as a receiver
/// without the offloads would get it.
fn check_accepted(o: &Offload, f: &[u8]) -> Result<(), TestCaseError> {
    match *o {
        Offload::None => {}
        Offload::Csum { start, offset } => {
            prop_assert!(usize::from(start) + usize::from(offset) + 2 <= f.len());
            let _ = complete(f, start);
        }
        Offload::Tso(t) => {
            let hl = usize::from(t.hdr_len);
            prop_assert!(hl <= 134 && hl < f.len() && usize::from(t.l4) < hl);
            let chunks: Vec<_> = f[hl..].chunks(usize::from(t.mss)).collect();
            prop_assert!(chunks.len() <= MAX_SEGMENTS);
            let mut joined = Vec::new();
            for (i, seg) in chunks.iter().enumerate() {
                let mut out = [0u8; 134];
                let at = hl + i * usize::from(t.mss);
                prop_assert!(segment_headers(f, &t, i, at, seg, i + 1 == chunks.len(), &mut out).is_some());
                let mut s = out[..hl].to_vec();
                s.extend_from_slice(seg);
                prop_assert!(tcp_ok(&s), "segment {} of {} fails its checksum", i, chunks.len());
                joined.extend_from_slice(seg);
            }
            prop_assert_eq!(&joined[..], &f[hl..]);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn random_headers_over_random_bytes_never_panic(
        h in header(),
        f in prop::collection::vec(any::<u8>(), 0..300),
        features in any::<u64>(),
    ) {
        if let Ok(o) = validate(&h, &f, features) {
            check_accepted(&o, &f)?;
        }
    }

    #[test]
    fn random_headers_over_tcp_frames_are_refused_or_safe(
        h in header(),
        f in frame(),
        features in prop_oneof![Just(OFFLOADS), any::<u64>()],
    ) {
        if let Ok(o) = validate(&h, &f, features) {
            check_accepted(&o, &f)?;
        }
    }

    #[test]
    fn a_completed_checksum_always_verifies(
        v6 in any::<bool>(),
        opts in 0usize..11,
        payload in prop::collection::vec(any::<u8>(), 0..3000),
    ) {
        let mut f = tcp(v6, opts * 4, &payload, 0x18);
        let l4 = if v6 { 54 } else { 34 };
        let field = complete(&f, l4 as u16);
        f[l4 + 16..l4 + 18].copy_from_slice(&field);
        prop_assert!(tcp_ok(&f));
    }
}
