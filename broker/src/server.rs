//! The listener: accepts connections within a connection limit, runs a
//! session per connection, runs retention, and shuts everything down in
//! order.
//!
//! Start order: lock the data folder (one broker per folder, see
//! [`crate::lockfile`]) before anything in it is opened; bind (TCP, then
//! HTTP, see [`crate::http`]); serve HTTP (`/healthz`, and `/readyz`
//! saying not ready); open topics, then rooms (recovery); mark ready and
//! accept sessions.
//!
//! Shutdown order: stop accepting (TCP and HTTP); sessions (TCP and
//! WebSocket alike) stop reading, wait for their
//! in-flight publishes to be confirmed, send GoingAway and close; the rooms
//! record who was online (see [`Rooms::save_online`]); then every
//! group persists its state and every log is fsynced and closed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use herald_protocol::{ErrorCode, Message};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{self, Authenticator};
use crate::cluster::Cluster;
use crate::config::BrokerConfig;
use crate::lockfile::DataDirLock;
use crate::metrics::{Metrics, Transport};
use crate::ready::Readiness;
use crate::rooms::Rooms;
use crate::session::{self, Shared};
use crate::topic::Registry;
use crate::BrokerError;

/// A running broker.
pub struct BrokerHandle {
    addr: SocketAddr,
    /// The HTTP listener's address, when it is on.
    http_addr: Option<SocketAddr>,
    /// The HTTP listener's task.
    http: Option<tokio::task::JoinHandle<()>>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    registry: Arc<Registry>,
    rooms: Arc<Rooms>,
    /// This node's part in a cluster (`None`: running alone).
    cluster: Option<Arc<Cluster>>,
    background: tokio::task::JoinHandle<()>,
    /// Held until [`BrokerHandle::shutdown`] has closed every log (or the
    /// handle is dropped); the kernel releases it if the process dies.
    _lock: DataDirLock,
}

/// Binds the listener, opens the data folder and starts serving.
///
/// # Errors
/// Another broker holds the data folder ([`BrokerError::DataDirInUse`]),
/// the address cannot be bound (busy port) or the data folder is unusable;
/// a non-loopback address without authentication, keys or certificates
/// that do not load ([`BrokerError::Config`]).
pub async fn start(config: BrokerConfig) -> Result<BrokerHandle, BrokerError> {
    start_observed(config, |_| std::future::ready(())).await
}

