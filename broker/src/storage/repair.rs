//! [`super::Log::repair`]: read every byte of the log, check every batch,
//! and accept the damaged ranges so readers can go past them.
//!
//! The damaged bytes stay where they are (useful to whoever looks into the
//! cause); accepting a range writes it to the `gaps` file and marks it in
//! the segment list, and from then on readers skip its offsets. Recovery
//! honours the file, so the ranges stay skipped after a restart. Appends and
//! reads go on while a repair runs; a repair sees the log as it was when it
//! started.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use super::damage::{self, Damage, DamagedRange, GapRecord};
use super::durable::blocking;
use super::error::StorageError;
use super::scan::Walk;
use super::Shared;

/// A segment as the repair found it when it started.
struct Snap {
    base: u64,
    path: PathBuf,
    file: Arc<File>,
    size: u64,
    /// Where the segment ends in offsets: the next segment's base, or the
    /// log's confirmed next offset for the last one.
    end_offset: u64,
    damage: Vec<Damage>,
}

/// See [`super::Log::repair`].
pub async fn repair(shared: &Shared, dry_run: bool) -> Result<Vec<DamagedRange>, StorageError> {
    let _one_at_a_time = shared.repairing.lock().await;
    let snaps: Vec<Snap> = {
        let st = shared.lock();
        st.segments
            .iter()
            .enumerate()
            .map(|(i, s)| Snap {
                base: s.base_offset,
                path: s.paths.log.clone(),
                file: s.file.clone(),
                size: s.size,
                end_offset: st
                    .segments
                    .get(i + 1)
                    .map_or(s.next_offset, |n| n.base_offset),
                damage: s.damage.clone(),
            })
            .collect()
    };
    let verified = blocking(move || snaps.into_iter().map(verify).collect()).await?;
    let verified: Vec<(u64, PathBuf, Vec<Damage>)> = verified;
    let new: Vec<DamagedRange> = verified
        .iter()
        .flat_map(|(_, path, ds)| ds.iter().filter(|d| !d.accepted).map(|d| d.describe(path)))
        .collect();
    if new.is_empty() {
        return Ok(new);
    }
    if dry_run {
        log_ranges(&new, true);
        return Ok(new);
    }
    let records: Vec<GapRecord> = verified
        .iter()
        .flat_map(|(base, _, ds)| ds.iter().map(|d| d.record(*base)))
        .collect();
    let dir = shared.dir.clone();
    blocking(move || damage::save(&dir, &records)).await?;
    {
        let mut st = shared.lock();
        for (base, _, ds) in verified {
            if let Some(seg) = st.segments.iter_mut().find(|s| s.base_offset == base) {
                seg.damage = ds
                    .into_iter()
                    .map(|d| Damage {
                        accepted: true,
                        ..d
                    })
                    .collect();
            }
        }
    }
    log_ranges(&new, false);
    Ok(new)
}

/// One WARN line per range a repair drops (or would drop).
fn log_ranges(ranges: &[DamagedRange], dry_run: bool) {
    for r in ranges {
        tracing::warn!(
            segment = %r.segment.display(),
            position = r.position,
            bytes = r.bytes,
            first_offset = r.first_offset,
            end_offset = r.end_offset,
            reason = %r.reason,
            "repair {} {} records ({}) and {} damaged bytes",
            if dry_run { "would drop" } else { "dropped" },
            r.records(),
            r.offsets_text(),
            r.bytes,
        );
    }
}

/// Every damaged range of one segment, the accepted ones included.
fn verify(s: Snap) -> Result<(u64, PathBuf, Vec<Damage>), StorageError> {
    let accepted: Vec<GapRecord> = s
        .damage
        .iter()
        .filter(|d| d.accepted && d.len > 0)
        .map(|d| d.record(s.base))
        .collect();
    let walked = Walk {
        file: &s.file,
        path: &s.path,
        base: s.base,
        len: s.size,
        crc: true,
        torn_tail: false,
        end_offset: Some(s.end_offset),
        accepted: &accepted,
    }
    .run(|_, _| {})?;
    let mut found = walked.damage;
    if walked.next_offset < s.end_offset {
        // Offsets that no file holds, between this segment and the next.
        let mut d = Damage {
            pos: s.size,
            len: 0,
            first_offset: walked.next_offset,
            end_offset: s.end_offset,
            accepted: false,
            reason: format!(
                "no segment holds offsets {}..{} (the next file starts later)",
                walked.next_offset, s.end_offset
            ),
        };
        d.accepted = s
            .damage
            .iter()
            .any(|o| o.accepted && o.record(s.base) == d.record(s.base));
        found.push(d);
    }
    Ok((s.base, s.path, found))
}
