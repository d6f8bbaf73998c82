//! The members of a room read its log through one consumer group each, and
//! all those groups are hosted by one actor task (a group set, see
//! broker/src/group/set.rs). These tests check that the shared actor
//! serves each member as its own group would: every event once, acks kept
//! per member across a restart, a member leaving or timing out touching
//! nobody else. In process, over TCP with the protocol-level client.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{config, Raw, T};
use herald_broker::server::BrokerHandle;
use herald_protocol::*;

/// The event name of the events these tests emit (presence records in the
/// same log have other names).
const EVENT: &str = "e";

async fn start(dir: &std::path::Path) -> BrokerHandle {
    herald_broker::server::start(config(dir)).await.unwrap()
}

/// A member of `room` reading its log: (connection, subscription).
async fn member(b: &BrokerHandle, id: &str, room: &str, ack_timeout_ms: u32) -> (Raw, u64) {
    let mut c = Raw::connect_as(b.local_addr(), Some(id)).await;
    let r = c
        .request(Message::Join(JoinRoom {
            room: room.into(),
            durable: true,
            history: 0,
        }))
        .await;
    assert_eq!(r, Message::Ok, "{id} joins");
    let sub = subscribe(&mut c, id, room, ack_timeout_ms).await;
    (c, sub)
}

async fn subscribe(c: &mut Raw, id: &str, room: &str, ack_timeout_ms: u32) -> u64 {
    c.subscribe_with(Subscribe {
        topic: format!("_room.{room}"),
        group: Some(id.into()),
        start: StartPosition::Resume,
        prefetch_messages: 1000,
        prefetch_bytes: 1 << 20,
        ack_timeout_ms,
        max_deliveries: 0,
    })
    .await
}

async fn emit(c: &mut Raw, room: &str, payload: String) {
    let r = c
        .request(Message::Emit(Emit {
            target: EmitTarget::Room(room.into()),
            event: EVENT.into(),
            payload: payload.into_bytes(),
            correlation: 0,
        }))
        .await;
    assert!(matches!(r, Message::EmitOk(_)), "{r:?}");
}

/// The next `n` events (presence records skipped): (offset, delivery
/// count, payload).
async fn events(c: &mut Raw, n: usize) -> Vec<(u64, u32, String)> {
    let mut out = Vec::new();
    tokio::time::timeout(T, async {
        while out.len() < n {
            let (_, count, recs) = c.next_delivery().await;
            for r in recs {
                if r.key[..] == *EVENT.as_bytes() {
                    out.push((r.offset, count, String::from_utf8_lossy(&r.payload).into()));
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} events in time, got {}", out.len()));
    out
}

/// Acks every offset up to `last` (presence records included).
async fn ack_up_to(c: &mut Raw, sub: u64, last: u64) {
    c.ack(sub, AckKind::AckUpTo, vec![(0, last)]).await;
}

/// Asserts that no event arrives for a while (presence records aside).
async fn no_events(c: &mut Raw, who: &str) {
    let r = tokio::time::timeout(Duration::from_millis(400), events(c, 1)).await;
    if let Ok(got) = r {
        panic!("{who}: unexpected {got:?}");
    }
}

fn expected(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("m{i}")).collect()
}

/// A room's groups share one actor task: a thousand members cost the
/// broker no task each, while the groups of an ordinary topic keep an
/// actor each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_groups_of_a_room_share_one_task() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let reg = b.registry().clone();
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let cfg = TopicConfig::default();
    let room = reg.create("_room.big", &cfg, true).unwrap();
    let plain = reg.create("plain", &cfg, false).unwrap();
    // Wait for the tasks of the creations to settle.
    room.group("warmup").unwrap().place(0).await.unwrap();
    let before = tasks();
    for i in 0..1000 {
        room.group(&format!("m{i}"))
            .unwrap()
            .place(0)
            .await
            .unwrap();
    }
    let room_tasks = tasks().saturating_sub(before);
    assert!(room_tasks < 20, "{room_tasks} tasks for 1000 room members");
    let before = tasks();
    for i in 0..50 {
        plain
            .group(&format!("g{i}"))
            .unwrap()
            .place(0)
            .await
            .unwrap();
    }
    let plain_tasks = tasks().saturating_sub(before);
    assert!(plain_tasks >= 50, "{plain_tasks} tasks for 50 groups");
    assert_eq!(room.group_infos().await.unwrap().len(), 1001);
    b.shutdown().await;
}

/// Many members of one room: each gets every event once, in order; what
/// each acked is kept per member across a restart, so each gets again
/// exactly what it had not acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_members_get_every_event_once_and_keep_their_own_acks() {
    const MEMBERS: usize = 24;
    const EVENTS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        members.push(member(&b, &format!("c{i}"), "big", 0).await);
    }
    let mut sender = Raw::connect_as(b.local_addr(), Some("sender")).await;
    for i in 0..EVENTS {
        emit(&mut sender, "big", format!("m{i}")).await;
    }
    // Member i acks its first i events.
    let mut offsets = Vec::new();
    for (i, (c, sub)) in members.iter_mut().enumerate() {
        let got = events(c, EVENTS).await;
        let payloads: Vec<String> = got.iter().map(|e| e.2.clone()).collect();
        assert_eq!(payloads, expected(0, EVENTS), "member c{i}");
        assert!(got.iter().all(|e| e.1 == 1), "first deliveries");
        no_events(c, &format!("c{i}")).await;
        if i > 0 {
            ack_up_to(c, *sub, got[i - 1].0).await;
        }
        offsets = got.iter().map(|e| e.0).collect();
    }
    drop(members);
    drop(sender);
    b.shutdown().await;

    let b = start(dir.path()).await;
    for i in 0..MEMBERS {
        let id = format!("c{i}");
        let mut c = Raw::connect_as(b.local_addr(), Some(&id)).await;
        subscribe(&mut c, &id, "big", 0).await;
        let got = events(&mut c, EVENTS - i).await;
        let payloads: Vec<String> = got.iter().map(|e| e.2.clone()).collect();
        assert_eq!(
            payloads,
            expected(i, EVENTS),
            "member {id} after the restart"
        );
        let at: Vec<u64> = got.iter().map(|e| e.0).collect();
        assert_eq!(at, offsets[i..], "member {id}'s offsets");
        no_events(&mut c, &id).await;
    }
    b.shutdown().await;
}

