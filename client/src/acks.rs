//! Acknowledgements: coalescing many `msg.ack()` calls into few Ack frames,
//! and the filter that hides redeliveries of messages this client already
//! acked.
//!
//! One [`SubShared`] per subscription is shared by the [`crate::Subscription`]
//! stream, every [`crate::Message`] it handed out, and the connection task.
//! Messages record their acks here (cheap: a lock and a vector push); the
//! connection task drains them into Ack frames within [`ACK_LINGER`] (a
//! few acks, fewer than [`SPARSE_ACKS`], within [`SPARSE_LINGER`]), or at
//! once when half the
//! subscription's prefetch window (at most [`FLUSH_AT`] acks) is pending,
//! or when a caller waits for the broker's answer. Most frames ask for no
//! answer ([`UNCONFIRMED_MAX`]).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use herald_protocol::AckKind;
use tokio::sync::{oneshot, Notify};

use crate::offsets::OffsetSet;
use crate::Result;

/// How long acks may wait to be gathered into one frame.
///
/// Why not 1 ms: every Ack frame is a socket write at each end and a
/// command at the broker. At 1,000 emits/s into a room of 100 members,
/// 20 ms instead of 1 took the emit-to-deliver p50 from 3.7 to 2.0 ms and
/// p99 from 10.2 to 7.2 ms on the two shared cores here, and a room of 100
/// at full speed from 1.07 to 1.28 M deliveries/s.
/// The broker never waits for them: a subscription flushes at once when
/// half its prefetch window is pending (see [`SubShared::new`]), and at
/// every ack when its ack timeout is short ([`EAGER_BELOW`]). A
/// subscription with only a few acks pending waits longer
/// ([`SPARSE_LINGER`]). What it widens: a message acked in the last 20 ms
/// (2 s for a subscription that acks little) before the process dies
/// comes again to its next run (the JavaScript client keeps 20 ms: a
/// reloaded page would show such an event again, docs/web.md).
pub(crate) const ACK_LINGER: Duration = Duration::from_millis(20);
/// How long a subscription's few pending acks (fewer than
/// [`SPARSE_ACKS`]) may wait for company once [`ACK_LINGER`] ran out,
/// counted from the first; at most a quarter of the ack timeout that
/// applies (the subscription's own, or the broker's default, which a
/// version-2 broker says in its `HelloOk`).
///
/// Why: a member of a small room hears an event every 50-100 ms, so with
/// 20 ms each event was an Ack frame of its own, two socket messages per
/// delivery with the Deliver; waiting for a second ack (up to 100 ms, as
/// Pulsar's consumers group acks by default) still left one Ack frame per
/// two deliveries, and those frames (a socket write and read, the broker's
/// ack and position write) were a third of the CPU of 200 rooms of 10,
/// where Socket.IO, which has no acks, was faster than Herald. Waiting
/// for eight acks or 500 ms: 1.3-1.5x the deliveries/s; in 1,500 rooms of
/// 10, where a member hears an event every 300 ms or so, 2 s instead of
/// 500 ms: another 1.3x (docs/performance.md).
/// A busy subscription, with eight acks pending at 20 ms, is not held back
/// (a flat 100 ms linger cost a room of 1,000 about 5% of its deliveries).
/// Kafka's consumers commit their offsets every 5 s by default.
pub(crate) const SPARSE_LINGER: Duration = Duration::from_secs(2);
/// Pending acks below which a subscription's acks wait for
/// [`SPARSE_LINGER`] rather than [`ACK_LINGER`].
pub(crate) const SPARSE_ACKS: usize = 8;
/// The longest wait of a few acks when the ack timeout is not known (a
/// broker speaking protocol version 1 does not say its default): what a
/// lone ack waited before version 2, so nothing waits longer against such
/// a broker than it did then.
pub(crate) const UNKNOWN_TIMEOUT_LINGER: Duration = Duration::from_millis(100);
/// A subscription whose ack timeout is below this flushes every ack at
/// once: a linger near the ack timeout would have the broker redeliver
/// what was acked (hidden by the filter, but sent for nothing).
pub(crate) const EAGER_BELOW: Duration = Duration::from_millis(400);
/// Most pending ack operations before the connection task is woken to
/// flush at once.
pub(crate) const FLUSH_AT: usize = 256;
/// Most Ack frames of one subscription sent without a request id (so
/// without a reply) before one that asks the broker to confirm them all.
///
/// Why: the broker answers an Ack that has a request id with an `Ok` once
/// it is durable, and a member of a small room acks about every event on
/// its own (an event every 100 ms, a flush every 20 ms then), so each delivery
/// cost three socket messages: the Deliver, the Ack and the `Ok`. The
/// broker applies a subscription's acks in the order they arrive and writes
/// its whole state, so the `Ok` to one frame confirms every frame sent
/// before it on the same connection. Until that `Ok`, the unconfirmed ones
/// are kept, to be sent again after a reconnect (acking twice is harmless)
/// and to hide their redeliveries. 16 bounds what is kept; a caller of
/// `ack_confirmed`, a Nack or an Extend, leaving, and closing ask at once.
pub(crate) const UNCONFIRMED_MAX: usize = 16;
/// Most ranges in one Ack frame, so a frame stays far below the frame limit
/// (a range is at most ~20 bytes of postcard).
pub(crate) const MAX_RANGES_PER_FRAME: usize = 8192;

