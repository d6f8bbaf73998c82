//! Round trips: every message encodes to one frame that decodes back to the
//! same message, and a batch yields exactly the records pushed into it, as
//! slices of its own bytes.

mod common;

use bytes::{Bytes, BytesMut};
use common::{arb_batch, arb_records, build, one_frame, Rec};
use herald_protocol::frame::{decode_frame, FLAG_PUSH};
use herald_protocol::*;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

/// Short arbitrary text; Publish topics must stay under 64 KiB.
fn s() -> impl Strategy<Value = String> {
    ".{0,24}"
}

fn start() -> impl Strategy<Value = StartPosition> {
    prop_oneof![
        Just(StartPosition::Resume),
        Just(StartPosition::Earliest),
        Just(StartPosition::Latest),
        any::<u64>().prop_map(StartPosition::Offset),
        any::<i64>().prop_map(StartPosition::Timestamp),
    ]
}

fn ack_kind() -> impl Strategy<Value = AckKind> {
    prop_oneof![
        Just(AckKind::Ack),
        Just(AckKind::AckUpTo),
        any::<u32>().prop_map(|delay_ms| AckKind::Nack { delay_ms }),
        Just(AckKind::Extend),
        Just(AckKind::Terminate),
    ]
}

fn fsync() -> impl Strategy<Value = FsyncPolicy> {
    prop_oneof![
        Just(FsyncPolicy::Always),
        any::<u32>().prop_map(|ms| FsyncPolicy::Interval { ms }),
        Just(FsyncPolicy::Never),
    ]
}

fn config() -> impl Strategy<Value = TopicConfig> {
    (
        of(any::<u64>()),
        of(any::<u64>()),
        of(any::<u64>()),
        of(fsync()),
    )
        .prop_map(
            |(retention_bytes, retention_ms, segment_bytes, fsync)| TopicConfig {
                retention_bytes,
                retention_ms,
                segment_bytes,
                fsync,
            },
        )
}

fn group_info() -> impl Strategy<Value = GroupInfo> {
    (s(), any::<[u64; 5]>(), vec(s(), 0..4), of(s())).prop_map(|(name, n, members, damaged)| {
        GroupInfo {
            name,
            ack_floor: n[0],
            lag: n[1],
            in_flight: n[2],
            redelivered: n[3],
            dead_lettered: n[4],
            members,
            damaged,
        }
    })
}

/// `messages_per_sec` is an f64: only finite values compare equal to
/// themselves, so NaN is left out.
fn topic_info() -> impl Strategy<Value = TopicInfo> {
    (
        s(),
        config(),
        any::<[u64; 3]>(),
        any::<u32>(),
        any::<f64>().prop_filter("finite", |x| x.is_finite()),
        vec(group_info(), 0..4),
    )
        .prop_map(|(name, config, n, segments, rate, groups)| TopicInfo {
            name,
            config,
            first_offset: n[0],
            next_offset: n[1],
            bytes_on_disk: n[2],
            segments,
            messages_per_sec: rate,
            groups,
        })
}

fn emit_target() -> impl Strategy<Value = EmitTarget> {
    prop_oneof![
        s().prop_map(EmitTarget::Room),
        s().prop_map(EmitTarget::RoomExceptSender),
        (vec(s(), 0..4), any::<bool>()).prop_map(|(rooms, except_sender)| EmitTarget::Rooms {
            rooms,
            except_sender
        }),
        s().prop_map(EmitTarget::Client),
        Just(EmitTarget::All),
    ]
}

fn deliver() -> impl Strategy<Value = Deliver> {
    arb_batch(50).prop_flat_map(|(bytes, recs)| {
        let n = recs.len() as u64;
        (Just(bytes), 0..n, 0..n, any::<u64>(), any::<u32>()).prop_map(
            |(bytes, a, b, subscription_id, delivery_count)| {
                let batch = Batch::validate(bytes).expect("built batch is valid");
                let base = batch.base_offset();
                Deliver {
                    subscription_id,
                    first_offset: base + a.min(b),
                    last_offset: base + a.max(b),
                    delivery_count,
                    batch,
                }
            },
        )
    })
}

