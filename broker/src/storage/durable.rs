//! The writer's blocking file operations: the durable write of a group and
//! the creation of a new segment. They run on tokio's blocking threads.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::error::StorageError;
use super::recovery::persist_index;
use super::segment::{self, SegmentPaths};

/// Runs blocking file work off the async threads. A join error only happens
/// when the runtime is shutting down, which for the log means closed.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(StorageError::Closed))
}

/// A failed write: the error, and whether the file was cut back to its
/// previous length.
#[derive(Debug)]
pub struct WriteFailure {
    pub error: std::io::Error,
    pub cut_back: bool,
}

impl From<std::io::Error> for WriteFailure {
    fn from(error: std::io::Error) -> Self {
        WriteFailure {
            error,
            cut_back: false,
        }
    }
}

/// The blocking part of a commit: one `pwrite` of `data` at `at`, then
/// `fdatasync` when `sync`, whose duration it returns (zero without). The log was `pre` bytes long (`at` is earlier
/// when a direct write re-writes the partial last block). On failure the
/// file is truncated back to `pre` so a partially written batch can never
/// be recovered.
pub fn write_durably(
    file: &File,
    data: &[u8],
    at: u64,
    pre: u64,
    truncate_to: Option<u64>,
    sync: bool,
) -> Result<std::time::Duration, WriteFailure> {
    if let Some(len) = truncate_to {
        file.set_len(len)?;
    }
    let result = file.write_all_at(data, at).and_then(|()| {
        if !sync {
            return Ok(std::time::Duration::ZERO);
        }
        let started = std::time::Instant::now();
        file.sync_data().map(|()| started.elapsed())
    });
    result.map_err(|error| WriteFailure {
        cut_back: file.set_len(pre).is_ok(),
        error,
    })
}

/// Creates the three files of a new segment and fsyncs the folder; removes
/// what it created if any step fails.
pub fn create_segment(dir: &Path, paths: &SegmentPaths) -> Result<File, StorageError> {
    let result = (|| {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&paths.log)
            .map_err(|e| StorageError::io(&paths.log, e))?;
        persist_index(paths, &[])?;
        file.sync_all()
            .map_err(|e| StorageError::io(&paths.log, e))?;
        segment::sync_dir(dir)?;
        Ok(file)
    })();
    if result.is_err() {
        for p in [&paths.log, &paths.index, &paths.time_index] {
            let _ = std::fs::remove_file(p);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_is_cut_back() {
        let file = tempfile::tempfile().expect("tempfile");
        file.write_all_at(b"committed", 0).expect("write");
        // A read-only handle makes the write fail; the cut back must still
        // be attempted (it fails too here, and says so).
        let ro = std::fs::File::open("/proc/self/exe").expect("open");
        let err = write_durably(&ro, b"more", 9, 9, None, true).expect_err("fails");
        assert!(!err.cut_back);
        // On a writable file a successful write lands where asked.
        write_durably(&file, b"-next", 9, 9, Some(9), true).expect("write");
        let mut buf = [0u8; 14];
        file.read_exact_at(&mut buf, 0).expect("read");
        assert_eq!(&buf, b"committed-next");
    }

    #[test]
    fn enospc_maps_to_storage_full() {
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let err = write_durably(&full, b"x", 0, 0, None, false).expect_err("ENOSPC");
        assert!(StorageError::io(Path::new("/dev/full"), err.error).is_storage_full());
    }
}
