//! Where the broker is and how to reach it: `host:port` is the TCP protocol
//! (TLS over it when TLS is configured), `ws://host:port/path` and
//! `wss://…` carry the same frames in WebSocket messages (docs/protocol.md,
//! section 3.1). Parsed once per client, so a bad address fails `connect`
//! before anything is dialled.

use crate::Error;

/// A parsed broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `host:port`: frames straight on the byte stream.
    Tcp {
        /// What `TcpStream::connect` dials.
        addr: String,
    },
    /// `ws://` or `wss://`: frames in binary WebSocket messages.
    WebSocket {
        /// The whole URL, for the upgrade request (its `Host` header and
        /// path come from it).
        url: String,
        /// `host:port` to dial, the port defaulting to 80 or 443.
        addr: String,
        /// `wss://`: TLS under the WebSocket.
        secure: bool,
    },
}

impl Endpoint {
    /// Parses `s`; `tls` says whether TLS settings were given.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`]: a URL without a host or with a bad port,
    /// another scheme, TLS settings with `ws://` (use `wss://`), or a
    /// WebSocket address in a client built without the `ws` feature.
    pub(crate) fn parse(s: &str, tls: bool) -> Result<Endpoint, Error> {
        let bad = |why: &str| Error::InvalidArgument(format!("broker address {s:?}: {why}"));
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(Endpoint::Tcp { addr: s.to_owned() });
        };
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "ws" => false,
            "wss" => true,
            _ => return Err(bad("expected host:port, ws://host:port/path or wss://…")),
        };
        if !cfg!(feature = "ws") {
            return Err(bad("this herald-client was built without the `ws` feature"));
        }
        if tls && !secure {
            return Err(bad("TLS settings with a ws:// address: use wss://"));
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.contains('@') {
            return Err(bad("user names in the URL are not supported; use a token"));
        }
        let (host, port) = split_port(authority).ok_or_else(|| bad("bad host or port"))?;
        let port = port.unwrap_or(if secure { 443 } else { 80 });
        Ok(Endpoint::WebSocket {
            url: s.to_owned(),
            addr: format!("{host}:{port}"),
            secure,
        })
    }

    /// Parses a comma-separated list of addresses: the nodes of a cluster
    /// (any of them may be given alone; the others are learnt from the
    /// brokers' NotLeader answers).
    ///
    /// # Errors
    /// An empty list, or the first address [`Endpoint::parse`] refuses.
    pub(crate) fn parse_list(s: &str, tls: bool) -> Result<Vec<Endpoint>, Error> {
        let list = s
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| Endpoint::parse(a, tls))
            .collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "broker address {s:?} is empty"
            )));
        }
        Ok(list)
    }

    /// What to dial (`host:port`).
    pub(crate) fn addr(&self) -> &str {
        match self {
            Endpoint::Tcp { addr } | Endpoint::WebSocket { addr, .. } => addr,
        }
    }
}

/// `host[:port]` (`[v6][:port]` too) into the host as it goes into
/// `host:port` (brackets kept) and the port, if given.
fn split_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']')?;
        let (h, p) = authority.split_at(close + 1);
        (h, p.strip_prefix(':').map(Some).unwrap_or(None))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host == "[]" || host.contains(char::is_whitespace) {
        return None;
    }
    match port {
        None => Some((host, None)),
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => Some((host, Some(p))),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_of_nodes() {
        let l = Endpoint::parse_list("127.0.0.1:1, 127.0.0.1:2,,", false).unwrap();
        assert_eq!(
            l.iter().map(Endpoint::addr).collect::<Vec<_>>(),
            ["127.0.0.1:1", "127.0.0.1:2"]
        );
        assert!(Endpoint::parse_list(" , ", false).is_err());
        assert!(Endpoint::parse_list("a:1,ftp://b", false).is_err());
    }

    fn ws(url: &str, addr: &str, secure: bool) -> Endpoint {
        Endpoint::WebSocket {
            url: url.into(),
            addr: addr.into(),
            secure,
        }
    }

    #[test]
    fn tcp_addresses_pass_through() {
        let e = Endpoint::parse("127.0.0.1:7400", false).unwrap();
        assert_eq!(e.addr(), "127.0.0.1:7400");
        assert!(matches!(e, Endpoint::Tcp { .. }));
    }

    #[cfg(feature = "ws")]
    #[test]
    fn websocket_urls() {
        for (url, addr, secure) in [
            ("ws://127.0.0.1:7480/ws", "127.0.0.1:7480", false),
            ("ws://broker.example/ws", "broker.example:80", false),
            ("wss://broker.example/ws", "broker.example:443", true),
            ("WSS://broker.example:8443", "broker.example:8443", true),
            ("ws://[::1]:7480/ws?x=1", "[::1]:7480", false),
            ("ws://[::1]/ws", "[::1]:80", false),
        ] {
            assert_eq!(
                Endpoint::parse(url, secure).unwrap(),
                ws(url, addr, secure),
                "{url}"
            );
        }
        // wss:// without TLS settings uses the system's CAs.
        assert!(Endpoint::parse("wss://b.example/ws", false).is_ok());
    }

    #[test]
    fn bad_addresses_are_refused() {
        for (url, tls) in [
            ("http://127.0.0.1:7480/ws", false),
            ("ws://:7480/ws", false),
            ("ws:///ws", false),
            ("ws://host:0/ws", false),
            ("ws://host:99999/ws", false),
            ("ws://host:x/ws", false),
            ("ws://[::1/ws", false),
            ("ws://u:p@host/ws", false),
            ("ws://127.0.0.1:7480/ws", true),
        ] {
            let e = Endpoint::parse(url, tls).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{url}: {e}");
        }
    }
}
