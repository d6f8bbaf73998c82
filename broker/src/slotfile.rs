//! Small state files rewritten in place: each file holds two slots, and a
//! write overwrites the slot that does not hold the newest state, so a
//! crash mid-write leaves the newest confirmed state intact in the other.
//!
//! Why not write a temporary and rename it over the file (as
//! [`crate::fsutil::write_atomic`] does for files written rarely)? Consumer
//! groups save their state every few milliseconds, and a room of 1,000
//! members is 1,000 groups: creating and renaming 1,000 files per round
//! made the file system allocate and free 1,000 inodes per round, and
//! ext4's search for a free inode (`find_inode_bit`, `recently_deleted`)
//! took 40% of the broker's CPU in a 1,000-member room. An overwrite in
//! place allocates nothing; a new file (or a state that outgrew its slots)
//! is still written through a temporary and a rename.
//!
//! Layout: the file is two slots of equal size (its length / 2). A slot is
//! `magic "HGS2" | seq u64 LE | len u32 LE | crc32c u32 LE | body | zero
//! padding`; the checksum covers seq, len and body. The valid slot with the
//! higher `seq` is the state. A slot that fails its checksum is a write a
//! crash interrupted (never confirmed: the other slot holds the newest
//! confirmed state), or damage; either way it is logged, and only a file
//! with no valid slot is reported damaged. Files in the older one-copy
//! format (`crc32c | body`, see [`crate::fsutil::read_checked`]) are read,
//! and replaced by the two-slot layout at their next write.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::fsutil;

const MAGIC: &[u8; 4] = b"HGS2";
/// magic, seq, len, crc.
const HEADER: usize = 4 + 8 + 4 + 4;
/// Smallest slot: a 30-byte group state still leaves room to grow.
const MIN_SLOT: usize = 256;

/// How a staged write reaches `path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staged {
    /// Written into the file itself: durable after the next sync.
    InPlace,
    /// Written to the temporary: [`commit`] renames it over the file after
    /// a sync.
    Temporary,
}

/// A slot's content, if it is valid.
fn parse_slot(slot: &[u8]) -> Option<(u64, &[u8])> {
    if slot.len() < HEADER || &slot[..4] != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(slot[4..12].try_into().ok()?);
    let len = u32::from_le_bytes(slot[12..16].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(slot[16..20].try_into().ok()?);
    let body = slot.get(HEADER..HEADER + len)?;
    let mut h = crc32c::crc32c(&slot[4..16]);
    h = crc32c::crc32c_append(h, body);
    (h == crc).then_some((seq, body))
}

/// Writes slot content for `seq`/`body` into `out` (of the slot's size).
fn fill_slot(out: &mut [u8], seq: u64, body: &[u8]) {
    out[..4].copy_from_slice(MAGIC);
    out[4..12].copy_from_slice(&seq.to_le_bytes());
    out[12..16].copy_from_slice(&(body.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[4..16]), body);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out[HEADER..HEADER + body.len()].copy_from_slice(body);
    out[HEADER + body.len()..].fill(0);
}

/// What a file's bytes hold.
struct Parsed<'a> {
    /// The newest valid state: (slot index, seq, body).
    newest: Option<(usize, u64, &'a [u8])>,
    slot_size: usize,
    /// A slot that is neither valid nor blank.
    damaged_slot: bool,
}

fn parse(bytes: &[u8]) -> Option<Parsed<'_>> {
    if bytes.len() < 2 * HEADER || bytes.len() % 2 != 0 {
        return None;
    }
    let size = bytes.len() / 2;
    let slots = [&bytes[..size], &bytes[size..]];
    if !slots.iter().any(|s| &s[..4] == MAGIC) {
        return None;
    }
    let mut newest: Option<(usize, u64, &[u8])> = None;
    let mut damaged_slot = false;
    for (i, s) in slots.iter().enumerate() {
        match parse_slot(s) {
            Some((seq, body)) => {
                if newest.is_none_or(|(_, n, _)| seq > n) {
                    newest = Some((i, seq, body));
                }
            }
            None => damaged_slot |= s.iter().any(|&b| b != 0),
        }
    }
    Some(Parsed {
        newest,
        slot_size: size,
        damaged_slot,
    })
}

