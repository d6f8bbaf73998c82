//! The `herald` command line against the real binary and a real broker:
//! each test starts `herald serve` on port 0 in a temporary folder and runs
//! the client subcommands as a user's script would, checking their output
//! and exit codes.

mod common;
mod common_cli;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Child;
use common_cli::{herald, http_listening, run, run_at, serve, Proc, T};
use serde_json::Value;

/// A broker in a fresh folder; the folder lives as long as the broker.
fn broker() -> (Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let b = Child::spawn(dir.path(), &["--fsync", "never"]);
    (b, dir)
}

fn describe(addr: SocketAddr, topic: &str) -> Value {
    let out = run_at(addr, &["topics", "describe", topic, "--json"], b"").ok();
    out.json().remove(0)
}

fn sub_lines(addr: SocketAddr, args: &[&str]) -> Vec<String> {
    let out = run_at(addr, args, b"").ok();
    out.lines().iter().map(|s| s.to_string()).collect()
}

/// The group's entry in `herald groups TOPIC --json`.
fn group(addr: SocketAddr, topic: &str, name: &str) -> Value {
    run_at(addr, &["groups", topic, "--json"], b"")
        .ok()
        .json()
        .into_iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no group {name}"))
}

/// The subcommands `herald ARGS --help` lists under "Commands:".
fn subcommands(args: &[&str]) -> Vec<String> {
    let mut help: Vec<&str> = args.to_vec();
    help.push("--help");
    let out = run(&help).ok();
    out.stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn help_of_every_subcommand_has_examples() {
    // Every command the help lists, to any depth: one added later is
    // checked too.
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut checked = 0;
    while let Some(path) = todo.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let mut help = args.clone();
        help.push("--help");
        let out = run(&help).ok();
        assert!(
            out.stdout.contains("Examples:"),
            "{help:?} has no examples:\n{}",
            out.stdout
        );
        checked += 1;
        for c in subcommands(&args) {
            let mut next = path.clone();
            next.push(c);
            todo.push(next);
        }
    }
    assert!(checked > 15, "only {checked} commands found in the help");
    // A subcommand's --help names the shared flags.
    let out = run(&["sub", "--help"]).ok();
    assert!(out.stdout.contains("--server") && out.stdout.contains("HERALD_SERVER"));
}

#[test]
fn no_broker_is_one_clear_line_and_a_failure() {
    // Bind and drop a listener: a port nothing listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for args in [
        &["pub", "t", "hello"][..],
        &["sub", "t", "--count", "1"],
        &["topics", "list"],
        &["groups", "t"],
    ] {
        let out = run_at(free, args, b"").failed();
        let err = out.stderr.trim_end();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains(&format!("cannot reach a broker at {free}"))
                && err.contains("herald serve"),
            "{args:?}: {err}"
        );
    }
    // The address can come from HERALD_SERVER instead of --server.
    let mut c = herald(&["topics", "list"]);
    c.env("HERALD_SERVER", free.to_string());
    let out = common_cli::run_cmd(c, b"").failed();
    assert!(out.stderr.contains(&free.to_string()), "{}", out.stderr);
}

