//! The per-log writer task: the only code that writes the active segment.
//!
//! `append` sends a request through a bounded channel. The task takes the
//! first request, drains whatever else is already queued (up to
//! [`GROUP_MAX_BYTES`]), checks idempotence, assigns offsets, stamps the
//! batches into one buffer and writes it with a single `pwrite`. Under
//! `Always` it then runs `fdatasync` on a blocking thread (or, for the
//! logs the broker writes itself, waits for the broker's next shared sync
//! round, see [`crate::syncer`]); appends that arrive meanwhile queue up
//! and the next fsync covers them all (group commit). Only then are the
//! appends answered and the new data published to readers, the tail cache
//! and the `next_offset` watch.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_protocol::batch::stamp;
use herald_protocol::{Batch, FsyncPolicy};
use tokio::sync::{mpsc, oneshot};

use super::config::LogConfig;
use super::direct::{DirectFile, WriteBuf, DIRECT_MIN_BYTES};
use super::durable::{blocking, create_segment, write_durably, WriteFailure};
use super::error::StorageError;
use super::index::IndexBuilder;
use super::producer::{ProducerMap, ProducerState, Verdict};
use super::recovery::{empty_entry, persist_index};
use super::segment::{self, SegmentEntry, SegmentPaths};
use super::{now_ms, AppendOutcome, Shared};

/// Requests waiting for the writer; `append` waits when it is full.
pub const QUEUE_DEPTH: usize = 1024;
/// Bytes of batches one group takes from the queue before writing.
pub const GROUP_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Groups up to this size are written on the writer task itself when no
/// fsync follows; larger ones go to a blocking thread.
pub const INLINE_WRITE_MAX: usize = 256 * 1024;

pub(super) type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

/// What the writer is asked to do.
pub enum Request {
    Append {
        batch: Batch,
        reply: Reply<AppendOutcome>,
    },
    Roll {
        reply: Reply<()>,
    },
    Close {
        reply: Reply<()>,
    },
}

/// The active segment as the writer sees it (including written but not yet
/// confirmed bytes, which the shared entry does not show).
pub struct Active {
    base_offset: u64,
    paths: SegmentPaths,
    file: Arc<File>,
    size: u64,
    next_offset: u64,
    builder: IndexBuilder,
    /// Append time of the first batch, for `segment_ms`.
    first_time: Option<i64>,
    /// The `O_DIRECT` handle big groups go through under `always` (see
    /// `direct`).
    direct: Direct,
}

/// Whether and how the active segment takes direct writes.
enum Direct {
    /// Not for this log (another policy, turned off, or the filesystem or
    /// the fd limit said no): everything goes through the page cache.
    Off,
    /// Allowed, not opened yet. Opened by the first group big enough, so
    /// the many topics that only ever see small groups hold one file
    /// descriptor each, not two.
    Unopened,
    Open(DirectFile),
}

impl Direct {
    fn for_config(config: &LogConfig) -> Direct {
        if config.fsync == FsyncPolicy::Always && config.direct_io {
            Direct::Unopened
        } else {
            Direct::Off
        }
    }
}

impl Active {
    /// The writer's view of the recovered active segment.
    pub fn recovered(seg: &SegmentEntry, config: &LogConfig, first_time: Option<i64>) -> Self {
        Active {
            base_offset: seg.base_offset,
            paths: seg.paths.clone(),
            file: seg.file.clone(),
            size: seg.size,
            next_offset: seg.next_offset,
            builder: IndexBuilder::resume(config.effective_index_interval(), &seg.index),
            first_time,
            direct: Direct::for_config(config),
        }
    }

    /// Opens the direct handle if allowed and not open yet; if it cannot
    /// be had, direct writes stay off for this segment.
    fn open_direct(&mut self) {
        if let Direct::Unopened = self.direct {
            self.direct = match DirectFile::open(&self.paths.log, &self.file, self.size) {
                Ok(Some(d)) => Direct::Open(d),
                Ok(None) => Direct::Off,
                Err(e) => {
                    tracing::warn!(
                        segment = %self.paths.log.display(),
                        error = %e,
                        "cannot open the segment for direct writes; writing through the page cache"
                    );
                    Direct::Off
                }
            };
        }
    }
}