/// The older one-copy format: `crc32c | body`.
fn parse_legacy(bytes: &[u8]) -> Option<&[u8]> {
    let stored = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
    (crc32c::crc32c(&bytes[4..]) == stored).then_some(&bytes[4..])
}

fn damaged(path: &Path, what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

/// Reads the newest valid state of `path`: `Ok(None)` if it does not exist,
/// an `InvalidData` error if no copy in it passes its checksum.
pub fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if let Some(p) = parse(&bytes) {
        if let Some((_, seq, body)) = p.newest {
            if p.damaged_slot {
                tracing::warn!(file = %path.display(), seq,
                    "one of the two copies of this state file fails its checksum (a write cut short by a crash, or damage); using the other, which may be one save older");
            }
            return Ok(Some(body.to_vec()));
        }
    }
    if let Some(body) = parse_legacy(&bytes) {
        return Ok(Some(body.to_vec()));
    }
    Err(damaged(
        path,
        format!(
            "no copy of the state passes its checksum ({} bytes)",
            bytes.len()
        ),
    ))
}

/// The first half of a write: puts `body` into the slot of `path` that does
/// not hold the newest state, or, for a new file, one in the old format or
/// a state too big for its slots, into a new two-slot temporary. With
/// `sync`, what was written is fsynced before this returns; otherwise the
/// caller syncs the file system (a [`crate::syncer::Syncer`] round).
///
/// A failed in-place write leaves the other slot, the newest state, as it
/// was; a failed temporary is removed.
pub fn stage(path: &Path, body: &[u8], sync: bool) -> io::Result<Staged> {
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(mut f) => {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)?;
            let parsed = parse(&bytes);
            let seq = parsed
                .as_ref()
                .and_then(|p| p.newest)
                .map_or(0, |(_, s, _)| s);
            if let Some(p) = parsed.filter(|p| HEADER + body.len() <= p.slot_size) {
                // The slot the newest state is not in (with no valid slot
                // at all, the first).
                let target = p.newest.map_or(0, |(i, _, _)| 1 - i);
                let mut slot = vec![0u8; p.slot_size];
                fill_slot(&mut slot, seq + 1, body);
                f.write_all_at(&slot, (target * p.slot_size) as u64)?;
                if sync {
                    f.sync_data()?;
                }
                return Ok(Staged::InPlace);
            }
            write_temporary(path, seq + 1, body, sync)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => write_temporary(path, 1, body, sync)?,
        Err(e) => return Err(e),
    }
    Ok(Staged::Temporary)
}