#[test]
fn pub_arguments_with_key_and_headers_and_sub_json() {
    let (b, _d) = broker();
    let out = run_at(
        b.addr,
        &[
            "pub",
            "t",
            "--key",
            "k1",
            "--header",
            "source=cli",
            "--header",
            "n=1",
            "a",
            "b",
            "--json",
        ],
        b"",
    )
    .ok();
    let offsets: Vec<u64> = out
        .json()
        .iter()
        .map(|c| c["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [0, 1]);
    // Stdin lines are bytes: a payload that is not UTF-8 comes out as base64.
    run_at(b.addr, &["pub", "t"], b"\xff\xfe\nplain\r\n").ok();

    let out = run_at(
        b.addr,
        &["sub", "t", "--from", "earliest", "--count", "4", "--json"],
        b"",
    )
    .ok();
    let m = out.json();
    assert_eq!(m.len(), 4);
    assert_eq!(m[0]["offset"], 0);
    assert_eq!(m[0]["payload"], "a");
    assert_eq!(m[0]["key"], "k1");
    assert_eq!(m[0]["headers"]["source"], "cli");
    assert_eq!(m[0]["headers"]["n"], "1");
    assert_eq!(m[0]["delivery_count"], 1);
    assert!(m[0]["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(m[1]["payload"], "b");
    assert_eq!(m[2]["payload_base64"], "//4=");
    assert!(m[2].get("payload").is_none());
    assert_eq!(m[3]["payload"], "plain");
    assert_eq!(m[3]["key"], Value::Null);

    // Text output: one payload per line.
    let lines = sub_lines(b.addr, &["sub", "t", "--from", "earliest", "--count", "2"]);
    assert_eq!(lines, ["a", "b"]);
}

#[test]
fn pub_json_prints_each_confirm_while_stdin_is_still_open() {
    let (b, _d) = broker();
    let mut c = herald(&["pub", "live", "--json", "--server"]);
    c.arg(b.addr.to_string());
    let mut p = Proc::spawn(c);
    use std::io::Write;
    let stdin = p.stdin.as_mut().unwrap();
    stdin.write_all(b"first\n").unwrap();
    stdin.flush().unwrap();
    let started = Instant::now();
    let first: Value = serde_json::from_str(&p.line()).unwrap();
    assert_eq!(first["offset"], 0);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "pub exited before stdin closed"
    );
    // A second line is confirmed the same way, still without EOF.
    let stdin = p.stdin.as_mut().unwrap();
    stdin.write_all(b"second\n").unwrap();
    stdin.flush().unwrap();
    let second: Value = serde_json::from_str(&p.line()).unwrap();
    assert_eq!(second["offset"], 1);
    let (status, rest) = p.finish(T);
    assert!(status.success());
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn pub_producer_id_makes_a_rerun_store_nothing_twice() {
    let (b, _d) = broker();
    let input = b"x\ny\nz\n";
    let first = run_at(
        b.addr,
        &["pub", "t", "--producer-id", "4242", "--json"],
        input,
    )
    .ok();
    assert!(first.json().iter().all(|c| c["duplicate"] == false));
    let again = run_at(
        b.addr,
        &["pub", "t", "--producer-id", "4242", "--json"],
        input,
    )
    .ok();
    let again = again.json();
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|c| c["duplicate"] == true), "{again:?}");
    assert_eq!(describe(b.addr, "t")["next_offset"], 3);
    // Once more, one line per batch (each fed after the previous confirm):
    // batch boundaries unlike the first run's are still duplicates.
    let mut c = herald(&["pub", "t", "--producer-id", "4242", "--json", "--server"]);
    c.arg(b.addr.to_string());
    let mut p = Proc::spawn(c);
    for line in ["x\n", "y\n", "z\n"] {
        use std::io::Write;
        let stdin = p.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.flush().unwrap();
        let confirm: Value = serde_json::from_str(&p.line()).unwrap();
        assert_eq!(confirm["duplicate"], true, "{line:?}: {confirm}");
        // The offset each record was stored at the first time.
        assert_eq!(confirm["offset"], confirm["seq"], "{line:?}: {confirm}");
    }
    assert!(p.finish(T).0.success());
    assert_eq!(describe(b.addr, "t")["next_offset"], 3);
    // Without --json, the summary says nothing new was stored.
    let text = run_at(b.addr, &["pub", "t", "--producer-id", "4242"], input).ok();
    assert!(
        text.stderr.contains("0 new, 3 stored before"),
        "{}",
        text.stderr
    );

    // Without --producer-id each run is a new producer: stored again.
    run_at(b.addr, &["pub", "u"], input).ok();
    run_at(b.addr, &["pub", "u"], input).ok();
    assert_eq!(describe(b.addr, "u")["next_offset"], 6);
}

#[test]
fn pub_count_and_size_generate_messages() {
    let (b, _d) = broker();
    let out = run_at(
        b.addr,
        &["pub", "gen", "--count", "2000", "--size", "64"],
        b"",
    )
    .ok();
    assert!(out.stderr.contains("published 2000"), "{}", out.stderr);
    assert_eq!(describe(b.addr, "gen")["next_offset"], 2000);
    let m = run_at(
        b.addr,
        &["sub", "gen", "--from", "1999", "--count", "1", "--json"],
        b"",
    )
    .ok();
    let m = m.json();
    assert_eq!(m[0]["offset"], 1999);
    assert_eq!(m[0]["payload"].as_str().unwrap().len(), 64);
}

#[test]
fn sub_group_acks_after_printing_and_no_ack_sees_them_again() {
    let (b, _d) = broker();
    run_at(b.addr, &["pub", "t"], b"1\n2\n3\n4\n5\n6\n").ok();
    // A new group starts at the beginning (the default --from is resume);
    // the second run of the group continues where the first stopped.
    let g = ["sub", "t", "--group", "g", "--count", "3"];
    assert_eq!(sub_lines(b.addr, &g), ["1", "2", "3"]);
    assert_eq!(sub_lines(b.addr, &g), ["4", "5", "6"]);
    assert_eq!(group(b.addr, "t", "g")["lag"], 0);

    run_at(b.addr, &["pub", "t"], b"7\n8\n").ok();
    let no_ack = [
        "sub", "t", "--group", "g", "--count", "2", "--no-ack", "--json",
    ];
    let first = run_at(b.addr, &no_ack, b"").ok().json();
    assert_eq!(
        first
            .iter()
            .map(|m| m["payload"].clone())
            .collect::<Vec<_>>(),
        ["7", "8"]
    );
    // Not acked: the next run gets them again, as redeliveries.
    let again = run_at(b.addr, &no_ack, b"").ok().json();
    assert_eq!(
        again
            .iter()
            .map(|m| m["payload"].clone())
            .collect::<Vec<_>>(),
        ["7", "8"]
    );
    assert!(again
        .iter()
        .all(|m| m["delivery_count"].as_u64().unwrap() >= 2));
    // Acked at last; then nothing is left and --timeout ends the run.
    assert_eq!(
        sub_lines(b.addr, &["sub", "t", "--group", "g", "--count", "2"]),
        ["7", "8"]
    );
    let started = Instant::now();
    let none = sub_lines(b.addr, &["sub", "t", "--group", "g", "--timeout", "300ms"]);
    assert!(none.is_empty(), "{none:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn sub_from_positions() {
    let (b, _d) = broker();
    run_at(b.addr, &["pub", "t", "a", "b", "c"], b"").ok();
    let from = |pos: &str| sub_lines(b.addr, &["sub", "t", "--from", pos, "--timeout", "300ms"]);
    assert_eq!(from("earliest"), ["a", "b", "c"]);
    assert_eq!(from("1"), ["b", "c"]);
    assert!(from("latest").is_empty());
    assert_eq!(from("2001-01-01T00:00:00Z"), ["a", "b", "c"]);
    assert!(from("2999-01-01T00:00:00Z").is_empty());
    let bad = run_at(b.addr, &["sub", "t", "--from", "soon"], b"").failed();
    assert!(bad.stderr.contains("RFC 3339"), "{}", bad.stderr);

    // --from latest sees what is published after it subscribed: the group
    // run below holds a member, so once `groups` lists it, it is live.
    let mut c = herald(&[
        "sub", "t", "--group", "live", "--from", "latest", "--count", "1",
    ]);
    c.arg("--server").arg(b.addr.to_string());
    let p = Proc::spawn(c);
    wait_for_members(b.addr, "t", "live", 1);
    run_at(b.addr, &["pub", "t", "d"], b"").ok();
    assert_eq!(p.line(), "d");
    let (status, _) = p.finish(T);
    assert!(status.success());
}

/// Asks `herald groups` until `group` has `n` members (each ask is a whole
/// process run, so this is paced by the work, with a deadline).
fn wait_for_members(addr: SocketAddr, topic: &str, name: &str, n: usize) {
    let deadline = Instant::now() + T;
    loop {
        let out = run_at(addr, &["groups", topic, "--json"], b"").ok();
        let members = out
            .json()
            .into_iter()
            .find(|g| g["name"] == name)
            .map(|g| g["members"].as_array().map_or(0, Vec::len));
        if members == Some(n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group {name} never had {n} members"
        );
    }
}

#[test]
fn topics_create_describe_list_delete() {
    let (b, _d) = broker();
    let created = run_at(
        b.addr,
        &[
            "topics",
            "create",
            "orders",
            "--retention-bytes",
            "10MiB",
            "--retention",
            "7d",
            "--segment-bytes",
            "1MiB",
            "--fsync",
            "interval:20",
            "--json",
        ],
        b"",
    )
    .ok()
    .json()
    .remove(0);
    assert_eq!(created["name"], "orders");
    assert_eq!(created["retention_bytes"], 10 << 20);
    assert_eq!(created["retention_ms"], 7 * 24 * 3600 * 1000u64);
    assert_eq!(created["segment_bytes"], 1 << 20);
    assert_eq!(created["fsync"], "interval:20");

    run_at(b.addr, &["pub", "orders", "one", "two"], b"").ok();
    run_at(
        b.addr,
        &[
            "sub", "orders", "--group", "billing", "--from", "earliest", "--count", "1",
        ],
        b"",
    )
    .ok();
    let d = describe(b.addr, "orders");
    assert_eq!(d["first_offset"], 0);
    assert_eq!(d["next_offset"], 2);
    assert!(d["bytes_on_disk"].as_u64().unwrap() > 0);
    assert_eq!(d["groups"][0]["name"], "billing");
    assert_eq!(d["groups"][0]["lag"], 1);
    let text = run_at(b.addr, &["topics", "describe", "orders"], b"")
        .ok()
        .stdout;
    assert!(
        text.contains("0 .. 2") && text.contains("billing"),
        "{text}"
    );

    let list = run_at(b.addr, &["topics", "list"], b"").ok();
    assert!(
        list.lines().iter().any(|l| l.starts_with("orders")),
        "{list:?}"
    );

    run_at(b.addr, &["topics", "delete", "orders"], b"").ok();
    let gone = run_at(b.addr, &["topics", "describe", "orders"], b"").failed();
    let err = gone.stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("unknown topic") && err.contains("herald topics list"),
        "{err}"
    );
    assert!(run_at(b.addr, &["topics", "list", "--json"], b"")
        .ok()
        .stdout
        .is_empty());
}

#[test]
fn groups_show_counts_and_reset_only_without_members() {
    let (b, _d) = broker();
    run_at(b.addr, &["pub", "t", "1", "2", "3", "4", "5"], b"").ok();
    let sub = [
        "sub", "t", "--group", "g", "--from", "earliest", "--count", "5",
    ];
    run_at(b.addr, &sub, b"").ok();
    let g = group(b.addr, "t", "g");
    for k in ["lag", "in_flight", "redelivered", "dead_lettered"] {
        assert_eq!(g[k], 0, "{k} in {g}");
    }
    assert_eq!(g["members"], serde_json::json!([]));
    let text = run_at(b.addr, &["groups", "t"], b"").ok().stdout;
    assert!(
        text.contains("lag") && text.contains("redelivered") && text.contains("dead"),
        "{text}"
    );
    let missing = run_at(b.addr, &["groups", "t", "nosuch"], b"").failed();
    assert!(missing.stdout.is_empty() && missing.stderr.contains("no group nosuch"));

    // A connected member: the reset is refused, saying what to do.
    let mut c = herald(&["sub", "t", "--group", "g"]);
    c.arg("--server").arg(b.addr.to_string());
    let member = Proc::spawn(c);
    wait_for_members(b.addr, "t", "g", 1);
    let refused = run_at(b.addr, &["groups", "t", "g", "--reset-to", "earliest"], b"").failed();
    assert!(refused.stderr.contains("consumers"), "{}", refused.stderr);
    assert_eq!(refused.stderr.trim_end().lines().count(), 1);
    member.kill();

    // Without members it goes through (the broker notices the member's
    // socket closing a moment after the kill).
    let deadline = Instant::now() + T;
    while !run_at(b.addr, &["groups", "t", "g", "--reset-to", "earliest"], b"")
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "reset never allowed");
    }
    assert_eq!(group(b.addr, "t", "g")["lag"], 5);
    run_at(b.addr, &["groups", "t", "g", "--reset-to", "3"], b"").ok();
    assert_eq!(
        sub_lines(b.addr, &["sub", "t", "--group", "g", "--count", "1"]),
        ["4"]
    );
    run_at(b.addr, &["groups", "t", "g", "--reset-to", "latest"], b"").ok();
    assert_eq!(group(b.addr, "t", "g")["lag"], 0);
}

