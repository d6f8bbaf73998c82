//! What the connection task remembers across connections: publishes not yet
//! confirmed, subscriptions, acks not yet confirmed durable, requests
//! awaiting replies. A connection drop keeps all of it; [`State::restore`]
//! replays it on the next connection.
//!
//! Frames are appended to `out` only while a connection is live; the
//! connection loop writes `out` to the socket.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use herald_protocol::batch::set_producer;
use herald_protocol::message::put_publish;
use herald_protocol::{
    Ack, AckKind, Emit, EmitBatch, EmitOutcome, ErrorCode, Flow, JoinRoom, Message as Wire,
    PublishOk, StartPosition, Subscribe, SubscribeOk, SubscriptionError, Unsubscribe,
};
use tokio::sync::oneshot;

use crate::acks::{AckOp, AckWaiter, MAX_RANGES_PER_FRAME, UNCONFIRMED_MAX};
use crate::command::{Command, PublishBatch, SubItem, SubRegistration};
use crate::{Error, Receipt, Result};

/// The sequence state of one producer, owned here because sequence numbers
/// must be assigned in the order batches reach the socket.
struct ProducerSeq {
    producer_id: u64,
    next_seq: u64,
}

/// A publish awaiting its confirm.
struct InFlight {
    batch: PublishBatch,
    /// Sealed under a producer identity that was retired after a rejection:
    /// the broker will answer SequenceGap, and the batch is then re-sealed
    /// under the current identity and re-sent.
    stale: bool,
}

/// An Ack frame the broker refused to confirm: its request id, kind and
/// ranges.
type RefusedAck = (u64, AckKind, Vec<(u64, u64)>);

/// An Ack frame sent without a request id, not yet confirmed by the `Ok` to
/// a later one (see [`UNCONFIRMED_MAX`]): its kind and ranges.
type SentAck = (AckKind, Vec<(u64, u64)>);

/// A subscription and its per-connection state.
struct SubEntry {
    reg: SubRegistration,
    /// The broker's id on the current connection, once SubscribeOk came.
    broker_id: Option<u64>,
    /// Bumped on every (re)subscribe; tags deliveries and credit.
    epoch: u64,
    /// The first SubscribeOk's start offset (ephemeral resume fallback).
    start_offset: Option<u64>,
    /// The caller of the first subscribe, until it is answered.
    reply: Option<oneshot::Sender<Result<u64>>>,
    /// Acks sent on a connection that dropped before confirming them.
    unsent_acks: Vec<AckOp>,
    /// Ack frames sent on this connection without a request id since the
    /// last one that asked for a confirm: the next confirmed one covers
    /// them.
    unconfirmed: Vec<SentAck>,
    /// Acks the broker refused to confirm because it could not write them
    /// (full disk). It keeps them in memory and retries; they are sent
    /// again after a reconnect in case the broker restarted meanwhile, and
    /// forgotten once a later ack (a higher request id) on the same
    /// connection is confirmed: the broker applies acks in the order they
    /// arrive, so the state it wrote for that one holds these too.
    rejected_acks: Vec<RefusedAck>,
    /// Unsubscribing: the Unsubscribe waits until the broker confirmed the
    /// acks sent before it, so that leaving cannot overtake them.
    leaving: Option<Option<oneshot::Sender<Result<()>>>>,
    /// The broker ended it (SubscriptionError): the stream was told, and it
    /// is not subscribed again after a reconnect, since whatever ended it
    /// (damaged data) needs an operator first. Acks still go out until the
    /// application drops the stream.
    ended: bool,
}

/// A request awaiting its reply.
enum Pending {
    Subscribe {
        local_id: u64,
        epoch: u64,
    },
    Unsubscribe {
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    Ack {
        local_id: u64,
        kind: AckKind,
        ranges: Vec<(u64, u64)>,
        /// Callers of `ack_confirmed` whose offset this frame carries.
        waiters: Vec<AckWaiter>,
        /// Frames sent before it without a request id, which its `Ok`
        /// confirms too.
        covered: Vec<SentAck>,
    },
    Admin {
        msg: Wire,
        reply: oneshot::Sender<Result<Wire>>,
    },
    /// An `EmitBatch` (`msg`): one caller per emit, in the batch's order.
    Emits {
        msg: Wire,
        replies: Vec<oneshot::Sender<Result<Wire>>>,
    },
    /// A Join re-sent after a reconnect; nobody waits for it.
    Rejoin,
}

/// Why the connection must be dropped.
pub(crate) type DropReason = String;

/// Everything the connection task tracks; see the module docs.
#[derive(Default)]
pub(crate) struct State {
    /// Frames waiting for the socket (only appended to while `live`).
    pub(crate) out: BytesMut,
    /// A cluster node answered a publish with NotLeader: the connection is
    /// dropped and the next one goes to the leader it named (`Some`), or to
    /// another node (`None`: no leader yet).
    pub(crate) redirect: Option<Option<String>>,
    /// Whether a connection is up and handshaken.
    pub(crate) live: bool,
    /// The client is closing: every ack sent from now on asks for a
    /// confirm, so that closing can wait until they are durable.
    closing: bool,
    next_request: u64,
    producers: HashMap<u64, ProducerSeq>,
    /// Keyed by request id, which grows monotonically, so iteration order is
    /// send order and a reconnect re-sends in the original order.
    publishes: BTreeMap<u64, InFlight>,
    subs: HashMap<u64, SubEntry>,
    by_broker_id: HashMap<u64, u64>,
    requests: HashMap<u64, Pending>,
    /// Rooms joined (and not left), with their durability: joined again
    /// after every reconnect, in case the broker's grace period ran out.
    rooms: BTreeMap<String, bool>,
    /// The protocol version of the current connection (0 before the first).
    pub(crate) version: u16,
    /// The broker's frame limit (HelloOk `max_frame`; 0 before the first
    /// connection): an `EmitBatch` stays well under it.
    pub(crate) max_frame: usize,
    /// Emits taken in this turn of the connection's loop, sent together
    /// as one `EmitBatch` by [`State::flush_emits`] (version 3).
    emits: Vec<(Emit, oneshot::Sender<Result<Wire>>)>,
    /// The bytes of `emits`' payloads and names.
    emit_bytes: usize,
}

/// Emits in one `EmitBatch` at most, and their bytes (also at most half
/// the broker's frame limit, which may be as low as 4 KiB): enough that the
/// frame's own cost is spread thin.
const EMIT_BATCH_MAX: usize = 1024;
const EMIT_BATCH_BYTES: usize = 256 << 10;

/// At least the bytes `e` takes in a frame body: its strings and payload,
/// and room for each length prefix, tag and the correlation.
fn emit_size(e: &Emit) -> usize {
    let target = match &e.target {
        herald_protocol::EmitTarget::Room(r)
        | herald_protocol::EmitTarget::RoomExceptSender(r)
        | herald_protocol::EmitTarget::Client(r) => r.len() + 5,
        herald_protocol::EmitTarget::Rooms { rooms, .. } => {
            rooms.iter().map(|r| r.len() + 5).sum::<usize>() + 7
        }
        herald_protocol::EmitTarget::All => 1,
    };
    target + e.event.len() + e.payload.len() + 24
}

impl State {
    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    fn send(&mut self, id: u64, msg: &Wire) {
        if self.live {
            msg.encode(id, &mut self.out);
        }
    }

