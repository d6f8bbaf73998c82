//! Acknowledgement semantics of groups through real TCP: ack, ack-up-to,
//! nack with delay, extend, terminate, ack timeouts and dead letters.

mod common;

use std::time::{Duration, Instant};

use common::*;
use herald_protocol::*;

fn sub(
    topic: &str,
    group: &str,
    prefetch: u32,
    ack_timeout_ms: u32,
    max_deliveries: u32,
) -> Subscribe {
    Subscribe {
        topic: topic.into(),
        group: Some(group.into()),
        start: StartPosition::Resume,
        prefetch_messages: prefetch,
        prefetch_bytes: 1 << 20,
        ack_timeout_ms,
        max_deliveries,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_with_delay_redelivers_after_the_delay_with_a_higher_count() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut c = Raw::connect(b.local_addr()).await;
    c.publish("t", &[b"a", b"b"]).await;
    let s = c.subscribe_with(sub("t", "g", 10, 60_000, 0)).await;
    let got = c.take(2).await;
    assert_eq!(got[0].0, 1);
    let t0 = Instant::now();
    c.ack(s, AckKind::Nack { delay_ms: 300 }, vec![(1, 1)])
        .await;
    c.ack(s, AckKind::Ack, vec![(0, 0)]).await;
    let again = c.take(1).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "redelivered too early"
    );
    assert_eq!((again[0].0, again[0].1.offset), (2, 1));
    c.ack(s, AckKind::Ack, vec![(1, 1)]).await;
    c.expect_quiet(Duration::from_millis(200)).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_timeout_redelivers_to_another_member_and_extend_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut p = Raw::connect(b.local_addr()).await;
    let mut m1 = Raw::connect(b.local_addr()).await;
    p.create_topic("t").await;
    let s1 = m1.subscribe_with(sub("t", "g", 1, 300, 0)).await;
    p.publish("t", &[b"x"]).await;
    let first = m1.take(1).await;
    assert_eq!(first[0].0, 1);
    // Keep it for longer than the timeout by extending.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await; // pacing the extends, not synchronisation
        m1.ack(s1, AckKind::Extend, vec![(0, 0)]).await;
    }
    let mut m2 = Raw::connect(b.local_addr()).await;
    m2.subscribe_with(sub("t", "g", 1, 300, 0)).await;
    // m1 stops extending: after the deadline the message goes to a member.
    let (again, who) = tokio::select! {
        r = m2.take(1) => (r, 2),
        r = m1.take(1) => (r, 1),
    };
    assert_eq!(
        again[0].0, 2,
        "delivery count of the redelivery (member {who})"
    );
    assert_eq!(again[0].1.offset, 0);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_deliveries_moves_a_message_to_the_dead_letter_topic() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut c = Raw::connect(b.local_addr()).await;
    c.publish("jobs", &[b"poison", b"fine"]).await;
    let s = c.subscribe_with(sub("jobs", "w", 10, 60_000, 3)).await;
    let got = c.take(2).await;
    c.ack(s, AckKind::Ack, vec![(1, 1)]).await;
    assert_eq!(got[0].0, 1);
    for n in 2..=3 {
        c.ack(s, AckKind::Nack { delay_ms: 0 }, vec![(0, 0)]).await;
        let r = c.take(1).await;
        assert_eq!((r[0].0, r[0].1.offset), (n, 0));
    }
    c.ack(s, AckKind::Nack { delay_ms: 0 }, vec![(0, 0)]).await;
    // Third delivery was the last: it is dead-lettered, not delivered again.
    // The copy runs beside the group (it waits for the dead-letter topic's
    // fsync): the group counts it once it is durable.
    c.until_dead_lettered("jobs", 1).await;
    let mut d = Raw::connect(b.local_addr()).await;
    d.subscribe("jobs.dlq", None, StartPosition::Earliest, 10)
        .await;
    let dl = d.take(1).await;
    let r = &dl[0].1;
    assert_eq!(&r.payload[..], b"poison");
    let h: std::collections::HashMap<_, _> = r.headers().collect();
    assert_eq!(h["herald-dlq-original-offset"], b"0");
    assert_eq!(h["herald-dlq-deliveries"], b"3");
    assert_eq!(h["herald-dlq-topic"], b"jobs");
    c.expect_quiet(Duration::from_millis(200)).await;
    match c
        .request(Message::ListGroups(TopicName {
            name: "jobs".into(),
        }))
        .await
    {
        Message::GroupList(l) => {
            assert_eq!(l.groups[0].dead_lettered, 1);
            assert_eq!(l.groups[0].ack_floor, 2);
            assert_eq!(l.groups[0].lag, 0);
        }
        m => panic!("{m:?}"),
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_and_ack_up_to_are_final() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut c = Raw::connect(b.local_addr()).await;
    c.publish("t", &[b"0", b"1", b"2", b"3"]).await;
    let s = c.subscribe_with(sub("t", "g", 10, 300, 0)).await;
    c.take(4).await;
    c.ack(s, AckKind::Terminate, vec![(0, 0)]).await;
    c.ack(s, AckKind::AckUpTo, vec![(0, 2)]).await;
    // Only offset 3 is redelivered after the timeout.
    let again = c.take(1).await;
    assert_eq!((again[0].0, again[0].1.offset), (2, 3));
    c.ack(s, AckKind::Ack, vec![(3, 3)]).await;
    c.expect_quiet(Duration::from_millis(500)).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_state_survives_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let addr = b.local_addr();
    let mut c = Raw::connect(addr).await;
    for i in 0..10u32 {
        let m = i.to_string();
        c.publish("t", &[m.as_bytes()]).await;
    }
    let s = c.subscribe_with(sub("t", "g", 100, 60_000, 0)).await;
    c.take(10).await;
    c.ack(s, AckKind::Ack, vec![(0, 3), (6, 6)]).await;
    drop(c);
    b.shutdown().await;
    let b = start(dir.path()).await;
    let mut c = Raw::connect(b.local_addr()).await;
    c.subscribe_with(sub("t", "g", 100, 60_000, 0)).await;
    let got: Vec<u64> = c.take(5).await.iter().map(|(_, r)| r.offset).collect();
    assert_eq!(got, vec![4, 5, 7, 8, 9]);
    c.expect_quiet(Duration::from_millis(200)).await;
    b.shutdown().await;
}

