//! The positions of every member of a room in one file: the state of every
//! group of a room's log (one group per member, see [`crate::rooms::log`])
//! kept together in `groups/.positions` of the log's folder, instead of
//! one `groups/<client id>.state` per member.
//!
//! Why: each member's group saved its state in a file of its own. A room of
//! 100 members acking every event rewrote 100 files per persist round (each
//! a `pwrite`, an inode time update, and a handle kept open), and every new
//! member created one more file (a new inode: ext4's inode search was
//! already a third of the broker's CPU once). Here one task per room takes
//! the saves of all the room's groups that arrived since its last write
//! and writes them as one file, once per round: one `pwrite`, one inode,
//! one handle per room, and a join writes no new file.
//!
//! ### On disk, and why a crash cannot lose a confirmed position
//! The file is a [`crate::slotfile`]: two slots, each `magic | seq | len |
//! crc32c | body`, the body being [`Stored`] (postcard): every group's
//! [`StoredGroup`], by name. A write overwrites the slot that does *not*
//! hold the newest valid state, and nothing is answered before that write
//! is durable: under `fsync always` the write joins a round of the broker's
//! [`Syncer`] (every file in place, then one `syncfs`), otherwise it is
//! `fdatasync`ed or left to the OS as the topic's policy says. Writes of one
//! room are strictly one after the other (one task; the next starts only
//! once the previous one was synced), so at any instant at most one slot
//! holds an unconfirmed write: a crash that tears it (a partial `pwrite`,
//! a torn sector) leaves its checksum failing, and [`slotfile::read`]
//! takes the other slot, which holds the last confirmed state (logged at
//! WARN). A state that outgrows its slots goes to a new file written in
//! full to a temporary, synced, renamed over the old one and synced again
//! (the old file is the state until the rename is durable). A file with no
//! valid slot is damage: reported by [`Positions::damage`] (logged at
//! ERROR, counted by the `herald_room_positions_damaged` metric), which
//! makes that one room's positions unavailable until an operator resets a
//! member (docs/operations.md); other rooms are not concerned.
//!
//! ### An idle room holds no writer
//! The task ends once no save came for [`WRITER_IDLE`] (its queue empty,
//! checked under the same lock submitters send under, so nothing is sent
//! to a task that is ending), closing the file; the next save starts
//! another, which builds its entries again from the map. An idle room of
//! 10 kept about 8 KiB of the broker's memory in it (measured: 10,000 idle
//! WebSocket sessions in rooms of 10 took 0.8 KiB less each), and a file
//! descriptor: the task, its queue (tokio allocates a block of 32 jobs at
//! once, 4.8 KiB here), the encoded entries and the open file.
//!
//! ### Answers
//! Each save is answered with the outcome of the write that carried it,
//! and its group set is told (its [`Told`]) afterwards, exactly as a write
//! of its own file would be (see [`super::persist`]). A write that fails
//! takes back the changes it carried from the map, so that a later write
//! of the room does not make durable a change its group was told failed
//! (a refused first member's group must not come back after a restart);
//! each group retries its own change.
//!
//! ### Older data folders
//! [`Positions::open`] reads the per-member files a room's log had before
//! (`groups/<client id>.state`), writes their states into `.positions`
//! (durably), and only then removes them. A crash in between leaves both;
//! the next start finds the names in `.positions` already and removes the
//! old files (they hold nothing newer: no group ran in between). A damaged
//! old file is left where it is: its group is reported unavailable, as
//! before, until it is reset.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::persist::Told;
use super::store::{self, StoreError, StoredGroup};
use crate::syncer::Syncer;
use crate::{fsutil, slotfile};

/// The file's name in the log's `groups` folder. It starts with a dot,
/// which no group name may (`topic::name`), so it can never be taken for a
/// group's state file, nor its temporary (`.positions.tmp`) for a group's.
pub const FILE_NAME: &str = ".positions";

/// A writer with nothing to write for this long ends (see the module's
/// documentation).
#[cfg(not(test))]
const WRITER_IDLE: Duration = Duration::from_secs(10);
#[cfg(test)]
const WRITER_IDLE: Duration = Duration::from_millis(50);

