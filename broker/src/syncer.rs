//! Where many small files become durable together: the state files of
//! every consumer group are written by one task, in rounds, and each round
//! is made durable by one `syncfs` of the data folder's file system
//! instead of fsyncs per file.
//!
//! Why: each consumer group persists its acks in its own small file (see
//! [`crate::group::store`]), and each write of one used to cost two fsyncs
//! (the file, then its folder) on a thread of its own. A room of 1,000
//! members is 1,000 groups (one per member, see [`crate::rooms::log`]), all
//! acking the same events at once: 2,000 fsyncs per persist round, from a
//! thousand threads contending for one folder's lock, saturated the disk
//! and delayed the room log's own fsync, so every emit waited behind its
//! members' bookkeeping. A round here is: write every file in place (one
//! thread, one after the other; see [`crate::slotfile`]), one sync; each
//! writer is then answered with its own file's outcome. New files (and
//! states that outgrew their file) are written to temporaries, renamed
//! after that sync, and a second sync makes the renames durable.
//!
//! Requests are coalesced: whatever arrives while a round runs goes into
//! the next one.
//!
//! Since then the members of a room keep their states in one positions
//! file per room ([`crate::group::positions`]): a room is one file per
//! round here, whatever its number of members; the groups of ordinary
//! topics (and inboxes) still have a file each.
//!
//! The logs the broker writes itself (room logs and inboxes) are synced in
//! rounds too ([`Syncer::sync`]), by a second task so that a log never
//! waits behind state files: each of them commits one emit or two at a
//! time, and a thousand small rooms each fsyncing its own log made every
//! emit an fsync of its own (the disk does about 2,500 a second); one
//! `syncfs` makes every log written before it durable at once. A round of
//! one or two logs `fdatasync`s them instead ([`LONE_SYNCS`]).
//!
//! The sync goes through one descriptor of `root` kept for the syncer's
//! life, so that `syncfs` reports a write-back error of the file system
//! that happened at any time since (not only during its own call). Such an
//! error fails everyone in the round: it cannot be told which file it
//! hit.
//!
//! Linux only (`syncfs(2)`); elsewhere [`Syncer::new`] returns `None` and
//! the groups and logs fsync their own files.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::fsutil;
use crate::slotfile::{self, Staged};

/// A file to replace, or only a wait for the next sync, and who waits.
enum Job {
    Save {
        path: PathBuf,
        body: Vec<u8>,
        /// The file's open handle, kept between its writes.
        cache: slotfile::Cache,
        done: oneshot::Sender<io::Result<()>>,
    },
    /// Something written to `file` before this request (a log's group
    /// commit) that becomes durable with the round's sync.
    Sync {
        file: Arc<std::fs::File>,
        /// The round must `syncfs`, even if it is a lone one: `file`'s log
        /// was created without syncing its folders.
        full: bool,
        done: oneshot::Sender<io::Result<()>>,
    },
}

/// A round of at most this many logs (and no state file) `fdatasync`s
/// each log instead of one `syncfs`: for a lone busy room an `fdatasync`
/// of its own log (0.5 ms on average here) is cheaper than a sync of the
/// whole file system (about 2 ms with the other files' write-back and the
/// journal); many logs at once share one `syncfs`.
const LONE_SYNCS: usize = 2;

/// Batched, durable replacement of small files on one file system (the
/// one holding `root`).
#[derive(Debug)]
pub struct Syncer {
    root: PathBuf,
    /// The task that runs the rounds, started on first use (so that a
    /// syncer can be made outside a runtime).
    tx: OnceLock<mpsc::UnboundedSender<Job>>,
    /// The same for the logs' syncs: rounds of their own, so that a log's
    /// group commit never waits behind a round of state files.
    logs_tx: OnceLock<mpsc::UnboundedSender<Job>>,
    /// Syncs made, for tests.
    counts: Arc<Counts>,
}

impl Syncer {
    /// A syncer for the file system of `root`; `None` where `syncfs` does
    /// not exist.
    pub fn new(root: PathBuf) -> Option<Arc<Syncer>> {
        cfg!(target_os = "linux").then(|| {
            Arc::new(Syncer {
                root,
                tx: OnceLock::new(),
                logs_tx: OnceLock::new(),
                counts: Arc::default(),
            })
        })
    }

