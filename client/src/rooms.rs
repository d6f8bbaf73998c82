//! Rooms and events on [`Client`]: join and leave rooms, emit named events
//! to rooms, clients or everyone, list members, and request/reply. What a
//! client receives arrives in its inbox ([`crate::Inbox`]).
//!
//! Every emit resolves once the broker has appended the event durably to
//! each recipient's inbox; [`EmitReceipt`] says how many that was.

use std::time::Duration;

use bytes::Bytes;
use herald_protocol::{Emit, EmitTarget, JoinRoom, Message as Wire, ReplyTo, RoomMember, RoomName};

use crate::{Client, Error, Result};

/// Prefix of a room's log topic (`_room.<room>`), read by each member
/// through the group named after its client id.
pub const ROOM_PREFIX: &str = "_room.";

/// Who an emit goes to. The broker resolves it to client ids, each once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target(pub(crate) EmitTarget);

impl Target {
    /// Every member of `room`, the sender included if it is one. The room
    /// named after a client id reaches that client.
    pub fn room(room: impl Into<String>) -> Target {
        Target(EmitTarget::Room(room.into()))
    }
    /// Every member of `room` except the sender (Socket.IO's broadcast).
    pub fn room_except_sender(room: impl Into<String>) -> Target {
        Target(EmitTarget::RoomExceptSender(room.into()))
    }
    /// Every member of any of `rooms`; a client in several gets it once.
    pub fn rooms<I: IntoIterator<Item = S>, S: Into<String>>(rooms: I) -> Target {
        Target(EmitTarget::Rooms {
            rooms: rooms.into_iter().map(Into::into).collect(),
            except_sender: false,
        })
    }
    /// As [`Target::rooms`], without the sender.
    pub fn rooms_except_sender<I: IntoIterator<Item = S>, S: Into<String>>(rooms: I) -> Target {
        Target(EmitTarget::Rooms {
            rooms: rooms.into_iter().map(Into::into).collect(),
            except_sender: true,
        })
    }
    /// One client id, connected or not: it is kept in its inbox.
    pub fn client(client_id: impl Into<String>) -> Target {
        Target(EmitTarget::Client(client_id.into()))
    }
    /// Every connected client, the sender included.
    pub fn all() -> Target {
        Target(EmitTarget::All)
    }
}

/// The broker's confirm of an emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmitReceipt {
    /// Inboxes the event was durably appended to.
    pub recipients: u32,
    /// Room members skipped because their inbox was at the broker's
    /// pending limit.
    pub skipped: u32,
}

fn unexpected(m: Wire) -> Error {
    Error::Protocol(format!("unexpected {:?} reply", m.opcode()))
}

impl Client {
    async fn ok_request(&self, msg: Wire) -> Result<()> {
        match self.inner.request(msg).await? {
            Wire::Ok => Ok(()),
            m => Err(unexpected(m)),
        }
    }

    /// Joins a room (in memory: the membership ends when this client is
    /// gone for longer than the broker's grace period). The client rejoins
    /// its rooms after a reconnect by itself.
    ///
    /// # Errors
    /// [`Error::Broker`]: `InvalidArgument` (bad name, the room is durable),
    /// `Busy` (max rooms per connection or members per room).
    pub async fn join(&self, room: &str) -> Result<()> {
        self.join_room(room, false).await
    }

    /// Joins a durable room: the membership is kept on the broker's disk
    /// until [`Client::leave`], and while this client is away its inbox
    /// collects the room's events, delivered in order when it comes back.
    ///
    /// # Errors
    /// As [`Client::join`].
    pub async fn join_durable(&self, room: &str) -> Result<()> {
        self.join_room(room, true).await
    }

    /// Joins a room and, if this client was not a member yet, first hands
    /// it the room's last `history` events (and presence records) before
    /// the live ones, as a chat page shows recent messages on entry. A
    /// member that joins again keeps its position instead.
    ///
    /// # Errors
    /// As [`Client::join`].
    pub async fn join_with_history(&self, room: &str, durable: bool, history: u32) -> Result<()> {
        self.join_room_with(room, durable, history).await
    }

    async fn join_room(&self, room: &str, durable: bool) -> Result<()> {
        self.join_room_with(room, durable, 0).await
    }

    /// A Join of a room this client id is a member of already: nothing
    /// changes on the broker, and the client rejoins it after reconnects.
    pub(crate) async fn join_again(&self, room: &str, durable: bool) -> Result<()> {
        self.ok_request(Wire::Join(JoinRoom {
            room: room.into(),
            durable,
            history: 0,
        }))
        .await
    }

    /// The rooms this client id is a member of.
    pub(crate) async fn my_rooms(&self) -> Result<Vec<herald_protocol::JoinedRoom>> {
        match self.inner.request(Wire::MyRooms).await? {
            Wire::RoomList(l) => Ok(l.rooms),
            m => Err(unexpected(m)),
        }
    }

    /// Joins, then reads the room's log through this client's own group
    /// in it, from where the broker placed it (the room's end for a new
    /// member, or where it left off).
    pub(crate) async fn join_room_with(
        &self,
        room: &str,
        durable: bool,
        history: u32,
    ) -> Result<()> {
        self.ok_request(Wire::Join(JoinRoom {
            room: room.into(),
            durable,
            history,
        }))
        .await?;
        let hub = self.hub().await?;
        self.read_room_log(&hub, room).await
    }

