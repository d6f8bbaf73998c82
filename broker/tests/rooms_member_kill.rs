//! One member client kept alive through a SIGKILL of the real broker, in
//! a durable room: what its application acked is never handed to it
//! again (docs/rooms.md, "the client hides those it already acked"). The
//! other SIGKILL tests of rooms (rooms_log.rs, rooms_positions.rs) come
//! back with new clients; this one keeps the same client process, whose
//! record of unconfirmed acks is what hides the events the restarted
//! broker sends again.

mod common;

use std::time::Duration;

use common::{Child, T};
use futures::StreamExt;
use herald_client::{Client, Inbox, Target};

/// Runs `f` within [`T`], failing the test on timeout.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(T, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

async fn inbox(c: &Client) -> Inbox {
    match c.inbox().await {
        Ok(i) => i,
        Err(e) => panic!("inbox: {e}"),
    }
}

/// Numbered events the emitter sends to the room, each payload its number.
const KILL_EVENTS: u32 = 2_000;
/// Emits the emitter keeps in flight (`buffered`: they leave in order).
const KILL_EMIT_WINDOW: usize = 32;
/// How many events the emitter may run ahead of what the member's app has
/// handled, so that the kill, made once the member has handled between a
/// fifth and a half of them, always finds the emitter with events to send.
const KILL_AHEAD: u32 = 200;
/// The whole run, broker starts included (not the build of the binary).
const KILL_DEADLINE: Duration = Duration::from_secs(90);
/// The room of the kill test.
const KILL_ROOM: &str = "sigkill";
/// The emitter's last event, after every numbered one is confirmed.
const SENTINEL: &str = "end";

/// Phases of the kill test, as seen by the member's app and the emitter.
const BEFORE_KILL: u8 = 0;
/// Set just before the SIGKILL.
const KILLED: u8 = 1;
/// Set once the restarted broker listens.
const RESTARTED: u8 = 2;

/// What the member's app was handed, in order.
#[derive(Debug, Clone)]
struct Handed {
    offset: u64,
    /// The event's number; `None` for the sentinel.
    number: Option<u32>,
    delivery_count: u32,
    /// The phase when the app was handed it.
    phase: u8,
    /// Whether its `ack()` had returned before the SIGKILL.
    acked_before_kill: bool,
}

/// One emit of the emitter.
#[derive(Debug, Clone)]
struct Emitted {
    number: u32,
    /// The phase when it was made.
    made: u8,
    /// The phase when its receipt came; `None` if it failed.
    confirmed: Option<u8>,
    /// Failed at first, emitted again (and confirmed) after the others.
    again: bool,
}

/// The member's application: handles each event (writes it down), acks
/// it, counts it; returns at the sentinel.
async fn member_app(
    mut inbox: Inbox,
    phase: std::sync::Arc<std::sync::atomic::AtomicU8>,
    handled: tokio::sync::watch::Sender<u32>,
) -> (Inbox, Vec<Handed>) {
    use std::sync::atomic::Ordering::SeqCst;
    let mut log = Vec::new();
    loop {
        let ev = match inbox.next().await {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => panic!("the member's inbox failed after {} events: {e}", log.len()),
            None => panic!("the member's inbox ended after {} events", log.len()),
        };
        if ev.is_presence() {
            ev.ack().await.expect("ack presence");
            continue;
        }
        let at = phase.load(SeqCst);
        let number = match ev.name() {
            SENTINEL => None,
            _ => Some(
                std::str::from_utf8(ev.payload())
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("payload {:?}", ev.payload())),
            ),
        };
        if let Err(e) = ev.ack().await {
            panic!("ack of offset {}: {e}", ev.message().offset());
        }
        log.push(Handed {
            offset: ev.message().offset(),
            number,
            delivery_count: ev.message().delivery_count(),
            phase: at,
            acked_before_kill: phase.load(SeqCst) == BEFORE_KILL,
        });
        handled.send_modify(|n| *n += 1);
        if number.is_none() {
            return (inbox, log);
        }
    }
}