    /// Writes `body` as `path`'s new state (see [`crate::slotfile`]) and
    /// returns once it is durable. A crash before that leaves the old
    /// content or the new one. `cache` keeps the file open between the
    /// writes of its one writer ([`slotfile::Cache`]).
    ///
    /// # Errors
    /// Writing or renaming this file failed (ENOSPC: see
    /// [`fsutil::is_storage_full`]), the sync failed, or the broker's
    /// runtime is shutting down.
    pub async fn save(
        &self,
        path: PathBuf,
        body: Vec<u8>,
        cache: slotfile::Cache,
    ) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.submit(
            Job::Save {
                path,
                body,
                cache,
                done,
            },
            wait,
        )
        .await
    }

    /// Returns once what was written to `file` before the call is durable:
    /// one `syncfs` shared with every other caller and state file of the
    /// round (or, in a round of at most [`LONE_SYNCS`] logs and no state
    /// file, an `fdatasync` of `file`). With `full`, always a `syncfs`:
    /// it also makes durable the folders and files created for `file`'s
    /// log, and whatever else was written on the file system before it.
    ///
    /// # Errors
    /// The sync failed (a write-back error anywhere on the file system since
    /// the syncer started, or the sync itself), or the broker's runtime is
    /// shutting down.
    pub async fn sync(&self, file: Arc<std::fs::File>, full: bool) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.submit(Job::Sync { file, full, done }, wait).await
    }

    /// Syncs made so far (`syncfs`, or `fdatasync` in a lone round).
    pub fn syncs(&self) -> u64 {
        self.counts.syncs.load(Ordering::Relaxed)
    }

    /// Of those, the `syncfs` calls.
    pub fn full_syncs(&self) -> u64 {
        self.counts.syncfs.load(Ordering::Relaxed)
    }

    async fn submit(&self, job: Job, wait: oneshot::Receiver<io::Result<()>>) -> io::Result<()> {
        let tx = match job {
            Job::Save { .. } => &self.tx,
            Job::Sync { .. } => &self.logs_tx,
        };
        let tx = tx.get_or_init(|| spawn(self.root.clone(), self.counts.clone()));
        let stopped = || io::Error::other("the sync task has stopped");
        tx.send(job).map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }
}

/// Starts the task that serves jobs, one round per batch.
/// Syncs made: `syncfs`, or `fdatasync` in a lone round (`syncs`), and
/// the `syncfs` calls among them.
#[derive(Debug, Default)]
struct Counts {
    syncs: AtomicU64,
    syncfs: AtomicU64,
}

fn spawn(root: PathBuf, counts: Arc<Counts>) -> mpsc::UnboundedSender<Job> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    tokio::spawn(async move {
        // Opened once: see the module's note on write-back errors.
        let mut dir: Option<Arc<std::fs::File>> = None;
        while let Some(first) = rx.recv().await {
            let mut jobs = vec![first];
            while let Ok(j) = rx.try_recv() {
                jobs.push(j);
            }
            let root = root.clone();
            let held = dir.clone();
            let counts = counts.clone();
            let done = tokio::task::spawn_blocking(move || {
                let dir = match held {
                    Some(d) => d,
                    None => match std::fs::File::open(&root) {
                        Ok(d) => Arc::new(d),
                        Err(e) => {
                            fail(&root, jobs, &e);
                            return None;
                        }
                    },
                };
                round(&root, &dir, jobs, &counts);
                Some(dir)
            })
            .await;
            match done {
                Ok(d) => dir = d.or(dir),
                Err(e) => {
                    // The waiters' senders were dropped with the round: they
                    // hear that the writer stopped.
                    tracing::error!(error = %e, "sync round failed");
                }
            }
        }
    });
    tx
}

/// A state file to write, with who waits for it.
struct Save {
    path: PathBuf,
    cache: slotfile::Cache,
    done: oneshot::Sender<io::Result<()>>,
}

/// Writes every file (in place, or to a temporary for a new file), syncs,
/// renames the temporaries and syncs again if there were any, and answers
/// each job; a job that only waits for the sync hears the first sync's
/// outcome.
fn round(root: &Path, dir: &std::fs::File, jobs: Vec<Job>, counts: &Counts) {
    let mut in_place = Vec::with_capacity(jobs.len());
    let mut temporary = Vec::new();
    let mut waits = Vec::new();
    let mut full = false;
    for j in jobs {
        let (path, body, cache, done) = match j {
            Job::Save {
                path,
                body,
                cache,
                done,
            } => (path, body, cache, done),
            Job::Sync {
                file,
                full: f,
                done,
            } => {
                full |= f;
                waits.push((file, done));
                continue;
            }
        };
        // Through the file's open handle when it has one: one pwrite.
        let staged = cache.with(|h| slotfile::stage_cached(&path, &body, false, h));
        let save = Save { path, cache, done };
        match staged {
            Ok(Staged::InPlace) => in_place.push(save),
            Ok(Staged::Temporary) => temporary.push(save),
            Err(e) => {
                // `stage_cached` dropped the handle.
                let _ = save.done.send(Err(e));
            }
        }
    }
    if !full && in_place.is_empty() && temporary.is_empty() && waits.len() <= LONE_SYNCS {
        for (file, done) in waits {
            counts.syncs.fetch_add(1, Ordering::Relaxed);
            let _ = done.send(file.sync_data());
        }
        return;
    }
    counts.syncs.fetch_add(1, Ordering::Relaxed);
    counts.syncfs.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = syncfs(dir) {
        tracing::error!(folder = %root.display(), error = %e, "syncfs failed");
        for (_, w) in waits {
            let _ = w.send(Err(io::Error::new(e.kind(), e.to_string())));
        }
        fail_saves(in_place, &e);
        return fail_saves(temporary, &e);
    }
    for (_, w) in waits {
        let _ = w.send(Ok(()));
    }
    for j in in_place {
        let _ = j.done.send(Ok(()));
    }
    if temporary.is_empty() {
        return;
    }
    let mut renamed = Vec::with_capacity(temporary.len());
    for j in temporary {
        match fsutil::commit_tmp(&j.path) {
            Ok(()) => renamed.push(j),
            Err(e) => {
                // The handle is the temporary's, not the file's.
                j.cache.clear();
                let _ = j.done.send(Err(e));
            }
        }
    }
    counts.syncs.fetch_add(1, Ordering::Relaxed);
    counts.syncfs.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = syncfs(dir) {
        tracing::error!(folder = %root.display(), error = %e, "syncfs failed");
        return fail_saves(renamed, &e);
    }
    for j in renamed {
        let _ = j.done.send(Ok(()));
    }
}

