//! Room logs: every room has one, the topic `_room.<room>`, and an emit to
//! a room is one append to it whatever the number of members (fan-out on
//! read). Each member reads the room's log through its own consumer group,
//! named after its client id, so its position (an ack floor, like any
//! group's) is kept and persisted per member per room.
//!
//! A record in a room log is an event like an inbox record (key: the event
//! name; headers: kind, sender, room, and for some events
//! [`headers::EXCEPT_SENDER`] or [`headers::EMIT_ID`]); see docs/rooms.md.

use std::sync::Arc;

use herald_protocol::TopicConfig;

use super::Rooms;
use crate::config::BrokerConfig;
use crate::storage::PendingAppend;
use crate::topic::name::MAX_NAME_LEN;
use crate::topic::Topic;
use crate::BrokerError;

/// Prefix of room log topic names.
pub const ROOM_PREFIX: &str = "_room.";

/// The topic name of `room`'s log.
pub fn topic_name(room: &str) -> String {
    format!("{ROOM_PREFIX}{room}")
}

/// Longest room name: its log's topic name must be a valid topic name.
pub const MAX_ROOM_NAME: usize = MAX_NAME_LEN - ROOM_PREFIX.len();

/// The log of `room`, created (with the room retention) on first use.
///
/// # Errors
/// As [`crate::topic::Registry::create`].
pub fn topic(rooms: &Rooms, room: &str) -> Result<Arc<Topic>, BrokerError> {
    // The common case, once per emit: a lock-free lookup, by a name put
    // together on the stack (a `format!` per emit was 1.3% of the broker's
    // CPU in a room of 10).
    let mut buf = [0u8; MAX_NAME_LEN];
    let len = ROOM_PREFIX.len() + room.len();
    if let Some(name) = buf.get_mut(..len) {
        name[..ROOM_PREFIX.len()].copy_from_slice(ROOM_PREFIX.as_bytes());
        name[ROOM_PREFIX.len()..].copy_from_slice(room.as_bytes());
        if let Ok(Ok(t)) = std::str::from_utf8(name).map(|n| rooms.registry().get(n)) {
            return Ok(t);
        }
    }
    rooms
        .registry()
        .create(&topic_name(room), &config(rooms.config()), true)
}

/// The settings every room's log is created with.
pub fn config(c: &BrokerConfig) -> TopicConfig {
    TopicConfig {
        retention_ms: Some(c.room_retention.as_millis() as u64),
        retention_bytes: Some(c.room_retention_bytes),
        ..TopicConfig::default()
    }
}

/// Starts a new member at the room's end, or `history` records before it,
/// and waits until that position is on disk: a crash after the join cannot
/// bring the member back at the room's beginning. A stale group left by
/// an earlier membership is replaced.
///
/// # Errors
/// The group cannot be written.
pub async fn place_member(log: &Arc<Topic>, client: &str, history: u32) -> Result<(), BrokerError> {
    log.delete_group(client).await?;
    let end = log.log.next_offset();
    let at = end.saturating_sub(u64::from(history));
    log.group(client)?.place(at).await?;
    Ok(())
}

/// Forgets a member's position (it left, or its non-durable membership
/// ended): joining again starts afresh at the end.
///
/// # Errors
/// The group's state file cannot be removed.
pub async fn remove_member(rooms: &Rooms, room: &str, client: &str) -> Result<(), BrokerError> {
    match rooms.registry().get(&topic_name(room)) {
        Ok(t) => t.delete_group(client).await,
        Err(BrokerError::UnknownTopic(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The log of `room` for `client` to read with `group`: only a member of
/// the room, and only through its own group (named after its client id),
/// may read it. A member without a position (its join was interrupted)
/// gets one at the end.
///
/// # Errors
/// `Unauthorized` for anyone else; as [`topic`] and [`place_member`].
pub async fn topic_for_member(
    rooms: &Rooms,
    room: &str,
    client: &str,
    group: Option<&str>,
) -> Result<Arc<Topic>, BrokerError> {
    if group != Some(client) {
        return Err(BrokerError::Unauthorized(format!(
            "the log of room {room:?} is read by each member through the group named after its \
             client id ({client:?})"
        )));
    }
    if !rooms.is_member(room, client) {
        return Err(BrokerError::Unauthorized(format!(
            "client {client:?} is not a member of room {room:?}; join it first"
        )));
    }
    let log = topic(rooms, room)?;
    if !log.has_group(client) {
        place_member(&log, client, 0).await?;
    }
    Ok(log)
}

/// An append queued to a room's log.
pub struct Queued {
    pub topic: Arc<Topic>,
    pub append: PendingAppend,
}

/// Queues one record to `room`'s log (in the order of calls).
///
/// # Errors
/// The log cannot be created or is closed.
pub async fn append(
    rooms: &Rooms,
    room: &str,
    batch: herald_protocol::Batch,
) -> Result<Queued, BrokerError> {
    let topic = topic(rooms, room)?;
    let append = topic.log.enqueue(batch).await?;
    Ok(Queued { topic, append })
}
