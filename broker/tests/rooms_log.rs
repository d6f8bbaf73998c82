//! Rooms on logs (docs/rooms.md): an emit to a room is one append to the
//! room's log and each member reads it from its own position. Against the
//! real binary where the broker is killed, in process otherwise, always
//! through the client library over TCP.

mod common;

use std::time::Duration;

use common::{config, Child, Raw, T};
use futures::StreamExt;
use herald_client::{Client, Error, Event, Inbox, Target};
use herald_protocol::{AckKind, Batch, BatchBuilder, RecordRef, StartPosition};

async fn client(addr: &str, id: &str) -> Client {
    Client::builder(addr)
        .client_id(id)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect {id}: {e}"))
}

/// The next application event, acked (presence is acked and skipped).
async fn next_event(inbox: &mut Inbox) -> Event {
    loop {
        let ev = tokio::time::timeout(T, inbox.next())
            .await
            .expect("an event in time")
            .expect("inbox open")
            .expect("an event, not an error");
        ev.ack().await.unwrap();
        if !ev.is_presence() {
            return ev;
        }
    }
}

/// Asserts that no application event arrives for a while.
async fn quiet(inbox: &mut Inbox) {
    let r = tokio::time::timeout(Duration::from_millis(300), next_event(inbox)).await;
    if let Ok(ev) = r {
        panic!("unexpected event {:?} {:?}", ev.name(), ev.payload());
    }
}

async fn payloads(inbox: &mut Inbox, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(String::from_utf8_lossy(next_event(inbox).await.payload()).into_owned());
    }
    out
}

/// A durable member away while the broker is SIGKILLed gets every event
/// emitted before and after the kill, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_member_gets_every_event_once_across_a_broker_kill() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Child::spawn(dir.path(), &[]);
    let addr = broker.addr.to_string();
    let alice = client(&addr, "alice").await;
    alice.join_durable("news").await.unwrap();
    let bob = client(&addr, "bob").await;
    bob.join_durable("news").await.unwrap();
    let mut ib = bob.inbox().await.unwrap();
    for i in 0..5 {
        alice
            .emit(Target::room("news"), "n", format!("a{i}"))
            .await
            .unwrap();
    }
    assert_eq!(payloads(&mut ib, 5).await, ["a0", "a1", "a2", "a3", "a4"]);
    drop(ib);
    bob.close().await;
    for i in 0..20 {
        alice
            .emit(Target::room("news"), "n", format!("b{i}"))
            .await
            .unwrap();
    }
    alice.close().await;
    broker.kill();

    let broker = Child::spawn_on(dir.path(), &addr, &[]);
    let addr = broker.addr.to_string();
    let alice = client(&addr, "alice").await;
    for i in 0..10 {
        alice
            .emit(Target::room("news"), "n", format!("c{i}"))
            .await
            .unwrap();
    }
    // Bob comes back as a new process: it learns its rooms from the broker.
    let bob = client(&addr, "bob").await;
    let mut ib = bob.inbox().await.unwrap();
    let got = payloads(&mut ib, 30).await;
    let want: Vec<String> = (0..20)
        .map(|i| format!("b{i}"))
        .chain((0..10).map(|i| format!("c{i}")))
        .collect();
    assert_eq!(got, want);
    quiet(&mut ib).await;
    bob.close().await;
    alice.close().await;
}

