//! The shared byte-level vectors (`vectors.json`, beside this file): the
//! JavaScript client's tests (js/test/unit/vectors.test.js) check the same file,
//! so the two implementations of the wire format cannot drift apart.
//!
//! Each frame vector gives a body as serde_json renders the Rust type; this
//! test builds the message from it, encodes it and compares the bytes, then
//! decodes the bytes and compares the message. The bytes of the vectors
//! that `pinned.rs` also holds are the same, written out by hand there.

mod common;

use bytes::{Bytes, BytesMut};
use herald_protocol::frame::decode_frame;
use herald_protocol::*;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("vectors.json")).expect("vectors.json parses")
}

fn unhex(s: &str) -> Vec<u8> {
    common::hex(s)
}

fn body<T: DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"))
}

fn batch(v: &Value) -> Batch {
    Batch::validate(Bytes::from(unhex(v.as_str().unwrap()))).unwrap()
}

/// The message a frame vector describes.
fn message(op: &str, b: &Value) -> Message {
    match op {
        "Hello" => Message::Hello(body(b)),
        "HelloOk" => Message::HelloOk(body(b)),
        "Error" => Message::Error(body(b)),
        "Ping" => Message::Ping,
        "Pong" => Message::Pong,
        "GoingAway" => Message::GoingAway(body(b)),
        "Ok" => Message::Ok,
        "Publish" => Message::Publish {
            topic: b["topic"].as_str().unwrap().into(),
            batch: batch(&b["batch"]),
        },
        "PublishOk" => Message::PublishOk(body(b)),
        "Subscribe" => Message::Subscribe(body(b)),
        "SubscribeOk" => Message::SubscribeOk(body(b)),
        "Unsubscribe" => Message::Unsubscribe(body(b)),
        "Deliver" => Message::Deliver(Deliver {
            subscription_id: body(&b["subscription_id"]),
            first_offset: body(&b["first_offset"]),
            last_offset: body(&b["last_offset"]),
            delivery_count: body(&b["delivery_count"]),
            batch: batch(&b["batch"]),
        }),
        "Ack" => Message::Ack(body(b)),
        "Flow" => Message::Flow(body(b)),
        "SubscriptionError" => Message::SubscriptionError(body(b)),
        "CreateTopic" => Message::CreateTopic(body(b)),
        "DeleteTopic" => Message::DeleteTopic(body(b)),
        "ListTopics" => Message::ListTopics,
        "DescribeTopic" => Message::DescribeTopic(body(b)),
        "TopicInfo" => Message::TopicInfo(body(b)),
        "TopicList" => Message::TopicList(body(b)),
        "ListGroups" => Message::ListGroups(body(b)),
        "GroupList" => Message::GroupList(body(b)),
        "ResetGroup" => Message::ResetGroup(body(b)),
        "RepairTopic" => Message::RepairTopic(body(b)),
        "RepairReport" => Message::RepairReport(body(b)),
        "Join" => Message::Join(body(b)),
        "Leave" => Message::Leave(body(b)),
        "Emit" => Message::Emit(body(b)),
        "EmitOk" => Message::EmitOk(body(b)),
        "Members" => Message::Members(body(b)),
        "MemberList" => Message::MemberList(body(b)),
        "Reply" => Message::Reply(body(b)),
        "Skipped" => Message::Skipped(body(b)),
        "MyRooms" => Message::MyRooms,
        "RoomList" => Message::RoomList(body(b)),
        "EmitBatch" => Message::EmitBatch(body(b)),
        "EmitBatchOk" => Message::EmitBatchOk(body(b)),
        "Refresh" => Message::Refresh(body(b)),
        "TokenExpiring" => Message::TokenExpiring(body(b)),
        "Cluster" => Message::Cluster(Bytes::from(unhex(b["hex"].as_str().unwrap()))),
        "ClusterReply" => Message::ClusterReply(Bytes::from(unhex(b["hex"].as_str().unwrap()))),
        "ClusterStatus" => Message::ClusterStatus,
        "ClusterInfo" => Message::ClusterInfo(body(b)),
        "ClusterChange" => Message::ClusterChange(body(b)),
        other => panic!("vector of an opcode this test does not know: {other}"),
    }
}

