//! Reconnect and resume: a broker restarted (gracefully, same port, same
//! data) under load, and a broker that stays down.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{wait_event, within, TestBroker};
use futures::StreamExt;
use herald_client::{Client, ConnectionEvent, Error, OverflowPolicy, Start};
use tokio::sync::watch;

const N: u32 = 20_000;

/// A producer publishes and a group consumer consumes `n` messages while
/// the broker restarts. Every confirmed publish is consumed, nothing is
/// stored twice, the app sees every message exactly once, and both clients
/// report Disconnected, Reconnecting and Reconnected. Over WebSocket the
/// clients are given only the HTTP listener's address, so nothing can pass
/// over the TCP port.
async fn restart_under_load(websocket: bool, n: u32) -> anyhow::Result<()> {
    let mut broker = if websocket {
        TestBroker::start_web().await
    } else {
        TestBroker::start().await
    };
    let addr = if websocket {
        broker.ws_url()
    } else {
        broker.addr()
    };
    let backoff = (Duration::from_millis(20), Duration::from_millis(200));
    let pub_client = Client::builder(&addr)
        .reconnect_backoff(backoff.0, backoff.1)
        .connect()
        .await?;
    let sub_client = Client::builder(&addr)
        .client_id("restart-consumer")
        .reconnect_backoff(backoff.0, backoff.1)
        .connect()
        .await?;
    pub_client
        .create_topic("restart", Default::default())
        .await?;
    let mut pub_events = pub_client.events();
    let mut sub_events = sub_client.events();

    let mut sub = sub_client
        .subscribe("restart")
        .group("g")
        .start(Start::Earliest)
        .prefetch(500)
        .await?;
    let (seen_tx, mut seen_rx) = watch::channel(0usize);
    let consumer = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut twice = Vec::new();
        while seen.len() < n as usize {
            let m = match sub.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(e),
                None => break,
            };
            if !seen.insert(m.payload().clone()) {
                twice.push(m.offset());
            }
            m.ack().await?;
            let _ = seen_tx.send(seen.len());
        }
        Ok((seen, twice))
    });

    let producer = pub_client.producer("restart");
    let publisher = tokio::spawn(async move {
        let mut pending = Vec::new();
        for i in 0..n {
            pending.push(producer.send(format!("m{i}")).await?);
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let mut offsets = Vec::new();
        for p in pending {
            offsets.push(p.await?.offset);
        }
        Ok::<_, Error>(offsets)
    });

    within(
        "the consumer to get going",
        seen_rx.wait_for(|seen| *seen as u32 >= n / 10),
    )
    .await?;
    broker.restart().await;
    for events in [&mut pub_events, &mut sub_events] {
        let seen = wait_event(events, |e| *e == ConnectionEvent::Reconnected).await;
        assert!(
            seen.iter()
                .any(|e| matches!(e, ConnectionEvent::Disconnected { .. })),
            "{seen:?}"
        );
        assert!(
            seen.iter()
                .any(|e| matches!(e, ConnectionEvent::Reconnecting { .. })),
            "{seen:?}"
        );
    }

    let offsets = within("every receipt", publisher).await??;
    let (seen, twice) = within("every message consumed", consumer).await??;
    assert_eq!(offsets.len(), n as usize);
    let distinct: HashSet<u64> = offsets.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        n as usize,
        "each publish has its own offset"
    );
    let info = pub_client.describe_topic("restart").await?;
    assert_eq!(info.next_offset, u64::from(n), "nothing stored twice");
    assert!(twice.is_empty(), "the app saw offsets {twice:?} twice");
    for i in 0..n {
        assert!(seen.contains(format!("m{i}").as_bytes()), "m{i} consumed");
    }
    pub_client.close().await;
    sub_client.close().await;
    Ok(())
}

#[tokio::test]
async fn survives_broker_restart_under_load() -> anyhow::Result<()> {
    restart_under_load(false, N).await
}

/// The same over WebSocket: the restart closes every WebSocket with
/// GoingAway, and both clients reconnect over WebSocket.
#[tokio::test]
async fn survives_broker_restart_under_load_over_websocket() -> anyhow::Result<()> {
    restart_under_load(true, N / 2).await
}

