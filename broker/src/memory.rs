//! The broker-wide memory budget (`--max-memory`): how many bytes of record
//! data the broker may hold at once, and who must wait when it is spent.
//!
//! # What is counted
//! Every buffer of record data the broker holds, once per allocation, for
//! as long as it lives: published batches from the moment their frame is
//! read (pending, then in a log's tail cache, then queued for delivery),
//! buffers read from disk for deliveries, and the bytes each connection's
//! writer has copied for the socket. A buffer is wrapped in a [`Charge`]
//! through [`Bytes::from_owner`], so the count falls when the last slice of
//! it is dropped, wherever that happens. Shared data is counted once: a
//! batch delivered from the tail cache to a thousand subscribers costs its
//! size, not a thousand times its size. Bookkeeping (group trackers,
//! connection structures, read buffers between frames) is not counted; it
//! is small and bounded by other limits.
//!
//! # What happens at the budget
//! Each use may proceed only below its own level, so that what frees memory
//! keeps moving while what only takes it stops first:
//! - connection writers copy big deliveries into their write buffers only
//!   below [`Level::Copy`] (20%), and write them from the stored batch
//!   otherwise;
//! - deliveries to a connection that already has more than its
//!   [`MemoryBudget::allowance`] queued (the slowest readers) pause at
//!   [`Level::SlowDelivery`], 40% of the budget, counted both in memory
//!   and in bytes queued for sockets (per reference: queued deliveries of
//!   shared batches cost bookkeeping and keep batches alive that the cache
//!   has let go);
//! - other deliveries pause at [`Level::Delivery`], 70%; past it, a
//!   connection writer that has waited 2 s for its peer gives up (the
//!   connection is cut as a slow consumer, see `outbox`), since stalled
//!   readers that took a batch each before they could be told apart would
//!   otherwise hold everyone up until the stall timeout;
//! - the writers' buffers count at the most they held, and tail caches
//!   give each batch its own buffer past [`Level::Copy`], so that a slice
//!   held by a stalled reader does not pin a whole group commit;
//! - tail caches stop keeping old batches past [`Level::Cache`];
//! - a session stops reading publishes past [`Level::Publish`] (the whole
//!   budget), which slows producers through TCP instead of growing.
//!
//! So subscribers that stop reading can pin less than half the budget,
//! readers that keep up go on with the next 30%, and publishers keep going,
//! more slowly, with the rest.
//!
//! A charge is taken after the fact (a frame already read, a buffer already
//! filled), so the budget can be overshot by what one step of each task
//! brings in (a frame per connection, a read per reader); the levels leave
//! room for that.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Notify;

/// A connection with more than this queued for its socket is a slow reader
/// (see [`Level::SlowDelivery`]), and no read for one delivery round takes
/// more; both shrink when many connections share a small budget (see
/// [`MemoryBudget::allowance`]).
pub const SLOW_QUEUE_BYTES: usize = 1 << 20;
/// The least [`MemoryBudget::allowance`] gets.
pub const MIN_ALLOWANCE: usize = 16 << 10;

/// A reader paused for memory looks again this often, besides being woken
/// when a level is crossed: its own queue may have drained (making it a
/// reader that keeps up) without any level being crossed.
pub const RETRY: std::time::Duration = std::time::Duration::from_millis(50);

/// The smallest budget `--max-memory` accepts: below it one connection's
/// largest frame and read would not fit.
pub const MIN_BUDGET: usize = 32 << 20;

/// The fill levels below which each use may proceed, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// A connection's writer copies big deliveries into its write buffer
    /// (fewer system calls) only below this: 20%. Past it, it writes them
    /// from the stored batch, so that a thousand blocked writers do not
    /// hold a copy each.
    Copy,
    /// Deliveries to a connection that has a backlog: 40%.
    SlowDelivery,
    /// Tail caches keep old batches below this: 50%.
    Cache,
    /// Deliveries to a connection that keeps up: 70%.
    Delivery,
    /// Reading published batches: the whole budget.
    Publish,
}

impl Level {
    fn of(self, limit: usize) -> usize {
        match self {
            Level::Copy => limit / 5,
            Level::SlowDelivery => limit / 10 * 4,
            Level::Cache => limit / 2,
            Level::Delivery => limit / 10 * 7,
            Level::Publish => limit,
        }
    }
}