/// A caller of [`crate::Message::ack_confirmed`]: the offset it acked and
/// where the broker's answer goes.
pub(crate) type AckWaiter = (u64, oneshot::Sender<Result<()>>);

/// Ack operations of one kind on their way to the broker, with the callers
/// waiting for the broker's answer about them.
#[derive(Debug)]
pub(crate) struct AckOp {
    pub(crate) kind: AckKind,
    pub(crate) ranges: Vec<(u64, u64)>,
    pub(crate) waiters: Vec<AckWaiter>,
}

impl AckOp {
    /// Splits into pieces of at most `max` ranges (one Ack frame each),
    /// each with the waiters whose offset it covers.
    pub(crate) fn split(self, max: usize) -> Vec<AckOp> {
        let mut waiters = self.waiters;
        let mut out = Vec::new();
        for chunk in self.ranges.chunks(max.max(1)) {
            let (mine, rest): (Vec<AckWaiter>, Vec<AckWaiter>) = waiters
                .into_iter()
                .partition(|(o, _)| chunk.iter().any(|&(a, b)| (a..=b).contains(o)));
            waiters = rest;
            out.push(AckOp {
                kind: self.kind,
                ranges: chunk.to_vec(),
                waiters: mine,
            });
        }
        // A waiter whose offset no range covers (cannot happen: it was
        // recorded with its offset) is answered rather than dropped.
        for (_, w) in waiters {
            let _ = w.send(Ok(()));
        }
        out
    }
}

/// Wakes the connection task when acks are waiting. One per client.
#[derive(Debug, Default)]
pub(crate) struct AckSignal {
    /// Woken when the first ack after a flush is recorded (the connection
    /// task then flushes after [`ACK_LINGER`]), or the [`SPARSE_ACKS`]th
    /// of a subscription whose few acks wait longer, or, with `urgent`,
    /// when one should go at once.
    pub(crate) notify: Notify,
    /// Set with the wake-up when a flush should not wait for the linger.
    pub(crate) urgent: AtomicBool,
    /// The broker's default ack timeout in ms, from its `HelloOk`
    /// (protocol version 2); 0 while unknown (a version-1 broker).
    broker_ack_timeout_ms: AtomicU32,
}

impl AckSignal {
    /// Learns the broker's default ack timeout (at each handshake: a
    /// reconnect may reach another broker).
    pub(crate) fn set_broker_ack_timeout(&self, ms: Option<u32>) {
        self.broker_ack_timeout_ms
            .store(ms.unwrap_or(0), Ordering::Relaxed);
    }

    fn broker_ack_timeout(&self) -> Option<Duration> {
        match self.broker_ack_timeout_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(u64::from(ms))),
        }
    }
}

/// The ack state of one subscription.
///
/// ### Invariants
/// - An offset in `acked` or below `floor` was acked (or terminated) by the
///   application; the subscription never yields it again.
/// - An offset leaves `acked` only after the broker confirmed the ack
///   durable, and only once every delivery received before that
///   confirmation has gone through the filter (the confirmation travels
///   through the same channel as the deliveries, see
///   [`crate::subscription`]). The broker sends no delivery of the offset
///   after that confirmation: it answers an ack only after the deliveries
///   it queued before the ack took effect.
#[derive(Debug, Default)]
pub(crate) struct AckState {
    /// Operations recorded and not yet handed to the connection task, one
    /// entry per kind, each with its offsets as inclusive ranges.
    pending: Vec<(AckKind, Vec<(u64, u64)>)>,
    /// Number of offsets recorded in `pending`.
    pending_count: usize,
    /// Their messages' payload and key bytes (for the flush rule).
    pending_bytes: u64,
    /// When the first of them was recorded.
    pending_since: Option<Instant>,
    /// Acked offsets whose ack the broker has not yet confirmed durable.
    acked: OffsetSet,
    /// Everything below this was acked with `ack_up_to`.
    floor: u64,
    /// Highest offset handed to the application (ephemeral resume point).
    pub(crate) last_delivered: Option<u64>,
    /// Callers of `ack_confirmed` whose ack is in `pending`.
    waiters: Vec<AckWaiter>,
}