/// A new member starts at the room's end, or with the last N records when
/// it asks for history; a member that left and joins again starts afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_starts_at_the_end_or_with_recent_history() {
    let dir = tempfile::tempdir().unwrap();
    let b = herald_broker::server::start(config(dir.path()))
        .await
        .unwrap();
    let addr = b.local_addr().to_string();
    let alice = client(&addr, "alice").await;
    alice.join("chat").await.unwrap();
    for i in 1..=5 {
        alice
            .emit(Target::room("chat"), "m", format!("{i}"))
            .await
            .unwrap();
    }
    let carol = client(&addr, "carol").await;
    carol.join_with_history("chat", false, 3).await.unwrap();
    let mut ic = carol.inbox().await.unwrap();
    assert_eq!(payloads(&mut ic, 3).await, ["3", "4", "5"]);
    let dave = client(&addr, "dave").await;
    dave.join("chat").await.unwrap();
    let mut id = dave.inbox().await.unwrap();
    quiet(&mut id).await;
    alice.emit(Target::room("chat"), "m", "6").await.unwrap();
    assert_eq!(payloads(&mut ic, 1).await, ["6"]);
    assert_eq!(payloads(&mut id, 1).await, ["6"]);
    // Dave leaves; what is sent meanwhile is not his; back, he starts anew.
    dave.leave("chat").await.unwrap();
    alice.emit(Target::room("chat"), "m", "7").await.unwrap();
    dave.join("chat").await.unwrap();
    alice.emit(Target::room("chat"), "m", "8").await.unwrap();
    assert_eq!(payloads(&mut id, 1).await, ["8"]);
    quiet(&mut id).await;
    b.shutdown().await;
}

/// Only members read a room's log, each through its own group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_read_a_room_log() {
    let dir = tempfile::tempdir().unwrap();
    let b = herald_broker::server::start(config(dir.path()))
        .await
        .unwrap();
    let addr = b.local_addr().to_string();
    let alice = client(&addr, "alice").await;
    alice.join("secret").await.unwrap();
    let eve = client(&addr, "eve").await;
    for group in ["eve", "alice"] {
        let r = eve.subscribe("_room.secret").group(group).await;
        assert!(
            matches!(&r, Err(e) if e.code() == Some(herald_client::ErrorCode::Unauthorized)),
            "{:?}",
            r.err()
        );
    }
    let r = alice.subscribe("_room.secret").group("eve").await;
    assert!(r.is_err(), "a member reads with its own group only");
    b.shutdown().await;
}

/// A durable member away for longer than the room's retention is told how
/// much it missed, then gets what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_retention_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 4096;
    cfg.room_retention_bytes = 8192;
    cfg.retention_interval = Duration::from_millis(50);
    let b = herald_broker::server::start(cfg).await.unwrap();
    let addr = b.local_addr().to_string();
    let alice = client(&addr, "alice").await;
    alice.join_durable("log").await.unwrap();
    let bob = client(&addr, "bob").await;
    bob.join_durable("log").await.unwrap();
    bob.close().await;
    let pad = "x".repeat(300);
    for i in 0..100 {
        alice
            .emit(Target::room("log"), "m", format!("{i:03}{pad}"))
            .await
            .unwrap();
    }
    let log = b.registry().get("_room.log").unwrap();
    tokio::time::timeout(T, async {
        while log.log.first_offset() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("retention ran");
    let first = log.log.first_offset();
    let bob = client(&addr, "bob").await;
    let mut ib = bob.inbox().await.unwrap();
    let told = tokio::time::timeout(T, ib.next())
        .await
        .expect("in time")
        .expect("open");
    match told {
        Err(Error::Skipped {
            first: f,
            last,
            room,
        }) => {
            assert_eq!(room.as_deref(), Some("log"));
            assert!(
                f <= 2 && last + 1 >= first,
                "{f}..={last}, log from {first}"
            );
        }
        other => panic!("expected Skipped, got {other:?}"),
    }
    // The rest, in order, from where the log now starts.
    let ev = next_event(&mut ib).await;
    let n: u64 = String::from_utf8_lossy(&ev.payload()[..3]).parse().unwrap();
    assert!(
        n + 2 >= first,
        "resumed at event {n}, log starts at {first}"
    );
    b.shutdown().await;
}

/// A data folder of an older Herald (durable rooms as `<room>.members`,
/// their events in inboxes) keeps working: its members read the room's log
/// from the start-up on, and its file is replaced by the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_of_an_older_herald_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let rooms = dir.path().join("rooms");
    std::fs::create_dir_all(&rooms).unwrap();
    let body = postcard::to_allocvec(&vec!["bob".to_owned()]).unwrap();
    herald_broker::fsutil::write_atomic(&rooms.join("news.members"), &body, true).unwrap();
    let b = herald_broker::server::start(config(dir.path()))
        .await
        .unwrap();
    let addr = b.local_addr().to_string();
    let alice = client(&addr, "alice").await;
    alice.join_durable("news").await.unwrap();
    alice
        .emit(Target::room_except_sender("news"), "n", "after the upgrade")
        .await
        .unwrap();
    assert!(rooms.join("news.room").exists());
    assert!(!rooms.join("news.members").exists());
    let bob = client(&addr, "bob").await;
    let mut ib = bob.inbox().await.unwrap();
    assert_eq!(payloads(&mut ib, 1).await, ["after the upgrade"]);
    b.shutdown().await;
}

