//! Permission patterns in NATS's subject style: a name is split into
//! tokens at `.`; in a pattern, `*` stands for exactly one token and `>`,
//! allowed only as the last token, for one or more tokens. `orders.*`
//! matches `orders.eu` but not `orders.eu.paris` nor `orders`; `orders.>`
//! matches both of the first two; `>` alone matches every name.
//!
//! Wildcards stand for whole tokens: `orders*` is refused when a pattern is
//! read (NATS would take it literally, which surprises people more than an
//! error does).

use std::fmt;

/// One checked pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("empty pattern")]
    Empty,
    #[error("pattern {0:?} has an empty token (two dots, or a dot at an end)")]
    EmptyToken(String),
    #[error("pattern {0:?}: '>' may only be the last token")]
    InnerTail(String),
    #[error("pattern {0:?}: '*' and '>' must stand alone between dots")]
    PartialWildcard(String),
    #[error(
        "subscribe permission {0:?}: expected \"TOPIC-PATTERN\" or \"TOPIC-PATTERN GROUP-PATTERN\""
    )]
    SubscribeShape(String),
}

impl Pattern {
    /// Checks and keeps `s`.
    ///
    /// # Errors
    /// An empty pattern or token, `>` before the end, or a wildcard inside
    /// a token.
    pub fn parse(s: &str) -> Result<Pattern, PatternError> {
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        let n = s.split('.').count();
        for (i, tok) in s.split('.').enumerate() {
            if tok.is_empty() {
                return Err(PatternError::EmptyToken(s.to_owned()));
            }
            if tok == ">" && i + 1 != n {
                return Err(PatternError::InnerTail(s.to_owned()));
            }
            if tok.len() > 1 && (tok.contains('*') || tok.contains('>')) {
                return Err(PatternError::PartialWildcard(s.to_owned()));
            }
        }
        Ok(Pattern(s.to_owned()))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `>`, the pattern that matches every name.
    pub fn is_everything(&self) -> bool {
        self.0 == ">"
    }

    /// Whether `name` matches. Allocates nothing.
    pub fn matches(&self, name: &str) -> bool {
        let mut pat = self.0.split('.');
        let mut toks = name.split('.');
        loop {
            match (pat.next(), toks.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(p), Some(t)) if p == t => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A list of patterns: a name is allowed when any of them matches. The
/// empty list allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patterns(Vec<Pattern>);

impl Patterns {
    /// Parses every pattern of `list`.
    ///
    /// # Errors
    /// The first pattern refused by [`Pattern::parse`].
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Patterns, PatternError> {
        list.iter()
            .map(|s| Pattern::parse(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(Patterns)
    }

    /// A list that allows every name.
    pub fn everything() -> Patterns {
        Patterns(vec![Pattern(">".into())])
    }

    /// Whether any pattern matches `name`.
    pub fn allows(&self, name: &str) -> bool {
        self.0.iter().any(|p| p.matches(name))
    }

    /// Whether the list holds `>`, i.e. allows every name at once.
    pub fn allows_everything(&self) -> bool {
        self.0.iter().any(Pattern::is_everything)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The patterns as written.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|p| p.0.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        Pattern::parse(p).unwrap().matches(n)
    }

    #[test]
    fn star_is_one_token() {
        assert!(m("orders.*", "orders.eu"));
        assert!(!m("orders.*", "orders.eu.paris"));
        assert!(!m("orders.*", "orders"));
        assert!(m("*.created", "orders.created"));
        assert!(!m("*.created", "created"));
    }

    #[test]
    fn tail_is_one_or_more_tokens() {
        assert!(m("orders.>", "orders.eu"));
        assert!(m("orders.>", "orders.eu.paris"));
        assert!(!m("orders.>", "orders"));
        assert!(!m("orders.>", "ordersx.eu"));
        assert!(m(">", "anything.at.all"));
        assert!(m(">", "x"));
    }

    #[test]
    fn literals_match_whole_names() {
        assert!(m("orders", "orders"));
        assert!(!m("orders", "orders.eu"));
        assert!(!m("orders.eu", "orders"));
        assert!(!m("order", "orders"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert_eq!(Pattern::parse(""), Err(PatternError::Empty));
        assert!(matches!(
            Pattern::parse("a..b"),
            Err(PatternError::EmptyToken(_))
        ));
        assert!(matches!(
            Pattern::parse("a.>.b"),
            Err(PatternError::InnerTail(_))
        ));
        assert!(matches!(
            Pattern::parse("orders*"),
            Err(PatternError::PartialWildcard(_))
        ));
        assert!(matches!(
            Pattern::parse("a.b."),
            Err(PatternError::EmptyToken(_))
        ));
    }

    #[test]
    fn lists() {
        let l = Patterns::parse(&["a.*", "b.>"]).unwrap();
        assert!(l.allows("a.x") && l.allows("b.x.y") && !l.allows("c"));
        assert!(!l.allows_everything());
        assert!(Patterns::everything().allows_everything());
        assert!(!Patterns::default().allows("a"));
    }
}
