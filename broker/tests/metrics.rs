//! `GET /metrics` after known traffic shows the numbers that traffic made
//! (records appended, group lag after acks, errors after bad requests,
//! connections by transport and state, refused handshakes); the switch
//! that drops topic and group labels; `GET /readyz` before and after
//! recovery and with an unwritable data folder.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use herald_broker::BrokerConfig;
use herald_protocol::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn web_config(dir: &std::path::Path) -> BrokerConfig {
    let mut c = config(dir);
    c.http = Some("127.0.0.1:0".parse().unwrap());
    c
}

/// `GET path`: status and body.
async fn get(http: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(http).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn scrape(http: SocketAddr) -> String {
    let (status, body) = get(http, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample written exactly as `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Scrapes until `series` has value `want` (state that settles after an
/// event the test cannot wait on directly, like a closed socket noticed
/// by the broker), failing after [`T`].
async fn until(http: SocketAddr, series: &str, want: f64) -> String {
    let deadline = Instant::now() + T;
    loop {
        let text = scrape(http).await;
        if value(&text, series) == Some(want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never became {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_shows_appends_lag_errors_and_connections() {
    let dir = tempfile::tempdir().unwrap();
    let b = herald_broker::server::start(web_config(dir.path()))
        .await
        .unwrap();
    let http = b.http_addr().unwrap();
    let mut c = Raw::connect(b.local_addr()).await;
    c.publish("orders", &[b"a", b"b", b"c"]).await;
    c.publish("orders", &[b"d", b"e", b"f", b"g"]).await;

    let text = scrape(http).await;
    let t = |name: &str| value(&text, &format!("{name}{{topic=\"orders\"}}"));
    assert_eq!(
        t("herald_topic_appended_records_total"),
        Some(7.0),
        "{text}"
    );
    assert_eq!(t("herald_topic_appends_total"), Some(2.0));
    assert!(t("herald_topic_appended_bytes_total").unwrap() > 7.0);
    assert!(t("herald_topic_size_bytes").unwrap() > 7.0);
    assert_eq!(t("herald_topic_segments"), Some(1.0));
    // fsync always: every group commit was synced and timed.
    assert!(t("herald_topic_fsync_duration_seconds_count").unwrap() >= 1.0);
    assert!(t("herald_topic_group_commit_batches_count").unwrap() >= 1.0);
    assert_eq!(
        value(
            &text,
            "herald_connections{transport=\"tcp\",state=\"open\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "herald_frames_received_total{type=\"Publish\"}"),
        Some(2.0)
    );
    assert_eq!(value(&text, "herald_ready"), Some(1.0));
    assert!(value(&text, "process_open_fds").unwrap() > 0.0);
    assert!(value(&text, "herald_disk_free_bytes").unwrap() > 0.0);
    assert_eq!(
        value(&text, "herald_memory_budget_bytes"),
        Some(config(dir.path()).max_memory as f64)
    );

    // A group reads all 7 and acks the first 5: lag 2, both in flight.
    let sub = c
        .subscribe("orders", Some("billing"), StartPosition::Earliest, 100)
        .await;
    assert_eq!(c.take(7).await.len(), 7);
    c.ack(sub, AckKind::Ack, vec![(0, 4)]).await;
    let text = scrape(http).await;
    let g = |name: &str| {
        value(
            &text,
            &format!("{name}{{topic=\"orders\",group=\"billing\"}}"),
        )
    };
    assert_eq!(g("herald_group_lag_records"), Some(2.0), "{text}");
    assert_eq!(g("herald_group_in_flight_records"), Some(2.0));
    assert_eq!(g("herald_group_ack_floor"), Some(5.0));
    assert_eq!(g("herald_group_members"), Some(1.0));
    assert_eq!(g("herald_group_redelivered_records_total"), Some(0.0));
    assert_eq!(
        value(
            &text,
            "herald_topic_delivered_records_total{topic=\"orders\"}"
        ),
        Some(7.0)
    );

    // An ephemeral subscriber's deliveries count too.
    c.subscribe("orders", None, StartPosition::Earliest, 100)
        .await;
    assert_eq!(c.take(7).await.len(), 7);
    until(
        http,
        "herald_topic_delivered_records_total{topic=\"orders\"}",
        14.0,
    )
    .await;

    // Bad requests: an invalid topic name, an emit of a reserved event name
    // inside an EmitBatch (counted like a lone refusal), a handshake
    // without Hello.
    let bad = c.publish_seq("no spaces allowed", &[b"x"], 0, 0).await;
    assert_eq!(bad.unwrap_err().code, ErrorCode::InvalidArgument.as_u16());
    let results = c.emit_batch(&[("lobby", "fine"), ("lobby", "join")]).await;
    assert!(
        matches!(results[..], [EmitOutcome::Ok(_), EmitOutcome::Err(_)]),
        "{results:?}"
    );
    let mut rude = Raw::unhandshaken(b.local_addr()).await;
    rude.send_no_reply(Message::Ping).await;
    assert!(rude.recv().await.is_some(), "the refusal is answered");
    let text = scrape(http).await;
    assert_eq!(
        value(&text, "herald_errors_total{code=\"InvalidArgument\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "herald_errors_total{code=\"HandshakeRequired\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "herald_handshakes_refused_total{reason=\"protocol\"}"
        ),
        Some(1.0)
    );

    // A WebSocket that has not said Hello yet, then gone; the TCP client
    // gone too.
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .unwrap();
    until(
        http,
        "herald_connections{transport=\"websocket\",state=\"handshake\"}",
        1.0,
    )
    .await;
    drop(ws);
    drop(c);
    drop(rude);
    until(
        http,
        "herald_connections{transport=\"tcp\",state=\"open\"}",
        0.0,
    )
    .await;
    let text = until(
        http,
        "herald_connections{transport=\"websocket\",state=\"handshake\"}",
        0.0,
    )
    .await;
    assert_eq!(
        value(
            &text,
            "herald_connections_accepted_total{transport=\"tcp\"}"
        ),
        Some(2.0)
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_and_group_labels_can_be_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = web_config(dir.path());
    cfg.metrics_topic_labels = false;
    let b = herald_broker::server::start(cfg).await.unwrap();
    let http = b.http_addr().unwrap();
    let mut c = Raw::connect(b.local_addr()).await;
    c.publish("a", &[b"1", b"2"]).await;
    c.publish("b", &[b"3", b"4", b"5"]).await;
    let sub = c
        .subscribe("a", Some("g1"), StartPosition::Earliest, 10)
        .await;
    c.take(2).await;
    c.ack(sub, AckKind::Ack, vec![(0, 0)]).await;
    c.subscribe("b", Some("g2"), StartPosition::Earliest, 10)
        .await;
    c.take(3).await;
    let text = scrape(http).await;
    assert!(!text.contains("topic=\""), "{text}");
    assert!(!text.contains("group=\""), "{text}");
    // One series each, summed over topics and groups.
    assert_eq!(
        value(&text, "herald_topic_appended_records_total"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(value(&text, "herald_group_lag_records"), Some(4.0));
    assert_eq!(value(&text, "herald_group_members"), Some(2.0));
    // A floor summed over groups would mean nothing: left out.
    assert_eq!(value(&text, "herald_group_ack_floor"), None);
    assert!(value(&text, "herald_topic_fsync_duration_seconds_count").unwrap() >= 2.0);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_ready_only_after_recovery() {
    let dir = tempfile::tempdir().unwrap();
    // Data to recover: a topic with records.
    {
        let b = start(dir.path()).await;
        let mut c = Raw::connect(b.local_addr()).await;
        c.publish("kept", &[b"1", b"2", b"3"]).await;
        drop(c);
        b.shutdown().await;
    }
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = web_config(dir.path());
    // The hook runs with the HTTP listener up and no log opened yet; it
    // holds recovery back until the test has looked.
    let starting = tokio::spawn(herald_broker::server::start_observed(
        cfg,
        |http| async move {
            addr_tx.send(http).unwrap();
            go_rx.await.unwrap();
        },
    ));
    let http = tokio::time::timeout(T, addr_rx)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let (status, body) = get(http, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("recovering"), "{body}");
    assert_eq!(get(http, "/healthz").await.0, 200);
    assert_eq!(get(http, "/metrics").await.0, 503);
    go_tx.send(()).unwrap();
    let b = tokio::time::timeout(T, starting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let (status, body) = get(http, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let text = scrape(http).await;
    assert_eq!(value(&text, "herald_ready"), Some(1.0));
    assert_eq!(
        value(&text, "herald_topic_appended_records_total{topic=\"kept\"}"),
        Some(0.0),
        "counters count from this start"
    );
    assert_eq!(
        value(
            &text,
            "herald_topic_torn_tails_truncated_total{topic=\"kept\"}"
        ),
        Some(0.0)
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_the_data_folder_takes_no_writes() {
    let dir = tempfile::tempdir().unwrap();
    let b = herald_broker::server::start(web_config(dir.path()))
        .await
        .unwrap();
    let http = b.http_addr().unwrap();
    // A directory where the probe writes its file: the write fails as it
    // would on a read-only or full file system (the tests run as root,
    // whom permissions do not stop).
    let probe = dir.path().join(".readyz-probe");
    std::fs::create_dir(&probe).unwrap();
    let (status, body) = get(http, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not writable"), "{body}");
    std::fs::remove_dir(&probe).unwrap();
    // The failed probe is remembered for a second; then ready again.
    let deadline = Instant::now() + T;
    while get(http, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.shutdown().await;
}

/// The `.log` segment of `topic` in data folder `dir`.
fn segment(dir: &std::path::Path, topic: &str) -> std::path::PathBuf {
    std::fs::read_dir(dir.join("topics").join(topic).join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_events_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = start(dir.path()).await;
        let mut c = Raw::connect(b.local_addr()).await;
        c.publish("torn", &[b"1", b"2"]).await;
        for _ in 0..3 {
            c.publish("damaged", &[b"some payload"]).await;
        }
        drop(c);
        b.shutdown().await;
    }
    // Garbage after the last batch: what a crash mid-write leaves.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(segment(dir.path(), "torn"))
        .unwrap();
    std::io::Write::write_all(&mut f, &[0xAB; 40]).unwrap();
    drop(f);
    // A flipped byte inside the first of three batches: damage with valid
    // batches after it.
    let seg = segment(dir.path(), "damaged");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[60] ^= 0xFF;
    std::fs::write(&seg, bytes).unwrap();
    let b = herald_broker::server::start(web_config(dir.path()))
        .await
        .unwrap();
    let text = scrape(b.http_addr().unwrap()).await;
    assert_eq!(
        value(
            &text,
            "herald_topic_torn_tails_truncated_total{topic=\"torn\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "herald_topic_torn_tails_truncated_total{topic=\"damaged\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "herald_topic_damaged_ranges{topic=\"damaged\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "herald_topic_damaged_ranges{topic=\"torn\"}"),
        Some(0.0)
    );
    // A repair accepts the range: readers skip it, nothing stops there.
    b.registry().repair("damaged", false).await.unwrap();
    let text = scrape(b.http_addr().unwrap()).await;
    assert_eq!(
        value(&text, "herald_topic_damaged_ranges{topic=\"damaged\"}"),
        Some(0.0),
        "{text}"
    );
    b.shutdown().await;
}

/// Scrapes until `series` is at least `want` (presence records are
/// appended after the request that caused them is answered).
async fn until_at_least(http: SocketAddr, series: &str, want: f64) -> String {
    let deadline = Instant::now() + T;
    loop {
        let text = scrape(http).await;
        if value(&text, series).is_some_and(|v| v >= want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_counted_and_members_groups_pooled() {
    let dir = tempfile::tempdir().unwrap();
    let b = herald_broker::server::start(web_config(dir.path()))
        .await
        .unwrap();
    let http = b.http_addr().unwrap();
    let mut alice = Raw::connect_as(b.local_addr(), Some("alice")).await;
    let mut bob = Raw::connect_as(b.local_addr(), Some("bob")).await;
    for c in [&mut alice, &mut bob] {
        let r = c
            .request(Message::Join(JoinRoom {
                room: "lobby".into(),
                durable: true,
                history: 0,
            }))
            .await;
        assert!(!matches!(r, Message::Error(_)), "{r:?}");
    }
    let r = alice
        .request(Message::Emit(Emit {
            target: EmitTarget::Room("lobby".into()),
            event: "hello".into(),
            payload: b"hi".to_vec(),
            correlation: 0,
        }))
        .await;
    assert!(matches!(r, Message::EmitOk(_)), "{r:?}");
    let text = until_at_least(http, "herald_room_presence_events_total", 2.0).await;
    assert_eq!(value(&text, "herald_rooms"), Some(1.0), "{text}");
    assert_eq!(value(&text, "herald_room_members"), Some(2.0));
    assert_eq!(value(&text, "herald_clients_online"), Some(2.0));
    assert_eq!(value(&text, "herald_room_emits_total"), Some(1.0));
    // Each member's group on the room's log is summed under one label,
    // never labelled with a client id.
    assert!(!text.contains("group=\"alice\""), "{text}");
    assert!(
        value(
            &text,
            "herald_group_lag_records{topic=\"_room.lobby\",group=\"_members\"}"
        )
        .unwrap()
            >= 2.0,
        "{text}"
    );
    b.shutdown().await;
}
