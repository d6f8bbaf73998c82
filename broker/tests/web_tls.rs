//! TLS on the HTTP listener: HTTPS and wss:// with the TCP listener's
//! certificate, client certificates when required, plaintext HTTP told
//! off, stalled handshakes cut at the handshake timeout, the per-address
//! cap applied to handshakes.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use futures::{SinkExt, StreamExt};
use herald_broker::server::BrokerHandle;
use herald_broker::tls::TlsConfig;
use herald_broker::BrokerConfig;
use herald_protocol::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::WebSocketStream;

/// A CA and a certificate it signed for localhost and 127.0.0.1.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "herald test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A broker with TLS and the HTTP listener on loopback.
fn tls_config(dir: &std::path::Path, server: &Pki, client_ca: Option<&Pki>) -> BrokerConfig {
    let tls = TlsConfig {
        cert: write(dir, "cert.pem", &server.cert_pem),
        key: write(dir, "key.pem", &server.key_pem),
        client_ca: client_ca.map(|c| write(dir, "client-ca.pem", &c.ca_pem)),
    };
    let mut c = config(&dir.join("data"));
    c.tls = Some(tls);
    c.http = Some("127.0.0.1:0".parse().unwrap());
    c
}

async fn start_with(cfg: BrokerConfig) -> (BrokerHandle, SocketAddr) {
    let b = herald_broker::server::start(cfg).await.unwrap();
    let http = b.http_addr().expect("http on");
    (b, http)
}