/// [`start`], running `before_recovery` (given the HTTP listener's address)
/// once the listeners are bound and the HTTP listener serves, before any
/// log is opened: tests use it to see the broker while it is not ready
/// yet (`/readyz`), deterministically.
///
/// # Errors
/// Those of [`start`].
pub async fn start_observed<F, Fut>(
    config: BrokerConfig,
    before_recovery: F,
) -> Result<BrokerHandle, BrokerError>
where
    F: FnOnce(Option<SocketAddr>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let client_certs = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    auth::check_exposure(config.listen, &config.auth, client_certs)?;
    // The HTTP listener uses the same TLS settings, client certificates
    // included (see crate::http).
    if let Some(http) = config.http {
        auth::check_exposure(http, &config.auth, client_certs)?;
    }
    if config.cluster.is_some() && config.tls.is_some() {
        return Err(BrokerError::Config(
            "a cluster node cannot use TLS yet: nodes call each other in plaintext \
             (run the cluster on a private network, with authentication; docs/cluster.md)"
                .into(),
        ));
    }
    let authenticator = Authenticator::new(&config.auth)
        .map_err(|e| BrokerError::Config(format!("authentication: {e}")))?;
    let tls_error = |e: crate::tls::TlsError| BrokerError::Config(e.to_string());
    let (tls, http_tls) = match &config.tls {
        Some(t) => (
            Some(crate::tls::acceptor(t).map_err(tls_error)?),
            Some(crate::tls::http_acceptor(t).map_err(tls_error)?),
        ),
        None => (None, None),
    };
    let lock = DataDirLock::acquire(&config.data_dir)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|error| BrokerError::Listen {
            addr: config.listen,
            error,
        })?;
    let addr = listener.local_addr()?;
    let http_listener = crate::http::bind(&config).await?;
    let http_addr = match &http_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let config = Arc::new(config);
    let shutdown = CancellationToken::new();
    let ready = Readiness::new(config.data_dir.clone());
    let sessions = TaskTracker::new();
    // One limit for TCP and WebSocket sessions alike, in all and per
    // source address.
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let per_address = Arc::new(PerAddress::new(config.max_connections_per_address));
    // The HTTP listener serves from now on, so that /healthz and /readyz
    // answer during recovery; /ws and /metrics wait for `serving`.
    let serving = crate::http::Serving::default();
    let http = http_listener.map(|l| {
        crate::http::spawn(
            l,
            http_tls,
            crate::http::Parts {
                config: config.clone(),
                serving: serving.clone(),
                ready: ready.clone(),
                shutdown: shutdown.clone(),
                sessions: sessions.clone(),
                limit: limit.clone(),
                per_address: per_address.clone(),
            },
        )
    });
    before_recovery(http_addr).await;
    let recovered = recover(&config, &shutdown).await;
    let (registry, rooms) = match recovered {
        Ok(ok) => ok,
        Err(e) => {
            // The HTTP listener stops too (bounded: a client holding a
            // keep-alive connection must not hold up the error).
            shutdown.cancel();
            if let Some(http) = http {
                let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
            }
            return Err(e);
        }
    };
    let cluster = match &config.cluster {
        Some(c) => Some(
            Cluster::start(
                c.clone(),
                registry.clone(),
                config.max_frame_bytes,
                shutdown.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let shared = Arc::new(Shared {
        cluster: cluster.clone(),
        config: config.clone(),
        registry: registry.clone(),
        rooms: rooms.clone(),
        shutdown: shutdown.clone(),
        next_member: AtomicU64::new(1),
        auth: Arc::new(authenticator),
        metrics: Arc::new(Metrics::default()),
        ready: ready.clone(),
    });
    let _ = serving.set(shared.clone());
    ready.mark_recovered();
    let tls_on = tls.is_some();
    let auth_on = shared.auth.is_required();
    let background = tokio::spawn(accept_loop(
        listener,
        shared,
        sessions.clone(),
        tls,
        limit,
        per_address,
    ));
    tracing::info!(
        %addr,
        http = ?http_addr,
        tls = tls_on,
        auth = auth_on,
        data_dir = %config.data_dir.display(),
        memory_budget_mib = config.max_memory >> 20,
        "broker started"
    );
    Ok(BrokerHandle {
        addr,
        http_addr,
        http,
        shutdown,
        sessions,
        registry,
        rooms,
        cluster,
        background,
        _lock: lock,
    })
}

/// Opens every topic (recovering its log), then the rooms.
async fn recover(
    config: &Arc<BrokerConfig>,
    shutdown: &CancellationToken,
) -> Result<(Arc<Registry>, Arc<Rooms>), BrokerError> {
    let registry = {
        let c = config.clone();
        tokio::task::spawn_blocking(move || Registry::open(c, CancellationToken::new()))
            .await
            .map_err(|e| BrokerError::Internal(e.to_string()))??
    };
    let rooms = {
        let (c, r, s) = (config.clone(), registry.clone(), shutdown.clone());
        tokio::task::spawn_blocking(move || Rooms::open(c, r, s))
            .await
            .map_err(|e| BrokerError::Internal(e.to_string()))??
    };
    rooms.start().await?;
    Ok((registry, rooms))
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    sessions: TaskTracker,
    tls: Option<TlsAcceptor>,
    limit: Arc<Semaphore>,
    per_address: Arc<PerAddress>,
) {
    let mut retention = tokio::time::interval(shared.config.retention_interval);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The permit is taken before accept: past the limit, connections
        // wait in the kernel's backlog instead of costing us memory.
        let permit = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let accepted = loop {
            tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                a = listener.accept() => break a,
                _ = retention.tick() => {
                    let reg = shared.registry.clone();
                    tokio::task::spawn_blocking(move || reg.apply_retention());
                }
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(slot) = per_address.take(peer.ip()) else {
                    shared.metrics.over_address_cap();
                    tracing::warn!(%peer, limit = per_address.limit, "too many connections from one address; closing");
                    sessions.spawn(refuse_busy(stream, tls.is_some(), per_address.limit));
                    continue;
                };
                let s = shared.clone();
                // Each kind of connection gets a task sized for itself: one
                // future for both kept every plain TCP session in the 7 KiB
                // size class that the TLS handshake's state needs.
                match tls.clone() {
                    None => {
                        session::tune(&stream);
                        let (read, write) = tokio::io::split(stream);
                        sessions.spawn(
                            session::run(read, write, Some(peer), s, Transport::Tcp)
                                .map(move |()| drop((slot, permit))),
                        );
                    }
                    Some(acceptor) => {
                        sessions.spawn(async move {
                            session::tune(&stream);
                            let timeout = s.config.handshake_timeout;
                            // Boxed: the handshake's state is over once
                            // the session starts.
                            let tls = Box::pin(accept_tls(stream, &acceptor, timeout, peer)).await;
                            if let Some(stream) = tls {
                                let (read, write) = tokio::io::split(stream);
                                session::run(read, write, Some(peer), s, Transport::Tcp).await;
                            }
                            drop(slot);
                            drop(permit);
                        });
                    }
                }
            }
            Err(e) => {
                // EMFILE and friends: log, back off a little, go on.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Connections per source address, against the limit (TCP and
/// WebSocket alike).
pub(crate) struct PerAddress {
    pub(crate) limit: usize,
    /// A std mutex: held only to count, never across an await.
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`PerAddress`]; given back on drop.
pub(crate) struct Slot {
    owner: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn new(limit: usize) -> PerAddress {
        PerAddress {
            limit,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for `ip`, or `None` at the limit.
    pub(crate) fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = c.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            owner: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.ip);
            }
        }
    }
}

/// Tells a connection over the per-address limit why it is closed (in
/// plaintext only: on a TLS port the peer could not read it) and closes it.
async fn refuse_busy(mut stream: TcpStream, tls: bool, limit: usize) {
    if !tls {
        let msg = Message::error(
            ErrorCode::Busy,
            format!("too many connections from your address (at most {limit})"),
        );
        let mut b = bytes::BytesMut::new();
        msg.encode(0, &mut b);
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&b)).await;
    }
    let _ = stream.shutdown().await;
}

