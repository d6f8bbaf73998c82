//! Group state on a full disk, against the real binary: acks that the
//! state file's room holds are written in place; an awaited ack that
//! cannot be written (the state outgrew its file) is answered
//! `StorageFull` (never `Ok`, never `Internal`), the broker keeps it in
//! memory and writes it once space is back, a new group cannot start
//! without its state on disk, and a restart never loses a group whose
//! state was written.
//!
//! Needs root (it mounts a small tmpfs); skips with a message otherwise.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Child;
use futures::StreamExt;
use herald_client::{Client, ErrorCode, Message, Start, Subscription};

/// Bounds each test as a whole.
const TEST_TIME: Duration = Duration::from_secs(60);
/// Bounds each awaited step.
const STEP: Duration = Duration::from_secs(15);
/// Messages each test publishes: enough holes, once every other one is
/// acked, to outgrow a state file's room.
const N: u64 = 200;

/// Unmounts the tmpfs however the test ends.
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

fn mount_tmpfs(at: &Path) -> Result<Unmount, String> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "herald-groups-enospc"])
        .arg(at)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(Unmount(at.to_path_buf()))
}

/// Fills the filesystem of `path` to the last page: big writes, then
/// smaller ones, until even a 4 KiB write fails.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("filler");
    for chunk in [1 << 20, 64 << 10, 4 << 10] {
        let buf = vec![0u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
}

/// A tmpfs under a temporary folder, or `None` (test skipped) without the
/// right to mount.
fn tmpfs(name: &str) -> Option<(tempfile::TempDir, PathBuf, Unmount)> {
    let base = tempfile::TempDir::new().expect("tmp");
    let mnt = base.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    match mount_tmpfs(&mnt) {
        Ok(g) => Some((base, mnt, g)),
        Err(reason) => {
            println!("skipping {name}: mount failed: {reason}");
            None
        }
    }
}

/// Starts the binary on `data`, its log in `log`.
fn broker(data: &Path, listen: &str, log: &Path) -> Child {
    let cmd = Child::command(data, listen, &[]);
    let f = std::fs::File::create(log).expect("log file");
    Child::start_with_stderr(cmd, Stdio::from(f))
}

async fn connect(addr: std::net::SocketAddr) -> Client {
    Client::builder(addr.to_string())
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100))
        .connect()
        .await
        .expect("connect")
}

async fn next(sub: &mut Subscription) -> Message {
    tokio::time::timeout(STEP, sub.next())
        .await
        .expect("a message in time")
        .expect("stream open")
        .expect("a message")
}

/// Publishes `n` messages in as few batches as the producer makes: each
/// delivery is then a long run of offsets, in which acks leave holes.
async fn publish(client: &Client, topic: &str, n: u64) {
    client
        .create_topic(topic, Default::default())
        .await
        .expect("create");
    let producer = client.producer(topic);
    let mut pending = Vec::new();
    for i in 0..n {
        pending.push(producer.send(format!("m{i}")).await.expect("send"));
    }
    for p in pending {
        p.await.expect("publish");
    }
}

async fn group(client: &Client, topic: &str, name: &str) -> Option<herald_client::GroupInfo> {
    let groups = client.list_groups(topic).await.expect("list groups");
    groups.into_iter().find(|g| g.name == name)
}

