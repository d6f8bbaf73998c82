//! TLS on the HTTP listener (HTTPS, and wss:// for browsers): an axum
//! [`Listener`] that accepts TCP connections, runs each one's TLS
//! handshake in a task of its own (see [`crate::tls::handshake`]: the
//! broker's handshake timeout, a plaintext request answered with a 400
//! saying the port wants HTTPS) and hands finished streams to the HTTP
//! connection loop (`crate::http_listener`). A slow or failed handshake therefore never holds up
//! the next connection.
//!
//! Limits: a connection in its handshake holds a place in the per-address
//! cap shared with TCP and WebSocket sessions (one address cannot pile up
//! half-open handshakes), and at most `max_connections` handshakes are
//! under way at once; past either, the connection is closed at once. The
//! finished connection is then held to the limits of every HTTP
//! connection (`crate::http_listener`), and a WebSocket upgrade counts
//! against the connection limits as on plain HTTP (see `crate::http`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::server::PerAddress;

/// What a plaintext HTTP client on the HTTPS port reads.
const PLAINTEXT_BODY: &str = "this port speaks HTTPS: use https:// (wss:// for WebSockets)\n";

/// A finished handshake, or `None` for one that failed.
type Handshake = Option<(TlsStream<TcpStream>, SocketAddr)>;

/// The HTTPS listener: TCP accept, then TLS, then axum.
pub(crate) struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    /// The broker's handshake timeout.
    timeout: Duration,
    per_address: Arc<PerAddress>,
    /// Handshakes under way, at most `max_connections`.
    pending: Arc<Semaphore>,
    /// Handshake tasks; aborted when the listener is dropped (shutdown).
    handshakes: JoinSet<Handshake>,
    /// The 400 answer to plaintext HTTP.
    plaintext_reply: Arc<[u8]>,
}

impl TlsListener {
    pub(crate) fn new(
        tcp: TcpListener,
        acceptor: TlsAcceptor,
        timeout: Duration,
        max_pending: usize,
        per_address: Arc<PerAddress>,
    ) -> TlsListener {
        let reply = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{PLAINTEXT_BODY}",
            PLAINTEXT_BODY.len()
        );
        TlsListener {
            tcp,
            acceptor,
            timeout,
            per_address,
            pending: Arc::new(Semaphore::new(max_pending.max(1))),
            handshakes: JoinSet::new(),
            plaintext_reply: Arc::from(reply.into_bytes()),
        }
    }

    /// Starts the handshake of an accepted connection, if the limits
    /// allow one more.
    fn start(&mut self, stream: TcpStream, peer: SocketAddr) {
        let Ok(permit) = self.pending.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many TLS handshakes under way; closing");
            return;
        };
        let Some(slot) = self.per_address.take(peer.ip()) else {
            tracing::warn!(%peer, limit = self.per_address.limit, "too many connections from one address; closing");
            return;
        };
        crate::session::tune(&stream);
        let acceptor = self.acceptor.clone();
        let timeout = self.timeout;
        let reply = self.plaintext_reply.clone();
        self.handshakes.spawn(async move {
            let tls = crate::tls::handshake(stream, &acceptor, timeout, peer, &reply).await;
            drop(slot);
            drop(permit);
            tls.map(|s| (s, peer))
        });
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, peer)) => self.start(stream, peer),
                    Err(e) => {
                        // EMFILE and friends: log, back off a little, go on.
                        tracing::warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    // A handshake task that panicked is a failed handshake.
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
