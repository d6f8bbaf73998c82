//! Bad peers are cut off alone: garbage, oversized lengths, a wrong first
//! frame, a bad body. Every other connection keeps working.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use herald_protocol::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads what the broker sends until it closes; returns the error frame's
/// code if one came.
async fn error_then_close(mut s: TcpStream) -> Option<ErrorCode> {
    let mut buf = Vec::new();
    let r = tokio::time::timeout(T, s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "broker did not close the connection");
    let mut b = bytes::BytesMut::from(&buf[..]);
    let f = frame::decode_frame(&mut b, DEFAULT_MAX_FRAME).ok()??;
    match Message::decode(&f).ok()? {
        Message::Error(e) => Some(ErrorCode::from_u16(e.code)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_closed_alone() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let addr = b.local_addr();
    let mut good = Raw::connect(addr).await;
    good.publish("t", &[b"before"]).await;

    // Garbage instead of a frame.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(error_then_close(s).await.is_some());

    // A length prefix far past the limit: rejected before any body arrives.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0xff, 0xff, 0xff, 0x7f]).await.unwrap();
    assert_eq!(error_then_close(s).await, Some(ErrorCode::TooLarge));

    // A first frame that is not Hello.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&raw_frame(Opcode::Ping, 1, &[])).await.unwrap();
    assert_eq!(
        error_then_close(s).await,
        Some(ErrorCode::HandshakeRequired)
    );

    // An unsupported version.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut m = bytes::BytesMut::new();
    Message::Hello(Hello {
        min_version: 7,
        max_version: 9,
        client_name: "x".into(),
        client_id: None,
        token: None,
    })
    .encode(1, &mut m);
    s.write_all(&m).await.unwrap();
    assert_eq!(
        error_then_close(s).await,
        Some(ErrorCode::UnsupportedVersion)
    );

    // After a good handshake, a Publish whose batch has a bad CRC.
    let mut bad = Raw::connect(addr).await;
    let mut bytes = batch(&[b"payload"], 0, 0).into_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let mut body = vec![1, 0, b't'];
    body.extend_from_slice(&bytes);
    bad.framed
        .get_mut()
        .write_all(&raw_frame(Opcode::Publish, 5, &body))
        .await
        .unwrap();
    let f = bad.recv().await.expect("an error frame");
    match Message::decode(&f).unwrap() {
        Message::Error(e) => assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::BadFrame),
        m => panic!("{m:?}"),
    }
    let closed = tokio::time::timeout(T, bad.framed.next()).await.unwrap();
    assert!(closed.is_none() || closed.unwrap().is_err());

    // A request with the PUSH flag: only the broker pushes.
    let mut pushy = Raw::connect(addr).await;
    let mut f = raw_frame(Opcode::Ping, 6, &[]);
    f[5] = frame::FLAG_PUSH;
    pushy.framed.get_mut().write_all(&f).await.unwrap();
    let f = pushy.recv().await.expect("an error frame");
    match Message::decode(&f).unwrap() {
        Message::Error(e) => assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::BadFrame),
        m => panic!("a pushed Ping answered {m:?}"),
    }
    let closed = tokio::time::timeout(T, pushy.framed.next()).await.unwrap();
    assert!(closed.is_none() || closed.unwrap().is_err());

    // Random bytes of every size.
    for n in [1usize, 3, 15, 16, 17, 100, 5000] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let junk: Vec<u8> = (0..n).map(|i| (i * 31 + 7) as u8).collect();
        s.write_all(&junk).await.unwrap();
        s.shutdown().await.unwrap();
        let mut sink = Vec::new();
        let r = tokio::time::timeout(T, s.read_to_end(&mut sink)).await;
        assert!(r.is_ok());
    }

    // The good connection never noticed.
    let ok = good.publish("t", &[b"after"]).await;
    assert_eq!(ok.base_offset, 1);
    match good.request(Message::Ping).await {
        Message::Pong => {}
        m => panic!("{m:?}"),
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_dropped_after_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.handshake_timeout = Duration::from_millis(200);
    let b = herald_broker::server::start(cfg).await.unwrap();
    let s = TcpStream::connect(b.local_addr()).await.unwrap();
    assert_eq!(
        error_then_close(s).await,
        Some(ErrorCode::HandshakeRequired)
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_admin_validates_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut c = Raw::connect(b.local_addr()).await;
    let cfg = TopicConfig {
        retention_bytes: Some(1 << 30),
        ..Default::default()
    };
    let create = |n: &str, cfg: &TopicConfig| {
        Message::CreateTopic(CreateTopic {
            name: n.into(),
            config: cfg.clone(),
            replicas: 0,
        })
    };
    match c.request(create("orders", &cfg)).await {
        Message::TopicInfo(i) => assert_eq!(i.config, cfg),
        m => panic!("{m:?}"),
    }
    assert!(matches!(
        c.request(create("orders", &cfg)).await,
        Message::TopicInfo(_)
    ));
    match c.request(create("orders", &TopicConfig::default())).await {
        Message::Error(e) => assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::TopicExists),
        m => panic!("{m:?}"),
    }
    // Replicas need a cluster: a broker alone takes 0 or 1 only.
    let replicated = Message::CreateTopic(CreateTopic {
        name: "copies".into(),
        config: TopicConfig::default(),
        replicas: 2,
    });
    match c.request(replicated).await {
        Message::Error(e) => {
            assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::InvalidArgument);
            assert!(e.message.contains("not in a cluster"), "{}", e.message);
        }
        m => panic!("{m:?}"),
    }
    match c.request(create("bad/name", &cfg)).await {
        Message::Error(e) => {
            assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::InvalidArgument);
            assert!(e.message.contains("bad/name"), "{}", e.message);
        }
        m => panic!("{m:?}"),
    }
    c.publish("orders", &[b"x", b"y"]).await;
    match c
        .request(Message::DescribeTopic(TopicName {
            name: "orders".into(),
        }))
        .await
    {
        Message::TopicInfo(i) => assert_eq!(i.next_offset, 2),
        m => panic!("{m:?}"),
    }
    match c.request(Message::ListTopics).await {
        Message::TopicList(l) => assert_eq!(
            l.topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            vec!["orders"]
        ),
        m => panic!("{m:?}"),
    }
    assert_eq!(
        c.request(Message::DeleteTopic(TopicName {
            name: "orders".into()
        }))
        .await,
        Message::Ok
    );
    match c
        .request(Message::DescribeTopic(TopicName {
            name: "orders".into(),
        }))
        .await
    {
        Message::Error(e) => assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::UnknownTopic),
        m => panic!("{m:?}"),
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auto_create_refuses_unknown_topics() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.auto_create_topics = false;
    let b = herald_broker::server::start(cfg).await.unwrap();
    let mut c = Raw::connect(b.local_addr()).await;
    let e = c.publish_seq("nope", &[b"x"], 0, 0).await.unwrap_err();
    assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::UnknownTopic);
    b.shutdown().await;
}

