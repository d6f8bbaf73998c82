//! Damaged ranges of segment files, and the file of accepted gaps.
//!
//! A [`Damage`] is a byte range of one segment that does not hold valid
//! batches, with the offsets that were stored there. Recovery finds them
//! (framing in every segment, CRCs in the active one), `repair` finds the
//! rest (CRCs everywhere). Until an operator accepts a range, readers of
//! its offsets get [`StorageError::Corrupt`]; once accepted it is recorded
//! in the log folder's `gaps` file and readers skip it.
//!
//! # The `gaps` file
//! Written with `fsutil::write_atomic` (CRC32C of the body, atomic replace,
//! durable): a postcard `Vec<GapRecord>`, one record per accepted range.
//! Recovery honours a record only where it matches the segment (same
//! segment, position and first offset); a gap that is not recorded stays an
//! error, because the base offset is outside a batch's CRC and contiguity
//! is what catches damage there. A damaged `gaps` file is logged and
//! ignored: the ranges are reported again and `repair` writes a new one.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::StorageError;
use crate::fsutil;

/// Name of the accepted-gaps file in a log folder.
pub const GAPS_FILE: &str = "gaps";

/// A damaged byte range of one segment and the offsets it held.
///
/// # Invariants
/// `pos` is where a batch should have started; `pos + len` is the start of
/// the next valid batch or the end of the segment. Offsets
/// `first_offset..end_offset` are in no valid batch of the log (an empty
/// range when the bytes held no records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub pos: u64,
    pub len: u64,
    pub first_offset: u64,
    pub end_offset: u64,
    /// Recorded in the `gaps` file by a repair: readers skip it.
    pub accepted: bool,
    /// What the scan saw, for humans.
    pub reason: String,
}

impl Damage {
    pub fn end_pos(&self) -> u64 {
        self.pos + self.len
    }

    /// Whether `offset` was stored in this range.
    pub fn holds(&self, offset: u64) -> bool {
        self.first_offset <= offset && offset < self.end_offset
    }

    /// The error readers of this range get.
    pub fn error(&self, path: &Path) -> StorageError {
        StorageError::Corrupt {
            path: path.to_path_buf(),
            position: self.pos,
            offsets: Some((self.first_offset, self.end_offset)),
            reason: self.reason.clone(),
        }
    }

    pub fn record(&self, segment: u64) -> GapRecord {
        GapRecord {
            segment,
            pos: self.pos,
            len: self.len,
            first_offset: self.first_offset,
            end_offset: self.end_offset,
        }
    }

    pub fn describe(&self, segment: &Path) -> DamagedRange {
        DamagedRange {
            segment: segment.to_path_buf(),
            position: self.pos,
            bytes: self.len,
            first_offset: self.first_offset,
            end_offset: self.end_offset,
            accepted: self.accepted,
            reason: self.reason.clone(),
        }
    }
}

/// A damaged range as [`super::Log::damaged_ranges`] and
/// [`super::Log::repair`] report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRange {
    /// The segment's `.log` file.
    pub segment: PathBuf,
    /// Byte position of the damage in it.
    pub position: u64,
    /// Damaged bytes.
    pub bytes: u64,
    /// First offset lost.
    pub first_offset: u64,
    /// One past the last offset lost (`== first_offset`: no records).
    pub end_offset: u64,
    /// Recorded as an accepted gap: readers skip it.
    pub accepted: bool,
    pub reason: String,
}

impl DamagedRange {
    /// Records stored in the range.
    pub fn records(&self) -> u64 {
        self.end_offset - self.first_offset
    }

    /// "offsets 5..=9", or "no records" for bytes that held none.
    pub fn offsets_text(&self) -> String {
        offsets_text(self.first_offset, self.end_offset)
    }
}

/// "offsets 5..=9" for `5..10`, "no records" for an empty range.
pub fn offsets_text(first: u64, end: u64) -> String {
    if end > first {
        format!("offsets {first}..={}", end - 1)
    } else {
        "no records".to_string()
    }
}

/// One accepted gap, as stored in the `gaps` file. Field order is the file
/// format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapRecord {
    /// Base offset of the segment (its file name).
    pub segment: u64,
    pub pos: u64,
    pub len: u64,
    pub first_offset: u64,
    pub end_offset: u64,
}

/// The accepted gaps of the log in `dir`; none if the file is missing. A
/// damaged file is logged and treated as empty (the ranges are then
/// reported as unaccepted damage again).
pub fn load(dir: &Path) -> Vec<GapRecord> {
    let path = dir.join(GAPS_FILE);
    let body = match fsutil::read_checked(&path) {
        Ok(Some(b)) => b,
        Ok(None) => return Vec::new(),
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "the accepted-gaps file is unreadable; its ranges count as damage again until the next repair");
            return Vec::new();
        }
    };
    match postcard::from_bytes(&body) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "the accepted-gaps file is malformed; its ranges count as damage again until the next repair");
            Vec::new()
        }
    }
}

/// Replaces the `gaps` file of `dir` durably.
pub fn save(dir: &Path, records: &[GapRecord]) -> Result<(), StorageError> {
    let path = dir.join(GAPS_FILE);
    let body = postcard::to_allocvec(records)
        .map_err(|e| StorageError::io(&path, io::Error::other(e.to_string())))?;
    fsutil::write_atomic(&path, &body, true).map_err(|e| StorageError::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_round_trip_and_damage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_empty());
        let recs = vec![GapRecord {
            segment: 10,
            pos: 300,
            len: 80,
            first_offset: 12,
            end_offset: 15,
        }];
        save(dir.path(), &recs).unwrap();
        assert_eq!(load(dir.path()), recs);
        let path = dir.path().join(GAPS_FILE);
        let mut b = std::fs::read(&path).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        std::fs::write(&path, &b).unwrap();
        assert!(
            load(dir.path()).is_empty(),
            "a damaged gaps file accepts nothing"
        );
    }

    #[test]
    fn error_names_the_offsets() {
        let d = Damage {
            pos: 300,
            len: 80,
            first_offset: 12,
            end_offset: 15,
            accepted: false,
            reason: "crc".into(),
        };
        let e = d.error(Path::new("/x/0.log")).to_string();
        assert!(e.contains("offsets 12..=14"), "{e}");
        assert!(e.contains("byte 300"), "{e}");
        assert!(d.holds(12) && d.holds(14) && !d.holds(15) && !d.holds(11));
    }
}
