//! Damage stays local and loud, against the real binary: a byte flipped in
//! the middle of a segment makes readers of that range fail with a clear
//! Corrupt error naming the topic and offsets (never a silent stall, and the
//! records before it are delivered), other topics keep working, and
//! `herald topics repair` skips the damaged records explicitly, after which
//! readers and groups go past them, also after a restart.
//!
//! Every `herald` command is bounded by `common_cli::T`: a subscriber that
//! hangs fails the test instead of stalling it.

mod common_cli;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common_cli::{run_at, Output, T};
use serde_json::Value;

/// A `herald serve` whose stderr (the log) goes to a file; killed on drop.
struct Broker {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Broker {
    fn start(data: &Path, log: &Path) -> Broker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--fsync",
                "never",
                "--data-dir",
            ])
            .arg(data)
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(File::create(log).expect("log file"))
            .spawn()
            .expect("spawn herald serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { return };
                if let Some(a) = l.strip_prefix("listening on ") {
                    let _ = tx.send(a.trim().to_owned());
                }
            }
        });
        let addr = rx.recv_timeout(T).expect("herald serve printed no address");
        Broker {
            child,
            addr: addr.parse().expect("address"),
            log: log.to_path_buf(),
        }
    }

    /// SIGTERM (a graceful stop flushes every segment) and wait for exit.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + T;
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(
                Instant::now() < deadline,
                "herald did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10)); // polling a child's exit
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn run(&self, args: &[&str]) -> Output {
        run_at(self.addr, args, b"")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes `n` records to `topic`, `per_batch` in flight at a time (so
/// batches hold several records), each confirmed.
fn publish(addr: SocketAddr, topic: &str, n: u64, per_batch: u64) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = herald_client::Client::connect(addr.to_string())
            .await
            .expect("connect");
        let p = client.producer(topic);
        let mut i = 0;
        while i < n {
            let mut pending = Vec::new();
            for _ in 0..per_batch.min(n - i) {
                let payload = format!("{topic}-{i:05}-{}", "x".repeat(40));
                pending.push(p.send(payload).await.expect("send"));
                i += 1;
            }
            for r in pending {
                r.await.expect("confirm");
            }
        }
        client.close().await;
    });
}

/// A batch in a segment file: byte position, length, base offset, records.
#[derive(Debug, Clone, Copy)]
struct Stored {
    pos: usize,
    len: usize,
    base: u64,
    count: u64,
}

fn segments(data: &Path, topic: &str) -> Vec<PathBuf> {
    let dir = data.join("topics").join(topic).join("log");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("log folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

/// The batches of a segment file, by stepping the headers.
fn batches(path: &Path) -> Vec<Stored> {
    let b = std::fs::read(path).expect("segment");
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 56 <= b.len() {
        let len = u32_at(pos + 16) as usize;
        let base = u64::from_le_bytes(b[pos..pos + 8].try_into().expect("8 bytes"));
        out.push(Stored {
            pos,
            len,
            base,
            count: u64::from(u32_at(pos + 28)),
        });
        pos += len;
    }
    out
}

/// A batch of several records in the middle of `stored` (neither the first
/// nor the last), nearest the middle. Batching is up to the client, so the
/// test picks rather than assumes.
fn middle_batch(stored: &[Stored]) -> Stored {
    let mid = stored.len() / 2;
    let mut inner: Vec<&Stored> = stored[1..stored.len() - 1]
        .iter()
        .filter(|b| b.count > 1)
        .collect();
    inner.sort_by_key(|b| (b.pos as i64 - stored[mid].pos as i64).abs());
    **inner
        .first()
        .unwrap_or_else(|| panic!("no batch of several records: {stored:?}"))
}

/// Flips one bit of byte `at` of `path`.
fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).expect("read");
    b[at] ^= 0x01;
    std::fs::write(path, &b).expect("write");
}

/// The offsets a `--json` sub printed.
fn offsets(out: &Output) -> Vec<u64> {
    out.json()
        .iter()
        .map(|v| v["offset"].as_u64().expect("offset"))
        .collect()
}

/// Checks that a sub failed loudly, after printing exactly `printed`, with a
/// Corrupt error naming the topic and the damaged offsets.
fn assert_stopped_at_damage(out: &Output, topic: &str, printed: &[u64], first: u64, end: u64) {
    let out = Output {
        status: out.status,
        stdout: out.stdout.clone(),
        stderr: out.stderr.clone(),
    }
    .failed();
    assert_eq!(offsets(&out), printed, "records before the damage");
    let e = &out.stderr;
    assert!(e.contains("Corrupt"), "{e}");
    assert!(e.contains(&format!("topic \"{topic}\"")), "{e}");
    assert!(e.contains(&format!("offsets {first}..={}", end - 1)), "{e}");
    assert!(e.contains("herald topics repair"), "{e}");
}

