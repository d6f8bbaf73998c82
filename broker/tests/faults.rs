//! Faults a broker meets in production — a full disk, a topic deleted under
//! its publishers — each answered with the error code that says what
//! happened, never `Internal` (which tells a client nothing it can act on).
//!
//! The full-disk half needs root (it mounts a small tmpfs) and skips with a
//! message otherwise.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use herald_protocol::*;

/// Every error code a client received, by the request that got it.
#[derive(Default)]
struct Seen(BTreeMap<String, Vec<ErrorCode>>);

impl Seen {
    fn record(&mut self, what: &str, reply: &Message) {
        if let Message::Error(e) = reply {
            self.0
                .entry(what.to_owned())
                .or_default()
                .push(ErrorCode::from_u16(e.code));
        }
    }

    fn assert_no_internal(&self) {
        for (what, codes) in &self.0 {
            assert!(
                !codes.contains(&ErrorCode::Internal),
                "{what} got Internal: {codes:?}"
            );
        }
    }
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// A 4 MiB tmpfs under a temporary folder, or `None` without the right to
/// mount.
fn tmpfs() -> Option<(tempfile::TempDir, PathBuf, Unmount)> {
    let base = tempfile::TempDir::new().expect("tmp");
    let mnt = base.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "herald-faults"])
        .arg(&mnt)
        .output()
        .ok()?;
    if !out.status.success() {
        println!(
            "skipping: mount failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    let guard = Unmount(mnt.clone());
    Some((base, mnt, guard))
}

/// Fills the filesystem of `path` to the last page.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("filler");
    for chunk in [1 << 20, 64 << 10, 4 << 10, 512] {
        let buf = vec![0u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    let _ = f.sync_all();
}

fn publish(topic: &str, payload: &[u8]) -> Message {
    Message::Publish {
        topic: topic.into(),
        batch: batch(&[payload], 0, 0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_storage_full_never_internal() {
    let Some((_base, mnt, _guard)) = tmpfs() else {
        return;
    };
    let data = mnt.join("data");
    let mut cfg = config(&data);
    cfg.auto_create_on_subscribe = true;
    let b = herald_broker::server::start(cfg).await.unwrap();
    let mut c = Raw::connect(b.local_addr()).await;
    let mut seen = Seen::default();
    c.create_topic("a").await;
    assert!(matches!(
        c.request(publish("a", b"before")).await,
        Message::PublishOk(_)
    ));
    fill(&mnt.join("filler"));

    let r = c.request(publish("a", &[b'x'; 8192])).await;
    seen.record("publish to an existing topic", &r);
    let r = c.request(publish("brand-new", b"x")).await;
    seen.record("publish creating a topic", &r);
    assert!(
        matches!(&r, Message::Error(e) if ErrorCode::from_u16(e.code) == ErrorCode::StorageFull),
        "{r:?}"
    );
    let r = c
        .request(Message::CreateTopic(CreateTopic {
            name: "made-on-full-disk".into(),
            config: TopicConfig::default(),
            replicas: 0,
        }))
        .await;
    seen.record("create topic", &r);
    assert!(
        matches!(&r, Message::Error(e) if ErrorCode::from_u16(e.code) == ErrorCode::StorageFull),
        "{r:?}"
    );
    let r = c
        .request(Message::Subscribe(Subscribe {
            topic: "a".into(),
            group: Some("new-group".into()),
            start: StartPosition::Earliest,
            prefetch_messages: 10,
            prefetch_bytes: 1 << 20,
            ack_timeout_ms: 0,
            max_deliveries: 0,
        }))
        .await;
    seen.record("subscribe with a new group", &r);
    let r = c
        .request(Message::Join(JoinRoom {
            room: "lobby".into(),
            durable: true,
            history: 0,
        }))
        .await;
    seen.record("durable join", &r);
    let mut bob = Raw::connect_as(b.local_addr(), Some("bob")).await;
    let r = c
        .request(Message::Emit(Emit {
            target: EmitTarget::Client("bob".into()),
            event: "dm".into(),
            payload: b"psst".to_vec(),
            correlation: 0,
        }))
        .await;
    seen.record("direct emit", &r);
    drop(bob.request(Message::Ping).await);
    seen.assert_no_internal();
    std::fs::remove_file(mnt.join("filler")).unwrap();
    // Space is back: the broker works again, nothing needed a restart.
    assert!(matches!(
        c.request(publish("brand-new", b"x")).await,
        Message::PublishOk(_)
    ));
    b.shutdown().await;
}

/// Publishers keep publishing while the topic is deleted under them and
/// created again: each publish is either confirmed or refused with a code
/// that says the topic went away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_racing_a_delete_is_told_the_topic_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let addr = b.local_addr();
    let mut admin = Raw::connect(addr).await;
    let publisher = tokio::spawn(async move {
        let mut p = Raw::connect(addr).await;
        let mut seen = Seen::default();
        let mut ok = 0;
        for i in 0..2000u32 {
            let r = p.request(publish("racy", &i.to_le_bytes())).await;
            if matches!(r, Message::PublishOk(_)) {
                ok += 1;
            }
            seen.record("publish racing a delete", &r);
        }
        (seen, ok)
    });
    let mut deletes = 0;
    while !publisher.is_finished() {
        if let Message::Ok = admin
            .request(Message::DeleteTopic(TopicName {
                name: "racy".into(),
            }))
            .await
        {
            deletes += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await; // let publishes land between deletes (not synchronisation)
    }
    let (seen, ok) = tokio::time::timeout(T, publisher).await.unwrap().unwrap();
    assert!(deletes > 0 && ok > 0, "deletes {deletes}, confirmed {ok}");
    seen.assert_no_internal();
    for codes in seen.0.values() {
        for c in codes {
            // The topic it was writing to is gone, or (auto-creating it
            // again while the old one is being removed) try again.
            assert!(
                matches!(c, ErrorCode::UnknownTopic | ErrorCode::Busy),
                "a publish racing a delete got {c:?}"
            );
        }
    }
    // The topic made again after the last delete is whole, and stays so
    // across a restart: no delete finishing late removed its files.
    let mut p = Raw::connect(addr).await;
    let mut first = None;
    for i in 0..10u32 {
        let r = loop {
            match p.request(publish("racy", &i.to_le_bytes())).await {
                Message::Error(e) if ErrorCode::from_u16(e.code) == ErrorCode::Busy => {
                    tokio::task::yield_now().await
                }
                r => break r,
            }
        };
        match r {
            Message::PublishOk(ok) => {
                first.get_or_insert(ok.base_offset);
            }
            r => panic!("{r:?}"),
        }
    }
    drop((p, admin));
    b.shutdown().await;
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("topics"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let b = start(dir.path()).await;
    let mut c = Raw::connect(b.local_addr()).await;
    match c
        .request(Message::DescribeTopic(TopicName {
            name: "racy".into(),
        }))
        .await
    {
        Message::TopicInfo(i) => assert_eq!(i.next_offset, first.unwrap() + 10),
        m => panic!("{m:?}"),
    }
    b.shutdown().await;
}