/// A member leaving the room (its group deleted, in the actor it shares
/// with the others) ends its deliveries only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_leaving_does_not_disturb_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let (mut a, _) = member(&b, "a", "r", 0).await;
    let (mut bb, _) = member(&b, "b", "r", 0).await;
    let (mut c, _) = member(&b, "c", "r", 0).await;
    let mut sender = Raw::connect_as(b.local_addr(), Some("sender")).await;
    for i in 0..5 {
        emit(&mut sender, "r", format!("m{i}")).await;
    }
    for x in [&mut a, &mut bb, &mut c] {
        assert_eq!(events(x, 5).await.len(), 5);
    }
    let r = c
        .request(Message::Leave(RoomName { room: "r".into() }))
        .await;
    assert_eq!(r, Message::Ok);
    let log = b.registry().get("_room.r").unwrap();
    let mut names = log.group_names();
    names.retain(|n| ["a", "b", "c"].contains(&n.as_str()));
    assert_eq!(names, ["a", "b"], "c's group is gone");
    for i in 5..10 {
        emit(&mut sender, "r", format!("m{i}")).await;
    }
    for (x, who) in [(&mut a, "a"), (&mut bb, "b")] {
        let got: Vec<String> = events(x, 5).await.into_iter().map(|e| e.2).collect();
        assert_eq!(got, expected(5, 10), "{who}");
    }
    no_events(&mut c, "c").await;
    // Joining again starts afresh, at the end, beside the others.
    let (mut c, _) = member(&b, "c", "r", 0).await;
    emit(&mut sender, "r", "m10".into()).await;
    for (x, who) in [(&mut a, "a"), (&mut bb, "b"), (&mut c, "c")] {
        let got: Vec<String> = events(x, 1).await.into_iter().map(|e| e.2).collect();
        assert_eq!(got, ["m10"], "{who}");
    }
    b.shutdown().await;
}

/// An ack timeout in one member's group redelivers to that member only;
/// the members that acked hear nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_timeout_redelivers_to_its_member_only() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut ms = Vec::new();
    for id in ["a", "b", "slow", "d"] {
        ms.push((id, member(&b, id, "t", 300).await));
    }
    let mut sender = Raw::connect_as(b.local_addr(), Some("sender")).await;
    for i in 0..3 {
        emit(&mut sender, "t", format!("m{i}")).await;
    }
    let mut slow_first = BTreeSet::new();
    for (id, (c, sub)) in ms.iter_mut() {
        let got = events(c, 3).await;
        if *id == "slow" {
            slow_first = got.iter().map(|e| e.0).collect();
        } else {
            let last = got.last().unwrap().0;
            ack_up_to(c, *sub, last).await;
        }
    }
    let (_, (slow, _)) = &mut ms[2];
    let again = events(slow, 3).await;
    assert!(again.iter().all(|e| e.1 == 2), "redelivered: {again:?}");
    let again: BTreeSet<u64> = again.iter().map(|e| e.0).collect();
    assert_eq!(again, slow_first);
    for (id, (c, _)) in ms.iter_mut() {
        if *id != "slow" {
            no_events(c, id).await;
        }
    }
    b.shutdown().await;
}

