//! A group set: the one actor task that hosts some groups of one topic
//! ([`Group`]: per-group state) and runs them, with one command channel,
//! one watch on the log, one timer and one place where their writes end.
//!
//! Each group of an ordinary topic has a set of its own ([`spawn`]): its
//! groups are independent consumers that may each keep a core busy, and
//! one's dead-letter append or full disk must not hold up the others. A
//! room's log has one set for all its groups ([`GroupSet`]): a room of a
//! thousand members is one task that wakes once per group commit and
//! dispatches the members that have credit, instead of a thousand tasks
//! (and channels) that each wake and read the same tail.
//!
//! Only groups that have something to do are dispatched after a wake: the
//! one a command was for, those whose timer fired or write ended, those the
//! memory budget admits again, and after the log grew every group with
//! members. Timers are a heap of (instant, group); a group keeps at most
//! its earliest instant in it ([`Group::scheduled`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use super::dispatch::{DeadLettered, Reads};
use super::persist::{Notify, Target, Written};
use super::state::{Ctx, Group};
use super::{Cmd, DoneReply, Envelope, GroupDefaults, GroupHandle, Origin, GROUP_QUEUE};
use crate::memory::{Level, MemoryBudget};
use crate::outbox::Out;
use crate::topic::Topic;

/// Commands taken from the channel in one go before dispatching.
const COMMAND_BATCH: usize = 1024;

/// What reaches a set's task besides commands. One channel for the three
/// kinds: tokio allocates a channel's first block of 32 slots when it is
/// made, and every room's log has a set however idle the room is (three
/// channels cost about 3.5 KiB more per room; docs/performance.md, "Idle
/// sessions: where the bytes are"). Unbounded, yet bounded: at most one
/// `Added` per group of the topic's table, one `Written` per group (one
/// write runs at a time), one `DeadLettered` per range a group holds.
pub(super) enum Event {
    /// A group added to the set ([`GroupSet::add`]).
    Added(u64, Box<Group>),
    /// A group's write ended (see [`Notify`]).
    Written(Written),
    /// A copy to the dead-letter topic ended (see `Group::dead_letter`);
    /// boxed, as it is rare and the largest.
    DeadLettered(Box<DeadLettered>),
}

/// The handle of a set hosting every group of one topic (a room's log);
/// the topic adds groups to it as they are first used.
pub struct GroupSet {
    tx: mpsc::Sender<Envelope>,
    /// Groups added are handed to the task here; cloned into each
    /// group's [`Notify`].
    events: mpsc::UnboundedSender<Event>,
    /// The next group's key; keys are never reused.
    next_key: u64,
    /// Cancelled when the task has ended.
    ended: CancellationToken,
}

impl GroupSet {
    /// Starts the task of a set for the groups of `topic`.
    pub fn spawn(topic: Arc<Topic>, defaults: GroupDefaults) -> GroupSet {
        start(topic, defaults, false)
    }

    /// Adds group `name` (its state written to `target`) to the set.
    pub fn add(
        &mut self,
        topic: &Topic,
        name: String,
        target: Target,
        defaults: &GroupDefaults,
        origin: Origin,
    ) -> GroupHandle {
        let key = self.next_key;
        self.next_key += 1;
        let (g, handle) = self.group(key, topic, name, target, defaults, origin);
        // A set that ended drops the group, which marks its handle stopped.
        let _ = self.events.send(Event::Added(key, Box::new(g)));
        handle
    }

    /// Whether its task has ended (the topic is closing): groups added now
    /// would be stopped at once.
    pub fn is_ended(&self) -> bool {
        self.ended.is_cancelled()
    }

    fn group(
        &self,
        key: u64,
        topic: &Topic,
        name: String,
        target: Target,
        defaults: &GroupDefaults,
        origin: Origin,
    ) -> (Group, GroupHandle) {
        let stopped = CancellationToken::new();
        let notify = Notify {
            tx: self.events.clone(),
            key,
        };
        let g = Group::new(
            topic,
            name,
            target,
            defaults,
            origin,
            notify,
            stopped.clone(),
        );
        let handle = GroupHandle {
            tx: self.tx.clone(),
            key,
            stopped,
        };
        (g, handle)
    }
}

/// Starts the task of a set of one: group `name` of `topic`, whose state
/// file is `path`. The task ends with the group.
pub fn spawn(
    topic: Arc<Topic>,
    name: String,
    path: PathBuf,
    defaults: GroupDefaults,
    origin: Origin,
) -> GroupHandle {
    let set = start(topic.clone(), defaults.clone(), true);
    let (g, handle) = set.group(0, &topic, name, Target::File(path), &defaults, origin);
    let _ = set.events.send(Event::Added(0, Box::new(g)));
    handle
}

