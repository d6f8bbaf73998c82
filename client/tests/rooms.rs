//! Rooms, emits, inboxes, presence, request/reply and limits, through real
//! TCP against an in-process broker.

mod common;

use std::time::Duration;

use common::{within, TestBroker};
use futures::StreamExt;
use herald_client::{Client, Error, ErrorCode, Event, Inbox, Target};

/// How long "nothing else arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);
/// The presence grace period of the brokers that test it.
const GRACE: Duration = Duration::from_millis(500);

async fn client(b: &TestBroker, id: &str) -> Client {
    match Client::builder(b.addr()).client_id(id).connect().await {
        Ok(c) => c,
        Err(e) => panic!("connect {id}: {e}"),
    }
}

async fn inbox(c: &Client) -> Inbox {
    match c.inbox().await {
        Ok(i) => i,
        Err(e) => panic!("inbox: {e}"),
    }
}

/// The next event (presence included), acked.
async fn next_any(inbox: &mut Inbox) -> Event {
    let ev = within("an event", inbox.next()).await;
    match ev {
        Some(Ok(ev)) => {
            if let Err(e) = ev.ack().await {
                panic!("ack: {e}");
            }
            ev
        }
        Some(Err(e)) => panic!("inbox failed: {e}"),
        None => panic!("inbox ended"),
    }
}

/// The next application event, skipping (and acking) presence.
async fn next_event(inbox: &mut Inbox) -> Event {
    loop {
        let ev = next_any(inbox).await;
        if !ev.is_presence() {
            return ev;
        }
    }
}

/// Asserts that no application event arrives within [`QUIET`].
async fn quiet(inbox: &mut Inbox, who: &str) {
    let r = tokio::time::timeout(QUIET, next_event(inbox)).await;
    if let Ok(ev) = r {
        panic!("{who} got an unexpected event {:?}", ev.name());
    }
}

/// Asserts that no event at all (presence included) arrives within `d`.
async fn silent(inbox: &mut Inbox, d: Duration, who: &str) {
    if let Ok(ev) = tokio::time::timeout(d, next_any(inbox)).await {
        panic!(
            "{who} got an unexpected {:?} from {:?}",
            ev.name(),
            ev.sender()
        );
    }
}

async fn names_until(inbox: &mut Inbox, last: &str) -> Vec<String> {
    let mut v = Vec::new();
    loop {
        let ev = next_event(inbox).await;
        v.push(ev.name().to_owned());
        if ev.name() == last {
            return v;
        }
    }
}

fn busy_naming(r: Result<impl std::fmt::Debug, Error>, limit: &str) {
    match r {
        Err(Error::Broker { code, message }) => {
            assert_eq!(code, ErrorCode::Busy, "{message}");
            assert!(message.contains(limit), "{message:?} should name {limit}");
        }
        other => panic!("expected Busy naming {limit}, got {other:?}"),
    }
}

fn invalid(r: Result<impl std::fmt::Debug, Error>) {
    match r {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}"),
        Ok(v) => panic!("expected InvalidArgument, got {v:?}"),
    }
}