/// Appends one record to an inbox the way Herald did before room logs
/// (`rooms::inbox::Entry` then): one record per batch, producer id 0,
/// key the event name, headers `herald-kind`, `herald-sender` and, for a
/// room event or presence, `herald-room`. Written out here rather than
/// with today's `Entry`: this is the layout of data already on disk, which
/// must keep being read whatever the broker writes now.
async fn append_as_an_older_herald(
    inbox: &herald_broker::topic::Topic,
    kind: &str,
    event: &str,
    sender: &str,
    room: &str,
    payload: &str,
) {
    let headers: [(&str, &[u8]); 3] = [
        ("herald-kind", kind.as_bytes()),
        ("herald-sender", sender.as_bytes()),
        ("herald-room", room.as_bytes()),
    ];
    let mut b = BatchBuilder::new();
    b.push(&RecordRef {
        key: event.as_bytes(),
        headers: &headers,
        payload: payload.as_bytes(),
        timestamp: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    });
    inbox
        .log
        .append(Batch::validate(b.finish(0, 0)).unwrap())
        .await
        .unwrap();
}

/// Room events an older Herald left in a member's inbox (before room logs
/// an emit to a room was one record in each member's inbox) are still
/// delivered after the upgrade, as docs/rooms.md promises ("Data folders
/// of older versions": "what the room was sent before is still in their
/// inboxes, delivered as before"). The member had read and acked the
/// first of them with an older client: after the upgrade its client gets
/// the others, once, in order, with their name, sender and room, and the
/// room's events sent from the upgrade on through the room's log (there is
/// no order between the inbox and a room's log: each source is checked in
/// its own order). Guards the migration path that
/// `rooms_of_an_older_herald_keep_working` leaves out: an upgrade that
/// moved the inbox's group to its end, or a client that ignored room
/// events found in an inbox, would silently lose them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_left_in_an_older_heralds_inbox_are_still_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    // Bob's inbox as the older Herald left it: alice's join of "news",
    // then five events emitted to "news" (event name, sender, payload).
    let old = [
        ("chat", "alice", "o0"),
        ("chat", "carol", "o1"),
        ("flash", "alice", "o2"),
        ("chat", "carol", "o3"),
        ("flash", "alice", "o4"),
    ];
    // A broker on the folder writes the inbox's topic and group; the
    // older Herald's member file comes after it stopped, so that it is
    // not migrated yet.
    let b = herald_broker::server::start(cfg.clone()).await.unwrap();
    let inbox = b
        .registry()
        .create(
            "_inbox.bob",
            &herald_broker::rooms::inbox::config(&cfg),
            true,
        )
        .unwrap();
    append_as_an_older_herald(&inbox, "presence", "join", "alice", "news", "").await;
    for (event, sender, payload) in old {
        append_as_an_older_herald(&inbox, "event", event, sender, "news", payload).await;
    }
    // Bob read his inbox (group `inbox`) and acked the join, o0 and o1.
    let mut raw = Raw::connect_as(b.local_addr(), Some("bob")).await;
    let sub = raw
        .subscribe("_inbox.bob", Some("inbox"), StartPosition::Resume, 100)
        .await;
    let offsets: Vec<u64> = raw.take(6).await.iter().map(|(_, r)| r.offset).collect();
    assert_eq!(offsets, [0, 1, 2, 3, 4, 5]);
    raw.ack(sub, AckKind::AckUpTo, vec![(0, 2)]).await; // answered once durable
    drop(raw);
    drop(inbox);
    b.shutdown().await;
    let rooms = dir.path().join("rooms");
    std::fs::create_dir_all(&rooms).unwrap();
    let members = postcard::to_allocvec(&vec!["alice".to_owned(), "bob".to_owned()]).unwrap();
    herald_broker::fsutil::write_atomic(&rooms.join("news.members"), &members, true).unwrap();

    // The new Herald. Alice emits to the room before bob is back.
    let b = herald_broker::server::start(cfg).await.unwrap();
    let addr = b.local_addr().to_string();
    let alice = client(&addr, "alice").await;
    alice
        .emit(Target::room("news"), "chat", "l0")
        .await
        .unwrap();
    let bob = client(&addr, "bob").await;
    let mut ib = bob.inbox().await.unwrap();
    let seen = |ev: &Event| {
        [
            ev.name(),
            ev.sender(),
            ev.room().unwrap_or("-"),
            &String::from_utf8_lossy(ev.payload()),
        ]
        .map(str::to_owned)
    };
    // Three left in the inbox and one in the room's log, presence aside.
    let mut got = Vec::new();
    while got.len() < 4 {
        match tokio::time::timeout(T, ib.next()).await {
            Ok(Some(Ok(ev))) => {
                ev.ack().await.unwrap();
                if !ev.is_presence() {
                    got.push(seen(&ev));
                }
            }
            other => panic!("4 events expected, got {got:?} then {other:?}"),
        }
    }
    let (from_inbox, live): (Vec<_>, Vec<_>) = got.into_iter().partition(|s| s[3].starts_with('o'));
    let want: Vec<[String; 4]> = old[2..]
        .iter()
        .map(|(event, sender, payload)| [*event, *sender, "news", *payload].map(str::to_owned))
        .collect();
    assert_eq!(from_inbox, want, "the events bob had not acked, in order");
    assert_eq!(live, [["chat", "alice", "news", "l0"].map(str::to_owned)]);
    alice
        .emit(Target::room("news"), "chat", "l1")
        .await
        .unwrap();
    let ev = next_event(&mut ib).await;
    assert_eq!(
        seen(&ev),
        ["chat", "alice", "news", "l1"].map(str::to_owned)
    );
    quiet(&mut ib).await;
    bob.close().await;
    alice.close().await;
    b.shutdown().await;
}