/// Starts a set's task; `single`: a set of one, that ends with its group.
fn start(topic: Arc<Topic>, defaults: GroupDefaults, single: bool) -> GroupSet {
    let (tx, rx) = mpsc::channel(GROUP_QUEUE);
    let (events_tx, events) = mpsc::unbounded_channel();
    let ended = CancellationToken::new();
    let memory = topic
        .registry()
        .as_ref()
        .map_or_else(MemoryBudget::unlimited, |r| r.memory().clone());
    let cancel = topic.cancel.clone();
    let shell = Shell {
        cx: Ctx {
            topic,
            defaults,
            memory,
            events: events_tx.clone(),
        },
        groups: HashMap::new(),
        rx,
        events,
        timers: BinaryHeap::new(),
        touched: Vec::new(),
        memory_waiters: Vec::new(),
        memory_level: None,
        reads: Reads::new(!single),
        out: Vec::new(),
        single,
    };
    let guard = ended.clone().drop_guard();
    tokio::spawn(async move {
        shell.run(cancel).await;
        drop(guard);
    });
    GroupSet {
        tx,
        events: events_tx,
        next_key: 1,
        ended,
    }
}

/// The task's state.
struct Shell {
    cx: Ctx,
    /// Boxed: a hash table keeps room for more entries than it holds, and
    /// a group is about 500 bytes. Inline, a room of ten members had a
    /// table of 8 KiB; boxed, it is 16 bytes a slot plus the groups.
    groups: HashMap<u64, Box<Group>>,
    rx: mpsc::Receiver<Envelope>,
    events: mpsc::UnboundedReceiver<Event>,
    /// When groups must wake (redeliveries, ack timeouts, due writes).
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Groups to dispatch before waiting again (each once: [`Group::touched`]).
    touched: Vec<u64>,
    /// Groups that skipped a member for memory, woken when it frees up
    /// (each once: [`Group::memory_listed`]).
    memory_waiters: Vec<u64>,
    /// The most lenient level they wait for.
    memory_level: Option<Level>,
    /// Reads of the log shared among a room's groups (see [`Reads`]).
    reads: Reads,
    /// One member's deliveries of a round, handed to its connection at
    /// once; empty between uses (the allocation is kept).
    out: Vec<Out>,
    /// A set of one: the task ends with its group.
    single: bool,
}

impl Shell {
    async fn run(mut self, cancel: CancellationToken) {
        let mut watch = self.cx.topic.log.watch_next_offset();
        let mut has_members = false;
        loop {
            let timer = self.timers.peek().map(|Reverse((t, _))| *t);
            // A kept read nobody reads from is dropped by the round after.
            let held = self.reads.expiry();
            let memory_level = self.memory_level;
            let mut membership = false;
            tokio::select! {
                _ = cancel.cancelled() => break,
                env = self.rx.recv() => {
                    let Some(env) = env else { break };
                    membership |= self.command(env).await;
                    // Take whatever else is queued before dispatching once.
                    for _ in 0..COMMAND_BATCH {
                        match self.rx.try_recv() {
                            Ok(env) => membership |= self.command(env).await,
                            Err(_) => break,
                        }
                    }
                }
                Some(ev) = self.events.recv() => {
                    membership |= self.event(ev);
                }
                r = watch.changed(), if has_members => {
                    if r.is_err() { break }
                    self.touch_members();
                }
                _ = sleep_until(timer.map(tokio::time::Instant::from_std).unwrap_or_else(far_future)), if timer.is_some() => {
                    self.fire_timers();
                }
                _ = sleep_until(held.map(tokio::time::Instant::from_std).unwrap_or_else(far_future)), if held.is_some() => {}
                _ = self.cx.memory.recheck(memory_level.unwrap_or(Level::Delivery)), if memory_level.is_some() => {
                    self.memory_level = None;
                    for key in std::mem::take(&mut self.memory_waiters) {
                        if let Some(g) = self.groups.get_mut(&key) {
                            g.memory_listed = false;
                        }
                        self.touch(key);
                    }
                }
            }
            // The log may have grown while commands (a room's acks) kept
            // the task busy: its members hear of it in this round, not
            // after the next wake.
            if has_members && watch.has_changed().unwrap_or(false) {
                watch.borrow_and_update();
                self.touch_members();
            }
            self.dispatch();
            if membership {
                has_members = self.groups.values().any(|g| !g.members.is_empty());
                if self.single && self.groups.is_empty() {
                    // A set of one whose group was deleted.
                    break;
                }
            }
        }
        self.shut().await;
    }