/// Emits to the room until an attempt is confirmed (a few attempts).
async fn emit_until_confirmed(c: &Client, name: &str, payload: String) {
    for attempt in 1..=10 {
        match c.emit(Target::room(KILL_ROOM), name, payload.clone()).await {
            Ok(_) => return,
            Err(e) => eprintln!("emit {name} {payload:?}, attempt {attempt}: {e}"),
        }
    }
    panic!("emit {name} {payload:?} was never confirmed");
}

/// The emitter: [`KILL_EVENTS`] numbered events, [`KILL_EMIT_WINDOW`] in
/// flight, never more than [`KILL_AHEAD`] past what the member handled;
/// those that failed are emitted again; then the sentinel.
async fn emitter_app(
    c: Client,
    handled: tokio::sync::watch::Receiver<u32>,
    phase: std::sync::Arc<std::sync::atomic::AtomicU8>,
) -> Vec<Emitted> {
    use std::sync::atomic::Ordering::SeqCst;
    let made = futures::stream::iter(0..KILL_EVENTS).then(|i| {
        let mut h = handled.clone();
        async move {
            // Err: the member's app is gone; its task reports why.
            let _ = h.wait_for(|n| n + KILL_AHEAD >= i).await;
            i
        }
    });
    let mut sent: Vec<Emitted> = made
        .map(|i| {
            let made = phase.load(SeqCst);
            let (c, phase) = (c.clone(), phase.clone());
            async move {
                let r = c.emit(Target::room(KILL_ROOM), "n", i.to_string()).await;
                Emitted {
                    number: i,
                    made,
                    confirmed: r.ok().map(|_| phase.load(SeqCst)),
                    again: false,
                }
            }
        })
        .buffered(KILL_EMIT_WINDOW)
        .collect()
        .await;
    for e in sent.iter_mut().filter(|e| e.confirmed.is_none()) {
        emit_until_confirmed(&c, "n", e.number.to_string()).await;
        e.again = true;
        e.confirmed = Some(phase.load(SeqCst));
    }
    emit_until_confirmed(&c, SENTINEL, String::new()).await;
    sent
}

/// One client process kept alive through a SIGKILL of the broker, in a
/// durable room: its app, acking each event as it handles it, is never
/// handed an event it acked (docs/rooms.md: positions are persisted in
/// batches, so the restarted broker sends again what was acked after the
/// last saved position, and "the client hides those it already acked"),
/// gets every confirmed event, each record once, in the room's order. The
/// real `herald` binary, SIGKILLed while events flow and restarted on the
/// same port and data folder; the same member and emitter clients reconnect
/// by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_member_is_never_handed_an_acked_event_again_after_a_broker_sigkill() {
    let started = std::time::Instant::now();
    if tokio::time::timeout(KILL_DEADLINE, member_through_a_sigkill())
        .await
        .is_err()
    {
        panic!("the run took longer than {KILL_DEADLINE:?}");
    }
    eprintln!("run took {:?}", started.elapsed());
}

