//! Where many small files become durable together: one `syncfs` of the
//! data folder's file system stands for the fsyncs of every group-state
//! file written since the last one.
//!
//! Why: each consumer group persists its acks in its own small file (see
//! [`crate::group::store`]), and each write of one used to cost two fsyncs
//! (the file, then its folder). A room of 1,000 members is 1,000 groups
//! (one per member, see [`crate::rooms::log`]), all acking the same events
//! at once: 2,000 fsyncs per persist round saturated the disk and delayed
//! the room log's own fsync, so every emit waited behind its members'
//! bookkeeping. With the syncer a round costs two `syncfs` calls however
//! many groups took part: write every temporary file, one sync, rename
//! them, one sync.
//!
//! Requests are coalesced: whoever asks while a sync runs is served by the
//! next one (its write may have come after the running sync started), and
//! every request queued by then shares that next sync.
//!
//! Linux only (`syncfs(2)`); elsewhere [`Syncer::new`] returns `None` and
//! the groups fsync their own files.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

type Waiter = oneshot::Sender<Result<(), io::ErrorKind>>;

/// Coalesced `syncfs` of one file system (the one holding `root`).
#[derive(Debug)]
pub struct Syncer {
    root: PathBuf,
    /// The task that runs the syncs, started on first use (so that a
    /// syncer can be made outside a runtime).
    tx: OnceLock<mpsc::UnboundedSender<Waiter>>,
}

impl Syncer {
    /// A syncer for the file system of `root`; `None` where `syncfs` does
    /// not exist.
    pub fn new(root: PathBuf) -> Option<Arc<Syncer>> {
        cfg!(target_os = "linux").then(|| {
            Arc::new(Syncer {
                root,
                tx: OnceLock::new(),
            })
        })
    }

    /// Returns once everything written to the file system before this call
    /// is durable (data and metadata: renames included).
    ///
    /// # Errors
    /// The sync failed (EIO), or the broker's runtime is shutting down.
    pub async fn sync(&self) -> io::Result<()> {
        let tx = self.tx.get_or_init(|| spawn(self.root.clone()));
        let (done, wait) = oneshot::channel();
        if tx.send(done).is_err() {
            return Err(io::Error::other("the syncer has stopped"));
        }
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(kind)) => Err(io::Error::new(kind, "syncfs of the data folder failed")),
            Err(_) => Err(io::Error::other("the syncer has stopped")),
        }
    }
}

/// Starts the task that serves sync requests, one `syncfs` per batch.
fn spawn(root: PathBuf) -> mpsc::UnboundedSender<Waiter> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Waiter>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut waiters = vec![first];
            while let Ok(w) = rx.try_recv() {
                waiters.push(w);
            }
            let folder = root.clone();
            let r = tokio::task::spawn_blocking(move || syncfs(&folder))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
            if let Err(e) = &r {
                tracing::error!(folder = %root.display(), error = %e, "syncfs failed");
            }
            for w in waiters {
                let _ = w.send(r.as_ref().map(|_| ()).map_err(|e| e.kind()));
            }
        }
    });
    tx
}

#[cfg(target_os = "linux")]
fn syncfs(root: &std::path::Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(root)?;
    // SAFETY: a valid open descriptor.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn syncfs(_root: &std::path::Path) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "syncfs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many concurrent requests are all answered, by few syncs.
    #[tokio::test]
    async fn concurrent_requests_share_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let Some(s) = Syncer::new(dir.path().to_path_buf()) else {
            return;
        };
        let all = (0..200).map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.sync().await })
        });
        for r in futures::future::join_all(all).await {
            r.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_missing_folder_is_an_error_not_a_hang() {
        let Some(s) = Syncer::new(PathBuf::from("/nonexistent/herald-syncer")) else {
            return;
        };
        assert!(s.sync().await.is_err());
    }
}
