//! Control bodies of rooms, events, presence and inboxes (opcodes
//! `0x40..=0x47`), encoded with postcard like every other control body.
//! docs/protocol.md section 6.6 gives their bytes; docs/rooms.md what they
//! mean.
//!
//! Field order is part of the wire format (postcard writes fields in
//! declaration order, with no names).

use serde::{Deserialize, Serialize};

/// Joins a room (`0x40`). Reply: `Ok`.
///
/// Whether a room is durable is fixed by the join that creates it; a later
/// join asking for the other kind is refused with `InvalidArgument`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRoom {
    pub room: String,
    /// A durable room keeps its member set on disk: a member stays a member
    /// while offline (and across broker restarts) and keeps its position in
    /// the room's log, so it reads what the room was sent meanwhile when it
    /// is back.
    pub durable: bool,
    /// How many of the room's most recent events (and presence records) a
    /// new member receives first; 0 starts it at the room's end. Ignored
    /// for a client that is already a member (it keeps its position).
    pub history: u32,
}

/// Names one room: the body of Leave (`0x41`, reply `Ok`) and Members
/// (`0x44`, reply `MemberList`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomName {
    pub room: String,
}

/// Who an [`Emit`] goes to. A room target is one append to each target
/// room's log (its members read it there); a client target, and `All`,
/// one append to each recipient's inbox (docs/rooms.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmitTarget {
    /// Every member of the room (the room named after a client id also
    /// holds that client).
    Room(String),
    /// Every member of the room except the sender (Socket.IO "broadcast").
    RoomExceptSender(String),
    /// The union of the rooms' members, each client once.
    Rooms {
        rooms: Vec<String>,
        except_sender: bool,
    },
    /// One client id, connected or not: its durable inbox.
    Client(String),
    /// Every connected client (the sender included).
    All,
}

/// Emits a named event (`0x42`). Reply: [`EmitOk`] once every append it
/// made (to room logs and inboxes) is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Emit {
    pub target: EmitTarget,
    /// The event name (1 to 200 bytes); `connect`, `disconnect`, `join` and
    /// `leave` are reserved for presence.
    pub event: String,
    pub payload: Vec<u8>,
    /// Nonzero: the sender expects a reply with this correlation id (chosen
    /// by the sender, unique among its own outstanding requests); the
    /// recipients see `herald-reply-to` and `herald-correlation` headers.
    pub correlation: u64,
}

/// The confirm of an [`Emit`] (`0x43`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmitOk {
    /// Clients reached, each once: the target rooms' members at the time
    /// of the emit (less the sender for a broadcast) and the inbox
    /// recipients.
    pub recipients: u32,
    /// `All` recipients left out because their inbox was at its pending
    /// limit (a `Client` target fails with `Busy` instead).
    pub skipped: u32,
}

/// Several emits in one frame (`0x4A`, protocol version 3). The broker
/// handles each as if it had come alone, in order (permission, target,
/// append), and answers once with [`EmitBatchOk`] when all of them are
/// durable or refused. A client sends it when several emits are queued at
/// once: the frame, its handling and its confirm are paid once for all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmitBatch {
    pub emits: Vec<Emit>,
}

/// What became of one emit of an [`EmitBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmitOutcome {
    /// Durable in every recipient's log, as an [`EmitOk`] says.
    Ok(EmitOk),
    /// Refused, as an `Error` reply to a lone Emit would say.
    Err(crate::control::ErrorBody),
}

/// The answer to an [`EmitBatch`] (`0x4B`): one outcome per emit, in the
/// batch's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmitBatchOk {
    pub results: Vec<EmitOutcome>,
}

/// One member of a room, in a [`MemberList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMember {
    pub client_id: String,
    /// Connected now (or within its reconnect grace period).
    pub online: bool,
}

/// The answer to Members (`0x45`), sorted by client id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    pub members: Vec<RoomMember>,
}

/// One room in a [`RoomList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinedRoom {
    pub room: String,
    pub durable: bool,
}

/// The answer to MyRooms (`0x48`, empty body): the rooms the asking client
/// id is a member of, sorted by name. A client process that starts again
/// with the same id learns from it which room logs to read (its durable
/// rooms, and non-durable ones within the grace period).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomList {
    pub rooms: Vec<JoinedRoom>,
}

/// Answers a request (`0x46`): appended to `to_client`'s inbox as a reply
/// carrying `correlation`. Reply: `Ok` once durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyTo {
    pub to_client: String,
    pub correlation: u64,
    pub payload: Vec<u8>,
}

/// Header names of event records, in room logs and inboxes alike. Every
/// such record has `herald-kind` and `herald-sender`; the key of the
/// record is the event name.
pub mod headers {
    /// `event`, `presence` or `reply`.
    pub const KIND: &str = "herald-kind";
    /// The client id that emitted (for presence: whose presence changed).
    pub const SENDER: &str = "herald-sender";
    /// The room whose log holds the record (absent for direct and `All`
    /// emits, which are in inboxes).
    pub const ROOM: &str = "herald-room";
    /// Where a reply should go (only on events that expect one).
    pub const REPLY_TO: &str = "herald-reply-to";
    /// The correlation id, decimal, on requests and replies.
    pub const CORRELATION: &str = "herald-correlation";
    /// `1` on a room event not meant for its sender (a broadcast): the
    /// sender's own client acks it without handing it to the application.
    pub const EXCEPT_SENDER: &str = "herald-except-sender";
    /// On an event emitted to several rooms: the same value on its copy in
    /// each room's log, so that a client in several of them hands it to the
    /// application once.
    pub const EMIT_ID: &str = "herald-emit";

    /// Value of [`KIND`] for an emitted event.
    pub const KIND_EVENT: &str = "event";
    /// Value of [`KIND`] for a presence event.
    pub const KIND_PRESENCE: &str = "presence";
    /// Value of [`KIND`] for a reply.
    pub const KIND_REPLY: &str = "reply";
}

/// Event names the broker uses for presence; emits may not use them.
pub const RESERVED_EVENTS: [&str; 4] = ["connect", "disconnect", "join", "leave"];
