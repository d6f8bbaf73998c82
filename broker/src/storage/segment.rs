//! Segment files: naming, batch headers, and the scan that recovery and the
//! read path share.
//!
//! A segment is three files named by the offset of its first record,
//! `{base_offset:020}.log` / `.index` / `.timeindex`. The `.log` file is
//! record batches back to back, byte for byte as `herald_protocol::batch`
//! lays them out, with the broker's `base_offset` and `append_time` stamped.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use herald_protocol::batch::{HeaderFields, BATCH_HEADER_LEN, BATCH_MAGIC, MAX_RECORDS_PER_BATCH};

use super::damage::Damage;
use super::error::StorageError;
use super::index::IndexEntry;

/// Smallest possible batch: the header and one record with no key, headers
/// or payload.
pub const MIN_BATCH_LEN: u64 = BATCH_HEADER_LEN as u64 + 4 + 14;

/// The paths of one segment's files.
#[derive(Debug, Clone)]
pub struct SegmentPaths {
    pub log: PathBuf,
    pub index: PathBuf,
    pub time_index: PathBuf,
}

impl SegmentPaths {
    pub fn new(dir: &Path, base_offset: u64) -> Self {
        SegmentPaths {
            log: dir.join(format!("{base_offset:020}.log")),
            index: dir.join(format!("{base_offset:020}.index")),
            time_index: dir.join(format!("{base_offset:020}.timeindex")),
        }
    }
}

/// Parses a `.log` file name back to its base offset.
pub fn parse_log_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// What the read path and retention need to know about a segment. Lives in
/// the log's shared state; only the writer grows the last (active) one.
///
/// # Invariants
/// `size` and `next_offset` only cover confirmed batches, so readers never
/// see data that append has not confirmed. `index` covers exactly the valid
/// batches in `0..size`. Every offset in `base_offset..next_offset` is in a
/// valid batch or in one of `damage`.
#[derive(Debug)]
pub struct SegmentEntry {
    pub base_offset: u64,
    pub paths: SegmentPaths,
    /// Shared with in-flight reads, which keep a deleted segment's data
    /// readable until they finish.
    pub file: Arc<File>,
    /// Confirmed bytes.
    pub size: u64,
    /// One past the last confirmed offset in this segment.
    pub next_offset: u64,
    pub index: Vec<IndexEntry>,
    /// Append time of the newest batch (`i64::MIN` when empty).
    pub max_time: i64,
    /// Damaged ranges, by position (see `storage/damage.rs`). Usually empty.
    pub damage: Vec<Damage>,
}

impl SegmentEntry {
    /// The damaged range that held `offset`, if any.
    pub fn damage_at(&self, offset: u64) -> Option<&Damage> {
        self.damage.iter().find(|d| d.holds(offset))
    }
}

/// The fixed header fields the storage layer looks at (the layout is the
/// protocol crate's).
pub type Header = HeaderFields;

/// The cheap framing checks: what can be told from the header alone about
/// a batch at `pos` in a file of `file_len` bytes that should start at
/// offset `expected`. `Err` holds the reason.
pub fn check_framing(h: &Header, pos: u64, file_len: u64, expected: u64) -> Result<(), String> {
    let len = u64::from(h.batch_len);
    if len < MIN_BATCH_LEN {
        return Err(format!(
            "batch_len {len} is below the minimum {MIN_BATCH_LEN}"
        ));
    }
    if pos + len > file_len {
        return Err(format!(
            "batch of {len} bytes runs past the end of the file ({file_len} bytes)"
        ));
    }
    if h.magic != BATCH_MAGIC {
        return Err(format!("bad magic {}", h.magic));
    }
    if h.record_count == 0 || h.record_count > MAX_RECORDS_PER_BATCH {
        return Err(format!("bad record count {}", h.record_count));
    }
    if h.base_offset != expected {
        return Err(format!(
            "base offset {} where {expected} was expected",
            h.base_offset
        ));
    }
    Ok(())
}

/// Reads the header of the batch at `pos`.
pub fn read_header(file: &File, pos: u64) -> io::Result<Header> {
    let mut h = [0u8; BATCH_HEADER_LEN];
    file.read_exact_at(&mut h, pos)?;
    Header::parse(&h).ok_or_else(|| io::Error::other("short batch header"))
}

/// Opens a segment's `.log` for reading and writing (created if `create`).
pub fn open_log_file(path: &Path, create: bool) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(|e| StorageError::io(path, e))
}

/// Fsyncs a folder so that files created, renamed or removed in it survive
/// a crash.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

/// Finds the first batch at or after `from_pos` whose header satisfies
/// `stop` (e.g. "holds offset x"), stepping by `batch_len`, jumping over the
/// known damaged ranges in `damage`, and never past `limit`. Returns its
/// position and header.
pub fn scan_to(
    file: &File,
    path: &Path,
    from_pos: u64,
    limit: u64,
    damage: &[Damage],
    mut stop: impl FnMut(&Header) -> bool,
) -> Result<Option<(u64, Header)>, StorageError> {
    let mut pos = from_pos;
    while pos + BATCH_HEADER_LEN as u64 <= limit {
        if let Some(d) = damage.iter().find(|d| d.pos == pos && d.len > 0) {
            pos = d.end_pos();
            continue;
        }
        let h = read_header(file, pos).map_err(|e| StorageError::io(path, e))?;
        if stop(&h) {
            return Ok(Some((pos, h)));
        }
        if u64::from(h.batch_len) < MIN_BATCH_LEN {
            return Err(StorageError::Corrupt {
                path: path.to_path_buf(),
                position: pos,
                offsets: None,
                reason: format!("batch_len {} while stepping the segment", h.batch_len),
            });
        }
        pos += u64::from(h.batch_len);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let p = SegmentPaths::new(Path::new("/d"), 42);
        let name = p.log.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert_eq!(name, "00000000000000000042.log");
        assert_eq!(parse_log_name(name), Some(42));
        assert_eq!(parse_log_name("42.log"), None);
        assert_eq!(parse_log_name("00000000000000000042.index"), None);
    }
}
