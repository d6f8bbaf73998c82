//! The client against a broker with authentication and TLS: a token
//! provider that refreshes the connection's token without dropping
//! subscriptions, TLS round trips, and the clear failures (wrong CA,
//! plaintext against a TLS port, missing client certificate), with a
//! broker that shrugs off TLS garbage.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::within;
use futures::StreamExt;
use herald_broker::auth::jwt::{self, Claims};
use herald_broker::auth::{AuthConfig, GrantSpec};
use herald_broker::config::BrokerConfig;
use herald_broker::server::BrokerHandle;
use herald_broker::tls::TlsConfig;
use herald_client::{Client, ConnectionEvent, Error, Start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &[u8] = b"client-tests-secret-of-at-least-32-bytes";

fn mint(sub: &str, ttl_secs: u64, grants: GrantSpec) -> String {
    let c = Claims {
        sub: sub.into(),
        exp: jwt::now_secs() + ttl_secs,
        nbf: None,
        iat: None,
        herald: grants,
    };
    jwt::mint_hs256(SECRET, &c).unwrap()
}

fn feed_grants() -> GrantSpec {
    GrantSpec {
        publish: vec!["feed".into()],
        subscribe: vec!["feed".into()],
        admin: vec!["feed".into()],
        ..Default::default()
    }
}

async fn start(dir: &std::path::Path, tls: Option<TlsConfig>) -> BrokerHandle {
    herald_broker::server::start(config(dir, tls))
        .await
        .unwrap()
}

/// [`start`] with the HTTP listener on too (WebSocket sessions at `/ws`);
/// returns the broker and its `ws://` or `wss://` URL (for `localhost`,
/// which the test certificates name).
async fn start_web(dir: &std::path::Path, tls: Option<TlsConfig>) -> (BrokerHandle, String) {
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let mut cfg = config(dir, tls);
    cfg.http = Some(([127, 0, 0, 1], 0).into());
    let broker = herald_broker::server::start(cfg).await.unwrap();
    let port = broker.http_addr().expect("an HTTP listener").port();
    (broker, format!("{scheme}://localhost:{port}/ws"))
}

fn config(dir: &std::path::Path, tls: Option<TlsConfig>) -> BrokerConfig {
    BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.into(),
        auth: AuthConfig {
            jwt_secret: Some(SECRET.to_vec()),
            jwt_leeway: Duration::ZERO,
            ..Default::default()
        },
        tls,
        handshake_timeout: Duration::from_millis(500),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_subscription_keeps_flowing_across_token_refreshes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path(), None).await;
    let addr = broker.local_addr().to_string();
    let writer = Client::builder(&addr)
        .token(mint("writer", 600, feed_grants()))
        .connect()
        .await?;
    writer.create_topic("feed", Default::default()).await?;

    // Tokens of four seconds: the broker asks for a new one about every
    // two, and closes the connection if none comes in time.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let reader = Client::builder(&addr)
        .client_id("reader")
        .token_provider(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, String>(mint("reader", 4, feed_grants())) }
        })
        .connect()
        .await?;
    let mut events = reader.events();
    let mut sub = reader
        .subscribe("feed")
        .group("g")
        .start(Start::Earliest)
        .await?;
    let n = 32u32;
    let publishing = async {
        for i in 0..n {
            writer.publish("feed", format!("{i}")).await?;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::Ok(())
    };
    let reading = async {
        for i in 0..n {
            let m = within("a message", sub.next()).await.expect("open")?;
            assert_eq!(&m.payload()[..], format!("{i}").as_bytes());
            m.ack().await?;
        }
        anyhow::Ok(())
    };
    let (p, r) = tokio::join!(publishing, reading);
    p?;
    r?;
    let mut refreshed = 0;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(10), events.next()).await {
        match ev {
            ConnectionEvent::TokenRefreshed => refreshed += 1,
            ConnectionEvent::Disconnected { reason } => panic!("dropped: {reason}"),
            _ => {}
        }
    }
    assert!(refreshed >= 2, "only {refreshed} refreshes in 8 s");
    assert!(calls.load(Ordering::SeqCst) >= 3, "provider calls");
    reader.close().await;
    writer.close().await;
    broker.shutdown().await;
    Ok(())
}

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

fn tls_config(dir: &std::path::Path, server: &Pki, client_ca: Option<&Pki>) -> TlsConfig {
    TlsConfig {
        cert: write(dir, "cert.pem", &server.cert_pem),
        key: write(dir, "key.pem", &server.key_pem),
        client_ca: client_ca.map(|c| write(dir, "client-ca.pem", &c.ca_pem)),
    }
}

fn connect_reason(r: Result<Client, Error>) -> String {
    match r {
        Err(Error::Connect { reason, .. }) => reason,
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("connected"),
    }
}

/// Garbage on the TLS port: a fake handshake record, random bytes, a
/// connection that says nothing. The broker closes each and goes on.
async fn throw_garbage(addr: SocketAddr) {
    let junk: Vec<Vec<u8>> = vec![
        vec![0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 6, 7],
        (0..4096).map(|_| rand::random::<u8>()).collect(),
        [vec![0x16], (0..300).map(|_| rand::random::<u8>()).collect()].concat(),
        vec![],
    ];
    for j in junk {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(&j).await;
        let mut buf = [0u8; 4096];
        // Closed by the broker (an alert, an error, or nothing), within
        // the handshake deadline.
        let closed = within("the broker to close", async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        });
        closed.await;
    }
}

