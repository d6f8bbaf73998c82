//! Who may connect, as whom, and what each connection may do
//! (docs/security.md).
//!
//! - [`Authenticator`] turns the token of a Hello (or a Refresh) into an
//!   [`Identity`]: a static token ([`tokens`]) or a signed one ([`jwt`]).
//!   With no authentication configured every connection is anonymous and
//!   may do everything; [`check_exposure`] then keeps the broker on
//!   loopback unless told otherwise.
//! - [`Identity::bind`] fixes the connection's client id: a credential is
//!   for one client id (or, for a static token, ids matching patterns), so
//!   no one can claim another's id (and read its inbox).
//! - [`grants::Access`] decides each request's declared [`grants::Need`]
//!   (see `crate::handlers`) and caches decisions per connection.

pub mod grants;
pub mod jwt;
pub mod pattern;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use grants::{Access, GrantSpec, Grants, Need};
use jwt::{JwtConfigError, JwtVerifier};
use tokens::{ClientIds, StaticToken};

use crate::BrokerError;

/// Authentication settings: credentials the broker accepts. Empty (the
/// default): authentication is off.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// Static tokens (hashes), for services.
    pub tokens: Vec<StaticToken>,
    /// HMAC secret for HS256/384/512 JWTs.
    pub jwt_secret: Option<Vec<u8>>,
    /// PEM public key (Ed25519, RSA or EC) for EdDSA, RS*/PS* or ES* JWTs.
    pub jwt_public_key_pem: Option<Vec<u8>>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub jwt_leeway: Duration,
    /// When set, a JWT's `aud` must be this.
    pub jwt_audience: Option<String>,
    /// When set, a JWT's `iss` must be this.
    pub jwt_issuer: Option<String>,
    /// Serve a non-loopback address without authentication (the operator
    /// accepts that anyone who reaches the port may do anything).
    pub allow_anonymous: bool,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("tokens", &self.tokens)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwt_public_key", &self.jwt_public_key_pem.is_some())
            .field("jwt_leeway", &self.jwt_leeway)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("allow_anonymous", &self.allow_anonymous)
            .finish()
    }
}

impl AuthConfig {
    /// Whether connections must present a credential.
    pub fn is_configured(&self) -> bool {
        !self.tokens.is_empty() || self.jwt_secret.is_some() || self.jwt_public_key_pem.is_some()
    }
}

/// Refuses to serve `addr` to the network without authentication: with no
/// credential configured and no client-certificate check, only a loopback
/// address is served, unless `allow_anonymous` (as Redis's protected mode
/// does).
///
/// # Errors
/// A message saying how to configure authentication.
pub fn check_exposure(
    addr: SocketAddr,
    auth: &AuthConfig,
    client_certs: bool,
) -> Result<(), BrokerError> {
    if addr.ip().is_loopback() || auth.is_configured() || client_certs || auth.allow_anonymous {
        return Ok(());
    }
    Err(BrokerError::Config(format!(
        "refusing to listen on {addr} without authentication: anyone who reaches it could \
         publish, read and delete anything. Configure credentials (--tokens-file, \
         --jwt-secret-file or --jwt-public-key-file, or the config file's [auth] section; \
         see docs/security.md), require client certificates (--tls-client-ca), listen on \
         127.0.0.1, or pass --allow-anonymous to accept the risk"
    )))
}

/// Why a credential was refused. Messages never contain the token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("this broker requires a token (Hello carried none)")]
    Missing,
    #[error("unknown token")]
    UnknownToken,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("client id {requested:?} is not allowed for this token (it is for {allowed})")]
    ClientId { requested: String, allowed: String },
    #[error("a refreshed token must be for the same client id {current:?}, not {new:?}")]
    ClientIdChanged { current: String, new: String },
}

impl From<AuthError> for BrokerError {
    fn from(e: AuthError) -> BrokerError {
        match e {
            AuthError::Expired => BrokerError::TokenExpired(e.to_string()),
            e => BrokerError::Unauthorized(e.to_string()),
        }
    }
}

/// Which client ids an identity may use.
#[derive(Debug, Clone)]
pub enum Binding {
    /// Anonymous: any id (or one the broker assigns).
    Any,
    Ids(ClientIds),
}

/// Who a connection is, per its credential.
#[derive(Debug, Clone)]
pub struct Identity {
    /// For logs: the static token's name, the JWT's `sub`, `anonymous`.
    pub name: String,
    pub binding: Binding,
    /// `None`: everything is allowed (authentication off).
    pub grants: Option<Arc<Grants>>,
    /// When the credential stops being valid (JWT `exp` plus leeway).
    pub expires_at: Option<SystemTime>,
}

