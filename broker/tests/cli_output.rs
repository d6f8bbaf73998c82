//! What the `herald` binary prints, against the real binary: errors with
//! each cause once, a closed stdout ending any command quietly, logs
//! without colour codes when not on a terminal, a malformed `--server`
//! named as such, counts in the right number, and the documented size
//! limits (segment, record) holding at their boundaries.

mod common;
mod common_cli;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::Child;
use common_cli::{herald, run, run_at, run_cmd, T};

fn broker() -> (Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let b = Child::spawn(dir.path(), &["--fsync", "never"]);
    (b, dir)
}

#[test]
fn startup_errors_print_their_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let running = Child::spawn(&dir.path().join("a"), &[]);
    let busy = run(&[
        "serve",
        "--listen",
        &running.addr.to_string(),
        "--data-dir",
        dir.path().join("b").to_str().unwrap(),
    ])
    .failed();
    let not_a_folder = dir.path().join("file");
    std::fs::write(&not_a_folder, b"x").unwrap();
    let file = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        not_a_folder.join("data").to_str().unwrap(),
    ])
    .failed();
    for out in [busy, file] {
        let err = out.stderr.trim_end();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(err.matches("os error").count(), 1, "{err}");
    }
}

/// `cmd` with its stdout a pipe nobody reads any more (`| head -0`).
fn with_closed_stdout(mut cmd: Command) -> (std::process::ExitStatus, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald");
    drop(child.stdout.take());
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(err), &mut s);
        let _ = tx.send(s);
    });
    let Ok(stderr) = rx.recv_timeout(T) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} did not finish");
    };
    (child.wait().unwrap(), stderr)
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let (b, _d) = broker();
    let addr = b.addr.to_string();
    run_at(b.addr, &["pub", "t", "1", "2", "3"], b"").ok();
    run_at(b.addr, &["sub", "t", "--group", "g", "--count", "1"], b"").ok();
    for args in [
        &["topics", "list"][..],
        &["topics", "list", "--json"],
        &["topics", "describe", "t"],
        &["topics", "create", "u"],
        &["groups", "t"],
        &["groups", "t", "--json"],
        &["sub", "t", "--from", "earliest", "--count", "3"],
        &["sub", "t", "--from", "earliest", "--count", "3", "--json"],
        &["pub", "t", "x", "--json"],
    ] {
        let mut c = herald(args);
        c.args(["--server", &addr]);
        let (status, err) = with_closed_stdout(c);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(status.code(), Some(141), "{args:?}: {err}");
        assert_eq!(err, "", "{args:?}");
    }
    let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
    c.args([
        "bench",
        "pub",
        "--embedded",
        "--count",
        "100",
        "--fsync",
        "never",
    ]);
    let (status, err) = with_closed_stdout(c);
    assert!(!err.contains("panicked"), "bench: {err}");
    assert_eq!(status.code(), Some(141), "bench: {err}");
}

/// A `herald serve` with stderr piped and `HERALD_LOG=info`; returns the
/// child and its stderr up to the "broker started" line.
fn serve_logging(dir: &std::path::Path, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env("HERALD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald");
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for l in BufReader::new(err).lines() {
            let Ok(l) = l else { return };
            seen.push_str(&l);
            seen.push('\n');
            if l.contains("broker started") {
                let _ = tx.send(seen.clone());
            }
        }
    });
    let b = Child {
        child,
        addr: "127.0.0.1:0".parse().unwrap(),
    };
    let log = rx.recv_timeout(T).expect("no \"broker started\" log line");
    (b, log)
}

#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let (b, log) = serve_logging(dir.path(), &["--log-format", format]);
        assert!(!log.contains('\x1b'), "{format}: {log:?}");
        b.kill();
    }
}

/// The line `listening on` cannot be printed when stdout is closed; the
/// broker serves anyway.
#[test]
fn serve_with_a_closed_stdout_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Child::command(dir.path(), "127.0.0.1:0", &[]);
    cmd.env("HERALD_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn herald");
    drop(child.stdout.take());
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines() {
            let Ok(l) = l else { return };
            let _ = tx.send(l);
        }
    });
    let b = Child {
        child,
        addr: "127.0.0.1:0".parse().unwrap(),
    };
    let started = loop {
        let l = rx.recv_timeout(T).expect("broker did not start");
        if l.contains("broker started") {
            break l;
        }
    };
    let addr: SocketAddr = started
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr=")?.parse().ok())
        .unwrap_or_else(|| panic!("no address in {started:?}"));
    run_at(addr, &["pub", "t", "x"], b"").ok();
    let mut b = b;
    assert!(
        b.child.try_wait().unwrap().is_none(),
        "serve exited after failing to print its address"
    );
    b.kill();
}

#[test]
fn a_malformed_server_address_is_named_as_such() {
    for bad in ["7400", "host:", ":x", "localhost:99999"] {
        let out = run(&["topics", "list", "--server", bad]).failed();
        assert!(
            out.stderr.contains("expected HOST:PORT") && !out.stderr.contains("herald serve"),
            "{bad}: {}",
            out.stderr
        );
        let mut c = herald(&["sub", "t"]);
        c.env("HERALD_SERVER", bad);
        let out = run_cmd(c, b"").failed();
        assert!(
            out.stderr.contains("expected HOST:PORT"),
            "{bad}: {}",
            out.stderr
        );
    }
}

#[test]
fn counts_agree_in_number() {
    let (b, _d) = broker();
    let out = run_at(b.addr, &["pub", "t", "one"], b"").ok();
    assert_eq!(out.stderr, "published 1 message to t\n");
    let out = run_at(b.addr, &["pub", "t", "two", "three"], b"").ok();
    assert_eq!(out.stderr, "published 2 messages to t\n");
}

/// docs/storage.md: a segment is at most 1 GiB (the log clamps larger
/// settings), so a larger setting is refused instead of stored and ignored.
#[test]
fn segment_size_is_refused_above_what_the_log_uses() {
    let (b, _d) = broker();
    let out = run_at(
        b.addr,
        &[
            "topics",
            "create",
            "big",
            "--segment-bytes",
            "1GiB",
            "--json",
        ],
        b"",
    )
    .ok();
    assert_eq!(out.json()[0]["segment_bytes"], 1u64 << 30);
    for size in ["1073741825", "2GiB", "4GiB", "4095"] {
        let out = run_at(
            b.addr,
            &["topics", "create", "s", "--segment-bytes", size],
            b"",
        )
        .failed();
        assert!(
            out.stderr
                .contains("must be between 4096 and 1073741824 bytes"),
            "{size}: {}",
            out.stderr
        );
    }
    run_at(
        b.addr,
        &["topics", "create", "small", "--segment-bytes", "4096"],
        b"",
    )
    .ok();
}

/// README and docs/client.md: with the client library's default batch
/// limit (1 MiB), a record of key, headers and payload may take 1 MiB
/// minus 74 bytes of framing (56 of batch header, 18 of record header).
#[test]
fn the_documented_record_size_limit_holds() {
    let (b, _d) = broker();
    const MAX_PAYLOAD: usize = (1 << 20) - 74;
    let mut line = vec![b'x'; MAX_PAYLOAD];
    line.push(b'\n');
    run_at(b.addr, &["pub", "t"], &line).ok();
    let mut line = vec![b'x'; MAX_PAYLOAD + 1];
    line.push(b'\n');
    let out = run_at(b.addr, &["pub", "t"], &line).failed();
    assert!(
        out.stderr
            .contains("record of 1048521 bytes does not fit a batch of at most 1048576 bytes"),
        "{}",
        out.stderr
    );
}
