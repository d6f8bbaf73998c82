//! Crash consistency: torn and corrupted tails, interior corruption, and a
//! real process killed with SIGKILL while appending.

#[path = "common_storage/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{batch, config, copy_dir, log_files, read_all, tmpdir};
use herald_broker::storage::{FsyncPolicy, Log, LogConfig, StorageError};

/// (base offset, payloads) of each batch written, and each batch's byte
/// range in the segment.
struct Written {
    records: Vec<(u64, Bytes)>,
    batch_ranges: Vec<(usize, usize, u64, u32)>,
}

async fn write_sample(dir: &Path) -> Written {
    let log = Log::open(dir, config(FsyncPolicy::Never)).expect("open");
    let mut ranges = Vec::new();
    let mut pos = 0;
    for i in 0..6u32 {
        let payloads: Vec<Vec<u8>> = (0..=i % 3)
            .map(|j| format!("p{i}-{j}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
        let b = batch(&refs);
        let len = b.len_bytes();
        let out = log.append(b).await.expect("append");
        ranges.push((pos, pos + len, out.base_offset, out.count));
        pos += len;
    }
    let records = read_all(&log, 0);
    log.close().await.expect("close");
    Written {
        records,
        batch_ranges: ranges,
    }
}

/// Opens `dir` and checks it holds exactly the first `keep` batches.
async fn expect_prefix(dir: &Path, w: &Written, keep: usize, what: &str) {
    let next = w.batch_ranges[..keep]
        .last()
        .map_or(0, |&(_, _, base, n)| base + u64::from(n));
    let log = Log::open(dir, config(FsyncPolicy::Never)).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(log.next_offset(), next, "{what}");
    let want: Vec<_> = w.records.iter().filter(|r| r.0 < next).cloned().collect();
    assert_eq!(read_all(&log, 0), want, "{what}");
    let seg = &log_files(dir)[0];
    let len = std::fs::metadata(seg).expect("stat").len() as usize;
    let end = w.batch_ranges[..keep].last().map_or(0, |r| r.1);
    assert_eq!(len, end, "{what}: tail not truncated to the valid prefix");
    let out = log
        .append(batch(&[b"after"]))
        .await
        .expect("append after recovery");
    assert_eq!(out.base_offset, next, "{what}");
    log.close().await.expect("close");
}

#[tokio::test]
async fn torn_and_flipped_tails_recover_the_longest_valid_prefix() {
    let src = tmpdir();
    let w = write_sample(src.path()).await;
    let n = w.batch_ranges.len();
    let seg_name = log_files(src.path())[0]
        .file_name()
        .map(|f| f.to_owned())
        .expect("name");
    let region = w.batch_ranges[n - 2].0;
    let end = w.batch_ranges[n - 1].1;
    for cut in region..=end {
        let work = tmpdir();
        copy_dir(src.path(), work.path());
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(work.path().join(&seg_name))
            .expect("open segment");
        f.set_len(cut as u64).expect("truncate");
        let keep = w.batch_ranges.iter().filter(|r| r.1 <= cut).count();
        expect_prefix(work.path(), &w, keep, &format!("cut at {cut}")).await;
    }
    let original = std::fs::read(src.path().join(&seg_name)).expect("read");
    for at in region..end {
        let work = tmpdir();
        copy_dir(src.path(), work.path());
        let mut bytes = original.clone();
        bytes[at] ^= 0x5a;
        std::fs::write(work.path().join(&seg_name), &bytes).expect("write");
        let hit = w
            .batch_ranges
            .iter()
            .position(|r| r.0 <= at && at < r.1)
            .expect("in a batch");
        // append_time (bytes 8..16) is the one field neither the CRC nor the
        // offset check covers: that batch stays.
        let in_time = (8..16).contains(&(at - w.batch_ranges[hit].0));
        let what = format!("flip at {at}");
        if in_time {
            expect_prefix(work.path(), &w, n, &what).await;
        } else if hit == n - 1 {
            // Nothing valid after it: a torn tail, cut.
            expect_prefix(work.path(), &w, hit, &what).await;
        } else {
            // A valid batch follows: interior damage, kept and loud.
            expect_interior_damage(work.path(), &w, hit, &what).await;
        }
    }
}

/// Opens `dir`, whose batch `bad` is damaged and followed by valid ones:
/// nothing is truncated, reads stop loudly at the damage, and a repair
/// drops exactly that batch.
async fn expect_interior_damage(dir: &Path, w: &Written, bad: usize, what: &str) {
    let (start, stop, base, count) = w.batch_ranges[bad];
    let end = base + u64::from(count);
    let last = w.batch_ranges[w.batch_ranges.len() - 1];
    let next = last.2 + u64::from(last.3);
    let seg = log_files(dir)[0].clone();
    let len_before = std::fs::metadata(&seg).expect("stat").len();
    let log = Log::open(dir, config(FsyncPolicy::Never)).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(log.next_offset(), next, "{what}: later batches kept");
    assert_eq!(
        std::fs::metadata(&seg).expect("stat").len(),
        len_before,
        "{what}: nothing cut"
    );
    let ranges = log.damaged_ranges();
    assert_eq!(ranges.len(), 1, "{what}: {ranges:?}");
    assert_eq!(
        (
            ranges[0].position,
            ranges[0].bytes,
            ranges[0].first_offset,
            ranges[0].end_offset
        ),
        (start as u64, (stop - start) as u64, base, end),
        "{what}"
    );
    let before: Vec<_> = w.records.iter().filter(|r| r.0 < base).cloned().collect();
    assert_eq!(
        read_until_error(&log, 0),
        (before, Some((base, end))),
        "{what}"
    );
    let after: Vec<_> = w.records.iter().filter(|r| r.0 >= end).cloned().collect();
    assert_eq!(
        read_all(&log, end),
        after,
        "{what}: batches after the damage"
    );
    let dropped = log.repair(false).await.expect("repair");
    assert_eq!(dropped.len(), 1, "{what}");
    let kept: Vec<_> = w
        .records
        .iter()
        .filter(|r| r.0 < base || r.0 >= end)
        .cloned()
        .collect();
    assert_eq!(read_all(&log, 0), kept, "{what}: after repair");
    log.close().await.expect("close");
    let log = Log::open(dir, config(FsyncPolicy::Never)).expect("reopen after repair");
    assert_eq!(read_all(&log, 0), kept, "{what}: after repair and reopen");
    log.close().await.expect("close");
}

/// (offset, payload) of each record read.
type Records = Vec<(u64, Bytes)>;

/// Records from `from` until a read fails: what was read, and the offsets
/// the `Corrupt` error named.
fn read_until_error(log: &Log, from: u64) -> (Records, Option<(u64, u64)>) {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let batches = match log.read(next, 64 * 1024, u32::MAX) {
            Ok(b) => b,
            Err(StorageError::Corrupt { offsets, .. }) => return (out, offsets),
            Err(e) => panic!("read: {e}"),
        };
        if batches.is_empty() {
            return (out, None);
        }
        for b in batches {
            for r in b.records() {
                if r.offset >= next {
                    out.push((r.offset, r.payload.clone()));
                }
            }
            next = b.last_offset() + 1;
        }
    }
}

#[tokio::test]
async fn interior_corruption_of_a_closed_segment_is_loud_and_repairable() {
    let src = tmpdir();
    let cfg = LogConfig {
        segment_bytes: 600,
        ..config(FsyncPolicy::Never)
    };
    let all = {
        let log = Log::open(src.path(), cfg.clone()).expect("open");
        for i in 0..30u32 {
            let p = format!("payload-{i:04}");
            log.append(batch(&[p.as_bytes()])).await.expect("append");
        }
        assert!(log.stats().segments >= 3);
        let all = read_all(&log, 0);
        log.close().await.expect("close");
        all
    };
    let first = log_files(src.path())[0].clone();
    let bytes = std::fs::read(&first).expect("read");
    let first_len = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]) as usize;
    // Header fields of the second batch (base_offset, batch_len, magic,
    // count), then its last payload byte (caught only by the CRC).
    let flips = [0usize, 16, 17, 24, 28, first_len - 1];
    for field in flips {
        let what = format!("byte {field} of batch 1");
        let work = tmpdir();
        copy_dir(src.path(), work.path());
        let target = work.path().join(first.file_name().expect("name"));
        let mut b = bytes.clone();
        b[first_len + field] ^= 0x01;
        std::fs::write(&target, &b).expect("write");
        let log = Log::open(work.path(), cfg.clone())
            .unwrap_or_else(|e| panic!("{what}: damage must not fail the open: {e}"));
        assert_eq!(log.next_offset(), 30, "{what}");
        assert_eq!(log.read(0, 1, 1).expect("batch 0 is intact").len(), 1);
        match log.read(1, 1 << 20, u32::MAX) {
            Err(StorageError::Corrupt {
                path,
                position,
                offsets,
                ..
            }) => {
                assert_eq!(path, target, "{what}");
                assert!(position >= first_len as u64, "{what}: {position}");
                assert_eq!(offsets.map(|o| o.0), Some(1), "{what}");
            }
            other => panic!("{what}: expected Corrupt from read, got {other:?}"),
        }
        // Reads past the damage go on; the last segments are untouched.
        assert_eq!(read_all(&log, 20), all[20..].to_vec(), "{what}");
        let dry = log.repair(true).await.expect("dry run");
        assert!(!dry.is_empty(), "{what}");
        assert_eq!(
            log.repair(true).await.expect("dry run"),
            dry,
            "{what}: dry runs change nothing"
        );
        let dropped = log.repair(false).await.expect("repair");
        assert_eq!(dropped, dry, "{what}");
        let lost: u64 = dropped.iter().map(|r| r.records()).sum();
        assert_eq!(lost, 1, "{what}: exactly the damaged batch: {dropped:?}");
        assert_eq!(dropped[0].first_offset, 1, "{what}");
        let kept: Vec<_> = all.iter().filter(|r| r.0 != 1).cloned().collect();
        assert_eq!(read_all(&log, 0), kept, "{what}");
        assert!(
            log.repair(false).await.expect("again").is_empty(),
            "{what}: nothing new"
        );
        log.close().await.expect("close");
        let log = Log::open(work.path(), cfg.clone()).expect("reopen after repair");
        assert_eq!(read_all(&log, 0), kept, "{what}: after reopen");
        assert!(log.damaged_ranges().iter().all(|r| r.accepted), "{what}");
        log.close().await.expect("close");
    }
}

