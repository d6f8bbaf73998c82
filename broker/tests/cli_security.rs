//! The security flags end to end through the `herald` binary: `herald
//! token` (JWT and static), `serve --jwt-secret-file --tokens-file`,
//! `--token` / `HERALD_TOKEN` on client commands, refusals with hints, the
//! failed-authentication log line (which never holds the token), and the
//! refusal to serve a network address without authentication.

mod common_cli;

use common_cli::{herald, run, run_cmd, Proc, T};

fn serve_with_stderr(args: &[&str]) -> (Proc, std::net::SocketAddr) {
    let mut c = herald(&["serve"]);
    c.args(args);
    let p = Proc::spawn_with_stderr(c);
    loop {
        let l = p.line();
        if let Some(a) = l.strip_prefix("listening on ") {
            return (p, a.trim().parse().expect("address"));
        }
    }
}

fn with_token(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    args: &[&str],
) -> common_cli::Output {
    let mut c = herald(args);
    c.arg("--server").arg(addr.to_string());
    if let Some(t) = token {
        c.arg("--token").arg(t);
    }
    run_cmd(c, b"")
}

#[test]
fn tokens_from_the_cli_open_exactly_what_they_allow() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, "cli-test-secret-cli-test-secret-0123456789\n").unwrap();
    let secret_s = secret.to_str().unwrap();
    let alice = run(&[
        "token",
        "--secret-file",
        secret_s,
        "--sub",
        "alice",
        "--allow-publish",
        "orders.>",
        "--allow-subscribe",
        "orders.>",
        "--allow-admin",
        "orders.>",
        "--ttl",
        "10m",
    ])
    .ok()
    .stdout
    .trim()
    .to_owned();
    assert_eq!(alice.split('.').count(), 3, "a JWT: {alice}");

    // A static token for a service, and its entry for the tokens file.
    let out = run(&["token", "--static", "ingest", "--allow-publish", "events.>"]).ok();
    let lines = out.lines();
    let service = lines[1].to_owned();
    let entry: String = lines[3..].join("\n");
    assert!(
        entry.contains("name = \"ingest\"") && !entry.contains(&service),
        "{entry}"
    );
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, entry).unwrap();

    let data = dir.path().join("data");
    let (broker, addr) = serve_with_stderr(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--jwt-secret-file",
        secret_s,
        "--tokens-file",
        tokens.to_str().unwrap(),
    ]);

    with_token(addr, Some(&alice), &["pub", "orders.eu", "one", "two"]).ok();
    let list = with_token(addr, Some(&alice), &["topics", "list", "--json"]).ok();
    assert!(list.stdout.contains("orders.eu"), "{}", list.stdout);
    let refused = with_token(addr, Some(&alice), &["pub", "payments", "x"]).failed();
    assert!(
        refused.stderr.contains("publish to topic \"payments\"")
            && refused.stderr.contains("docs/security.md"),
        "{}",
        refused.stderr
    );
    // The same token from the environment.
    let mut c = herald(&["sub", "orders.eu", "--from", "earliest", "--count", "2"]);
    c.arg("--server")
        .arg(addr.to_string())
        .env("HERALD_TOKEN", &alice);
    assert_eq!(run_cmd(c, b"").ok().lines(), vec!["one", "two"]);

    with_token(addr, Some(&service), &["pub", "events.clicks", "c"]).ok();
    let refused = with_token(addr, Some(&service), &["pub", "orders.eu", "x"]).failed();
    assert!(
        refused.stderr.contains("\"ingest\" may not"),
        "{}",
        refused.stderr
    );

    let none = with_token(addr, None, &["topics", "list"]).failed();
    assert!(none.stderr.contains("requires a token"), "{}", none.stderr);
    // A broker was reached: the CLI says what to pass, not to start one.
    assert!(
        none.stderr.contains("refused the connection")
            && none.stderr.contains("--token")
            && !none.stderr.contains("cannot reach"),
        "{}",
        none.stderr
    );
    let leaked = "not-a-real-token-but-a-secret-all-the-same";
    let bad = with_token(addr, Some(leaked), &["topics", "list"]).failed();
    assert!(!bad.stderr.contains(leaked), "{}", bad.stderr);

    // The broker logged the failures, each with a fingerprint, never the
    // token.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(broker.child.id() as i32, libc::SIGTERM) };
    let (status, log) = broker.finish_with_stderr(T);
    assert!(status.success(), "{status:?}: {log}");
    assert!(log.contains("authentication failed"), "{log}");
    assert!(
        !log.contains(leaked) && !log.contains(&alice) && !log.contains(&service),
        "{log}"
    );
}

#[test]
fn a_network_address_needs_authentication_or_consent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = run(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--data-dir",
        data.to_str().unwrap(),
    ])
    .failed();
    assert!(
        out.stderr.contains("without authentication") && out.stderr.contains("--allow-anonymous"),
        "{}",
        out.stderr
    );
    assert!(!data.join("LOCK").exists(), "nothing was opened");
}
