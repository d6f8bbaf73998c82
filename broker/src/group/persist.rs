//! When and how a group actor writes its state, and who waits for it.
//!
//! Writes are group-committed: every change made while one write runs goes
//! into the next, at most every [`PERSIST_MIN_INTERVAL`]. A write that fails
//! (a full disk) leaves the state dirty and is retried after a backoff that
//! grows to [`RETRY_MAX`], so a broker on a full disk neither forgets an ack
//! in memory nor spins on the disk. Whoever waits for a write (an Ack with a
//! request id, a reset) hears `Ok` only once its change is on disk, and the
//! error otherwise; it is never told `Ok` for state that is not written.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::positions::{Op, Positions};
use super::set::Event;
use super::store::{self, StoreError, StoredGroup};
use crate::slotfile;
use crate::syncer::Syncer;
use crate::BrokerError;

/// Group state is persisted at most this often. Each persist is a write, an
/// fsync, a rename and a folder fsync; at the client's ack pace (a flush
/// every millisecond) they competed with the log's own fsyncs on the same
/// disk and showed in the publish-to-deliver p99.
pub const PERSIST_MIN_INTERVAL: Duration = Duration::from_millis(5);
/// The same for the members of a room (each a group on the room's log):
/// they all ack the same events, so a room of 100 at 1,000 emits/s saved
/// 20,000 state files a second at 5 ms (state-file work was about a sixth
/// of the broker's CPU, issue 11); spaced by this, half as many `pwrite`s
/// were counted. A crash redelivers at most this much more of what
/// members acked (at least once, as ever), and `ack_confirmed` waits up
/// to this long.
pub const ROOM_PERSIST_INTERVAL: Duration = Duration::from_millis(25);
/// Delay before retrying after the first failed write; it doubles with
/// every further failure up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(50);
/// Longest delay between two attempts on a disk that stays full.
pub const RETRY_MAX: Duration = Duration::from_secs(2);

/// Told when the write that carries a change finished.
pub type Waiter = oneshot::Sender<Result<(), BrokerError>>;

/// A write that ended, as the group set hears of it: the group's key in
/// its set and the write's sequence number ([`Persister::running_seq`]).
pub type Written = (u64, u64);

/// How a group's writes tell its actor that they ended: one message per
/// write, sent by the write's own task once its outcome is in its
/// [`Write`], so that the one actor hosting many groups wakes for any of
/// their writes without polling (or waiting for) each (see [`super::set`]).
#[derive(Clone)]
pub struct Notify {
    /// Unbounded, yet bounded in practice: each group has at most one
    /// write running (or one creation write), so the channel holds at most
    /// one message per group of the set.
    pub tx: mpsc::UnboundedSender<Event>,
    /// The group's key in its set.
    pub key: u64,
}

/// A write started: its sequence number and, once it ended, its outcome.
pub struct Write {
    pub seq: u64,
    outcome: oneshot::Receiver<Result<(), StoreError>>,
}

impl Write {
    /// The outcome, if the write ended (always, once its [`Notify`]
    /// message came).
    pub fn take(&mut self) -> Option<Result<(), StoreError>> {
        match self.outcome.try_recv() {
            Ok(r) => Some(r),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(lost())),
        }
    }

    /// Waits for the outcome.
    pub async fn wait(&mut self) -> Result<(), StoreError> {
        (&mut self.outcome).await.unwrap_or_else(|_| Err(lost()))
    }
}

/// A write task that ended without an outcome (it panicked).
fn lost() -> StoreError {
    StoreError::Io {
        path: PathBuf::new(),
        source: std::io::Error::other("group state writer task ended without an answer"),
    }
}

/// Sends a write's [`Notify`] message when dropped: after its outcome was
/// sent, or while a panic unwinds, so that the actor always hears of it.
pub(super) struct Told(Option<Notify>, u64);

impl Drop for Told {
    fn drop(&mut self) {
        if let Some(n) = &self.0 {
            let _ = n.tx.send(Event::Written((n.key, self.1)));
        }
    }
}

/// Where a group's state is written.
pub enum Target {
    /// A file of its own (`groups/<name>.state`).
    File(PathBuf),
    /// Its entry in the positions file of a room's log, written with the
    /// other members' (see [`super::positions`]).
    Room(Arc<Positions>),
}

