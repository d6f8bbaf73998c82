//! Running out of space: appends fail with StorageFull, the log stays
//! consistent, and appends work again once space is freed.
//!
//! Needs root (it mounts a 2 MiB tmpfs); skips with a message otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use common::{batch, read_all};
use herald_broker::storage::{FsyncPolicy, Log, LogConfig};

/// Unmounts the tmpfs however the test ends.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a panic left files open): detach it.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn mount_tmpfs(at: &Path) -> Result<Unmount, String> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "herald-enospc"])
        .arg(at)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(Unmount(at.to_path_buf()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_full_fails_cleanly_and_recovers() {
    let base = tempfile::TempDir::new().expect("tmp");
    let mnt = base.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let _guard = match mount_tmpfs(&mnt) {
        Ok(g) => g,
        Err(reason) => {
            println!("skipping storage_full_fails_cleanly_and_recovers: mount failed: {reason}");
            return;
        }
    };
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 512 * 1024]).expect("filler");
    let dir = mnt.join("log");
    let cfg = LogConfig {
        segment_bytes: 256 * 1024,
        fsync: FsyncPolicy::Always,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, cfg.clone()).expect("open");
    let mut confirmed: Vec<(u64, Bytes)> = Vec::new();
    let mut full = false;
    for i in 0..1000u32 {
        let payload = Bytes::from(format!("{i:06}-{}", "z".repeat(7000)));
        match log.append(batch(&[&payload])).await {
            Ok(out) => {
                assert_eq!(out.base_offset, confirmed.len() as u64);
                confirmed.push((out.base_offset, payload));
            }
            Err(e) if e.is_storage_full() => {
                full = true;
                break;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert!(full, "2 MiB never filled up");
    assert!(!confirmed.is_empty());
    let next = confirmed.len() as u64;
    assert_eq!(log.next_offset(), next, "a failed append moved next_offset");
    let again = log.append(batch(&[&[1u8; 7000][..]])).await;
    assert!(
        again.as_ref().is_err_and(|e| e.is_storage_full()),
        "{again:?}"
    );
    assert_eq!(log.next_offset(), next);
    assert_eq!(read_all(&log, 0), confirmed);
    log.close().await.expect("close on a full disk");
    drop(log);

    let log = Log::open(&dir, cfg).expect("reopen");
    assert_eq!(log.next_offset(), next);
    assert_eq!(
        read_all(&log, 0),
        confirmed,
        "reopen shows exactly the confirmed data"
    );
    std::fs::remove_file(&filler).expect("free space");
    let out = log
        .append(batch(&[b"after freeing space"]))
        .await
        .expect("append after freeing space");
    assert_eq!(out.base_offset, next);
    log.close().await.expect("close");
}
