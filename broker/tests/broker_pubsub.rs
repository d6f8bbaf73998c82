//! Publish and consume through real TCP: start positions, fan-out, work
//! sharing, credit.

mod common;

use std::time::Duration;

use common::*;
use herald_protocol::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_confirms_in_order_and_each_start_position_works() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut c = Raw::connect(b.local_addr()).await;
    // Pipelined: send 20 publishes before reading any confirm.
    let mut ids = Vec::new();
    for i in 0..20u32 {
        let p = format!("m{i}");
        ids.push(
            c.send(Message::Publish {
                topic: "t".into(),
                batch: batch(&[p.as_bytes()], 0, 0),
            })
            .await,
        );
    }
    for (i, id) in ids.into_iter().enumerate() {
        match c.wait_reply(id).await {
            Message::PublishOk(ok) => assert_eq!(ok.base_offset, i as u64),
            m => panic!("{m:?}"),
        }
    }
    let mut s = Raw::connect(b.local_addr()).await;
    s.subscribe("t", None, StartPosition::Earliest, 100).await;
    let got = s.take(20).await;
    assert_eq!(got[0].1.offset, 0);
    assert_eq!(&got[19].1.payload[..], b"m19");

    let mut s = Raw::connect(b.local_addr()).await;
    s.subscribe("t", None, StartPosition::Offset(15), 100).await;
    assert_eq!(s.take(5).await[0].1.offset, 15);

    let mut s = Raw::connect(b.local_addr()).await;
    s.subscribe("t", None, StartPosition::Latest, 100).await;
    c.publish("t", &[b"new"]).await;
    let got = s.take(1).await;
    assert_eq!((got[0].1.offset, &got[0].1.payload[..]), (20, &b"new"[..]));

    // Timestamp 0 is before everything.
    let mut s = Raw::connect(b.local_addr()).await;
    s.subscribe("t", None, StartPosition::Timestamp(0), 100)
        .await;
    assert_eq!(s.take(1).await[0].1.offset, 0);
    // A timestamp in the future starts at the end.
    let mut s = Raw::connect(b.local_addr()).await;
    s.subscribe("t", None, StartPosition::Timestamp(i64::MAX), 100)
        .await;
    s.expect_quiet(Duration::from_millis(200)).await;

    // Resume on a new group starts at the beginning.
    let mut s = Raw::connect(b.local_addr()).await;
    s.subscribe("t", Some("g"), StartPosition::Resume, 100)
        .await;
    assert_eq!(s.take(21).await.len(), 21);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_fan_out_and_members_share() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut p = Raw::connect(b.local_addr()).await;
    let mut a1 = Raw::connect(b.local_addr()).await;
    let mut a2 = Raw::connect(b.local_addr()).await;
    let mut other = Raw::connect(b.local_addr()).await;
    p.create_topic("work").await;
    let s1 = a1
        .subscribe("work", Some("a"), StartPosition::Resume, 10)
        .await;
    let s2 = a2
        .subscribe("work", Some("a"), StartPosition::Resume, 10)
        .await;
    let so = other
        .subscribe("work", Some("b"), StartPosition::Resume, 1000)
        .await;
    for i in 0..40u32 {
        let m = i.to_string();
        p.publish("work", &[m.as_bytes()]).await;
    }
    // Group b sees everything.
    let all = other.take(40).await;
    assert_eq!(all.len(), 40);
    other.ack(so, AckKind::AckUpTo, vec![(0, 39)]).await;
    // Group a: two members, each with a window of 10, together see 40 once.
    let mut seen = std::collections::BTreeSet::new();
    let (mut n1, mut n2) = (0, 0);
    while seen.len() < 40 {
        tokio::select! {
            (_, _, recs) = a1.next_delivery() => {
                for r in recs { assert!(seen.insert(r.offset)); n1 += 1; a1.ack(s1, AckKind::Ack, vec![(r.offset, r.offset)]).await; }
            }
            (_, _, recs) = a2.next_delivery() => {
                for r in recs { assert!(seen.insert(r.offset)); n2 += 1; a2.ack(s2, AckKind::Ack, vec![(r.offset, r.offset)]).await; }
            }
        }
    }
    assert!(n1 > 0 && n2 > 0, "both members got work: {n1} {n2}");
    a1.expect_quiet(Duration::from_millis(200)).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_acks_gets_exactly_its_window_and_does_not_slow_others() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut p = Raw::connect(b.local_addr()).await;
    for i in 0..50u32 {
        let m = i.to_string();
        p.publish("t", &[m.as_bytes()]).await;
    }
    let mut stalled = Raw::connect(b.local_addr()).await;
    stalled
        .subscribe("t", Some("slow"), StartPosition::Earliest, 7)
        .await;
    let got = stalled.take(7).await;
    assert_eq!(got.len(), 7);
    stalled.expect_quiet(Duration::from_millis(300)).await;
    // Another group on the same topic is unaffected.
    let mut fast = Raw::connect(b.local_addr()).await;
    let sf = fast
        .subscribe("t", Some("fast"), StartPosition::Earliest, 1000)
        .await;
    assert_eq!(fast.take(50).await.len(), 50);
    fast.ack(sf, AckKind::AckUpTo, vec![(0, 49)]).await;
    // Ephemeral credit: a window of 5 without Flow stops at 5.
    let mut eph = Raw::connect(b.local_addr()).await;
    let se = eph.subscribe("t", None, StartPosition::Earliest, 5).await;
    assert_eq!(eph.take(5).await.len(), 5);
    eph.expect_quiet(Duration::from_millis(200)).await;
    eph.send_no_reply(Message::Flow(Flow {
        subscription_id: se,
        messages: 5,
        bytes: 1 << 20,
    }))
    .await;
    let more = eph.take(5).await;
    assert_eq!(more[0].1.offset, 5);
    b.shutdown().await;
}
