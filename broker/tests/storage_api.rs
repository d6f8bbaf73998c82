//! Behaviour of the storage API: group commit, idempotence, retention,
//! time lookups, the watch, close.

#[path = "common_storage/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{batch, config, producer_batch, read_all, tmpdir};
use herald_broker::storage::{FsyncPolicy, Log, LogConfig, StorageError};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_uses_fewer_fsyncs_than_appends() {
    let dir = tempfile::TempDir::new().expect("tmp");
    let log = Log::open(dir.path(), config(FsyncPolicy::Always)).expect("open");
    let before = log.fsync_count();
    const TASKS: usize = 8;
    const PER_TASK: usize = 40;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                let payload = format!("t{t}-{i}");
                log.append(batch(&[payload.as_bytes()]))
                    .await
                    .expect("append");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let appends = (TASKS * PER_TASK) as u64;
    let fsyncs = log.fsync_count() - before;
    assert!(fsyncs > 0, "Always must fsync");
    assert!(
        fsyncs < appends,
        "{fsyncs} fsyncs for {appends} appends: no group commit"
    );
    assert_eq!(log.next_offset(), appends);
    assert_eq!(read_all(&log, 0).len() as u64, appends);
    log.close().await.expect("close");
}

/// Logs that share the broker's sync rounds (room logs, inboxes) confirm
/// each append only after a `syncfs` that started after it was written,
/// one for many logs at once, and keep everything across a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_sharing_sync_rounds_use_fewer_syncs_than_appends_and_keep_them() {
    let dir = tempfile::TempDir::new().expect("tmp");
    let Some(syncer) = herald_broker::syncer::Syncer::new(dir.path().to_path_buf()) else {
        return; // no syncfs here: logs fsync their own files
    };
    let cfg = LogConfig {
        shared_sync: Some(syncer.clone()),
        ..config(FsyncPolicy::Always)
    };
    const LOGS: usize = 40;
    const PER_LOG: usize = 5;
    let logs: Vec<_> = (0..LOGS)
        .map(|i| Log::open(dir.path().join(format!("l{i}")), cfg.clone()).expect("open"))
        .collect();
    let mut handles = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            for n in 0..PER_LOG {
                let payload = format!("l{i}-{n}");
                log.append(batch(&[payload.as_bytes()]))
                    .await
                    .expect("append");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let appends = (LOGS * PER_LOG) as u64;
    let syncs = syncer.syncs();
    assert!(syncs > 0, "Always must sync");
    assert!(
        syncs < appends,
        "{syncs} syncs for {appends} appends over {LOGS} logs: not shared"
    );
    for log in &logs {
        log.close().await.expect("close");
    }
    for i in 0..LOGS {
        let log = Log::open(dir.path().join(format!("l{i}")), cfg.clone()).expect("reopen");
        let got: Vec<_> = read_all(&log, 0);
        assert_eq!(got.len(), PER_LOG, "log {i}");
        log.close().await.expect("close");
    }
}

/// A log created without syncing its files (an inbox or a room log
/// created by a join) makes them durable with its first commit: a
/// `syncfs`, even alone in its round; later commits are ordinary ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_created_unsynced_syncs_the_file_system_with_its_first_commit() {
    let dir = tempfile::TempDir::new().expect("tmp");
    let Some(syncer) = herald_broker::syncer::Syncer::new(dir.path().to_path_buf()) else {
        return; // no syncfs here: such logs are created synced
    };
    let cfg = LogConfig {
        shared_sync: Some(syncer.clone()),
        create_unsynced: true,
        ..config(FsyncPolicy::Always)
    };
    let path = dir.path().join("inbox");
    let log = Log::open(&path, cfg.clone()).expect("open");
    assert!(!path.join("00000000000000000000.index").exists());
    let full = syncer.full_syncs();
    log.append(batch(&[b"first"])).await.expect("append");
    assert_eq!(syncer.full_syncs(), full + 1, "the first commit syncfs");
    let syncs = syncer.syncs();
    log.append(batch(&[b"second"])).await.expect("append");
    assert_eq!(
        (syncer.syncs(), syncer.full_syncs()),
        (syncs + 1, full + 1),
        "then, alone, an fdatasync"
    );
    log.close().await.expect("close");
    let log = Log::open(&path, cfg).expect("reopen");
    assert_eq!(read_all(&log, 0).len(), 2);
    log.close().await.expect("close");
}

