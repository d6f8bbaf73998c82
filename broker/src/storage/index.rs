//! Sparse offset index and time index of one segment.
//!
//! Both are derived data: they are rebuilt from the log on open whenever the
//! files are missing, short or disagree with the log, so they are written only
//! when a segment is closed (rolled, or the log is closed) and after recovery.
//!
//! # File layouts (little-endian, fixed-size entries, no header)
//! ```text
//! .index      per entry: 4 relative offset (base_offset of the batch minus the
//!                          segment's base offset), 4 byte position in .log
//! .timeindex  per entry: 8 append_time (ms) of that batch, 4 relative offset
//! ```
//! Entry `i` of both files describes the same batch.
//!
//! # Invariants
//! The first batch of a non-empty segment always has an entry, and a new
//! entry is added for the first batch that starts at least
//! `index_interval_bytes` after the previous entry. The rule depends only on
//! the log's bytes, so a rebuild reproduces the index exactly. Relative
//! offsets, positions and (because the writer stamps non-decreasing append
//! times) times are all non-decreasing.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes per `.index` entry.
pub const OFFSET_ENTRY_LEN: usize = 8;
/// Bytes per `.timeindex` entry.
pub const TIME_ENTRY_LEN: usize = 12;

/// One sparse entry: the batch starting at `pos` has base offset
/// `segment base + rel` and append time `time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub rel: u32,
    pub pos: u32,
    pub time: i64,
}

/// Applies the sparse-entry rule as batches go by, in the writer and in
/// recovery alike.
#[derive(Debug, Clone)]
pub struct IndexBuilder {
    /// Minimum bytes between two entries.
    interval: u64,
    /// Position of the last entry; `None` before the first batch.
    last_pos: Option<u64>,
}

impl IndexBuilder {
    pub fn new(interval: u64) -> Self {
        IndexBuilder {
            interval,
            last_pos: None,
        }
    }

    /// Resumes after the entries already built for a segment.
    pub fn resume(interval: u64, entries: &[IndexEntry]) -> Self {
        IndexBuilder {
            interval,
            last_pos: entries.last().map(|e| u64::from(e.pos)),
        }
    }

    /// Observes a batch at `pos`; returns the entry to add, if any.
    pub fn observe(&mut self, rel: u32, pos: u64, time: i64) -> Option<IndexEntry> {
        let due = match self.last_pos {
            None => true,
            Some(last) => pos - last >= self.interval,
        };
        if !due {
            return None;
        }
        self.last_pos = Some(pos);
        Some(IndexEntry {
            rel,
            pos: pos as u32,
            time,
        })
    }
}

/// The entry to start a scan from for offset `rel`: the last one at or
/// before it. `None` only for an empty index.
pub fn lookup_offset(entries: &[IndexEntry], rel: u64) -> Option<IndexEntry> {
    let n = entries.partition_point(|e| u64::from(e.rel) <= rel);
    entries.get(n.checked_sub(1)?).copied()
}

/// The entry to start a scan from for the first batch with
/// `append_time >= ts`: the last entry older than `ts`, or the first entry.
pub fn lookup_time(entries: &[IndexEntry], ts: i64) -> Option<IndexEntry> {
    let n = entries.partition_point(|e| e.time < ts);
    entries.get(n.saturating_sub(1)).copied()
}

/// Encodes both files' contents.
pub fn encode(entries: &[IndexEntry]) -> (Vec<u8>, Vec<u8>) {
    let mut offsets = Vec::with_capacity(entries.len() * OFFSET_ENTRY_LEN);
    let mut times = Vec::with_capacity(entries.len() * TIME_ENTRY_LEN);
    for e in entries {
        offsets.extend_from_slice(&e.rel.to_le_bytes());
        offsets.extend_from_slice(&e.pos.to_le_bytes());
        times.extend_from_slice(&e.time.to_le_bytes());
        times.extend_from_slice(&e.rel.to_le_bytes());
    }
    (offsets, times)
}

/// Decodes both files; `None` if they are not a well-formed pair.
pub fn decode(offsets: &[u8], times: &[u8]) -> Option<Vec<IndexEntry>> {
    if offsets.len() % OFFSET_ENTRY_LEN != 0 || times.len() % TIME_ENTRY_LEN != 0 {
        return None;
    }
    let n = offsets.len() / OFFSET_ENTRY_LEN;
    if times.len() / TIME_ENTRY_LEN != n {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for (o, t) in offsets
        .chunks_exact(OFFSET_ENTRY_LEN)
        .zip(times.chunks_exact(TIME_ENTRY_LEN))
    {
        let rel = u32::from_le_bytes([o[0], o[1], o[2], o[3]]);
        let pos = u32::from_le_bytes([o[4], o[5], o[6], o[7]]);
        let mut tb = [0u8; 8];
        tb.copy_from_slice(&t[..8]);
        let trel = u32::from_le_bytes([t[8], t[9], t[10], t[11]]);
        if trel != rel {
            return None;
        }
        out.push(IndexEntry {
            rel,
            pos,
            time: i64::from_le_bytes(tb),
        });
    }
    Some(out)
}

/// Replaces a file's contents with `bytes` and fsyncs it.
pub fn overwrite(file: &File, bytes: &[u8]) -> io::Result<()> {
    file.set_len(0)?;
    file.write_all_at(bytes, 0)?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<IndexEntry> {
        let mut b = IndexBuilder::new(100);
        let mut out = Vec::new();
        let mut pos = 0;
        for i in 0..20u32 {
            if let Some(e) = b.observe(i * 3, pos, i64::from(i) * 10) {
                out.push(e);
            }
            pos += 40;
        }
        out
    }

    #[test]
    fn builder_is_sparse_and_starts_at_zero() {
        let e = entries();
        assert_eq!(e[0].pos, 0);
        assert!(e.windows(2).all(|w| w[1].pos - w[0].pos >= 100));
        assert_eq!(e.len(), 7);
    }

    #[test]
    fn round_trip_and_rejects_mismatch() {
        let e = entries();
        let (o, t) = encode(&e);
        assert_eq!(decode(&o, &t), Some(e.clone()));
        assert_eq!(decode(&o[..o.len() - 1], &t), None);
        assert_eq!(decode(&o[..o.len() - 8], &t), None);
        let mut bad = t.clone();
        bad[8] ^= 1;
        assert_eq!(decode(&o, &bad), None);
    }

    #[test]
    fn lookups() {
        let e = entries();
        assert_eq!(lookup_offset(&e, 0).map(|x| x.rel), Some(0));
        assert_eq!(lookup_offset(&e, 10).map(|x| x.rel), Some(9));
        assert_eq!(
            lookup_offset(&e, 1000).map(|x| x.rel),
            e.last().map(|x| x.rel)
        );
        assert_eq!(lookup_time(&e, -5).map(|x| x.time), Some(0));
        assert_eq!(lookup_time(&e, 35).map(|x| x.time), Some(30));
        assert_eq!(lookup_time(&e, 30).map(|x| x.time), Some(0));
        assert_eq!(lookup_offset(&[], 3), None);
    }
}
