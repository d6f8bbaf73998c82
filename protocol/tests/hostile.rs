//! Hostile input: whatever bytes a peer sends, decoding returns an error or a
//! value, never panics, and never makes the receive buffer grow past the
//! frame limit.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::{arb_batch, build, Rec};
use herald_protocol::batch::{set_producer, stamp, BATCH_HEADER_LEN, CRC_START};
use herald_protocol::frame::{decode_frame, put_frame, Frame, FrameHeader, FLAG_PUSH};
use herald_protocol::message::DELIVER_PREFIX_LEN;
use herald_protocol::*;
use proptest::collection::vec;
use proptest::prelude::*;

/// A small limit, so that lengths above it are common in generated input.
const MAX_FRAME: usize = 64 * 1024;
/// What `decode_frame` may add to a buffer's capacity beyond `MAX_FRAME`.
const SLACK: usize = 64;

const OPCODES: [u8; 39] = [
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x10, 0x11, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x40, 0x41, 0x42, 0x43, 0x44,
    0x45, 0x46, 0x47, 0x48, 0x49, 0x50, 0x51,
];

fn opcode() -> impl Strategy<Value = Opcode> {
    proptest::sample::select(&OPCODES[..]).prop_map(|b| Opcode::from_u8(b).unwrap())
}

/// Input for the frame decoder: pure noise, a length prefix anywhere in the
/// u32 range before noise, or well-formed frames with arbitrary bodies so
/// that the body decoders are reached too.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..2048),
        (any::<u32>(), vec(any::<u8>(), 0..2048)).prop_map(|(len, rest)| {
            let mut v = len.to_le_bytes().to_vec();
            v.extend(rest);
            v
        }),
        vec(
            (
                opcode(),
                any::<bool>(),
                any::<u64>(),
                vec(any::<u8>(), 0..256)
            ),
            1..8
        )
        .prop_map(|frames| {
            let mut buf = BytesMut::new();
            for (op, push, id, body) in frames {
                put_frame(&mut buf, op, if push { FLAG_PUSH } else { 0 }, id, &body);
            }
            buf.to_vec()
        }),
    ]
}

/// Decodes a message and, if it parsed, checks that re-encoding is stable.
/// (Bytes, not values, are compared: a TopicInfo may carry a NaN.)
fn decode_quietly(frame: &Frame) {
    if let Ok(m) = Message::decode(frame) {
        let mut once = BytesMut::new();
        m.encode(frame.header.request_id, &mut once);
        let mut again = BytesMut::new();
        let f = decode_frame(&mut once.clone(), usize::MAX)
            .unwrap()
            .unwrap();
        Message::decode(&f)
            .unwrap()
            .encode(frame.header.request_id, &mut again);
        assert_eq!(once, again);
        if let Message::Publish { batch, .. } | Message::Deliver(Deliver { batch, .. }) = &m {
            walk(batch);
        }
    }
}

/// Reads every field of a validated batch.
fn walk(batch: &Batch) {
    let _ = (batch.last_offset(), batch.append_time(), batch.crc());
    for r in batch.records() {
        let _ = (r.offset, r.timestamp, r.key.len(), r.payload.len());
        for (name, value) in r.headers() {
            let _ = (name.len(), value.len());
        }
    }
}

/// Feeds `input` to the decoder in `chunk`-sized reads, as a socket would,
/// decoding every frame that comes out, until the decoder fails.
fn feed(input: &[u8], chunk: usize) {
    let mut buf = BytesMut::new();
    for part in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(part);
        loop {
            match decode_frame(&mut buf, MAX_FRAME) {
                Ok(Some(frame)) => decode_quietly(&frame),
                Ok(None) => break,
                Err(_) => return,
            }
            assert!(
                buf.capacity() <= MAX_FRAME + SLACK,
                "cap {}",
                buf.capacity()
            );
        }
        assert!(
            buf.capacity() <= MAX_FRAME + SLACK,
            "cap {}",
            buf.capacity()
        );
    }
}