    /// Publishes not yet confirmed and acks not yet confirmed durable.
    pub(crate) fn is_drained(&self) -> bool {
        self.publishes.is_empty()
            && !self
                .requests
                .values()
                .any(|p| matches!(p, Pending::Ack { .. }))
            && self.subs.values().all(|s| {
                // An ended subscription is not subscribed again: its acks
                // cannot go, so closing does not wait for them.
                s.ended
                    || (s.unsent_acks.is_empty()
                        && s.unconfirmed.is_empty()
                        && !s.reg.shared.lock().has_pending())
            })
    }

    /// Handles one command; `Close` is handled by the caller.
    pub(crate) fn on_command(&mut self, cmd: Command) {
        let cmd = match cmd {
            Command::Request {
                msg: Wire::Emit(e),
                reply,
            } if self.live && self.version >= 3 => {
                let bytes = emit_size(&e);
                let limit = match self.max_frame {
                    0 => EMIT_BATCH_BYTES,
                    f => EMIT_BATCH_BYTES.min(f / 2),
                };
                if self.emit_bytes + bytes > limit || self.emits.len() >= EMIT_BATCH_MAX {
                    self.flush_emits();
                }
                self.emit_bytes += bytes;
                self.emits.push((e, reply));
                return;
            }
            // Anything else keeps its place after the emits before it.
            other => {
                self.flush_emits();
                other
            }
        };
        match cmd {
            Command::Publish(b) => self.publish(b),
            Command::Subscribe { reg, reply } => {
                let local_id = reg.shared.local_id;
                self.subs.insert(
                    local_id,
                    SubEntry {
                        reg,
                        broker_id: None,
                        epoch: 0,
                        start_offset: None,
                        reply: Some(reply),
                        unsent_acks: Vec::new(),
                        unconfirmed: Vec::new(),
                        rejected_acks: Vec::new(),
                        leaving: None,
                        ended: false,
                    },
                );
                if self.live {
                    self.subscribe(local_id);
                }
            }
            Command::Unsubscribe { local_id, reply } => self.unsubscribe(local_id, reply),
            Command::Flow {
                local_id,
                epoch,
                messages,
                bytes,
            } => {
                let Some(s) = self.subs.get(&local_id) else {
                    return;
                };
                if let (true, Some(subscription_id)) = (s.epoch == epoch, s.broker_id) {
                    let m = Wire::Flow(Flow {
                        subscription_id,
                        messages,
                        bytes,
                    });
                    self.send(0, &m);
                }
            }
            Command::Request { msg, reply } => {
                let id = self.request_id();
                self.send(id, &msg);
                self.requests.insert(id, Pending::Admin { msg, reply });
            }
            Command::Close { .. } => {}
        }
    }

    /// Sends the emits taken since the last call: one alone as an `Emit`,
    /// several as one `EmitBatch`. The connection calls it once it has
    /// taken every queued command, before it writes.
    pub(crate) fn flush_emits(&mut self) {
        self.emit_bytes = 0;
        match self.emits.len() {
            0 => {}
            1 => {
                if let Some((e, reply)) = self.emits.pop() {
                    let msg = Wire::Emit(e);
                    let id = self.request_id();
                    self.send(id, &msg);
                    self.requests.insert(id, Pending::Admin { msg, reply });
                }
            }
            _ => {
                let (emits, replies): (Vec<Emit>, Vec<_>) = self.emits.drain(..).unzip();
                let msg = Wire::EmitBatch(EmitBatch { emits });
                let id = self.request_id();
                self.send(id, &msg);
                self.requests.insert(id, Pending::Emits { msg, replies });
            }
        }
    }

    fn publish(&mut self, mut batch: PublishBatch) {
        let seq = self.producers.entry(batch.producer).or_insert(ProducerSeq {
            producer_id: batch.producer_id,
            next_seq: 0,
        });
        if (batch.producer_id, batch.base_sequence) != (seq.producer_id, seq.next_seq) {
            reseal(&mut batch, seq.producer_id, seq.next_seq);
        }
        seq.next_seq += u64::from(batch.count);
        let id = self.request_id();
        if self.live {
            put_publish(&mut self.out, id, &batch.topic, &batch.bytes);
        }
        self.publishes.insert(
            id,
            InFlight {
                batch,
                stale: false,
            },
        );
    }

    fn subscribe(&mut self, local_id: u64) {
        let id = self.request_id();
        let Some(s) = self.subs.get_mut(&local_id) else {
            return;
        };
        if s.ended {
            return;
        }
        s.epoch += 1;
        let first = s.reply.is_some() && s.start_offset.is_none();
        let start = if first {
            s.reg.start
        } else if s.reg.group.is_some() {
            StartPosition::Resume
        } else {
            // Ephemeral: carry on after the last record the app was given.
            match (s.reg.shared.lock().last_delivered, s.start_offset) {
                (Some(last), _) => StartPosition::Offset(last + 1),
                (None, Some(start)) => StartPosition::Offset(start),
                (None, None) => s.reg.start,
            }
        };
        let msg = Wire::Subscribe(Subscribe {
            topic: s.reg.topic.clone(),
            group: s.reg.group.clone(),
            start,
            prefetch_messages: s.reg.prefetch_messages,
            prefetch_bytes: s.reg.prefetch_bytes,
            ack_timeout_ms: s.reg.ack_timeout_ms,
            max_deliveries: s.reg.max_deliveries,
        });
        let epoch = s.epoch;
        self.send(id, &msg);
        self.requests
            .insert(id, Pending::Subscribe { local_id, epoch });
    }

    fn unsubscribe(&mut self, local_id: u64, reply: Option<oneshot::Sender<Result<()>>>) {
        let Some(s) = self.subs.get_mut(&local_id) else {
            if let Some(r) = reply {
                let _ = r.send(Ok(()));
            }
            return;
        };
        s.reg.shared.closed.store(true, Ordering::Release);
        if s.leaving.is_some() {
            if let Some(r) = reply {
                let _ = r.send(Ok(()));
            }
            return;
        }
        s.leaving = Some(reply);
        // Acks recorded before unsubscribing still count: send them, and
        // leave once they are confirmed.
        if s.broker_id.is_some() && s.reg.shared.group && self.live {
            self.flush_sub_acks(local_id);
        }
        self.leave_if_acked(local_id);
    }

    /// Sends the Unsubscribe of a leaving subscription once none of its
    /// acks awaits a confirm.
    fn leave_if_acked(&mut self, local_id: u64) {
        let acks_pending = self
            .requests
            .values()
            .any(|p| matches!(p, Pending::Ack { local_id: l, .. } if *l == local_id));
        let leaving = self
            .subs
            .get(&local_id)
            .is_some_and(|s| s.leaving.is_some());
        if acks_pending || !leaving {
            return;
        }
        let Some(mut s) = self.subs.remove(&local_id) else {
            return;
        };
        s.reg.shared.lock().drop_waiters();
        let reply = s.leaving.take().flatten();
        match s.broker_id {
            Some(subscription_id) if self.live => {
                self.by_broker_id.remove(&subscription_id);
                let id = self.request_id();
                self.send(id, &Wire::Unsubscribe(Unsubscribe { subscription_id }));
                self.requests.insert(id, Pending::Unsubscribe { reply });
            }
            _ => {
                if let Some(r) = reply {
                    let _ = r.send(Ok(()));
                }
            }
        }
    }

    /// The client is closing: sends every ack recorded so far, each asking
    /// for a confirm ([`State::is_drained`] waits for them).
    pub(crate) fn flush_acks_to_close(&mut self) {
        self.closing = true;
        self.flush_acks();
    }

