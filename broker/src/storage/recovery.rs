//! Opening a log folder: finding the segments, checking them, cutting a torn
//! tail, rebuilding indexes and the producer state.
//!
//! # Rules
//! - Segments must fit together: each starts at the offset where the one
//!   before it ends. A segment that starts later leaves a damaged range of
//!   offsets no file holds (a lost file); one that starts earlier than the
//!   previous one ends cannot be explained and refuses the open with
//!   [`StorageError::Corrupt`].
//! - Closed segments (all but the last) get the cheap check: every batch
//!   header is read by stepping `batch_len`, and framing (length in bounds,
//!   magic, record count) and offset contiguity are verified, but CRCs are
//!   not, because that would read every byte of a big log on every open
//!   (only a last batch that does not end where the next segment starts
//!   gets its CRC checked). Payload damage in a closed segment is caught
//!   later, when a read checks each batch's CRC.
//! - The last (active) segment is checked fully (framing, contiguity and
//!   `herald_protocol::batch::check`, CRC included).
//! - Past a bad batch the scan looks for the next valid one
//!   (`storage/scan.rs`). If one follows, the bytes between are a damaged
//!   range: logged at ERROR, kept on disk, and readers of its offsets get
//!   `Corrupt` until a repair accepts it; nothing after it is dropped. If
//!   none follows in the active segment, the rest is a torn tail from a
//!   crash: it is truncated, with a `tracing::warn!` saying how many bytes
//!   and from which offset; less than a block of zeros is the padding a
//!   direct write leaves, dropped without a warning. In a closed segment
//!   damage with nothing valid after it runs to the segment's end.
//! - Ranges recorded in the `gaps` file (accepted by a repair) are jumped
//!   over where they match the segment, and logged at INFO.
//! - Indexes are rebuilt from the headers seen during the scan; index files
//!   that are missing or disagree are rewritten.
//! - Producer state is replayed from the headers of every valid batch, in
//!   order.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::config::LogConfig;
use super::damage::{self, Damage, GapRecord};
use super::direct::ALIGN;
use super::error::StorageError;
use super::index::{self, IndexBuilder, IndexEntry};
use super::producer::ProducerMap;
use super::scan::Walk;
use super::segment::{self, SegmentEntry, SegmentPaths};

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
    /// Torn tails cut off (0 or 1: only the active segment has one), for
    /// the metrics.
    pub torn_tails: u64,
}

/// Opens or creates the log in `dir`.
pub fn recover(dir: &Path, config: &LogConfig) -> Result<Recovered, StorageError> {
    fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
    // Unsynced creation: the first commit's full sync covers the folder.
    let synced = !config.create_unsynced;
    if synced {
        segment::sync_dir(dir)?;
    }
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
        if synced {
            persist_index(&paths, &[])?;
            segment::sync_dir(dir)?;
        }
        return Ok(Recovered {
            closed: Vec::new(),
            active: empty_entry(0, paths, file),
            producers: ProducerMap::default(),
            last_time: i64::MIN,
            active_first_time: None,
            torn_tails: 0,
        });
    }
    let gaps = damage::load(dir);
    let mut producers = ProducerMap::default();
    let mut segments: Vec<SegmentEntry> = Vec::with_capacity(bases.len());
    let mut active_first_time = None;
    let mut torn_tails = 0;
    for (i, &base) in bases.iter().enumerate() {
        let paths = SegmentPaths::new(dir, base);
        if let Some(prev) = segments.last_mut() {
            join(prev, base, &gaps, &paths)?;
        }
        let last = i + 1 == bases.len();
        let file = segment::open_log_file(&paths.log, false)?;
        let seg = SegmentScan {
            file: &file,
            paths: &paths,
            base,
            active: last,
            next_base: bases.get(i + 1).copied(),
            gaps: &gaps,
        };
        let scan = seg.run(config, &mut producers)?;
        if last {
            active_first_time = scan.first_time;
        }
        torn_tails += u64::from(scan.torn);
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
            damage: scan.damage,
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
        torn_tails,
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
        damage: Vec::new(),
    }
}

/// Checks that the segment at `base` continues `prev`. Offsets between
/// them are a damaged range at the end of `prev` (accepted if recorded);
/// overlapping segments refuse the open.
fn join(
    prev: &mut SegmentEntry,
    base: u64,
    gaps: &[GapRecord],
    paths: &SegmentPaths,
) -> Result<(), StorageError> {
    if prev.next_offset == base {
        return Ok(());
    }
    if prev.next_offset > base {
        return Err(StorageError::Corrupt {
            path: paths.log.clone(),
            position: 0,
            offsets: None,
            reason: format!(
                "segment starts at offset {base} but the previous one ends at {}",
                prev.next_offset
            ),
        });
    }
    let mut d = Damage {
        pos: prev.size,
        len: 0,
        first_offset: prev.next_offset,
        end_offset: base,
        accepted: false,
        reason: format!(
            "no segment holds offsets {}..{base} (the next file starts later)",
            prev.next_offset
        ),
    };
    d.accepted = gaps.contains(&d.record(prev.base_offset));
    log_damage(&prev.paths.log, &d);
    prev.damage.push(d);
    prev.next_offset = base;
    Ok(())
}