/// A valid header and body with arbitrary CRC-covered bytes: the CRC and
/// length are fixed up so that validation gets past them to the records.
fn forged_batch() -> impl Strategy<Value = Vec<u8>> {
    (
        0u32..8,
        any::<[u8; 8]>(),
        any::<[u8; 8]>(),
        vec(any::<u8>(), 0..512),
    )
        .prop_map(|(count, base, ts, records)| {
            let mut b = BytesMut::new();
            b.put_slice(&base);
            b.put_u64_le(0);
            b.put_u32_le((BATCH_HEADER_LEN + records.len()) as u32);
            b.put_u32_le(0);
            b.put_slice(&[1, 0, 0, 0]);
            b.put_u32_le(count);
            b.put_slice(&ts);
            b.put_u64_le(0);
            b.put_u64_le(0);
            b.put_slice(&records);
            let crc = crc32c_of(&b[CRC_START..]);
            b[20..24].copy_from_slice(&crc.to_le_bytes());
            b.to_vec()
        })
}

/// The CRC32C the batch header carries, recomputed through the crate's own
/// helper (it fixes the CRC after rewriting the producer fields).
fn crc32c_of(covered: &[u8]) -> u32 {
    let mut b = vec![0u8; CRC_START];
    b.extend_from_slice(covered);
    let pid = u64::from_le_bytes(b[40..48].try_into().unwrap());
    let seq = u64::from_le_bytes(b[48..56].try_into().unwrap());
    set_producer(&mut b, pid, seq);
    u32::from_le_bytes(b[20..24].try_into().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn frame_decoder_survives_anything(input in stream(), chunk in 1usize..4096) {
        feed(&input, chunk);
    }

    /// A length prefix anywhere in the u32 range, with only part of the
    /// frame present: an error if above the limit, otherwise a reservation
    /// no larger than the frame.
    #[test]
    fn length_prefix_never_over_allocates(len in any::<u32>(), have in 0usize..64) {
        let mut buf = BytesMut::new();
        buf.put_u32_le(len);
        buf.put_u8(0x07);
        buf.put_bytes(0, have.min(11));
        buf.put_bytes(0, have.saturating_sub(11));
        let r = decode_frame(&mut buf, MAX_FRAME);
        let total = len as usize + 4;
        if total > MAX_FRAME {
            prop_assert!(matches!(r, Err(WireError::FrameTooLarge { .. })), "{:?}", r);
        }
        prop_assert!(buf.capacity() <= MAX_FRAME + SLACK, "cap {}", buf.capacity());
    }

    #[test]
    fn message_decode_survives_any_body(op in opcode(), push in any::<bool>(), id in any::<u64>(),
                                        body in vec(any::<u8>(), 0..512)) {
        let frame = Frame {
            header: FrameHeader { opcode: op, flags: if push { FLAG_PUSH } else { 0 }, request_id: id },
            body: Bytes::from(body),
        };
        decode_quietly(&frame);
    }

    /// Raw bodies around a batch that is valid or forged: the Publish topic
    /// and the Deliver range are arbitrary.
    #[test]
    fn raw_bodies_survive_any_prefix(prefix in vec(any::<u8>(), 0..40), batch in forged_batch(),
                                     deliver in any::<bool>()) {
        let mut body = prefix;
        body.extend_from_slice(&batch);
        let op = if deliver { Opcode::Deliver } else { Opcode::Publish };
        let frame = Frame {
            header: FrameHeader { opcode: op, flags: 0, request_id: 1 },
            body: Bytes::from(body),
        };
        decode_quietly(&frame);
    }

    #[test]
    fn batch_validate_survives_anything(bytes in vec(any::<u8>(), 0..1024)) {
        if let Ok(b) = Batch::validate(Bytes::from(bytes)) {
            walk(&b);
        }
    }

    #[test]
    fn forged_batches_never_panic(bytes in forged_batch()) {
        if let Ok(b) = Batch::validate(Bytes::from(bytes)) {
            walk(&b);
        }
    }

    /// Any single bit flip from the length field on is caught (the length
    /// by its mismatch, the CRC and everything after it by the CRC). The
    /// first 16 bytes are the broker's stamp, outside the CRC by design.
    #[test]
    fn bit_flips_are_rejected((bytes, _) in arb_batch(20), at in any::<prop::sample::Index>(),
                              bit in 0u8..8) {
        let mut m = bytes.to_vec();
        let i = 16 + at.index(m.len() - 16);
        m[i] ^= 1 << bit;
        prop_assert!(Batch::validate(Bytes::from(m)).is_err(), "flip at {}", i);
    }

    #[test]
    fn truncations_are_rejected((bytes, _) in arb_batch(20), at in any::<prop::sample::Index>()) {
        let cut = at.index(bytes.len());
        prop_assert!(Batch::validate(bytes.slice(..cut)).is_err(), "cut at {}", cut);
    }

    /// A wrong record count with a correct CRC: the records no longer add up.
    #[test]
    fn count_changes_are_rejected((bytes, recs) in arb_batch(20), count in any::<u32>()) {
        prop_assume!(count as usize != recs.len());
        let mut m = bytes.to_vec();
        m[28..32].copy_from_slice(&count.to_le_bytes());
        resign(&mut m);
        prop_assert!(Batch::validate(Bytes::from(m)).is_err());
    }

    /// Bytes appended after the last record, with length and CRC fixed up.
    #[test]
    fn trailing_bytes_are_rejected((bytes, _) in arb_batch(20), extra in vec(any::<u8>(), 1..64)) {
        let mut m = bytes.to_vec();
        m.extend_from_slice(&extra);
        let len = m.len() as u32;
        m[16..20].copy_from_slice(&len.to_le_bytes());
        resign(&mut m);
        prop_assert!(Batch::validate(Bytes::from(m)).is_err());
    }

    /// Stamps and first timestamps at the ends of their ranges are valid
    /// batches (the broker stamps them; the CRC covers only the latter) and
    /// must not make the accessors overflow.
    #[test]
    fn extreme_offsets_and_times_do_not_overflow((bytes, _) in arb_batch(20),
                                                 base in edge_u64(), at in any::<i64>(),
                                                 first_ts in edge_i64()) {
        let mut m = BytesMut::from(&bytes[..]);
        stamp(&mut m, base, at);
        m[32..40].copy_from_slice(&first_ts.to_le_bytes());
        resign(&mut m);
        let batch = Batch::validate(m.freeze()).unwrap();
        walk(&batch);
        let mut body = BytesMut::new();
        body.put_bytes(0, DELIVER_PREFIX_LEN);
        body[8..16].copy_from_slice(&base.to_le_bytes());
        body[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        body.extend_from_slice(batch.bytes());
        let frame = Frame {
            header: FrameHeader { opcode: Opcode::Deliver, flags: FLAG_PUSH, request_id: 0 },
            body: body.freeze(),
        };
        decode_quietly(&frame);
    }
}

/// Any u64, but often within a few of the top of the range.
fn edge_u64() -> impl Strategy<Value = u64> {
    prop_oneof![any::<u64>(), (0u64..64).prop_map(|d| u64::MAX - d)]
}

/// Any i64, but often within 2^32 of either end of the range.
fn edge_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        (0i64..1 << 32).prop_map(|d| i64::MAX - d),
        (0i64..1 << 32).prop_map(|d| i64::MIN + d),
    ]
}

