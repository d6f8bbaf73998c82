//! The security flags: what `herald serve` accepts (credentials, TLS,
//! exposure) and what the client subcommands present (token, CA). See
//! docs/security.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use herald_broker::auth::tokens::{self, TokenEntry, TokensFile};
use herald_broker::auth::{jwt, AuthConfig};
use herald_broker::config::{FileAuth, FileTls};
use herald_broker::tls::TlsConfig;
use herald_client::ClientBuilder;

/// `herald serve`'s security flags.
#[derive(Debug, Args)]
pub struct ServeSecurity {
    /// Static tokens for services: a TOML file of `[[token]]` entries
    /// (name, sha256, permissions); `herald token --static` makes them.
    #[arg(long, env = "HERALD_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,
    /// Accept HS256/384/512 JWTs signed with the secret in this file
    /// (trailing whitespace ignored; at least 32 bytes).
    #[arg(long, env = "HERALD_JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,
    /// Accept EdDSA, RS256-family or ES256/384 JWTs verified with the PEM
    /// public key in this file.
    #[arg(long, env = "HERALD_JWT_PUBLIC_KEY_FILE")]
    jwt_public_key_file: Option<PathBuf>,
    /// Clock skew tolerated on a JWT's exp and nbf, in milliseconds
    /// (default 5000).
    #[arg(long, env = "HERALD_JWT_LEEWAY_MS")]
    jwt_leeway_ms: Option<u64>,
    /// Require this `aud` in every JWT.
    #[arg(long, env = "HERALD_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Require this `iss` in every JWT.
    #[arg(long, env = "HERALD_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Serve a non-loopback address without authentication: anyone who
    /// reaches the port may do anything.
    #[arg(long, env = "HERALD_ALLOW_ANONYMOUS")]
    allow_anonymous: bool,
    /// TLS on both listeners (TCP, and HTTP: https:// and wss://): PEM
    /// certificate chain (needs --tls-key).
    #[arg(long, env = "HERALD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "HERALD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by a CA in this PEM file.
    #[arg(long, env = "HERALD_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Connections one source address may hold (default 4096).
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_ADDRESS")]
    max_connections_per_address: Option<usize>,
}

/// Default clock skew tolerated on JWT times.
const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(5);

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

fn read_tokens(path: &Path) -> anyhow::Result<Vec<TokenEntry>> {
    let text = String::from_utf8(read(path, "tokens file")?)
        .with_context(|| format!("tokens file {} is not UTF-8", path.display()))?;
    let f: TokensFile =
        toml::from_str(&text).with_context(|| format!("parsing tokens file {}", path.display()))?;
    Ok(f.token)
}

impl ServeSecurity {
    /// The auth and TLS settings from the config file's sections and these
    /// flags (flags win; tokens from both are accepted).
    pub fn build(
        &self,
        file: Option<&FileAuth>,
        file_tls: Option<&FileTls>,
    ) -> anyhow::Result<(AuthConfig, Option<TlsConfig>, Option<usize>)> {
        let empty = FileAuth::default();
        let f = file.unwrap_or(&empty);
        let mut entries = f.token.clone();
        for path in [f.tokens_file.as_ref(), self.tokens_file.as_ref()]
            .into_iter()
            .flatten()
        {
            entries.extend(read_tokens(path)?);
        }
        let secret_file = self.jwt_secret_file.as_ref().or(f.jwt_secret_file.as_ref());
        let jwt_secret = match secret_file {
            Some(p) => Some(jwt::secret_from_file_content(&read(p, "JWT secret")?).to_vec()),
            None => None,
        };
        let key_file = self
            .jwt_public_key_file
            .as_ref()
            .or(f.jwt_public_key_file.as_ref());
        let auth = AuthConfig {
            tokens: tokens::from_entries(&entries).context("static tokens")?,
            jwt_secret,
            jwt_public_key_pem: key_file.map(|p| read(p, "JWT public key")).transpose()?,
            jwt_leeway: self
                .jwt_leeway_ms
                .or(f.jwt_leeway_ms)
                .map_or(DEFAULT_JWT_LEEWAY, Duration::from_millis),
            jwt_audience: self.jwt_audience.clone().or(f.jwt_audience.clone()),
            jwt_issuer: self.jwt_issuer.clone().or(f.jwt_issuer.clone()),
            allow_anonymous: self.allow_anonymous || f.allow_anonymous == Some(true),
        };
        let ft = file_tls;
        let cert = self.tls_cert.clone().or(ft.and_then(|t| t.cert.clone()));
        let key = self.tls_key.clone().or(ft.and_then(|t| t.key.clone()));
        let client_ca = self
            .tls_client_ca
            .clone()
            .or(ft.and_then(|t| t.client_ca.clone()));
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert,
                key,
                client_ca,
            }),
            (None, None) if client_ca.is_none() => None,
            (None, None) => anyhow::bail!("--tls-client-ca needs --tls-cert and --tls-key"),
            _ => anyhow::bail!("TLS needs both a certificate (--tls-cert) and a key (--tls-key)"),
        };
        Ok((auth, tls, self.max_connections_per_address))
    }
}

/// What a client subcommand presents to the broker.
#[derive(Debug, Clone, Args)]
pub struct ClientSecurity {
    /// Token to authenticate with (a JWT or a static token).
    #[arg(long, env = "HERALD_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Connect with TLS, trusting the CA certificates in this PEM file.
    #[arg(long, env = "HERALD_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Connect with TLS, trusting the system's CA certificates.
    #[arg(long, env = "HERALD_TLS", global = true)]
    pub tls: bool,
}

impl ClientSecurity {
    /// Adds the token and TLS settings to `b`.
    pub fn apply(&self, mut b: ClientBuilder) -> anyhow::Result<ClientBuilder> {
        if let Some(t) = &self.token {
            b = b.token(t.clone());
        }
        if let Some(ca) = &self.tls_ca {
            b = b.tls_ca_pem(read(ca, "CA certificates")?);
        } else if self.tls {
            b = b.tls();
        }
        Ok(b)
    }
}
