//! Publish and consume against an in-process broker: the round trip,
//! producer pipelining, groups (ack, nack, ack_up_to), ephemeral flow
//! control, and admin calls.

mod common;

use std::time::Duration;

use common::{within, TestBroker};
use futures::StreamExt;
use herald_client::{Client, Record, Start, Subscription};

async fn next(sub: &mut Subscription) -> herald_client::Message {
    match within("a message", sub.next()).await {
        Some(Ok(m)) => m,
        Some(Err(e)) => panic!("subscription error: {e}"),
        None => panic!("subscription ended"),
    }
}

/// A record published with key and headers comes back intact, at the
/// offset its receipt named.
#[tokio::test]
async fn publish_then_consume_round_trip() -> anyhow::Result<()> {
    let broker = TestBroker::start().await;
    let client = Client::connect(broker.addr()).await?;
    let first = client.publish("rt", "plain").await?;
    let rec = Record::new("hello").key("k1").header("h", "v");
    let receipt = client.publish_record("rt", rec).await?;
    assert_eq!(receipt.offset, first.offset + 1);
    assert!(!receipt.duplicate);

    let mut sub = client
        .subscribe("rt")
        .group("g")
        .start(Start::Earliest)
        .await?;
    let m = next(&mut sub).await;
    assert_eq!(
        (m.offset(), &m.payload()[..]),
        (first.offset, &b"plain"[..])
    );
    assert_eq!(m.key(), None);
    m.ack().await?;
    let m = next(&mut sub).await;
    assert_eq!(m.offset(), receipt.offset);
    assert_eq!(&m.payload()[..], b"hello");
    assert_eq!(m.key().map(|k| &k[..]), Some(&b"k1"[..]));
    assert_eq!(m.header("h"), Some(&b"v"[..]));
    assert_eq!(m.delivery_count(), 1);
    m.ack().await?;
    client.close().await;
    Ok(())
}

/// 10,000 sends are queued without waiting for confirms; every receipt
/// resolves, in order, with consecutive offsets.
#[tokio::test]
async fn producer_pipelines_ten_thousand() -> anyhow::Result<()> {
    let broker = TestBroker::start().await;
    let client = Client::connect(broker.addr()).await?;
    let producer = client.producer("pipe");
    let mut pending = Vec::with_capacity(10_000);
    for i in 0..10_000u32 {
        pending.push(producer.send(i.to_le_bytes().to_vec()).await?);
    }
    let mut last = None;
    for p in pending {
        let r = within("a receipt", p).await?;
        if let Some(prev) = last {
            assert_eq!(r.offset, prev + 1, "receipts in order");
        }
        last = Some(r.offset);
    }
    let info = client.describe_topic("pipe").await?;
    assert_eq!(info.next_offset, 10_000);
    Ok(())
}

/// The default window keeps a fast consumer fed: with nothing acked yet,
/// a group member holds several thousand small messages at once (a window
/// of 1,000 made W3 three times slower, issue 14 item 13).
#[tokio::test]
async fn the_default_window_holds_thousands_of_small_messages() -> anyhow::Result<()> {
    let broker = TestBroker::start().await;
    let client = Client::connect(broker.addr()).await?;
    let producer = client.producer("window");
    let mut pending = Vec::with_capacity(5_000);
    for i in 0..5_000u32 {
        pending.push(producer.send(i.to_le_bytes().to_vec()).await?);
    }
    for p in pending {
        within("a receipt", p).await?;
    }
    let mut sub = client
        .subscribe("window")
        .group("g")
        .start(Start::Earliest)
        .await?;
    let mut held = Vec::with_capacity(5_000);
    for want in 0..5_000u64 {
        let m = next(&mut sub).await;
        assert_eq!(m.offset(), want);
        held.push(m);
    }
    for m in held {
        m.ack().await?;
    }
    client.close().await;
    Ok(())
}