/// One answer held back until its chunk is durable.
enum Item {
    New {
        reply: Reply<AppendOutcome>,
        batch: Batch,
        base_offset: u64,
        count: u32,
        start: usize,
        len: usize,
        time: i64,
    },
    Duplicate {
        reply: Reply<AppendOutcome>,
        outcome: AppendOutcome,
    },
}

/// Batches bound for one segment in one write.
struct Chunk {
    /// Bytes of the new batches.
    len: usize,
    next_offset: u64,
    items: Vec<Item>,
    /// Producer state as it will be once this chunk is stored; merged into
    /// the writer's map only if the write succeeds.
    overlay: HashMap<u64, ProducerState>,
}

impl Chunk {
    fn new(next_offset: u64) -> Self {
        Chunk {
            len: 0,
            next_offset,
            items: Vec::new(),
            overlay: HashMap::new(),
        }
    }

    fn verdict(&self, producers: &ProducerMap, batch: &Batch) -> Verdict {
        let (pid, seq, n) = (
            batch.producer_id(),
            batch.base_sequence(),
            batch.record_count(),
        );
        if pid == 0 {
            return Verdict::Accept;
        }
        match self.overlay.get(&pid) {
            Some(p) => p.check(seq, n),
            None => producers.check(pid, seq, n),
        }
    }
}