#[tokio::test]
async fn idempotent_retries_gaps_and_reopen() {
    let dir = tmpdir();
    let cfg = config(FsyncPolicy::Never);
    let log = Log::open(dir.path(), cfg.clone()).expect("open");
    log.append(batch(&[b"plain"])).await.expect("append");
    let first = log
        .append(producer_batch(9, 100, &[b"a", b"b", b"c"]))
        .await
        .expect("append");
    assert_eq!(
        (first.base_offset, first.count, first.duplicate),
        (1, 3, false)
    );
    let second = log
        .append(producer_batch(9, 103, &[b"d"]))
        .await
        .expect("append");
    assert_eq!((second.base_offset, second.duplicate), (4, false));
    let retry = log
        .append(producer_batch(9, 100, &[b"a", b"b", b"c"]))
        .await
        .expect("retry");
    assert_eq!(
        (retry.base_offset, retry.count, retry.duplicate),
        (1, 3, true)
    );
    assert_eq!(log.next_offset(), 5, "a duplicate appends nothing");
    match log.append(producer_batch(9, 105, &[b"x"])).await {
        Err(StorageError::SequenceGap {
            producer_id,
            expected,
            got,
        }) => assert_eq!((producer_id, expected, got), (9, 104, 105)),
        other => panic!("expected SequenceGap, got {other:?}"),
    }
    // An unknown producer may start anywhere.
    let other = log
        .append(producer_batch(10, 5_000, &[b"y"]))
        .await
        .expect("append");
    assert!(!other.duplicate);
    log.close().await.expect("close");
    assert!(matches!(
        log.append(batch(&[b"late"])).await,
        Err(StorageError::Closed)
    ));

    let log = Log::open(dir.path(), cfg).expect("reopen");
    let retry = log
        .append(producer_batch(9, 103, &[b"d"]))
        .await
        .expect("retry after reopen");
    assert_eq!((retry.base_offset, retry.duplicate), (4, true));
    assert!(matches!(
        log.append(producer_batch(9, 200, &[b"z"])).await,
        Err(StorageError::SequenceGap { expected: 104, .. })
    ));
    let next = log
        .append(producer_batch(9, 104, &[b"e"]))
        .await
        .expect("next in sequence");
    assert_eq!((next.base_offset, next.duplicate), (6, false));
    log.close().await.expect("close");
}

#[tokio::test]
async fn retry_older_than_the_window_is_a_duplicate_without_offsets() {
    let dir = tmpdir();
    let log = Log::open(dir.path(), config(FsyncPolicy::Never)).expect("open");
    for seq in 0..100u64 {
        log.append(producer_batch(3, seq, &[b"p"]))
            .await
            .expect("append");
    }
    let old = log
        .append(producer_batch(3, 1, &[b"p"]))
        .await
        .expect("retry");
    assert_eq!((old.base_offset, old.duplicate), (u64::MAX, true));
    let recent = log
        .append(producer_batch(3, 90, &[b"p"]))
        .await
        .expect("retry");
    assert_eq!((recent.base_offset, recent.duplicate), (90, true));
    log.close().await.expect("close");
}

#[tokio::test]
async fn roll_retention_and_reads_across_segments() {
    let dir = tmpdir();
    let cfg = LogConfig {
        segment_bytes: 1024,
        retention_bytes: Some(2048),
        index_interval_bytes: 128,
        tail_cache_bytes: 0,
        ..config(FsyncPolicy::Never)
    };
    let log = Log::open(dir.path(), cfg.clone()).expect("open");
    let payload = [7u8; 100];
    for _ in 0..100 {
        log.append(batch(&[&payload])).await.expect("append");
    }
    let stats = log.stats();
    assert!(stats.segments > 5, "{stats:?}");
    assert_eq!(
        read_all(&log, 0).len(),
        100,
        "tail cache off: all from disk"
    );
    let deleted = log.apply_retention().expect("retention");
    assert!(deleted > 0);
    let after = log.stats();
    assert!(after.bytes_on_disk >= 2048, "{after:?}");
    assert!(after.first_offset > 0);
    assert_eq!(log.apply_retention().expect("again"), 0, "nothing more due");
    let rest = read_all(&log, 0);
    assert_eq!(rest.first().map(|r| r.0), Some(after.first_offset));
    assert_eq!(rest.len() as u64, 100 - after.first_offset);
    log.close().await.expect("close");
    let log = Log::open(dir.path(), cfg).expect("reopen");
    assert_eq!(log.stats(), after);
    log.close().await.expect("close");
}