/// A TLS client trusting `ca`, presenting `client` (cert, key) if given.
fn connector(ca: &str, client: Option<&Pki>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(p) => {
            let certs = CertificateDer::pem_slice_iter(p.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(p.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    http: SocketAddr,
    ca: &str,
    client: Option<&Pki>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(http).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let r = tokio::time::timeout(T, connector(ca, client).connect(name, tcp)).await;
    r.expect("TLS connect timed out")
}

/// Sends a GET and reads the whole answer (the request asks the server to
/// close after it).
async fn get<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, path: &str) -> std::io::Result<String> {
    let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    let read = tokio::time::timeout(T, s.read_to_end(&mut out)).await;
    read.expect("response timed out")?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

type Socket = WebSocketStream<TlsStream<TcpStream>>;

/// A wss:// session past Hello.
struct Session {
    ws: Socket,
    buf: BytesMut,
}

impl Session {
    async fn open(http: SocketAddr, ca: &str, id: &str) -> Session {
        let tls = tls_connect(http, ca, None).await.expect("TLS handshake");
        let req = "wss://localhost/ws".into_client_request().unwrap();
        let connect = tokio_tungstenite::client_async(req, tls);
        let (ws, _) = tokio::time::timeout(T, connect).await.unwrap().unwrap();
        let mut s = Session {
            ws,
            buf: BytesMut::new(),
        };
        let hello = Message::Hello(Hello {
            min_version: 1,
            max_version: 1,
            client_name: "wss-test".into(),
            client_id: Some(id.into()),
            token: None,
        });
        s.send(1, &hello).await;
        match s.message().await {
            (1, Message::HelloOk(ok)) => assert_eq!(ok.client_id, id),
            other => panic!("handshake: {other:?}"),
        }
        s
    }

    async fn send(&mut self, id: u64, m: &Message) {
        let mut b = BytesMut::new();
        m.encode(id, &mut b);
        self.ws.send(Ws::Binary(b.freeze())).await.unwrap();
    }

    async fn message(&mut self) -> (u64, Message) {
        loop {
            if let Some(f) = frame::decode_frame(&mut self.buf, DEFAULT_MAX_FRAME).unwrap() {
                return (f.header.request_id, Message::decode(&f).unwrap());
            }
            match tokio::time::timeout(T, self.ws.next()).await.unwrap() {
                Some(Ok(Ws::Binary(b))) => self.buf.extend_from_slice(&b),
                Some(Ok(_)) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
    }

    /// Publishes one record and returns its confirmed offset.
    async fn publish(&mut self, id: u64, payload: &[u8]) -> u64 {
        let mut b = BatchBuilder::new();
        b.push(&RecordRef {
            key: b"",
            headers: &[],
            payload,
            timestamp: 1,
        });
        let m = Message::Publish {
            topic: "t".into(),
            batch: Batch::validate(b.finish(0, 0)).unwrap(),
        };
        self.send(id, &m).await;
        match self.message().await {
            (got, Message::PublishOk(ok)) if got == id => ok.base_offset,
            other => panic!("{other:?}"),
        }
    }
}

/// Waits until the broker closes `s` (EOF or an error), ignoring
/// whatever it sends first.
async fn closed_by_broker(s: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_over_https_needs_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server = pki();
    let (b, http) = start_with(tls_config(dir.path(), &server, None)).await;

    let tls = tls_connect(http, &server.ca_pem, None).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let answer = get(tls, "/healthz").await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
    // The JavaScript client is served over HTTPS too.
    let tls = tls_connect(http, &server.ca_pem, None).await.unwrap();
    let answer = get(tls, "/herald.js").await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A client that does not trust the broker's CA: the handshake fails.
    let other = pki();
    let e = tls_connect(http, &other.ca_pem, None).await.err();
    let e = e.expect("connected without the CA").to_string();
    assert!(e.contains("certificate"), "{e}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_session_publishes_and_is_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let server = pki();
    let (b, http) = start_with(tls_config(dir.path(), &server, None)).await;
    let mut s = Session::open(http, &server.ca_pem, "w1").await;
    assert_eq!(s.publish(2, b"one").await, 0);
    assert_eq!(s.publish(3, b"two").await, 1);
    // The TCP listener has the same certificate.
    let tcp_tls = tls_connect(b.local_addr(), &server.ca_pem, None).await;
    drop(tcp_tls.expect("the TCP listener has the same certificate"));
    s.send(4, &Message::Ping).await;
    assert_eq!(s.message().await, (4, Message::Pong));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_https_port_is_told_off_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = pki();
    let (b, http) = start_with(tls_config(dir.path(), &server, None)).await;
    let mut s = Session::open(http, &server.ca_pem, "w1").await;
    assert_eq!(s.publish(2, b"before").await, 0);

    let tcp = TcpStream::connect(http).await.unwrap();
    let answer = get(tcp, "/healthz").await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("this port speaks HTTPS"), "{answer}");
    // A plaintext WebSocket client fails too.
    let ws = tokio_tungstenite::connect_async(format!("ws://{http}/ws"));
    let r = tokio::time::timeout(T, ws).await.unwrap();
    assert!(r.is_err(), "ws:// on the HTTPS port worked");

    assert_eq!(s.publish(3, b"after").await, 1);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_cut_at_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = pki();
    let mut cfg = tls_config(dir.path(), &server, None);
    cfg.handshake_timeout = Duration::from_millis(500);
    let (b, http) = start_with(cfg).await;

    // One says nothing; one starts a handshake record and stops.
    let mut silent = TcpStream::connect(http).await.unwrap();
    let mut partial = TcpStream::connect(http).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01, 0x02]).await.unwrap();
    let started = tokio::time::Instant::now();
    // Meanwhile another client gets through.
    let mut s = Session::open(http, &server.ca_pem, "w1").await;
    assert_eq!(s.publish(2, b"x").await, 0);
    for stalled in [&mut silent, &mut partial] {
        let cut = tokio::time::timeout(T, closed_by_broker(stalled)).await;
        cut.expect("a stalled handshake was never cut");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "cut early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "cut late: {waited:?}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_count_against_the_per_address_cap() {
    let dir = tempfile::tempdir().unwrap();
    let server = pki();
    let mut cfg = tls_config(dir.path(), &server, None);
    cfg.max_connections_per_address = 2;
    let (b, http) = start_with(cfg).await;
    let first = TcpStream::connect(http).await.unwrap();
    let second = TcpStream::connect(http).await.unwrap();
    // Both stall in their handshake (10 s timeout): a third is closed at
    // once, long before that.
    let mut third = TcpStream::connect(http).await.unwrap();
    let cut = tokio::time::timeout(Duration::from_secs(5), closed_by_broker(&mut third)).await;
    cut.expect("a third handshake from one address was let in");
    drop((first, second));
    // The places come back when the stalled ones go.
    let back = async {
        loop {
            if let Ok(tls) = tls_connect(http, &server.ca_pem, None).await {
                if let Ok(answer) = get(tls, "/healthz").await {
                    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                    return;
                }
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(T, back)
        .await
        .expect("no place came back");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_on_https_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = pki();
    let clients = pki();
    let mut cfg = tls_config(dir.path(), &server, Some(&clients));
    // Client certificates alone may expose a network address.
    cfg.http = Some("0.0.0.0:0".parse().unwrap());
    let (b, http) = start_with(cfg).await;
    let http: SocketAddr = format!("127.0.0.1:{}", http.port()).parse().unwrap();

    // TLS 1.3: the refusal comes after the client's side of the handshake,
    // as an alert where the answer should be.
    let without = match tls_connect(http, &server.ca_pem, None).await {
        Ok(tls) => get(tls, "/healthz").await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(
        without.is_err(),
        "served without a client certificate: {without:?}"
    );
    let tls = tls_connect(http, &server.ca_pem, Some(&clients))
        .await
        .unwrap();
    let answer = get(tls, "/healthz").await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    b.shutdown().await;
}