/// A new two-slot file in `path`'s temporary: the state in slot 0, slot 1
/// blank; each slot has room for twice the body.
fn write_temporary(path: &Path, seq: u64, body: &[u8], sync: bool) -> io::Result<()> {
    let size = (2 * (HEADER + body.len()))
        .next_power_of_two()
        .max(MIN_SLOT);
    let mut bytes = vec![0u8; 2 * size];
    fill_slot(&mut bytes[..size], seq, body);
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let f = File::create(&tmp)?;
        f.write_all_at(&bytes, 0)?;
        if sync {
            f.sync_data()?;
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// The second half of a [`Staged::Temporary`] write: renames the temporary
/// over `path`, and with `durable` fsyncs the folder.
pub fn commit(path: &Path, durable: bool) -> io::Result<()> {
    fsutil::commit_tmp(path)?;
    if durable {
        fsutil::sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// Writes `body` as `path`'s new state; with `durable`, it survives a
/// crash once this returns.
pub fn write(path: &Path, body: &[u8], durable: bool) -> io::Result<()> {
    if stage(path, body, durable)? == Staged::Temporary {
        commit(path, durable)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot_size(path: &Path) -> usize {
        fs::metadata(path).unwrap().len() as usize / 2
    }

    /// The first write creates the file, later ones overwrite it in place
    /// (same inode) and alternate slots; the newest is read back.
    #[test]
    fn writes_alternate_slots_in_one_file() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.state");
        assert_eq!(read(&p).unwrap(), None);
        write(&p, b"one", true).unwrap();
        let inode = fs::metadata(&p).unwrap().ino();
        for (i, body) in [&b"two"[..], b"three", b"four"].iter().enumerate() {
            assert_eq!(stage(&p, body, false).unwrap(), Staged::InPlace);
            assert_eq!(read(&p).unwrap().as_deref(), Some(*body), "write {i}");
        }
        assert_eq!(fs::metadata(&p).unwrap().ino(), inode, "never replaced");
        assert!(!p.with_extension("tmp").exists());
    }

    /// A write cut short (its slot holds garbage) leaves the previous state
    /// readable; a later write goes into that same slot again.
    #[test]
    fn a_torn_slot_falls_back_to_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.state");
        write(&p, b"first", true).unwrap();
        write(&p, b"second", true).unwrap();
        // "second" is in slot 1: tear it.
        let size = slot_size(&p);
        let mut bytes = fs::read(&p).unwrap();
        bytes[size + HEADER + 2] ^= 0xff;
        fs::write(&p, &bytes).unwrap();
        assert_eq!(read(&p).unwrap().as_deref(), Some(&b"first"[..]));
        write(&p, b"third", true).unwrap();
        assert_eq!(read(&p).unwrap().as_deref(), Some(&b"third"[..]));
        // Slot 0 still holds "first": "third" went into the torn slot.
        let bytes = fs::read(&p).unwrap();
        assert_eq!(parse_slot(&bytes[..size]).unwrap().1, b"first");
    }

    /// With both copies damaged the file is reported damaged, naming it.
    #[test]
    fn both_slots_damaged_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.state");
        write(&p, b"first", true).unwrap();
        write(&p, b"second", true).unwrap();
        let size = slot_size(&p);
        let mut bytes = fs::read(&p).unwrap();
        bytes[HEADER] ^= 1;
        bytes[size + HEADER] ^= 1;
        fs::write(&p, &bytes).unwrap();
        let e = read(&p).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("g.state") && e.to_string().contains("checksum"));
    }

    /// A file in the one-copy format is read, and its next write replaces
    /// it with the two-slot layout.
    #[test]
    fn the_older_format_is_read_and_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.state");
        fsutil::write_atomic(&p, b"legacy", true).unwrap();
        assert_eq!(read(&p).unwrap().as_deref(), Some(&b"legacy"[..]));
        assert_eq!(stage(&p, b"new", false).unwrap(), Staged::Temporary);
        // Until the rename the old file is what is read.
        assert_eq!(read(&p).unwrap().as_deref(), Some(&b"legacy"[..]));
        commit(&p, true).unwrap();
        assert_eq!(read(&p).unwrap().as_deref(), Some(&b"new"[..]));
        assert_eq!(stage(&p, b"newer", false).unwrap(), Staged::InPlace);
        assert_eq!(read(&p).unwrap().as_deref(), Some(&b"newer"[..]));
    }

    /// A state that outgrows its slots is written to a new, bigger file.
    #[test]
    fn a_state_bigger_than_its_slot_gets_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.state");
        write(&p, b"small", true).unwrap();
        let big = vec![7u8; 3 * slot_size(&p)];
        assert_eq!(stage(&p, &big, false).unwrap(), Staged::Temporary);
        commit(&p, true).unwrap();
        assert_eq!(read(&p).unwrap(), Some(big));
        assert_eq!(stage(&p, b"small again", false).unwrap(), Staged::InPlace);
        assert_eq!(read(&p).unwrap().as_deref(), Some(&b"small again"[..]));
    }

    proptest::proptest! {
        /// Whatever sequence of bodies is written, the last one is read.
        #[test]
        fn the_last_write_is_read(bodies in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..700), 1..12)) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("g.state");
            for b in &bodies {
                write(&p, b, false).unwrap();
            }
            proptest::prop_assert_eq!(read(&p).unwrap(), bodies.last().cloned());
        }
    }
}