#[tokio::test]
async fn each_emit_target_reaches_exactly_its_clients() -> anyhow::Result<()> {
    let b = TestBroker::start().await;
    let (a, bb, c, d) = (
        client(&b, "a").await,
        client(&b, "b").await,
        client(&b, "c").await,
        client(&b, "d").await,
    );
    a.join("r1").await?;
    bb.join("r1").await?;
    bb.join("r2").await?;
    c.join("r2").await?;
    let (mut ia, mut ib, mut ic, mut id) = (
        inbox(&a).await,
        inbox(&bb).await,
        inbox(&c).await,
        inbox(&d).await,
    );

    assert_eq!(a.emit(Target::room("r1"), "e1", "1").await?.recipients, 2);
    assert_eq!(a.broadcast("r1", "e2", "2").await?.recipients, 1);
    assert_eq!(
        a.emit_to_rooms(&["r1", "r2"], "e3", "3").await?.recipients,
        3
    );
    assert_eq!(a.emit_to_client("d", "e4", "4").await?.recipients, 1);
    // The room of a client's own id holds that client.
    assert_eq!(c.emit(Target::room("d"), "e5", "5").await?.recipients, 1);
    assert_eq!(
        bb.emit(Target::rooms_except_sender(["r1", "r2"]), "e6", "6")
            .await?
            .recipients,
        2
    );
    assert_eq!(a.emit_all("e7", "7").await?.recipients, 4);

    assert_eq!(names_until(&mut ia, "e7").await, ["e1", "e3", "e6", "e7"]);
    assert_eq!(names_until(&mut ib, "e7").await, ["e1", "e2", "e3", "e7"]);
    assert_eq!(names_until(&mut ic, "e7").await, ["e3", "e6", "e7"]);
    assert_eq!(names_until(&mut id, "e7").await, ["e4", "e5", "e7"]);
    for (i, who) in [
        (&mut ia, "a"),
        (&mut ib, "b"),
        (&mut ic, "c"),
        (&mut id, "d"),
    ] {
        quiet(i, who).await;
    }

    // What an event says about itself.
    c.emit(Target::room("r2"), "chat message", "hi").await?;
    let ev = next_event(&mut ib).await;
    assert_eq!(
        (ev.name(), ev.sender(), ev.room(), &ev.payload()[..]),
        ("chat message", "c", Some("r2"), &b"hi"[..])
    );
    assert!(!ev.expects_reply());
    Ok(())
}

#[tokio::test]
async fn durable_member_gets_what_it_missed_once_in_order() -> anyhow::Result<()> {
    let b = TestBroker::start().await;
    let alice = client(&b, "alice").await;
    alice.join_durable("news").await?;
    let bob = client(&b, "bob").await;
    bob.join_durable("news").await?;
    {
        let mut ib = inbox(&bob).await;
        alice.emit(Target::room("news"), "before", "").await?;
        assert_eq!(next_event(&mut ib).await.name(), "before");
    }
    bob.close().await;

    for i in 0..10 {
        let r = alice
            .emit(Target::room_except_sender("news"), "missed", format!("{i}"))
            .await?;
        assert_eq!(r.recipients, 1, "the offline durable member still counts");
    }
    let bob = client(&b, "bob").await;
    let mut ib = inbox(&bob).await;
    for i in 0..10 {
        let ev = next_event(&mut ib).await;
        assert_eq!(ev.name(), "missed");
        assert_eq!(ev.payload(), format!("{i}").as_bytes());
    }
    alice.broadcast("news", "live", "").await?;
    assert_eq!(next_event(&mut ib).await.name(), "live");
    quiet(&mut ib, "bob").await;
    Ok(())
}

/// The inbox stream takes the reader's events in batches: one dropped with
/// events taken but not yet yielded must give them, in order and once, to
/// the next inbox, from the room's log and from the client's inbox alike.
#[tokio::test]
async fn an_inbox_dropped_with_events_unread_hands_them_to_the_next_one() -> anyhow::Result<()> {
    let b = TestBroker::start().await;
    let alice = client(&b, "alice").await;
    let bob = client(&b, "bob").await;
    bob.join_durable("news").await?;
    let mut ib = inbox(&bob).await;
    for i in 0..20 {
        alice
            .emit(Target::room("news"), "r", format!("{i}"))
            .await?;
        alice.emit_to_client("bob", "d", format!("{i}")).await?;
    }
    let mut seen = Vec::new();
    let first = next_event(&mut ib).await;
    seen.push(format!(
        "{}{}",
        first.name(),
        String::from_utf8_lossy(first.payload())
    ));
    let again = bob.inbox().await;
    assert!(
        matches!(again, Err(Error::InvalidArgument(_))),
        "a second inbox while one is alive: {again:?}"
    );
    drop(ib);
    let mut ib = inbox(&bob).await;
    while seen.len() < 40 {
        let ev = next_event(&mut ib).await;
        seen.push(format!(
            "{}{}",
            ev.name(),
            String::from_utf8_lossy(ev.payload())
        ));
    }
    quiet(&mut ib, "bob").await;
    for kind in ["r", "d"] {
        let got: Vec<&String> = seen.iter().filter(|s| s.starts_with(kind)).collect();
        let want: Vec<String> = (0..20).map(|i| format!("{kind}{i}")).collect();
        assert_eq!(
            got,
            want.iter().collect::<Vec<_>>(),
            "{kind} events once, in order"
        );
    }
    Ok(())
}