/// The TLS handshake of an accepted connection, within the handshake
/// deadline (see [`crate::tls::handshake`]). A peer that speaks plaintext
/// Herald gets a plaintext Error saying the port wants TLS.
async fn accept_tls(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
    timeout: Duration,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let msg = Message::error(
        ErrorCode::BadFrame,
        "this port speaks TLS: connect with TLS (herald --tls-ca FILE, or ClientBuilder::tls_ca_pem)",
    );
    let mut reply = bytes::BytesMut::new();
    msg.encode(0, &mut reply);
    crate::tls::handshake(stream, acceptor, timeout, peer, &reply).await
}

impl BrokerHandle {
    /// The address the broker listens on (the real port when bound to 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTP (WebSocket) listener's address, when it is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The topic registry, for embedding and tests.
    /// This node's part in a cluster, when it is in one.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Resolves when a shutdown has been requested.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Graceful shutdown: see the module doc for the order.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.background.await;
        if let Some(http) = self.http {
            let _ = http.await;
        }
        // Raft stops before the sessions drain: a publish waiting for a
        // quorum that is gone must not hold up the shutdown (it is answered
        // with an error, not confirmed).
        if let Some(c) = &self.cluster {
            c.shutdown().await;
        }
        self.sessions.close();
        self.sessions.wait().await;
        // Every session has ended: who was online is final.
        let rooms = self.rooms.clone();
        let _ = tokio::task::spawn_blocking(move || rooms.save_online()).await;
        self.registry.close_all().await;
        tracing::info!(addr = %self.addr, "broker stopped");
    }
}
