//! Acknowledgement tracking for one consumer group: which offsets are done,
//! which are out with a member, and which wait to be delivered again.
//!
//! Deliveries are tracked per *chunk* (the part of one stored batch handed to
//! one member), not per message, so the hot path costs one map entry per
//! batch. Acks arrive as offset ranges and resolve offsets inside chunks.
//!
//! ### Invariants
//! - Every offset below `floor` is done (acked, terminated or dead-lettered).
//! - An offset in `floor..next_fresh` is in exactly one of: a chunk
//!   (unresolved bit), `pending`, or done.
//! - Chunks and pending ranges never overlap each other or themselves.
//! - Offsets at or above `next_fresh` were never delivered.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use herald_protocol::AckKind;
use serde::{Deserialize, Serialize};

/// An identifier for a group member (one subscription on one connection).
pub type MemberId = u64;

/// Part of one batch, delivered to one member.
#[derive(Debug, Clone)]
struct Chunk {
    last: u64,
    member: MemberId,
    deadline: Instant,
    /// Which delivery of these offsets this is (1 = first).
    delivery: u32,
    /// Bytes of the batch, charged to the member's byte window.
    bytes: u32,
    /// One bit per offset `first..=last`; set = resolved for this chunk.
    resolved: Vec<u64>,
    unresolved: u32,
    /// No offset below `first + low` is unresolved.
    low: u32,
}

impl Chunk {
    fn is_resolved(&self, i: u64) -> bool {
        self.resolved[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    fn resolve(&mut self, i: u64) -> bool {
        let w = &mut self.resolved[(i / 64) as usize];
        let bit = 1u64 << (i % 64);
        if *w & bit != 0 {
            return false;
        }
        *w |= bit;
        self.unresolved -= 1;
        true
    }
    fn first_unresolved(&mut self, first: u64) -> u64 {
        let len = self.last - first + 1;
        while (self.low as u64) < len && self.is_resolved(self.low as u64) {
            self.low += 1;
        }
        first + self.low as u64
    }
}

/// A range waiting for (re)delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    last: u64,
    ready_at: Instant,
    /// Deliveries so far.
    deliveries: u32,
}

/// Credit given back to a member when its deliveries are resolved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub messages: u32,
    pub bytes: u32,
}

/// What a ready pending range asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub first: u64,
    pub last: u64,
    pub deliveries: u32,
}

/// The persisted form: enough to resume exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub floor: u64,
    pub next_fresh: u64,
    /// Not-done ranges in `floor..next_fresh`, with their delivery counts.
    pub undone: Vec<(u64, u64, u32)>,
    pub redelivered: u64,
    pub dead_lettered: u64,
    /// Acked ranges at or above `next_fresh`.
    pub done_ahead: Vec<(u64, u64)>,
}

/// The tracker. See the module doc for its invariants.
#[derive(Debug)]
pub struct AckTracker {
    floor: u64,
    next_fresh: u64,
    chunks: BTreeMap<u64, Chunk>,
    /// Every chunk's deadline with its first offset, so that the next
    /// deadline and the expired chunks are found without scanning every
    /// chunk (a member may hold thousands; the actor asks at every turn).
    deadlines: BTreeSet<(Instant, u64)>,
    pending: BTreeMap<u64, Pending>,
    /// Acked offsets at or above `next_fresh`: a client that reconnects
    /// re-sends acks for messages the (restarted) broker has not delivered
    /// again yet. Fresh delivery skips them. Start -> inclusive end.
    done_ahead: BTreeMap<u64, u64>,
    /// Ranges being copied to the dead-letter topic (first -> last and
    /// delivery count): taken from pending and not done yet, so they hold
    /// the floor and are saved as undone until the copy is durable (a
    /// crash mid-copy dead-letters them again: at least once, never lost).
    dead_lettering: BTreeMap<u64, (u64, u32)>,
    pub redelivered: u64,
    pub dead_lettered: u64,
}

/// Most separate ranges kept in `done_ahead`; acks past it are dropped
/// (the messages are then delivered again: at least once, never lost).
pub const MAX_DONE_AHEAD_RANGES: usize = 65_536;