    /// The linger ran out: sends the acks of every subscription whose
    /// pending acks are due ([`AckState::due_at`](crate::acks::AckState::due_at));
    /// one with only a few recent acks keeps them. When the earliest of
    /// those kept is due, if any.
    pub(crate) fn flush_lingering_acks(
        &mut self,
        now: std::time::Instant,
    ) -> Option<std::time::Instant> {
        if !self.live {
            return None;
        }
        let mut next: Option<std::time::Instant> = None;
        let mut ready = Vec::new();
        for (id, s) in &self.subs {
            if s.broker_id.is_none() || !s.reg.shared.group {
                continue;
            }
            match s.reg.shared.due_at(now) {
                // Closing waits for every ack: none lingers then.
                Some(t) if t <= now || self.closing => ready.push(*id),
                Some(t) => next = Some(next.map_or(t, |n| n.min(t))),
                None => {}
            }
        }
        for local_id in ready {
            self.flush_sub_acks(local_id);
        }
        next
    }

    /// Sends every ack recorded by the application, for subscriptions that
    /// are subscribed on the current connection.
    pub(crate) fn flush_acks(&mut self) {
        if !self.live {
            return;
        }
        let ready: Vec<u64> = self
            .subs
            .iter()
            .filter(|(_, s)| s.broker_id.is_some() && s.reg.shared.group)
            .map(|(id, _)| *id)
            .collect();
        for local_id in ready {
            self.flush_sub_acks(local_id);
        }
    }

    /// Sends one subscription's acks: those a lost connection left
    /// unconfirmed, then those the app made since the last flush. While it
    /// is leaving or the client is closing, the last frame asks for a
    /// confirm that covers every earlier one.
    fn flush_sub_acks(&mut self, local_id: u64) {
        let closing = self.closing;
        let Some(s) = self.subs.get_mut(&local_id) else {
            return;
        };
        let confirm = closing || s.leaving.is_some();
        let mut ops = std::mem::take(&mut s.unsent_acks);
        ops.extend(s.reg.shared.lock().drain_ops());
        let parts: Vec<AckOp> = ops
            .into_iter()
            .flat_map(|op| op.split(MAX_RANGES_PER_FRAME))
            .collect();
        if parts.is_empty() && confirm && s.broker_id.is_some() {
            // Nothing new, but frames await a confirm: the last of them goes
            // again, asking for one (an ack sent twice does nothing more).
            if let Some((kind, ranges)) = s.unconfirmed.pop() {
                let op = AckOp {
                    kind,
                    ranges,
                    waiters: Vec::new(),
                };
                self.send_ack(local_id, op, true);
            }
            return;
        }
        let last = parts.len().saturating_sub(1);
        for (i, part) in parts.into_iter().enumerate() {
            self.send_ack(local_id, part, confirm && i == last);
        }
    }

    /// Sends one Ack frame. It goes without a request id (no reply) when
    /// nothing waits for it and it can be sent again harmlessly; one in
    /// [`UNCONFIRMED_MAX`] (and any other) asks for the `Ok` that confirms
    /// it and every frame before it.
    fn send_ack(&mut self, local_id: u64, op: AckOp, confirm: bool) {
        let Some(s) = self.subs.get_mut(&local_id) else {
            return;
        };
        let Some(subscription_id) = s.broker_id else {
            // Not subscribed on this connection: sent after the resubscribe.
            s.unsent_acks.push(op);
            return;
        };
        let repeatable = matches!(
            op.kind,
            AckKind::Ack | AckKind::AckUpTo | AckKind::Terminate
        );
        if repeatable
            && !confirm
            && op.waiters.is_empty()
            && s.unconfirmed.len() + 1 < UNCONFIRMED_MAX
        {
            let msg = Wire::Ack(Ack {
                subscription_id,
                kind: op.kind,
                ranges: op.ranges,
            });
            if self.live {
                msg.encode(0, &mut self.out);
            }
            if let Wire::Ack(Ack { ranges, .. }) = msg {
                s.unconfirmed.push((op.kind, ranges));
            }
            return;
        }
        let covered = std::mem::take(&mut s.unconfirmed);
        let id = self.request_id();
        let msg = Wire::Ack(Ack {
            subscription_id,
            kind: op.kind,
            ranges: op.ranges,
        });
        self.send(id, &msg);
        if let Wire::Ack(Ack { ranges, .. }) = msg {
            self.requests.insert(
                id,
                Pending::Ack {
                    local_id,
                    kind: op.kind,
                    ranges,
                    waiters: op.waiters,
                    covered,
                },
            );
        }
    }

    /// Handles a pushed delivery.
    pub(crate) fn on_deliver(&mut self, d: herald_protocol::Deliver) {
        let Some(&local_id) = self.by_broker_id.get(&d.subscription_id) else {
            return;
        };
        let Some(s) = self.subs.get(&local_id) else {
            return;
        };
        let item = SubItem::Deliver {
            epoch: s.epoch,
            deliver: d,
        };
        if s.reg.tx.send(item).is_err() {
            // The stream is gone without unsubscribing (dropped mid-flight).
            self.unsubscribe(local_id, None);
        }
    }

    /// The broker ended a subscription on its own (a read of damaged data
    /// failed): the stream gets the error after the deliveries that came
    /// before it, and then ends.
    /// The broker moved a group past records retention deleted: the
    /// subscription's stream says so and goes on.
    pub(crate) fn on_skipped(&mut self, s: herald_protocol::Skipped) {
        let Some(&local_id) = self.by_broker_id.get(&s.subscription_id) else {
            return;
        };
        if let Some(sub) = self.subs.get(&local_id) {
            tracing::warn!(topic = %sub.reg.topic, first = s.first, last = s.last, "records deleted by retention before they were delivered");
            let _ = sub.reg.tx.send(SubItem::Skipped {
                first: s.first,
                last: s.last,
            });
        }
    }

    pub(crate) fn on_subscription_error(&mut self, e: SubscriptionError) {
        let Some(&local_id) = self.by_broker_id.get(&e.subscription_id) else {
            return;
        };
        let Some(s) = self.subs.get_mut(&local_id) else {
            return;
        };
        s.ended = true;
        let err = Error::from_body(e.code, e.message);
        tracing::warn!(topic = %s.reg.topic, error = %err, "the broker ended a subscription");
        let _ = s.reg.tx.send(SubItem::Failed(err));
    }

