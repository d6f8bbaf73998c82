//! Deleting old segments.
//!
//! Only whole closed segments go, oldest first, and never the active one:
//! - by size: the oldest segment goes while the segments after it still hold
//!   at least `retention_bytes` (so the log keeps at least that much);
//! - by age: the oldest segment goes while its newest batch's append time is
//!   more than `retention_ms` in the past.
//!
//! Readers that already picked a deleted segment keep reading it through
//! their `Arc<File>`; the data goes away when they are done.

use std::fs;
use std::io::ErrorKind;

use super::error::StorageError;
use super::segment::{sync_dir, SegmentEntry};
use super::{now_ms, Shared};

/// See [`super::Log::apply_retention`].
pub fn apply(shared: &Shared) -> Result<u32, StorageError> {
    let cfg = &shared.config;
    if cfg.retention_bytes.is_none() && cfg.retention_ms.is_none() {
        return Ok(0);
    }
    let cutoff = cfg
        .retention_ms
        .map(|ms| now_ms().saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)));
    let removed: Vec<SegmentEntry> = {
        let mut st = shared.lock();
        let mut total: u64 = st.segments.iter().map(|s| s.size).sum();
        let mut n = 0;
        while n + 1 < st.segments.len() {
            let s = &st.segments[n];
            let by_bytes = cfg
                .retention_bytes
                .is_some_and(|keep| total - s.size >= keep);
            let by_age = cutoff.is_some_and(|c| s.max_time < c);
            if !(by_bytes || by_age) {
                break;
            }
            total -= s.size;
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        let removed = st.segments.drain(..n).collect();
        let first = st.first_offset();
        st.tail.drop_below(first);
        removed
    };
    for seg in &removed {
        for path in [&seg.paths.log, &seg.paths.index, &seg.paths.time_index] {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(path, e)),
            }
        }
        tracing::info!(segment = %seg.paths.log.display(), "retention deleted a segment");
    }
    sync_dir(&shared.dir)?;
    Ok(removed.len() as u32)
}