/// Version of [`Stored`]'s layout.
const FORMAT: u32 = 1;

/// What the file's body holds.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stored {
    pub format: u32,
    pub groups: HashMap<String, StoredGroup>,
}

/// A change of one group's entry.
pub(super) enum Op {
    Save(String, StoredGroup),
    Remove(String),
}

/// A change, who waits for it, and the set to tell once it is answered.
struct Job {
    /// Taken when the change is applied.
    op: Option<Op>,
    done: oneshot::Sender<Result<(), StoreError>>,
    told: Option<Told>,
}

/// The one writer of a room log's positions file (see the module's
/// documentation), shared by the log's groups.
pub struct Positions {
    path: PathBuf,
    /// Writes must be durable (the log's policy is `always`).
    durable: bool,
    syncer: Option<Arc<Syncer>>,
    /// Every group's newest state handed in (the file's content once the
    /// running write ends), read when a group is started.
    groups: Arc<Mutex<HashMap<String, StoredGroup>>>,
    /// Why the file cannot be read; then nothing is written to it.
    damage: Option<String>,
    /// The writer task's queue while it runs: started on first use, and
    /// again after it ended idle. Sends happen under this lock, and the
    /// task ends only under it with its queue empty.
    tx: Arc<Mutex<Option<mpsc::UnboundedSender<Job>>>>,
    /// The file's handle, kept open between writes.
    cache: slotfile::Cache,
}

impl std::fmt::Debug for Positions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Positions")
            .field("path", &self.path)
            .field("damage", &self.damage)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a room log's positions file is, given its `groups` folder.
pub fn path_in(groups_dir: &Path) -> PathBuf {
    groups_dir.join(FILE_NAME)
}

fn corrupt(path: &Path, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads a positions file: `Ok(None)` if there is none.
///
/// # Errors
/// [`StoreError::Corrupt`] when no copy passes its checksum or the body does
/// not decode; [`StoreError::Io`] when it cannot be read.
pub fn load(path: &Path) -> Result<Option<Stored>, StoreError> {
    let body = match slotfile::read(path) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            let text = e.to_string();
            let prefix = format!("{}: ", path.display());
            return Err(corrupt(path, text.strip_prefix(&prefix).unwrap_or(&text)));
        }
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let stored: Stored = postcard::from_bytes(&body).map_err(|e| corrupt(path, e))?;
    if stored.format != FORMAT {
        return Err(corrupt(
            path,
            format!(
                "unknown format {} (this broker writes {FORMAT})",
                stored.format
            ),
        ));
    }
    Ok(Some(stored))
}

fn encode(path: &Path, groups: &HashMap<String, StoredGroup>) -> Result<Vec<u8>, StoreError> {
    #[derive(Serialize)]
    struct Borrowed<'a> {
        format: u32,
        groups: &'a HashMap<String, StoredGroup>,
    }
    postcard::to_allocvec(&Borrowed {
        format: FORMAT,
        groups,
    })
    .map_err(|e| corrupt(path, e))
}

/// One group's entry of the body's map, as postcard writes it: the name,
/// then the state (a tuple is its fields one after the other).
fn encode_entry(path: &Path, name: &str, state: &StoredGroup) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(&(name, state)).map_err(|e| corrupt(path, e))
}

/// The body ([`Stored`]) from its entries, encoded beforehand: postcard
/// writes a map as its length (a varint, like a `u64`) and then its
/// entries, in any order.
fn body_of(path: &Path, entries: &HashMap<String, Vec<u8>>) -> Result<Vec<u8>, StoreError> {
    let len: usize = entries.values().map(Vec::len).sum();
    let mut out = Vec::with_capacity(len + 16);
    out = postcard::to_extend(&FORMAT, out).map_err(|e| corrupt(path, e))?;
    out = postcard::to_extend(&(entries.len() as u64), out).map_err(|e| corrupt(path, e))?;
    for e in entries.values() {
        out.extend_from_slice(e);
    }
    Ok(out)
}

