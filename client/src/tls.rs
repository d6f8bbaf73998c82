//! TLS for the connection (rustls with the ring provider, feature `tls`):
//! which CAs to trust, the name to check, an optional client certificate,
//! and the stream type the connection task reads and writes.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::Error;

/// Any byte stream the connection can use: plain TCP, TLS over it, or a
/// WebSocket over either (`ws_stream`).
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The connection's stream, whichever transport it is.
pub(crate) type Stream = Box<dyn Io>;

/// Whose certificates the client trusts.
#[derive(Clone)]
pub enum TlsRoots {
    /// The operating system's CA certificates.
    System,
    /// Only the CA certificates of this PEM text.
    Pem(Vec<u8>),
}

/// TLS settings of a client ([`crate::ClientBuilder::tls`] and friends).
#[derive(Clone)]
pub struct TlsOptions {
    /// Trusted CAs.
    pub roots: TlsRoots,
    /// The name the broker's certificate must carry; default: the host
    /// part of the address.
    pub server_name: Option<String>,
    /// A client certificate chain and its key (PEM), for brokers that
    /// require one (`--tls-client-ca`).
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsOptions {
    /// Trust the system's CAs, check the address's host name, no client
    /// certificate.
    pub(crate) fn system() -> TlsOptions {
        TlsOptions {
            roots: TlsRoots::System,
            server_name: None,
            client_cert: None,
        }
    }
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let roots = match self.roots {
            TlsRoots::System => "system",
            TlsRoots::Pem(_) => "pem",
        };
        f.debug_struct("TlsOptions")
            .field("roots", &roots)
            .field("server_name", &self.server_name)
            .field("client_cert", &self.client_cert.is_some())
            .finish()
    }
}

/// A ready TLS setup: the rustls configuration, built once per client.
#[derive(Clone)]
pub(crate) struct Tls {
    #[cfg(feature = "tls")]
    connector: tokio_rustls::TlsConnector,
    server_name: Option<String>,
}

/// Builds the TLS setup of `opts`.
///
/// # Errors
/// [`Error::InvalidArgument`]: unreadable PEM, no usable CA, a bad
/// client key; or a client built without the `tls` feature.
#[cfg(feature = "tls")]
pub(crate) fn setup(opts: &TlsOptions) -> Result<Tls, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let bad =
        |what: &str, e: &dyn std::fmt::Display| Error::InvalidArgument(format!("TLS {what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    match &opts.roots {
        TlsRoots::System => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
        }
        TlsRoots::Pem(pem) => {
            for c in CertificateDer::pem_slice_iter(pem) {
                let c = c.map_err(|e| bad("CA certificates", &e))?;
                roots.add(c).map_err(|e| bad("CA certificate", &e))?;
            }
        }
    }
    if roots.is_empty() {
        return Err(Error::InvalidArgument(
            "TLS: no trusted CA certificate (empty PEM, or none found on the system)".into(),
        ));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("settings", &e))?
        .with_root_certificates(roots);
    let config = match &opts.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("client certificate", &e))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad("client key", &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad("client certificate", &e))?
        }
    };
    Ok(Tls {
        connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
        server_name: opts.server_name.clone(),
    })
}

/// Without the `tls` feature there is no TLS to set up.
#[cfg(not(feature = "tls"))]
pub(crate) fn setup(_opts: &TlsOptions) -> Result<Tls, Error> {
    Err(Error::InvalidArgument(
        "this herald-client was built without the `tls` feature".into(),
    ))
}

/// The host part of `host:port` (`[::1]:7400` gives `::1`).
#[cfg(feature = "tls")]
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl Tls {
    /// The TLS handshake over `tcp` to the broker at `addr`.
    ///
    /// # Errors
    /// Why the handshake failed, in words (an untrusted certificate, a
    /// name mismatch, a peer that does not speak TLS).
    #[cfg(feature = "tls")]
    pub(crate) async fn connect(&self, addr: &str, tcp: TcpStream) -> Result<Stream, String> {
        let name = self.server_name.as_deref().unwrap_or_else(|| host_of(addr));
        let server_name = rustls::pki_types::ServerName::try_from(name.to_owned())
            .map_err(|e| format!("TLS: {name:?} is not a valid server name: {e}"))?;
        match self.connector.connect(server_name, tcp).await {
            Ok(s) => Ok(Box::new(s)),
            Err(e) => Err(format!("TLS handshake with {addr} failed: {e}")),
        }
    }

    #[cfg(not(feature = "tls"))]
    pub(crate) async fn connect(&self, _addr: &str, _tcp: TcpStream) -> Result<Stream, String> {
        let _ = &self.server_name;
        Err("built without TLS".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "tls")]
    #[test]
    fn hosts() {
        assert_eq!(host_of("broker.example:7400"), "broker.example");
        assert_eq!(host_of("[::1]:7400"), "::1");
        assert_eq!(host_of("127.0.0.1:1"), "127.0.0.1");
    }
}
