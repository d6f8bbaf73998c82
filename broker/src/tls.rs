//! TLS for the listeners (rustls with the ring provider): loading the
//! certificate chain, the key and the optional client CA from PEM files
//! into a [`rustls::ServerConfig`], and the server side of a handshake
//! ([`handshake`]). One certificate serves both listeners: the TCP one
//! wraps each accepted stream before the session starts (see `server`),
//! the HTTP one (HTTPS and wss://, see `crate::https`) uses the same
//! settings with ALPN `http/1.1`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the listener's certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates: when set, every client must present a
    /// certificate signed by one of them.
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {what} from {}: {source}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} holds no certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA {}: {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
}

/// The ring provider, the only one Herald builds with.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file.
///
/// # Errors
/// An unreadable file or no certificate in it.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Pem {
            what: "certificates",
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// A server configuration for `cfg`: TLS 1.2 and 1.3, the ring provider,
/// client certificates required when `client_ca` is set. Returned by
/// value so a caller can add ALPN protocols before wrapping it in an
/// `Arc`.
///
/// # Errors
/// Unreadable files, a key that does not match the certificate.
pub fn server_config(cfg: &TlsConfig) -> Result<rustls::ServerConfig, TlsError> {
    let certs = load_certs(&cfg.cert)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|source| TlsError::Pem {
        what: "a private key",
        path: cfg.key.clone(),
        source,
    })?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs(path)? {
                roots.add(c).map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| TlsError::ClientCa {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(builder.with_single_cert(certs, key)?)
}

/// An acceptor for the TCP listener.
///
/// # Errors
/// As [`server_config`].
pub fn acceptor(cfg: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server_config(
        cfg,
    )?)))
}

/// An acceptor for the HTTP listener: [`server_config`] with ALPN
/// `http/1.1` (the only HTTP version it speaks, and the one WebSocket
/// upgrades need).
///
/// # Errors
/// As [`server_config`].
pub fn http_acceptor(cfg: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let mut config = server_config(cfg)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The first byte of every TLS connection (a handshake record). A peer
/// whose first byte is another one is not speaking TLS: the listener
/// answers it with a plaintext Herald Error saying so, and closes. (A
/// plaintext Hello that happens to start with this byte simply fails the
/// TLS handshake.)
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The TLS handshake of an accepted connection, within `timeout` (the
/// broker's handshake timeout). A peer whose first byte is not a
/// handshake record is not speaking TLS: it gets `plaintext_reply` (in
/// the protocol it is likely speaking: a Herald Error on the TCP port, an
/// HTTP 400 on the HTTP one) and is closed. One that sends garbage, fails
/// the handshake or is too slow is closed, logged at debug only: scanners
/// do this all day.
pub async fn handshake(
    stream: TcpStream,
    acceptor: &tokio_rustls::TlsAcceptor,
    timeout: Duration,
    peer: SocketAddr,
    plaintext_reply: &[u8],
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] != TLS_HANDSHAKE_RECORD => {
            tracing::debug!(%peer, "plaintext client on a TLS port; closing");
            let mut stream = stream;
            let write = stream.write_all(plaintext_reply);
            let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
            let _ = stream.shutdown().await;
            // Read what the peer sent before closing: closing with unread
            // data resets the connection, and a reset can discard the
            // reply before the peer reads it.
            let _ = tokio::time::timeout(Duration::from_secs(1), drain(&mut stream)).await;
            return None;
        }
        Ok(Ok(1)) => {}
        _ => return None,
    }
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "no TLS handshake within the handshake timeout");
            None
        }
    }
}

/// Reads and drops what a closing peer still sends, up to 64 KiB.
async fn drain(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    let mut left = 64 * 1024usize;
    while left > 0 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}
