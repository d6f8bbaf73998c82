//! An idle broker uses no CPU: after a group member leaves with messages
//! still in flight (they go back to pending, due at once), nothing may wake
//! the group over and over. Against the real binary, measured from
//! /proc: the process's CPU time over a quiet second.

mod common_cli;

use std::time::Duration;

use common_cli::{run_at, serve};

/// User plus system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn a_group_whose_member_left_does_not_spin() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, addr) = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    let lines: String = (1..=100).map(|i| format!("{i}\n")).collect();
    run_at(addr, &["pub", "t"], lines.as_bytes()).ok();
    // Takes 50, leaves 50 delivered and unacked (prefetch is larger).
    run_at(
        addr,
        &[
            "sub",
            "t",
            "--group",
            "g",
            "--count",
            "50",
            "--prefetch",
            "100",
        ],
        b"",
    )
    .ok();
    let pid = broker.child.id();
    std::thread::sleep(Duration::from_millis(500)); // let the departure settle (not synchronisation: what follows is a measurement)
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2)); // the quiet period being measured
    let used = cpu_ticks(pid) - before;
    // Ticks are 10 ms: a spinning group took 80 or more in 2 s.
    assert!(used <= 10, "an idle broker used {used} ticks of CPU in 2 s");
}
