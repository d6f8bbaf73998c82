//! Signed tokens (JWT) for end users, issued by the application's own
//! backend: HS256/384/512 with a shared secret, EdDSA, RS256-family or
//! ES256/384 with a public key. Each key is used only with its own
//! algorithms (no algorithm confusion: an HS256 token is never checked
//! against the public key, nor "none" accepted).
//!
//! Claims: `sub` (the client id, bound to the connection), `exp`
//! (required), `nbf` (optional), and `herald`, the permissions
//! ([`GrantSpec`]): `{"publish": ["orders.>"], "subscribe": [...], ...}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::grants::{GrantSpec, Grants};
use super::AuthError;

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The client id this token is for.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// What the bearer may do.
    #[serde(default)]
    pub herald: GrantSpec,
}

/// What a verified token says.
#[derive(Debug, Clone)]
pub struct Verified {
    pub sub: String,
    pub expires_at: SystemTime,
    pub grants: Grants,
}

/// The kind of the configured public key, which fixes its algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Ed,
    Rsa,
    Ec,
}

/// Shortest HMAC secret accepted: HS256's own output size.
pub const MIN_SECRET_BYTES: usize = 32;

/// Verifies tokens against the configured keys.
pub struct JwtVerifier {
    secret: Option<DecodingKey>,
    public: Option<(DecodingKey, KeyKind)>,
    leeway: Duration,
    audience: Option<String>,
    issuer: Option<String>,
}

/// Why the JWT settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    #[error("the JWT secret has {0} bytes; use at least {MIN_SECRET_BYTES} random bytes")]
    ShortSecret(usize),
    #[error("the JWT public key is not a PEM Ed25519, RSA or EC public key: {0}")]
    BadPublicKey(String),
}

impl JwtVerifier {
    /// Builds a verifier from a secret and/or a PEM public key.
    ///
    /// # Errors
    /// A secret shorter than [`MIN_SECRET_BYTES`] or an unreadable key.
    pub fn new(
        secret: Option<&[u8]>,
        public_pem: Option<&[u8]>,
        leeway: Duration,
        audience: Option<String>,
        issuer: Option<String>,
    ) -> Result<JwtVerifier, JwtConfigError> {
        let secret = match secret {
            Some(s) if s.len() < MIN_SECRET_BYTES => {
                return Err(JwtConfigError::ShortSecret(s.len()))
            }
            Some(s) => Some(DecodingKey::from_secret(s)),
            None => None,
        };
        let public = match public_pem {
            None => None,
            Some(pem) => Some(
                DecodingKey::from_ed_pem(pem)
                    .map(|k| (k, KeyKind::Ed))
                    .or_else(|_| DecodingKey::from_rsa_pem(pem).map(|k| (k, KeyKind::Rsa)))
                    .or_else(|_| DecodingKey::from_ec_pem(pem).map(|k| (k, KeyKind::Ec)))
                    .map_err(|e| JwtConfigError::BadPublicKey(e.to_string()))?,
            ),
        };
        Ok(JwtVerifier {
            secret,
            public,
            leeway,
            audience,
            issuer,
        })
    }

