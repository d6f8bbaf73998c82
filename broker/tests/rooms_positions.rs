//! Where room members' positions are kept: one positions file per room log
//! (`<data>/topics/_room.<room>/groups/.positions`, broker/src/group/
//! positions.rs) instead of one state file per member. The real broker,
//! through the Rust client:
//! - positions survive a SIGKILL of the `herald serve` binary: each member
//!   gets again at most what it acked after its last confirmed ack, never
//!   what was confirmed, and loses nothing;
//! - a damaged positions file is detected at start, logged at ERROR,
//!   counted by `herald_room_positions_damaged`, refused to that room's
//!   members only, and repaired by a reset;
//! - a data folder of the previous version (one `<client id>.state` per
//!   member) is read, moved into the positions file, and resumed exactly.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{config, Child, T};
use futures::StreamExt;
use herald_client::{Client, Error, ErrorCode, Inbox, Target};

/// Every test ends well within this.
const BOUND: Duration = Duration::from_secs(90);

async fn client(addr: SocketAddr, id: &str) -> Client {
    Client::builder(addr.to_string())
        .client_id(id)
        .connect()
        .await
        .unwrap()
}

fn groups_dir(data: &Path, room: &str) -> PathBuf {
    data.join("topics")
        .join(format!("_room.{room}"))
        .join("groups")
}

fn positions_file(data: &Path, room: &str) -> PathBuf {
    groups_dir(data, room).join(".positions")
}

/// Files in a room log's `groups` folder named `*.state` (per-member files).
fn member_files(data: &Path, room: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(groups_dir(data, room))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".state"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Reads `room`'s events from `inbox` until (and without) the event named
/// `until`; presence and other rooms' events are acked and skipped. Each
/// event is handed to `f` with its payload.
async fn read_until<F>(inbox: &mut Inbox, room: &str, until: &str, mut f: F) -> Vec<String>
where
    F: AsyncAck,
{
    let mut out = Vec::new();
    loop {
        let ev = tokio::time::timeout(T, inbox.next())
            .await
            .unwrap_or_else(|_| panic!("no {until:?} in time; got {out:?}"))
            .expect("inbox open")
            .expect("an event");
        if ev.is_presence() || ev.room() != Some(room) {
            ev.message().ack_confirmed().await.unwrap();
            continue;
        }
        if ev.name() == until {
            // Acked, so that it is not read again after a restart.
            ev.message().ack_confirmed().await.unwrap();
            return out;
        }
        let p = String::from_utf8_lossy(ev.payload()).into_owned();
        f.ack(&ev, &p).await;
        out.push(p);
    }
}

/// How a reader acks what it reads.
trait AsyncAck {
    async fn ack(&mut self, ev: &herald_client::Event, payload: &str);
}

/// Acks the first `confirmed` events and waits for each to be durable,
/// then acks up to `loose` more without waiting (they may or may not be
/// written before a crash), then acks nothing.
struct Acker {
    confirmed: usize,
    loose: usize,
    seen: usize,
}

impl AsyncAck for Acker {
    async fn ack(&mut self, ev: &herald_client::Event, _: &str) {
        if self.seen < self.confirmed {
            ev.message().ack_confirmed().await.unwrap();
        } else if self.seen < self.confirmed + self.loose {
            ev.ack().await.unwrap();
        }
        self.seen += 1;
    }
}

/// Acks everything, confirmed.
struct All;

impl AsyncAck for All {
    async fn ack(&mut self, ev: &herald_client::Event, _: &str) {
        ev.message().ack_confirmed().await.unwrap();
    }
}

fn names(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("e{i}")).collect()
}

async fn emit(c: &Client, room: &str, name: &str, payload: String) {
    c.emit(Target::room(room), name, payload).await.unwrap();
}

/// Three members ack different amounts (confirmed, then some unconfirmed);
/// the broker is SIGKILLed; after the restart each member gets exactly the
/// events after its confirmed acks (give or take those acked unconfirmed,
/// which the crash may have kept or not), in order, none lost, none it
/// had confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_survive_a_sigkill_of_the_broker() {
    tokio::time::timeout(BOUND, sigkill())
        .await
        .expect("bounded");
}

