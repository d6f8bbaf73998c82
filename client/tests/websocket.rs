//! The client over WebSocket (`ws://host:port/ws`, the broker's HTTP
//! listener): the same frames as over TCP, so publishing, group and
//! ephemeral subscriptions, acks, reconnect and resume all behave as they
//! do over TCP. The client is given only the HTTP listener's address, so
//! nothing here can pass over the TCP port.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{wait_event, within, TestBroker};
use futures::StreamExt;
use herald_client::{Client, ConnectionEvent, Error, Start};
use tokio::sync::watch;

/// Publish, a group subscription acked to the end (the broker's group says
/// so), and an ephemeral subscription, all over one WebSocket each.
#[tokio::test]
async fn publish_subscribe_and_ack_over_websocket() -> anyhow::Result<()> {
    const N: u64 = 2_000;
    let broker = TestBroker::start_web().await;
    let url = broker.ws_url();
    let client = Client::connect(&url).await?;
    client.create_topic("web", Default::default()).await?;
    let mut live = client.subscribe("web").start(Start::Latest).await?;

    let producer = client.producer("web");
    let mut pending = Vec::new();
    for i in 0..N {
        pending.push(producer.send(format!("m{i}")).await?);
    }
    for (i, p) in pending.into_iter().enumerate() {
        assert_eq!(within("a receipt", p).await?.offset, i as u64);
    }

    let consumer = Client::builder(&url).client_id("web-consumer").await?;
    let mut sub = consumer
        .subscribe("web")
        .group("g")
        .start(Start::Earliest)
        .await?;
    for i in 0..N {
        let m = within("a group message", sub.next()).await.expect("open")?;
        assert_eq!(
            (m.offset(), &m.payload()[..]),
            (i, format!("m{i}").as_bytes())
        );
        if i + 1 == N {
            m.ack_confirmed().await?;
        } else {
            m.ack().await?;
        }
    }
    let groups = client.list_groups("web").await?;
    let g = groups.iter().find(|g| g.name == "g").expect("group g");
    assert_eq!((g.ack_floor, g.lag, g.in_flight), (N, 0, 0), "{g:?}");

    for i in 0..N {
        let m = within("a live message", live.next()).await.expect("open")?;
        assert_eq!(m.offset(), i);
    }
    consumer.close().await;
    client.close().await;
    Ok(())
}

/// A producer and a group consumer over WebSocket while the broker
/// restarts (it closes every WebSocket with GoingAway): both reconnect over
/// WebSocket, every confirmed publish is stored once and consumed, and the
/// consumer resumes where its acks left off.
#[tokio::test]
async fn reconnects_and_resumes_over_websocket() -> anyhow::Result<()> {
    const N: u32 = 10_000;
    let mut broker = TestBroker::start_web().await;
    let url = broker.ws_url();
    let backoff = (Duration::from_millis(20), Duration::from_millis(200));
    let pub_client = Client::builder(&url)
        .reconnect_backoff(backoff.0, backoff.1)
        .await?;
    let sub_client = Client::builder(&url)
        .client_id("ws-restart-consumer")
        .reconnect_backoff(backoff.0, backoff.1)
        .await?;
    pub_client
        .create_topic("resume", Default::default())
        .await?;
    let mut pub_events = pub_client.events();
    let mut sub_events = sub_client.events();

    let mut sub = sub_client
        .subscribe("resume")
        .group("g")
        .start(Start::Earliest)
        .prefetch(500)
        .await?;
    let (seen_tx, mut seen_rx) = watch::channel(0usize);
    let consumer = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut twice = Vec::new();
        while seen.len() < N as usize {
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

    let producer = pub_client.producer("resume");
    let publisher = tokio::spawn(async move {
        let mut pending = Vec::new();
        for i in 0..N {
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
        seen_rx.wait_for(|n| *n >= 1_000),
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
    }

    let offsets = within("every receipt", publisher).await??;
    let (seen, twice) = within("every message consumed", consumer).await??;
    let distinct: HashSet<u64> = offsets.iter().copied().collect();
    assert_eq!(distinct.len(), N as usize, "each publish its own offset");
    let info = pub_client.describe_topic("resume").await?;
    assert_eq!(info.next_offset, u64::from(N), "nothing stored twice");
    assert!(twice.is_empty(), "the app saw offsets {twice:?} twice");
    for i in 0..N {
        assert!(seen.contains(format!("m{i}").as_bytes()), "m{i} consumed");
    }
    pub_client.close().await;
    sub_client.close().await;
    Ok(())
}

/// A broker with the smallest frame limit (4 KiB, which is also its
/// WebSocket message limit): the client's writes, many frames at a time,
/// leave in messages within the limit, so the broker never closes the
/// socket for a message too big (1009) and nothing reconnects.
#[tokio::test]
async fn messages_stay_within_the_brokers_frame_limit() -> anyhow::Result<()> {
    const N: u64 = 3_000;
    let broker = TestBroker::start_with(|c| {
        c.http = Some(([127, 0, 0, 1], 0).into());
        c.max_frame_bytes = 4096;
    })
    .await;
    let client = Client::connect(broker.ws_url()).await?;
    let mut events = client.events();
    let producer = client.producer("small");
    let mut pending = Vec::new();
    for i in 0..N {
        pending.push(producer.send(vec![i as u8; 200]).await?);
    }
    for (i, p) in pending.into_iter().enumerate() {
        assert_eq!(within("a receipt", p).await?.offset, i as u64);
    }
    let mut sub = client
        .subscribe("small")
        .group("g")
        .start(Start::Earliest)
        .await?;
    for i in 0..N {
        let m = within("a message", sub.next()).await.expect("open")?;
        assert_eq!(m.offset(), i);
        m.ack().await?;
    }
    client.close().await;
    let seen = wait_event(&mut events, |e| *e == ConnectionEvent::Closed).await;
    assert_eq!(seen, vec![ConnectionEvent::Closed], "no reconnect");
    Ok(())
}

/// Addresses the client refuses before dialling: another scheme, and TLS
/// settings with a plain ws:// URL.
#[tokio::test]
async fn unusable_websocket_addresses_fail_connect() {
    for builder in [
        Client::builder("http://127.0.0.1:1/ws"),
        Client::builder("ws://127.0.0.1:1/ws").tls(),
        Client::builder("ws://:1/ws"),
    ] {
        match builder.connect().await {
            Err(Error::InvalidArgument(_)) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("connected"),
        }
    }
}