async fn member_through_a_sigkill() {
    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::sync::atomic::{AtomicU8, Ordering::SeqCst};
    use std::sync::Arc;

    use herald_client::ConnectionEvent;
    use rand::Rng;

    let t0 = std::time::Instant::now();
    // The real binary (fsync always, the default), restarted on the same
    // address and data folder after the SIGKILL; killed when dropped.
    let dir = tempfile::tempdir().expect("data folder");
    let broker = Child::spawn(dir.path(), &["--no-http"]);
    let addr = broker.addr.to_string();
    let connect = |id: &'static str| {
        Client::builder(addr.as_str())
            .client_id(id)
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(250))
            .connect()
    };
    let member = connect("member").await.expect("connect member");
    let mut member_events = member.events();
    member.join_durable(KILL_ROOM).await.expect("durable join");
    let inbox = inbox(&member).await;
    let emitter = connect("emitter").await.expect("connect emitter");

    let phase = Arc::new(AtomicU8::new(BEFORE_KILL));
    let (handled_tx, mut handled) = tokio::sync::watch::channel(0u32);
    let member_task = tokio::spawn(member_app(inbox, phase.clone(), handled_tx));
    let emitter_task = tokio::spawn(emitter_app(emitter.clone(), handled.clone(), phase.clone()));

    let kill_at = rand::thread_rng().gen_range(KILL_EVENTS / 5..KILL_EVENTS / 2);
    if handled.wait_for(|n| *n >= kill_at).await.is_err() {
        // The member's app ended: its panic says why.
        match member_task.await {
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            _ => panic!("the member's app ended before {kill_at} events"),
        }
    }
    // For the report: the member's position in the broker's memory.
    let floor_before_kill = emitter
        .list_groups(&format!("_room.{KILL_ROOM}"))
        .await
        .ok()
        .and_then(|gs| gs.into_iter().find(|g| g.name == "member"))
        .map(|g| g.ack_floor);
    phase.store(KILLED, SeqCst);
    let handled_at_kill = *handled.borrow();
    broker.kill();
    let killed = std::time::Instant::now();
    let _broker = Child::spawn_on(dir.path(), &addr, &["--no-http"]);
    phase.store(RESTARTED, SeqCst);
    let down = killed.elapsed();
    // Best effort, for the report: the member's position the restarted
    // broker read back from disk, unless the member's client reconnected
    // and acked again first.
    let recovered_floor = match connect("probe").await {
        Ok(probe) => {
            let floor = probe
                .list_groups(&format!("_room.{KILL_ROOM}"))
                .await
                .ok()
                .and_then(|gs| gs.into_iter().find(|g| g.name == "member"))
                .map(|g| g.ack_floor);
            probe.close().await;
            floor
        }
        Err(_) => None,
    };

    let sent = match emitter_task.await {
        Ok(s) => s,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let (mut inbox, mut handed) = match member_task.await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let (kill_after, done_after_kill) = (killed.duration_since(t0), killed.elapsed());
    // Closing flushes the acks; whatever the client still held for the app
    // comes out before the stream ends.
    member.close().await;
    let mut after_sentinel = 0;
    within("the member's inbox to end", async {
        while let Some(item) = inbox.next().await {
            if let Ok(ev) = item {
                if !ev.is_presence() {
                    after_sentinel += 1;
                    handed.push(Handed {
                        offset: ev.message().offset(),
                        number: std::str::from_utf8(ev.payload())
                            .ok()
                            .and_then(|s| s.parse().ok()),
                        delivery_count: ev.message().delivery_count(),
                        phase: RESTARTED,
                        acked_before_kill: false,
                    });
                }
            }
        }
    })
    .await;
    let mut connection = Vec::new();
    within("the member's connection events", async {
        // The client is closed: `Closed` is its last event.
        while let Some(ev) = member_events.next().await {
            let closed = ev == ConnectionEvent::Closed;
            connection.push(ev);
            if closed {
                break;
            }
        }
    })
    .await;
    let groups = emitter
        .list_groups(&format!("_room.{KILL_ROOM}"))
        .await
        .expect("list the room's groups");
    let group = groups
        .into_iter()
        .find(|g| g.name == "member")
        .expect("the member's group");
    emitter.close().await;
    // The restarted broker is killed, and its folder removed, when they
    // are dropped at the end (its log went to this test's stderr).

    // What the app was handed, checked against what was confirmed.
    let mut problems = Vec::new();
    for w in handed.windows(2) {
        if w[1].offset <= w[0].offset {
            problems.push(format!(
                "offset {} (delivery {}) handed after offset {}: {}",
                w[1].offset,
                w[1].delivery_count,
                w[0].offset,
                if w[1].offset == w[0].offset {
                    "twice in a row"
                } else {
                    "out of the room's order"
                }
            ));
        }
    }
    let mut by_offset: BTreeMap<u64, Vec<&Handed>> = BTreeMap::new();
    for h in &handed {
        by_offset.entry(h.offset).or_default().push(h);
    }
    let mut again_after_ack = 0;
    for (offset, hs) in &by_offset {
        if hs.len() > 1 {
            if hs[0].acked_before_kill {
                again_after_ack += 1;
            }
            problems.push(format!(
                "offset {offset} handed {} times: {hs:?}{}",
                hs.len(),
                if hs[0].acked_before_kill {
                    " (acked before the kill)"
                } else {
                    ""
                }
            ));
        }
    }
    let emitted: HashMap<u32, &Emitted> = sent.iter().map(|e| (e.number, e)).collect();
    let mut copies: BTreeMap<u32, usize> = BTreeMap::new();
    for h in &handed {
        if let Some(n) = h.number {
            *copies.entry(n).or_default() += 1;
        }
    }
    let missing: Vec<u32> = sent
        .iter()
        .filter(|e| e.confirmed.is_some() && !copies.contains_key(&e.number))
        .map(|e| e.number)
        .collect();
    if !missing.is_empty() {
        problems.push(format!("confirmed but never handed: {missing:?}"));
    }
    // A number may be in the room's log twice (at two offsets) only when
    // its emit was in flight across the kill: the client sends it again
    // after reconnecting (docs/rooms.md, at least once across a reconnect
    // of the sender).
    let mut resent = Vec::new(); // in order: `copies` is sorted
    for (n, k) in &copies {
        match emitted.get(n) {
            None => problems.push(format!("number {n} was never emitted")),
            Some(_) if *k == 1 => {}
            Some(e) if e.made <= KILLED && e.confirmed.is_some_and(|p| p >= KILLED) => {
                resent.push(*n);
            }
            Some(e) => problems.push(format!("number {n} handed {k} times; its emit: {e:?}")),
        }
    }
    // The emits leave in order and are sent again in order: the first
    // copies of the numbers are in the order emitted (but for those
    // emitted again after failing).
    let mut first_seen = HashSet::new();
    let firsts: Vec<u32> = handed
        .iter()
        .filter_map(|h| h.number)
        .filter(|n| first_seen.insert(*n) && !emitted.get(n).is_some_and(|e| e.again))
        .collect();
    if let Some(w) = firsts.windows(2).find(|w| w[1] <= w[0]) {
        problems.push(format!(
            "{} handed after {}: not in the order emitted",
            w[1], w[0]
        ));
    }
    let sentinels: Vec<&Handed> = handed.iter().filter(|h| h.number.is_none()).collect();
    match sentinels[..] {
        [s] => {
            if group.ack_floor <= s.offset {
                problems.push(format!(
                    "the broker has the member's ack floor at {}, not past the sentinel at {}: {group:?}",
                    group.ack_floor, s.offset
                ));
            }
        }
        _ => problems.push(format!("the sentinel handed {} times", sentinels.len())),
    }
    if after_sentinel > 0 {
        problems.push(format!("{after_sentinel} events handed after the sentinel"));
    }
    let reconnected = connection
        .iter()
        .skip_while(|e| !matches!(e, ConnectionEvent::Disconnected { .. }))
        .any(|e| *e == ConnectionEvent::Reconnected);
    if !reconnected {
        problems.push(format!(
            "the member's client did not reconnect: {connection:?}"
        ));
    }
    let confirmed_before_kill = sent
        .iter()
        .filter(|e| e.confirmed == Some(BEFORE_KILL))
        .count();
    if confirmed_before_kill >= KILL_EVENTS as usize {
        problems.push("the emitter was done before the kill".into());
    }
    let handed_before_kill = handed.iter().filter(|h| h.phase == BEFORE_KILL).count();
    let acked_before_kill: Vec<u64> = handed
        .iter()
        .filter(|h| h.acked_before_kill)
        .map(|h| h.offset)
        .collect();
    let max_acked = acked_before_kill.iter().max().copied();
    let redelivered = handed.iter().filter(|h| h.delivery_count > 1).count();
    let summary = format!(
        "killed {kill_after:?} after the start, at {handled_at_kill} handled (target {kill_at}); \
         broker down {down:?}; sentinel handled {done_after_kill:?} after the kill; \
         before the kill: {handed_before_kill} handed, {} acked (highest offset {max_acked:?}), \
         {confirmed_before_kill} emits confirmed; the broker's floor for the member just before \
         the kill {floor_before_kill:?}; restarted broker's floor for the member \
         (probe) {recovered_floor:?}; handed in all {} ({redelivered} with delivery count > 1); \
         numbers in the log twice (re-sent emits) {resent:?}; emits failed and made again {}; \
         group at the end {group:?}; member connection {connection:?}",
        acked_before_kill.len(),
        handed.len(),
        sent.iter().filter(|e| e.again).count(),
    );
    assert!(
        problems.is_empty(),
        "{} problem(s), {again_after_ack} offsets acked before the kill handed again:\n{}\n{summary}",
        problems.len(),
        problems.join("\n")
    );
    eprintln!("{summary}");
}