    /// Starts reading a joined room's log, unless it is read already.
    pub(crate) async fn read_room_log(
        &self,
        hub: &crate::inbox::InboxHub,
        room: &str,
    ) -> Result<()> {
        if hub.reads(room) {
            return Ok(());
        }
        let me = self
            .client_id()
            .ok_or_else(|| Error::InvalidArgument("the client id is not known yet".into()))?;
        let sub = self
            .subscribe(&format!("{ROOM_PREFIX}{room}"))
            .group(me)
            .start(crate::Start::Resume)
            .await?;
        hub.read_room(room, sub);
        Ok(())
    }

    /// Leaves a room (a no-op if not a member): its events stop, and its
    /// position is forgotten, so joining again starts at the room's end.
    ///
    /// # Errors
    /// As any request: [`Error::Timeout`], [`Error::ConnectionLost`].
    pub async fn leave(&self, room: &str) -> Result<()> {
        self.ok_request(Wire::Leave(RoomName { room: room.into() }))
            .await?;
        if let Some(hub) = self.inner.inbox.get() {
            hub.stop_room(room);
        }
        Ok(())
    }

    /// The members of a room this client is in, sorted by client id.
    ///
    /// # Errors
    /// [`Error::Broker`] with `InvalidArgument` if this client is not a
    /// member.
    pub async fn members(&self, room: &str) -> Result<Vec<RoomMember>> {
        match self
            .inner
            .request(Wire::Members(RoomName { room: room.into() }))
            .await?
        {
            Wire::MemberList(l) => Ok(l.members),
            m => Err(unexpected(m)),
        }
    }

    /// Emits event `event` with `payload` to `target`; resolves once it is
    /// durable in every recipient's inbox.
    ///
    /// An emit in flight when the connection drops is sent again after the
    /// reconnect, so a recipient may (rarely) get it twice.
    ///
    /// # Errors
    /// [`Error::Broker`]: `InvalidArgument` (empty or reserved event name,
    /// bad room or client id), `Busy` (a direct target's inbox is full).
    pub async fn emit(
        &self,
        target: Target,
        event: &str,
        payload: impl Into<Bytes>,
    ) -> Result<EmitReceipt> {
        self.emit_with(target, event, payload.into(), 0).await
    }

    pub(crate) async fn emit_with(
        &self,
        target: Target,
        event: &str,
        payload: Bytes,
        correlation: u64,
    ) -> Result<EmitReceipt> {
        if event.is_empty() {
            return Err(Error::InvalidArgument("empty event name".into()));
        }
        let msg = Wire::Emit(Emit {
            target: target.0,
            event: event.into(),
            payload: payload.to_vec(),
            correlation,
        });
        match self.inner.request(msg).await? {
            Wire::EmitOk(ok) => Ok(EmitReceipt {
                recipients: ok.recipients,
                skipped: ok.skipped,
            }),
            m => Err(unexpected(m)),
        }
    }

    /// Emits to every member of `room` but this client.
    ///
    /// # Errors
    /// As [`Client::emit`].
    pub async fn broadcast(
        &self,
        room: &str,
        event: &str,
        payload: impl Into<Bytes>,
    ) -> Result<EmitReceipt> {
        self.emit(Target::room_except_sender(room), event, payload)
            .await
    }

    /// Emits to the members of several rooms, each once.
    ///
    /// # Errors
    /// As [`Client::emit`].
    pub async fn emit_to_rooms(
        &self,
        rooms: &[&str],
        event: &str,
        payload: impl Into<Bytes>,
    ) -> Result<EmitReceipt> {
        self.emit(Target::rooms(rooms.iter().copied()), event, payload)
            .await
    }

    /// Emits to one client id, connected or not.
    ///
    /// # Errors
    /// As [`Client::emit`]; `Busy` if its inbox is full.
    pub async fn emit_to_client(
        &self,
        client_id: &str,
        event: &str,
        payload: impl Into<Bytes>,
    ) -> Result<EmitReceipt> {
        self.emit(Target::client(client_id), event, payload).await
    }

    /// Emits to every connected client.
    ///
    /// # Errors
    /// As [`Client::emit`].
    pub async fn emit_all(&self, event: &str, payload: impl Into<Bytes>) -> Result<EmitReceipt> {
        self.emit(Target::all(), event, payload).await
    }

    /// Sends `event` to `client_id` and waits up to `timeout` for its
    /// reply ([`crate::Event::reply`]). The request and the reply both
    /// travel through durable inboxes, so either side may be offline or
    /// reconnect meanwhile. Starts this client's inbox reader (see
    /// [`Client::inbox`]).
    ///
    /// # Errors
    /// [`Error::Timeout`] if no reply came in time; as [`Client::emit`].
    pub async fn request(
        &self,
        client_id: &str,
        event: &str,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes> {
        let hub = self.hub().await?;
        let (correlation, answer) = hub.expect_reply();
        let _forget = hub.forget_on_drop(correlation);
        let payload = payload.into();
        let exchange = async {
            self.emit_with(Target::client(client_id), event, payload, correlation)
                .await?;
            answer
                .await
                .map_err(|_| Error::ConnectionLost("inbox reader stopped".into()))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout),
        }
    }

    pub(crate) async fn send_reply(
        &self,
        to_client: &str,
        correlation: u64,
        payload: Bytes,
    ) -> Result<()> {
        self.ok_request(Wire::Reply(ReplyTo {
            to_client: to_client.into(),
            correlation,
            payload: payload.to_vec(),
        }))
        .await
    }
}
