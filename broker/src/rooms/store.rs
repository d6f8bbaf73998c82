//! Room membership on disk: `<data-dir>/rooms/<room>.room`, a postcard
//! [`StoredRoom`] (whether the room is durable, and its members), written
//! with [`fsutil::write_atomic`] (checksummed, old or new content after a
//! crash). Non-durable rooms are written too, so that a member whose
//! connection (or the broker) restarts within the grace period keeps its
//! room and its position in it.
//!
//! Files written by Herald before rooms had logs, `<room>.members` (a
//! postcard `Vec<String>`, durable rooms only), are read as durable rooms
//! and replaced by a `.room` file the first time the room changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::BrokerError;

const SUFFIX: &str = ".room";
/// The member files of Herald before room logs.
const LEGACY_SUFFIX: &str = ".members";

/// What a room file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRoom {
    pub durable: bool,
    pub members: Vec<String>,
}

/// A room read at start.
#[derive(Debug, PartialEq, Eq)]
pub struct LoadedRoom {
    pub room: String,
    pub stored: StoredRoom,
    /// Read from a `.members` file of an older Herald: its members have no
    /// position in the room's log yet.
    pub legacy: bool,
}

/// What [`load_all`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Every readable room with members.
    pub rooms: Vec<LoadedRoom>,
    /// Rooms whose file could not be read.
    pub damaged: Vec<Damaged>,
}

/// A member file that could not be read: its room is unavailable.
#[derive(Debug, PartialEq, Eq)]
pub struct Damaged {
    pub room: String,
    pub path: PathBuf,
    /// Why, in words (checksum mismatch, truncation, undecodable, I/O).
    pub reason: String,
}

/// Every room with its members, and the rooms whose file is damaged. A
/// damaged file is neither an empty room nor a failed start: silently
/// dropping members would silently drop their events, and one bad file
/// must not stop every other room and topic from being served. A room with
/// both a `.room` and a legacy `.members` file is read from the `.room`
/// one (the legacy file is left over from an interrupted migration).
///
/// # Errors
/// The folder itself cannot be created or listed.
pub fn load_all(dir: &Path) -> Result<Loaded, BrokerError> {
    std::fs::create_dir_all(dir)?;
    let mut out = Loaded::default();
    let mut names: Vec<(String, PathBuf, bool)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().to_string();
        if let Some(room) = file.strip_suffix(SUFFIX) {
            names.push((room.to_owned(), entry.path(), false));
        } else if let Some(room) = file.strip_suffix(LEGACY_SUFFIX) {
            names.push((room.to_owned(), entry.path(), true));
        }
    }
    names.sort();
    for (room, path, legacy) in &names {
        if *legacy && names.iter().any(|(r, _, l)| r == room && !l) {
            continue;
        }
        match read(path, *legacy) {
            Ok(stored) if stored.members.is_empty() => {}
            Ok(stored) => out.rooms.push(LoadedRoom {
                room: room.clone(),
                stored,
                legacy: *legacy,
            }),
            Err(reason) => out.damaged.push(Damaged {
                room: room.clone(),
                path: path.clone(),
                reason,
            }),
        }
    }
    Ok(out)
}

/// One room file (empty if it vanished meanwhile), or why it cannot be
/// read.
fn read(path: &Path, legacy: bool) -> Result<StoredRoom, String> {
    let Some(body) = fsutil::read_checked(path).map_err(|e| e.to_string())? else {
        return Ok(StoredRoom::default());
    };
    if legacy {
        let members: Vec<String> = postcard::from_bytes(&body)
            .map_err(|e| format!("cannot decode the member list: {e}"))?;
        return Ok(StoredRoom {
            durable: true,
            members,
        });
    }
    postcard::from_bytes(&body).map_err(|e| format!("cannot decode the room file: {e}"))
}