impl Identity {
    /// The client id the connection gets, given the one its Hello asked
    /// for (`None`: the broker picks: the credential's own id, or a random
    /// one for anonymous connections).
    ///
    /// # Errors
    /// [`AuthError::ClientId`] when the credential is for another id.
    pub fn bind(&self, requested: Option<String>) -> Result<String, AuthError> {
        let ids = match &self.binding {
            Binding::Any => {
                return Ok(requested.unwrap_or_else(|| format!("c-{:016x}", rand::random::<u64>())))
            }
            Binding::Ids(ids) => ids,
        };
        match (ids, requested) {
            (ClientIds::Exactly(id), None) => Ok(id.clone()),
            (ClientIds::Exactly(id), Some(r)) if r == *id => Ok(r),
            (ClientIds::Exactly(id), Some(r)) => Err(AuthError::ClientId {
                requested: r,
                allowed: format!("{id:?}"),
            }),
            (ClientIds::Matching { default, .. }, None) => Ok(default.clone()),
            (ClientIds::Matching { patterns, .. }, Some(r)) if patterns.allows(&r) => Ok(r),
            (ClientIds::Matching { patterns, .. }, Some(r)) => Err(AuthError::ClientId {
                requested: r,
                allowed: format!("ids matching {:?}", patterns.to_strings()),
            }),
        }
    }
}

/// Checks credentials; one per broker, shared by every session.
pub struct Authenticator {
    tokens: Vec<StaticToken>,
    jwt: Option<JwtVerifier>,
    required: bool,
}

impl Authenticator {
    /// Builds the checker for `cfg`.
    ///
    /// # Errors
    /// Unusable JWT settings (short secret, unreadable key).
    pub fn new(cfg: &AuthConfig) -> Result<Authenticator, JwtConfigError> {
        let jwt = if cfg.jwt_secret.is_some() || cfg.jwt_public_key_pem.is_some() {
            Some(JwtVerifier::new(
                cfg.jwt_secret.as_deref(),
                cfg.jwt_public_key_pem.as_deref(),
                cfg.jwt_leeway,
                cfg.jwt_audience.clone(),
                cfg.jwt_issuer.clone(),
            )?)
        } else {
            None
        };
        Ok(Authenticator {
            tokens: cfg.tokens.clone(),
            jwt,
            required: cfg.is_configured(),
        })
    }

    /// Whether connections must present a credential.
    pub fn is_required(&self) -> bool {
        self.required
    }

    /// The identity `token` proves. With authentication off every
    /// connection is anonymous, whatever it sends.
    ///
    /// # Errors
    /// See [`AuthError`].
    pub fn authenticate(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        if !self.required {
            return Ok(Identity {
                name: "anonymous".into(),
                binding: Binding::Any,
                grants: None,
                expires_at: None,
            });
        }
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        if let Some(t) = tokens::find(&self.tokens, token) {
            return Ok(Identity {
                name: t.name.clone(),
                binding: Binding::Ids(t.client_ids.clone()),
                grants: Some(Arc::new(t.grants.clone())),
                expires_at: None,
            });
        }
        match &self.jwt {
            Some(v) if token.split('.').count() == 3 => {
                let ok = v.verify(token)?;
                Ok(Identity {
                    name: ok.sub.clone(),
                    binding: Binding::Ids(ClientIds::Exactly(ok.sub)),
                    grants: Some(Arc::new(ok.grants)),
                    expires_at: Some(ok.expires_at),
                })
            }
            _ => Err(AuthError::UnknownToken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn static_token(name: &str, token: &str) -> StaticToken {
        StaticToken {
            name: name.into(),
            sha256: tokens::digest(token),
            client_ids: ClientIds::Exactly(name.into()),
            grants: Grants::default(),
        }
    }

    #[test]
    fn off_means_anonymous() {
        let a = Authenticator::new(&AuthConfig::default()).unwrap();
        let id = a.authenticate(Some("whatever")).unwrap();
        assert!(id.grants.is_none());
        assert_eq!(id.bind(Some("x".into())).unwrap(), "x");
        assert!(id.bind(None).unwrap().starts_with("c-"));
    }

    #[test]
    fn static_tokens_bind_their_name() {
        let cfg = AuthConfig {
            tokens: vec![static_token("billing", "s3cret")],
            ..Default::default()
        };
        let a = Authenticator::new(&cfg).unwrap();
        assert!(matches!(a.authenticate(None), Err(AuthError::Missing)));
        assert!(matches!(
            a.authenticate(Some("nope")),
            Err(AuthError::UnknownToken)
        ));
        let id = a.authenticate(Some("s3cret")).unwrap();
        assert_eq!(id.bind(None).unwrap(), "billing");
        assert_eq!(id.bind(Some("billing".into())).unwrap(), "billing");
        let e = id.bind(Some("alice".into())).unwrap_err();
        assert!(e.to_string().contains("\"alice\""), "{e}");
    }

    #[test]
    fn exposure() {
        let any: SocketAddr = "0.0.0.0:7400".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:7400".parse().unwrap();
        let off = AuthConfig::default();
        assert!(check_exposure(lo, &off, false).is_ok());
        let e = check_exposure(any, &off, false).unwrap_err().to_string();
        assert!(
            e.contains("--allow-anonymous") && e.contains("--tokens-file"),
            "{e}"
        );
        assert!(check_exposure(any, &off, true).is_ok());
        let anon = AuthConfig {
            allow_anonymous: true,
            ..Default::default()
        };
        assert!(check_exposure(any, &anon, false).is_ok());
        let on = AuthConfig {
            tokens: vec![static_token("a", "b")],
            ..Default::default()
        };
        assert!(check_exposure(any, &on, false).is_ok());
    }
}