async fn sigkill() {
    const EVENTS: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let first = Child::spawn(dir.path(), &["--fsync", "always", "--no-http"]);
    // (id, confirmed acks, unconfirmed acks after them)
    let plan = [("alice", 10, 5), ("bob", 20, 0), ("carol", 0, 0)];
    let mut members = Vec::new();
    for (id, _, _) in plan {
        let c = client(first.addr, id).await;
        c.join_durable("lobby").await.unwrap();
        let inbox = c.inbox().await.unwrap();
        members.push((c, inbox));
    }
    let sender = client(first.addr, "sender").await;
    for i in 0..EVENTS {
        emit(&sender, "lobby", "ev", format!("e{i}")).await;
    }
    emit(&sender, "lobby", "end", String::new()).await;
    for ((_, inbox), (id, confirmed, loose)) in members.iter_mut().zip(plan) {
        let acker = Acker {
            confirmed,
            loose,
            seen: 0,
        };
        let got = read_until(inbox, "lobby", "end", acker).await;
        assert_eq!(got, names(0, EVENTS), "{id} before the crash");
    }
    // The positions are in the room's one file, not in a file per member.
    assert!(positions_file(dir.path(), "lobby").exists());
    assert_eq!(member_files(dir.path(), "lobby"), Vec::<String>::new());
    first.kill();
    drop(members);
    drop(sender);

    let second = Child::spawn(dir.path(), &["--fsync", "always", "--no-http"]);
    let sender = client(second.addr, "sender").await;
    emit(&sender, "lobby", "end2", String::new()).await;
    for (id, confirmed, loose) in plan {
        let c = client(second.addr, id).await;
        let mut inbox = c.inbox().await.unwrap();
        let got = read_until(&mut inbox, "lobby", "end2", All).await;
        // Starts somewhere in confirmed..=confirmed+loose, then every
        // event to the end, in order.
        let first_again = EVENTS
            .checked_sub(got.len())
            .unwrap_or_else(|| panic!("{id}: more events than were emitted: {got:?}"));
        assert!(
            (confirmed..=confirmed + loose).contains(&first_again),
            "{id}: confirmed {confirmed} (+{loose} unconfirmed), got again {got:?}"
        );
        assert_eq!(got, names(first_again, EVENTS), "{id} after the crash");
        c.close().await;
    }
    second.kill();
}

/// A `herald serve` whose stderr is collected, killed when dropped.
struct Logged {
    child: Option<Child>,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Logged {
    fn start(dir: &Path) -> Logged {
        let mut cmd = Child::command(dir, "127.0.0.1:0", &["--fsync", "always", "--no-http"]);
        cmd.stderr(std::process::Stdio::piped());
        let mut c = cmd
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn herald");
        let mut err = c.stderr.take().unwrap();
        let (tx, stderr) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            let _ = tx.send(s);
        });
        let addr = listening(&mut c);
        Logged {
            child: Some(Child { child: c, addr }),
            stderr,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.child.as_ref().unwrap().addr
    }

    /// Kills it; returns its stderr.
    fn kill(mut self) -> String {
        if let Some(c) = self.child.take() {
            c.kill();
        }
        self.stderr.recv_timeout(T).unwrap_or_default()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            c.kill();
        }
    }
}

/// Waits for the child's `listening on` line.
fn listening(c: &mut std::process::Child) -> SocketAddr {
    use std::io::BufRead;
    let out = c.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { return };
            if let Some(a) = l.strip_prefix("listening on ") {
                let _ = tx.send(a.trim().to_owned());
            }
        }
    });
    rx.recv_timeout(T)
        .expect("herald did not print its address")
        .parse()
        .unwrap()
}

fn assert_group_unavailable<T: std::fmt::Debug>(r: herald_client::Result<T>, what: &str) {
    match r {
        Err(Error::Broker {
            code: ErrorCode::GroupUnavailable,
            message,
        }) => assert!(message.contains(".positions"), "{what}: {message}"),
        other => panic!("{what}: expected GroupUnavailable, got {other:?}"),
    }
}

/// Both copies of a room's positions file damaged: the broker starts,
/// logs the file at ERROR, counts it in the metrics, refuses the room's
/// members their positions (`GroupUnavailable`, naming the file) and does
/// not overwrite it; a member of another room is served as before. A
/// reset of one member sets the file aside: that member starts where the
/// reset says, the others at the room's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_positions_file_is_detected_reported_and_stays_local() {
    tokio::time::timeout(BOUND, damaged())
        .await
        .expect("bounded");
}

