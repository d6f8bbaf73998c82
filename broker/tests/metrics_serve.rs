//! `herald serve`'s metrics settings reach the broker: the flag and the
//! TOML key that drop topic and group labels, and the `/metrics` address
//! printed at start.

mod common_cli;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common_cli::*;

/// `GET /metrics` over a blocking socket.
fn scrape(http: SocketAddr) -> String {
    let mut s = TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// Starts `herald serve EXTRA` on a temporary folder; the broker, its
/// address and the HTTP address from its second line.
fn serve_with(dir: &std::path::Path, extra: &[&str]) -> (Proc, SocketAddr, SocketAddr) {
    let data = dir.join("data");
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (p, addr) = serve(&args, &[]);
    let (http, line) = http_listening(&p);
    assert!(line.contains(&format!("http://{http}/metrics")), "{line}");
    (p, addr, http)
}

#[test]
fn the_flag_and_the_toml_key_drop_topic_labels() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("herald.toml");
    std::fs::write(&toml, "metrics-no-topic-labels = true\n").unwrap();
    let toml = toml.to_str().unwrap().to_owned();
    let cases: [(&str, Vec<&str>, bool); 3] = [
        ("default", vec![], true),
        ("flag", vec!["--metrics-no-topic-labels"], false),
        ("toml", vec!["--config", &toml], false),
    ];
    for (name, extra, labelled) in cases {
        let run = dir.path().join(name);
        let (broker, addr, http) = serve_with(&run, &extra);
        run_at(addr, &["pub", "numbers", "one", "two"], b"").ok();
        let text = scrape(http);
        assert_eq!(
            text.contains("topic=\"numbers\""),
            labelled,
            "{name}: {text}"
        );
        let series = if labelled {
            "herald_topic_appended_records_total{topic=\"numbers\"} 2"
        } else {
            "herald_topic_appended_records_total 2"
        };
        assert!(text.lines().any(|l| l == series), "{name}: {text}");
        broker.kill();
    }
}
