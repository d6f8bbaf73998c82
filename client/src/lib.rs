//! `herald-client` is the Rust client of Herald, a durable message broker.
//! A [`Client`] holds one connection, owned by a background task that
//! reconnects by itself; [`Client::publish`] and the pipelined, idempotent
//! [`Producer`] publish records and resolve once the broker confirmed them
//! durable ([`Receipt`]); [`Client::subscribe`] returns a [`Subscription`],
//! a `futures::Stream` of [`Message`]s that are acked (group subscriptions)
//! or flow-controlled (ephemeral ones) in the background. When the
//! connection drops, the client re-handshakes with the same client id,
//! re-subscribes (resuming where it left off), re-sends unconfirmed
//! publishes (stored once, thanks to producer sequence numbers) and
//! unconfirmed acks, and never yields a message it already acked.
//! [`Client::events`] tells the application what the connection is doing.
//!
//! ```no_run
//! use futures::StreamExt;
//! use herald_client::{Client, Start};
//!
//! # async fn demo() -> herald_client::Result<()> {
//! let client = Client::connect("127.0.0.1:7400").await?;
//! let receipt = client.publish("orders", "order #1").await?;
//! println!("stored at {}", receipt.offset);
//!
//! let mut sub = client.subscribe("orders").group("billing").start(Start::Resume).await?;
//! while let Some(msg) = sub.next().await {
//!     let msg = msg?;
//!     println!("{}: {:?}", msg.offset(), msg.payload());
//!     msg.ack().await?;
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `client`: [`Client`], [`ClientBuilder`].
//! - `connection`: the connection task (dial, handshake, frame I/O,
//!   heartbeats, reconnect with backoff); `state`: what it keeps across
//!   connections (unconfirmed publishes, subscriptions, pending requests).
//! - `producer`: [`Producer`], the batcher, the publish buffer.
//! - `subscription`: [`SubscribeBuilder`], [`Subscription`]; `acks`: ack
//!   coalescing and the filter of already-acked redeliveries.
//! - `message`: [`Record`] (out), [`Message`] (in), [`Receipt`].
//! - `events`: [`ConnectionEvent`], [`Events`]; `error`: [`Error`];
//!   `config`: [`ClientConfig`], [`Backoff`], [`OverflowPolicy`]; `admin`:
//!   topic and group administration on [`Client`].
//! - `endpoint`: the broker address: `host:port` (TCP), or `ws://` /
//!   `wss://` URLs (the same frames in WebSocket messages).
//! - `tls`: [`TlsOptions`], the TLS setup (feature `tls`, on by default).
//! - `ws_stream`: a WebSocket read and written as a byte stream, so the
//!   connection task is the same over every transport (feature `ws`, on
//!   by default).
//! - `rooms`: rooms and events on [`Client`] (join, emit, broadcast,
//!   members, request/reply), [`Target`]; `inbox`: the client's inbox
//!   reader, [`Inbox`], [`Event`] (docs/rooms.md).
//!
//! docs/client.md describes the delivery guarantees.

#![warn(missing_docs)]

mod acks;
mod admin;
mod client;
mod command;
mod config;
mod connection;
mod endpoint;
mod error;
mod events;
mod handoff;
mod inbox;
mod message;
mod offsets;
mod producer;
mod rooms;
mod state;
mod subscription;
mod tls;
#[cfg(feature = "ws")]
mod ws_stream;

pub use client::{Client, ClientBuilder};
pub use config::{Backoff, ClientConfig, OverflowPolicy, TokenProvider};
pub use error::{Error, Result};
pub use events::{ConnectionEvent, Events};
pub use inbox::{Event, EventKind, Inbox, INBOX_BUFFER};
pub use message::{Message, Receipt, Record};
pub use producer::{PendingReceipt, Producer};
pub use rooms::{EmitReceipt, Target, ROOM_PREFIX};
pub use subscription::{SubscribeBuilder, Subscription, DEFAULT_PREFETCH, DEFAULT_PREFETCH_BYTES};
pub use tls::{TlsOptions, TlsRoots};

/// Where a subscription starts; the protocol's [`StartPosition`].
pub use herald_protocol::StartPosition as Start;
pub use herald_protocol::{
    DroppedRange, ErrorCode, GroupInfo, RepairReport, RoomMember, StartPosition, TopicConfig,
    TopicInfo,
};
