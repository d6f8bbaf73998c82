//! `herald-broker` is the Herald daemon: it accepts client connections,
//! appends published record batches to per-topic logs on disk, confirms them
//! once durable, and delivers them to consumer groups and live subscribers
//! with acknowledgement tracking, redelivery and dead letters. It also holds
//! the `herald` command line (`src/main.rs`, `src/cli/`).
//!
//! # Layout
//! - [`server`]: the listener, connection limit, shutdown order;
//!   [`server::start`] returns a [`server::BrokerHandle`].
//! - [`session`]: one connection: handshake, read loop, request dispatch,
//!   over any transport; `frame_budget` counts the big frames it is
//!   reading against the memory budget while they arrive.
//! - [`http`]: the HTTP listener: WebSocket sessions at `/ws`, the
//!   JavaScript client, the chat page, `/healthz`, `/readyz`, `/metrics`; [`ws`] adapts a
//!   WebSocket to the session's byte streams; `http_listener` accepts,
//!   limits and times its connections.
//! - [`metrics`]: `GET /metrics` (Prometheus): broker-wide event
//!   counters, and a snapshot of live state read at scrape time;
//!   [`ready`]: what `GET /readyz` checks.
//! - [`outbox`]: the connection's writer task and its bounded queues.
//! - [`topic`]: the [`topic::Registry`] of topics and the [`topic::Topic`]
//!   (a log plus its groups).
//! - [`group`]: consumer groups, hosted by group-set actors (one per
//!   group, or one per room log); [`group::acks`] tracks
//!   acknowledgements, [`group::store`] persists them.
//! - [`subscription`]: ephemeral (group-less) subscriptions.
//! - [`rooms`]: rooms, presence and per-client inboxes (emit, broadcast,
//!   direct messages, request/reply), built on topics and groups.
//! - [`storage`]: the segmented, checksummed log with group commit.
//! - [`auth`]: credentials (static tokens, JWTs), client-id binding and
//!   permissions; [`tls`]: the TLS settings of the listeners.
//! - `handlers`: one handler per request, each declaring what it needs;
//!   permissions are checked in `handlers::dispatch`.
//! - [`config`]: every setting and bound, in one struct.
//! - [`memory`]: the broker-wide memory budget and who waits when it is
//!   spent.
//! - [`lockfile`]: the data folder's lock (one broker per folder).
//! - [`syncer`]: coalesced `syncfs`, so many groups' state files become
//!   durable in one sync.
//!
//! docs/architecture.md follows a message from socket to disk to subscriber.

pub mod auth;
pub mod cluster;
pub mod config;
mod error;
mod frame_budget;
pub mod fsutil;
pub mod group;
mod handlers;
pub mod http;
mod http_listener;
mod https;
pub mod lockfile;
pub mod memory;
pub mod metrics;
pub mod outbox;
pub mod ready;
pub mod rooms;
pub mod server;
pub mod session;
pub mod slotfile;
pub mod storage;
pub mod subscription;
pub mod syncer;
pub mod tls;
pub mod topic;
pub mod ws;

pub use config::BrokerConfig;
pub use error::BrokerError;
