//! The data folder's lock: one broker per folder.
//!
//! Two brokers on one folder would each believe they own every log's end:
//! both would confirm offset N of a topic and one of the two writes would be
//! lost. So [`DataDirLock::acquire`] takes an exclusive, non-blocking
//! advisory lock (`flock`) on `<data-dir>/LOCK` before anything else in the
//! folder is opened, and the broker holds it for its whole life.
//!
//! The lock belongs to the open file, not to the file's existence: the
//! kernel releases it when the process exits for any reason, SIGKILL
//! included, so a stale `LOCK` file never blocks a restart. The file holds
//! the holder's pid as text, only so that a refused broker can say who holds
//! the folder.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::BrokerError;

/// Name of the lock file inside the data folder.
pub const LOCK_FILE: &str = "LOCK";

/// A held lock on a data folder; released when dropped (and by the kernel
/// when the process dies).
#[derive(Debug)]
pub struct DataDirLock {
    /// Kept open: closing it would release the lock.
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Creates `dir` if needed and locks it for this process.
    ///
    /// # Errors
    /// [`BrokerError::DataDirInUse`] when another process (or another broker
    /// in this process) holds the folder; [`BrokerError::DataDirLock`] when
    /// the folder or its lock file cannot be created or locked at all (a
    /// filesystem without `flock` included: running unlocked would risk
    /// exactly the loss the lock exists to prevent).
    pub fn acquire(dir: &Path) -> Result<DataDirLock, BrokerError> {
        let failed = |error: std::io::Error| BrokerError::DataDirLock {
            dir: dir.to_path_buf(),
            error,
        };
        std::fs::create_dir_all(dir).map_err(failed)?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(failed)?;
        let mut waited = std::time::Duration::ZERO;
        loop {
            match try_lock(&file) {
                Ok(true) => break,
                // Held under this process's own pid: by a broker of this
                // process, or by a lock it has just let go that a child is
                // still holding. A process forked here keeps every open
                // file of ours until it execs, so a broker restarted on its
                // folder while another thread spawns a process (tests do)
                // can find its own released lock held for a moment.
                Ok(false) if waited < OWN_LOCK_WAIT && held_by_this_process(&mut file) => {
                    std::thread::sleep(OWN_LOCK_POLL); // until the child has exec'd
                    waited += OWN_LOCK_POLL;
                }
                Ok(false) => {
                    return Err(BrokerError::DataDirInUse {
                        dir: dir.to_path_buf(),
                        holder: holder(&mut file),
                    })
                }
                Err(e) => return Err(failed(e)),
            }
        }
        // Ours now: replace whatever pid a previous holder left.
        let pid = format!("{}\n", std::process::id());
        file.set_len(0).map_err(failed)?;
        file.seek(SeekFrom::Start(0)).map_err(failed)?;
        file.write_all(pid.as_bytes()).map_err(failed)?;
        Ok(DataDirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when another open file holds it.
/// (`File::try_lock` does the same from Rust 1.89; the workspace still
/// supports 1.85.) flock, not fcntl: its lock belongs to the open file, so a
/// second broker in the same process is refused too.
fn try_lock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock only reads the descriptor, which `file` keeps open for
    // the duration of the call.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Who holds the lock, from the pid the holder wrote ("pid unknown" while
/// it has not written it yet, or if the file says something else).
/// How long a lock held under this process's own pid is waited for.
const OWN_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const OWN_LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Whether the lock file names this process as the holder.
fn held_by_this_process(file: &mut File) -> bool {
    let mut text = String::new();
    let read = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut text));
    read.is_ok() && text.trim().parse::<u32>().ok() == Some(std::process::id())
}

fn holder(file: &mut File) -> String {
    let _ = file.seek(SeekFrom::Start(0));
    let mut text = String::new();
    let read = file.read_to_string(&mut text);
    match (read, text.trim().parse::<u32>()) {
        (Ok(_), Ok(pid)) => format!("pid {pid}"),
        _ => "pid unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock this process let go, still held for a moment by a copy of
    /// its file (a child between fork and exec holds one), is taken once
    /// the copy is closed, not refused.
    #[test]
    fn a_released_lock_held_by_a_forked_copy_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DataDirLock::acquire(dir.path()).unwrap();
        // What fork does: another descriptor of the same open file.
        let copy = lock._file.try_clone().unwrap();
        drop(lock);
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100)); // the child's exec
            drop(copy);
        });
        let again = DataDirLock::acquire(dir.path());
        closer.join().unwrap();
        assert!(again.is_ok(), "{again:?}");
    }

    #[test]
    fn second_lock_is_refused_with_the_holders_pid_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(first.path()).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        match DataDirLock::acquire(dir.path()) {
            Err(e @ BrokerError::DataDirInUse { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&format!("pid {}", std::process::id()))
                        && msg.contains(&dir.path().display().to_string()),
                    "{msg}"
                );
            }
            other => panic!("expected DataDirInUse, got {other:?}"),
        }
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_folder_that_cannot_be_created_is_a_lock_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        match DataDirLock::acquire(&file.join("data")) {
            Err(BrokerError::DataDirLock { .. }) => {}
            other => panic!("expected DataDirLock, got {other:?}"),
        }
    }
}