fn code(r: herald_client::Result<()>) -> Option<ErrorCode> {
    r.err().and_then(|e| e.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_on_a_full_disk_are_reported_kept_and_written_later() {
    let Some((base, mnt, _guard)) = tmpfs("acks_on_a_full_disk") else {
        return;
    };
    tokio::time::timeout(TEST_TIME, full_disk_acks(base.path(), &mnt))
        .await
        .expect("test timed out");
}

async fn full_disk_acks(base: &Path, mnt: &Path) {
    let data = mnt.join("data");
    let log = base.join("broker.log");
    let b = broker(&data, "127.0.0.1:0", &log);
    let client = connect(b.addr).await;
    publish(&client, "t", N).await;
    let mut sub = client
        .subscribe("t")
        .group("old")
        .start(Start::Earliest)
        .ack_timeout(Duration::from_secs(60))
        .await
        .expect("subscribe");
    let mut msgs = Vec::new();
    for want in 0..N {
        let m = next(&mut sub).await;
        assert_eq!(m.offset(), want);
        msgs.push(m);
    }
    for m in &msgs[..10] {
        m.ack_confirmed().await.expect("ack with space on disk");
    }

    let filler = mnt.join("filler");
    fill(&filler);
    // An existing group's state is rewritten in place: acks that keep it
    // small need no new space and are written on a full disk.
    for m in &msgs[10..15] {
        m.ack_confirmed().await.expect("an ack written in place");
    }
    // Acks that leave holes grow the state past its file's room: that
    // write needs new space, and is refused.
    let holes: Vec<&Message> = msgs[16..].iter().step_by(2).collect();
    let answers = futures::future::join_all(holes.iter().map(|m| m.ack_confirmed())).await;
    let codes: Vec<Option<ErrorCode>> = answers.into_iter().map(code).collect();
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, None | Some(ErrorCode::StorageFull))),
        "Ok or StorageFull, never Internal: {codes:?}"
    );
    assert!(
        codes.contains(&Some(ErrorCode::StorageFull)),
        "the acks that outgrow the file are refused: {codes:?}"
    );
    // A new group cannot start: its state would not survive a restart.
    let new = client.subscribe("t").group("new").await;
    assert_eq!(
        new.err().and_then(|e| e.code()),
        Some(ErrorCode::StorageFull),
        "subscribing a new group on a full disk"
    );
    // In memory the acks are kept: the floor moved, the holes are done.
    let old = group(&client, "t", "old").await.expect("group old");
    let acked = 15 + holes.len() as u64;
    assert_eq!((old.ack_floor, old.lag), (15, N - acked));
    assert!(group(&client, "t", "new").await.is_none(), "no group new");

    // Space is back: the next write (a retry, or this ack's) carries them.
    std::fs::remove_file(&filler).expect("free space");
    msgs[15]
        .ack_confirmed()
        .await
        .expect("ack once space is back");
    drop(msgs);
    drop(sub);
    client.close().await;
    b.kill();
    let text = std::fs::read_to_string(&log).expect("log");
    let errors = text
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("persisting group state failed"))
        .count();
    assert_eq!(
        errors, 1,
        "one ERROR line per outage of the group, not one per retry:\n{text}"
    );

    let b = broker(&data, "127.0.0.1:0", &base.join("broker2.log"));
    let client = connect(b.addr).await;
    let old = group(&client, "t", "old")
        .await
        .expect("group old survives");
    assert_eq!(old.ack_floor, 17, "every confirmed ack survived the kill");
    assert!(group(&client, "t", "new").await.is_none());
    let mut sub = client
        .subscribe("t")
        .group("old")
        .await
        .expect("resubscribe");
    // Only the offsets never acked come back: 17, 19, 21, ...
    for want in [17, 19, 21] {
        assert_eq!(next(&mut sub).await.offset(), want);
    }
    client.close().await;
}

/// Acks refused for a full disk are re-sent by the client after a
/// reconnect: here the broker is killed before it could write them, and
/// after its restart the group still moves past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_acks_are_sent_again_after_a_broker_restart() {
    let Some((base, mnt, _guard)) = tmpfs("refused_acks_are_sent_again") else {
        return;
    };
    tokio::time::timeout(TEST_TIME, refused_then_restart(base.path(), &mnt))
        .await
        .expect("test timed out");
}

async fn refused_then_restart(base: &Path, mnt: &Path) {
    let data = mnt.join("data");
    let log = base.join("broker.log");
    let b = broker(&data, "127.0.0.1:0", &log);
    let addr = b.addr;
    let client = connect(addr).await;
    publish(&client, "t", N).await;
    let mut sub = client
        .subscribe("t")
        .group("g")
        .start(Start::Earliest)
        .ack_timeout(Duration::from_secs(60))
        .await
        .expect("subscribe");
    let mut msgs = Vec::new();
    for want in 0..N {
        let m = next(&mut sub).await;
        assert_eq!(m.offset(), want);
        msgs.push(m);
    }
    for m in &msgs[..5] {
        m.ack_confirmed().await.expect("ack");
    }
    let filler = mnt.join("filler");
    fill(&filler);
    // Acks leaving holes (the even offsets from 6): the state outgrows its
    // file, and its write is refused.
    let holes: Vec<&Message> = msgs[6..].iter().step_by(2).collect();
    let answers = futures::future::join_all(holes.iter().map(|m| m.ack_confirmed())).await;
    let refused = answers
        .into_iter()
        .filter(|a| a.as_ref().err().and_then(|e| e.code()) == Some(ErrorCode::StorageFull))
        .count();
    assert!(refused > 0, "some acks refused for the full disk");
    // The broker dies before it could write them.
    b.kill();
    std::fs::remove_file(&filler).expect("free space");
    let b = broker(&data, &addr.to_string(), &log);

    // The restarted broker delivers the unacked offsets again: the
    // client's filter hides the acked (even) ones and its re-sent acks
    // complete them; the odd ones, never acked, may come back to the app.
    let producer = connect(b.addr).await;
    producer.publish("t", "m-last").await.expect("publish");
    loop {
        let m = next(&mut sub).await;
        let o = m.offset();
        assert!(
            o == N || (o % 2 == 1 && o >= 5),
            "offset {o}: the app never sees an acked message again"
        );
        m.ack_confirmed().await.expect("ack after the restart");
        if o == N {
            break;
        }
    }
    for m in msgs.iter().skip(5).step_by(2) {
        let _ = m.ack_confirmed().await;
    }
    let done = async {
        loop {
            let g = group(&producer, "t", "g").await.expect("group g");
            if (g.ack_floor, g.in_flight) == (N + 1, 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(STEP, done)
        .await
        .expect("the acks refused before the restart were applied");
    drop(msgs);
    drop(sub);
    client.close().await;
    producer.close().await;
}