/// A non-durable room keeps a member whose client (and the broker) came
/// back within the grace period, with what was sent meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_durable_room_survives_a_restart_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.presence_grace = Duration::from_secs(30);
    let b = herald_broker::server::start(cfg.clone()).await.unwrap();
    let addr = b.local_addr();
    cfg.listen = addr;
    let alice = client(&addr.to_string(), "alice").await;
    alice.join("lobby").await.unwrap();
    let bob = client(&addr.to_string(), "bob").await;
    bob.join("lobby").await.unwrap();
    drop(bob.inbox().await.unwrap());
    bob.close().await;
    alice.close().await;
    b.shutdown().await;
    let b = herald_broker::server::start(cfg).await.unwrap();
    let alice = client(&addr.to_string(), "alice").await;
    alice.join("lobby").await.unwrap();
    let r = alice
        .emit(
            Target::room_except_sender("lobby"),
            "m",
            "while you were away",
        )
        .await
        .unwrap();
    assert_eq!(r.recipients, 1, "bob is still a member");
    let bob = client(&addr.to_string(), "bob").await;
    let mut ib = bob.inbox().await.unwrap();
    assert_eq!(payloads(&mut ib, 1).await, ["while you were away"]);
    b.shutdown().await;
}

/// A member that never acks an event has it copied to the room log's
/// dead-letter topic after `max_deliveries`. The copy runs beside the
/// room's group set (its fsync holds up no member); once it is durable,
/// that member's position, and no other's, moves past the event, while
/// the other member gets every event, in order, meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_event_moves_only_its_members_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.ack_timeout = Duration::from_millis(200);
    cfg.max_deliveries = 2;
    cfg.redelivery_backoff = vec![Duration::ZERO];
    let b = herald_broker::server::start(cfg).await.unwrap();
    let addr = b.local_addr().to_string();
    let alice = client(&addr, "alice").await;
    alice.join("r").await.unwrap();
    let mut a_in = alice.inbox().await.unwrap();
    let bob = client(&addr, "bob").await;
    bob.join("r").await.unwrap();
    let mut b_in = bob.inbox().await.unwrap();
    let carol = client(&addr, "carol").await;
    let sent = ["poison", "e1", "e2", "e3"];
    for p in sent {
        carol.emit(Target::room("r"), "ev", p).await.unwrap();
    }
    assert_eq!(payloads(&mut b_in, 4).await, sent);
    // Alice acks everything but the poison, which she is handed twice.
    let (mut poison, mut others) = (0, Vec::new());
    while poison < 2 || others.len() < 3 {
        let ev = tokio::time::timeout(T, a_in.next())
            .await
            .expect("an event in time")
            .expect("inbox open")
            .expect("an event");
        if ev.is_presence() {
            ev.ack().await.unwrap();
        } else if ev.payload() == &b"poison"[..] {
            poison += 1;
        } else {
            others.push(String::from_utf8_lossy(ev.payload()).into_owned());
            ev.ack().await.unwrap();
        }
    }
    assert_eq!(others, ["e1", "e2", "e3"]);
    // Once the copy is durable alice's group is done with everything; bob's
    // dead-lettered nothing.
    let admin = client(&addr, "admin").await;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let groups = admin.list_groups("_room.r").await.unwrap();
        let g = |n: &str| groups.iter().find(|g| g.name == n).cloned().unwrap();
        let (a, b) = (g("alice"), g("bob"));
        assert_eq!(b.dead_lettered, 0);
        if a.dead_lettered == 1 && a.lag == 0 {
            assert_eq!(b.lag, 0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice's group never moved past the poison: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dlq = admin.describe_topic("_room.r.dlq").await.unwrap();
    assert_eq!(dlq.next_offset, 1, "one dead letter: {dlq:?}");
    quiet(&mut a_in).await;
    b.shutdown().await;
}

/// Direct emits to clients never seen before each create an inbox (created
/// without fsyncs, made durable by its first commit). The broker is
/// SIGKILLed while dozens of them are being created and confirmed: after a
/// restart every confirmed emit is in its recipient's inbox, and every
/// inbox the kill cut short serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_emits_to_new_inboxes_survive_a_broker_kill() {
    tokio::time::timeout(Duration::from_secs(90), new_inboxes_killed())
        .await
        .expect("the test took too long");
}