/// Replaces the file of `room` (and removes a legacy one); a room without
/// members has no file. With `durable` false the write is not fsynced: a
/// non-durable room's membership is kept across a restart on a best-effort
/// basis (a crash may lose the last joins, never a durable room's).
///
/// # Errors
/// I/O errors writing, renaming, removing or syncing.
pub fn save(dir: &Path, room: &str, stored: &StoredRoom) -> Result<(), BrokerError> {
    let path = dir.join(format!("{room}{SUFFIX}"));
    let legacy = dir.join(format!("{room}{LEGACY_SUFFIX}"));
    if stored.members.is_empty() {
        remove(&path)?;
        remove(&legacy)?;
        fsutil::sync_dir(dir)?;
        return Ok(());
    }
    let body = postcard::to_allocvec(stored).map_err(|e| BrokerError::Internal(e.to_string()))?;
    fsutil::write_atomic(&path, &body, stored.durable)?;
    if remove(&legacy)? {
        fsutil::sync_dir(dir)?;
    }
    Ok(())
}

/// The member-file writes of every room: one at a time per room, so that
/// the snapshot written last is the newest, and rooms in parallel. A write
/// whose change a later snapshot already carried to disk returns at once:
/// members joining one room together share its writes, instead of each
/// rewriting the whole member list with two fsyncs, one after the other.
#[derive(Debug, Default)]
pub struct Writes {
    /// Rooms with a write wanted or running (entries go once idle).
    rooms: Mutex<HashMap<String, Arc<RoomWrites>>>,
}

#[derive(Debug, Default)]
struct RoomWrites {
    one_at_a_time: tokio::sync::Mutex<()>,
    /// Changes asked to be written (numbered from 1), and the newest
    /// number a finished write carried.
    wanted: AtomicU64,
    written: AtomicU64,
}

impl Writes {
    /// Writes `room`'s file with a snapshot taken after the caller's
    /// change (made before the call), or returns once a write that
    /// started after the change has ended well.
    ///
    /// # Errors
    /// As [`save`]; a failed write is tried again by the next waiter.
    pub async fn write(
        &self,
        dir: &Path,
        room: &str,
        snapshot: impl FnOnce() -> StoredRoom,
    ) -> Result<(), BrokerError> {
        let w = self.lock()?.entry(room.to_owned()).or_default().clone();
        let mine = w.wanted.fetch_add(1, Ordering::SeqCst) + 1;
        let result = async {
            let _g = w.one_at_a_time.lock().await;
            if w.written.load(Ordering::SeqCst) >= mine {
                return Ok(());
            }
            // Every change numbered up to `upto` was made before it was
            // numbered, so the snapshot taken next holds them all.
            let upto = w.wanted.load(Ordering::SeqCst);
            let stored = snapshot();
            let (dir, name) = (dir.to_path_buf(), room.to_owned());
            tokio::task::spawn_blocking(move || save(&dir, &name, &stored))
                .await
                .map_err(|e| BrokerError::Internal(e.to_string()))??;
            w.written.store(upto, Ordering::SeqCst);
            Ok(())
        }
        .await;
        drop(w);
        let mut rooms = self.lock()?;
        // Only the map holds it: no write is waiting or running, and none
        // can start without taking this lock.
        if rooms.get(room).is_some_and(|w| Arc::strong_count(w) == 1) {
            rooms.remove(room);
        }
        result
    }

