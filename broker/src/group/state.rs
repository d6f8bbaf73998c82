//! One group's state and its answers to commands: its members, its
//! [`AckTracker`], its [`Persister`]. It is owned by the set that hosts it
//! ([`super::set`]), which runs its commands, its dispatch ([`super::dispatch`])
//! and its timers; nothing here waits for the disk, so that one slow group
//! does not hold up the others of its set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_protocol::{AckKind, GroupInfo, StartPosition};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::acks::{AckTracker, MemberId, Released};
use super::persist::{Notify, Persister, Target, Write};
use super::set::Event;
use super::store::StoredGroup;
use super::{stored, Cmd, DoneReply, GroupDefaults, Join, JoinReply, Origin};
use crate::memory::{Level, MemoryBudget};
use crate::outbox::Outbox;
use crate::topic::{position, Topic};
use crate::BrokerError;

/// What every group of one set shares: they read the same topic with the
/// same defaults under the same memory budget.
pub(super) struct Ctx {
    pub topic: Arc<Topic>,
    pub defaults: GroupDefaults,
    /// The broker's memory budget: members are skipped while it is spent.
    pub memory: Arc<MemoryBudget>,
    /// Where copies to the dead-letter topic, which run beside the set,
    /// say that they ended (`Event::DeadLettered`). Each range is copied
    /// at most once at a time.
    pub events: mpsc::UnboundedSender<Event>,
}

pub(super) struct Member {
    pub id: MemberId,
    pub sub: u64,
    pub client_id: String,
    pub outbox: Outbox,
    pub prefetch_messages: u32,
    pub prefetch_bytes: u32,
    pub out_messages: u32,
    pub out_bytes: u32,
    pub ack_timeout: Duration,
    /// Told that a read failed (SubscriptionError): gets nothing more, and
    /// stays a member until its client leaves, so its acks still count.
    pub failed: bool,
}

