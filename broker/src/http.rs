//! The HTTP listener: `GET /ws` upgrades to a WebSocket session (the same
//! frames and the same session code as TCP, see [`crate::ws`]); `GET
//! /herald.js` and `GET /` serve the JavaScript client and the chat page,
//! compiled into the binary; `GET /healthz` answers 200 while the broker
//! serves; `GET /readyz` answers 200 once recovery finished and while the
//! data folder takes writes (see [`crate::ready`]), 503 otherwise; `GET
//! /metrics` is the Prometheus endpoint (see [`crate::metrics`]).
//!
//! The listener serves from before recovery on, so that `/healthz` and
//! `/readyz` answer while the logs are being opened; `/ws` and `/metrics`
//! answer 503 until then.
//!
//! With TLS configured (`--tls-cert`/`--tls-key`, the TCP listener's
//! certificate), the listener speaks HTTPS only, and so wss:// (see
//! [`crate::https`]); client certificates are required here too when
//! `--tls-client-ca` is set. Without, plain HTTP.
//!
//! A WebSocket session counts against the same connection limit as a TCP
//! one and is tracked with the TCP sessions, so a shutdown drains it the
//! same way (confirms out, GoingAway, close 1001).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use futures::FutureExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::BrokerConfig;
use crate::http_listener;
use crate::ready::Readiness;
use crate::server::PerAddress;
use crate::session::{self, Shared};
use crate::BrokerError;

/// What the WebSocket layer reads at once per connection (tungstenite's
/// default is 128 KiB, allocated up front: ten thousand idle browser tabs
/// would hold over a GiB). Bigger messages still arrive; the buffer grows
/// for them.
const WS_READ_BUFFER: usize = 2 * 1024;

/// One file served from the binary.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

/// A module of the JavaScript client, `js/src/<file>`, served at
/// `/herald/<file>`.
macro_rules! client_module {
    ($file:literal) => {
        Asset {
            path: concat!("/herald/", $file),
            content_type: JS,
            body: include_str!(concat!("../../js/src/", $file)),
        }
    };
}

/// The JavaScript client (js/src, one ES module per file, served as they
/// are: no build step) and the chat page (js/chat). `/herald.js` is the
/// entry point a page imports.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../js/chat/index.html"),
    },
    Asset {
        path: "/chat.js",
        content_type: JS,
        body: include_str!("../../js/chat/chat.js"),
    },
    Asset {
        path: "/chat.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../js/chat/chat.css"),
    },
    Asset {
        path: "/herald.js",
        content_type: JS,
        body: "export * from \"./herald/index.js\";\n",
    },
    client_module!("index.js"),
    client_module!("client.js"),
    client_module!("codec.js"),
    client_module!("postcard.js"),
    client_module!("batch.js"),
    client_module!("subscription.js"),
    client_module!("rooms.js"),
    client_module!("nodes.js"),
    client_module!("errors.js"),
    client_module!("text.js"),
];

/// The broker's shared state, set once recovery has finished.
pub(crate) type Serving = Arc<OnceLock<Arc<Shared>>>;

/// What the listener is started with, before recovery.
pub(crate) struct Parts {
    pub(crate) config: Arc<BrokerConfig>,
    pub(crate) serving: Serving,
    pub(crate) ready: Arc<Readiness>,
    /// The broker's shutdown token (a failed start cancels it too).
    pub(crate) shutdown: CancellationToken,
    /// The broker's session tracker: shutdown waits for WebSocket sessions
    /// too.
    pub(crate) sessions: TaskTracker,
    /// The broker's connection limit, shared with TCP.
    pub(crate) limit: Arc<Semaphore>,
    /// The per-address cap, shared with TCP.
    pub(crate) per_address: Arc<PerAddress>,
}

/// What the handlers share.
#[derive(Clone)]
struct Web {
    parts: Arc<Parts>,
}