    /// Handles a reply (a frame with a request id).
    ///
    /// # Errors
    /// A reply that makes no sense for its request: the connection is
    /// dropped, as the stream of replies can no longer be trusted.
    pub(crate) fn on_reply(&mut self, id: u64, msg: Wire) -> std::result::Result<(), DropReason> {
        if let Some(inflight) = self.publishes.remove(&id) {
            return self.on_publish_reply(id, inflight, msg);
        }
        let Some(pending) = self.requests.remove(&id) else {
            tracing::debug!(id, "reply to an unknown request");
            return Ok(());
        };
        match (pending, msg) {
            (Pending::Subscribe { local_id, epoch }, Wire::SubscribeOk(ok)) => {
                self.on_subscribed(local_id, epoch, ok)
            }
            (Pending::Subscribe { local_id, epoch }, Wire::Error(e)) => {
                let err = Error::from_body(e.code, e.message);
                match self.subs.get_mut(&local_id) {
                    Some(s) if s.epoch == epoch => {
                        if let Some(r) = s.reply.take() {
                            let _ = r.send(Err(err));
                        } else {
                            let _ = s.reg.tx.send(SubItem::Failed(err));
                        }
                        self.unsubscribe(local_id, None);
                    }
                    _ => {}
                }
            }
            (Pending::Unsubscribe { reply }, reply_msg) => {
                if let Some(r) = reply {
                    let _ = r.send(match reply_msg {
                        Wire::Error(e) => Err(Error::from_body(e.code, e.message)),
                        _ => Ok(()),
                    });
                }
            }
            (
                Pending::Ack {
                    local_id,
                    kind,
                    ranges,
                    waiters,
                    covered,
                },
                Wire::Ok,
            ) => {
                for (_, w) in waiters {
                    let _ = w.send(Ok(()));
                }
                if let Some(s) = self.subs.get_mut(&local_id) {
                    // The state the broker wrote for this ack holds every
                    // ack it applied before: those sent without a request
                    // id, and the ones it refused to confirm earlier on
                    // this connection.
                    let (earlier, later): (Vec<_>, Vec<_>) = std::mem::take(&mut s.rejected_acks)
                        .into_iter()
                        .partition(|(rid, _, _)| *rid < id);
                    s.rejected_acks = later;
                    let durable = earlier.into_iter().map(|(_, k, r)| (k, r));
                    for (k, r) in durable.chain(covered).chain([(kind, ranges)]) {
                        if matches!(k, AckKind::Ack | AckKind::Terminate) {
                            let _ = s.reg.tx.send(SubItem::AcksDurable(r));
                        }
                    }
                }
                self.leave_if_acked(local_id);
            }
            (
                Pending::Ack {
                    local_id,
                    kind,
                    ranges,
                    waiters,
                    covered,
                },
                Wire::Error(e),
            ) => {
                // The filter keeps these offsets.
                tracing::warn!(?kind, code = e.code, message = %e.message, "ack rejected");
                let code = ErrorCode::from_u16(e.code);
                for (_, w) in waiters {
                    let _ = w.send(Err(Error::from_body(e.code, e.message.clone())));
                }
                // Not written (a full disk, an I/O error), or not taken (the
                // group stopped while the broker shuts down): kept, sent
                // again after a reconnect, settled by a later confirm. Only
                // an ack the broker can never take is given up.
                let kept = !matches!(
                    code,
                    ErrorCode::UnknownSubscription | ErrorCode::InvalidArgument
                );
                if let (true, Some(s)) = (kept, self.subs.get_mut(&local_id)) {
                    for (k, r) in covered.into_iter().chain([(kind, ranges)]) {
                        if matches!(k, AckKind::Ack | AckKind::Terminate | AckKind::AckUpTo) {
                            s.rejected_acks.push((id, k, r));
                        }
                    }
                }
                self.leave_if_acked(local_id);
            }
            (Pending::Admin { reply, .. }, Wire::Error(e)) => {
                let _ = reply.send(Err(Error::from_body(e.code, e.message)));
            }
            (Pending::Admin { msg, reply }, m) => {
                match (&msg, &m) {
                    (Wire::Join(j), Wire::Ok) => {
                        self.rooms.insert(j.room.clone(), j.durable);
                    }
                    (Wire::Leave(l), Wire::Ok) => {
                        self.rooms.remove(&l.room);
                    }
                    _ => {}
                }
                let _ = reply.send(Ok(m));
            }
            (Pending::Emits { replies, .. }, Wire::EmitBatchOk(ok)) => {
                let n = ok.results.len();
                let mut results = ok.results.into_iter();
                let total = replies.len();
                for reply in replies {
                    let r = match results.next() {
                        Some(EmitOutcome::Ok(ok)) => Ok(Wire::EmitOk(ok)),
                        Some(EmitOutcome::Err(e)) => Err(Error::from_body(e.code, e.message)),
                        None => Err(Error::Protocol(format!(
                            "the broker answered {n} outcomes for {total} emits"
                        ))),
                    };
                    let _ = reply.send(r);
                }
            }
            (Pending::Emits { replies, .. }, Wire::Error(e)) => {
                for reply in replies {
                    let _ = reply.send(Err(Error::from_body(e.code, e.message.clone())));
                }
            }
            (Pending::Rejoin, Wire::Error(e)) => {
                tracing::warn!(code = e.code, message = %e.message, "rejoining a room failed");
            }
            (Pending::Rejoin, _) => {}
            (_, m) => return Err(format!("unexpected {:?} reply to request {id}", m.opcode())),
        }
        Ok(())
    }

    fn on_subscribed(&mut self, local_id: u64, epoch: u64, ok: SubscribeOk) {
        let Some(s) = self.subs.get_mut(&local_id) else {
            // Unsubscribed meanwhile: tell the broker too.
            let id = self.request_id();
            let m = Wire::Unsubscribe(Unsubscribe {
                subscription_id: ok.subscription_id,
            });
            self.send(id, &m);
            self.requests
                .insert(id, Pending::Unsubscribe { reply: None });
            return;
        };
        if s.epoch != epoch {
            return;
        }
        s.broker_id = Some(ok.subscription_id);
        s.start_offset.get_or_insert(ok.start_offset);
        self.by_broker_id.insert(ok.subscription_id, local_id);
        if let Some(r) = s.reply.take() {
            if r.send(Ok(ok.start_offset)).is_err() {
                // The subscriber gave up waiting (timeout).
                self.unsubscribe(local_id, None);
                return;
            }
        }
        // Everything acked while there was no subscription to ack on goes
        // now. Waiting for the next flush is not enough: the signal that
        // asked for it may have come and gone while the connection was
        // down, and redeliveries the filter hides make no new acks. The
        // broker would hold those messages until their ack deadline.
        if s.reg.shared.group {
            self.flush_sub_acks(local_id);
        }
    }

    fn on_publish_reply(
        &mut self,
        id: u64,
        mut f: InFlight,
        msg: Wire,
    ) -> std::result::Result<(), DropReason> {
        match msg {
            Wire::PublishOk(PublishOk {
                base_offset,
                duplicate,
                ..
            }) => {
                for (i, w) in f.batch.waiters.drain(..).enumerate() {
                    let _ = w.send(Ok(Receipt {
                        // A duplicate the broker no longer has the offsets
                        // of comes back as u64::MAX ("unknown"); keep it so
                        // rather than overflow.
                        offset: if base_offset == u64::MAX {
                            u64::MAX
                        } else {
                            base_offset + i as u64
                        },
                        duplicate,
                    }));
                }
            }
            Wire::Error(e) => {
                let code = ErrorCode::from_u16(e.code);
                if code == ErrorCode::ShuttingDown {
                    // Not stored; the broker is going away. Keep it for the
                    // next connection, where it is re-sent as is.
                    self.publishes.insert(id, f);
                } else if code == ErrorCode::NotLeader {
                    // A cluster node that does not lead the topic stored
                    // nothing: the batch is re-sent as is (same producer
                    // sequence) on a connection to the leader.
                    self.publishes.insert(id, f);
                    self.redirect = Some(leader_named(&e.message));
                    return Err(format!("not the leader: {}", e.message));
                } else if code == ErrorCode::SequenceGap && f.stale {
                    let seq = self.producers.get_mut(&f.batch.producer);
                    if let Some(seq) = seq {
                        reseal(&mut f.batch, seq.producer_id, seq.next_seq);
                        seq.next_seq += u64::from(f.batch.count);
                    }
                    f.stale = false;
                    let new_id = self.request_id();
                    if self.live {
                        put_publish(&mut self.out, new_id, &f.batch.topic, &f.batch.bytes);
                    }
                    self.publishes.insert(new_id, f);
                } else {
                    self.retire_identity(&f);
                    let err = Error::from_body(e.code, e.message);
                    for w in f.batch.waiters.drain(..) {
                        let _ = w.send(Err(err.clone()));
                    }
                }
            }
            m => return Err(format!("unexpected {:?} reply to a publish", m.opcode())),
        }
        Ok(())
    }