impl AckTracker {
    /// A tracker whose first delivery will be `start`.
    pub fn new(start: u64) -> Self {
        AckTracker {
            floor: start,
            next_fresh: start,
            chunks: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            pending: BTreeMap::new(),
            done_ahead: BTreeMap::new(),
            dead_lettering: BTreeMap::new(),
            redelivered: 0,
            dead_lettered: 0,
        }
    }

    /// Restores from a snapshot: every undone range becomes ready now.
    pub fn restore(s: &Snapshot, now: Instant) -> Self {
        let mut t = AckTracker::new(s.floor);
        t.next_fresh = s.next_fresh.max(s.floor);
        t.redelivered = s.redelivered;
        t.dead_lettered = s.dead_lettered;
        for &(a, b) in &s.done_ahead {
            if a <= b && a >= t.next_fresh {
                t.done_ahead.insert(a, b);
            }
        }
        for &(a, b, d) in &s.undone {
            if a <= b && a >= t.floor && b < t.next_fresh {
                t.pending.insert(
                    a,
                    Pending {
                        last: b,
                        ready_at: now,
                        deliveries: d,
                    },
                );
            }
        }
        t
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }
    pub fn next_fresh(&self) -> u64 {
        self.next_fresh
    }
    /// Offsets out with members and not yet resolved.
    pub fn in_flight(&self) -> u64 {
        self.chunks.values().map(|c| c.unresolved as u64).sum()
    }
    /// Offsets waiting to be redelivered.
    pub fn pending_count(&self) -> u64 {
        self.pending.iter().map(|(a, p)| p.last - a + 1).sum()
    }

    /// Offsets below `end` (the log's next offset) that are not done: `end`
    /// minus the floor, less the offsets above the floor already done (acked
    /// out of order, terminated or dead-lettered, whether delivered or acked
    /// ahead of delivery).
    pub fn lag(&self, end: u64) -> u64 {
        if end <= self.floor {
            return 0;
        }
        // Below `next_fresh` every offset is done, out with a member
        // (unresolved in a chunk) or pending; above it, none was delivered.
        let dead_lettering: u64 = self
            .dead_lettering
            .iter()
            .map(|(a, (b, _))| b - a + 1)
            .sum();
        let delivered_undone = self.in_flight() + self.pending_count() + dead_lettering;
        let fresh = self.next_fresh.max(self.floor);
        let acked_ahead: u64 = self
            .done_ahead
            .iter()
            .filter(|(a, b)| **a < end && **b >= fresh)
            .map(|(a, b)| (*b).min(end - 1) - (*a).max(fresh) + 1)
            .sum();
        let undelivered = end.saturating_sub(fresh).saturating_sub(acked_ahead);
        (delivered_undone + undelivered).min(end - self.floor)
    }

    /// Moves the start of fresh deliveries (group reset, retention skipping
    /// deleted offsets). Only valid with nothing in flight or pending below.
    pub fn skip_to(&mut self, offset: u64) {
        if offset > self.next_fresh {
            self.next_fresh = offset;
        }
        self.pending.retain(|_, p| p.last >= offset);
        if let Some((&a, &p)) = self.pending.range(..offset).next_back() {
            self.pending.remove(&a);
            self.pending.insert(offset, p);
        }
        self.recompute_floor();
    }

    /// Forgets everything and starts at `offset` (group reset with no members).
    pub fn reset(&mut self, offset: u64) {
        self.chunks.clear();
        self.deadlines.clear();
        self.pending.clear();
        self.done_ahead.clear();
        // A copy still running ends unheard (see `end_dead_letter`).
        self.dead_lettering.clear();
        self.floor = offset;
        self.next_fresh = offset;
    }

