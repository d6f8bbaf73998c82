//! TLS for the listeners (rustls with the ring provider): loading the
//! certificate chain, the key and the optional client CA from PEM files
//! into a [`rustls::ServerConfig`]. The TCP listener wraps each accepted
//! stream with it before the session starts (see `server`); any other
//! listener can build its own acceptor from [`server_config`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// The first byte of every TLS connection (a handshake record). A peer
/// whose first byte is another one is not speaking TLS: the listener
/// answers it with a plaintext Herald Error saying so, and closes. (A
/// plaintext Hello that happens to start with this byte simply fails the
/// TLS handshake.)
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;