#[tokio::test]
async fn retention_by_age_keeps_the_active_segment() {
    let dir = tmpdir();
    let cfg = LogConfig {
        retention_ms: Some(0),
        ..config(FsyncPolicy::Never)
    };
    let log = Log::open(dir.path(), cfg).expect("open");
    log.append(batch(&[b"old"])).await.expect("append");
    log.roll().await.expect("roll");
    log.append(batch(&[b"new"])).await.expect("append");
    // The first segment's newest batch must be strictly older than now - 0:
    // wait for the clock to tick past it (bounded).
    let stamped = log.read(0, 1, 1).expect("read")[0].append_time();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while herald_now() <= stamped && std::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
    assert_eq!(log.apply_retention().expect("retention"), 1);
    assert_eq!(log.first_offset(), 1);
    assert_eq!(log.stats().segments, 1);
    log.close().await.expect("close");
}

fn herald_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[tokio::test]
async fn offset_for_timestamp_uses_append_times() {
    let dir = tmpdir();
    let cfg = LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 100,
        ..config(FsyncPolicy::Never)
    };
    let log = Log::open(dir.path(), cfg).expect("open");
    for _ in 0..40 {
        log.append(batch(&[b"0123456789"])).await.expect("append");
    }
    let batches: Vec<_> = {
        let mut v = Vec::new();
        let mut from = 0;
        loop {
            let b = log.read(from, 1 << 20, u32::MAX).expect("read");
            if b.is_empty() {
                break v;
            }
            from = b.last().map_or(from, |x| x.last_offset() + 1);
            v.extend(b);
        }
    };
    assert_eq!(batches.len(), 40);
    for b in &batches {
        let t = b.append_time();
        let want = batches
            .iter()
            .find(|x| x.append_time() >= t)
            .map(|x| x.base_offset());
        assert_eq!(Some(log.offset_for_timestamp(t).expect("lookup")), want);
    }
    assert_eq!(log.offset_for_timestamp(i64::MIN).expect("lookup"), 0);
    assert_eq!(log.offset_for_timestamp(i64::MAX).expect("lookup"), 40);
    log.close().await.expect("close");
}

#[tokio::test]
async fn watch_sees_confirmed_offsets_and_reads_are_bounded() {
    let dir = tmpdir();
    let log: Arc<Log> = Log::open(dir.path(), config(FsyncPolicy::Never)).expect("open");
    let mut watch = log.watch_next_offset();
    assert_eq!(*watch.borrow(), 0);
    let waiter = tokio::spawn(async move {
        watch
            .wait_for(|&n| n >= 3)
            .await
            .map(|n| *n)
            .expect("watch")
    });
    log.append(batch(&[b"a", b"b", b"c"]))
        .await
        .expect("append");
    let seen = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("watch timed out")
        .expect("task");
    assert_eq!(seen, 3);
    log.append(batch(&[b"d"])).await.expect("append");
    log.append(batch(&[b"e"])).await.expect("append");
    // The first batch may start before `from`; max_records bounds the rest.
    let got = log.read(1, usize::MAX, 4).expect("read");
    assert_eq!(
        got.iter().map(|b| b.base_offset()).collect::<Vec<_>>(),
        [0, 3]
    );
    assert!(log.read(5, usize::MAX, 10).expect("read").is_empty());
    assert_eq!(
        log.read(0, 0, 0).expect("read").len(),
        1,
        "at least one batch"
    );
    log.close().await.expect("close");
    log.close().await.expect("close twice");
}

#[tokio::test]
async fn segment_ms_rolls_by_age() {
    let dir = tmpdir();
    let cfg = LogConfig {
        segment_ms: Some(0),
        ..config(FsyncPolicy::Never)
    };
    let log = Log::open(dir.path(), cfg).expect("open");
    for _ in 0..3 {
        log.append(batch(&[b"x"])).await.expect("append");
    }
    assert_eq!(
        log.stats().segments,
        3,
        "each append finds the segment too old"
    );
    assert_eq!(read_all(&log, 0).len(), 3);
    log.close().await.expect("close");
}

