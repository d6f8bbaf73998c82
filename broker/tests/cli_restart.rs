//! `seq 1 1000000 | herald pub t` survives a SIGKILL of the broker and its
//! restart on the same port and data folder: the command finishes with
//! exit 0 and every line is stored exactly once.

mod common;
mod common_cli;

use std::io::Write;
use std::time::Duration;

use common::Child;
use common_cli::{herald, run_at, Proc};

const N: u64 = 1_000_000;
/// Confirms seen before the broker is killed: well into the run.
const KILL_AFTER: usize = 100_000;

#[test]
fn pub_from_stdin_survives_a_broker_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = Child::spawn(dir.path(), &[]);
    let addr = first.addr;

    let mut c = herald(&["pub", "t", "--json", "--server"]);
    c.arg(addr.to_string());
    let mut p = Proc::spawn(c);
    let mut stdin = p.stdin.take().unwrap();
    // Like `seq 1 1000000`: the writer blocks whenever pub stops reading.
    let writer = std::thread::spawn(move || {
        let mut w = std::io::BufWriter::new(&mut stdin);
        for i in 1..=N {
            writeln!(w, "{i}").unwrap();
        }
        w.flush().unwrap();
        drop(w);
        drop(stdin);
    });
    for _ in 0..KILL_AFTER {
        p.line();
    }
    first.kill();
    let second = Child::spawn_on(dir.path(), &addr.to_string(), &[]);

    let (status, _) = p.finish(Duration::from_secs(45));
    writer.join().unwrap();
    assert!(status.success(), "pub exited with {status:?}");

    // Each of 1..=N exactly once: N stored, and all of 1..=N among them.
    let d = run_at(second.addr, &["topics", "describe", "t", "--json"], b"").ok();
    assert_eq!(d.json()[0]["next_offset"], N, "stored count");
    let n = N.to_string();
    let args = [
        "sub",
        "t",
        "--from",
        "earliest",
        "--count",
        &n,
        "--timeout",
        "5s",
    ];
    let out = run_at(second.addr, &args, b"").ok();
    let mut seen = vec![0u32; N as usize + 1];
    for l in out.stdout.lines() {
        let n: usize = l.parse().unwrap_or_else(|_| panic!("odd line {l:?}"));
        seen[n] += 1;
    }
    let missing = (1..=N as usize).filter(|&i| seen[i] == 0).count();
    let twice = (1..=N as usize).filter(|&i| seen[i] > 1).count();
    assert_eq!((missing, twice), (0, 0), "missing / stored twice");
}

/// `herald sub --group g --count N` rides through a SIGKILL and restart of
/// the broker like the client library does: it resumes at the group's
/// position and finishes with every message exactly once.
#[test]
fn sub_rides_through_a_broker_kill_and_restart() {
    const HALF: usize = 500;
    /// Reconnect attempts the sub makes while the broker is down (the old
    /// CLI gave up after 3, about 0.1 s).
    const REFUSED: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let first = Child::spawn(dir.path(), &[]);
    let addr = first.addr;
    let lines = |from: usize| -> Vec<u8> {
        (from..from + HALF)
            .map(|i| format!("{i}\n"))
            .collect::<String>()
            .into_bytes()
    };
    run_at(addr, &["pub", "t"], &lines(1)).ok();

    let total = (2 * HALF).to_string();
    let mut c = herald(&["sub", "t", "--group", "g", "--count", &total, "--server"]);
    c.arg(addr.to_string());
    let p = Proc::spawn(c);
    let mut seen: Vec<String> = (0..HALF).map(|_| p.line()).collect();
    // The sub has printed the first half and waits for more: kill the
    // broker under it. While it is down, something on its port takes each
    // connection and closes it, as a broker still starting would not
    // answer: the sub must go on through at least REFUSED attempts. Then
    // start the broker again on the same port and folder, and publish the
    // second half there.
    first.kill();
    let down = std::net::TcpListener::bind(addr).unwrap();
    let (tx, refused) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..REFUSED {
            drop(down.accept().unwrap());
        }
        // Free the port before saying so: the broker binds it next.
        drop(down);
        let _ = tx.send(());
    });
    refused
        .recv_timeout(common_cli::T)
        .expect("the sub stopped reconnecting while the broker was down");
    let second = Child::spawn_on(dir.path(), &addr.to_string(), &[]);
    run_at(second.addr, &["pub", "t"], &lines(HALF + 1)).ok();

    let (status, rest) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "sub exited with {status:?}");
    seen.extend(rest);
    let want: Vec<String> = (1..=2 * HALF).map(|i| i.to_string()).collect();
    let mut got = seen.clone();
    got.sort_by_key(|s| s.parse::<usize>().unwrap_or(usize::MAX));
    assert_eq!(got, want, "every message exactly once");
}

/// With `--give-up-after`, `sub` and `pub` exit 1 once the broker has been
/// gone that long, saying so.
#[test]
fn sub_and_pub_give_up_after_the_given_time() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Child::spawn(dir.path(), &[]);
    let addr = broker.addr.to_string();
    run_at(broker.addr, &["pub", "t", "first"], b"").ok();
    let sub = Proc::spawn_with_stderr({
        let mut c = herald(&["sub", "t", "--from", "earliest", "--give-up-after", "1s"]);
        c.args(["--server", &addr]);
        c
    });
    assert_eq!(sub.line(), "first");
    // Stdin stays open: pub waits for lines, connected.
    let publ = Proc::spawn_with_stderr({
        let mut c = herald(&["pub", "t", "--json", "--give-up-after", "1s"]);
        c.args(["--server", &addr]);
        c
    });
    let mut stdin = publ.stdin.as_ref().unwrap();
    writeln!(stdin, "second").unwrap();
    assert!(publ.line().contains("\"offset\":1"));
    broker.kill();
    for (what, p) in [("sub", sub), ("pub", publ)] {
        let (status, err) = p.finish_with_stderr(Duration::from_secs(20));
        assert_eq!(status.code(), Some(1), "{what}: {status:?} {err}");
        assert!(
            err.contains(&format!("gave up: no broker at {addr} for 1s")),
            "{what}: {err}"
        );
    }
}
