//! The real `herald` binary, SIGKILLed mid-work and restarted on the same
//! data folder: nothing confirmed is lost, group state resumes exactly.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use herald_protocol::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_publishes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut confirmed: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..4 {
        let child = Child::spawn(dir.path(), &[]);
        let mut c = Raw::connect(child.addr).await;
        // Keep many publishes in flight, then kill at a pseudo-random point
        // while confirms are still arriving.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_after = 50 + (seed % 200) as usize;
        let mut pending = std::collections::HashMap::new();
        for i in 0..400usize {
            let p = format!("r{round}-m{i}");
            let id = c
                .send(Message::Publish {
                    topic: "t".into(),
                    batch: batch(&[p.as_bytes()], 0, 0),
                })
                .await;
            pending.insert(id, p);
        }
        let mut got = 0;
        while got < kill_after {
            let f = c.recv().await.expect("confirm");
            if let Ok(Message::PublishOk(ok)) = Message::decode(&f) {
                let p = pending.remove(&f.header.request_id).unwrap();
                confirmed.insert(ok.base_offset, p.into_bytes());
                got += 1;
            }
        }
        child.kill();
    }
    let child = Child::spawn(dir.path(), &[]);
    let mut s = Raw::connect(child.addr).await;
    s.subscribe("t", None, StartPosition::Earliest, 100_000)
        .await;
    let last = *confirmed.keys().last().unwrap();
    let mut seen = BTreeMap::new();
    while seen.len() as u64 <= last {
        for (_, r) in s.take(1).await {
            seen.insert(r.offset, r.payload.to_vec());
        }
    }
    for (off, p) in &confirmed {
        assert_eq!(
            seen.get(off),
            Some(p),
            "confirmed offset {off} lost or changed"
        );
    }
}

/// Publishes offsets 0..20 to `t` and has them delivered to group `g`:
/// the connection and its subscription id.
async fn twenty_delivered(child: &Child) -> (Raw, u64) {
    let mut c = Raw::connect(child.addr).await;
    for i in 0..20u32 {
        let m = i.to_string();
        c.publish("t", &[m.as_bytes()]).await;
    }
    let s = c
        .subscribe("t", Some("g"), StartPosition::Resume, 100)
        .await;
    c.take(20).await;
    (c, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_state_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let child = Child::spawn(dir.path(), &[]);
    let (mut c, s) = twenty_delivered(&child).await;
    // Acks with a request id are answered once persisted.
    c.ack(s, AckKind::Ack, vec![(0, 9), (15, 15)]).await;
    child.kill();
    let child = Child::spawn(dir.path(), &[]);
    let mut c = Raw::connect(child.addr).await;
    c.subscribe("t", Some("g"), StartPosition::Resume, 100)
        .await;
    let got: Vec<u64> = c.take(9).await.iter().map(|(_, r)| r.offset).collect();
    assert_eq!(got, vec![10, 11, 12, 13, 14, 16, 17, 18, 19]);
    c.expect_quiet(Duration::from_millis(300)).await;
}

/// The `Ok` to an Ack confirms every Ack of the subscription sent before it
/// on the connection, those without a request id included (the Rust client
/// sends most acks so, docs/protocol.md section 6.4): once it came, a
/// SIGKILL brings none of them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_confirm_covers_the_acks_sent_before_it_without_a_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let child = Child::spawn(dir.path(), &[]);
    let (mut c, s) = twenty_delivered(&child).await;
    for ranges in [vec![(0, 4)], vec![(5, 9)], vec![(15, 15)]] {
        c.send_no_reply(Message::Ack(Ack {
            subscription_id: s,
            kind: AckKind::Ack,
            ranges,
        }))
        .await;
    }
    c.ack(s, AckKind::Ack, vec![(12, 12)]).await;
    child.kill();
    let child = Child::spawn(dir.path(), &[]);
    let mut c = Raw::connect(child.addr).await;
    c.subscribe("t", Some("g"), StartPosition::Resume, 100)
        .await;
    let got: Vec<u64> = c.take(8).await.iter().map(|(_, r)| r.offset).collect();
    assert_eq!(got, vec![10, 11, 13, 14, 16, 17, 18, 19]);
    c.expect_quiet(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_graceful_and_loses_no_confirmed_publish() {
    let dir = tempfile::tempdir().unwrap();
    let child = Child::spawn(dir.path(), &[]);
    let mut c = Raw::connect(child.addr).await;
    let mut ids = Vec::new();
    for i in 0..200u32 {
        let p = i.to_string();
        ids.push(
            c.send(Message::Publish {
                topic: "t".into(),
                batch: batch(&[p.as_bytes()], 0, 0),
            })
            .await,
        );
    }
    let first = c.wait_reply(ids[0]).await;
    assert!(matches!(first, Message::PublishOk(_)));
    let pid = child.child.id();
    let waiter = std::thread::spawn(move || child.terminate());
    // Every publish sent before the signal is either confirmed or refused;
    // then the broker says goodbye.
    let mut confirmed = 1;
    let mut going_away = false;
    while let Some(f) = c.recv().await {
        match Message::decode(&f) {
            Ok(Message::PublishOk(_)) => confirmed += 1,
            Ok(Message::GoingAway(_)) => going_away = true,
            _ => {}
        }
    }
    let status = waiter.join().unwrap();
    assert!(status.success(), "exit status {status:?} (pid {pid})");
    assert!(going_away, "no GoingAway frame");
    let child = Child::spawn(dir.path(), &[]);
    let mut c = Raw::connect(child.addr).await;
    match c
        .request(Message::DescribeTopic(TopicName { name: "t".into() }))
        .await
    {
        Message::TopicInfo(i) => assert!(
            i.next_offset >= confirmed,
            "{} < {confirmed}",
            i.next_offset
        ),
        m => panic!("{m:?}"),
    }
}

#[test]
fn bad_flags_and_busy_ports_exit_non_zero_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--fsync", "sometimes", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("always, never or interval"));

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on"), "{err}");

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("data folder"));
}
