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
