//! TEMPORARY in-memory stand-in for the storage engine, so the broker can be
//! built and tested while the real engine lands. Same API.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use herald_protocol::Batch;
pub use herald_protocol::FsyncPolicy;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: Option<u64>,
    pub fsync: FsyncPolicy,
    pub retention_bytes: Option<u64>,
    pub retention_ms: Option<u64>,
    pub index_interval_bytes: usize,
    pub tail_cache_bytes: usize,
}
impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 64 << 20,
            segment_ms: None,
            fsync: FsyncPolicy::Always,
            retention_bytes: None,
            retention_ms: None,
            index_interval_bytes: 4096,
            tail_cache_bytes: 8 << 20,
        }
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: u64,
    pub count: u32,
    pub duplicate: bool,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    pub first_offset: u64,
    pub next_offset: u64,
    pub bytes_on_disk: u64,
    pub segments: u32,
}
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("storage full")]
    StorageFull { path: PathBuf },
    #[error("corrupt {path} at {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("sequence gap for producer {producer_id}: expected {expected}, got {got}")]
    SequenceGap {
        producer_id: u64,
        expected: u64,
        got: u64,
    },
    #[error("closed")]
    Closed,
}
impl StorageError {
    pub fn is_storage_full(&self) -> bool {
        matches!(self, StorageError::StorageFull { .. })
    }
}
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    batches: Mutex<Vec<Batch>>,
    next: watch::Sender<u64>,
}
impl Log {
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Arc<Log>, StorageError> {
        Ok(Arc::new(Log {
            dir: dir.as_ref().to_path_buf(),
            config,
            batches: Mutex::new(Vec::new()),
            next: watch::channel(0).0,
        }))
    }
    pub async fn append(&self, batch: Batch) -> Result<AppendOutcome, StorageError> {
        let mut b = self.batches.lock().unwrap();
        let base = *self.next.borrow();
        let mut m = bytes::BytesMut::from(&batch.bytes()[..]);
        herald_protocol::batch::stamp(&mut m, base, 0);
        let batch = Batch::from_trusted(m.freeze());
        let count = batch.record_count();
        b.push(batch);
        self.next.send_replace(base + count as u64);
        Ok(AppendOutcome {
            base_offset: base,
            count,
            duplicate: false,
        })
    }
    pub fn read(
        &self,
        from: u64,
        max_bytes: usize,
        max_records: u32,
    ) -> Result<Vec<Batch>, StorageError> {
        let b = self.batches.lock().unwrap();
        let mut out = Vec::new();
        let (mut bytes, mut recs) = (0usize, 0u32);
        for x in b.iter() {
            if x.last_offset() < from {
                continue;
            }
            if !out.is_empty() && (bytes + x.len_bytes() > max_bytes || recs >= max_records) {
                break;
            }
            bytes += x.len_bytes();
            recs += x.record_count();
            out.push(x.clone());
        }
        Ok(out)
    }
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> Result<u64, StorageError> {
        let b = self.batches.lock().unwrap();
        Ok(b.iter()
            .find(|x| x.append_time() >= ts_ms)
            .map(|x| x.base_offset())
            .unwrap_or(*self.next.borrow()))
    }
    pub fn first_offset(&self) -> u64 {
        0
    }
    pub fn next_offset(&self) -> u64 {
        *self.next.borrow()
    }
    pub fn watch_next_offset(&self) -> watch::Receiver<u64> {
        self.next.subscribe()
    }
    pub fn stats(&self) -> LogStats {
        LogStats {
            first_offset: 0,
            next_offset: self.next_offset(),
            bytes_on_disk: 0,
            segments: 1,
        }
    }
    pub fn apply_retention(&self) -> Result<u32, StorageError> {
        Ok(0)
    }
    pub async fn close(&self) -> Result<(), StorageError> {
        Ok(())
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
