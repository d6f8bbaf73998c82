//! Feeds arbitrary bytes to the frame decoder, in reads of varying size as a
//! socket would deliver them, and parses every frame that comes out.
//!
//! Properties checked: no panic, the receive buffer never grows past the
//! frame limit (plus a little), and a message that parses re-encodes to a
//! frame that parses again to the same bytes.
#![no_main]

use bytes::BytesMut;
use herald_protocol::frame::decode_frame;
use herald_protocol::{Batch, Message};
use libfuzzer_sys::fuzz_target;

/// Small, so that inputs announce oversized frames often.
const MAX_FRAME: usize = 64 * 1024;
/// What the decoder may reserve beyond `MAX_FRAME`.
const SLACK: usize = 64;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, so chunk boundaries get fuzzed too.
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1) * 16;
    let mut buf = BytesMut::new();
    for part in data.chunks(chunk) {
        buf.extend_from_slice(part);
        loop {
            match decode_frame(&mut buf, MAX_FRAME) {
                Ok(Some(frame)) => check(&frame),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(
            buf.capacity() <= MAX_FRAME + SLACK,
            "capacity {}",
            buf.capacity()
        );
    }
});

fn check(frame: &herald_protocol::Frame) {
    let Ok(msg) = Message::decode(frame) else {
        return;
    };
    let mut once = BytesMut::new();
    msg.encode(frame.header.request_id, &mut once);
    let again = decode_frame(&mut once.clone(), usize::MAX)
        .expect("re-encoded frame decodes")
        .expect("re-encoded frame is whole");
    let msg2 = Message::decode(&again).expect("re-encoded message decodes");
    let mut twice = BytesMut::new();
    msg2.encode(frame.header.request_id, &mut twice);
    assert_eq!(once, twice);
    if let Message::Publish { batch, .. }
    | Message::Deliver(herald_protocol::Deliver { batch, .. }) = &msg
    {
        walk(batch);
    }
}

fn walk(batch: &Batch) {
    let _ = batch.last_offset();
    for r in batch.records() {
        let _ = (r.offset, r.timestamp, r.key.len(), r.payload.len());
        for (name, value) in r.headers() {
            let _ = (name.len(), value.len());
        }
    }
}