/// Version 2's HelloOk carries the broker's default ack timeout (clients
/// that gather acks keep them well within it); a client that speaks only
/// version 1, such as the JavaScript one, gets version 1's bytes without it.
#[tokio::test]
async fn the_default_ack_timeout_is_said_to_version_2_clients_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.ack_timeout = Duration::from_millis(1234);
    let b = herald_broker::server::start(cfg).await.unwrap();
    for (max_version, want) in [(1, (1, None)), (2, (2, Some(1234)))] {
        let mut r = Raw::unhandshaken(b.local_addr()).await;
        let hello = Message::Hello(Hello {
            min_version: 1,
            max_version,
            client_name: "test".into(),
            client_id: None,
            token: None,
        });
        match tokio::time::timeout(T, r.request(hello))
            .await
            .expect("an answer in time")
        {
            Message::HelloOk(ok) => assert_eq!((ok.version, ok.ack_timeout_ms), want),
            other => panic!("handshake: {other:?}"),
        }
    }
    b.shutdown().await;
}

/// Requests that arrive together (one write, one read at the broker) are
/// served in order, each answered, their confirms in the order they came,
/// under the in-flight publish limit; a bad frame among them ends the
/// connection, but only after everything before it was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_up_to_a_bad_frame() {
    const N: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_inflight_publishes = 8;
    let b = herald_broker::server::start(cfg).await.unwrap();
    let mut raw = Raw::connect(b.local_addr()).await;
    let mut wire = bytes::BytesMut::new();
    for i in 0..N {
        let payload = format!("m{i}");
        Message::Publish {
            topic: "pipe".into(),
            batch: batch(&[payload.as_bytes()], 0, 0),
        }
        .encode(1000 + i, &mut wire);
        if i % 50 == 49 {
            Message::Ping.encode(5000 + i, &mut wire);
        }
    }
    // An opcode that is not a request: answered BadFrame, then closed.
    wire.extend_from_slice(&raw_frame(Opcode::PublishOk, 9999, &[0]));
    Message::Ping.encode(7777, &mut wire);
    raw.framed.get_mut().write_all(&wire).await.unwrap();

    let mut next_offset = 0;
    let mut pongs = Vec::new();
    let mut refused = 0;
    // Everything the broker says until it closes (the confirms of publishes
    // still syncing may follow the error: they are drained, not dropped).
    while let Some(f) = tokio::time::timeout(T, raw.framed.next())
        .await
        .expect("the broker answered and closed within the timeout")
    {
        let Ok(f) = f else { break };
        let id = f.header.request_id;
        match Message::decode(&f).unwrap() {
            Message::PublishOk(ok) => {
                assert_eq!(id, 1000 + next_offset, "confirms in the order sent");
                assert_eq!(ok.base_offset, next_offset);
                next_offset += 1;
            }
            Message::Pong => pongs.push(id),
            Message::Error(e) => {
                assert_eq!(id, 9999);
                assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::BadFrame);
                refused += 1;
            }
            m => panic!("unexpected {m:?}"),
        }
    }
    assert_eq!(refused, 1, "the bad frame answered once");
    assert_eq!(
        next_offset, N,
        "every publish before the bad frame confirmed"
    );
    // The Ping after the bad frame (7777) is not served.
    assert_eq!(
        pongs,
        (0..N / 50).map(|k| 5000 + k * 50 + 49).collect::<Vec<_>>()
    );
    b.shutdown().await;
}

