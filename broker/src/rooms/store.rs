//! Durable rooms on disk: `<data-dir>/rooms/<room>.members`, the member
//! client ids as a postcard `Vec<String>`, written with
//! [`fsutil::write_atomic`] (checksummed, old or new content after a crash).

use std::path::Path;

use crate::fsutil;
use crate::BrokerError;

const SUFFIX: &str = ".members";

/// Every durable room with its members.
///
/// # Errors
/// The folder cannot be created or read, or a file is damaged (a damaged
/// member file is an error rather than an empty room: silently dropping
/// members would silently drop their events).
pub fn load_all(dir: &Path) -> Result<Vec<(String, Vec<String>)>, BrokerError> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().to_string();
        let Some(room) = file.strip_suffix(SUFFIX) else {
            continue;
        };
        let Some(body) = fsutil::read_checked(&entry.path())? else {
            continue;
        };
        let members: Vec<String> = postcard::from_bytes(&body)
            .map_err(|e| BrokerError::Internal(format!("{}: {e}", entry.path().display())))?;
        if !members.is_empty() {
            out.push((room.to_owned(), members));
        }
    }
    Ok(out)
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
            load_all(dir.path())?,
            vec![("news".to_owned(), vec!["a".to_owned(), "b".to_owned()])]
        );
        save(dir.path(), "news", &[])?;
        assert!(load_all(dir.path())?.is_empty());
        Ok(())
    }
}
