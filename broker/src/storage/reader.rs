//! The read path: the tail cache first, else a `pread` from the segment,
//! found through the sparse offset index; and lookups by time.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use herald_protocol::batch::{check, peek_batch_len, BATCH_HEADER_LEN};
use herald_protocol::Batch;

use super::damage::Damage;
use super::error::StorageError;
use super::index;
use super::segment::{self, scan_to};
use super::{LogState, Shared};

/// Most bytes one disk read fetches, whatever `max_bytes` says (the first
/// batch is always read whole even if bigger). Callers loop for more.
pub const MAX_READ_BYTES: usize = 8 * 1024 * 1024;

/// The most recent confirmed batches, so subscribers at the tail are served
/// from memory.
///
/// # Invariants
/// The batches are contiguous and end at the log's confirmed next offset;
/// their total size is at most `limit` (a batch bigger than the whole limit
/// empties the cache instead of breaking contiguity).
#[derive(Debug)]
pub struct TailCache {
    batches: VecDeque<Batch>,
    bytes: usize,
    limit: usize,
}

impl TailCache {
    pub fn new(limit: usize) -> Self {
        TailCache {
            batches: VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    /// Adds a newly confirmed batch. With `keep_old` false (the memory
    /// budget is nearly spent) only this newest batch is kept, so the
    /// cache stops pinning memory while still serving readers at the tail.
    pub fn push(&mut self, batch: Batch, keep_old: bool) {
        if batch.len_bytes() > self.limit {
            self.batches.clear();
            self.bytes = 0;
            return;
        }
        self.bytes += batch.len_bytes();
        self.batches.push_back(batch);
        let limit = if keep_old { self.limit } else { 0 };
        while self.bytes > limit && self.batches.len() > 1 {
            match self.batches.pop_front() {
                Some(b) => self.bytes -= b.len_bytes(),
                None => break,
            }
        }
    }

    /// Forgets batches below `first` (after retention).
    pub fn drop_below(&mut self, first: u64) {
        while let Some(b) = self.batches.front() {
            if b.base_offset() >= first {
                break;
            }
            self.bytes -= b.len_bytes();
            self.batches.pop_front();
        }
    }

    /// Serves a read if `from` is inside the cache.
    pub fn read(&self, from: u64, max_bytes: usize, max_records: u32) -> Option<Vec<Batch>> {
        let front = self.batches.front()?;
        if from < front.base_offset() {
            return None;
        }
        let start = self.batches.partition_point(|b| b.last_offset() < from);
        let mut out = Vec::new();
        let mut budget = Budget::new(max_bytes, max_records);
        for b in self.batches.iter().skip(start) {
            if !budget.take(b.len_bytes(), b.record_count()) {
                break;
            }
            out.push(b.clone());
        }
        Some(out)
    }
}

/// The `max_bytes` / `max_records` limits of one read: the first batch is
/// always taken.
struct Budget {
    bytes: usize,
    records: u64,
    max_bytes: usize,
    max_records: u64,
    taken: usize,
}

impl Budget {
    fn new(max_bytes: usize, max_records: u32) -> Self {
        Budget {
            bytes: 0,
            records: 0,
            max_bytes,
            max_records: u64::from(max_records),
            taken: 0,
        }
    }

    fn take(&mut self, len: usize, count: u32) -> bool {
        let records = self.records + u64::from(count);
        let bytes = self.bytes.saturating_add(len);
        if self.taken > 0 && (bytes > self.max_bytes || records > self.max_records) {
            return false;
        }
        self.bytes = bytes;
        self.records = records;
        self.taken += 1;
        true
    }
}

/// Where a read from disk goes: the segment, the offset, and the byte
/// window that holds no known damage.
struct DiskRead {
    file: Arc<File>,
    path: PathBuf,
    from: u64,
    /// A batch start at or before the batch holding `from`.
    start: u64,
    /// The confirmed size, or the start of the first damaged range after
    /// `start`: a read stops before damage, and the next read reports it.
    limit: u64,
    damage: Vec<Damage>,
}

/// See [`super::Log::read`].
pub fn read(
    shared: &Shared,
    from: u64,
    max_bytes: usize,
    max_records: u32,
) -> Result<Vec<Batch>, StorageError> {
    let plan = match plan(&shared.lock(), from, max_bytes, max_records)? {
        Plan::Done(v) => return Ok(v),
        Plan::Disk(d) => d,
    };
    read_disk(plan, max_bytes, max_records, shared.config.memory.as_ref())
}

enum Plan {
    Done(Vec<Batch>),
    Disk(DiskRead),
}

/// Decides under the lock where a read goes: nothing, the tail cache, past
/// an accepted gap, a damaged range's error, or a segment file.
fn plan(
    st: &LogState,
    from: u64,
    max_bytes: usize,
    max_records: u32,
) -> Result<Plan, StorageError> {
    let mut from = from.max(st.first_offset());
    loop {
        if from >= st.next_offset {
            return Ok(Plan::Done(Vec::new()));
        }
        if let Some(v) = st.tail.read(from, max_bytes, max_records) {
            return Ok(Plan::Done(v));
        }
        let mut i = st
            .segments
            .partition_point(|s| s.base_offset <= from)
            .saturating_sub(1);
        while i < st.segments.len() && st.segments[i].next_offset <= from {
            i += 1;
        }
        let Some(seg) = st.segments.get(i) else {
            return Ok(Plan::Done(Vec::new()));
        };
        if let Some(d) = seg.damage_at(from) {
            if d.accepted {
                from = d.end_offset;
                continue;
            }
            return Err(d.error(&seg.paths.log));
        }
        let rel = from.saturating_sub(seg.base_offset);
        let indexed = index::lookup_offset(&seg.index, rel).map_or(0, |e| u64::from(e.pos));
        let start = seg
            .damage
            .iter()
            .filter(|d| d.end_offset <= from && d.end_pos() <= seg.size)
            .map(Damage::end_pos)
            .fold(indexed, u64::max);
        let limit = seg
            .damage
            .iter()
            .map(|d| d.pos)
            .filter(|&p| p >= start)
            .fold(seg.size, u64::min);
        return Ok(Plan::Disk(DiskRead {
            file: seg.file.clone(),
            path: seg.paths.log.clone(),
            from,
            start,
            limit,
            damage: seg.damage.clone(),
        }));
    }
}

/// The disk half of a read: finds the batch holding `from`, reads up to
/// `max_bytes` in one `pread` and checks every batch. Batches before a bad
/// one are returned; a bad first batch is the error.
fn read_disk(
    r: DiskRead,
    max_bytes: usize,
    max_records: u32,
    memory: Option<&std::sync::Arc<crate::memory::MemoryBudget>>,
) -> Result<Vec<Batch>, StorageError> {
    let DiskRead {
        file,
        path,
        from,
        start,
        limit,
        damage,
    } = r;
    let corrupt = |position: u64, offsets: (u64, u64), reason: String| StorageError::Corrupt {
        path: path.clone(),
        position,
        offsets: Some(offsets),
        reason,
    };
    let found = scan_to(&file, &path, start, limit, &damage, |h| {
        h.next_offset() > from
    })?;
    let Some((pos, first)) = found else {
        return Err(corrupt(
            start,
            (from, from + 1),
            format!("no batch holds offset {from}"),
        ));
    };
    if first.base_offset > from {
        return Err(corrupt(
            pos,
            (from, first.base_offset),
            format!(
                "the batch at byte {pos} starts at offset {} where {from} was expected",
                first.base_offset
            ),
        ));
    }
    let avail = (limit - pos) as usize;
    let want = max_bytes
        .min(MAX_READ_BYTES)
        .min(sized_for(&first, max_records))
        .max(first.batch_len as usize)
        .min(avail);
    let mut buf = BytesMut::zeroed(want);
    file.read_exact_at(&mut buf, pos)
        .map_err(|e| StorageError::io(&path, e))?;
    let budget = Budget::new(max_bytes, max_records);
    // Counted against the broker's memory budget while any slice lives.
    let buf = match memory {
        Some(m) => m.charged(buf.freeze()),
        None => buf.freeze(),
    };
    let (out, bad) = split_checked(buf, first.base_offset, budget);
    match bad {
        // Hand out what is good; the read that starts at the bad batch
        // reports it.
        Some(reason) if out.is_empty() => Err(corrupt(
            pos,
            (first.base_offset, first.next_offset()),
            reason,
        )),
        _ => Ok(out),
    }
}

/// Bytes enough for the first batch and `max_records` more records at its
/// size per record: a reader with credit for a few records (a group member
/// with a small prefetch) does not fetch, zero and charge a megabyte to
/// use a few hundred bytes of it. An estimate: a read that falls short
/// returns fewer records, and the caller reads again.
fn sized_for(first: &segment::Header, max_records: u32) -> usize {
    let len = first.batch_len as usize;
    let per_record = len / first.record_count.max(1) as usize;
    per_record
        .saturating_add(1)
        .saturating_mul(max_records as usize)
        .saturating_add(len)
}

/// Splits `buf` (batches from offset `expected` on) into checked batches
/// within `budget`, stopping at the first bad one; returns the good ones
/// and why it stopped, if at a bad batch. A batch cut off by the end of
/// `buf` is not bad: the next read fetches it whole.
fn split_checked(
    buf: Bytes,
    mut expected: u64,
    mut budget: Budget,
) -> (Vec<Batch>, Option<String>) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while buf.len() - at >= BATCH_HEADER_LEN {
        let Some(len) = peek_batch_len(&buf[at..]) else {
            break;
        };
        if len > buf.len() - at {
            // `buf` always holds the first batch whole, so a first batch
            // that does not fit has a damaged length.
            if out.is_empty() {
                return (
                    out,
                    Some(format!("batch_len {len} runs past the segment's end")),
                );
            }
            break;
        }
        let slice = buf.slice(at..at + len);
        if let Err(e) = check(&slice) {
            return (out, Some(e.to_string()));
        }
        let batch = Batch::from_trusted(slice);
        if batch.base_offset() != expected {
            let reason = format!(
                "base offset {} where {expected} was expected",
                batch.base_offset()
            );
            return (out, Some(reason));
        }
        if !budget.take(len, batch.record_count()) {
            break;
        }
        expected = batch.last_offset() + 1;
        out.push(batch);
        at += len;
    }
    (out, None)
}

/// See [`super::Log::offset_for_timestamp`].
pub fn offset_for_timestamp(shared: &Shared, ts: i64) -> Result<u64, StorageError> {
    let (file, path, pos, limit, fallback, damage) = {
        let st = shared.lock();
        let Some(seg) = st.segments.iter().find(|s| s.size > 0 && s.max_time >= ts) else {
            return Ok(st.next_offset);
        };
        let pos = index::lookup_time(&seg.index, ts).map_or(0, |e| u64::from(e.pos));
        (
            seg.file.clone(),
            seg.paths.log.clone(),
            pos,
            seg.size,
            seg.next_offset,
            seg.damage.clone(),
        )
    };
    let found = scan_to(&file, &path, pos, limit, &damage, |h| h.append_time >= ts)?;
    Ok(found.map_or(fallback, |(_, h)| h.base_offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::batch::stamp;
    use herald_protocol::{BatchBuilder, RecordRef};

    fn batch(base: u64, n: u32) -> Batch {
        let mut b = BatchBuilder::new();
        for _ in 0..n {
            b.push(&RecordRef {
                payload: b"x",
                ..RecordRef::default()
            });
        }
        let mut m = BytesMut::from(&b.finish(0, 0)[..]);
        stamp(&mut m, base, 0);
        Batch::from_trusted(m.freeze())
    }

    #[test]
    fn tail_cache_is_bounded_and_contiguous() {
        let one = batch(0, 1).len_bytes();
        let mut c = TailCache::new(one * 3);
        for i in 0..5 {
            c.push(batch(i, 1), true);
        }
        assert_eq!(c.batches.len(), 3);
        assert!(c.read(1, usize::MAX, u32::MAX).is_none());
        let got = c.read(3, usize::MAX, u32::MAX).unwrap_or_default();
        assert_eq!(
            got.iter().map(|b| b.base_offset()).collect::<Vec<_>>(),
            [3, 4]
        );
        let got = c.read(2, 1, u32::MAX).unwrap_or_default();
        assert_eq!(got.len(), 1, "at least one batch even over max_bytes");
        c.push(batch(5, 1), false);
        assert_eq!(
            c.batches.len(),
            1,
            "under memory pressure only the newest is kept"
        );
        c.push(batch(6, 100), true);
        assert!(c.batches.is_empty(), "an oversized batch empties the cache");
    }

    #[test]
    fn budget_limits_records() {
        let mut b = Budget::new(usize::MAX, 3);
        assert!(b.take(10, 5));
        assert!(!b.take(10, 1));
    }

    /// A disk read is sized by the records asked for, and still holds them
    /// all when the batches are alike: `k` records asked, `k` returned
    /// (whole batches, the first one always), for reads starting inside a
    /// batch as well.
    #[tokio::test]
    async fn a_disk_read_sized_by_records_still_holds_them() {
        let h = |len: u32, count: u32| segment::Header {
            base_offset: 0,
            append_time: 0,
            batch_len: len,
            magic: 1,
            record_count: count,
            producer_id: 0,
            base_sequence: 0,
        };
        assert_eq!(sized_for(&h(1000, 10), 5), 1000 + 5 * 101);
        assert!(sized_for(&h(1000, 10), u32::MAX) > MAX_READ_BYTES);
        let dir = tempfile::tempdir().unwrap();
        let cfg = super::super::LogConfig {
            tail_cache_bytes: 0,
            ..Default::default()
        };
        let log = super::super::Log::open(dir.path(), cfg).unwrap();
        for _ in 0..40 {
            let mut b = BatchBuilder::new();
            for _ in 0..3 {
                b.push(&RecordRef {
                    payload: &[7; 50],
                    ..RecordRef::default()
                });
            }
            log.append(Batch::from_trusted(b.finish(0, 0)))
                .await
                .unwrap();
        }
        for from in [0, 1, 2, 30] {
            for k in 1..=40u32 {
                let got = log.read(from, usize::MAX, k).unwrap();
                let records: u64 = got.iter().map(|b| u64::from(b.record_count())).sum();
                let start = from - from % 3;
                // Whole batches from the one holding `from`, while the
                // records from `start` stay within k (the first batch always).
                let want = (u64::from(k) / 3).max(1) * 3;
                assert_eq!(records, want, "from {from}, {k} records asked");
                assert_eq!(got[0].base_offset(), start);
            }
        }
        log.close().await.unwrap();
    }
}
