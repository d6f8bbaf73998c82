//! The listener: accepts connections within a connection limit, runs a
//! session per connection, runs retention, and shuts everything down in
//! order.
//!
//! Start order: lock the data folder (one broker per folder, see
//! [`crate::lockfile`]) before anything in it is opened; bind (TCP, then
//! HTTP, see [`crate::http`]); open topics, then rooms.
//!
//! Shutdown order: stop accepting (TCP and HTTP); sessions (TCP and
//! WebSocket alike) stop reading, wait for their
//! in-flight publishes to be confirmed, send GoingAway and close; then every
//! group persists its state and every log is fsynced and closed.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::BrokerConfig;
use crate::lockfile::DataDirLock;
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
    background: tokio::task::JoinHandle<()>,
    /// Held until [`BrokerHandle::shutdown`] has closed every log (or the
    /// handle is dropped); the kernel releases it if the process dies.
    _lock: DataDirLock,
}

/// Binds the listener, opens the data folder and starts serving.
///
/// # Errors
/// Another broker holds the data folder ([`BrokerError::DataDirInUse`]),
/// the address cannot be bound (busy port) or the data folder is unusable.
pub async fn start(config: BrokerConfig) -> Result<BrokerHandle, BrokerError> {
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
    let registry = {
        let c = config.clone();
        tokio::task::spawn_blocking(move || Registry::open(c, CancellationToken::new()))
            .await
            .map_err(|e| BrokerError::Internal(e.to_string()))??
    };
    let shutdown = CancellationToken::new();
    let rooms = {
        let (c, r, s) = (config.clone(), registry.clone(), shutdown.clone());
        tokio::task::spawn_blocking(move || Rooms::open(c, r, s))
            .await
            .map_err(|e| BrokerError::Internal(e.to_string()))??
    };
    let shared = Arc::new(Shared {
        config: config.clone(),
        registry: registry.clone(),
        rooms,
        shutdown: shutdown.clone(),
        next_member: AtomicU64::new(1),
    });
    let sessions = TaskTracker::new();
    // One limit for TCP and WebSocket sessions alike.
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let http = http_listener
        .map(|l| crate::http::spawn(l, shared.clone(), sessions.clone(), limit.clone()));
    let background = tokio::spawn(accept_loop(listener, shared, sessions.clone(), limit));
    tracing::info!(
        %addr,
        http = ?http_addr,
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
        background,
        _lock: lock,
    })
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    sessions: TaskTracker,
    limit: Arc<Semaphore>,
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
            Ok((stream, _)) => {
                let s = shared.clone();
                sessions.spawn(async move {
                    session::run(stream, s).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends: log, back off a little, go on.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
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
        self.sessions.close();
        self.sessions.wait().await;
        self.registry.close_all().await;
        tracing::info!(addr = %self.addr, "broker stopped");
    }
}
