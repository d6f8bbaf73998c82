//! The HTTP listener's connections: accepted, counted and timed here, then
//! served by hyper with the broker's router ([`crate::http`]).
//!
//! `axum::serve` keeps every connection for as long as its peer likes: it
//! has no timer, so hyper's header read timeout never fires, and it knows
//! nothing of the broker's connection limits. Twenty thousand idle sockets
//! (or half-sent requests) from one host then took every file descriptor
//! the broker had: no new client, no `/healthz`, no new topic. So here:
//!
//! - each connection holds a place in the per-address cap shared with TCP
//!   and WebSocket sessions, and one of at most `max_connections` places
//!   for HTTP connections, until it ends or becomes a WebSocket (whose
//!   session then counts as a session, see `crate::http`); past either
//!   limit it is closed at once;
//! - a request's header must arrive within the handshake timeout, and so
//!   must the next request of a kept-alive connection, or the connection is
//!   closed (hyper's header read timeout, on tokio's timer).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::server::PerAddress;

/// The limits every HTTP connection is held to.
pub(crate) struct Limits {
    /// The broker's handshake timeout: the most a request's header may
    /// take to arrive, counted from when the connection waits for it.
    pub header_timeout: Duration,
    /// HTTP connections open at once (not counting the WebSocket sessions
    /// they became).
    pub max_open: usize,
    pub per_address: Arc<PerAddress>,
}

/// Serves the connections `listener` accepts with `app` until `shutdown`.
/// Connections still open then are closed; WebSocket sessions are not
/// connections of this loop any more and end with the broker's sessions.
pub(crate) async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) where
    L: Listener<Addr = SocketAddr>,
{
    let open = Arc::new(Semaphore::new(limits.max_open.max(1)));
    let mut connections = JoinSet::new();
    loop {
        let (io, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Some(slot) = limits.per_address.take(peer.ip()) else {
            tracing::warn!(%peer, limit = limits.per_address.limit, "too many connections from one address; closing an HTTP connection");
            continue;
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.max_open, "too many HTTP connections; closing one");
            continue;
        };
        let app = app.clone();
        let header_timeout = limits.header_timeout;
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                // What `into_make_service_with_connect_info` would add:
                // the handlers read the peer's address.
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut app = app.clone();
                async move { app.call(req.map(Body::new)).await }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
            drop(slot);
            drop(permit);
        });
    }
    connections.shutdown().await;
}
