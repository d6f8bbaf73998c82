//! Handing out one group's messages to its members: what is due for
//! redelivery first, then what is new, round robin, as far as each
//! member's credit and the memory budget go.

use std::time::{Duration, Instant};

use herald_protocol::Batch;

use super::dlq;
use super::set::Event;
use super::state::{Ctx, Group};
use crate::memory::Level;
use crate::outbox::Out;
use crate::storage::{Log, StorageError};

/// Most bytes read from the log for one delivery round to one member.
const MAX_READ_BYTES: usize = 1 << 20;

/// Most bytes read for one member in one round: the memory budget's
/// per-connection allowance, so that a thousand members reading at once
/// stay within the budget.
fn read_limit(cx: &Ctx) -> usize {
    MAX_READ_BYTES.min(cx.memory.allowance())
}

/// Most reads a room's set keeps past their round.
const HELD_MAX: usize = 8;

/// A shared read takes this many times the records the member asking may
/// take (within [`read_limit`]): enough for the members near it, and a
/// read that only its own member uses costs a few rounds' worth, not a
/// megabyte.
const SHARED_READ_CREDITS: u32 = 8;

/// A kept read that no member has read from for this long is dropped.
pub(super) const HELD_FOR: Duration = Duration::from_secs(1);

/// The fresh batches read for the members of a set's groups. In a room's
/// set the members are usually near one another: a read from an offset
/// takes as much as any member may take ([`read_limit`]) and every member
/// whose next offset lies inside it takes its share, instead of each
/// locking the log and collecting the same batches again. A read that ends
/// where the log ended is forgotten after its round (the log may have more
/// since). Up to [`HELD_MAX`] reads that end before it are kept across
/// rounds until no member has read from them for [`HELD_FOR`] (the set
/// wakes then to drop them; the least recently used goes first when a
/// new one needs room): members that fell behind the tail cache read from
/// disk, each at its own offset, a round often serving one member, and
/// without them every one of them read (and checked) its own megabyte for
/// the few records its credit took (docs/performance.md, "Members behind
/// the tail cache"). A set of one reads exactly what its member may take,
/// and keeps nothing.
pub(super) struct Reads {
    /// Share reads among groups (a room's set).
    shared: bool,
    held: Vec<Held>,
}

/// One read: contiguous batches.
struct Held {
    batches: Vec<Batch>,
    /// They reach what was the log's end when they were read.
    at_end: bool,
    /// When a member last read from them.
    used: Instant,
}

impl Held {
    /// The index of the batch that holds `from`, if one does.
    fn holding(&self, from: u64) -> Option<usize> {
        let first = self.batches.first()?;
        let last = self.batches.last()?;
        if from < first.base_offset() || from > last.last_offset() {
            return None;
        }
        Some(self.batches.partition_point(|b| b.last_offset() < from))
    }
}

impl Reads {
    pub fn new(shared: bool) -> Reads {
        Reads {
            shared,
            held: Vec::new(),
        }
    }

    /// The end of a round: forgets the reads that reached the log's end,
    /// those no member read from for [`HELD_FOR`], and all of a set of one.
    pub fn end_round(&mut self, now: Instant) {
        let shared = self.shared;
        self.held
            .retain(|h| shared && !h.at_end && now.duration_since(h.used) < HELD_FOR);
    }

    /// When the set must wake to drop a kept read (then [`Reads::end_round`]).
    pub fn expiry(&self) -> Option<Instant> {
        self.held.iter().map(|h| h.used + HELD_FOR).min()
    }

    /// What `Log::read(from, max_bytes, max_records)` returns, from a
    /// kept shared read when one holds `from` (`max_bytes` is at most
    /// `limit`, which a shared read used). `now`: the round's instant, when
    /// the read it serves from was last used.
    fn read(
        &mut self,
        log: &Log,
        from: u64,
        max_bytes: usize,
        max_records: u32,
        limit: usize,
        now: Instant,
    ) -> Result<&[Batch], StorageError> {
        let found = if self.shared {
            self.held
                .iter()
                .enumerate()
                .find_map(|(i, h)| h.holding(from).map(|start| (i, start)))
        } else {
            None
        };
        let (i, start) = match found {
            Some(found) => found,
            None => {
                let batches = if self.shared {
                    log.read(from, limit, max_records.saturating_mul(SHARED_READ_CREDITS))?
                } else {
                    log.read(from, max_bytes, max_records)?
                };
                // Only a shared read is kept past its round.
                let at_end = !self.shared
                    || batches
                        .last()
                        .is_none_or(|b| b.last_offset() + 1 >= log.next_offset());
                let max = if self.shared { HELD_MAX } else { 1 };
                if self.held.len() >= max {
                    let lru = (0..self.held.len())
                        .min_by_key(|&i| self.held[i].used)
                        .unwrap_or(0);
                    self.held.swap_remove(lru);
                }
                self.held.push(Held {
                    batches,
                    at_end,
                    used: now,
                });
                (self.held.len() - 1, 0)
            }
        };
        let h = &mut self.held[i];
        h.used = now;
        let rest = &h.batches[start..];
        let n = prefix(rest, max_bytes, max_records);
        Ok(&rest[..n])
    }
}

