//! Per-log settings.

use std::sync::Arc;

pub use herald_protocol::FsyncPolicy;

use crate::memory::MemoryBudget;

/// Largest segment the 32-bit file positions of the offset index can address
/// with room for one oversized batch past the roll point.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;

/// Settings of one log. `Default` gives the broker's defaults.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Roll the active segment when the next batch would take it past this
    /// many bytes (a lone batch bigger than this still goes in an empty
    /// segment). Clamped to [`MAX_SEGMENT_BYTES`].
    pub segment_bytes: u64,
    /// Roll the active segment once its first batch is this old (checked on
    /// append).
    pub segment_ms: Option<u64>,
    /// When an append is confirmed; see `docs/storage.md`.
    pub fsync: FsyncPolicy,
    /// Delete the oldest closed segments while the rest still holds at least
    /// this many bytes.
    pub retention_bytes: Option<u64>,
    /// Delete closed segments whose newest batch is older than this.
    pub retention_ms: Option<u64>,
    /// One sparse index entry per this many bytes of log.
    pub index_interval_bytes: usize,
    /// Bytes of recent batches kept in memory for readers at the tail.
    pub tail_cache_bytes: usize,
    /// Under `Always`, write with `O_DIRECT` where the filesystem allows
    /// (see `storage/direct.rs`); the other policies always write through
    /// the page cache.
    pub direct_io: bool,
    /// The broker's memory budget: buffers read from disk are counted
    /// against it, and the tail cache lets go of old batches when it is
    /// nearly spent (see [`crate::memory`]). `None` counts nothing.
    pub memory: Option<Arc<MemoryBudget>>,
    /// Merge the plain batches of each group commit into bigger ones (see
    /// `storage/coalesce.rs`): for logs the broker writes itself, one
    /// record per append (room logs, inboxes). Client-published topics
    /// keep their batches as received.
    pub coalesce: bool,
    /// Most bytes of one merged batch: [`super::coalesce::MAX_BYTES`], or
    /// less so that a Deliver of it fits the broker's frame limit
    /// ([`crate::BrokerConfig::max_deliverable_batch`]).
    pub coalesce_max_bytes: usize,
    /// Under `Always`, make each group commit durable through this shared
    /// sync round (see [`crate::syncer`]) instead of an `fdatasync` of its
    /// own: for the logs the broker writes itself (room logs, inboxes),
    /// many of which commit one emit at a time. `None`: `fdatasync`.
    pub shared_sync: Option<Arc<crate::syncer::Syncer>>,
    /// Create a new log's folder and first segment without syncing them
    /// (and without its index files, derived data written when the segment
    /// closes): the log's first group commit syncs the whole file system
    /// instead ([`crate::syncer::Syncer::sync`] with `full`), which makes
    /// them durable before anything in them is confirmed. Only meaningful
    /// with `shared_sync` under `Always`; set by the registry for the logs
    /// the broker creates per client (inboxes) and per room, whose creation
    /// (a join) otherwise cost seven fsyncs.
    pub create_unsynced: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 64 * 1024 * 1024,
            segment_ms: None,
            fsync: FsyncPolicy::Always,
            retention_bytes: None,
            retention_ms: None,
            index_interval_bytes: 4096,
            tail_cache_bytes: 8 * 1024 * 1024,
            direct_io: true,
            memory: None,
            coalesce: false,
            coalesce_max_bytes: super::coalesce::MAX_BYTES,
            shared_sync: None,
            create_unsynced: false,
        }
    }
}

impl LogConfig {
    /// The roll threshold actually used.
    pub(crate) fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.clamp(1, MAX_SEGMENT_BYTES)
    }

    /// The index interval actually used (0 would mean an entry per batch,
    /// which is what 1 means too).
    pub(crate) fn effective_index_interval(&self) -> u64 {
        self.index_interval_bytes.max(1) as u64
    }
}
