//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use std::path::Path;

use bytes::Bytes;
use herald_broker::storage::{FsyncPolicy, Log, LogConfig};
use herald_protocol::{Batch, BatchBuilder, RecordRef};
use tempfile::TempDir;

/// A batch of one record per payload, not idempotent.
pub fn batch(payloads: &[&[u8]]) -> Batch {
    producer_batch(0, 0, payloads)
}

/// A batch from an idempotent producer.
pub fn producer_batch(producer_id: u64, seq: u64, payloads: &[&[u8]]) -> Batch {
    let mut b = BatchBuilder::new();
    for p in payloads {
        b.push(&RecordRef {
            key: b"key",
            payload: p,
            timestamp: 1_000,
            ..RecordRef::default()
        });
    }
    Batch::validate(b.finish(producer_id, seq)).expect("builder output validates")
}

/// A temporary folder, in RAM when /dev/shm exists (fsync is free there).
pub fn tmpdir() -> TempDir {
    if Path::new("/dev/shm").is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("herald-")
            .tempdir_in("/dev/shm")
        {
            return d;
        }
    }
    TempDir::new().expect("temp dir")
}

pub fn config(fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        fsync,
        ..LogConfig::default()
    }
}

/// Every record from `from` to the end, as (offset, payload).
pub fn read_all(log: &Log, from: u64) -> Vec<(u64, Bytes)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let batches = log.read(next, 64 * 1024, u32::MAX).expect("read");
        if batches.is_empty() {
            return out;
        }
        for b in batches {
            for r in b.records() {
                if r.offset >= next {
                    out.push((r.offset, r.payload.clone()));
                }
            }
            next = b.last_offset() + 1;
        }
    }
}

/// Copies the regular files of one folder into another.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

/// The `.log` files of a log folder, sorted.
pub fn log_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}
