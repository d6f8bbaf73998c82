//! The broker's metrics, served at `GET /metrics` in the Prometheus text
//! format (docs/operations.md lists each metric and the alert to put on
//! it).
//!
//! # Layout
//! - [`Metrics`] (this file): the broker-wide event counters (connections,
//!   handshakes refused, frames by type, errors by code), relaxed atomics
//!   bumped where the event happens.
//! - `histogram`: [`histogram::AtomicHistogram`], a lock-free fixed-bucket
//!   histogram for events on hot paths.
//! - `snapshot`: what a scrape reads, gathered at scrape time from the
//!   state's owners (logs, group actors, rooms, the memory budget, the
//!   process and the file system).
//! - `encode`: a `prometheus-client` collector that writes a snapshot
//!   with Prometheus's names, units and label escaping.
//! - `system`: open files (`/proc/self/fd`) and disk free (`statvfs`).
//!
//! Per-topic counters live with their topic (`storage::LogCounters` in the
//! topic's log, `Topic::delivered`), so recording one needs no lookup, no
//! lock and no allocation; gauges (lag, in flight, bytes on disk, rooms,
//! memory) are not recorded at all but read when Prometheus asks.

mod encode;
pub mod histogram;
mod snapshot;
pub(crate) mod system;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use herald_protocol::{ErrorCode, Opcode};

use crate::session::Shared;

pub use snapshot::Snapshot;

/// How a connection reached the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The TCP listener (with or without TLS).
    Tcp = 0,
    /// A WebSocket on the HTTP listener.
    WebSocket = 1,
}

impl Transport {
    const ALL: [Transport; 2] = [Transport::Tcp, Transport::WebSocket];

    fn label(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::WebSocket => "websocket",
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    /// Accepted, no Hello answered yet.
    Handshake = 0,
    /// Handshaken: serving requests.
    Open = 1,
}

impl ConnState {
    const ALL: [ConnState; 2] = [ConnState::Handshake, ConnState::Open];

    fn label(self) -> &'static str {
        match self {
            ConnState::Handshake => "handshake",
            ConnState::Open => "open",
        }
    }
}

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No Hello within the handshake timeout.
    Timeout = 0,
    /// The first frame was not a valid Hello.
    Protocol = 1,
    /// No protocol version in common.
    Version = 2,
    /// The credentials were refused.
    Auth = 3,
}

impl Refusal {
    const ALL: [Refusal; 4] = [
        Refusal::Timeout,
        Refusal::Protocol,
        Refusal::Version,
        Refusal::Auth,
    ];

    fn label(self) -> &'static str {
        match self {
            Refusal::Timeout => "timeout",
            Refusal::Protocol => "protocol",
            Refusal::Version => "version",
            Refusal::Auth => "auth",
        }
    }
}

/// Error codes counted one by one; higher (unknown) codes share the last
/// slot.
const ERROR_SLOTS: usize = 32;

/// The broker-wide event counters. One per broker, in [`Shared`]; every
/// field is a relaxed atomic, so recording is one uncontended-in-the-common
/// case addition and never allocates.
#[derive(Debug)]
pub struct Metrics {
    /// Connections now, by transport and state (a gauge kept by
    /// [`ConnectionGauge`]).
    connections: [[AtomicI64; 2]; 2],
    /// Connections accepted so far, by transport.
    accepted: [AtomicU64; 2],
    /// Handshakes refused, by [`Refusal`].
    refused: [AtomicU64; 4],
    /// Connections closed at once for the per-address cap.
    over_address_cap: AtomicU64,
    /// Request frames read, by opcode byte.
    frames: [AtomicU64; 256],
    /// Error replies sent, by [`ErrorCode::as_u16`].
    errors: [AtomicU64; ERROR_SLOTS],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections: [const { [const { AtomicI64::new(0) }; 2] }; 2],
            accepted: [const { AtomicU64::new(0) }; 2],
            refused: [const { AtomicU64::new(0) }; 4],
            over_address_cap: AtomicU64::new(0),
            frames: [const { AtomicU64::new(0) }; 256],
            errors: [const { AtomicU64::new(0) }; ERROR_SLOTS],
        }
    }
}

impl Metrics {
    /// A connection was accepted: counted as handshaking until
    /// [`ConnectionGauge::open`], and gone when the guard drops.
    pub fn connection(self: &Arc<Self>, transport: Transport) -> ConnectionGauge {
        self.accepted[transport as usize].fetch_add(1, Ordering::Relaxed);
        self.connections[transport as usize][ConnState::Handshake as usize]
            .fetch_add(1, Ordering::Relaxed);
        ConnectionGauge {
            metrics: self.clone(),
            transport,
            state: ConnState::Handshake,
        }
    }

    /// A handshake was refused.
    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was closed at once: its address holds too many.
    pub fn over_address_cap(&self) {
        self.over_address_cap.fetch_add(1, Ordering::Relaxed);
    }

    /// A request frame was read.
    pub fn frame(&self, opcode: Opcode) {
        self.frames[opcode as u8 as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// An error reply was sent.
    pub fn error(&self, code: ErrorCode) {
        let i = (code.as_u16() as usize).min(ERROR_SLOTS - 1);
        self.errors[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// One connection's place in the connections gauge; leaves it on drop.
#[derive(Debug)]
pub struct ConnectionGauge {
    metrics: Arc<Metrics>,
    transport: Transport,
    state: ConnState,
}

impl ConnectionGauge {
    /// The handshake succeeded.
    pub fn open(&mut self) {
        self.moved(ConnState::Open);
    }

    fn moved(&mut self, to: ConnState) {
        let t = &self.metrics.connections[self.transport as usize];
        t[self.state as usize].fetch_sub(1, Ordering::Relaxed);
        t[to as usize].fetch_add(1, Ordering::Relaxed);
        self.state = to;
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.metrics.connections[self.transport as usize][self.state as usize]
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Renders `/metrics`: gathers a [`Snapshot`] of the broker now, then
/// encodes it in the Prometheus text format (version 0.0.4).
pub async fn render(shared: &Arc<Shared>) -> String {
    let snap = Snapshot::gather(shared).await;
    encode::text(snap)
}

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