/// Joins (or, with `durable` false, joins non-durably) `room`; the reply
/// comes once the join's presence record is durable.
async fn join_room(c: &mut Raw, room: &str, durable: bool) {
    let r = c
        .request(Message::Join(JoinRoom {
            room: room.into(),
            durable,
            history: 0,
        }))
        .await;
    assert_eq!(r, Message::Ok, "{} joins {room}", c.client_id);
}

/// The records of `log` from offset `from` to its end, each as (kind,
/// event name, sender, room).
fn records_from(log: &herald_broker::topic::Topic, from: u64) -> Vec<[String; 4]> {
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let mut out = Vec::new();
    for batch in log.log.read(from, 1 << 20, 1000).unwrap() {
        for r in batch.records().filter(|r| r.offset >= from) {
            let header = |name: &str| {
                r.headers()
                    .find(|(n, _)| *n == name)
                    .map_or(String::new(), |(_, v)| text(v))
            };
            out.push([
                header("herald-kind"),
                text(&r.key),
                header("herald-sender"),
                header("herald-room"),
            ]);
        }
    }
    out
}

/// A presence record as [`records_from`] gives it.
fn presence(event: &str, about: &str, room: &str) -> [String; 4] {
    ["presence", event, about, room].map(str::to_owned)
}

/// The end of `log` once it has reached `at_least` (waited for, bounded)
/// and nothing more came for a while: presence written by a grace timer
/// or at a session's start is not awaited by any request, and a record
/// per member would follow the first. Nothing else writes to the room
/// meanwhile, so the quiet window can only let a wrong count through,
/// never fail a right one.
async fn settled_end(log: &herald_broker::topic::Topic, at_least: u64) -> u64 {
    let mut end = log.log.watch_next_offset();
    tokio::time::timeout(T, end.wait_for(|n| *n >= at_least))
        .await
        .unwrap_or_else(|_| panic!("the log never reached {at_least}"))
        .expect("log open");
    let _ = tokio::time::timeout(Duration::from_millis(300), end.wait_for(|n| *n > at_least)).await;
    log.log.next_offset()
}

/// Presence is one append to the room's log per change, whatever the
/// number of members (docs/rooms.md, "Presence"; rooms/presence.rs): a
/// room of 20 members gets exactly one record for a newcomer's join,
/// one for its leave, one `disconnect` when its grace period runs out
/// (and, in a non-durable room, one `leave` more: two changes), and one
/// `connect` when it comes back to its durable room. Presence written
/// once per member (a record per member in the log; or in each member's
/// inbox, as before room logs, which leaves the log without it) fails
/// here: +20 or +0 where +1 is due. The room stays under
/// `presence_max_members`, past which nothing is written (that limit is
/// tested in client/tests/rooms.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_one_append_per_change_whatever_the_rooms_size() {
    const MEMBERS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.presence_grace = Duration::from_millis(200);
    // With the newcomer the room has MEMBERS + 1: at most the limit.
    assert!(
        MEMBERS < cfg.presence_max_members,
        "the room must stay under the presence limit"
    );
    let b = herald_broker::server::start(cfg).await.unwrap();
    // The members stay connected to the end: a member's own disconnect
    // would be presence too.
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        let mut c = Raw::connect_as(b.local_addr(), Some(&format!("m{i:02}"))).await;
        join_room(&mut c, "crowd", true).await;
        join_room(&mut c, "lobby", false).await;
        members.push(c);
    }
    let crowd = b.registry().get("_room.crowd").unwrap();
    let lobby = b.registry().get("_room.lobby").unwrap();
    let joins = crowd.log.next_offset();
    assert_eq!(joins, MEMBERS as u64, "one join record per member joining");

    // Join and leave: the reply waits for the presence record.
    let mut x = Raw::connect_as(b.local_addr(), Some("x")).await;
    let before = crowd.log.next_offset();
    join_room(&mut x, "crowd", true).await;
    assert_eq!(
        crowd.log.next_offset(),
        before + 1,
        "a join in a room of {MEMBERS}"
    );
    assert_eq!(
        records_from(&crowd, before),
        [presence("join", "x", "crowd")]
    );

    let before = crowd.log.next_offset();
    let r = x
        .request(Message::Leave(RoomName {
            room: "crowd".into(),
        }))
        .await;
    assert_eq!(r, Message::Ok);
    assert_eq!(
        crowd.log.next_offset(),
        before + 1,
        "a leave from a room of {}",
        MEMBERS + 1
    );
    assert_eq!(
        records_from(&crowd, before),
        [presence("leave", "x", "crowd")]
    );

    join_room(&mut x, "crowd", true).await;
    join_room(&mut x, "lobby", false).await;

    // Disconnected for good once the grace period runs out: `disconnect`
    // in the durable room; `disconnect` and `leave` in the non-durable one.
    let (c0, l0) = (crowd.log.next_offset(), lobby.log.next_offset());
    drop(x);
    assert_eq!(settled_end(&crowd, c0 + 1).await, c0 + 1, "a disconnect");
    assert_eq!(
        records_from(&crowd, c0),
        [presence("disconnect", "x", "crowd")]
    );
    assert_eq!(
        settled_end(&lobby, l0 + 2).await,
        l0 + 2,
        "a disconnect and a leave"
    );
    assert_eq!(
        records_from(&lobby, l0),
        [
            presence("disconnect", "x", "lobby"),
            presence("leave", "x", "lobby")
        ]
    );

    // Back: `connect` in the durable room it is still a member of.
    let (c0, l0) = (crowd.log.next_offset(), lobby.log.next_offset());
    let x = Raw::connect_as(b.local_addr(), Some("x")).await;
    assert_eq!(settled_end(&crowd, c0 + 1).await, c0 + 1, "a connect");
    assert_eq!(
        records_from(&crowd, c0),
        [presence("connect", "x", "crowd")]
    );
    assert_eq!(lobby.log.next_offset(), l0, "x left the non-durable room");
    drop(x);
    drop(members);
    b.shutdown().await;
}

