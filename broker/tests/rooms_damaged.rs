//! A damaged room member file makes that room unavailable, never the
//! broker: the real `herald serve` starts, logs the file and the reason at
//! ERROR, refuses every request naming the room with `RoomUnavailable`
//! (code 20) and serves the other rooms and the topics as before.
//!
//! And what a crash leaves of an inbox or a room log created by a join,
//! whose files are not synced until its first commit (an empty settings
//! file), is taken for what it is: the topic is set up again and serves.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use herald_client::{Client, Error, ErrorCode, Target};

/// A `herald serve` whose stderr is kept, killed on drop.
struct Serve {
    child: std::process::Child,
    addr: SocketAddr,
    stderr: mpsc::Receiver<String>,
}

impl Serve {
    fn start(dir: &Path) -> Serve {
        Serve::start_with(dir, "never")
    }

    fn start_with(dir: &Path, fsync: &str) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--listen", "127.0.0.1:0", "--fsync", fsync])
            .arg("--data-dir")
            .arg(dir)
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn herald");
        let stdout = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let (tx, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            let _ = tx.send(s);
        });
        let (atx, arx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { return };
                if let Some(a) = l.strip_prefix("listening on ") {
                    let _ = atx.send(a.trim().to_owned());
                }
            }
        });
        let addr = match arx.recv_timeout(common::T) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let err = stderr.recv_timeout(common::T).unwrap_or_default();
                panic!("herald serve did not start: {err}");
            }
        };
        Serve {
            child,
            addr,
            stderr,
        }
    }

    /// Kills the broker and returns everything it wrote on stderr.
    fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr.recv_timeout(common::T).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn client(addr: SocketAddr, id: &str) -> Client {
    Client::builder(addr.to_string())
        .client_id(id)
        .connect()
        .await
        .unwrap()
}

