//! `herald-protocol` is Herald's wire format, with no I/O in it: the types
//! and byte layouts that the broker and every client speak, `encode` into a
//! caller's `BytesMut` and `decode` from bytes already received.
//!
//! # Layout
//! - [`frame`]: the 16-byte frame header (length prefix, [`Opcode`], flags,
//!   request id) and the two-phase decoder that rejects oversized lengths
//!   before allocating.
//! - [`batch`]: the record-batch layout ([`BatchBuilder`] for producers,
//!   [`Batch`] as the validated view, [`Record`] as zero-copy slices). The
//!   broker stores batches exactly as received.
//! - [`control`]: the serde bodies (handshake, subscribe, ack, topic admin,
//!   errors), encoded with postcard.
//! - [`message`]: frames parsed into the [`Message`] enum and back.
//! - [`rooms`]: the bodies of rooms, events, presence and replies, and the
//!   header names of inbox records.
//! - `codec` (feature `codec`, on by default): the tokio-util
//!   `Decoder`/`Encoder`, a thin wrapper for `Framed`.
//!
//! docs/protocol.md specifies every byte.

pub mod batch;
#[cfg(feature = "codec")]
pub mod codec;
pub mod control;
mod error;
pub mod frame;
pub mod message;
pub mod rooms;

pub use batch::{Batch, BatchBuilder, Record, RecordRef};
pub use control::*;
pub use error::{BatchError, WireError};
pub use frame::{Frame, FrameHeader, Opcode, DEFAULT_MAX_FRAME, HEADER_LEN};
pub use message::{Deliver, Message};
pub use rooms::{
    Emit, EmitBatch, EmitBatchOk, EmitOk, EmitOutcome, EmitTarget, JoinRoom, JoinedRoom,
    MemberList, ReplyTo, RoomList, RoomMember, RoomName, RESERVED_EVENTS,
};
