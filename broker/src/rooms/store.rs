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

use std::path::{Path, PathBuf};

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