    /// A batch was rejected, so the broker's sequence for its producer did
    /// not advance: every later batch under the same identity would be a
    /// gap. The producer moves to a fresh identity, and the later batches
    /// already sent are marked to be re-sealed when their gap comes back.
    fn retire_identity(&mut self, f: &InFlight) {
        let Some(seq) = self.producers.get_mut(&f.batch.producer) else {
            return;
        };
        if seq.producer_id != f.batch.producer_id {
            return;
        }
        seq.producer_id = fresh_producer_id();
        seq.next_seq = 0;
        for other in self.publishes.values_mut() {
            if other.batch.producer == f.batch.producer
                && other.batch.producer_id == f.batch.producer_id
                && other.batch.base_sequence > f.batch.base_sequence
            {
                other.stale = true;
            }
        }
    }

    /// The connection dropped: forget per-connection ids, keep the rest.
    pub(crate) fn on_disconnect(&mut self) {
        // Emits taken but not yet sent become pending like the others.
        self.flush_emits();
        self.live = false;
        self.out.clear();
        self.by_broker_id.clear();
        let leaving: Vec<u64> = self
            .subs
            .iter()
            .filter(|(_, s)| s.leaving.is_some())
            .map(|(id, _)| *id)
            .collect();
        for local_id in leaving {
            // Not restored: its unconfirmed acks are given up, and the group
            // redelivers those messages (at least once, never lost).
            let Some(mut s) = self.subs.remove(&local_id) else {
                continue;
            };
            s.reg.shared.lock().drop_waiters();
            if let Some(reply) = s.leaving.take().flatten() {
                let _ = reply.send(Ok(()));
            }
        }
        for s in self.subs.values_mut() {
            s.broker_id = None;
            // The broker may have restarted without writing these.
            let unconfirmed = std::mem::take(&mut s.unconfirmed).into_iter();
            let rejected = std::mem::take(&mut s.rejected_acks).into_iter();
            for (kind, ranges) in unconfirmed.chain(rejected.map(|(_, k, r)| (k, r))) {
                s.unsent_acks.push(AckOp {
                    kind,
                    ranges,
                    waiters: Vec::new(),
                });
            }
        }
        let pending: Vec<(u64, Pending)> = self.requests.drain().collect();
        for (id, p) in pending {
            match p {
                Pending::Subscribe { .. } | Pending::Rejoin => {}
                Pending::Unsubscribe { reply } => {
                    if let Some(r) = reply {
                        let _ = r.send(Ok(()));
                    }
                }
                Pending::Ack {
                    local_id,
                    kind,
                    ranges,
                    waiters,
                    covered,
                } => {
                    if let Some(s) = self.subs.get_mut(&local_id) {
                        for (kind, ranges) in covered {
                            s.unsent_acks.push(AckOp {
                                kind,
                                ranges,
                                waiters: Vec::new(),
                            });
                        }
                        s.unsent_acks.push(AckOp {
                            kind,
                            ranges,
                            waiters,
                        });
                    }
                }
                Pending::Admin { msg, reply } => {
                    if !reply.is_closed() {
                        self.requests.insert(id, Pending::Admin { msg, reply });
                    }
                }
                Pending::Emits { msg, replies } => {
                    // Sent again whole, even if some callers gave up: the
                    // batch is one request.
                    if replies.iter().any(|r| !r.is_closed()) {
                        self.requests.insert(id, Pending::Emits { msg, replies });
                    }
                }
            }
        }
    }

    /// A new connection is up: re-subscribe everything, re-send every
    /// unconfirmed publish (same bytes, same order) and pending request.
    pub(crate) fn restore(&mut self) {
        self.live = true;
        if self.version < 3 {
            self.split_emit_batches();
        }
        // Rooms first: a room's log is read by its members only, so the
        // membership (gone if the grace period ran out) comes back before
        // its subscription does. The broker handles requests in order.
        let rooms: Vec<(String, bool)> = self.rooms.iter().map(|(r, d)| (r.clone(), *d)).collect();
        for (room, durable) in rooms {
            let id = self.request_id();
            self.send(
                id,
                &Wire::Join(JoinRoom {
                    room,
                    durable,
                    history: 0,
                }),
            );
            self.requests.insert(id, Pending::Rejoin);
        }
        let subs: Vec<u64> = self.subs.keys().copied().collect();
        for local_id in subs {
            self.subscribe(local_id);
        }
        let out = &mut self.out;
        for (id, f) in &self.publishes {
            put_publish(out, *id, &f.batch.topic, &f.batch.bytes);
        }
        // In the order they were first sent (ids grow): the broker keeps a
        // sender's emits to a room in the order it reads them, and the map
        // has no order of its own.
        let mut again: Vec<(u64, &Wire)> = self
            .requests
            .iter()
            .filter_map(|(id, p)| match p {
                Pending::Admin { msg, .. } | Pending::Emits { msg, .. } => Some((*id, msg)),
                _ => None,
            })
            .collect();
        again.sort_unstable_by_key(|(id, _)| *id);
        let out = &mut self.out;
        for (id, msg) in again {
            msg.encode(id, out);
        }
    }

    /// The new connection speaks a version without `EmitBatch` (a broker
    /// downgraded, another cluster node): each pending batch becomes its
    /// emits, one request each, in the batch's order and its place.
    fn split_emit_batches(&mut self) {
        if !self
            .requests
            .values()
            .any(|p| matches!(p, Pending::Emits { .. }))
        {
            return;
        }
        // Every request to be sent again gets a new id, in the old order,
        // so that the emits of a batch keep their place among the others
        // (after a disconnect only these are pending; see `on_disconnect`).
        let mut all: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, p)| matches!(p, Pending::Admin { .. } | Pending::Emits { .. }))
            .map(|(id, _)| *id)
            .collect();
        all.sort_unstable();
        for old in all {
            let Some(p) = self.requests.remove(&old) else {
                continue;
            };
            match p {
                Pending::Emits {
                    msg: Wire::EmitBatch(b),
                    replies,
                } => {
                    for (e, reply) in b.emits.into_iter().zip(replies) {
                        let id = self.request_id();
                        let msg = Wire::Emit(e);
                        self.requests.insert(id, Pending::Admin { msg, reply });
                    }
                }
                other => {
                    let id = self.request_id();
                    self.requests.insert(id, other);
                }
            }
        }
    }

    /// The client is finished: fail whatever is left.
    pub(crate) fn shutdown(&mut self, reason: &str, fail_subs: bool) {
        let err = Error::ConnectionLost(reason.to_string());
        for (_, mut f) in std::mem::take(&mut self.publishes) {
            for w in f.batch.waiters.drain(..) {
                let _ = w.send(Err(err.clone()));
            }
        }
        for (_, p) in self.requests.drain() {
            match p {
                Pending::Admin { reply, .. } => {
                    let _ = reply.send(Err(err.clone()));
                }
                Pending::Emits { replies, .. } => {
                    for reply in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
                Pending::Unsubscribe { reply: Some(r) } => {
                    let _ = r.send(Ok(()));
                }
                _ => {}
            }
        }
        for (_, mut s) in self.subs.drain() {
            s.reg.shared.closed.store(true, Ordering::Release);
            s.reg.shared.lock().drop_waiters();
            if let Some(r) = s.reply.take() {
                let _ = r.send(Err(err.clone()));
            } else if fail_subs {
                let _ = s.reg.tx.send(SubItem::Failed(err.clone()));
            }
        }
    }
}