fn assert_unavailable<T: std::fmt::Debug>(r: herald_client::Result<T>, what: &str) {
    match r {
        Err(Error::Broker {
            code: ErrorCode::RoomUnavailable,
            message,
        }) => assert!(
            message.contains("\"lobby\"") && message.contains("damaged"),
            "{what}: {message}"
        ),
        other => panic!("{what}: expected RoomUnavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_member_file_makes_only_its_room_unavailable() {
    tokio::time::timeout(std::time::Duration::from_secs(60), scenario())
        .await
        .expect("the test took too long");
}

async fn scenario() {
    let dir = tempfile::tempdir().unwrap();
    let first = Serve::start(dir.path());
    let alice = client(first.addr, "alice").await;
    let bob = client(first.addr, "bob").await;
    alice.join_durable("lobby").await.unwrap();
    bob.join_durable("lobby").await.unwrap();
    alice.join_durable("news").await.unwrap();
    alice
        .producer("t")
        .send("kept")
        .await
        .unwrap()
        .await
        .unwrap();
    alice.close().await;
    bob.close().await;
    first.kill();

    // One flipped byte in lobby's member file.
    let file = dir.path().join("rooms").join("lobby.room");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();

    let second = Serve::start(dir.path());
    let alice = client(second.addr, "alice").await;
    assert_unavailable(alice.join_durable("lobby").await, "join");
    assert_unavailable(alice.join("lobby").await, "non-durable join");
    assert_unavailable(alice.members("lobby").await, "members");
    assert_unavailable(alice.leave("lobby").await, "leave");
    assert_unavailable(
        alice.emit(Target::room("lobby"), "hi", "x").await,
        "emit to the room",
    );
    assert_unavailable(
        alice.emit_to_rooms(&["news", "lobby"], "hi", "x").await,
        "emit to rooms including it",
    );

    // The other room and the topics are served as before.
    let members = alice.members("news").await.unwrap();
    let ids: Vec<&str> = members.iter().map(|m| m.client_id.as_str()).collect();
    assert_eq!(ids, ["alice"]);
    alice.emit(Target::room("news"), "hi", "x").await.unwrap();
    let mut sub = alice
        .subscribe("t")
        .start(herald_client::StartPosition::Earliest)
        .await
        .unwrap();
    let m = futures::StreamExt::next(&mut sub).await.unwrap().unwrap();
    assert_eq!(m.payload().as_ref(), b"kept");
    alice.close().await;

    // Nothing overwrote the damaged file: it is the operator's to repair.
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    let log = second.kill();
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("lobby.room"))
        .unwrap_or_else(|| panic!("no ERROR line naming the file in:\n{log}"));
    assert!(line.contains("checksum"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_and_a_room_log_whose_creation_a_crash_cut_short_serve_again() {
    tokio::time::timeout(std::time::Duration::from_secs(60), blank_settings())
        .await
        .expect("the test took too long");
}

async fn blank_settings() {
    let dir = tempfile::tempdir().unwrap();
    let first = Serve::start_with(dir.path(), "always");
    let bob = client(first.addr, "bob").await;
    bob.join_durable("lobby").await.unwrap();
    let mut inbox = bob.inbox().await.unwrap();
    // An inbox is created by its first event (subscribing creates none).
    bob.emit_to_client("bob", "note", "to self").await.unwrap();
    let ev = tokio::time::timeout(common::T, futures::StreamExt::next(&mut inbox))
        .await
        .expect("an event")
        .expect("the inbox ended")
        .expect("an event, not an error");
    assert_eq!(ev.name(), "note");
    ev.ack().await.unwrap();
    bob.producer("t").send("x").await.unwrap().await.unwrap();
    // Creates carol's inbox, whose settings are damaged below.
    bob.emit_to_client("carol", "dm", "1").await.unwrap();
    let topics = dir.path().join("topics");
    // Created by the join and never committed to: no fsync was spent on
    // them, nor on index files, which are derived data.
    for t in ["_inbox.bob", "_room.lobby"] {
        let index = topics
            .join(t)
            .join("log")
            .join("00000000000000000000.index");
        assert!(!index.exists(), "{t}: {}", index.display());
    }
    bob.close().await;
    first.kill();

    // What a power cut can leave of settings written but never synced.
    for t in ["_inbox.bob", "_room.lobby", "t"] {
        std::fs::write(topics.join(t).join("topic.meta"), b"").unwrap();
    }
    // Not what a crash leaves: damage, which stays as it is.
    let carol_meta = topics.join("_inbox.carol").join("topic.meta");
    std::fs::write(&carol_meta, b"not a settings file").unwrap();
    let second = Serve::start_with(dir.path(), "always");
    let alice = client(second.addr, "alice").await;
    let bob = client(second.addr, "bob").await;
    let mut inbox = bob.inbox().await.unwrap();
    alice.emit_to_client("bob", "dm", "psst").await.unwrap();
    alice.join_durable("lobby").await.unwrap();
    alice
        .emit(Target::room("lobby"), "chat", "hi")
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        let ev = tokio::time::timeout(common::T, futures::StreamExt::next(&mut inbox))
            .await
            .expect("an event")
            .expect("the inbox ended")
            .expect("an event, not an error");
        ev.ack().await.unwrap();
        // The note to self comes again if its ack was not saved yet.
        if ev.kind() == herald_client::EventKind::Event && ev.name() != "note" {
            got.push((ev.name().to_owned(), ev.room().map(str::to_owned)));
        }
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("chat".to_owned(), Some("lobby".to_owned())),
            ("dm".to_owned(), None)
        ]
    );
    // A topic a client created keeps its settings or is unavailable:
    // the broker cannot know them.
    let sent = match alice.producer("t").send("y").await {
        Ok(confirm) => confirm.await,
        Err(e) => Err(e),
    };
    match sent {
        Err(Error::Broker {
            code: ErrorCode::TopicUnavailable,
            ..
        }) => {}
        other => panic!("expected TopicUnavailable, got {other:?}"),
    }
    // Creating it again does not write new settings over its files, nor
    // does a direct emit to a client whose inbox is damaged.
    assert_topic_unavailable(
        alice
            .create_topic("t", herald_client::TopicConfig::default())
            .await,
        "create t",
    );
    assert_topic_unavailable(
        alice.emit_to_client("carol", "dm", "2").await,
        "emit to carol",
    );
    assert_eq!(
        std::fs::read(topics.join("t").join("topic.meta")).unwrap(),
        b""
    );
    assert_eq!(std::fs::read(&carol_meta).unwrap(), b"not a settings file");
    alice.close().await;
    bob.close().await;
    for t in ["_inbox.bob", "_room.lobby"] {
        let meta = std::fs::metadata(topics.join(t).join("topic.meta")).unwrap();
        assert!(meta.len() > 4, "{t}: settings written again");
    }
    let log = second.kill();
    for t in ["_inbox.bob", "_room.lobby"] {
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains(t) && l.contains("settings file empty")),
            "no WARN line for {t} in:\n{log}"
        );
    }
}

fn assert_topic_unavailable<T: std::fmt::Debug>(r: herald_client::Result<T>, what: &str) {
    match r {
        Err(Error::Broker {
            code: ErrorCode::TopicUnavailable,
            ..
        }) => {}
        other => panic!("{what}: expected TopicUnavailable, got {other:?}"),
    }
}
