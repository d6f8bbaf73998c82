//! Small metadata files (topic settings, group state) written so that a
//! crash leaves the old or the new content, never a mix: write a temporary,
//! fsync it, rename it over the old one, fsync the folder. Each file is
//! `u32 LE crc32c of the rest | body`, so a damaged file is detected.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `body` atomically; with `durable`, fsyncs the file
/// and its folder before returning.
///
/// On failure the old content is untouched and the temporary is removed
/// (best effort), so a full disk leaves no half-written files behind.
pub fn write_atomic(path: &Path, body: &[u8], durable: bool) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&crc32c::crc32c(body).to_le_bytes())?;
        f.write_all(body)?;
        if durable {
            f.sync_data()?;
        }
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if durable {
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// Renames `path`'s temporary (written by [`crate::slotfile`]) over
/// `path` (durable once its folder is synced).
pub fn commit_tmp(path: &Path) -> io::Result<()> {
    fs::rename(path.with_extension("tmp"), path)
}

/// True for ENOSPC and EDQUOT: out of space (or quota), which freeing space
/// cures, unlike other I/O errors.
pub fn is_storage_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(c) if c == libc::ENOSPC || c == libc::EDQUOT)
}

/// True for EMFILE and ENFILE: the process (or system) is out of file
/// descriptors, which passes as connections close or topics are deleted:
/// the request may be retried, it is not the broker's fault.
pub fn is_out_of_files(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(c) if c == libc::EMFILE || c == libc::ENFILE)
}

/// fsyncs a folder, so that files created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Reads a file written by [`write_atomic`]: `Ok(None)` if it does not
/// exist, an `InvalidData` error if its checksum does not match.
pub fn read_checked(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.len() < 4 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is truncated ({} bytes)", path.display(), bytes.len()),
        ));
    }
    let stored = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let computed = crc32c::crc32c(&bytes[4..]);
    if stored != computed {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: checksum 0x{stored:08x} does not match 0x{computed:08x}",
                path.display()
            ),
        ));
    }
    Ok(Some(bytes[4..].to_vec()))
}
