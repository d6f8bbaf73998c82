//! One broker per data folder: a second `herald serve` (or a second
//! in-process broker) on a folder in use exits at once, naming the folder
//! and the holder's pid, so two brokers can never both confirm the same
//! offset of a topic. A SIGKILLed broker's folder can be reopened at once.

mod common;
mod common_cli;

use common::Child;
use common_cli::{run, run_at};

/// The reproduction: publish through one broker, try a second on
/// the same folder, restart, and find every confirmed message.
#[test]
fn a_second_serve_on_the_same_folder_exits_at_once_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let first = Child::spawn(dir.path(), &["--fsync", "never"]);
    let out = run_at(first.addr, &["pub", "t", "one", "--json"], b"").ok();
    assert_eq!(out.json()[0]["offset"], 0);

    let data = dir.path().to_str().unwrap();
    let started = std::time::Instant::now();
    let second = run(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data]).failed();
    assert!(
        started.elapsed() < common_cli::T,
        "the second broker did not exit at once"
    );
    assert!(
        !second.stdout.contains("listening on"),
        "the second broker served: {second:?}"
    );
    let err = second.stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "{err}");
    let pid = first.child.id();
    assert!(
        err.contains(&format!(
            "data folder {data} is in use by another broker (pid {pid})"
        )),
        "{err}"
    );

    // The first broker is unharmed, and a SIGKILL frees the folder at once:
    // the kernel drops the lock with the process.
    run_at(first.addr, &["pub", "t", "two"], b"").ok();
    first.kill();
    let again = Child::spawn(dir.path(), &["--fsync", "never"]);
    let out = run_at(
        again.addr,
        &["sub", "t", "--from", "earliest", "--count", "2"],
        b"",
    )
    .ok();
    assert_eq!(out.lines(), ["one", "two"]);
    let lock = std::fs::read_to_string(dir.path().join("LOCK")).unwrap();
    assert_eq!(lock.trim(), again.child.id().to_string());
}

/// In-process brokers take the same lock, and release it on shutdown.
#[tokio::test]
async fn an_in_process_broker_takes_the_lock_and_releases_it_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let first = common::start(dir.path()).await;
    match herald_broker::server::start(common::config(dir.path())).await {
        Err(e @ herald_broker::BrokerError::DataDirInUse { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("(pid {})", std::process::id())),
                "{msg}"
            );
        }
        Err(e) => panic!("expected DataDirInUse, got {e}"),
        Ok(_) => panic!("a second broker started on a folder in use"),
    }
    tokio::time::timeout(common::T, first.shutdown())
        .await
        .expect("shutdown");
    let second = common::start(dir.path()).await;
    tokio::time::timeout(common::T, second.shutdown())
        .await
        .expect("shutdown");
}