fn group(b: &Broker, topic: &str, name: &str) -> Value {
    let out = b.run(&["groups", topic, name, "--json"]).ok();
    out.json().into_iter().next().expect("group line")
}

fn repair(b: &Broker, topic: &str, dry_run: bool) -> Value {
    let mut args = vec!["topics", "repair", topic, "--json"];
    if dry_run {
        args.push("--dry-run");
    }
    b.run(&args).ok().json().into_iter().next().expect("report")
}

#[test]
fn closed_segment_damage_is_loud_local_and_repairable() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let broker = Broker::start(&data, &tmp.path().join("serve-1.log"));
    broker
        .run(&["topics", "create", "t", "--segment-bytes", "4KiB"])
        .ok();
    publish(broker.addr, "t", 240, 4);
    publish(broker.addr, "other", 10, 5);
    broker.stop();

    // A payload byte in the middle of a closed segment: only its CRC shows.
    let segs = segments(&data, "t");
    assert!(segs.len() >= 4, "several closed segments: {segs:?}");
    let hit = middle_batch(&batches(&segs[1]));
    flip(&segs[1], hit.pos + hit.len - 3);
    let (first, end) = (hit.base, hit.base + hit.count);

    let broker = Broker::start(&data, &tmp.path().join("serve-2.log"));
    let before: Vec<u64> = (0..first).collect();
    let out = broker.run(&["sub", "t", "--from", "earliest", "--json"]);
    assert_stopped_at_damage(&out, "t", &before, first, end);

    // Other topics, and publishing to this one, are unaffected.
    let other = broker
        .run(&[
            "sub", "other", "--from", "earliest", "--count", "10", "--json",
        ])
        .ok();
    assert_eq!(offsets(&other), (0..10).collect::<Vec<_>>());
    broker.run(&["pub", "t", "one-more"]).ok();
    let total = 241;

    // A group gets the same, acks what it printed, and does not pretend to
    // move past the damage.
    let out = broker.run(&["sub", "t", "--group", "g", "--from", "earliest", "--json"]);
    assert_stopped_at_damage(&out, "t", &before, first, end);
    let g = group(&broker, "t", "g");
    assert_eq!(g["ack_floor"], first, "{g}");
    assert_eq!(g["lag"], total - first, "{g}");
    // Two readers hit the damage; the broker said so at ERROR once.
    let log = broker.stderr();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains("cannot read topic t"), "{log}");
    assert!(
        errors[0].contains(&format!("offsets {first}..={}", end - 1)),
        "{log}"
    );

    let dry = repair(&broker, "t", true);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["records"], end - first, "{dry}");
    let r = repair(&broker, "t", false);
    assert_eq!(r["dry_run"], false);
    assert_eq!(r["records"], end - first, "{r}");
    let ranges = r["ranges"].as_array().expect("ranges");
    assert_eq!(ranges.len(), 1, "{r}");
    assert_eq!(ranges[0]["first_offset"], first);
    assert_eq!(ranges[0]["end_offset"], end);
    assert_eq!(ranges[0]["position"], hit.pos);
    assert_eq!(ranges[0]["bytes"], hit.len);

    let kept: Vec<u64> = (0..total).filter(|o| *o < first || *o >= end).collect();
    let n = kept.len().to_string();
    let out = broker
        .run(&["sub", "t", "--from", "earliest", "--count", &n, "--json"])
        .ok();
    assert_eq!(offsets(&out), kept, "everything but the dropped records");

    // The group resumes past the dropped offsets and its floor follows.
    let rest = (total - end).to_string();
    let out = broker
        .run(&["sub", "t", "--group", "g", "--count", &rest, "--json"])
        .ok();
    assert_eq!(offsets(&out), (end..total).collect::<Vec<_>>());
    let g = group(&broker, "t", "g");
    assert_eq!(g["ack_floor"], total, "{g}");
    assert_eq!(g["lag"], 0, "{g}");
    broker.stop();

    // The accepted gap survives a restart; nothing new to repair.
    let broker = Broker::start(&data, &tmp.path().join("serve-3.log"));
    let out = broker
        .run(&["sub", "t", "--from", "earliest", "--count", &n, "--json"])
        .ok();
    assert_eq!(offsets(&out), kept, "after a restart");
    assert_eq!(repair(&broker, "t", false)["records"], 0);
    broker.stop();
}