#[test]
fn serve_takes_a_config_file_and_env_vars_and_rejects_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-file");
    let file = dir.path().join("herald.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:0\"\ndata-dir = {:?}\nfsync = \"never\"\nmax-topics = 2\n",
            data
        ),
    )
    .unwrap();
    let (p, addr) = serve(&["--config", file.to_str().unwrap()], &[]);
    run_at(addr, &["pub", "cfg", "x"], b"").ok();
    assert!(
        std::fs::read_dir(&data).unwrap().count() > 0,
        "config data-dir unused"
    );
    run_at(addr, &["pub", "cfg2", "x"], b"").ok();
    let over = run_at(addr, &["pub", "cfg3", "x"], b"").failed();
    assert!(over.stderr.contains("--max-topics 2"), "{}", over.stderr);
    p.kill();

    let env_data = dir.path().join("from-env");
    let (p, addr) = serve(
        &["--listen", "127.0.0.1:0"],
        &[
            ("HERALD_DATA_DIR", env_data.to_str().unwrap()),
            ("HERALD_FSYNC", "interval:5"),
            ("HERALD_MAX_TOPICS", "1"),
        ],
    );
    run_at(addr, &["pub", "env", "x"], b"").ok();
    assert!(
        std::fs::read_dir(&env_data).unwrap().count() > 0,
        "HERALD_DATA_DIR unused"
    );
    let over = run_at(addr, &["pub", "env2", "x"], b"").failed();
    assert!(over.stderr.contains("--max-topics 1"), "{}", over.stderr);
    p.kill();

    // A busy port: the address of a broker that is still running.
    let (_running, busy) = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().join("a").to_str().unwrap(),
        ],
        &[],
    );
    let out = run(&[
        "serve",
        "--listen",
        &busy.to_string(),
        "--data-dir",
        dir.path().join("b").to_str().unwrap(),
    ])
    .failed();
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);

    let bad_file = dir.path().join("bad.toml");
    std::fs::write(&bad_file, "data_dir = \"/tmp/x\"\n").unwrap();
    for args in [
        &["serve", "--bogus"][..],
        &["serve", "--fsync", "sometimes"],
        &["serve", "--max-topics", "0"],
        &["serve", "--config", "/nonexistent/herald.toml"],
        &["serve", "--config", bad_file.to_str().unwrap()],
    ] {
        let out = run(args).failed();
        assert!(!out.stderr.is_empty(), "{args:?} said nothing");
    }
}

