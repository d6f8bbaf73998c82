//! What the process and the file system say: open file descriptors and
//! their limit, and the free space of the data folder's file system. Read
//! at scrape time; `None` where the platform does not tell.

use std::path::Path;

/// File descriptors the process has open (entries of `/proc/self/fd`).
pub fn open_files() -> Option<u64> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    // The directory handle itself is one of the entries: not counted.
    Some((dir.count() as u64).saturating_sub(1))
}

/// The soft limit on open file descriptors (`RLIMIT_NOFILE`).
pub fn max_open_files() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// `(available to us, total)` bytes of the file system holding `dir`.
pub fn disk_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statvfs struct to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frag = st.f_frsize as u64;
    Some((st.f_bavail as u64 * frag, st.f_blocks as u64 * frag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_process_and_the_disk() {
        // Other tests open files meanwhile: only "some" can be checked.
        let _f = std::fs::File::open("/proc/self/exe").expect("open");
        assert!(open_files().is_some_and(|n| n >= 1));
        let (free, total) = disk_space(Path::new("/")).expect("statvfs");
        assert!(total > 0 && free <= total);
        assert!(max_open_files().is_some_and(|n| n > 0));
    }
}
