//! The client over WebSocket (`ws://host:port/ws`, the broker's HTTP
//! listener): the same frames as over TCP, so publishing, group and
//! ephemeral subscriptions, acks, reconnect and resume all behave as they
//! do over TCP (the restart under load over WebSocket is in reconnect.rs).
//! The client is given only the HTTP listener's address, so nothing here can
//! pass over the TCP port.

mod common;

use common::{wait_event, within, TestBroker};
use futures::StreamExt;
use herald_client::{Client, ConnectionEvent, Error, Start};

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
