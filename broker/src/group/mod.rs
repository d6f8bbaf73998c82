//! Consumer groups: durable, named cursors over a topic, whose members share
//! the messages (competing consumers) and acknowledge them.
//!
//! Each group is one actor task that owns its [`AckTracker`], its members
//! and its persisted state; sessions talk to it through a bounded channel.
//! No lock is shared with anyone.

pub mod acks;
mod dlq;
mod persist;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_protocol::{AckKind, Batch, GroupInfo, StartPosition};
use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use crate::memory::{Level, MemoryBudget};
use crate::outbox::Outbox;
use crate::topic::{position, Topic};
use crate::BrokerError;
use acks::{AckTracker, MemberId, Released};
use persist::Persister;
use store::StoredGroup;

/// Commands queued for a group actor before senders wait.
const GROUP_QUEUE: usize = 4096;
/// Most bytes read from the log for one delivery round to one member.
const MAX_READ_BYTES: usize = 1 << 20;

/// Group settings the broker applies unless a subscription says otherwise.
#[derive(Debug, Clone)]
pub struct GroupDefaults {
    pub ack_timeout: Duration,
    pub max_deliveries: u32,
    pub backoff: Vec<Duration>,
    pub dlq_suffix: String,
}

impl Default for GroupDefaults {
    fn default() -> Self {
        GroupDefaults {
            ack_timeout: Duration::from_secs(30),
            max_deliveries: 10,
            backoff: vec![Duration::ZERO],
            dlq_suffix: ".dlq".into(),
        }
    }
}

/// A subscription joining a group.
pub struct Join {
    pub member: MemberId,
    pub subscription_id: u64,
    /// The Subscribe's request id: the actor sends SubscribeOk itself,
    /// through the push queue, so it precedes the first delivery.
    pub request_id: u64,
    pub client_id: String,
    pub outbox: Outbox,
    pub start: StartPosition,
    pub prefetch_messages: u32,
    pub prefetch_bytes: u32,
    pub ack_timeout: Option<Duration>,
    pub max_deliveries: Option<u32>,
}

enum Cmd {
    Join(Box<Join>, oneshot::Sender<Result<u64, BrokerError>>),
    Leave(MemberId),
    Ack {
        member: MemberId,
        kind: AckKind,
        ranges: Vec<(u64, u64)>,
        done: Option<oneshot::Sender<Result<(), BrokerError>>>,
    },
    Info(oneshot::Sender<Option<GroupInfo>>),
    Reset(StartPosition, oneshot::Sender<Result<(), BrokerError>>),
    /// Create or move the group to an offset (clamped to the log); see
    /// [`GroupHandle::place`].
    Place(u64, oneshot::Sender<Result<u64, BrokerError>>),
    /// Remove the group: see [`GroupHandle::delete`].
    Delete(oneshot::Sender<Result<(), BrokerError>>),
}

/// Where a group actor's state comes from.
pub enum Origin {
    /// Its state file, loaded.
    Loaded(StoredGroup),
    /// No state file: the group exists once its first member joined and
    /// that state was written.
    New,
    /// Replacing a damaged state file that was set aside: the group exists
    /// and is about to be reset.
    Replacing,
}

/// Handle to a group actor.
#[derive(Clone)]
pub struct GroupHandle {
    tx: mpsc::Sender<Cmd>,
    stopped: CancellationToken,
}

fn gone() -> BrokerError {
    BrokerError::ShuttingDown
}

