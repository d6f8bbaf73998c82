//! Fetching `/metrics` over plain HTTP/1.1 with hyper's client (already
//! in the dependency tree through axum), one connection per scrape.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A scrape that takes longer than this fails (the broker is stuck or
/// unreachable); the view says so and tries again next second.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Most bytes of a `/metrics` answer read (a broker with labels on for a
/// hundred thousand topics would send more: `--metrics-no-topic-labels`).
const MAX_BODY: usize = 64 << 20;

/// `GET http://<addr>/metrics`, its body as text.
///
/// # Errors
/// Connection refused, a timeout, a status other than 200, a body that is
/// too big or not UTF-8.
pub async fn fetch(addr: SocketAddr) -> anyhow::Result<String> {
    tokio::time::timeout(SCRAPE_TIMEOUT, get(addr))
        .await
        .with_context(|| format!("no answer from {addr} within {SCRAPE_TIMEOUT:?}"))?
}

async fn get(addr: SocketAddr) -> anyhow::Result<String> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    let driver = tokio::spawn(conn);
    let req = Request::get("/metrics")
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
        .to_bytes();
    driver.abort();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        bail!("{addr} answered {status}: {}", text.trim());
    }
    String::from_utf8(body.to_vec()).context("the answer is not UTF-8")
}
