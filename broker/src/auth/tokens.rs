//! Static tokens for services: each entry of the tokens file (or of the
//! config file's `[auth]` section) holds the SHA-256 of a token, never the
//! token itself, with a name and permissions. A presented token is hashed
//! and compared with every entry in constant time.
//!
//! ```toml
//! [[token]]
//! name = "billing"
//! sha256 = "<64 hex digits: sha256 of the token>"
//! client-ids = ["billing", "billing.*"]   # optional; default: the name
//! publish = ["invoices.>"]
//! subscribe = ["orders.> billing"]
//! ```
//! `herald token --static NAME` makes a token and prints its entry.

use serde::Deserialize;

use super::grants::{GrantSpec, Grants};
use super::pattern::Patterns;

/// Bytes of a SHA-256 digest.
pub const DIGEST_LEN: usize = 32;

/// One entry as written in a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TokenEntry {
    pub name: String,
    pub sha256: String,
    /// Client ids a connection with this token may use (patterns); absent:
    /// only `name`.
    #[serde(default)]
    pub client_ids: Option<Vec<String>>,
    // The permissions, as in [`GrantSpec`] (spelled out: serde's `flatten`
    // does not work with `deny_unknown_fields`, and a misspelled key must
    // be an error, not a permission silently missing).
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub subscribe: Vec<String>,
    #[serde(default)]
    pub admin: Vec<String>,
    #[serde(default)]
    pub join: Vec<String>,
    #[serde(default)]
    pub emit: Vec<String>,
    #[serde(default)]
    pub request: Vec<String>,
    /// A cluster node's token (Raft calls between nodes).
    #[serde(default)]
    pub cluster: bool,
}

impl TokenEntry {
    /// The entry's permissions.
    pub fn grant_spec(&self) -> GrantSpec {
        GrantSpec {
            publish: self.publish.clone(),
            subscribe: self.subscribe.clone(),
            admin: self.admin.clone(),
            join: self.join.clone(),
            emit: self.emit.clone(),
            request: self.request.clone(),
            cluster: self.cluster,
        }
    }
}

/// The tokens file: `[[token]]` entries.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    #[serde(default)]
    pub token: Vec<TokenEntry>,
}

/// Which client ids a credential may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIds {
    /// Exactly this one (a JWT's `sub`, a static token's name).
    Exactly(String),
    /// Any id matching one of these; a Hello without an id gets `default`.
    Matching { patterns: Patterns, default: String },
}

/// A checked static token.
#[derive(Clone)]
pub struct StaticToken {
    pub name: String,
    pub sha256: [u8; DIGEST_LEN],
    pub client_ids: ClientIds,
    pub grants: Grants,
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticToken")
            .field("name", &self.name)
            .field("client_ids", &self.client_ids)
            .finish_non_exhaustive()
    }
}

/// Why a tokens file entry was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("token {name:?}: sha256 must be 64 hex digits (the SHA-256 of the token, as `herald token --static` prints it)")]
    BadDigest { name: String },
    #[error("token {name:?}: {source}")]
    Pattern {
        name: String,
        source: super::pattern::PatternError,
    },
    #[error("token {0:?} appears twice")]
    Duplicate(String),
    #[error("token entry with an empty name")]
    EmptyName,
}

impl StaticToken {
    /// Checks one file entry.
    ///
    /// # Errors
    /// A malformed digest or pattern.
    pub fn from_entry(e: &TokenEntry) -> Result<StaticToken, TokenFileError> {
        if e.name.is_empty() {
            return Err(TokenFileError::EmptyName);
        }
        let sha256 = parse_hex(&e.sha256).ok_or_else(|| TokenFileError::BadDigest {
            name: e.name.clone(),
        })?;
        let pattern = |source| TokenFileError::Pattern {
            name: e.name.clone(),
            source,
        };
        let client_ids = match &e.client_ids {
            None => ClientIds::Exactly(e.name.clone()),
            Some(list) => ClientIds::Matching {
                patterns: Patterns::parse(list).map_err(pattern)?,
                default: e.name.clone(),
            },
        };
        Ok(StaticToken {
            name: e.name.clone(),
            sha256,
            client_ids,
            grants: Grants::parse(&e.grant_spec()).map_err(pattern)?,
        })
    }
}