/// The budget. Shared as `Arc<MemoryBudget>`; every operation is a few
/// atomic instructions, so it can sit on the publish and delivery paths.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    /// Bytes queued for sockets in every connection's outbox, counted per
    /// reference: a batch queued for a thousand connections counts a
    /// thousand times. This is the outbound backlog; it costs bookkeeping
    /// per queued delivery and pins batches the tail cache has let go, so
    /// the slowest readers stop at [`Level::SlowDelivery`] of it too.
    queued: AtomicUsize,
    /// Connections alive (their writers), to share the budget among.
    connections: AtomicUsize,
    /// Tasks waiting in [`MemoryBudget::until_admitted`]; releases wake
    /// them only when there are some.
    waiting: AtomicUsize,
    freed: Notify,
}

/// Bytes counted against the budget until this is dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Charge {
    /// The budget this charge counts against.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// Counts `bytes` more under this charge.
    pub fn add(&mut self, bytes: usize) {
        self.budget.used.fetch_add(bytes, Ordering::SeqCst);
        self.bytes += bytes;
    }

    /// Counts at least `bytes` under this charge (a high-water mark).
    pub fn raise_to(&mut self, bytes: usize) {
        if bytes > self.bytes {
            self.add(bytes - self.bytes);
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// A connection counted by [`MemoryBudget::connection`].
#[derive(Debug)]
pub struct ConnectionGuard(Arc<MemoryBudget>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A buffer that owns its charge (see [`MemoryBudget::charged`]).
struct Charged {
    bytes: Bytes,
    _charge: Charge,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit: limit.max(1),
            used: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// A budget too large to matter, for embedding and tests that do not
    /// care.
    pub fn unlimited() -> Arc<MemoryBudget> {
        Self::new(usize::MAX / 2)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes counted now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// Counts `bytes` until the returned charge is dropped. Never refuses:
    /// callers ask [`MemoryBudget::admits`] before taking more work.
    pub fn charge(self: &Arc<Self>, bytes: usize) -> Charge {
        self.used.fetch_add(bytes, Ordering::SeqCst);
        Charge {
            budget: self.clone(),
            bytes,
        }
    }

    /// `bytes`, counted against the budget until its last slice is dropped.
    /// Costs one small allocation per buffer (not per record).
    pub fn charged(self: &Arc<Self>, bytes: Bytes) -> Bytes {
        if bytes.is_empty() {
            return bytes;
        }
        let charge = self.charge(bytes.len());
        Bytes::from_owner(Charged {
            bytes,
            _charge: charge,
        })
    }

    /// Whether a use at `level` may proceed now.
    pub fn admits(&self, level: Level) -> bool {
        let at = level.of(self.limit);
        self.used() < at && (level != Level::SlowDelivery || self.queued() < at)
    }

    /// Bytes queued for sockets (see the field).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// `bytes` more are queued for a socket.
    pub fn queue(&self, bytes: usize) {
        self.queued.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `bytes` left a socket's queue.
    pub fn dequeue(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// What one connection may have queued before it counts as a slow
    /// reader, the most one delivery round reads for it, and the most its
    /// writer coalesces into one write: a quarter of its share of the
    /// slow-delivery level, between [`MIN_ALLOWANCE`] and
    /// [`SLOW_QUEUE_BYTES`]. Every connection may take that much before
    /// the broker can tell a stalled reader from a fast one, and a stalled
    /// one then pins up to four times it (what is queued, one more read,
    /// and the writer's copy of each in a write that never completes): so
    /// a thousand stalled connections stay under [`Level::SlowDelivery`]
    /// and readers that keep up go on above it.
    pub fn allowance(&self) -> usize {
        let n = self.connections.load(Ordering::Relaxed).max(1);
        (Level::SlowDelivery.of(self.limit) / 4 / n).clamp(MIN_ALLOWANCE, SLOW_QUEUE_BYTES)
    }

    /// The level of a delivery to a connection with `queued` bytes waiting
    /// for its socket.
    pub fn delivery_level(&self, queued: usize) -> Level {
        if queued > self.allowance() {
            Level::SlowDelivery
        } else {
            Level::Delivery
        }
    }

    /// Counts a connection while the returned guard lives.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    /// Resolves once a use at `level` may be admitted: when it is, or after
    /// [`RETRY`], whichever comes first.
    pub async fn recheck(&self, level: Level) {
        tokio::select! {
            _ = self.until_admitted(level) => {}
            _ = tokio::time::sleep(RETRY) => {}
        }
    }

    /// Resolves once a use at `level` is admitted (at once if it is now).
    pub async fn until_admitted(&self, level: Level) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let admitted = self.admits(level);
            if !admitted {
                freed.await;
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            if admitted {
                return;
            }
        }
    }

    fn release(&self, bytes: usize) {
        let before = self.used.fetch_sub(bytes, Ordering::SeqCst);
        // Wake waiters only when someone waits, and only when this release
        // crosses a level boundary or frees a lot, so a thousand paused
        // readers are not woken for every small buffer dropped.
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let after = before.saturating_sub(bytes);
        let crossed = [Level::SlowDelivery, Level::Delivery, Level::Publish]
            .iter()
            .any(|l| {
                let at = l.of(self.limit);
                before >= at && after < at
            });
        if crossed || bytes >= self.limit / 64 {
            self.freed.notify_waiters();
        }
    }
}

/// The default budget: a quarter of the machine's memory, at least
/// [`MIN_BUDGET`] (the broker shares the machine with the page cache it
/// relies on for reads, and usually with other processes).
pub fn default_budget() -> usize {
    // SAFETY: sysconf only reads system constants.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || page <= 0 {
        return 1 << 30;
    }
    let total = (pages as u128 * page as u128).min(usize::MAX as u128) as usize;
    (total / 4).max(MIN_BUDGET)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn charges_follow_the_last_slice() {
        let b = MemoryBudget::new(1000);
        let data = b.charged(Bytes::from(vec![0u8; 100]));
        assert_eq!(b.used(), 100);
        let slice = data.slice(10..20);
        drop(data);
        assert_eq!(b.used(), 100, "a live slice keeps the buffer counted");
        drop(slice);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn levels_admit_in_order() {
        let b = MemoryBudget::new(1000);
        let c = b.charge(450);
        assert!(!b.admits(Level::SlowDelivery));
        assert!(b.admits(Level::Cache) && b.admits(Level::Delivery));
        let d = b.charge(400);
        assert!(!b.admits(Level::Delivery) && !b.admits(Level::Cache));
        assert!(b.admits(Level::Publish));
        let e = b.charge(150);
        assert!(!b.admits(Level::Publish));
        drop((c, d, e));
        assert!(b.admits(Level::SlowDelivery));
        b.queue(400);
        assert!(!b.admits(Level::SlowDelivery), "a long outbound backlog");
        assert!(b.admits(Level::Delivery));
        b.dequeue(400);
        assert!(b.admits(Level::SlowDelivery));
        assert_eq!(b.delivery_level(SLOW_QUEUE_BYTES + 1), Level::SlowDelivery);
        assert_eq!(b.delivery_level(0), Level::Delivery);
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_memory_is_freed() {
        let b = MemoryBudget::new(1000);
        let c = b.charge(900);
        let b2 = b.clone();
        let w = tokio::spawn(async move { b2.until_admitted(Level::Delivery).await });
        tokio::task::yield_now().await;
        assert!(!w.is_finished());
        drop(c);
        tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .expect("woken")
            .expect("task");
    }

    #[test]
    fn the_allowance_is_a_share_of_the_budget() {
        let b = MemoryBudget::new(1 << 30);
        assert_eq!(b.allowance(), SLOW_QUEUE_BYTES);
        let guards: Vec<_> = (0..1000).map(|_| b.connection()).collect();
        let share = (1usize << 30) / 10 * 4 / 4 / 1000;
        assert_eq!(b.allowance(), share);
        assert_eq!(b.delivery_level(share + 1), Level::SlowDelivery);
        drop(guards);
        assert_eq!(b.allowance(), SLOW_QUEUE_BYTES);
        let tiny = MemoryBudget::new(1 << 20);
        let _g: Vec<_> = (0..1000).map(|_| tiny.connection()).collect();
        assert_eq!(tiny.allowance(), MIN_ALLOWANCE);
    }

    #[test]
    fn the_default_is_a_quarter_of_the_machine() {
        assert!(default_budget() >= MIN_BUDGET);
    }
}
