//! Typos on the command line get a clear error and create nothing: a
//! subscriber to a misspelled topic exits instead of waiting forever, a
//! reset of a misspelled group or to a position that is not one is
//! refused. Auto-creation on subscribe is a broker setting (flag, env,
//! TOML), off by default, and `--no-auto-create` covers every path.

mod common;
mod common_cli;

use std::net::SocketAddr;

use common::Child;
use common_cli::{run, run_at, serve};

fn topic_names(addr: SocketAddr) -> Vec<String> {
    run_at(addr, &["topics", "list", "--json"], b"")
        .ok()
        .json()
        .into_iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

fn group_names(addr: SocketAddr, topic: &str) -> Vec<String> {
    run_at(addr, &["groups", topic, "--json"], b"")
        .ok()
        .json()
        .into_iter()
        .map(|g| g["name"].as_str().unwrap().to_owned())
        .collect()
}

/// One line on stderr, a failure, and `want` in it.
fn refused(addr: SocketAddr, args: &[&str], want: &str) {
    let out = run_at(addr, args, b"").failed();
    assert!(out.stderr.contains(want), "{args:?}: {}", out.stderr);
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
}

#[test]
fn typos_are_refused_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = Child::spawn(dir.path(), &["--fsync", "never"]);
    run_at(b.addr, &["pub", "orders", "a", "b", "c"], b"").ok();
    run_at(
        b.addr,
        &["sub", "orders", "--group", "billing", "--count", "1"],
        b"",
    )
    .ok();

    // No --timeout: before, this created `ordres` and waited forever.
    refused(b.addr, &["sub", "ordres"], "unknown topic");
    refused(
        b.addr,
        &["sub", "ordres", "--group", "billing"],
        "unknown topic",
    );
    assert_eq!(topic_names(b.addr), ["orders"]);

    refused(
        b.addr,
        &["groups", "orders", "biling", "--reset-to", "earliest"],
        "no group",
    );
    assert_eq!(group_names(b.addr, "orders"), ["billing"]);

    let out = run_at(
        b.addr,
        &["groups", "orders", "billing", "--reset-to", "resume"],
        b"",
    )
    .failed();
    assert!(
        out.stderr.contains("resume is not a position"),
        "{}",
        out.stderr
    );

    refused(
        b.addr,
        &["groups", "orders", "billing", "--reset-to", "999999"],
        "0 to 3",
    );
    refused(b.addr, &["sub", "orders", "--from", "999999"], "0 to 3");
    let g = run_at(b.addr, &["groups", "orders", "billing", "--json"], b"")
        .ok()
        .json();
    assert_eq!(g[0]["ack_floor"], 1, "the refused reset changed nothing");
}

#[test]
fn auto_create_on_subscribe_is_a_setting_and_no_auto_create_wins() {
    let dir = tempfile::tempdir().unwrap();
    let sub = ["sub", "fresh", "--timeout", "100ms"];
    let data = dir.path().join("flag");
    let (p, addr) = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--auto-create-on-subscribe",
        ],
        &[],
    );
    run_at(addr, &sub, b"").ok();
    assert_eq!(topic_names(addr), ["fresh"]);
    p.kill();

    let data = dir.path().join("env");
    let (p, addr) = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[("HERALD_AUTO_CREATE_ON_SUBSCRIBE", "true")],
    );
    run_at(addr, &sub, b"").ok();
    assert_eq!(topic_names(addr), ["fresh"]);
    p.kill();

    let file = dir.path().join("herald.toml");
    let data = dir.path().join("toml");
    std::fs::write(
        &file,
        format!("data-dir = {data:?}\nauto-create-on-subscribe = true\n"),
    )
    .unwrap();
    let (p, addr) = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            file.to_str().unwrap(),
        ],
        &[],
    );
    run_at(addr, &sub, b"").ok();
    assert_eq!(topic_names(addr), ["fresh"]);
    p.kill();

    // --no-auto-create: neither publish nor subscribe creates a topic.
    let data = dir.path().join("none");
    let (p, addr) = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--no-auto-create",
        ],
        &[],
    );
    refused(addr, &["pub", "fresh", "x"], "unknown topic");
    refused(addr, &sub, "unknown topic");
    assert!(topic_names(addr).is_empty());
    p.kill();
    let out = run(&[
        "serve",
        "--no-auto-create",
        "--auto-create-on-subscribe",
        "--data-dir",
        dir.path().join("both").to_str().unwrap(),
    ])
    .failed();
    assert!(out.stderr.contains("no-auto-create"), "{}", out.stderr);
}