/// The writer task's state.
pub struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Request>,
    active: Active,
    producers: ProducerMap,
    /// Newest stamped append time; stamps never go backwards, so the time
    /// index stays sorted even if the clock does.
    last_time: i64,
    /// Written since the last fsync (Interval and Never).
    dirty: bool,
    /// A failed write could not be truncated away: retry before writing.
    truncate_to: Option<u64>,
    /// Appends in the previous group: more than one means concurrent
    /// appenders, worth a yield before gathering the next group.
    last_group: usize,
    /// The log was created without syncing its files
    /// ([`super::LogConfig::create_unsynced`]): its next shared sync must
    /// be a full one. Cleared once one succeeded.
    unsynced_files: bool,
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Request>,
        active: Active,
        producers: ProducerMap,
        last_time: i64,
    ) -> Self {
        let unsynced_files = shared.config.create_unsynced;
        Writer {
            shared,
            rx,
            active,
            producers,
            last_time,
            dirty: false,
            truncate_to: None,
            last_group: 0,
            unsynced_files,
        }
    }

    /// The task body: runs until `close` or until every `Log` handle is gone.
    pub async fn run(mut self) {
        let interval_ms = match self.shared.config.fsync {
            FsyncPolicy::Interval { ms } => Some(u64::from(ms.max(1))),
            _ => None,
        };
        let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms.unwrap_or(1000)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let req = tokio::select! {
                req = self.rx.recv() => req,
                _ = ticker.tick(), if interval_ms.is_some() => {
                    self.interval_sync().await;
                    continue;
                }
            };
            let Some(req) = req else { break };
            let control = match req {
                Request::Append { batch, reply } => self.gather_and_commit(batch, reply).await,
                other => Some(other),
            };
            match control {
                None => {}
                Some(Request::Roll { reply }) => {
                    let _ = reply.send(self.roll().await);
                }
                Some(Request::Close { reply }) => {
                    let _ = reply.send(self.finish().await);
                    return;
                }
                Some(Request::Append { reply, .. }) => {
                    let _ = reply.send(Err(StorageError::Closed));
                }
            }
        }
        if let Err(e) = self.finish().await {
            tracing::error!(error = %e, "flushing the log on shutdown failed");
        }
    }

    /// Drains the queue behind a first append and commits the group.
    /// Returns a non-append request met while draining, to run next.
    async fn gather_and_commit(
        &mut self,
        batch: Batch,
        reply: Reply<AppendOutcome>,
    ) -> Option<Request> {
        let mut bytes = batch.len_bytes();
        let mut group = vec![(batch, reply)];
        let mut control = None;
        if self.shared.config.fsync == FsyncPolicy::Always && self.last_group > 1 {
            // Several appenders shared the previous fsync; those just
            // answered are about to send their next batch. One yield lets
            // them queue it, so it shares this fsync instead of waiting for
            // the next one. A lone appender (last group of one) pays nothing.
            tokio::task::yield_now().await;
        }
        while bytes < GROUP_MAX_BYTES {
            match self.rx.try_recv() {
                Ok(Request::Append { batch, reply }) => {
                    bytes += batch.len_bytes();
                    group.push((batch, reply));
                }
                Ok(other) => {
                    control = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        self.last_group = group.len();
        if self.shared.config.coalesce {
            let (group, merged) =
                super::coalesce::coalesce(group, self.shared.config.coalesce_max_bytes);
            self.commit_group(group).await;
            super::coalesce::answer(merged);
        } else {
            self.commit_group(group).await;
        }
        control
    }

    async fn commit_group(&mut self, group: Vec<(Batch, Reply<AppendOutcome>)>) {
        let now = now_ms().max(self.last_time);
        self.last_time = now;
        let mut chunk = Chunk::new(self.active.next_offset);
        for (batch, reply) in group {
            if self.needs_roll(&chunk, &batch, now) {
                let full = std::mem::replace(&mut chunk, Chunk::new(0));
                self.commit_chunk(full).await;
                if let Err(e) = self.roll().await {
                    let _ = reply.send(Err(e));
                    chunk = Chunk::new(self.active.next_offset);
                    continue;
                }
                chunk = Chunk::new(self.active.next_offset);
            }
            match chunk.verdict(&self.producers, &batch) {
                Verdict::Accept => {}
                Verdict::Duplicate { base_offset, count } => {
                    let outcome = AppendOutcome {
                        base_offset,
                        count,
                        duplicate: true,
                    };
                    chunk.items.push(Item::Duplicate { reply, outcome });
                    continue;
                }
                Verdict::Gap { expected } => {
                    let _ = reply.send(Err(StorageError::SequenceGap {
                        producer_id: batch.producer_id(),
                        expected,
                        got: batch.base_sequence(),
                    }));
                    continue;
                }
            }
            let base_offset = chunk.next_offset;
            let count = batch.record_count();
            let pid = batch.producer_id();
            if pid != 0 {
                let state = chunk
                    .overlay
                    .entry(pid)
                    .or_insert_with(|| self.producers.get(pid).cloned().unwrap_or_default());
                state.record(batch.base_sequence(), count, base_offset);
            }
            let start = chunk.len;
            let len = batch.len_bytes();
            chunk.len += len;
            chunk.next_offset += u64::from(count);
            chunk.items.push(Item::New {
                reply,
                batch,
                base_offset,
                count,
                start,
                len,
                time: now,
            });
        }
        self.commit_chunk(chunk).await;
    }

    /// Whether `batch` must go into a new segment.
    fn needs_roll(&self, chunk: &Chunk, batch: &Batch, now: i64) -> bool {
        let size = self.active.size + chunk.len as u64;
        if size == 0 {
            return false;
        }
        let cfg = &self.shared.config;
        let too_big = size + batch.len_bytes() as u64 > cfg.effective_segment_bytes();
        let rel_end = chunk.next_offset + u64::from(batch.record_count()) - self.active.base_offset;
        let too_old = match (cfg.segment_ms, self.active.first_time) {
            (Some(ms), Some(first)) => now.saturating_sub(first) >= ms as i64,
            _ => false,
        };
        too_big || too_old || rel_end > u64::from(u32::MAX)
    }

    /// Writes a chunk (and fsyncs it under `Always`), then publishes it and
    /// answers its appends. On failure the segment is cut back and every
    /// append of the chunk fails; nothing is published.
    async fn commit_chunk(&mut self, chunk: Chunk) {
        let Chunk {
            len,
            next_offset,
            items,
            overlay,
        } = chunk;
        if len == 0 {
            answer(items, None);
            return;
        }
        let pre = self.active.size;
        let (mut result, mut data, direct) = self.write_chunk(&items, len).await;
        if let (true, Err(f)) = (direct, &result) {
            if f.error.raw_os_error() == Some(libc::EINVAL) {
                // The filesystem took the O_DIRECT open but not an aligned
                // write (a block size above 4 KiB, some stacked or FUSE
                // filesystems): this segment goes through the page cache.
                tracing::warn!(
                    segment = %self.active.paths.log.display(),
                    error = %f.error,
                    "direct write refused; writing through the page cache"
                );
                self.truncate_to = if f.cut_back { None } else { Some(pre) };
                self.active.direct = Direct::Off;
                (result, data, _) = self.write_chunk(&items, len).await;
            }
        }
        if result.is_ok() {
            if let Direct::Open(d) = &mut self.active.direct {
                d.advance(&data, pre + len as u64);
            }
        }
        let path = self.active.paths.log.clone();
        let always = self.shared.config.fsync == FsyncPolicy::Always;
        match result {
            Err(WriteFailure { error, cut_back }) => {
                self.truncate_to = if cut_back { None } else { Some(pre) };
                let err = StorageError::io(&path, error);
                tracing::warn!(error = %err, "append failed; segment cut back to {pre} bytes");
                answer(items, Some(&err));
            }
            Ok(fsync) => {
                self.truncate_to = None;
                self.count_commit(&items, len, always.then_some(fsync));
                if always {
                    self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.dirty = true;
                }
                for (pid, state) in overlay {
                    self.producers.insert(pid, state);
                }
                self.publish(&data, &items, next_offset);
                answer(items, None);
            }
        }
    }

    /// Counts a written chunk for the metrics: a handful of relaxed
    /// atomic additions per group commit, none per record.
    fn count_commit(&self, items: &[Item], len: usize, fsync: Option<Duration>) {
        let (mut batches, mut records) = (0u64, 0u64);
        for item in items {
            if let Item::New { count, .. } = item {
                batches += 1;
                records += u64::from(*count);
            }
        }
        let c = &self.shared.counters;
        c.committed(batches, records, len as u64);
        if let Some(d) = fsync {
            c.fsync_seconds.observe(d.as_secs_f64());
        }
    }

    /// Copies the chunk's new batches into one buffer, stamping each, and
    /// writes it (and fsyncs under `Always`): directly when the group is big
    /// and a direct handle can be had, else through the page cache. Returns
    /// the outcome, the batches' bytes as written (for the tail cache) and
    /// whether the write was direct.
    async fn write_chunk(
        &mut self,
        items: &[Item],
        len: usize,
    ) -> (Result<Duration, WriteFailure>, Bytes, bool) {
        let pre = self.active.size;
        if len >= DIRECT_MIN_BYTES {
            self.active.open_direct();
        }
        let direct = match &self.active.direct {
            Direct::Open(d) if len >= DIRECT_MIN_BYTES => Some(d),
            _ => None,
        };
        let lead: &[u8] = direct.map_or(&[], |d| &d.tail);
        let aligned = direct.is_some();
        // The one copy of the group: into a buffer sized up front, stamped
        // in place. Its frozen slices become the tail cache's batches.
        let mut buf = WriteBuf::new(lead, len, aligned);
        let lead_len = lead.len();
        for item in items {
            if let Item::New {
                batch,
                base_offset,
                time,
                ..
            } = item
            {
                stamp(buf.put(batch.bytes()), *base_offset, *time);
            }
        }
        let (frozen, skip, write_len) = buf.finish(aligned);
        let data = frozen.slice(skip + lead_len..skip + lead_len + len);
        let to_write = frozen.slice(skip..skip + write_len);
        let at = pre - lead_len as u64;
        let always = self.shared.config.fsync == FsyncPolicy::Always;
        let file = direct.map_or_else(|| self.active.file.clone(), |d| d.file.clone());
        let truncate_to = self.truncate_to;
        // With an fsync to wait for, hand the write to a blocking thread so
        // the runtime keeps serving. Without one, a write into the page
        // cache of a small group is quicker than the hand-off (a thread
        // wake-up each way), which dominated publish latency under `never`.
        // A log that shares the broker's sync rounds writes without its
        // own fsync and waits for the next round instead.
        let shared_sync = self.shared.config.shared_sync.clone().filter(|_| always);
        let own_sync = always && shared_sync.is_none();
        let result = if own_sync || to_write.len() > INLINE_WRITE_MAX {
            let file = file.clone();
            tokio::task::spawn_blocking(move || {
                write_durably(&file, &to_write, at, pre, truncate_to, own_sync)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()).into()))
        } else {
            write_durably(&file, &to_write, at, pre, truncate_to, own_sync)
        };
        let result = match (result, shared_sync) {
            (Ok(_), Some(syncer)) => {
                let started = Instant::now();
                let full = self.unsynced_files;
                match syncer.sync(file.clone(), full).await {
                    Ok(()) => {
                        self.unsynced_files = false;
                        Ok(started.elapsed())
                    }
                    // Written but not known durable: cut back like a
                    // failed write, so that it can never be recovered.
                    Err(error) => Err(WriteFailure {
                        cut_back: file.set_len(pre).is_ok(),
                        error,
                    }),
                }
            }
            (result, _) => result,
        };
        (result, data, aligned)
    }

    /// Makes a written chunk visible: the segment entry, the index, the
    /// tail cache, then the watch.
    fn publish(&mut self, data: &Bytes, items: &[Item], next_offset: u64) {
        // The tail cache keeps slices of this group's buffer: count it
        // against the broker's memory budget for as long as any is alive.
        let memory = self.shared.config.memory.as_ref();
        let data = &memory.map_or_else(|| data.clone(), |m| m.charged(data.clone()));
        let keep_old = memory.is_none_or(|m| m.admits(crate::memory::Level::Cache));
        // A slice keeps its whole group's buffer alive: a thousand stalled
        // readers, each holding a batch of a different group, would pin the
        // whole stream. Once memory is getting short, each batch gets a
        // buffer of its own (one copy per batch, not per delivery).
        let own = memory.filter(|m| !m.admits(crate::memory::Level::Copy));
        let a = &mut self.active;
        let mut entries = Vec::new();
        let mut max_time = i64::MIN;
        let mut batches = Vec::new();
        for item in items {
            if let Item::New {
                base_offset,
                start,
                len,
                time,
                ..
            } = item
            {
                let rel = (base_offset - a.base_offset) as u32;
                if let Some(e) = a.builder.observe(rel, a.size + *start as u64, *time) {
                    entries.push(e);
                }
                a.first_time.get_or_insert(*time);
                max_time = max_time.max(*time);
                let slice = data.slice(*start..*start + *len);
                let slice = match own {
                    Some(m) => m.charged(Bytes::copy_from_slice(&slice)),
                    None => slice,
                };
                batches.push(Batch::from_trusted(slice));
            }
        }
        a.size += data.len() as u64;
        a.next_offset = next_offset;
        {
            let mut st = self.shared.lock();
            if let Some(seg) = st.segments.last_mut() {
                seg.size = a.size;
                seg.next_offset = next_offset;
                seg.index.extend(entries);
                seg.max_time = seg.max_time.max(max_time);
            }
            st.next_offset = next_offset;
            for b in batches {
                st.tail.push(b, keep_old);
            }
        }
        self.shared.next_tx.send_replace(next_offset);
    }

    /// Closes the active segment (fsync, index files) and starts a new one
    /// at the next offset. A no-op while the active segment is empty.
    async fn roll(&mut self) -> Result<(), StorageError> {
        if self.active.size == 0 {
            return Ok(());
        }
        self.seal_active().await?;
        let base = self.active.next_offset;
        let paths = SegmentPaths::new(&self.shared.dir, base);
        let dir = self.shared.dir.clone();
        let p = paths.clone();
        let file = blocking(move || create_segment(&dir, &p)).await?;
        let file = {
            let mut st = self.shared.lock();
            st.segments.push(empty_entry(base, paths.clone(), file));
            st.segments.last().map(|s| s.file.clone())
        };
        let Some(file) = file else {
            return Err(StorageError::Closed);
        };
        self.active = Active {
            base_offset: base,
            paths,
            file,
            size: 0,
            next_offset: base,
            builder: IndexBuilder::new(self.shared.config.effective_index_interval()),
            first_time: None,
            direct: Direct::for_config(&self.shared.config),
        };
        self.dirty = false;
        Ok(())
    }

    /// Fsyncs the active segment and writes its index files.
    async fn seal_active(&mut self) -> Result<(), StorageError> {
        let entries = {
            let st = self.shared.lock();
            st.segments
                .last()
                .map(|s| s.index.clone())
                .unwrap_or_default()
        };
        let file = self.active.file.clone();
        let paths = self.active.paths.clone();
        // Direct writes leave zero padding past the end (and a failed cut
        // back may have left more); a closed segment ends exactly at its
        // last batch, whatever path its writes took. Cutting to the size it
        // already has is cheap.
        let size = self.active.size;
        let shared = self.shared.clone();
        let result = blocking(move || {
            file.set_len(size)
                .map_err(|e| StorageError::io(&paths.log, e))?;
            let started = Instant::now();
            file.sync_data()
                .map_err(|e| StorageError::io(&paths.log, e))?;
            let took = started.elapsed().as_secs_f64();
            shared.counters.fsync_seconds.observe(took);
            // The index is derived data, rebuilt on open if missing: failing
            // to write it (say, on a full disk) must not fail the roll or
            // the close.
            if let Err(e) = persist_index(&paths, &entries) {
                tracing::warn!(error = %e, "could not write the segment index; it will be rebuilt on open");
            }
            Ok(())
        })
        .await;
        if result.is_ok() {
            self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
            self.dirty = false;
            self.truncate_to = None;
        }
        result
    }

    /// Final flush on close or shutdown.
    async fn finish(&mut self) -> Result<(), StorageError> {
        self.seal_active().await?;
        let dir = self.shared.dir.clone();
        blocking(move || segment::sync_dir(&dir)).await
    }

    /// The `Interval` policy's periodic fsync.
    async fn interval_sync(&mut self) {
        if !self.dirty {
            return;
        }
        let file = self.active.file.clone();
        let path = self.active.paths.log.clone();
        let result = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            file.sync_data().map(|()| started.elapsed())
        })
        .await;
        match result {
            Ok(Ok(took)) => {
                self.shared
                    .counters
                    .fsync_seconds
                    .observe(took.as_secs_f64());
                self.dirty = false;
                self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                tracing::error!(path = %path.display(), error = %e, "interval fsync failed")
            }
            Err(e) => tracing::error!(error = %e, "interval fsync task failed"),
        }
    }
}

/// Sends every held-back answer: the outcomes, or `err` for all.
fn answer(items: Vec<Item>, err: Option<&StorageError>) {
    for item in items {
        let (reply, ok) = match item {
            Item::New {
                reply,
                base_offset,
                count,
                ..
            } => (
                reply,
                AppendOutcome {
                    base_offset,
                    count,
                    duplicate: false,
                },
            ),
            Item::Duplicate { reply, outcome } => (reply, outcome),
        };
        let _ = reply.send(match err {
            Some(e) => Err(e.duplicate()),
            None => Ok(ok),
        });
    }
}