/// Per-member state files (`<name>.state`) in `dir`.
fn legacy_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let f = e.file_name().to_string_lossy().to_string();
            if let Some(n) = f.strip_suffix(".state") {
                out.push((n.to_owned(), e.path()));
            }
        }
    }
    out.sort();
    out
}

impl Positions {
    /// Opens the positions of the room log whose `groups` folder is
    /// `groups_dir`, moving per-member state files of older versions into
    /// it (see the module's documentation). A damaged file gives a
    /// `Positions` that reports it ([`Self::damage`]) and writes nothing.
    ///
    /// # Errors
    /// The file cannot be read (not damage: the next use tries again), or
    /// moving older files into it failed.
    pub fn open(
        groups_dir: &Path,
        durable: bool,
        syncer: Option<Arc<Syncer>>,
        topic: &str,
    ) -> Result<Positions, StoreError> {
        let path = path_in(groups_dir);
        let (groups, damage) = match load(&path) {
            Ok(s) => (s.map(|s| s.groups).unwrap_or_default(), None),
            Err(e @ StoreError::Corrupt { .. }) => {
                tracing::error!(topic = %topic, file = %path.display(), error = %e,
                    "the positions file of this room is damaged: every member's position in it is unavailable until one is reset (`herald groups TOPIC MEMBER --reset-to POSITION`); other rooms are served");
                (HashMap::new(), Some(e.to_string()))
            }
            Err(e) => return Err(e),
        };
        let mut p = Positions {
            path,
            durable,
            syncer,
            groups: Arc::new(Mutex::new(groups)),
            damage,
            tx: Arc::default(),
            cache: slotfile::Cache::default(),
        };
        if p.damage.is_none() {
            p.migrate(groups_dir, topic)?;
        }
        Ok(p)
    }

