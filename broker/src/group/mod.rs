//! Consumer groups: durable, named cursors over a topic, whose members share
//! the messages (competing consumers) and acknowledge them.
//!
//! Each group is one actor task that owns its [`AckTracker`], its members
//! and its persisted state; sessions talk to it through a bounded channel.
//! No lock is shared with anyone.

pub mod acks;
mod dlq;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_protocol::{AckKind, Batch, GroupInfo, StartPosition};
use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use crate::outbox::Outbox;
use crate::topic::Topic;
use crate::BrokerError;
use acks::{AckTracker, MemberId, Released};
use store::StoredGroup;

/// Commands queued for a group actor before senders wait.
const GROUP_QUEUE: usize = 4096;
/// Group state is persisted at most this often. Each persist is a write, an
/// fsync, a rename and a folder fsync; at the client's ack pace (a flush
/// every millisecond) they competed with the log's own fsyncs on the same
/// disk and showed in the publish-to-deliver p99.
const PERSIST_MIN_INTERVAL: Duration = Duration::from_millis(5);
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
    Info(oneshot::Sender<GroupInfo>),
    Reset(StartPosition, oneshot::Sender<Result<(), BrokerError>>),
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

    pub async fn info(&self) -> Result<GroupInfo, BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Info(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Moves the group's position; refused while it has members.
    pub async fn reset(&self, to: StartPosition) -> Result<(), BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Reset(to, tx)).await.map_err(|_| gone())?;
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

type PersistResult = Result<(), String>;

struct Group {
    name: String,
    topic: Arc<Topic>,
    tracker: AckTracker,
    /// Whether the tracker has ever been saved or loaded: a new group takes
    /// its first member's start position.
    known: bool,
    members: Vec<Member>,
    next_member: usize,
    defaults: GroupDefaults,
    max_deliveries: u32,
    path: PathBuf,
    durable: bool,
    dirty: bool,
    persisting: Option<tokio::task::JoinHandle<PersistResult>>,
    /// When the last persist started, and when the next may start.
    last_persist: Instant,
    persist_due: Option<Instant>,
    /// Ack callers waiting for the persist that is running.
    waiting_current: Vec<oneshot::Sender<Result<(), BrokerError>>>,
    /// Ack callers waiting for the next persist.
    waiting_next: Vec<oneshot::Sender<Result<(), BrokerError>>>,
}

/// Loads the group's state and starts its actor.
pub fn spawn(
    topic: Arc<Topic>,
    name: String,
    path: PathBuf,
    defaults: GroupDefaults,
) -> Result<GroupHandle, BrokerError> {
    let stored = store::load(&path)?;
    let now = Instant::now();
    let (tracker, known, max_deliveries) = match &stored {
        Some(s) => (
            AckTracker::restore(&s.snapshot, now),
            true,
            if s.max_deliveries > 0 {
                s.max_deliveries
            } else {
                defaults.max_deliveries
            },
        ),
        None => (
            AckTracker::new(topic.log.first_offset()),
            false,
            defaults.max_deliveries,
        ),
    };
    let durable = matches!(
        topic.log.config().fsync,
        herald_protocol::FsyncPolicy::Always
    );
    let (tx, rx) = mpsc::channel(GROUP_QUEUE);
    let stopped = CancellationToken::new();
    let cancel = topic.cancel.clone();
    let g = Group {
        name,
        topic,
        tracker,
        known,
        members: Vec::new(),
        next_member: 0,
        defaults,
        max_deliveries,
        path,
        durable,
        dirty: false,
        persisting: None,
        last_persist: Instant::now() - PERSIST_MIN_INTERVAL,
        persist_due: None,
        waiting_current: Vec::new(),
        waiting_next: Vec::new(),
    };
    let guard = stopped.clone().drop_guard();
    tokio::spawn(async move {
        g.run(rx, cancel).await;
        drop(guard);
    });
    Ok(GroupHandle { tx, stopped })
}