#[tokio::test]
async fn interval_policy_confirms_then_fsyncs_on_its_timer() {
    let dir = tempfile::TempDir::new().expect("tmp");
    let log = Log::open(dir.path(), config(FsyncPolicy::Interval { ms: 1 })).expect("open");
    for _ in 0..10 {
        log.append(batch(&[b"x"])).await.expect("append");
    }
    assert_eq!(log.next_offset(), 10);
    // The timer is the only signal there is; wait for it, bounded.
    tokio::time::timeout(Duration::from_secs(10), async {
        while log.fsync_count() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the interval fsync never ran");
    log.close().await.expect("close");
}

/// Whether files in `dir` can be opened with `O_DIRECT`.
fn supports_o_direct(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join("probe");
    let ok = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// Under `always`, appends go through `O_DIRECT` where the filesystem
/// allows it. While the segment is active its file ends in zero padding to
/// a whole block. A closed segment ends exactly at its last batch. A copy
/// of the folder taken while the log is open is what a crash leaves: it
/// reopens with every batch and takes appends on its unaligned tail. The
/// folder is on disk, not in RAM, so a misaligned direct write would fail.
#[tokio::test]
async fn direct_appends_pad_the_active_segment_and_a_crash_image_recovers() {
    const BLOCK: u64 = 4096;
    let dir = tempfile::TempDir::new().expect("tmp");
    let log = Log::open(dir.path(), config(FsyncPolicy::Always)).expect("open");
    let mut expect = Vec::new();
    // Big batches take the direct path, small ones the page cache: the two
    // alternate, and the last append is a big one.
    let size = |i: usize| {
        if i % 3 == 0 {
            70_000 + 37 * i
        } else {
            37 * i + 1
        }
    };
    for i in 0..40usize {
        let p = vec![b'a' + (i % 26) as u8; size(i)];
        log.append(batch(&[&p])).await.expect("append");
        expect.push(p);
    }
    let logical = log.stats().bytes_on_disk;
    let seg = common::log_files(dir.path()).remove(0);
    let on_disk = std::fs::metadata(&seg).expect("stat").len();
    let direct = on_disk != logical;
    assert_eq!(
        direct,
        supports_o_direct(dir.path()),
        "direct writes are used exactly where the filesystem has them"
    );
    if direct {
        assert_eq!(on_disk % BLOCK, 0, "direct writes are whole blocks");
        assert!(on_disk > logical && on_disk - logical < BLOCK);
        assert!(logical % BLOCK != 0, "the test wants an unaligned end");
    }

    let image = tempfile::TempDir::new().expect("tmp");
    common::copy_dir(dir.path(), image.path());
    let copy = Log::open(image.path(), config(FsyncPolicy::Always)).expect("reopen image");
    assert_eq!(copy.next_offset(), 40);
    let image_seg = common::log_files(image.path()).remove(0);
    assert_eq!(std::fs::metadata(&image_seg).expect("stat").len(), logical);
    for i in 40..80usize {
        let p = vec![b'A' + (i % 26) as u8; size(i) + 5];
        copy.append(batch(&[&p]))
            .await
            .expect("append after reopen");
        expect.push(p);
    }
    let got = read_all(&copy, 0);
    assert_eq!(got.len(), expect.len());
    for ((off, payload), want) in got.iter().zip(&expect) {
        assert_eq!(&payload[..], &want[..], "offset {off}");
    }
    let copy_logical = copy.stats().bytes_on_disk;
    copy.close().await.expect("close");
    assert_eq!(
        std::fs::metadata(&image_seg).expect("stat").len(),
        copy_logical,
        "closing cuts the padding off"
    );

    log.close().await.expect("close");
    assert_eq!(std::fs::metadata(&seg).expect("stat").len(), logical);
}

/// `direct_io: false` (`herald serve --buffered-io`) writes through the
/// page cache: the file always ends at the last batch.
#[tokio::test]
async fn buffered_io_under_always_leaves_no_padding() {
    let dir = tempfile::TempDir::new().expect("tmp");
    let cfg = LogConfig {
        direct_io: false,
        ..config(FsyncPolicy::Always)
    };
    let log = Log::open(dir.path(), cfg).expect("open");
    for i in 0..10usize {
        log.append(batch(&[&vec![b'x'; 100 + i][..]]))
            .await
            .expect("append");
        let seg = common::log_files(dir.path()).remove(0);
        assert_eq!(
            std::fs::metadata(&seg).expect("stat").len(),
            log.stats().bytes_on_disk
        );
    }
    log.close().await.expect("close");
}