impl Member {
    pub fn credit(&self) -> u32 {
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

/// The command that creates a group, waiting for its first write.
enum Creation {
    Join(Box<Join>, JoinReply),
    Place(u64, JoinReply),
}

/// A group being created: its first write runs (or waits for a write that
/// runs), and the commands that come meanwhile wait, in order, so that
/// they see the group as the creation leaves it.
struct Creating {
    op: Creation,
    /// The creation's write; `None` while an earlier write of the same
    /// file runs.
    write: Option<Write>,
    /// Bounded in practice: no member can send an ack before its group
    /// exists, so these are the few commands of a join racing another.
    queued: Vec<Cmd>,
}

pub(super) struct Group {
    /// The group's key in its set.
    pub key: u64,
    pub name: String,
    pub tracker: AckTracker,
    /// Whether the group exists: its state was loaded, or written once. A
    /// new group takes its first member's start position, and is written
    /// before that member gets anything.
    pub known: bool,
    /// The floor last told to the cluster (a replicated topic's group,
    /// see `cluster::positions`), or learnt from it.
    reported: u64,
    pub members: Vec<Member>,
    pub next_member: usize,
    pub max_deliveries: u32,
    pub persist: Persister,
    /// The level a member with credit was skipped at, for memory, in the
    /// last dispatch (the most lenient one if several): the set wakes the
    /// group when it is admitted again.
    pub memory_wait: Option<Level>,
    creating: Option<Box<Creating>>,
    /// Queued in its set's list of groups to dispatch.
    pub touched: bool,
    /// In its set's list of groups waiting for memory.
    pub memory_listed: bool,
    /// The instant its set's timer heap holds for it (the earliest, if
    /// several): a later one need not be pushed.
    pub scheduled: Option<Instant>,
    /// A copy to the dead-letter topic failed and none has worked since:
    /// the failure was logged once, and is not again until one works.
    pub dead_letter_failing: bool,
    /// Cancels the group's [`super::GroupHandle::stopped`] when the group
    /// is dropped, whoever drops it.
    _stopped: DropGuard,
}

impl Group {
    pub fn new(
        topic: &Topic,
        name: String,
        target: Target,
        defaults: &GroupDefaults,
        origin: Origin,
        notify: Notify,
        stopped: CancellationToken,
    ) -> Group {
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
        let syncer = topic.registry().and_then(|r| r.syncer().cloned());
        let reported = tracker.floor();
        Group {
            key: notify.key,
            persist: Persister::new(name.clone(), target, durable, syncer, Some(notify))
                .with_interval(defaults.persist_interval),
            name,
            tracker,
            reported,
            known,
            members: Vec::new(),
            next_member: 0,
            max_deliveries,
            memory_wait: None,
            creating: None,
            touched: false,
            memory_listed: false,
            scheduled: None,
            dead_letter_failing: false,
            _stopped: stopped.drop_guard(),
        }
    }

    pub fn stored(&self) -> StoredGroup {
        stored(&self.tracker, self.max_deliveries)
    }

    pub fn is_creating(&self) -> bool {
        self.creating.is_some()
    }

    pub fn member_mut(&mut self, id: MemberId) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    /// Starts a write of the state if it is due.
    pub fn maybe_persist(&mut self) {
        let tracker = &self.tracker;
        let max_deliveries = self.max_deliveries;
        self.persist.maybe_start(|| stored(tracker, max_deliveries));
    }

    /// Tells the cluster, for a replicated topic, that the group's floor
    /// moved (the set calls it after each dispatch; the cluster gathers
    /// what it hears and proposes it now and then).
    pub fn report_floor(&mut self, cx: &Ctx) {
        let floor = self.tracker.floor();
        if floor == self.reported || !self.known {
            return;
        }
        if let Some(floors) = cx.topic.floors() {
            floors.note(&self.name, floor);
        }
        self.reported = floor;
    }

    /// See [`super::GroupHandle::follow`].
    fn follow(&mut self, cx: &Ctx, floor: u64, reset: bool) {
        if !self.members.is_empty() {
            return;
        }
        let log = &cx.topic.log;
        let o = floor.clamp(log.first_offset(), log.next_offset());
        if !self.known {
            self.tracker.reset(o);
            self.reported = o;
            // Nobody waits for this creation.
            let (reply, _) = oneshot::channel();
            self.create(Creation::Place(o, reply));
            return;
        }
        if reset {
            self.tracker.reset(o);
        } else if o > self.tracker.floor() && self.tracker.in_flight() == 0 {
            self.tracker.skip_to(o);
        } else {
            return;
        }
        self.reported = self.tracker.floor();
        self.persist.mark_dirty();
    }

    /// Runs one command. Returns the reply of a `Delete`: the set removes
    /// the group ([`Self::remove`]).
    pub fn handle(&mut self, cx: &Ctx, cmd: Cmd) -> Option<DoneReply> {
        if let Some(c) = self.creating.as_mut() {
            c.queued.push(cmd);
            return None;
        }
        let now = Instant::now();
        match cmd {
            Cmd::Join(j, reply) => self.join(cx, j, reply),
            Cmd::Leave(id) => {
                if let Some(i) = self.members.iter().position(|m| m.id == id) {
                    self.members.remove(i);
                    self.tracker.remove_member(id, now);
                    if self.members.is_empty() {
                        self.persist.keep_open(false);
                    }
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
                    .unwrap_or(cx.defaults.ack_timeout);
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
                let _ = reply.send(self.info(cx));
            }
            Cmd::Place(offset, reply) => self.place(cx, offset, reply),
            Cmd::Delete(reply) => {
                self.members.clear();
                return Some(reply);
            }
            Cmd::Follow { floor, reset } => self.follow(cx, floor, reset),
            Cmd::Reset(to, reply) => match self.reset(cx, to) {
                // Answered once the new position is on disk.
                Ok(()) => self.persist.wait(reply),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
        }
        None
    }

    fn place(&mut self, cx: &Ctx, offset: u64, reply: JoinReply) {
        if !self.members.is_empty() {
            let _ = reply.send(Err(BrokerError::GroupActive(self.name.clone())));
            return;
        }
        let log = &cx.topic.log;
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
            self.create(Creation::Place(o, reply));
        }
    }

    pub fn info(&self, cx: &Ctx) -> Option<GroupInfo> {
        if !self.known && self.members.is_empty() {
            return None;
        }
        let end = cx.topic.log.next_offset();
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

    fn reset(&mut self, cx: &Ctx, to: StartPosition) -> Result<(), BrokerError> {
        if !self.known {
            return Err(BrokerError::UnknownGroup {
                topic: cx.topic.name.clone(),
                group: self.name.clone(),
            });
        }
        if !self.members.is_empty() {
            return Err(BrokerError::GroupActive(self.name.clone()));
        }
        let o = position::resolve(&cx.topic.log, to)?;
        self.tracker.reset(o);
        Ok(())
    }

    fn join(&mut self, cx: &Ctx, j: Box<Join>, reply: JoinReply) {
        if self.members.iter().any(|m| m.id == j.member) {
            let _ = reply.send(Err(BrokerError::InvalidArgument("already a member".into())));
            return;
        }
        // A new group starts where its first member asks (Resume = earliest);
        // an idle group with an explicit start is repositioned; a group with
        // members keeps its position.
        let explicit = !matches!(j.start, StartPosition::Resume);
        if self.members.is_empty() && (!self.known || explicit) {
            let o = match j.start {
                StartPosition::Resume => Ok(cx.topic.log.first_offset()),
                s => position::resolve(&cx.topic.log, s),
            };
            let o = match o {
                Ok(o) => o,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            };
            if !self.known || o != self.tracker.floor() {
                self.tracker.reset(o);
            }
            if self.known {
                self.persist.mark_dirty();
            } else {
                // The group exists on disk before it delivers anything, so
                // a restart cannot forget it (and its acks) later.
                self.create(Creation::Join(j, reply));
                return;
            }
        }
        self.admit(cx, *j, reply);
    }

    /// Makes `j` a member: SubscribeOk goes out through its push queue
    /// before any delivery.
    fn admit(&mut self, cx: &Ctx, j: Join, reply: JoinReply) {
        if let Some(m) = j.max_deliveries {
            self.max_deliveries = m;
        }
        if j.subscribe_ok {
            let ok = herald_protocol::Message::SubscribeOk(herald_protocol::SubscribeOk {
                subscription_id: j.subscription_id,
                start_offset: self.tracker.floor(),
            });
            let mut b = bytes::BytesMut::new();
            ok.encode(j.request_id, &mut b);
            j.outbox.push(crate::outbox::Out::Frame(b.freeze()));
        }
        self.members.push(Member {
            id: j.member,
            sub: j.subscription_id,
            client_id: j.client_id,
            outbox: j.outbox,
            prefetch_messages: j.prefetch_messages.max(1),
            prefetch_bytes: j.prefetch_bytes.max(1),
            out_messages: 0,
            out_bytes: 0,
            ack_timeout: j.ack_timeout.unwrap_or(cx.defaults.ack_timeout),
            failed: false,
        });
        self.persist.keep_open(true);
        let _ = reply.send(Ok(self.tracker.floor()));
    }

    /// Starts the group's first write, for `op`; commands wait until it
    /// ends ([`Self::on_written`]). The set goes on serving its other
    /// groups meanwhile (a room's members join one after the other, and
    /// each join's write would otherwise hold up every delivery).
    fn create(&mut self, op: Creation) {
        let write = if self.persist.is_running() {
            None
        } else {
            let state = self.stored();
            Some(self.persist.start_detached(state))
        };
        self.creating = Some(Box::new(Creating {
            op,
            write,
            queued: Vec::new(),
        }));
    }

    /// The group's write number `seq` ended. Returns the reply of a
    /// `Delete` that waited for it.
    pub fn on_written(&mut self, cx: &Ctx, seq: u64) -> Option<DoneReply> {
        if self.persist.running_seq() == Some(seq) {
            // Its outcome is there: the write's task told its end after it.
            let r = self.persist.try_finish(seq)?;
            self.persist.on_finished(r);
            if let Some(c) = self.creating.as_mut() {
                if c.write.is_none() {
                    let state = stored(&self.tracker, self.max_deliveries);
                    c.write = Some(self.persist.start_detached(state));
                }
            }
            return None;
        }
        let creation = self.creating.as_mut().and_then(|c| c.write.as_mut());
        let r = creation.filter(|w| w.seq == seq)?.take()?;
        let c = self.creating.take()?;
        let r = self.persist.settle_detached(r);
        match (r, c.op) {
            (Ok(()), op) => {
                self.known = true;
                match op {
                    Creation::Join(j, reply) => self.admit(cx, *j, reply),
                    Creation::Place(o, reply) => {
                        let _ = reply.send(Ok(o));
                    }
                }
            }
            (Err(e), Creation::Join(_, reply)) => {
                tracing::warn!(group = %self.name, error = %e, "a new group's state cannot be written; its first member is refused");
                let _ = reply.send(Err(e.into()));
            }
            (Err(e), Creation::Place(_, reply)) => {
                let _ = reply.send(Err(e.into()));
            }
        }
        for cmd in c.queued {
            if let Some(d) = self.handle(cx, cmd) {
                return Some(d);
            }
        }
        None
    }

    pub fn expire(&mut self, cx: &Ctx) {
        let now = Instant::now();
        let list = &cx.defaults.backoff;
        let backoff = |d: u32| super::backoff_for(list, d);
        for (id, rel) in self.tracker.expire(now, &backoff) {
            if let Some(m) = self.member_mut(id) {
                m.release(rel);
            }
        }
    }

    /// The earliest instant the group must be woken at: a redelivery or
    /// an ack timeout, or a write that is due.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        match (self.tracker.next_timer(now), self.persist.due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A creation still running ends before the file goes, so it cannot
    /// bring the file back; the commands it held are dropped (their callers
    /// hear that the group is gone).
    async fn end_creation(&mut self) {
        if let Some(mut c) = self.creating.take() {
            if let Some(mut write) = c.write.take() {
                let r = write.wait().await;
                if self.persist.settle_detached(r).is_ok() {
                    self.known = true;
                    if let Creation::Place(o, reply) = c.op {
                        let _ = reply.send(Ok(o));
                    }
                }
            }
        }
    }

    /// The group was deleted: its state file is removed (after a write in
    /// progress), then `reply` is answered and the group dropped. Run on
    /// its own task, so that the disk does not hold up the set.
    pub async fn remove(mut self, reply: DoneReply) {
        self.end_creation().await;
        let r = self.persist.remove().await;
        let _ = reply.send(r.map_err(Into::into));
    }

    /// The set is ending (shutdown, topic deleted): a last save. A group
    /// that never came to exist leaves no file behind.
    pub async fn shut(mut self) {
        self.end_creation().await;
        if self.known {
            let state = self.stored();
            // Written even when no ack is pending: deliveries (the next
            // fresh offset, delivery counts) do not mark the state dirty.
            self.persist.close(state).await;
        }
    }
}
