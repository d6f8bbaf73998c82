//! Strategies and helpers shared by the integration tests.
//!
//! Each test file compiles this module on its own and uses only part of it,
//! hence the `dead_code` allowance.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use herald_protocol::batch::stamp;
use herald_protocol::frame::{decode_frame, Frame};
use herald_protocol::{BatchBuilder, RecordRef};
use proptest::collection::vec;
use proptest::prelude::*;

/// An owned record, as a test generates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub key: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub payload: Vec<u8>,
    pub timestamp: i64,
}

/// Timestamps are kept within ±10^9 ms of the first record's, because a
/// record stores its time as an i32 delta from the batch's first timestamp
/// (the builder clamps anything further away).
pub fn arb_records(max: usize) -> impl Strategy<Value = Vec<Rec>> {
    (
        -1_000_000_000_000_000i64..1_000_000_000_000_000,
        vec(
            (
                vec(any::<u8>(), 0..16),
                vec((".{0,8}", vec(any::<u8>(), 0..16)), 0..4),
                vec(any::<u8>(), 0..256),
                -1_000_000_000i64..1_000_000_000,
            ),
            1..=max,
        ),
    )
        .prop_map(|(base, recs)| {
            recs.into_iter()
                .map(|(key, headers, payload, dt)| Rec {
                    key,
                    headers,
                    payload,
                    timestamp: base + dt,
                })
                .collect()
        })
}

/// Seals `recs` into one batch.
pub fn build(recs: &[Rec], producer_id: u64, base_sequence: u64) -> Bytes {
    let mut b = BatchBuilder::new();
    for r in recs {
        let headers: Vec<(&str, &[u8])> = r
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        b.push(&RecordRef {
            key: &r.key,
            headers: &headers,
            payload: &r.payload,
            timestamp: r.timestamp,
        });
    }
    b.finish(producer_id, base_sequence)
}

/// A sealed batch and the records in it, stamped with a base offset small
/// enough that `base + count` cannot overflow.
pub fn arb_batch(max: usize) -> impl Strategy<Value = (Bytes, Vec<Rec>)> {
    (
        arb_records(max),
        any::<u64>(),
        any::<u64>(),
        0..u64::MAX / 2,
        any::<i64>(),
    )
        .prop_map(|(recs, pid, seq, base, at)| {
            let mut m = BytesMut::from(&build(&recs, pid, seq)[..]);
            stamp(&mut m, base, at);
            (m.freeze(), recs)
        })
}

/// Decodes exactly one frame from `buf` and asserts nothing is left over.
pub fn one_frame(mut buf: BytesMut, max_frame: usize) -> Frame {
    let frame = decode_frame(&mut buf, max_frame)
        .expect("valid frame")
        .expect("whole frame");
    assert!(buf.is_empty(), "{} bytes left after the frame", buf.len());
    frame
}

/// Parses a hex literal, ignoring whitespace and `|` separators.
pub fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|c| c.is_ascii_hexdigit()).collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
    digits
        .chunks(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            d(p[0]) << 4 | d(p[1])
        })
        .collect()
}