    /// A fresh, empty positions file in place of a damaged one, which is
    /// kept aside as `.positions.damaged-<unix ms>` (see
    /// [`crate::topic::Topic::reset_group`]).
    ///
    /// # Errors
    /// Renaming the damaged file failed.
    pub fn replace_damaged(
        groups_dir: &Path,
        durable: bool,
        syncer: Option<Arc<Syncer>>,
        topic: &str,
    ) -> Result<Positions, StoreError> {
        let path = path_in(groups_dir);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let aside = groups_dir.join(format!("{FILE_NAME}.damaged-{stamp}"));
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::rename(&path, &aside) {
            Ok(()) => {
                fsutil::sync_dir(groups_dir).map_err(io)?;
                tracing::warn!(topic = %topic, kept = %aside.display(),
                    "replacing the damaged positions file of this room by an empty one; the damaged file is kept aside; members without a position start at the room's end");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        Ok(Positions {
            path,
            durable,
            syncer,
            groups: Arc::new(Mutex::new(HashMap::new())),
            damage: None,
            tx: Arc::default(),
            cache: slotfile::Cache::default(),
        })
    }

    /// Moves the per-member files of an older version into the file: their
    /// states are written (durably) before any is removed; damaged ones
    /// stay where they are.
    fn migrate(&mut self, groups_dir: &Path, topic: &str) -> Result<(), StoreError> {
        let legacy = legacy_files(groups_dir);
        if legacy.is_empty() {
            return Ok(());
        }
        let mut moved = Vec::new();
        let mut added = 0usize;
        {
            let mut groups = lock(&self.groups);
            for (name, file) in legacy {
                match store::load(&file) {
                    Ok(Some(s)) => {
                        // Already moved by a start that ended before
                        // removing the file: the entry is the newer.
                        if let std::collections::hash_map::Entry::Vacant(e) = groups.entry(name) {
                            e.insert(s);
                            added += 1;
                        }
                        moved.push(file);
                    }
                    Ok(None) => {}
                    // Left in place: reported as a damaged group (see
                    // `Topic::check_groups`).
                    Err(_) => {}
                }
            }
        }
        if moved.is_empty() {
            return Ok(());
        }
        if added > 0 {
            let body = encode(&self.path, &lock(&self.groups))?;
            slotfile::write(&self.path, &body, true).map_err(|source| StoreError::Io {
                path: self.path.clone(),
                source,
            })?;
        }
        for f in &moved {
            if let Err(e) = std::fs::remove_file(f) {
                // Harmless: the next start finds the entry and skips it.
                tracing::warn!(file = %f.display(), error = %e, "could not remove a per-member state file already moved into the room's positions file");
            }
        }
        fsutil::sync_dir(groups_dir).map_err(|source| StoreError::Io {
            path: groups_dir.to_path_buf(),
            source,
        })?;
        tracing::info!(topic = %topic, members = moved.len(), file = %self.path.display(),
            "moved the per-member state files of this room's log into its positions file");
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why the file is unusable, if it is.
    pub fn damage(&self) -> Option<&str> {
        self.damage.as_deref()
    }

    /// Group `name`'s state, if the file has it.
    pub fn get(&self, name: &str) -> Option<StoredGroup> {
        lock(&self.groups).get(name).cloned()
    }

    /// Whether the file has group `name`.
    pub fn contains(&self, name: &str) -> bool {
        lock(&self.groups).contains_key(name)
    }

    /// The names of the groups in the file, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.groups).keys().cloned().collect();
        v.sort();
        v
    }

    /// Hands in a change; `done` hears the outcome of the write that
    /// carries it, then `told` is dropped (telling the group's set).
    pub(super) fn submit(
        &self,
        op: Op,
        done: oneshot::Sender<Result<(), StoreError>>,
        told: Option<Told>,
    ) {
        if let Some(reason) = &self.damage {
            let _ = done.send(Err(corrupt(&self.path, reason)));
            return;
        }
        let job = Job {
            op: Some(op),
            done,
            told,
        };
        let mut running = lock(&self.tx);
        let job = match running.as_ref() {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                // Ended without clearing its place: it panicked.
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let tx = self.spawn();
        match tx.send(job) {
            Ok(()) => *running = Some(tx),
            Err(mpsc::error::SendError(job)) => {
                let _ = job.done.send(Err(StoreError::Io {
                    path: self.path.clone(),
                    source: std::io::Error::other("the room's positions writer has stopped"),
                }));
            }
        }
    }

    /// Writes the change and waits for it (see [`Self::submit`]).
    pub(super) async fn apply(&self, op: Op) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(op, tx, None);
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(
                    "the room's positions writer ended without an answer",
                ),
            })
        })
    }

    /// Whether a writer task runs now (it ends after [`WRITER_IDLE`]).
    pub fn writing(&self) -> bool {
        lock(&self.tx).is_some()
    }

    /// Starts the writer task. It ends when every sender is gone (the
    /// topic and its groups dropped), after answering what it was given,
    /// or once idle (see the module's documentation).
    fn spawn(&self) -> mpsc::UnboundedSender<Job> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let mut writer = Writer {
            path: self.path.clone(),
            durable: self.durable,
            syncer: self.syncer.clone(),
            groups: self.groups.clone(),
            cache: self.cache.clone(),
            entries: None,
        };
        let running = self.tx.clone();
        tokio::spawn(async move {
            let mut jobs = Vec::new();
            loop {
                let first = match tokio::time::timeout(WRITER_IDLE, rx.recv()).await {
                    Ok(Some(job)) => job,
                    Ok(None) => break,
                    Err(_idle) if retire(&running, &rx, &writer.cache) => break,
                    Err(_idle) => continue,
                };
                jobs.push(first);
                while let Ok(j) = rx.try_recv() {
                    jobs.push(j);
                }
                writer.round(&mut jobs).await;
            }
        });
        tx
    }
}

/// Whether an idle writer ends: only if nothing waits in its queue, decided
/// under the lock submitters send under, so that no save can be sent to a
/// writer that is ending (it would never be answered). If so, its place is
/// cleared (the next save starts another writer) and the file closed.
fn retire(
    running: &Mutex<Option<mpsc::UnboundedSender<Job>>>,
    rx: &mpsc::UnboundedReceiver<Job>,
    cache: &slotfile::Cache,
) -> bool {
    let mut running = lock(running);
    if !rx.is_empty() {
        return false;
    }
    cache.clear();
    *running = None;
    true
}