/// Acked messages are done, nacked ones come back with a higher delivery
/// count, and `ack_up_to` commits a whole prefix: a new member of the same
/// group resumes after it.
#[tokio::test]
async fn group_ack_nack_and_ack_up_to() -> anyhow::Result<()> {
    let broker = TestBroker::start().await;
    let client = Client::connect(broker.addr()).await?;
    for i in 0..10 {
        client.publish("jobs", format!("job {i}")).await?;
    }
    let mut sub = client
        .subscribe("jobs")
        .group("workers")
        .start(Start::Earliest)
        .await?;
    let mut nacked = Vec::new();
    for _ in 0..10 {
        let m = next(&mut sub).await;
        if m.offset() % 2 == 0 {
            m.ack().await?;
        } else {
            nacked.push(m.offset());
            m.nack(Duration::ZERO).await?;
        }
    }
    let mut redelivered = Vec::new();
    while redelivered.len() < nacked.len() {
        let m = next(&mut sub).await;
        assert!(
            m.delivery_count() >= 2,
            "offset {} is a redelivery",
            m.offset()
        );
        redelivered.push(m.offset());
        m.ack().await?;
    }
    redelivered.sort_unstable();
    assert_eq!(redelivered, nacked);
    sub.unsubscribe().await?;

    // A second group commits everything with one ack_up_to.
    let mut sub = client
        .subscribe("jobs")
        .group("batch")
        .start(Start::Earliest)
        .await?;
    let mut last = 0;
    for _ in 0..10 {
        last = next(&mut sub).await.offset();
    }
    sub.ack_up_to(last).await?;
    sub.unsubscribe().await?;
    client.publish("jobs", "after").await?;
    for group in ["workers", "batch"] {
        let mut sub = client
            .subscribe("jobs")
            .group(group)
            .start(Start::Resume)
            .await?;
        let m = next(&mut sub).await;
        assert_eq!(
            &m.payload()[..],
            b"after",
            "group {group} resumes after its acks"
        );
        m.ack().await?;
        sub.unsubscribe().await?;
    }
    client.close().await;
    Ok(())
}

/// An ephemeral subscription with a window of 100 consumes 100,000
/// messages: credit is returned as the app consumes.
#[tokio::test]
async fn ephemeral_flow_control_hundred_thousand() -> anyhow::Result<()> {
    const N: u64 = 100_000;
    let broker = TestBroker::start().await;
    let client = Client::connect(broker.addr()).await?;
    let producer = client.producer("firehose");
    let mut last = None;
    for i in 0..N {
        last = Some(producer.send(i.to_le_bytes().to_vec()).await?);
    }
    if let Some(last) = last {
        within("the last receipt", last).await?;
    }
    let mut sub = client
        .subscribe("firehose")
        .start(Start::Earliest)
        .prefetch(100)
        .await?;
    within("100,000 messages", async {
        for want in 0..N {
            let m = next(&mut sub).await;
            assert_eq!(m.offset(), want);
            assert_eq!(&m.payload()[..], &want.to_le_bytes()[..]);
        }
    })
    .await;
    Ok(())
}

/// Topic administration round-trips through the broker.
#[tokio::test]
async fn admin_calls() -> anyhow::Result<()> {
    let broker = TestBroker::start().await;
    let client = Client::connect(broker.addr()).await?;
    let info = client.create_topic("made", Default::default()).await?;
    assert_eq!(info.name, "made");
    // Creating it again with the same settings is idempotent; with other
    // settings it is refused.
    client.create_topic("made", Default::default()).await?;
    let other = herald_client::TopicConfig {
        retention_bytes: Some(1 << 30),
        ..Default::default()
    };
    let again = client.create_topic("made", other).await;
    assert_eq!(
        again.err().and_then(|e| e.code()),
        Some(herald_client::ErrorCode::TopicExists)
    );
    client.publish("made", "x").await?;
    let topics = client.list_topics().await?;
    assert!(topics
        .iter()
        .any(|t| t.name == "made" && t.next_offset == 1));
    client.delete_topic("made").await?;
    assert!(client.describe_topic("made").await.is_err());
    Ok(())
}

/// Acks wait up to 20 ms to share a frame, but never while the broker
/// holds deliveries back for want of credit: with one message of prefetch
/// (by count, then by bytes) each ack goes at once. Were they held for the
/// linger, these 150 messages would take 3 s each way.
#[tokio::test]
async fn a_member_with_a_small_window_is_not_held_back_by_the_ack_linger() -> anyhow::Result<()> {
    let broker = TestBroker::start().await;
    let client = Client::connect(broker.addr()).await?;
    const N: u64 = 150;
    let producer = client.producer("narrow");
    let mut pending = Vec::new();
    for i in 0..N {
        pending.push(producer.send(vec![i as u8; 600]).await?);
    }
    for p in pending {
        within("a receipt", p).await?;
    }
    for (group, messages, bytes) in [("by-count", 1, 1 << 20), ("by-bytes", 10_000, 1_000)] {
        let mut sub = client
            .subscribe("narrow")
            .group(group)
            .start(Start::Earliest)
            .prefetch(messages)
            .prefetch_bytes(bytes)
            .await?;
        let t0 = std::time::Instant::now();
        for i in 0..N {
            let m = next(&mut sub).await;
            assert_eq!(m.offset(), i);
            m.ack().await?;
        }
        let took = t0.elapsed();
        assert!(
            took < Duration::from_millis(1_500),
            "{group}: {N} messages took {took:?}; acks waited for the linger"
        );
    }
    client.close().await;
    Ok(())
}