impl AckState {
    /// Whether the application already acked `offset`.
    pub(crate) fn is_done(&self, offset: u64) -> bool {
        offset < self.floor || self.acked.contains(offset)
    }

    /// Records one operation on a message of `bytes`; returns how many
    /// operations, and of how many bytes, are now pending.
    fn record(&mut self, kind: AckKind, offset: u64, bytes: usize) -> (usize, u64) {
        if matches!(kind, AckKind::Ack | AckKind::Terminate) {
            self.acked.insert(offset);
        }
        let ranges = match self.pending.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, r)) => r,
            None => {
                self.pending.push((kind, Vec::new()));
                let last = self.pending.len() - 1;
                &mut self.pending[last].1
            }
        };
        match ranges.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(offset) => *end = offset,
            _ => ranges.push((offset, offset)),
        }
        self.pending_count += 1;
        self.pending_bytes = self.pending_bytes.saturating_add(bytes as u64);
        self.pending_since.get_or_insert_with(Instant::now);
        (self.pending_count, self.pending_bytes)
    }

    fn record_up_to(&mut self, offset: u64) -> (usize, u64) {
        self.floor = self.floor.max(offset.saturating_add(1));
        self.acked.remove_below(self.floor);
        self.pending.push((AckKind::AckUpTo, vec![(0, offset)]));
        self.pending_count += 1;
        self.pending_since.get_or_insert_with(Instant::now);
        (self.pending_count, self.pending_bytes)
    }

    /// Takes every pending operation, ranges sorted and merged per kind.
    pub(crate) fn drain(&mut self) -> Vec<(AckKind, Vec<(u64, u64)>)> {
        self.pending_count = 0;
        self.pending_bytes = 0;
        self.pending_since = None;
        let mut out = std::mem::take(&mut self.pending);
        for (kind, ranges) in &mut out {
            if *kind != AckKind::AckUpTo {
                *ranges = merge(std::mem::take(ranges));
            }
        }
        out
    }

    /// Takes every pending operation like [`Self::drain`], with the callers
    /// waiting for them (attached to the `Ack` operation).
    pub(crate) fn drain_ops(&mut self) -> Vec<AckOp> {
        let mut waiters = std::mem::take(&mut self.waiters);
        let mut ops: Vec<AckOp> = self
            .drain()
            .into_iter()
            .map(|(kind, ranges)| AckOp {
                kind,
                ranges,
                waiters: Vec::new(),
            })
            .collect();
        if let Some(op) = ops.iter_mut().find(|o| o.kind == AckKind::Ack) {
            op.waiters = std::mem::take(&mut waiters);
        }
        for (_, w) in waiters {
            // Only possible if the Ack was drained without its waiter.
            let _ = w.send(Ok(()));
        }
        ops
    }

    /// Forgets acked offsets the broker confirmed durable: it will not
    /// deliver them again.
    pub(crate) fn prune(&mut self, ranges: &[(u64, u64)]) {
        for &(a, b) in ranges {
            self.acked.remove_range(a, b);
        }
    }

    /// The subscription is gone: callers still waiting hear
    /// `ConnectionLost` (their sender is dropped).
    pub(crate) fn drop_waiters(&mut self) {
        self.waiters.clear();
    }

    pub(crate) fn has_pending(&self) -> bool {
        self.pending_count > 0
    }

    /// When the pending acks should go once [`ACK_LINGER`] ran out: at
    /// once (`now`) when [`SPARSE_ACKS`] or more are pending, `linger`
    /// after the first was recorded when fewer are; `None` when nothing is
    /// pending.
    pub(crate) fn due_at(&self, now: Instant, linger: Duration) -> Option<Instant> {
        match (self.pending_count, self.pending_since) {
            (0, _) => None,
            (n, Some(t)) if n < SPARSE_ACKS => Some(t + linger),
            _ => Some(now),
        }
    }
}