#[tokio::test]
async fn direct_message_waits_for_a_client_across_a_restart() -> anyhow::Result<()> {
    let mut b = TestBroker::start().await;
    let alice = client(&b, "alice").await;
    let r = alice
        .emit_to_client("carol", "hello", "while you were out")
        .await?;
    assert_eq!(r.recipients, 1);
    alice.close().await;
    b.restart().await;

    let carol = client(&b, "carol").await;
    let mut ic = inbox(&carol).await;
    let ev = next_event(&mut ic).await;
    assert_eq!(
        (ev.name(), ev.sender(), ev.room(), &ev.payload()[..]),
        ("hello", "alice", None, &b"while you were out"[..])
    );
    quiet(&mut ic, "carol").await;
    Ok(())
}

#[tokio::test]
async fn presence_events_and_the_grace_period() -> anyhow::Result<()> {
    let b = TestBroker::start_with(|c| c.presence_grace = GRACE).await;
    let alice = client(&b, "alice").await;
    alice.join("lobby").await?;
    alice.join_durable("desk").await?;
    let mut ia = inbox(&alice).await;

    let bob = client(&b, "bob").await;
    bob.join("lobby").await?;
    bob.join_durable("desk").await?;
    for room in ["lobby", "desk"] {
        let ev = next_any(&mut ia).await;
        assert_eq!(
            (ev.name(), ev.sender(), ev.room()),
            ("join", "bob", Some(room))
        );
        assert!(ev.is_presence());
    }
    let members = alice.members("lobby").await?;
    let ids: Vec<(&str, bool)> = members
        .iter()
        .map(|m| (m.client_id.as_str(), m.online))
        .collect();
    assert_eq!(ids, [("alice", true), ("bob", true)]);

    // Back within the grace period: no disconnect, leave, connect or join.
    bob.close().await;
    let bob = client(&b, "bob").await;
    bob.join("lobby").await?;
    // Watch past the grace period: a timer that was not cancelled fires.
    silent(&mut ia, GRACE + QUIET, "alice").await;

    // Away for longer: the non-durable room loses bob, the durable one
    // keeps him as an offline member.
    bob.close().await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let ev = next_any(&mut ia).await;
        assert_eq!(ev.sender(), "bob");
        seen.push((ev.name().to_owned(), ev.room().unwrap_or("").to_owned()));
    }
    seen.sort();
    let want: Vec<(String, String)> = [
        ("disconnect", "desk"),
        ("disconnect", "lobby"),
        ("leave", "lobby"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(seen, want);
    let lobby = alice.members("lobby").await?;
    assert_eq!(lobby.len(), 1);
    let desk = alice.members("desk").await?;
    assert!(desk.iter().any(|m| m.client_id == "bob" && !m.online));

    // Coming back connects him to the durable room.
    let _bob = client(&b, "bob").await;
    let ev = next_any(&mut ia).await;
    assert_eq!(
        (ev.name(), ev.sender(), ev.room()),
        ("connect", "bob", Some("desk"))
    );
    invalid(bob_members_of_lobby(&_bob).await);
    Ok(())
}

/// Past `presence_max_members` a room is announced nothing: joins, leaves
/// and disconnects of a big room are not delivered to every member (N
/// deliveries per change), while a room at or under the limit still is.
#[tokio::test]
async fn a_room_past_the_presence_limit_gets_no_presence() -> anyhow::Result<()> {
    let b = TestBroker::start_with(|c| {
        c.presence_grace = GRACE;
        c.presence_max_members = 2;
    })
    .await;
    let alice = client(&b, "alice").await;
    alice.join("hall").await?;
    let mut ia = inbox(&alice).await;
    let bob = client(&b, "bob").await;
    bob.join("hall").await?;
    let ev = next_any(&mut ia).await;
    assert_eq!(
        (ev.name(), ev.sender()),
        ("join", "bob"),
        "2 members: announced"
    );

    // A third member: nothing announced. Events are in the room's log in
    // order, so the next thing alice reads is carol's event, not a join.
    let carol = client(&b, "carol").await;
    carol.join("hall").await?;
    carol.emit(Target::room("hall"), "hi", "1").await?;
    let ev = next_any(&mut ia).await;
    assert_eq!((ev.name(), ev.sender()), ("hi", "carol"));

    // Leaving a room of 3: not announced either.
    carol.leave("hall").await?;
    bob.emit(Target::room("hall"), "after", "2").await?;
    let ev = next_any(&mut ia).await;
    assert_eq!((ev.name(), ev.sender()), ("after", "bob"));

    // Disconnected for good from a room of 3: no disconnect, no leave.
    carol.join("hall").await?;
    carol.close().await;
    within("carol dropped from hall", async {
        while alice.members("hall").await?.len() > 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::Ok(())
    })
    .await?;
    bob.emit(Target::room("hall"), "later", "3").await?;
    let ev = next_any(&mut ia).await;
    assert_eq!((ev.name(), ev.sender()), ("later", "bob"));

    // Back to 2 members: announced again.
    bob.leave("hall").await?;
    let ev = next_any(&mut ia).await;
    assert_eq!((ev.name(), ev.sender()), ("leave", "bob"));
    Ok(())
}

/// Whether the broker has `client`'s inbox topic.
async fn has_inbox(c: &Client, client: &str) -> bool {
    match c.describe_topic(&format!("_inbox.{client}")).await {
        Ok(_) => true,
        Err(e) if e.code() == Some(ErrorCode::UnknownTopic) => false,
        Err(e) => panic!("describe _inbox.{client}: {e}"),
    }
}

/// A client that reads its inbox creates no inbox topic: the first event
/// for it does, and the client, already subscribed, gets that event and
/// the next ones, once, in order. A subscription that ended before its
/// inbox existed does not join it: the client, back, reads everything.
#[tokio::test]
async fn an_inbox_is_created_by_its_first_event() -> anyhow::Result<()> {
    let b = TestBroker::start().await;
    let alice = client(&b, "alice").await;
    alice.join("lobby").await?;
    let mut ia = inbox(&alice).await;
    let bob = client(&b, "bob").await;
    let mut ib = inbox(&bob).await;
    assert!(!has_inbox(&bob, "alice").await, "subscribing created it");
    assert!(!has_inbox(&bob, "bob").await, "subscribing created it");

    for i in 0..3 {
        bob.emit_to_client("alice", "dm", format!("{i}")).await?;
    }
    for i in 0..3 {
        let ev = next_event(&mut ia).await;
        assert_eq!(
            (ev.name(), &ev.payload()[..]),
            ("dm", format!("{i}").as_bytes())
        );
    }
    assert!(has_inbox(&bob, "alice").await);
    // Requests and replies go through inboxes created the same way.
    let asked = tokio::spawn(async move {
        let ev = next_event(&mut ib).await;
        ev.reply("pong").await.map(|_| ev.name().to_owned())
    });
    let pong = alice
        .request("bob", "ping", "?", Duration::from_secs(10))
        .await?;
    assert_eq!(&pong[..], b"pong");
    assert_eq!(asked.await??, "ping");
    quiet(&mut ia, "alice").await;

    // carol subscribes, leaves before anything is sent, and comes back.
    let carol = client(&b, "carol").await;
    drop(inbox(&carol).await);
    carol.close().await;
    bob.emit_to_client("carol", "hello", "while you were out")
        .await?;
    let carol = client(&b, "carol").await;
    let mut ic = inbox(&carol).await;
    let ev = next_event(&mut ic).await;
    assert_eq!(ev.name(), "hello");
    quiet(&mut ic, "carol").await;
    Ok(())
}

async fn bob_members_of_lobby(bob: &Client) -> Result<Vec<herald_client::RoomMember>, Error> {
    bob.members("lobby").await
}

#[tokio::test]
async fn request_reply_timeout_and_across_a_reconnect() -> anyhow::Result<()> {
    let mut b = TestBroker::start().await;
    let alice = client(&b, "alice").await;
    let bob = client(&b, "bob").await;
    bob.on("ping", |ev: Event| {
        tokio::spawn(async move {
            let answer = [b"pong:".as_slice(), ev.payload()].concat();
            let _ = ev.reply(answer).await;
        });
    })
    .await?;

    let r = alice
        .request("bob", "ping", "1", Duration::from_secs(10))
        .await?;
    assert_eq!(&r[..], b"pong:1");

    let t = alice
        .request("nobody", "ping", "2", Duration::from_millis(300))
        .await;
    assert!(matches!(t, Err(Error::Timeout)), "{t:?}");

    // The responder is offline and the broker restarts while the request
    // waits: the request waits in its inbox, the reply in the requester's.
    let a2 = alice.clone();
    let waiting = tokio::spawn(async move {
        a2.request("late", "ping", "3", Duration::from_secs(15))
            .await
    });
    b.restart().await;
    let late = client(&b, "late").await;
    late.on("ping", |ev: Event| {
        tokio::spawn(async move {
            let _ = ev.reply("late pong").await;
        });
    })
    .await?;
    let r = within("the late reply", waiting).await??;
    assert_eq!(&r[..], b"late pong");
    Ok(())
}

#[tokio::test]
async fn limits_and_bad_arguments_have_clear_errors() -> anyhow::Result<()> {
    let b = TestBroker::start_with(|c| {
        c.max_rooms_per_connection = 2;
        c.max_members_per_room = 2;
        c.max_inbox_pending = 3;
    })
    .await;
    let a = client(&b, "a").await;
    a.join("r1").await?;
    a.join("r2").await?;
    a.join("r2").await?; // already a member: not counted again
    busy_naming(a.join("r3").await, "max_rooms_per_connection");

    let bb = client(&b, "b").await;
    bb.join("r1").await?;
    let c = client(&b, "c").await;
    busy_naming(c.join("r1").await, "max_members_per_room");

    let zed = client(&b, "zed").await;
    zed.join_durable("zroom").await?;
    zed.close().await;
    for i in 0..3 {
        a.emit_to_client("zed", "note", format!("{i}")).await?;
    }
    busy_naming(
        a.emit_to_client("zed", "note", "4").await,
        "max_inbox_pending",
    );
    // A room emit goes to the room's log, not the inbox: a full inbox
    // does not stop it.
    let r = a.emit(Target::room("zroom"), "note", "5").await?;
    assert_eq!((r.recipients, r.skipped), (1, 0));

    invalid(a.emit(Target::room("r1"), "join", "").await);
    invalid(a.emit(Target::room("a b"), "e", "").await);
    invalid(a.join("bad/room").await);
    invalid(a.join_durable("r1").await); // r1 is not durable
    let other = a.subscribe("_inbox.b").group("inbox").await;
    assert_eq!(
        other.err().and_then(|e| e.code()),
        Some(ErrorCode::Unauthorized)
    );
    Ok(())
}

#[tokio::test]
async fn rooms_are_rejoined_after_a_reconnect() -> anyhow::Result<()> {
    let mut b = TestBroker::start_with(|c| c.presence_grace = GRACE).await;
    let alice = client(&b, "alice").await;
    alice.join("lobby").await?;
    let mut ia = inbox(&alice).await;
    let mut events = alice.events();
    // A restart forgets every non-durable room.
    b.restart().await;
    common::wait_event(&mut events, |e| {
        matches!(e, herald_client::ConnectionEvent::Reconnected)
    })
    .await;
    // Requests keep their order on the connection: once this answers, the
    // rejoin sent on reconnect has been applied.
    let members = alice.members("lobby").await?;
    assert_eq!(members.len(), 1);
    let bob = client(&b, "bob").await;
    assert_eq!(
        bob.emit(Target::room("lobby"), "hi", "").await?.recipients,
        1
    );
    assert_eq!(next_event(&mut ia).await.name(), "hi");
    Ok(())
}

/// Emits made at once leave together (one `EmitBatch` frame): each caller
/// still gets its own outcome, a refused emit among them fails alone, and
/// the room hears the others in the order they were sent (`buffered`
/// polls them in order; see docs/rooms.md on `join_all`).
#[tokio::test]
async fn emits_made_at_once_each_get_their_own_outcome_in_order() -> anyhow::Result<()> {
    emits_in_flight(&TestBroker::start().await).await
}

/// The same against a broker whose frame limit is the smallest allowed
/// (4 KiB): the client's batches stay under it, and so do the room log's
/// merged batches the members are delivered.
#[tokio::test]
async fn emits_in_flight_fit_a_small_frame_limit() -> anyhow::Result<()> {
    emits_in_flight(&TestBroker::start_with(|c| c.max_frame_bytes = 4096).await).await
}

async fn emits_in_flight(b: &TestBroker) -> anyhow::Result<()> {
    const N: usize = 300;
    const BAD: usize = 150;
    let alice = client(b, "alice").await;
    alice.join("burst").await?;
    let bob = client(b, "bob").await;
    bob.join("burst").await?;
    let mut ib = inbox(&bob).await;
    let calls = (0..N).map(|i| {
        // "join" is reserved for presence: the broker refuses that one.
        let name = if i == BAD { "join" } else { "e" };
        // A 100-byte payload: 300 of them need several batches under 4 KiB.
        alice.emit(Target::room("burst"), name, format!("{i:0100}"))
    });
    let outcomes: Vec<_> = within(
        "every emit's outcome",
        futures::stream::iter(calls).buffered(N).collect::<Vec<_>>(),
    )
    .await;
    for (i, r) in outcomes.iter().enumerate() {
        match (i == BAD, r) {
            (false, Ok(receipt)) => assert_eq!(receipt.recipients, 2, "emit {i}"),
            (true, Err(e)) => assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}"),
            (_, r) => panic!("emit {i}: {r:?}"),
        }
    }
    for i in (0..N).filter(|i| *i != BAD) {
        let ev = next_event(&mut ib).await;
        assert_eq!(ev.name(), "e");
        assert_eq!(
            ev.payload(),
            format!("{i:0100}").as_bytes(),
            "in the order sent"
        );
    }
    quiet(&mut ib, "bob").await;
    Ok(())
}