/// With the broker down, publishes are buffered up to the limit and then
/// fail with BufferFull (policy Fail); reconnect attempts are counted in
/// Reconnecting events until the client gives up, and the buffered
/// publishes then fail with ConnectionLost.
#[tokio::test]
async fn buffer_limit_and_give_up_while_broker_down() -> anyhow::Result<()> {
    let mut broker = TestBroker::start().await;
    let client = Client::builder(broker.addr())
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .max_reconnect_attempts(Some(4))
        .buffer_limits(100, 1 << 20)
        .overflow(OverflowPolicy::Fail)
        .connect()
        .await?;
    client.publish("down", "before").await?;
    let mut events = client.events();
    broker.stop().await;
    wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Disconnected { .. })
    })
    .await;

    let producer = client.producer("down");
    let mut pending = Vec::new();
    for i in 0..100 {
        pending.push(producer.send(format!("buffered {i}")).await?);
    }
    assert!(matches!(
        producer.send("one too many").await,
        Err(Error::BufferFull)
    ));

    let seen = wait_event(&mut events, |e| *e == ConnectionEvent::Closed).await;
    let attempts: Vec<u32> = seen
        .iter()
        .filter_map(|e| match e {
            ConnectionEvent::Reconnecting { attempt } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, vec![1, 2, 3, 4], "{seen:?}");
    for p in pending {
        assert!(matches!(
            within("a failed receipt", p).await,
            Err(Error::ConnectionLost(_))
        ));
    }
    Ok(())
}

/// Publishes made while the broker is down wait in the buffer (policy
/// Wait) and are stored once it is back, in order.
#[tokio::test]
async fn publishes_buffered_while_down_are_delivered_after_restart() -> anyhow::Result<()> {
    let mut broker = TestBroker::start().await;
    let client = Client::builder(broker.addr())
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100))
        .connect()
        .await?;
    let first = client.publish("later", "first").await?;
    let mut events = client.events();
    broker.stop().await;
    wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Disconnected { .. })
    })
    .await;
    let producer = client.producer("later");
    let mut pending = Vec::new();
    for i in 0..50 {
        pending.push(producer.send(format!("while down {i}")).await?);
    }
    wait_event(
        &mut events,
        |e| matches!(e, ConnectionEvent::Reconnecting { attempt } if *attempt >= 2),
    )
    .await;
    broker.start_again().await;
    wait_event(&mut events, |e| *e == ConnectionEvent::Reconnected).await;
    for (i, p) in pending.into_iter().enumerate() {
        let r = within("a receipt", p).await?;
        assert_eq!(r.offset, first.offset + 1 + i as u64);
    }
    let mut sub = client.subscribe("later").start(Start::Earliest).await?;
    let m = within("a message", sub.next()).await;
    assert!(matches!(m, Some(Ok(ref m)) if &m.payload()[..] == b"first"));
    Ok(())
}

/// Acks made while the broker is down reach it once the subscription is
/// back. The broker redelivers the ten unacked messages after its restart,
/// the ack filter hides them (the app acked them), and they fill the
/// prefetch window of ten. The eleventh message can only arrive once the
/// broker has the acks: with a 60 s ack timeout it arrives within the 20 s
/// wait only if the client sent them without waiting for a deadline. (The
/// race that once stranded such acks, a flush that ran before the
/// resubscribe was confirmed, is pinned by a unit test in `state.rs`.)
#[tokio::test]
async fn acks_made_while_down_are_sent_on_resubscribe() -> anyhow::Result<()> {
    let mut broker = TestBroker::start().await;
    let client = Client::builder(broker.addr())
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100))
        .connect()
        .await?;
    let producer = client.producer("acks-down");
    for i in 0..10 {
        producer.send(format!("m{i}")).await?.await?;
    }
    let mut sub = client
        .subscribe("acks-down")
        .group("g")
        .prefetch(10)
        .ack_timeout(Duration::from_secs(60))
        .await?;
    let mut held = Vec::new();
    for _ in 0..10 {
        match within("a message", sub.next()).await {
            Some(Ok(m)) => held.push(m),
            other => anyhow::bail!("expected a message, got {other:?}"),
        }
    }
    let mut events = client.events();
    broker.stop().await;
    wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Disconnected { .. })
    })
    .await;
    for m in &held {
        m.ack().await?;
    }
    broker.start_again().await;
    wait_event(&mut events, |e| *e == ConnectionEvent::Reconnected).await;
    producer.send("m10").await?.await?;
    match within("the eleventh message", sub.next()).await {
        Some(Ok(m)) => assert_eq!(&m.payload()[..], b"m10", "an acked message came back"),
        other => anyhow::bail!("expected m10, got {other:?}"),
    }
    Ok(())
}
