//! Opening a log folder: finding the segments, checking them, cutting a torn
//! tail, rebuilding indexes and the producer state.
//!
//! # Rules
//! - Segments must be contiguous: each starts at the offset where the one
//!   before it ends.
//! - Closed segments (all but the last) get the cheap check: every batch
//!   header is read by stepping `batch_len`, and framing (length in bounds,
//!   magic, record count) and offset contiguity are verified, but CRCs are
//!   not, because that would read every byte of a big log on every open. A
//!   closed segment that fails is interior corruption: open refuses with
//!   [`StorageError::Corrupt`] naming the file and byte position. Payload
//!   damage in a closed segment is caught later, when a read checks each
//!   batch's CRC.
//! - The last (active) segment is checked fully (framing, contiguity and
//!   `herald_protocol::batch::check`, CRC included). Everything from its
//!   first bad batch on is a torn or corrupt tail from a crash: it is
//!   truncated, with a `tracing::warn!` saying how many bytes and from which
//!   offset; less than a block of zeros is the padding a direct write
//!   leaves, dropped without a warning.
//! - Indexes are rebuilt from the headers seen during the scan; index files
//!   that are missing or disagree are rewritten.
//! - Producer state is replayed from the headers of every batch, in order.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use herald_protocol::batch::{check, BATCH_HEADER_LEN};

use super::config::LogConfig;
use super::direct::ALIGN;
use super::error::StorageError;
use super::index::{self, IndexBuilder, IndexEntry};
use super::producer::ProducerMap;
use super::segment::{self, read_header, SegmentEntry, SegmentPaths};

/// A recovered log, ready for the writer.
#[derive(Debug)]
pub struct Recovered {
    /// Oldest first.
    pub closed: Vec<SegmentEntry>,
    /// The last segment, where appends go.
    pub active: SegmentEntry,
    pub producers: ProducerMap,
    /// Append time of the newest batch, so stamps stay non-decreasing.
    pub last_time: i64,
    /// Append time of the active segment's first batch (for `segment_ms`).
    pub active_first_time: Option<i64>,
}