#[test]
fn every_frame_vector_encodes_and_decodes_to_its_bytes() {
    let v = vectors();
    for f in v["frames"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        let id = f["request_id"].as_u64().unwrap();
        let want = unhex(f["hex"].as_str().unwrap());
        let msg = message(f["opcode"].as_str().unwrap(), &f["body"]);
        let mut got = BytesMut::new();
        msg.encode(id, &mut got);
        assert_eq!(&got[..], &want[..], "encoding of {name}");
        let mut buf = BytesMut::from(&want[..]);
        let frame = decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert!(buf.is_empty(), "{name}: one whole frame");
        assert_eq!(frame.header.request_id, id, "{name}");
        assert_eq!(Message::decode(&frame).unwrap(), msg, "decoding of {name}");
    }
}

/// A new opcode needs a vector, and so an implementation in the
/// JavaScript client too.
#[test]
fn every_opcode_has_a_vector() {
    let v = vectors();
    let have: Vec<u8> = v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| unhex(f["hex"].as_str().unwrap())[4])
        .collect();
    for b in 0..=u8::MAX {
        if let Ok(op) = Opcode::from_u8(b) {
            assert!(have.contains(&b), "no vector for {op:?} (0x{b:02x})");
        }
    }
}

#[test]
fn every_invalid_frame_is_refused() {
    let v = vectors();
    for f in v["invalid"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        let mut buf = BytesMut::from(&unhex(f["hex"].as_str().unwrap())[..]);
        let refused = match decode_frame(&mut buf, DEFAULT_MAX_FRAME) {
            Err(_) => true,
            Ok(None) => panic!("{name}: incomplete, not refused"),
            Ok(Some(frame)) => Message::decode(&frame).is_err(),
        };
        assert!(refused, "{name} was accepted");
    }
}

/// Key, headers, payload, timestamp.
type OwnedRecord = (Vec<u8>, Vec<(String, Vec<u8>)>, Vec<u8>, i64);

#[test]
fn batches_build_to_their_bytes() {
    let v = vectors();
    for b in v["batches"].as_array().unwrap() {
        let name = b["name"].as_str().unwrap();
        let records = b["records"].as_array().unwrap();
        let owned: Vec<OwnedRecord> = records
            .iter()
            .map(|r| {
                let key = r["key"].as_str().unwrap_or("").as_bytes().to_vec();
                let headers = r["headers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| {
                        let name = h[0].as_str().unwrap().to_owned();
                        (name, h[1].as_str().unwrap().as_bytes().to_vec())
                    })
                    .collect();
                let payload = r["payload"].as_str().unwrap().as_bytes().to_vec();
                (key, headers, payload, r["timestamp"].as_i64().unwrap())
            })
            .collect();
        let mut builder = BatchBuilder::new();
        for (key, headers, payload, timestamp) in &owned {
            let hs: Vec<(&str, &[u8])> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect();
            builder.push(&RecordRef {
                key,
                headers: &hs,
                payload,
                timestamp: *timestamp,
            });
        }
        let pid: u64 = b["producer_id"].as_str().unwrap().parse().unwrap();
        let seq: u64 = b["base_sequence"].as_str().unwrap().parse().unwrap();
        let want = unhex(b["hex"].as_str().unwrap());
        let built = builder.finish(pid, seq);
        assert_eq!(&built[..], &want[..], "{name}");
        let batch = Batch::validate(Bytes::from(want)).unwrap();
        let read: Vec<_> = batch.records().collect();
        assert_eq!(read.len(), owned.len(), "{name}");
        for (r, (key, _, payload, timestamp)) in read.iter().zip(&owned) {
            assert_eq!(&r.key[..], &key[..], "{name}");
            assert_eq!(&r.payload[..], &payload[..], "{name}");
            assert_eq!(r.timestamp, *timestamp, "{name}");
        }
    }
}

#[test]
fn varints_zigzag_and_crc() {
    let v = vectors();
    for p in v["varints"].as_array().unwrap() {
        let n: u64 = p[0].as_str().unwrap().parse().unwrap();
        let want = unhex(p[1].as_str().unwrap());
        assert_eq!(postcard::to_allocvec(&n).unwrap(), want, "varint {n}");
        assert_eq!(postcard::from_bytes::<u64>(&want).unwrap(), n);
    }
    for p in v["zigzag"].as_array().unwrap() {
        let n: i64 = p[0].as_str().unwrap().parse().unwrap();
        let want = unhex(p[1].as_str().unwrap());
        assert_eq!(postcard::to_allocvec(&n).unwrap(), want, "zigzag {n}");
    }
    for c in v["crc32c"].as_array().unwrap() {
        let crc = u32::from_str_radix(c["crc"].as_str().unwrap(), 16).unwrap();
        assert_eq!(crc32c::crc32c(c["ascii"].as_str().unwrap().as_bytes()), crc);
    }
}