#[tokio::test]
async fn a_missing_segment_file_is_a_damaged_range_not_a_silent_gap() {
    let dir = tmpdir();
    let cfg = LogConfig {
        segment_bytes: 600,
        ..config(FsyncPolicy::Never)
    };
    let all = {
        let log = Log::open(dir.path(), cfg.clone()).expect("open");
        for i in 0..30u32 {
            let p = format!("payload-{i:04}");
            log.append(batch(&[p.as_bytes()])).await.expect("append");
        }
        let all = read_all(&log, 0);
        log.close().await.expect("close");
        all
    };
    let files = log_files(dir.path());
    assert!(files.len() >= 3);
    let base = |p: &Path| -> u64 {
        let name = p.file_stem().and_then(|n| n.to_str()).expect("name");
        name.parse().expect("base offset")
    };
    let (lost_from, lost_to) = (base(&files[1]), base(&files[2]));
    std::fs::remove_file(&files[1]).expect("remove");
    let log = Log::open(dir.path(), cfg.clone()).expect("a missing file must not fail the open");
    let ranges = log.damaged_ranges();
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    assert_eq!(
        (ranges[0].first_offset, ranges[0].end_offset),
        (lost_from, lost_to)
    );
    assert_eq!(ranges[0].segment, files[0]);
    match log.read(lost_from, 1 << 20, u32::MAX) {
        Err(StorageError::Corrupt { offsets, .. }) => {
            assert_eq!(offsets, Some((lost_from, lost_to)))
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let dropped = log.repair(false).await.expect("repair");
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].records(), lost_to - lost_from);
    let kept: Vec<_> = all
        .iter()
        .filter(|r| r.0 < lost_from || r.0 >= lost_to)
        .cloned()
        .collect();
    assert_eq!(read_all(&log, 0), kept);
    log.close().await.expect("close");
    let log = Log::open(dir.path(), cfg).expect("reopen");
    assert_eq!(
        read_all(&log, 0),
        kept,
        "the accepted gap survives a reopen"
    );
    log.close().await.expect("close");
}