async fn new_inboxes_killed() {
    const N: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let broker = Child::spawn(dir.path(), &[]);
    let addr = broker.addr.to_string();
    let alice = client(&addr, "alice").await;
    let (tx, mut confirmed) = tokio::sync::mpsc::unbounded_channel();
    let emits: Vec<_> = (0..N)
        .map(|i| {
            let (alice, tx) = (alice.clone(), tx.clone());
            tokio::spawn(async move {
                // Unconfirmed emits are re-sent after the reconnect (at
                // least once), so they may be confirmed by the new broker.
                if alice
                    .emit_to_client(&format!("c{i}"), "dm", format!("p{i}"))
                    .await
                    .is_ok()
                {
                    let _ = tx.send(i);
                }
            })
        })
        .collect();
    drop(tx);
    let mut ok = Vec::new();
    while ok.len() < N / 3 {
        ok.push(confirmed.recv().await.expect("a confirm"));
    }
    let before = ok.len();
    broker.kill(); // SIGKILL, mid-storm
    let broker = Child::spawn_on(dir.path(), &addr, &[]);
    let addr = broker.addr.to_string();
    for e in emits {
        e.await.unwrap();
    }
    while let Some(i) = confirmed.recv().await {
        ok.push(i);
    }
    eprintln!(
        "{before} of {N} emits confirmed before the kill, {} in all",
        ok.len()
    );
    assert!(ok.len() >= N / 3, "{} confirmed", ok.len());
    for i in 0..N {
        let c = client(&addr, &format!("c{i}")).await;
        let mut inbox = c.inbox().await.unwrap();
        if ok.contains(&i) {
            let ev = next_event(&mut inbox).await;
            assert_eq!(
                (ev.name(), &ev.payload()[..]),
                ("dm", format!("p{i}").as_bytes()),
                "c{i}"
            );
        }
        c.close().await;
    }
    alice.close().await;
}