/// The broker's resident memory, from /proc (Linux).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("broker status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A peer that pipelines requests answered later (ListTopics) and never
/// reads the answers stops being read once a bounded number wait: the
/// broker's memory stays flat, and another connection is served. Before,
/// every request read was kept with its answer (one such peer made the
/// broker hold 700 MB). The real binary, so that its memory is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_its_answers_stops_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Child::spawn(dir.path(), &["--no-http"]);
    let pid = broker.child.id();
    let raw = Raw::connect(broker.addr).await;
    let before = rss_kib(pid);
    let mut flood = bytes::BytesMut::new();
    for id in 1..=1_000_000u64 {
        flood.extend_from_slice(&raw_frame(Opcode::ListTopics, id, &[]));
    }
    let mut socket = raw.framed.into_inner();
    // 16 MB of requests; once the broker stops reading, the kernel's
    // buffers fill and the write waits (until the deadline).
    let written = tokio::time::timeout(Duration::from_secs(6), socket.write_all(&flood)).await;
    let grown = rss_kib(pid).saturating_sub(before);
    let mut other = Raw::connect(broker.addr).await;
    assert!(
        matches!(
            other.request(Message::ListTopics).await,
            Message::TopicList(_)
        ),
        "another connection is served"
    );
    assert!(
        grown < 64 * 1024,
        "the broker grew by {grown} KiB for one peer that reads nothing (the write {})",
        if written.is_ok() {
            "was all taken"
        } else {
            "waited"
        }
    );
    drop(socket);
}

/// An EmitBatch is bounded: one of more than 1,024 emits is refused whole
/// (and the connection goes on), and the answer to a full one fits the
/// frame limit even when every emit is refused with a long text. Before,
/// one 8 MB batch of 2,000,000 empty emits got a 122 MB answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_batch_is_bounded_and_its_answer_fits_a_frame() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_frame_bytes = 64 * 1024;
    let b = herald_broker::server::start(cfg).await.unwrap();
    let mut c = Raw::connect(b.local_addr()).await;
    let emit = |room: String| Emit {
        target: EmitTarget::Room(room),
        event: "e".into(),
        payload: Vec::new(),
        correlation: 0,
    };
    let too_many = (0..1025).map(|_| emit("r".into())).collect();
    match c
        .request(Message::EmitBatch(EmitBatch { emits: too_many }))
        .await
    {
        Message::Error(e) => {
            assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::InvalidArgument);
            assert!(e.message.contains("at most 1024 emits"), "{}", e.message);
        }
        Message::EmitBatchOk(_) => panic!("1,025 emits were served, not refused whole"),
        other => panic!("1,025 emits answered {other:?}"),
    }
    // 1,024 emits each refused with a text that quotes its 45-byte room
    // name (one must not start with '.'): the texts alone would take about
    // 77 KiB, more than the frame holds.
    let refused: Vec<Emit> = (0..1024).map(|i| emit(format!(".{i:0>44}"))).collect();
    let id = c
        .send(Message::EmitBatch(EmitBatch { emits: refused }))
        .await;
    // The Raw codec refuses a frame over the default limit only; check the
    // answer's size against this broker's limit by hand.
    let f = tokio::time::timeout(T, async {
        loop {
            let f = c.recv().await.expect("an answer");
            if f.header.request_id == id {
                return f;
            }
        }
    })
    .await
    .expect("the EmitBatch is answered");
    assert!(
        f.body.len() + frame::HEADER_LEN <= 64 * 1024,
        "an answer of {} bytes over the 64 KiB frame limit",
        f.body.len() + frame::HEADER_LEN
    );
    match Message::decode(&f).unwrap() {
        Message::EmitBatchOk(ok) => {
            assert_eq!(ok.results.len(), 1024);
            for r in &ok.results {
                match r {
                    EmitOutcome::Err(e) => {
                        assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::InvalidArgument)
                    }
                    EmitOutcome::Ok(ok) => panic!("an invalid room accepted: {ok:?}"),
                }
            }
        }
        other => panic!("EmitBatch answered {other:?}"),
    }
    // The connection goes on.
    assert!(matches!(c.request(Message::Ping).await, Message::Pong));
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the broker's descriptors")
        .count()
}