/// The persistence side of one group.
pub struct Persister {
    group: String,
    target: Target,
    /// The state file's path (for a room member, the room's positions
    /// file), for messages.
    path: PathBuf,
    /// fsync the file and folder (the topic's policy is `always`).
    durable: bool,
    /// Where durable writes get their sync, shared with every other group
    /// (see [`crate::syncer`]); `None`: each write fsyncs its own file.
    syncer: Option<Arc<Syncer>>,
    /// Told when a write ends; `None` in unit tests, which await the write.
    notify: Option<Notify>,
    /// Sequence number of the last write started.
    seq: u64,
    /// Changed since the last write started.
    dirty: bool,
    running: Option<Write>,
    /// No write starts before this (the minimum interval, or a retry's
    /// backoff).
    not_before: Instant,
    /// Consecutive failed writes.
    failures: u32,
    /// Waiting for the write that is running.
    current: Vec<Waiter>,
    /// Waiting for the next write.
    next: Vec<Waiter>,
    /// The state file, kept open between writes while the group has
    /// members ([`slotfile::Cache`]): its writes are then one `pwrite`.
    file: slotfile::Cache,
    /// Writes start at most this often ([`PERSIST_MIN_INTERVAL`] or
    /// [`ROOM_PERSIST_INTERVAL`]).
    interval: Duration,
    /// Whether to keep `file` open after the running write: false once
    /// the group has no members (it may not write for a long time, and an
    /// offline room member should not hold a descriptor).
    keep_open: bool,
}

impl Persister {
    pub fn new(
        group: String,
        target: Target,
        durable: bool,
        syncer: Option<Arc<Syncer>>,
        notify: Option<Notify>,
    ) -> Persister {
        let path = match &target {
            Target::File(p) => p.clone(),
            Target::Room(p) => p.path().to_path_buf(),
        };
        Persister {
            group,
            target,
            path,
            durable,
            syncer,
            notify,
            seq: 0,
            dirty: false,
            running: None,
            not_before: Instant::now(),
            failures: 0,
            current: Vec::new(),
            next: Vec::new(),
            file: slotfile::Cache::default(),
            interval: PERSIST_MIN_INTERVAL,
            keep_open: false,
        }
    }

    /// Spaces writes by `interval` instead of [`PERSIST_MIN_INTERVAL`].
    pub fn with_interval(mut self, interval: Duration) -> Persister {
        self.interval = interval;
        self
    }

    /// Whether the state file stays open between writes (see `file`):
    /// the group says so when its first member comes or its last goes.
    pub fn keep_open(&mut self, keep: bool) {
        self.keep_open = keep;
        if !keep && self.running.is_none() {
            self.file.clear();
        }
    }