/// What the writer task holds.
struct Writer {
    path: PathBuf,
    durable: bool,
    syncer: Option<Arc<Syncer>>,
    groups: Arc<Mutex<HashMap<String, StoredGroup>>>,
    cache: slotfile::Cache,
    /// Each group's entry of the body, encoded when it changed (built from
    /// `groups` at the first round). A round used to encode every member's
    /// state: with thousands of members that was a fifth of the broker's
    /// CPU while they joined, though a round changes only a few of them.
    entries: Option<HashMap<String, Vec<u8>>>,
}

impl Writer {
    /// Applies `jobs` to the map, writes it once, answers each job, and
    /// leaves `jobs` empty. A failed write takes its changes back.
    async fn round(&mut self, jobs: &mut Vec<Job>) {
        let mut undo = Vec::with_capacity(jobs.len());
        let body = {
            let mut groups = lock(&self.groups);
            // A hash map, and no copy of a name already there: a room of
            // 1,000 members hands in about 40,000 saves a second, and a
            // B-tree's string comparisons were a tenth of the broker's CPU.
            for j in jobs.iter_mut() {
                match j.op.take() {
                    Some(Op::Save(name, state)) => {
                        let old = match groups.get_mut(&name) {
                            Some(slot) => Some(std::mem::replace(slot, state)),
                            None => groups.insert(name.clone(), state),
                        };
                        undo.push((name, old));
                    }
                    Some(Op::Remove(name)) => {
                        let old = groups.remove(&name);
                        undo.push((name, old));
                    }
                    None => {}
                }
            }
            Self::encode(&self.path, &mut self.entries, &groups, &undo)
        };
        let r = match body {
            Ok(body) => self.write(body).await,
            Err(e) => Err(e),
        };
        if r.is_err() {
            let mut groups = lock(&self.groups);
            for (name, old) in undo.into_iter().rev() {
                match old {
                    Some(s) => groups.insert(name, s),
                    None => groups.remove(&name),
                };
            }
            // Re-encoded from the map at the next round.
            self.entries = None;
        }
        for j in jobs.drain(..) {
            let out = match &r {
                Ok(()) => Ok(()),
                Err(e) => Err(e.duplicate()),
            };
            let _ = j.done.send(out);
            drop(j.told);
        }
    }

    /// The body for `groups`, after the changes of the groups named in
    /// `changed`: only their entries are encoded again (all of them when
    /// `entries` is not built yet).
    fn encode(
        path: &Path,
        entries: &mut Option<HashMap<String, Vec<u8>>>,
        groups: &HashMap<String, StoredGroup>,
        changed: &[(String, Option<StoredGroup>)],
    ) -> Result<Vec<u8>, StoreError> {
        let entries = match entries {
            Some(entries) => {
                for (name, _) in changed {
                    match groups.get(name) {
                        Some(state) => {
                            entries.insert(name.clone(), encode_entry(path, name, state)?);
                        }
                        None => {
                            entries.remove(name);
                        }
                    }
                }
                entries
            }
            None => {
                let mut all = HashMap::with_capacity(groups.len());
                for (name, state) in groups {
                    all.insert(name.clone(), encode_entry(path, name, state)?);
                }
                entries.insert(all)
            }
        };
        body_of(path, entries)
    }