    /// Records a delivery of `first..=last` to `member`. Fresh deliveries
    /// must start at `next_fresh`; redeliveries must come from [`Self::take_ready`].
    pub fn deliver(
        &mut self,
        first: u64,
        last: u64,
        member: MemberId,
        deadline: Instant,
        delivery: u32,
        bytes: u32,
    ) {
        debug_assert!(first <= last);
        if first >= self.next_fresh {
            self.next_fresh = last + 1;
        }
        let len = last - first + 1;
        self.deadlines.insert((deadline, first));
        let replaced = self.chunks.insert(
            first,
            Chunk {
                last,
                member,
                deadline,
                delivery,
                bytes,
                resolved: vec![0; len.div_ceil(64) as usize],
                unresolved: len as u32,
                low: 0,
            },
        );
        if let Some(old) = replaced {
            if old.deadline != deadline {
                self.deadlines.remove(&(old.deadline, first));
            }
        }
        if delivery > 1 {
            self.redelivered += len;
        }
    }

    /// The first pending range that is due, trimmed to at most `max` offsets;
    /// it is removed from pending (the caller delivers or dead-letters it).
    pub fn take_ready(&mut self, now: Instant, max: u64) -> Option<Ready> {
        let (&a, &p) = self.pending.iter().find(|(_, p)| p.ready_at <= now)?;
        self.pending.remove(&a);
        let last = p.last.min(a + max.max(1) - 1);
        if last < p.last {
            self.pending.insert(last + 1, Pending { ..p });
        }
        Some(Ready {
            first: a,
            last,
            deliveries: p.deliveries,
        })
    }

    /// Puts back the tail of a ready range that was not delivered.
    pub fn untake(&mut self, first: u64, last: u64, deliveries: u32, now: Instant) {
        self.pending.insert(
            first,
            Pending {
                last,
                ready_at: now,
                deliveries,
            },
        );
    }

    /// Marks a range done without delivery (dead-lettered).
    pub fn mark_dead_lettered(&mut self, first: u64, last: u64) {
        self.dead_lettered += last - first + 1;
        self.recompute_floor();
    }

    /// A range from [`Self::take_ready`] is being copied to the dead-letter
    /// topic; it stays undone until [`Self::end_dead_letter`].
    pub fn begin_dead_letter(&mut self, first: u64, last: u64, deliveries: u32) {
        self.dead_lettering.insert(first, (last, deliveries));
    }

    /// The copy of the range starting at `first` ended: done if `copied`,
    /// else pending again from `retry_at`. False if the range is no longer
    /// being dead-lettered (the group was reset meanwhile).
    pub fn end_dead_letter(&mut self, first: u64, copied: bool, retry_at: Instant) -> bool {
        let Some((last, deliveries)) = self.dead_lettering.remove(&first) else {
            return false;
        };
        if copied {
            self.mark_dead_lettered(first, last);
        } else {
            self.untake(first, last, deliveries, retry_at);
        }
        true
    }

