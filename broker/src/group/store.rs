//! Where a group's acknowledgement state lives on disk: one small file per
//! group (`groups/<name>.state`), postcard-encoded, rewritten in place in
//! two alternating checksummed copies ([`crate::slotfile`]). The groups of
//! a room's log (its members) keep theirs in the room's positions file
//! instead ([`super::positions`]), encoded the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::syncer::Syncer;
use crate::{fsutil, slotfile};

use serde::{Deserialize, Serialize};

use super::acks::Snapshot;

/// Everything a group persists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredGroup {
    pub snapshot: Snapshot,
    pub max_deliveries: u32,
}

/// Errors reading or writing group state.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("group state {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("group state {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl StoreError {
    /// True for ENOSPC / EDQUOT: the state was not written, and may be once
    /// space is freed.
    pub fn is_storage_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => fsutil::is_storage_full(source),
            StoreError::Corrupt { .. } => false,
        }
    }

    /// A copy for answering every ack that waited on one failed write
    /// (`io::Error` is not `Clone`).
    pub fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Io { path, source } => StoreError::Io {
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::new(source.kind(), source.to_string()),
                },
            },
            StoreError::Corrupt { path, reason } => StoreError::Corrupt {
                path: path.clone(),
                reason: reason.clone(),
            },
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| {
        // A checksum mismatch or a truncated file is damage, not I/O.
        if source.kind() == std::io::ErrorKind::InvalidData {
            // The message names the file already; say it once.
            let text = source.to_string();
            let prefix = format!("{}: ", path.display());
            StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: text.strip_prefix(&prefix).unwrap_or(&text).to_owned(),
            }
        } else {
            StoreError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// Loads a group's state; `Ok(None)` when the group has never been saved.
///
/// # Errors
/// [`StoreError::Corrupt`] for a file that fails its checksum or does not
/// decode; [`StoreError::Io`] when it cannot be read.
pub fn load(path: &Path) -> Result<Option<StoredGroup>, StoreError> {
    let Some(body) = slotfile::read(path).map_err(io(path))? else {
        return Ok(None);
    };
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Writes a group's state (a crash leaves the old state or the new one);
/// with `durable`, the new state survives a crash once this returns.
/// `cache` keeps the file open between the writes of its one writer.
pub fn save(
    path: &Path,
    state: &StoredGroup,
    durable: bool,
    cache: &slotfile::Cache,
) -> Result<(), StoreError> {
    let body = postcard::to_allocvec(state).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    slotfile::write_cached(path, &body, durable, cache).map_err(io(path))
}

/// [`save`] through the broker's shared [`Syncer`]: the write joins the
/// next round, whose syncs it shares with every other group saving then,
/// instead of two fsyncs of its own.
pub async fn save_synced(
    path: PathBuf,
    state: StoredGroup,
    syncer: Arc<Syncer>,
    cache: slotfile::Cache,
) -> Result<(), StoreError> {
    let body = postcard::to_allocvec(&state).map_err(|e| StoreError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    syncer
        .save(path.clone(), body, cache)
        .await
        .map_err(io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_and_detect_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.state");
        assert_eq!(load(&p).unwrap(), None);
        let s = StoredGroup {
            snapshot: Snapshot {
                floor: 3,
                next_fresh: 9,
                undone: vec![(4, 5, 2)],
                redelivered: 1,
                dead_lettered: 0,
                done_ahead: vec![(12, 14)],
            },
            max_deliveries: 10,
        };
        save(&p, &s, true, &Default::default()).unwrap();
        use std::fs;
        assert_eq!(load(&p).unwrap(), Some(s));
        // The state's only copy is at the start of the file.
        let mut b = fs::read(&p).unwrap();
        b[21] ^= 1;
        fs::write(&p, b).unwrap();
        assert!(load(&p).is_err());
    }
}