impl Web {
    /// The broker's state, once recovery has finished.
    fn shared(&self) -> Option<&Arc<Shared>> {
        self.parts.serving.get()
    }
}

/// The answer of `/ws` and `/metrics` while the broker recovers.
fn starting() -> Response {
    let msg = "starting: recovering the data folder\n";
    (StatusCode::SERVICE_UNAVAILABLE, msg).into_response()
}

/// Binds the HTTP address, if there is one.
///
/// # Errors
/// [`BrokerError::Listen`] when the address is busy or not ours, unless it
/// is the default one (`http_optional`): then this warns and returns None.
pub async fn bind(config: &BrokerConfig) -> Result<Option<TcpListener>, BrokerError> {
    let Some(addr) = config.http else {
        return Ok(None);
    };
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(Some(l)),
        Err(error) if config.http_optional => {
            tracing::warn!(%addr, %error, "HTTP listener off: cannot listen on its default address (use --http ADDR or --no-http)");
            Ok(None)
        }
        Err(error) => Err(BrokerError::Listen { addr, error }),
    }
}

/// Serves HTTP on `listener` until the broker shuts down; HTTPS (and
/// wss://) when `tls` is given.
pub(crate) fn spawn(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    parts: Parts,
) -> tokio::task::JoinHandle<()> {
    let shutdown = parts.shutdown.clone();
    let handshake_timeout = parts.config.handshake_timeout;
    let max_pending = parts.config.max_connections;
    let per_address = parts.per_address.clone();
    let web = Web {
        parts: Arc::new(parts),
    };
    let app = Router::new()
        .route("/ws", get(upgrade))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(get(asset))
        .with_state(web);
    let limits = http_listener::Limits {
        header_timeout: handshake_timeout,
        max_open: max_pending,
        per_address: per_address.clone(),
    };
    tokio::spawn(async move {
        match tls {
            None => {
                let listener = listener.tap_io(|tcp| session::tune(tcp));
                http_listener::serve(listener, app, limits, shutdown).await;
            }
            Some(acceptor) => {
                let listener = crate::https::TlsListener::new(
                    listener,
                    acceptor,
                    handshake_timeout,
                    max_pending,
                    per_address,
                );
                http_listener::serve(listener, app, limits, shutdown).await;
            }
        }
    })
}

