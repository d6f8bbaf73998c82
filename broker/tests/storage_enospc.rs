//! Running out of space: appends fail with StorageFull, the log stays
//! consistent, and appends work again once space is freed.
//!
//! Needs root (it mounts a 2 MiB tmpfs); skips with a message otherwise.

#[path = "common_storage/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    // Eight appenders, so the writes that hit ENOSPC carry several batches
    // and a partial write can leave whole batches behind unless it is cut
    // back.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let log = log.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut full = false;
            for i in 0..2000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // Appender 0 sends batches big enough to be written with
                // O_DIRECT, so the disk also fills up under a direct write.
                let pad = if t == 0 { 70_000 } else { 900 };
                let payload = Bytes::from(format!("{t}-{i:06}-{}", "z".repeat(pad)));
                match log.append(batch(&[&payload])).await {
                    Ok(out) => mine.push((out.base_offset, payload)),
                    Err(e) if e.is_storage_full() => {
                        full = true;
                        stop.store(true, Ordering::Relaxed);
                    }
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            (mine, full)
        }));
    }
    let mut confirmed: Vec<(u64, Bytes)> = Vec::new();
    let mut full = false;
    for t in tasks {
        let (mine, f) = t.await.expect("appender");
        confirmed.extend(mine);
        full |= f;
    }
    confirmed.sort_by_key(|r| r.0);
    assert!(
        confirmed.iter().enumerate().all(|(i, r)| r.0 == i as u64),
        "confirmed offsets are not 0..n"
    );
    assert!(full, "2 MiB never filled up");
    assert!(!confirmed.is_empty());
    let next = confirmed.len() as u64;
    assert_eq!(log.next_offset(), next, "a failed append moved next_offset");
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
    let again = log.append(batch(&[&vec![1u8; 300_000][..]])).await;
    assert!(
        again.as_ref().is_err_and(|e| e.is_storage_full()),
        "{again:?}"
    );
    assert_eq!(log.next_offset(), next);
    std::fs::remove_file(&filler).expect("free space");
    let out = log
        .append(batch(&[b"after freeing space"]))
        .await
        .expect("append after freeing space");
    assert_eq!(out.base_offset, next);
    // A direct write now re-writes the partial last block from the copy the
    // writer kept through the failures: every byte before it must survive.
    let big = Bytes::from(vec![b'b'; 70_000]);
    let out = log.append(batch(&[&big])).await.expect("big append");
    assert_eq!(out.base_offset, next + 1);
    log.close().await.expect("close");
    let log = Log::open(&dir, LogConfig::default()).expect("reopen");
    let mut want = confirmed;
    want.push((next, Bytes::from_static(b"after freeing space")));
    want.push((next + 1, big));
    assert_eq!(read_all(&log, 0), want, "everything confirmed, in order");
    log.close().await.expect("close");
}