/// Polls `cond` on group `g` of topic `t` until it holds (bounded by the
/// caller's timeout).
async fn wait_for_group(c: &mut Raw, cond: impl Fn(&GroupInfo) -> bool) {
    loop {
        let groups = match c
            .request(Message::ListGroups(TopicName { name: "t".into() }))
            .await
        {
            Message::GroupList(l) => l.groups,
            m => panic!("list groups: {m:?}"),
        };
        if groups.iter().any(|g| g.name == "g" && cond(g)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An ack's Ok is what lets a client forget the acked offsets (the filter
/// that hides redeliveries of what the application acked), so it must not
/// overtake a delivery of those offsets that was queued before the ack took
/// effect. The broker's writer prefers replies to pushes; here a member
/// takes over what a departed member held, its connection falls behind with
/// the redeliveries queued, and it acks the last offset, as a reconnected
/// client re-sends the ack of a message it already processed. The Ok must
/// come after that offset's redelivery (before the fix it came first, and
/// herald-client then handed the application the message a second time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acks_ok_never_overtakes_a_redelivery_queued_before_it() {
    const BATCHES: u64 = 64;
    const PER_BATCH: u64 = 64;
    const N: u64 = BATCHES * PER_BATCH;
    let dir = tempfile::tempdir().unwrap();
    let cfg = herald_broker::BrokerConfig {
        // Room for the 16 MiB the slow member has queued.
        max_memory: 1 << 30,
        ..config(dir.path())
    };
    let b = herald_broker::server::start(cfg).await.unwrap();
    let addr = b.local_addr();
    let big = Subscribe {
        prefetch_bytes: 64 << 20,
        ..sub("t", "g", 2 * N as u32, 60_000, 0)
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut p = Raw::connect(addr).await;
        p.create_topic("t").await;
        let payload = vec![7u8; 4096];
        let batch: Vec<&[u8]> = vec![&payload[..]; PER_BATCH as usize];
        for _ in 0..BATCHES {
            p.publish("t", &batch).await;
        }
        // A member takes everything and leaves without acking.
        let mut gone = Raw::connect(addr).await;
        gone.subscribe_with(big.clone()).await;
        assert_eq!(gone.take(N as usize).await.len() as u64, N);
        drop(gone);

        // The next member gets it all again and reads nothing for now.
        let mut m = Raw::connect(addr).await;
        let s = m.subscribe_with(big).await;
        let me = m.client_id.clone();
        wait_for_group(&mut p, |g| g.members == [me.clone()] && g.in_flight == N).await;
        let ack = m
            .send(Message::Ack(Ack {
                subscription_id: s,
                kind: AckKind::Ack,
                ranges: vec![(N - 1, N - 1)],
            }))
            .await;
        // Wait until the ack is written (the first state written since the
        // deliveries): its Ok is due.
        let state = dir.path().join("topics/t/groups/g.state");
        loop {
            let written = herald_broker::group::store::load(&state)
                .unwrap()
                .is_some_and(|g| g.snapshot.next_fresh == N);
            if written {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let mut redelivered = 0u64;
        loop {
            let f = m.recv().await.expect("connection open");
            match Message::decode(&f).unwrap() {
                Message::Deliver(d) => {
                    assert_eq!(d.delivery_count, 2);
                    redelivered += d.last_offset - d.first_offset + 1;
                }
                Message::Ok if f.header.request_id == ack => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            redelivered, N,
            "the ack's Ok overtook redeliveries queued before it"
        );
    })
    .await
    .expect("in time");
    b.shutdown().await;
}

/// Dead letters are copied in batches a client can read: each copy carries
/// five more headers than its original, so one full source batch made a
/// dead-letter batch over the frame limit, and its Deliver a frame no
/// client would take (a 56 MB one for a 1.8 MB publish). Here 2,000 small
/// records in one publish, on a broker with a 64 KiB frame limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_a_full_batch_are_split_into_deliverable_batches() {
    const N: u64 = 2_000;
    const MAX_FRAME: usize = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_frame_bytes = MAX_FRAME;
    let b = herald_broker::server::start(cfg).await.unwrap();
    let mut c = Raw::connect(b.local_addr()).await;
    let payloads: Vec<Vec<u8>> = (0..N).map(|i| format!("job-{i:06}").into_bytes()).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
    c.publish("jobs", &refs).await;
    // One delivery each, never acked: all dead-lettered after 200 ms.
    c.subscribe_with(sub("jobs", "w", N as u32, 200, 1)).await;
    assert_eq!(c.take(N as usize).await.len(), N as usize);
    c.until_dead_lettered("jobs", N).await;
    let mut d = Raw::connect(b.local_addr()).await;
    d.subscribe("jobs.dlq", None, StartPosition::Earliest, N as u32)
        .await;
    let mut got = Vec::new();
    while got.len() < N as usize {
        let f = tokio::time::timeout(T, d.recv())
            .await
            .expect("dead letters delivered")
            .expect("connection open");
        let size = f.body.len() + HEADER_LEN;
        if let Ok(Message::Deliver(del)) = Message::decode(&f) {
            assert!(
                size <= MAX_FRAME,
                "a Deliver of {size} bytes, over the {MAX_FRAME}-byte frame limit"
            );
            got.extend(del.batch.records().map(|r| r.payload.to_vec()));
        }
    }
    assert_eq!(got, payloads, "every dead letter, once, in order");
    b.shutdown().await;
}

/// A topic whose name has the longest length allowed still has a
/// dead-letter topic (its name is 204 characters with `.dlq`), readable, and
/// there after a restart. Before, every copy failed on the name's length,
/// for ever, with an error line per range every second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_with_the_longest_name_still_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let topic = "L".repeat(200);
    let dlq = format!("{topic}.dlq");
    let mut c = Raw::connect(b.local_addr()).await;
    c.publish(&topic, &[b"poison"]).await;
    c.subscribe_with(sub(&topic, "w", 10, 100, 1)).await;
    assert_eq!(c.take(1).await.len(), 1);
    c.until_dead_lettered(&topic, 1).await;
    drop(c);
    b.shutdown().await;
    let b = start(dir.path()).await;
    let mut d = Raw::connect(b.local_addr()).await;
    d.subscribe(&dlq, None, StartPosition::Earliest, 10).await;
    let got = d.take(1).await;
    assert_eq!(&got[0].1.payload[..], b"poison");
    b.shutdown().await;
}