    async fn write(&self, body: Vec<u8>) -> Result<(), StoreError> {
        let path = self.path.clone();
        let cache = self.cache.clone();
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        match (&self.syncer, self.durable) {
            (Some(s), true) => s.save(path, body, cache).await.map_err(io),
            (_, durable) => {
                let r = tokio::task::spawn_blocking(move || {
                    slotfile::write_cached(&path, &body, durable, &cache)
                })
                .await;
                match r {
                    Ok(r) => r.map_err(io),
                    Err(e) => Err(io(std::io::Error::other(e.to_string()))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::acks::Snapshot;

    fn state(floor: u64) -> StoredGroup {
        StoredGroup {
            snapshot: Snapshot {
                floor,
                next_fresh: floor + 2,
                undone: vec![(floor, floor + 1, 1)],
                redelivered: 0,
                dead_lettered: 0,
                done_ahead: Vec::new(),
            },
            max_deliveries: 10,
        }
    }

    proptest::proptest! {
        /// A body put together from entries encoded one by one reads back
        /// as the map it was made of, at every size (the map's length is a
        /// varint: one byte below 128 entries, more from there), and is the
        /// very bytes postcard writes for the map when order cannot differ.
        #[test]
        fn a_body_from_entries_is_the_map(floors in proptest::collection::vec(0u64..1 << 40, 0..300)) {
            let path = Path::new("p");
            let groups: HashMap<String, StoredGroup> = floors
                .iter()
                .enumerate()
                .map(|(i, f)| (format!("member-{i}"), state(*f)))
                .collect();
            let entries = groups
                .iter()
                .map(|(n, g)| Ok((n.clone(), encode_entry(path, n, g)?)))
                .collect::<Result<HashMap<_, _>, StoreError>>()
                .unwrap();
            let body = body_of(path, &entries).unwrap();
            let stored: Stored = postcard::from_bytes(&body).unwrap();
            proptest::prop_assert_eq!(stored.format, FORMAT);
            proptest::prop_assert_eq!(&stored.groups, &groups);
            if groups.len() <= 1 {
                proptest::prop_assert_eq!(body, encode(path, &groups).unwrap());
            }
        }
    }

    /// Saves and removals of several groups are written to one file and
    /// read back by a new `Positions`.
    #[tokio::test]
    async fn saves_and_removals_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Syncer::new(dir.path().to_path_buf());
        let p = Positions::open(dir.path(), true, syncer.clone(), "t").unwrap();
        let all = (0..50u64).map(|i| p.apply(Op::Save(format!("m{i}"), state(i))));
        for r in futures::future::join_all(all).await {
            r.unwrap();
        }
        p.apply(Op::Save("m3".into(), state(300))).await.unwrap();
        p.apply(Op::Remove("m4".into())).await.unwrap();
        let q = Positions::open(dir.path(), true, syncer, "t").unwrap();
        assert_eq!(q.names().len(), 49);
        assert_eq!(q.get("m3"), Some(state(300)));
        assert_eq!(q.get("m4"), None);
        assert_eq!(q.get("m49"), Some(state(49)));
        // One file: no per-member file was written.
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(files, [FILE_NAME]);
    }

    /// An idle writer ends and closes the file; the next save starts
    /// another, and the file then holds every save, before and after.
    #[tokio::test]
    async fn an_idle_writer_ends_and_the_next_save_starts_another() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Syncer::new(dir.path().to_path_buf());
        let p = Positions::open(dir.path(), true, syncer.clone(), "t").unwrap();
        p.apply(Op::Save("a".into(), state(1))).await.unwrap();
        assert!(p.writing());
        assert!(p.cache.is_open());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while p.writing() {
            assert!(
                std::time::Instant::now() < deadline,
                "the idle writer did not end"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!p.cache.is_open(), "the file is closed with it");
        p.apply(Op::Save("b".into(), state(2))).await.unwrap();
        p.apply(Op::Save("a".into(), state(3))).await.unwrap();
        assert!(p.writing());
        let q = Positions::open(dir.path(), true, syncer, "t").unwrap();
        assert_eq!(q.get("a"), Some(state(3)));
        assert_eq!(q.get("b"), Some(state(2)));
    }

    /// A writer whose idle time ran out while a save was already queued
    /// goes on (and answers it); with nothing queued it ends.
    #[test]
    fn a_writer_with_a_save_queued_does_not_end() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let running = Mutex::new(Some(tx.clone()));
        let cache = slotfile::Cache::default();
        let (done, _answer) = oneshot::channel();
        tx.send(Job {
            op: Some(Op::Remove("m".into())),
            done,
            told: None,
        })
        .unwrap();
        assert!(!retire(&running, &rx, &cache));
        assert!(lock(&running).is_some(), "saves still go to it");
        assert!(rx.try_recv().is_ok());
        assert!(retire(&running, &rx, &cache));
        assert!(lock(&running).is_none(), "the next save starts another");
    }

    /// Saves that come just as the writer's idle time runs out are all
    /// answered Ok and all written, whether the old writer takes them or a
    /// new one does (never both at once: the file is whole at the end).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn saves_racing_the_idle_end_are_all_written() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Syncer::new(dir.path().to_path_buf());
        let p = Arc::new(Positions::open(dir.path(), true, syncer.clone(), "t").unwrap());
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..12u64 {
                    // Around the idle time: some saves find the writer
                    // running, some ending, some gone.
                    let wait = 40 + (t * 7 + i * 3) % 25;
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    p.apply(Op::Save(format!("m{t}"), state(i))).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let q = Positions::open(dir.path(), true, syncer, "t").unwrap();
        for t in 0..4u64 {
            assert_eq!(q.get(&format!("m{t}")), Some(state(11)));
        }
    }

    /// A failed write takes its changes back: a later write does not make
    /// them durable.
    #[tokio::test]
    async fn a_failed_write_takes_its_changes_back() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("missing");
        let p = Positions::open(&gone, false, None, "t").unwrap();
        assert!(p.apply(Op::Save("a".into(), state(1))).await.is_err());
        assert!(!p.contains("a"));
        std::fs::create_dir_all(&gone).unwrap();
        p.apply(Op::Save("b".into(), state(2))).await.unwrap();
        let q = Positions::open(&gone, false, None, "t").unwrap();
        assert_eq!(q.names(), ["b"]);
    }

    /// Per-member files of an older version are moved into the file and
    /// removed; a damaged one is left alone; a second open changes nothing.
    #[tokio::test]
    async fn per_member_files_are_moved_in() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3u64 {
            store::save(
                &dir.path().join(format!("m{i}.state")),
                &state(i),
                true,
                &Default::default(),
            )
            .unwrap();
        }
        std::fs::write(dir.path().join("bad.state"), b"garbage").unwrap();
        let p = Positions::open(dir.path(), false, None, "t").unwrap();
        assert_eq!(p.names(), ["m0", "m1", "m2"]);
        assert_eq!(p.get("m2"), Some(state(2)));
        assert!(!dir.path().join("m0.state").exists());
        assert!(dir.path().join("bad.state").exists());
        let q = Positions::open(dir.path(), false, None, "t").unwrap();
        assert_eq!(q.names(), ["m0", "m1", "m2"]);
        assert_eq!(load(&path_in(dir.path())).unwrap().unwrap().groups.len(), 3);
    }

    /// A crash after the file was written but before the old files were
    /// removed: the entries already there win, the old files go.
    #[tokio::test]
    async fn an_interrupted_move_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        let p = Positions::open(dir.path(), false, None, "t").unwrap();
        p.apply(Op::Save("m0".into(), state(7))).await.unwrap();
        drop(p);
        store::save(
            &dir.path().join("m0.state"),
            &state(1),
            true,
            &Default::default(),
        )
        .unwrap();
        let q = Positions::open(dir.path(), false, None, "t").unwrap();
        assert_eq!(q.get("m0"), Some(state(7)));
        assert!(!dir.path().join("m0.state").exists());
    }

    /// A file with both copies damaged is reported, and refuses writes.
    #[tokio::test]
    async fn a_damaged_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = Positions::open(dir.path(), false, None, "t").unwrap();
        p.apply(Op::Save("a".into(), state(1))).await.unwrap();
        p.apply(Op::Save("a".into(), state(2))).await.unwrap();
        drop(p);
        let path = path_in(dir.path());
        let mut b = std::fs::read(&path).unwrap();
        let half = b.len() / 2;
        b[25] ^= 1;
        b[half + 25] ^= 1;
        std::fs::write(&path, &b).unwrap();
        let q = Positions::open(dir.path(), false, None, "t").unwrap();
        let why = q.damage().expect("damage reported");
        assert!(why.contains("checksum"), "{why}");
        assert!(q.apply(Op::Save("a".into(), state(3))).await.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b, "not overwritten");
        let r = Positions::replace_damaged(dir.path(), false, None, "t").unwrap();
        assert!(r.damage().is_none() && r.names().is_empty());
        r.apply(Op::Save("a".into(), state(4))).await.unwrap();
        assert!(std::fs::read_dir(dir.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("damaged-")));
    }
}
