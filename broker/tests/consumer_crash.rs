//! A consumer process (`herald sub --group`) SIGKILLed and restarted while it
//! works through a backlog: at least once across processes. Every message is
//! seen, and what is seen twice is bounded by what was delivered but whose
//! ack was not yet persisted when the process died.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use herald_protocol::*;

const N: u64 = 20_000;
const PREFETCH: u64 = 100;
const KILLS: usize = 3;
/// Redeliveries one kill may cause: the prefetch window (delivered, not
/// acked) plus acks received but not yet persisted by the group (its state
/// is group-committed every few milliseconds) at ~tens of thousands of
/// messages/s (146 in all were seen in a run on the development machine).
const BOUND_PER_KILL: u64 = PREFETCH + 500;

/// Starts `herald sub` and returns it with a channel of the offsets it prints.
fn consumer(
    addr: std::net::SocketAddr,
    extra: &[&str],
) -> (std::process::Child, mpsc::Receiver<u64>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "sub",
            "t",
            "--group",
            "g",
            "--json",
            "--prefetch",
            &PREFETCH.to_string(),
            "--server",
        ])
        .arg(addr.to_string())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn herald sub");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(o) = v["offset"].as_u64() {
                if tx.send(o).is_err() {
                    break;
                }
            }
        }
    });
    (child, rx)
}

/// Counts every offset a dead consumer printed. The reader thread ends when
/// the pipe does, so the channel disconnects once every line was read;
/// `try_recv` alone would miss lines still in the pipe, and those were acked.
fn drain(rx: &mpsc::Receiver<u64>, seen: &mut HashMap<u64, u32>) {
    loop {
        match rx.recv_timeout(T) {
            Ok(o) => *seen.entry(o).or_default() += 1,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("a dead consumer's output never ended"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_consumer_process_resumes_at_least_once_within_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Child::spawn(dir.path(), &[]);
    let mut p = Raw::connect(broker.addr).await;
    let payloads: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    for chunk in payloads.chunks(500) {
        let refs: Vec<&[u8]> = chunk.iter().map(|s| s.as_bytes()).collect();
        p.publish("t", &refs).await;
    }
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..KILLS {
        let (mut child, rx) = consumer(broker.addr, &[]);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let take = 1_000 + seed % 4_000;
        for _ in 0..take {
            match rx.recv_timeout(T) {
                Ok(o) => *seen.entry(o).or_default() += 1,
                Err(_) => break,
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        // What it printed before dying counts as seen: lines may still sit
        // in the pipe, so read until the reader thread reaches its end.
        drain(&rx, &mut seen);
    }
    // A last run drains the rest and exits after a quiet second.
    let (mut child, rx) = consumer(broker.addr, &["--timeout", "1s"]);
    let status = tokio::task::spawn_blocking(move || {
        let s = child.wait();
        (s, rx)
    });
    let (status, rx) = tokio::time::timeout(Duration::from_secs(60), status)
        .await
        .unwrap()
        .unwrap();
    assert!(status.unwrap().success());
    drain(&rx, &mut seen);
    for o in 0..N {
        assert!(seen.contains_key(&o), "offset {o} never consumed");
    }
    let twice: u64 = seen.values().map(|c| u64::from(c - 1)).sum();
    eprintln!(
        "{twice} redeliveries across {KILLS} kills (bound {})",
        BOUND_PER_KILL * KILLS as u64
    );
    assert!(
        twice <= BOUND_PER_KILL * KILLS as u64,
        "{twice} redeliveries"
    );
    // The group's state is whole: nothing left, nothing in flight.
    let mut c = Raw::connect(broker.addr).await;
    match c
        .request(Message::ListGroups(TopicName { name: "t".into() }))
        .await
    {
        Message::GroupList(l) => {
            assert_eq!(l.groups[0].lag, 0);
            assert_eq!(l.groups[0].ack_floor, N);
        }
        m => panic!("{m:?}"),
    }
}