/// Checks every entry; names must be unique (they name the service in
/// logs).
///
/// # Errors
/// The first bad entry.
pub fn from_entries(entries: &[TokenEntry]) -> Result<Vec<StaticToken>, TokenFileError> {
    let mut out: Vec<StaticToken> = Vec::with_capacity(entries.len());
    for e in entries {
        if out.iter().any(|t| t.name == e.name) {
            return Err(TokenFileError::Duplicate(e.name.clone()));
        }
        out.push(StaticToken::from_entry(e)?);
    }
    Ok(out)
}

/// SHA-256 of `token`.
pub fn digest(token: &str) -> [u8; DIGEST_LEN] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; DIGEST_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(s: &str) -> Option<[u8; DIGEST_LEN]> {
    let s = s.trim();
    if s.len() != DIGEST_LEN * 2 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; DIGEST_LEN];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Equality of two digests in time independent of where they differ.
fn same(a: &[u8; DIGEST_LEN], b: &[u8; DIGEST_LEN]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The entry whose digest is `token`'s. Every entry is compared, whatever
/// matched, so the time taken says nothing about which entry (if any) is
/// close.
pub fn find<'a>(tokens: &'a [StaticToken], token: &str) -> Option<&'a StaticToken> {
    let d = digest(token);
    let mut found = None;
    for t in tokens {
        if same(&t.sha256, &d) && found.is_none() {
            found = Some(t);
        }
    }
    found
}

/// A short fingerprint of a token for logs: the first 8 hex digits of its
/// SHA-256. It tells two tokens apart without revealing either.
pub fn fingerprint(token: &str) -> String {
    to_hex(&digest(token)[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, token: &str) -> TokenEntry {
        TokenEntry {
            name: name.into(),
            sha256: to_hex(&digest(token)),
            client_ids: None,
            publish: vec![],
            subscribe: vec![],
            admin: vec![],
            join: vec![],
            emit: vec![],
            request: vec![],
            cluster: false,
        }
    }

    #[test]
    fn finds_by_hash() {
        let tokens = from_entries(&[entry("a", "secret-a"), entry("b", "secret-b")]).unwrap();
        assert_eq!(
            find(&tokens, "secret-b").map(|t| t.name.as_str()),
            Some("b")
        );
        assert!(find(&tokens, "secret-c").is_none());
        assert!(find(&tokens, "").is_none());
    }

    #[test]
    fn file_shape() {
        let text = r#"
            [[token]]
            name = "billing"
            sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            client-ids = ["billing.*"]
            publish = ["invoices.>"]
            subscribe = ["orders.> billing"]
        "#;
        let f: TokensFile = toml::from_str(text).unwrap();
        let t = from_entries(&f.token).unwrap();
        assert_eq!(t[0].sha256, digest("test"));
        assert!(matches!(t[0].client_ids, ClientIds::Matching { .. }));
        let bad: Result<TokensFile, _> =
            toml::from_str("[[token]]\nname=\"x\"\nsha256=\"00\"\npublsh=[]");
        assert!(bad.is_err(), "unknown keys are refused");
        let short = TokenEntry {
            sha256: "abcd".into(),
            ..entry("x", "y")
        };
        assert!(StaticToken::from_entry(&short).is_err());
        assert!(from_entries(&[entry("a", "1"), entry("a", "2")]).is_err());
    }

    #[test]
    fn fingerprints_are_short_and_stable() {
        assert_eq!(fingerprint("test"), "9f86d081");
    }
}