/// A graceful restart of the broker is not a disconnect (docs/rooms.md,
/// "Grace period"): the members online when it stopped get a grace period
/// after it starts again. One back in time is announced nothing (no
/// `connect`: it never was announced `disconnect`); one not back gets
/// `disconnect`; one already disconnected before the restart gets nothing
/// more. Before `Rooms::save_online` only members of non-durable rooms got
/// that grace period: a member of durable rooms only came back as
/// `connect` and, if it never came back, was never announced. After a
/// crash (no record of who was online) every member gets the grace
/// period, and one disconnected before is announced again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_announces_only_the_members_that_stay_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.presence_grace = Duration::from_millis(1500);
    let b = herald_broker::server::start(cfg.clone()).await.unwrap();
    let mut clients = Vec::new();
    for id in ["alice", "bob", "carol"] {
        let mut c = Raw::connect_as(b.local_addr(), Some(id)).await;
        join_room(&mut c, "club", true).await;
        clients.push(c);
    }
    let club = b.registry().get("_room.club").unwrap();
    // Bob goes away for good before the restart.
    let before = club.log.next_offset();
    drop(clients.remove(1));
    assert_eq!(settled_end(&club, before + 1).await, before + 1);
    assert_eq!(
        records_from(&club, before),
        [presence("disconnect", "bob", "club")]
    );
    drop(club);
    // Alice and carol are online when the broker stops.
    b.shutdown().await;
    drop(clients);
    let record = dir.path().join("rooms").join("online-clients");
    assert!(record.exists(), "who was online is recorded");

    let b = herald_broker::server::start(cfg.clone()).await.unwrap();
    assert!(!record.exists(), "the record is read once");
    let club = b.registry().get("_room.club").unwrap();
    let start = club.log.next_offset();
    // Alice comes back within the grace period; carol does not.
    let alice = Raw::connect_as(b.local_addr(), Some("alice")).await;
    assert_eq!(
        settled_end(&club, start + 1).await,
        start + 1,
        "one record: carol's disconnect"
    );
    assert_eq!(
        records_from(&club, start),
        [presence("disconnect", "carol", "club")]
    );
    drop(club);
    b.shutdown().await;
    drop(alice);

    // As after a crash: no record of who was online. Every member gets the
    // grace period; alice is back in time, bob and carol are announced
    // (again).
    std::fs::remove_file(&record).unwrap();
    let b = herald_broker::server::start(cfg).await.unwrap();
    let club = b.registry().get("_room.club").unwrap();
    let start = club.log.next_offset();
    let alice = Raw::connect_as(b.local_addr(), Some("alice")).await;
    assert_eq!(settled_end(&club, start + 2).await, start + 2);
    let mut got = records_from(&club, start);
    got.sort();
    assert_eq!(
        got,
        [
            presence("disconnect", "bob", "club"),
            presence("disconnect", "carol", "club")
        ]
    );
    drop(club);
    drop(alice);
    b.shutdown().await;
}
