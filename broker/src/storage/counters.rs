//! What a log counts as it works, for the broker's metrics
//! (`crate::metrics`): relaxed atomics bumped once per group commit or
//! fsync by the writer task, never per record, and read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::histogram::{AtomicHistogram, FSYNC_SECONDS, GROUP_BATCHES};

/// One log's event counters. Owned by the log (`Log::counters`), so a
/// topic's numbers need no lookup on the append path.
#[derive(Debug)]
pub struct LogCounters {
    /// Batches written (appends confirmed; duplicates not counted).
    pub appends: AtomicU64,
    /// Records in those batches.
    pub records: AtomicU64,
    /// Bytes of those batches as stored.
    pub bytes: AtomicU64,
    /// How long each `fdatasync` of segment data took.
    pub fsync_seconds: AtomicHistogram,
    /// Batches per group commit (one `pwrite`, under `always` one fsync).
    pub group_batches: AtomicHistogram,
    /// Torn tails cut off when the log was opened (crash recovery).
    pub torn_tails_truncated: AtomicU64,
}

impl Default for LogCounters {
    fn default() -> Self {
        LogCounters {
            appends: AtomicU64::new(0),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            fsync_seconds: AtomicHistogram::new(FSYNC_SECONDS),
            group_batches: AtomicHistogram::new(GROUP_BATCHES),
            torn_tails_truncated: AtomicU64::new(0),
        }
    }
}

impl LogCounters {
    /// One group commit of `batches` batches holding `records` records and
    /// `bytes` bytes was written.
    pub(crate) fn committed(&self, batches: u64, records: u64, bytes: u64) {
        if batches == 0 {
            return;
        }
        self.appends.fetch_add(batches, Ordering::Relaxed);
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.group_batches.observe(batches as f64);
    }
}
