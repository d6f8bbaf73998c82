//! The storage layer's one error type.

use std::io;
use std::path::{Path, PathBuf};

use herald_protocol::BatchError;

/// Why a storage operation failed.
///
/// I/O errors always name the file they happened on. Running out of space is
/// its own variant because it is the one I/O failure a caller is expected to
/// survive: the failed appends left the log unchanged and later appends may
/// succeed once space is freed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Any other I/O failure, with the file or folder it concerned.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// ENOSPC or EDQUOT. The appends that hit it failed and were rolled back
    /// (the segment was truncated to its previous length).
    #[error("storage full writing {}: {source}", path.display())]
    StorageFull {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Data on disk does not validate: a batch read back fails its checks,
    /// or the segment files do not fit together. `position` is the byte
    /// position in `path` where the damage starts; `offsets` (first,
    /// end exclusive) are the offsets that cannot be read because of it,
    /// when known.
    #[error("corrupt segment {} at byte {position}{}: {reason}", path.display(), OffsetsNote(*offsets))]
    Corrupt {
        path: PathBuf,
        position: u64,
        offsets: Option<(u64, u64)>,
        reason: String,
    },
    /// An idempotent producer skipped sequence numbers.
    #[error("sequence gap for producer {producer_id}: expected {expected}, got {got}")]
    SequenceGap {
        producer_id: u64,
        expected: u64,
        got: u64,
    },
    /// The batch handed to `append` is not a well-formed batch.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// A read or lookup past the end of the log.
    #[error("offset {requested} is out of range [{first}, {next})")]
    OffsetOutOfRange {
        requested: u64,
        first: u64,
        next: u64,
    },
    /// The log was closed (or its writer task stopped).
    #[error("log is closed")]
    Closed,
}

impl StorageError {
    /// True for ENOSPC / EDQUOT: nothing was appended, and appends may work
    /// again once space is freed.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, StorageError::StorageFull { .. })
    }

    /// Wraps an I/O error with the path it concerned, sorting out the
    /// out-of-space cases.
    pub(crate) fn io(path: &Path, source: io::Error) -> StorageError {
        let full = matches!(
            source.raw_os_error(),
            Some(code) if code == libc::ENOSPC || code == libc::EDQUOT
        );
        let path = path.to_path_buf();
        if full {
            StorageError::StorageFull { path, source }
        } else {
            StorageError::Io { path, source }
        }
    }

    /// A copy for answering several appends that failed together (io::Error
    /// is not `Clone`).
    pub(crate) fn duplicate(&self) -> StorageError {
        let copy_io = |e: &io::Error| io::Error::new(e.kind(), e.to_string());
        match self {
            StorageError::Io { path, source } => StorageError::Io {
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => copy_io(source),
                },
            },
            StorageError::StorageFull { path, source } => StorageError::StorageFull {
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => copy_io(source),
                },
            },
            StorageError::Corrupt {
                path,
                position,
                offsets,
                reason,
            } => StorageError::Corrupt {
                path: path.clone(),
                position: *position,
                offsets: *offsets,
                reason: reason.clone(),
            },
            StorageError::SequenceGap {
                producer_id,
                expected,
                got,
            } => StorageError::SequenceGap {
                producer_id: *producer_id,
                expected: *expected,
                got: *got,
            },
            StorageError::InvalidBatch(e) => StorageError::InvalidBatch(e.clone()),
            StorageError::OffsetOutOfRange {
                requested,
                first,
                next,
            } => StorageError::OffsetOutOfRange {
                requested: *requested,
                first: *first,
                next: *next,
            },
            StorageError::Closed => StorageError::Closed,
        }
    }
}

/// Formats the offsets of a [`StorageError::Corrupt`]: ", offsets 5..=9",
/// ", no records" for bytes that held none, nothing when unknown.
struct OffsetsNote(Option<(u64, u64)>);

impl std::fmt::Display for OffsetsNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some((first, end)) if end > first => write!(f, ", offsets {first}..={}", end - 1),
            Some(_) => write!(f, ", no records"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_and_edquot_are_storage_full() {
        let p = Path::new("/x");
        for code in [libc::ENOSPC, libc::EDQUOT] {
            let e = StorageError::io(p, io::Error::from_raw_os_error(code));
            assert!(e.is_storage_full());
            assert!(e.duplicate().is_storage_full());
        }
        let e = StorageError::io(p, io::Error::from_raw_os_error(libc::EIO));
        assert!(!e.is_storage_full());
        assert!(matches!(e.duplicate(), StorageError::Io { .. }));
    }
}