/// Encodes `msg`, decodes the frame and the message, and checks the header.
fn round_trip(msg: &Message, request_id: u64) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::new();
    msg.encode(request_id, &mut buf);
    let frame = one_frame(buf, DEFAULT_MAX_FRAME);
    prop_assert_eq!(frame.header.opcode, msg.opcode());
    if msg.is_push() {
        prop_assert_eq!(frame.header.flags, FLAG_PUSH);
        prop_assert_eq!(frame.header.request_id, 0);
    } else {
        prop_assert_eq!(frame.header.flags, 0);
        prop_assert_eq!(frame.header.request_id, request_id);
    }
    let back = Message::decode(&frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, msg);
    Ok(())
}

proptest! {
    #[test]
    fn hello(min in any::<u16>(), max in any::<u16>(), name in s(), id in of(s()),
             token in of(s()), rid in any::<u64>()) {
        let m = Message::Hello(Hello {
            min_version: min, max_version: max, client_name: name, client_id: id, token,
        });
        round_trip(&m, rid)?;
    }

    #[test]
    fn hello_ok(version in any::<u16>(), id in s(), f in any::<u32>(), b in any::<u32>(),
                hb in any::<u32>(), ack in any::<Option<u32>>(), rid in any::<u64>()) {
        let m = Message::HelloOk(HelloOk {
            version, client_id: id, max_frame: f, max_batch: b, heartbeat_ms: hb,
            ack_timeout_ms: ack,
        });
        round_trip(&m, rid)?;
    }

    #[test]
    fn error(code in any::<u16>(), message in s(), rid in any::<u64>()) {
        round_trip(&Message::Error(ErrorBody { code, message }), rid)?;
    }

    #[test]
    fn empty_bodies(rid in any::<u64>()) {
        for m in [Message::Ping, Message::Pong, Message::Ok, Message::ListTopics] {
            round_trip(&m, rid)?;
        }
    }

    #[test]
    fn going_away(reason in s(), rid in any::<u64>()) {
        round_trip(&Message::GoingAway(GoingAway { reason }), rid)?;
    }

    #[test]
    fn publish(topic in s(), (bytes, _) in arb_batch(20), rid in any::<u64>()) {
        let batch = Batch::validate(bytes).expect("built batch is valid");
        round_trip(&Message::Publish { topic, batch }, rid)?;
    }

    #[test]
    fn publish_ok(base_offset in any::<u64>(), count in any::<u32>(), duplicate in any::<bool>(),
                  rid in any::<u64>()) {
        round_trip(&Message::PublishOk(PublishOk { base_offset, count, duplicate }), rid)?;
    }

    #[test]
    fn subscribe(topic in s(), group in of(s()), start in start(), n in any::<[u32; 4]>(),
                 rid in any::<u64>()) {
        let m = Message::Subscribe(Subscribe {
            topic, group, start,
            prefetch_messages: n[0], prefetch_bytes: n[1], ack_timeout_ms: n[2],
            max_deliveries: n[3],
        });
        round_trip(&m, rid)?;
    }

    #[test]
    fn subscribe_ok(subscription_id in any::<u64>(), start_offset in any::<u64>(),
                    rid in any::<u64>()) {
        round_trip(&Message::SubscribeOk(SubscribeOk { subscription_id, start_offset }), rid)?;
    }

    #[test]
    fn unsubscribe(subscription_id in any::<u64>(), rid in any::<u64>()) {
        round_trip(&Message::Unsubscribe(Unsubscribe { subscription_id }), rid)?;
    }

    #[test]
    fn deliver_(d in deliver(), rid in any::<u64>()) {
        round_trip(&Message::Deliver(d), rid)?;
    }

    #[test]
    fn ack(subscription_id in any::<u64>(), kind in ack_kind(),
           ranges in vec(any::<(u64, u64)>(), 0..16), rid in any::<u64>()) {
        round_trip(&Message::Ack(Ack { subscription_id, kind, ranges }), rid)?;
    }

    #[test]
    fn flow(subscription_id in any::<u64>(), messages in any::<u32>(), bytes in any::<u32>(),
            rid in any::<u64>()) {
        round_trip(&Message::Flow(Flow { subscription_id, messages, bytes }), rid)?;
    }

    #[test]
    fn create_topic(name in s(), config in config(), replicas in any::<u32>(), rid in any::<u64>()) {
        round_trip(&Message::CreateTopic(CreateTopic { name, config, replicas }), rid)?;
    }

    #[test]
    fn topic_name_bodies(name in s(), rid in any::<u64>()) {
        let t = TopicName { name };
        round_trip(&Message::DeleteTopic(t.clone()), rid)?;
        round_trip(&Message::DescribeTopic(t.clone()), rid)?;
        round_trip(&Message::ListGroups(t), rid)?;
    }

    #[test]
    fn topic_info_(t in topic_info(), rid in any::<u64>()) {
        round_trip(&Message::TopicInfo(t), rid)?;
    }

    #[test]
    fn topic_list(topics in vec(topic_info(), 0..4), rid in any::<u64>()) {
        round_trip(&Message::TopicList(TopicList { topics }), rid)?;
    }

    #[test]
    fn group_list(groups in vec(group_info(), 0..4), rid in any::<u64>()) {
        round_trip(&Message::GroupList(GroupList { groups }), rid)?;
    }

    #[test]
    fn subscription_error(subscription_id in any::<u64>(), code in any::<u16>(), message in s(),
                          rid in any::<u64>()) {
        let m = Message::SubscriptionError(SubscriptionError { subscription_id, code, message });
        round_trip(&m, rid)?;
    }

    #[test]
    fn repair_topic(name in s(), dry_run in any::<bool>(), rid in any::<u64>()) {
        round_trip(&Message::RepairTopic(RepairTopic { name, dry_run }), rid)?;
    }

    #[test]
    fn repair_report(topic in s(), dry_run in any::<bool>(),
                     ranges in vec((s(), any::<[u64; 4]>(), s()), 0..4),
                     records in any::<u64>(), bytes in any::<u64>(), rid in any::<u64>()) {
        let ranges = ranges
            .into_iter()
            .map(|(segment, [position, bytes, first_offset, end_offset], reason)| DroppedRange {
                segment, position, bytes, first_offset, end_offset, reason,
            })
            .collect();
        round_trip(&Message::RepairReport(RepairReport { topic, dry_run, ranges, records, bytes }), rid)?;
    }

    #[test]
    fn reset_group(topic in s(), group in s(), to in start(), rid in any::<u64>()) {
        round_trip(&Message::ResetGroup(ResetGroup { topic, group, to }), rid)?;
    }

    #[test]
    fn join_and_room_name_bodies(room in s(), durable in any::<bool>(), rid in any::<u64>()) {
        round_trip(&Message::Join(JoinRoom { room: room.clone(), durable, history: rid as u32 }), rid)?;
        round_trip(&Message::Leave(RoomName { room: room.clone() }), rid)?;
        round_trip(&Message::Members(RoomName { room }), rid)?;
    }

    #[test]
    fn emit(target in emit_target(), event in s(), payload in vec(any::<u8>(), 0..64),
            correlation in any::<u64>(), rid in any::<u64>()) {
        round_trip(&Message::Emit(Emit { target, event, payload, correlation }), rid)?;
    }

    #[test]
    fn emit_ok(recipients in any::<u32>(), skipped in any::<u32>(), rid in any::<u64>()) {
        round_trip(&Message::EmitOk(EmitOk { recipients, skipped }), rid)?;
    }

    #[test]
    fn emit_batch(emits in vec((emit_target(), s(), vec(any::<u8>(), 0..16), any::<u64>()), 0..6),
                  rid in any::<u64>()) {
        let emits = emits
            .into_iter()
            .map(|(target, event, payload, correlation)| Emit { target, event, payload, correlation })
            .collect();
        round_trip(&Message::EmitBatch(EmitBatch { emits }), rid)?;
    }

    #[test]
    fn emit_batch_ok(r in vec((any::<bool>(), any::<u32>(), any::<u32>(), s()), 0..6),
                     rid in any::<u64>()) {
        let results = r
            .into_iter()
            .map(|(ok, a, b, message)| if ok {
                EmitOutcome::Ok(EmitOk { recipients: a, skipped: b })
            } else {
                EmitOutcome::Err(ErrorBody { code: a as u16, message })
            })
            .collect();
        round_trip(&Message::EmitBatchOk(EmitBatchOk { results }), rid)?;
    }

    #[test]
    fn member_list(m in vec((s(), any::<bool>()), 0..6), rid in any::<u64>()) {
        let members = m
            .into_iter()
            .map(|(client_id, online)| RoomMember { client_id, online })
            .collect();
        round_trip(&Message::MemberList(MemberList { members }), rid)?;
    }

    #[test]
    fn reply(to_client in s(), correlation in any::<u64>(), payload in vec(any::<u8>(), 0..64),
             rid in any::<u64>()) {
        round_trip(&Message::Reply(ReplyTo { to_client, correlation, payload }), rid)?;
    }

    #[test]
    fn refresh(token in s(), rid in any::<u64>()) {
        round_trip(&Message::Refresh(Refresh { token }), rid)?;
    }

    #[test]
    fn token_expiring(expires_in_ms in any::<u64>()) {
        round_trip(&Message::TokenExpiring(TokenExpiring { expires_in_ms }), 0)?;
    }

    /// Several frames in one buffer come out one by one, in order.
    #[test]
    fn back_to_back_frames(names in vec(s(), 1..8)) {
        let mut buf = BytesMut::new();
        for (i, name) in names.iter().enumerate() {
            Message::DeleteTopic(TopicName { name: name.clone() }).encode(i as u64, &mut buf);
        }
        for (i, name) in names.iter().enumerate() {
            let f = decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
            prop_assert_eq!(f.header.request_id, i as u64);
            prop_assert_eq!(
                Message::decode(&f).unwrap(),
                Message::DeleteTopic(TopicName { name: name.clone() })
            );
        }
        prop_assert!(buf.is_empty());
    }
}

