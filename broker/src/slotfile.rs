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
//! `magic "HGS2" | seq u64 LE | len u32 LE | crc32c u32 LE | body | rest`;
//! the checksum covers seq, len and body; the rest of the slot is zeros in
//! a new file and whatever longer states left there after in-place writes
//! (never read). The valid slot with the
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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

/// Most state files kept open between writes, broker-wide (see
/// [`Handle`]): one per busy group is what saves the opens, and past this
/// many a group opens its file per write as it did before, so that a
/// broker with tens of thousands of groups does not spend its
/// open-files limit (shared with connections and logs) on them.
pub const MAX_OPEN_HANDLES: usize = 4096;

/// Handles open now (counted against [`MAX_OPEN_HANDLES`]).
static OPEN_HANDLES: AtomicUsize = AtomicUsize::new(0);

/// One of [`MAX_OPEN_HANDLES`], given back on drop.
#[derive(Debug)]
struct Counted;

impl Counted {
    fn take() -> Option<Counted> {
        if OPEN_HANDLES.fetch_add(1, Ordering::Relaxed) < MAX_OPEN_HANDLES {
            Some(Counted)
        } else {
            OPEN_HANDLES.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        OPEN_HANDLES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A state file kept open by its one writer, with what its slots hold, so
/// that the next write is one `pwrite`: no open, read, `statx` or close.
/// A room member's group saves its state up to every 5 ms, and opening and
/// reading the file each time was an eighth of the broker's CPU at 1,000
/// emits/s into a room of 100 (issue 11).
///
/// ### Invariants
/// - `file` is the file at the writer's path: only the one writer of that
///   path renames, removes or writes it, and it drops the handle before it
///   removes the file (or after any failed write, sync or rename).
/// - `newest` and `seq` are what [`read`] would find in the file now.
#[derive(Debug)]
pub struct Handle {
    file: File,
    slot_size: usize,
    /// The slot holding the newest state (`None`: neither is valid).
    newest: Option<usize>,
    seq: u64,
    /// The slot being written, kept for the next write.
    buf: Vec<u8>,
    /// `None` for a handle used for one write and closed (no slot of
    /// [`MAX_OPEN_HANDLES`] was free): never cached.
    counted: Option<Counted>,
}

impl Handle {
    /// Writes `body` into the slot that does not hold the newest state.
    /// The caller drops the handle if this fails.
    fn write(&mut self, body: &[u8], sync: bool) -> io::Result<()> {
        let target = self.newest.map_or(0, |i| 1 - i);
        // The header and the body only: what follows them in the slot is
        // never read (a slot's length says where its body ends), so a
        // room's positions file of a few KiB in a bigger slot costs the
        // pages its state fills, not the slot's.
        self.buf.resize(HEADER + body.len(), 0);
        fill_slot(&mut self.buf, self.seq + 1, body);
        self.file
            .write_all_at(&self.buf, (target * self.slot_size) as u64)?;
        if sync {
            self.file.sync_data()?;
        }
        self.newest = Some(target);
        self.seq += 1;
        Ok(())
    }

    fn fits(&self, body: &[u8]) -> bool {
        HEADER + body.len() <= self.slot_size
    }
}

/// Where a state file's one writer keeps its [`Handle`] between writes
/// (each write may run on another thread). Empty until the first write,
/// and whenever [`MAX_OPEN_HANDLES`] are taken.
#[derive(Debug, Clone, Default)]
pub struct Cache(Arc<Mutex<Option<Handle>>>);

impl Cache {
    /// Runs `f` on the cached handle (the lock is never contended: a file
    /// has one writer and one write at a time).
    pub fn with<R>(&self, f: impl FnOnce(&mut Option<Handle>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Closes the file, if it is open: before the writer removes it, or
    /// once the writer expects no writes for a while.
    pub fn clear(&self) {
        self.with(|h| *h = None);
    }

    /// Whether a handle is cached.
    pub fn is_open(&self) -> bool {
        self.with(|h| h.is_some())
    }
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
    stage_cached(path, body, sync, &mut None)
}

/// [`stage`] through `cache`: with a handle there, and room in its slots,
/// the write is one `pwrite` into the open file. Otherwise the file is
/// opened and read as [`stage`] does, and the handle learned is left in
/// `cache`; after [`Staged::Temporary`] it is the temporary's, which
/// becomes `path`'s at [`commit`]. The caller empties `cache` when this,
/// the commit or the sync fails.
pub fn stage_cached(
    path: &Path,
    body: &[u8],
    sync: bool,
    cache: &mut Option<Handle>,
) -> io::Result<Staged> {
    if let Some(h) = cache.as_mut().filter(|h| h.fits(body)) {
        let r = h.write(body, sync);
        if r.is_err() {
            *cache = None;
        }
        return r.map(|()| Staged::InPlace);
    }
    *cache = None;
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
                let mut h = Handle {
                    file: f,
                    slot_size: p.slot_size,
                    newest: p.newest.map(|(i, _, _)| i),
                    seq,
                    buf: Vec::new(),
                    counted: Counted::take(),
                };
                h.write(body, sync)?;
                if h.counted.is_some() {
                    *cache = Some(h);
                }
                return Ok(Staged::InPlace);
            }
            *cache = write_temporary(path, seq + 1, body, sync)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            *cache = write_temporary(path, 1, body, sync)?;
        }
        Err(e) => return Err(e),
    }
    Ok(Staged::Temporary)
}

/// A new two-slot file in `path`'s temporary: the state in slot 0, slot 1
/// blank; each slot has room for twice the body. Returns its handle, if
/// one of [`MAX_OPEN_HANDLES`] is free.
fn write_temporary(path: &Path, seq: u64, body: &[u8], sync: bool) -> io::Result<Option<Handle>> {
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
        Ok(f)
    })();
    match written {
        Ok(file) => Ok(Counted::take().map(|c| Handle {
            file,
            slot_size: size,
            newest: Some(0),
            seq,
            buf: Vec::new(),
            counted: Some(c),
        })),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
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
    write_cached(path, body, durable, &Cache::default())
}

/// [`write`] through `cache` (see [`stage_cached`]); a failure empties it.
pub fn write_cached(path: &Path, body: &[u8], durable: bool, cache: &Cache) -> io::Result<()> {
    cache.with(|h| {
        let r = match stage_cached(path, body, durable, h) {
            Ok(Staged::Temporary) => commit(path, durable),
            r => r.map(|_| ()),
        };
        if r.is_err() {
            *h = None;
        }
        r
    })
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

    /// Through a cache, the first write opens the file and keeps it open;
    /// later writes go through that handle into the same inode, alternating
    /// slots, each read back as the newest; a state that outgrows its slots
    /// gets a new file, whose handle replaces the old one.
    #[test]
    fn a_cached_handle_keeps_writing_the_same_file() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.state");
        let cache = Cache::default();
        write_cached(&p, b"one", true, &cache).unwrap();
        assert!(cache.is_open(), "the new file's handle is kept");
        let inode = fs::metadata(&p).unwrap().ino();
        for body in [&b"two"[..], b"three", b"four", b"five"] {
            write_cached(&p, body, false, &cache).unwrap();
            assert_eq!(read(&p).unwrap().as_deref(), Some(body));
        }
        assert_eq!(fs::metadata(&p).unwrap().ino(), inode);
        // Both slots hold a state: the newest and the one before it.
        let bytes = fs::read(&p).unwrap();
        let size = bytes.len() / 2;
        let mut bodies = [&bytes[..size], &bytes[size..]].map(|s| parse_slot(s).unwrap().1);
        bodies.sort();
        assert_eq!(bodies, [&b"five"[..], b"four"]);
        // A state bigger than a slot: a new file, and the cache follows it.
        let big = vec![7u8; 3 * slot_size(&p)];
        write_cached(&p, &big, true, &cache).unwrap();
        let new_inode = fs::metadata(&p).unwrap().ino();
        assert_ne!(new_inode, inode);
        write_cached(&p, b"small again", false, &cache).unwrap();
        assert_eq!(read(&p).unwrap().as_deref(), Some(&b"small again"[..]));
        assert_eq!(fs::metadata(&p).unwrap().ino(), new_inode);
        // Cleared (the writer removes its file): the next write creates it.
        cache.clear();
        fs::remove_file(&p).unwrap();
        write_cached(&p, b"again", true, &cache).unwrap();
        assert_eq!(read(&p).unwrap().as_deref(), Some(&b"again"[..]));
    }

    /// A write through a handle that fails drops the handle: the next one
    /// opens the file again rather than trust what it knew of it.
    #[test]
    fn a_failed_write_drops_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.state");
        let cache = Cache::default();
        write_cached(&p, b"one", true, &cache).unwrap();
        // A read-only handle in its place: its next write fails.
        cache.with(|h| {
            let h = h.as_mut().unwrap();
            h.file = File::open(&p).unwrap();
        });
        assert!(write_cached(&p, b"two", false, &cache).is_err());
        assert!(!cache.is_open());
        assert_eq!(read(&p).unwrap().as_deref(), Some(&b"one"[..]));
        write_cached(&p, b"three", false, &cache).unwrap();
        assert_eq!(read(&p).unwrap().as_deref(), Some(&b"three"[..]));
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