/// `herald bench` runs every mode end to end on an embedded broker and
/// reports what it measured.
#[test]
fn bench_modes_run_and_report_json() {
    for (mode, extra, key, want) in [
        ("pub", vec!["--count", "2000"], "published", 2000),
        ("sub", vec!["--count", "2000"], "consumed", 2000),
        (
            "pubsub",
            vec!["--count", "500", "--rate", "5000"],
            "consumed",
            500,
        ),
        (
            "fanout",
            vec!["--count", "1000", "--consumers", "2"],
            "deliveries",
            2000,
        ),
        (
            "rooms",
            vec!["--count", "50", "--consumers", "3"],
            "deliveries",
            150,
        ),
        ("catchup", vec!["--count", "300"], "caught_up", 300),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["bench", mode, "--embedded", "--json", "--fsync", "never"])
            .args(&extra)
            .output()
            .expect("run herald bench");
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(v[key].as_u64(), Some(want), "{mode}: {v}");
        assert!(
            v["msgs_per_sec"].as_f64().unwrap_or(0.0) > 0.0,
            "{mode}: {v}"
        );
    }
}

/// `herald bench pubsub --server ws://…/ws` runs over the broker's
/// WebSocket listener (it is given no other address) and reports the
/// publish-to-deliver latency it measured; `topics list` takes a ws://
/// address too.
#[test]
fn bench_pubsub_runs_over_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (broker, _addr) = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--fsync",
            "never",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    let (http, _) = http_listening(&broker);
    let url = format!("ws://{http}/ws");
    let out = herald(&[
        "bench", "pubsub", "--server", &url, "--json", "--fsync", "never", "--count", "500",
        "--rate", "5000", "--topic", "wsbench",
    ])
    .output()
    .expect("run herald bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["consumed"].as_u64(), Some(500), "{v}");
    assert!(v["latency"]["p99_us"].as_u64().unwrap_or(0) > 0, "{v}");
    let topics = common_cli::run_cmd(herald(&["topics", "list", "--server", &url]), b"").ok();
    assert!(topics.stdout.contains("wsbench"), "{}", topics.stdout);
    // The usual slips say what they are, not that no broker runs: the
    // HTTP port given as the TCP one, and the WebSocket URL without /ws.
    let http_port = run_at(http, &["topics", "list"], b"").failed();
    assert!(
        http_port.stderr.contains("answered in HTTP") && !http_port.stderr.contains("cannot reach"),
        "{}",
        http_port.stderr
    );
    let no_path = format!("ws://{http}");
    let no_path =
        common_cli::run_cmd(herald(&["topics", "list", "--server", &no_path]), b"").failed();
    assert!(
        no_path.stderr.contains("ws://HOST:PORT/ws") && !no_path.stderr.contains("cannot reach"),
        "{}",
        no_path.stderr
    );
    broker.kill();
}

/// `herald serve` lifts its soft limit on open files to the hard one: each
/// topic holds files open, and a soft limit of 256 would cap the broker at
/// a couple of hundred topics.
#[test]
fn serve_raises_the_open_files_soft_limit() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Child::command(dir.path(), "127.0.0.1:0", &[]);
    let mut hard: libc::rlimit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) },
        0
    );
    let hard = hard.rlim_max;
    if hard <= 256 {
        eprintln!("hard open-files limit {hard} is too low to tell; skipped");
        return;
    }
    // SAFETY: setrlimit is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(move || {
            let l = libc::rlimit {
                rlim_cur: 256,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let b = Child::start(cmd);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", b.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("an open-files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, max) = (fields[3], fields[4]);
    assert_eq!(soft, max, "{line}");
    assert_eq!(soft, hard.to_string(), "{line}");
    b.kill();
}