impl GroupHandle {
    /// Adds a member; returns the offset its deliveries start from.
    pub async fn join(&self, j: Join) -> Result<u64, BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Join(Box::new(j), tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Removes a member; what it held is redelivered to the others.
    pub async fn leave(&self, member: MemberId) {
        let _ = self.tx.send(Cmd::Leave(member)).await;
    }

    /// Queues an ack-like operation. The returned receiver (with `wait`)
    /// resolves once the new state is persisted under the topic's
    /// durability policy. Queuing happens before this returns, so a later
    /// command from the same session (an Unsubscribe) cannot overtake it.
    pub async fn ack(
        &self,
        member: MemberId,
        kind: AckKind,
        ranges: Vec<(u64, u64)>,
        wait: bool,
    ) -> Result<Option<oneshot::Receiver<Result<(), BrokerError>>>, BrokerError> {
        let (tx, rx) = oneshot::channel();
        let done = if wait { Some(tx) } else { None };
        self.tx
            .send(Cmd::Ack {
                member,
                kind,
                ranges,
                done,
            })
            .await
            .map_err(|_| gone())?;
        Ok(wait.then_some(rx))
    }

    /// The group's figures; `None` for a group that does not exist (an
    /// actor whose first member's join failed).
    pub async fn info(&self) -> Result<Option<GroupInfo>, BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Info(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Moves the group's position; refused while it has members. Returns
    /// once the new position is on disk.
    ///
    /// # Errors
    /// `UnknownGroup` for a group that does not exist, `GroupActive`,
    /// `InvalidArgument` for a position out of range (or `Resume`), and the
    /// write's error.
    pub async fn reset(&self, to: StartPosition) -> Result<(), BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Reset(to, tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Puts the group at `offset` (clamped to the log's first and next
    /// offsets), creating it if it has no state yet, and resolves with the
    /// offset once that is on disk. Rooms use it to start a new member at
    /// the room's end (or a little before, for history).
    ///
    /// # Errors
    /// `GroupActive` while it has members; a failed write.
    pub async fn place(&self, offset: u64) -> Result<u64, BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Place(offset, tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Removes the group: its actor ends without saving, its state file is
    /// deleted, its members get nothing more. Rooms use it when a member
    /// leaves, so that joining again starts afresh.
    ///
    /// # Errors
    /// Removing the file failed.
    pub async fn delete(&self) -> Result<(), BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Delete(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.is_cancelled()
    }

    /// Resolves once the actor has persisted its state and ended.
    pub async fn stopped(&self) {
        self.stopped.cancelled().await
    }
}

struct Member {
    id: MemberId,
    sub: u64,
    client_id: String,
    outbox: Outbox,
    prefetch_messages: u32,
    prefetch_bytes: u32,
    out_messages: u32,
    out_bytes: u32,
    ack_timeout: Duration,
    /// Told that a read failed (SubscriptionError): gets nothing more, and
    /// stays a member until its client leaves, so its acks still count.
    failed: bool,
}

impl Member {
    fn credit(&self) -> u32 {
        if self.out_bytes >= self.prefetch_bytes && self.out_messages > 0 {
            return 0;
        }
        self.prefetch_messages.saturating_sub(self.out_messages)
    }
    fn release(&mut self, r: Released) {
        self.out_messages = self.out_messages.saturating_sub(r.messages);
        self.out_bytes = self.out_bytes.saturating_sub(r.bytes);
    }
}

struct Group {
    name: String,
    topic: Arc<Topic>,
    tracker: AckTracker,
    /// Whether the group exists: its state was loaded, or written once. A
    /// new group takes its first member's start position, and is written
    /// before that member gets anything.
    known: bool,
    members: Vec<Member>,
    next_member: usize,
    defaults: GroupDefaults,
    max_deliveries: u32,
    persist: Persister,
    /// The broker's memory budget: members are skipped while it is spent.
    memory: Arc<MemoryBudget>,
    /// The level a member with credit was skipped at, for memory, in the
    /// last dispatch (the most lenient one if several): the actor waits
    /// until it is admitted again.
    memory_wait: Option<Level>,
    /// Set by a delete: the actor ends without saving.
    deleted: Option<oneshot::Sender<Result<(), BrokerError>>>,
}

/// Starts the actor of group `name`, whose state file is `path`.
pub fn spawn(
    topic: Arc<Topic>,
    name: String,
    path: PathBuf,
    defaults: GroupDefaults,
    origin: Origin,
) -> GroupHandle {
    let now = Instant::now();
    let first = topic.log.first_offset();
    let (tracker, known, max_deliveries) = match origin {
        Origin::Loaded(s) => (
            AckTracker::restore(&s.snapshot, now),
            true,
            if s.max_deliveries > 0 {
                s.max_deliveries
            } else {
                defaults.max_deliveries
            },
        ),
        Origin::New => (AckTracker::new(first), false, defaults.max_deliveries),
        Origin::Replacing => (AckTracker::new(first), true, defaults.max_deliveries),
    };
    let durable = matches!(
        topic.log.config().fsync,
        herald_protocol::FsyncPolicy::Always
    );
    let (tx, rx) = mpsc::channel(GROUP_QUEUE);
    let stopped = CancellationToken::new();
    let cancel = topic.cancel.clone();
    let registry = topic.registry();
    let memory = registry
        .as_ref()
        .map_or_else(MemoryBudget::unlimited, |r| r.memory().clone());
    let syncer = registry.and_then(|r| r.syncer().cloned());
    let g = Group {
        persist: Persister::new(name.clone(), path, durable, syncer),
        name,
        topic,
        tracker,
        known,
        members: Vec::new(),
        next_member: 0,
        defaults,
        max_deliveries,
        memory,
        memory_wait: None,
        deleted: None,
    };
    let guard = stopped.clone().drop_guard();
    tokio::spawn(async move {
        g.run(rx, cancel).await;
        drop(guard);
    });
    GroupHandle { tx, stopped }
}

impl Group {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>, cancel: CancellationToken) {
        let mut watch = self.topic.log.watch_next_offset();
        loop {
            let timer = self.tracker.next_timer(Instant::now());
            let persist_due = self.persist.due();
            let has_members = !self.members.is_empty();
            tokio::select! {
                _ = cancel.cancelled() => break,
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.handle(cmd).await;
                    // Take whatever else is queued before dispatching once.
                    for _ in 0..1024 {
                        match rx.try_recv() {
                            Ok(c) => self.handle(c).await,
                            Err(_) => break,
                        }
                    }
                }
                r = watch.changed(), if has_members => {
                    if r.is_err() { break }
                }
                _ = sleep_until(timer.map(tokio::time::Instant::from_std).unwrap_or_else(far_future)), if timer.is_some() => {
                    self.expire();
                }
                _ = self.memory.recheck(self.memory_wait.unwrap_or(Level::Delivery)), if self.memory_wait.is_some() => {}
                _ = sleep_until(persist_due.map(tokio::time::Instant::from_std).unwrap_or_else(far_future)), if persist_due.is_some() => {}
                r = self.persist.finished(), if self.persist.is_running() => {
                    self.persist.on_finished(r);
                }
            }
            if self.deleted.is_some() {
                break;
            }
            self.dispatch().await;
            let tracker = &self.tracker;
            let max_deliveries = self.max_deliveries;
            self.persist.maybe_start(|| stored(tracker, max_deliveries));
        }
        if let Some(reply) = self.deleted.take() {
            let _ = reply.send(self.persist.remove().await.map_err(Into::into));
            return;
        }
        // Final save on the way out (shutdown or topic deletion). A group
        // that never came to exist leaves no file behind.
        if self.known {
            let state = self.stored();
            self.persist.close(state).await;
        }
    }

    fn stored(&self) -> StoredGroup {
        stored(&self.tracker, self.max_deliveries)
    }

    fn member_mut(&mut self, id: MemberId) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    async fn handle(&mut self, cmd: Cmd) {
        let now = Instant::now();
        match cmd {
            Cmd::Join(j, reply) => {
                let r = self.join(*j).await;
                let _ = reply.send(r);
            }
            Cmd::Leave(id) => {
                if let Some(i) = self.members.iter().position(|m| m.id == id) {
                    self.members.remove(i);
                    self.tracker.remove_member(id, now);
                }
            }
            Cmd::Ack {
                member,
                kind,
                ranges,
                done,
            } => {
                let timeout = self
                    .member_mut(member)
                    .map(|m| m.ack_timeout)
                    .unwrap_or(self.defaults.ack_timeout);
                for (holder, rel) in self.tracker.apply(member, kind, &ranges, now, timeout) {
                    if let Some(m) = self.member_mut(holder) {
                        m.release(rel);
                    }
                }
                if !matches!(kind, AckKind::Extend) {
                    self.persist.mark_dirty();
                }
                if let Some(d) = done {
                    self.persist.wait(d);
                }
            }
            Cmd::Info(reply) => {
                let _ = reply.send(self.info());
            }
            Cmd::Place(offset, reply) => {
                if !self.members.is_empty() {
                    let _ = reply.send(Err(BrokerError::GroupActive(self.name.clone())));
                    return;
                }
                let log = &self.topic.log;
                let o = offset.clamp(log.first_offset(), log.next_offset());
                self.tracker.reset(o);
                if self.known {
                    self.persist.mark_dirty();
                    let (tx, rx) = oneshot::channel();
                    self.persist.wait(tx);
                    tokio::spawn(async move {
                        let r = rx.await.unwrap_or(Err(BrokerError::ShuttingDown));
                        let _ = reply.send(r.map(|_| o));
                    });
                } else {
                    let r = self.persist.save_now(self.stored()).await;
                    if r.is_ok() {
                        self.known = true;
                    }
                    let _ = reply.send(r.map(|_| o).map_err(Into::into));
                }
            }
            Cmd::Delete(reply) => {
                self.members.clear();
                self.deleted = Some(reply);
            }
            Cmd::Reset(to, reply) => match self.reset(to) {
                // Answered once the new position is on disk.
                Ok(()) => self.persist.wait(reply),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
        }
    }

    fn info(&self) -> Option<GroupInfo> {
        if !self.known && self.members.is_empty() {
            return None;
        }
        let end = self.topic.log.next_offset();
        Some(GroupInfo {
            name: self.name.clone(),
            ack_floor: self.tracker.floor(),
            lag: self.tracker.lag(end),
            in_flight: self.tracker.in_flight(),
            redelivered: self.tracker.redelivered,
            dead_lettered: self.tracker.dead_lettered,
            members: self.members.iter().map(|m| m.client_id.clone()).collect(),
            damaged: None,
        })
    }

    fn reset(&mut self, to: StartPosition) -> Result<(), BrokerError> {
        if !self.known {
            return Err(BrokerError::UnknownGroup {
                topic: self.topic.name.clone(),
                group: self.name.clone(),
            });
        }
        if !self.members.is_empty() {
            return Err(BrokerError::GroupActive(self.name.clone()));
        }
        let o = position::resolve(&self.topic.log, to)?;
        self.tracker.reset(o);
        Ok(())
    }

    async fn join(&mut self, j: Join) -> Result<u64, BrokerError> {
        if self.members.iter().any(|m| m.id == j.member) {
            return Err(BrokerError::InvalidArgument("already a member".into()));
        }
        // A new group starts where its first member asks (Resume = earliest);
        // an idle group with an explicit start is repositioned; a group with
        // members keeps its position.
        let explicit = !matches!(j.start, StartPosition::Resume);
        if self.members.is_empty() && (!self.known || explicit) {
            let o = match j.start {
                StartPosition::Resume => self.topic.log.first_offset(),
                s => position::resolve(&self.topic.log, s)?,
            };
            if !self.known || o != self.tracker.floor() {
                self.tracker.reset(o);
            }
            if self.known {
                self.persist.mark_dirty();
            } else {
                // The group exists on disk before it delivers anything, so
                // a restart cannot forget it (and its acks) later.
                if let Err(e) = self.persist.save_now(self.stored()).await {
                    tracing::warn!(group = %self.name, error = %e, "a new group's state cannot be written; its first member is refused");
                    return Err(e.into());
                }
                self.known = true;
            }
        }
        if let Some(m) = j.max_deliveries {
            self.max_deliveries = m;
        }
        let ok = herald_protocol::Message::SubscribeOk(herald_protocol::SubscribeOk {
            subscription_id: j.subscription_id,
            start_offset: self.tracker.floor(),
        });
        let mut b = bytes::BytesMut::new();
        ok.encode(j.request_id, &mut b);
        j.outbox.push(crate::outbox::Out::Frame(b.freeze()));
        self.members.push(Member {
            id: j.member,
            sub: j.subscription_id,
            client_id: j.client_id,
            outbox: j.outbox,
            prefetch_messages: j.prefetch_messages.max(1),
            prefetch_bytes: j.prefetch_bytes.max(1),
            out_messages: 0,
            out_bytes: 0,
            ack_timeout: j.ack_timeout.unwrap_or(self.defaults.ack_timeout),
            failed: false,
        });
        Ok(self.tracker.floor())
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let list = &self.defaults.backoff;
        let backoff = |d: u32| backoff_for(list, d);
        for (id, rel) in self.tracker.expire(now, &backoff) {
            if let Some(m) = self.member_mut(id) {
                m.release(rel);
            }
        }
    }

    /// Picks the next member (round robin) that has credit and a live
    /// connection.
    /// Most bytes read for one member in one round: the memory budget's
    /// per-connection allowance, so that a thousand members reading at
    /// once stay within the budget.
    fn read_limit(&self) -> usize {
        MAX_READ_BYTES.min(self.memory.allowance())
    }

    /// Members whose connection is behind while the memory budget is
    /// nearly spent are skipped (see [`crate::memory`]).
    fn pick_member(&mut self) -> Option<usize> {
        let n = self.members.len();
        for k in 0..n {
            let i = (self.next_member + k) % n;
            let m = &self.members[i];
            if m.credit() > 0 && !m.failed && !m.outbox.is_closed() {
                let level = self.memory.delivery_level(m.outbox.queued_bytes());
                if !self.memory.admits(level) {
                    if self.memory_wait != Some(Level::Delivery) {
                        self.memory_wait = Some(level);
                    }
                    continue;
                }
                self.next_member = (i + 1) % n;
                return Some(i);
            }
        }
        None
    }

    /// Offsets `first..=last` were deleted by retention before the group
    /// finished them: logged, and every member is told (a `Skipped` push),
    /// so that the loss is loud rather than a silent jump.
    fn tell_skipped(&self, first: u64, last: u64) {
        tracing::warn!(
            topic = %self.topic.name,
            group = %self.name,
            first,
            last,
            "offsets deleted by retention before the group read them"
        );
        for m in &self.members {
            let msg = herald_protocol::Message::Skipped(herald_protocol::Skipped {
                subscription_id: m.sub,
                first,
                last,
            });
            let mut b = bytes::BytesMut::new();
            msg.encode(0, &mut b);
            m.outbox.push(crate::outbox::Out::Frame(b.freeze()));
        }
    }

    /// Hands out what is due and what is new, as far as credit goes.
    async fn dispatch(&mut self) {
        self.memory_wait = None;
        if self.members.is_empty() {
            return;
        }
        let log = self.topic.log.clone();
        let first = log.first_offset();
        if self.tracker.next_fresh() < first {
            self.tell_skipped(self.tracker.next_fresh(), first - 1);
            self.tracker.skip_to(first);
        }
        let now = Instant::now();
        while let Some(mi) = self.pick_member() {
            let credit = self.members[mi].credit() as u64;
            if let Some(r) = self.tracker.take_ready(now, credit) {
                if r.deliveries >= self.max_deliveries {
                    self.dead_letter(r.first, r.last, r.deliveries).await;
                    continue;
                }
                let batch = match log.read(r.first, 1, 1) {
                    Ok(v) => v.into_iter().next(),
                    Err(e) => {
                        self.tracker.untake(r.first, r.last, r.deliveries, now);
                        self.fail_members(&e);
                        return;
                    }
                };
                let Some(b) = batch else {
                    // Gone to retention: nothing left to deliver.
                    self.tell_skipped(r.first, r.last);
                    self.tracker.mark_dead_lettered(r.first, r.last);
                    continue;
                };
                if b.base_offset() > r.first {
                    // The head of the range was deleted by retention.
                    let cut = (b.base_offset() - 1).min(r.last);
                    self.tell_skipped(r.first, cut);
                    self.tracker.mark_dead_lettered(r.first, cut);
                    if cut < r.last {
                        self.tracker.untake(cut + 1, r.last, r.deliveries, now);
                    }
                    continue;
                }
                let last = r.last.min(b.last_offset());
                if last < r.last {
                    self.tracker.untake(last + 1, r.last, r.deliveries, now);
                }
                self.send(mi, r.first, last, r.deliveries + 1, b, now);
                continue;
            }
            let fresh = self.tracker.next_fresh();
            if fresh >= log.next_offset() {
                break;
            }
            let m = &self.members[mi];
            let budget =
                (m.prefetch_bytes.saturating_sub(m.out_bytes) as usize).clamp(1, self.read_limit());
            let batches = match log.read(fresh, budget, credit as u32) {
                Ok(v) => v,
                Err(e) => {
                    self.fail_members(&e);
                    return;
                }
            };
            if batches.is_empty() {
                break;
            }
            for b in batches {
                loop {
                    let credit = self.members[mi].credit() as u64;
                    let from = self.tracker.next_fresh().max(b.base_offset());
                    if credit == 0 || from > b.last_offset() {
                        break;
                    }
                    // Offsets acked before they were (re)delivered are skipped.
                    if self.tracker.skip_done_ahead(from) {
                        self.persist.mark_dirty();
                        continue;
                    }
                    let mut last = b.last_offset().min(from + credit - 1);
                    if let Some(next_acked) = self.tracker.next_done_ahead(from) {
                        last = last.min(next_acked - 1);
                    }
                    self.send(mi, from, last, 1, b.clone(), now);
                }
            }
        }
    }

    /// A read the group needs failed: every member would hit it next, so
    /// each is told now (SubscriptionError) and gets nothing more; the
    /// group's position stays where it is.
    fn fail_members(&mut self, e: &crate::storage::StorageError) {
        crate::subscription::report_read_error(&self.topic, e);
        for m in self.members.iter_mut().filter(|m| !m.failed) {
            tracing::warn!(group = %self.name, topic = %self.topic.name, client = %m.client_id, "ending a group subscription: the group's next records cannot be read");
            crate::subscription::push_read_error(&m.outbox, m.sub, &self.topic.name, e);
            m.failed = true;
        }
    }

    fn send(&mut self, mi: usize, first: u64, last: u64, delivery: u32, b: Batch, now: Instant) {
        let m = &mut self.members[mi];
        let bytes = b.len_bytes() as u32;
        m.out_messages += (last - first + 1) as u32;
        m.out_bytes = m.out_bytes.saturating_add(bytes);
        let deadline = now + m.ack_timeout;
        let (id, sub) = (m.id, m.sub);
        m.outbox.deliver(sub, first, last, delivery, b.into_bytes());
        self.topic.record_delivered(last - first + 1);
        self.tracker
            .deliver(first, last, id, deadline, delivery, bytes);
    }

    /// Moves offsets that were delivered too often to the dead-letter topic.
    async fn dead_letter(&mut self, first: u64, last: u64, deliveries: u32) {
        match dlq::forward(
            &self.topic,
            &self.defaults.dlq_suffix,
            &self.name,
            first,
            last,
            deliveries,
        )
        .await
        {
            Ok(()) => {
                self.tracker.mark_dead_lettered(first, last);
                self.persist.mark_dirty();
            }
            Err(e) => {
                tracing::error!(group = %self.name, error = %e, "dead-lettering failed; will retry");
                let retry = Instant::now() + Duration::from_secs(1);
                self.tracker.untake(first, last, deliveries, retry);
            }
        }
    }
}

/// The delay before redelivering after delivery number `delivery` timed
/// out; the list's last entry repeats.
fn backoff_for(list: &[Duration], delivery: u32) -> Duration {
    match list.len() {
        0 => Duration::ZERO,
        n => list[(delivery.saturating_sub(1) as usize).min(n - 1)],
    }
}

fn stored(tracker: &AckTracker, max_deliveries: u32) -> StoredGroup {
    StoredGroup {
        snapshot: tracker.snapshot(),
        max_deliveries,
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}