/// The address a NotLeader message names (`...; leader: HOST:PORT`).
fn leader_named(message: &str) -> Option<String> {
    let a = message.rsplit_once("leader: ")?.1.trim();
    (!a.is_empty() && !a.contains(char::is_whitespace)).then(|| a.to_owned())
}

fn reseal(batch: &mut PublishBatch, producer_id: u64, base_sequence: u64) {
    let mut bytes = BytesMut::from(&batch.bytes[..]);
    set_producer(&mut bytes, producer_id, base_sequence);
    batch.bytes = bytes.freeze();
    batch.producer_id = producer_id;
    batch.base_sequence = base_sequence;
}

/// A random nonzero producer id.
pub(crate) fn fresh_producer_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

impl State {
    /// Pings the broker (request id 0: the Pong is not matched).
    pub(crate) fn send_ping(&mut self) {
        self.send(0, &Wire::Ping);
    }

    /// Answers a broker ping.
    pub(crate) fn send_pong(&mut self, id: u64) {
        self.send(id, &Wire::Pong);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use herald_protocol::frame::decode_frame;
    use tokio::sync::mpsc;

    use super::*;
    use crate::acks::{AckSignal, SubShared, SPARSE_ACKS, SPARSE_LINGER};

    fn an_emit(i: u64) -> herald_protocol::Emit {
        herald_protocol::Emit {
            target: herald_protocol::EmitTarget::Room("r".into()),
            event: "e".into(),
            payload: i.to_le_bytes().to_vec(),
            correlation: 0,
        }
    }

    fn payload_index(e: &herald_protocol::Emit) -> u64 {
        u64::from_le_bytes(e.payload[..8].try_into().expect("8 bytes"))
    }

    /// A live connection's state at protocol `version`.
    fn live(version: u16) -> State {
        State {
            live: true,
            version,
            ..State::default()
        }
    }

    /// Makes emit `i` (its payload says `i`) as a caller would; returns
    /// where its answer comes.
    fn request_emit(state: &mut State, i: u64) -> oneshot::Receiver<Result<Wire>> {
        let (reply, rx) = oneshot::channel();
        state.on_command(Command::Request {
            msg: Wire::Emit(an_emit(i)),
            reply,
        });
        rx
    }

    /// Requests not answered when the connection dropped (emits among
    /// them) go again in the order they were first sent.
    #[test]
    fn unanswered_requests_go_again_in_their_first_order() {
        let mut state = live(0);
        let _answers: Vec<_> = (0..50).map(|i| request_emit(&mut state, i)).collect();
        let first: Vec<u64> = sent(&mut state).into_iter().map(|(id, _)| id).collect();
        state.live = false;
        state.restore();
        let again: Vec<(u64, u64)> = sent(&mut state)
            .into_iter()
            .filter_map(|(id, m)| match m {
                Wire::Emit(e) => Some((id, payload_index(&e))),
                _ => None,
            })
            .collect();
        assert_eq!(again.iter().map(|(id, _)| *id).collect::<Vec<_>>(), first);
        let order: Vec<u64> = again.iter().map(|(_, i)| *i).collect();
        assert_eq!(order, (0..50).collect::<Vec<_>>());
    }

    /// A broker with a small frame limit gets batches well under it.
    #[test]
    fn emit_batches_stay_under_half_the_frame_limit() {
        let mut state = State {
            max_frame: 4096,
            ..live(3)
        };
        let _answers: Vec<_> = (0..200).map(|i| request_emit(&mut state, i)).collect();
        state.flush_emits();
        let mut out = state.out.clone();
        let mut sizes = Vec::new();
        while let Some(f) = decode_frame(&mut out, 1 << 20).expect("well-formed frame") {
            sizes.push(herald_protocol::HEADER_LEN + f.body.len());
        }
        assert!(sizes.len() > 1, "{sizes:?}");
        assert!(
            sizes
                .iter()
                .all(|s| *s <= 2048 + herald_protocol::HEADER_LEN),
            "{sizes:?}"
        );
        let order: Vec<u64> = sent(&mut state)
            .iter()
            .flat_map(|(_, m)| match m {
                Wire::EmitBatch(b) => b.emits.iter().map(payload_index).collect(),
                Wire::Emit(e) => vec![payload_index(e)],
                m => panic!("{m:?}"),
            })
            .collect();
        assert_eq!(order, (0..200).collect::<Vec<_>>());
    }

    /// On a version-3 connection the emits taken in one turn leave as one
    /// `EmitBatch`; its answer reaches each caller; after a reconnect to a
    /// version-2 broker a batch still pending goes again as lone emits, in
    /// order.
    #[test]
    fn emits_of_one_turn_leave_as_one_batch_and_split_for_an_older_broker() {
        let mut state = live(3);
        let mut answers: Vec<_> = (0..5).map(|i| request_emit(&mut state, i)).collect();
        assert!(
            sent(&mut state).is_empty(),
            "nothing leaves before the turn ends"
        );
        state.flush_emits();
        let frames = sent(&mut state);
        assert_eq!(frames.len(), 1, "{frames:?}");
        let (id, Wire::EmitBatch(b)) = &frames[0] else {
            panic!("{frames:?}")
        };
        assert_eq!(
            b.emits.iter().map(payload_index).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );

        // The answer: the third refused, one outcome missing.
        let ok = |n| {
            EmitOutcome::Ok(herald_protocol::EmitOk {
                recipients: n,
                skipped: 0,
            })
        };
        let refused = EmitOutcome::Err(herald_protocol::ErrorBody {
            code: ErrorCode::Unauthorized.as_u16(),
            message: "no".into(),
        });
        let results = vec![ok(1), ok(2), refused, ok(4)];
        state
            .on_reply(
                *id,
                Wire::EmitBatchOk(herald_protocol::EmitBatchOk { results }),
            )
            .expect("a known reply");
        let got: Vec<_> = answers
            .iter_mut()
            .map(|rx| rx.try_recv().expect("answered"))
            .collect();
        assert!(matches!(got[0], Ok(Wire::EmitOk(ref o)) if o.recipients == 1));
        assert!(matches!(got[1], Ok(Wire::EmitOk(ref o)) if o.recipients == 2));
        assert!(matches!(&got[2], Err(e) if e.code() == Some(ErrorCode::Unauthorized)));
        assert!(matches!(got[3], Ok(Wire::EmitOk(ref o)) if o.recipients == 4));
        assert!(matches!(got[4], Err(Error::Protocol(_))), "{:?}", got[4]);

        // A lone emit in a turn goes as a plain Emit.
        let _lone = request_emit(&mut state, 9);
        state.flush_emits();
        assert!(matches!(sent(&mut state)[..], [(_, Wire::Emit(_))]));

        // A batch pending at a disconnect, and the next broker speaks 2.
        let _later: Vec<_> = (10..13).map(|i| request_emit(&mut state, i)).collect();
        state.flush_emits();
        state.on_disconnect();
        state.version = 2;
        state.restore();
        let again: Vec<u64> = sent(&mut state)
            .iter()
            .filter_map(|(_, m)| match m {
                Wire::Emit(e) => Some(payload_index(e)),
                Wire::EmitBatch(_) => panic!("a batch to a version-2 broker"),
                _ => None,
            })
            .collect();
        assert_eq!(again, vec![9, 10, 11, 12]);
    }

    /// Every frame waiting in `out`, decoded (and `out` emptied).
    fn sent(state: &mut State) -> Vec<(u64, Wire)> {
        let mut buf = std::mem::take(&mut state.out);
        let mut frames = Vec::new();
        while let Some(f) = decode_frame(&mut buf, 1 << 20).expect("well-formed frame") {
            frames.push((f.header.request_id, Wire::decode(&f).expect("decodes")));
        }
        frames
    }

    /// A live connection's state with one group subscription, subscribed
    /// as broker id 7: its shared ack state and its stream's items.
    fn subscribed_to_a_group() -> (State, Arc<SubShared>, mpsc::UnboundedReceiver<SubItem>) {
        let mut state = State {
            live: true,
            ..State::default()
        };
        let shared = Arc::new(SubShared::new(
            1,
            true,
            Arc::new(AckSignal::default()),
            "t".into(),
            (10, 1 << 20),
            None,
        ));
        let (tx, items) = mpsc::unbounded_channel();
        let (reply, _answer) = oneshot::channel();
        let reg = SubRegistration {
            shared: shared.clone(),
            topic: "t".into(),
            group: Some("g".into()),
            start: StartPosition::Resume,
            prefetch_messages: 10,
            prefetch_bytes: 1 << 20,
            ack_timeout_ms: 0,
            max_deliveries: 0,
            tx,
        };
        state.on_command(Command::Subscribe { reg, reply });
        let id = subscribe_id(&sent(&mut state));
        state.on_reply(id, ok(7)).expect("subscribed");
        (state, shared, items)
    }

    /// The connection drops and comes back; the broker confirms the
    /// resubscribe as subscription `sub`.
    fn reconnect(state: &mut State, sub: u64) {
        state.on_disconnect();
        state.restore();
        let id = subscribe_id(&sent(state));
        state.on_reply(id, ok(sub)).expect("resubscribed");
    }

    /// The broker's SubscribeOk naming subscription `sub`.
    fn ok(sub: u64) -> Wire {
        Wire::SubscribeOk(SubscribeOk {
            subscription_id: sub,
            start_offset: 0,
        })
    }

    /// The request id of the one Subscribe in `frames`.
    fn subscribe_id(frames: &[(u64, Wire)]) -> u64 {
        let ids: Vec<u64> = frames
            .iter()
            .filter(|(_, m)| matches!(m, Wire::Subscribe(_)))
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(ids.len(), 1, "{frames:?}");
        ids[0]
    }

    /// Acks the app makes while the connection is down are sent right after
    /// the resubscribe is confirmed, without waiting for another flush: the
    /// wake-up they caused was spent while there was no subscription, and
    /// the redeliveries the filter hides make no new acks. (Without this the
    /// broker held those messages until their ack deadline.)
    #[test]
    fn acks_recorded_while_down_go_out_on_resubscribe() {
        let (mut state, shared, _rx) = subscribed_to_a_group();

        state.on_disconnect();
        shared.record(AckKind::Ack, 3, 0);
        shared.record(AckKind::Ack, 4, 0);
        // The flush the first ack asked for finds no connection.
        state.flush_acks();
        state.restore();
        let id = subscribe_id(&sent(&mut state));
        // ... and none, again, before the broker answers the resubscribe.
        state.flush_acks();
        assert!(sent(&mut state).is_empty());

        state.on_reply(id, ok(8)).expect("resubscribed");
        let acks: Vec<Ack> = sent(&mut state)
            .into_iter()
            .filter_map(|(_, m)| match m {
                Wire::Ack(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(
            acks,
            vec![Ack {
                subscription_id: 8,
                kind: AckKind::Ack,
                ranges: vec![(3, 4)],
            }]
        );
    }

    /// The Ack frames in `frames`, with their request ids.
    fn acks(frames: Vec<(u64, Wire)>) -> Vec<(u64, Ack)> {
        frames
            .into_iter()
            .filter_map(|(id, m)| match m {
                Wire::Ack(a) => Some((id, a)),
                _ => None,
            })
            .collect()
    }

    /// The ranges the subscription's stream was told are durable.
    fn durable_acks(items: &mut mpsc::UnboundedReceiver<SubItem>) -> Vec<(u64, u64)> {
        let mut durable = Vec::new();
        while let Ok(item) = items.try_recv() {
            if let SubItem::AcksDurable(r) = item {
                durable.extend(r);
            }
        }
        durable
    }

    /// Ack frames go without a request id (and so without a reply) until
    /// one in [`UNCONFIRMED_MAX`] asks for the confirm that covers them
    /// all; unconfirmed ones are sent again after a reconnect, and closing
    /// asks for a confirm of whatever is left.
    #[test]
    fn acks_go_unconfirmed_until_one_asks_for_a_confirm_of_them_all() {
        let (mut state, shared, mut items) = subscribed_to_a_group();

        let mut frames = Vec::new();
        for offset in 0..UNCONFIRMED_MAX as u64 {
            shared.record(AckKind::Ack, offset, 0);
            state.flush_acks();
            frames.extend(acks(sent(&mut state)));
        }
        let ids: Vec<u64> = frames.iter().map(|(id, _)| *id).collect();
        assert!(
            ids[..UNCONFIRMED_MAX - 1].iter().all(|&id| id == 0),
            "{ids:?}"
        );
        let confirming = ids[UNCONFIRMED_MAX - 1];
        assert_ne!(confirming, 0, "{ids:?}");
        assert!(durable_acks(&mut items).is_empty());
        state.on_reply(confirming, Wire::Ok).expect("reply");
        let all: Vec<(u64, u64)> = (0..UNCONFIRMED_MAX as u64).map(|o| (o, o)).collect();
        assert_eq!(
            durable_acks(&mut items),
            all,
            "one Ok confirms every frame before it"
        );

        // An unconfirmed ack is sent again on the next connection.
        shared.record(AckKind::Ack, 100, 0);
        state.flush_acks();
        assert_eq!(acks(sent(&mut state))[0].0, 0);
        reconnect(&mut state, 8);
        let resent = acks(sent(&mut state));
        assert_eq!(resent.len(), 1);
        assert_eq!(resent[0].1.ranges, vec![(100, 100)]);
        assert!(!state.is_drained(), "an unconfirmed ack is not drained");

        // Closing asks for a confirm of what is left, and waits for it.
        state.flush_acks_to_close();
        let last = acks(sent(&mut state));
        assert_eq!(last.len(), 1);
        assert_ne!(last[0].0, 0, "closing asks for a confirm");
        assert_eq!(last[0].1.ranges, vec![(100, 100)]);
        assert!(!state.is_drained());
        state.on_reply(last[0].0, Wire::Ok).expect("reply");
        assert!(state.is_drained());
        assert_eq!(durable_acks(&mut items), vec![(100, 100)]);
    }

    /// When the linger runs out, a subscription with fewer than
    /// [`SPARSE_ACKS`] recent acks keeps them for company (or until the
    /// first waited its sparse linger); that many go at once.
    #[test]
    fn a_few_acks_wait_for_company_when_the_linger_runs_out() {
        let (mut state, shared, _items) = subscribed_to_a_group();
        let now = std::time::Instant::now();
        for offset in 0..SPARSE_ACKS as u64 - 1 {
            shared.record(AckKind::Ack, offset, 0);
            let due = state
                .flush_lingering_acks(now)
                .expect("fewer than SPARSE_ACKS: still waiting");
            assert!(
                due > now && due <= now + SPARSE_LINGER + std::time::Duration::from_secs(1),
                "due within the sparse linger of the first"
            );
            assert!(acks(sent(&mut state)).is_empty());
        }
        shared.record(AckKind::Ack, SPARSE_ACKS as u64 - 1, 0);
        assert_eq!(
            state.flush_lingering_acks(now),
            None,
            "SPARSE_ACKS acks: nothing waits"
        );
        let frames = acks(sent(&mut state));
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].1.ranges, vec![(0, SPARSE_ACKS as u64 - 1)]);

        let lone = SPARSE_ACKS as u64;
        shared.record(AckKind::Ack, lone, 0);
        let later = std::time::Instant::now() + SPARSE_LINGER;
        assert_eq!(
            state.flush_lingering_acks(later),
            None,
            "a lone ack goes when due"
        );
        assert_eq!(acks(sent(&mut state))[0].1.ranges, vec![(lone, lone)]);
    }

    /// Once the client is closing, an ack recorded meanwhile does not
    /// linger: closing waits for every ack, and would wait out the linger.
    #[test]
    fn a_closing_client_does_not_hold_a_few_acks_back() {
        let (mut state, shared, _items) = subscribed_to_a_group();
        state.flush_acks_to_close();
        shared.record(AckKind::Ack, 0, 0);
        let now = std::time::Instant::now();
        assert_eq!(state.flush_lingering_acks(now), None, "nothing waits");
        let frames = acks(sent(&mut state));
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].1.ranges, vec![(0, 0)]);
        assert_ne!(frames[0].0, 0, "closing: it asks for a confirm");
    }