/// Sorts ranges and merges overlapping or adjacent ones.
pub(crate) fn merge(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some((_, end)) if a <= end.saturating_add(1) => *end = (*end).max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// State shared by a subscription's stream, its messages and the
/// connection task.
#[derive(Debug)]
pub(crate) struct SubShared {
    /// The client-local subscription id (stable across reconnects, unlike
    /// the broker's).
    pub(crate) local_id: u64,
    /// Whether this is a group subscription (acks mean something).
    pub(crate) group: bool,
    /// A std mutex, not a tokio one: it is held for a few pushes and never
    /// across an `.await`.
    state: Mutex<AckState>,
    signal: Arc<AckSignal>,
    /// Set when the subscription is closed; later acks are refused.
    pub(crate) closed: AtomicBool,
    /// The topic, for [`crate::Message::topic`]: kept here once rather
    /// than in every message.
    pub(crate) topic: Arc<str>,
    /// Pending acks, and their bytes, at which the connection task flushes
    /// at once: half the prefetch window.
    flush_at: (usize, u64),
    /// The subscription's own ack timeout, if it set one; otherwise the
    /// broker's default applies ([`AckSignal::set_broker_ack_timeout`]).
    own_ack_timeout: Option<Duration>,
}

impl SubShared {
    /// `window` is the subscription's prefetch window (messages, bytes):
    /// acks are flushed at once when half of either is pending, so that a
    /// broker holding back deliveries for want of credit never waits for
    /// [`ACK_LINGER`]. `ack_timeout` is the subscription's own, if it set
    /// one.
    pub(crate) fn new(
        local_id: u64,
        group: bool,
        signal: Arc<AckSignal>,
        topic: Arc<str>,
        window: (u32, u32),
        ack_timeout: Option<Duration>,
    ) -> SubShared {
        let half = |n: u32| u64::from(n).div_ceil(2).max(1);
        SubShared {
            local_id,
            group,
            state: Mutex::new(AckState::default()),
            signal,
            closed: AtomicBool::new(false),
            topic,
            flush_at: ((half(window.0) as usize).min(FLUSH_AT), half(window.1)),
            own_ack_timeout: ack_timeout,
        }
    }

    /// The ack timeout the broker applies to this subscription, if known.
    fn ack_timeout(&self) -> Option<Duration> {
        self.own_ack_timeout
            .or_else(|| self.signal.broker_ack_timeout())
    }

    /// Every ack goes at once: the ack timeout is below [`EAGER_BELOW`].
    fn eager(&self) -> bool {
        self.ack_timeout().is_some_and(|t| t < EAGER_BELOW)
    }

    /// How long fewer than [`SPARSE_ACKS`] pending acks may wait:
    /// [`SPARSE_LINGER`], or a quarter of the ack timeout if that is less
    /// (an ack must reach the broker well before the broker gives the
    /// message to someone else), or [`UNKNOWN_TIMEOUT_LINGER`] when the
    /// broker did not say its default.
    fn sparse_linger(&self) -> Duration {
        match self.ack_timeout() {
            Some(t) => SPARSE_LINGER.min(t / 4),
            None => UNKNOWN_TIMEOUT_LINGER,
        }
    }

    /// When this subscription's pending acks are due (see
    /// [`AckState::due_at`]).
    pub(crate) fn due_at(&self, now: Instant) -> Option<Instant> {
        let linger = self.sparse_linger();
        self.lock().due_at(now, linger)
    }

    /// The ack state. A poisoned lock (a panic while held, which only a bug
    /// here could cause) is recovered: the state is plain data, valid after
    /// every statement.
    pub(crate) fn lock(&self) -> MutexGuard<'_, AckState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self, (count, bytes): (usize, u64), urgent: bool) {
        if urgent || self.eager() || count >= self.flush_at.0 || bytes >= self.flush_at.1 {
            self.signal.urgent.store(true, Ordering::Release);
            self.signal.notify.notify_one();
        } else if count == 1 || count == SPARSE_ACKS {
            // The first ack starts the linger; the eighth ends the longer
            // wait of a few (see [`SPARSE_LINGER`]).
            self.signal.notify.notify_one();
        }
    }

    /// Records an ack operation on one offset, of a message whose payload
    /// and key are `bytes` long.
    pub(crate) fn record(&self, kind: AckKind, offset: u64, bytes: usize) {
        if !self.group {
            return;
        }
        let n = self.lock().record(kind, offset, bytes);
        // A Nack asks for a redelivery and an Extend must arrive before
        // the deadline it pushes back: neither waits to be gathered.
        self.wake(n, matches!(kind, AckKind::Nack { .. } | AckKind::Extend));
    }

    /// Records an ack of `offset` whose caller waits for the broker's
    /// answer; `None` on an ephemeral subscription (nothing to confirm), or
    /// once the subscription is closed (the waiter would never be
    /// answered: a closed subscription's waiters are dropped by
    /// [`AckState::drop_waiters`] after `closed` is set). Sent at once,
    /// with whatever else is pending: the caller waits for the answer.
    pub(crate) fn record_awaited(
        &self,
        offset: u64,
        bytes: usize,
    ) -> Option<oneshot::Receiver<Result<()>>> {
        if !self.group {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let n = {
            let mut st = self.lock();
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            st.waiters.push((offset, tx));
            st.record(AckKind::Ack, offset, bytes)
        };
        self.wake(n, true);
        Some(rx)
    }

    /// Records "everything up to and including `offset` is done".
    pub(crate) fn record_up_to(&self, offset: u64) {
        if !self.group {
            return;
        }
        let n = self.lock().record_up_to(offset);
        self.wake(n, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(window: (u32, u32)) -> SubShared {
        SubShared::new(
            1,
            true,
            Arc::new(AckSignal::default()),
            "t".into(),
            window,
            None,
        )
    }

    fn urgent(s: &SubShared) -> bool {
        s.signal.urgent.swap(false, Ordering::AcqRel)
    }

    #[test]
    fn acks_wait_for_the_linger_until_half_the_window_is_pending() {
        // 10 messages of prefetch: the 5th pending ack goes at once, so a
        // broker out of credit never waits for the linger.
        let s = sub((10, 1 << 20));
        for o in 0..4 {
            s.record(AckKind::Ack, o, 10);
            assert!(!urgent(&s), "ack {o} of 10 should wait");
        }
        s.record(AckKind::Ack, 4, 10);
        assert!(urgent(&s));
        s.lock().drain();
        s.record(AckKind::Ack, 5, 10);
        assert!(!urgent(&s), "the count starts again after a flush");

        // A window of one message: every ack at once.
        let s = sub((1, 1 << 20));
        s.record(AckKind::Ack, 0, 10);
        assert!(urgent(&s));

        // Half the byte window: two big messages of a 1 MiB window.
        let s = sub((10_000, 1 << 20));
        s.record(AckKind::Ack, 0, 300_000);
        assert!(!urgent(&s));
        s.record(AckKind::Ack, 1, 300_000);
        assert!(urgent(&s));

        // A big window flushes at FLUSH_AT, not at its half.
        let s = sub((10_000, u32::MAX));
        for o in 0..FLUSH_AT as u64 - 1 {
            s.record(AckKind::Ack, o, 1);
        }
        assert!(!urgent(&s));
        s.record(AckKind::Ack, FLUSH_AT as u64, 1);
        assert!(urgent(&s));
    }

    /// A subscription with a short ack timeout does not wait for the
    /// linger: the broker would redeliver before the ack arrived.
    #[test]
    fn a_short_ack_timeout_flushes_every_ack_at_once() {
        let signal = Arc::new(AckSignal::default());
        let short = Some(EAGER_BELOW - Duration::from_millis(1));
        let s = SubShared::new(1, true, signal.clone(), "t".into(), (10, 1 << 20), short);
        s.record(AckKind::Ack, 0, 10);
        assert!(urgent(&s), "a short ack timeout: at once");
        let long = Some(EAGER_BELOW);
        let s = SubShared::new(1, true, signal, "t".into(), (10, 1 << 20), long);
        s.record(AckKind::Ack, 0, 10);
        assert!(!urgent(&s), "a long ack timeout: after the linger");
    }

    /// A Nack asks for a redelivery and an Extend must beat the deadline
    /// it pushes back: neither waits to be gathered with other acks.
    #[test]
    fn nacks_and_extends_go_at_once() {
        let s = sub((100, 1 << 20));
        s.record(AckKind::Ack, 0, 10);
        assert!(!urgent(&s), "an ack waits");
        s.record(AckKind::Nack { delay_ms: 0 }, 1, 10);
        assert!(urgent(&s), "a nack does not");
        s.record(AckKind::Extend, 2, 10);
        assert!(urgent(&s), "an extend does not");
    }

    /// A few acks wait at most a quarter of the ack timeout that applies:
    /// the subscription's own, else the broker's default (protocol
    /// version 2 says it); 100 ms when neither is known; not at all below
    /// [`EAGER_BELOW`] (a broker whose default is 200 ms would otherwise
    /// redeliver, and dead-letter, what was acked).
    #[test]
    fn a_few_acks_wait_no_longer_than_a_quarter_of_the_ack_timeout() {
        let due = |broker_ms: Option<u32>, own: Option<Duration>| {
            let signal = Arc::new(AckSignal::default());
            signal.set_broker_ack_timeout(broker_ms);
            let s = SubShared::new(1, true, signal, "t".into(), (100, 1 << 20), own);
            s.record(AckKind::Ack, 0, 10);
            if urgent(&s) {
                return None;
            }
            let since = s.lock().pending_since.expect("an ack is pending");
            Some(s.due_at(since).expect("an ack is pending") - since)
        };
        let ms = Duration::from_millis;
        assert_eq!(due(Some(30_000), None), Some(SPARSE_LINGER));
        assert_eq!(due(Some(1_000), None), Some(ms(250)));
        assert_eq!(due(Some(200), None), None, "a short default: at once");
        assert_eq!(due(None, None), Some(UNKNOWN_TIMEOUT_LINGER));
        assert_eq!(due(Some(200), Some(ms(30_000))), Some(SPARSE_LINGER));
        assert_eq!(due(None, Some(ms(1_000))), Some(ms(250)));
    }

    #[test]
    fn an_awaited_ack_goes_at_once() {
        let s = sub((10_000, 1 << 20));
        s.record(AckKind::Ack, 0, 1);
        assert!(!urgent(&s));
        let _answer = s.record_awaited(1, 1).expect("a group subscription");
        assert!(urgent(&s));
    }

    #[test]
    fn consecutive_acks_coalesce_into_ranges() {
        let mut s = AckState::default();
        for o in [1, 2, 3, 7, 8, 5] {
            s.record(AckKind::Ack, o, 0);
        }
        s.record(AckKind::Nack { delay_ms: 0 }, 4, 0);
        let d = s.drain();
        assert_eq!(
            d,
            vec![
                (AckKind::Ack, vec![(1, 3), (5, 5), (7, 8)]),
                (AckKind::Nack { delay_ms: 0 }, vec![(4, 4)]),
            ]
        );
        assert!(!s.has_pending());
    }

    #[test]
    fn filter_hides_acked_until_confirmed() {
        let mut s = AckState::default();
        s.record(AckKind::Ack, 10, 0);
        s.record(AckKind::Nack { delay_ms: 0 }, 11, 0);
        assert!(s.is_done(10));
        assert!(!s.is_done(11));
        s.prune(&[(0, 10)]);
        assert!(!s.is_done(10));
    }

    #[test]
    fn ack_up_to_moves_the_floor() {
        let mut s = AckState::default();
        s.record(AckKind::Ack, 20, 0);
        s.record_up_to(9);
        assert!(s.is_done(0) && s.is_done(9) && s.is_done(20));
        assert!(!s.is_done(10));
        let d = s.drain();
        assert_eq!(d[1], (AckKind::AckUpTo, vec![(0, 9)]));
    }

    #[test]
    fn awaited_acks_travel_with_the_frame_that_carries_their_offset() {
        let mut s = AckState::default();
        let (tx1, _rx1) = oneshot::channel();
        let (tx9, _rx9) = oneshot::channel();
        s.waiters.push((1, tx1));
        s.record(AckKind::Ack, 1, 0);
        s.waiters.push((9, tx9));
        s.record(AckKind::Ack, 9, 0);
        s.record(AckKind::Nack { delay_ms: 0 }, 5, 0);
        let ops = s.drain_ops();
        let ack = ops.into_iter().find(|o| o.kind == AckKind::Ack).unwrap();
        assert_eq!(ack.waiters.len(), 2);
        let parts = ack.split(1);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].ranges, vec![(1, 1)]);
        assert_eq!(parts[0].waiters[0].0, 1);
        assert_eq!(parts[1].waiters[0].0, 9);
    }

    #[test]
    fn merge_joins_adjacent_and_overlapping() {
        assert_eq!(
            merge(vec![(5, 6), (1, 2), (3, 3), (6, 9)]),
            vec![(1, 3), (5, 9)]
        );
        assert_eq!(merge(vec![(1, 1), (3, 3)]), vec![(1, 1), (3, 3)]);
    }
}
