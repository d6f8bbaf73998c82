//! Idempotent publishing, heartbeats and a peer that stops reading, through
//! real TCP.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use herald_protocol::*;
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_stored_once_and_a_gap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut c = Raw::connect(b.local_addr()).await;
    let pid = 0xfeed;
    let first = c.publish_seq("t", &[b"a", b"b"], pid, 0).await.unwrap();
    assert_eq!(
        (first.base_offset, first.count, first.duplicate),
        (0, 2, false)
    );
    let second = c.publish_seq("t", &[b"c"], pid, 2).await.unwrap();
    assert_eq!(second.base_offset, 2);
    // The same first batch again (a retry after a lost confirm).
    let again = c.publish_seq("t", &[b"a", b"b"], pid, 0).await.unwrap();
    assert_eq!(
        (again.base_offset, again.count, again.duplicate),
        (0, 2, true)
    );
    // A gap: sequence 5 when 3 is expected.
    let gap = c.publish_seq("t", &[b"x"], pid, 5).await.unwrap_err();
    assert_eq!(ErrorCode::from_u16(gap.code), ErrorCode::SequenceGap);
    // The retry is recognised after a restart too.
    drop(c);
    b.shutdown().await;
    let b = start(dir.path()).await;
    let mut c = Raw::connect(b.local_addr()).await;
    let again = c.publish_seq("t", &[b"c"], pid, 2).await.unwrap();
    assert_eq!((again.base_offset, again.duplicate), (2, true));
    match c
        .request(Message::DescribeTopic(TopicName { name: "t".into() }))
        .await
    {
        Message::TopicInfo(i) => assert_eq!(i.next_offset, 3),
        m => panic!("{m:?}"),
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_pinged_then_closed_and_a_live_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.heartbeat = Duration::from_millis(100);
    let b = herald_broker::server::start(cfg).await.unwrap();
    let mut silent = Raw::connect(b.local_addr()).await;
    let t0 = Instant::now();
    let mut pings = 0;
    loop {
        match tokio::time::timeout(T, silent.framed.next()).await.unwrap() {
            Some(Ok(f)) if f.header.opcode == Opcode::Ping => pings += 1,
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    assert!(pings >= 1, "the broker pinged before giving up");
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "closed too early: {:?}",
        t0.elapsed()
    );
    // A peer that answers stays connected well past three intervals.
    let mut live = Raw::connect(b.local_addr()).await;
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(700), live.framed.next()).await {
            Ok(Some(Ok(f))) if f.header.opcode == Opcode::Ping => {
                live.send_no_reply(Message::Pong).await
            }
            Ok(Some(Ok(_))) => {}
            Ok(_) => panic!("live peer was closed"),
            Err(_) => {}
        }
    }
    assert_eq!(live.request(Message::Ping).await, Message::Pong);
    b.shutdown().await;
}