/// Recomputes the CRC of a batch after a test rewrote covered bytes.
fn resign(m: &mut [u8]) {
    let pid = u64::from_le_bytes(m[40..48].try_into().unwrap());
    let seq = u64::from_le_bytes(m[48..56].try_into().unwrap());
    set_producer(m, pid, seq);
}

/// The overflow cases found while writing these tests, pinned as plain
/// tests: a batch stamped near `u64::MAX`, and a first timestamp near
/// `i64::MAX` with a positive record delta.
#[test]
fn offsets_and_times_saturate_at_the_ends() {
    let recs: Vec<Rec> = (0..3)
        .map(|i| Rec {
            key: vec![],
            headers: vec![],
            payload: vec![i],
            timestamp: 1000 + i64::from(i),
        })
        .collect();
    let mut m = BytesMut::from(&build(&recs, 0, 0)[..]);
    stamp(&mut m, u64::MAX - 1, 0);
    m[32..40].copy_from_slice(&(i64::MAX - 1).to_le_bytes());
    resign(&mut m);
    let batch = Batch::validate(m.freeze()).unwrap();
    assert_eq!(batch.last_offset(), u64::MAX);
    let got: Vec<(u64, i64)> = batch.records().map(|r| (r.offset, r.timestamp)).collect();
    assert_eq!(
        got,
        vec![
            (u64::MAX - 1, i64::MAX - 1),
            (u64::MAX, i64::MAX),
            (u64::MAX, i64::MAX)
        ]
    );
}