/// An emit (or a reply) whose record, once the broker adds its headers,
/// would not fit a Deliver frame is refused (it could never be delivered);
/// one that fits is delivered.
#[tokio::test]
async fn an_event_too_big_to_deliver_is_refused() -> anyhow::Result<()> {
    let b = TestBroker::start_with(|c| c.max_frame_bytes = 4096).await;
    let alice = client(&b, "alice").await;
    alice.join("big").await?;
    let bob = client(&b, "bob").await;
    bob.join("big").await?;
    let mut ib = inbox(&bob).await;
    // The Emit frame itself fits 4 KiB; its record would not.
    let e = alice
        .broadcast("big", "e", vec![b'x'; 3950])
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}");
    assert!(e.to_string().contains("smaller payload"), "{e}");
    alice.broadcast("big", "e", vec![b'y'; 2000]).await?;
    let ev = next_event(&mut ib).await;
    assert_eq!(ev.payload().len(), 2000);
    // A reply too big to deliver is refused the same way; a smaller one
    // goes.
    let asking = {
        let alice = alice.clone();
        tokio::spawn(async move {
            alice
                .request("bob", "ping", "?", Duration::from_secs(20))
                .await
        })
    };
    let req = next_event(&mut ib).await;
    let e = req.reply(vec![b'z'; 3950]).await.expect_err("refused");
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}");
    req.reply("pong").await?;
    let answer = within("the reply", asking).await??;
    assert_eq!(&answer[..], b"pong");
    quiet(&mut ib, "bob").await;
    Ok(())
}