/// How many of `batches` a read limited to `max_bytes` and `max_records`
/// takes: the first always, then while both limits hold (as the log's
/// reader does).
fn prefix(batches: &[Batch], max_bytes: usize, max_records: u32) -> usize {
    let (mut bytes, mut records) = (0usize, 0u64);
    for (i, b) in batches.iter().enumerate() {
        bytes = bytes.saturating_add(b.len_bytes());
        records += u64::from(b.record_count());
        if i > 0 && (bytes > max_bytes || records > u64::from(max_records)) {
            return i;
        }
    }
    batches.len()
}

impl Group {
    /// Picks the next member (round robin) that has credit and a live
    /// connection. Members whose connection is behind while the memory budget is
    /// nearly spent are skipped (see [`crate::memory`]).
    fn pick_member(&mut self, cx: &Ctx) -> Option<usize> {
        let n = self.members.len();
        for k in 0..n {
            let i = (self.next_member + k) % n;
            let m = &self.members[i];
            if m.credit() > 0 && !m.failed && !m.outbox.is_closed() {
                let level = cx.memory.delivery_level(m.outbox.queued_bytes());
                if !cx.memory.admits(level) {
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
    fn tell_skipped(&self, cx: &Ctx, first: u64, last: u64) {
        tracing::warn!(
            topic = %cx.topic.name,
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

    /// Hands out what is due and what is new, as far as credit goes. Each
    /// member's deliveries are collected in `out` (empty, its allocation
    /// reused from round to round) and handed to its connection at once.
    pub fn dispatch(&mut self, cx: &Ctx, reads: &mut Reads, out: &mut Vec<Out>) {
        self.memory_wait = None;
        if self.members.is_empty() {
            return;
        }
        let log = cx.topic.log.clone();
        let first = log.first_offset();
        if self.tracker.next_fresh() < first {
            self.tell_skipped(cx, self.tracker.next_fresh(), first - 1);
            self.tracker.skip_to(first);
        }
        let now = Instant::now();
        while let Some(mi) = self.pick_member(cx) {
            let credit = self.members[mi].credit() as u64;
            if let Some(r) = self.tracker.take_ready(now, credit) {
                if r.deliveries >= self.max_deliveries {
                    self.dead_letter(cx, r.first, r.last, r.deliveries);
                    continue;
                }
                let batch = match log.read(r.first, 1, 1) {
                    Ok(v) => v.into_iter().next(),
                    Err(e) => {
                        self.tracker.untake(r.first, r.last, r.deliveries, now);
                        self.fail_members(cx, &e);
                        return;
                    }
                };
                let Some(b) = batch else {
                    // Gone to retention: nothing left to deliver.
                    self.tell_skipped(cx, r.first, r.last);
                    self.tracker.mark_dead_lettered(r.first, r.last);
                    continue;
                };
                if b.base_offset() > r.first {
                    // The head of the range was deleted by retention.
                    let cut = (b.base_offset() - 1).min(r.last);
                    self.tell_skipped(cx, r.first, cut);
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
                self.send(cx, mi, (r.first, last), r.deliveries + 1, b, now, out);
                self.members[mi].outbox.push_all(out);
                continue;
            }
            let fresh = self.tracker.next_fresh();
            if fresh >= log.next_offset() {
                break;
            }
            let m = &self.members[mi];
            let budget =
                (m.prefetch_bytes.saturating_sub(m.out_bytes) as usize).clamp(1, read_limit(cx));
            let limit = read_limit(cx);
            let batches = match reads.read(&log, fresh, budget, credit as u32, limit, now) {
                Ok(v) => v,
                Err(e) => {
                    self.fail_members(cx, &e);
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
                    self.send(cx, mi, (from, last), 1, b.clone(), now, out);
                }
            }
            // Everything this member gets in this round, in one hand-over.
            self.members[mi].outbox.push_all(out);
        }
    }

    /// A read the group needs failed: every member would hit it next, so
    /// each is told now (SubscriptionError) and gets nothing more; the
    /// group's position stays where it is.
    fn fail_members(&mut self, cx: &Ctx, e: &crate::storage::StorageError) {
        crate::subscription::report_read_error(&cx.topic, e);
        for m in self.members.iter_mut().filter(|m| !m.failed) {
            tracing::warn!(group = %self.name, topic = %cx.topic.name, client = %m.client_id, "ending a group subscription: the group's next records cannot be read");
            crate::subscription::push_read_error(&m.outbox, m.sub, &cx.topic.name, e);
            m.failed = true;
        }
    }

    /// Records a delivery to member `mi` and adds it to `out`, which the
    /// caller hands to the member's outbox.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        cx: &Ctx,
        mi: usize,
        (first, last): (u64, u64),
        delivery: u32,
        b: Batch,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        let m = &mut self.members[mi];
        let bytes = b.len_bytes() as u32;
        m.out_messages += (last - first + 1) as u32;
        m.out_bytes = m.out_bytes.saturating_add(bytes);
        let deadline = now + m.ack_timeout;
        let (id, sub) = (m.id, m.sub);
        out.push(Out::Deliver {
            subscription_id: sub,
            first,
            last,
            delivery,
            batch: b.into_bytes(),
        });
        cx.topic.record_delivered(last - first + 1);
        self.tracker
            .deliver(first, last, id, deadline, delivery, bytes);
    }

    /// Copies offsets that were delivered too often to the dead-letter
    /// topic, on a task of its own: the copy waits for the dead-letter
    /// topic's fsync, which must not hold up the other groups of the set (a
    /// room's members) nor this group's other deliveries. The offsets stay
    /// undone until the set hears that the copy is durable
    /// ([`Group::on_dead_lettered`]).
    fn dead_letter(&mut self, cx: &Ctx, first: u64, last: u64, deliveries: u32) {
        self.tracker.begin_dead_letter(first, last, deliveries);
        let topic = cx.topic.clone();
        let suffix = cx.defaults.dlq_suffix.clone();
        let group = self.name.clone();
        let done = cx.events.clone();
        let key = self.key;
        tokio::spawn(async move {
            let r = dlq::forward(&topic, &suffix, &group, first, last, deliveries).await;
            let _ = done.send(Event::DeadLettered(Box::new(DeadLettered {
                key,
                first,
                failed: r.err().map(|e| e.to_string()),
            })));
        });
    }

    /// The copy of the range starting at `first` to the dead-letter topic
    /// ended: the offsets are done, or (it failed) redelivered or copied
    /// again after a second. A failure is logged as an ERROR once, not at
    /// every retry of every range (a lasting one logged hundreds of lines
    /// a second), and its end once.
    pub fn on_dead_lettered(&mut self, first: u64, failed: Option<String>) {
        match &failed {
            Some(e) if !self.dead_letter_failing => {
                self.dead_letter_failing = true;
                tracing::error!(group = %self.name, error = %e, "dead-lettering failed; retrying every second (logged again once it works)");
            }
            Some(e) => {
                tracing::debug!(group = %self.name, error = %e, "dead-lettering failed again")
            }
            None if self.dead_letter_failing => {
                self.dead_letter_failing = false;
                tracing::info!(group = %self.name, "dead-lettering works again");
            }
            None => {}
        }
        let copied = failed.is_none();
        let retry = Instant::now() + Duration::from_secs(1);
        if self.tracker.end_dead_letter(first, copied, retry) && copied {
            self.persist.mark_dirty();
        }
    }
}

/// A copy to the dead-letter topic ended (see [`Group::dead_letter`]).
#[derive(Debug)]
pub struct DeadLettered {
    /// The group's key in its set.
    pub key: u64,
    /// The first offset of the range copied.
    pub first: u64,
    /// Why the copy failed; `None`: it is durable.
    pub failed: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::{BatchBuilder, RecordRef};

    fn batch(records: usize) -> Batch {
        let mut b = BatchBuilder::new();
        for _ in 0..records {
            b.push(&RecordRef {
                payload: &[0; 10],
                timestamp: 1,
                ..Default::default()
            });
        }
        Batch::validate(b.finish(0, 0)).unwrap()
    }

    /// A member's share of a shared read is what its own read would have
    /// returned: the first batch always, then while both limits hold.
    #[test]
    fn a_share_of_a_read_keeps_the_readers_limits() {
        let v = vec![batch(2), batch(3), batch(1)];
        let len = v[0].len_bytes();
        assert_eq!(prefix(&v, 1, 1), 1, "the first batch always");
        assert_eq!(prefix(&v, usize::MAX, 4), 1);
        assert_eq!(prefix(&v, usize::MAX, 5), 2);
        assert_eq!(prefix(&v, usize::MAX, 6), 3);
        assert_eq!(prefix(&v, len + v[1].len_bytes(), 100), 2);
        assert_eq!(prefix(&[], 1, 1), 0);
    }

    /// Members behind the tail cache share disk reads: a read from an
    /// offset inside a kept read is served from it (the same bytes, not a
    /// second read), in later rounds too, until no member has read from it
    /// for HELD_FOR; a read that reached the log's end is forgotten after
    /// its round; at most HELD_MAX are kept, the least recently used going.
    #[tokio::test]
    async fn members_inside_a_kept_read_share_it_across_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::storage::LogConfig {
            tail_cache_bytes: 0,
            ..Default::default()
        };
        let log = Log::open(dir.path(), cfg).unwrap();
        for _ in 0..60 {
            log.append(batch(10)).await.unwrap();
        }
        let same = |a: &Batch, b: &Batch| a.bytes().as_ptr() == b.bytes().as_ptr();
        let mut reads = Reads::new(true);
        let limit = 5 * batch(10).len_bytes();
        let first = reads
            .read(&log, 0, usize::MAX, 10, limit, Instant::now())
            .unwrap()
            .to_vec();
        assert_eq!(first.len(), 1);
        reads.end_round(Instant::now());
        // Another member, at offset 23, in the next round: the kept read
        // (offsets 0-49) has it, from its third batch on.
        let got = reads
            .read(&log, 23, usize::MAX, 100, limit, Instant::now())
            .unwrap()
            .to_vec();
        assert_eq!(got.len(), 3, "to the end of the kept read");
        assert_eq!(got[0].base_offset(), 20);
        assert!(
            same(&got[0], &reads.held[0].batches[2]),
            "served from the kept read"
        );
        // A member elsewhere gets a read of its own, kept beside the first.
        let far = reads
            .read(&log, 120, usize::MAX, 10, limit, Instant::now())
            .unwrap()
            .to_vec();
        assert_eq!(far[0].base_offset(), 120);
        reads.end_round(Instant::now());
        assert_eq!(reads.held.len(), 2);
        let again = reads
            .read(&log, 7, usize::MAX, 10, limit, Instant::now())
            .unwrap()
            .to_vec();
        assert!(same(&again[0], &first[0]), "the first read is still kept");
        // The set wakes when the oldest expires; unused that long, both go.
        let expiry = reads.expiry().expect("reads kept");
        reads.end_round(expiry + HELD_FOR);
        assert!(reads.held.is_empty());
        assert_eq!(reads.expiry(), None);
        // At most HELD_MAX: one more read drops one.
        let newest = 50 * HELD_MAX as u64;
        for from in (0..=newest).step_by(50) {
            let _ = reads
                .read(&log, from, usize::MAX, 10, limit, Instant::now())
                .unwrap();
        }
        assert_eq!(reads.held.len(), HELD_MAX);
        assert!(
            reads.held.iter().any(|h| h.holding(newest).is_some()),
            "the newest is kept"
        );
        // A shared read takes SHARED_READ_CREDITS times what its member
        // may take, when the byte limit allows.
        let _ = reads
            .read(&log, 450, usize::MAX, 10, usize::MAX, Instant::now())
            .unwrap();
        let h = reads.held.iter().find(|h| h.holding(450).is_some());
        assert_eq!(
            h.map(|h| h.batches.len()),
            Some(SHARED_READ_CREDITS as usize)
        );
        // A read that reaches the log's end is not kept past its round.
        let tail = reads
            .read(&log, 560, usize::MAX, 100, usize::MAX, Instant::now())
            .unwrap();
        assert_eq!(tail.last().map(Batch::last_offset), Some(599));
        reads.end_round(Instant::now());
        assert!(reads.held.iter().all(|h| h.holding(560).is_none()));
        // A set of one never shares and keeps nothing.
        let mut own = Reads::new(false);
        let a = own
            .read(&log, 0, usize::MAX, 10, limit, Instant::now())
            .unwrap()
            .to_vec();
        let b = own
            .read(&log, 5, usize::MAX, 10, limit, Instant::now())
            .unwrap()
            .to_vec();
        assert!(!same(&a[0], &b[0]));
        own.end_round(Instant::now());
        assert!(own.held.is_empty());
        log.close().await.unwrap();
    }
}