/// Direct emits to made-up client ids each create an inbox, publishes to
/// made-up names each a topic, and every topic keeps a file open: one
/// client took all 20,000 descriptors of the process in seven seconds, and
/// then nobody could connect. Past `--max-topics` a new topic is refused
/// with `Busy` naming the limit, and everything that exists goes on: the
/// topics, their readers, new connections. The real binary, with the limit
/// from the flag (the environment and the TOML file set the same field).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_making_up_topics_stops_at_the_topic_limit_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Child::spawn(dir.path(), &["--no-http", "--max-topics", "40"]);
    let pid = broker.child.id();
    let mut c = Raw::connect(broker.addr).await;
    c.publish("orders", &[b"o1"]).await;
    let files_before = open_files(pid);
    let emits = (0..100)
        .map(|i| Emit {
            target: EmitTarget::Client(format!("nobody-{i}")),
            event: "dm".into(),
            payload: b"x".to_vec(),
            correlation: 0,
        })
        .collect();
    let results = match c.request(Message::EmitBatch(EmitBatch { emits })).await {
        Message::EmitBatchOk(ok) => ok.results,
        other => panic!("EmitBatch answered {other:?}"),
    };
    let ok = results
        .iter()
        .filter(|r| matches!(r, EmitOutcome::Ok(_)))
        .count();
    for r in &results {
        if let EmitOutcome::Err(e) = r {
            assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::Busy, "{e:?}");
            assert!(e.message.contains("--max-topics 40"), "{}", e.message);
        }
    }
    let topics = match c.request(Message::ListTopics).await {
        Message::TopicList(l) => l.topics.len(),
        m => panic!("{m:?}"),
    };
    assert!(ok > 0 && ok < 100, "{ok} of 100 direct emits went through");
    assert!(topics <= 40, "{topics} topics under a limit of 40");
    assert!(
        open_files(pid) <= files_before + 40,
        "{} descriptors open, {files_before} before",
        open_files(pid)
    );
    // A publish to a new name is refused the same way...
    let e = c.publish_seq("fresh", &[b"x"], 0, 0).await.unwrap_err();
    assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::Busy);
    assert!(
        e.message.contains("\"fresh\" was not created"),
        "{}",
        e.message
    );
    // ...and a join of a new room (its log is a topic).
    match c
        .request(Message::Join(JoinRoom {
            room: "new-room".into(),
            durable: true,
            history: 0,
        }))
        .await
    {
        Message::Error(e) => assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::Busy, "{e:?}"),
        m => panic!("a join past the topic limit: {m:?}"),
    }
    // The refused join is undone: the client is not a member.
    match c.request(Message::MyRooms).await {
        Message::RoomList(l) => assert!(l.rooms.is_empty(), "{l:?}"),
        m => panic!("{m:?}"),
    }
    // ...while what exists goes on: a publish to an existing topic, a
    // direct emit to an inbox made before the limit, a new connection
    // and what it reads.
    assert_eq!(c.publish("orders", &[b"o2"]).await.base_offset, 1);
    let first_ok = results
        .iter()
        .position(|r| matches!(r, EmitOutcome::Ok(_)))
        .expect("one emit went through");
    let mut again = Raw::connect(broker.addr).await;
    let out = again
        .request(Message::Emit(Emit {
            target: EmitTarget::Client(format!("nobody-{first_ok}")),
            event: "dm".into(),
            payload: b"y".to_vec(),
            correlation: 0,
        }))
        .await;
    assert!(matches!(out, Message::EmitOk(_)), "{out:?}");
    again
        .subscribe("orders", None, StartPosition::Earliest, 100)
        .await;
    let got = again.take(2).await;
    assert_eq!(payloads(&got), vec![&b"o1"[..], &b"o2"[..]]);
    // A topic deleted makes room for a new one.
    assert_eq!(
        c.request(Message::DeleteTopic(TopicName {
            name: format!("_inbox.nobody-{first_ok}"),
        }))
        .await,
        Message::Ok
    );
    c.publish_seq("fresh", &[b"x"], 0, 0)
        .await
        .expect("a topic once one was deleted");
}