async fn healthz(State(web): State<Web>) -> Response {
    if web.parts.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

/// 200 once recovery finished and while the data folder takes writes.
async fn readyz(State(web): State<Web>) -> Response {
    if web.parts.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match web.parts.ready.check().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// The Prometheus endpoint.
async fn metrics(State(web): State<Web>) -> Response {
    let Some(shared) = web.shared() else {
        return starting();
    };
    let body = crate::metrics::render(shared).await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

async fn asset(uri: Uri) -> Response {
    match ASSETS.iter().find(|a| a.path == uri.path()) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            a.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// Whether a page from the request's `Origin` may open a session: no
/// Origin (not a browser), one of `allowed`, or a page of this very
/// listener reached by an address (the Origin's host is the Host the
/// request was sent to, and that is an IP address or `localhost`).
///
/// A page reached by any other name must be listed: a name proves nothing
/// by itself. A page of `attacker.example`, once that name is made to
/// resolve to the broker's address (DNS rebinding), sends Origin and Host
/// both `attacker.example` and passed a bare "same host" check.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin.split_once("://"), host) {
        (Some((_, origin_host)), Some(host)) => {
            origin_host.eq_ignore_ascii_case(host) && names_an_address(host)
        }
        _ => false,
    }
}

/// Whether a Host header (`name[:port]`) names an IP address or
/// `localhost`: names no one else can point at this listener.
fn names_an_address(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => {
            return rest
                .split_once(']')
                .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

async fn upgrade(
    State(web): State<Web>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(shared) = web.shared().cloned() else {
        return starting();
    };
    let cfg = &shared.config;
    if shared.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if !origin_allowed(&headers, &cfg.http_allowed_origins) {
        tracing::debug!(%peer, origin = ?headers.get(header::ORIGIN), "WebSocket refused: origin not allowed");
        let msg = "origin not allowed (see --http-allowed-origins)\n";
        return (StatusCode::FORBIDDEN, msg).into_response();
    }
    let Ok(permit) = web.parts.limit.clone().try_acquire_owned() else {
        let msg = "too many connections\n";
        return (StatusCode::SERVICE_UNAVAILABLE, msg).into_response();
    };
    let Some(slot) = web.parts.per_address.take(peer.ip()) else {
        shared.metrics.over_address_cap();
        tracing::warn!(%peer, limit = web.parts.per_address.limit, "too many connections from one address; refusing a WebSocket");
        let msg = "too many connections from this address\n";
        return (StatusCode::SERVICE_UNAVAILABLE, msg).into_response();
    };
    // Counted as a session from now on, so a shutdown that starts before
    // the upgrade completes still waits for it.
    let tracked = web.parts.sessions.token();
    ws.max_message_size(cfg.max_frame_bytes)
        .max_frame_size(cfg.max_frame_bytes)
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            // A combinator, not an `async` block that awaits the session:
            // that block would hold the session's future twice over (as
            // what it captured and as what it awaits).
            crate::ws::serve(socket, Some(peer), shared)
                .map(move |()| drop((slot, permit, tracked)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module of the JavaScript client is served: a module added to
    /// js/src but not to `ASSETS` would break the page's imports.
    #[test]
    fn every_client_module_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../js/src");
        for e in std::fs::read_dir(dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".js") {
                let path = format!("/herald/{name}");
                assert!(
                    ASSETS.iter().any(|a| a.path == path),
                    "{path} is not served"
                );
            }
        }
    }

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn origins() {
        let none: Vec<String> = vec![];
        let app = vec!["https://app.example".to_string()];
        // Not a browser.
        assert!(origin_allowed(&headers(None, "h:1"), &none));
        // A page of this listener.
        assert!(origin_allowed(
            &headers(Some("http://127.0.0.1:7480"), "127.0.0.1:7480"),
            &none
        ));
        // Another site, unless listed.
        let other = headers(Some("https://app.example"), "127.0.0.1:7480");
        assert!(!origin_allowed(&other, &none));
        assert!(origin_allowed(&other, &app));
        assert!(origin_allowed(&other, &["*".to_string()]));
        // Another port of the same host is another origin.
        assert!(!origin_allowed(
            &headers(Some("http://127.0.0.1:3000"), "127.0.0.1:7480"),
            &none
        ));
        // A file:// page sends "null".
        assert!(!origin_allowed(
            &headers(Some("null"), "127.0.0.1:7480"),
            &none
        ));
        // Pages of this listener reached by an address, or localhost.
        for (origin, host) in [
            ("http://localhost:7480", "localhost:7480"),
            ("http://LocalHost", "localhost"),
            ("http://[::1]:7480", "[::1]:7480"),
            ("https://10.0.0.5", "10.0.0.5"),
        ] {
            assert!(
                origin_allowed(&headers(Some(origin), host), &none),
                "{origin}"
            );
        }
        // DNS rebinding: a page of attacker.example, the name made to
        // resolve to the broker, sends Origin and Host both with its name.
        let rebound = headers(
            Some("http://attacker.example:7480"),
            "attacker.example:7480",
        );
        assert!(!origin_allowed(&rebound, &none));
        // A site served by a name (behind a proxy) is listed to be let in.
        let named = headers(Some("https://chat.example"), "chat.example");
        assert!(!origin_allowed(&named, &none));
        assert!(origin_allowed(
            &named,
            &["https://chat.example".to_string()]
        ));
        // Not addresses, whatever they look like.
        for host in [
            "127.0.0.1.attacker.example",
            "localhost.attacker.example",
            "[::1",
        ] {
            assert!(!names_an_address(host), "{host}");
        }
    }
}