/// Opens or creates the log in `dir`.
pub fn recover(dir: &Path, config: &LogConfig) -> Result<Recovered, StorageError> {
    fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
    segment::sync_dir(dir)?;
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        if let Some(base) = entry.file_name().to_str().and_then(segment::parse_log_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    if bases.is_empty() {
        let paths = SegmentPaths::new(dir, 0);
        let file = segment::open_log_file(&paths.log, true)?;
        persist_index(&paths, &[])?;
        segment::sync_dir(dir)?;
        return Ok(Recovered {
            closed: Vec::new(),
            active: empty_entry(0, paths, file),
            producers: ProducerMap::default(),
            last_time: i64::MIN,
            active_first_time: None,
        });
    }
    let mut producers = ProducerMap::default();
    let mut segments: Vec<SegmentEntry> = Vec::with_capacity(bases.len());
    let mut active_first_time = None;
    for (i, &base) in bases.iter().enumerate() {
        let paths = SegmentPaths::new(dir, base);
        if let Some(prev) = segments.last() {
            if prev.next_offset != base {
                return Err(StorageError::Corrupt {
                    path: paths.log,
                    position: 0,
                    reason: format!(
                        "segment starts at offset {base} but the previous one ends at {}",
                        prev.next_offset
                    ),
                });
            }
        }
        let last = i + 1 == bases.len();
        let file = segment::open_log_file(&paths.log, false)?;
        let scan = scan_segment(&file, &paths, base, last, config, &mut producers)?;
        if last {
            active_first_time = scan.first_time;
        }
        let stored_index = read_index(&paths);
        if stored_index.as_deref() != Some(&scan.index[..]) {
            if !last || stored_index.is_some() {
                tracing::info!(segment = %paths.log.display(), "rebuilding index from the log");
            }
            // Derived data: on failure the next open rebuilds it again.
            if let Err(e) = persist_index(&paths, &scan.index) {
                tracing::warn!(error = %e, "could not rewrite the segment index");
            }
        }
        segments.push(SegmentEntry {
            base_offset: base,
            paths,
            file: Arc::new(file),
            size: scan.valid_len,
            next_offset: scan.next_offset,
            index: scan.index,
            max_time: scan.max_time,
        });
    }
    let last_time = segments
        .iter()
        .rev()
        .map(|s| s.max_time)
        .find(|&t| t != i64::MIN)
        .unwrap_or(i64::MIN);
    // `bases` is not empty, so neither is `segments`.
    let Some(active) = segments.pop() else {
        return Err(StorageError::Closed);
    };
    Ok(Recovered {
        closed: segments,
        active,
        producers,
        last_time,
        active_first_time,
    })
}

/// An empty segment entry.
pub fn empty_entry(base: u64, paths: SegmentPaths, file: File) -> SegmentEntry {
    SegmentEntry {
        base_offset: base,
        paths,
        file: Arc::new(file),
        size: 0,
        next_offset: base,
        index: Vec::new(),
        max_time: i64::MIN,
    }
}

/// What a segment scan found.
struct Scan {
    valid_len: u64,
    next_offset: u64,
    index: Vec<IndexEntry>,
    max_time: i64,
    first_time: Option<i64>,
}

/// Scans one segment (see the module rules); truncates the tail of the
/// active one.
fn scan_segment(
    file: &File,
    paths: &SegmentPaths,
    base: u64,
    active: bool,
    config: &LogConfig,
    producers: &mut ProducerMap,
) -> Result<Scan, StorageError> {
    let path = &paths.log;
    let len = file
        .metadata()
        .map_err(|e| StorageError::io(path, e))?
        .len();
    let mut builder = IndexBuilder::new(config.effective_index_interval());
    let mut scan = Scan {
        valid_len: 0,
        next_offset: base,
        index: Vec::new(),
        max_time: i64::MIN,
        first_time: None,
    };
    let mut buf = Vec::new();
    let mut pos = 0u64;
    let mut stop = None;
    while pos < len {
        if len - pos < BATCH_HEADER_LEN as u64 {
            stop = Some(format!("{} bytes, shorter than a batch header", len - pos));
            break;
        }
        let h = read_header(file, pos).map_err(|e| StorageError::io(path, e))?;
        if let Err(reason) = segment::check_framing(&h, pos, len, scan.next_offset) {
            stop = Some(reason);
            break;
        }
        if active {
            buf.resize(h.batch_len as usize, 0);
            file.read_exact_at(&mut buf, pos)
                .map_err(|e| StorageError::io(path, e))?;
            if let Err(e) = check(&buf) {
                stop = Some(e.to_string());
                break;
            }
        }
        if h.producer_id != 0 {
            producers.record(
                h.producer_id,
                h.base_sequence,
                h.record_count,
                h.base_offset,
            );
        }
        let rel = (h.base_offset - base) as u32;
        if let Some(e) = builder.observe(rel, pos, h.append_time) {
            scan.index.push(e);
        }
        scan.first_time.get_or_insert(h.append_time);
        scan.max_time = scan.max_time.max(h.append_time);
        pos += u64::from(h.batch_len);
        scan.next_offset = h.next_offset();
        scan.valid_len = pos;
    }
    if let Some(reason) = stop {
        if !active {
            return Err(StorageError::Corrupt {
                path: path.clone(),
                position: pos,
                reason,
            });
        }
        if is_padding(file, pos, len).map_err(|e| StorageError::io(path, e))? {
            // What a direct write leaves past the last batch (see
            // `storage/direct.rs`): not damage, nothing to report.
            tracing::debug!(segment = %path.display(), bytes = len - pos, "dropping zero padding");
        } else {
            tracing::warn!(
                segment = %path.display(),
                position = pos,
                bytes = len - pos,
                from_offset = scan.next_offset,
                %reason,
                "truncating a torn or corrupt tail: {} bytes at position {pos}, offsets from {} on",
                len - pos,
                scan.next_offset,
            );
        }
        file.set_len(pos).map_err(|e| StorageError::io(path, e))?;
        file.sync_all().map_err(|e| StorageError::io(path, e))?;
    }
    Ok(scan)
}

/// Whether `pos..len` is the padding of a direct write: all zeros, shorter
/// than a block, and ending on a block boundary (a direct write always
/// does; zeros ending elsewhere are a torn tail worth a warning).
fn is_padding(file: &File, pos: u64, len: u64) -> std::io::Result<bool> {
    if len - pos >= ALIGN as u64 || len % ALIGN as u64 != 0 {
        return Ok(false);
    }
    let mut rest = vec![0u8; (len - pos) as usize];
    file.read_exact_at(&mut rest, pos)?;
    Ok(rest.iter().all(|&b| b == 0))
}

/// The stored index of a segment, if both files are present and well formed.
fn read_index(paths: &SegmentPaths) -> Option<Vec<IndexEntry>> {
    let offsets = fs::read(&paths.index).ok()?;
    let times = fs::read(&paths.time_index).ok()?;
    index::decode(&offsets, &times)
}

/// Writes (creating if needed) and fsyncs both index files of a segment.
pub fn persist_index(paths: &SegmentPaths, entries: &[IndexEntry]) -> Result<(), StorageError> {
    let (offsets, times) = index::encode(entries);
    for (path, bytes) in [(&paths.index, &offsets), (&paths.time_index, &times)] {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StorageError::io(path, e))?;
        index::overwrite(&file, bytes).map_err(|e| StorageError::io(path, e))?;
    }
    Ok(())
}