/// Members joining one durable room at once share its member-file writes
/// (`rooms::store::Writes`); every join that was answered is in the file:
/// after a SIGKILL and a restart the room lists all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_at_once_are_all_kept_across_a_broker_kill() {
    tokio::time::timeout(Duration::from_secs(60), joins_at_once())
        .await
        .expect("the test took too long");
}

async fn joins_at_once() {
    const N: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let broker = Child::spawn(dir.path(), &[]);
    let addr = broker.addr.to_string();
    let mut clients = Vec::new();
    for i in 0..N {
        clients.push(client(&addr, &format!("m{i:02}")).await);
    }
    let joins = clients.iter().map(|c| c.join_durable("crowd"));
    for r in futures::future::join_all(joins).await {
        r.unwrap();
    }
    broker.kill();
    drop(clients);

    let broker = Child::spawn(dir.path(), &[]);
    // Only a member may list a room: the first one, back.
    let m00 = client(&broker.addr.to_string(), "m00").await;
    let mut ids: Vec<String> = m00
        .members("crowd")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.client_id)
        .collect();
    ids.sort();
    let want: Vec<String> = (0..N).map(|i| format!("m{i:02}")).collect();
    assert_eq!(ids, want);
    m00.close().await;
}

/// Members coming back together after an outage read the room's log from
/// disk (no tail cache here), through reads shared among them and kept
/// across rounds while they stop short of the log's end. Each reads the
/// log as the JavaScript client does (its group is its client id) with a
/// small prefetch, so each takes a few records at a time, at its own pace
/// and offset: each gets every event once, in order, then nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_back_together_from_disk_each_get_every_event_once_in_order() {
    const MEMBERS: usize = 5;
    const EVENTS: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.tail_cache_bytes = 0;
    cfg.segment_bytes = 256 * 1024;
    let b = herald_broker::server::start(cfg).await.unwrap();
    let addr = b.local_addr().to_string();
    let ids: Vec<String> = (0..MEMBERS).map(|i| format!("m{i}")).collect();
    for id in &ids {
        let m = client(&addr, id).await;
        m.join_durable("back").await.unwrap();
        m.close().await;
    }
    let alice = client(&addr, "alice").await;
    let pad = "x".repeat(400);
    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(100) {
        let emits = chunk
            .iter()
            .map(|i| alice.emit(Target::room("back"), "m", format!("{i:05}{pad}")));
        for r in futures::future::join_all(emits).await {
            r.unwrap();
        }
    }
    let members = ids.iter().enumerate().map(|(k, id)| {
        let (addr, id) = (addr.clone(), id.clone());
        tokio::spawn(async move {
            let m = client(&addr, &id).await;
            let mut sub = m
                .subscribe("_room.back")
                .group(id.clone())
                .prefetch(20 + 10 * k as u32)
                .await
                .unwrap();
            let mut got = Vec::new();
            while got.len() < EVENTS {
                let msg = tokio::time::timeout(T, sub.next())
                    .await
                    .expect("an event in time")
                    .expect("open")
                    .expect("a message");
                if msg.key().map(|k| &k[..]) == Some(&b"m"[..]) {
                    got.push(String::from_utf8_lossy(msg.payload()).into_owned());
                }
                msg.ack().await.unwrap();
            }
            let more = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
            assert!(more.is_err(), "{id}: more than every event once");
            m.close().await;
            (id, got)
        })
    });
    let want: Vec<String> = (0..EVENTS).map(|i| format!("{i:05}{pad}")).collect();
    for joined in futures::future::join_all(members).await {
        let (id, got) = joined.unwrap();
        assert!(got == want, "{id}: not every event once in order");
    }
    b.shutdown().await;
}