    /// Runs one command. Returns whether members may have come or gone.
    async fn command(&mut self, env: Envelope) -> bool {
        let key = env.group;
        let mut membership = matches!(env.cmd, Cmd::Join(..) | Cmd::Leave(_) | Cmd::Delete(_));
        if !self.groups.contains_key(&key) {
            // Added just before its first command was sent: its `Added`
            // waits in the other channel.
            while let Ok(ev) = self.events.try_recv() {
                membership |= self.event(ev);
            }
        }
        // A deleted group's commands are dropped: their callers hear that
        // it is gone, as they did from a group's own task that had ended.
        let Some(g) = self.groups.get_mut(&key) else {
            return membership;
        };
        let delete = g.handle(&self.cx, env.cmd);
        self.touch(key);
        if let Some(reply) = delete {
            self.delete(key, reply);
        }
        membership
    }

    /// Takes one [`Event`]. Returns whether members may have come or gone.
    fn event(&mut self, ev: Event) -> bool {
        match ev {
            Event::Added(key, g) => {
                self.groups.insert(key, g);
                false
            }
            Event::Written((key, seq)) => self.on_written(key, seq),
            Event::DeadLettered(d) => {
                if let Some(g) = self.groups.get_mut(&d.key) {
                    g.on_dead_lettered(d.first, d.failed);
                }
                self.touch(d.key);
                false
            }
        }
    }

    /// Group `key`'s write number `seq` ended.
    fn on_written(&mut self, key: u64, seq: u64) -> bool {
        let Some(g) = self.groups.get_mut(&key) else {
            return false;
        };
        let delete = g.on_written(&self.cx, seq);
        self.touch(key);
        if let Some(reply) = delete {
            self.delete(key, reply);
        }
        true
    }

    /// Removes group `key` from the set; its file is removed on a task of
    /// its own, which answers `reply` and then drops the group.
    fn delete(&mut self, key: u64, reply: DoneReply) {
        if let Some(g) = self.groups.remove(&key) {
            tokio::spawn(g.remove(reply));
        }
    }

    fn touch(&mut self, key: u64) {
        if let Some(g) = self.groups.get_mut(&key) {
            if !g.touched {
                g.touched = true;
                self.touched.push(key);
            }
        }
    }

    /// The log grew: every group with members has something to deliver.
    fn touch_members(&mut self) {
        for (key, g) in self.groups.iter_mut() {
            if !g.members.is_empty() && !g.touched {
                g.touched = true;
                self.touched.push(*key);
            }
        }
    }

    /// Wakes the groups whose instant has come.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, key))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(g) = self.groups.get_mut(&key) else {
                continue;
            };
            // A later instant left behind by an earlier one is stale.
            if g.scheduled == Some(at) {
                g.scheduled = None;
                g.expire(&self.cx);
                self.touch(key);
            }
        }
    }

    /// Dispatches the touched groups, starts their due writes and
    /// schedules their next wake.
    fn dispatch(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        for &key in &touched {
            let Some(g) = self.groups.get_mut(&key) else {
                continue;
            };
            g.touched = false;
            if g.is_creating() {
                // No member yet; its first write is its own.
                continue;
            }
            g.dispatch(&self.cx, &mut self.reads, &mut self.out);
            g.maybe_persist();
            g.report_floor(&self.cx);
            if let Some(level) = g.memory_wait {
                if !g.memory_listed {
                    g.memory_listed = true;
                    self.memory_waiters.push(key);
                }
                if self.memory_level != Some(Level::Delivery) {
                    self.memory_level = Some(level);
                }
            }
            if let Some(at) = g.next_wake(Instant::now()) {
                if g.scheduled.is_none_or(|s| at < s) {
                    g.scheduled = Some(at);
                    self.timers.push(Reverse((at, key)));
                }
            }
        }
        self.reads.end_round(Instant::now());
        // Keep the allocation for the next round.
        touched.clear();
        self.touched = touched;
    }

    /// The set ends (shutdown, topic deleted, or its one group deleted):
    /// every group saves a last time, all at once, so that their writes
    /// share the syncer's rounds.
    async fn shut(&mut self) {
        // Writes and copies that ended since are not heard of: each group
        // waits for its own below.
        while let Ok(ev) = self.events.try_recv() {
            if let Event::Added(k, g) = ev {
                self.groups.insert(k, g);
            }
        }
        let groups = std::mem::take(&mut self.groups);
        futures::future::join_all(groups.into_values().map(|g| g.shut())).await;
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}