    /// The earliest time something is due: a deadline or a pending range.
    pub fn next_timer(&self, now: Instant) -> Option<Instant> {
        let d = self.deadlines.first().map(|(t, _)| *t);
        // A redelivery that is already due needs no timer: it goes out at
        // the next dispatch, which credit (an ack) or a member (a join)
        // brings. A past instant here would wake the actor at once, again
        // and again, while no member can take it.
        let p = self
            .pending
            .values()
            .map(|p| p.ready_at)
            .filter(|t| *t > now)
            .min();
        match (d, p) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether something is pending and due.
    pub fn has_ready(&self, now: Instant) -> bool {
        self.pending.values().any(|p| p.ready_at <= now)
    }

    /// Applies an ack-like operation from `member` over `ranges`, returning
    /// the credit released per member.
    ///
    /// Ack and Terminate count whoever holds the offset (the acking client
    /// may have reconnected as a new member), remove it from pending, and
    /// remember it if it was not delivered yet. AckUpTo covers `member`'s
    /// own deliveries up to the bound; Nack and Extend act on `member`'s own.
    pub fn apply(
        &mut self,
        member: MemberId,
        kind: AckKind,
        ranges: &[(u64, u64)],
        now: Instant,
        ack_timeout: Duration,
    ) -> Vec<(MemberId, Released)> {
        let mut rel = Vec::new();
        match kind {
            AckKind::AckUpTo => {
                let upto = ranges.iter().map(|r| r.1).max().unwrap_or(0);
                self.resolve(Some(member), 0, upto, &mut rel, |_, _| {});
            }
            AckKind::Ack | AckKind::Terminate => {
                for &(a, b) in ranges {
                    if a > b {
                        continue;
                    }
                    self.resolve(None, a, b, &mut rel, |_, _| {});
                    self.remove_pending(a, b);
                    self.add_done_ahead(a, b);
                }
            }
            AckKind::Nack { delay_ms } => {
                let ready_at = now + Duration::from_millis(delay_ms as u64);
                let mut back = Vec::new();
                for &(a, b) in ranges {
                    if a > b {
                        continue;
                    }
                    self.resolve(Some(member), a, b, &mut rel, |o, d| back.push((o, d)));
                }
                self.push_pending_offsets(&back, ready_at);
            }
            AckKind::Extend => {
                for &(a, b) in ranges {
                    for (&first, c) in self.chunks.range_mut(..=b) {
                        if c.last >= a && c.member == member {
                            self.deadlines.remove(&(c.deadline, first));
                            c.deadline = now + ack_timeout;
                            self.deadlines.insert((c.deadline, first));
                        }
                    }
                }
            }
        }
        self.recompute_floor();
        rel
    }

    /// Remembers the part of `a..=b` at or above `next_fresh`.
    fn add_done_ahead(&mut self, a: u64, b: u64) {
        let a = a.max(self.next_fresh);
        if a > b || self.done_ahead.len() >= MAX_DONE_AHEAD_RANGES {
            return;
        }
        // Merge with overlapping or adjacent ranges.
        let (mut lo, mut hi) = (a, b);
        let touching: Vec<u64> = self
            .done_ahead
            .range(..=b.saturating_add(1))
            .filter(|(_, e)| e.saturating_add(1) >= a)
            .map(|(s, _)| *s)
            .collect();
        for st in touching {
            if let Some(e) = self.done_ahead.remove(&st) {
                lo = lo.min(st);
                hi = hi.max(e);
            }
        }
        self.done_ahead.insert(lo, hi);
    }

    /// If `offset` (a fresh offset about to be delivered) was acked ahead,
    /// skips `next_fresh` past that acked range and returns true.
    pub fn skip_done_ahead(&mut self, offset: u64) -> bool {
        let Some((&a, &b)) = self.done_ahead.range(..=offset).next_back() else {
            return false;
        };
        if b < offset {
            return false;
        }
        self.done_ahead.remove(&a);
        if b >= self.next_fresh {
            self.next_fresh = b + 1;
        }
        self.recompute_floor();
        true
    }

    /// The first acked-ahead offset above `offset`, which a fresh delivery
    /// starting at `offset` must stop before.
    pub fn next_done_ahead(&self, offset: u64) -> Option<u64> {
        self.done_ahead.range(offset..).next().map(|(a, _)| *a)
    }

    /// Deadlines that passed: their unresolved offsets go back to pending
    /// (after the backoff for their delivery count). Returns released credit
    /// per member.
    pub fn expire(
        &mut self,
        now: Instant,
        backoff: &dyn Fn(u32) -> Duration,
    ) -> Vec<(MemberId, Released)> {
        let due: Vec<u64> = self
            .deadlines
            .range(..=(now, u64::MAX))
            .map(|(_, first)| *first)
            .collect();
        self.requeue_chunks(due, now, backoff)
    }

    /// A member left: everything it held goes back to pending, ready now.
    pub fn remove_member(&mut self, member: MemberId, now: Instant) {
        let held: Vec<u64> = self
            .chunks
            .iter()
            .filter(|(_, c)| c.member == member)
            .map(|(a, _)| *a)
            .collect();
        // Leaving is not the member's failure to process: no backoff.
        self.requeue_chunks(held, now, &|_| Duration::ZERO);
    }

    fn requeue_chunks(
        &mut self,
        firsts: Vec<u64>,
        now: Instant,
        backoff: &dyn Fn(u32) -> Duration,
    ) -> Vec<(MemberId, Released)> {
        let mut out = Vec::new();
        for first in firsts {
            let Some(c) = self.chunks.remove(&first) else {
                continue;
            };
            self.deadlines.remove(&(c.deadline, first));
            let mut offs = Vec::new();
            for i in 0..=(c.last - first) {
                if !c.is_resolved(i) {
                    offs.push((first + i, c.delivery));
                }
            }
            let released = Released {
                messages: c.unresolved,
                bytes: c.bytes,
            };
            out.push((c.member, released));
            self.push_pending_offsets(&offs, now + backoff(c.delivery));
        }
        self.recompute_floor();
        out
    }

    fn push_pending_offsets(&mut self, offs: &[(u64, u32)], ready_at: Instant) {
        let mut i = 0;
        while i < offs.len() {
            let (start, d) = offs[i];
            let mut end = start;
            while i + 1 < offs.len() && offs[i + 1].0 == end + 1 && offs[i + 1].1 == d {
                i += 1;
                end += 1;
            }
            self.pending.insert(
                start,
                Pending {
                    last: end,
                    ready_at,
                    deliveries: d,
                },
            );
            i += 1;
        }
    }

    fn remove_pending(&mut self, a: u64, b: u64) {
        let hits: Vec<u64> = self
            .pending
            .range(..=b)
            .filter(|(_, p)| p.last >= a)
            .map(|(s, _)| *s)
            .collect();
        for s in hits {
            if let Some(p) = self.pending.remove(&s) {
                if s < a {
                    self.pending.insert(s, Pending { last: a - 1, ..p });
                }
                if p.last > b {
                    self.pending.insert(b + 1, p);
                }
            }
        }
    }

    /// Resolves the unresolved offsets of chunks that overlap `a..=b` (only
    /// `member`'s chunks when given), crediting each chunk's holder.
    fn resolve(
        &mut self,
        member: Option<MemberId>,
        a: u64,
        b: u64,
        rel: &mut Vec<(MemberId, Released)>,
        mut on_resolved: impl FnMut(u64, u32),
    ) {
        let starts: Vec<u64> = self
            .chunks
            .range(..=b)
            .filter(|(_, c)| c.last >= a && member.is_none_or(|m| c.member == m))
            .map(|(s, _)| *s)
            .collect();
        for first in starts {
            let Some(c) = self.chunks.get_mut(&first) else {
                continue;
            };
            let mut r = Released::default();
            let lo = a.max(first) - first;
            let hi = b.min(c.last) - first;
            for i in lo..=hi {
                if c.resolve(i) {
                    r.messages += 1;
                    on_resolved(first + i, c.delivery);
                }
            }
            let holder = c.member;
            if c.unresolved == 0 {
                r.bytes += c.bytes;
                self.deadlines.remove(&(c.deadline, first));
                self.chunks.remove(&first);
            }
            if r != Released::default() {
                match rel.iter_mut().find(|(m, _)| *m == holder) {
                    Some((_, acc)) => {
                        acc.messages += r.messages;
                        acc.bytes += r.bytes;
                    }
                    None => rel.push((holder, r)),
                }
            }
        }
    }

    fn recompute_floor(&mut self) {
        let mut f = self.next_fresh;
        if let Some((&first, _)) = self.chunks.iter().next() {
            if let Some(c) = self.chunks.get_mut(&first) {
                f = f.min(c.first_unresolved(first));
            }
        }
        if let Some((&a, _)) = self.pending.iter().next() {
            f = f.min(a);
        }
        if let Some((&a, _)) = self.dead_lettering.iter().next() {
            f = f.min(a);
        }
        if f > self.floor {
            self.floor = f;
        }
    }

    /// The state to persist.
    pub fn snapshot(&self) -> Snapshot {
        let mut undone: Vec<(u64, u64, u32)> = Vec::new();
        for (&first, c) in &self.chunks {
            let mut i = 0;
            let len = c.last - first + 1;
            while i < len {
                if c.is_resolved(i) {
                    i += 1;
                    continue;
                }
                let s = i;
                while i < len && !c.is_resolved(i) {
                    i += 1;
                }
                undone.push((first + s, first + i - 1, c.delivery));
            }
        }
        for (&a, p) in &self.pending {
            undone.push((a, p.last, p.deliveries));
        }
        for (&a, &(b, d)) in &self.dead_lettering {
            undone.push((a, b, d));
        }
        undone.sort_unstable();
        Snapshot {
            floor: self.floor,
            next_fresh: self.next_fresh,
            undone,
            redelivered: self.redelivered,
            dead_lettered: self.dead_lettered,
            done_ahead: self.done_ahead.iter().map(|(a, b)| (*a, *b)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_backoff(_: u32) -> Duration {
        Duration::ZERO
    }

    /// A range being copied to the dead-letter topic (the copy runs beside
    /// the group's set) holds the floor and is saved as undone until the
    /// copy is durable, however the acks around it move; a failed copy
    /// puts it back to pending, due at the retry instant.
    #[test]
    fn a_range_being_dead_lettered_stays_undone_until_copied() {
        let now = Instant::now();
        let s = Duration::from_secs;
        let snap = Snapshot {
            floor: 0,
            next_fresh: 1,
            undone: vec![(0, 0, 5)],
            ..Default::default()
        };
        let mut t = AckTracker::restore(&snap, now);
        let r = t.take_ready(now, 10).expect("offset 0 is due");
        assert_eq!((r.first, r.last, r.deliveries), (0, 0, 5));
        t.begin_dead_letter(r.first, r.last, r.deliveries);
        t.deliver(1, 3, 1, now + s(30), 1, 30);
        t.apply(1, AckKind::Ack, &[(1, 3)], now, s(30));
        assert_eq!(t.floor(), 0, "the copy is not durable yet");
        assert_eq!(t.snapshot().undone, vec![(0, 0, 5)]);
        assert!(!t.has_ready(now), "not handed out again meanwhile");
        // A failed copy: pending again, from the retry instant.
        assert!(t.end_dead_letter(0, false, now + s(1)));
        assert!(!t.has_ready(now) && t.has_ready(now + s(1)));
        let r = t.take_ready(now + s(1), 10).unwrap();
        t.begin_dead_letter(r.first, r.last, r.deliveries);
        assert!(t.end_dead_letter(0, true, now));
        assert_eq!(t.floor(), 4);
        assert_eq!(t.dead_lettered, 1);
        assert!(t.snapshot().undone.is_empty());
        // A copy that ends after a reset is ignored.
        t.begin_dead_letter(4, 4, 5);
        t.reset(10);
        assert!(!t.end_dead_letter(4, true, now));
        assert_eq!(t.floor(), 10);
    }

    /// What a member held goes back to pending, due now: that needs no
    /// timer (the next member or ack dispatches it). A timer in the past
    /// made the actor of a group without members spin at full speed.
    #[test]
    fn due_redeliveries_set_no_timer() {
        let now = Instant::now();
        let mut t = AckTracker::new(0);
        t.deliver(0, 9, 1, now + Duration::from_secs(30), 1, 100);
        assert_eq!(t.next_timer(now), Some(now + Duration::from_secs(30)));
        t.remove_member(1, now);
        assert!(t.has_ready(now));
        assert_eq!(t.next_timer(now), None);
        assert_eq!(t.next_timer(now + Duration::from_secs(1)), None);
    }

    /// The deadline index follows every change to the chunks: acks,
    /// extends, expiry and members leaving; the next timer is the earliest
    /// deadline of what is still in flight.
    #[test]
    fn the_next_deadline_follows_acks_extends_and_expiry() {
        let now = Instant::now();
        let s = Duration::from_secs;
        let mut t = AckTracker::new(0);
        for i in 0..100u64 {
            t.deliver(i, i, 1 + i % 2, now + s(10 + i), 1, 10);
        }
        assert_eq!(t.next_timer(now), Some(now + s(10)));
        // Acking the oldest moves the next timer to the next oldest.
        t.apply(1, AckKind::Ack, &[(0, 0)], now, s(30));
        assert_eq!(t.next_timer(now), Some(now + s(11)));
        // Extending offset 1 (member 2) pushes it past the others.
        t.apply(2, AckKind::Extend, &[(1, 1)], now, s(500));
        assert_eq!(t.next_timer(now), Some(now + s(12)));
        // Expiry takes exactly the chunks due by then.
        let released = t.expire(now + s(20), &|_| Duration::ZERO);
        let n: u32 = released.iter().map(|(_, r)| r.messages).sum();
        assert_eq!(n, 9, "offsets 2..=10");
        assert_eq!(t.next_timer(now + s(20)), Some(now + s(21)));
        // A member leaving takes its deadlines with it.
        t.remove_member(1, now + s(20));
        t.remove_member(2, now + s(20));
        assert_eq!(t.next_timer(now + s(20)), None);
        assert_eq!(t.deadlines.len(), t.chunks.len());
    }

    #[test]
    fn acks_advance_the_floor_in_order_only() {
        let now = Instant::now();
        let mut t = AckTracker::new(0);
        let dl = now + Duration::from_secs(30);
        t.deliver(0, 9, 1, dl, 1, 100);
        t.deliver(10, 19, 1, dl, 1, 100);
        let r = t.apply(1, AckKind::Ack, &[(10, 19)], now, Duration::from_secs(1));
        assert_eq!(
            r,
            vec![(
                1,
                Released {
                    messages: 10,
                    bytes: 100
                }
            )]
        );
        assert_eq!(t.floor(), 0);
        t.apply(1, AckKind::Ack, &[(0, 4)], now, Duration::from_secs(1));
        assert_eq!(t.floor(), 5);
        t.apply(1, AckKind::Ack, &[(5, 9)], now, Duration::from_secs(1));
        assert_eq!(t.floor(), 20);
        assert_eq!(t.in_flight(), 0);
        // A duplicate ack releases nothing.
        let r = t.apply(1, AckKind::Ack, &[(0, 19)], now, Duration::from_secs(1));
        assert!(r.is_empty());
    }

    #[test]
    fn nack_and_expiry_requeue_with_delivery_counts() {
        let now = Instant::now();
        let mut t = AckTracker::new(0);
        t.deliver(0, 3, 1, now + Duration::from_millis(10), 1, 40);
        t.apply(
            1,
            AckKind::Nack { delay_ms: 0 },
            &[(1, 1)],
            now,
            Duration::ZERO,
        );
        let r = t.take_ready(now, 100).unwrap();
        assert_eq!(
            r,
            Ready {
                first: 1,
                last: 1,
                deliveries: 1
            }
        );
        t.deliver(1, 1, 2, now + Duration::from_secs(9), 2, 40);
        let later = now + Duration::from_millis(20);
        let rel = t.expire(later, &no_backoff);
        assert_eq!(
            rel,
            vec![(
                1,
                Released {
                    messages: 3,
                    bytes: 40
                }
            )]
        );
        assert_eq!(
            t.take_ready(later, 100),
            Some(Ready {
                first: 0,
                last: 0,
                deliveries: 1
            })
        );
        assert_eq!(
            t.take_ready(later, 100),
            Some(Ready {
                first: 2,
                last: 3,
                deliveries: 1
            })
        );
        assert_eq!(t.floor(), 0);
        assert_eq!(t.redelivered, 1);
    }

    #[test]
    fn snapshot_restores_undone_ranges() {
        let now = Instant::now();
        let mut t = AckTracker::new(5);
        t.deliver(5, 14, 1, now + Duration::from_secs(5), 1, 10);
        t.apply(1, AckKind::Ack, &[(5, 6), (9, 9)], now, Duration::ZERO);
        let s = t.snapshot();
        assert_eq!(s.floor, 7);
        assert_eq!(s.next_fresh, 15);
        assert_eq!(s.undone, vec![(7, 8, 1), (10, 14, 1)]);
        let mut r = AckTracker::restore(&s, now);
        assert_eq!(r.floor(), 7);
        assert_eq!(
            r.take_ready(now, 100),
            Some(Ready {
                first: 7,
                last: 8,
                deliveries: 1
            })
        );
        assert_eq!(
            r.take_ready(now, 2),
            Some(Ready {
                first: 10,
                last: 11,
                deliveries: 1
            })
        );
    }

    #[test]
    fn ack_of_pending_offsets_counts_as_done() {
        let now = Instant::now();
        let mut t = AckTracker::new(0);
        t.deliver(0, 1, 1, now, 1, 1);
        t.expire(now, &no_backoff);
        t.apply(1, AckKind::Ack, &[(0, 1)], now, Duration::ZERO);
        assert_eq!(t.floor(), 2);
        assert!(t.take_ready(now, 10).is_none());
    }

    #[test]
    fn acks_ahead_of_delivery_are_skipped_and_survive_a_snapshot() {
        let now = Instant::now();
        let mut t = AckTracker::new(0);
        // A reconnecting client acks 5..=7 before the broker delivers them.
        t.apply(9, AckKind::Ack, &[(5, 7)], now, Duration::ZERO);
        let s = t.snapshot();
        assert_eq!(s.done_ahead, vec![(5, 7)]);
        let mut r = AckTracker::restore(&s, now);
        assert!(!r.skip_done_ahead(0));
        assert_eq!(r.next_done_ahead(0), Some(5));
        r.deliver(0, 4, 1, now + Duration::from_secs(5), 1, 1);
        assert!(r.skip_done_ahead(5));
        assert_eq!(r.next_fresh(), 8);
        r.apply(1, AckKind::Ack, &[(0, 4)], now, Duration::ZERO);
        assert_eq!(r.floor(), 8);
    }

    #[test]
    fn an_ack_counts_whoever_holds_the_offset() {
        let now = Instant::now();
        let mut t = AckTracker::new(0);
        t.deliver(0, 1, 1, now + Duration::from_secs(5), 2, 10);
        // Member 2 is the same client after a reconnect.
        let r = t.apply(2, AckKind::Ack, &[(0, 1)], now, Duration::ZERO);
        assert_eq!(
            r,
            vec![(
                1,
                Released {
                    messages: 2,
                    bytes: 10
                }
            )]
        );
        assert_eq!(t.floor(), 2);
    }

    #[test]
    fn lag_counts_only_offsets_not_done() {
        let now = Instant::now();
        let dl = now + Duration::from_secs(30);
        let mut t = AckTracker::new(0);
        assert_eq!(t.lag(10), 10);
        t.deliver(0, 9, 1, dl, 1, 100);
        // Acks out of order: 0 is still out, so the floor stays at 0.
        t.apply(1, AckKind::Ack, &[(1, 4), (7, 7)], now, Duration::ZERO);
        assert_eq!(t.floor(), 0);
        assert_eq!(t.lag(10), 5, "0, 5, 6, 8, 9 are not done");
        // More in the log than delivered.
        assert_eq!(t.lag(15), 10);
        // A nacked offset is pending: still not done.
        t.apply(
            1,
            AckKind::Nack { delay_ms: 0 },
            &[(5, 5)],
            now,
            Duration::ZERO,
        );
        assert_eq!(t.lag(10), 5);
        // Acks ahead of delivery count as done.
        t.apply(2, AckKind::Ack, &[(12, 13)], now, Duration::ZERO);
        assert_eq!(t.lag(15), 8);
        assert_eq!(
            t.lag(13),
            7,
            "0, 5, 6, 8, 9, 10, 11: of 12..=13 only 12 is in the log"
        );
        t.apply(
            1,
            AckKind::Ack,
            &[(0, 0), (5, 6), (8, 9)],
            now,
            Duration::ZERO,
        );
        assert_eq!(t.floor(), 10);
        assert_eq!(t.lag(10), 0);
        assert_eq!(t.lag(15), 3, "10, 11, 14");
        assert_eq!(t.lag(3), 0, "an end below the floor");
    }

    #[test]
    fn ack_up_to_and_member_removal() {
        let now = Instant::now();
        let mut t = AckTracker::new(0);
        let dl = now + Duration::from_secs(5);
        t.deliver(0, 4, 1, dl, 1, 1);
        t.deliver(5, 9, 2, dl, 1, 1);
        t.apply(1, AckKind::AckUpTo, &[(0, 100)], now, Duration::ZERO);
        assert_eq!(t.floor(), 5);
        t.remove_member(2, now);
        assert_eq!(
            t.take_ready(now, 100),
            Some(Ready {
                first: 5,
                last: 9,
                deliveries: 1
            })
        );
    }
}