#[test]
fn active_segment_damage_keeps_what_follows_and_is_logged_at_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let broker = Broker::start(&data, &tmp.path().join("serve-1.log"));
    publish(broker.addr, "a", 40, 4);
    broker.stop();

    let segs = segments(&data, "a");
    assert_eq!(segs.len(), 1, "everything in the active segment");
    let hit = middle_batch(&batches(&segs[0]));
    flip(&segs[0], hit.pos + hit.len - 3);
    let (first, end) = (hit.base, hit.base + hit.count);

    let broker = Broker::start(&data, &tmp.path().join("serve-2.log"));
    let log = broker.stderr();
    assert!(
        log.contains("ERROR") && log.contains("topic a has damaged data"),
        "{log}"
    );
    assert!(
        log.contains(&format!("offsets {first}..={}", end - 1)),
        "{log}"
    );
    assert!(log.contains(&segs[0].display().to_string()), "{log}");
    assert!(
        !log.contains("truncating"),
        "confirmed data is not cut: {log}"
    );
    let d = broker.run(&["topics", "describe", "a", "--json"]).ok();
    assert_eq!(
        d.json()[0]["next_offset"],
        40,
        "nothing after the damage dropped"
    );

    let before: Vec<u64> = (0..first).collect();
    let out = broker.run(&["sub", "a", "--from", "earliest", "--json"]);
    assert_stopped_at_damage(&out, "a", &before, first, end);

    let r = repair(&broker, "a", false);
    assert_eq!(r["records"], end - first, "{r}");
    let kept: Vec<u64> = (0..40).filter(|o| *o < first || *o >= end).collect();
    let n = kept.len().to_string();
    let out = broker
        .run(&["sub", "a", "--from", "earliest", "--count", &n, "--json"])
        .ok();
    assert_eq!(offsets(&out), kept);
    broker.stop();
}

#[test]
fn framing_damage_in_a_closed_segment_no_longer_takes_the_topic_down() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let broker = Broker::start(&data, &tmp.path().join("serve-1.log"));
    broker
        .run(&["topics", "create", "f", "--segment-bytes", "4KiB"])
        .ok();
    publish(broker.addr, "f", 120, 4);
    broker.stop();

    // The magic byte of a batch in the middle of the first segment.
    let segs = segments(&data, "f");
    assert!(segs.len() >= 2, "{segs:?}");
    let hit = middle_batch(&batches(&segs[0]));
    flip(&segs[0], hit.pos + 24);
    let (first, end) = (hit.base, hit.base + hit.count);

    let broker = Broker::start(&data, &tmp.path().join("serve-2.log"));
    let log = broker.stderr();
    assert!(log.contains("topic f has damaged data"), "{log}");
    let d = broker.run(&["topics", "describe", "f", "--json"]).ok();
    assert_eq!(d.json()[0]["next_offset"], 120, "the topic is available");
    let before: Vec<u64> = (0..first).collect();
    let out = broker.run(&["sub", "f", "--from", "earliest", "--json"]);
    assert_stopped_at_damage(&out, "f", &before, first, end);
    assert_eq!(repair(&broker, "f", false)["records"], end - first);
    let n = (120 - (end - first)).to_string();
    let out = broker
        .run(&["sub", "f", "--from", "earliest", "--count", &n, "--json"])
        .ok();
    assert_eq!(offsets(&out).len() as u64, 120 - (end - first));
    broker.stop();
}

#[test]
fn repair_opens_a_topic_that_could_not_be_opened_at_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let broker = Broker::start(&data, &tmp.path().join("serve-1.log"));
    broker
        .run(&["topics", "create", "o", "--segment-bytes", "4KiB"])
        .ok();
    publish(broker.addr, "o", 120, 4);
    broker.stop();

    // A segment file that claims to start one offset early: overlapping
    // segments cannot be explained, so the topic stays closed.
    let segs = segments(&data, "o");
    assert!(segs.len() >= 3, "{segs:?}");
    let base: u64 = segs[1]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("base offset");
    let wrong = segs[1].with_file_name(format!("{:020}.log", base - 1));
    std::fs::rename(&segs[1], &wrong).expect("rename");
    let broker = Broker::start(&data, &tmp.path().join("serve-2.log"));
    let d = broker.run(&["topics", "describe", "o"]).failed();
    assert!(d.stderr.contains("TopicUnavailable"), "{}", d.stderr);

    // The operator puts the file back; repair opens the topic.
    std::fs::rename(&wrong, &segs[1]).expect("rename back");
    let r = repair(&broker, "o", false);
    assert_eq!(r["records"], 0, "{r}");
    let out = broker
        .run(&["sub", "o", "--from", "earliest", "--count", "120", "--json"])
        .ok();
    assert_eq!(offsets(&out), (0..120).collect::<Vec<_>>());
    broker.stop();
}