async fn damaged() {
    let dir = tempfile::tempdir().unwrap();
    let first = Logged::start(dir.path());
    for (id, room) in [("alice", "lobby"), ("bob", "lobby"), ("carol", "news")] {
        let c = client(first.addr(), id).await;
        c.join_durable(room).await.unwrap();
        let mut inbox = c.inbox().await.unwrap();
        let sender = client(first.addr(), "sender").await;
        emit(&sender, room, "end", String::new()).await;
        read_until(&mut inbox, room, "end", All).await;
        c.close().await;
        sender.close().await;
    }
    first.kill();

    // One flipped bit in the body of each of the two copies.
    let file = positions_file(dir.path(), "lobby");
    let mut bytes = std::fs::read(&file).unwrap();
    let half = bytes.len() / 2;
    bytes[21] ^= 0x10;
    bytes[half + 21] ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();

    let second = Logged::start(dir.path());
    let alice = client(second.addr(), "alice").await;
    assert_group_unavailable(alice.inbox().await, "alice's inbox (her room's log)");
    alice.close().await;
    let bob = client(second.addr(), "bob").await;
    assert_group_unavailable(bob.join_durable("lobby").await, "bob reading lobby");
    bob.close().await;
    // Another room is served.
    let carol = client(second.addr(), "carol").await;
    let mut inbox = carol.inbox().await.unwrap();
    let sender = client(second.addr(), "sender").await;
    emit(&sender, "news", "ev", "n1".into()).await;
    emit(&sender, "news", "end", String::new()).await;
    assert_eq!(read_until(&mut inbox, "news", "end", All).await, ["n1"]);
    carol.close().await;
    sender.close().await;
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "not overwritten");
    let log = second.kill();
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains(".positions"))
        .unwrap_or_else(|| panic!("no ERROR line naming the file in:\n{log}"));
    assert!(line.contains("checksum"), "{line}");

    // The metric, from an in-process broker on the same folder.
    let mut cfg = config(dir.path());
    cfg.http = Some("127.0.0.1:0".parse().unwrap());
    let b = herald_broker::server::start(cfg).await.unwrap();
    let text = scrape(b.http_addr().unwrap()).await;
    assert!(
        text.lines().any(|l| l == "herald_room_positions_damaged 1"),
        "{text}"
    );
    // Repair: alice reset to the room's end. The damaged file is kept
    // aside; alice and bob read the room again from its end.
    let admin = client(b.local_addr(), "admin").await;
    admin
        .reset_group("_room.lobby", "alice", herald_client::StartPosition::Latest)
        .await
        .unwrap();
    let kept = std::fs::read_dir(groups_dir(dir.path(), "lobby"))
        .unwrap()
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".positions.damaged-")
        });
    assert!(kept, "the damaged file is kept aside");
    let text = scrape(b.http_addr().unwrap()).await;
    assert!(
        text.lines().any(|l| l == "herald_room_positions_damaged 0"),
        "{text}"
    );
    let sender = client(b.local_addr(), "sender").await;
    let mut readers = Vec::new();
    for id in ["alice", "bob"] {
        let c = client(b.local_addr(), id).await;
        let inbox = c.inbox().await.unwrap();
        readers.push((c, inbox));
    }
    emit(&sender, "lobby", "ev", "after".into()).await;
    emit(&sender, "lobby", "end", String::new()).await;
    for (c, mut inbox) in readers {
        assert_eq!(read_until(&mut inbox, "lobby", "end", All).await, ["after"]);
        c.close().await;
    }
    sender.close().await;
    admin.close().await;
    b.shutdown().await;
}

async fn scrape(http: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// A data folder of the previous version: each member's position in its
/// own `groups/<client id>.state` (written here with the same
/// `group::store::save` that version used, from the positions a broker
/// kept). The broker reads them, moves them into the positions file
/// (removing them), and each member resumes exactly where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_member_state_files_of_the_previous_version_are_moved_in() {
    tokio::time::timeout(BOUND, migration())
        .await
        .expect("bounded");
}

async fn migration() {
    const EVENTS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let first = Child::spawn(dir.path(), &["--fsync", "always", "--no-http"]);
    let acked = [("alice", 4usize), ("bob", 9), ("carol", 0)];
    let mut members = Vec::new();
    for (id, _) in acked {
        let c = client(first.addr, id).await;
        c.join_durable("lobby").await.unwrap();
        let inbox = c.inbox().await.unwrap();
        members.push((c, inbox));
    }
    let sender = client(first.addr, "sender").await;
    for i in 0..EVENTS {
        emit(&sender, "lobby", "ev", format!("e{i}")).await;
    }
    emit(&sender, "lobby", "end", String::new()).await;
    for ((c, inbox), (_, n)) in members.iter_mut().zip(acked) {
        let acker = Acker {
            confirmed: n,
            loose: 0,
            seen: 0,
        };
        read_until(inbox, "lobby", "end", acker).await;
        c.close().await;
    }
    sender.close().await;
    drop(members);
    // A clean stop: every member's last state is written.
    assert!(first.terminate().success());

    // Rewrite the folder as the previous version kept it.
    let file = positions_file(dir.path(), "lobby");
    let stored = herald_broker::group::positions::load(&file)
        .unwrap()
        .expect("positions written");
    assert_eq!(stored.groups.len(), 3);
    for (name, state) in &stored.groups {
        let path = groups_dir(dir.path(), "lobby").join(format!("{name}.state"));
        herald_broker::group::store::save(&path, state, true, &Default::default()).unwrap();
    }
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        member_files(dir.path(), "lobby"),
        ["alice.state", "bob.state", "carol.state"]
    );

    let second = Child::spawn(dir.path(), &["--fsync", "always", "--no-http"]);
    // Moved in at start, before any member came back.
    let moved = herald_broker::group::positions::load(&file)
        .unwrap()
        .expect("the positions file is written at start");
    assert_eq!(moved.groups, stored.groups);
    assert_eq!(member_files(dir.path(), "lobby"), Vec::<String>::new());
    let sender = client(second.addr, "sender").await;
    emit(&sender, "lobby", "end2", String::new()).await;
    for (id, n) in acked {
        let c = client(second.addr, id).await;
        let mut inbox = c.inbox().await.unwrap();
        let got = read_until(&mut inbox, "lobby", "end2", All).await;
        assert_eq!(got, names(n, EVENTS), "{id} after the move");
        c.close().await;
    }
    sender.close().await;
    second.kill();
}