/// 40 records of 256 KiB in topic "t" (published by the first connection
/// returned), and a subscriber of it from the start with a huge window
/// that never reads its socket (the second).
async fn stalled_reader(addr: std::net::SocketAddr) -> (Raw, Raw) {
    let mut p = Raw::connect(addr).await;
    let big = vec![b'z'; 256 * 1024];
    for _ in 0..40 {
        p.publish("t", &[&big]).await;
    }
    let mut stuck = Raw::connect(addr).await;
    stuck
        .subscribe_with(Subscribe {
            topic: "t".into(),
            group: None,
            start: StartPosition::Earliest,
            prefetch_messages: 100_000,
            prefetch_bytes: 64 << 20,
            ack_timeout_ms: 0,
            max_deliveries: 0,
        })
        .await;
    (p, stuck)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_cut_off_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.write_stall_timeout = Duration::from_millis(300);
    let b = herald_broker::server::start(cfg).await.unwrap();
    let (mut p, stuck) = stalled_reader(b.local_addr()).await;
    let mut raw = stuck.framed.into_inner();
    // Others keep working meanwhile.
    let mut other = Raw::connect(b.local_addr()).await;
    other
        .subscribe("t", None, StartPosition::Earliest, 100)
        .await;
    assert_eq!(other.take(40).await.len(), 40);
    // After the stall timeout the broker gives up on the stuck peer: reading
    // now drains what was buffered and then hits the end of the stream.
    tokio::time::sleep(Duration::from_millis(600)).await; // let the stall timeout pass (what is tested)
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    let closed = tokio::time::timeout(T, async {
        loop {
            match raw.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .unwrap();
    assert!(closed);
    assert!(
        total < 40 * 256 * 1024,
        "the stuck peer was not cut off ({total} bytes)"
    );
    assert_eq!(p.publish("t", &[b"still fine"]).await.base_offset, 40);
    b.shutdown().await;
}

/// Where the test's log lines go (a `MakeWriter` for tracing).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Makes this thread's log lines up to `level` go to a new `Captured`
    /// while the guard lives (tests on one thread: the broker's tasks run
    /// on it too).
    fn install(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
        let logs = Captured::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_max_level(level)
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A peer cut off for not reading is logged at WARN with its address, so
/// that an operator sees who (it was a debug line). One thread: the
/// test's log subscriber is the thread's default.
#[tokio::test]
async fn a_peer_cut_off_for_not_reading_is_logged_with_its_address() {
    let (logs, _default) = Captured::install(tracing::Level::WARN);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.write_stall_timeout = Duration::from_millis(300);
    let b = herald_broker::server::start(cfg).await.unwrap();
    let (_p, stuck) = stalled_reader(b.local_addr()).await;
    let stuck_addr = stuck.framed.get_ref().local_addr().unwrap();
    let deadline = Instant::now() + T;
    loop {
        let text = logs.text();
        if text.contains("the peer stopped reading") {
            assert!(text.contains(&stuck_addr.to_string()), "{text}");
            assert!(text.contains("WARN"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no log line for the cut: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await; // polling the log
    }
    drop(stuck);
    b.shutdown().await;
}

/// A dead-letter copy that keeps failing (here the dead-letter topic's
/// folder cannot be made: a file is in its place) is logged as an ERROR
/// once, not at every retry of every range (a lasting failure logged
/// hundreds of lines a second), and once it works the records are dead-
/// lettered and that is said once.
#[tokio::test]
async fn a_failing_dead_letter_copy_is_logged_once_until_it_works() {
    let (logs, _default) = Captured::install(tracing::Level::DEBUG);
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut c = Raw::connect(b.local_addr()).await;
    c.publish("jobs", &[b"a"]).await;
    c.publish("jobs", &[b"b"]).await;
    c.publish("jobs", &[b"c"]).await;
    let blocker = dir.path().join("topics").join("jobs.dlq");
    assert!(
        blocker.parent().unwrap().is_dir(),
        "topics live in {:?}",
        blocker.parent()
    );
    std::fs::write(&blocker, b"in the way").unwrap();
    c.subscribe_with(Subscribe {
        topic: "jobs".into(),
        group: Some("w".into()),
        start: StartPosition::Earliest,
        prefetch_messages: 10,
        prefetch_bytes: 1 << 20,
        ack_timeout_ms: 50,
        max_deliveries: 1,
    })
    .await;
    let failures = |level: &str| {
        let text = logs.text();
        text.lines()
            .filter(|l| l.contains("dead-lettering failed") && l.contains(level))
            .count()
    };
    let deadline = Instant::now() + T;
    // Two rounds of retries at least (one a second).
    while failures("") < 4 {
        assert!(Instant::now() < deadline, "the copies were not retried");
        tokio::time::sleep(Duration::from_millis(20)).await; // polling the log
    }
    assert_eq!(failures("ERROR"), 1, "one ERROR for a lasting failure");
    std::fs::remove_file(&blocker).unwrap();
    c.until_dead_lettered("jobs", 3).await;
    let text = logs.text();
    assert_eq!(
        text.matches("dead-lettering works again").count(),
        1,
        "{text}"
    );
    b.shutdown().await;
}
