//! An in-process broker for the client's tests, restartable on the same
//! port and data folder.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use herald_broker::config::BrokerConfig;
use herald_broker::server::BrokerHandle;
use herald_client::{ConnectionEvent, Events};

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

/// A broker on 127.0.0.1, with its data folder.
pub struct TestBroker {
    handle: Option<BrokerHandle>,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    /// The HTTP listener (WebSocket sessions at `/ws`), when the tweak
    /// turned it on; kept across restarts like `addr`.
    http: Option<SocketAddr>,
    /// Applied to the configuration at every start.
    tweak: fn(&mut BrokerConfig),
}

async fn start_on(
    dir: &std::path::Path,
    addr: SocketAddr,
    http: Option<SocketAddr>,
    tweak: fn(&mut BrokerConfig),
) -> BrokerHandle {
    let mut cfg = BrokerConfig {
        listen: addr,
        data_dir: dir.into(),
        heartbeat: Duration::from_secs(2),
        ..Default::default()
    };
    tweak(&mut cfg);
    if cfg.http.is_some() {
        cfg.http = http.or(cfg.http);
    }
    match herald_broker::server::start(cfg).await {
        Ok(h) => h,
        Err(e) => panic!("broker failed to start on {addr}: {e}"),
    }
}

impl TestBroker {
    /// Starts on an ephemeral port.
    pub async fn start() -> TestBroker {
        TestBroker::start_with(|_| {}).await
    }

    /// Starts on an ephemeral port with a modified configuration.
    pub async fn start_with(tweak: fn(&mut BrokerConfig)) -> TestBroker {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        };
        let handle = start_on(
            dir.path(),
            "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
            None,
            tweak,
        )
        .await;
        let addr = handle.local_addr();
        let http = handle.http_addr();
        TestBroker {
            handle: Some(handle),
            dir,
            addr,
            http,
            tweak,
        }
    }

    /// Starts on ephemeral ports with the HTTP listener on, for clients
    /// that connect over WebSocket ([`TestBroker::ws_url`]).
    pub async fn start_web() -> TestBroker {
        TestBroker::start_with(|c| c.http = Some(([127, 0, 0, 1], 0).into())).await
    }

    /// `ws://host:port/ws` of the HTTP listener.
    pub fn ws_url(&self) -> String {
        match self.http {
            Some(a) => format!("ws://{a}/ws"),
            None => panic!("this broker has no HTTP listener"),
        }
    }

    /// `host:port` for `Client::connect`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Graceful shutdown; the data folder stays.
    pub async fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }

    /// Starts again on the same port and data folder.
    pub async fn start_again(&mut self) {
        assert!(self.handle.is_none(), "broker still running");
        self.handle = Some(start_on(self.dir.path(), self.addr, self.http, self.tweak).await);
    }

    /// Stop, then start on the same port and folder.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }
}

/// Runs `f` within [`WAIT`], failing the test on timeout.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Reads events until one matches `pred`; returns every event read.
pub async fn wait_event(
    events: &mut Events,
    pred: impl Fn(&ConnectionEvent) -> bool,
) -> Vec<ConnectionEvent> {
    within("a connection event", async {
        let mut seen = Vec::new();
        while let Some(ev) = events.next().await {
            let done = pred(&ev);
            seen.push(ev);
            if done {
                return seen;
            }
        }
        panic!("event stream ended; saw {seen:?}");
    })
    .await
}