    /// An ack the broker did not take because it was shutting down (its
    /// group had stopped) is sent again on the next connection, with the
    /// frames its confirm covered; were it dropped, the filter would hide
    /// its redeliveries and nothing would ack them.
    #[test]
    fn acks_refused_while_the_broker_shuts_down_are_sent_again() {
        let (mut state, shared, _items) = subscribed_to_a_group();
        for offset in 0..UNCONFIRMED_MAX as u64 {
            shared.record(AckKind::Ack, offset, 0);
            state.flush_acks();
        }
        let frames = acks(sent(&mut state));
        let confirming = frames.last().expect("frames").0;
        assert_ne!(confirming, 0);
        let shutting_down = Wire::error(ErrorCode::ShuttingDown, "going away");
        state.on_reply(confirming, shutting_down).expect("reply");
        reconnect(&mut state, 8);
        let mut resent: Vec<(u64, u64)> = acks(sent(&mut state))
            .into_iter()
            .flat_map(|(_, a)| a.ranges)
            .collect();
        resent.sort_unstable();
        let all: Vec<(u64, u64)> = (0..UNCONFIRMED_MAX as u64).map(|o| (o, o)).collect();
        assert_eq!(crate::acks::merge(resent), crate::acks::merge(all));
    }

    fn storage_full() -> Wire {
        Wire::error(ErrorCode::StorageFull, "disk full")
    }

