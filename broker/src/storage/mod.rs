//! The storage engine: one append-only log per topic, in segment files.
//!
//! # Layout
//! - [`Log`] (this file): the API the broker uses, shared as `Arc<Log>`.
//! - `config`: [`LogConfig`] and the [`FsyncPolicy`].
//! - `writer`: the per-log writer task that owns the active segment and does
//!   group commit.
//! - `durable`: the writer's blocking file work (the durable write, new
//!   segments).
//! - `direct`: `O_DIRECT` appends under `always`, block-aligned.
//! - `reader`: reads through the tail cache or `pread` + sparse index, and
//!   time lookups.
//! - `segment`: file naming, batch headers, stepping from batch to batch.
//! - `scan`: walking a segment's batches, checking them, and finding the
//!   next valid batch past a bad one.
//! - `counters`: [`LogCounters`], what the log counts for the metrics.
//! - `damage`: damaged ranges, and the `gaps` file of ranges a repair
//!   accepted.
//! - `index`: the sparse offset and time indexes.
//! - `recovery`: opening a folder, truncating a torn tail, rebuilding
//!   indexes and producer state.
//! - `repair`: checking every byte and accepting the damaged ranges.
//! - `producer`: idempotent-producer windows.
//! - `retention`: deleting old segments.
//! - `error`: [`StorageError`].
//!
//! `docs/storage.md` describes the files, the recovery rules and what a crash
//! can lose under each policy.
//!
//! **Architecture Invariant:** only the writer task writes segment data, and
//! readers see a batch only after `append` has confirmed it.

mod coalesce;
mod config;
mod counters;
mod damage;
mod direct;
mod durable;
mod error;
mod index;
mod producer;
mod reader;
mod recovery;
mod repair;
mod retention;
mod scan;
mod segment;
mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use herald_protocol::Batch;
use tokio::sync::{mpsc, oneshot, watch};

pub use config::{LogConfig, MAX_SEGMENT_BYTES};
pub use counters::LogCounters;
pub use damage::DamagedRange;
pub use error::StorageError;
pub use herald_protocol::FsyncPolicy;
pub use producer::{MAX_PRODUCERS, PRODUCER_WINDOW};
pub use reader::MAX_READ_BYTES;
pub use writer::{GROUP_MAX_BYTES, QUEUE_DEPTH};

use reader::TailCache;
use segment::SegmentEntry;
use writer::{Active, Request, Writer};

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Offset of the batch's first record (`u64::MAX` for a duplicate too old
    /// to know where it went).
    pub base_offset: u64,
    pub count: u32,
    /// The batch was a retry of one already stored; nothing was appended.
    pub duplicate: bool,
}

/// A snapshot of a log's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    pub first_offset: u64,
    pub next_offset: u64,
    pub bytes_on_disk: u64,
    pub segments: u32,
}

/// What readers, retention and the writer share.
pub(crate) struct Shared {
    dir: PathBuf,
    config: LogConfig,
    /// A std mutex, not a tokio one: nothing awaits while it is held, and
    /// every holder does only in-memory work (no I/O).
    state: Mutex<LogState>,
    /// Publishes the confirmed next offset.
    next_tx: watch::Sender<u64>,
    /// fdatasyncs of segment data done so far (group commits, interval
    /// syncs, rolls, close).
    fsyncs: AtomicU64,
    /// Appends, fsync latencies and recovery events, for the metrics.
    counters: LogCounters,
    /// Damage already reported, as (file, byte position), so each damaged
    /// batch is logged at ERROR once, not once per reader or retry. Bounded
    /// by [`MAX_REPORTED`].
    reported: Mutex<HashSet<(PathBuf, u64)>>,
    /// Serialises repairs (each rewrites the `gaps` file from what it saw).
    repairing: tokio::sync::Mutex<()>,
}

/// Damaged positions remembered for [`Log::first_report`]; past this every
/// report counts as a first.
const MAX_REPORTED: usize = 1024;

/// The segment list and what readers may see.
pub(crate) struct LogState {
    /// Oldest first; the last is the active segment. Never empty.
    segments: Vec<SegmentEntry>,
    /// One past the last confirmed record.
    next_offset: u64,
    tail: TailCache,
}