/// Checks that `batch` holds exactly `recs`, each field a slice of the
/// batch's own bytes.
fn assert_records(batch: &Batch, recs: &[Rec]) -> Result<(), TestCaseError> {
    let whole = batch.bytes().as_ptr_range();
    let inside = |b: &Bytes| b.is_empty() || whole.contains(&b.as_ptr());
    prop_assert_eq!(batch.record_count() as usize, recs.len());
    let got: Vec<Record> = batch.records().collect();
    prop_assert_eq!(got.len(), recs.len());
    for (i, (r, want)) in got.iter().zip(recs).enumerate() {
        prop_assert_eq!(r.offset, batch.base_offset() + i as u64);
        prop_assert_eq!(r.timestamp, want.timestamp);
        prop_assert_eq!(&r.key[..], &want.key[..]);
        prop_assert_eq!(&r.payload[..], &want.payload[..]);
        let headers: Vec<(String, Vec<u8>)> = r
            .headers()
            .map(|(n, v)| (n.to_owned(), v.to_vec()))
            .collect();
        prop_assert_eq!(&headers, &want.headers);
        prop_assert_eq!(r.header_count(), want.headers.len());
        // Zero-copy: the slices point into the batch. (An empty slice is
        // `Bytes::new()`, which points nowhere in particular.)
        prop_assert!(inside(&r.payload), "record {} payload was copied", i);
        prop_assert!(inside(&r.key), "record {} key was copied", i);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn batch_yields_what_was_pushed(recs in arb_records(300), pid in any::<u64>(),
                                    seq in any::<u64>()) {
        let bytes = build(&recs, pid, seq);
        let batch = Batch::validate(bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(batch.base_offset(), 0);
        prop_assert_eq!(batch.producer_id(), pid);
        prop_assert_eq!(batch.base_sequence(), seq);
        prop_assert_eq!(batch.first_timestamp(), recs[0].timestamp);
        prop_assert_eq!(batch.last_offset(), recs.len() as u64 - 1);
        assert_records(&batch, &recs)?;
    }

    /// Batches cut from one list of records and concatenated give back
    /// that list: same records, same times, offsets renumbered in order.
    #[test]
    fn concat_keeps_every_record_in_order(recs in arb_records(300),
                                          cuts in vec(any::<prop::sample::Index>(), 0..8)) {
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(recs.len())).collect();
        points.extend([0, recs.len()]);
        points.sort_unstable();
        points.dedup();
        let batches: Vec<Batch> = points
            .windows(2)
            .map(|w| Batch::validate(build(&recs[w[0]..w[1]], 0, 0)).unwrap())
            .collect();
        let merged = batch::concat(&batches).expect("mergeable");
        let merged = Batch::validate(merged).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(merged.producer_id(), 0);
        assert_records(&merged, &recs)?;
    }

    #[test]
    fn stamped_batch_through_publish_frame((bytes, recs) in arb_batch(300), topic in s()) {
        let batch = Batch::validate(bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut buf = BytesMut::new();
        Message::Publish { topic: topic.clone(), batch: batch.clone() }.encode(1, &mut buf);
        let frame = one_frame(buf, DEFAULT_MAX_FRAME);
        match Message::decode(&frame).unwrap() {
            Message::Publish { topic: t, batch: b } => {
                prop_assert_eq!(&t, &topic);
                prop_assert_eq!(&b, &batch);
                assert_records(&b, &recs)?;
            }
            other => prop_assert!(false, "decoded {:?}", other.opcode()),
        }
    }
}

/// An idempotent producer's batch is never merged (its sequence numbers
/// would be lost), nor is nothing.
#[test]
fn concat_refuses_idempotent_batches_and_nothing() {
    let rec = Rec {
        key: b"k".to_vec(),
        headers: vec![],
        payload: b"p".to_vec(),
        timestamp: 5,
    };
    let plain = Batch::validate(build(std::slice::from_ref(&rec), 0, 0)).unwrap();
    let idem = Batch::validate(build(std::slice::from_ref(&rec), 7, 0)).unwrap();
    assert!(batch::concat(&[plain.clone(), idem]).is_none());
    assert!(batch::concat(&[]).is_none());
    assert!(batch::concat(&[plain.clone(), plain]).is_some());
}

/// Records with empty keys, no headers and empty payloads are legal.
#[test]
fn empty_fields() {
    let recs = vec![
        Rec {
            key: vec![],
            headers: vec![],
            payload: vec![],
            timestamp: 0,
        };
        3
    ];
    let batch = Batch::validate(build(&recs, 0, 0)).unwrap();
    assert_eq!(batch.len_bytes(), 56 + 3 * 18);
    assert_records(&batch, &recs).unwrap();
}

/// A payload just under 1 MiB survives a Publish frame, and its slice after
/// decoding lies inside the receive buffer: nothing was copied on the way.
#[test]
fn large_payload_is_not_copied() {
    let payload: Vec<u8> = (0..(1 << 20) - 512).map(|i| (i * 7 % 251) as u8).collect();
    let recs = vec![Rec {
        key: b"big".to_vec(),
        headers: vec![("content-type".into(), b"application/octet-stream".to_vec())],
        payload,
        timestamp: 1_700_000_000_000,
    }];
    let batch = Batch::validate(build(&recs, 1, 1)).unwrap();
    let mut buf = BytesMut::new();
    Message::Publish {
        topic: "bulk".into(),
        batch,
    }
    .encode(5, &mut buf);
    let received = buf.as_ptr_range();
    let frame = one_frame(buf, DEFAULT_MAX_FRAME);
    let Message::Publish { topic, batch } = Message::decode(&frame).unwrap() else {
        panic!("not a publish");
    };
    assert_eq!(topic, "bulk");
    assert_records(&batch, &recs).unwrap();
    let r = batch.records().next().unwrap();
    assert!(received.contains(&r.payload.as_ptr()));
    assert_eq!(r.payload.len(), (1 << 20) - 512);
}
