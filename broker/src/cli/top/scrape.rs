//! Fetching `/metrics` over HTTP/1.1 with hyper's client (already in the
//! dependency tree through axum), one connection per scrape; over TLS
//! (rustls, the ring provider, as everywhere in Herald) when the broker's
//! HTTP listener speaks HTTPS.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A scrape that takes longer than this fails (the broker is stuck or
/// unreachable); the view says so and tries again next second.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Most bytes of a `/metrics` answer read (a broker with labels on for a
/// hundred thousand topics would send more: `--metrics-no-topic-labels`).
const MAX_BODY: usize = 64 << 20;

/// Where `/metrics` is, and how to speak to it.
pub struct Target {
    pub addr: SocketAddr,
    /// HTTPS, trusting these CAs.
    pub tls: Option<TlsConnector>,
}

impl Target {
    /// Plain HTTP to `addr`, or HTTPS trusting the CA certificates of the
    /// PEM file `ca`.
    ///
    /// # Errors
    /// The file cannot be read or holds no usable certificate.
    pub fn new(addr: SocketAddr, ca: Option<&Path>) -> anyhow::Result<Target> {
        let Some(ca) = ca else {
            return Ok(Target { addr, tls: None });
        };
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&pem) {
            roots.add(c.context("reading the CA certificates")?)?;
        }
        if roots.is_empty() {
            bail!("no CA certificate in {}", ca.display());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Target {
            addr,
            tls: Some(TlsConnector::from(Arc::new(config))),
        })
    }

    /// `GET /metrics`, its body as text.
    ///
    /// # Errors
    /// Connection refused, a failed TLS handshake, a timeout, a status
    /// other than 200, a body that is too big or not UTF-8.
    pub async fn fetch(&self) -> anyhow::Result<String> {
        let addr = self.addr;
        let work = async {
            let tcp = TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            match &self.tls {
                None => get(tcp, addr).await,
                Some(tls) => {
                    let name = ServerName::from(addr.ip());
                    let stream = tls
                        .connect(name, tcp)
                        .await
                        .with_context(|| format!("TLS with {addr}"))?;
                    get(stream, addr).await
                }
            }
        };
        tokio::time::timeout(SCRAPE_TIMEOUT, work)
            .await
            .with_context(|| format!("no answer from {addr} within {SCRAPE_TIMEOUT:?}"))?
    }
}

async fn get<S>(io: S, addr: SocketAddr) -> anyhow::Result<String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
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