#[tokio::test]
async fn tls_round_trip_and_clear_failures() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = pki();
    let broker = start(dir.path(), Some(tls_config(dir.path(), &server, None))).await;
    let addr = broker.local_addr().to_string();
    let token = mint("tls-user", 600, feed_grants());

    let client = Client::builder(&addr)
        .token(token.clone())
        .tls_ca_pem(server.ca_pem.clone())
        .connect()
        .await?;
    client.create_topic("feed", Default::default()).await?;
    let receipt = client.publish("feed", "over tls").await?;
    let mut sub = client.subscribe("feed").start(Start::Earliest).await?;
    let m = within("a message", sub.next()).await.expect("open")?;
    assert_eq!(
        (m.offset(), &m.payload()[..]),
        (receipt.offset, &b"over tls"[..])
    );

    // Another CA: refused, saying why.
    let other = pki();
    let r = Client::builder(&addr)
        .token(token.clone())
        .tls_ca_pem(other.ca_pem)
        .max_reconnect_attempts(Some(0))
        .connect()
        .await;
    let reason = connect_reason(r);
    assert!(
        reason.contains("certificate") && reason.contains("TLS"),
        "{reason}"
    );

    // Plaintext against the TLS port: the broker says it wants TLS.
    let r = Client::builder(&addr).token(token.clone()).connect().await;
    let reason = connect_reason(r);
    assert!(reason.contains("this port speaks TLS"), "{reason}");

    throw_garbage(broker.local_addr()).await;
    // Still serving.
    assert_eq!(
        client.publish("feed", "after garbage").await?.offset,
        receipt.offset + 1
    );
    client.close().await;
    broker.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn client_certificates_when_the_broker_requires_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = pki();
    let clients = pki();
    let broker = start(
        dir.path(),
        Some(tls_config(dir.path(), &server, Some(&clients))),
    )
    .await;
    let addr = broker.local_addr().to_string();
    let token = mint("mtls-user", 600, feed_grants());
    let without = Client::builder(&addr)
        .token(token.clone())
        .tls_ca_pem(server.ca_pem.clone())
        .connect()
        .await;
    // TLS 1.3: the refusal comes after the client's handshake finished,
    // as an alert where Hello's reply should be.
    assert!(without.is_err(), "connected without a client certificate");
    let with = Client::builder(&addr)
        .token(token)
        .tls_ca_pem(server.ca_pem.clone())
        .tls_client_cert_pem(clients.cert_pem.clone(), clients.key_pem.clone())
        .connect()
        .await?;
    with.create_topic("feed", Default::default()).await?;
    with.close().await;
    broker.shutdown().await;
    Ok(())
}

/// Tokens over WebSocket, as over TCP: none is refused at the handshake,
/// the token's grants decide each request, and a provider's fresh token
/// goes out as a Refresh on the open WebSocket (no reconnect).
#[tokio::test]
async fn tokens_over_websocket() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (broker, url) = start_web(dir.path(), None).await;

    let r = Client::builder(&url)
        .max_reconnect_attempts(Some(0))
        .connect()
        .await;
    let reason = connect_reason(r);
    assert!(reason.contains("handshake refused"), "{reason}");

    // Tokens of four seconds: the broker asks for a new one after about two.
    let client = Client::builder(&url)
        .client_id("ws-user")
        .token_provider(|| async { Ok::<_, String>(mint("ws-user", 4, feed_grants())) })
        .connect()
        .await?;
    let mut events = client.events();
    client.create_topic("feed", Default::default()).await?;
    let first = client.publish("feed", "over ws").await?;
    match client.publish("elsewhere", "x").await {
        Err(Error::Broker { code, .. }) => assert_eq!(code, herald_client::ErrorCode::Unauthorized),
        r => panic!("a publish outside the grants: {r:?}"),
    }
    let mut sub = client
        .subscribe("feed")
        .group("g")
        .start(Start::Earliest)
        .await?;
    let seen = common::wait_event(&mut events, |e| *e == ConnectionEvent::TokenRefreshed).await;
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, ConnectionEvent::Disconnected { .. })),
        "{seen:?}"
    );
    let second = client.publish("feed", "after the refresh").await?;
    for (offset, text) in [
        (first.offset, "over ws"),
        (second.offset, "after the refresh"),
    ] {
        let m = within("a message", sub.next()).await.expect("open")?;
        assert_eq!((m.offset(), &m.payload()[..]), (offset, text.as_bytes()));
        m.ack().await?;
    }
    client.close().await;
    broker.shutdown().await;
    Ok(())
}

/// wss://: TLS under the WebSocket, checked against the given CA (and
/// refused, saying why, against another one).
#[tokio::test]
async fn wss_round_trip_and_wrong_ca() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = pki();
    let (broker, url) = start_web(dir.path(), Some(tls_config(dir.path(), &server, None))).await;
    let token = mint("wss-user", 600, feed_grants());
    let client = Client::builder(&url)
        .token(token.clone())
        .tls_ca_pem(server.ca_pem.clone())
        .connect()
        .await?;
    client.create_topic("feed", Default::default()).await?;
    let receipt = client.publish("feed", "over wss").await?;
    let mut sub = client.subscribe("feed").start(Start::Earliest).await?;
    let m = within("a message", sub.next()).await.expect("open")?;
    assert_eq!(
        (m.offset(), &m.payload()[..]),
        (receipt.offset, &b"over wss"[..])
    );

    let r = Client::builder(&url)
        .token(token)
        .tls_ca_pem(pki().ca_pem)
        .max_reconnect_attempts(Some(0))
        .connect()
        .await;
    let reason = connect_reason(r);
    assert!(
        reason.contains("certificate") && reason.contains("TLS"),
        "{reason}"
    );
    client.close().await;
    broker.shutdown().await;
    Ok(())
}