/// Says what recovery found: ERROR for damage readers will trip on, INFO
/// for a range already accepted.
fn log_damage(path: &Path, d: &Damage) {
    if d.accepted {
        tracing::info!(
            segment = %path.display(),
            position = d.pos,
            bytes = d.len,
            first_offset = d.first_offset,
            end_offset = d.end_offset,
            "skipping an accepted gap"
        );
        return;
    }
    tracing::error!(
        segment = %path.display(),
        position = d.pos,
        bytes = d.len,
        first_offset = d.first_offset,
        end_offset = d.end_offset,
        reason = %d.reason,
        "damaged range in {} at byte {} ({} bytes): {} cannot be read until `herald topics repair` skips them",
        path.display(),
        d.pos,
        d.len,
        damage::offsets_text(d.first_offset, d.end_offset),
    );
}

/// What a segment scan found.
struct Scan {
    valid_len: u64,
    next_offset: u64,
    index: Vec<IndexEntry>,
    max_time: i64,
    first_time: Option<i64>,
    damage: Vec<Damage>,
    /// A torn tail (not mere padding) was cut.
    torn: bool,
}

/// One segment to scan at open.
struct SegmentScan<'a> {
    file: &'a File,
    paths: &'a SegmentPaths,
    base: u64,
    /// The last segment: fully checked, and a torn tail is cut.
    active: bool,
    /// The base offset of the segment after this one.
    next_base: Option<u64>,
    /// Every accepted gap of the log.
    gaps: &'a [GapRecord],
}

impl SegmentScan<'_> {
    /// Scans the segment (see the module rules); truncates the torn tail of
    /// the active one.
    fn run(&self, config: &LogConfig, producers: &mut ProducerMap) -> Result<Scan, StorageError> {
        let path = &self.paths.log;
        let len = self
            .file
            .metadata()
            .map_err(|e| StorageError::io(path, e))?
            .len();
        let accepted: Vec<GapRecord> = self
            .gaps
            .iter()
            .filter(|g| g.segment == self.base)
            .copied()
            .collect();
        let mut builder = IndexBuilder::new(config.effective_index_interval());
        let mut index = Vec::new();
        let mut max_time = i64::MIN;
        let mut first_time = None;
        let walked = Walk {
            file: self.file,
            path,
            base: self.base,
            len,
            crc: self.active,
            torn_tail: self.active,
            end_offset: self.next_base,
            accepted: &accepted,
        }
        .run(|pos, h| {
            if h.producer_id != 0 {
                producers.record(
                    h.producer_id,
                    h.base_sequence,
                    h.record_count,
                    h.base_offset,
                );
            }
            let rel = (h.base_offset - self.base) as u32;
            if let Some(e) = builder.observe(rel, pos, h.append_time) {
                index.push(e);
            }
            first_time.get_or_insert(h.append_time);
            max_time = max_time.max(h.append_time);
        })?;
        for d in &walked.damage {
            log_damage(path, d);
        }
        let mut torn = false;
        if let Some((pos, reason)) = &walked.torn {
            torn = self.cut_tail(*pos, len, walked.next_offset, reason)?;
        }
        Ok(Scan {
            valid_len: walked.end,
            next_offset: walked.next_offset,
            index,
            max_time,
            first_time,
            damage: walked.damage,
            torn,
        })
    }

    /// Truncates the torn tail `pos..len` of the active segment. True
    /// when it was torn data, false for a direct write's zero padding.
    fn cut_tail(&self, pos: u64, len: u64, from: u64, reason: &str) -> Result<bool, StorageError> {
        let path = &self.paths.log;
        let padding = is_padding(self.file, pos, len).map_err(|e| StorageError::io(path, e))?;
        if padding {
            // What a direct write leaves past the last batch (see
            // `storage/direct.rs`): not damage, nothing to report.
            tracing::debug!(segment = %path.display(), bytes = len - pos, "dropping zero padding");
        } else {
            tracing::warn!(
                segment = %path.display(),
                position = pos,
                bytes = len - pos,
                from_offset = from,
                %reason,
                "truncating a torn or corrupt tail: {} bytes at position {pos}, offsets from {from} on",
                len - pos,
            );
        }
        self.file
            .set_len(pos)
            .map_err(|e| StorageError::io(path, e))?;
        self.file
            .sync_all()
            .map_err(|e| StorageError::io(path, e))?;
        Ok(!padding)
    }
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