const CHILD_DIR: &str = "HERALD_CRASH_CHILD_DIR";
const CHILD_ROUND: &str = "HERALD_CRASH_ROUND";

fn child_config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 * 1024,
        ..config(FsyncPolicy::Always)
    }
}

/// The child side of `sigkill_loses_no_confirmed_append`: a no-op unless
/// started by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let round = std::env::var(CHILD_ROUND).unwrap_or_default();
    let log = Log::open(&dir, child_config()).expect("child open");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for t in 0..4 {
        let log = log.clone();
        let round = round.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                // Every 50th append is big enough for a direct write, so
                // kills land on both write paths.
                let pad = if i % 50 == 7 { 70_000 } else { i % 200 };
                let payload = format!("r{round}-t{t}-{i}-{}", "x".repeat(pad as usize));
                let out = log
                    .append(batch(&[payload.as_bytes()]))
                    .await
                    .expect("append");
                println!("CONFIRMED {} {payload}", out.base_offset);
                i += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[test]
fn sigkill_loses_no_confirmed_append() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    let dir = tempfile::TempDir::new().expect("tmp");
    let exe = std::env::current_exe().expect("test binary");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut confirmed: BTreeMap<u64, String> = BTreeMap::new();
    for round in 0..5u32 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                // A line cut by the kill has no newline: not a confirmation.
                if line.ends_with('\n') && tx.send(line.trim_end().to_owned()).is_err() {
                    break;
                }
                line.clear();
            }
        });
        let kill_after = 20 + (rand::random::<u32>() % 400) as usize;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut lines = Vec::new();
        while lines.len() < kill_after && Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.starts_with("CONFIRMED ") => lines.push(l),
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        reader.join().expect("reader");
        lines.extend(rx.try_iter());
        let mut new = 0;
        for l in &lines {
            let Some(rest) = l.strip_prefix("CONFIRMED ") else {
                continue;
            };
            let (off, payload) = rest.split_once(' ').expect("line format");
            let off: u64 = off.parse().expect("offset");
            assert!(
                confirmed.insert(off, payload.to_owned()).is_none(),
                "offset {off} confirmed twice"
            );
            new += 1;
        }
        assert!(
            new >= 20,
            "round {round}: child confirmed only {new} appends"
        );
        eprintln!(
            "round {round}: {new} confirmed before SIGKILL, {} in total",
            confirmed.len()
        );
        rt.block_on(async {
            let log = Log::open(dir.path(), child_config()).expect("reopen after kill");
            let all: BTreeMap<u64, Bytes> = read_all(&log, 0).into_iter().collect();
            for (off, payload) in &confirmed {
                let got = all
                    .get(off)
                    .unwrap_or_else(|| panic!("round {round}: offset {off} lost"));
                assert_eq!(&got[..], payload.as_bytes(), "round {round}: offset {off}");
            }
            log.close().await.expect("close");
        });
    }
}
