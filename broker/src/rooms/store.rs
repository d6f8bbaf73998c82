//! Durable rooms on disk: `<data-dir>/rooms/<room>.members`, the member
//! client ids as a postcard `Vec<String>`, written with
//! [`fsutil::write_atomic`] (checksummed, old or new content after a crash).

use std::path::{Path, PathBuf};

use crate::fsutil;
use crate::BrokerError;

const SUFFIX: &str = ".members";

/// What [`load_all`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Every readable durable room with its members.
    pub rooms: Vec<(String, Vec<String>)>,
    /// Rooms whose member file could not be read.
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

/// Every durable room with its members, and the rooms whose file is
/// damaged. A damaged file is neither an empty room nor a failed start:
/// silently dropping members would silently drop their events, and one bad
/// file must not stop every other room and topic from being served.
///
/// # Errors
/// The folder itself cannot be created or listed.
pub fn load_all(dir: &Path) -> Result<Loaded, BrokerError> {
    std::fs::create_dir_all(dir)?;
    let mut out = Loaded::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().to_string();
        let Some(room) = file.strip_suffix(SUFFIX) else {
            continue;
        };
        let path = entry.path();
        match read(&path) {
            Ok(members) if members.is_empty() => {}
            Ok(members) => out.rooms.push((room.to_owned(), members)),
            Err(reason) => out.damaged.push(Damaged {
                room: room.to_owned(),
                path,
                reason,
            }),
        }
    }
    Ok(out)
}

/// The members in one file (none if it vanished meanwhile), or why it
/// cannot be read.
fn read(path: &Path) -> Result<Vec<String>, String> {
    let Some(body) = fsutil::read_checked(path).map_err(|e| e.to_string())? else {
        return Ok(Vec::new());
    };
    postcard::from_bytes(&body).map_err(|e| format!("cannot decode the member list: {e}"))
}

/// Replaces the member file of `room`; an empty set deletes it.
///
/// # Errors
/// I/O errors writing, renaming or syncing.
pub fn save(dir: &Path, room: &str, members: &[String]) -> Result<(), BrokerError> {
    let path = dir.join(format!("{room}{SUFFIX}"));
    if members.is_empty() {
        match std::fs::remove_file(&path) {
            Ok(()) => fsutil::sync_dir(dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(());
    }
    let body = postcard::to_allocvec(members).map_err(|e| BrokerError::Internal(e.to_string()))?;
    fsutil::write_atomic(&path, &body, true)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_delete() -> Result<(), BrokerError> {
        let dir = tempfile::tempdir()?;
        save(dir.path(), "news", &["a".into(), "b".into()])?;
        save(dir.path(), "empty", &[])?;
        assert_eq!(
            load_all(dir.path())?.rooms,
            vec![("news".to_owned(), vec!["a".to_owned(), "b".to_owned()])]
        );
        save(dir.path(), "news", &[])?;
        assert_eq!(load_all(dir.path())?, Loaded::default());
        Ok(())
    }

    #[test]
    fn a_damaged_file_is_reported_and_the_others_load() -> Result<(), BrokerError> {
        let dir = tempfile::tempdir()?;
        save(dir.path(), "good", &["a".into()])?;
        save(dir.path(), "flipped", &["b".into()])?;
        save(dir.path(), "garbage", &["c".into()])?;
        std::fs::write(dir.path().join("short.members"), b"ab")?;
        // A flipped bit: the checksum no longer matches.
        let p = dir.path().join("flipped.members");
        let mut bytes = std::fs::read(&p)?;
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&p, bytes)?;
        // A correct checksum over bytes that are no member list.
        fsutil::write_atomic(&dir.path().join("garbage.members"), &[0xff; 3], false)?;
        let mut loaded = load_all(dir.path())?;
        assert_eq!(
            loaded.rooms,
            vec![("good".to_owned(), vec!["a".to_owned()])]
        );
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
