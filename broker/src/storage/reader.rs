//! The read path: the tail cache first, else a `pread` from the segment,
//! found through the sparse offset index; and lookups by time.

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;

use bytes::BytesMut;
use herald_protocol::batch::{check, peek_batch_len, BATCH_HEADER_LEN};
use herald_protocol::Batch;

use super::error::StorageError;
use super::index;
use super::segment::scan_to;
use super::Shared;

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

/// See [`super::Log::read`].
pub fn read(
    shared: &Shared,
    from: u64,
    max_bytes: usize,
    max_records: u32,
) -> Result<Vec<Batch>, StorageError> {
    let (file, path, start, limit) = {
        let st = shared.lock();
        let from = from.max(st.first_offset());
        if from >= st.next_offset {
            return Ok(Vec::new());
        }
        if let Some(v) = st.tail.read(from, max_bytes, max_records) {
            return Ok(v);
        }
        let mut i = st
            .segments
            .partition_point(|s| s.base_offset <= from)
            .saturating_sub(1);
        while i < st.segments.len() && st.segments[i].next_offset <= from {
            i += 1;
        }
        let Some(seg) = st.segments.get(i) else {
            return Ok(Vec::new());
        };
        let rel = from.saturating_sub(seg.base_offset);
        let pos = index::lookup_offset(&seg.index, rel).map_or(0, |e| u64::from(e.pos));
        (
            seg.file.clone(),
            seg.paths.log.clone(),
            (from, pos),
            seg.size,
        )
    };
    let (from, pos) = start;
    let Some((pos, first)) = scan_to(&file, &path, pos, limit, |h| h.next_offset() > from)? else {
        return Ok(Vec::new());
    };
    let avail = (limit - pos) as usize;
    let want = max_bytes
        .min(MAX_READ_BYTES)
        .max(first.batch_len as usize)
        .min(avail);
    let mut buf = BytesMut::zeroed(want);
    file.read_exact_at(&mut buf, pos)
        .map_err(|e| StorageError::io(&path, e))?;
    let buf = match &shared.config.memory {
        Some(m) => m.charged(buf.freeze()),
        None => buf.freeze(),
    };
    let mut out = Vec::new();
    let mut budget = Budget::new(max_bytes, max_records);
    let mut at = 0usize;
    let mut expected = first.base_offset;
    while buf.len() - at >= BATCH_HEADER_LEN {
        let Some(len) = peek_batch_len(&buf[at..]) else {
            break;
        };
        if len > buf.len() - at {
            break;
        }
        let slice = buf.slice(at..at + len);
        let corrupt = |reason: String| StorageError::Corrupt {
            path: path.clone(),
            position: pos + at as u64,
            reason,
        };
        check(&slice).map_err(|e| corrupt(e.to_string()))?;
        let batch = Batch::from_trusted(slice);
        if batch.base_offset() != expected {
            return Err(corrupt(format!(
                "base offset {} where {expected} was expected",
                batch.base_offset()
            )));
        }
        if !budget.take(len, batch.record_count()) {
            break;
        }
        expected = batch.last_offset() + 1;
        out.push(batch);
        at += len;
    }
    Ok(out)
}

/// See [`super::Log::offset_for_timestamp`].
pub fn offset_for_timestamp(shared: &Shared, ts: i64) -> Result<u64, StorageError> {
    let (file, path, pos, limit, fallback) = {
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
        )
    };
    let found = scan_to(&file, &path, pos, limit, |h| h.append_time >= ts)?;
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
}