    fn lock(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, HashMap<String, Arc<RoomWrites>>>, BrokerError> {
        self.rooms
            .lock()
            .map_err(|_| BrokerError::Internal("room writes lock poisoned".into()))
    }
}

/// Removes `path`; whether it was there.
fn remove(path: &Path) -> Result<bool, BrokerError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(durable: bool, members: &[&str]) -> StoredRoom {
        StoredRoom {
            durable,
            members: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    /// Members joining one room together share its writes, and the file
    /// ends up with every one of them.
    #[tokio::test]
    async fn joins_at_once_share_the_room_file_writes() -> Result<(), BrokerError> {
        let dir = tempfile::tempdir()?;
        let writes = Arc::new(Writes::default());
        let state = Arc::new(Mutex::new(room(true, &[])));
        let snapshots = Arc::new(AtomicU64::new(0));
        let joins = (0..50).map(|i| {
            let (dir, writes, state, snapshots) = (
                dir.path().to_path_buf(),
                writes.clone(),
                state.clone(),
                snapshots.clone(),
            );
            tokio::spawn(async move {
                state.lock().unwrap().members.push(format!("m{i:02}"));
                writes
                    .write(&dir, "lobby", || {
                        snapshots.fetch_add(1, Ordering::SeqCst);
                        state.lock().unwrap().clone()
                    })
                    .await
            })
        });
        for j in futures::future::join_all(joins).await {
            j.map_err(|e| BrokerError::Internal(e.to_string()))??;
        }
        let n = snapshots.load(Ordering::SeqCst);
        assert!(n <= 3, "{n} writes for 50 joins");
        let loaded = load_all(dir.path())?;
        assert_eq!(loaded.rooms[0].stored.members.len(), 50);
        assert!(writes.lock()?.is_empty(), "idle rooms are forgotten");
        Ok(())
    }

    #[test]
    fn save_load_delete() -> Result<(), BrokerError> {
        let dir = tempfile::tempdir()?;
        save(dir.path(), "news", &room(true, &["a", "b"]))?;
        save(dir.path(), "chat", &room(false, &["c"]))?;
        save(dir.path(), "empty", &room(true, &[]))?;
        let loaded = load_all(dir.path())?;
        let rooms: Vec<(&str, &StoredRoom, bool)> = loaded
            .rooms
            .iter()
            .map(|r| (r.room.as_str(), &r.stored, r.legacy))
            .collect();
        assert_eq!(
            rooms,
            vec![
                ("chat", &room(false, &["c"]), false),
                ("news", &room(true, &["a", "b"]), false)
            ]
        );
        save(dir.path(), "news", &room(true, &[]))?;
        save(dir.path(), "chat", &room(false, &[]))?;
        assert_eq!(load_all(dir.path())?, Loaded::default());
        Ok(())
    }

    #[test]
    fn a_legacy_member_file_is_a_durable_room_and_is_replaced() -> Result<(), BrokerError> {
        let dir = tempfile::tempdir()?;
        let body = postcard::to_allocvec(&vec!["a".to_owned()]).unwrap();
        fsutil::write_atomic(&dir.path().join("old.members"), &body, true)?;
        let loaded = load_all(dir.path())?;
        assert_eq!(loaded.rooms.len(), 1);
        assert!(loaded.rooms[0].legacy);
        assert_eq!(loaded.rooms[0].stored, room(true, &["a"]));
        save(dir.path(), "old", &room(true, &["a", "b"]))?;
        assert!(!dir.path().join("old.members").exists());
        let loaded = load_all(dir.path())?;
        assert!(!loaded.rooms[0].legacy);
        assert_eq!(loaded.rooms[0].stored, room(true, &["a", "b"]));
        Ok(())
    }

    #[test]
    fn a_damaged_file_is_reported_and_the_others_load() -> Result<(), BrokerError> {
        let dir = tempfile::tempdir()?;
        save(dir.path(), "good", &room(true, &["a"]))?;
        save(dir.path(), "flipped", &room(true, &["b"]))?;
        std::fs::write(dir.path().join("short.room"), b"ab")?;
        // A flipped bit: the checksum no longer matches.
        let p = dir.path().join("flipped.room");
        let mut bytes = std::fs::read(&p)?;
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&p, bytes)?;
        // A correct checksum over bytes that are no room file.
        fsutil::write_atomic(&dir.path().join("garbage.room"), &[0xff; 3], false)?;
        let mut loaded = load_all(dir.path())?;
        let good: Vec<&str> = loaded.rooms.iter().map(|r| r.room.as_str()).collect();
        assert_eq!(good, ["good"]);
        loaded.damaged.sort_by(|a, b| a.room.cmp(&b.room));
        let rooms: Vec<&str> = loaded.damaged.iter().map(|d| d.room.as_str()).collect();
        assert_eq!(rooms, ["flipped", "garbage", "short"]);
        assert!(
            loaded.damaged[0].reason.contains("checksum"),
            "{:?}",
            loaded.damaged
        );
        assert!(
            loaded.damaged[1].reason.contains("decode"),
            "{:?}",
            loaded.damaged
        );
        assert!(
            loaded.damaged[2].reason.contains("truncated"),
            "{:?}",
            loaded.damaged
        );
        Ok(())
    }
}