    /// Something changed: it goes into the next write.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Something changed and `w` waits until it is on disk.
    pub fn wait(&mut self, w: Waiter) {
        self.dirty = true;
        self.next.push(w);
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The sequence number of the write that runs (see [`Notify`]).
    pub fn running_seq(&self) -> Option<u64> {
        self.running.as_ref().map(|r| r.seq)
    }

    /// When the actor must wake to start a write that is due but not yet
    /// allowed; `None` when nothing waits for time.
    pub fn due(&self) -> Option<Instant> {
        (self.dirty && self.running.is_none()).then_some(self.not_before)
    }

    /// Starts a write of `state()` if the state is dirty, no write runs and
    /// the interval (or backoff) has passed.
    pub fn maybe_start(&mut self, state: impl FnOnce() -> StoredGroup) {
        if !self.dirty || self.running.is_some() || Instant::now() < self.not_before {
            return;
        }
        self.dirty = false;
        self.not_before = Instant::now() + self.interval;
        self.current = std::mem::take(&mut self.next);
        self.running = Some(self.write(state()));
    }

    /// Starts writing `state`: through the shared syncer when the write
    /// must be durable and there is one, else fsyncing its own file (or
    /// not at all). Returns the write's sequence number, which its
    /// [`Notify`] message carries.
    fn write(&mut self, state: StoredGroup) -> Write {
        self.seq += 1;
        let seq = self.seq;
        let path = self.path.clone();
        let told = Told(self.notify.clone(), seq);
        let (tx, outcome) = oneshot::channel();
        if let Target::Room(positions) = &self.target {
            // One write of the room's file carries it, with the other
            // members' changes of the round.
            positions.submit(Op::Save(self.group.clone(), state), tx, Some(told));
            return Write { seq, outcome };
        }
        let file = self.file.clone();
        match (&self.syncer, self.durable) {
            (Some(syncer), true) => {
                let syncer = syncer.clone();
                tokio::spawn(async move {
                    let _told = told;
                    let _ = tx.send(store::save_synced(path, state, syncer, file).await);
                });
            }
            (_, durable) => {
                tokio::task::spawn_blocking(move || {
                    let _told = told;
                    let _ = tx.send(store::save(&path, &state, durable, &file));
                });
            }
        }
        Write { seq, outcome }
    }

    /// Resolves when the running write ends. Only call while
    /// [`Self::is_running`]; otherwise it never resolves.
    pub async fn finished(&mut self) -> Result<(), StoreError> {
        let Some(w) = self.running.as_mut() else {
            return std::future::pending().await;
        };
        let r = w.wait().await;
        self.running = None;
        r
    }

    /// The outcome of the running write number `seq`, if it ended; the
    /// write no longer runs then. Never waits.
    pub fn try_finish(&mut self, seq: u64) -> Option<Result<(), StoreError>> {
        let w = self.running.as_mut().filter(|w| w.seq == seq)?;
        let r = w.take()?;
        self.running = None;
        Some(r)
    }

    /// Answers the waiters of a write that ended; a failure makes the state
    /// dirty again and schedules a retry.
    pub fn on_finished(&mut self, r: Result<(), StoreError>) {
        if !self.keep_open {
            self.file.clear();
        }
        match r {
            Ok(()) => {
                if self.failures > 0 {
                    tracing::info!(group = %self.group, failures = self.failures, "group state written again");
                }
                self.failures = 0;
                for w in self.current.drain(..) {
                    let _ = w.send(Ok(()));
                }
            }
            Err(e) => {
                // Its changes are still to be written.
                self.dirty = true;
                self.failed(&e);
                for w in self.current.drain(..) {
                    let _ = w.send(Err(BrokerError::GroupStore(e.duplicate())));
                }
            }
        }
    }

    /// Counts a failed write and schedules the next attempt; the first
    /// failure of an outage is logged at ERROR, the retries at DEBUG.
    fn failed(&mut self, e: &StoreError) {
        let backoff = self.back_off();
        if self.failures == 1 {
            tracing::error!(group = %self.group, error = %e, retry_in = ?backoff,
                "persisting group state failed; acks stay in memory and the write is retried");
        } else {
            tracing::debug!(group = %self.group, error = %e, failures = self.failures, "persisting group state failed again");
        }
    }

    /// Counts a failure; returns the delay before the next attempt.
    fn back_off(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let backoff = RETRY_FIRST
            .saturating_mul(1 << self.failures.saturating_sub(1).min(16))
            .min(RETRY_MAX);
        self.not_before = Instant::now() + backoff;
        backoff
    }

    /// Writes `state` now (after the running write, if any) and returns
    /// once it is on disk. Every waiter whose change `state` includes is
    /// answered. Used where the caller must not go on before the state is
    /// written: a new group's first member, shutdown. A failure leaves the
    /// dirty flag as it was: `state` may hold a change the caller undoes
    /// (a new group's first member that is refused), which must not be
    /// written by a later retry.
    pub async fn save_now(&mut self, state: StoredGroup) -> Result<(), StoreError> {
        if self.running.is_some() {
            let r = self.finished().await;
            self.on_finished(r);
        }
        let r = self.write(state).wait().await;
        self.settle_save(&r);
        r
    }

    /// Starts [`Self::save_now`]'s write without waiting for it, for an
    /// actor that must go on serving other groups meanwhile: a new group's
    /// first write. Only call while no write runs. The caller takes the
    /// returned write's outcome (its end is told like any write's, by its
    /// sequence number) and hands it to [`Self::settle_detached`].
    pub fn start_detached(&mut self, state: StoredGroup) -> Write {
        debug_assert!(self.running.is_none());
        self.write(state)
    }

    /// The outcome of a write started by [`Self::start_detached`], settled
    /// as [`Self::save_now`] does.
    pub fn settle_detached(&mut self, r: Result<(), StoreError>) -> Result<(), StoreError> {
        self.settle_save(&r);
        r
    }

    /// Bookkeeping after a save the caller waited for.
    fn settle_save(&mut self, r: &Result<(), StoreError>) {
        if !self.keep_open {
            self.file.clear();
        }
        match r {
            Ok(()) => {
                self.dirty = false;
                self.failures = 0;
                for w in self.next.drain(..) {
                    let _ = w.send(Ok(()));
                }
            }
            Err(e) => {
                // The caller reports it (a refused subscription, shutdown).
                self.back_off();
                tracing::debug!(group = %self.group, error = %e, "writing group state failed");
            }
        }
    }

    /// The group is being deleted: waits for a write in progress, then
    /// removes the state file (fsyncing the folder), so the group does not
    /// come back after a restart. Waiters are told the group is gone.
    pub async fn remove(&mut self) -> Result<(), StoreError> {
        if self.running.is_some() {
            let r = self.finished().await;
            self.on_finished(r);
        }
        for w in self.current.drain(..).chain(self.next.drain(..)) {
            let _ = w.send(Err(BrokerError::ShuttingDown));
        }
        if let Target::Room(positions) = &self.target {
            // Its entry leaves the room's file, durably, after every
            // earlier write of it (one writer, in order).
            return positions.apply(Op::Remove(self.group.clone())).await;
        }
        // Closed before the file goes: nothing may write to it afterwards.
        self.keep_open = false;
        self.file.clear();
        let path = self.path.clone();
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        }
        if let Some(dir) = self.path.parent() {
            crate::fsutil::sync_dir(dir).map_err(io)?;
        }
        Ok(())
    }