impl LogState {
    fn first_offset(&self) -> u64 {
        self.segments
            .first()
            .map_or(self.next_offset, |s| s.base_offset)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        // A panic while holding the lock cannot leave the state half updated
        // in a way readers would misread (updates are plain field stores),
        // so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `e` is damage no earlier call reported (see
    /// [`Log::first_report`]).
    fn first_report(&self, e: &StorageError) -> bool {
        let StorageError::Corrupt { path, position, .. } = e else {
            return true;
        };
        let mut seen = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        seen.len() >= MAX_REPORTED || seen.insert((path.clone(), *position))
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One topic's log. `Send + Sync`; share it as `Arc<Log>`.
pub struct Log {
    shared: Arc<Shared>,
    /// To the writer task; bounded by [`QUEUE_DEPTH`], so appenders wait when
    /// the disk falls behind.
    tx: mpsc::Sender<Request>,
    /// Set by `close`; later appends fail fast with `Closed`.
    closed: AtomicBool,
}

/// A queued append; [`PendingAppend::wait`] resolves once it is durable
/// under the log's policy.
#[derive(Debug)]
pub struct PendingAppend(oneshot::Receiver<Result<AppendOutcome, StorageError>>);

impl PendingAppend {
    /// Waits for the confirm (or the failure) of the append.
    pub async fn wait(self) -> Result<AppendOutcome, StorageError> {
        self.0.await.map_err(|_| StorageError::Closed)?
    }
}

impl Log {
    /// Opens (creating the folder if needed) and recovers the log in `dir`,
    /// then spawns its writer task.
    ///
    /// Recovery does blocking file I/O on the calling thread.
    ///
    /// Damage does not fail the open: a torn tail of the last segment is
    /// truncated, any other damaged range is logged at ERROR and kept, and
    /// readers of its offsets get [`StorageError::Corrupt`] until
    /// [`Log::repair`] accepts it (see docs/storage.md).
    ///
    /// # Errors
    /// I/O errors, or [`StorageError::Corrupt`] when the segment files
    /// overlap (a segment starts before the previous one ends).
    ///
    /// # Panics
    /// Outside a tokio runtime (the writer is started with `tokio::spawn`).
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Arc<Log>, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        let rec = recovery::recover(&dir, &config)?;
        let active = Active::recovered(&rec.active, &config, rec.active_first_time);
        let next_offset = rec.active.next_offset;
        let mut segments = rec.closed;
        segments.push(rec.active);
        let (next_tx, _) = watch::channel(next_offset);
        let torn_tails = rec.torn_tails;
        let shared = Arc::new(Shared {
            dir,
            state: Mutex::new(LogState {
                segments,
                next_offset,
                tail: TailCache::new(config.tail_cache_bytes),
            }),
            config,
            next_tx,
            fsyncs: AtomicU64::new(0),
            counters: LogCounters::default(),
            reported: Mutex::new(HashSet::new()),
            repairing: tokio::sync::Mutex::new(()),
        });
        shared
            .counters
            .torn_tails_truncated
            .store(torn_tails, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let writer = Writer::new(shared.clone(), rx, active, rec.producers, rec.last_time);
        tokio::spawn(writer.run());
        Ok(Arc::new(Log {
            shared,
            tx,
            closed: AtomicBool::new(false),
        }))
    }

    /// Appends one batch: assigns its offsets, stamps `base_offset` and the
    /// append time, writes it as is. Resolves once durable under the policy
    /// (`Always`: after fdatasync; otherwise after write(2)).
    ///
    /// Batches with a non-zero producer id are deduplicated: a retry of one
    /// of the producer's last [`PRODUCER_WINDOW`] batches returns the
    /// original offsets with `duplicate = true`; an older sequence is also a
    /// duplicate (offset `u64::MAX` if unknown); a sequence past the expected
    /// one is a gap.
    ///
    /// # Errors
    /// [`StorageError::SequenceGap`]; [`StorageError::StorageFull`] (nothing
    /// was appended); other I/O errors; [`StorageError::Closed`].
    pub async fn append(&self, batch: Batch) -> Result<AppendOutcome, StorageError> {
        self.enqueue(batch).await?.wait().await
    }

    /// The first half of [`Log::append`]: queues the batch for the writer
    /// and returns once it is queued (waiting only while the queue is full).
    /// Batches are appended in the order they were queued, so a caller that
    /// queues in arrival order (a session pipelining a producer's batches)
    /// keeps that order without awaiting each confirm.
    ///
    /// # Errors
    /// [`StorageError::Closed`] once the log is closed.
    pub async fn enqueue(&self, batch: Batch) -> Result<PendingAppend, StorageError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Append { batch, reply })
            .await
            .map_err(|_| StorageError::Closed)?;
        Ok(PendingAppend(rx))
    }

    /// Batches holding offsets `>= from`, in order, up to about `max_bytes`
    /// and `max_records` (at least one batch if any exists; the first may
    /// start before `from`). Only confirmed data is returned. `from` below
    /// the first offset reads from the first offset; at the end the result
    /// is empty.
    ///
    /// Damage never yields a silent gap: batches before a damaged one are
    /// returned, and a read that starts in a damaged range fails with
    /// [`StorageError::Corrupt`] naming the file, the byte position and the
    /// offsets it held; ranges accepted by [`Log::repair`] are skipped.
    ///
    /// # Errors
    /// I/O errors, and [`StorageError::Corrupt`] when the first batch asked
    /// for is damaged.
    pub fn read(
        &self,
        from: u64,
        max_bytes: usize,
        max_records: u32,
    ) -> Result<Vec<Batch>, StorageError> {
        reader::read(&self.shared, from, max_bytes, max_records)
    }

    /// First offset whose batch's append time is `>= ts_ms`, or
    /// [`Log::next_offset`] if none.
    ///
    /// # Errors
    /// I/O errors while scanning headers.
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> Result<u64, StorageError> {
        reader::offset_for_timestamp(&self.shared, ts_ms)
    }

    /// Whether a read error is worth an ERROR line: true the first time a
    /// given damaged batch is reported (and for any other error), false for
    /// the same damage again, so many readers (or retries) of one damaged
    /// range log it once.
    pub fn first_report(&self, e: &StorageError) -> bool {
        self.shared.first_report(e)
    }

    /// The damaged ranges known so far: found at open, or accepted by a
    /// repair. Damage in a closed segment that only its CRC shows is found
    /// by a read or a repair, not here.
    pub fn damaged_ranges(&self) -> Vec<DamagedRange> {
        let st = self.shared.lock();
        st.segments
            .iter()
            .flat_map(|s| s.damage.iter().map(|d| d.describe(&s.paths.log)))
            .collect()
    }

    /// Reads every byte of the log, checks every batch, and returns the
    /// damaged ranges not accepted before. Unless `dry_run`, records them in
    /// the `gaps` file (durably) and from then on readers skip them: their
    /// offsets are gone for good. Appends and reads go on meanwhile.
    ///
    /// # Errors
    /// I/O errors reading segments or writing the `gaps` file (then nothing
    /// was accepted).
    pub async fn repair(&self, dry_run: bool) -> Result<Vec<DamagedRange>, StorageError> {
        repair::repair(&self.shared, dry_run).await
    }

    pub fn first_offset(&self) -> u64 {
        self.shared.lock().first_offset()
    }

    /// One past the last confirmed (visible) record.
    pub fn next_offset(&self) -> u64 {
        self.shared.lock().next_offset
    }

    /// A watch of [`Log::next_offset`], updated whenever newly confirmed data
    /// becomes readable.
    pub fn watch_next_offset(&self) -> watch::Receiver<u64> {
        self.shared.next_tx.subscribe()
    }

    pub fn stats(&self) -> LogStats {
        let st = self.shared.lock();
        LogStats {
            first_offset: st.first_offset(),
            next_offset: st.next_offset,
            bytes_on_disk: st.segments.iter().map(|s| s.size).sum(),
            segments: st.segments.len() as u32,
        }
    }

    /// Deletes whole closed segments past retention; returns how many.
    ///
    /// # Errors
    /// Failing to delete a file or to fsync the folder.
    pub fn apply_retention(&self) -> Result<u32, StorageError> {
        retention::apply(&self.shared)
    }

    /// Forces the active segment to roll (no-op while it is empty).
    ///
    /// # Errors
    /// I/O errors sealing the old segment or creating the new one;
    /// [`StorageError::Closed`].
    pub async fn roll(&self) -> Result<(), StorageError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Roll { reply })
            .await
            .map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// Flushes and fsyncs everything written, writes the index files and
    /// stops the writer; later appends get [`StorageError::Closed`].
    /// Closing twice is a no-op.
    ///
    /// # Errors
    /// The final fsync failing.
    pub async fn close(&self) -> Result<(), StorageError> {
        self.closed.store(true, Ordering::Release);
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Request::Close { reply }).await.is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }

    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// What the log counted (appends, fsync latencies, recovery), for the
    /// metrics.
    pub fn counters(&self) -> &LogCounters {
        &self.shared.counters
    }

    /// Data fsyncs done so far; shows group commit at work (many appends per
    /// fsync under `Always`).
    pub fn fsync_count(&self) -> u64 {
        self.shared.fsyncs.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.shared.dir)
            .field("stats", &self.stats())
            .finish()
    }
}