    /// An ack the broker could not write (full disk) is reported to its
    /// awaiting caller, re-sent after a reconnect, and forgotten (made
    /// durable for the filter) once a later ack is confirmed.
    #[tokio::test]
    async fn refused_acks_are_reported_resent_and_settled_by_a_later_confirm() {
        let (mut state, shared, mut items) = subscribed_to_a_group();

        let answer = shared.record_awaited(3, 0).expect("a group subscription");
        state.flush_acks();
        let sent_acks = acks(sent(&mut state));
        assert_eq!(sent_acks.len(), 1);
        state
            .on_reply(sent_acks[0].0, storage_full())
            .expect("reply");
        let e = answer.await.expect("answered").unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::StorageFull));
        assert!(shared.lock().is_done(3), "the filter keeps a refused ack");

        // A reconnect re-sends it, without asking for a confirm: the next
        // frame that asks covers it.
        reconnect(&mut state, 8);
        let resent = acks(sent(&mut state));
        assert_eq!(resent.len(), 1);
        assert_eq!(resent[0].0, 0, "no request id");
        assert_eq!(resent[0].1.ranges, vec![(3, 3)]);

        // That next frame is refused too: both are kept.
        let answer = shared.record_awaited(4, 0).expect("a group subscription");
        state.flush_acks();
        let refused = acks(sent(&mut state));
        assert_eq!(refused.len(), 1);
        assert_ne!(refused[0].0, 0, "an awaited ack asks for a confirm");
        state.on_reply(refused[0].0, storage_full()).expect("reply");
        assert!(answer.await.expect("answered").is_err());
        assert!(durable_acks(&mut items).is_empty());

        // A later ack confirmed on this connection settles them.
        let answer = shared.record_awaited(5, 0).expect("a group subscription");
        state.flush_acks();
        let later = acks(sent(&mut state));
        state.on_reply(later[0].0, Wire::Ok).expect("reply");
        answer.await.expect("answered").expect("confirmed");
        assert_eq!(durable_acks(&mut items), vec![(3, 3), (4, 4), (5, 5)]);
        // Nothing is left to re-send after another reconnect.
        reconnect(&mut state, 9);
        assert!(acks(sent(&mut state)).is_empty());
    }

    /// A subscription the broker ended (damaged data) reports the error on
    /// its stream, still sends the acks of what it handed out, and is not
    /// subscribed again after a reconnect: the damage stays until an
    /// operator repairs it, so re-subscribing would only fail again.
    #[test]
    fn a_subscription_the_broker_ended_is_reported_and_not_resubscribed() {
        let mut state = State {
            live: true,
            ..State::default()
        };
        let shared = Arc::new(SubShared::new(
            1,
            true,
            Arc::new(AckSignal::default()),
            "t".into(),
            (10, 1 << 20),
            None,
        ));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (reply, _answer) = oneshot::channel();
        let reg = SubRegistration {
            shared: shared.clone(),
            topic: "t".into(),
            group: Some("g".into()),
            start: StartPosition::Resume,
            prefetch_messages: 10,
            prefetch_bytes: 1 << 20,
            ack_timeout_ms: 0,
            max_deliveries: 0,
            tx,
        };
        state.on_command(Command::Subscribe { reg, reply });
        let id = subscribe_id(&sent(&mut state));
        let ok = Wire::SubscribeOk(SubscribeOk {
            subscription_id: 7,
            start_offset: 0,
        });
        state.on_reply(id, ok).expect("subscribed");
        state.on_subscription_error(SubscriptionError {
            subscription_id: 7,
            code: ErrorCode::Corrupt.as_u16(),
            message: "topic \"t\": records at offsets 5..=9 are damaged".into(),
        });
        match rx.try_recv() {
            Ok(SubItem::Failed(e)) => {
                assert_eq!(e.code(), Some(ErrorCode::Corrupt));
                assert!(e.to_string().contains("offsets 5..=9"), "{e}");
            }
            _ => panic!("the stream must be told"),
        }
        shared.record(AckKind::Ack, 4, 0);
        state.flush_acks();
        let acked = sent(&mut state)
            .iter()
            .any(|(_, m)| matches!(m, Wire::Ack(a) if a.subscription_id == 7));
        assert!(acked, "acks of what was handed out still go");

        state.on_disconnect();
        state.restore();
        let frames = sent(&mut state);
        assert!(
            !frames.iter().any(|(_, m)| matches!(m, Wire::Subscribe(_))),
            "not subscribed again: {frames:?}"
        );
    }
}