    /// The actor is ending: writes `state` a last time and answers every
    /// waiter with the outcome.
    pub async fn close(&mut self, state: StoredGroup) {
        // Written even when no ack is pending: deliveries (the next fresh
        // offset, delivery counts) do not mark the state dirty.
        if let Err(e) = self.save_now(state).await {
            tracing::error!(group = %self.group, error = %e, "saving group state at shutdown failed; the group resumes from its last written state");
            for w in self.next.drain(..) {
                let _ = w.send(Err(BrokerError::GroupStore(e.duplicate())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_write_stays_dirty_and_backs_off() {
        let dir = tempfile::tempdir().unwrap();
        // The folder does not exist: every write fails.
        let path = dir.path().join("missing").join("g.state");
        let mut p = Persister::new("g".into(), Target::File(path.clone()), false, None, None);
        let (tx, rx) = oneshot::channel();
        p.wait(tx);
        p.maybe_start(StoredGroup::default);
        assert!(p.is_running());
        let r = p.finished().await;
        p.on_finished(r);
        assert!(rx.await.unwrap().is_err(), "never Ok for a failed write");
        let due = p.due().expect("still dirty");
        assert!(due > Instant::now() + RETRY_FIRST / 2, "no hot retry");
        // Once the folder exists the retry writes the state.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        p.not_before = Instant::now();
        p.maybe_start(StoredGroup::default);
        let r = p.finished().await;
        p.on_finished(r);
        assert_eq!(p.failures, 0);
        assert!(p.due().is_none());
        assert_eq!(store::load(&path).unwrap(), Some(StoredGroup::default()));
    }

    #[tokio::test]
    async fn a_failed_last_write_is_not_reported_as_ok() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("g.state");
        let mut p = Persister::new("g".into(), Target::File(path), false, None, None);
        let (tx, rx) = oneshot::channel();
        p.wait(tx);
        p.close(StoredGroup::default()).await;
        assert!(rx.await.unwrap().is_err());
    }

    #[test]
    fn backoff_is_bounded() {
        let mut p = Persister::new(
            "g".into(),
            Target::File(PathBuf::from("/nonexistent/g.state")),
            false,
            None,
            None,
        );
        let e = StoreError::Corrupt {
            path: PathBuf::new(),
            reason: String::new(),
        };
        for _ in 0..100 {
            p.failed(&e);
            p.back_off();
        }
        assert!(p.not_before <= Instant::now() + RETRY_MAX);
    }
}
