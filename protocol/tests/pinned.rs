//! Pinned bytes: one test per frame type, holding the whole frame as hex.
//!
//! The postcard bodies were written out by hand from postcard's documented
//! encoding, not captured from the encoder, so these tests also check what
//! docs/protocol.md says (its examples are copied from here). If one fails,
//! the wire format changed: that needs a new protocol version, not a new
//! literal.
//!
//! Layout of every literal: `length | opcode flags reserved | request id |
//! body`.

mod common;

use bytes::{Bytes, BytesMut};
use common::{hex, one_frame};
use herald_protocol::batch::stamp;
use herald_protocol::*;

/// Encodes `msg` with `request_id`, compares with `want`, and decodes `want`
/// back to `msg`.
fn pin(msg: Message, request_id: u64, want: &str) {
    let want = hex(want);
    let mut buf = BytesMut::new();
    msg.encode(request_id, &mut buf);
    assert_eq!(
        hex_string(&buf),
        hex_string(&want),
        "encoding of {:?}",
        msg.opcode()
    );
    let frame = one_frame(BytesMut::from(&want[..]), DEFAULT_MAX_FRAME);
    assert_eq!(frame.header.request_id, request_id);
    assert_eq!(Message::decode(&frame).unwrap(), msg);
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The batch of one record pinned in `batch.rs`: key "k", header h=v,
/// payload "hi", timestamp 1000, producer 7, sequence 3.
const BATCH: &str = "
    0000000000000000 0000000000000000  55000000 713fe3e0
    01 00 0000  01000000  e803000000000000  0700000000000000  0300000000000000
    19000000 00000000 00000000 01000000 6b  0100 0100 68 01000000 76  6869";

fn one_record_batch() -> Batch {
    let mut b = BatchBuilder::new();
    b.push(&RecordRef {
        key: b"k",
        headers: &[("h", b"v")],
        payload: b"hi",
        timestamp: 1000,
    });
    Batch::validate(b.finish(7, 3)).unwrap()
}

#[test]
fn the_pinned_batch() {
    assert_eq!(
        hex_string(one_record_batch().bytes()),
        hex_string(&hex(BATCH))
    );
}

#[test]
fn hello() {
    pin(
        Message::Hello(Hello {
            min_version: 1,
            max_version: 1,
            client_name: "cli".into(),
            client_id: Some("c1".into()),
            token: None,
        }),
        1,
        "17000000 01 00 0000 0100000000000000 | 01 01 03636c69 01026331 00",
    );
}

#[test]
fn hello_ok() {
    // 8 MiB = 2^23 -> 80 80 80 04; 1 MiB = 2^20 -> 80 80 40; 5000 -> 88 27.
    pin(
        Message::HelloOk(HelloOk {
            version: 1,
            client_id: "c1".into(),
            max_frame: 8 << 20,
            max_batch: 1 << 20,
            heartbeat_ms: 5000,
            ack_timeout_ms: None,
        }),
        1,
        "19000000 02 00 0000 0100000000000000 | 01 026331 80808004 808040 8827",
    );
}

/// Version 2 appends the broker's default ack timeout: 30000 -> b0 ea 01.
#[test]
fn hello_ok_version_2() {
    pin(
        Message::HelloOk(HelloOk {
            version: 2,
            client_id: "c1".into(),
            max_frame: 8 << 20,
            max_batch: 1 << 20,
            heartbeat_ms: 5000,
            ack_timeout_ms: Some(30_000),
        }),
        1,
        "1c000000 02 00 0000 0100000000000000 | 02 026331 80808004 808040 8827 b0ea01",
    );
}

#[test]
fn error() {
    pin(
        Message::error(ErrorCode::UnknownTopic, "no such topic"),
        9,
        "1b000000 03 00 0000 0900000000000000 | 04 0d 6e6f20737563682074 6f706963",
    );
}

/// Code 20, RoomUnavailable: a durable room whose member file is damaged.
#[test]
fn error_room_unavailable() {
    pin(
        Message::error(ErrorCode::RoomUnavailable, "lobby"),
        9,
        "13000000 03 00 0000 0900000000000000 | 14 05 6c6f626279",
    );
    assert_eq!(ErrorCode::RoomUnavailable.as_u16(), 20);
    assert_eq!(ErrorCode::from_u16(20), ErrorCode::RoomUnavailable);
    assert!(!ErrorCode::RoomUnavailable.is_retryable());
}

#[test]
fn group_error_codes() {
    // 18 = UnknownGroup, 19 = GroupUnavailable.
    pin(
        Message::error(ErrorCode::UnknownGroup, "g"),
        9,
        "0f000000 03 00 0000 0900000000000000 | 12 01 67",
    );
    pin(
        Message::error(ErrorCode::GroupUnavailable, "g"),
        9,
        "0f000000 03 00 0000 0900000000000000 | 13 01 67",
    );
    assert_eq!(ErrorCode::from_u16(18), ErrorCode::UnknownGroup);
    assert_eq!(ErrorCode::from_u16(19), ErrorCode::GroupUnavailable);
    assert!(!ErrorCode::GroupUnavailable.is_retryable());
}

#[test]
fn damaged_group_info() {
    let g = GroupInfo {
        name: "g".into(),
        ack_floor: 0,
        lag: 0,
        in_flight: 0,
        redelivered: 0,
        dead_lettered: 0,
        members: vec![],
        damaged: Some("bad".into()),
    };
    pin(
        Message::GroupList(GroupList { groups: vec![g] }),
        11,
        "1a000000 37 00 0000 0b00000000000000 | 01 0167 00 00 00 00 00 00 01 03626164",
    );
}

#[test]
fn ping_and_pong() {
    pin(Message::Ping, 2, "0c000000 04 00 0000 0200000000000000");
    pin(Message::Pong, 2, "0c000000 05 00 0000 0200000000000000");
}

#[test]
fn going_away_is_pushed() {
    // PUSH flag set and request id 0, whatever id the caller passes.
    pin(
        Message::GoingAway(GoingAway {
            reason: "shutdown".into(),
        }),
        0,
        "15000000 06 01 0000 0000000000000000 | 08 73687574646f776e",
    );
    let mut buf = BytesMut::new();
    Message::GoingAway(GoingAway {
        reason: "shutdown".into(),
    })
    .encode(99, &mut buf);
    assert_eq!(&buf[5..16], &hex("01 0000 0000000000000000")[..]);
}

#[test]
fn ok() {
    pin(Message::Ok, 3, "0c000000 07 00 0000 0300000000000000");
}

#[test]
fn publish() {
    pin(
        Message::Publish {
            topic: "t".into(),
            batch: one_record_batch(),
        },
        4,
        &format!("64000000 10 00 0000 0400000000000000 | 0100 74 | {BATCH}"),
    );
}

#[test]
fn publish_ok() {
    pin(
        Message::PublishOk(PublishOk {
            base_offset: 1000,
            count: 1,
            duplicate: false,
        }),
        4,
        "10000000 11 00 0000 0400000000000000 | e807 01 00",
    );
}

#[test]
fn subscribe() {
    // start = Offset(300): variant 3, then 300 -> ac 02; 65536 -> 80 80 04.
    pin(
        Message::Subscribe(Subscribe {
            topic: "t".into(),
            group: Some("g".into()),
            start: StartPosition::Offset(300),
            prefetch_messages: 100,
            prefetch_bytes: 65536,
            ack_timeout_ms: 0,
            max_deliveries: 5,
        }),
        5,
        "1a000000 20 00 0000 0500000000000000 | 0174 010167 03ac02 64 808004 00 05",
    );
}

#[test]
fn subscribe_ok() {
    pin(
        Message::SubscribeOk(SubscribeOk {
            subscription_id: 1,
            start_offset: 300,
        }),
        5,
        "0f000000 21 00 0000 0500000000000000 | 01 ac02",
    );
}

#[test]
fn unsubscribe() {
    pin(
        Message::Unsubscribe(Unsubscribe { subscription_id: 1 }),
        6,
        "0d000000 22 00 0000 0600000000000000 | 01",
    );
}

#[test]
fn deliver() {
    // The pinned batch as the broker stored it: base offset 16, append time
    // 2000. Stamping leaves the CRC alone.
    let mut m = BytesMut::from(&one_record_batch().bytes()[..]);
    stamp(&mut m, 16, 2000);
    let batch = Batch::validate(m.freeze()).unwrap();
    let stored = BATCH.replacen(
        "0000000000000000 0000000000000000",
        "1000000000000000 d007000000000000",
        1,
    );
    pin(
        Message::Deliver(Deliver {
            subscription_id: 1,
            first_offset: 16,
            last_offset: 16,
            delivery_count: 1,
            batch,
        }),
        0,
        &format!(
            "7d000000 23 01 0000 0000000000000000 |
             0100000000000000 1000000000000000 1000000000000000 01000000 | {stored}"
        ),
    );
}

#[test]
fn ack() {
    // Nack is variant 2 with its delay (250 -> fa 01); ranges are a
    // length-prefixed list of (u64, u64).
    pin(
        Message::Ack(Ack {
            subscription_id: 1,
            kind: AckKind::Nack { delay_ms: 250 },
            ranges: vec![(16, 16), (18, 20)],
        }),
        0,
        "15000000 24 00 0000 0000000000000000 | 01 02fa01 02 1010 1214",
    );
}

#[test]
fn ack_kind_indices() {
    let kinds = [
        (AckKind::Ack, "00"),
        (AckKind::AckUpTo, "01"),
        (AckKind::Nack { delay_ms: 0 }, "0200"),
        (AckKind::Extend, "03"),
        (AckKind::Terminate, "04"),
    ];
    for (kind, k) in kinds {
        let body = format!("07 {k} 01 0102");
        let len = 12 + hex(&body).len();
        pin(
            Message::Ack(Ack {
                subscription_id: 7,
                kind,
                ranges: vec![(1, 2)],
            }),
            1,
            &format!("{len:02x}000000 24 00 0000 0100000000000000 | {body}"),
        );
    }
}

#[test]
fn flow() {
    pin(
        Message::Flow(Flow {
            subscription_id: 1,
            messages: 10,
            bytes: 4096,
        }),
        0,
        "10000000 25 00 0000 0000000000000000 | 01 0a 8020",
    );
}

#[test]
fn create_topic() {
    // retention_bytes Some(2^30) -> 01 80 80 80 80 04; fsync
    // Some(Interval { ms: 100 }) -> 01 01 64.
    pin(
        Message::CreateTopic(CreateTopic {
            name: "t".into(),
            config: TopicConfig {
                retention_bytes: Some(1 << 30),
                retention_ms: None,
                segment_bytes: None,
                fsync: Some(FsyncPolicy::Interval { ms: 100 }),
            },
            replicas: 3,
        }),
        7,
        "1a000000 30 00 0000 0700000000000000 | 0174 018080808004 00 00 010164 03",
    );
}

#[test]
fn fsync_policy_indices() {
    for (policy, p) in [
        (FsyncPolicy::Always, "00"),
        (FsyncPolicy::Interval { ms: 1 }, "0101"),
        (FsyncPolicy::Never, "02"),
    ] {
        let body = format!("0174 00 00 00 01{p} 00");
        let len = 12 + hex(&body).len();
        pin(
            Message::CreateTopic(CreateTopic {
                name: "t".into(),
                config: TopicConfig {
                    fsync: Some(policy),
                    ..TopicConfig::default()
                },
                replicas: 0,
            }),
            1,
            &format!("{len:02x}000000 30 00 0000 0100000000000000 | {body}"),
        );
    }
}

#[test]
fn delete_topic() {
    pin(
        Message::DeleteTopic(TopicName { name: "t".into() }),
        8,
        "0e000000 31 00 0000 0800000000000000 | 0174",
    );
}

#[test]
fn list_topics() {
    pin(
        Message::ListTopics,
        9,
        "0c000000 32 00 0000 0900000000000000",
    );
}

#[test]
fn describe_topic() {
    pin(
        Message::DescribeTopic(TopicName { name: "t".into() }),
        10,
        "0e000000 33 00 0000 0a00000000000000 | 0174",
    );
}

fn group() -> GroupInfo {
    GroupInfo {
        name: "g".into(),
        ack_floor: 16,
        lag: 3,
        in_flight: 1,
        redelivered: 0,
        dead_lettered: 0,
        members: vec!["c1".into()],
        damaged: None,
    }
}
const GROUP: &str = "0167 10 03 01 00 00 01026331 00";

fn topic() -> TopicInfo {
    TopicInfo {
        name: "t".into(),
        config: TopicConfig::default(),
        first_offset: 0,
        next_offset: 300,
        bytes_on_disk: 4096,
        segments: 1,
        messages_per_sec: 1.5,
        groups: vec![group()],
    }
}
/// 1.5 is 0x3ff8000000000000, written little-endian.
const TOPIC: &str = "0174 00000000 00 ac02 8020 01 000000000000f83f 01";

#[test]
fn topic_info() {
    pin(
        Message::TopicInfo(topic()),
        10,
        &format!("2d000000 34 00 0000 0a00000000000000 | {TOPIC} {GROUP}"),
    );
}

#[test]
fn topic_list() {
    pin(
        Message::TopicList(TopicList {
            topics: vec![topic()],
        }),
        9,
        &format!("2e000000 35 00 0000 0900000000000000 | 01 {TOPIC} {GROUP}"),
    );
}

#[test]
fn list_groups() {
    pin(
        Message::ListGroups(TopicName { name: "t".into() }),
        11,
        "0e000000 36 00 0000 0b00000000000000 | 0174",
    );
}

#[test]
fn group_list() {
    pin(
        Message::GroupList(GroupList {
            groups: vec![group()],
        }),
        11,
        &format!("19000000 37 00 0000 0b00000000000000 | 01 {GROUP}"),
    );
}

#[test]
fn reset_group() {
    // Timestamp(-1000): variant 4, then zigzag(-1000) = 1999 -> cf 0f.
    pin(
        Message::ResetGroup(ResetGroup {
            topic: "t".into(),
            group: "g".into(),
            to: StartPosition::Timestamp(-1000),
        }),
        12,
        "13000000 38 00 0000 0c00000000000000 | 0174 0167 04cf0f",
    );
}

#[test]
fn subscription_error_is_pushed() {
    // subscription 3, code 17 (Corrupt), message "bad"; PUSH, request id 0.
    pin(
        Message::SubscriptionError(SubscriptionError {
            subscription_id: 3,
            code: ErrorCode::Corrupt.as_u16(),
            message: "bad".into(),
        }),
        0,
        "12000000 26 01 0000 0000000000000000 | 03 11 03626164",
    );
}

#[test]
fn my_rooms_and_room_list() {
    pin(
        Message::MyRooms,
        4,
        "0c000000 48 00 0000 0400000000000000 |",
    );
    // Two rooms: "a" durable, "b" not.
    pin(
        Message::RoomList(RoomList {
            rooms: vec![
                JoinedRoom {
                    room: "a".into(),
                    durable: true,
                },
                JoinedRoom {
                    room: "b".into(),
                    durable: false,
                },
            ],
        }),
        4,
        "13000000 49 00 0000 0400000000000000 | 02 0161 01 0162 00",
    );
}

#[test]
fn skipped_is_pushed() {
    // subscription 7, offsets 10..=300 (300 = ac 02); PUSH, request id 0.
    pin(
        Message::Skipped(Skipped {
            subscription_id: 7,
            first: 10,
            last: 300,
        }),
        0,
        "10000000 47 01 0000 0000000000000000 | 07 0a ac02",
    );
}

#[test]
fn corrupt_is_error_code_17() {
    assert_eq!(ErrorCode::Corrupt.as_u16(), 17);
    assert_eq!(ErrorCode::from_u16(17), ErrorCode::Corrupt);
    assert!(!ErrorCode::Corrupt.is_retryable());
}

#[test]
fn repair_topic() {
    pin(
        Message::RepairTopic(RepairTopic {
            name: "t".into(),
            dry_run: true,
        }),
        13,
        "0f000000 39 00 0000 0d00000000000000 | 0174 01",
    );
}

#[test]
fn repair_report() {
    // position 300 -> ac 02; bytes 80 -> 50.
    pin(
        Message::RepairReport(RepairReport {
            topic: "t".into(),
            dry_run: false,
            ranges: vec![DroppedRange {
                segment: "s".into(),
                position: 300,
                bytes: 80,
                first_offset: 5,
                end_offset: 7,
                reason: "crc".into(),
            }],
            records: 2,
            bytes: 80,
        }),
        13,
        "1d000000 3a 00 0000 0d00000000000000 | 0174 00 | 01 0173 ac02 50 05 07 03637263 | 02 50",
    );
}

#[test]
fn start_position_indices() {
    for (to, p) in [
        (StartPosition::Resume, "00"),
        (StartPosition::Earliest, "01"),
        (StartPosition::Latest, "02"),
        (StartPosition::Offset(u64::MAX), "03ffffffffffffffffff01"),
        (StartPosition::Timestamp(1), "0402"),
        (StartPosition::Timestamp(i64::MIN), "04ffffffffffffffffff01"),
    ] {
        let body = format!("0174 0167 {p}");
        let len = 12 + hex(&body).len();
        pin(
            Message::ResetGroup(ResetGroup {
                topic: "t".into(),
                group: "g".into(),
                to,
            }),
            1,
            &format!("{len:02x}000000 38 00 0000 0100000000000000 | {body}"),
        );
    }
}

#[test]
fn join() {
    pin(
        Message::Join(JoinRoom {
            room: "r".into(),
            durable: true,
            history: 3,
        }),
        1,
        "10000000 40 00 0000 0100000000000000 | 0172 01 03",
    );
}

#[test]
fn leave() {
    pin(
        Message::Leave(RoomName { room: "r".into() }),
        2,
        "0e000000 41 00 0000 0200000000000000 | 0172",
    );
}

#[test]
fn emit() {
    // Target Rooms (variant 2): ["a", "b"], except_sender; event "ev",
    // payload "hi", correlation 300 = ac 02.
    pin(
        Message::Emit(Emit {
            target: EmitTarget::Rooms {
                rooms: vec!["a".into(), "b".into()],
                except_sender: true,
            },
            event: "ev".into(),
            payload: b"hi".to_vec(),
            correlation: 300,
        }),
        3,
        "1b000000 42 00 0000 0300000000000000 | 02 02 0161 0162 01 | 026576 | 026869 | ac02",
    );
}

#[test]
fn emit_target_indices() {
    for (target, t) in [
        (EmitTarget::Room("r".into()), "00 0172"),
        (EmitTarget::RoomExceptSender("r".into()), "01 0172"),
        (
            EmitTarget::Rooms {
                rooms: vec![],
                except_sender: false,
            },
            "02 00 00",
        ),
        (EmitTarget::Client("c".into()), "03 0163"),
        (EmitTarget::All, "04"),
    ] {
        // event "e", empty payload, no correlation.
        let body = format!("{t} | 0165 | 00 | 00");
        let len = 12 + hex(&body).len();
        pin(
            Message::Emit(Emit {
                target,
                event: "e".into(),
                payload: vec![],
                correlation: 0,
            }),
            1,
            &format!("{len:02x}000000 42 00 0000 0100000000000000 | {body}"),
        );
    }
}

#[test]
fn emit_ok() {
    pin(
        Message::EmitOk(EmitOk {
            recipients: 3,
            skipped: 1,
        }),
        3,
        "0e000000 43 00 0000 0300000000000000 | 03 01",
    );
}

/// Version 3: a sequence of emits (count, then each as in `Emit`).
#[test]
fn emit_batch() {
    pin(
        Message::EmitBatch(EmitBatch {
            emits: vec![
                Emit {
                    target: EmitTarget::Room("r".into()),
                    event: "e".into(),
                    payload: b"hi".to_vec(),
                    correlation: 0,
                },
                Emit {
                    target: EmitTarget::RoomExceptSender("r".into()),
                    event: "chat".into(),
                    payload: Vec::new(),
                    correlation: 300,
                },
            ],
        }),
        6,
        "21000000 4a 00 0000 0600000000000000 | 02 | 00 0172 0165 026869 00 | 01 0172 0463686174 00 ac02",
    );
}

/// Version 3: one outcome per emit, `Ok` (0) with an EmitOk or `Err` (1)
/// with an error body.
#[test]
fn emit_batch_ok() {
    pin(
        Message::EmitBatchOk(EmitBatchOk {
            results: vec![
                EmitOutcome::Ok(EmitOk {
                    recipients: 3,
                    skipped: 1,
                }),
                EmitOutcome::Err(ErrorBody {
                    code: 5,
                    message: "no".into(),
                }),
            ],
        }),
        6,
        "15000000 4b 00 0000 0600000000000000 | 02 | 00 03 01 | 01 05 026e6f",
    );
}

#[test]
fn members() {
    pin(
        Message::Members(RoomName { room: "r".into() }),
        4,
        "0e000000 44 00 0000 0400000000000000 | 0172",
    );
}

#[test]
fn member_list() {
    pin(
        Message::MemberList(MemberList {
            members: vec![
                RoomMember {
                    client_id: "a".into(),
                    online: true,
                },
                RoomMember {
                    client_id: "b".into(),
                    online: false,
                },
            ],
        }),
        4,
        "13000000 45 00 0000 0400000000000000 | 02 | 0161 01 | 0162 00",
    );
}

#[test]
fn reply() {
    pin(
        Message::Reply(ReplyTo {
            to_client: "a".into(),
            correlation: 300,
            payload: b"ok".to_vec(),
        }),
        5,
        "13000000 46 00 0000 0500000000000000 | 0161 | ac02 | 026f6b",
    );
}

#[test]
fn refresh() {
    pin(
        Message::Refresh(Refresh { token: "t".into() }),
        9,
        "0e000000 50 00 0000 0900000000000000 | 0174",
    );
}

#[test]
fn token_expiring_is_pushed() {
    // 30000 ms as a varint: b0 ea 01; PUSH, request id 0.
    pin(
        Message::TokenExpiring(TokenExpiring {
            expires_in_ms: 30_000,
        }),
        0,
        "0f000000 51 01 0000 0000000000000000 | b0ea01",
    );
}

#[test]
fn token_expired_is_error_code_21() {
    assert_eq!(ErrorCode::TokenExpired.as_u16(), 21);
    assert_eq!(ErrorCode::from_u16(21), ErrorCode::TokenExpired);
    assert!(!ErrorCode::TokenExpired.is_retryable());
}

#[test]
fn cluster_frames_carry_their_body_as_is() {
    // Between nodes: the body is the broker's own (postcard of its Raft
    // messages); the protocol carries it byte for byte.
    pin(
        Message::Cluster(Bytes::from_static(b"\x01\x02")),
        6,
        "0e000000 60 00 0000 0600000000000000 | 0102",
    );
    pin(
        Message::ClusterReply(Bytes::from_static(b"\x03")),
        6,
        "0d000000 61 00 0000 0600000000000000 | 03",
    );
}

#[test]
fn cluster_status_and_info() {
    pin(
        Message::ClusterStatus,
        7,
        "0c000000 62 00 0000 0700000000000000",
    );
    pin(
        Message::ClusterInfo(ClusterInfo {
            node_id: 2,
            nodes: vec![ClusterNode {
                id: 1,
                addr: "a".into(),
            }],
            groups: vec![RaftGroupInfo {
                name: "meta".into(),
                leader: Some(1),
                term: 3,
                last_index: Some(9),
                applied: None,
                replicas: vec![ReplicaInfo {
                    node: 1,
                    matched: Some(9),
                }],
            }],
        }),
        7,
        "21000000 63 00 0000 0700000000000000 | 02 | 01 01 0161 | 01 046d657461 0101 03 0109 00 | 01 01 0109",
    );
}

#[test]
fn not_leader_is_error_code_22_and_retryable() {
    assert_eq!(ErrorCode::NotLeader.as_u16(), 22);
    assert_eq!(ErrorCode::from_u16(22), ErrorCode::NotLeader);
    assert!(ErrorCode::NotLeader.is_retryable());
}

/// Every opcode has a pinned frame above; this keeps the list honest.
#[test]
fn every_opcode_is_pinned() {
    let pinned: Vec<u8> = vec![
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x10, 0x11, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25,
        0x26, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x40, 0x41, 0x42,
        0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x4b, 0x50, 0x51, 0x60, 0x61, 0x62, 0x63,
        0x64,
    ];
    let known: Vec<u8> = (0..=255u8)
        .filter(|b| Opcode::from_u8(*b).is_ok())
        .collect();
    assert_eq!(known, pinned);
}

/// A Bytes-backed batch compares by content, so a pinned literal can stand
/// in for one built by the builder.
#[test]
fn batch_from_literal_validates() {
    let b = Batch::validate(Bytes::from(hex(BATCH))).unwrap();
    assert_eq!(b, one_record_batch());
    assert_eq!(b.crc(), 0xe0e3_3f71);
}

#[test]
fn cluster_changes() {
    pin(
        Message::ClusterChange(ClusterChange::AddNode {
            id: 4,
            addr: "h:1".into(),
        }),
        8,
        "12000000 64 00 0000 0800000000000000 | 00 04 03683a31",
    );
    pin(
        Message::ClusterChange(ClusterChange::RemoveNode { id: 4 }),
        8,
        "0e000000 64 00 0000 0800000000000000 | 01 04",
    );
    pin(
        Message::ClusterChange(ClusterChange::MoveTopic {
            topic: "t".into(),
            replicas: vec![2, 3, 4],
        }),
        8,
        "13000000 64 00 0000 0800000000000000 | 02 0174 03 020304",
    );
}