impl Group {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>, cancel: CancellationToken) {
        let mut watch = self.topic.log.watch_next_offset();
        loop {
            let timer = self.tracker.next_timer();
            let has_members = !self.members.is_empty();
            tokio::select! {
                _ = cancel.cancelled() => break,
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.handle(cmd);
                    // Take whatever else is queued before dispatching once.
                    for _ in 0..1024 {
                        match rx.try_recv() {
                            Ok(c) => self.handle(c),
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
                _ = sleep_until(self.persist_due.map(tokio::time::Instant::from_std).unwrap_or_else(far_future)), if self.persist_due.is_some() => {
                    self.persist_due = None;
                }
                r = async { self.persisting.as_mut().expect("guarded").await }, if self.persisting.is_some() => {
                    self.persisting = None;
                    let r = r.unwrap_or_else(|e| Err(e.to_string()));
                    for w in self.waiting_current.drain(..) {
                        let _ = w.send(r.clone().map_err(BrokerError::Internal));
                    }
                    if let Err(e) = r {
                        tracing::error!(group = %self.name, error = %e, "persisting group state failed");
                    }
                }
            }
            self.dispatch().await;
            self.maybe_persist();
        }
        // Final save on the way out (shutdown or topic deletion).
        if let Some(p) = self.persisting.take() {
            let _ = p.await;
        }
        let state = self.stored();
        if let Err(e) = store::save(&self.path, &state, self.durable) {
            tracing::error!(group = %self.name, error = %e, "saving group state at shutdown");
        }
        for w in self
            .waiting_current
            .drain(..)
            .chain(self.waiting_next.drain(..))
        {
            let _ = w.send(Ok(()));
        }
    }

    fn stored(&self) -> StoredGroup {
        StoredGroup {
            snapshot: self.tracker.snapshot(),
            max_deliveries: self.max_deliveries,
        }
    }

    fn maybe_persist(&mut self) {
        if !self.dirty || self.persisting.is_some() {
            return;
        }
        let now = Instant::now();
        let next = self.last_persist + PERSIST_MIN_INTERVAL;
        if now < next {
            self.persist_due = Some(next);
            return;
        }
        self.last_persist = now;
        self.persist_due = None;
        self.dirty = false;
        self.known = true;
        let state = self.stored();
        let path = self.path.clone();
        let durable = self.durable;
        self.waiting_current = std::mem::take(&mut self.waiting_next);
        self.persisting = Some(tokio::task::spawn_blocking(move || {
            store::save(&path, &state, durable).map_err(|e| e.to_string())
        }));
    }

    fn member_mut(&mut self, id: MemberId) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    fn handle(&mut self, cmd: Cmd) {
        let now = Instant::now();
        match cmd {
            Cmd::Join(j, reply) => {
                let r = self.join(*j);
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
                    self.dirty = true;
                }
                if let Some(d) = done {
                    self.dirty = true;
                    self.waiting_next.push(d);
                }
            }
            Cmd::Info(reply) => {
                let end = self.topic.log.next_offset();
                let floor = self.tracker.floor();
                let _ = reply.send(GroupInfo {
                    name: self.name.clone(),
                    ack_floor: floor,
                    lag: end.saturating_sub(floor),
                    in_flight: self.tracker.in_flight(),
                    redelivered: self.tracker.redelivered,
                    dead_lettered: self.tracker.dead_lettered,
                    members: self.members.iter().map(|m| m.client_id.clone()).collect(),
                });
            }
            Cmd::Reset(to, reply) => {
                let r = if self.members.is_empty() {
                    let o = self.resolve_start(to);
                    self.tracker.reset(o);
                    self.dirty = true;
                    Ok(())
                } else {
                    Err(BrokerError::GroupActive(self.name.clone()))
                };
                let _ = reply.send(r);
            }
        }
    }

    fn resolve_start(&self, start: StartPosition) -> u64 {
        let log = &self.topic.log;
        match start {
            StartPosition::Resume => self.tracker.floor(),
            StartPosition::Earliest => log.first_offset(),
            StartPosition::Latest => log.next_offset(),
            StartPosition::Offset(o) => o.clamp(log.first_offset(), log.next_offset()),
            StartPosition::Timestamp(t) => log.offset_for_timestamp(t).unwrap_or(log.next_offset()),
        }
    }

    fn join(&mut self, j: Join) -> Result<u64, BrokerError> {
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
                s => self.resolve_start(s),
            };
            if !self.known || o != self.tracker.floor() {
                self.tracker.reset(o);
            }
            self.dirty = true;
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
    fn pick_member(&mut self) -> Option<usize> {
        let n = self.members.len();
        for k in 0..n {
            let i = (self.next_member + k) % n;
            let m = &self.members[i];
            if m.credit() > 0 && !m.failed && !m.outbox.is_closed() {
                self.next_member = (i + 1) % n;
                return Some(i);
            }
        }
        None
    }

    /// Hands out what is due and what is new, as far as credit goes.
    async fn dispatch(&mut self) {
        if self.members.is_empty() {
            return;
        }
        let log = self.topic.log.clone();
        let first = log.first_offset();
        if self.tracker.next_fresh() < first {
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
                    self.tracker.mark_dead_lettered(r.first, r.last);
                    continue;
                };
                if b.base_offset() > r.first {
                    // The head of the range was deleted by retention.
                    let cut = (b.base_offset() - 1).min(r.last);
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
                (m.prefetch_bytes.saturating_sub(m.out_bytes) as usize).clamp(1, MAX_READ_BYTES);
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
                        self.dirty = true;
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
                self.dirty = true;
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

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}