/// Answers jobs whose round could not open its folder.
fn fail(root: &Path, jobs: Vec<Job>, e: &io::Error) {
    tracing::error!(folder = %root.display(), error = %e, "cannot open the folder to sync");
    for j in jobs {
        let done = match j {
            Job::Save { done, .. } | Job::Sync { done, .. } => done,
        };
        let _ = done.send(Err(io::Error::new(e.kind(), e.to_string())));
    }
}

fn fail_saves(saves: Vec<Save>, e: &io::Error) {
    for j in saves {
        // What the file holds is no longer known for sure: the next write
        // reads it again.
        j.cache.clear();
        let _ = j.done.send(Err(io::Error::new(e.kind(), e.to_string())));
    }
}

#[cfg(target_os = "linux")]
fn syncfs(dir: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn syncfs(_dir: &std::fs::File) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "syncfs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many concurrent saves are all answered, and each file holds its
    /// own latest content.
    #[tokio::test]
    async fn concurrent_saves_are_each_written() {
        let dir = tempfile::tempdir().unwrap();
        let Some(s) = Syncer::new(dir.path().to_path_buf()) else {
            return;
        };
        for round in 0..3u8 {
            let all = (0..200u32).map(|i| {
                let s = s.clone();
                let p = dir.path().join(format!("{i}.state"));
                tokio::spawn(
                    async move { s.save(p, vec![round; i as usize], Default::default()).await },
                )
            });
            for r in futures::future::join_all(all).await {
                r.unwrap().unwrap();
            }
        }
        for i in 0..200u32 {
            let p = dir.path().join(format!("{i}.state"));
            let body = slotfile::read(&p).unwrap().unwrap();
            assert_eq!(body, vec![2u8; i as usize]);
        }
    }

    /// A file that cannot be written fails alone; the others in its round
    /// are written.
    #[tokio::test]
    async fn one_failed_file_does_not_fail_its_round() {
        let dir = tempfile::tempdir().unwrap();
        let Some(s) = Syncer::new(dir.path().to_path_buf()) else {
            return;
        };
        let bad = dir.path().join("missing").join("g.state");
        let good = dir.path().join("g.state");
        let (a, b) = tokio::join!(
            s.save(bad, vec![1], Default::default()),
            s.save(good.clone(), vec![2], Default::default())
        );
        assert!(a.is_err());
        b.unwrap();
        assert_eq!(slotfile::read(&good).unwrap(), Some(vec![2]));
    }

    /// Sync-only waits share the rounds of the saves and are all answered.
    #[tokio::test]
    async fn sync_waits_are_answered_with_the_saves_of_their_round() {
        let dir = tempfile::tempdir().unwrap();
        let Some(s) = Syncer::new(dir.path().to_path_buf()) else {
            return;
        };
        let all = (0..100u32).map(|i| {
            let s = s.clone();
            let p = dir.path().join(format!("{i}.state"));
            tokio::spawn(async move {
                if i % 2 == 0 {
                    let f = std::fs::File::create(&p)?;
                    s.sync(Arc::new(f), false).await
                } else {
                    s.save(p, vec![1], Default::default()).await
                }
            })
        });
        for r in futures::future::join_all(all).await {
            r.unwrap().unwrap();
        }
        // Alone in its round: an fdatasync of its own file, not a syncfs.
        let lone = Arc::new(std::fs::File::create(dir.path().join("lone")).unwrap());
        let (before, full) = (s.syncs(), s.full_syncs());
        s.sync(lone.clone(), false).await.unwrap();
        assert_eq!((s.syncs(), s.full_syncs()), (before + 1, full));
        // A log created unsynced asks for a syncfs even alone.
        s.sync(lone, true).await.unwrap();
        assert_eq!((s.syncs(), s.full_syncs()), (before + 2, full + 1));
    }
}