    /// Checks `token`'s signature, algorithm, `exp`, `nbf` (and audience
    /// and issuer when configured), and parses its permissions.
    ///
    /// # Errors
    /// [`AuthError::Expired`], [`AuthError::NotYetValid`] or
    /// [`AuthError::Invalid`] saying what is wrong (never echoing the
    /// token).
    pub fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("not a JWT: {e}")))?;
        let alg = header.alg;
        let key = self.key_for(alg).ok_or_else(|| {
            AuthError::Invalid(format!(
                "token signed with {alg:?}, which this broker has no key for"
            ))
        })?;
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = self.leeway.as_secs();
        v.validate_nbf = true;
        v.required_spec_claims = ["exp", "sub"].iter().map(|s| s.to_string()).collect();
        match &self.audience {
            Some(a) => v.set_audience(&[a]),
            None => v.validate_aud = false,
        }
        if let Some(i) = &self.issuer {
            v.set_issuer(&[i]);
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, &v).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
            _ => AuthError::Invalid(e.to_string()),
        })?;
        let c = data.claims;
        if c.sub.is_empty() || c.sub.len() > 200 {
            return Err(AuthError::Invalid("sub must be 1 to 200 bytes".into()));
        }
        let grants = Grants::parse(&c.herald)
            .map_err(|e| AuthError::Invalid(format!("herald claim: {e}")))?;
        Ok(Verified {
            sub: c.sub,
            expires_at: UNIX_EPOCH + Duration::from_secs(c.exp) + self.leeway,
            grants,
        })
    }

    fn key_for(&self, alg: Algorithm) -> Option<&DecodingKey> {
        use Algorithm::*;
        let kind = match alg {
            HS256 | HS384 | HS512 => return self.secret.as_ref(),
            EdDSA => KeyKind::Ed,
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => KeyKind::Rsa,
            ES256 | ES384 => KeyKind::Ec,
        };
        match &self.public {
            Some((k, have)) if *have == kind => Some(k),
            _ => None,
        }
    }
}

/// Signs `claims` with HS256 (for `herald token` and tests; production
/// tokens come from the application's backend).
///
/// # Errors
/// Serialisation failure (not expected for these claims).
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> Result<String, AuthError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::Invalid(e.to_string()))
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The bytes of a secret file: its content without trailing whitespace,
/// so a file written by `echo` and one written without a newline hold the
/// same secret. The issuing backend must sign with the same bytes.
pub fn secret_from_file_content(content: &[u8]) -> &[u8] {
    let end = content
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &content[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            exp,
            nbf: None,
            iat: None,
            herald: GrantSpec {
                publish: vec!["orders.>".into()],
                ..Default::default()
            },
        }
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(Some(SECRET), None, Duration::ZERO, None, None).unwrap()
    }

    #[test]
    fn round_trip() {
        let t = mint_hs256(SECRET, &claims(now_secs() + 60)).unwrap();
        let v = verifier().verify(&t).unwrap();
        assert_eq!(v.sub, "alice");
    }

    #[test]
    fn refusals() {
        let v = verifier();
        let expired = mint_hs256(SECRET, &claims(now_secs() - 10)).unwrap();
        assert!(matches!(v.verify(&expired), Err(AuthError::Expired)));
        let mut early = claims(now_secs() + 600);
        early.nbf = Some(now_secs() + 300);
        let early = mint_hs256(SECRET, &early).unwrap();
        assert!(matches!(v.verify(&early), Err(AuthError::NotYetValid)));
        let other = mint_hs256(
            b"another-secret-another-secret-32",
            &claims(now_secs() + 60),
        )
        .unwrap();
        match v.verify(&other) {
            Err(AuthError::Invalid(m)) => assert!(m.contains("signature"), "{m}"),
            r => panic!("{r:?}"),
        }
        assert!(matches!(v.verify("garbage"), Err(AuthError::Invalid(_))));
        // No public key configured: an EdDSA header finds no key.
        let ed = "eyJhbGciOiJFZERTQSJ9.e30.AAAA";
        match v.verify(ed) {
            Err(AuthError::Invalid(m)) => assert!(m.contains("EdDSA"), "{m}"),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(JwtVerifier::new(Some(b"short"), None, Duration::ZERO, None, None).is_err());
        assert!(JwtVerifier::new(None, Some(b"not a key"), Duration::ZERO, None, None).is_err());
    }

    #[test]
    fn secret_files_lose_trailing_whitespace() {
        assert_eq!(secret_from_file_content(b"abc\n"), b"abc");
        assert_eq!(secret_from_file_content(b"abc\r\n  "), b"abc");
        assert_eq!(secret_from_file_content(b"\n"), b"");
    }
}
