//! `herald serve`'s HTTP settings reach the broker: the origins allowed to
//! open WebSocket sessions, from the flag, the environment and the TOML
//! file (the origin check itself is tested in web.rs, with the setting
//! made directly in the broker's config).

mod common_cli;

use std::net::SocketAddr;

use common_cli::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, http::StatusCode};

/// Starts `herald serve EXTRA` with `envs` on a folder of `dir`; the broker
/// and the HTTP address from its second line.
fn serve_http(dir: &std::path::Path, extra: &[&str], envs: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let data = dir.join("data");
    // Port 0 for both listeners: a broker on the default ports (a
    // developer's own) does not make this test fail.
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (p, _) = serve(&args, envs);
    let (http, _) = http_listening(&p);
    (p, http)
}

/// The status of a WebSocket upgrade at `/ws` from a page of `origin`:
/// 101 when the session opens, else the refusal's.
fn upgrade_status(rt: &tokio::runtime::Runtime, http: SocketAddr, origin: &str) -> StatusCode {
    let mut req = format!("ws://{http}/ws").into_client_request().unwrap();
    req.headers_mut().insert("origin", origin.parse().unwrap());
    let connect = tokio_tungstenite::connect_async(req);
    match rt.block_on(async { tokio::time::timeout(T, connect).await }) {
        Err(_) => panic!("the upgrade from {origin} timed out"),
        Ok(Ok((_, response))) => response.status(),
        Ok(Err(tungstenite::Error::Http(response))) => response.status(),
        Ok(Err(e)) => panic!("the upgrade from {origin} failed: {e}"),
    }
}

/// `--http-allowed-origins`, `HERALD_HTTP_ALLOWED_ORIGINS` and the TOML key
/// `http-allowed-origins` each let pages of the listed origins (two, to
/// check the list is split) open `/ws`, and pages of other origins are
/// still refused with 403. Without any of them a listed origin is refused
/// too, so the acceptance comes from the setting. The origin check is what
/// stops a page from anywhere acting as any client of the broker: a
/// setting that no longer reaches it locks out the operator's own web
/// application (or, read wrongly, lets others in).
#[test]
fn allowed_origins_come_from_the_flag_the_environment_and_the_toml_file() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("herald.toml");
    std::fs::write(
        &toml,
        "http-allowed-origins = [\"https://app.example\", \"https://admin.example\"]\n",
    )
    .unwrap();
    let toml = toml.to_str().unwrap().to_owned();
    let list = "https://app.example,https://admin.example";
    let cases = [
        ("none", vec![], vec![]),
        ("flag", vec!["--http-allowed-origins", list], vec![]),
        ("env", vec![], vec![("HERALD_HTTP_ALLOWED_ORIGINS", list)]),
        ("toml", vec!["--config", &toml], vec![]),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (name, extra, envs) in cases {
        // Killed and reaped when dropped, also when an assertion fails.
        let (broker, http) = serve_http(&dir.path().join(name), &extra, &envs);
        let listed = if name == "none" {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::SWITCHING_PROTOCOLS
        };
        for origin in ["https://app.example", "https://admin.example"] {
            assert_eq!(
                upgrade_status(&rt, http, origin),
                listed,
                "{name}: {origin}"
            );
        }
        assert_eq!(
            upgrade_status(&rt, http, "https://evil.example"),
            StatusCode::FORBIDDEN,
            "{name}: an origin not listed"
        );
        broker.kill();
    }
}
